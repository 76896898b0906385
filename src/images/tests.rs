use std::sync::Arc;

use super::*;
use crate::sys::fake::FakeNetlink;
use crate::sys::fake_lxc::FakeLxc;
use crate::sys::Lxc;

fn images() -> (Images, FakeNetlink, FakeLxc, Arc<MemoryBook>) {
    let (_, net, lxc) = crate::sys::Host::fake();
    let book = Arc::new(MemoryBook::default());
    let images = Images::new(Arc::new(lxc.clone()), book.clone());
    (images, net, lxc, book)
}

fn calls_with(net: &FakeNetlink, prefix: &str) -> Vec<String> {
    net.calls()
        .into_iter()
        .filter(|c| c.trim_start_matches("host: ").starts_with(prefix))
        .collect()
}

#[test]
fn image_names_never_collide_with_containers_and_parse_back() {
    assert_eq!(lxc_name("busybox", 3), "image-busybox-v3");
    assert_eq!(parse_lxc_name("image-busybox-v3"), Some(("busybox", 3)));
    assert_eq!(parse_lxc_name("image-my-v2-v12"), Some(("my-v2", 12)));
    for not in [
        "container5",
        "image-busybox",
        "image--v1",
        "image-busybox-v0",
        "image-x-vx",
    ] {
        assert_eq!(parse_lxc_name(not), None, "{not}");
    }
}

#[tokio::test]
async fn the_first_ensure_builds_the_image_and_later_ones_reuse_it() {
    let (images, net, _, book) = images();
    assert_eq!(images.ensure(None).await.unwrap(), "image-busybox-v1");
    assert_eq!(images.ensure(None).await.unwrap(), "image-busybox-v1");
    assert_eq!(images.ensure(Some("alt")).await.unwrap(), "image-alt-v1");
    assert_eq!(
        calls_with(&net, "lxc-create"),
        [
            "host: lxc-create image-busybox-v1 -t busybox",
            "host: lxc-create image-alt-v1 -t alt"
        ]
    );
    let record = book.image("busybox").unwrap().unwrap();
    assert_eq!((record.next_version, record.versions.len()), (2, 1));
    assert!(matches!(
        images.ensure(Some("ubuntu")).await,
        Err(ImageError::UnknownTemplate(_))
    ));
}

#[tokio::test]
async fn a_version_built_with_other_arguments_or_lost_is_replaced_by_a_new_one() {
    let (images, _, lxc, book) = images();
    lxc.create("image-busybox-v1", None).await.unwrap();
    let mut record = ImageRecord::new("busybox");
    record.next_version = 2;
    record.versions.push(ImageVersion {
        version: 1,
        lxc_template: "busybox".into(),
        args: vec!["--old".into()],
        built_at: time::OffsetDateTime::now_utc(),
    });
    book.put_image(&record).await.unwrap();
    assert_eq!(images.ensure(None).await.unwrap(), "image-busybox-v2");
    lxc.destroy("image-busybox-v2").await.unwrap();
    assert_eq!(images.ensure(None).await.unwrap(), "image-busybox-v3");
}

#[tokio::test]
async fn a_rebuild_leaves_clones_on_their_version_until_the_last_one_goes() {
    let (images, _, lxc, book) = images();
    let v1 = images.ensure(None).await.unwrap();
    images.clone_into(&v1, "container5").await.unwrap();
    let v2 = images.rebuild("busybox").await.unwrap();
    assert_eq!(v2, "image-busybox-v2");
    assert_eq!(images.ensure(None).await.unwrap(), v2, "new creates use v2");
    assert!(
        images.remove_unused().await.unwrap().is_empty(),
        "v1 has a clone"
    );
    lxc.destroy("container5").await.unwrap();
    assert_eq!(
        images.remove_unused().await.unwrap(),
        std::slice::from_ref(&v1)
    );
    assert!(!lxc.exists(&v1).await.unwrap());
    let versions: Vec<u32> = book
        .image("busybox")
        .unwrap()
        .unwrap()
        .versions
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [2], "the newest stays even with no clone");
    let report = images.report().await.unwrap();
    assert_eq!(report[0].name, "busybox");
    assert!(report[0].default && report[0].versions[0].current);
    assert_eq!(report[1].name, "alt");
    assert!(report[1].versions.is_empty());
}

#[tokio::test]
async fn a_failed_build_leaves_nothing_and_an_interrupted_one_is_discarded() {
    let (images, net, lxc, book) = images();
    net.fail_next("lxc-create image-busybox-v1", libc::EIO);
    assert!(images.ensure(None).await.is_err());
    assert!(lxc.names().is_empty());
    // A crash in the middle of the next build: its version taken, its directory half made.
    let mut record = book.image("busybox").unwrap().unwrap();
    record.next_version = 3;
    book.put_image(&record).await.unwrap();
    lxc.create("image-busybox-v2", None).await.unwrap();
    images.discard_unfinished(None).await.unwrap();
    assert!(lxc.names().is_empty());
    assert_eq!(images.ensure(None).await.unwrap(), "image-busybox-v3");
}

#[tokio::test]
async fn overlay_clones_fall_back_to_full_copies_once_overlay_fails_and_copy_works() {
    let (images, net, lxc, _) = images();
    let image = images.ensure(None).await.unwrap();
    net.fail_next("lxc-copy -s", libc::EIO);
    images.clone_into(&image, "container5").await.unwrap();
    assert!(
        lxc.clones_of(&image).await.unwrap().is_empty(),
        "a full copy"
    );
    assert!(images.fallback().is_some());
    assert_eq!(images.clone_mode(), CloneMode::Copy);
    images.clone_into(&image, "container6").await.unwrap();
    assert!(
        calls_with(&net, "lxc-copy -s").len() == 1,
        "overlay is not tried again"
    );
}

#[tokio::test]
async fn without_overlayfs_from_the_start_overlay_is_never_tried() {
    let (images, net, lxc, _) = images();
    let images = images.with_full_copies("no overlayfs".into());
    let image = images.ensure(None).await.unwrap();
    images.clone_into(&image, "container5").await.unwrap();
    assert!(
        calls_with(&net, "lxc-copy -s").is_empty(),
        "{:?}",
        net.calls()
    );
    assert_eq!(calls_with(&net, "lxc-copy").len(), 1);
    assert!(
        lxc.clones_of(&image).await.unwrap().is_empty(),
        "a full copy"
    );
    assert_eq!(images.fallback().as_deref(), Some("no overlayfs"));
    assert_eq!(images.clone_mode(), CloneMode::Copy);
}

#[tokio::test]
async fn a_clone_that_cannot_be_made_either_way_leaves_nothing() {
    let (images, net, lxc, _) = images();
    let image = images.ensure(None).await.unwrap();
    net.fail_next("lxc-copy", libc::EIO);
    net.fail_next("lxc-copy", libc::EIO);
    let err = images.clone_into(&image, "container5").await.unwrap_err();
    assert!(matches!(err, ImageError::Clone { .. }), "{err}");
    assert_eq!(lxc.names(), [image]);
    assert!(images.fallback().is_none());
}

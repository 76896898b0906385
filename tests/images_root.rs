//! Images and clones (issue 13) on simulated servers with real LXC: clones of one image keep
//! their files apart and reach across servers; a rebuild leaves running clones on their version,
//! which goes with its last clone; a second configured template; a clone that cannot be made
//! rolls back to nothing.

mod common;

use std::net::Ipv4Addr;

use common::containers::{attach, ping_from};
use common::daemon::{Daemon, API};
use common::layout::lxc_path;
use common::{Lab, Server};
use serde_json::Value;

fn addr(id: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 2, id as u8)
}

/// Creates container `id` (template `template`, if given) and returns its finished job.
fn create(d: &Daemon, id: u32, template: Option<&str>) -> Value {
    let mut body = format!("id={id}&vlan=2&ip=192.168.2.{id}/24");
    if let Some(t) = template {
        body.push_str(&format!("&template={t}"));
    }
    let url = format!("{API}/api/container/create");
    let accepted = d.json(&["-s", "--data", &body, &url]);
    let job = accepted["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{accepted}"));
    d.wait(job)
}

fn created(d: &Daemon, id: u32, template: Option<&str>) {
    let job = create(d, id, template);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
}

/// The image a container's rootfs is an overlay on, from its LXC config.
fn lower_of(s: &Server, name: &str) -> String {
    let config = std::fs::read_to_string(lxc_path(&s.dir).join(name).join("config")).unwrap();
    let rootfs = config
        .lines()
        .find_map(|l| l.strip_prefix("lxc.rootfs.path = "))
        .unwrap_or_else(|| panic!("no rootfs in {config}"));
    let lower = rootfs
        .strip_prefix("overlay:")
        .unwrap_or_else(|| panic!("not an overlay: {rootfs}"));
    let lower = lower.split(':').next().unwrap();
    let image = std::path::Path::new(lower)
        .parent()
        .unwrap()
        .file_name()
        .unwrap();
    image.to_string_lossy().into_owned()
}

/// (version, clones) of the default template's image versions, from `GET /api/images`.
fn versions(d: &Daemon) -> Vec<(u64, Vec<String>)> {
    let images = d.images();
    assert_eq!(images["clone"], "overlay", "{images}");
    images["images"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let clones = v["clones"].as_array().unwrap();
            let clones = clones
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            (v["version"].as_u64().unwrap(), clones)
        })
        .collect()
}

/// Whether `path` exists inside running `container`; panics when the container cannot be
/// asked (so "absent" is never a failed `lxc-attach`).
fn has_file(s: &Server, container: &str, path: &str) -> bool {
    let script = format!("if test -e '{path}'; then echo present; else echo absent; fi");
    let out = attach(s, container, &["sh", "-c", &script]);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "present" => true,
        "absent" => false,
        _ => panic!("cannot look into {container}: {out:?}"),
    }
}

#[test]
fn clones_of_one_image_keep_their_files_apart_and_reach_across_servers() {
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let d1 = Daemon::start(s1, None, false);
    let d2 = Daemon::start(s2, None, false);
    for id in [5, 6] {
        created(&d1, id, None);
        assert_eq!(lower_of(s1, &format!("container{id}")), "image-busybox-v1");
    }
    created(&d2, 7, None);
    assert_eq!(
        versions(&d1),
        [(1, vec!["container5".into(), "container6".into()])]
    );

    let write = attach(
        s1,
        "container5",
        &["sh", "-c", "echo mine > /root/only-in-5"],
    );
    assert!(write.status.success(), "{write:?}");
    assert!(has_file(s1, "container5", "/root/only-in-5"));
    assert!(
        !has_file(s1, "container6", "/root/only-in-5"),
        "the other clone sees it"
    );
    let image = lxc_path(&s1.dir).join("image-busybox-v1/rootfs/root/only-in-5");
    assert!(!image.exists(), "the write reached the image");
    let upper = lxc_path(&s1.dir).join("container5/overlay/delta/root/only-in-5");
    assert!(
        upper.exists(),
        "the write is not in container5's own upper directory"
    );

    for (from, to) in [("container5", 7), ("container6", 7)] {
        assert!(
            ping_from(s1, from, addr(to)),
            "{from} cannot reach container{to}"
        );
    }
    assert!(ping_from(s2, "container7", addr(5)));
    assert!(ping_from(s2, "container7", addr(6)));
}

#[test]
fn a_rebuild_leaves_running_clones_on_their_version_until_the_last_is_destroyed() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start(s, None, false);
    created(&d, 5, None);
    assert!(
        attach(s, "container5", &["sh", "-c", "echo kept > /root/kept"])
            .status
            .success()
    );

    let job = d.wait(&d.build_image("busybox"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(versions(&d), [(1, vec!["container5".into()]), (2, vec![])]);
    let info = d.info(5);
    assert_eq!(
        info["state"], "RUNNING",
        "the rebuild stopped a clone: {info}"
    );
    assert!(
        has_file(s, "container5", "/root/kept"),
        "the clone lost its file"
    );
    assert!(ping_from(s, "container5", addr(5)));

    created(&d, 6, None);
    assert_eq!(
        lower_of(s, "container6"),
        "image-busybox-v2",
        "a new create uses v2"
    );
    assert_eq!(lower_of(s, "container5"), "image-busybox-v1");

    let destroyed = d.wait(&d.destroy(5));
    assert_eq!(destroyed["state"], "succeeded", "{destroyed}");
    assert_eq!(versions(&d), [(2, vec!["container6".into()])]);
    assert!(
        !lxc_path(&s.dir).join("image-busybox-v1").exists(),
        "v1 is still on disk"
    );
    assert_eq!(d.info(6)["state"], "RUNNING");
}

#[test]
fn a_second_configured_template_gets_its_own_image() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let config = s.dir.join("templates.toml");
    std::fs::write(
        &config,
        "[template-options.small]\nlxc-template = \"busybox\"\nargs = [\"--busybox-path\", \"/bin/busybox\"]\n",
    )
    .unwrap();
    let flags = [
        "--templates",
        "busybox,small",
        "--config",
        config.to_str().unwrap(),
    ];
    let d = Daemon::start_with(s, None, &flags);
    created(&d, 5, Some("small"));
    created(&d, 6, None);
    assert_eq!(lower_of(s, "container5"), "image-small-v1");
    assert_eq!(lower_of(s, "container6"), "image-busybox-v1");
    let images = d.images();
    let small = images["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "small");
    let small = small.unwrap_or_else(|| panic!("{images}"));
    assert_eq!(
        small["versions"][0]["args"],
        serde_json::json!(["--busybox-path", "/bin/busybox"])
    );
    assert!(ping_from(s, "container5", addr(6)));
    let url = format!("{API}/api/container/create");
    let body = "id=7&vlan=2&ip=192.168.2.7/24&template=ubuntu";
    let refused = d.json(&["-s", "--data", body, &url]);
    assert_eq!(refused["code"], "invalid_field", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("busybox, small"),
        "{refused}"
    );
}

#[test]
fn a_clone_that_cannot_be_made_rolls_back_to_nothing() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start(s, None, false);
    created(&d, 5, None);
    // Nothing can be added to the LXC path: both the overlay clone and the full copy fail.
    let path = lxc_path(&s.dir);
    let path = path.to_str().unwrap();
    s.run_ok("chattr", ["+i", path]);
    let job = create(&d, 6, None);
    s.run_ok("chattr", ["-i", path]);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("step create_container failed") && error.contains("nothing left behind"),
        "{error}"
    );
    assert!(!lxc_path(&s.dir).join("container6").exists());
    assert!(!s.run_ok("ip", ["-br", "link"]).contains("vethc_br6"));
    let list = d.json(&["-s", &format!("{API}/api/container/list")]);
    assert_eq!(
        list["containers_id"],
        serde_json::json!([5]),
        "the record was kept"
    );
    assert_eq!(versions(&d), [(1, vec!["container5".into()])]);
    // And the next create works.
    created(&d, 6, None);
}

#[test]
fn a_clone_whose_image_was_deleted_by_hand_is_missing_not_restarted_and_destroyable() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start_with(s, None, &["--reconcile-interval", "0"]);
    created(&d, 5, None);
    let lxc = lxc_path(&s.dir);
    let p = lxc.to_str().unwrap();
    s.run_ok("lxc-stop", ["-P", p, "-n", "container5", "-k"]);
    std::fs::remove_dir_all(lxc.join("image-busybox-v1")).unwrap();

    let report = d.reconcile();
    let drift = report["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{report}");
    assert_eq!(
        (&drift[0]["drift"], &drift[0]["job_id"]),
        (&"missing".into(), &Value::Null),
        "{report}"
    );
    assert_eq!(d.info(5)["health"], "missing");
    let images = d.images();
    assert_eq!(
        images["images"][0]["versions"][0]["present"], false,
        "{images}"
    );

    let destroyed = d.wait(&d.destroy(5));
    assert_eq!(destroyed["state"], "succeeded", "{destroyed}");
    assert!(!lxc.join("container5").exists());
    // The next create builds a new version.
    created(&d, 6, None);
    assert_eq!(lower_of(s, "container6"), "image-busybox-v2");
    let listed = versions(&d);
    assert_eq!(
        listed.last(),
        Some(&(2, vec!["container6".into()])),
        "{listed:?}"
    );
}

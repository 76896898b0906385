//! `info`'s read of one container (`Reconciler::inspect`) over the fake host, whose kernel
//! reports every change of a host link to the view `info` reads, as the real one's
//! notifications do (`sys::link_watch`): what the kernel reported shows in the next read,
//! without asking the kernel; after lost reports, the kernel is asked until a dump is in.

use super::tests::{rig, Rig};
use super::*;
use crate::sys::Netlink;

/// `info`'s read of container `id`: its health, and its host veth.
async fn inspect(r: &Rig, id: u64) -> (Health, Option<LinkState>) {
    let id = ContainerId::new(id).unwrap();
    let rec = r.worker.store.container(id).unwrap().unwrap();
    let (_, health, veth) = r.reconciler.inspect(&rec).await.unwrap();
    (health, veth)
}

/// The link reads `info` made of the kernel since the log was cleared.
fn kernel_link_reads(r: &Rig) -> Vec<String> {
    r.net
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("host: link "))
        .collect()
}

fn degraded(problem: &str) -> Health {
    Health::Degraded(vec![problem.into()])
}

#[tokio::test]
async fn a_link_change_the_kernel_reports_shows_in_the_next_info_without_a_kernel_read() {
    let r = rig().await;
    r.create(5).await;
    let br2 = r.net.link("br2").await.unwrap().unwrap().index;
    r.net.clear_calls();
    let (health, veth) = inspect(&r, 5).await;
    assert_eq!(health, Health::Ok);
    assert!(veth.is_some_and(|v| v.up));
    r.net.edit_link("vethc_br5", |l| l.up = false);
    assert_eq!(inspect(&r, 5).await.0, degraded("vethc_br5 is down"));
    r.net
        .edit_link("vethc_br5", |l| (l.up, l.master) = (true, None));
    assert_eq!(inspect(&r, 5).await.0, degraded("vethc_br5 is not on br2"));
    r.net
        .edit_link("vethc_br5", |l| (l.master, l.mtu) = (Some(br2), 1400));
    let (health, veth) = inspect(&r, 5).await;
    assert_eq!(veth.map(|v| v.mtu), Some(1400));
    assert_eq!(health, degraded("vethc_br5's MTU differs from br2's"));
    assert_eq!(
        kernel_link_reads(&r),
        Vec::<String>::new(),
        "info asked the kernel"
    );
}

#[tokio::test]
async fn a_veth_deleted_by_hand_and_a_container_stopped_by_hand_show_at_once() {
    let r = rig().await;
    r.create(5).await;
    r.create(6).await;
    r.net.delete_by_hand("vethc_br5");
    // Its peer, `eth0`, went with it, and the address on it.
    let gone = Health::Degraded(vec![
        "host veth vethc_br5 is missing".into(),
        "eth0 lacks 192.168.2.5".into(),
    ]);
    assert_eq!(inspect(&r, 5).await, (gone, None));
    // Its init gone, its namespace goes, and the veth pair with it.
    r.lxc.stop_by_hand("container6");
    assert_eq!(inspect(&r, 6).await, (Health::Stopped, None));
}

#[tokio::test]
async fn after_lost_reports_info_asks_the_kernel_until_a_new_dump_is_in() {
    let r = rig().await;
    r.create(5).await;
    r.net.lose_link_reports();
    r.net.edit_link("vethc_br5", |l| l.up = false);
    r.net.overrun_links();
    assert!(!r.net.links_watched());
    r.net.clear_calls();
    assert_eq!(inspect(&r, 5).await.0, degraded("vethc_br5 is down"));
    assert_eq!(
        kernel_link_reads(&r),
        ["host: link vethc_br5", "host: link br2"]
    );
    // Brought up meanwhile; the dump (read when delivered, so it shows the change) brings the
    // view back, and info reads it again. (The order of a dump and the notifications read
    // during it is link_table.rs's own test.)
    r.net.edit_link("vethc_br5", |l| l.up = true);
    r.net.deliver_link_dump();
    assert!(r.net.links_watched());
    r.net.clear_calls();
    assert_eq!(inspect(&r, 5).await.0, Health::Ok);
    assert_eq!(kernel_link_reads(&r), Vec::<String>::new());
}

#[tokio::test]
async fn what_a_repair_job_did_shows_in_the_next_info() {
    let r = rig().await;
    r.create(5).await;
    r.net.edit_link("vethc_br5", |l| l.master = None);
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.drift.len(), 1);
    assert_eq!(r.drain().await[0].kind, crate::queue::JobKind::Repair);
    r.net.clear_calls();
    assert_eq!(inspect(&r, 5).await.0, Health::Ok);
    assert_eq!(kernel_link_reads(&r), Vec::<String>::new());
}

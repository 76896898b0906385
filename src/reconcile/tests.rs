//! Reconcile passes over the fake host: each drift found, repaired through the right job,
//! and what a pass must never do.

use super::*;
use crate::model::VlanId;
use crate::queue::{JobKind, JobState, Lifecycle};
use crate::spec::CreateSpec;
use crate::sys::fake::FakeNetlink;
use crate::sys::fake_lxc::FakeLxc;
use crate::sys::{Lxc, Netlink};
use crate::test_support::{fake_host, worker, TempDir};
use crate::worker::Worker;

/// A worker and a reconciler over one fake host.
pub(super) struct Rig {
    /// Runs the jobs.
    pub(super) worker: Worker,
    /// Under test.
    pub(super) reconciler: Reconciler,
    /// The fake kernel.
    pub(super) net: FakeNetlink,
    /// The fake LXC.
    pub(super) lxc: FakeLxc,
    _dir: TempDir,
}

pub(super) async fn rig() -> Rig {
    let dir = TempDir::new("reconcile");
    let (host, net, lxc, fabric) = fake_host().await;
    let worker = worker(&dir, host.clone(), fabric.clone());
    let reconciler = Reconciler::new(
        worker.store.clone(),
        host,
        fabric,
        worker.control.clone(),
        worker.metrics.clone(),
    );
    Rig {
        worker,
        reconciler,
        net,
        lxc,
        _dir: dir,
    }
}

impl Rig {
    /// Runs every queued job; returns them as they ended.
    pub(super) async fn drain(&self) -> Vec<crate::queue::Job> {
        let mut done = Vec::new();
        while let Some(job) = self.worker.store.next_queued().unwrap() {
            self.worker.run_job(job.clone()).await.unwrap();
            done.push(self.worker.store.get(job.id).unwrap().unwrap());
        }
        done
    }

    pub(super) async fn create(&self, id: u64) {
        let spec = CreateSpec {
            id: ContainerId::new(id).unwrap(),
            vlan: VlanId::new(2).unwrap(),
            ip: format!("192.168.2.{id}/24").parse().unwrap(),
            gateway: None,
            template: None,
        };
        self.worker.store.enqueue_create(spec).await.unwrap();
        assert_eq!(self.drain().await[0].state, JobState::Succeeded);
    }

    async fn health(&self, id: u64) -> Health {
        let report = self.reconciler.pass().await.unwrap();
        report.health[&ContainerId::new(id).unwrap()].clone()
    }
}

#[tokio::test]
async fn a_healthy_host_needs_nothing() {
    let r = rig().await;
    r.create(5).await;
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.checked, 1);
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    assert!(report.fabric_repaired.is_empty());
    assert_eq!(report.health[&ContainerId::new(5).unwrap()], Health::Ok);
    assert!(r.worker.store.next_queued().unwrap().is_none());
}

/// Reads a container's addresses as the kernel refusing: what a pass must not take for an
/// address gone (its repair would remake the veth pair for a failed read).
struct AddressesRefused(Arc<dyn crate::sys::NetnsOpener>);

#[async_trait::async_trait]
impl crate::sys::NetnsOpener for AddressesRefused {
    async fn open_netns_of(&self, pid: u32) -> crate::sys::SysResult<Box<dyn Netlink>> {
        self.0.open_netns_of(pid).await
    }

    async fn has_own_netns(&self, pid: u32) -> crate::sys::SysResult<bool> {
        self.0.has_own_netns(pid).await
    }

    async fn local_addresses(&self, pid: u32) -> crate::sys::SysResult<Vec<std::net::Ipv4Addr>> {
        Err(crate::sys::SysError::from_errno(
            format!("read the addresses of pid {pid}"),
            libc::EIO,
        ))
    }
}

#[tokio::test]
async fn a_failed_address_read_is_judged_next_pass_not_repaired() {
    let r = rig().await;
    r.create(5).await;
    let host = Host {
        netns: Arc::new(AddressesRefused(Arc::clone(&r.reconciler.host.netns))),
        ..r.reconciler.host.clone()
    };
    let refused = Reconciler::new(
        r.worker.store.clone(),
        host,
        r.reconciler.fabric.clone(),
        r.worker.control.clone(),
        r.worker.metrics.clone(),
    );
    let report = refused.pass().await.unwrap();
    assert_eq!(report.checked, 0, "container5 was judged on a failed read");
    assert!(report.drift.is_empty(), "{:?}", report.drift);
    assert!(r.worker.store.next_queued().unwrap().is_none());
    // The read works again: judged, healthy.
    assert_eq!(r.health(5).await, Health::Ok);
}

#[tokio::test]
async fn a_container_stopped_behind_our_back_is_started_by_a_repair_job() {
    let r = rig().await;
    r.create(5).await;
    r.lxc.stop_by_hand("container5");
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.drift.len(), 1);
    let finding = &report.drift[0];
    assert_eq!(
        (finding.drift, &finding.health),
        (Drift::Stopped, &Health::Stopped)
    );
    let job = r
        .worker
        .store
        .get(finding.job_id.unwrap())
        .unwrap()
        .unwrap();
    assert_eq!((job.kind, job.origin), (JobKind::Start, Origin::Reconcile));
    assert_eq!(r.drain().await[0].state, JobState::Succeeded);
    assert_eq!(r.health(5).await, Health::Ok);
}

#[tokio::test]
async fn a_veth_moved_off_its_bridge_is_repaired_in_place() {
    let r = rig().await;
    r.create(5).await;
    r.net.edit_link("vethc_br5", |l| l.master = None);
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(
        report.drift[0].health,
        Health::Degraded(vec!["vethc_br5 is not on br2".into()])
    );
    let done = r.drain().await;
    assert_eq!(
        (done[0].kind, done[0].state),
        (JobKind::Repair, JobState::Succeeded)
    );
    let br2 = r.net.link("br2").await.unwrap().unwrap();
    let veth = r.net.link("vethc_br5").await.unwrap().unwrap();
    assert_eq!(veth.master, Some(br2.index));
    assert_eq!(r.health(5).await, Health::Ok);
}

#[tokio::test]
async fn a_lost_rootfs_is_marked_missing_never_recreated_and_can_be_destroyed() {
    let r = rig().await;
    r.create(5).await;
    r.lxc.lose_rootfs("container5");
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.drift[0].drift, Drift::Missing);
    assert_eq!(report.drift[0].job_id, None);
    let rec = r
        .worker
        .store
        .container(ContainerId::new(5).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, ContainerRecordState::Missing);
    assert!(
        r.worker.store.next_queued().unwrap().is_none(),
        "nothing is rebuilt"
    );
    // Known missing: reported as such, no new drift, no job.
    let again = r.reconciler.pass().await.unwrap();
    assert!(again.drift.is_empty());
    assert_eq!(again.health[&rec.id], Health::Missing);
    // A destroy cancelled (or failed) gives it back as missing, never as active.
    let cancelled = r.worker.store.enqueue_destroy(rec.id).await.unwrap();
    r.worker.store.cancel(cancelled.id).await.unwrap();
    let rec = r.worker.store.container(rec.id).unwrap().unwrap();
    assert_eq!(rec.state, ContainerRecordState::Missing);
    r.worker.store.enqueue_destroy(rec.id).await.unwrap();
    assert_eq!(r.drain().await[0].state, JobState::Succeeded);
    assert_eq!(r.worker.store.container(rec.id).unwrap(), None);
}

#[tokio::test]
async fn what_we_never_made_is_reported_foreign_and_left_alone() {
    let r = rig().await;
    r.create(5).await;
    r.lxc.add_foreign("lxcfoo");
    // An image (stopped, no record) is ours, never foreign.
    r.lxc.add_foreign("image-busybox-v1");
    r.net.add_device("vethc_br77", 1500);
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.foreign.containers, ["lxcfoo"]);
    assert_eq!(report.foreign.links, ["vethc_br77"]);
    assert!(report.drift.is_empty());
    assert!(r.lxc.names().contains(&"lxcfoo".to_string()));
    assert!(r.lxc.names().contains(&"image-busybox-v1".to_string()));
    assert!(r.net.link("vethc_br77").await.unwrap().is_some());
}

#[tokio::test]
async fn a_stopped_container_stays_stopped_and_one_started_by_hand_is_only_reported() {
    let r = rig().await;
    r.create(5).await;
    let id = ContainerId::new(5).unwrap();
    r.worker
        .store
        .enqueue_lifecycle(id, Lifecycle::Stop, Origin::Operator)
        .await
        .unwrap();
    assert_eq!(r.drain().await[0].state, JobState::Succeeded);
    assert_eq!(r.health(5).await, Health::Stopped);
    assert!(r.worker.store.next_queued().unwrap().is_none());
    r.lxc.start("container5").await.unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.drift[0].drift, Drift::RunningUndesired);
    assert_eq!(report.drift[0].job_id, None);
    assert!(
        r.worker.store.next_queued().unwrap().is_none(),
        "it is not stopped"
    );
}

#[tokio::test]
async fn the_fabric_is_ensured_first_and_repairs_wait_behind_operator_jobs() {
    let r = rig().await;
    r.create(5).await;
    r.create(6).await;
    let br2 = r.net.link("br2").await.unwrap().unwrap();
    r.net.delete_link(br2.index).await.unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert!(
        report
            .fabric_repaired
            .iter()
            .any(|a| a.contains("create bridge br2")),
        "{:?}",
        report.fabric_repaired
    );
    // Both veths went with the bridge: two repairs queued; an operator's create queued after
    // them runs first.
    assert_eq!(report.drift.len(), 2);
    let spec = CreateSpec {
        id: ContainerId::new(7).unwrap(),
        vlan: VlanId::new(2).unwrap(),
        ip: "192.168.2.7/24".parse().unwrap(),
        gateway: None,
        template: None,
    };
    r.worker.store.enqueue_create(spec).await.unwrap();
    let order: Vec<JobKind> = r.drain().await.iter().map(|j| j.kind).collect();
    assert_eq!(order, [JobKind::Create, JobKind::Repair, JobKind::Repair]);
    assert_eq!(r.health(5).await, Health::Ok);
    assert_eq!(r.health(6).await, Health::Ok);
}

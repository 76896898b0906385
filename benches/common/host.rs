//! The bench's hands on its one server, from inside the server's namespace (the bench's main
//! thread entered it, [`super::lab::Lab::enter`], so every child and socket made here lives
//! there): an `lxc-*` tool over many containers a few at a time, the pieces of a simulated
//! reboot as issue 12 describes it (every container stopped at once, every link but the
//! underlay gone, `creepy-meow setup` again), which containers run, and the neighbour table's
//! retry time on a bridge.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use creepy_meow::sys::inventory;
use creepy_meow::sys::netlink::Netlink;
use creepy_meow::sys::rtnl::RtNetlink;

use super::harness::lab::run_checked;
use super::harness::serve::BIN;

/// The underlay every lab server has (`tests/common/lab.rs`): the one link a reboot keeps.
pub const UNDERLAY: &str = "eth1";

/// Tools run at once by [`lxc_each`]: they mostly wait on LXC's monitor, not on a core.
const IN_FLIGHT: usize = 8;

/// How long [`delete_links_but_underlay`] waits for the links of stopped containers to go.
const LINKS_GONE_WITHIN: Duration = Duration::from_secs(10);

/// Runs `<tool> -P <lxc> -n <name> <args>` for every name, [`IN_FLIGHT`] at a time; returns the
/// names whose tool failed.
pub fn lxc_each(tool: &str, lxc: &Path, names: &[String], args: &[&str]) -> Vec<String> {
    let mut running: VecDeque<(&String, Child)> = VecDeque::new();
    let mut failed = Vec::new();
    let mut reap = |(name, mut child): (&String, Child)| {
        if !child.wait().is_ok_and(|s| s.success()) {
            failed.push(name.clone());
        }
    };
    for name in names {
        if running.len() >= IN_FLIGHT {
            reap(running.pop_front().expect("a tool in flight"));
        }
        let child = Command::new(tool)
            .arg("-P")
            .arg(lxc)
            .args(["-n", name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        running.push_back((name, child));
    }
    running.into_iter().for_each(reap);
    failed
}

/// The containers under `lxc` that run (their init is up), read the way the daemon reads them
/// (`sys::inventory`).
pub fn running(lxc: &Path) -> Vec<String> {
    inventory::survey(lxc, &Default::default())
        .expect("survey the LXC path")
        .0
        .into_iter()
        .filter(|e| e.init_pid.is_some())
        .map(|e| e.name)
        .collect()
}

/// Stops every container of `names` at once (`lxc-stop -k`, as a power cut would) and checks
/// that none runs afterwards.
pub fn kill_containers(lxc: &Path, names: &[String]) {
    lxc_each("lxc-stop", lxc, names, &["-k"]);
    let left = running(lxc);
    assert!(left.is_empty(), "still running after lxc-stop -k: {left:?}");
}

/// Deletes every link of the namespace but `lo` and the [`UNDERLAY`] (bridges, VXLAN ports,
/// host veths), through netlink, and waits until nothing else is left: a stopped container's
/// veth may go a moment after its namespace.
pub async fn delete_links_but_underlay() {
    let nl = RtNetlink::connect().expect("netlink");
    let deadline = Instant::now() + LINKS_GONE_WITHIN;
    loop {
        let extra: Vec<_> = nl
            .links()
            .await
            .expect("list links")
            .into_iter()
            .filter(|l| l.name != "lo" && l.name != UNDERLAY)
            .collect();
        if extra.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "links left after {LINKS_GONE_WITHIN:?}: {:?}",
            extra.iter().map(|l| &l.name).collect::<Vec<_>>()
        );
        for link in extra {
            // Gone already (a veth's peer, a namespace that just went): as good as deleted.
            let _ = nl.delete_link(link.index).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `creepy-meow setup --host-id <host_id>`: the fabric built again, as at boot.
pub fn setup(host_id: u8) {
    run_checked(Command::new(BIN).args(["setup", "--host-id", &host_id.to_string()]));
}

/// Sets how long the neighbour table waits before it asks again for an address on `dev`
/// (`retrans_time_ms`, this namespace's own; the kernel's default is one second).
pub fn arp_retry(dev: &str, every: Duration) {
    let path = format!("/proc/sys/net/ipv4/neigh/{dev}/retrans_time_ms");
    std::fs::write(&path, every.as_millis().to_string())
        .unwrap_or_else(|e| panic!("write {path}: {e}"));
}

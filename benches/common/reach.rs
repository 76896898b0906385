//! When does each of many containers become reachable? Each one is probed with ICMP echoes
//! ([`super::icmp`]) from the calling thread's namespace, every [`PROBE_EVERY`] from the moment
//! its host veth is up on a bridge (read with one netlink link dump every [`DUMP_EVERY`]) until
//! it answers. Probing only from then on keeps the prober's ARP broadcasts off the bridges while
//! nothing could answer; set the namespace's ARP retry short (`host::arp_retry`), or an echo
//! sent a moment before the container's `eth0` has its address waits a second for the next ARP
//! request.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use creepy_meow::sys::netlink::Netlink;
use creepy_meow::sys::rtnl::RtNetlink;

use super::icmp::Pinger;

/// How often an unanswered container is probed once its veth is up.
pub const PROBE_EVERY: Duration = Duration::from_millis(5);
/// How often the links are listed to see which veths are up.
pub const DUMP_EVERY: Duration = Duration::from_millis(2);

/// A container to reach.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Its host veth: probing starts once it is up on a bridge.
    pub veth: String,
    /// The address it answers on.
    pub addr: Ipv4Addr,
}

/// Waits until every probe answered; returns each one's first answer, measured from `since`.
/// Panics after `timeout` from `since`, naming the silent ones and adding `context()` (a log).
pub async fn first_answers(
    probes: &[Probe],
    since: Instant,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Vec<Duration> {
    let nl = RtNetlink::connect().expect("netlink");
    let mut pinger = Pinger::new();
    let by_addr: HashMap<Ipv4Addr, usize> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.addr, i))
        .collect();
    let mut reached: Vec<Option<Duration>> = vec![None; probes.len()];
    let mut sent: Vec<Option<Instant>> = vec![None; probes.len()];
    let mut up = vec![false; probes.len()];
    let mut next_dump = Instant::now();
    while reached.iter().any(Option::is_none) {
        if since.elapsed() > timeout {
            let silent: Vec<&str> = (0..probes.len())
                .filter(|&i| reached[i].is_none())
                .map(|i| probes[i].veth.as_str())
                .collect();
            panic!("not reachable after {timeout:?}: {silent:?}\n{}", context());
        }
        if Instant::now() >= next_dump && up.contains(&false) {
            mark_up(&nl, probes, &mut up).await;
            next_dump = Instant::now() + DUMP_EVERY;
        }
        for (i, probe) in probes.iter().enumerate() {
            let due = sent[i].is_none_or(|s| s.elapsed() >= PROBE_EVERY);
            if up[i] && reached[i].is_none() && due {
                pinger.send(probe.addr);
                sent[i] = Some(Instant::now());
            }
        }
        for addr in pinger.replies() {
            if let Some(&i) = by_addr.get(&addr) {
                reached[i].get_or_insert_with(|| since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    reached.into_iter().flatten().collect()
}

/// Marks the probes whose veth is up on a bridge now.
async fn mark_up(nl: &RtNetlink, probes: &[Probe], up: &mut [bool]) {
    let links = nl.links().await.expect("list links");
    let ports: HashSet<&str> = links
        .iter()
        .filter(|l| l.up && l.master.is_some())
        .map(|l| l.name.as_str())
        .collect();
    for (i, probe) in probes.iter().enumerate() {
        up[i] |= ports.contains(probe.veth.as_str());
    }
}

//! Fabric with unicast peers (issue 15): `creepy-meow setup --vlans 2,3,4` on a simulated
//! server, timed from spawn to exit (the release binary: process start, netlink sockets, reads,
//! plan, changes), `CMBENCH_FABRIC_ROUNDS` (default 7) rounds, the ways interleaved in each:
//!
//! - **multicast, fresh** and **multicast, no change**: the fabric as before issue 15
//!   (baseline);
//! - **unicast, fresh**: `--peers` with `CMBENCH_PEERS` (default 100) addresses: three VXLAN
//!   devices without a group and 300 flood entries (`00:00:00:00:00:00 dst <peer>`);
//! - **unicast, no change**: the same again (reads and a diff, no write);
//! - **unicast, one peer more** and **one peer less**: three appends, then three deletes (one
//!   per VLAN);
//! - the shell's way of the same 300 entries (baseline): `bridge fdb append` once per entry
//!   from a shell loop, and once through `bridge -batch` (one process), on the same VXLAN
//!   devices made without a group by `setup --peers <own address>`.
//!
//! Between rounds the fabric is removed (`setup --remove`, not timed). The same no-change run
//! is also timed through the library (`ensure_fabric` over one netlink connection), to tell
//! the fabric's own work from the process's start.
//!
//! Targets: unicast fresh ≤ 100 ms; unicast no change ≤ 10 ms.

#[path = "common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use creepy_meow::fabric::{ensure_fabric, FabricConfig};
use creepy_meow::model::{parse_vlan_list, HostId};
use creepy_meow::sys::rtnl::RtNetlink;

use common::harness::lab::run_checked;
use common::harness::serve::BIN;
use common::lab::Lab;
use common::stats::{ms, ratio, verdict, Summary};

const BENCH: &str = "fabric";
const VLANS: &str = "2,3,4";
/// The simulated server's own underlay address (the lab's server 1).
const OWN: &str = "10.77.0.1";

/// `n` peer addresses: 10.78.x.y, off the lab's underlay (no traffic is sent to them).
fn peers(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| Ipv4Addr::new(10, 78, (i / 250) as u8, (i % 250 + 1) as u8).to_string())
        .collect()
}

/// Runs `setup` with `extra` and returns how long it took (spawn to exit).
fn setup(extra: &[&str]) -> Duration {
    let mut cmd = Command::new(BIN);
    cmd.args(["setup", "--host-id", "1", "--vlans", VLANS])
        .args(extra);
    let t0 = Instant::now();
    run_checked(&mut cmd);
    t0.elapsed()
}

fn remove() {
    setup(&["--remove", "--force"]);
}

/// The 300 `bridge fdb append` lines of `peers` on every VLAN.
fn fdb_lines(peers: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for v in VLANS.split(',') {
        for p in peers {
            lines.push(format!(
                "fdb append 00:00:00:00:00:00 dev vxlan{v} dst {p} self permanent"
            ));
        }
    }
    lines
}

/// The way the shell does it: one `bridge` process per entry, from a shell loop.
fn shell_loop(lines: &[String], dir: &std::path::Path) -> Duration {
    let script = dir.join("fdb.sh");
    let body: Vec<String> = lines.iter().map(|l| format!("bridge {l}")).collect();
    let text = format!("set -e\nPATH=$PATH:/usr/sbin:/sbin\n{}\n", body.join("\n"));
    std::fs::write(&script, text).expect("write script");
    let t0 = Instant::now();
    run_checked(Command::new("sh").arg(&script));
    t0.elapsed()
}

/// One `bridge -batch` process for every entry.
fn bridge_batch(lines: &[String], dir: &std::path::Path) -> Duration {
    let batch = dir.join("fdb.batch");
    std::fs::write(&batch, lines.join("\n") + "\n").expect("write batch");
    let run = format!(
        "PATH=$PATH:/usr/sbin:/sbin exec bridge -batch {}",
        batch.display()
    );
    let t0 = Instant::now();
    run_checked(Command::new("sh").args(["-c", &run]));
    t0.elapsed()
}

/// Every way's samples.
#[derive(Default)]
struct Samples {
    /// Multicast, on a server without a fabric.
    mc_fresh: Vec<Duration>,
    /// Multicast, over its own fabric.
    mc_same: Vec<Duration>,
    /// Unicast with every peer, on a server without a fabric.
    uc_fresh: Vec<Duration>,
    /// Unicast, the same peers again.
    uc_same: Vec<Duration>,
    /// The same through the library, without the process.
    uc_same_lib: Vec<Duration>,
    /// Unicast, one peer added.
    uc_add: Vec<Duration>,
    /// Unicast, that peer removed again.
    uc_drop: Vec<Duration>,
    /// `bridge fdb append` per entry from a shell loop.
    shell: Vec<Duration>,
    /// `bridge -batch` of every entry.
    batch: Vec<Duration>,
}

fn main() {
    let rounds = common::env_usize("CMBENCH_FABRIC_ROUNDS", 7);
    let n = common::env_usize("CMBENCH_PEERS", 100);
    let lab = Lab::new();
    lab.enter();
    let dir = lab.path("fabric");
    let list = peers(n + 1);
    let (all, one_more) = (list[..n].join(","), list.join(","));
    let lines = fdb_lines(&list[..n]);
    let rt = common::runtime();
    let cfg = FabricConfig {
        host_id: HostId::new(1).expect("host id"),
        underlay: "eth1".into(),
        vlans: parse_vlan_list(VLANS).expect("vlans"),
        mtu: None,
        peers: list[..n].iter().map(|p| p.parse().expect("peer")).collect(),
        cluster_peers: false,
    };
    // Warm-up, not counted: the binary and the kernel's modules loaded.
    setup(&["--peers", &all]);
    remove();
    let mut s = Samples::default();
    for _ in 0..rounds {
        s.mc_fresh.push(setup(&[]));
        s.mc_same.push(setup(&[]));
        remove();
        s.uc_fresh.push(setup(&["--peers", &all]));
        s.uc_same.push(setup(&["--peers", &all]));
        s.uc_same_lib.push(rt.block_on(async {
            let nl = RtNetlink::connect().expect("netlink");
            let t0 = Instant::now();
            let ensured = ensure_fabric(&nl, &cfg).await.expect("ensure");
            assert!(ensured.actions.is_empty(), "{:?}", ensured.actions);
            t0.elapsed()
        }));
        s.uc_add.push(setup(&["--peers", &one_more]));
        s.uc_drop.push(setup(&["--peers", &all]));
        remove();
        // The shell's way needs the devices without a group: unicast to no peer.
        setup(&["--peers", OWN]);
        s.shell.push(shell_loop(&lines, &dir));
        setup(&["--peers", OWN]);
        s.batch.push(bridge_batch(&lines, &dir));
        remove();
    }
    report(n, &s);
}

fn row(name: &str, s: &Summary, base: &Summary) -> String {
    format!(
        "| {name} | {} | {} | {} | {} |\n",
        ms(s.p50),
        ms(s.min),
        ms(s.max),
        ratio(s.p50, base.p50)
    )
}

fn report(n: usize, s: &Samples) {
    let sum = Summary::of;
    let (mc_fresh, mc_same) = (sum(&s.mc_fresh), sum(&s.mc_same));
    let (uc_fresh, uc_same, uc_lib) = (sum(&s.uc_fresh), sum(&s.uc_same), sum(&s.uc_same_lib));
    let (uc_add, uc_drop) = (sum(&s.uc_add), sum(&s.uc_drop));
    let (shell, batch) = (sum(&s.shell), sum(&s.batch));
    let entries = 3 * n;
    let mut out = format!(
        "## Fabric: `setup --vlans {VLANS}`, spawn → exit, {} rounds\n\n\
         | way | p50 ms | min ms | max ms | p50 vs multicast, same kind |\n|---|---|---|---|---|\n",
        mc_fresh.n
    );
    out += &row("multicast, fresh (baseline)", &mc_fresh, &mc_fresh);
    out += &row(
        &format!("unicast, fresh: {n} peers, {entries} flood entries"),
        &uc_fresh,
        &mc_fresh,
    );
    out += &row("multicast, no change (baseline)", &mc_same, &mc_same);
    out += &row("unicast, no change", &uc_same, &mc_same);
    out += &row("unicast, no change, library only", &uc_lib, &mc_same);
    out += &row("unicast, one peer more (3 appends)", &uc_add, &mc_same);
    out += &row("unicast, one peer less (3 deletes)", &uc_drop, &mc_same);
    out += &format!(
        "\n| the shell's {entries} entries | p50 ms | min ms | max ms | p50 vs setup's unicast fresh |\n|---|---|---|---|---|\n"
    );
    out += &row(
        "`bridge fdb append` per entry, shell loop",
        &shell,
        &uc_fresh,
    );
    out += &row("`bridge -batch`, one process", &batch, &uc_fresh);
    out += &format!(
        "\nunicast fresh ({entries} entries) p50 {} ms, max {} ms: target ≤ 100 ms: **{}**; \
         no change p50 {} ms, max {} ms: target ≤ 10 ms: **{}**\n",
        ms(uc_fresh.p50),
        ms(uc_fresh.max),
        verdict(uc_fresh.p50 <= Duration::from_millis(100)),
        ms(uc_same.p50),
        ms(uc_same.max),
        verdict(uc_same.p50 <= Duration::from_millis(10)),
    );
    common::emit(BENCH, &out);
}

//! The lab switch as the tests impair it, and what a server's VXLAN devices flood to: a switch
//! that drops IPv4 multicast (as most clouds do), a server's port cut off and plugged back,
//! and the flood entries (`00:00:00:00:00:00 dst X`) that unicast flooding relies on.

use super::lab::run_checked;
use super::netns::{named, nsenter};
use super::{Lab, Server};

/// The bridge-family rule that drops IPv4 multicast between the switch's ports (a counter, so
/// a test can show it is what stopped the traffic). `fwd` is a reserved word in nft: the
/// chain is `c`.
const DROP_MULTICAST: &str = "table bridge t {
  chain c {
    type filter hook forward priority 0;
    ip daddr 224.0.0.0/4 counter drop;
  }
}
";

/// The nft table that cuts one port ([`cut`]), named so it can be deleted alone.
const CUT_TABLE: &str = "cut";

/// Runs `nft` with `args` in the switch's namespace; returns its output.
pub fn switch_nft(lab: &Lab, args: &[&str]) -> String {
    run_checked(&mut nsenter(&named(lab.switch_netns()), "nft", args))
}

/// Loads [`DROP_MULTICAST`] on the switch.
pub fn drop_multicast(lab: &Lab) {
    let conf = lab.dir().join("drop-multicast.nft");
    std::fs::write(&conf, DROP_MULTICAST).unwrap();
    switch_nft(lab, &["-f", conf.to_str().unwrap()]);
}

/// Drops every frame to or from server `host_id`'s port on the switch: the server stays up
/// but reaches nothing (a partition; its calls time out instead of being refused).
pub fn cut(lab: &Lab, host_id: u8) {
    let port = format!("p{host_id}");
    let conf = lab.dir().join(format!("cut-{port}.nft"));
    let rules = format!(
        "table bridge {CUT_TABLE} {{
  chain c {{
    type filter hook forward priority -10;
    iifname \"{port}\" drop;
    oifname \"{port}\" drop;
  }}
}}
"
    );
    std::fs::write(&conf, rules).unwrap();
    switch_nft(lab, &["-f", conf.to_str().unwrap()]);
}

/// Undoes [`cut`].
pub fn reconnect(lab: &Lab) {
    switch_nft(lab, &["delete", "table", "bridge", CUT_TABLE]);
}

/// The flood entries (`00:00:00:00:00:00 dst X`) of `vxlan` on `server`, as `bridge` shows
/// them, sorted.
pub fn flood_peers(server: &Server, vxlan: &str) -> Vec<String> {
    let fdb = server.run_ok("bridge", ["fdb", "show", "dev", vxlan]);
    let mut peers: Vec<String> = fdb
        .lines()
        .filter_map(|l| l.strip_prefix("00:00:00:00:00:00 dst "))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    peers.sort();
    peers
}

//! Reaching into containers on a simulated server, on the server's LXC path
//! ([`super::layout::lxc_path`]).

use std::net::Ipv4Addr;
use std::process::Output;

use super::layout::lxc_path;
use super::netns;
use super::ping::{ping_retrying, size_args};
use super::Server;

/// Runs `args` inside container `name` with `lxc-attach`, from the server's namespace (where
/// LXC's command socket lives).
pub fn attach(server: &Server, name: &str, args: &[&str]) -> Output {
    let lxc = lxc_path(&server.dir);
    let mut all = vec!["-P", lxc.to_str().expect("utf-8 path"), "-n", name, "--"];
    all.extend_from_slice(args);
    server.run("lxc-attach", all)
}

/// Init PID of running container `name`.
pub fn pid_of(server: &Server, name: &str) -> String {
    let lxc = lxc_path(&server.dir);
    let out = server.run_ok(
        "lxc-info",
        [
            "-P",
            lxc.to_str().expect("utf-8 path"),
            "-n",
            name,
            "-p",
            "-H",
        ],
    );
    out.trim().to_string()
}

/// Runs a host tool inside container `name`'s network namespace (iputils ping has -M do, busybox's
/// does not); returns its output whatever the exit status.
pub fn in_container(
    server: &Server,
    name: &str,
    program: &str,
    args: &[impl AsRef<str>],
) -> Output {
    let ns = netns::of_pid(pid_of(server, name));
    let mut cmd = netns::nsenter(&ns, program, args.iter().map(AsRef::as_ref));
    cmd.output()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"))
}

/// Reachability from container `name`, with the lab's retries ([`Server::ping`]).
pub fn ping_from(server: &Server, name: &str, target: Ipv4Addr) -> bool {
    let place = format!("container {name} on {}", server.netns);
    ping_retrying(&place, target, &[], |args| {
        in_container(server, name, "ping", args)
    })
}

/// [`ping_from`] with an ICMP payload of `payload` bytes, DF set or not ([`Server::ping_size`]).
pub fn ping_size_from(
    server: &Server,
    name: &str,
    target: Ipv4Addr,
    payload: usize,
    dont_fragment: bool,
) -> bool {
    let place = format!("container {name} on {}", server.netns);
    let extra = size_args(payload, dont_fragment);
    ping_retrying(&place, target, &extra, |args| {
        in_container(server, name, "ping", args)
    })
}

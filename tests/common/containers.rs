//! Reaching into containers on a simulated server.

use std::process::Output;

use super::Server;

/// Runs `args` inside container `name` with `lxc-attach`, from the server's namespace (where
/// LXC's command socket lives), using the server's LXC path `<dir>/lxc`.
pub fn attach(server: &Server, name: &str, args: &[&str]) -> Output {
    let lxc = server.dir.join("lxc");
    let mut all = vec!["-P", lxc.to_str().expect("utf-8 path"), "-n", name, "--"];
    all.extend_from_slice(args);
    server.run("lxc-attach", all)
}

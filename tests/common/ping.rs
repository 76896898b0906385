//! Pinging from a simulated server or a container: iputils ping's arguments, and the retries
//! that ARP and bridge learning need.

use std::net::Ipv4Addr;
use std::process::Output;
use std::thread::sleep;
use std::time::Duration;

/// Tries of [`ping_retrying`] before it gives up.
const PING_ATTEMPTS: usize = 5;

/// iputils ping's arguments for one echo to `target`, waiting one second at most, with `extra`
/// options (e.g. [`size_args`]). Without `-q`, which would hide the "message too long" that a DF
/// packet above the local MTU gets.
pub fn ping_args(target: Ipv4Addr, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["-n", "-c", "1", "-W", "1"].map(String::from).to_vec();
    args.extend_from_slice(extra);
    args.push(target.to_string());
    args
}

/// iputils ping's options for an ICMP payload of `payload` bytes, with DF set or not.
pub fn size_args(payload: usize, dont_fragment: bool) -> Vec<String> {
    let df = if dont_fragment { "do" } else { "dont" };
    vec!["-s".into(), payload.to_string(), "-M".into(), df.into()]
}

/// Pings `target` once per try, up to `PING_ATTEMPTS` tries, until a reply: ARP and bridge
/// learning may need a moment. `run` runs iputils ping with the given arguments where the
/// ping should start (`place` names it for errors).
pub fn ping_retrying(
    place: &str,
    target: Ipv4Addr,
    extra: &[String],
    mut run: impl FnMut(&[String]) -> Output,
) -> bool {
    let args = ping_args(target, extra);
    for attempt in 0..PING_ATTEMPTS {
        let out = run(&args);
        if out.status.success() {
            return true;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("failed to execute") {
            panic!("cannot run ping in {place}: {stderr} (install iputils-ping)");
        }
        // DF packet above the local (path) MTU: deterministic, no retries.
        if stderr.contains("message too long") {
            return false;
        }
        if attempt + 1 < PING_ATTEMPTS {
            sleep(Duration::from_millis(200));
        }
    }
    false
}

//! End to end on two simulated servers: the original tool's exact curl line, the client's live
//! progress and exit codes, and reachability across servers — real daemons, LXC and kernel.

mod common;

use std::net::Ipv4Addr;
use std::process::Stdio;

use common::containers::ping_from;
use common::daemon::{Daemon, API};
use common::layout::lxc_path;
use common::serve::BIN;
use common::{Lab, Server};

fn client(s: &Server, args: &[&str]) -> std::process::Output {
    s.run(BIN, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_original_curl_line_then_the_client_across_two_servers() {
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let d1 = Daemon::start(s1, None, false);
    let mut d2 = Daemon::start(s2, None, false);

    // The original tool's request, byte for byte.
    let out = s1.run_ok(
        "curl",
        [
            "-s",
            "-w",
            "\n%{http_code}",
            "--data",
            "id=5&vlan=2&ip=192.168.2.5/24",
            &format!("{API}/api/container/create"),
        ],
    );
    let (body, code) = out.rsplit_once('\n').unwrap();
    assert_eq!(code, "202", "{out}");
    let accepted: serde_json::Value = serde_json::from_str(body).unwrap();
    let job = d1.wait(accepted["job_id"].as_str().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        d1.json(&["-s", &format!("{API}/api/container/list")])["containers_id"],
        serde_json::json!([5])
    );
    let info = d1.json(&["-s", &format!("{API}/api/container/info/5")]);
    assert_eq!(
        (info["state"].as_str(), info["mtu"].as_u64()),
        (Some("RUNNING"), Some(1450)),
        "{info}"
    );

    // The other server reaches the container over the VXLAN, full-size packets included.
    assert!(
        s2.ping(Ipv4Addr::new(192, 168, 2, 5)),
        "server 2 cannot reach container5"
    );
    assert!(
        s2.ping_size(Ipv4Addr::new(192, 168, 2, 5), 1422, true),
        "a full-MTU packet was lost"
    );

    // The client: live steps, exit 0.
    let out = client(
        s2,
        &[
            "create",
            "--id",
            "6",
            "--vlan",
            "2",
            "--ip",
            "192.168.2.6/24",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for step in [
        "create_container",
        "start_container",
        "create_veth",
        "configure_network",
    ] {
        assert!(
            stdout.contains(&format!("✓ {step}")),
            "step {step} not shown: {stdout}"
        );
    }
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(
        ping_from(s1, "container5", Ipv4Addr::new(192, 168, 2, 6)),
        "container5 cannot reach container6"
    );
    let out = client(s2, &["list"]);
    assert_eq!(text(&out.stdout).trim(), "container6");

    // A refused request: one sentence, exit 2.
    let out = client(
        s2,
        &[
            "create",
            "--id",
            "7",
            "--vlan",
            "2",
            "--ip",
            "192.168.2.6/24",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("192.168.2.6 is already used on vlan 2 by container 6"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // No server: one sentence, exit 1.
    let out = client(s2, &["list", "--server", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the creepy-meow server at http://127.0.0.1:9"),
        "{out:?}"
    );

    // A create that fails midway: the client shows the failed step and the rollback, exits 1.
    d2.kill();
    drop(d2);
    let d2 = Daemon::start(s2, Some("before_action:create_veth"), false);
    let mut cmd = s2.cmd(
        BIN,
        [
            "create",
            "--id",
            "9",
            "--vlan",
            "2",
            "--ip",
            "192.168.2.9/24",
        ],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    d2.wait_barrier("before_action:create_veth");
    s2.run_ok("ip", ["link", "del", "br2"]);
    d2.release_barrier();
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✗ create_veth: bridge br2 not found"),
        "{stdout}"
    );
    assert!(stdout.contains("↺ create_container undone"), "{stdout}");
    assert!(
        stdout.contains("failed: step create_veth failed"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing left behind"), "{stdout}");
    let lxc2 = lxc_path(&s2.dir);
    let left = s2.run_ok("lxc-ls", ["-P", lxc2.to_str().unwrap()]);
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["container6", "image-busybox-v1"],
        "the failed create left something (the image stays, for the next create): {left}"
    );
    assert!(!s2.run_ok("ip", ["-br", "link"]).contains("vethc_br9"));
}

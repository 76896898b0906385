//! `info` of a running container on the real kernel and LXC (issue 17 item 4): the host's links
//! come from a view the daemon keeps current by the kernel's link notifications
//! (`src/sys/link_watch.rs`), not from a read per request. What an operator changes by hand —
//! the host veth set down, taken off its bridge, given another MTU, deleted, the container
//! stopped with `lxc-stop` — shows in `info` without a reconcile pass (none runs: passes are
//! on demand here, and none is asked). And what the daemon itself writes to a link is in the
//! view by the time the write returns.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, API};
use common::layout::lxc_path;
use common::{Lab, Server};
use creepy_meow::sys::rtnl::RtNetlink;
use creepy_meow::sys::Netlink;
use serde_json::Value;

/// No periodic pass: only the one at start, before the container exists.
const ON_DEMAND: &[&str] = &["--reconcile-interval", "0"];
/// How long a change may take to show (a deadline, not a timing assert: notifications are
/// read within microseconds).
const SHOWS_WITHIN: Duration = Duration::from_secs(10);

/// Asks container `id`'s info until `shows` holds, and returns it; panics naming `what` after
/// [`SHOWS_WITHIN`].
fn info_until(d: &Daemon, id: u32, what: &str, shows: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    common::eventually(&format!("info shows {what}"), SHOWS_WITHIN, || {
        last = d.info(id);
        shows(&last)
    });
    last
}

/// Whether `info` lists `problem`.
fn lists(info: &Value, problem: &str) -> bool {
    info["problems"]
        .as_array()
        .is_some_and(|p| p.iter().any(|x| x == problem))
}

fn ip(s: &Server, args: &str) {
    s.run_ok("ip", args.split(' '));
}

#[test]
fn info_shows_link_changes_and_a_stop_made_by_hand() {
    let lab = Lab::new(1);
    let s = lab.server(1);
    let d = Daemon::start_with(s, None, ON_DEMAND);
    let job = d.wait(&d.create(5));
    assert_eq!(job["state"], "succeeded", "{job}\n{}", d.log());
    let info = d.info(5);
    let seen = (&info["state"], &info["health"], &info["host_veth"]);
    assert_eq!(
        seen,
        (&"RUNNING".into(), &"ok".into(), &"vethc_br5".into()),
        "{info}"
    );

    ip(s, "link set vethc_br5 down");
    info_until(&d, 5, "the veth down", |i| lists(i, "vethc_br5 is down"));
    ip(s, "link set vethc_br5 up");
    info_until(&d, 5, "the veth up again", |i| i["health"] == "ok");
    ip(s, "link set vethc_br5 nomaster");
    info_until(&d, 5, "the veth off br2", |i| {
        lists(i, "vethc_br5 is not on br2")
    });
    ip(s, "link set vethc_br5 mtu 1400");
    info_until(&d, 5, "the veth's new MTU", |i| i["mtu"] == 1400);
    ip(s, "link del vethc_br5");
    let info = info_until(&d, 5, "the veth gone", |i| i["host_veth"].is_null());
    assert!(lists(&info, "host veth vethc_br5 is missing"), "{info}");

    let lxc = lxc_path(&s.dir);
    let lxc = lxc.to_str().expect("utf-8 path");
    s.run_ok("lxc-stop", ["-P", lxc, "-n", "container5", "-k"]);
    let info = info_until(&d, 5, "the container stopped", |i| i["state"] == "STOPPED");
    assert_eq!(
        (&info["pid"], &info["health"]),
        (&Value::Null, &"stopped".into()),
        "{info}"
    );
    // Nothing repaired meanwhile: what info showed was the host's, not a pass's doing.
    let kinds: Vec<Value> = d.jobs().iter().map(|j| j["kind"].clone()).collect();
    assert_eq!(kinds, ["create"], "{API}: a job ran besides the create");
    // And it was the view's: a watch that gave up would have info read the kernel instead,
    // which passes every check above.
    assert!(
        !d.log().contains("links are read from the kernel"),
        "the link view gave up:\n{}",
        d.log()
    );
}

/// A read of the view after the daemon's own link writes shows them: a write is counted
/// (`RtNetlink::note_write`) and the read waits on a fence while one is not covered
/// (`LinkWatch::catch_up`), so an `info` after a step sees what the step did. 200 MTU changes
/// of `lo`, each read back from the view at once, on a runtime of two workers as `serve`'s
/// (on one thread the task that reads the notifications happens to run first).
#[test]
fn a_read_after_a_link_write_sees_it_in_the_view() {
    let lab = Lab::new(1);
    let ns = common::netns::named(&lab.server(1).netns);
    let stale = std::thread::spawn(move || {
        common::netns::enter(&ns);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(writes_read_back())
    })
    .join()
    .unwrap();
    assert_eq!(stale, [], "(written, read back) MTUs that differ");
}

/// The MTUs written to `lo` through a watching handle that its view did not show at once.
async fn writes_read_back() -> Vec<(u32, u32)> {
    let nl = RtNetlink::connect().unwrap().watching_links().unwrap();
    let deadline = Instant::now() + SHOWS_WITHIN;
    while !nl.links_watched() {
        assert!(Instant::now() < deadline, "the link view never synced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lo = nl.link_brief("lo").await.unwrap().unwrap().index;
    let mut stale = Vec::new();
    for mtu in 1000..1200 {
        nl.set_mtu(lo, mtu).await.unwrap();
        let seen = nl.link_watched("lo").await.unwrap().unwrap().mtu;
        if seen != mtu {
            stale.push((mtu, seen));
        }
    }
    assert!(nl.links_watched(), "the view stopped answering");
    stale
}

//! Root tests of the provisioning engine with real LXC (busybox template) and the real kernel,
//! on simulated servers in namespaces the lab creates and removes.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use async_trait::async_trait;
use common::containers::{in_container, ping_from, ping_size_from};
use common::layout::lxc_path;
use common::on_server::on_server;
use common::ping::{ping_args, size_args};
use common::serve::BIN;
use common::{Lab, Server};
use creepy_meow::engine::Engine;
use creepy_meow::fabric::FabricConfig;
use creepy_meow::model::{parse_vlan_list, ContainerId, HostId, VlanId};
use creepy_meow::spec::{CreateSpec, StepEvent, StepName};
use creepy_meow::steps::{NoProgress, Progress, ProgressError};
use creepy_meow::sys::lxc::LxcTools;
use creepy_meow::sys::ns_addresses::NsAddresses;
use creepy_meow::sys::{inventory, Host};
use creepy_meow::templates::{Template, Templates};

/// Builds the fabric (VLAN 2 only, to keep it quick) on every server.
fn fabric(lab: &Lab) {
    for s in lab.servers() {
        s.run_ok(
            BIN,
            ["setup", "--host-id", &s.host_id.to_string(), "--vlans", "2"],
        );
    }
}

/// An engine for `server`; must be called inside [`on_server`].
fn engine(host_id: u8, lxc: PathBuf) -> Engine {
    let host = real_host(&lxc);
    let cfg = FabricConfig {
        host_id: HostId::new(u64::from(host_id)).unwrap(),
        underlay: "eth1".into(),
        vlans: parse_vlan_list("2").unwrap(),
        mtu: None,
        peers: Vec::new(),
        cluster_peers: false,
    };
    Engine::new(host, cfg)
}

fn spec(id: u64, ip: &str) -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(id).unwrap(),
        vlan: VlanId::new(2).unwrap(),
        ip: ip.parse().unwrap(),
        gateway: None,
        template: None,
    }
}

fn create(server: &Server, s: CreateSpec) {
    let (host_id, lxc) = (server.host_id, lxc_path(&server.dir));
    on_server(server, move || async move {
        engine(host_id, lxc)
            .create(&s, &mut NoProgress)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
    });
}

/// What a create could leave behind on `server`: containers, rootfs dirs, vethc_* links,
/// bridge ports other than the VXLAN uplink.
fn leftovers(server: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let lxc = lxc_path(&server.dir);
    if let Ok(dir) = std::fs::read_dir(&lxc) {
        for e in dir.flatten() {
            if e.path().is_dir() {
                out.push(format!("dir {}", e.file_name().to_string_lossy()));
            }
        }
    }
    let ls = server.run_ok("lxc-ls", ["-P", lxc.to_str().unwrap()]);
    out.extend(ls.split_whitespace().map(|n| format!("container {n}")));
    let links = server.run_ok("ip", ["-br", "link"]);
    out.extend(
        links
            .lines()
            .filter(|l| l.starts_with("vethc"))
            .map(|l| format!("link {l}")),
    );
    let all = server.run_ok("ip", ["-o", "link", "show"]);
    out.extend(
        all.lines()
            .filter(|l| l.contains(" master br2 ") && !l.contains(": vxlan2:"))
            .map(|l| format!("port {l}")),
    );
    out
}

#[test]
fn containers_on_two_servers_reach_each_other_with_full_mtu() {
    let lab = Lab::new(2);
    fabric(&lab);
    let (s1, s2) = (lab.server(1), lab.server(2));
    create(s1, spec(5, "192.168.2.5/24"));
    create(s2, spec(6, "192.168.2.6/24"));

    let c6 = Ipv4Addr::new(192, 168, 2, 6);
    assert!(
        ping_from(s1, "container5", c6),
        "container5 cannot ping container6"
    );

    let link = in_container(s1, "container5", "ip", &["-o", "link", "show"]);
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(
        link.contains("eth0") && link.contains("mtu 1450"),
        "eth0 must have the overlay MTU: {link}"
    );
    assert!(link.contains("lo: <LOOPBACK,UP"), "lo must be up: {link}");

    assert!(
        ping_size_from(s1, "container5", c6, 1422, true),
        "a full-MTU packet with DF did not cross"
    );
    // One byte over: refused at eth0 by the sender (EMSGSIZE), deterministic, so one try.
    let over = in_container(
        s1,
        "container5",
        "ping",
        &ping_args(c6, &size_args(1423, true)),
    );
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert!(
        !over.status.success() && stderr.contains("message too long, mtu=1450"),
        "a packet over the overlay MTU must be refused at eth0: {over:?}"
    );

    let veth = s1.run_ok("ip", ["-d", "link", "show", "vethc_br5"]);
    assert!(
        veth.contains("master br2") && veth.contains("mtu 1450") && veth.contains("state UP"),
        "{veth}"
    );
}

/// Fails one step, before or after its apply.
struct FailAt(StepName, StepEvent<'static>);

#[async_trait]
impl Progress for FailAt {
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError> {
        if step == self.0 && event == self.1 {
            return Err(ProgressError::NotRecorded {
                step,
                cause: format!("forced failure at {step} {event:?}").into(),
            });
        }
        Ok(())
    }
}

#[test]
fn a_failure_forced_at_each_step_leaves_nothing_behind() {
    let lab = Lab::new(1);
    fabric(&lab);
    let s = lab.server(1);
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));
    for step in StepName::CREATE {
        for when in [StepEvent::Started, StepEvent::Done] {
            let lxc = lxc_path(&s.dir);
            let err = on_server(s, move || async move {
                let e = engine(1, lxc);
                let err = e
                    .create(&spec(7, "192.168.2.7/24"), &mut FailAt(step, when))
                    .await
                    .unwrap_err();
                err.to_string()
            });
            assert!(err.contains(&format!("step {step} failed")), "{err}");
            assert!(err.contains("nothing left behind"), "{err}");
            assert_eq!(
                leftovers(s),
                Vec::<String>::new(),
                "after failing {step} at {when:?}"
            );
        }
    }
    // A real broken precondition: the bridge is gone.
    s.run_ok("ip", ["link", "del", "br2"]);
    let lxc = lxc_path(&s.dir);
    let err = on_server(s, move || async move {
        engine(1, lxc)
            .create(&spec(8, "192.168.2.8/24"), &mut NoProgress)
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(err.contains("bridge br2 is missing"), "{err}");
    assert!(leftovers(s).is_empty());
}

#[test]
fn the_largest_id_works_and_destroy_leaves_nothing() {
    let lab = Lab::new(1);
    fabric(&lab);
    let s = lab.server(1);
    create(s, spec(9_999_999, "192.168.2.99/24"));
    let rcs = lxc_path(&s.dir).join("container9999999/rootfs/etc/init.d/rcS");
    let rcs = std::fs::read_to_string(&rcs).unwrap();
    assert!(
        !rcs.lines().any(|l| l.starts_with("/bin/udhcpc")),
        "the template's DHCP client would flush eth0's address: {rcs}"
    );
    assert!(
        s.ping(Ipv4Addr::new(192, 168, 2, 99)),
        "the host cannot reach container9999999"
    );
    let lxc = lxc_path(&s.dir);
    let (first, second) = on_server(s, move || async move {
        let e = engine(1, lxc);
        let id = ContainerId::new(9_999_999).unwrap();
        (e.destroy(id).await.unwrap(), e.destroy(id).await.unwrap())
    });
    assert!(
        first && !second,
        "destroy must report what it did and be idempotent"
    );
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));
}

/// The real host of `server`, made inside [`on_server`].
fn real_host(lxc: &std::path::Path) -> Host {
    Host::real(LxcTools::new(lxc, "busybox", Vec::new()).expect("lxc path")).expect("netlink")
}

/// A lab server with the fabric and container12 (`192.168.2.12/24`) running; its init's PID
/// as `lxc-info` prints it.
fn one_running_container(lab: &Lab) -> u32 {
    fabric(lab);
    let s = lab.server(1);
    create(s, spec(12, "192.168.2.12/24"));
    let lxc = lxc_path(&s.dir);
    let info = s.run_ok(
        "lxc-info",
        ["-P", lxc.to_str().unwrap(), "-n", "container12", "-p", "-H"],
    );
    info.trim()
        .parse()
        .expect("lxc-info -p -H prints the init pid")
}

/// What the reconcile pass and `info` read without a process (LXC's command sockets and the
/// monitor's PID file, an AF_BRIDGE dump, `/proc/net/dev`) agrees with what the tools show.
#[test]
fn host_reads_without_a_process_agree_with_the_tools() {
    let lab = Lab::new(1);
    let want = one_running_container(&lab);
    let s = lab.server(1);
    let lxc = lxc_path(&s.dir);
    let (init, (entries, changing), ports, names, br2, (veth, absent)) =
        on_server(s, move || async move {
            let host = real_host(&lxc);
            (
                host.lxc.init_pid("container12").await.unwrap(),
                host.lxc.survey().await.unwrap(),
                host.net.bridge_ports().await.unwrap(),
                host.net.link_names().await.unwrap(),
                host.net.link("br2").await.unwrap().expect("br2"),
                (
                    host.net.link_brief("vethc_br12").await.unwrap(),
                    host.net.link_brief("vethc_br99").await.unwrap(),
                ),
            )
        });
    assert_eq!(init, Some(want), "init from the monitor's PID file");
    let entry = entries.iter().find(|e| e.name == "container12").unwrap();
    assert_eq!(entry.init_pid, Some(want), "{entries:?}");
    assert!(
        changing.is_empty(),
        "nothing is starting or stopping: {changing:?}"
    );
    let port = ports.iter().find(|p| p.name == "vethc_br12");
    let port = port.unwrap_or_else(|| panic!("vethc_br12 is a port: {ports:?}"));
    assert_eq!(
        (port.master, port.up, port.mtu),
        (Some(br2.index), true, br2.mtu)
    );
    assert!(ports.iter().any(|p| p.name == "vxlan2"), "{ports:?}");
    assert_eq!(veth.as_ref(), Some(port), "the brief read of one link");
    assert_eq!(absent, None, "a missing link is none, not an error");
    for name in ["lo", "eth1", "br2", "vxlan2", "vethc_br12"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    let lxc = lxc_path(&s.dir);
    s.run_ok(
        "lxc-stop",
        ["-P", lxc.to_str().unwrap(), "-n", "container12", "-k"],
    );
    let after = on_server(s, move || async move {
        real_host(&lxc).lxc.init_pid("container12").await.unwrap()
    });
    assert_eq!(after, None, "a stopped container has no init");
}

/// A container's addresses asked through netlink (its namespace's ID, then an address dump of
/// it), one at a time and many on several sockets, equal what `fib_trie` shows.
#[test]
fn addresses_through_netlink_agree_with_fib_trie() {
    let lab = Lab::new(1);
    let want = one_running_container(&lab);
    let s = lab.server(1);
    let lxc = lxc_path(&s.dir);
    let (by_netlink, by_proc) = on_server(s, move || async move {
        let host = real_host(&lxc);
        let all = host.netns.local_addresses_of(&[want, want]).await;
        let mut all: Vec<_> = all.into_iter().map(Result::unwrap).collect();
        // The netlink path itself, not its fallback to fib_trie.
        let direct = NsAddresses::connect().unwrap();
        let one = direct.of_pid_now(want).unwrap();
        all.push(one.expect("the namespace has an ID in ours"));
        let many = direct.of_pids(&[want, want, want]).await;
        all.extend(many.into_iter().map(|f| f.unwrap().expect("an ID")));
        (all, inventory::local_addresses(want).unwrap())
    });
    let ip: Ipv4Addr = "192.168.2.12".parse().unwrap();
    let mut fib = by_proc;
    fib.sort();
    for got in by_netlink {
        let mut got = got;
        got.sort();
        assert_eq!(got, fib, "netlink and fib_trie disagree on the addresses");
        assert!(
            got.contains(&ip) && got.contains(&Ipv4Addr::LOCALHOST),
            "{got:?}"
        );
    }
}

/// A server offering three templates: the default, `alt` (busybox from a copy of its binary)
/// and `bad` (a busybox binary that does not exist). A create asking for `alt` makes a
/// container that answers; one asking for `bad` runs the template with that argument, fails,
/// and leaves nothing; one naming none gets the default.
#[test]
fn a_create_runs_the_template_it_names_with_that_templates_arguments() {
    let lab = Lab::new(1);
    fabric(&lab);
    let s = lab.server(1);
    // The template copies the binary into the rootfs under its own name: keep `busybox`.
    let copy = s.dir.join("alt").join("busybox");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(which_busybox(), &copy).expect("copy busybox");
    let t = |name: &str, path: &str| Template {
        name: name.into(),
        lxc_template: "busybox".into(),
        args: vec!["--busybox-path".into(), path.into()],
    };
    let templates = Templates::new(vec![
        Template {
            name: "busybox".into(),
            lxc_template: "busybox".into(),
            args: vec![],
        },
        t("alt", copy.to_str().unwrap()),
        t("bad", "/nonexistent/busybox"),
    ])
    .unwrap();
    let lxc = lxc_path(&s.dir);
    let (alt, bad, default) = on_server(s, move || async move {
        let tools = LxcTools::with_templates(&lxc, templates).unwrap();
        let cfg = FabricConfig {
            host_id: HostId::new(1).unwrap(),
            underlay: "eth1".into(),
            vlans: parse_vlan_list("2").unwrap(),
            mtu: None,
            peers: Vec::new(),
            cluster_peers: false,
        };
        let engine = Engine::new(Host::real(tools).unwrap(), cfg);
        let with = |id: u64, template: Option<&str>| CreateSpec {
            template: template.map(String::from),
            ..spec(id, &format!("192.168.2.{id}/24"))
        };
        let run = |s: CreateSpec| {
            let engine = &engine;
            async move {
                engine
                    .create(&s, &mut NoProgress)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let alt = run(with(21, Some("alt"))).await;
        let bad = run(with(22, Some("bad"))).await;
        let default = run(with(23, None)).await;
        (alt, bad, default)
    });
    alt.unwrap_or_else(|e| panic!("alt: {e}"));
    default.unwrap_or_else(|e| panic!("default: {e}"));
    let bad = bad.expect_err("a busybox that does not exist cannot make a container");
    assert!(
        bad.contains("create_container") && bad.contains("nothing left behind"),
        "{bad}"
    );
    for id in [21, 23] {
        assert!(
            s.ping(Ipv4Addr::new(192, 168, 2, id)),
            "container{id} does not answer"
        );
    }
    let dirs: Vec<String> = std::fs::read_dir(lxc_path(&s.dir))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!dirs.contains(&"container22".to_string()), "{dirs:?}");
}

/// The busybox binary the template uses by default.
fn which_busybox() -> PathBuf {
    ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is installed (busybox-static)")
}

use std::sync::{Arc, Mutex};

use super::*;
use crate::model::VlanId;
use crate::sys::fake::FakeNetlink;
use crate::sys::fake_lxc::FakeLxc;
use crate::sys::Netlink;

fn spec() -> CreateSpec {
    CreateSpec {
        id: ContainerId::new(5).unwrap(),
        vlan: VlanId::new(2).unwrap(),
        ip: "192.168.2.5/24".parse().unwrap(),
        gateway: Some("192.168.2.1".parse().unwrap()),
        template: None,
    }
}

async fn host() -> (Host, FakeNetlink, FakeLxc) {
    let (host, net, lxc, _) = crate::test_support::fake_host().await;
    (host, net, lxc)
}

/// Records events as `step:event`, and can fail one step's `Started` or `Done`.
#[derive(Default, Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<String>>>,
    fail: Option<(StepName, StepEvent<'static>)>,
}

#[async_trait]
impl Progress for Recorder {
    async fn record(&mut self, step: StepName, event: StepEvent<'_>) -> Result<(), ProgressError> {
        let name = match event {
            StepEvent::Started => "started",
            StepEvent::Done => "done",
            StepEvent::Failed(_) => "failed",
            StepEvent::Undoing => "undoing",
            StepEvent::Undone => "undone",
            StepEvent::UndoFailed(_) => "undo_failed",
        };
        self.events.lock().unwrap().push(format!("{step}:{name}"));
        match self.fail {
            Some((s, e)) if s == step && e == event => Err(ProgressError::NotRecorded {
                step,
                cause: format!("forced failure at {step} {name}").into(),
            }),
            _ => Ok(()),
        }
    }
}

/// Runs every create step on `ctx`'s host, which must succeed.
async fn create_all(ctx: &mut StepCtx<'_>) {
    run_steps(&StepName::CREATE, ctx, &mut NoProgress)
        .await
        .unwrap();
}

/// Everything on the fake host other than the fabric: links beyond eth1/br2/vxlan2,
/// containers, and namespaces' links.
async fn leftovers(net: &FakeNetlink, lxc: &FakeLxc) -> Vec<String> {
    let mut out: Vec<String> = net
        .links()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| !["eth1", "br2", "vxlan2"].contains(&n.as_str()))
        .collect();
    out.extend(lxc.names());
    out
}

#[tokio::test]
async fn create_applies_the_steps_in_order_and_plumbs_the_container() {
    let (host, net, lxc) = host().await;
    let mut rec = Recorder::default();
    let s = spec();
    let mut ctx = StepCtx::new(&host, &s);
    run_steps(&StepName::CREATE, &mut ctx, &mut rec)
        .await
        .unwrap();
    let events = rec.events.lock().unwrap().clone();
    let expected: Vec<String> = StepName::CREATE
        .iter()
        .flat_map(|s| [format!("{s}:started"), format!("{s}:done")])
        .collect();
    assert_eq!(events, expected);

    let pid = ctx.pid.unwrap();
    let inside = net.netns_of(pid);
    let eth0 = inside.link("eth0").await.unwrap().unwrap();
    assert!(eth0.up);
    assert_eq!(eth0.mtu, 1450, "eth0 must carry the bridge's MTU, not 1500");
    assert!(
        inside.link("lo").await.unwrap().unwrap().up,
        "lo must be up"
    );
    assert_eq!(inside.addresses(eth0.index).await.unwrap(), [spec().ip]);
    assert_eq!(inside.default_gateway(), spec().gateway);
    let host_end = net.link("vethc_br5").await.unwrap().unwrap();
    let br2 = net.link("br2").await.unwrap().unwrap();
    assert_eq!(host_end.master, Some(br2.index));
    assert!(host_end.up);
    assert_eq!(lxc.names(), ["container5"]);
}

/// Issue 17: a step whose tool never answers fails as timed out once its limit has passed, and
/// the create is rolled back. Time is paused, so the limit passes as soon as nothing else can
/// run.
#[tokio::test(start_paused = true)]
async fn a_hung_step_times_out_and_is_rolled_back() {
    let (host, net, lxc) = host().await;
    lxc.hang_next_start();
    let mut rec = Recorder::default();
    let s = spec();
    let limit = std::time::Duration::from_secs(7);
    let mut ctx = StepCtx::new(&host, &s).with_limit(limit);
    let run = run_steps(&StepName::CREATE, &mut ctx, &mut rec);
    // Only so that a runner without a limit fails here rather than hanging.
    let err = tokio::time::timeout(limit * 100, run)
        .await
        .expect("the step's limit never stopped it")
        .unwrap_err();
    assert_eq!(err.step, StepName::StartContainer);
    assert!(
        matches!(err.error, StepError::TimedOut { after } if after == limit),
        "{err}"
    );
    assert!(err.undo_errors.is_empty(), "{err}");
    assert_eq!(
        err.to_string(),
        "step start_container failed: timed out after 7s (serve --step-timeout); its tools were killed; rolled back, nothing left behind"
    );
    let events = rec.events.lock().unwrap().clone();
    assert_eq!(
        events[4..],
        [
            "start_container:started",
            "start_container:failed",
            "start_container:undoing",
            "start_container:undone",
            "create_container:undoing",
            "create_container:undone",
            "ensure_image:undoing",
            "ensure_image:undone",
        ]
    );
    assert!(leftovers(&net, &lxc).await.is_empty());
}

#[tokio::test]
async fn a_failure_at_each_step_undoes_newest_first_and_leaves_nothing() {
    for (i, failing) in StepName::CREATE.iter().enumerate() {
        for when in [StepEvent::Started, StepEvent::Done] {
            let (host, net, lxc) = host().await;
            let mut rec = Recorder {
                fail: Some((*failing, when)),
                ..Recorder::default()
            };
            let s = spec();
            let mut ctx = StepCtx::new(&host, &s);
            let err = run_steps(&StepName::CREATE, &mut ctx, &mut rec)
                .await
                .unwrap_err();
            assert_eq!(err.step, *failing);
            assert!(err.undo_errors.is_empty(), "{err}");
            assert!(err.to_string().contains("rolled back"), "{err}");
            let undone: Vec<String> = rec
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.ends_with(":undone"))
                .cloned()
                .collect();
            let expected: Vec<String> = StepName::CREATE[..=i]
                .iter()
                .rev()
                .map(|s| format!("{s}:undone"))
                .collect();
            assert_eq!(undone, expected, "failing {failing} at {when:?}");
            assert!(
                leftovers(&net, &lxc).await.is_empty(),
                "failing {failing} at {when:?}"
            );
        }
    }
}

#[tokio::test]
async fn kernel_failures_roll_back_too() {
    for call in [
        "lxc-create",
        "lxc-start",
        "create_veth",
        "add_address",
        "add_default_route",
    ] {
        let (host, net, lxc) = host().await;
        net.fail_next(call, libc::EBUSY);
        let s = spec();
        let mut ctx = StepCtx::new(&host, &s);
        let err = run_steps(&StepName::CREATE, &mut ctx, &mut NoProgress)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("busy"), "{err}");
        assert!(
            leftovers(&net, &lxc).await.is_empty(),
            "after failing {call}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn undo_errors_are_collected_and_undo_goes_on() {
    let (host, net, lxc) = host().await;
    let s = spec();
    let mut ctx = StepCtx::new(&host, &s);
    create_all(&mut ctx).await;
    for _ in 0..UNDO_TRIES {
        net.fail_next("lxc-stop", libc::EIO);
    }
    let errors = undo_steps(&StepName::CREATE, &mut ctx, &mut NoProgress).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, StepName::StartContainer);
    let calls = net.calls();
    assert!(
        calls.iter().any(|c| c.contains("lxc-destroy container5")),
        "undo went on past the error"
    );
    assert!(lxc.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_undo_is_tried_again_with_a_growing_pause_before_it_counts_as_failed() {
    let (host, net, lxc) = host().await;
    let s = spec();
    let mut ctx = StepCtx::new(&host, &s);
    create_all(&mut ctx).await;
    net.clear_calls();
    // Fails while the host "settles", then succeeds: no error, nothing left.
    for _ in 0..UNDO_TRIES - 1 {
        net.fail_next("lxc-destroy", libc::EBUSY);
    }
    let started = tokio::time::Instant::now();
    let errors = undo_steps(&StepName::CREATE, &mut ctx, &mut NoProgress).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(lxc.names().is_empty());
    let tries = net
        .calls()
        .iter()
        .filter(|c| c.contains("lxc-destroy"))
        .count();
    assert_eq!(tries, UNDO_TRIES as usize);
    // 100 + 200 + 400 + 800 ms of (paused, so exact) back-off.
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(1500));
}

#[tokio::test]
async fn undo_of_nothing_succeeds_and_is_idempotent() {
    let (host, net, lxc) = host().await;
    let s = spec();
    let mut ctx = StepCtx::new(&host, &s);
    assert!(undo_steps(&StepName::CREATE, &mut ctx, &mut NoProgress)
        .await
        .is_empty());
    create_all(&mut ctx).await;
    let mut fresh = StepCtx::new(&host, &s);
    assert!(undo_steps(&StepName::CREATE, &mut fresh, &mut NoProgress)
        .await
        .is_empty());
    assert!(undo_steps(&StepName::CREATE, &mut fresh, &mut NoProgress)
        .await
        .is_empty());
    assert!(leftovers(&net, &lxc).await.is_empty());
}

#[tokio::test]
async fn recoverys_blind_undo_cleans_up_after_any_number_of_done_steps() {
    // image only, created, started, veth without its address, everything: as a crash leaves
    // them.
    for done in 1..=5 {
        let (host, net, lxc) = host().await;
        let s = spec();
        let mut ctx = StepCtx::new(&host, &s);
        run_steps(&StepName::CREATE[..done], &mut ctx, &mut NoProgress)
            .await
            .unwrap();
        let made = leftovers(&net, &lxc).await;
        assert_eq!(
            made,
            [
                &[][..],
                &["container5"],
                &["container5"],
                &["vethc_br5", "container5"],
                &["vethc_br5", "container5"]
            ][done - 1],
            "after {done} steps"
        );
        // Recovery knows nothing of the crashed run: a fresh context, every step's undo.
        let mut fresh = StepCtx::new(&host, &s);
        let errors = undo_steps(&StepName::CREATE, &mut fresh, &mut NoProgress).await;
        assert!(errors.is_empty(), "after {done} steps: {errors:?}");
        assert!(leftovers(&net, &lxc).await.is_empty(), "after {done} steps");
    }
}

/// The images of `lxc`, recorded in memory.
fn images_of(lxc: &FakeLxc) -> crate::images::Images {
    crate::images::Images::new(
        Arc::new(lxc.clone()),
        Arc::new(crate::images::MemoryBook::default()),
    )
}

#[tokio::test]
async fn with_images_a_create_clones_the_image_it_builds_once() {
    let (host, net, lxc) = host().await;
    let images = images_of(&lxc);
    for id in [5, 6] {
        let mut s = spec();
        s.id = ContainerId::new(id).unwrap();
        s.ip = format!("192.168.2.{id}/24").parse().unwrap();
        let mut ctx = StepCtx::new(&host, &s).with_images(Some(&images));
        create_all(&mut ctx).await;
    }
    let lxc_calls: Vec<String> = net
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("host: lxc-c"))
        .collect();
    assert_eq!(
        lxc_calls,
        [
            "host: lxc-create image-busybox-v1 -t busybox",
            "host: lxc-copy -s image-busybox-v1 container5",
            "host: lxc-copy -s image-busybox-v1 container6",
        ]
    );
}

#[tokio::test]
async fn a_clone_that_fails_rolls_back_to_the_image_alone() {
    let (host, net, lxc) = host().await;
    let images = images_of(&lxc);
    let s = spec();
    net.fail_next("lxc-copy", libc::EACCES);
    net.fail_next("lxc-copy", libc::EACCES);
    let mut ctx = StepCtx::new(&host, &s).with_images(Some(&images));
    let err = run_steps(&StepName::CREATE, &mut ctx, &mut NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.step, StepName::CreateContainer);
    assert!(err.undo_errors.is_empty(), "{err}");
    assert_eq!(leftovers(&net, &lxc).await, ["image-busybox-v1"]);
}

#[test]
fn a_tools_time_out_counts_as_the_steps_so_its_undo_is_not_tried_again() {
    let after = std::time::Duration::from_secs(60);
    let tool = StepError::Sys(crate::sys::SysError::TimedOut {
        what: "stop container5".into(),
        command: "lxc-stop -n container5".into(),
        after,
    });
    assert!(tool.is_timeout());
    assert!(StepError::TimedOut { after }.is_timeout());
    assert!(!StepError::Other("busy".into()).is_timeout());
}

#[tokio::test(start_paused = true)]
async fn a_step_said_to_undo_nothing_touches_nothing_when_undone() {
    // Its start is not synced before it acts (`StepName::undo_does_nothing`): that is safe
    // only while its undo really does nothing, even with everything a create made in place.
    for name in StepName::ALL.into_iter().filter(|n| n.undo_does_nothing()) {
        let (host, net, lxc) = host().await;
        let s = spec();
        let mut ctx = StepCtx::new(&host, &s);
        create_all(&mut ctx).await;
        let made = leftovers(&net, &lxc).await;
        net.clear_calls();
        step(name).undo(&mut ctx).await.unwrap();
        assert_eq!(net.calls(), Vec::<String>::new(), "undoing {name}");
        assert_eq!(leftovers(&net, &lxc).await, made, "undoing {name}");
    }
}

#[tokio::test]
async fn undoing_create_veth_takes_back_what_configure_network_did() {
    // configure_network's start is not synced before it acts (`StepName::undone_with`): safe
    // only while create_veth's undo leaves nothing of it.
    let (host, net, _lxc) = host().await;
    let s = spec();
    let mut ctx = StepCtx::new(&host, &s);
    create_all(&mut ctx).await;
    let inside = net.netns_of(ctx.pid.unwrap());
    let eth0 = inside.link("eth0").await.unwrap().unwrap();
    assert_eq!(inside.addresses(eth0.index).await.unwrap(), [spec().ip]);
    let covering = StepName::ConfigureNetwork.undone_with().unwrap();
    step(covering).undo(&mut ctx).await.unwrap();
    assert_eq!(
        inside.link("eth0").await.unwrap(),
        None,
        "eth0 outlived {covering}'s undo"
    );
    assert_eq!(
        inside.default_gateway(),
        None,
        "the route outlived {covering}'s undo"
    );
}

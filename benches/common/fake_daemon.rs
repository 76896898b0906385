//! The whole daemon (`creepy_meow::daemon::run`) on the fake host, alone in a process of its
//! own, for the memory bench: its `VmRSS` is then the daemon's and the fake kernel's, not the
//! load generator's. The bench spawns its own executable with [`ROLE`] set to a scratch
//! directory; [`serve_if_asked`] takes over such a child.
//!
//! The child prints `listening <address> <pid>` once it serves, and answers each `SIGUSR1` with one
//! line `heap <in use> <free> <mmapped>` (bytes, glibc's `mallinfo2`), so the bench can tell
//! memory the daemon holds from memory the allocator keeps, and each `SIGUSR2` with `trim
//! <µs>`, the time one `malloc_trim` of its heap takes. The fake's call log, which only
//! tests read, is emptied every second: it is not the daemon's memory.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use creepy_meow::model::parse_vlan_list;
use creepy_meow::sys::Host;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::harness::in_process;

/// The variable that makes the bench's executable the daemon's child: the scratch directory.
pub const ROLE: &str = "CMBENCH_FAKE_DAEMON_DIR";

/// VLANs served: seven bridges of at most 1,022 containers each hold the 5,000 the bench
/// makes (`engine::MAX_CONTAINERS_PER_VLAN`).
pub const VLANS: &str = "2,3,4,5,6,7,8";

/// Runs the daemon and exits, if this process was spawned as the child; returns otherwise.
pub fn serve_if_asked() {
    let Some(dir) = std::env::var_os(ROLE) else {
        return;
    };
    // As `main.rs` does, before any thread starts.
    creepy_meow::sys::memory::limit_malloc_arenas();
    let rt = tokio::runtime::Runtime::new().expect("the daemon's runtime");
    rt.block_on(serve(Path::new(&dir)));
    std::process::exit(0);
}

/// The daemon with `serve`'s defaults but the fake host, the VLANs of [`VLANS`] and a queue
/// that takes every create at once.
async fn serve(dir: &Path) {
    let mut cfg = in_process::config(
        dir,
        &in_process::Opts {
            max_queued: 100_000,
            ..in_process::DEFAULT
        },
    );
    cfg.fabric.vlans = parse_vlan_list(VLANS).expect("VLANs");
    cfg.reconcile_every = Duration::from_secs(creepy_meow::config::DEFAULT_RECONCILE_SECS);
    let (host, net, _lxc) = Host::fake();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sd = shutdown.clone();
    let daemon = tokio::spawn(creepy_meow::daemon::run(cfg, host, sd, Some(tx)));
    let addr = rx.await.expect("the daemon is ready");
    say(&format!("listening {addr} {}", std::process::id()));
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1");
    let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = usr1.recv() => say(&heap_line()),
            _ = usr2.recv() => say(&trim_line()),
            _ = term.recv() => break,
            _ = tick.tick() => net.clear_calls(),
        }
    }
    shutdown.cancel();
    daemon
        .await
        .expect("the daemon's task")
        .expect("the daemon stops cleanly");
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .expect("stdout");
}

/// `trim <microseconds>`: how long one `malloc_trim` of the whole heap took (the daemon's
/// own trims skip a heap with little free, `sys::memory::release_free_memory`).
fn trim_line() -> String {
    let t0 = std::time::Instant::now();
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    format!("trim {}", t0.elapsed().as_micros())
}

/// `heap <in use> <free> <mmapped>`: glibc's view of its heap, in bytes.
fn heap_line() -> String {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    format!("heap {} {} {}", m.uordblks, m.fordblks, m.hblkhd)
}

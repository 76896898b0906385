//! Runs async library code "on" a simulated server: on a fresh thread that has entered the
//! server's network namespace (setns, network only), with its own current-thread runtime.
//! Netlink sockets opened there, and processes spawned from there (the `lxc-*` tools), belong
//! to the server's namespace, exactly as for a daemon started on that server.

use std::future::Future;

use super::Server;

/// Runs `make_future()` to completion inside `server`'s network namespace and returns its
/// output. Panics inside propagate to the caller.
pub fn on_server<F, Fut, T>(server: &Server, make_future: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{}", server.netns);
    let handle = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(make_future())
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

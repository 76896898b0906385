//! Runs async library code "on" a simulated server: on a fresh thread that has entered the
//! server's network namespace ([`super::netns::enter`]), with its own current-thread runtime.
//! Netlink sockets opened there, and processes spawned from there (the `lxc-*` tools), belong
//! to the server's namespace, exactly as for a daemon started on that server.

use std::future::Future;

use super::{netns, Server};

/// Runs `make_future()` to completion inside `server`'s network namespace and returns its
/// output. Panics inside propagate to the caller.
pub fn on_server<F, Fut, T>(server: &Server, make_future: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let ns = netns::named(&server.netns);
    let handle = std::thread::spawn(move || {
        netns::enter(&ns);
        super::runtime().block_on(make_future())
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

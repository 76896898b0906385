//! `creepy-meow serve`: the provisioning daemon on the real host.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{fail, EXIT_USAGE};
use crate::cli::ServeArgs;
use crate::config::DaemonConfig;
use crate::daemon;
use crate::sys::lxc::LxcTools;
use crate::sys::preflight;
use crate::sys::privilege::has_net_admin;
use crate::sys::Host;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> ExitCode {
    let mut cfg = match DaemonConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    crate::logging::init_daemon(cfg.log_format);
    if !has_net_admin() {
        return fail(
            EXIT_USAGE,
            "serve changes network interfaces: run it as root (or with CAP_NET_ADMIN)",
        );
    }
    // Before anything on the host is touched (the LXC path below, the fabric, the store).
    let found = preflight::check(std::env::var_os("PATH").as_deref(), cfg.clone);
    if let Some(refusal) = found.refusal() {
        return fail(EXIT_USAGE, refusal);
    }
    cfg.full_copies = cfg.clone.then(|| found.overlay_missing()).flatten();
    let lxc = match LxcTools::with_templates(&cfg.lxc_path, cfg.templates.clone()) {
        Ok(l) => l.with_tool_timeout(cfg.step_timeout),
        Err(e) => return fail(1, e),
    };
    let host = match Host::real(lxc) {
        Ok(h) => h,
        Err(e) => return fail(1, e),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match daemon::run(cfg, host, shutdown, None).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(if e.is_usage() { EXIT_USAGE } else { 1 }, e),
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing the current step, then stopping"),
        _ = int.recv() => tracing::info!("SIGINT: finishing the current step, then stopping"),
    }
    shutdown.cancel();
}

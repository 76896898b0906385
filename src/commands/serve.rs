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
    let cfg = match DaemonConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let log = crate::logging::init_daemon(cfg.log_format);
    let outcome = serve(cfg).await;
    // Every line logged is out before the last sentence.
    drop(log);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, why)) => fail(code, why),
    }
}

/// The daemon on the real host; an exit code and the sentence that says why it stopped.
async fn serve(mut cfg: DaemonConfig) -> Result<(), (u8, String)> {
    if !has_net_admin() {
        let why = "serve changes network interfaces: run it as root (or with CAP_NET_ADMIN)";
        return Err((EXIT_USAGE, why.into()));
    }
    // Before anything on the host is touched (the LXC path below, the fabric, the store).
    let found = preflight::check(std::env::var_os("PATH").as_deref(), cfg.clone);
    if let Some(refusal) = found.refusal() {
        return Err((EXIT_USAGE, refusal.to_string()));
    }
    cfg.full_copies = cfg.clone.then(|| found.overlay_missing()).flatten();
    let lxc = LxcTools::with_templates(&cfg.lxc_path, cfg.templates.clone())
        .map_err(|e| (1, e.to_string()))?
        .with_tool_timeout(cfg.step_timeout);
    let host = Host::real(lxc).map_err(|e| (1, e.to_string()))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    daemon::run(cfg, host, shutdown, None)
        .await
        .map_err(|e| (if e.is_usage() { EXIT_USAGE } else { 1 }, e.to_string()))
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

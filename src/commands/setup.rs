//! `creepy-meow setup`: build, repair or remove this server's host fabric. A build prints the
//! flooding mode in force first (`mode: ...`), then what it changed.

use std::process::ExitCode;

use super::{fail, EXIT_USAGE};
use crate::cli::SetupArgs;
use crate::fabric::{ensure_fabric, remove_fabric, Action, FabricError};
use crate::sys::privilege::has_net_admin;
use crate::sys::rtnl::RtNetlink;

/// Runs `setup` with `args`.
pub async fn run(args: SetupArgs) -> ExitCode {
    if !has_net_admin() {
        return fail(
            EXIT_USAGE,
            "setup changes network interfaces: run it as root (or with CAP_NET_ADMIN)",
        );
    }
    let nl = match RtNetlink::connect() {
        Ok(nl) => nl,
        Err(e) => return fail(1, e),
    };
    let vlans = &args.fabric.vlans_or_default();
    let result = if args.remove {
        remove_fabric(&nl, vlans, args.force).await
    } else {
        let cfg = match args.fabric.config() {
            Ok(cfg) => cfg,
            Err(e) => return fail(EXIT_USAGE, e),
        };
        ensure_fabric(&nl, &cfg).await.map(|ensured| {
            println!("mode: {}", ensured.flooding);
            ensured.actions
        })
    };
    match result {
        Ok(actions) => {
            report(&actions, args.remove);
            ExitCode::SUCCESS
        }
        Err(e) => fail(if e.is_usage() { EXIT_USAGE } else { 1 }, describe(&e)),
    }
}

fn describe(e: &FabricError) -> String {
    match e {
        FabricError::Sys(s) => format!(
            "{s}; the steps before it were applied, run setup again once the cause is fixed"
        ),
        other => other.to_string(),
    }
}

fn report(actions: &[Action], removing: bool) {
    if actions.is_empty() {
        println!(
            "{}",
            if removing {
                "nothing to remove"
            } else {
                "fabric is up to date; nothing changed"
            }
        );
    }
    for action in actions {
        println!("{action}");
    }
}

//! One file per subcommand (the client ones share `client.rs`); each returns the exit code.

pub mod client;
pub mod cluster;
pub mod events;
pub mod serve;
pub mod setup;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code for a mistake the operator must fix (bad input, missing privilege).
pub const EXIT_USAGE: u8 = 2;

/// Runs the subcommand `cli` names.
pub async fn run(cli: Cli) -> ExitCode {
    // The daemon sets up its own logging once its configuration (log format) is known.
    if !matches!(cli.command, Command::Serve(_)) {
        crate::logging::init_command();
    }
    match cli.command {
        Command::Setup(a) => setup::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Create(a) => client::create(a).await,
        Command::Destroy(a) => client::destroy(a).await,
        Command::Start(a) => client::lifecycle(a, "start").await,
        Command::Stop(a) => client::lifecycle(a, "stop").await,
        Command::Restart(a) => client::lifecycle(a, "restart").await,
        Command::List(a) => client::list(a).await,
        Command::Info(a) => client::info(a).await,
        Command::Reconcile(a) => client::reconcile(a).await,
        Command::Images(a) => client::images(a).await,
        Command::BuildImage(a) => client::build_image(a).await,
        Command::Jobs(a) => client::jobs(a).await,
        Command::Job(a) => client::job(a).await,
        Command::Events(a) => events::run(a).await,
        Command::Cluster(a) => cluster::run(a).await,
    }
}

/// Prints `msg` as the one-line error of a failed command and returns `code`.
pub fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("creepy-meow: {msg}");
    ExitCode::from(code)
}

//! One file per subcommand; each returns the process exit code.

pub mod setup;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code for a mistake the operator must fix (bad input, missing privilege).
pub const EXIT_USAGE: u8 = 2;

/// Runs the subcommand `cli` names.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Setup(args) => setup::run(args).await,
    }
}

/// Prints `msg` as the one-line error of a failed command and returns `code`.
pub fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("creepy-meow: {msg}");
    ExitCode::from(code)
}

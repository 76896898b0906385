//! The `creepy-meow` binary: parses arguments, starts logging and the runtime, hands over to
//! [`creepy_meow::commands`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    creepy_meow::sys::memory::limit_malloc_arenas();
    creepy_meow::sys::limits::raise_open_files();
    let cli = creepy_meow::cli::Cli::parse();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(creepy_meow::commands::run(cli)),
        Err(e) => {
            eprintln!("creepy-meow: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

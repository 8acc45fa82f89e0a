//! The `passerelle` binary: one executable, a subcommand per role and admin task.

use clap::Parser;
use passerelle::{cli, commands};
use std::process::ExitCode;

/// jemalloc returns freed pages to the OS a second after they fall idle (configured in
/// `.cargo/config.toml`); glibc's malloc kept them in its per-thread arenas, so a worker
/// that had exported 20,000 records stayed at 60 MB while idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `breakerctl`: the operator's command line for breakerd.
//!
//! It speaks only the public `breakerd.v1` API (the Admin service, and the
//! Breaker service's Watch stream), so it works against any coordinator
//! that serves the proto. The one exception is `export-store`, which reads
//! a stopped coordinator's store directory read-only through
//! breakerd-core's exporter and connects to nothing.
//!
//! ```text
//! breakerctl list --state open
//! breakerctl get payments
//! breakerctl force-open payments --reason "provider outage" --expires 30m
//! breakerctl set-policy payments --reason "noisy" consecutive_failures=10 open_base_ms=30s
//! breakerctl watch payments --json
//! breakerctl export-store --data-dir /var/lib/breakerd | jq .
//! ```

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod duration;
mod error;
mod policy_args;
mod table;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // One connection, one call at a time: a single-threaded runtime is all
    // a command line needs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("breakerctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `breakerctl watch | head`: the reader left, nothing to report.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("breakerctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

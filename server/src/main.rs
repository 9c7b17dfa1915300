//! The `breakerd` binary: parse flags, load and check the config, install
//! logging, bind the listen address and serve until SIGTERM or Ctrl-C.
//!
//! Exit codes: 0 after a clean shutdown, 1 when serving fails (e.g. the
//! address cannot be bound), 2 for a bad command line or config.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use breakerd::{
    app,
    config::{Cli, Config},
    telemetry,
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| app::ServeError::Bind {
                addr: config.listen,
                source: e,
            })?;
        let http_listener = match config.http.listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                // Only the built-in default may be skipped (see HttpConfig).
                Err(e) if !config.http.listen_required => {
                    tracing::warn!(http_addr = %addr, error = %e, "cannot bind the default HTTP side port; serving without it (set http.listen or --http-listen to make this fatal)");
                    None
                }
                Err(e) => return Err(app::ServeError::Bind { addr, source: e }),
            },
            None => None,
        };
        app::serve_with_http(config, listener, http_listener, app::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "breakerd stopped with an error");
            eprintln!("breakerd: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `spapi-rdt-proxy`: a sidecar that gives any SP-API client, in any language, the Restricted Data
//! Tokens it needs. `spapi-rdt-proxy --help` is the manual; `docs/SIDECAR.md` shows it running.
//!
//! This file only wires the parts together: the command line and settings ([`cli`], [`config`]),
//! the logs ([`logging`]), the proxy ([`server`]) and its operations endpoints ([`ops`]), served
//! ([`serve`]) until SIGTERM or SIGINT ([`shutdown`]).
// The flags' doc comments are also their `--help` text, where a URL is plain text.
#![allow(rustdoc::bare_urls)]

mod auth;
mod cli;
mod config;
mod failure;
mod logging;
mod metrics;
mod ops;
mod reports;
mod serve;
mod server;
mod shutdown;
mod upstream;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let vars = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let settings = match config::Settings::load(&args, vars) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("spapi-rdt-proxy: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(settings.log_format) {
        eprintln!("spapi-rdt-proxy: logging: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spapi-rdt-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve::run(settings, shutdown::signalled())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("spapi-rdt-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

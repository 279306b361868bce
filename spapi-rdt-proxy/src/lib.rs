//! `spapi-rdt-proxy`: a sidecar that gives any SP-API client, in any language, the Restricted Data
//! Tokens it needs. `spapi-rdt-proxy --help` is the manual; `docs/SIDECAR.md` in the repository
//! shows it running.
//!
//! The binary is [`main`]. The library is for running the proxy inside another program (a test, a
//! load generator): [`Args`] and [`Settings`] read the command line, the config file and the
//! environment; [`App`] is the proxy itself; [`serve`] serves it on a listener, within [`Limits`],
//! until a shutdown future completes ([`serve_ops`] serves its operations endpoints on an address
//! of their own), and [`run`] does all of that from [`Settings`].
//!
//! ```no_run
//! use clap::Parser;
//! use spapi_rdt_proxy::{Args, Settings, run};
//!
//! # async fn example() -> Result<(), spapi_rdt::BoxError> {
//! let args = Args::parse_from(["spapi-rdt-proxy", "--region", "eu"]);
//! let settings = Settings::load(&args, std::env::vars())?;
//! run(settings, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
// The flags' doc comments are also their `--help` text, where a URL is plain text.
#![allow(rustdoc::bare_urls)]

mod auth;
mod cli;
mod config;
mod connections;
mod document_budget;
mod documents;
mod failure;
mod listener;
mod logging;
mod metrics;
mod ops;
mod proxy;
mod reports;
mod shutdown;
mod stack;
mod upstream;
mod usage_plans;

#[cfg(test)]
mod tests;

pub use cli::Args;
pub use config::{ConfigError, Settings};
pub use connections::Limits;
pub use listener::{Drained, run, serve, serve_ops};
pub use proxy::App;

use std::process::ExitCode;

use clap::Parser;

/// The `spapi-rdt-proxy` program: reads the command line, the config file and the environment,
/// starts logging, and serves until SIGTERM or SIGINT. Exit code 2 for bad settings, 1 when
/// serving fails.
pub fn main() -> ExitCode {
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
    match runtime.block_on(listener::run(settings, shutdown::signalled())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("spapi-rdt-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The workspace's maintenance programs, run as `cargo xtask <command>` from anywhere in the
//! repository (the alias is in `.cargo/config.toml`). Never published.
//!
//! - `bench-report`: the Markdown report of the last `cargo bench` run; after a full run it
//!   rewrites `BENCHMARKS.md` (see [`bench_report`]).
//! - `public-api [--check]`: the listing of each published package's public API in
//!   `public-api/<package>.txt`, written, or compared with the code (see [`api_listing`]).
//! - `layering`: no library module imports one that imports it back, and no front end imports the
//!   cache (see [`layering`]).
//! - `usage-plans [--check]`: the table of every model operation's usage plan in
//!   `src/catalog/usage_plans.rs`, generated from `spapi-models/`, or compared with it (see
//!   [`usage_plans`]).

mod api_listing;
mod bench_report;
mod layering;
mod usage_plans;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask bench-report\n       cargo xtask public-api [--check]\n       cargo xtask layering\n       cargo xtask usage-plans [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench-report") => bench_report::run(),
        Some("public-api") => api_listing::run(&args[1..]).map_err(Into::into),
        Some("layering") => layering::run(),
        Some("usage-plans") => usage_plans::run(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

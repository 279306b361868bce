//! The workspace's maintenance programs, run as `cargo xtask <command>` from anywhere in the
//! repository (the alias is in `.cargo/config.toml`). Never published.
//!
//! - `bench-report`: the Markdown report of the last `cargo bench` run; after a full run it
//!   rewrites `BENCHMARKS.md` (see [`bench_report`]).

mod bench_report;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask bench-report";

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        Some("bench-report") => bench_report::run(),
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

//! The proxy that was here is now a supported binary of this crate, `spapi-rdt-proxy` (feature
//! `proxy`), with the same command line and environment, and more: `--region`, a config file,
//! client authentication, `/healthz`, `/readyz`, `/metrics`, graceful shutdown, and restricted
//! report documents without a header. See `docs/SIDECAR.md` and `spapi-rdt-proxy --help`.
//!
//! ```text
//! cargo run --features proxy --bin spapi-rdt-proxy -- --listen 127.0.0.1:8080 \
//!     --upstream http://127.0.0.1:PORT --lwa-url http://127.0.0.1:PORT/auth/o2/token
//! cargo install spapi-rdt --features proxy    # installs spapi-rdt-proxy
//! ```
//!
//! This example only says so, and exits with status 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "the proxy example is now the spapi-rdt-proxy binary:\n  \
         cargo run --features proxy --bin spapi-rdt-proxy -- --help\n\
         (docs/SIDECAR.md shows it running)"
    );
    ExitCode::from(2)
}

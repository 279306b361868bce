//! Starts the SP-API emulator and keeps it running, for trying the other examples by hand
//! (the proxy above all).
//!
//! Run it with `cargo run --example emulator`. It listens on `127.0.0.1` and a port the system
//! picks, and prints its origin, its LWA URL and its credentials (made up, valid only here) as shell exports, and the
//! command that starts the `spapi-rdt-proxy` binary against it; it stops on Ctrl-C. It knows two sellers:
//! `default` (`SPAPI_REFRESH_TOKEN`) and `seller-b` (`SPAPI_REFRESH_TOKEN_B`, chosen with
//! `x-spapi-seller: B` on the proxy). Every answer names the seller in `x-emulator-seller`, and
//! restricted answers say in `x-emulator-pii` whether personal data was served.

use std::process::ExitCode;

use spapi_rdt::BoxError;
use spapi_rdt_emulator::{Emulator, EmulatorConfig};

async fn run() -> Result<(), BoxError> {
    let config = EmulatorConfig::default().seller("seller-b", "Atzr|emulator-seller-b");
    let emulator = Emulator::start_with(config).await?;
    let missing = || "the emulator lost a seller";
    let origin = emulator.origin();
    println!("SP-API emulator on {origin}");
    println!();
    println!("export SPAPI_CLIENT_ID='{}'", emulator.client_id());
    println!("export SPAPI_CLIENT_SECRET='{}'", emulator.client_secret());
    println!(
        "export SPAPI_REFRESH_TOKEN='{}'",
        emulator.refresh_token("default").ok_or_else(missing)?
    );
    println!(
        "export SPAPI_REFRESH_TOKEN_B='{}'",
        emulator.refresh_token("seller-b").ok_or_else(missing)?
    );
    println!();
    println!(
        "cargo run -p spapi-rdt-proxy -- --upstream {origin} --lwa-url {}",
        emulator.lwa_url()
    );
    println!("curl -i http://127.0.0.1:8080/orders/v0/orders/902-3159896-1390916/address");
    println!(
        "curl -i -H 'x-spapi-seller: B' http://127.0.0.1:8080/sellers/v1/marketplaceParticipations"
    );
    println!();
    println!("Ctrl-C stops the emulator.");
    tokio::signal::ctrl_c().await?;
    let counters = emulator.counters();
    println!(
        "served {} restricted calls ({} with personal data), {} unrestricted calls, {} token calls",
        counters.restricted_calls,
        counters.pii_served,
        counters.unrestricted_calls,
        counters.token_calls
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

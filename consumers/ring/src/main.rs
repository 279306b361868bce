//! An application whose TLS is rustls with ring (as in hyper-rustls's `ring` feature). With
//! spapi-rdt's default `rustls` feature both ring and aws-lc-rs would be compiled in and rustls would
//! panic at the application's first `ClientConfig::builder()`; with `rustls-no-provider` only ring is
//! there.
//!
//! Run with `install` (the default), the application installs ring's provider itself; with
//! `from-features`, it relies on rustls choosing the one provider compiled in, which is what panics
//! when spapi-rdt brings aws-lc-rs too.

#[path = "../../common.rs"]
mod common;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt_emulator::Emulator;
use spapi_rdt::{BoxError, error::SourceBuildError};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::start().await?;

    // No provider yet: the source says so with a typed error instead of reqwest's panic.
    match common::source(&emulator) {
        Err(SourceBuildError::NoCryptoProvider) => {}
        other => return Err(format!("expected NoCryptoProvider, got {other:?}").into()),
    }

    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "install".to_owned());
    match mode.as_str() {
        "install" => rustls::crypto::ring::default_provider()
            .install_default()
            .map_err(|_| "a crypto provider was already installed")?,
        // `ClientConfig::builder()` below installs the provider of the crate features.
        "from-features" => {}
        other => return Err(format!("unknown mode `{other}`: install or from-features").into()),
    }

    // The application's own TLS client, built as it would be for Amazon, on the process default
    // (ring). It also speaks plain HTTP, which is how it reaches the emulator on loopback.
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    common::call_restricted(&emulator, common::source(&emulator)?, client).await?;
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err("no process-wide crypto provider after building the TLS config".into());
    }
    println!("ring (rustls-no-provider, provider: {mode}): restricted call served");
    Ok(())
}

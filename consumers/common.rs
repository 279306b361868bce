//! What every consumer does once its TLS is set up: start the emulator, build the default token
//! source, put the layer over the application's hyper-util client, and make one restricted call.
#![allow(dead_code)]

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use spapi_rdt_emulator::Emulator;
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, error::SourceBuildError, SpApiTokenSource,
};
use tower::{ServiceBuilder, ServiceExt};

/// The emulator's default seller, with the source's own HTTP client (built from the crate's TLS
/// features).
pub fn source(emulator: &Emulator) -> Result<SpApiTokenSource, SourceBuildError> {
    let refresh_token = emulator.refresh_token("default").unwrap_or_default();
    SpApiTokenSource::builder()
        .credentials(LwaCredentials::new(
            emulator.client_id(),
            emulator.client_secret(),
            refresh_token,
        ))
        .lwa_url(emulator.lwa_url())
        .build()
}

/// One restricted call through the layer over `client`: it must come back with the buyer's data.
pub async fn call_restricted<C>(
    emulator: &Emulator,
    source: SpApiTokenSource,
    client: Client<C, String>,
) -> Result<(), BoxError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let layer = RestrictedDataTokenLayer::builder(source)
        .allow_origin(emulator.origin())
        .build()?;
    let stack = ServiceBuilder::new().layer(layer.clone()).service(client);
    let request = http::Request::get(emulator.url("/orders/v0/orders/902-3159896-1390916/address"))
        .body(String::new())?;
    let response = stack.oneshot(request).await?;
    let pii = response
        .headers()
        .get("x-emulator-pii")
        .and_then(|v| v.to_str().ok());
    if response.status() != http::StatusCode::OK || pii != Some("served") {
        return Err(format!(
            "getOrderAddress answered {} with PII {pii:?}",
            response.status()
        )
        .into());
    }
    if layer.stats().fetches != 1 {
        return Err(format!("expected 1 token fetch, saw {}", layer.stats().fetches).into());
    }
    Ok(())
}

/// The whole run of a consumer whose application client speaks plain HTTP to the emulator: only the
/// source's own client (and so the crate's TLS features) differs between them.
pub async fn run_over_plain_http(label: &str) -> Result<(), BoxError> {
    let emulator = Emulator::start().await?;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    call_restricted(&emulator, source(&emulator)?, client).await?;
    println!("{label}: restricted call served with its token");
    Ok(())
}

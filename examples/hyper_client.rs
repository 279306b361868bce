//! A tower stack over hyper-util's client: `ServiceBuilder` + the RDT layer + stale-token recovery,
//! calling restricted and unrestricted operations for two sellers.
//!
//! Run it with `cargo run --example hyper_client`. It starts the SP-API emulator in-process and
//! needs no credentials and no network. What it shows:
//!
//! - every call carries the seller's LWA access token (a small async step at the top of the stack);
//!   the layer replaces it with a Restricted Data Token on restricted calls only;
//! - the seller is chosen per request with a `SellerId` extension;
//! - one token serves every order id of an operation (generic paths), so a handful of token calls
//!   cover all the restricted calls;
//! - when Amazon (here the emulator) stops accepting a cached token, the recovery layer drops it and
//!   sends the request once more with a fresh one: the caller sees a normal answer.
//!
//! The client here speaks plain HTTP to the emulator on loopback. Against Amazon, build it with a
//! TLS connector (hyper-rustls, say) instead of `build_http`; the stack stays the same.

use std::process::ExitCode;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, SellerId, SpApiTokenSource, Stats,
    X_AMZ_ACCESS_TOKEN, error::SourceError,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tower::filter::AsyncFilterLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The second seller the emulator knows.
pub(crate) const SELLER_B: &str = "seller-b";

/// One call and what came back.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) seller: SellerId,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    /// The emulator's `x-emulator-pii`: `served`, `withheld`, or absent (an unrestricted call).
    pub(crate) pii: Option<String>,
    /// The emulator's `x-emulator-seller`: whose token the call was made with.
    pub(crate) answered_for: Option<String>,
    pub(crate) body: String,
}

/// What the run did.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) calls: Vec<Call>,
    /// The layer's counters.
    pub(crate) stats: Stats,
}

/// An emulator with the two sellers this example uses.
pub(crate) async fn start_emulator() -> std::io::Result<Emulator> {
    Emulator::start_with(EmulatorConfig::default().seller(SELLER_B, "Atzr|emulator-seller-b")).await
}

/// The token source: LWA and the Tokens API on the emulator, one refresh token per seller.
pub(crate) fn token_source(emulator: &Emulator) -> Result<SpApiTokenSource, BoxError> {
    let credentials = |seller: &str| -> Result<LwaCredentials, BoxError> {
        let refresh_token = emulator
            .refresh_token(seller)
            .ok_or_else(|| format!("the emulator has no seller `{seller}`"))?;
        Ok(LwaCredentials::new(
            emulator.client_id(),
            emulator.client_secret(),
            refresh_token,
        ))
    };
    Ok(SpApiTokenSource::builder()
        .credentials(credentials(SellerId::DEFAULT_NAME)?)
        .seller(SellerId::new(SELLER_B), credentials(SELLER_B)?)
        .lwa_url(emulator.lwa_url())
        .build()?)
}

/// Builds the stack and makes the calls.
pub(crate) async fn run(emulator: &Emulator) -> Result<Outcome, BoxError> {
    let source = token_source(emulator)?;
    let rdt = RestrictedDataTokenLayer::builder(source.clone())
        // The emulator is on loopback: let it receive tokens.
        .allow_origin(emulator.origin())
        .build()?;
    let lwa = source.clone();
    let client = ServiceBuilder::new()
        // Outermost: the seller's LWA access token on every call.
        .layer(AsyncFilterLayer::new(
            move |mut request: Request<String>| {
                let lwa = lwa.clone();
                async move {
                    let seller = request
                        .extensions()
                        .get::<SellerId>()
                        .cloned()
                        .unwrap_or_default();
                    let token = lwa.lwa_access_token(&seller).await?;
                    request
                        .headers_mut()
                        .insert(X_AMZ_ACCESS_TOKEN, token.header_value().clone());
                    Ok::<_, SourceError>(request)
                }
            },
        ))
        // A 403 on a restricted call drops the token used and replays the call once.
        .layer(rdt.recover_stale_tokens())
        // An RDT in place of the LWA token, on restricted calls only.
        .layer(rdt.clone())
        .service(Client::builder(TokioExecutor::new()).build_http::<String>());

    let default = SellerId::default();
    let seller_b = SellerId::new(SELLER_B);
    let get = Method::GET;
    let plan = [
        // Unrestricted: the LWA token goes through.
        (
            &default,
            &get,
            "/sellers/v1/marketplaceParticipations".to_owned(),
        ),
        (
            &default,
            &get,
            "/orders/2026-01-01/orders/902-3159896-1390916".to_owned(),
        ),
        // Restricted: one token per operation, whatever the order.
        (
            &default,
            &get,
            "/orders/v0/orders/902-3159896-1390916".to_owned(),
        ),
        (
            &default,
            &get,
            "/orders/v0/orders/113-6740393-2451453".to_owned(),
        ),
        (
            &default,
            &get,
            "/orders/v0/orders/902-3159896-1390916/address".to_owned(),
        ),
        (
            &default,
            &get,
            "/orders/v0/orders/113-6740393-2451453/address".to_owned(),
        ),
        (
            &default,
            &get,
            "/mfn/v0/shipments/FBA-SHIPMENT-1".to_owned(),
        ),
        // Another seller: its own LWA token, its own RDTs.
        (
            &seller_b,
            &get,
            "/sellers/v1/marketplaceParticipations".to_owned(),
        ),
        (
            &seller_b,
            &get,
            "/orders/v0/orders/026-1520163-6049104/buyerInfo".to_owned(),
        ),
    ];
    let mut calls = Vec::new();
    for (seller, method, path) in plan {
        calls.push(call(&client, emulator, seller, method, &path).await?);
    }
    // Amazon stops accepting the cached tokens: the next restricted call still succeeds.
    emulator.revoke_rdts();
    let path = "/orders/v0/orders/026-1520163-6049104/address";
    calls.push(call(&client, emulator, &default, &get, path).await?);
    Ok(Outcome {
        calls,
        stats: rdt.stats(),
    })
}

async fn call<S>(
    client: &S,
    emulator: &Emulator,
    seller: &SellerId,
    method: &Method,
    path: &str,
) -> Result<Call, BoxError>
where
    S: Service<Request<String>, Response = Response<Incoming>, Error = BoxError> + Clone,
{
    let mut request = Request::builder()
        .method(method.clone())
        .uri(emulator.url(path))
        .body(String::new())?;
    request.extensions_mut().insert(seller.clone());
    let response = client.clone().oneshot(request).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, pii, answered_for) = (
        response.status(),
        header("x-emulator-pii"),
        header("x-emulator-seller"),
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Call {
        seller: seller.clone(),
        method: method.clone(),
        path: path.to_owned(),
        status,
        pii,
        answered_for,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = async {
        let emulator = start_emulator().await?;
        let outcome = run(&emulator).await?;
        Ok::<_, BoxError>((outcome, emulator.counters()))
    }
    .await;
    let (outcome, counters) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("hyper_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{:<9} {:<6} {:<52} {:<6} {:<9} answered for",
        "seller", "method", "path", "status", "pii"
    );
    for call in &outcome.calls {
        println!(
            "{:<9} {:<6} {:<52} {:<6} {:<9} {} ({} bytes)",
            call.seller.as_str(),
            call.method.as_str(),
            call.path,
            call.status.as_u16(),
            call.pii.as_deref().unwrap_or("-"),
            call.answered_for.as_deref().unwrap_or("-"),
            call.body.len()
        );
    }
    println!();
    println!(
        "emulator: {} LWA calls, {} token calls, {} restricted calls ({} refused with 403), {} unrestricted",
        counters.lwa_calls,
        counters.token_calls,
        counters.restricted_calls,
        counters.restricted_forbidden,
        counters.unrestricted_calls
    );
    println!(
        "layer:    {} token fetches, {} cache hits, {} invalidated",
        outcome.stats.fetches, outcome.stats.hits, outcome.stats.invalidations
    );
    ExitCode::SUCCESS
}

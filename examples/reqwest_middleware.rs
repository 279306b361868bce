//! A `reqwest_middleware::ClientWithMiddleware` with the RDT layer's middleware front end.
//!
//! Run it with `cargo run --example reqwest_middleware`. It starts the SP-API emulator in-process and
//! needs no credentials and no network. What it shows:
//!
//! - `layer.middleware()` in a reqwest-middleware client, sharing the layer's cache, rate limiter
//!   and counters;
//! - the seller chosen per request with `.with_extension(SellerId::new(..))`;
//! - the LWA access token set on each request (a sensitive header value; the middleware swaps in
//!   an RDT on restricted calls only);
//! - a restricted `POST` with a JSON body (Merchant Fulfillment `createShipment`);
//! - stale-token recovery built into the middleware: after the emulator revokes every RDT, the next
//!   restricted call is replayed once with a fresh token and succeeds.
//!
//! A retry middleware such as `reqwest-retry` goes *before* the RDT middleware (see the comment in
//! [`client`]), so that every attempt goes through the token cache again.

use std::process::ExitCode;

use http::StatusCode;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, RequestBuilder};
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, SellerId, SpApiTokenSource, Stats,
    X_AMZ_ACCESS_TOKEN,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};

/// The second seller the emulator knows.
pub(crate) const SELLER_B: &str = "seller-b";

/// One call and what came back.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) seller: SellerId,
    pub(crate) what: &'static str,
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
    /// The layer's counters (the middleware shares them).
    pub(crate) stats: Stats,
}

/// An emulator with the two sellers this example uses.
pub(crate) async fn start_emulator() -> std::io::Result<Emulator> {
    Emulator::start_with(EmulatorConfig::default().seller(SELLER_B, "Atzr|emulator-seller-b")).await
}

/// The client: reqwest with the RDT middleware.
pub(crate) fn client(rdt: &RestrictedDataTokenLayer) -> Result<ClientWithMiddleware, BoxError> {
    // No redirects: a followed redirect would take the token to another host.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(ClientBuilder::new(http)
        // A retry middleware goes here, before the RDT middleware, e.g. with reqwest-retry:
        //     .with(RetryTransientMiddleware::new_with_policy(
        //         ExponentialBackoff::builder().build_with_max_retries(3),
        //     ))
        // Each attempt then passes through the token cache again, and one that follows an
        // invalidated token gets a fresh one.
        .with(rdt.middleware())
        .build())
}

/// Builds the client and makes the calls.
pub(crate) async fn run(emulator: &Emulator) -> Result<Outcome, BoxError> {
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
    let source = SpApiTokenSource::builder()
        .credentials(credentials(SellerId::DEFAULT_NAME)?)
        .seller(SellerId::new(SELLER_B), credentials(SELLER_B)?)
        .lwa_url(emulator.lwa_url())
        .build()?;
    let rdt = RestrictedDataTokenLayer::builder(source.clone())
        .allow_origin(emulator.origin())
        .build()?;
    let client = client(&rdt)?;

    // Every request: the seller as an extension, and the seller's LWA token.
    let request = |seller: &SellerId, builder: RequestBuilder| {
        let (source, seller) = (source.clone(), seller.clone());
        async move {
            let lwa = source.lwa_access_token(&seller).await?;
            Ok::<_, BoxError>(
                builder
                    .header(X_AMZ_ACCESS_TOKEN, lwa.header_value().clone())
                    .with_extension(seller),
            )
        }
    };
    let default = SellerId::default();
    let seller_b = SellerId::new(SELLER_B);
    let url = |path: &str| emulator.url(path);
    let shipment = serde_json::json!({
        "ShipmentRequestDetails": {
            "AmazonOrderId": "902-3159896-1390916",
            "ItemList": [{ "OrderItemId": "10000000000001", "Quantity": 1 }],
            "PackageDimensions": { "Length": 10, "Width": 10, "Height": 5, "Unit": "inches" },
            "Weight": { "Value": 16, "Unit": "oz" },
        },
        "ShippingServiceId": "UPS_PTP_GND",
    });

    let mut calls = Vec::new();
    let plan = [
        (
            &default,
            "getMarketplaceParticipations",
            client.get(url("/sellers/v1/marketplaceParticipations")),
        ),
        (
            &default,
            "getOrder",
            client.get(url("/orders/v0/orders/902-3159896-1390916")),
        ),
        (
            &default,
            "getOrderAddress",
            client.get(url("/orders/v0/orders/902-3159896-1390916/address")),
        ),
        (
            &default,
            "getOrderAddress",
            client.get(url("/orders/v0/orders/113-6740393-2451453/address")),
        ),
        (
            &default,
            "createShipment",
            client
                .post(url("/mfn/v0/shipments"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(shipment.to_string()),
        ),
        (
            &seller_b,
            "getOrderBuyerInfo",
            client.get(url("/orders/v0/orders/026-1520163-6049104/buyerInfo")),
        ),
    ];
    for (seller, what, builder) in plan {
        let response = request(seller, builder).await?.send().await?;
        calls.push(read(seller, what, response).await?);
    }
    // Amazon stops accepting the cached tokens: the middleware recovers on its own.
    emulator.revoke_rdts();
    let builder = client.get(url("/orders/v0/orders/026-1520163-6049104/address"));
    let response = request(&default, builder).await?.send().await?;
    calls.push(read(&default, "getOrderAddress", response).await?);
    Ok(Outcome {
        calls,
        stats: rdt.stats(),
    })
}

async fn read(
    seller: &SellerId,
    what: &'static str,
    response: reqwest::Response,
) -> Result<Call, BoxError> {
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
    Ok(Call {
        seller: seller.clone(),
        what,
        status,
        pii,
        answered_for,
        body: response.text().await?,
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
            eprintln!("reqwest_middleware: {e}");
            return ExitCode::FAILURE;
        }
    };
    for call in &outcome.calls {
        println!(
            "{:<9} {:<29} {} pii={:<9} answered for {} ({} bytes)",
            call.seller.as_str(),
            call.what,
            call.status.as_u16(),
            call.pii.as_deref().unwrap_or("-"),
            call.answered_for.as_deref().unwrap_or("-"),
            call.body.len()
        );
    }
    println!();
    println!(
        "emulator: {} token calls, {} restricted calls ({} refused with 403)",
        counters.token_calls, counters.restricted_calls, counters.restricted_forbidden
    );
    println!(
        "layer:    {} token fetches, {} cache hits, {} invalidated",
        outcome.stats.fetches, outcome.stats.hits, outcome.stats.invalidations
    );
    ExitCode::SUCCESS
}

//! The main job, end to end: a hyper client behind the layer calls restricted and unrestricted
//! SP-API operations for several orders, and reports what came back.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It runs against the SP-API emulator (`spapi_rdt_emulator`) on 127.0.0.1: no credentials, no
//! network. It exits with a failure status when a restricted call comes back without personal data,
//! so CI catches a regression.
//!
//! # Against Amazon
//!
//! Set these and it calls the real endpoint instead (this path is not tested):
//!
//! - `SPAPI_CLIENT_ID` and `SPAPI_CLIENT_SECRET`: your application's LWA credentials;
//! - `SPAPI_REFRESH_TOKEN`: the seller's refresh token;
//! - `SPAPI_ENDPOINT`: the seller's region, such as `https://sellingpartnerapi-na.amazon.com`;
//! - `SPAPI_ORDER_IDS`: a few of the seller's order ids, separated by commas.
//!
//! Every call is a GET that reads and changes nothing. The application needs the restricted roles
//! for buyer data (and the seller must have authorized it since it got them). Amazon's answers do
//! not say whether personal data was left out, so the report shows `?` there and only failed calls
//! fail the run; the data itself is never printed.

use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::{
    BoxError, LwaCredentials, Origin, RestrictedDataTokenLayer, SellerId, SpApiTokenSource,
};
use spapi_rdt_emulator::Emulator;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let target = Target::from_env().await?;
    match &target.emulator {
        Some(_) => println!(
            "SP-API emulator at {} (see the docs to call Amazon instead)\n",
            target.origin
        ),
        None => println!("Amazon at {}\n", target.origin),
    }

    // Where tokens come from: the seller's LWA access token, then Amazon's Tokens API.
    let source = SpApiTokenSource::builder()
        .credentials(target.credentials.clone())
        .lwa_url(target.lwa_url.clone())
        .build()?;
    // Amazon's hosts may receive tokens by default; an emulator on loopback must be allowed.
    let layer = RestrictedDataTokenLayer::builder(source.clone())
        .allow_origin(target.origin.clone())
        .build()?;

    // Any tower HTTP client will do: here hyper's, with TLS for Amazon (and plain http for the
    // emulator; the layer sends tokens over plain http to loopback only).
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()?
        .https_or_http()
        .enable_http1()
        .build();
    let http = Client::builder(TokioExecutor::new()).build(connector);
    let client = ServiceBuilder::new()
        // A restricted call refused with 403 (a stale token) gets a new token and is sent again.
        .layer(layer.recover_stale_tokens())
        // Restricted calls get a Restricted Data Token in `x-amz-access-token`.
        .layer(layer.clone())
        // Bodies are `Bytes`, which the recovery layer can copy; hyper wants an `http_body::Body`.
        .map_request(|request: Request<Bytes>| request.map(Full::new))
        .service(http);

    // Every SP-API call carries the seller's LWA access token; on restricted calls the layer puts
    // the RDT in its place. Without the layer, Orders v0 would answer 200 with the buyer data left
    // out.
    let lwa = source.lwa_access_token(&SellerId::default()).await?;

    let mut report = Report::default();
    println!("  token {:<28} {:<52} answer", "operation", "path");
    for call in target.calls() {
        let restricted = layer.matcher().classify(&Method::GET, &call.path).is_some();
        let request = Request::get(format!("{}{}", target.origin, call.path))
            .header("x-amz-access-token", lwa.header_value().clone())
            .body(Bytes::new())?;
        let outcome = match client.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status();
                let pii = match response.headers().get("x-emulator-pii") {
                    Some(v) if v == "served" => Pii::Served,
                    Some(_) => Pii::Withheld,
                    None => Pii::Unknown,
                };
                // Read the body to the end, so the connection can serve the next call.
                response.into_body().collect().await?;
                Ok((status, pii))
            }
            // The layer's own errors (no role for the operation, bad credentials...) say what to do.
            Err(err) => Err(err.to_string()),
        };
        report.add(call, restricted, outcome);
    }

    report.print(&layer, target.emulator.as_ref());
    Ok(if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where the calls go: Amazon when `SPAPI_ENDPOINT` is set, the emulator otherwise.
struct Target {
    origin: Origin,
    lwa_url: String,
    credentials: LwaCredentials,
    order_ids: Vec<String>,
    /// The emulator, when the calls go to it: kept running, and read for its counters.
    emulator: Option<Emulator>,
}

impl Target {
    async fn from_env() -> Result<Target, BoxError> {
        let Ok(endpoint) = std::env::var("SPAPI_ENDPOINT") else {
            let emulator = Emulator::start().await?;
            let refresh_token = emulator
                .refresh_token(SellerId::DEFAULT_NAME)
                .ok_or("the emulator has no default seller")?;
            return Ok(Target {
                origin: emulator.origin(),
                lwa_url: emulator.lwa_url(),
                credentials: LwaCredentials::new(
                    emulator.client_id(),
                    emulator.client_secret(),
                    refresh_token,
                ),
                order_ids: [
                    "902-3159896-1390916",
                    "113-6740393-2451453",
                    "026-1520163-6049104",
                ]
                .map(String::from)
                .to_vec(),
                emulator: Some(emulator),
            });
        };
        let order_ids: Vec<String> = std::env::var("SPAPI_ORDER_IDS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(String::from)
            .collect();
        if order_ids.is_empty() {
            return Err("SPAPI_ENDPOINT is set: set SPAPI_ORDER_IDS to a few order ids too".into());
        }
        Ok(Target {
            origin: Origin::parse(&endpoint)?,
            lwa_url: SpApiTokenSource::DEFAULT_LWA_URL.to_owned(),
            credentials: LwaCredentials::from_env()?,
            order_ids,
            emulator: None,
        })
    }

    /// For each order, the Orders v0 operations that return buyer data (and, on the emulator, a
    /// Merchant Fulfillment shipment); then two operations that need no RDT.
    fn calls(&self) -> Vec<Call> {
        let mut calls = Vec::new();
        for id in &self.order_ids {
            calls.push(Call::new("getOrder", format!("/orders/v0/orders/{id}")));
            calls.push(Call::new(
                "getOrderAddress",
                format!("/orders/v0/orders/{id}/address"),
            ));
            calls.push(Call::new(
                "getOrderBuyerInfo",
                format!("/orders/v0/orders/{id}/buyerInfo"),
            ));
            calls.push(Call::new(
                "getOrderItems",
                format!("/orders/v0/orders/{id}/orderItems"),
            ));
            if self.emulator.is_some() {
                // Real shipment ids come from createShipment; the emulator takes any.
                calls.push(Call::new(
                    "getShipment (MFN)",
                    format!("/mfn/v0/shipments/shp-{id}"),
                ));
            }
        }
        calls.push(Call::new(
            "getMarketplaceParticipations",
            "/sellers/v1/marketplaceParticipations".to_owned(),
        ));
        calls.push(Call::new(
            "getOrder (2026-01-01)",
            format!("/orders/2026-01-01/orders/{}", self.order_ids[0]),
        ));
        calls
    }
}

/// One GET call.
struct Call {
    operation: &'static str,
    path: String,
}

impl Call {
    fn new(operation: &'static str, path: String) -> Self {
        Call { operation, path }
    }
}

/// Whether a restricted call's answer held personal data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pii {
    Served,
    Withheld,
    /// Amazon does not say.
    Unknown,
}

#[derive(Default)]
struct Report {
    restricted: usize,
    unrestricted: usize,
    pii_served: usize,
    failures: usize,
}

impl Report {
    fn add(&mut self, call: Call, restricted: bool, outcome: Result<(StatusCode, Pii), String>) {
        let kind = if restricted { "RDT" } else { "LWA" };
        let line = format!("  {kind:<5} {:<28} {:<52}", call.operation, call.path);
        if restricted {
            self.restricted += 1;
        } else {
            self.unrestricted += 1;
        }
        match outcome {
            Err(error) => {
                self.failures += 1;
                println!("{line} failed: {error}");
            }
            Ok((status, _)) if !status.is_success() => {
                self.failures += 1;
                println!("{line} {status}  FAILED");
            }
            Ok((status, pii)) if restricted => {
                let shown = match pii {
                    Pii::Served => "PII served",
                    Pii::Withheld => "PII WITHHELD",
                    Pii::Unknown => "PII ?",
                };
                match pii {
                    Pii::Served => self.pii_served += 1,
                    Pii::Withheld => self.failures += 1,
                    Pii::Unknown => {}
                }
                println!("{line} {}  {shown}", status.as_u16());
            }
            Ok((status, _)) => println!("{line} {}", status.as_u16()),
        }
    }

    fn print(&self, layer: &RestrictedDataTokenLayer, emulator: Option<&Emulator>) {
        let stats = layer.stats();
        println!();
        println!(
            "calls made:    {} ({} restricted, {} unrestricted)",
            self.restricted + self.unrestricted,
            self.restricted,
            self.unrestricted
        );
        match emulator {
            Some(emulator) => {
                let counters = emulator.counters();
                println!(
                    "PII received:  {} of {} restricted calls (emulator: {} served, {} withheld)",
                    self.pii_served, self.restricted, counters.pii_served, counters.pii_withheld
                );
                println!(
                    "token calls:   {} to the Tokens API, {} to LWA, {} throttled (emulator's counts)",
                    counters.token_calls, counters.lwa_calls, counters.throttled
                );
            }
            None => println!(
                "token calls:   {} to the Tokens API (the layer's count)",
                stats.fetches
            ),
        }
        println!(
            "cache hits:    {} ({} misses, {} token fetches: one per operation, not one per call)",
            stats.hits, stats.misses, stats.fetches
        );
        if self.failures > 0 {
            println!(
                "\nFAILED: {} call(s) failed or got no personal data",
                self.failures
            );
        }
    }
}

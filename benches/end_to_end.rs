//! `end_to_end`: N restricted SP-API calls for one seller, over loopback to the SP-API emulator,
//! which holds the Tokens API to Amazon's quota (1 request a second per seller, burst 10) on the
//! wall clock. Three ways of getting the Restricted Data Tokens, each on a new emulator:
//!
//! - `per_call`: what most SDKs do. Before every restricted call, a hand-written client asks the
//!   Tokens API for a token for that exact path (with the data elements the layer asks for by
//!   default, `buyerInfo` and `shippingAddress`, where the operation takes them) and sends the call
//!   with it. A 429 waits (`Retry-After` when the answer has one, which Amazon's does not, else a
//!   fixed [`BACKOFF`] of one second, the quota's refill period: a shorter one adds 429s and no
//!   speed) and asks again, up to [`MAX_RETRIES`] times.
//! - `layer`: the client stack with `RestrictedDataTokenLayer` and its default strategy, one token
//!   per operation template.
//! - `bundle`: the same with `Strategy::Bundle`, one token for every generic operation.
//!
//! The workload is the same for all three: [`OPERATIONS`] (four Orders v0 operations and a
//! Merchant Fulfillment one) in turn over several order ids, one call after the other, each answer
//! read to the end. Every strategy starts cold (a new emulator, a new LWA token); the wall time runs
//! from before the LWA token to the last answer. The counts are the emulator's: Tokens API
//! requests, 429 answers, tokens issued, answers that held personal data.
//!
//! This is not a criterion benchmark: the per-call strategy spends about a second per call past
//! the burst, so criterion's repeated sampling would take minutes. Each strategy runs once, the
//! bench asserts what the layer promises (every call served with personal data; the layer makes
//! at most one token call per operation template, the bundle at most one per 50 generic
//! operations; the per-call client got a token for every call), prints a table and leaves the figures under `end_to_end` in
//! `target/criterion/spapi-rdt-extra.json` for `cargo xtask bench-report`, with the mode they were taken in.
//!
//! `--quick` (as in `cargo bench -- --quick`) runs [`QUICK_CALLS`] calls (just past the burst, so
//! the per-call client still meets a 429 and waits), else [`FULL_CALLS`]. Without `--bench` (cargo
//! test running the target) it runs the quick workload and records nothing. A criterion filter
//! given on the command line (`cargo bench -- cached`) that matches none of
//! `end_to_end/{per_call,layer,bundle}` skips the run; `--list` lists those three ids.
// Benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use spapi_rdt::catalog::{Catalog, DataElements, PathKind};
use spapi_rdt::control::Strategy;
use spapi_rdt::matcher::Matcher;
use spapi_rdt::{LwaCredentials, RestrictedDataTokenLayer, SellerId, SpApiTokenSource};
use spapi_rdt_emulator::{Counters, Emulator, EmulatorConfig};
use tower::{ServiceBuilder, ServiceExt};

/// Calls in a full run: 30 past the burst, so about 30 s for the per-call client.
const FULL_CALLS: usize = 40;
/// Calls in a quick run: two past the burst.
const QUICK_CALLS: usize = 12;
/// The per-call client's wait after a 429 without `Retry-After`.
const BACKOFF: Duration = Duration::from_secs(1);
/// The per-call client's retries of one token request after 429s.
const MAX_RETRIES: u32 = 10;
/// The emulator's Tokens API quota per seller: Amazon's.
const TOKEN_RATE: f64 = 1.0;
const TOKEN_BURST: u32 = 10;
/// The Tokens API path.
const TOKENS_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";
/// The restricted operations of the workload, as `(name, path with {id})`, called in turn.
const OPERATIONS: [(&str, &str); 5] = [
    ("getOrder", "/orders/v0/orders/{id}"),
    ("getOrderAddress", "/orders/v0/orders/{id}/address"),
    ("getOrderBuyerInfo", "/orders/v0/orders/{id}/buyerInfo"),
    ("getOrderItems", "/orders/v0/orders/{id}/orderItems"),
    ("getShipment", "/mfn/v0/shipments/shp-{id}"),
];
/// The three strategies, in the order they run.
const STRATEGIES: [&str; 3] = ["per_call", "layer", "bundle"];

/// The workload: `n` paths, the operations in turn, a new order id every round.
fn workload(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (_, path) = OPERATIONS[i % OPERATIONS.len()];
            let round = i / OPERATIONS.len();
            let id = format!("902-{:07}-{:07}", 3_159_896 + round, 1_390_916 + round);
            path.replace("{id}", &id)
        })
        .collect()
}

/// What one strategy did, from the emulator's counters.
struct Outcome {
    strategy: &'static str,
    wall: Duration,
    counters: Counters,
}

impl Outcome {
    fn json(&self) -> Value {
        let c = &self.counters;
        json!({
            "token_calls": c.token_calls,
            "throttled": c.throttled,
            "rdts_issued": c.rdts_issued,
            "lwa_calls": c.lwa_calls,
            "restricted_calls": c.restricted_calls,
            "pii_served": c.pii_served,
            "wall_ms": self.wall.as_secs_f64() * 1e3,
        })
    }
}

/// A new emulator with Amazon's Tokens API quota.
async fn emulator() -> Emulator {
    Emulator::start_with(EmulatorConfig::default().token_quota(TOKEN_RATE, TOKEN_BURST))
        .await
        .unwrap()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A reqwest client that never goes through a proxy from the environment: loopback only.
fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The default seller's source on `em`, with a client of its own (no proxies).
fn source(em: &Emulator) -> SpApiTokenSource {
    let refresh = em.refresh_token(SellerId::DEFAULT_NAME).unwrap();
    SpApiTokenSource::builder()
        .http_client(reqwest_client())
        .lwa_url(em.lwa_url())
        .credentials(LwaCredentials::new(
            em.client_id(),
            em.client_secret(),
            refresh,
        ))
        .build()
        .unwrap()
}

/// Sends `request` and reads the answer to the end; panics unless it is a 200 with personal data.
async fn expect_served<S, B>(client: S, request: Request<B>, path: &str)
where
    S: tower::Service<
            Request<B>,
            Response = http::Response<hyper::body::Incoming>,
            Error: std::fmt::Debug,
        >,
{
    let response = client.oneshot(request).await.unwrap();
    let status = response.status();
    let pii = response.headers().get("x-emulator-pii").cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status == StatusCode::OK && pii.as_ref().is_some_and(|v| v == "served"),
        "{path}: {status}, pii {pii:?}, {}",
        String::from_utf8_lossy(&body)
    );
}

/// The per-call client: a token for each call's exact path, then the call.
async fn per_call(paths: &[String]) -> Outcome {
    let em = emulator().await;
    let matcher = Matcher::new(Catalog::amazon()).unwrap();
    let tokens = reqwest_client();
    let http = http_client();
    let origin = em.origin();
    let started = Instant::now();
    // The LWA token is cached, as every SDK does; only the RDT is asked for each call.
    let lwa = source(&em)
        .lwa_access_token(&SellerId::default())
        .await
        .unwrap();
    let lwa = lwa.header_value().to_str().unwrap().to_owned();
    for path in paths {
        let op = matcher
            .classify(&Method::GET, path)
            .expect("the workload calls restricted operations only")
            .operation();
        let elements: Vec<&str> = op
            .data_elements()
            .intersection(DataElements::USUAL)
            .iter()
            .map(|e| e.as_str())
            .collect();
        let mut resource = json!({ "method": "GET", "path": path });
        if !elements.is_empty() {
            resource["dataElements"] = json!(elements);
        }
        let body = json!({ "restrictedResources": [resource] });
        let mut retries = 0;
        let rdt = loop {
            let response = tokens
                .post(format!("{origin}{TOKENS_PATH}"))
                .header("x-amz-access-token", &lwa)
                .json(&body)
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(
                    retries < MAX_RETRIES,
                    "{path}: still throttled after {MAX_RETRIES} retries"
                );
                retries += 1;
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(BACKOFF, Duration::from_secs);
                tokio::time::sleep(wait).await;
                continue;
            }
            let status = response.status();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
            break answer["restrictedDataToken"].as_str().unwrap().to_owned();
        };
        let request = Request::get(format!("{origin}{path}"))
            .header("x-amz-access-token", HeaderValue::from_str(&rdt).unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        expect_served(http.clone(), request, path).await;
    }
    let wall = started.elapsed();
    Outcome {
        strategy: "per_call",
        wall,
        counters: em.counters(),
    }
}

/// The client stack with the layer (`strategy`), as the README recommends it.
async fn layered(paths: &[String], strategy: Strategy, name: &'static str) -> Outcome {
    let em = emulator().await;
    let source = source(&em);
    let layer = RestrictedDataTokenLayer::builder(source.clone())
        .allow_origin(em.origin())
        .strategy(strategy)
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(layer.recover_stale_tokens())
        .layer(layer.clone())
        .map_request(|request: Request<Bytes>| request.map(Full::new))
        .service(http_client());
    let origin = em.origin();
    let started = Instant::now();
    // Every SP-API call carries the seller's LWA token; the layer puts an RDT in its place.
    let lwa = source.lwa_access_token(&SellerId::default()).await.unwrap();
    for path in paths {
        let request = Request::get(format!("{origin}{path}"))
            .header("x-amz-access-token", lwa.header_value().clone())
            .body(Bytes::new())
            .unwrap();
        expect_served(client.clone(), request, path).await;
    }
    let wall = started.elapsed();
    Outcome {
        strategy: name,
        wall,
        counters: em.counters(),
    }
}

fn main() {
    let mode = support::Mode::from_args(&STRATEGIES.map(|s| format!("end_to_end/{s}")));
    if mode.filtered_out {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        // As criterion lists its benchmarks.
        for strategy in STRATEGIES {
            println!("end_to_end/{strategy}: benchmark");
        }
        return;
    }
    let n = if mode.quick || !mode.bench {
        QUICK_CALLS
    } else {
        FULL_CALLS
    };
    let paths = workload(n);
    let matcher = Matcher::new(Catalog::amazon()).unwrap();
    let templates: BTreeSet<&str> = paths
        .iter()
        .map(|p| {
            matcher
                .classify(&Method::GET, p)
                .unwrap()
                .operation()
                .name()
        })
        .collect();
    let generic = Catalog::amazon()
        .operations()
        .iter()
        .filter(|o| o.path_kind() == PathKind::Generic)
        .count();
    // The bundle strategy asks for at most 50 resources a token request.
    let bundles = generic.div_ceil(50);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async {
        vec![
            per_call(&paths).await,
            layered(&paths, Strategy::PerOperation, "layer").await,
            layered(&paths, Strategy::Bundle, "bundle").await,
        ]
    });

    println!(
        "end_to_end: {n} restricted calls ({} operations), one seller, Tokens API at \
         {TOKEN_RATE}/s burst {TOKEN_BURST}",
        templates.len()
    );
    println!(
        "  {:<9} {:>11} {:>5} {:>11} {:>10}",
        "strategy", "token calls", "429s", "PII served", "wall time"
    );
    for o in &outcomes {
        println!(
            "  {:<9} {:>11} {:>5} {:>11} {:>10.3?}",
            o.strategy, o.counters.token_calls, o.counters.throttled, o.counters.pii_served, o.wall
        );
    }

    for o in &outcomes {
        assert_eq!(
            o.counters.pii_served, n as u64,
            "{}: calls served",
            o.strategy
        );
        assert_eq!(o.counters.restricted_calls, n as u64, "{}", o.strategy);
    }
    let [per_call, layer, bundle] = &outcomes[..] else {
        unreachable!()
    };
    assert_eq!(
        per_call.counters.rdts_issued, n as u64,
        "per_call: one token per call"
    );
    assert_eq!(
        per_call.counters.token_calls,
        n as u64 + per_call.counters.throttled,
        "per_call: every token request but the throttled ones got a token"
    );
    assert!(
        layer.counters.token_calls <= templates.len() as u64,
        "layer: {} token calls for {} operation templates",
        layer.counters.token_calls,
        templates.len()
    );
    assert!(
        bundle.counters.token_calls <= bundles as u64,
        "bundle: {} token calls for {bundles} bundle(s)",
        bundle.counters.token_calls
    );

    if mode.bench {
        let (run, written) = support::stamp(&mode);
        let strategies: serde_json::Map<String, Value> = outcomes
            .iter()
            .map(|o| (o.strategy.to_owned(), o.json()))
            .collect();
        support::record_extra(
            "end_to_end",
            json!({
                "mode": run,
                "written_unix": written,
                "calls": n,
                "templates": templates.len(),
                "bundles": bundles,
                "token_rate_per_s": TOKEN_RATE,
                "token_burst": TOKEN_BURST,
                "backoff_ms": BACKOFF.as_millis() as u64,
                "strategies": strategies,
            }),
        );
    }
}

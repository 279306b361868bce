//! Runs the stack of each example against the emulator, in-process: the examples' own code, included
//! as modules, so a broken example fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)]
#[path = "../examples/custom_source.rs"]
mod custom_source;
#[allow(dead_code)]
#[path = "../examples/hyper_client.rs"]
mod hyper_client;
#[allow(dead_code)]
#[path = "../examples/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../examples/reqwest_middleware.rs"]
mod reqwest_mw;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::State;
use bytes::Bytes;
use futures::SinkExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::testing::{Emulator, EmulatorConfig};
use spapi_rdt::{BoxError, Origin};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound on a step that should take milliseconds; only a broken stream reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// hyper_client, reqwest_middleware, custom_source
// ---------------------------------------------------------------------------------------------

fn is_restricted(path: &str) -> bool {
    path.starts_with("/orders/v0/") || path.starts_with("/mfn/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_stack_gets_pii_for_restricted_calls_only() {
    let emulator = hyper_client::start_emulator().await.unwrap();
    let outcome = hyper_client::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 10);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = is_restricted(&call.path).then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    let get_order = outcome
        .calls
        .iter()
        .find(|c| c.path == "/orders/v0/orders/902-3159896-1390916")
        .unwrap();
    // The layer asked for the usual data elements.
    assert!(get_order.body.contains("ShippingAddress"), "{get_order:?}");
    assert!(get_order.body.contains("BuyerInfo"), "{get_order:?}");

    let counters = emulator.counters();
    // getOrder, getOrderAddress, getShipment for `default`, getOrderBuyerInfo for seller-b, and a
    // fresh getOrderAddress token after the revocation: one token per operation, not per order.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(hyper_client::SELLER_B), 1);
    assert_eq!(
        counters.restricted_forbidden, 1,
        "the revoked token was refused once"
    );
    assert_eq!(counters.pii_withheld, 0);
    assert_eq!(counters.unrestricted_calls, 3);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_middleware_stack_gets_pii_with_a_seller_per_request() {
    let emulator = reqwest_mw::start_emulator().await.unwrap();
    let outcome = reqwest_mw::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 7);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = (call.what != "getMarketplaceParticipations").then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.what == "createShipment" && c.body.contains("Jane Doe"))
    );
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.seller.as_str() == reqwest_mw::SELLER_B)
    );
    let counters = emulator.counters();
    // getOrder, getOrderAddress (two orders, one token), createShipment, seller-b's
    // getOrderBuyerInfo, and getOrderAddress again after the revocation.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(reqwest_mw::SELLER_B), 1);
    assert_eq!(counters.restricted_forbidden, 1);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_source_asks_the_token_service_once_per_operation() {
    let emulator = Emulator::start().await.unwrap();
    let outcome = custom_source::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), custom_source::PATHS.len());
    for call in &outcome.calls {
        if call.path.ends_with("/regulatedInfo") {
            let error = call.result.as_ref().unwrap_err();
            // The refusal came back through the token service with its cure.
            assert!(error.contains("regulatedInfo"), "{error}");
            assert!(error.contains("InvalidInput"), "{error}");
            assert!(error.contains("authorize the application again"), "{error}");
            assert!(!error.contains("Atz"), "no token in errors: {error}");
        } else {
            let (status, pii) = call.result.as_ref().unwrap();
            assert_eq!(*status, StatusCode::OK, "{call:?}");
            assert_eq!(pii.as_deref(), Some("served"), "{call:?}");
        }
    }
    // getOrderAddress, getOrderItems, getShippingLabel and the refused getOrderRegulatedInfo: the
    // second refused call was answered from the layer's memory of the refusal.
    assert_eq!(outcome.service_requests, 4);
    assert_eq!(emulator.counters().token_calls, 4);
    assert_eq!(outcome.stats.remembered_errors, 1);
    assert_eq!(outcome.stats.hits, 3);
}

// ---------------------------------------------------------------------------------------------
// proxy
// ---------------------------------------------------------------------------------------------

type PlainBody = UnsyncBoxBody<Bytes, BoxError>;

/// An HTTP client that knows nothing of SP-API.
fn plain_client() -> Client<HttpConnector, PlainBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn empty() -> PlainBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed body fed through the returned sender (no length known in advance).
fn channel_body() -> (
    futures::channel::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    PlainBody,
) {
    let (tx, rx) = futures::channel::mpsc::channel(4);
    (tx, StreamBody::new(rx).boxed_unsync())
}

struct RunningProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningProxy {
    async fn start(upstream: &Origin, lwa_url: &str, vars: Vec<(String, String)>) -> Self {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream.as_str(),
            "--lwa-url",
            lwa_url,
        ];
        let config = proxy::Config::parse(args.map(str::to_owned), vars).unwrap();
        let proxy = proxy::Proxy::new(&config).unwrap();
        let listener = TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(proxy::serve(listener, proxy));
        RunningProxy { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A plain GET through the proxy: no token, only the given headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (http::response::Parts, String) {
        let mut request = Request::get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = plain_client()
            .request(request.body(empty()).unwrap())
            .await
            .unwrap();
        read(response).await
    }
}

async fn read(response: Response<Incoming>) -> (http::response::Parts, String) {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8(body.to_vec()).unwrap())
}

fn header<'h>(parts: &'h http::response::Parts, name: &str) -> Option<&'h str> {
    parts.headers.get(name).map(|v| v.to_str().unwrap())
}

const SELLER_B_REFRESH: &str = "Atzr|emulator-seller-b";

async fn emulator() -> Emulator {
    Emulator::start_with(EmulatorConfig::default().seller("seller-b", SELLER_B_REFRESH))
        .await
        .unwrap()
}

/// The environment the proxy reads: `default` without a header, seller-b as `B`.
fn vars(emulator: &Emulator) -> Vec<(String, String)> {
    [
        ("SPAPI_CLIENT_ID", emulator.client_id().to_owned()),
        ("SPAPI_CLIENT_SECRET", emulator.client_secret().to_owned()),
        (
            "SPAPI_REFRESH_TOKEN",
            emulator.refresh_token("default").unwrap(),
        ),
        ("SPAPI_REFRESH_TOKEN_B", SELLER_B_REFRESH.to_owned()),
        ("HOME", "/nowhere".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn proxy_to(emulator: &Emulator) -> RunningProxy {
    RunningProxy::start(&emulator.origin(), &emulator.lwa_url(), vars(emulator)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_gives_a_plain_client_pii_on_restricted_calls() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    for order in ["902-3159896-1390916", "113-6740393-2451453"] {
        for path in [
            format!("/orders/v0/orders/{order}/address"),
            format!("/orders/v0/orders/{order}?MarketplaceIds=ATVPDKIKX0DER"),
            format!("/orders/v0/orders/{order}/orderItems"),
        ] {
            let (parts, body) = proxy.get(&path, &[]).await;
            assert_eq!(parts.status, StatusCode::OK, "{path}: {body}");
            assert_eq!(header(&parts, "x-emulator-pii"), Some("served"), "{path}");
            assert_eq!(header(&parts, "x-emulator-seller"), Some("default"));
            assert!(body.contains(order), "{body}");
        }
    }
    let (_, order) = proxy
        .get("/orders/v0/orders/902-3159896-1390916", &[])
        .await;
    assert!(
        order.contains("ShippingAddress") && order.contains("BuyerInfo"),
        "{order}"
    );
    let counters = emulator.counters();
    assert_eq!(counters.pii_served, 7);
    assert_eq!(counters.pii_withheld, 0);
    // Three operations, two orders each: one token per operation.
    assert_eq!(counters.token_calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_sends_unrestricted_calls_with_the_lwa_token() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    let (parts, body) = proxy
        .get("/sellers/v1/marketplaceParticipations", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-seller"), Some("default"));
    assert_eq!(header(&parts, "x-emulator-pii"), None);
    assert!(body.contains("Store of default"), "{body}");
    let (parts, _) = proxy
        .get("/orders/2026-01-01/orders/902-3159896-1390916", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK);

    let counters = emulator.counters();
    assert_eq!(counters.unrestricted_calls, 2);
    assert_eq!(counters.token_calls, 0, "no RDT for unrestricted calls");
    assert_eq!(counters.access_tokens_issued, 1, "one cached LWA token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_seller_header_selects_the_refresh_token() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let b = [("x-spapi-seller", "B")];

    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &b)
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-seller"), Some("seller-b"));
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let (parts, body) = proxy.get("/sellers/v1/marketplaceParticipations", &b).await;
    assert_eq!(header(&parts, "x-emulator-seller"), Some("seller-b"));
    assert!(body.contains("Store of seller-b"), "{body}");
    let (parts, _) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &[])
        .await;
    assert_eq!(header(&parts, "x-emulator-seller"), Some("default"));

    let counters = emulator.counters();
    assert_eq!(counters.token_calls_for("seller-b"), 1);
    assert_eq!(counters.token_calls_for("default"), 1);

    // A seller without a refresh token is refused by the proxy; nothing reaches the upstream.
    let (parts, body) = proxy
        .get(
            "/orders/v0/orders/902-3159896-1390916/address",
            &[("x-spapi-seller", "C")],
        )
        .await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert!(body.contains("UnknownSeller"), "{body}");
    assert_eq!(
        emulator.counters().restricted_calls,
        counters.restricted_calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_restricted_report_header_gets_a_report_document_a_token() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let document = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.50001";

    // Unmarked, a report document is not known to be restricted: it goes with the LWA token, and
    // a restricted report refuses that.
    let (parts, _) = proxy.get(document, &[]).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(emulator.counters().token_calls, 0);
    let (parts, body) = proxy
        .get(document, &[("x-spapi-restricted-report", "true")])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    assert_eq!(emulator.counters().token_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_a_json_body_to_a_restricted_post() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    let (mut tx, body) = channel_body();
    let request = Request::post(proxy.url("/mfn/v0/shipments"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(plain_client().request(request));
    for chunk in [
        r#"{"ShipmentRequestDetails": {"AmazonOrderId": "902-3159896-1390916", "#,
        r#""ItemList": [{"OrderItemId": "10000000000001", "Quantity": 1}]}, "#,
        r#""ShippingServiceId": "UPS_PTP_GND"}"#,
    ] {
        tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
    }
    drop(tx);
    let (parts, body) = read(pending.await.unwrap().unwrap()).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    assert!(body.contains("createShipment"), "{body}");
    assert_eq!(emulator.counters().token_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_recovers_from_revoked_tokens() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let address = "/orders/v0/orders/902-3159896-1390916/address";

    let (parts, _) = proxy.get(address, &[]).await;
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    // Amazon stops accepting the RDT: the body-less call is replayed with a fresh one.
    emulator.revoke_rdts();
    let (parts, body) = proxy.get(address, &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let counters = emulator.counters();
    assert_eq!(counters.restricted_forbidden, 1);
    assert_eq!(counters.token_calls, 2);

    // Amazon stops accepting the LWA token: that call fails, the token is dropped, the next works.
    emulator.revoke_access_tokens();
    let participations = "/sellers/v1/marketplaceParticipations";
    let (parts, _) = proxy.get(participations, &[]).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    let (parts, body) = proxy.get(participations, &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(emulator.counters().access_tokens_issued, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_a_refused_token_with_502_and_no_secret() {
    let emulator = emulator().await;
    emulator.deny_resource(http::Method::GET, "/orders/v0/orders/{orderId}/buyerInfo");
    let proxy = proxy_to(&emulator).await;

    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/buyerInfo", &[])
        .await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(header(&parts, "content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["errors"][0]["code"], "TokenRefused");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("/buyerInfo"), "{message}");
    assert!(
        !message.contains("Atz"),
        "no token or refresh token: {message}"
    );
    assert!(!message.contains(emulator.client_secret()), "{message}");
    assert_eq!(emulator.counters().restricted_calls, 0);
}

#[test]
fn proxy_reads_its_command_line_and_environment() {
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let env = vars(&[
        ("SPAPI_CLIENT_ID", "amzn1.application-oa2-client.x"),
        ("SPAPI_CLIENT_SECRET", "top-secret"),
        ("SPAPI_REFRESH_TOKEN", "Atzr|default"),
        ("SPAPI_REFRESH_TOKEN_A2EUQ1WTGCTBG2", "Atzr|eu"),
        ("SPAPI_REFRESH_TOKEN_", "Atzr|nameless"),
        ("SPAPI_REFRESH_TOKENS", "Atzr|not-a-seller"),
        ("SPAPI_REFRESH_TOKEN_EMPTY", " "),
    ]);
    let config = proxy::Config::parse(
        args(&[
            "--listen=127.0.0.1:8080",
            "--upstream",
            "https://sellingpartnerapi-eu.amazon.com/",
        ]),
        env.clone(),
    )
    .unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.upstream.as_str(),
        "https://sellingpartnerapi-eu.amazon.com"
    );
    assert_eq!(config.lwa_url, None);
    let mut sellers: Vec<&str> = config.sellers.iter().map(|(s, _)| s.as_str()).collect();
    sellers.sort_unstable();
    assert_eq!(sellers, ["A2EUQ1WTGCTBG2", "default"]);
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("top-secret") && !shown.contains("Atzr|"),
        "{shown}"
    );

    let listen = ["--listen", "127.0.0.1:0"];
    let fails = |list: &[&str], env: Vec<(String, String)>| {
        proxy::Config::parse(args(list), env).unwrap_err()
    };
    assert!(fails(&listen, env.clone()).contains("--upstream"));
    let plain_remote = [&listen[..], &["--upstream", "http://example.com"]].concat();
    assert!(fails(&plain_remote, env.clone()).contains("loopback"));
    assert!(fails(&["--bogus"], env.clone()).contains("--bogus"));
    assert!(fails(&["--listen"], env.clone()).contains("needs a value"));
    let local = [&listen[..], &["--upstream", "http://127.0.0.1:9"]].concat();
    let no_secret = fails(
        &local,
        vars(&[("SPAPI_CLIENT_ID", "x"), ("SPAPI_REFRESH_TOKEN", "r")]),
    );
    assert!(no_secret.contains("SPAPI_CLIENT_SECRET"), "{no_secret}");
    let no_seller = fails(
        &local,
        vars(&[
            ("SPAPI_CLIENT_ID", "x"),
            ("SPAPI_CLIENT_SECRET", "top-secret"),
        ]),
    );
    assert!(no_seller.contains("SPAPI_REFRESH_TOKEN"), "{no_seller}");
    assert!(!no_seller.contains("top-secret"));
}

// ---------------------------------------------------------------------------------------------
// proxy over a scripted upstream: headers and streaming
// ---------------------------------------------------------------------------------------------

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 256; // 16 MiB in all

/// An upstream that records what it receives and streams on cue.
#[derive(Clone, Default)]
struct Gate {
    /// The headers of each request.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Gets the first piece of an upload, while the rest is still to come.
    first_piece: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
    /// `/large` sends its first chunk, then waits for this before the rest.
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Gate {
    async fn start(self) -> (Origin, JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/headers", axum::routing::get(gate_headers))
            .route("/upload", axum::routing::post(gate_upload))
            .route("/large", axum::routing::get(gate_large))
            .with_state(self);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (origin, task)
    }
}

async fn gate_headers(State(gate): State<Gate>, headers: HeaderMap) -> Response<AxumBody> {
    gate.seen.lock().unwrap().push(headers);
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("connection", "x-hop-resp")
        .header("x-hop-resp", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authenticate", "Basic realm=\"upstream\"")
        .header("x-end-to-end-resp", "kept")
        .body(AxumBody::from("headers seen"))
        .unwrap()
}

async fn gate_upload(State(gate): State<Gate>, headers: HeaderMap, body: AxumBody) -> Vec<u8> {
    gate.seen.lock().unwrap().push(headers);
    let mut body = body;
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        if received.is_empty()
            && !data.is_empty()
            && let Some(tx) = gate.first_piece.lock().unwrap().take()
        {
            let _ = tx.send(data.clone());
        }
        received.extend_from_slice(&data);
    }
    received
}

async fn gate_large(State(gate): State<Gate>) -> AxumBody {
    let release = gate.release.lock().unwrap().take();
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let chunk = |i: usize| Bytes::from(vec![(i % 251) as u8; CHUNK]);
        if tx.send(Ok(chunk(0))).await.is_err() {
            return;
        }
        if let Some(release) = release
            && release.await.is_err()
        {
            return;
        }
        for i in 1..CHUNKS {
            if tx.send(Ok(chunk(i))).await.is_err() {
                return;
            }
        }
    });
    AxumBody::from_stream(rx)
}

/// A proxy whose upstream is `gate` and whose LWA endpoint is the emulator's.
async fn proxy_to_gate(gate: &Gate) -> (Emulator, RunningProxy, JoinHandle<()>) {
    let emulator = emulator().await;
    let (origin, task) = gate.clone().start().await;
    let proxy = RunningProxy::start(&origin, &emulator.lwa_url(), vars(&emulator)).await;
    (emulator, proxy, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_strips_hop_by_hop_headers_both_ways() {
    let gate = Gate::default();
    let (_emulator, proxy, _task) = proxy_to_gate(&gate).await;

    let (parts, body) = proxy
        .get(
            "/headers",
            &[
                ("connection", "x-hop-req"),
                ("x-hop-req", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-authorization", "Basic dXNlcjpwYXNz"),
                ("x-spapi-seller", "B"),
                ("x-end-to-end", "kept"),
            ],
        )
        .await;
    assert_eq!(parts.status, StatusCode::ACCEPTED, "the status is kept");
    assert_eq!(body, "headers seen");
    for gone in ["x-hop-resp", "keep-alive", "proxy-authenticate"] {
        assert_eq!(header(&parts, gone), None, "{gone} reached the client");
    }
    assert_ne!(header(&parts, "connection"), Some("x-hop-resp"));
    assert_eq!(header(&parts, "x-end-to-end-resp"), Some("kept"));

    let seen = gate.seen.lock().unwrap().pop().unwrap();
    for gone in [
        "x-hop-req",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-spapi-seller",
    ] {
        assert!(!seen.contains_key(gone), "{gone} reached the upstream");
    }
    assert_ne!(
        seen.get("connection").map(|v| v.to_str().unwrap()),
        Some("x-hop-req")
    );
    assert_eq!(seen["x-end-to-end"], "kept");
    // The upstream is addressed as itself, with the seller's LWA token (an unrestricted path).
    assert_ne!(seen["host"], proxy.addr.to_string().as_str());
    assert!(
        seen["x-amz-access-token"]
            .to_str()
            .unwrap()
            .starts_with("Atza|")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_the_request_body() {
    let gate = Gate::default();
    let (first_tx, first_rx) = oneshot::channel();
    *gate.first_piece.lock().unwrap() = Some(first_tx);
    let (_emulator, proxy, _task) = proxy_to_gate(&gate).await;

    let (mut tx, body) = channel_body();
    let request = Request::post(proxy.url("/upload")).body(body).unwrap();
    let pending = tokio::spawn(plain_client().request(request));
    tx.send(Ok(Frame::data(Bytes::from_static(b"first;"))))
        .await
        .unwrap();
    // The upstream gets the start of the body while the client has not finished sending it.
    let first = tokio::time::timeout(PATIENCE, first_rx)
        .await
        .expect("the upstream saw nothing before the body ended: the proxy buffers")
        .unwrap();
    assert!(b"first;".starts_with(&first), "{first:?}");
    tx.send(Ok(Frame::data(Bytes::from_static(b"second;"))))
        .await
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"third"))))
        .await
        .unwrap();
    drop(tx);
    let (parts, echoed) = read(pending.await.unwrap().unwrap()).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(echoed, "first;second;third");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_a_large_response() {
    let gate = Gate::default();
    let (release, release_rx) = oneshot::channel();
    *gate.release.lock().unwrap() = Some(release_rx);
    let (_emulator, proxy, _task) = proxy_to_gate(&gate).await;

    let request = Request::get(proxy.url("/large")).body(empty()).unwrap();
    let response = tokio::time::timeout(PATIENCE, plain_client().request(request))
        .await
        .expect("no response head: the proxy waits for the whole body")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received: usize = 0;
    let check = |data: &Bytes, received: &mut usize| {
        for (i, byte) in data.iter().enumerate() {
            let offset = *received + i;
            assert_eq!(usize::from(*byte), (offset / CHUNK) % 251, "byte {offset}");
        }
        *received += data.len();
    };
    // The first bytes arrive while the upstream still holds back the rest.
    while received == 0 {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("no body bytes before the upstream finished: the proxy buffers")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            check(&data, &mut received);
        }
    }
    assert!(received <= CHUNK);
    release.send(()).unwrap();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            check(&data, &mut received);
        }
    }
    assert_eq!(received, CHUNK * CHUNKS);
}

// ---------------------------------------------------------------------------------------------
// quickstart and emulator: the example binaries themselves
// ---------------------------------------------------------------------------------------------

/// The built example `name` (`<target>/debug/examples/<name>`, next to this test's `deps/`).
/// `cargo test` builds every example before it runs the tests; a test run that selects this test
/// alone (`--test examples`) builds none, so build them first in that case.
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(std::path::Path::parent).unwrap();
    let binary = profile.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --all-features` builds the examples (or run \
         `cargo build --all-features --examples` before `--test examples`)",
        binary.display()
    );
    binary
}

/// The example's command, with none of the variables that would send it to Amazon.
fn example_command(name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary(name));
    for var in [
        "SPAPI_CLIENT_ID",
        "SPAPI_CLIENT_SECRET",
        "SPAPI_REFRESH_TOKEN",
        "SPAPI_ENDPOINT",
        "SPAPI_ORDER_IDS",
    ] {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

/// The value after `prefix` on the line that starts with it.
fn after<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    text.lines().find_map(|line| line.strip_prefix(prefix))
}

#[tokio::test]
async fn the_quickstart_runs_against_the_emulator_and_gets_pii() {
    let output = tokio::time::timeout(PATIENCE, example_command("quickstart").output())
        .await
        .expect("the quickstart hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("SP-API emulator at http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // Every restricted call got personal data, and the tokens came from few token calls.
    let pii = after(&stdout, "PII received:  ").expect("no PII line");
    let (got, of) = pii
        .split_once(" restricted calls")
        .unwrap()
        .0
        .split_once(" of ")
        .unwrap();
    assert_eq!(got, of, "{pii}");
    assert!(got.parse::<u32>().unwrap() > 0, "{pii}");
    let calls = after(&stdout, "token calls:   ").expect("no token-call line");
    assert!(
        calls.ends_with(", 0 throttled (emulator's counts)"),
        "{calls}"
    );
    let token_calls: u32 = calls.split(' ').next().unwrap().parse().unwrap();
    assert!(token_calls < got.parse().unwrap(), "{calls}; {pii}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_example_serves_what_it_prints_until_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = example_command("emulator")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line == "Ctrl-C stops the emulator." {
                return;
            }
        }
        panic!("the emulator example ended early:\n{printed}");
    })
    .await
    .expect("the emulator example never said it was ready");

    // Its exports and the proxy command are enough to get a token and personal data.
    let origin = Origin::parse(after(&printed, "SP-API emulator on ").unwrap()).unwrap();
    let export = |name: &str| {
        after(&printed, &format!("export {name}='"))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("no {name} in:\n{printed}"))
            .to_owned()
    };
    let lwa_url = after(&printed, "cargo run --example proxy -- ")
        .and_then(|command| command.split("--lwa-url ").nth(1))
        .unwrap()
        .to_owned();
    let credentials = spapi_rdt::LwaCredentials::new(
        export("SPAPI_CLIENT_ID"),
        export("SPAPI_CLIENT_SECRET"),
        export("SPAPI_REFRESH_TOKEN"),
    );
    let source = spapi_rdt::SpApiTokenSource::builder()
        .credentials(credentials)
        .lwa_url(lwa_url)
        .build()
        .unwrap();
    let layer = spapi_rdt::RestrictedDataTokenLayer::builder(source)
        .origins([origin.clone()])
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(layer.middleware())
        .build();
    let response = client
        .get(format!(
            "{}/orders/v0/orders/902-3159896-1390916/address",
            origin.as_str()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-emulator-pii"], "served");

    // Ctrl-C: it stops, says what it served, and exits cleanly.
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the emulator example did not stop on Ctrl-C")
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "{status}\n{rest}");
    assert!(
        rest.contains(
            "served 1 restricted calls (1 with personal data), 0 unrestricted calls, 1 token calls"
        ),
        "{rest}"
    );
}

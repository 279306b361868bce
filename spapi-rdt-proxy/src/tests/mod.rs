//! The proxy in-process: its server runs on 127.0.0.1 against the emulator (or a scripted upstream
//! where the emulator has no such behaviour). Shutdown is triggered through the same future the
//! signal handler completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// A port that refuses connections, held for as long as a test needs it.
#[path = "../../../tests/support/dead_port.rs"]
mod dead_port;
/// A real Redis for the fleet test (started on a Unix socket, or skipped when there is none).
#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

/// The load generator of `examples/proxy_load`.
#[allow(dead_code)] // the load example uses the rest
#[path = "../../examples/proxy_load/driver.rs"]
mod driver;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::State;
use bytes::Bytes;
use clap::Parser;
use futures::SinkExt;
use futures::future::join_all;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::catalog::Catalog;
use spapi_rdt::{BoxError, Origin};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::Args;
use crate::config::{FileConfig, Settings};
use crate::listener::Drained;
use crate::proxy::App;
use crate::{cli, config, listener, ops, reports};

/// Generous bound on a step that should take milliseconds; only a broken proxy reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Harness
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

fn full(text: &str) -> PlainBody {
    Full::new(Bytes::from(text.to_owned()))
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

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The settings the binary would run with, from a command line (without the program name) and
/// an environment.
fn settings(args: &[&str], vars: Vec<(String, String)>) -> Result<Settings, String> {
    let args = Args::try_parse_from(std::iter::once("spapi-rdt-proxy").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    Settings::load(&args, vars).map_err(|e| e.to_string())
}

/// The proxy's server on 127.0.0.1, with a shutdown trigger.
struct Running {
    addr: SocketAddr,
    app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Drained>>,
    /// The operations endpoints' own listener, when the settings give one (`--ops-listen`).
    ops: Option<Box<Running>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Running {
    async fn start(settings: Settings) -> Self {
        let app = App::new(&settings).unwrap();
        let mut running = Running::serve(&app, &settings, settings.listen, false).await;
        if let Some(address) = settings.ops_listen {
            running.ops = Some(Box::new(
                Running::serve(&app, &settings, address, true).await,
            ));
        }
        running
    }

    /// `app` served on `address`: the client address, or (`ops`) the operations endpoints' own.
    async fn serve(app: &App, settings: &Settings, address: SocketAddr, ops: bool) -> Self {
        let listener = TcpListener::bind(address).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (served, limits) = (app.clone(), settings.limits());
        let task = if ops {
            tokio::spawn(listener::serve_ops(listener, served, shutdown, limits))
        } else {
            tokio::spawn(listener::serve(listener, served, shutdown, limits))
        };
        Running {
            addr,
            app: app.clone(),
            stop: Some(stop),
            task: Some(task),
            ops: None,
        }
    }

    /// What SIGTERM does: completes the server's shutdown future.
    fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    /// Waits for the server to return after a shutdown.
    async fn stopped(&mut self) -> Drained {
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the server did not stop")
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: PlainBody,
    ) -> (http::response::Parts, String) {
        let mut request = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(
            PATIENCE,
            plain_client().request(request.body(body).unwrap()),
        )
        .await
        .expect("no answer from the proxy")
        .unwrap();
        read(response).await
    }

    /// A GET that may get no HTTP answer at all (a connection closed at accept): the status, or
    /// `None`.
    async fn try_get(&self, path: &str) -> Option<StatusCode> {
        let request = Request::get(self.url(path)).body(empty()).unwrap();
        match tokio::time::timeout(PATIENCE, plain_client().request(request)).await {
            Ok(Ok(response)) => Some(response.status()),
            Ok(Err(_)) => None,
            Err(_) => panic!("the proxy neither answered nor closed the connection"),
        }
    }

    /// A plain GET through the proxy: no token, only the given headers.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (http::response::Parts, String) {
        self.request(Method::GET, path, headers, empty()).await
    }

    /// The `/metrics` text, checked to be well-formed, as `name{labels}` -> value.
    async fn metrics(&self) -> BTreeMap<String, f64> {
        let (parts, text) = self.get("/metrics", &[]).await;
        assert_eq!(parts.status, StatusCode::OK, "{text}");
        assert!(
            header(&parts, "content-type")
                .unwrap()
                .starts_with("application/openmetrics-text"),
            "{parts:?}"
        );
        parse_exposition(&text)
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

/// Parses the OpenMetrics text format strictly enough to fail on hand-made mistakes: `# TYPE`,
/// `# HELP` and `# UNIT` lines, samples `name{label="value",...} number`, and `# EOF` last.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let sample = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (\S+)$"#,
    )
    .unwrap();
    let meta = regex::Regex::new(r"^# (TYPE|HELP|UNIT) [a-zA-Z_:][a-zA-Z0-9_:]* ?.*$").unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no EOF marker:\n{text}");
    let mut samples = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if line.starts_with('#') {
            assert!(meta.is_match(line), "bad metadata line `{line}`");
            continue;
        }
        let captures = sample
            .captures(line)
            .unwrap_or_else(|| panic!("bad sample line `{line}`"));
        let value: f64 = captures[3]
            .parse()
            .unwrap_or_else(|_| panic!("bad value in `{line}`"));
        let key = format!(
            "{}{}",
            &captures[1],
            captures.get(2).map_or("", |m| m.as_str())
        );
        assert!(samples.insert(key, value).is_none(), "duplicate `{line}`");
    }
    samples
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

/// Settings for a proxy on an ephemeral loopback port, forwarding to `upstream`, with LWA on the
/// emulator.
fn settings_to(
    upstream: &Origin,
    emulator: &Emulator,
    extra: &[&str],
    more_vars: &[(&str, &str)],
) -> Settings {
    let lwa = emulator.lwa_url();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream.as_str(),
        "--lwa-url",
        lwa.as_str(),
    ];
    args.extend_from_slice(extra);
    let mut env = vars(emulator);
    env.extend(owned(more_vars));
    settings(&args, env).unwrap()
}

/// The settings of a proxy in front of `emulator` (its LWA too) with the config `file`.
fn settings_with_file(emulator: &Emulator, file: FileConfig) -> Settings {
    let lwa = emulator.lwa_url();
    let args = Args::try_parse_from([
        "spapi-rdt-proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        emulator.origin().as_str(),
        "--lwa-url",
        lwa.as_str(),
    ])
    .unwrap();
    Settings::resolve(&args, file, vars(emulator)).unwrap()
}

/// The settings from a config file's `text` alone (no flags) and the environment `vars`.
fn from_file(text: &str, vars: Vec<(String, String)>) -> Result<Settings, String> {
    let file = FileConfig::parse(text, "test.toml").unwrap();
    Settings::resolve(&Args::default(), file, vars)
}

async fn proxy_to(emulator: &Emulator) -> Running {
    Running::start(settings_to(&emulator.origin(), emulator, &[], &[])).await
}

/// `template` with every `{placeholder}` filled with a sample id.
fn sample_path(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').unwrap();
        out.push_str(&rest[..open]);
        out.push_str(match &rest[open + 1..close] {
            "orderId" => "902-3159896-1390916",
            "reportDocumentId" => "amzn1.spdoc.1.4.na.50001",
            "purchaseOrderNumber" => "2JK3S9VC",
            _ => "FBA15DJ9SVVD",
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Tokens through the proxy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_restricted_operation_of_the_catalogue_gets_pii() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let catalog = Catalog::amazon();

    for op in catalog.operations() {
        let path = sample_path(op.template());
        let is_report = op.name() == "getReportDocument";
        let mut headers = vec![];
        if is_report {
            // The explicit override; the learned and retried ways have tests of their own.
            headers.push(("x-spapi-restricted-report", "true"));
        }
        let body = if op.method() == Method::GET || op.method() == Method::DELETE {
            empty()
        } else {
            headers.push(("content-type", "application/json"));
            full("{}")
        };
        let (parts, body) = proxy
            .request(op.method().clone(), &path, &headers, body)
            .await;
        let what = format!("{} {} {path}", op.api(), op.name());
        assert_eq!(parts.status, StatusCode::OK, "{what}: {body}");
        assert_eq!(header(&parts, "x-emulator-pii"), Some("served"), "{what}");
        assert_eq!(
            header(&parts, "x-emulator-seller"),
            Some("default"),
            "{what}"
        );
    }
    let counters = emulator.counters();
    assert_eq!(counters.pii_withheld, 0);
    assert_eq!(counters.restricted_forbidden, 0);
    // One token per operation, and no more.
    assert_eq!(counters.token_calls, catalog.operations().len() as u64);
    assert_eq!(counters.throttled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_an_operation_for_every_order() {
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
            assert!(body.contains(order), "{body}");
        }
    }
    let (_, order) = proxy
        .get("/orders/v0/orders/902-3159896-1390916", &[])
        .await;
    // The usual data elements were asked for.
    assert!(
        order.contains("ShippingAddress") && order.contains("BuyerInfo"),
        "{order}"
    );
    let counters = emulator.counters();
    assert_eq!(counters.pii_served, 7);
    assert_eq!(counters.token_calls, 3, "three operations, one token each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_client_is_served_too() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let client: Client<HttpConnector, PlainBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::get(proxy.url("/orders/v0/orders/902-3159896-1390916/address"))
        .body(empty())
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (parts, body) = read(response).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrestricted_calls_go_with_the_lwa_token() {
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
async fn the_seller_header_selects_the_refresh_token() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let b = [("x-spapi-seller", "B")];
    let address = "/orders/v0/orders/902-3159896-1390916/address";

    let (parts, body) = proxy.get(address, &b).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-seller"), Some("seller-b"));
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let (parts, body) = proxy.get("/sellers/v1/marketplaceParticipations", &b).await;
    assert_eq!(header(&parts, "x-emulator-seller"), Some("seller-b"));
    assert!(body.contains("Store of seller-b"), "{body}");
    let (parts, _) = proxy.get(address, &[]).await;
    assert_eq!(header(&parts, "x-emulator-seller"), Some("default"));

    let counters = emulator.counters();
    assert_eq!(counters.token_calls_for("seller-b"), 1);
    assert_eq!(counters.token_calls_for("default"), 1);

    // A seller without a refresh token is refused by the proxy; nothing reaches the upstream.
    let (parts, body) = proxy.get(address, &[("x-spapi-seller", "C")]).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert!(body.contains("UnknownSeller"), "{body}");
    assert_eq!(
        emulator.counters().restricted_calls,
        counters.restricted_calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_only_reach_the_configured_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    // An absolute-form target and a Host header naming another host (nothing listens there):
    // the request still goes to the configured upstream, with its path only.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET http://127.0.0.2:9/sellers/v1/marketplaceParticipations HTTP/1.1\r\n\
              Host: 127.0.0.2:9\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Store of default"), "{answer}");
    assert_eq!(emulator.counters().unrestricted_calls, 1);

    // A target that is not a path is refused, not forwarded.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET //127.0.0.2:9/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(emulator.counters().unrestricted_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_is_streamed_to_a_restricted_post() {
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
async fn revoked_tokens_are_replaced() {
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
async fn refused_calls_cost_one_lwa_call_a_refusal_period_and_lwa_refusals_are_remembered() {
    use spapi_rdt_emulator::{CannedReply, Endpoint, Fault};
    let emulator = emulator().await;
    // 20 calls of an operation with a burst of 15: pacing would hold the last ones a minute each.
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--no-usage-plans"],
        &[],
    ))
    .await;
    let participations = "/sellers/v1/marketplaceParticipations";
    let lwa_calls = || emulator.requests(Endpoint::Lwa).len();

    // Amazon refuses every unrestricted call (a missing role, say): the first refusal drops the
    // LWA token, the next 19 keep the new one.
    emulator.inject(
        Endpoint::Unrestricted,
        Fault::Status(StatusCode::FORBIDDEN),
        20,
    );
    for _ in 0..20 {
        let (parts, _) = proxy.get(participations, &[]).await;
        assert_eq!(parts.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(lwa_calls(), 2, "LWA calls for 20 refused calls");

    // LWA refuses seller B's refresh token: one LWA call, then the refusal is remembered.
    let invalid_grant = CannedReply::json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": "invalid_grant", "error_description": "revoked"}),
    );
    emulator.inject(Endpoint::Lwa, Fault::Reply(invalid_grant), 100);
    for _ in 0..10 {
        let (parts, body) = proxy.get(participations, &[("x-spapi-seller", "B")]).await;
        assert!(parts.status.is_server_error(), "{} {body}", parts.status);
    }
    assert_eq!(
        lwa_calls(),
        3,
        "LWA calls for 10 requests under invalid_grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_502_without_secrets() {
    let emulator = emulator().await;
    emulator.deny_resource(Method::GET, "/orders/v0/orders/{orderId}/buyerInfo");
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
    assert!(!message.contains("Atz"), "no token: {message}");
    assert!(!message.contains(emulator.client_secret()), "{message}");
    assert_eq!(emulator.counters().restricted_calls, 0);
}

// ---------------------------------------------------------------------------------------------
// Restricted report documents without the header
// ---------------------------------------------------------------------------------------------

const REPORT_DOCUMENT: &str = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.50001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_document_named_by_get_report_is_served_without_the_header() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    // The emulator's report 50001 is a GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING, a restricted type.
    let (parts, body) = proxy
        .get(
            "/reports/2021-06-30/reports/50001",
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert!(
        body.contains("GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING"),
        "{body}"
    );
    assert!(proxy.app.documents().contains("amzn1.spdoc.1.4.na.50001"));

    let (parts, body) = proxy.get(REPORT_DOCUMENT, &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let counters = emulator.counters();
    assert_eq!(
        counters.restricted_forbidden, 0,
        "sent with a token the first time"
    );
    assert_eq!(counters.token_calls, 1);

    let metrics = proxy.metrics().await;
    assert_eq!(metrics["spapi_proxy_restricted_reports_learned_total"], 1.0);
    assert_eq!(
        metrics[r#"spapi_proxy_restricted_report_documents_total{how="learned"}"#],
        1.0
    );
    assert_eq!(metrics["spapi_proxy_restricted_reports_remembered"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_document_listed_by_get_reports_is_served_without_the_header() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    let (parts, body) = proxy
        .get(
            "/reports/2021-06-30/reports?reportTypes=GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING",
            &[],
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    let (parts, body) = proxy.get(REPORT_DOCUMENT, &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    assert_eq!(emulator.counters().restricted_forbidden, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_report_document_is_retried_once_with_a_token_and_remembered() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let document = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.90210";

    // Never seen in a getReport answer: sent with the LWA token, refused, sent again with an RDT.
    let (parts, body) = proxy.get(document, &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let counters = emulator.counters();
    assert_eq!(counters.restricted_forbidden, 1, "the LWA try");
    assert_eq!(counters.token_calls, 1);

    // Remembered: the next call goes with the (cached) token at once.
    let (parts, _) = proxy.get(document, &[]).await;
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let counters = emulator.counters();
    assert_eq!(counters.restricted_forbidden, 1);
    assert_eq!(counters.token_calls, 1);
    // The refusal said nothing about the LWA token: it was kept.
    assert_eq!(counters.access_tokens_issued, 1);

    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_restricted_report_documents_total{how="retried"}"#],
        1.0
    );
    assert_eq!(
        metrics[r#"spapi_proxy_restricted_report_documents_total{how="learned"}"#],
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_documents_cannot_spend_a_sellers_token_quota() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let document = |n: usize| format!("/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.fake{n}");
    let marked = [("x-spapi-restricted-report", "true")];

    // Ten made-up documents at once, marked: the first five get a token each, the others 429.
    let answers = join_all((0..10).map(|n| {
        let path = document(n);
        let proxy = &proxy;
        async move { proxy.get(&path, &marked).await }
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|(p, _)| p.status == StatusCode::OK)
        .count();
    let throttled: Vec<_> = answers
        .iter()
        .filter(|(p, _)| p.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok, throttled.len()), (5, 5), "{answers:?}");
    assert!(header(&throttled[0].0, "retry-after").is_some());
    assert!(
        throttled[0].1.contains("QuotaExceeded"),
        "{}",
        throttled[0].1
    );
    assert_eq!(emulator.counters().token_calls, 5);
    // A document granted lately costs nothing again (its token is cached).
    let granted = answers
        .iter()
        .position(|(p, _)| p.status == StatusCode::OK)
        .unwrap();
    let (parts, _) = proxy.get(&document(granted), &marked).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(emulator.counters().token_calls, 5);

    // The seller's other restricted operations still have the rest of the Tokens quota.
    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    assert_eq!(emulator.counters().token_calls, 6);

    // Unmarked made-up documents of another seller: refused with the LWA token, replayed with a
    // token while that seller's budget lasts, then returned as refused without a replay.
    let b = [("x-spapi-seller", "B")];
    let mut statuses = Vec::new();
    for n in 100..108 {
        statuses.push(proxy.get(&document(n), &b).await.0.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 403, 403, 403]);
    assert_eq!(emulator.counters().token_calls_for("seller-b"), 5);

    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_document_tokens_refused_total{reason="budget"}"#],
        8.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_is_not_asked_about_again() {
    let emulator = emulator().await;
    emulator.deny_resource(
        Method::GET,
        "/reports/2021-06-30/documents/{reportDocumentId}",
    );
    let proxy = proxy_to(&emulator).await;
    let marked = [("x-spapi-restricted-report", "true")];

    let (parts, body) = proxy.get(REPORT_DOCUMENT, &marked).await;
    assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(emulator.counters().token_calls, 1);
    for _ in 0..5 {
        let (parts, body) = proxy.get(REPORT_DOCUMENT, &marked).await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(body.contains("does not ask again"), "{body}");
    }
    // Unmarked, it goes with the LWA token only: Amazon's refusal, and no replay.
    let (parts, _) = proxy.get(REPORT_DOCUMENT, &[]).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(emulator.counters().token_calls, 1);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_document_tokens_refused_total{reason="refused_before"}"#],
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restricted_report_header_still_marks_a_document() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    let (parts, body) = proxy
        .get(REPORT_DOCUMENT, &[("x-spapi-restricted-report", "true")])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    assert_eq!(emulator.counters().restricted_forbidden, 0);
    assert_eq!(emulator.counters().token_calls, 1);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_restricted_report_documents_total{how="header"}"#],
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn the_report_memory_is_bounded_and_expires() {
    let documents = reports::RestrictedDocuments::new(config::ReportSettings {
        capacity: 2,
        ttl: Duration::from_secs(60),
    });
    assert!(documents.remember("a"));
    assert!(!documents.remember("a"), "already known");
    assert!(documents.remember("b"));
    assert!(documents.remember("c"));
    // Two at most: the oldest went.
    assert!(!documents.contains("a"));
    assert!(documents.contains("b") && documents.contains("c"));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(!documents.contains("b") && !documents.contains("c"));
    assert_eq!(documents.len(), 0);

    // Only restricted types are learned, from either answer shape.
    let learned = documents.learn_from(
        br#"{"reports": [
            {"reportType": "GET_MERCHANT_LISTINGS_ALL_DATA", "reportDocumentId": "plain"},
            {"reportType": "GET_VAT_TRANSACTION_DATA", "reportDocumentId": "vat"},
            {"reportType": "GET_ORDER_REPORT_DATA_TAX"}
        ]}"#,
    );
    assert_eq!(learned, 1);
    assert!(documents.contains("vat") && !documents.contains("plain"));
    assert_eq!(
        documents.learn_from(
            br#"{"payload": {"reportType": "SC_VAT_TAX_REPORT", "reportDocumentId": "sc"}}"#
        ),
        1
    );
    assert_eq!(documents.learn_from(b"not json"), 0);
}

// ---------------------------------------------------------------------------------------------
// Operations endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;

    let (parts, body) = proxy.get("/healthz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "ok\n");
    let (parts, body) = proxy.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(emulator.counters().lwa_calls, 1, "readiness asked LWA");
    let (parts, _) = proxy.request(Method::POST, "/healthz", &[], empty()).await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    // None of them went upstream.
    let counters = emulator.counters();
    assert_eq!(counters.unrestricted_calls + counters.restricted_calls, 0);

    // LWA unreachable (nothing listens on port 1): alive, not ready.
    let mut unready = settings_to(&emulator.origin(), &emulator, &[], &[]);
    unready.lwa_url = Some("http://127.0.0.1:1/auth/o2/token".to_owned());
    let unready = Running::start(unready).await;
    let (parts, _) = unready.get("/healthz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let (parts, body) = unready.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("LWA"), "{body}");
    assert!(!body.contains(emulator.client_secret()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_share_one_lwa_check() {
    let emulator = emulator().await;
    // LWA refuses the client: every check fails, and a failed check caches no token.
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &[],
        &[("SPAPI_CLIENT_SECRET", "not-the-secret")],
    ))
    .await;
    let (parts, _) = proxy.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let one_check = emulator.counters().lwa_calls;
    assert_eq!(
        one_check, 2,
        "one check asks LWA once for each of the two sellers"
    );
    // Anyone may call /readyz: probes in a row and at once must not turn into LWA calls.
    for _ in 0..10 {
        let (parts, _) = proxy.get("/readyz", &[]).await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let at_once = join_all((0..10).map(|_| proxy.get("/readyz", &[]))).await;
    assert!(
        at_once
            .iter()
            .all(|(parts, _)| parts.status == StatusCode::SERVICE_UNAVAILABLE)
    );
    // The 21 probes took far less than the 5 s a check is remembered; a slow machine may see a
    // second check, never one per probe.
    let calls = emulator.counters().lwa_calls;
    assert!(calls <= 2 * one_check, "{calls} LWA calls for 21 probes");
}

/// Every path in Amazon's models, to check that the operations endpoints shadow none.
#[test]
fn operations_endpoints_are_outside_the_sp_api_path_space() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spapi-models");
    let mut paths = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let model: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for template in model["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys())
        {
            paths += 1;
            let first = template.trim_start_matches('/').split('/').next().unwrap();
            for ours in [ops::HEALTHZ, ops::READYZ, ops::METRICS] {
                assert_ne!(
                    first,
                    ours.trim_start_matches('/'),
                    "{template} in {path:?} is under {ours}"
                );
            }
        }
    }
    assert!(paths > 100, "only {paths} paths read from {dir:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let before = proxy.metrics().await;
    assert_eq!(before["spapi_proxy_token_fetches_total"], 0.0);
    assert_eq!(before["spapi_proxy_upstream_latency_seconds_count"], 0.0);

    let address = "/orders/v0/orders/902-3159896-1390916/address";
    for _ in 0..3 {
        let (parts, _) = proxy.get(address, &[]).await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    let (parts, _) = proxy
        .get("/sellers/v1/marketplaceParticipations", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    let (parts, _) = proxy.get(address, &[("x-spapi-seller", "C")]).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);

    let after = proxy.metrics().await;
    let requests = |api: &str, operation: &str, status: u16| {
        after
            .get(&format!(
                r#"spapi_proxy_requests_total{{api="{api}",operation="{operation}",status="{status}"}}"#
            ))
            .copied()
    };
    assert_eq!(
        requests("Orders v0", "getOrderAddress", 200),
        Some(3.0),
        "{after:#?}"
    );
    assert_eq!(requests("Orders v0", "getOrderAddress", 400), Some(1.0));
    assert_eq!(requests("other", "other", 200), Some(1.0));
    assert_eq!(after["spapi_proxy_token_fetches_total"], 1.0);
    assert_eq!(after["spapi_proxy_token_cache_misses_total"], 1.0);
    assert_eq!(after["spapi_proxy_token_cache_hits_total"], 2.0);
    assert_eq!(after["spapi_proxy_token_fetch_errors_total"], 0.0);
    assert_eq!(after["spapi_proxy_upstream_latency_seconds_count"], 4.0);
    for name in [
        "spapi_proxy_rate_limit_waits_total",
        "spapi_proxy_fleet_fallbacks_total",
        "spapi_proxy_token_cache_waits_total",
    ] {
        assert!(after.contains_key(name), "{name} missing");
    }
    assert_eq!(
        after["spapi_proxy_token_cache_hits_total"],
        proxy.app.layer().stats().hits as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_with_its_store_down_serves_alone_and_says_so() {
    let emulator = emulator().await;
    // Nothing listens on port 1: the store fails at once, on loopback.
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--redis-url", "redis://127.0.0.1:1/0"],
        &[("SPAPI_RDT_FLEET_KEY", &"ab".repeat(32))],
    ))
    .await;

    // The replica goes on alone: the token is fetched, the call served.
    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let metrics = proxy.metrics().await;
    assert!(
        metrics["spapi_proxy_fleet_fallbacks_total"] >= 1.0,
        "{metrics:#?}"
    );
    assert_eq!(metrics["spapi_proxy_fleet_alone"], 1.0);
    // Still ready (it serves every request), and says it works alone. Asking costs no Redis call.
    let (parts, body) = proxy.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert!(body.contains("fleet mode degraded"), "{body}");
    // A key that is not 32 bytes is refused before anything starts.
    let mut bad = settings_to(&emulator.origin(), &emulator, &[], &[]);
    bad.fleet = Some(config::FleetSettings {
        redis_url: "redis://127.0.0.1:1/0".to_owned(),
        key_hex: "abcd".to_owned(),
        key_prefix: None,
        cluster: false,
        ca_pem: None,
        replicas: 1,
    });
    let refused = App::new(&bad).err().unwrap().to_string();
    assert!(refused.contains("SPAPI_RDT_FLEET_KEY"), "{refused}");
    assert!(!refused.contains("abcd"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_needs_the_cluster_flag_and_then_serves() {
    let Some(cluster) = redis_server::RedisCluster::start() else {
        return;
    };
    let emulator = emulator().await;
    let url = cluster.url();
    let fleet_settings = |extra: &[&str]| {
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend_from_slice(extra);
        settings_to(
            &emulator.origin(),
            &emulator,
            &args,
            &[("SPAPI_RDT_FLEET_KEY", &"5a".repeat(32))],
        )
    };
    // Pointed at a cluster node as at a standalone server: refused at start, saying why.
    let refused = listener::run(fleet_settings(&[]), std::future::ready(()))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("Redis Cluster"), "{refused}");
    assert!(refused.contains("--redis-cluster"), "{refused}");

    let mut settings = fleet_settings(&["--redis-cluster"]);
    settings.fleet.as_mut().unwrap().key_prefix = Some(cluster.prefix().to_owned());
    let proxy = Running::start(settings).await;
    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    let metrics = proxy.metrics().await;
    assert_eq!(metrics["spapi_proxy_fleet_fallbacks_total"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_over_tls_trusts_the_ca_file_and_refuses_an_unknown_certificate() {
    let Some(redis) = redis_server::Redis::own_tls() else {
        return;
    };
    let emulator = emulator().await;
    let ca_path =
        std::env::temp_dir().join(format!("spapi-rdt-proxy-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_path, redis.ca_pem()).unwrap();
    let ca_file = ca_path.display().to_string();
    let fleet_settings = |extra: &[&str]| {
        let mut args = vec!["--redis-url", redis.url()];
        args.extend_from_slice(extra);
        settings_to(
            &emulator.origin(),
            &emulator,
            &args,
            &[("SPAPI_RDT_FLEET_KEY", &"5a".repeat(32))],
        )
    };
    // Without the CA, the system's store does not know the test's CA: refused at start, saying why.
    let refused = listener::run(fleet_settings(&[]), std::future::ready(()))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("certificate"), "{refused}");
    assert!(refused.contains("--redis-ca-file"), "{refused}");

    let mut settings = fleet_settings(&["--redis-ca-file", &ca_file]);
    settings.fleet.as_mut().unwrap().key_prefix = Some(redis.prefix().to_owned());
    let proxy = Running::start(settings).await;
    let (parts, body) = proxy
        .get("/orders/v0/orders/902-3159896-1390916/address", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    let metrics = proxy.metrics().await;
    assert_eq!(metrics["spapi_proxy_fleet_fallbacks_total"], 0.0);
    assert_eq!(metrics["spapi_proxy_fleet_alone"], 0.0);
    let _ = std::fs::remove_file(&ca_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_in_fleet_mode_share_one_token() {
    let Some(redis) = redis_server::Redis::any() else {
        return;
    };
    let emulator = emulator().await;
    let sidecar = || {
        let mut settings = settings_to(&emulator.origin(), &emulator, &[], &[]);
        settings.fleet = Some(config::FleetSettings {
            redis_url: redis.url().to_owned(),
            key_hex: "5a".repeat(32),
            key_prefix: Some(redis.prefix().to_owned()),
            cluster: false,
            ca_pem: None,
            replicas: 2,
        });
        settings
    };
    let first = Running::start(sidecar()).await;
    let second = Running::start(sidecar()).await;

    let (parts, body) = first.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    let address = "/orders/v0/orders/902-3159896-1390916/address";
    for proxy in [&first, &second] {
        let (parts, body) = proxy.get(address, &[]).await;
        assert_eq!(parts.status, StatusCode::OK, "{body}");
        assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    }
    // The second sidecar found the first one's token in Redis.
    assert_eq!(emulator.counters().token_calls, 1);
    let metrics = second.metrics().await;
    assert_eq!(metrics["spapi_proxy_fleet_hits_total"], 1.0);
    assert_eq!(metrics["spapi_proxy_fleet_fallbacks_total"], 0.0);
    assert_eq!(metrics["spapi_proxy_fleet_alone"], 0.0);
    let (parts, body) = second.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert!(body.contains("fleet mode: shared"), "{body}");
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On one thread, so the subscriber set here sees the server's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn the_logs_hold_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let emulator = emulator().await;
    emulator.deny_resource(Method::GET, "/orders/v0/orders/{orderId}/buyerInfo");
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &[],
        &[("SPAPI_PROXY_CLIENT_TOKEN", CLIENT_TOKEN)],
    ))
    .await;
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    for path in [
        "/orders/v0/orders/902-3159896-1390916/address?MarketplaceIds=ATVPDKIKX0DER",
        "/orders/v0/orders/902-3159896-1390916/buyerInfo",
        "/sellers/v1/marketplaceParticipations",
        "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.4711",
    ] {
        proxy.get(path, &auth).await;
    }
    proxy
        .get(
            "/sellers/v1/marketplaceParticipations",
            &[("authorization", "Bearer wrong-guess-of-the-secret")],
        )
        .await;
    proxy.get("/readyz", &[]).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("forwarded"), "nothing logged:\n{logs}");
    for secret in [
        emulator.client_secret(),
        "Atzr|",
        "Atza|",
        "Atz.sprdt|",
        CLIENT_TOKEN,
        "wrong-guess-of-the-secret",
        "MarketplaceIds=",
    ] {
        assert!(!logs.contains(secret), "`{secret}` in the logs:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Client authentication and safe defaults
// ---------------------------------------------------------------------------------------------

const CLIENT_TOKEN: &str = "a-long-enough-shared-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_gets_401_and_reaches_nothing() {
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &[],
        &[("SPAPI_PROXY_CLIENT_TOKEN", CLIENT_TOKEN)],
    ))
    .await;
    let address = "/orders/v0/orders/902-3159896-1390916/address";

    for headers in [
        vec![],
        vec![("authorization", "Bearer not-the-shared-secret")],
        vec![("authorization", "Basic YTpi")],
        vec![("proxy-authorization", "Bearer a-long-enough-shared-secreT")],
    ] {
        let (parts, body) = proxy.get(address, &headers).await;
        assert_eq!(
            parts.status,
            StatusCode::UNAUTHORIZED,
            "{headers:?}: {body}"
        );
        assert_eq!(header(&parts, "www-authenticate"), Some("Bearer"));
        assert!(!body.contains(CLIENT_TOKEN), "{body}");
    }
    let counters = emulator.counters();
    assert_eq!(counters.lwa_calls, 0, "nothing reached LWA");
    assert_eq!(counters.restricted_calls + counters.unrestricted_calls, 0);
    assert_eq!(counters.token_calls, 0);

    let bearer = format!("Bearer {CLIENT_TOKEN}");
    for name in ["authorization", "proxy-authorization"] {
        let (parts, body) = proxy.get(address, &[(name, bearer.as_str())]).await;
        assert_eq!(parts.status, StatusCode::OK, "{name}: {body}");
        assert_eq!(header(&parts, "x-emulator-pii"), Some("served"));
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_clients_refused_total{reason="unauthenticated"}"#],
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_the_allowed_networks_gets_nothing_not_even_the_ops_endpoints() {
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--allow-network", "10.0.0.0/8"],
        &[],
    ))
    .await;
    for path in [
        "/sellers/v1/marketplaceParticipations",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        // The connection is closed at accept: no HTTP answer at all.
        assert_eq!(proxy.try_get(path).await, None, "{path}");
    }
    assert_eq!(emulator.counters().lwa_calls, 0);
    // The stack refuses such a request too, should one reach it another way.
    let request = Request::get("/healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = proxy
        .app
        .handle("127.0.0.1:9".parse().unwrap(), request)
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let inside = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--allow-network", "127.0.0.0/8"],
        &[],
    ))
    .await;
    let (parts, _) = inside
        .get("/sellers/v1/marketplaceParticipations", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(inside.try_get("/healthz").await, Some(StatusCode::OK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_on_their_own_address_answer_probes_from_any_network_and_nothing_else() {
    let emulator = emulator().await;
    // Clients from 10.0.0.0/8 only: this test's loopback connections are refused on the main
    // address, as a kubelet's or a scraper's would be.
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &[
            "--allow-network",
            "10.0.0.0/8",
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &[],
    ))
    .await;
    let ops = proxy.ops.as_ref().expect("an ops listener");
    assert_eq!(ops.try_get("/healthz").await, Some(StatusCode::OK));
    let metrics = ops.metrics().await;
    assert!(
        metrics.contains_key("spapi_proxy_connections_open"),
        "{metrics:?}"
    );
    let (parts, body) = ops.get("/readyz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    // Nothing else is served there: no SP-API call goes upstream from the ops address.
    let (parts, _) = ops.get("/sellers/v1/marketplaceParticipations", &[]).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let (parts, _) = ops.request(Method::POST, "/metrics", &[], empty()).await;
    assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(emulator.counters().unrestricted_calls, 0);
    // The main address still refuses the network at accept, ops paths included.
    for path in ["/healthz", "/sellers/v1/marketplaceParticipations"] {
        assert_eq!(proxy.try_get(path).await, None, "{path}");
    }

    // A client that may use the main address finds no ops endpoint there: they are elsewhere.
    let inside = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &[
            "--allow-network",
            "127.0.0.0/8",
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &[],
    ))
    .await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (parts, body) = inside.get(path, &[]).await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (parts, _) = inside
        .get("/sellers/v1/marketplaceParticipations", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(emulator.counters().unrestricted_calls, 1);
}

#[test]
fn fleet_replicas_come_from_the_flag_or_the_file_within_bounds() {
    let fleet_vars = || {
        let mut vars = app_vars();
        vars.push(("SPAPI_RDT_FLEET_KEY".to_owned(), "5a".repeat(32)));
        vars
    };
    let redis = ["--region", "eu", "--redis-url", "redis://127.0.0.1:6379/0"];
    let with = |extra: &[&str]| {
        let args: Vec<&str> = redis.iter().chain(extra).copied().collect();
        settings(&args, fleet_vars())
    };
    assert_eq!(with(&[]).unwrap().fleet.unwrap().replicas, 1);
    assert_eq!(
        with(&["--fleet-replicas", "3"])
            .unwrap()
            .fleet
            .unwrap()
            .replicas,
        3
    );
    for bad in ["0", "1025"] {
        let error = with(&["--fleet-replicas", bad]).unwrap_err();
        assert!(error.contains("--fleet-replicas"), "{error}");
    }
    let settings = from_file(
        "region = \"eu\"\n[fleet]\nredis_url = \"redis://127.0.0.1:6379/0\"\nreplicas = 4",
        fleet_vars(),
    )
    .unwrap();
    assert_eq!(settings.fleet.unwrap().replicas, 4);
}

#[test]
fn the_ops_address_is_not_the_client_address() {
    let error = settings(
        &[
            "--region",
            "eu",
            "--listen",
            "127.0.0.1:8080",
            "--ops-listen",
            "127.0.0.1:8080",
        ],
        app_vars(),
    )
    .unwrap_err();
    assert!(error.contains("--ops-listen"), "{error}");
    // From the file as well.
    let settings = from_file(
        "region = \"eu\"\nops_listen = \"127.0.0.1:9090\"",
        app_vars(),
    )
    .unwrap();
    assert_eq!(settings.ops_listen, Some("127.0.0.1:9090".parse().unwrap()));
}

fn app_vars() -> Vec<(String, String)> {
    owned(&[
        ("SPAPI_CLIENT_ID", "amzn1.application-oa2-client.x"),
        ("SPAPI_CLIENT_SECRET", "top-secret-client"),
        ("SPAPI_REFRESH_TOKEN", "Atzr|default"),
    ])
}

#[test]
fn a_non_loopback_listen_without_client_auth_is_refused_at_startup() {
    for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
        let refused = settings(&["--listen", listen, "--region", "eu"], app_vars()).unwrap_err();
        assert!(refused.contains("refusing to listen"), "{refused}");
        assert!(refused.contains("SPAPI_PROXY_CLIENT_TOKEN"), "{refused}");
    }
    // With a client secret, or with client networks, it may.
    let mut with_secret = app_vars();
    with_secret.push(("SPAPI_PROXY_CLIENT_TOKEN".into(), CLIENT_TOKEN.into()));
    settings(&["--listen", "0.0.0.0:8080", "--region", "eu"], with_secret).unwrap();
    settings(
        &[
            "--listen",
            "0.0.0.0:8080",
            "--region",
            "eu",
            "--allow-network",
            "10.1.0.0/16",
        ],
        app_vars(),
    )
    .unwrap();
    // A guessable secret is no authentication.
    let mut short = app_vars();
    short.push(("SPAPI_PROXY_CLIENT_TOKEN".into(), "short".into()));
    let refused = settings(&["--listen", "0.0.0.0:8080", "--region", "eu"], short).unwrap_err();
    assert!(refused.contains("at least"), "{refused}");
    // Loopback is the default.
    let local = settings(&["--region", "eu"], app_vars()).unwrap();
    assert!(local.listen.ip().is_loopback());
}

// ---------------------------------------------------------------------------------------------
// Command line, environment and config file
// ---------------------------------------------------------------------------------------------

#[test]
fn the_command_line_and_environment_of_the_example_still_work() {
    let env = owned(&[
        ("SPAPI_CLIENT_ID", "amzn1.application-oa2-client.x"),
        ("SPAPI_CLIENT_SECRET", "top-secret"),
        ("SPAPI_REFRESH_TOKEN", "Atzr|default"),
        ("SPAPI_REFRESH_TOKEN_A2EUQ1WTGCTBG2", "Atzr|eu"),
        ("SPAPI_REFRESH_TOKEN_", "Atzr|nameless"),
        ("SPAPI_REFRESH_TOKENS", "Atzr|not-a-seller"),
        ("SPAPI_REFRESH_TOKEN_EMPTY", " "),
    ]);
    let config = settings(
        &[
            "--listen=127.0.0.1:8080",
            "--upstream",
            "https://sellingpartnerapi-eu.amazon.com/",
        ],
        env.clone(),
    )
    .unwrap();
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.upstream.as_str(),
        "https://sellingpartnerapi-eu.amazon.com"
    );
    assert_eq!(config.lwa_url, None);
    let mut sellers: Vec<&str> = config.sellers.iter().map(|s| s.id.as_str()).collect();
    sellers.sort_unstable();
    assert_eq!(sellers, ["A2EUQ1WTGCTBG2", "default"]);
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("top-secret") && !shown.contains("Atzr|"),
        "{shown}"
    );

    let listen = ["--listen", "127.0.0.1:0"];
    let fails = |list: &[&str], env: Vec<(String, String)>| settings(list, env).unwrap_err();
    assert!(fails(&listen, env.clone()).contains("--upstream"));
    let plain_remote = [&listen[..], &["--upstream", "http://example.com"]].concat();
    assert!(fails(&plain_remote, env.clone()).contains("loopback"));
    assert!(fails(&["--bogus"], env.clone()).contains("--bogus"));
    assert!(fails(&["--listen"], env.clone()).contains("value"));
    let local = [&listen[..], &["--upstream", "http://127.0.0.1:9"]].concat();
    let no_secret = fails(
        &local,
        owned(&[("SPAPI_CLIENT_ID", "x"), ("SPAPI_REFRESH_TOKEN", "r")]),
    );
    assert!(no_secret.contains("SPAPI_CLIENT_SECRET"), "{no_secret}");
    let no_seller = fails(
        &local,
        owned(&[
            ("SPAPI_CLIENT_ID", "x"),
            ("SPAPI_CLIENT_SECRET", "top-secret"),
        ]),
    );
    assert!(no_seller.contains("SPAPI_REFRESH_TOKEN"), "{no_seller}");
    assert!(!no_seller.contains("top-secret"));
}

#[test]
fn help_is_the_whole_manual() {
    let help = <Args as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    for needle in [
        "--listen",
        "--ops-listen",
        "--fleet-replicas",
        "--upstream",
        "--region",
        "--sandbox",
        "--lwa-url",
        "--config",
        "--allow-network",
        "--log-format",
        "--redis-url",
        "--upstream-timeout",
        "--drain-timeout",
        "SPAPI_CLIENT_ID",
        "SPAPI_CLIENT_SECRET",
        "SPAPI_REFRESH_TOKEN_<NAME>",
        "SPAPI_PROXY_CLIENT_TOKEN",
        "SPAPI_RDT_FLEET_KEY",
        "RUST_LOG",
        "x-spapi-seller",
        "x-spapi-restricted-report",
        "/healthz",
        "/readyz",
        "/metrics",
        "SIGTERM",
        "[sellers.<NAME>]",
        "[fleet]",
        "--no-usage-plans",
        "--usage-plan-max-wait",
        "--usage-plan <OPERATION=RATE/BURST>",
        "[usage_plans]",
        "[usage_plans.plans]",
        "USAGE PLANS",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn regions_and_sandbox_name_amazon_hosts() {
    for (region, host) in [
        ("na", "https://sellingpartnerapi-na.amazon.com"),
        ("eu", "https://sellingpartnerapi-eu.amazon.com"),
        ("fe", "https://sellingpartnerapi-fe.amazon.com"),
    ] {
        let config = settings(&["--region", region], app_vars()).unwrap();
        assert_eq!(config.upstream.as_str(), host);
        let sandbox = settings(&["--region", region, "--sandbox"], app_vars()).unwrap();
        assert_eq!(
            sandbox.upstream.as_str(),
            host.replace("https://", "https://sandbox.")
        );
    }
    assert!(settings(&["--region", "xx"], app_vars()).is_err());
    let unclear = settings(
        &[
            "--sandbox",
            "--upstream",
            "https://sellingpartnerapi-na.amazon.com",
        ],
        app_vars(),
    )
    .unwrap_err();
    assert!(unclear.contains("--sandbox"), "{unclear}");
    // One or the other.
    let both = settings(
        &[
            "--region",
            "eu",
            "--upstream",
            "https://sellingpartnerapi-na.amazon.com",
        ],
        app_vars(),
    )
    .unwrap_err();
    assert!(
        both.contains("--region") || both.contains("--upstream"),
        "{both}"
    );
}

#[test]
fn the_config_file_sets_sellers_and_flags_override_it() {
    let file = FileConfig::parse(
        r#"
        listen = "127.0.0.1:9000"
        region = "eu"
        log_format = "json"
        drain_timeout_secs = 5
        header_timeout_secs = 7

        [sellers.NA1]
        region = "na"

        [client_auth]
        allow_networks = ["10.0.0.0/8"]

        [reports]
        remember = 50
        "#,
        "test.toml",
    )
    .unwrap();
    let mut env = app_vars();
    env.push(("SPAPI_REFRESH_TOKEN_NA1".into(), "Atzr|na".into()));
    let args = Args::try_parse_from(["spapi-rdt-proxy", "--listen", "127.0.0.1:9100"]).unwrap();
    let config = Settings::resolve(&args, file, env.clone()).unwrap();
    assert_eq!(
        config.listen,
        "127.0.0.1:9100".parse().unwrap(),
        "the flag wins"
    );
    assert_eq!(
        config.upstream.as_str(),
        "https://sellingpartnerapi-eu.amazon.com"
    );
    assert_eq!(config.log_format, cli::LogFormat::Json);
    assert_eq!(config.limits.drain_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.header_timeout, Duration::from_secs(7));
    assert_eq!(config.reports.capacity, 50);
    assert!(config.client_auth.is_configured());
    let upstream_of = |name: &str| {
        config
            .sellers
            .iter()
            .find(|s| s.id.as_str() == name)
            .unwrap()
            .upstream
            .as_str()
            .to_owned()
    };
    assert_eq!(
        upstream_of("NA1"),
        "https://sellingpartnerapi-na.amazon.com"
    );
    assert_eq!(
        upstream_of("default"),
        "https://sellingpartnerapi-eu.amazon.com"
    );
    // Tokens only for these two hosts.
    assert_eq!(config.origins().len(), 2);

    // No secrets in the file: unknown keys are refused.
    let secret = FileConfig::parse("client_secret = \"x\"", "test.toml").unwrap_err();
    assert!(secret.contains("client_secret"), "{secret}");
    // A seller in the file needs its refresh token in the environment.
    let missing = from_file(
        "region = \"eu\"\n[sellers.FE1]\nregion = \"fe\"",
        app_vars(),
    )
    .unwrap_err();
    assert!(missing.contains("SPAPI_REFRESH_TOKEN_FE1"), "{missing}");
    // Fleet mode needs its key from the environment.
    let keyless = from_file(
        "region = \"eu\"\n[fleet]\nredis_url = \"redis://127.0.0.1:6379/0\"",
        app_vars(),
    )
    .unwrap_err();
    assert!(keyless.contains("SPAPI_RDT_FLEET_KEY"), "{keyless}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_with_its_own_region_is_sent_to_its_own_upstream() {
    let other = emulator().await;
    let emulator = emulator().await;
    let file = FileConfig::parse(
        &format!("[sellers.B]\nupstream = \"{}\"", other.origin()),
        "t",
    )
    .unwrap();
    let config = settings_with_file(&emulator, file);
    let proxy = Running::start(config).await;

    let (parts, _) = proxy
        .get(
            "/sellers/v1/marketplaceParticipations",
            &[("x-spapi-seller", "B")],
        )
        .await;
    // The other upstream does not know the first one's tokens: the call reached it.
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert_eq!(other.counters().unrestricted_calls, 1);
    assert_eq!(emulator.counters().unrestricted_calls, 0);
    let (parts, _) = proxy
        .get("/sellers/v1/marketplaceParticipations", &[])
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(emulator.counters().unrestricted_calls, 1);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// A scripted upstream that records what it receives and answers on cue.
#[derive(Clone, Default)]
struct Gate {
    /// The headers of each request.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Told when `/slow` has a request.
    arrived: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    /// `/slow` answers once this fires, and never if it is dropped unfired.
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    /// Gets the first piece of an upload, while the rest is still to come.
    first_piece: Arc<Mutex<Option<oneshot::Sender<Bytes>>>>,
    /// `/large` sends its first chunk, then waits for this before the rest.
    release_large: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    /// Told when a `/slow` request is dropped unanswered (its connection closed).
    abandoned: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

/// Tells `abandoned` if dropped before `answered` is set.
struct Abandon(Option<oneshot::Sender<()>>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Gate {
    async fn start(self) -> (Origin, JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/headers", axum::routing::get(gate_headers))
            .route("/slow", axum::routing::get(gate_slow))
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

async fn gate_slow(State(gate): State<Gate>) -> &'static str {
    let mut abandon = Abandon(gate.abandoned.lock().unwrap().take());
    let release = gate.release.lock().unwrap().take();
    if let Some(arrived) = gate.arrived.lock().unwrap().take() {
        let _ = arrived.send(());
    }
    if let Some(release) = release
        && release.await.is_err()
    {
        // Dropped: hold the request forever.
        std::future::pending::<()>().await;
    }
    abandon.0 = None;
    "finally"
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

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 256; // 16 MiB in all

async fn gate_large(State(gate): State<Gate>) -> AxumBody {
    let release = gate.release_large.lock().unwrap().take();
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
async fn proxy_to_gate(gate: &Gate, extra: &[&str]) -> (Emulator, Running, JoinHandle<()>) {
    let emulator = emulator().await;
    let (origin, task) = gate.clone().start().await;
    let proxy = Running::start(settings_to(&origin, &emulator, extra, &[])).await;
    (emulator, proxy, task)
}

/// Whether a new connection to `addr` is refused (the listener is gone).
async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Opens a connection to `addr`, writes `sent`, and reads until the proxy closes the connection.
/// Returns what the proxy wrote, or `None` when the connection was still open after [`PATIENCE`].
async fn answer_until_closed(addr: SocketAddr, sent: &[u8]) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let mut answer = Vec::new();
    // A reset ends the connection as surely as a close does.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_bring_no_request_are_closed() {
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--header-timeout", "1"],
        &[],
    ))
    .await;
    // Each of these would otherwise hold a task and a file descriptor for ever.
    let quiet = [
        ("nothing", &b""[..]),
        ("the first byte of the HTTP/2 preface", b"P"),
        (
            "half a request head",
            b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n",
        ),
    ];
    for (what, sent) in quiet {
        assert!(
            answer_until_closed(proxy.addr, sent).await.is_some(),
            "a connection that sent {what} was still open after {PATIENCE:?}"
        );
    }
    // A kept-alive connection that goes quiet after its request is closed too.
    let answer = answer_until_closed(proxy.addr, b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("a quiet kept-alive connection was still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // And the proxy serves on.
    let (parts, _) = proxy.get("/healthz", &[]).await;
    assert_eq!(parts.status, StatusCode::OK);
}

/// An HTTP/2 (h2c) connection to the proxy, driven on a task that ends when the connection does.
async fn h2c_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<PlainBody>,
    JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// One GET on an h2c connection, answered 200.
async fn h2c_get(sender: &mut hyper::client::conn::http2::SendRequest<PlainBody>, path: &str) {
    sender.ready().await.unwrap();
    let request = Request::get(format!("http://proxy{path}"))
        .body(empty())
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = read(response).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2c_connection_is_closed_after_the_idle_timeout() {
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--idle-timeout", "1"],
        &[],
    ))
    .await;
    let (mut sender, connection) = h2c_connection(proxy.addr).await;
    h2c_get(&mut sender, "/sellers/v1/marketplaceParticipations").await;
    // Before the idle timeout, such a connection stayed open for as long as the client liked.
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("an idle h2c connection was still open")
        .unwrap();
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_connections_closed_total{reason="idle"}"#],
        1.0
    );
    assert_eq!(
        metrics["spapi_proxy_connections_open"], 1.0,
        "the scrape's own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_closed_at_its_maximum_age_after_its_answers() {
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--max-connection-age", "1"],
        &[],
    ))
    .await;
    let (mut sender, connection) = h2c_connection(proxy.addr).await;
    // Never idle: a request every 50 ms until the proxy says goodbye (GOAWAY).
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !connection.is_finished() && tokio::time::Instant::now() < deadline {
        if sender.ready().await.is_err() {
            break;
        }
        let request = Request::get("http://proxy/healthz").body(empty()).unwrap();
        match sender.send_request(request).await {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                answered += 1;
            }
            // Refused by the GOAWAY: never sent, so safe to send elsewhere.
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("a busy connection outlived its maximum age")
        .unwrap();
    assert!(answered >= 2, "{answered} answers");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics[r#"spapi_proxy_connections_closed_total{reason="age"}"#],
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_are_closed_at_accept() {
    use tokio::io::AsyncWriteExt;
    let emulator = emulator().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--max-connections", "2"],
        &[],
    ))
    .await;
    // Two quiet connections take both slots (the header timeout, 30 s, is far off).
    let first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    second
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // Let the proxy accept them before the third comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = answer_until_closed(proxy.addr, b"GET /healthz HTTP/1.1\r\nhost: p\r\n\r\n")
        .await
        .expect("a connection past the cap was served or held open");
    assert_eq!(third, "", "closed without an answer");

    // A slot frees when a connection goes; then the proxy serves again.
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let request = Request::get(proxy.url("/metrics")).body(empty()).unwrap();
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(1), plain_client().request(request)).await
        {
            let (parts, text) = read(response).await;
            assert_eq!(parts.status, StatusCode::OK);
            break parse_exposition(&text);
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics[r#"spapi_proxy_clients_refused_total{reason="connection_cap"}"#] >= 1.0,
        "{metrics:?}"
    );
    assert_eq!(metrics["spapi_proxy_connections_max"], 2.0);
    assert_eq!(
        metrics["spapi_proxy_connections_open"], 2.0,
        "the quiet one and the scrape"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_idle_connections_at_once() {
    use tokio::io::AsyncWriteExt;
    let emulator = emulator().await;
    // A drain timeout far past PATIENCE: only a drain that closes idle connections ends in time.
    let mut proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--drain-timeout", "600"],
        &[],
    ))
    .await;
    let (mut sender, h2c) = h2c_connection(proxy.addr).await;
    h2c_get(&mut sender, "/healthz").await;
    let (_, kept_alive) = proxy.get("/healthz", &[]).await;
    assert_eq!(kept_alive, "ok\n");
    let mut half_head = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: p\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    proxy.shut_down();
    assert_eq!(proxy.stopped().await, Drained::Complete);
    tokio::time::timeout(PATIENCE, h2c)
        .await
        .expect("the idle h2c connection was left open")
        .unwrap();
    drop(half_head);
}

#[test]
fn a_header_timeout_outside_its_bounds_is_refused() {
    let with = |timeout: Option<&str>| {
        let mut args = vec!["--region", "na"];
        args.extend(
            timeout
                .map(|t| ["--header-timeout", t])
                .into_iter()
                .flatten(),
        );
        settings(&args, app_vars())
    };
    for bad in ["0", "604801"] {
        let err = with(Some(bad)).unwrap_err();
        assert!(err.contains("the header timeout must be between"), "{err}");
    }
    assert_eq!(
        with(Some("5")).unwrap().limits.header_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        with(None).unwrap().limits.header_timeout,
        Duration::from_secs(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains_a_slow_request() {
    let gate = Gate::default();
    let (arrived_tx, arrived) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    *gate.arrived.lock().unwrap() = Some(arrived_tx);
    *gate.release.lock().unwrap() = Some(release_rx);
    let (_emulator, mut proxy, _task) = proxy_to_gate(&gate, &[]).await;

    let request = Request::get(proxy.url("/slow")).body(empty()).unwrap();
    let in_flight = tokio::spawn(plain_client().request(request));
    tokio::time::timeout(PATIENCE, arrived)
        .await
        .expect("the slow request never reached the upstream")
        .unwrap();

    // SIGTERM: the listener closes while the slow request is still upstream.
    proxy.shut_down();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !refuses_connections(proxy.addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting connections after the shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment for a server that would not wait to show it (a correct one waits for the release).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!in_flight.is_finished(), "the in-flight request was cut");
    assert!(
        !proxy.task.as_ref().unwrap().is_finished(),
        "the server stopped with a request in flight"
    );

    // The upstream answers; the client gets the whole answer, then the server stops.
    release.send(()).unwrap();
    let response = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("the drained request never completed")
        .unwrap()
        .unwrap();
    let (parts, body) = read(response).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "finally");
    assert_eq!(proxy.stopped().await, Drained::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded() {
    let gate = Gate::default();
    let (arrived_tx, arrived) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<()>();
    *gate.arrived.lock().unwrap() = Some(arrived_tx);
    *gate.release.lock().unwrap() = Some(release_rx);
    let (_emulator, mut proxy, _task) = proxy_to_gate(&gate, &["--drain-timeout", "1"]).await;

    let request = Request::get(proxy.url("/slow")).body(empty()).unwrap();
    let in_flight = tokio::spawn(plain_client().request(request));
    tokio::time::timeout(PATIENCE, arrived)
        .await
        .unwrap()
        .unwrap();
    proxy.shut_down();
    // The upstream never answers: the server gives up after the drain timeout.
    assert_eq!(proxy.stopped().await, Drained::TimedOut);
    drop(release);
    in_flight.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_upstream_call() {
    let gate = Gate::default();
    let (arrived_tx, arrived) = oneshot::channel();
    let (_release, release_rx) = oneshot::channel::<()>();
    let (abandoned_tx, abandoned) = oneshot::channel();
    *gate.arrived.lock().unwrap() = Some(arrived_tx);
    *gate.release.lock().unwrap() = Some(release_rx);
    *gate.abandoned.lock().unwrap() = Some(abandoned_tx);
    let (_emulator, proxy, _task) = proxy_to_gate(&gate, &[]).await;

    let request = Request::get(proxy.url("/slow")).body(empty()).unwrap();
    let client = tokio::spawn(plain_client().request(request));
    tokio::time::timeout(PATIENCE, arrived)
        .await
        .unwrap()
        .unwrap();
    // The client disconnects: the proxy drops its upstream call, and the upstream sees it go.
    client.abort();
    tokio::time::timeout(PATIENCE, abandoned)
        .await
        .expect("the upstream call outlived its client")
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Headers and streaming, over a scripted upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let gate = Gate::default();
    let (_emulator, proxy, _task) = proxy_to_gate(&gate, &[]).await;

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
                ("x-spapi-restricted-report", "true"),
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
        "x-spapi-restricted-report",
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
async fn the_client_secret_does_not_go_upstream() {
    let gate = Gate::default();
    let emulator = emulator().await;
    let (origin, _task) = gate.clone().start().await;
    let proxy = Running::start(settings_to(
        &origin,
        &emulator,
        &[],
        &[("SPAPI_PROXY_CLIENT_TOKEN", CLIENT_TOKEN)],
    ))
    .await;
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let (parts, _) = proxy
        .get("/headers", &[("authorization", bearer.as_str())])
        .await;
    assert_eq!(parts.status, StatusCode::ACCEPTED);
    let seen = gate.seen.lock().unwrap().pop().unwrap();
    assert!(!seen.contains_key("authorization"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_body_is_streamed() {
    let gate = Gate::default();
    let (first_tx, first_rx) = oneshot::channel();
    *gate.first_piece.lock().unwrap() = Some(first_tx);
    let (_emulator, proxy, _task) = proxy_to_gate(&gate, &[]).await;

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
async fn a_large_response_is_streamed() {
    let gate = Gate::default();
    let (release, release_rx) = oneshot::channel();
    *gate.release_large.lock().unwrap() = Some(release_rx);
    let (_emulator, proxy, _task) = proxy_to_gate(&gate, &[]).await;

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
// Load (smaller than examples/proxy_load's 10,000 requests over 200 connections)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_concurrent_load_every_restricted_call_gets_pii_with_one_token_per_operation() {
    let emulator = emulator().await;
    // A load far above Amazon's plans, against an emulator that enforces none: no pacing.
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--no-usage-plans"],
        &[],
    ))
    .await;
    let templates = [
        ("/orders/v0/orders/", "/address"),
        ("/orders/v0/orders/", "/buyerInfo"),
        ("/mfn/v0/shipments/", ""),
    ];
    let paths: Vec<String> = (0..10)
        .flat_map(|i| {
            templates
                .iter()
                .map(move |(before, after)| format!("{before}902-0000000-{i:07}{after}"))
        })
        .collect();
    let load = driver::Load {
        connections: 40,
        per_connection: 25,
    };
    let outcome = driver::run(proxy.addr, &paths, &[], load).await.unwrap();

    assert_eq!(outcome.count(), 1000);
    assert_eq!(
        outcome.statuses.get(&200),
        Some(&1000),
        "{:?}",
        outcome.statuses
    );
    assert_eq!(outcome.pii_served, 1000);
    let counters = emulator.counters();
    assert_eq!(
        counters.token_calls,
        templates.len() as u64,
        "one per operation"
    );
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.access_tokens_issued, 1);
}

#[test]
fn a_config_error_says_whether_the_file_or_a_setting_is_at_fault() {
    let parse = |args: &[&str]| {
        Args::try_parse_from(std::iter::once("spapi-rdt-proxy").chain(args.iter().copied()))
            .unwrap()
    };
    let missing = parse(&["--config", "/nonexistent/spapi-rdt-proxy.toml"]);
    let err = Settings::load(&missing, Vec::new()).unwrap_err();
    assert!(matches!(err, crate::ConfigError::File(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("/nonexistent/spapi-rdt-proxy.toml"),
        "{err}"
    );
    let plain = parse(&["--upstream", "http://example.com"]);
    let err = Settings::load(&plain, Vec::new()).unwrap_err();
    assert!(matches!(err, crate::ConfigError::Invalid(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Issue 20: what a client must not be able to do through the proxy
// ---------------------------------------------------------------------------------------------

#[test]
fn a_blank_client_secret_refuses_to_start_instead_of_turning_authentication_off() {
    for blank in ["", "   ", "\t"] {
        let mut vars = app_vars();
        vars.push(("SPAPI_PROXY_CLIENT_TOKEN".into(), blank.into()));
        let refused = settings(&["--region", "eu"], vars).unwrap_err();
        assert!(refused.contains("SPAPI_PROXY_CLIENT_TOKEN"), "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_api_is_refused_unless_the_operator_allows_it() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let body = r#"{"restrictedResources":[{"method":"GET","path":"/orders/v0/orders/{orderId}/address"}]}"#;
    let (parts, text) = proxy
        .request(
            Method::POST,
            "/tokens/2021-03-01/restrictedDataToken",
            &[("content-type", "application/json")],
            full(body),
        )
        .await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN, "{text}");
    assert!(!text.contains("Atz.sprdt"), "{text}");
    assert_eq!(emulator.counters().token_calls, 0, "nothing reached Amazon");

    // The operator may opt in.
    let allowed = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--allow-tokens-api"],
        &[],
    ))
    .await;
    let (parts, text) = allowed
        .request(
            Method::POST,
            "/tokens/2021-03-01/restrictedDataToken",
            &[("content-type", "application/json")],
            full(body),
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_methods_sp_api_uses_are_forwarded() {
    let emulator = emulator().await;
    let proxy = proxy_to(&emulator).await;
    let before = emulator.counters();
    for method in ["TRACE", "OPTIONS", "PROPFIND"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (parts, text) = proxy
            .request(
                method.clone(),
                "/sellers/v1/marketplaceParticipations",
                &[],
                empty(),
            )
            .await;
        assert_eq!(
            parts.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}: {text}"
        );
    }
    let after = emulator.counters();
    assert_eq!(
        after.lwa_calls, before.lwa_calls,
        "no LWA token was even fetched"
    );
    assert_eq!(
        after.unrestricted_calls, before.unrestricted_calls,
        "nothing reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upstream_call_shows_no_query_string() {
    let emulator = emulator().await;
    // Held for the whole test: a port let go could be taken by another test's server meanwhile.
    let port = dead_port::dead_port();
    let dead = Origin::parse(&format!("http://127.0.0.1:{}", port.port())).unwrap();
    let proxy = Running::start(settings_to(&dead, &emulator, &[], &[])).await;
    let query = "MarketplaceIds=ATVPDKIKX0DER&BuyerEmail=jane.doe%40example.com";
    // Unrestricted (the upstream call fails) and restricted (the token call fails first).
    for (path, status) in [
        ("/orders/2026-01-01/orders", StatusCode::BAD_GATEWAY),
        ("/orders/v0/orders", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let (parts, text) = proxy.get(&format!("{path}?{query}"), &[]).await;
        assert_eq!(parts.status, status, "{text}");
        assert!(!text.contains("BuyerEmail"), "{text}");
        assert!(!text.contains("jane.doe"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Usage plans
// ---------------------------------------------------------------------------------------------

/// The operation the usage-plan tests call: 2 a second and a burst of 15 in the models, served by
/// the emulator to any report id, and paced on its own bucket.
const GET_REPORT: &str = "Reports 2021-06-30 getReport";

/// The labels of [`GET_REPORT`] in the proxy's metrics.
const GET_REPORT_LABELS: &str = r#"{api="Reports 2021-06-30",operation="getReport"}"#;

fn report_path(i: usize) -> String {
    format!("/reports/2021-06-30/reports/{}", 50_000 + i)
}

/// An emulator that enforces the models' usage plans at Amazon's pace, with `config`'s changes.
async fn enforcing(config: EmulatorConfig) -> Emulator {
    Emulator::start_with(
        config
            .seller("seller-b", SELLER_B_REFRESH)
            .usage_plans(true),
    )
    .await
    .unwrap()
}

/// `n` getReport calls at once, each on a connection of its own, as a client that knows nothing of
/// quotas sends them: their statuses.
async fn burst(proxy: &Running, n: usize) -> Vec<StatusCode> {
    join_all((0..n).map(|i| async move { proxy.get(&report_path(i), &[]).await.0.status })).await
}

/// `n` getReport calls one after the other: their statuses.
async fn one_by_one(proxy: &Running, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..n {
        statuses.push(proxy.get(&report_path(i), &[]).await.0.status);
    }
    statuses
}

fn count(statuses: &[StatusCode], status: StatusCode) -> u64 {
    statuses.iter().filter(|s| **s == status).count() as u64
}

/// 17 calls of getReport (burst 15, 2 a second): two more than Amazon's bucket holds.
const BURST: usize = 17;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_a_client_that_knows_no_quota_meets_no_429_unless_usage_plans_are_off() {
    // Paced (the default): 13 go at once (two of the burst kept in reserve), 4 wait their turn.
    let emulator = enforcing(EmulatorConfig::default()).await;
    let proxy = proxy_to(&emulator).await;
    let statuses = burst(&proxy, BURST).await;
    assert_eq!(
        count(&statuses, StatusCode::OK),
        BURST as u64,
        "{statuses:?}"
    );
    let counters = emulator.counters();
    assert_eq!(counters.quota_exceeded, 0);
    assert_eq!(counters.admitted(GET_REPORT), BURST as u64);

    // The same burst with --no-usage-plans: Amazon's bucket runs dry.
    let emulator = enforcing(EmulatorConfig::default()).await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--no-usage-plans"],
        &[],
    ))
    .await;
    let statuses = burst(&proxy, BURST).await;
    let (ok, throttled) = (
        count(&statuses, StatusCode::OK),
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(ok + throttled, BURST as u64, "{statuses:?}");
    // Two past the burst, less any request the bucket refilled (one each half second) while the
    // burst arrived.
    assert!((1..=2).contains(&throttled), "{statuses:?}");
    let counters = emulator.counters();
    assert_eq!(counters.quota_exceeded, throttled);
    assert_eq!(counters.admitted(GET_REPORT), ok);
    // Nothing paced, and no usage-plan metrics.
    assert!(proxy.app.pacing().is_none());
    let metrics = proxy.metrics().await;
    assert!(
        !metrics.keys().any(|name| name.contains("usage_plan")),
        "{metrics:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_in_fleet_mode_share_usage_plan_buckets() {
    let Some(redis) = redis_server::Redis::any() else {
        return;
    };
    // getReport at 20 a second (the emulator 10x faster than Amazon; the sidecars told the
    // same), burst 15: 3 sidecars × 9 calls at once.
    let sidecars = |emulator: &Emulator, fleet: bool| {
        let emulator_origin = emulator.origin();
        (0..3)
            .map(|_| {
                let mut settings = settings_to(
                    &emulator_origin,
                    emulator,
                    &["--usage-plan", "Reports 2021-06-30 getReport=20/15"],
                    &[],
                );
                if fleet {
                    settings.fleet = Some(config::FleetSettings {
                        redis_url: redis.url().to_owned(),
                        key_hex: "5a".repeat(32),
                        key_prefix: Some(redis.prefix().to_owned()),
                        cluster: false,
                        ca_pem: None,
                        replicas: 3,
                    });
                }
                settings
            })
            .collect::<Vec<_>>()
    };
    let run = |proxies: Vec<Running>| async move {
        let statuses = join_all(proxies.iter().map(|proxy| burst(proxy, 9))).await;
        (statuses.concat(), proxies)
    };

    // Each pacing alone: together they send three times the burst at once.
    let emulator = enforcing(EmulatorConfig::default().usage_plan_time_scale(10.0)).await;
    let mut alone = Vec::new();
    for settings in sidecars(&emulator, false) {
        alone.push(Running::start(settings).await);
    }
    let (_, _alone) = run(alone).await;
    assert!(
        emulator.counters().quota_exceeded > 0,
        "{:?}",
        emulator.counters()
    );

    // Sharing their buckets through Redis: no 429 from Amazon, every call served.
    let emulator = enforcing(EmulatorConfig::default().usage_plan_time_scale(10.0)).await;
    let mut shared = Vec::new();
    for settings in sidecars(&emulator, true) {
        shared.push(Running::start(settings).await);
    }
    let (statuses, shared) = run(shared).await;
    assert_eq!(count(&statuses, StatusCode::OK), 27, "{statuses:?}");
    assert_eq!(emulator.counters().quota_exceeded, 0);
    assert_eq!(emulator.counters().admitted(GET_REPORT), 27);
    for proxy in &shared {
        let metrics = proxy.metrics().await;
        assert_eq!(metrics["spapi_proxy_usage_plan_fleet_fallbacks_total"], 0.0);
        assert_eq!(metrics["spapi_proxy_usage_plan_fleet_alone"], 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_plan_metrics_show_the_waits_the_stated_rate_and_the_buckets() {
    let emulator = enforcing(EmulatorConfig::default()).await;
    let proxy = proxy_to(&emulator).await;
    let before = proxy.metrics().await;
    assert_eq!(before["spapi_proxy_usage_plan_buckets"], 0.0);
    assert_eq!(before["spapi_proxy_usage_plan_unpaced_total"], 0.0);

    let statuses = burst(&proxy, BURST).await;
    assert_eq!(
        count(&statuses, StatusCode::OK),
        BURST as u64,
        "{statuses:?}"
    );
    assert_eq!(emulator.counters().quota_exceeded, 0);

    let after = proxy.metrics().await;
    let metric = |name: &str| {
        after
            .get(&format!("spapi_proxy_{name}{GET_REPORT_LABELS}"))
            .copied()
    };
    let stats = proxy.app.pacing().unwrap().stats();
    assert_eq!(stats.paced, BURST as u64);
    // The calls past the 13 of the usable burst waited (fewer only if the burst took longer than
    // a refill to arrive), and the metric counts what the layer counted.
    let waits = metric("usage_plan_waits_total").unwrap_or(0.0);
    assert!((1.0..=4.0).contains(&waits), "{after:#?}");
    assert_eq!(waits, stats.waited as f64);
    let seconds = metric("usage_plan_wait_seconds_total").unwrap();
    assert!(seconds > 0.0 && seconds <= waits * 60.0, "{seconds}");
    // The emulator, at Amazon's pace, states the model's rate.
    assert_eq!(metric("usage_plan_stated_rate"), Some(2.0));
    // Nothing throttled, retried or refused.
    for name in [
        "usage_plan_throttled_total",
        "usage_plan_retries_total",
        "usage_plan_refused_total",
    ] {
        assert_eq!(metric(name), None, "{name}");
    }
    // One seller, one upstream, one operation: one bucket; nothing went unpaced.
    assert_eq!(after["spapi_proxy_usage_plan_buckets"], 1.0);
    assert_eq!(after["spapi_proxy_usage_plan_unpaced_total"], 0.0);
    assert_eq!(
        after.get(
            r#"spapi_proxy_requests_total{api="Reports 2021-06-30",operation="getReport",status="200"}"#
        ),
        Some(&(BURST as f64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_from_amazon_is_retried_at_the_next_slot_and_counted() {
    use spapi_rdt_emulator::{Endpoint, Fault};
    let emulator = enforcing(EmulatorConfig::default()).await;
    let proxy = proxy_to(&emulator).await;
    // Another application of the seller spent the quota: Amazon answers the next call 429.
    emulator.inject(
        Endpoint::Unrestricted,
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
        1,
    );
    let (parts, body) = proxy.get(&report_path(0), &[]).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    let counters = emulator.counters();
    assert_eq!(counters.faults_injected, 1);
    assert_eq!(counters.admitted(GET_REPORT), 1, "sent again, and served");

    let metrics = proxy.metrics().await;
    let metric = |name: &str| {
        metrics
            .get(&format!("spapi_proxy_{name}{GET_REPORT_LABELS}"))
            .copied()
    };
    assert_eq!(metric("usage_plan_throttled_total"), Some(1.0));
    assert_eq!(metric("usage_plan_retries_total"), Some(1.0));
    assert_eq!(metric("usage_plan_stated_rate"), Some(2.0));
    // The retry waited for the emptied bucket's next slot.
    assert_eq!(metric("usage_plan_waits_total"), Some(1.0));
    let stats = proxy.app.pacing().unwrap().stats();
    assert_eq!((stats.throttled, stats.retries), (1, 1));
}

/// `getReport` at one call every 20 s and a burst of 5, of which the proxy keeps 2 in reserve: 3
/// calls go at once, and the 4th would wait 20 s.
const SLOW_PLAN: &str = "Reports 2021-06-30 getReport=0.05/5";

/// An emulator that enforces [`SLOW_PLAN`] on getReport.
async fn slow_get_report() -> Emulator {
    let plan = spapi_rdt::catalog::UsagePlan::new(0.05, 5).unwrap();
    enforcing(EmulatorConfig::default().usage_plan(GET_REPORT, plan)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_its_plan_would_hold_too_long_gets_429_with_retry_after_and_is_not_sent() {
    let emulator = slow_get_report().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--usage-plan", SLOW_PLAN, "--usage-plan-max-wait", "5"],
        &[],
    ))
    .await;
    assert_eq!(one_by_one(&proxy, 3).await, [StatusCode::OK; 3]);

    let wait = regex::Regex::new(r"would hold this call \d+\.\d s").unwrap();
    for i in 3..5 {
        let path = format!(
            "{}?MarketplaceIds=X&BuyerEmail=jane.doe%40example.com",
            report_path(i)
        );
        let (parts, body) = proxy.get(&path, &[]).await;
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let retry_after: u64 = header(&parts, "retry-after").unwrap().parse().unwrap();
        // The next slot is 20 s after the first call, rounded up to a whole second.
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        assert_eq!(header(&parts, "content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "QuotaExceeded", "{body}");
        let message = json["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(GET_REPORT), "{message}");
        assert!(wait.is_match(message), "{message}");
        assert!(
            message.contains(&format!("retry after {retry_after} s")),
            "{message}"
        );
        for secret in [
            "BuyerEmail",
            "jane.doe",
            emulator.client_secret(),
            SELLER_B_REFRESH,
        ] {
            assert!(!body.contains(secret), "{body}");
        }
    }
    let counters = emulator.counters();
    assert_eq!(
        counters.unrestricted_calls, 3,
        "the refused calls were not sent"
    );
    assert_eq!(counters.admitted(GET_REPORT), 3);
    assert_eq!(counters.quota_exceeded, 0);

    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.get(&format!(
            "spapi_proxy_usage_plan_refused_total{GET_REPORT_LABELS}"
        )),
        Some(&2.0),
        "{metrics:#?}"
    );
    assert_eq!(
        metrics.get(
            r#"spapi_proxy_requests_total{api="Reports 2021-06-30",operation="getReport",status="429"}"#
        ),
        Some(&2.0)
    );
    assert_eq!(proxy.app.pacing().unwrap().stats().refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_override_from_the_flag_or_the_file_sets_the_pace() {
    // The model's plan (burst 15) lets 5 calls go at once; the override (burst 5) lets 3 go and
    // refuses the others, whose wait would be 20 s.
    let emulator = slow_get_report().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--usage-plan-max-wait", "5"],
        &[],
    ))
    .await;
    assert_eq!(one_by_one(&proxy, 5).await, [StatusCode::OK; 5]);

    let paced_by_override = [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::TOO_MANY_REQUESTS,
    ];
    let emulator = slow_get_report().await;
    let proxy = Running::start(settings_to(
        &emulator.origin(),
        &emulator,
        &["--usage-plan", SLOW_PLAN, "--usage-plan-max-wait", "5"],
        &[],
    ))
    .await;
    assert_eq!(one_by_one(&proxy, 5).await, paced_by_override);
    assert_eq!(emulator.counters().admitted(GET_REPORT), 3);

    // The same from the config file.
    let emulator = slow_get_report().await;
    let file = FileConfig::parse(
        r#"
        [usage_plans]
        max_wait_secs = 5
        [usage_plans.plans]
        "Reports 2021-06-30 getReport" = { rate = 0.05, burst = 5 }
        "#,
        "test.toml",
    )
    .unwrap();
    let proxy = Running::start(settings_with_file(&emulator, file)).await;
    assert_eq!(one_by_one(&proxy, 5).await, paced_by_override);
    assert_eq!(emulator.counters().admitted(GET_REPORT), 3);
    assert_eq!(emulator.counters().quota_exceeded, 0);
}

#[test]
fn usage_plan_settings_come_from_flags_and_file_and_bad_ones_refuse_to_start() {
    let eu = |more: &[&str]| {
        let mut args = vec!["--region", "eu"];
        args.extend_from_slice(more);
        settings(&args, app_vars())
    };
    let plan = |api: &'static str, operation: &'static str, rate: f64, burst: u32| {
        (api, operation, rate, burst)
    };
    let overrides = |settings: &Settings| -> Vec<(&'static str, &'static str, f64, u32)> {
        settings
            .usage_plans
            .overrides
            .iter()
            .map(|o| (o.api, o.operation, o.plan.rate_per_second(), o.plan.burst()))
            .collect()
    };

    // On by default, a minute at most, the models' plans.
    let defaults = eu(&[]).unwrap();
    assert!(defaults.usage_plans.enabled);
    assert_eq!(defaults.usage_plans.max_wait, Duration::from_secs(60));
    assert!(defaults.usage_plans.overrides.is_empty());

    let flags = eu(&[
        "--no-usage-plans",
        "--usage-plan-max-wait",
        "5",
        "--usage-plan",
        "Orders v0 getOrder=1.5/40",
        "--usage-plan",
        "Orders v0 getOrder=2/50",
    ])
    .unwrap();
    assert!(!flags.usage_plans.enabled);
    assert_eq!(flags.usage_plans.max_wait, Duration::from_secs(5));
    // The last flag for an operation wins.
    assert_eq!(overrides(&flags), [plan("Orders v0", "getOrder", 2.0, 50)]);

    // The file, with a flag winning over it for the same operation.
    let file = FileConfig::parse(
        r#"
        region = "eu"
        [usage_plans]
        enabled = false
        max_wait_secs = 7
        [usage_plans.plans]
        "Orders v0 getOrder" = { rate = 0.5, burst = 30 }
        "Orders v0 getOrderItems" = { rate = 1, burst = 10 }
        "#,
        "test.toml",
    )
    .unwrap();
    let args = Args::try_parse_from(["spapi-rdt-proxy", "--usage-plan", "Orders v0 getOrder=3/60"])
        .unwrap();
    let merged = Settings::resolve(&args, file, app_vars()).unwrap();
    assert!(!merged.usage_plans.enabled);
    assert_eq!(merged.usage_plans.max_wait, Duration::from_secs(7));
    let mut got = overrides(&merged);
    got.sort_by(|a, b| a.1.cmp(b.1));
    assert_eq!(
        got,
        [
            plan("Orders v0", "getOrder", 3.0, 60),
            plan("Orders v0", "getOrderItems", 1.0, 10),
        ]
    );

    // A bad flag refuses to start, naming the flag and its value.
    for (value, why) in [
        ("Orders v0 getOrdr=0.5/30", "names no operation"),
        ("getOrder=0.5/30", "names no operation"),
        ("Orders v0 getOrder=0/30", "rate"),
        ("Orders v0 getOrder=NaN/30", "rate"),
        ("Orders v0 getOrder=-0.5/30", "rate"),
        ("Orders v0 getOrder=inf/30", "rate"),
        ("Orders v0 getOrder=0.5/0", "burst"),
        ("Orders v0 getOrder=0.5/-1", "OPERATION=RATE/BURST"),
        ("Orders v0 getOrder=0.5", "OPERATION=RATE/BURST"),
        ("Orders v0 getOrder", "OPERATION=RATE/BURST"),
    ] {
        let refused = eu(&["--usage-plan", value]).unwrap_err();
        assert!(
            refused.contains(&format!("--usage-plan \"{value}\"")) && refused.contains(why),
            "{value}: {refused}"
        );
    }
    // A bad key of the file too, naming the key.
    for (line, why) in [
        (
            r#""Orders v0 getOrdr" = { rate = 0.5, burst = 30 }"#,
            "names no operation",
        ),
        (
            r#""Orders v0 getOrder" = { rate = 0.0, burst = 30 }"#,
            "rate",
        ),
        (
            r#""Orders v0 getOrder" = { rate = nan, burst = 30 }"#,
            "rate",
        ),
        (
            r#""Orders v0 getOrder" = { rate = -0.5, burst = 30 }"#,
            "rate",
        ),
        (
            r#""Orders v0 getOrder" = { rate = 0.5, burst = 0 }"#,
            "burst",
        ),
    ] {
        let refused = from_file(
            &format!("region = \"eu\"\n[usage_plans.plans]\n{line}"),
            app_vars(),
        )
        .unwrap_err();
        assert!(
            refused.contains("usage_plans.plans.") && refused.contains(why),
            "{line}: {refused}"
        );
    }
    // A negative burst, or a key the table does not have, is not a file of the expected shape.
    let negative = FileConfig::parse(
        "[usage_plans.plans]\n\"Orders v0 getOrder\" = { rate = 0.5, burst = -1 }",
        "t",
    )
    .unwrap_err();
    assert!(negative.contains("burst"), "{negative}");
    let unknown = FileConfig::parse("[usage_plans]\nmax_wait = 5", "t").unwrap_err();
    assert!(unknown.contains("max_wait"), "{unknown}");

    // The longest wait is bounded like the other durations, and by the layer's day.
    for bad in ["0", "86401"] {
        let refused = eu(&["--usage-plan-max-wait", bad]).unwrap_err();
        assert!(refused.contains("--usage-plan-max-wait"), "{refused}");
    }
    let refused = from_file(
        "region = \"eu\"\n[usage_plans]\nmax_wait_secs = 0",
        app_vars(),
    )
    .unwrap_err();
    assert!(refused.contains("usage_plans.max_wait_secs"), "{refused}");
    assert!(eu(&["--usage-plan-max-wait", "86400"]).is_ok());
}

//! The layer with `SpApiTokenSource` against the SP-API emulator: the whole stack (recovery layer,
//! token layer, hyper's HTTP client) over real loopback sockets.
//!
//! Real sockets need real time (tokio's paused clock would fire every timeout at once), so every
//! test runs on the wall clock with small timeouts, and `guard` fails a test that hangs. The upper
//! bounds on elapsed time are hang guards, not timing targets.
#![cfg(feature = "reqwest")]

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::catalog::{Catalog, PathKind, RestrictedOperation};
use spapi_rdt::control::{RestrictedReport, Strategy};
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, RestrictedDataTokenLayerBuilder, SellerId,
    SpApiTokenSource, SpApiTokenSourceBuilder, TokenQuota, error::Error, error::ErrorKind,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

/// Order (or shipment, or purchase order, or document) ids: each operation is called for each.
const IDS: [&str; 3] = [
    "902-3159896-1390916",
    "113-6740393-2451453",
    "026-1520163-6049104",
];

/// The client stack under test, request bodies as `Bytes` (hyper gets them as `Full<Bytes>`).
type HttpStack = BoxCloneService<Request<Bytes>, http::Response<hyper::body::Incoming>, BoxError>;

/// What came back from one call.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// The emulator's `x-emulator-pii`: `served` or `withheld` (absent on errors).
    pii: Option<String>,
    /// The emulator's `x-emulator-seller`: whose token the call was made with.
    seller: Option<String>,
    body: Bytes,
}

impl Answer {
    fn served(&self) -> bool {
        self.status == StatusCode::OK && self.pii.as_deref() == Some("served")
    }
}

/// An emulator, a source pointed at it, and the layer in front of a real HTTP client.
struct Stack {
    em: Emulator,
    source: SpApiTokenSource,
    layer: RestrictedDataTokenLayer,
    client: HttpStack,
}

/// The source's defaults in these tests: short enough that no test can hang for long.
fn source_builder(em: &Emulator) -> SpApiTokenSourceBuilder {
    // The client the builder would make, minus proxies from the environment (which reqwest would
    // use even for loopback): the tests talk to the emulator only.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    SpApiTokenSource::builder()
        .http_client(http)
        .lwa_url(em.lwa_url())
        .request_timeout(Duration::from_secs(2))
}

/// `seller`'s credentials as the emulator knows them.
fn credentials(em: &Emulator, seller: &str) -> LwaCredentials {
    LwaCredentials::new(
        em.client_id(),
        em.client_secret(),
        em.refresh_token(seller).unwrap(),
    )
}

impl Stack {
    /// The default seller's source, the layer configured by `configure`.
    fn new(
        em: Emulator,
        configure: impl FnOnce(RestrictedDataTokenLayerBuilder) -> RestrictedDataTokenLayerBuilder,
    ) -> Stack {
        let source = source_builder(&em)
            .credentials(credentials(&em, SellerId::DEFAULT_NAME))
            .build()
            .unwrap();
        Stack::with_source(em, source, configure)
    }

    fn with_source(
        em: Emulator,
        source: SpApiTokenSource,
        configure: impl FnOnce(RestrictedDataTokenLayerBuilder) -> RestrictedDataTokenLayerBuilder,
    ) -> Stack {
        let builder = RestrictedDataTokenLayer::builder(source.clone())
            .allow_origin(em.origin())
            .wait_timeout(Duration::from_secs(10))
            .fetch_timeout(Duration::from_secs(10))
            .retry_base(Duration::from_millis(50));
        let layer = configure(builder).build().unwrap();
        let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let client = ServiceBuilder::new()
            .layer(layer.recover_stale_tokens())
            .layer(layer.clone())
            // The recovery layer replays `Bytes` bodies; hyper wants an `http_body::Body`.
            .map_request(|request: Request<Bytes>| request.map(Full::new))
            .service(http);
        Stack {
            em,
            source,
            layer,
            client: BoxCloneService::new(client),
        }
    }

    /// A request as an application sends every SP-API call: with `seller`'s LWA access token (the
    /// layer puts an RDT in its place on restricted calls) and the seller in the extensions.
    async fn request(&self, method: Method, path: &str, seller: &SellerId) -> Request<Bytes> {
        let lwa = self.source.lwa_access_token(seller).await.unwrap();
        let mut request = self.bare_request(method, path);
        request
            .headers_mut()
            .insert("x-amz-access-token", lwa.header_value().clone());
        request.extensions_mut().insert(seller.clone());
        request
    }

    /// A request without any access token.
    fn bare_request(&self, method: Method, path: &str) -> Request<Bytes> {
        let body = if method == Method::GET || method == Method::DELETE {
            Bytes::new()
        } else {
            Bytes::from_static(b"{}")
        };
        Request::builder()
            .method(method)
            .uri(self.em.url(path))
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Answer, BoxError> {
        let response = self.client.clone().oneshot(request).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, pii, seller) = (
            response.status(),
            header("x-emulator-pii"),
            header("x-emulator-seller"),
        );
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            pii,
            seller,
            body,
        })
    }

    /// Calls `op` for `id` as the default seller.
    async fn call(&self, op: &RestrictedOperation, id: &str) -> Result<Answer, BoxError> {
        self.call_as(op, id, &SellerId::default()).await
    }

    async fn call_as(
        &self,
        op: &RestrictedOperation,
        id: &str,
        seller: &SellerId,
    ) -> Result<Answer, BoxError> {
        let mut request = self
            .request(op.method().clone(), &path_for(op, id), seller)
            .await;
        if op.path_kind() == PathKind::SpecificOnly {
            // getReportDocument: the caller knows its document is of a restricted report type.
            request.extensions_mut().insert(RestrictedReport);
        }
        self.send(request).await
    }
}

/// A real path of `op` for `id`: every placeholder filled with it (a template without
/// placeholders gets `id` as a query parameter, which the layer ignores).
fn path_for(op: &RestrictedOperation, id: &str) -> String {
    let template = op.template();
    if !template.contains('{') {
        return format!("{template}?nextToken={id}");
    }
    template
        .split('/')
        .map(|s| if s.starts_with('{') { id } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn op(api: &str, name: &str) -> RestrictedOperation {
    Catalog::amazon().find(api, name).unwrap().clone()
}

fn address() -> RestrictedOperation {
    op("Orders v0", "getOrderAddress")
}

/// The layer's error inside a service error.
fn layer_error(err: &BoxError) -> &Error {
    err.downcast_ref::<Error>()
        .unwrap_or_else(|| panic!("not the layer's error: {err}"))
}

/// Fails the test if `future` takes more than `secs` seconds: a hang guard, not a timing target.
async fn guard<T>(secs: u64, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("hung: not done within {secs} s"))
}

#[tokio::test]
async fn every_restricted_operation_gets_pii_with_one_token_call_per_template() {
    // Amazon's quota (1/s, burst 10) would make 34 token calls take ~24 s. Raise it in both places
    // alike: the emulator enforces it, and the layer must keep under the quota it is told, so
    // raising only the emulator's would prove nothing about the limiter and raising only the
    // layer's would end in 429s.
    let (rate, burst) = (50.0, 50);
    let em = Emulator::start_with(EmulatorConfig::default().token_quota(rate, burst))
        .await
        .unwrap();
    let stack = Stack::new(em, |b| b.quota(TokenQuota::new(rate, burst).unwrap()));
    let catalog = Catalog::amazon();
    let ops = catalog.operations();
    assert_eq!(ops.len(), 32);
    // The emulator serves cancelShipmentOld (PUT .../cancel, no longer in Amazon's model) like
    // the others: nothing is skipped.
    assert!(ops.iter().any(|o| o.name() == "cancelShipmentOld"));
    let generic = ops
        .iter()
        .filter(|o| o.path_kind() == PathKind::Generic)
        .count();
    let specific = ops.len() - generic;

    let started = Instant::now();
    let st = &stack;
    let calls = ops
        .iter()
        .flat_map(|op| IDS.iter().map(move |id| (op, *id)))
        .map(|(op, id)| async move { (op, id, st.call(op, id).await) });
    let answers = guard(30, join_all(calls)).await;
    let first_round = started.elapsed();
    for (op, id, answer) in &answers {
        let answer = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{} {}: {e}", op.api(), op.name()));
        assert!(
            answer.served(),
            "{} {} for {id}: {answer:?}",
            op.api(),
            op.name()
        );
        assert_eq!(answer.seller.as_deref(), Some(SellerId::DEFAULT_NAME));
    }

    // One token per generic template for every id, and one per report document.
    let token_calls = (generic + specific * IDS.len()) as u64;
    let counters = stack.em.counters();
    assert_eq!(counters.token_calls, token_calls);
    assert_eq!(counters.rdts_issued, token_calls);
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.pii_served, answers.len() as u64);
    assert_eq!(
        (counters.pii_withheld, counters.restricted_forbidden),
        (0, 0)
    );
    assert_eq!(counters.lwa_calls, 1, "one LWA token serves every call");
    assert_eq!(stack.layer.stats().fetches, token_calls);

    // A second round, new ids for the generic operations, a known document: all from the cache.
    let before = stack.layer.stats();
    let started = Instant::now();
    for op in ops {
        let id = if op.path_kind() == PathKind::Generic {
            "171-0000000-0000004"
        } else {
            IDS[0]
        };
        let answer = guard(10, stack.call(op, id)).await.unwrap();
        assert!(answer.served(), "{}: {answer:?}", op.name());
    }
    let second_round = started.elapsed();
    let counters = stack.em.counters();
    assert_eq!(counters.token_calls, token_calls);
    assert_eq!(counters.pii_served, (answers.len() + ops.len()) as u64);
    let stats = stack.layer.stats();
    assert_eq!(stats.hits - before.hits, ops.len() as u64, "{stats:?}");
    assert_eq!(stats.misses, before.misses);
    println!(
        "{} calls of {} operations: {} token calls, {} LWA call; first round (concurrent) {first_round:?}, \
         second round (sequential, cached) {second_round:?}; {stats:?}",
        answers.len() + ops.len(),
        ops.len(),
        counters.token_calls,
        counters.lwa_calls,
    );
}

#[tokio::test]
async fn every_restricted_operation_with_the_bundle_strategy_and_amazons_quota() {
    let em = Emulator::start().await.unwrap();
    let stack = Stack::new(em, |b| b.strategy(Strategy::Bundle));
    let ops = Catalog::amazon().operations().to_vec();
    let generic = ops
        .iter()
        .filter(|o| o.path_kind() == PathKind::Generic)
        .count();
    let documents = ops.len() - generic;

    let started = Instant::now();
    let st = &stack;
    let calls = ops
        .iter()
        .flat_map(|op| IDS.iter().map(move |id| (op, *id)))
        .map(|(op, id)| async move { (op, id, st.call(op, id).await) });
    for (op, id, answer) in guard(30, join_all(calls)).await {
        let answer = answer.unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        assert!(answer.served(), "{} for {id}: {answer:?}", op.name());
    }
    let elapsed = started.elapsed();
    // One bundle (at most 50 operations a token request) for every generic operation, and one
    // token per report document.
    let bundles = generic.div_ceil(50);
    let counters = stack.em.counters();
    assert_eq!(
        counters.token_calls,
        (bundles + documents * IDS.len()) as u64
    );
    assert_eq!(counters.throttled, 0);
    assert_eq!(counters.pii_served, (ops.len() * IDS.len()) as u64);
    println!(
        "bundle: {} calls, {} token calls in {elapsed:?}",
        counters.pii_served, counters.token_calls
    );
}

/// `count` generic templates called at once, one id each, through a layer with `quota` and
/// `margin` against an emulator with Amazon's quota. Returns the stack and how long the burst took.
async fn burst(count: usize, quota: TokenQuota, margin: Duration) -> (Stack, Duration) {
    let em = Emulator::start().await.unwrap();
    let stack = Stack::new(em, |b| b.quota(quota).rate_margin(margin));
    let ops: Vec<_> = Catalog::amazon()
        .operations()
        .iter()
        .filter(|o| o.path_kind() == PathKind::Generic)
        .take(count)
        .cloned()
        .collect();
    assert_eq!(ops.len(), count);
    // The LWA token first, as the application does: the burst is of token calls only.
    stack
        .source
        .lwa_access_token(&SellerId::default())
        .await
        .unwrap();
    let started = Instant::now();
    let answers = guard(30, join_all(ops.iter().map(|op| stack.call(op, IDS[0])))).await;
    let elapsed = started.elapsed();
    for (op, answer) in ops.iter().zip(&answers) {
        let answer = answer.as_ref().unwrap();
        assert!(answer.served(), "{}: {answer:?}", op.name());
    }
    (stack, elapsed)
}

#[tokio::test]
async fn a_burst_of_fifteen_templates_with_amazons_quota_waits_for_the_limiter() {
    // Amazon's quota on both sides: 10 token calls at once, then one a second. The margin is
    // 400 ms here, not the default 100 ms: the emulator's clock starts when a call arrives and the
    // layer's when it leaves, so the first call after the burst meets a 429 whenever the burst's
    // first call took longer to arrive than it did by more than the margin, which a busy 2-core
    // machine manages with 100 ms. What is checked is the same: the layer's limiter, margin added,
    // keeps the calls under the server's quota.
    let quota = TokenQuota::default();
    let margin = Duration::from_millis(400);
    let (stack, elapsed) = burst(15, quota, margin).await;
    let counters = stack.em.counters();
    let stats = stack.layer.stats();
    println!(
        "15 templates, Amazon's quota in the layer: {} token calls, {} throttled, {} fetches waited for the limiter, {elapsed:?}",
        counters.token_calls, counters.throttled, stats.rate_limit_waits
    );
    let beyond_burst = 15 - u64::from(quota.burst());
    // Without the limiter, every call beyond the burst would meet a 429. With it, the layer waits
    // for its own limiter instead, spacing calls by the quota plus its default 100 ms margin (at
    // exactly the quota, measured on loopback, the first call after the burst met a 429 in 1 of 15:
    // the layer's clock starts when a call leaves, Amazon's when it arrives).
    assert_eq!(counters.throttled, 0, "{counters:?}");
    assert_eq!(counters.token_calls, 15);
    assert_eq!(stats.rate_limit_waits, beyond_burst, "{stats:?}");
    assert_eq!(stats.fetch_errors, 0);
    // The margin is spent: the 15th call leaves 5 x (1 s + 400 ms) after the first.
    let floor = (Duration::from_secs(1) + margin) * u32::try_from(beyond_burst).unwrap();
    assert!(elapsed >= floor, "{elapsed:?}");
}

#[tokio::test]
async fn a_layer_quota_just_under_amazons_makes_no_429() {
    // 20% under Amazon's rate: each call after the burst leaves 0.25 s or more after the server's
    // bucket would take it, far more than a cold call's latency exceeds a warm one's on loopback.
    let quota = TokenQuota::new(0.8, 10).unwrap();
    let (stack, elapsed) = burst(13, quota, Duration::from_millis(100)).await;
    let counters = stack.em.counters();
    let stats = stack.layer.stats();
    println!(
        "13 templates, 0.8/s in the layer: {} token calls, {} throttled, {} fetches waited for the limiter, {elapsed:?}",
        counters.token_calls, counters.throttled, stats.rate_limit_waits
    );
    assert_eq!(counters.throttled, 0, "{counters:?}");
    assert_eq!(counters.token_calls, 13);
    assert_eq!(
        stats.rate_limit_waits,
        13 - u64::from(quota.burst()),
        "{stats:?}"
    );
}

#[tokio::test]
async fn two_sellers_get_tokens_of_their_own() {
    let em =
        Emulator::start_with(EmulatorConfig::default().seller("A2EUQ1WTGCTBG2", "Atzr|seller-b"))
            .await
            .unwrap();
    let (a, b) = (SellerId::default(), SellerId::new("A2EUQ1WTGCTBG2"));
    let source = source_builder(&em)
        .credentials(credentials(&em, a.as_str()))
        .seller(b.clone(), credentials(&em, b.as_str()))
        .build()
        .unwrap();
    let stack = Stack::with_source(em, source, |builder| builder);
    let ops = [
        address(),
        op("Orders v0", "getOrderBuyerInfo"),
        op("Merchant Fulfillment v0", "getShipment"),
    ];
    let mut calls = Vec::new();
    let st = &stack;
    for seller in [&a, &b] {
        for op in &ops {
            for id in &IDS[..2] {
                calls.push(async move { (seller, st.call_as(op, id, seller).await) });
            }
        }
    }
    for (seller, answer) in guard(20, join_all(calls)).await {
        let answer = answer.unwrap();
        assert!(answer.served(), "{answer:?}");
        assert_eq!(answer.seller.as_deref(), Some(seller.as_str()));
    }
    let counters = stack.em.counters();
    assert_eq!(counters.token_calls_for(a.as_str()), ops.len() as u64);
    assert_eq!(counters.token_calls_for(b.as_str()), ops.len() as u64);
    assert_eq!(counters.token_calls, 2 * ops.len() as u64);
    assert_eq!(counters.lwa_calls, 2, "one LWA token per seller");

    // The seller's own LWA token on an unrestricted call reaches the same seller.
    let request = stack
        .request(Method::GET, "/sellers/v1/marketplaceParticipations", &b)
        .await;
    let answer = stack.send(request).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.seller.as_deref(), Some(b.as_str()));
    assert_eq!(stack.em.counters().token_calls, 2 * ops.len() as u64);
}

#[tokio::test]
async fn a_denied_resource_is_a_permanent_typed_error_with_the_cure() {
    let em = Emulator::start().await.unwrap();
    em.deny_resource(Method::GET, "/orders/v0/orders/{orderId}/address");
    let stack = Stack::new(em, |b| b);
    let lwa = stack
        .source
        .lwa_access_token(&SellerId::default())
        .await
        .unwrap();

    let started = Instant::now();
    let err = guard(10, stack.call(&address(), IDS[0])).await.unwrap_err();
    let elapsed = started.elapsed();
    let err = layer_error(&err);
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let source = err.source_error().expect("the source's error");
    assert_eq!(source.kind(), ErrorKind::Permanent);
    assert_eq!(source.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(source.code(), Some("InvalidInput"));
    assert_eq!(source.attempts(), 1, "a permanent error is not retried");
    let cure = source.cure().expect("a cure");
    assert!(cure.contains("authorize the application again"), "{cure}");
    assert!(
        source
            .message()
            .contains("/orders/v0/orders/{orderId}/address")
    );
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(lwa.expose()),
        "the LWA token leaked: {shown}"
    );
    println!("denied resource: failed in {elapsed:?}: {err}");

    // The failure is remembered: the next call fails at once, without a token call.
    let err = stack.call(&address(), IDS[1]).await.unwrap_err();
    assert_eq!(
        layer_error(&err).source_error().unwrap().code(),
        Some("InvalidInput")
    );
    let counters = stack.em.counters();
    assert_eq!(counters.token_calls, 1);
    assert_eq!(
        counters.restricted_calls, 0,
        "no call went out without its token"
    );

    // Other operations are not affected.
    let answer = stack
        .call(&op("Orders v0", "getOrderBuyerInfo"), IDS[0])
        .await
        .unwrap();
    assert!(answer.served(), "{answer:?}");
}

#[tokio::test]
async fn an_invalid_refresh_token_is_a_permanent_error_naming_the_cure() {
    let em = Emulator::start().await.unwrap();
    let refresh = "Atzr|revoked-by-the-seller";
    let source = source_builder(&em)
        .credentials(LwaCredentials::new(
            em.client_id(),
            em.client_secret(),
            refresh,
        ))
        .build()
        .unwrap();
    let stack = Stack::with_source(em, source, |b| b);
    let request = stack.bare_request(Method::GET, &path_for(&address(), IDS[0]));
    let err = guard(10, stack.send(request)).await.unwrap_err();
    let err = layer_error(&err);
    let source = err.source_error().expect("the source's error");
    assert_eq!(source.kind(), ErrorKind::Permanent);
    assert_eq!(source.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(source.code(), Some("invalid_grant"));
    let cure = source.cure().expect("a cure");
    assert!(cure.contains("authorize the application again"), "{cure}");
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains(refresh),
        "the refresh token leaked: {shown}"
    );
    let counters = stack.em.counters();
    assert_eq!(
        (
            counters.lwa_calls,
            counters.token_calls,
            counters.restricted_calls
        ),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn tokens_api_429_500_and_503_are_retried_transparently() {
    let em = Emulator::start().await.unwrap();
    let stack = Stack::new(em, |b| b);
    let cases = [
        (StatusCode::TOO_MANY_REQUESTS, address()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            op("Orders v0", "getOrderBuyerInfo"),
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            op("Merchant Fulfillment v0", "getShipment"),
        ),
    ];
    let started = Instant::now();
    for (n, (status, op)) in cases.iter().enumerate() {
        stack.em.inject(Endpoint::Tokens, Fault::Status(*status), 1);
        let answer = guard(10, stack.call(op, IDS[0])).await.unwrap();
        assert!(answer.served(), "{status}: {answer:?}");
        let counters = stack.em.counters();
        // Each template: the failed attempt and the retry.
        assert_eq!(counters.token_calls, 2 * (n as u64 + 1), "{status}");
        assert_eq!(counters.faults_injected, n as u64 + 1);
    }
    let elapsed = started.elapsed();
    let counters = stack.em.counters();
    assert_eq!(counters.throttled, 1, "only the injected 429");
    assert_eq!(counters.rdts_issued, 3);
    let stats = stack.layer.stats();
    assert_eq!((stats.fetches, stats.fetch_errors), (6, 0));
    println!(
        "429, 500, 503 once each: {} token calls, {elapsed:?}",
        counters.token_calls
    );
}

#[tokio::test]
async fn a_refused_lwa_token_is_replaced_once_by_the_source() {
    let em = Emulator::start().await.unwrap();
    let stack = Stack::new(em, |b| b);
    assert!(stack.call(&address(), IDS[0]).await.unwrap().served());
    // Amazon ends the LWA token early: the Tokens API answers 403 to it.
    stack.em.revoke_access_tokens();
    let answer = guard(
        10,
        stack.call(&op("Orders v0", "getOrderBuyerInfo"), IDS[0]),
    )
    .await
    .unwrap();
    assert!(answer.served(), "{answer:?}");
    let counters = stack.em.counters();
    assert_eq!(counters.lwa_calls, 2);
    assert_eq!(
        counters.token_calls, 3,
        "one refused, one repeated with the new LWA token"
    );
    assert_eq!(
        stack.layer.stats().fetches,
        2,
        "the source retried, not the layer"
    );
}

#[tokio::test]
async fn a_slow_tokens_api_is_a_transient_timeout_in_bounded_time() {
    let em = Emulator::start().await.unwrap();
    let source = source_builder(&em)
        .credentials(credentials(&em, SellerId::DEFAULT_NAME))
        // 1 s: long enough for a normal call on a busy machine, far under the 10 s delay.
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = Stack::with_source(em, source, |b| {
        b.max_attempts(2)
            .transient_error_backoff(Duration::from_millis(100), Duration::from_millis(100))
    });
    // Get the LWA token first: only the Tokens API is slow.
    let path = path_for(&address(), IDS[0]);
    let request = stack
        .request(Method::GET, &path, &SellerId::default())
        .await;
    let delay = Duration::from_secs(10);
    stack.em.inject(Endpoint::Tokens, Fault::Delay(delay), 2);

    let started = Instant::now();
    let err = guard(10, stack.send(request)).await.unwrap_err();
    let elapsed = started.elapsed();
    let err = layer_error(&err);
    assert_eq!(err.kind(), ErrorKind::Transient);
    let source = err.source_error().expect("the source's error");
    assert!(source.is_transient());
    assert_eq!(source.attempts(), 2);
    assert!(
        elapsed < delay / 2,
        "the request timeout did not apply: {elapsed:?}"
    );
    assert_eq!(stack.em.counters().token_calls, 2);
    println!("Tokens API 10 s late, 1 s timeout, 2 attempts: failed in {elapsed:?}: {err}");

    // Once the failure is no longer remembered, the next call fetches again and succeeds.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = guard(10, stack.call(&address(), IDS[1])).await.unwrap();
    assert!(answer.served(), "{answer:?}");
    assert_eq!(stack.em.counters().token_calls, 3);
}

#[tokio::test]
async fn a_slow_lwa_endpoint_is_a_transient_timeout_in_bounded_time() {
    let em = Emulator::start().await.unwrap();
    let source = source_builder(&em)
        .credentials(credentials(&em, SellerId::DEFAULT_NAME))
        // 1 s: long enough for a normal call on a busy machine, far under the 10 s delay.
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = Stack::with_source(em, source, |b| b.max_attempts(2));
    let delay = Duration::from_secs(10);
    stack.em.inject(Endpoint::Lwa, Fault::Delay(delay), 2);
    let request = stack.bare_request(Method::GET, &path_for(&address(), IDS[0]));
    let started = Instant::now();
    let err = guard(10, stack.send(request)).await.unwrap_err();
    let elapsed = started.elapsed();
    let err = layer_error(&err);
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(err.source_error().unwrap().attempts(), 2);
    assert!(
        elapsed < delay / 2,
        "the request timeout did not apply: {elapsed:?}"
    );
    let counters = stack.em.counters();
    assert_eq!((counters.lwa_calls, counters.token_calls), (2, 0));
    println!("LWA 10 s late, 1 s timeout, 2 attempts: failed in {elapsed:?}");
}

#[tokio::test]
async fn a_revoked_rdt_is_recovered_with_exactly_one_extra_token_call() {
    let em = Emulator::start().await.unwrap();
    let stack = Stack::new(em, |b| b);
    assert!(stack.call(&address(), IDS[0]).await.unwrap().served());
    assert_eq!(stack.em.counters().token_calls, 1);

    // Every RDT issued so far dies: the cached one now gets 403 Unauthorized.
    stack.em.revoke_rdts();
    let address = address();
    let calls = IDS.iter().map(|id| stack.call(&address, id));
    for answer in guard(10, join_all(calls)).await {
        let answer = answer.unwrap();
        assert!(answer.served(), "{answer:?}: {:?}", answer.body);
    }
    let counters = stack.em.counters();
    assert_eq!(counters.token_calls, 2, "exactly one extra token call");
    assert!(counters.restricted_forbidden >= 1, "{counters:?}");
    assert_eq!(counters.pii_served, 1 + IDS.len() as u64);
    let stats = stack.layer.stats();
    assert_eq!(stats.invalidations, 1, "{stats:?}");
    println!(
        "revoked RDT, {} concurrent calls: {} answered 403 and were replayed, {} token calls",
        IDS.len(),
        counters.restricted_forbidden,
        counters.token_calls
    );
}

//! `stack`: the stack the README recommends, on a warm restricted request, against the same stack
//! with tower-http's `SetRequestHeader` in place of the token layer.
//!
//! Every request carries a small body (`Full<Bytes>`, replayable) and four extensions: a
//! `SellerId` and three of the application's own (a request id, a tenant name, a retry budget),
//! as a multi-tenant client sets them.
//!
//! - `bare`: the inner service alone, given the same request;
//! - `layer`: `recover_stale_tokens()` over `RestrictedDataTokenLayer` (the token comes from the
//!   cache, warmed once for the seller);
//! - `set_request_header`: `recover_stale_tokens()` over `SetRequestHeaderLayer::overriding`
//!   inserting a token of the same length: the floor for "insert a header in this stack".
//!
//! The figure that matters is the ratio of the overheads over `bare`: (layer − bare) ÷
//! (set_request_header − bare), in one run.
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use spapi_rdt::{RestrictedDataTokenLayer, SellerId, X_AMZ_ACCESS_TOKEN};
use support::{RESTRICTED, counting_source, drive, token_value};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

/// The seller every request is for.
const SELLER: &str = "A2EUQ1WTGCTBG2";

/// The application's own extensions, beside the seller (carried, never read here).
#[derive(Clone, Copy)]
struct RequestId(#[allow(dead_code)] u64);
#[derive(Clone)]
struct Tenant(#[allow(dead_code)] &'static str);
#[derive(Clone, Copy)]
struct RetryBudget(#[allow(dead_code)] u8);

type Body = Full<Bytes>;

/// A request as the application makes it: small JSON body, four extensions.
#[inline]
fn request(uri: &Uri, seller: &SellerId) -> Request<Body> {
    let mut request = Request::new(Full::new(Bytes::from_static(b"{\"note\":\"small\"}")));
    *request.uri_mut() = uri.clone();
    let extensions = request.extensions_mut();
    extensions.insert(seller.clone());
    extensions.insert(RequestId(42));
    extensions.insert(Tenant("tenant-7"));
    extensions.insert(RetryBudget(2));
    request
}

/// The cheapest inner service for this body: answers at once with how many headers it got.
fn inner() -> impl Service<
    Request<Body>,
    Response = Response<usize>,
    Error = Infallible,
    Future = Ready<Result<Response<usize>, Infallible>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|request: Request<Body>| {
        ready(Ok::<_, Infallible>(Response::new(request.headers().len())))
    })
}

fn stack(c: &mut Criterion) {
    let uri = Uri::from_static(RESTRICTED);
    let seller = SellerId::new(SELLER);
    let calls = support::calls();
    let rdt = RestrictedDataTokenLayer::new(counting_source(calls.clone(), None));
    let header = HeaderValue::from_str(&token_value()).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut layered = rdt.recover_stale_tokens().layer(rdt.layer(inner()));
    let warmed = runtime
        .block_on(layered.clone().oneshot(request(&uri, &seller)))
        .unwrap();
    assert_eq!(warmed.into_body(), 1, "the warm-up request got no token");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let _entered = runtime.enter();

    let mut bare = inner();
    let mut set_header = rdt
        .recover_stale_tokens()
        .layer(SetRequestHeaderLayer::overriding(X_AMZ_ACCESS_TOKEN, header).layer(inner()));
    assert_eq!(drive(&mut layered, request(&uri, &seller)).into_body(), 1);
    assert_eq!(
        drive(&mut set_header, request(&uri, &seller)).into_body(),
        1
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "a warm request fetched a token"
    );

    let mut group = c.benchmark_group("stack");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(drive(&mut bare, request(black_box(&uri), &seller))))
    });
    group.bench_function("layer", |b| {
        b.iter(|| black_box(drive(&mut layered, request(black_box(&uri), &seller))))
    });
    group.bench_function("set_request_header", |b| {
        b.iter(|| black_box(drive(&mut set_header, request(black_box(&uri), &seller))))
    });
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);

//! `cached`: a restricted request whose token is already cached, against the physical floor of
//! injecting a header.
//!
//! - `bare`: the inner service alone;
//! - `layer`: classify, find the seller's cached token, insert it (the warm path);
//! - `set_request_header`: tower-http's `SetRequestHeaderLayer::overriding` inserting a token of the
//!   same length in the same header, with no decision to make.
//!
//! The cache is warmed inside a tokio runtime (the first fetch spawns a task); the measured path
//! then runs with that runtime entered but never polled.
//!
//! `cached_parts` times, for reference, public pieces of the warm path on the same request: the
//! matcher's hit, the origin check, a plain comparison of the authority (what the origin check
//! could cost), tokio's clock, and a clone of the token's header value.
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Method, Uri};
use spapi_rdt::{Region, RestrictedDataTokenLayer, X_AMZ_ACCESS_TOKEN};
use support::{RESTRICTED, counting_source, drive, get, headers, inner, token_value};
use tower::{Layer, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

fn cached(c: &mut Criterion) {
    let uri = Uri::from_static(RESTRICTED);
    let calls = support::calls();
    let layer = RestrictedDataTokenLayer::new(counting_source(calls.clone(), None));
    let header = HeaderValue::from_str(&token_value()).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warmed = runtime
        .block_on(layer.layer(inner()).oneshot(get(&uri)))
        .unwrap();
    assert_eq!(headers(warmed), 1, "the warm-up request got no token");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let _entered = runtime.enter();

    let mut bare = inner();
    let mut layered = layer.layer(inner());
    let mut set_header =
        SetRequestHeaderLayer::overriding(X_AMZ_ACCESS_TOKEN, header).layer(inner());
    assert_eq!(headers(drive(&mut layered, get(&uri))), 1);
    assert_eq!(headers(drive(&mut set_header, get(&uri))), 1);

    let mut group = c.benchmark_group("cached");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(drive(&mut bare, get(black_box(&uri)))))
    });
    group.bench_function("layer", |b| {
        b.iter(|| black_box(drive(&mut layered, get(black_box(&uri)))))
    });
    group.bench_function("set_request_header", |b| {
        b.iter(|| black_box(drive(&mut set_header, get(black_box(&uri)))))
    });
    group.finish();

    let matcher = layer.matcher();
    let path = uri.path();
    let origin = Region::NorthAmerica.origin();
    let token = HeaderValue::from_str(&token_value()).unwrap();
    let mut parts = c.benchmark_group("cached_parts");
    parts
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    parts.bench_function("classify_hit", |b| {
        b.iter(|| black_box(matcher.classify(black_box(&Method::GET), black_box(path))))
    });
    parts.bench_function("origin_matches_uri", |b| {
        b.iter(|| black_box(black_box(&origin).matches_uri(black_box(&uri))))
    });
    parts.bench_function("authority_eq", |b| {
        b.iter(|| {
            black_box(&uri)
                .authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(black_box(origin.host())))
        })
    });
    parts.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    parts.bench_function("token_clone", |b| {
        b.iter(|| black_box(black_box(&token).clone()))
    });
    parts.finish();

    // Every measured request was a hit on the one token fetched during the warm-up.
    let stats = layer.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.misses, 1);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

criterion_group!(benches, cached);
criterion_main!(benches);

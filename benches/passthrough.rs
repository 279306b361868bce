//! `passthrough`: what an unrestricted request pays for going through the layer.
//!
//! One group, three contenders, each building the same request inside the iteration and driving it
//! through `poll_ready`, `call` and one poll (no runtime):
//! - `bare`: the inner service alone (a `service_fn` answering with a ready future);
//! - `layer`: `RestrictedDataTokenLayer` over it (classifies the request, leaves it alone);
//! - `set_request_header`: tower-http's `SetRequestHeaderLayer::overriding` over the same inner
//!   service, for reference only: it inserts a header into every request, work that the layer does
//!   not do for an unrestricted one, so it is not a baseline for the layer's pass-through cost
//!   (`cargo xtask bench-report` judges the layer against `bare` alone).
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Uri};
use spapi_rdt::{RestrictedDataTokenLayer, X_AMZ_ACCESS_TOKEN};
use support::{UNRESTRICTED, counting_source, drive, get, headers, inner, token_value};
use tower::Layer;
use tower_http::set_header::SetRequestHeaderLayer;

fn passthrough(c: &mut Criterion) {
    let uri = Uri::from_static(UNRESTRICTED);
    let calls = support::calls();
    let layer = RestrictedDataTokenLayer::new(counting_source(calls.clone(), None));
    let header = HeaderValue::from_str(&token_value()).unwrap();

    let mut bare = inner();
    let mut layered = layer.layer(inner());
    let mut set_header =
        SetRequestHeaderLayer::overriding(X_AMZ_ACCESS_TOKEN, header).layer(inner());

    // The layer must leave this request alone, or the comparison is meaningless.
    assert_eq!(headers(drive(&mut layered, get(&uri))), 0);
    assert_eq!(headers(drive(&mut set_header, get(&uri))), 1);

    let mut group = c.benchmark_group("passthrough");
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

    let stats = layer.stats();
    assert_eq!(stats.fetches, 0, "an unrestricted request fetched a token");
    assert_eq!(
        (stats.hits, stats.misses),
        (0, 0),
        "an unrestricted request used the cache"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 0);
}

criterion_group!(benches, passthrough);
criterion_main!(benches);

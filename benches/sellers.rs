//! `sellers`: what a cached seller costs in memory, and whether the warm lookup stays flat as the
//! number of cached sellers grows.
//!
//! For N = 1, 1,000 and 100,000: a new layer is filled with one cached token per seller (each
//! request carries a `SellerId`; the source answers at once with a 400-character token). A counting
//! global allocator measures the bytes allocated and not freed while filling, divided by N. Then:
//! - `sellers/hot/N`: a warm lookup, always for the same seller, with N sellers cached;
//! - `sellers/spread/N`: a warm lookup for each cached seller in turn, in a shuffled order (every
//!   lookup touches a different entry, as a busy multi-seller service would);
//! - `sellers/bare`: the same request, `SellerId` extension included, through the inner service
//!   alone (the floor of `hot`);
//! - `sellers/bare_spread/N`: the same with each seller in turn (the floor of `spread`: cloning a
//!   `SellerId` touches its memory too);
//! - `sellers/map_spread/N`: each seller in turn through the inner service alone, with the token
//!   looked up in a plain `HashMap<SellerId, HeaderValue>` of N sellers and inserted (the floor of
//!   any cache that keeps a token per seller in a hash map: no classification, no clock, no
//!   deadlines).
//!
//! Note: every allocation in this binary goes through the counting allocator (a few atomic adds),
//! so its times are a little higher than in the `cached` bench; they compare with each other.
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, Uri};
use spapi_rdt::{RestrictedDataTokenLayer, SellerId};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::{RESTRICTED, TOKEN_LEN, counting_source, drive, get, headers, inner};
use tower::{Layer, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A request for `uri` on behalf of `seller`.
#[inline]
fn for_seller(uri: &Uri, seller: &SellerId) -> Request<()> {
    let mut request = get(uri);
    request.extensions_mut().insert(seller.clone());
    request
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A layer holding a token for each of `n` sellers, the sellers, and what filling it cost.
struct Filled {
    layer: RestrictedDataTokenLayer,
    sellers: Vec<SellerId>,
    bytes_per_seller: f64,
    allocations_per_seller: f64,
    rss_per_seller: f64,
}

fn fill(runtime: &tokio::runtime::Runtime, uri: &Uri, n: usize) -> Filled {
    let calls = support::calls();
    let layer = RestrictedDataTokenLayer::new(counting_source(calls.clone(), None));
    let mut service = layer.layer(inner());
    // One-time costs (the runtime's timer, the first task, lazily built statics) are paid by a
    // request on another layer before counting starts.
    let warm_up = RestrictedDataTokenLayer::new(counting_source(support::calls(), None));
    runtime
        .block_on(warm_up.layer(inner()).oneshot(get(uri)))
        .unwrap();

    let mut sellers = Vec::with_capacity(n);
    let rss_before = rss();
    let region = Region::new(GLOBAL);
    runtime.block_on(async {
        for i in 0..n {
            // Seller ids look like Amazon's: "A" and 13 more characters.
            let seller = SellerId::new(format!("A{i:013X}"));
            let request = for_seller(uri, &seller);
            sellers.push(seller);
            let got = (&mut service).oneshot(request).await.unwrap();
            assert_eq!(headers(got), 1);
        }
    });
    let change = region.change();
    let rss_after = rss();
    assert_eq!(calls.load(Ordering::Relaxed), n, "one fetch per seller");

    let kept = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
    let live = change.allocations as f64 - change.deallocations as f64;
    Filled {
        layer,
        sellers,
        bytes_per_seller: kept / n as f64,
        allocations_per_seller: live / n as f64,
        rss_per_seller: rss_after.saturating_sub(rss_before) as f64 / n as f64,
    }
}

/// Allocations (and bytes) per request over `rounds` requests made by `request` through `service`;
/// the request's own allocations included.
fn allocations_per_request<S>(
    service: &mut S,
    rounds: usize,
    mut request: impl FnMut() -> Request<()>,
) -> (f64, f64)
where
    S: tower::Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    // Warm requests only: what the first ones set up once is not counted.
    for _ in 0..2 {
        black_box(drive(service, request()));
    }
    let region = Region::new(GLOBAL);
    for _ in 0..rounds {
        black_box(drive(service, request()));
    }
    let change = region.change();
    (
        change.allocations as f64 / rounds as f64,
        change.bytes_allocated as f64 / rounds as f64,
    )
}

fn sellers(c: &mut Criterion) {
    let uri = Uri::from_static(RESTRICTED);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("sellers");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    let someone = SellerId::new("A0000000000000");
    let mut bare = inner();
    group.bench_function("bare", |b| {
        b.iter(|| black_box(drive(&mut bare, for_seller(black_box(&uri), &someone))))
    });

    let mut memory = serde_json::Map::new();
    let mut allocations = None;
    for n in [1usize, 1_000, 100_000] {
        let filled = fill(&runtime, &uri, n);
        println!(
            "sellers/{n}: {:.0} bytes allocated and kept per cached seller ({:.1} live \
             allocations; resident memory grew {:.0} bytes per seller); token length {TOKEN_LEN}",
            filled.bytes_per_seller, filled.allocations_per_seller, filled.rss_per_seller
        );
        memory.insert(
            n.to_string(),
            serde_json::json!({
                "sellers": n,
                "bytes_per_seller": filled.bytes_per_seller,
                "allocations_per_seller": filled.allocations_per_seller,
                "rss_bytes_per_seller": filled.rss_per_seller,
            }),
        );

        let _entered = runtime.enter();
        let mut service = filled.layer.layer(inner());
        if n == 1 {
            // What each kind of request allocates, request included.
            let seller = filled.sellers[0].clone();
            let unrestricted = Uri::from_static(support::UNRESTRICTED);
            let header = http::HeaderValue::from_str(&support::token_value()).unwrap();
            let mut set_header =
                SetRequestHeaderLayer::overriding(spapi_rdt::X_AMZ_ACCESS_TOKEN, header)
                    .layer(inner());
            let counts = [
                (
                    "bare_passthrough",
                    allocations_per_request(&mut bare, 1000, || get(&unrestricted)),
                ),
                (
                    "layer_passthrough",
                    allocations_per_request(&mut service, 1000, || get(&unrestricted)),
                ),
                (
                    "bare_restricted",
                    allocations_per_request(&mut bare, 1000, || for_seller(&uri, &seller)),
                ),
                (
                    "layer_cached",
                    allocations_per_request(&mut service, 1000, || for_seller(&uri, &seller)),
                ),
                (
                    "set_request_header",
                    allocations_per_request(&mut set_header, 1000, || for_seller(&uri, &seller)),
                ),
            ];
            let mut figures = serde_json::Map::new();
            for (name, (allocations, bytes)) in counts {
                println!("allocations per request, {name}: {allocations:.2} ({bytes:.0} bytes)");
                figures.insert(
                    name.into(),
                    serde_json::json!({ "allocations": allocations, "bytes": bytes }),
                );
            }
            allocations = Some(serde_json::Value::Object(figures));
        }
        let mut order = filled.sellers.clone();
        fastrand::Rng::with_seed(7).shuffle(&mut order);
        let hot = order[0].clone();

        group.bench_function(BenchmarkId::new("hot", n), |b| {
            b.iter(|| black_box(drive(&mut service, for_seller(black_box(&uri), &hot))))
        });
        let mut next = 0;
        group.bench_function(BenchmarkId::new("bare_spread", n), |b| {
            b.iter(|| {
                let seller = &order[next];
                next = if next + 1 == order.len() { 0 } else { next + 1 };
                black_box(drive(&mut bare, for_seller(black_box(&uri), seller)))
            })
        });
        let tokens: HashMap<SellerId, HeaderValue, foldhash::fast::RandomState> = filled
            .sellers
            .iter()
            .map(|seller| {
                let mut header = HeaderValue::from_str(&support::token_value()).unwrap();
                header.set_sensitive(true);
                (seller.clone(), header)
            })
            .collect();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("map_spread", n), |b| {
            b.iter(|| {
                let seller = &order[next];
                next = if next + 1 == order.len() { 0 } else { next + 1 };
                let mut request = for_seller(black_box(&uri), seller);
                if let Some(header) = request
                    .extensions()
                    .get::<SellerId>()
                    .and_then(|seller| tokens.get(seller))
                {
                    request
                        .headers_mut()
                        .insert(spapi_rdt::X_AMZ_ACCESS_TOKEN, header.clone());
                }
                black_box(drive(&mut bare, request))
            })
        });
        drop(tokens);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("spread", n), |b| {
            b.iter(|| {
                let seller = &order[next];
                next = if next + 1 == order.len() { 0 } else { next + 1 };
                black_box(drive(&mut service, for_seller(black_box(&uri), seller)))
            })
        });
        // Every measured lookup was a hit: no miss and no fetch after the fill.
        let stats = filled.layer.stats();
        assert_eq!((stats.misses, stats.fetches), (n as u64, n as u64));
    }
    group.finish();

    support::record_extra(
        "sellers",
        serde_json::json!({
            "token_len": TOKEN_LEN,
            "memory": memory,
            "allocations_per_request": allocations,
        }),
    );
}

criterion_group!(benches, sellers);
criterion_main!(benches);

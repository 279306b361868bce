//! `cold_burst`: N concurrent restricted requests on a cold cache, with a token source that takes
//! 5 ms, on a multi-thread tokio runtime.
//!
//! Each iteration builds a new layer (untimed), then spawns N tasks, each sending one request for
//! one of `KEYS` sellers (the same operation, different order ids), and waits for all of them. Every
//! iteration checks that the source was called exactly once per key.
//!
//! - `layer/N`: the layer, single flight and all;
//! - `shared_future/N`: the floor of any single-flight design: per key one spawned task sleeping
//!   5 ms behind a `futures::future::Shared`, and N spawned tasks awaiting their key's clone.
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;
use http::Request;
use spapi_rdt::{RestrictedDataTokenLayer, SellerId};
use support::{NA, counting_source, headers, inner};
use tower::{Layer, ServiceExt};

/// Distinct cache keys (sellers) per burst.
const KEYS: usize = 10;
/// What the source takes per call.
const SOURCE_DELAY: Duration = Duration::from_millis(5);

fn requests(n: usize) -> Vec<Request<()>> {
    (0..n)
        .map(|i| {
            let mut request = Request::get(format!("{NA}/orders/v0/orders/902-{i:07}-1/address"))
                .body(())
                .unwrap();
            request
                .extensions_mut()
                .insert(SellerId::new(format!("A{:013}", i % KEYS)));
            request
        })
        .collect()
}

/// The least and most source calls seen in one burst.
#[derive(Clone, Copy)]
struct Calls {
    min: usize,
    max: usize,
    bursts: usize,
}

fn cold_burst(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("cold_burst");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut seen = Vec::new();
    for n in [1_000usize, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        let mut calls_seen = Calls {
            min: usize::MAX,
            max: 0,
            bursts: 0,
        };
        group.bench_function(BenchmarkId::new("layer", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let calls = support::calls();
                    let layer = RestrictedDataTokenLayer::new(counting_source(
                        Arc::clone(&calls),
                        Some(SOURCE_DELAY),
                    ));
                    let service = layer.layer(inner());
                    let batch = requests(n);
                    let took = runtime.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = batch
                            .into_iter()
                            .map(|request| tokio::spawn(service.clone().oneshot(request)))
                            .collect();
                        for task in tasks {
                            // Every request reached the inner service with its token.
                            assert_eq!(headers(task.await.unwrap().unwrap()), 1);
                        }
                        start.elapsed()
                    });
                    total += took;
                    let made = calls.load(Ordering::Relaxed);
                    assert_eq!(made, KEYS, "{made} source calls for {KEYS} keys");
                    assert_eq!(layer.stats().fetches, KEYS as u64);
                    calls_seen.min = calls_seen.min.min(made);
                    calls_seen.max = calls_seen.max.max(made);
                    calls_seen.bursts += 1;
                }
                total
            })
        });
        group.bench_function(BenchmarkId::new("shared_future", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += runtime.block_on(async {
                        let start = Instant::now();
                        let fetches: Vec<_> = (0..KEYS)
                            .map(|_| {
                                tokio::spawn(tokio::time::sleep(SOURCE_DELAY))
                                    .map(|r| r.is_ok())
                                    .shared()
                            })
                            .collect();
                        let tasks: Vec<_> = (0..n)
                            .map(|i| tokio::spawn(fetches[i % KEYS].clone()))
                            .collect();
                        for task in tasks {
                            assert!(task.await.unwrap());
                        }
                        start.elapsed()
                    });
                }
                total
            })
        });
        println!(
            "cold_burst/{n}: {KEYS} keys, source calls per burst: min {}, max {} over {} bursts \
             (expected exactly {KEYS}: one per key)",
            calls_seen.min, calls_seen.max, calls_seen.bursts
        );
        seen.push((n, calls_seen));
    }
    group.finish();

    let figures: serde_json::Map<String, serde_json::Value> = seen
        .into_iter()
        .map(|(n, calls)| {
            (
                n.to_string(),
                serde_json::json!({
                    "keys": KEYS,
                    "callers": n,
                    "source_delay_ms": SOURCE_DELAY.as_millis() as u64,
                    "source_calls_min": calls.min,
                    "source_calls_max": calls.max,
                    "bursts": calls.bursts,
                    "calls_per_key_max": calls.max as f64 / KEYS as f64,
                }),
            )
        })
        .collect();
    support::record_extra("cold_burst", serde_json::Value::Object(figures));
}

criterion_group!(benches, cold_burst);
criterion_main!(benches);

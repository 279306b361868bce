//! `threads`: cached-path throughput on a multi-thread tokio runtime with 1 and 2 worker threads.
//!
//! One iteration is one request per worker: `iter_custom` spawns one task per worker, each driving
//! `iters` warm restricted requests through its own clone of the service (no awaits in the loop),
//! and times from the moment they all started to the moment the last finished. Throughput is in
//! requests per second; with perfect scaling the time per iteration is the same for 1 and 2
//! workers.
//!
//! - `layer`: the layer's warm path;
//! - `set_request_header`: tower-http inserting a token of the same length, every worker cloning
//!   the same header value (as every worker clones the one cached token in the layer), to tell the
//!   layer's own scaling from that of the shared token bytes and the allocator;
//! - `set_request_header_own_copy`: the same with a copy of the token per worker, so that nothing
//!   at all is shared between the workers.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, Uri};
use spapi_rdt::{RestrictedDataTokenLayer, X_AMZ_ACCESS_TOKEN};
use support::{RESTRICTED, Reply, counting_source, drive, get, headers, inner, token_value};
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeaderLayer;

/// Which threads the tasks of the runs so far ran on.
#[derive(Default)]
struct RunLog {
    runs: usize,
    /// Runs in which two tasks ran on the same thread (so not in parallel).
    shared: usize,
    threads: HashSet<ThreadId>,
}

/// How long a task waits at the start line for the others before it runs anyway.
const START_LINE_PATIENCE: Duration = Duration::from_millis(200);

/// Runs `iters` requests on each of `workers` spawned tasks, and returns the time from the moment
/// they all started to the moment the last one finished. Logs the threads the tasks ran on.
///
/// The tasks meet at a start line first: a task that arrives spins (blocking its worker thread)
/// until all have arrived, so two tasks queued on one worker force the other worker to steal one.
/// The wait is bounded, and a run where two tasks still ended up on one thread is logged.
fn run<S>(
    runtime: &tokio::runtime::Runtime,
    service: impl Fn() -> S,
    workers: usize,
    iters: u64,
    log: &Mutex<RunLog>,
) -> Duration
where
    S: Service<Request<()>, Response = Reply> + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let uri = Uri::from_static(RESTRICTED);
    let arrived = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let mut service = service();
            let uri = uri.clone();
            let arrived = Arc::clone(&arrived);
            runtime.spawn(async move {
                arrived.fetch_add(1, Ordering::AcqRel);
                let patience = Instant::now() + START_LINE_PATIENCE;
                while arrived.load(Ordering::Acquire) < workers && Instant::now() < patience {
                    std::hint::spin_loop();
                }
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(drive(&mut service, get(black_box(&uri))));
                }
                (std::thread::current().id(), start, Instant::now())
            })
        })
        .collect();
    let ran: Vec<(ThreadId, Instant, Instant)> = runtime.block_on(async {
        let mut ran = Vec::with_capacity(tasks.len());
        for task in tasks {
            ran.push(task.await.unwrap());
        }
        ran
    });
    let first_start = ran.iter().map(|r| r.1).min().unwrap();
    let last_end = ran.iter().map(|r| r.2).max().unwrap();
    let mut log = log.lock().unwrap();
    log.runs += 1;
    let distinct: HashSet<_> = ran.iter().map(|r| r.0).collect();
    if distinct.len() < workers {
        log.shared += 1;
    }
    log.threads.extend(distinct);
    last_end - first_start
}

/// Prints and returns what `log` says about parallelism.
fn summary(workers: usize, log: &RunLog) -> serde_json::Value {
    println!(
        "threads/{workers}: {} runs on {} distinct worker threads; {} runs had two tasks on one thread",
        log.runs,
        log.threads.len(),
        log.shared
    );
    serde_json::json!({
        "workers": workers,
        "runs": log.runs,
        "worker_threads_used": log.threads.len(),
        "runs_sharing_a_thread": log.shared,
    })
}

fn threads(c: &mut Criterion) {
    let header = HeaderValue::from_str(&token_value()).unwrap();
    let mut group = c.benchmark_group("threads");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut report = serde_json::Map::new();
    for workers in [1usize, 2] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let calls = support::calls();
        let layer = RestrictedDataTokenLayer::new(counting_source(Arc::clone(&calls), None));
        let layered = layer.layer(inner());
        let warmed = runtime
            .block_on(layered.clone().oneshot(get(&Uri::from_static(RESTRICTED))))
            .unwrap();
        assert_eq!(headers(warmed), 1);
        let set_header =
            SetRequestHeaderLayer::overriding(X_AMZ_ACCESS_TOKEN, header.clone()).layer(inner());

        group.throughput(Throughput::Elements(workers as u64));
        let mut logs = serde_json::Map::new();
        let log = Mutex::new(RunLog::default());
        group.bench_function(BenchmarkId::new("layer", workers), |b| {
            b.iter_custom(|iters| run(&runtime, || layered.clone(), workers, iters, &log))
        });
        assert_eq!(layer.stats().fetches, 1, "every measured request was a hit");
        logs.insert("layer".into(), summary(workers, &log.lock().unwrap()));
        let log = Mutex::new(RunLog::default());
        group.bench_function(BenchmarkId::new("set_request_header", workers), |b| {
            b.iter_custom(|iters| run(&runtime, || set_header.clone(), workers, iters, &log))
        });
        logs.insert(
            "set_request_header".into(),
            summary(workers, &log.lock().unwrap()),
        );
        // Each worker with its own copy of the token: no reference count shared between threads.
        let own_copy = || {
            let header = HeaderValue::from_bytes(header.as_bytes()).unwrap();
            SetRequestHeaderLayer::overriding(X_AMZ_ACCESS_TOKEN, header).layer(inner())
        };
        let log = Mutex::new(RunLog::default());
        group.bench_function(
            BenchmarkId::new("set_request_header_own_copy", workers),
            |b| b.iter_custom(|iters| run(&runtime, own_copy, workers, iters, &log)),
        );
        logs.insert(
            "set_request_header_own_copy".into(),
            summary(workers, &log.lock().unwrap()),
        );
        report.insert(workers.to_string(), serde_json::Value::Object(logs));
    }
    group.finish();
    support::record_extra("threads", serde_json::Value::Object(report));
}

criterion_group!(benches, threads);
criterion_main!(benches);

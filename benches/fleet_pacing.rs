//! fleet_pacing: 3 replicas × 8 workers send getOrder at 5× its usage plan to the emulator, which
//! enforces the plan (1 a second, burst 5, run 10× faster: 10 a second). Side by side in one run:
//!
//! - **per_process**: each replica paces with buckets of its own, what the peers' SDKs do;
//! - **fleet**: the replicas share each bucket through Redis (`PacingLayerBuilder::fleet`).
//!
//! For each: the 429s Amazon (the emulator) sent, the requests that failed with a 429, the wall
//! time against the plan's minimum ((n − burst) ÷ rate for n requests on a full bucket), and the
//! spread of waits between workers (each worker's mean wait, from the answers' `PacingReport`).
//! It is no criterion benchmark: it waits on the plan's own pace. Figures go to the extra-figures
//! file for `cargo xtask bench-report`. Needs `redis-server` (skipped with a line without one,
//! unless `SPAPI_RDT_REQUIRE_REDIS` is set, as CI does).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/redis_server.rs"]
mod redis_server;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use spapi_rdt::catalog::UsagePlan;
use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
use spapi_rdt::pacing::{PacingLayer, PacingReport};
use spapi_rdt::{LwaCredentials, RestrictedDataTokenLayer, SellerId, SpApiTokenSource};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tower::{Layer, ServiceExt};

use redis_server::Redis;

use support::fleet_load::{
    BURST, FULL_CALLS, GET_ORDER, OFFERED, PLAN_RATE, QUICK_CALLS, REPLICAS, TIME_SCALE, WORKERS,
};

const STRATEGIES: [&str; 2] = ["per_process", "fleet"];

/// What one strategy did.
struct Outcome {
    strategy: &'static str,
    wall: Duration,
    /// 429s the emulator sent for getOrder.
    throttled: u64,
    /// Requests whose final answer was a 429.
    failed: usize,
    /// Each worker's mean wait in the layer.
    worker_waits: Vec<Duration>,
    fallbacks: u64,
}

impl Outcome {
    fn json(&self) -> Value {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        json!({
            "wall_ms": ms(&self.wall),
            "throttled": self.throttled,
            "failed": self.failed,
            "worker_wait_ms": self.worker_waits.iter().map(ms).collect::<Vec<f64>>(),
            "fallbacks": self.fallbacks,
        })
    }
}

fn source(em: &Emulator) -> SpApiTokenSource {
    let refresh = em.refresh_token(SellerId::DEFAULT_NAME).unwrap();
    SpApiTokenSource::builder()
        .http_client(
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        )
        .lwa_url(em.lwa_url())
        .credentials(LwaCredentials::new(
            em.client_id(),
            em.client_secret(),
            refresh,
        ))
        .build()
        .unwrap()
}

/// `n` getOrder calls, one every 1 ÷ (5 × the rate) seconds, spread over the replicas' workers in
/// turn; each replica paces alone or through `redis`.
async fn run(n: usize, redis: Option<&Redis>) -> Outcome {
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .usage_plans(true)
            .usage_plan_time_scale(TIME_SCALE)
            .usage_plan(
                "Orders v0 getOrder",
                UsagePlan::new(PLAN_RATE, BURST).unwrap(),
            ),
    )
    .await
    .unwrap();
    let rate = support::fleet_load::rate();
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut layers = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let rdt = RestrictedDataTokenLayer::builder(source(&em))
            .allow_origin(em.origin())
            .build()
            .unwrap();
        let mut pacing = PacingLayer::builder()
            .plan(
                "Orders v0",
                "getOrder",
                UsagePlan::new(rate, BURST).unwrap(),
            )
            .max_wait(Duration::from_secs(600));
        if let Some(redis) = redis {
            let fleet = RedisFleet::builder(redis.url())
                .key_prefix(redis.prefix())
                .encryption_key(EncryptionKey::from_bytes([9; 32]))
                .build()
                .unwrap();
            pacing = pacing.fleet(&fleet, REPLICAS as u32);
        }
        let pacing = pacing.build().unwrap();
        replicas.push(rdt.layer(pacing.layer(http.clone())));
        layers.push(pacing);
    }
    // Tokens first, so that the run measures pacing, not the first token fetch.
    for replica in &replicas {
        let mut warm = Request::get(format!("{}/orders/v0/orders/warm-up/address", em.origin()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        warm.extensions_mut().insert(SellerId::default());
        replica.clone().oneshot(warm).await.unwrap();
    }
    let every = Duration::from_secs_f64(1.0 / (OFFERED * rate));
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let calls = (0..n).map(|i| {
        let worker = i % (REPLICAS * WORKERS);
        let service = replicas[worker / WORKERS].clone();
        let mut request = Request::get(format!("{}{GET_ORDER}", em.origin()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        request.extensions_mut().insert(SellerId::default());
        async move {
            tokio::time::sleep_until(start + every * i as u32).await;
            let response = service.oneshot(request).await.unwrap();
            let waited = response
                .extensions()
                .get::<PacingReport>()
                .map_or(Duration::ZERO, |r| r.waited);
            (worker, response.status().as_u16(), waited)
        }
    });
    let answers = join_all(calls).await;
    let wall = started.elapsed();
    let mut per_worker = vec![(Duration::ZERO, 0u32); REPLICAS * WORKERS];
    for (worker, _, waited) in &answers {
        per_worker[*worker].0 += *waited;
        per_worker[*worker].1 += 1;
    }
    Outcome {
        strategy: if redis.is_some() {
            "fleet"
        } else {
            "per_process"
        },
        wall,
        throttled: em.counters().quota_exceeded_for("Orders v0 getOrder"),
        failed: answers.iter().filter(|(_, s, _)| *s == 429).count(),
        worker_waits: per_worker
            .iter()
            .map(|(total, count)| *total / (*count).max(1))
            .collect(),
        fallbacks: layers.iter().map(|l| l.stats().fleet_fallbacks).sum(),
    }
}

fn main() {
    let mode = support::Mode::from_args(&STRATEGIES.map(|s| format!("fleet_pacing/{s}")));
    if mode.filtered_out {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        for strategy in STRATEGIES {
            println!("fleet_pacing/{strategy}: benchmark");
        }
        return;
    }
    let Some(redis) = Redis::any() else {
        return;
    };
    let n = if mode.quick || !mode.bench {
        QUICK_CALLS
    } else {
        FULL_CALLS
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async { [run(n, None).await, run(n, Some(&redis)).await] });
    let (rate, minimum) = (support::fleet_load::rate(), support::fleet_load::minimum(n));
    println!(
        "fleet_pacing: {REPLICAS} replicas × {WORKERS} workers, {n} getOrder calls at {OFFERED}× \
         the plan ({rate}/s, burst {BURST}); the plan's minimum {minimum:.2} s"
    );
    println!(
        "  {:<12} {:>5} {:>7} {:>9} {:>7} {:>22} {:>10}",
        "strategy", "429s", "failed", "wall", "×min", "worker mean wait", "fallbacks"
    );
    for o in &outcomes {
        let (lo, hi) = (
            o.worker_waits.iter().min().copied().unwrap_or_default(),
            o.worker_waits.iter().max().copied().unwrap_or_default(),
        );
        println!(
            "  {:<12} {:>5} {:>7} {:>8.2}s {:>7.3} {:>9.2?}–{:<11.2?} {:>10}",
            o.strategy,
            o.throttled,
            o.failed,
            o.wall.as_secs_f64(),
            o.wall.as_secs_f64() / minimum,
            lo,
            hi,
            o.fallbacks
        );
    }
    let [_, fleet] = &outcomes;
    assert_eq!(fleet.throttled, 0, "the fleet met 429s");
    assert_eq!(
        fleet.fallbacks, 0,
        "the fleet fell back to per-replica pacing"
    );

    if mode.bench {
        let (run, written) = support::stamp(&mode);
        let strategies: serde_json::Map<String, Value> = outcomes
            .iter()
            .map(|o| (o.strategy.to_owned(), o.json()))
            .collect();
        support::record_extra(
            "fleet_pacing",
            json!({
                "mode": run,
                "written_unix": written,
                "calls": n,
                "replicas": REPLICAS,
                "workers": WORKERS,
                "rate_per_s": rate,
                "burst": BURST,
                "offered": OFFERED,
                "minimum_ms": minimum * 1e3,
                "strategies": strategies,
            }),
        );
    }
}

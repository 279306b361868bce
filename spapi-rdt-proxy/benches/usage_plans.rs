//! usage_plans: the sidecar's half of the library's `fleet_pacing` bench. A client that knows
//! nothing of quotas (no token, no pacing) runs 24 workers sending getOrder at 5× its plan through
//! three sidecars in fleet mode on one Redis (worker `i` to sidecar `i mod 3`); the emulator
//! enforces the plan (1 a second, burst 5, run 10× faster: 10 a second). It counts the 429s Amazon
//! (the emulator) sent and the client got, the wall time against the plan's minimum
//! ((n − burst) ÷ rate) and the spread of the workers' mean latencies. The figures go to the
//! extra-figures file, where `cargo xtask bench-report` puts them in `fleet_pacing`'s row. Needs
//! `redis-server` (skipped with a line without one, unless `SPAPI_RDT_REQUIRE_REDIS` is set).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
#[path = "../../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::future::join_all;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use spapi_rdt::catalog::UsagePlan;
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use spapi_rdt_proxy::{App, Args, Settings, serve};
use tokio::net::TcpListener;

use redis_server::Redis;

use support::fleet_load::{
    BURST, FULL_CALLS, GET_ORDER, OFFERED, PLAN_RATE, QUICK_CALLS, REPLICAS as SIDECARS,
    TIME_SCALE, WORKERS,
};

const ID: &str = "usage_plans/sidecar_fleet";

/// A sidecar in fleet mode on `redis`, in front of `em`, serving on a port of its own.
async fn sidecar(
    em: &Emulator,
    redis: &Redis,
    rate: f64,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let plan = format!("Orders v0 getOrder={rate}/{BURST}");
    let lwa = em.lwa_url();
    let args = Args::try_parse_from([
        "spapi-rdt-proxy",
        "--upstream",
        em.origin().as_str(),
        "--lwa-url",
        lwa.as_str(),
        "--redis-url",
        redis.url(),
        "--fleet-replicas",
        &SIDECARS.to_string(),
        "--usage-plan",
        &plan,
        "--usage-plan-max-wait",
        "600",
    ])
    .unwrap();
    let vars = [
        ("SPAPI_CLIENT_ID", em.client_id().to_owned()),
        ("SPAPI_CLIENT_SECRET", em.client_secret().to_owned()),
        ("SPAPI_REFRESH_TOKEN", em.refresh_token("default").unwrap()),
        ("SPAPI_RDT_FLEET_KEY", "5a".repeat(32)),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = Settings::load(&args, vars).unwrap();
    let app = App::new(&settings).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        settings.limits(),
    ));
    (address, stop)
}

fn main() {
    let mode = support::Mode::from_args(&[ID.to_owned()]);
    if mode.filtered_out {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("{ID}: benchmark");
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
    let rate = support::fleet_load::rate();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (wall, statuses, worker_latency, em) = runtime.block_on(async {
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
        let mut sidecars = Vec::new();
        for _ in 0..SIDECARS {
            sidecars.push(sidecar(&em, &redis, rate).await);
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        // Tokens first (another operation's bucket), so that the run measures pacing.
        for (address, _) in &sidecars {
            let warm = format!("{address}/orders/v0/orders/warm-up/address");
            let status = client.get(warm.parse().unwrap()).await.unwrap().status();
            assert_eq!(status, 200);
        }
        let every = Duration::from_secs_f64(1.0 / (OFFERED * rate));
        let started = Instant::now();
        let start = tokio::time::Instant::now();
        let calls = (0..n).map(|i| {
            let worker = i % (SIDECARS * WORKERS);
            let url = format!("{}{GET_ORDER}", sidecars[worker % SIDECARS].0);
            let client = client.clone();
            async move {
                tokio::time::sleep_until(start + every * i as u32).await;
                let sent = Instant::now();
                let status = client.get(url.parse().unwrap()).await.unwrap().status();
                (worker, status.as_u16(), sent.elapsed())
            }
        });
        let answers = join_all(calls).await;
        let wall = started.elapsed();
        let mut per_worker = vec![(Duration::ZERO, 0u32); SIDECARS * WORKERS];
        for (worker, _, latency) in &answers {
            per_worker[*worker].0 += *latency;
            per_worker[*worker].1 += 1;
        }
        let worker_latency: Vec<Duration> = per_worker
            .iter()
            .map(|(total, count)| *total / (*count).max(1))
            .collect();
        let statuses: Vec<u16> = answers.iter().map(|(_, s, _)| *s).collect();
        (wall, statuses, worker_latency, em)
    });
    let throttled = em.counters().quota_exceeded_for("Orders v0 getOrder");
    let failed = statuses.iter().filter(|s| **s == 429).count();
    let minimum = support::fleet_load::minimum(n);
    let (lo, hi) = (
        worker_latency.iter().min().copied().unwrap_or_default(),
        worker_latency.iter().max().copied().unwrap_or_default(),
    );
    println!(
        "{ID}: {SIDECARS} sidecars in fleet mode, {WORKERS} workers each, {n} getOrder calls at \
         {OFFERED}× the plan ({rate}/s, burst {BURST}) from a client that knows no quota"
    );
    println!(
        "  {throttled} × 429 from Amazon, {failed} answered 429, {:.2} s ({:.3}× the minimum \
         {minimum:.2} s), workers' mean latency {lo:.2?}–{hi:.2?}",
        wall.as_secs_f64(),
        wall.as_secs_f64() / minimum
    );
    assert_eq!(throttled, 0, "the sidecars met 429s");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    if mode.bench {
        let (run, written) = support::stamp(&mode);
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        support::record_extra(
            "fleet_pacing_sidecar",
            json!({
                "mode": run,
                "written_unix": written,
                "calls": n,
                "sidecars": SIDECARS,
                "workers": WORKERS,
                "rate_per_s": rate,
                "burst": BURST,
                "minimum_ms": minimum * 1e3,
                "throttled": throttled,
                "failed": failed,
                "wall_ms": ms(&wall),
                "worker_latency_ms": worker_latency.iter().map(ms).collect::<Vec<f64>>(),
            }),
        );
    }
}

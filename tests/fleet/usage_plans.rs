//! Usage-plan buckets shared through Redis: three replicas of 8 workers each send a burst of one
//! operation to the emulator enforcing its plan. With buckets of their own (what the peers do) the
//! replicas together send three times the burst and meet 429s; sharing them through Redis, none.
//!
//! Real time, not paused (real sockets, and Redis's clock): the shared run takes about two
//! seconds (21 calls past the burst at the emulator's 10 a second); every wait is bounded.
#![cfg(all(feature = "redis", feature = "reqwest"))]

use std::time::Duration;

use futures::future::join_all;
use spapi_rdt::SellerId;
use spapi_rdt::catalog::UsagePlan;
use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
use spapi_rdt::pacing::PacingLayer;
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tower::{Layer, ServiceExt};

use crate::support::redis_server::Redis;
use crate::support::stack::{self, Upstream};

/// getOrder: 1 a second, burst 5 in the emulator, 10× faster: 10 a second.
const GET_ORDER: &str = "/orders/v0/orders/902-3159896-1390916";
const REPLICAS: usize = 3;
const WORKERS: usize = 8;

/// Each replica's 8 workers send one getOrder call each, all at once; the replicas pace with
/// buckets of their own, or share them through `redis`. Returns the emulator and the layers.
async fn burst(redis: Option<&Redis>) -> (Emulator, Vec<PacingLayer>) {
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .usage_plans(true)
            .usage_plan_time_scale(10.0)
            .usage_plan("Orders v0 getOrder", UsagePlan::new(1.0, 5).unwrap()),
    )
    .await
    .unwrap();
    let mut layers = Vec::new();
    let mut services = Vec::new();
    for _ in 0..REPLICAS {
        let rdt = stack::default_seller_layer(&em);
        // The plan as the emulator enforces it (its answers would teach it too).
        let mut pacing =
            PacingLayer::builder().plan("Orders v0", "getOrder", UsagePlan::new(10.0, 5).unwrap());
        if let Some(redis) = redis {
            let fleet = RedisFleet::builder(redis.url())
                .key_prefix(redis.prefix())
                .encryption_key(EncryptionKey::from_bytes([7; 32]))
                .build()
                .unwrap();
            pacing = pacing.fleet(&fleet, REPLICAS as u32);
        }
        let pacing = pacing.build().unwrap();
        services.push(rdt.layer(pacing.layer(Upstream::new(stack::http_client()))));
        layers.push(pacing);
    }
    let calls = services.iter().flat_map(|service| {
        (0..WORKERS).map(|_| {
            let mut request = stack::get(&em.origin(), GET_ORDER);
            request.extensions_mut().insert(SellerId::new("default"));
            service.clone().oneshot(request)
        })
    });
    for result in join_all(calls).await {
        result.unwrap();
    }
    (em, layers)
}

/// The usage-plan keys under `redis`'s prefix, and a connection to it.
async fn plan_keys(redis: &Redis) -> (Vec<String>, redis::aio::MultiplexedConnection) {
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:plan:*", redis.prefix()))
        .query_async(&mut con)
        .await
        .unwrap();
    (keys, con)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_share_buckets_through_redis_meet_no_429() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let calls = (REPLICAS * WORKERS) as u64;

    // Buckets of their own: each replica sends its 3 usable slots at once and then one every
    // 100 ms, so together they send three times the plan.
    let (em, layers) = burst(None).await;
    let throttled = em.counters().quota_exceeded_for("Orders v0 getOrder");
    assert!(throttled > 0, "{:?}", em.counters());
    assert_eq!(
        layers.iter().map(|l| l.stats().throttled).sum::<u64>(),
        throttled
    );

    // Shared through Redis: the fleet keeps the plan as one process would.
    let (em, layers) = burst(Some(&redis)).await;
    assert_eq!(em.counters().quota_exceeded_for("Orders v0 getOrder"), 0);
    assert_eq!(em.counters().admitted("Orders v0 getOrder"), calls);
    for layer in &layers {
        let stats = layer.stats();
        assert_eq!(
            (stats.fleet_fallbacks, stats.throttled),
            (0, 0),
            "{stats:?}"
        );
    }
    // One bucket, hash-tagged by the seller, in Redis.
    let (keys, _) = plan_keys(&redis).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with(&format!("{}:plan:{{default}}:", redis.prefix())),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_bucket_in_redis_costs_a_seller_nothing() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let fleet = RedisFleet::builder(redis.url())
        .key_prefix(redis.prefix())
        .encryption_key(EncryptionKey::from_bytes([7; 32]))
        .build()
        .unwrap();
    let em = Emulator::start_with(EmulatorConfig::default().usage_plans(true))
        .await
        .unwrap();
    let pacing = PacingLayer::builder()
        .fleet(&fleet, 1)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let service =
        stack::default_seller_layer(&em).layer(pacing.layer(Upstream::new(stack::http_client())));
    let send = || {
        let mut request = stack::get(&em.origin(), GET_ORDER);
        request.extensions_mut().insert(SellerId::new("default"));
        service.clone().oneshot(request)
    };
    send().await.unwrap();
    // Whatever is written into the seller's bucket (a time years ahead, text), the next call
    // goes at once instead of failing on a wait it would never see the end of.
    let (keys, mut con) = plan_keys(&redis).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    for damage in ["99999999999999999999", "not a number"] {
        let _: () = redis::cmd("SET")
            .arg(&keys[0])
            .arg(damage)
            .query_async(&mut con)
            .await
            .unwrap();
        let response = send().await.unwrap();
        assert_eq!(response.status(), 200, "{damage}");
    }
    assert_eq!(pacing.stats().refused, 0);
}

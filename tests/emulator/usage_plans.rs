//! The pacing layer against the emulator enforcing Amazon's usage plans (10× faster): the same
//! burst of calls draws 429s without the layer and none with it.
//!
//! Real time, not paused: with real sockets, paused time jumps ahead whenever the runtime waits on
//! them, which refills the emulator's buckets in the middle of a burst. The paced run takes about
//! four seconds (21 calls at the emulator's 5 a second); every wait is bounded, so nothing can hang.

use futures::future::join_all;
use spapi_rdt::SellerId;
use spapi_rdt::pacing::PacingLayer;
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tower::{Layer, ServiceExt};

use crate::support::stack::{self, Upstream};

/// getOrder: 0.5 a second, burst 30 in the model; 5 a second in the emulator, 10× faster.
const GET_ORDER: &str = "/orders/v0/orders/902-3159896-1390916";
const WORKERS: usize = 8;
const CALLS_EACH: usize = 6;

/// Sends one getOrder call (it teaches the pacing layer the emulator's rate), then 8 workers × 6
/// at once, with or without pacing below the token layer;
/// returns the statuses Amazon (the emulator) answered.
async fn burst(paced: bool) -> (Vec<u16>, Emulator) {
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .usage_plans(true)
            .usage_plan_time_scale(10.0),
    )
    .await
    .unwrap();
    let rdt = stack::default_seller_layer(&em);
    let upstream = Upstream::new(stack::http_client());
    let pacing = PacingLayer::new();
    let below = if paced {
        tower::util::Either::Left(pacing.layer(upstream.clone()))
    } else {
        tower::util::Either::Right(upstream.clone())
    };
    let service = rdt.layer(below);
    let mut first = stack::get(&em.origin(), GET_ORDER);
    first.extensions_mut().insert(SellerId::new("default"));
    service.clone().oneshot(first).await.unwrap();
    let calls = (0..WORKERS * CALLS_EACH).map(|_| {
        let mut request = stack::get(&em.origin(), GET_ORDER);
        request.extensions_mut().insert(SellerId::new("default"));
        service.clone().oneshot(request)
    });
    for result in join_all(calls).await {
        result.unwrap();
    }
    let statuses = upstream
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.status)
        .collect();
    (statuses, em)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_burst_meets_429s_without_pacing_and_none_with_it() {
    let calls = 1 + WORKERS * CALLS_EACH;
    let (unpaced, em) = burst(false).await;
    let throttled = unpaced.iter().filter(|s| **s == 429).count();
    // The emulator's bucket of 30 lets 29 more through after the first call; of the other 19, at
    // most a refill or two (5 a second) gets through while the burst lasts.
    assert!(throttled >= 15, "{unpaced:?}");
    assert_eq!(
        em.counters().quota_exceeded_for("Orders v0 getOrder"),
        throttled as u64
    );

    let (paced, em) = burst(true).await;
    assert_eq!(paced.len(), calls);
    assert!(paced.iter().all(|s| *s == 200), "{paced:?}");
    assert_eq!(em.counters().quota_exceeded_for("Orders v0 getOrder"), 0);
    assert_eq!(em.counters().admitted("Orders v0 getOrder"), calls as u64);
}

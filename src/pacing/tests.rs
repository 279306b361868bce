//! Fleet mode on paused time: replicas that share their buckets (an in-memory store standing in
//! for Redis) together keep each plan; when the store fails, each paces alone at its share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::{PacingLayer, PacingLayerBuilder};
use crate::catalog::UsagePlan;
use crate::error::{BuildError, FleetError};
use crate::fleet::{FleetFuture, PlanAsk, PlanBucket, PlanSlot, SharedBuckets};
use crate::resource::SellerId;
use crate::time;

const ITEMS: &str = "https://sellingpartnerapi-na.amazon.com/orders/v0/orders/1/orderItems";

/// Shared buckets in memory, the same GCRA as the Redis script, on tokio's clock; and a switch
/// that makes every call fail.
#[derive(Default)]
struct MemoryBuckets {
    tats: Mutex<HashMap<PlanBucket, Instant>>,
    down: AtomicBool,
    calls: std::sync::atomic::AtomicU64,
}

impl MemoryBuckets {
    fn check(&self) -> Result<(), FleetError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(FleetError::new("the store is down"));
        }
        Ok(())
    }
}

impl SharedBuckets for MemoryBuckets {
    fn take<'a>(&'a self, bucket: &'a PlanBucket, ask: PlanAsk) -> FleetFuture<'a, PlanSlot> {
        Box::pin(async move {
            self.check()?;
            let now = Instant::now();
            let mut tats = self.tats.lock().unwrap();
            let tat = tats.get(bucket).copied().unwrap_or(now).max(now);
            let earliest = tat.checked_sub(ask.tolerance).map_or(now, |t| t.max(now));
            let wait = earliest - now;
            if wait > ask.max_wait {
                return Ok(PlanSlot::TooFar(wait));
            }
            if !ask.ahead && wait > Duration::ZERO {
                return Ok(PlanSlot::Retry(wait));
            }
            tats.insert(bucket.clone(), time::add(tat.max(earliest), ask.interval));
            Ok(PlanSlot::Taken(wait))
        })
    }

    fn drain<'a>(&'a self, bucket: &'a PlanBucket, empty_for: Duration) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            self.check()?;
            let until = time::add(Instant::now(), empty_for);
            let mut tats = self.tats.lock().unwrap();
            let tat = tats.entry(bucket.clone()).or_insert(until);
            *tat = (*tat).max(until);
            Ok(())
        })
    }
}

/// Amazon as the replicas see it: when each request arrived (from the test's start), and the
/// statuses to answer in turn (200 once they are used up).
#[derive(Clone)]
struct Amazon {
    start: Instant,
    arrivals: Arc<Mutex<Vec<Duration>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl Amazon {
    fn new(start: Instant) -> Self {
        Amazon {
            start,
            arrivals: Arc::default(),
            statuses: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let amazon = self.clone();
        tower::service_fn(move |_request: Request<String>| {
            let amazon = amazon.clone();
            async move {
                amazon
                    .arrivals
                    .lock()
                    .unwrap()
                    .push(Instant::now() - amazon.start);
                let status = amazon.statuses.lock().unwrap().pop().unwrap_or(200);
                Ok(Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap())
            }
        })
    }

    /// Arrival times in whole seconds, sorted.
    fn seconds(&self) -> Vec<u64> {
        let mut seconds: Vec<u64> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect();
        seconds.sort_unstable();
        seconds
    }
}

fn request() -> Request<String> {
    let mut request = Request::get(ITEMS).body(String::new()).unwrap();
    request.extensions_mut().insert(SellerId::new("A1"));
    request
}

/// A layer pacing getOrderItems at 1 a second, burst 5 (3 usable after the headroom).
fn items() -> PacingLayerBuilder {
    PacingLayer::builder()
        .plan(
            "Orders v0",
            "getOrderItems",
            UsagePlan::new(1.0, 5).unwrap(),
        )
        .max_wait(Duration::from_secs(600))
}

/// A replica's layer, on `store` shared by `replicas`.
fn replica(store: &Arc<MemoryBuckets>, replicas: u32) -> PacingLayer {
    items()
        .shared_buckets(Arc::clone(store) as Arc<dyn SharedBuckets>, replicas)
        .build()
        .unwrap()
}

/// `replicas` layers, each sending `each` requests at once to one Amazon.
async fn run(layers: &[PacingLayer], each: usize, amazon: &Amazon) {
    let calls = layers.iter().flat_map(|layer| {
        let service = layer.layer(amazon.service());
        (0..each).map(move |_| service.clone().oneshot(request()))
    });
    for response in join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn replicas_sharing_buckets_keep_the_plan_together() {
    let store = Arc::new(MemoryBuckets::default());
    let layers: Vec<PacingLayer> = (0..3).map(|_| replica(&store, 3)).collect();
    let amazon = Amazon::new(Instant::now());
    run(&layers, 8, &amazon).await;
    // 24 requests: the 3 usable at once, then one a second, as one process would send them.
    let expected: Vec<u64> = [0, 0].into_iter().chain(0..=21).collect();
    assert_eq!(amazon.seconds(), expected);
    for layer in &layers {
        let stats = layer.stats();
        assert_eq!((stats.fleet_fallbacks, stats.fleet_alone), (0, false));
    }

    // Each replica with buckets of its own (what the peers do) sends three times the burst.
    let amazon = Amazon::new(Instant::now());
    let alone: Vec<PacingLayer> = (0..3).map(|_| items().build().unwrap()).collect();
    run(&alone, 8, &amazon).await;
    assert_eq!(amazon.seconds().iter().filter(|&&s| s == 0).count(), 9);
}

#[tokio::test(start_paused = true)]
async fn when_the_store_fails_each_replica_paces_at_its_share_and_counts_it() {
    let store = Arc::new(MemoryBuckets::default());
    store.down.store(true, Ordering::SeqCst);
    let layers: Vec<PacingLayer> = (0..3).map(|_| replica(&store, 3)).collect();
    let amazon = Amazon::new(Instant::now());
    run(&layers, 4, &amazon).await;
    // Each replica alone: a third of the rate (one every 3 s) and a third of the usable burst
    // (1): together, one a second, as the plan allows.
    let expected: Vec<u64> = [0, 0, 0, 3, 3, 3, 6, 6, 6, 9, 9, 9].to_vec();
    assert_eq!(amazon.seconds(), expected);
    for layer in &layers {
        let stats = layer.stats();
        assert_eq!((stats.fleet_fallbacks, stats.fleet_alone), (4, true));
    }
    // A failed store is left alone for 5 s: one call a replica, not one a request.
    let calls = store.calls.load(Ordering::SeqCst);
    assert!(calls <= 3 * 3, "{calls} calls to a failing store");

    // Back up: after the retry period the replicas share again.
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let amazon = Amazon::new(Instant::now());
    run(&layers, 1, &amazon).await;
    for layer in &layers {
        let stats = layer.stats();
        assert_eq!((stats.fleet_fallbacks, stats.fleet_alone), (4, false));
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_met_by_one_replica_drains_the_bucket_for_all() {
    let store = Arc::new(MemoryBuckets::default());
    let (a, b) = (replica(&store, 2), replica(&store, 2));
    let amazon = Amazon::new(Instant::now());
    // A is throttled once (another application spent the seller's bucket): the shared bucket is
    // drained (3 usable slots of a second), so A's retry waits an interval and its jitter, and
    // B, which had two slots free before, waits for the slot after the retry's.
    *amazon.statuses.lock().unwrap() = vec![429];
    a.layer(amazon.service()).oneshot(request()).await.unwrap();
    b.layer(amazon.service()).oneshot(request()).await.unwrap();
    let arrivals = amazon.arrivals.lock().unwrap().clone();
    let s = Duration::from_secs;
    assert_eq!(arrivals.len(), 3);
    assert!((s(1)..=s(2)).contains(&arrivals[1]), "{arrivals:?}");
    assert_eq!(arrivals[2], s(2), "{arrivals:?}");
    assert_eq!(a.stats().throttled, 1);
}

#[test]
fn replicas_out_of_range_are_named() {
    let store: Arc<dyn SharedBuckets> = Arc::new(MemoryBuckets::default());
    for replicas in [0, PacingLayerBuilder::MAX_REPLICAS + 1] {
        let error = PacingLayer::builder()
            .shared_buckets(Arc::clone(&store), replicas)
            .build()
            .unwrap_err();
        assert!(
            matches!(error, BuildError::Setting { name: "fleet", .. }),
            "{error:?}"
        );
    }
}

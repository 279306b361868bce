//! The fleet path against an in-memory store on paused time: sharing, a failing store, a slow
//! store, and a token a replica found stale. The Redis store has its own tests in
//! `tests/fleet.rs`, on a real server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::core::RequestHead;
use crate::error::{FleetError, SourceError};
use crate::fleet::SharedRateLimiter;
use crate::fleet::SharedTokenStore;
use crate::resource::{Origin, SellerId};
use crate::{IssuedToken, RestrictedDataTokenLayer, SecretToken, TokenSource, source_fn};

/// What the in-memory store does with each call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Works,
    Fails,
    Hangs,
}

#[derive(Default)]
struct Memory {
    records: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
    leases: Mutex<HashMap<String, (String, Instant)>>,
    mode: Mutex<Option<Mode>>,
    calls: AtomicUsize,
    /// Peek by a test to keep reads waiting.
    gate: tokio::sync::Mutex<()>,
    /// The rate limiter's next answers (then `Granted`).
    admissions: Mutex<std::collections::VecDeque<Admission>>,
}

impl Memory {
    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = Some(mode);
    }

    /// Runs `f` as the store would, or fails, or hangs.
    fn run<'a, T: Send + 'a>(&'a self, f: impl FnOnce() -> T + Send + 'a) -> FleetFuture<'a, T> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.lock().unwrap().unwrap_or(Mode::Works);
        Box::pin(async move {
            match mode {
                Mode::Works => Ok(f()),
                Mode::Fails => Err(FleetError::new("connection refused")),
                Mode::Hangs => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(f())
                }
            }
        })
    }
}

impl SharedTokenStore for Memory {
    fn get<'a>(&'a self, key: &'a FleetKey) -> FleetFuture<'a, Option<TokenRecord>> {
        Box::pin(async move {
            let _open = self.gate.lock().await;
            self.run(move || {
                let now = Instant::now();
                let records = self.records.lock().unwrap();
                let (bytes, until) = records.get(key.name()).filter(|(_, until)| now < *until)?;
                Some(TokenRecord::new(bytes.clone(), *until - now))
            })
            .await
        })
    }
    fn put<'a>(&'a self, key: &'a FleetKey, record: TokenRecord) -> FleetFuture<'a, ()> {
        self.run(move || {
            let until = crate::time::add(Instant::now(), record.ttl());
            let mut records = self.records.lock().unwrap();
            records.insert(key.name().to_owned(), (record.into_bytes(), until));
        })
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a FleetKey,
        holder: &'a str,
        ttl: Duration,
    ) -> FleetFuture<'a, bool> {
        self.run(move || {
            let now = Instant::now();
            let mut leases = self.leases.lock().unwrap();
            match leases.get(key.name()) {
                Some((h, until)) if now < *until && h != holder => false,
                _ => {
                    leases.insert(
                        key.name().to_owned(),
                        (holder.to_owned(), crate::time::add(now, ttl)),
                    );
                    true
                }
            }
        })
    }
    fn release<'a>(&'a self, key: &'a FleetKey, holder: &'a str) -> FleetFuture<'a, ()> {
        self.run(move || {
            let mut leases = self.leases.lock().unwrap();
            if leases.get(key.name()).is_some_and(|(h, _)| h == holder) {
                leases.remove(key.name());
            }
        })
    }
}

impl SharedRateLimiter for Memory {
    fn acquire<'a>(
        &'a self,
        _: &'a SellerId,
        _: &'a Origin,
        _: TokenQuota,
    ) -> FleetFuture<'a, Admission> {
        self.run(|| {
            let mut next = self.admissions.lock().unwrap();
            next.pop_front().unwrap_or(Admission::Granted)
        })
    }
}

/// A source that numbers its tokens, shared by every replica of a test.
fn source(calls: &Arc<AtomicUsize>) -> impl TokenSource {
    let calls = Arc::clone(calls);
    source_fn(move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let token = SecretToken::new(format!("Atz.sprdt|token-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    })
}

fn replica(calls: &Arc<AtomicUsize>, store: &Arc<Memory>) -> RestrictedDataTokenLayer {
    RestrictedDataTokenLayer::builder(source(calls))
        .fleet(Fleet::new(Arc::clone(store), Arc::clone(store)))
        .build()
        .unwrap()
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://sellingpartnerapi-na.amazon.com{path}"))
        .body(())
        .unwrap()
}

async fn token(layer: &RestrictedDataTokenLayer, path: &str) -> String {
    let request = get(path);
    let granted = layer
        .core()
        .grant(RequestHead::of(&request))
        .await
        .unwrap()
        .unwrap();
    granted.header.to_str().unwrap().to_owned()
}

#[tokio::test(start_paused = true)]
async fn replicas_share_one_fetch_per_key() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let replicas: Vec<_> = (0..5).map(|_| replica(&calls, &store)).collect();
    let tokens = futures_util::future::join_all(
        replicas
            .iter()
            .map(|r| token(r, "/orders/v0/orders/1/address")),
    )
    .await;
    assert!(
        tokens.iter().all(|t| t == "Atz.sprdt|token-1"),
        "{tokens:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats: Vec<_> = replicas.iter().map(|r| r.stats()).collect();
    assert_eq!(stats.iter().map(|s| s.fleet_hits).sum::<u64>(), 4);
    assert_eq!(stats.iter().map(|s| s.fleet_fallbacks).sum::<u64>(), 0);
    // A local hit never asks the store.
    let before = store.calls.load(Ordering::SeqCst);
    token(&replicas[0], "/orders/v0/orders/2/address").await;
    assert_eq!(store.calls.load(Ordering::SeqCst), before);
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_fails_no_request_and_is_retried_later() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    store.set_mode(Mode::Fails);
    let layer = replica(&calls, &store);
    assert_eq!(
        token(&layer, "/orders/v0/orders/1/address").await,
        "Atz.sprdt|token-1"
    );
    assert_eq!(layer.stats().fleet_fallbacks, 1);
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    // Within the retry period the store is left alone.
    assert_eq!(
        token(&layer, "/mfn/v0/shipments/1").await,
        "Atz.sprdt|token-2"
    );
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().fleet_fallbacks, 2);
    // After it, the store is asked again, and used once it works.
    store.set_mode(Mode::Works);
    tokio::time::advance(Duration::from_secs(6)).await;
    token(&layer, "/shipping/v1/shipments/1").await;
    assert!(store.calls.load(Ordering::SeqCst) > 1);
    assert_eq!(layer.stats().fleet_fallbacks, 2);
    let other = replica(&calls, &store);
    token(&other, "/shipping/v1/shipments/9").await;
    assert_eq!(other.stats().fleet_hits, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_is_cut_off_at_the_call_timeout() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    store.set_mode(Mode::Hangs);
    let layer = replica(&calls, &store);
    let started = Instant::now();
    assert_eq!(
        token(&layer, "/orders/v0/orders/1/address").await,
        "Atz.sprdt|token-1"
    );
    // One bounded store call (200 ms), then the source (20 ms): on paused time, exactly.
    assert_eq!(started.elapsed(), Duration::from_millis(220));
    assert_eq!(layer.stats().fleet_fallbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_found_stale_is_not_taken_back_from_the_store() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let a = replica(&calls, &store);
    let b = replica(&calls, &store);
    let path = "/orders/v0/orders/1/address";
    assert_eq!(token(&a, path).await, "Atz.sprdt|token-1");
    assert_eq!(token(&b, path).await, "Atz.sprdt|token-1");
    // Amazon answered 403 to A with token 1: A drops it, and does not take it back from the
    // store, but fetches a new one and shares it.
    assert!(a.invalidate(&get(path)));
    assert_eq!(token(&a, path).await, "Atz.sprdt|token-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // B meets the 403 later: it finds token 2 in the store.
    assert!(b.invalidate(&get(path)));
    assert_eq!(token(&b, path).await, "Atz.sprdt|token-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_held_lease_makes_others_wait_then_take_over() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let layer = replica(&calls, &store);
    let request = get("/orders/v0/orders/1/address");
    let token_request = layer
        .core()
        .token_request_for(RequestHead::of(&request))
        .unwrap();
    let key = FleetKey::for_request(&token_request);
    assert!(
        store
            .try_lease(&key, "dead-replica", Duration::from_secs(5))
            .await
            .unwrap()
    );
    let started = Instant::now();
    assert_eq!(
        token(&layer, "/orders/v0/orders/1/address").await,
        "Atz.sprdt|token-1"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    assert!(
        waited < Duration::from_secs(5) + Duration::from_millis(200),
        "{waited:?}"
    );
    assert_eq!(layer.stats().fleet_waits, 1);
}

#[test]
fn a_store_that_keeps_failing_is_warned_about_once_a_minute() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
        store.set_mode(Mode::Fails);
        let layer = replica(&calls, &store);
        let fetch = |seller: u32| {
            let mut request = get("/orders/v0/orders/1/address");
            request
                .extensions_mut()
                .insert(SellerId::new(format!("seller-{seller}")));
            let core = Arc::clone(layer.core());
            async move {
                core.grant(RequestHead::of(&request))
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        // Eight fetches in 48 s, each one asking the store again (the retry period is 5 s):
        // eight failures, one warning.
        for seller in 0..8 {
            fetch(seller).await;
            tokio::time::advance(Duration::from_secs(6)).await;
        }
        let fleet = layer.core().shared.as_ref().unwrap();
        let fleet = fleet.as_any().downcast_ref::<FleetState>().unwrap();
        let warnings = || fleet.health.warnings();
        assert_eq!(store.calls.load(Ordering::SeqCst), 8);
        assert_eq!(warnings(), 1);
        // A minute after the first warning, the next failure warns again.
        tokio::time::advance(Duration::from_secs(13)).await;
        fetch(8).await;
        assert_eq!(warnings(), 2);
        assert_eq!(layer.stats().fleet_fallbacks, 9);
        assert_eq!(calls.load(Ordering::SeqCst), 9);
    });
}

#[test]
fn the_shared_quota_is_spaced_by_the_margin() {
    let state = FleetState::new(
        Fleet::new(Memory::default(), Memory::default()),
        TokenQuota::default(),
        Duration::from_millis(100),
    );
    assert_eq!(state.quota.burst(), 10);
    assert!((1.0 / state.quota.per_second() - 1.1).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn a_store_ttl_extended_by_someone_else_does_not_extend_a_token() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let replica = replica(&calls, &store);
    let path = "/orders/v0/orders/1/address";
    assert_eq!(token(&replica, path).await, "Atz.sprdt|token-1");
    // Anyone who can write to the store extends every record by ten days.
    for (_, until) in store.records.lock().unwrap().values_mut() {
        *until += Duration::from_secs(10 * 86_400);
    }
    // Two hours on, the token sealed in the record has expired, whatever the store says.
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    assert_eq!(token(&replica, path).await, "Atz.sprdt|token-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_shared_for_its_back_off() {
    let (calls, store) = (Arc::new(AtomicUsize::new(0)), Arc::new(Memory::default()));
    let counter = Arc::clone(&calls);
    let refusing = move || {
        let counter = Arc::clone(&counter);
        source_fn(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<IssuedToken, _>(
                    SourceError::permanent("no role for this operation")
                        .with_status(http::StatusCode::FORBIDDEN),
                )
            }
        })
    };
    let replicas: Vec<_> = (0..5)
        .map(|_| {
            RestrictedDataTokenLayer::builder(refusing())
                .fleet(Fleet::new(Arc::clone(&store), Arc::clone(&store)))
                .build()
                .unwrap()
        })
        .collect();
    let request = get("/orders/v0/orders/1/address");
    for replica in &replicas {
        let Err(err) = replica.core().grant(RequestHead::of(&request)).await else {
            panic!("a token without a source");
        };
        let source = err.source_error().unwrap();
        assert_eq!(source.message(), "no role for this operation");
        assert_eq!(source.status(), Some(http::StatusCode::FORBIDDEN));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one replica asked, the others were told"
    );
    // Past the permanent-error TTL, the next replica asks again.
    tokio::time::advance(Duration::from_secs(61)).await;
    let fresh = RestrictedDataTokenLayer::builder(refusing())
        .fleet(Fleet::new(Arc::clone(&store), Arc::clone(&store)))
        .build()
        .unwrap();
    let _ = fresh.core().grant(RequestHead::of(&request)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_drop_made_during_a_store_read_is_not_undone() {
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let replica = replica(&calls, &store);
    let path = "/orders/v0/orders/1/address";
    assert_eq!(token(&replica, path).await, "Atz.sprdt|token-1");
    // A fetch of this key through the fleet (as for a bundle whose token lacks an operation)
    // while token 1 is current, with its store read held...
    let core = Arc::clone(replica.core());
    let request = get(path);
    let head = RequestHead::of(&request);
    let key = core.key_of(head).unwrap();
    let (seller, key) = (key.seller, key.slot);
    let slot = core.cache.slot(seller, key);
    let token_request = core.token_request_for(head).unwrap();
    let gate = store.gate.lock().await;
    let fetch = {
        let (core, slot) = (Arc::clone(&core), Arc::clone(&slot));
        tokio::spawn(async move {
            let deadline = crate::time::add(Instant::now(), Duration::from_secs(60));
            core.fetch_entry(&token_request, None, &slot, deadline)
                .await
                .map(|entry| entry.header.to_str().unwrap().to_owned())
        })
    };
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    // ...a 403 drops token 1; the store still holds it, fresh.
    assert!(replica.invalidate(&get(path)));
    drop(gate);
    let fetched = fetch.await.unwrap().unwrap();
    assert_eq!(fetched, "Atz.sprdt|token-2");
}

#[tokio::test(start_paused = true)]
async fn a_fleet_wait_longer_than_the_quota_can_need_is_cut_to_one_interval() {
    // Someone wrote a huge value into the seller's rate-limit key: the shared limiter believes the
    // next call must wait 3,000 years. The quota (1/s, burst 10, spaced by the default 100 ms rate
    // margin) never needs more than 1.1 s.
    let (calls, store) = (Arc::default(), Arc::new(Memory::default()));
    let absurd = Duration::from_secs(98_203_716_768);
    store.admissions.lock().unwrap().extend([
        Admission::RetryAfter(absurd),
        Admission::RetryAfter(Duration::MAX),
    ]);
    let layer = replica(&calls, &store);
    let started = Instant::now();
    assert_eq!(
        token(&layer, "/orders/v0/orders/1/address").await,
        "Atz.sprdt|token-1"
    );
    // Two believed waits of one interval each, then the source's 20 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(2 * 1_100 + 20));
    assert_eq!(layer.stats().rate_limit_waits, 1);
}

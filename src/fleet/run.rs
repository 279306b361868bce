//! The fetch path in fleet mode: look in the shared store, else lease, fetch under the shared rate
//! limit, store and release; and fall back to this replica alone when the shared store fails.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::HeaderValue;
use tokio::time::Instant;

use super::{Admission, Fleet, FleetError, FleetFuture, FleetKey, TokenRecord, record};
use crate::cache::{Backoff, CachedToken, Slot, TokenCache};
use crate::core::{FetchJob, SharedTokens};
use crate::error::FetchError;
use crate::limit::TokenQuota;
use crate::resource::TokenRequest;
use crate::source::ErrorKind;
use crate::stats::{Counter, Counters};
use crate::time;

/// How often, at most, a warning says that the shared store is failing.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Fleet mode's configuration and the shared store's health, as the core holds them.
pub(crate) struct FleetState {
    config: Fleet,
    /// The quota the shared limiter enforces: the layer's, spaced by the rate margin.
    quota: TokenQuota,
    health: Mutex<Health>,
    /// The wall clock (Unix milliseconds) when this layer was built, and the monotonic instant it
    /// corresponds to: the write time sealed in records is read against this clock, which runs
    /// with tokio's (and so with paused time in tests).
    wall_anchor: (u64, Instant),
}

#[derive(Default)]
struct Health {
    /// While set and in the future, the shared store is not called.
    down_until: Option<Instant>,
    /// Whether the last call failed (so that a success is worth a log line).
    degraded: bool,
    last_warning: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
    /// Warnings logged so far (tests read it: tracing's process-wide interest cache makes counting
    /// log events unreliable while other tests run in parallel).
    warnings: u64,
}

impl FleetState {
    pub(crate) fn new(config: Fleet, quota: TokenQuota) -> Self {
        // The interval between admitted calls grows by the margin; the burst stays.
        let interval = quota.interval(config.rate_margin);
        let quota = TokenQuota::new(1.0 / interval.as_secs_f64(), quota.burst()).unwrap_or(quota);
        FleetState {
            config,
            quota,
            health: Mutex::new(Health::default()),
            wall_anchor: (unix_millis(SystemTime::now()), Instant::now()),
        }
    }

    /// The wall-clock time at `now`, in Unix milliseconds.
    fn wall_ms(&self, now: Instant) -> u64 {
        let (anchor_ms, anchor) = self.wall_anchor;
        let since =
            u64::try_from(now.saturating_duration_since(anchor).as_millis()).unwrap_or(u64::MAX);
        anchor_ms.saturating_add(since)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // Every update is a few plain assignments: a poisoned lock is still consistent.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the shared store may be called now (it has not failed within `retry_after`).
    fn available(&self) -> bool {
        self.health()
            .down_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Runs one shared call, bounded by the call timeout, and keeps the health up to date.
    async fn call<T>(&self, what: &'static str, call: FleetFuture<'_, T>) -> Result<T, ()> {
        let timeout = self.config.call_timeout;
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(FleetError::timed_out(what, timeout)),
        };
        match result {
            Ok(value) => {
                self.succeeded();
                Ok(value)
            }
            Err(error) => {
                self.failed(what, &error);
                Err(())
            }
        }
    }

    fn succeeded(&self) {
        let mut health = self.health();
        if health.degraded {
            health.degraded = false;
            health.down_until = None;
            drop(health);
            tracing::info!("fleet mode: the shared token store answers again; back to shared mode");
        }
    }

    fn failed(&self, what: &'static str, error: &FleetError) {
        let now = Instant::now();
        let retry_after = self.config.retry_after;
        let mut health = self.health();
        health.degraded = true;
        health.down_until = Some(time::add(now, retry_after));
        health.unreported += 1;
        let due = health
            .last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
        if due {
            let failures = std::mem::take(&mut health.unreported);
            health.last_warning = Some(now);
            health.warnings += 1;
            drop(health);
            tracing::warn!(
                call = what, %error, failures, ?retry_after,
                "fleet mode: the shared token store failed; this replica uses its own cache and rate limiter until it answers again"
            );
        } else {
            drop(health);
            tracing::debug!(call = what, %error, "fleet mode: shared token store call failed");
        }
    }
}

/// `at` in milliseconds since the Unix epoch (zero before it).
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random id for one fetch's lease. Not a secret: it only tells leases apart.
fn lease_holder() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// `base` jittered between half and one and a half of it.
fn jittered(base: Duration) -> Duration {
    time::scale(base, 0.5 + fastrand::f64())
}

impl SharedTokens for FleetState {
    fn fetch<'a>(&'a self, job: FetchJob<'a>) -> BoxFuture<'a, Result<CachedToken, FetchError>> {
        Box::pin(self.fetch_shared(job))
    }

    fn admit<'a>(
        &'a self,
        request: &'a TokenRequest,
        deadline: Instant,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(self.admit_shared(request, deadline, counters))
    }

    fn describe(&self) -> &dyn fmt::Debug {
        &self.config
    }

    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl FleetState {
    /// A token for `job`: another replica's from the shared store, or one this replica fetches
    /// under the key's lease and shares. Falls back to this replica alone when the shared store
    /// fails.
    async fn fetch_shared(&self, job: FetchJob<'_>) -> Result<CachedToken, FetchError> {
        let FetchJob {
            request,
            bundle,
            slot,
            cache,
            backoff,
            counters,
            fetch_here,
        } = job;
        let key = match bundle {
            Some(ops) => FleetKey::for_bundle(request, ops),
            None => FleetKey::for_request(request),
        };
        let fall_back = || {
            counters.bump(Counter::FleetFallbacks);
            tracing::debug!(seller = %request.seller(), "fleet mode unavailable: fetching with this replica's cache and limiter");
        };
        let store = &self.config.store;
        if !self.available() {
            {
                fall_back();
                return fetch_here.await;
            };
        }
        let answer = |found| self.shared_answer(found, slot, cache, backoff, counters);

        // Another replica's token?
        match self.call("get", store.get(&key)).await {
            Ok(found) => {
                if let Some(answer) = answer(found) {
                    tracing::debug!(seller = %request.seller(), "answer taken from the shared store");
                    return answer;
                }
            }
            Err(()) => {
                fall_back();
                return fetch_here.await;
            }
        }

        // Take the lease, or wait for its holder's token.
        let holder = lease_holder();
        let ttl = self.config.lease_ttl;
        let mut waited = false;
        loop {
            match self
                .call("lease", store.try_lease(&key, &holder, ttl))
                .await
            {
                Ok(true) => break,
                Ok(false) => {}
                Err(()) => {
                    fall_back();
                    return fetch_here.await;
                }
            }
            if !waited {
                waited = true;
                counters.bump(Counter::FleetWaits);
                tracing::debug!(seller = %request.seller(), "another replica is fetching this token: waiting for it");
            }
            // The fetch's own deadline bounds the wait (the caller times the whole fetch out).
            tokio::time::sleep(jittered(self.config.poll_interval)).await;
            match self.call("get", store.get(&key)).await {
                Ok(found) => {
                    if let Some(answer) = answer(found) {
                        return answer;
                    }
                }
                Err(()) => {
                    fall_back();
                    return fetch_here.await;
                }
            }
        }

        // We hold the lease. The previous holder may have stored its token just before letting go.
        if let Ok(found) = self.call("get", store.get(&key)).await
            && let Some(answer) = answer(found)
        {
            let _ = self.call("release", store.release(&key, &holder)).await;
            return answer;
        }

        // Fetch, renewing the lease while it runs.
        let entry = tokio::select! {
            biased;
            fetched = fetch_here => fetched,
            () = renew_lease(self, &key, &holder) => Err(FetchError::Aborted),
        };
        // A failure of the source is shared for its back-off, so the other replicas do not
        // repeat it; a failure of this replica's own (its rate limit, its deadline) is not.
        if let Err(error @ FetchError::Source(_)) = &entry
            && self.available()
        {
            let ttl = backoff.remember_for(error, 1);
            let bytes = record::encode_failure(error, self.wall_ms(Instant::now()));
            if !ttl.is_zero() {
                let record = TokenRecord::new(bytes, ttl);
                let _ = self.call("put", store.put(&key, record)).await;
            }
        }
        if let Ok(entry) = &entry
            && self.available()
        {
            let now = Instant::now();
            let usable = entry.hard.saturating_duration_since(now);
            let fresh = entry.soft.saturating_duration_since(now);
            let bytes = record::encode(
                &entry.header,
                fresh,
                usable,
                entry.bundle.as_deref(),
                now,
                self.wall_ms(now),
            );
            if !usable.is_zero() {
                let record = TokenRecord::new(bytes, usable);
                let _ = self.call("put", store.put(&key, record)).await;
            }
        }
        if self.available() {
            let _ = self.call("release", store.release(&key, &holder)).await;
        }
        entry
    }

    /// What a record from the shared store answers: a token (counted as a fleet hit), another
    /// replica's failure still in its back-off, or nothing usable. The token this replica dropped
    /// last is read after the store answered, so a drop made during the read is not undone.
    fn shared_answer(
        &self,
        found: Option<TokenRecord>,
        slot: &Slot,
        cache: &TokenCache,
        backoff: &Backoff,
        counters: &Counters,
    ) -> Option<Result<CachedToken, FetchError>> {
        let found = found?;
        if let Some((error, written_ms)) = record::decode_failure(found.as_bytes()) {
            // The store's time to live is the back-off, bounded by the longest this layer would
            // remember such a failure itself.
            let longest = match error.kind() {
                ErrorKind::Permanent => backoff.permanent,
                ErrorKind::Transient => backoff.transient_max,
            };
            let age = self.wall_ms(Instant::now()).saturating_sub(written_ms);
            if Duration::from_millis(age) >= longest {
                return None;
            }
            tracing::debug!("another replica's fetch failed moments ago: sharing its error");
            return Some(Err(error));
        }
        let entry = self.shared_entry(found, slot.revoked().as_ref(), cache)?;
        counters.bump(Counter::FleetHits);
        Some(Ok(entry))
    }

    /// Turns a record from the shared store into a cache entry, if it is still fresh and is not the
    /// token this replica last found stale (a 403 made it drop it).
    fn shared_entry(
        &self,
        found: TokenRecord,
        revoked: Option<&HeaderValue>,
        cache: &TokenCache,
    ) -> Option<CachedToken> {
        let now = Instant::now();
        let left = found.ttl();
        let decoded = record::decode(found.as_bytes(), now);
        let Some(mut record) = decoded else {
            tracing::debug!("unreadable record in the shared store: fetching anew");
            return None;
        };
        // The expiry sealed in the record wins over the store's time to live, which anyone who
        // can write to the store can extend. A write time ahead of this clock counts as now.
        let age = Duration::from_millis(self.wall_ms(now).saturating_sub(record.written_ms));
        // A record is believed no longer than any token a source states.
        record.usable = record.usable.min(time::MAX_TOKEN_LIFETIME);
        let left = left.min(record.usable.saturating_sub(age));
        let elapsed = record.usable - left;
        let fresh_left = record.fresh.saturating_sub(elapsed);
        if fresh_left.is_zero() || revoked == Some(&record.token) {
            return None;
        }
        if let Some(bundle) = &mut record.bundle {
            for denied in &mut bundle.denied {
                denied.since = denied.since.checked_sub(elapsed).unwrap_or(denied.since);
            }
        }
        Some(cache.entry_with_deadlines(
            record.token,
            time::add(now, fresh_left),
            time::add(now, left),
            record.bundle,
        ))
    }

    /// Takes a cell of the shared rate limit for `request`'s seller and origin, waiting for one
    /// until `deadline`. When the shared limiter fails, the local limiter (already passed) is all
    /// there is.
    async fn admit_shared(
        &self,
        request: &TokenRequest,
        deadline: Instant,
        counters: &Counters,
    ) -> Result<(), FetchError> {
        let start = Instant::now();
        let mut counted = false;
        loop {
            if !self.available() {
                return Ok(());
            }
            let call = self
                .config
                .limiter
                .acquire(request.seller(), request.origin(), self.quota);
            match self.call("rate limit", call).await {
                Ok(Admission::Granted) => {
                    if counted {
                        tracing::debug!(seller = %request.seller(), waited = ?start.elapsed(), "waited for the fleet's token-call rate limit");
                    }
                    return Ok(());
                }
                Ok(Admission::RetryAfter(wait)) => {
                    let wait = wait.max(Duration::from_millis(1));
                    let now = Instant::now();
                    if time::add(now, wait) > deadline {
                        return Err(FetchError::RateLimited {
                            needed: now.saturating_duration_since(start).saturating_add(wait),
                        });
                    }
                    if !counted {
                        counted = true;
                        counters.bump(Counter::RateLimitWaits);
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(()) => {
                    counters.bump(Counter::FleetFallbacks);
                    return Ok(());
                }
            }
        }
    }
}

/// Renews `holder`'s lease on `key` every third of its time to live. Never returns: it runs beside
/// the fetch it covers and stops with it.
async fn renew_lease(fleet: &FleetState, key: &FleetKey, holder: &str) {
    let ttl = fleet.config.lease_ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        if fleet.available() {
            let _ = fleet
                .call("lease", fleet.config.store.try_lease(key, holder, ttl))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fleet path against an in-memory store on paused time: sharing, a failing store, a slow
    //! store, and a token a replica found stale. The Redis store has its own tests in
    //! `tests/fleet.rs`, on a real server.

    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::fleet::SharedRateLimiter;
    use crate::fleet::SharedTokenStore;
    use crate::resource::{Origin, SellerId};
    use crate::{
        IssuedToken, RestrictedDataTokenLayer, SecretToken, SourceError, TokenSource, source_fn,
    };

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
        /// Held by a test to keep reads waiting.
        gate: tokio::sync::Mutex<()>,
    }

    impl Memory {
        fn set_mode(&self, mode: Mode) {
            *self.mode.lock().unwrap() = Some(mode);
        }

        /// Runs `f` as the store would, or fails, or hangs.
        fn run<'a, T: Send + 'a>(
            &'a self,
            f: impl FnOnce() -> T + Send + 'a,
        ) -> FleetFuture<'a, T> {
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
                    let (bytes, until) =
                        records.get(key.name()).filter(|(_, until)| now < *until)?;
                    Some(TokenRecord::new(bytes.clone(), *until - now))
                })
                .await
            })
        }
        fn put<'a>(&'a self, key: &'a FleetKey, record: TokenRecord) -> FleetFuture<'a, ()> {
            self.run(move || {
                let until = Instant::now() + record.ttl();
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
                        leases.insert(key.name().to_owned(), (holder.to_owned(), now + ttl));
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
            self.run(|| Admission::Granted)
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
            .grant(request.method(), request.uri(), request.extensions())
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
            .token_request_for(request.method(), request.uri(), request.extensions())
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
                    core.grant(request.method(), request.uri(), request.extensions())
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
            let warnings = || fleet.health().warnings;
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
            let Err(err) = replica
                .core()
                .grant(request.method(), request.uri(), request.extensions())
                .await
            else {
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
        let _ = fresh
            .core()
            .grant(request.method(), request.uri(), request.extensions())
            .await;
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
        let (method, uri, ext) = (request.method(), request.uri(), request.extensions());
        let (seller, key, _) = core.key_of(method, uri, ext).unwrap();
        let slot = core.cache.slot(seller, key);
        let token_request = core.token_request_for(method, uri, ext).unwrap();
        let gate = store.gate.lock().await;
        let fetch = {
            let (core, slot) = (Arc::clone(&core), Arc::clone(&slot));
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
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
}

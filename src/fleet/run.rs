//! The fetch path in fleet mode: look in the shared store, else lease, fetch under the shared rate
//! limit, store and release; and fall back to this replica alone when the shared store fails.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use http::HeaderValue;
use tokio::time::Instant;

use super::health::StoreHealth;
use super::{Admission, Fleet, FleetFuture, FleetKey, TokenRecord, record};
use crate::cache::{CachedToken, FailureMemory, Slot, TokenCache};
use crate::core::{FetchJob, SharedTokens};
use crate::error::ErrorKind;
use crate::error::FetchError;
use crate::limit::TokenQuota;
use crate::resource::TokenRequest;
use crate::stats::{Counter, Counters};
use crate::time;

/// Fleet mode's configuration and the shared store's health, as the core holds them.
pub(crate) struct FleetState {
    config: Fleet,
    /// The quota the shared limiter enforces: the layer's, spaced by the rate margin.
    quota: TokenQuota,
    health: StoreHealth,
    /// The wall clock (Unix milliseconds) when this layer was built, and the monotonic instant it
    /// corresponds to: the write time sealed in records is read against this clock, which runs
    /// with tokio's (and so with paused time in tests).
    wall_anchor: (u64, Instant),
}

impl FleetState {
    /// Fleet mode with `config`, its shared limiter enforcing `quota` spaced by `margin`.
    pub(crate) fn new(config: Fleet, quota: TokenQuota, margin: Duration) -> Self {
        // The interval between admitted calls grows by the margin; the burst stays.
        let interval = quota.interval(margin);
        let quota = TokenQuota::new(1.0 / interval.as_secs_f64(), quota.burst()).unwrap_or(quota);
        let health = StoreHealth::new(
            "the shared token store",
            "its own cache and rate limiter",
            config.call_timeout,
            config.retry_after,
        );
        FleetState {
            config,
            quota,
            health,
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

    /// Whether the shared store may be called now (it has not failed within `retry_after`).
    fn available(&self) -> bool {
        self.health.available()
    }

    /// Runs one shared call, bounded by the call timeout, and keeps the health up to date.
    async fn call<T>(&self, what: &'static str, call: FleetFuture<'_, T>) -> Result<T, ()> {
        self.health.call(what, call).await
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
    fn alone(&self) -> bool {
        self.health.degraded()
    }

    fn fetch<'a>(&'a self, job: FetchJob<'a>) -> BoxFuture<'a, Result<CachedToken, FetchError>> {
        Box::pin(self.fetch_shared(job))
    }

    fn admit<'a>(
        &'a self,
        request: &'a TokenRequest,
        deadline: Instant,
        waited_locally: bool,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(self.admit_shared(request, deadline, waited_locally, counters))
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
            failures,
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
        let answer = |found| self.shared_answer(found, slot, cache, failures, counters);

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
            let ttl = failures.remember_for(error, 1);
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
            let usable = entry.usable_until.saturating_duration_since(now);
            let fresh = entry.refresh_at.saturating_duration_since(now);
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
        failures: &FailureMemory,
        counters: &Counters,
    ) -> Option<Result<CachedToken, FetchError>> {
        let found = found?;
        if let Some((error, written_ms)) = record::decode_failure(found.as_bytes()) {
            // The store's time to live is the back-off, bounded by the longest this layer would
            // remember such a failure itself.
            let longest = match error.kind() {
                ErrorKind::Permanent => failures.permanent,
                ErrorKind::Transient => failures.transient_max,
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
    /// there is. `waited_locally`: the local limiter made this call wait and counted it already.
    async fn admit_shared(
        &self,
        request: &TokenRequest,
        deadline: Instant,
        waited_locally: bool,
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
                    // The shared limiter's answer is an outside number: a limiter enforcing this
                    // quota never asks for more than one interval (a damaged or hostile value in
                    // its store could ask for years), so a longer wait is cut to one interval and
                    // the limiter asked again.
                    let wait = wait.clamp(
                        Duration::from_millis(1),
                        self.quota.interval(Duration::ZERO),
                    );
                    let now = Instant::now();
                    if time::add(now, wait) > deadline {
                        return Err(FetchError::RateLimited {
                            needed: now.saturating_duration_since(start).saturating_add(wait),
                        });
                    }
                    if !counted {
                        counted = true;
                        if !waited_locally {
                            counters.bump(Counter::RateLimitWaits);
                        }
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
mod tests;

//! Fetching a token: one task per key (single flight) that no caller can cancel, under the rate
//! limit, with retries, through the replicas' shared store in fleet mode, and published to every
//! waiter.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::cache::{
    BundleId, BundleInfo, CachedToken, FailureMemory, FetchOutcome, ScopeRef, SharedFetch, Slot,
    SlotKeyRef, TokenCache,
};
use crate::catalog::OperationId;
use crate::error::SourceError;
use crate::error::{Error, FetchError};
use crate::resource::{SellerId, TokenRequest};
use crate::source::TokenSource;
use crate::stats::{Counter, Counters};
use crate::time;
use crate::token::IssuedToken;

use super::Core;

/// A token store and rate limiter shared with other replicas (fleet mode), as the core uses them.
///
/// On a local miss the core hands [`fetch`](Self::fetch) the job, including its own fetch not yet
/// started; before each call to the token source it asks [`admit`](Self::admit). The
/// [`fleet`](crate::fleet) module implements it; the core names no fleet type.
pub(crate) trait SharedTokens: Send + Sync {
    /// A token for `job`: another replica's, or the one `job.fetch_here` fetches (shared with the
    /// others afterwards), or `job.fetch_here`'s alone when the shared store fails.
    fn fetch<'a>(&'a self, job: FetchJob<'a>) -> BoxFuture<'a, Result<CachedToken, FetchError>>;

    /// Waits until `deadline` at most for a call under the limit shared by every replica.
    /// `waited_locally`: the local limiter already made this call wait (and counted it), so a
    /// further wait here is the same wait in the counters.
    fn admit<'a>(
        &'a self,
        request: &'a TokenRequest,
        deadline: Instant,
        waited_locally: bool,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), FetchError>>;

    /// Whether the replica works alone now: its last shared call failed.
    fn alone(&self) -> bool;

    /// Its settings, for `Debug`.
    fn describe(&self) -> &dyn fmt::Debug;

    /// For tests that look inside the implementation.
    #[cfg(test)]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// One local miss, as handed to [`SharedTokens::fetch`].
pub(crate) struct FetchJob<'a> {
    /// What the token source would be asked.
    pub(crate) request: &'a TokenRequest,
    /// For a bundled token: its operations.
    pub(crate) bundle: Option<&'a [OperationId]>,
    /// The slot the token goes into (it knows which token this replica last dropped).
    pub(crate) slot: &'a Slot,
    /// Makes cache entries (it numbers their generations).
    pub(crate) cache: &'a TokenCache,
    /// How long failures are remembered.
    pub(crate) failures: &'a FailureMemory,
    /// The layer's counters.
    pub(crate) counters: &'a Counters,
    /// This replica's own fetch (rate limit, source, retries), not started yet.
    pub(crate) fetch_here: BoxFuture<'a, Result<CachedToken, FetchError>>,
}

impl Core {
    /// Spawns the fetch for `slot` as its own task, so that no caller dropping its future can cancel
    /// it, and returns the shared handle every waiter polls.
    pub(super) fn start_fetch(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
    ) -> SharedFetch {
        let request = self.token_request(seller, key);
        let bundle = match key.scope {
            ScopeRef::Bundle { bundle } => Some(bundle),
            _ => None,
        };
        let core = Arc::clone(self);
        let slot = Arc::clone(slot);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let deadline = time::add(started, core.settings.fetch_timeout);
            let attempt = AssertUnwindSafe(async {
                let entry = core.fetch_entry(&request, bundle, &slot, deadline).await?;
                Ok(Arc::new(entry))
            })
            .catch_unwind();
            let outcome: FetchOutcome = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(result)) => result,
                Ok(Err(_panic)) => Err(FetchError::Aborted),
                Err(_) => Err(FetchError::TimedOut(core.settings.fetch_timeout)),
            };
            let now = Instant::now();
            match &outcome {
                Ok(_) => tracing::debug!(
                    seller = %request.seller(), origin = %request.origin(),
                    resources = request.resources().len(), took = ?now - started,
                    "token fetched"
                ),
                Err(e) => {
                    core.counters.bump(Counter::FetchErrors);
                    tracing::warn!(
                        seller = %request.seller(), origin = %request.origin(),
                        error = %Error::from_fetch(e.clone()), took = ?now - started,
                        "token fetch failed"
                    );
                }
            }
            slot.publish(&outcome, now, &core.settings.failures);
            outcome
        });
        task.map(|joined| joined.unwrap_or(Err(FetchError::Aborted)))
            .boxed()
            .shared()
    }

    /// A cache entry for `request`: through the replicas' shared store in fleet mode, else from
    /// this replica's source.
    pub(crate) async fn fetch_entry(
        &self,
        request: &TokenRequest,
        bundle: Option<BundleId>,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<CachedToken, FetchError> {
        let fetch_here = async {
            let (token, info) = self.fetch_fresh(request, bundle, slot, deadline).await?;
            Ok(self
                .cache
                .entry(token, Instant::now(), &self.settings.refresh, info))
        };
        let Some(shared) = &self.shared else {
            return fetch_here.await;
        };
        let job = FetchJob {
            request,
            bundle: bundle.map(|bundle| self.bundles.operations(bundle)),
            slot,
            cache: &self.cache,
            failures: &self.settings.failures,
            counters: &self.counters,
            fetch_here: Box::pin(fetch_here),
        };
        shared.fetch(job).await
    }

    /// Calls the source for `request` (a bundle's when `bundle` names one), with retries.
    async fn fetch_fresh(
        &self,
        request: &TokenRequest,
        bundle: Option<BundleId>,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<(IssuedToken, Option<BundleInfo>), FetchError> {
        match bundle {
            Some(bundle) => {
                let (token, info) = self.fetch_bundle(request, bundle, slot, deadline).await?;
                Ok((token, Some(info)))
            }
            None => Ok((self.fetch_with_retries(request, deadline).await?, None)),
        }
    }

    pub(super) async fn fetch_with_retries(
        &self,
        request: &TokenRequest,
        deadline: Instant,
    ) -> Result<IssuedToken, FetchError> {
        let mut attempt = 0u32;
        // Calls the source reports making (it may make two in one attempt, after a refused LWA token).
        let mut calls = 0u32;
        loop {
            attempt += 1;
            let budget = deadline.saturating_duration_since(Instant::now());
            let waited = match self
                .limiter
                .acquire(request.seller(), request.origin(), budget)
                .await
            {
                Ok(waited) if !waited.is_zero() => {
                    self.counters.bump(Counter::RateLimitWaits);
                    tracing::debug!(seller = %request.seller(), ?waited, "waited for the token-call rate limit");
                    true
                }
                Ok(_) => false,
                Err(e) => return Err(FetchError::RateLimited { needed: e.needed }),
            };
            if let Some(shared) = &self.shared {
                shared
                    .admit(request, deadline, waited, &self.counters)
                    .await?;
            }
            self.counters.bump(Counter::Fetches);
            let fetched = self.source.fetch(request.clone()).await.and_then(|token| {
                match time::usable_lifetime(token.expires_in()) {
                    Some(_) => Ok(token),
                    None => Err(SourceError::transient(format_args!(
                        "the token source returned a token that lives {:?}, less than the {:?} \
                         the layer needs to use it",
                        token.expires_in(),
                        time::MIN_TOKEN_LIFETIME
                    ))),
                }
            });
            let error = match fetched {
                Ok(token) => return Ok(token),
                Err(e) => {
                    calls = calls.saturating_add(e.attempts().max(1));
                    e.with_attempts(calls)
                }
            };
            if !error.is_transient() || attempt >= self.settings.max_attempts {
                return Err(FetchError::Source(Arc::new(error)));
            }
            let pause = self.retry_pause(attempt, &error);
            if time::add(Instant::now(), pause) >= deadline {
                return Err(FetchError::Source(Arc::new(error)));
            }
            tracing::debug!(seller = %request.seller(), attempt, ?pause, error = %error, "token fetch failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Jittered exponential pause before retry `attempt + 1`.
    fn retry_pause(&self, attempt: u32, error: &SourceError) -> Duration {
        let base = self
            .settings
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
        let jittered = time::scale(base, 0.5 + fastrand::f64() / 2.0);
        jittered.max(self.settings.failures.retry_after(error))
    }
}

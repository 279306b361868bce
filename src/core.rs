//! The transport-agnostic core shared by every front end: classify a request, find its token in the
//! cache, or fetch one (single flight, rate-limited, retried) and publish it.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Extensions, Method, Uri};
use tokio::time::Instant;

use crate::cache::{
    Backoff, Begin, BundleInfo, CachedToken, Coverage, Denied, FetchOutcome, Granted, Keep, Peek,
    Refusal, ScopeRef, SharedFetch, Slot, SlotKeyRef, TokenCache, Windows,
};
use crate::catalog::{DataElements, PathKind};
use crate::control::{
    ReportPolicy, RestrictedReport, SandboxPolicy, Strategy, TargetApplication, TokenMode,
};
use crate::deprecation::DeprecationWarnings;
use crate::error::{Error, FetchError};
use crate::limit::TokenRateLimiter;
use crate::matcher::Matcher;
use crate::resource::{Origin, RestrictedResource, SellerId, TokenRequest};
use crate::source::{ErrorKind, SourceError, TokenSource};
use crate::stats::{Counter, Counters, Stats};
use crate::time;
use crate::token::IssuedToken;

/// Settings fixed when the layer is built.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) default_seller: SellerId,
    /// Refuse restricted requests that carry no `SellerId` instead of using `default_seller`.
    pub(crate) require_seller: bool,
    pub(crate) data_elements: DataElements,
    pub(crate) report_policy: ReportPolicy,
    pub(crate) sandbox_policy: SandboxPolicy,
    pub(crate) wait_timeout: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base: Duration,
    pub(crate) windows: Windows,
    pub(crate) backoff: Backoff,
    pub(crate) strategy: Strategy,
    /// How long an operation refused inside a bundle stays out of it before it is tried again.
    pub(crate) bundle_recheck: Duration,
    /// After a 403 drops a key's token, how long further 403s keep the next token (unless a replay
    /// with it worked).
    pub(crate) refusal_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_seller: SellerId::default(),
            require_seller: false,
            data_elements: DataElements::USUAL,
            report_policy: ReportPolicy::default(),
            sandbox_policy: SandboxPolicy::default(),
            wait_timeout: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(60),
            max_attempts: 3,
            retry_base: Duration::from_millis(250),
            windows: Windows::default(),
            backoff: Backoff::default(),
            strategy: Strategy::default(),
            bundle_recheck: Duration::from_secs(3600),
            refusal_period: Duration::from_secs(60),
        }
    }
}

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
    fn admit<'a>(
        &'a self,
        request: &'a TokenRequest,
        deadline: Instant,
        counters: &'a Counters,
    ) -> BoxFuture<'a, Result<(), FetchError>>;

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
    /// For a bundled token: the catalogue indexes of its operations.
    pub(crate) bundle: Option<&'a [u32]>,
    /// The slot the token goes into (it knows which token this replica last dropped).
    pub(crate) slot: &'a Slot,
    /// Makes cache entries (it numbers their generations).
    pub(crate) cache: &'a TokenCache,
    /// How long failures are remembered.
    pub(crate) backoff: &'a Backoff,
    /// The layer's counters.
    pub(crate) counters: &'a Counters,
    /// This replica's own fetch (rate limit, source, retries), not started yet.
    pub(crate) fetch_here: BoxFuture<'a, Result<CachedToken, FetchError>>,
}

/// What to do with one request.
pub(crate) enum Plan {
    /// Not a restricted call this layer handles: leave it alone.
    PassThrough,
    /// Insert this token now.
    Ready(Granted),
    /// Wait for a token, then insert it.
    Wait(BoxFuture<'static, Result<Granted, Error>>),
    /// Fail the request.
    Fail(Error),
}

/// The shared state behind every clone of a layer and its services.
pub(crate) struct Core {
    pub(crate) matcher: Matcher,
    pub(crate) origins: Vec<Origin>,
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) cache: TokenCache,
    pub(crate) limiter: TokenRateLimiter,
    pub(crate) counters: Counters,
    pub(crate) settings: Settings,
    /// Under [`Strategy::Bundle`]: the groups of generic operations, and each operation's group.
    pub(crate) bundles: Bundles,
    /// Fleet mode: the token store and rate limiter shared with other replicas, consulted on a
    /// local miss.
    pub(crate) shared: Option<Box<dyn SharedTokens>>,
    /// Which deprecated operations have been warned about.
    pub(crate) deprecations: DeprecationWarnings,
}

/// The generic operations of the catalogue in groups of at most 50.
#[derive(Debug, Default)]
pub(crate) struct Bundles {
    pub(crate) chunks: Vec<Vec<u32>>,
    pub(crate) chunk_of: Vec<Option<u16>>,
}

impl Bundles {
    pub(crate) fn new(matcher: &Matcher) -> Self {
        let mut bundles = Bundles::default();
        for (index, op) in matcher.catalog().operations().iter().enumerate() {
            let generic = op.path_kind() == PathKind::Generic;
            let chunk = generic.then(|| {
                if bundles
                    .chunks
                    .last()
                    .is_none_or(|c| c.len() >= TokenRequest::MAX_RESOURCES)
                {
                    bundles.chunks.push(Vec::new());
                }
                let last = bundles.chunks.len() - 1;
                bundles.chunks[last].push(index as u32);
                last as u16
            });
            bundles.chunk_of.push(chunk);
        }
        bundles
    }
}

impl Core {
    /// Decides what `method uri` with `extensions` needs. Allocation-free and lock-free unless a
    /// token must be fetched.
    #[inline]
    pub(crate) fn plan(self: &Arc<Self>, method: &Method, uri: &Uri, ext: &Extensions) -> Plan {
        let Some((seller, key, op)) = self.key_of(method, uri, ext) else {
            return Plan::PassThrough;
        };
        if self.settings.require_seller && ext.get::<SellerId>().is_none() {
            return Plan::Fail(Error::missing_seller());
        }
        let now = Instant::now();
        let peeked = self.cache.with_slot(seller, key, |slot| match slot {
            None => (Peek::Missing, None),
            Some(slot) => match slot.peek(now, op) {
                Peek::Stale(h) => (Peek::Stale(h), Some(Arc::clone(slot))),
                other => (other, None),
            },
        });
        match peeked {
            (Peek::Fresh(granted), _) => {
                self.counters.bump(Counter::Hits);
                tracing::trace!(seller = %seller, "token cache hit");
                Plan::Ready(granted)
            }
            (Peek::Stale(granted), slot) => {
                self.counters.bump(Counter::StaleHits);
                if let Some(slot) = slot {
                    self.refresh_in_background(&slot, seller, key, now);
                }
                Plan::Ready(granted)
            }
            (Peek::Denied(error), _) => {
                self.counters.bump(Counter::RememberedErrors);
                Plan::Fail(Error::from_fetch(error))
            }
            (Peek::Missing, _) => self.miss(seller, key, op, now),
        }
    }

    fn miss(
        self: &Arc<Self>,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
        op: Option<u32>,
        now: Instant,
    ) -> Plan {
        self.counters.bump(Counter::Misses);
        if tokio::runtime::Handle::try_current().is_err() {
            return Plan::Fail(Error::no_runtime());
        }
        let keep = Keep {
            bundle_recheck: self.settings.bundle_recheck,
            refusal_period: self.settings.refusal_period,
        };
        if self.cache.sweep_if_due(now, &keep) {
            self.limiter.sweep();
        }
        let slot = self.cache.slot(seller, key);
        let begun = slot.begin(now, op, || self.start_fetch(&slot, seller, key));
        match begun {
            // Published while this request looked: it was counted as a miss, and only as one.
            Begin::Ready(header) => Plan::Ready(header),
            Begin::Remembered(error) => {
                self.counters.bump(Counter::RememberedErrors);
                tracing::debug!(seller = %seller, "serving a remembered token-fetch failure");
                Plan::Fail(Error::from_fetch(error))
            }
            Begin::Wait { fetch, leader } => {
                if !leader {
                    self.counters.bump(Counter::Coalesced);
                }
                let core = Arc::clone(self);
                let wait = self.settings.wait_timeout;
                Plan::Wait(Box::pin(async move {
                    match tokio::time::timeout(wait, fetch).await {
                        Ok(Ok(token)) => match token.coverage(op) {
                            Coverage::Covered => Ok(token.grant()),
                            Coverage::Denied(e) => Err(Error::from_fetch(e)),
                            Coverage::Uncovered => Err(Error::from_fetch(FetchError::NotCovered)),
                        },
                        Ok(Err(e)) => Err(Error::from_fetch(e)),
                        Err(_) => {
                            core.counters.bump(Counter::Timeouts);
                            Err(Error::wait_timed_out(wait))
                        }
                    }
                }))
            }
        }
    }

    fn refresh_in_background(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
        now: Instant,
    ) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if slot.begin_refresh(now, || self.start_fetch(slot, seller, key)) {
            self.counters.bump(Counter::Refreshes);
            tracing::debug!(seller = %seller, "token in its refresh window: refreshing in the background");
        }
    }

    /// Spawns the fetch for `slot` as its own task, so that no caller dropping its future can cancel
    /// it, and returns the shared handle every waiter polls.
    fn start_fetch(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
    ) -> SharedFetch {
        let request = self.token_request(seller, key);
        let bundle = match key.scope {
            ScopeRef::Bundle { chunk } => Some(chunk),
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
            slot.publish(&outcome, now, &core.settings.backoff);
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
        bundle: Option<u16>,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<CachedToken, FetchError> {
        let fetch_here = async {
            let (token, info) = self.fetch_fresh(request, bundle, slot, deadline).await?;
            Ok(self
                .cache
                .entry(token, Instant::now(), &self.settings.windows, info))
        };
        let Some(shared) = &self.shared else {
            return fetch_here.await;
        };
        let job = FetchJob {
            request,
            bundle: bundle.map(|chunk| {
                self.bundles
                    .chunks
                    .get(usize::from(chunk))
                    .map_or(&[][..], Vec::as_slice)
            }),
            slot,
            cache: &self.cache,
            backoff: &self.settings.backoff,
            counters: &self.counters,
            fetch_here: Box::pin(fetch_here),
        };
        shared.fetch(job).await
    }

    /// Calls the source for `request` (a bundle's when `bundle` names one), with retries.
    async fn fetch_fresh(
        &self,
        request: &TokenRequest,
        bundle: Option<u16>,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<(IssuedToken, Option<BundleInfo>), FetchError> {
        match bundle {
            Some(chunk) => {
                let (token, info) = self.fetch_bundle(request, chunk, slot, deadline).await?;
                Ok((token, Some(info)))
            }
            None => Ok((self.fetch_with_retries(request, deadline).await?, None)),
        }
    }

    async fn fetch_with_retries(
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
            match self
                .limiter
                .acquire(request.seller(), request.origin(), budget)
                .await
            {
                Ok(waited) if !waited.is_zero() => {
                    self.counters.bump(Counter::RateLimitWaits);
                    tracing::debug!(seller = %request.seller(), ?waited, "waited for the token-call rate limit");
                }
                Ok(_) => {}
                Err(e) => return Err(FetchError::RateLimited { needed: e.needed }),
            }
            if let Some(shared) = &self.shared {
                shared.admit(request, deadline, &self.counters).await?;
            }
            self.counters.bump(Counter::Fetches);
            let error = match self.source.fetch(request.clone()).await {
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
        jittered.max(self.settings.backoff.retry_after(error))
    }

    fn token_request(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> TokenRequest {
        let resources = match key.scope {
            ScopeRef::Operation { index, elements } => self.resource(index, elements),
            ScopeRef::Path { method, path } => {
                vec![RestrictedResource::new(
                    method.clone(),
                    path,
                    DataElements::NONE,
                )]
            }
            ScopeRef::Bundle { chunk } => self.bundle_resources(
                self.bundles
                    .chunks
                    .get(usize::from(chunk))
                    .map_or(&[][..], Vec::as_slice),
            ),
        };
        let origin = self.origins[usize::from(key.origin)].clone();
        let request = TokenRequest::new(seller.clone(), origin, resources);
        match key.target {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    /// The resource for catalogue operation `index` (empty for an index the catalogue lacks).
    fn resource(&self, index: u32, elements: DataElements) -> Vec<RestrictedResource> {
        let op = self.matcher.catalog().operations().get(index as usize);
        op.map(|op| RestrictedResource::new(op.method().clone(), op.template(), elements))
            .into_iter()
            .collect()
    }

    /// The resources of a bundle: each operation with the configured data elements it accepts.
    fn bundle_resources(&self, indexes: &[u32]) -> Vec<RestrictedResource> {
        let catalog = self.matcher.catalog().operations();
        let wanted = self.settings.data_elements;
        indexes
            .iter()
            .filter_map(|i| catalog.get(*i as usize))
            .map(|op| {
                let elements = op.data_elements().intersection(wanted);
                RestrictedResource::new(op.method().clone(), op.template(), elements)
            })
            .collect()
    }

    /// `base` (seller, origin, target application) for the operations `ops` of a bundle.
    fn subset_request(&self, base: &TokenRequest, ops: &[u32]) -> TokenRequest {
        let request = TokenRequest::new(
            base.seller().clone(),
            base.origin().clone(),
            self.bundle_resources(ops),
        );
        match base.target_application() {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    /// Fetches a bundled token for group `chunk`. Operations refused within the last
    /// `bundle_recheck` stay out (the slot keeps them across failures and invalidations). When
    /// Amazon refuses the bundle for its input, [`isolate`](Self::isolate) looks for the offenders
    /// once; they are left out and the rest is fetched once more. A bundle refused as a whole fails
    /// with the bundle call's error, and all its operations are remembered as refused.
    async fn fetch_bundle(
        &self,
        base: &TokenRequest,
        chunk: u16,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<(IssuedToken, BundleInfo), FetchError> {
        let now = Instant::now();
        let recheck = self.settings.bundle_recheck;
        let mut denied: Vec<Denied> = slot
            .bundle_denied()
            .into_iter()
            .filter(|d| now.saturating_duration_since(d.since) < recheck)
            .collect();
        let mut good: Vec<u32> = self
            .bundles
            .chunks
            .get(usize::from(chunk))
            .map(|ops| {
                ops.iter()
                    .copied()
                    .filter(|op| !denied.iter().any(|d| d.op == *op))
                    .collect()
            })
            .unwrap_or_default();
        let mut isolated = false;
        let outcome = loop {
            if good.is_empty() {
                break Err(denied
                    .first()
                    .map_or(FetchError::NotCovered, |d| d.error.clone()));
            }
            let error = match self
                .fetch_with_retries(&self.subset_request(base, &good), deadline)
                .await
            {
                Ok(token) => break Ok(token),
                // One isolation a fetch: a bundle of operations that each passed a probe and is
                // refused again is not split further.
                Err(e) if refused_input(&e) && !isolated => e,
                Err(e) => break Err(e),
            };
            isolated = true;
            let offenders = match self.isolate(base, &good, error.clone(), deadline).await {
                Ok(Isolation::Offenders(offenders)) => offenders,
                Ok(Isolation::Whole) => {
                    tracing::warn!(
                        seller = %base.seller(),
                        operations = good.len(),
                        error = %Error::from_fetch(error.clone()),
                        "Amazon refused the whole token bundle (both of its halves): no operation \
                         of it gets a token until the refusal is rechecked"
                    );
                    let since = Instant::now();
                    denied.extend(good.drain(..).map(|op| Denied {
                        op,
                        error: error.clone(),
                        since,
                    }));
                    break Err(error);
                }
                Err(e) => break Err(e),
            };
            let since = Instant::now();
            for (op, error) in offenders {
                let name = self
                    .matcher
                    .catalog()
                    .operations()
                    .get(op as usize)
                    .map(|o| format!("{} {}", o.api(), o.name()))
                    .unwrap_or_default();
                tracing::warn!(
                    seller = %base.seller(),
                    operation = %name,
                    error = %Error::from_fetch(error.clone()),
                    "Amazon refused a restricted operation inside the token bundle: it is left out"
                );
                good.retain(|g| *g != op);
                denied.push(Denied { op, error, since });
            }
        };
        slot.set_bundle_denied(denied.clone());
        let token = outcome?;
        good.sort_unstable();
        Ok((
            token,
            BundleInfo {
                covers: good,
                denied,
            },
        ))
    }

    /// Finds the operations of `refused` (a set Amazon refused with `error`) that Amazon refuses,
    /// by splitting in halves and asking for a token for each half (a probe).
    ///
    /// - Both halves of the whole set refused: the set is taken as refused as a whole
    ///   ([`Isolation::Whole`]) after two probes, without bisecting further.
    /// - Otherwise one offender costs about two probes a halving, and one isolation makes at most
    ///   [`isolation_budget`] probes (`2 * ceil(log2 n)`: 10 for 31 operations, 12 for 50). Sets
    ///   still suspected when the budget is spent are treated as refused, with the error of the
    ///   set, until `bundle_recheck` passes; only operations a probe proved good stay in the bundle.
    ///
    /// Each probe goes through the rate limiter and may retry transient failures like any fetch.
    async fn isolate(
        &self,
        base: &TokenRequest,
        refused: &[u32],
        error: FetchError,
        deadline: Instant,
    ) -> Result<Isolation, FetchError> {
        let mut budget = isolation_budget(refused.len());
        let mut offenders = Vec::new();
        let mut suspects = vec![(refused.to_vec(), error, true)];
        while let Some((set, error, whole)) = suspects.pop() {
            if set.len() <= 1 || budget == 0 {
                offenders.extend(set.into_iter().map(|op| (op, error.clone())));
                continue;
            }
            let (left, right) = set.split_at(set.len() / 2);
            budget -= 1;
            let left_error = match self
                .fetch_with_retries(&self.subset_request(base, left), deadline)
                .await
            {
                // The left half passes, so the offenders are all on the right.
                Ok(_) => {
                    suspects.push((right.to_vec(), error, false));
                    continue;
                }
                Err(e) if refused_input(&e) => e,
                Err(e) => return Err(e),
            };
            if budget == 0 {
                suspects.push((left.to_vec(), left_error, false));
                suspects.push((right.to_vec(), error, false));
                continue;
            }
            budget -= 1;
            match self
                .fetch_with_retries(&self.subset_request(base, right), deadline)
                .await
            {
                Ok(_) => suspects.push((left.to_vec(), left_error, false)),
                Err(e) if refused_input(&e) && whole => return Ok(Isolation::Whole),
                Err(e) if refused_input(&e) => {
                    suspects.push((left.to_vec(), left_error, false));
                    suspects.push((right.to_vec(), e, false));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Isolation::Offenders(offenders))
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        stats.tokens_cached = self.cache.tokens_held() as u64;
        stats.sellers_held = self.cache.sellers_held() as u64;
        stats
    }

    /// The token for `method uri`, waiting for it if needed: `Ok(None)` when the request needs none.
    pub(crate) async fn grant(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        ext: &Extensions,
    ) -> Result<Option<Granted>, Error> {
        match self.plan(method, uri, ext) {
            Plan::PassThrough => Ok(None),
            Plan::Ready(granted) => Ok(Some(granted)),
            Plan::Wait(wait) => wait.await.map(Some),
            Plan::Fail(error) => Err(error),
        }
    }

    /// The token request a request like `method uri` maps to, if it gets a token.
    pub(crate) fn token_request_for(
        &self,
        method: &Method,
        uri: &Uri,
        ext: &Extensions,
    ) -> Option<TokenRequest> {
        let (seller, key, _) = self.key_of(method, uri, ext)?;
        Some(self.token_request(seller, key))
    }

    /// Whether `method uri` gets a token from this layer.
    pub(crate) fn is_restricted(&self, method: &Method, uri: &Uri, ext: &Extensions) -> bool {
        self.key_of(method, uri, ext).is_some()
    }

    /// Drops the cached token that `method uri` would use, if it is still generation `generation`
    /// (or whatever token is current when `None`). Returns whether a token was dropped.
    pub(crate) fn invalidate(
        &self,
        method: &Method,
        uri: &Uri,
        ext: &Extensions,
        generation: Option<u64>,
    ) -> bool {
        let Some((seller, key, _)) = self.key_of(method, uri, ext) else {
            return false;
        };
        let dropped = self.cache.with_slot(seller, key, |slot| {
            slot.and_then(|s| {
                let current = s.generation_at(Instant::now())?;
                Some(s.invalidate(generation.unwrap_or(current)))
            })
            .unwrap_or(false)
        });
        if dropped {
            self.counters.bump(Counter::Invalidations);
            tracing::debug!(seller = %seller, "cached token invalidated");
        }
        dropped
    }

    /// After a 403 on `method uri` made with token `generation`: drops it, at most once per key per
    /// refusal period unless a replay shows the dropped token was stale (see [`Refusal`]).
    pub(crate) fn refused(
        &self,
        method: &Method,
        uri: &Uri,
        ext: &Extensions,
        generation: u64,
    ) -> Refusal {
        let Some((seller, key, _)) = self.key_of(method, uri, ext) else {
            return Refusal::Kept;
        };
        let refusal = self.cache.with_slot(seller, key, |slot| {
            slot.map_or(Refusal::Replaced, |s| {
                s.refuse(generation, Instant::now(), self.settings.refusal_period)
            })
        });
        match refusal {
            Refusal::Dropped => {
                self.counters.bump(Counter::Invalidations);
                tracing::debug!(seller = %seller, "403 with a cached token: dropped it");
            }
            Refusal::Kept => tracing::debug!(
                seller = %seller,
                "403 soon after another token of this key was refused: keeping the token"
            ),
            Refusal::Replaced => {}
        }
        refusal
    }

    /// The replay of a request whose token a 403 dropped worked: the next 403 on its key may drop a
    /// token again at once.
    pub(crate) fn replay_worked(&self, method: &Method, uri: &Uri, ext: &Extensions) {
        if let Some((seller, key, _)) = self.key_of(method, uri, ext) {
            self.cache
                .with_slot(seller, key, |slot| slot.map(|s| s.replay_worked()));
        }
    }

    /// The seller and cache key of a request that gets a token; `None` for one that passes through.
    #[inline]
    pub(crate) fn key_of<'a>(
        &'a self,
        method: &'a Method,
        uri: &'a Uri,
        ext: &'a Extensions,
    ) -> Option<(&'a SellerId, SlotKeyRef<'a>, Option<u32>)> {
        let mode = ext.get::<TokenMode>().copied().unwrap_or_default();
        if mode == TokenMode::Skip {
            return None;
        }
        let path = uri.path();
        let mut bundled = None;
        let scope = match (self.matcher.classify(method, path), mode) {
            (Some(hit), _) => {
                let op = hit.operation();
                self.deprecations.note(hit.index(), op);
                match op.path_kind() {
                    PathKind::Generic => {
                        // The catalogue is far smaller than u32::MAX operations.
                        let index = hit.index() as u32;
                        let narrowed = ext.get::<DataElements>().copied();
                        let chunk = self.bundles.chunk_of.get(hit.index()).copied().flatten();
                        match (self.settings.strategy, narrowed, chunk) {
                            (Strategy::Bundle, None, Some(chunk)) => {
                                bundled = Some(index);
                                ScopeRef::Bundle { chunk }
                            }
                            _ => ScopeRef::Operation {
                                index,
                                elements: op
                                    .data_elements()
                                    .intersection(narrowed.unwrap_or(self.settings.data_elements)),
                            },
                        }
                    }
                    PathKind::SpecificOnly => {
                        let wanted = match self.settings.report_policy {
                            ReportPolicy::Always => true,
                            ReportPolicy::Never => false,
                            ReportPolicy::WhenMarked => ext.get::<RestrictedReport>().is_some(),
                        };
                        if !wanted && mode != TokenMode::Force {
                            return None;
                        }
                        ScopeRef::Path { method, path }
                    }
                }
            }
            (None, TokenMode::Force) => ScopeRef::Path { method, path },
            (None, _) => return None,
        };
        let Some(origin) = self.origins.iter().position(|o| o.matches_uri(uri)) else {
            tracing::debug!(%method, path, "restricted path on a host outside the allowed SP-API origins: no token");
            return None;
        };
        if self.settings.sandbox_policy == SandboxPolicy::Skip && self.origins[origin].is_sandbox()
        {
            return None;
        }
        let seller = ext
            .get::<SellerId>()
            .unwrap_or(&self.settings.default_seller);
        let key = SlotKeyRef {
            // The builder refuses more origins than fit in a u16.
            origin: origin as u16,
            scope,
            target: ext
                .get::<TargetApplication>()
                .map(TargetApplication::as_str),
        };
        Some((seller, key, bundled))
    }
}

/// What an isolation found in a refused bundle.
enum Isolation {
    /// Both halves of the bundle were refused: the bundle is refused as a whole.
    Whole,
    /// The operations to leave out, each with the refusal it was found in.
    Offenders(Vec<(u32, FetchError)>),
}

/// The most probes one isolation of `n` operations makes: two a halving, `2 * ceil(log2 n)`.
fn isolation_budget(n: usize) -> usize {
    let halvings = usize::BITS - n.saturating_sub(1).leading_zeros();
    2 * halvings as usize
}

/// Whether Amazon refused a token request's input (a resource or data element the application has
/// no role for): the error that bundle isolation looks for.
fn refused_input(error: &FetchError) -> bool {
    match error {
        FetchError::Source(e) => {
            e.kind() == ErrorKind::Permanent && e.status() == Some(http::StatusCode::BAD_REQUEST)
        }
        _ => false,
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("matcher", &self.matcher)
            .field("origins", &self.origins)
            .field("limiter", &self.limiter)
            .field("cache", &self.cache)
            .field("settings", &self.settings)
            .field("fleet", &self.shared.as_ref().map(|s| s.describe()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::RestrictedDataTokenLayer;
    use crate::source::source_fn;
    use crate::token::SecretToken;

    #[tokio::test(start_paused = true)]
    async fn a_miss_that_finds_a_published_token_counts_as_one_miss() {
        let source = source_fn(|_request: TokenRequest| async {
            let token = SecretToken::new("Atz.sprdt|one").map_err(SourceError::permanent)?;
            Ok(IssuedToken::new(token, Duration::from_secs(3600)))
        });
        let layer = RestrictedDataTokenLayer::builder(source).build().unwrap();
        let core = Arc::clone(layer.core());
        let uri: Uri = "https://sellingpartnerapi-na.amazon.com/orders/v0/orders/1/address"
            .parse()
            .unwrap();
        let (method, ext) = (Method::GET, Extensions::new());
        assert!(core.grant(&method, &uri, &ext).await.unwrap().is_some());
        assert_eq!(core.stats().misses, 1);
        // A request that looked just before the fetch published goes the miss way and finds it.
        let (seller, key, op) = core.key_of(&method, &uri, &ext).unwrap();
        assert!(matches!(
            core.miss(seller, key, op, Instant::now()),
            Plan::Ready(_)
        ));
        let stats = core.stats();
        assert_eq!((stats.misses, stats.hits), (2, 0), "{stats:?}");
    }
}

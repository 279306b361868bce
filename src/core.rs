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
    Backoff, Begin, CachedToken, FetchError, FetchOutcome, Granted, Peek, ScopeRef, SharedFetch,
    Slot, SlotKeyRef, TokenCache, Windows,
};
use crate::catalog::{DataElements, PathKind};
use crate::control::{ReportPolicy, RestrictedReport, SandboxPolicy, TargetApplication, TokenMode};
use crate::error::Error;
use crate::limit::TokenRateLimiter;
use crate::matcher::Matcher;
use crate::resource::{Origin, RestrictedResource, SellerId, TokenRequest};
use crate::source::{SourceError, TokenSource};
use crate::stats::{Counter, Counters, Stats};

/// Settings fixed when the layer is built.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) default_seller: SellerId,
    pub(crate) data_elements: DataElements,
    pub(crate) report_policy: ReportPolicy,
    pub(crate) sandbox_policy: SandboxPolicy,
    pub(crate) wait_timeout: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base: Duration,
    pub(crate) windows: Windows,
    pub(crate) backoff: Backoff,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_seller: SellerId::default(),
            data_elements: DataElements::USUAL,
            report_policy: ReportPolicy::default(),
            sandbox_policy: SandboxPolicy::default(),
            wait_timeout: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(60),
            max_attempts: 3,
            retry_base: Duration::from_millis(250),
            windows: Windows::default(),
            backoff: Backoff::default(),
        }
    }
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
}

impl Core {
    /// Decides what `method uri` with `extensions` needs. Allocation-free and lock-free unless a
    /// token must be fetched.
    #[inline]
    pub(crate) fn plan(self: &Arc<Self>, method: &Method, uri: &Uri, ext: &Extensions) -> Plan {
        let Some((seller, key)) = self.key_of(method, uri, ext) else {
            self.counters.bump(Counter::PassedThrough);
            return Plan::PassThrough;
        };
        let now = Instant::now();
        let peeked = self.cache.with_slot(seller, key, |slot| match slot {
            None => (Peek::Missing, None),
            Some(slot) => match slot.peek(now) {
                Peek::Stale(h) => (Peek::Stale(h), Some(Arc::clone(slot))),
                other => (other, None),
            },
        });
        match peeked {
            (Peek::Fresh(header), _) => {
                self.counters.bump(Counter::Hits);
                tracing::trace!(seller = %seller, "token cache hit");
                Plan::Ready(header)
            }
            (Peek::Stale(header), slot) => {
                self.counters.bump(Counter::StaleHits);
                if let Some(slot) = slot {
                    self.refresh_in_background(&slot, seller, key, now);
                }
                Plan::Ready(header)
            }
            (Peek::Missing, _) => self.miss(seller, key, now),
        }
    }

    fn miss(self: &Arc<Self>, seller: &SellerId, key: SlotKeyRef<'_>, now: Instant) -> Plan {
        self.counters.bump(Counter::Misses);
        if tokio::runtime::Handle::try_current().is_err() {
            return Plan::Fail(Error::no_runtime());
        }
        let slot = self.cache.slot(seller, key);
        let begun = slot.begin(now, || self.start_fetch(&slot, seller, key));
        match begun {
            Begin::Ready(header) => {
                self.counters.bump(Counter::Hits);
                Plan::Ready(header)
            }
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
                        Ok(Ok(token)) => Ok(token.grant()),
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
        let core = Arc::clone(self);
        let slot = Arc::clone(slot);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let deadline = started + core.settings.fetch_timeout;
            let attempt =
                AssertUnwindSafe(core.fetch_with_retries(&request, deadline)).catch_unwind();
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

    async fn fetch_with_retries(
        &self,
        request: &TokenRequest,
        deadline: Instant,
    ) -> Result<Arc<CachedToken>, FetchError> {
        let mut attempt = 0u32;
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
            self.counters.bump(Counter::Fetches);
            let error = match self.source.fetch(request.clone()).await {
                Ok(token) => {
                    let entry = self
                        .cache
                        .entry(token, Instant::now(), &self.settings.windows);
                    return Ok(Arc::new(entry));
                }
                Err(e) => e.with_attempts(attempt),
            };
            if !error.is_transient() || attempt >= self.settings.max_attempts {
                return Err(FetchError::Source(Arc::new(error)));
            }
            let pause = self.retry_pause(attempt, &error);
            if Instant::now() + pause >= deadline {
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
        let jittered = base.mul_f64(0.5 + fastrand::f64() / 2.0);
        jittered.max(error.retry_after().unwrap_or_default())
    }

    fn token_request(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> TokenRequest {
        let resource = match key.scope {
            ScopeRef::Operation { index, elements } => {
                match self.matcher.catalog().operations().get(index as usize) {
                    Some(op) => {
                        RestrictedResource::new(op.method().clone(), op.template(), elements)
                    }
                    // Indexes come from this matcher, so this arm is never taken.
                    None => RestrictedResource::new(Method::GET, "/", DataElements::NONE),
                }
            }
            ScopeRef::Path { method, path } => {
                RestrictedResource::new(method.clone(), path, DataElements::NONE)
            }
        };
        let origin = self.origins[usize::from(key.origin)].clone();
        let request = TokenRequest::new(seller.clone(), origin, [resource]);
        match key.target {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot()
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
        let Some((seller, key)) = self.key_of(method, uri, ext) else {
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

    /// The seller and cache key of a request that gets a token; `None` for one that passes through.
    #[inline]
    fn key_of<'a>(
        &'a self,
        method: &'a Method,
        uri: &'a Uri,
        ext: &'a Extensions,
    ) -> Option<(&'a SellerId, SlotKeyRef<'a>)> {
        let mode = ext.get::<TokenMode>().copied().unwrap_or_default();
        if mode == TokenMode::Skip {
            return None;
        }
        let path = uri.path();
        let scope = match (self.matcher.classify(method, path), mode) {
            (Some(hit), _) => {
                let op = hit.operation();
                match op.path_kind() {
                    PathKind::Generic => {
                        let wanted = ext
                            .get::<DataElements>()
                            .copied()
                            .unwrap_or(self.settings.data_elements);
                        ScopeRef::Operation {
                            // The catalogue is far smaller than u32::MAX operations.
                            index: hit.index() as u32,
                            elements: op.data_elements().intersection(wanted),
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
        Some((seller, key))
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
            .finish_non_exhaustive()
    }
}

//! The transport-agnostic core shared by every front end: classify a request, find its token in the
//! cache, or fetch one (single flight, rate-limited, retried) and publish it.
//!
//! One request, from the tower service's `call` to its header:
//!
//! 1. [`RestrictedDataTokenService::call`](crate::RestrictedDataTokenService) asks [`Core::lookup`].
//! 2. [`Core::key_of`] (in `classify`) matches `(method, path)` with the [`Matcher`], reads the
//!    request's extensions (token mode, seller, data elements, target application) and checks the
//!    host against the allowed origins: no match means [`Lookup::PassThrough`].
//! 3. [`TokenCache::with_slot`] finds the key's slot and [`Slot::peek`](crate::cache::Slot::peek)
//!    reads its token: fresh is [`Lookup::Ready`]; in its refresh window it is served too, and
//!    `refresh_in_background` starts one fetch.
//! 4. Otherwise `miss` asks [`Slot::begin`](crate::cache::Slot::begin) to join the key's fetch or
//!    start it with `start_fetch` (in `fetch`): a spawned task that runs [`Core::fetch_entry`]
//!    (the fleet's [`SharedTokens`], or `fetch_fresh` → `fetch_with_retries` or `fetch_bundle`,
//!    under the rate limiter) and [`Slot::publish`](crate::cache::Slot::publish)es the outcome.
//!    The request gets [`Lookup::Pending`], a future that ends with the token or an error.
//! 5. The service (or its [`ResponseFuture`](crate::future::ResponseFuture) after the wait) puts
//!    the token in `x-amz-access-token` with `header::insert_token` and calls the inner service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Extensions, Method, Uri};
use tokio::time::Instant;

use crate::cache::{
    Coverage, FailureMemory, Peek, RefreshTiming, Refusal, Retention, Slot, SlotKeyRef, TokenCache,
    TokenOrFetch,
};
use crate::catalog::{DataElements, OperationId};
use crate::control::{ReportPolicy, SandboxPolicy, Strategy};
use crate::deprecation::DeprecationWarnings;
use crate::error::{Error, FetchError};
use crate::header::GrantedToken;
use crate::limit::TokenRateLimiter;
use crate::matcher::Matcher;
use crate::resource::{Origin, SellerId};
use crate::source::TokenSource;
use crate::stats::{Counter, Counters, Stats};

mod bundle;
mod classify;
mod fetch;
mod refusal;

pub(crate) use bundle::Bundles;
pub(crate) use classify::TokenKey;
pub(crate) use fetch::{FetchJob, SharedTokens};
pub(crate) use refusal::ReplayAs;

/// What the layer reads of a request: its method, URI and extensions, borrowed. Every front end
/// hands the core one of these, whatever its request type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of an `http` request.
    #[inline]
    pub(crate) fn of<B>(request: &'a http::Request<B>) -> Self {
        RequestHead {
            method: request.method(),
            uri: request.uri(),
            extensions: request.extensions(),
        }
    }
}

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
    pub(crate) refresh: RefreshTiming,
    pub(crate) failures: FailureMemory,
    pub(crate) strategy: Strategy,
    /// How long an operation refused inside a bundle stays out of it, and how long after a 403
    /// dropped a key's token further 403s keep the next one.
    pub(crate) retention: Retention,
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
            refresh: RefreshTiming::default(),
            failures: FailureMemory::default(),
            strategy: Strategy::default(),
            retention: Retention {
                bundle_recheck: Duration::from_secs(3600),
                refusal_period: Duration::from_secs(60),
            },
        }
    }
}

/// What the core found for one request: no token needed, a token now, a token still coming, or
/// an error.
pub(crate) enum Lookup {
    /// Not a restricted call this layer handles: leave it alone.
    PassThrough,
    /// Insert this token now.
    Ready(GrantedToken),
    /// A token is being fetched: this future ends with it (or the reason there is none).
    Pending(BoxFuture<'static, Result<GrantedToken, Error>>),
    /// Fail the request.
    Failed(Error),
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

impl Core {
    /// The core of a layer built from these parts, with an empty cache and no counts.
    pub(crate) fn new(
        matcher: Matcher,
        origins: Vec<Origin>,
        source: Arc<dyn TokenSource>,
        limiter: TokenRateLimiter,
        settings: Settings,
        shared: Option<Box<dyn SharedTokens>>,
    ) -> Self {
        Core {
            bundles: Bundles::new(&matcher),
            deprecations: DeprecationWarnings::new(matcher.catalog()),
            matcher,
            origins,
            source,
            cache: TokenCache::new(),
            limiter,
            counters: Counters::default(),
            settings,
            shared,
        }
    }

    /// Decides what `method uri` with `extensions` needs. Allocation-free and lock-free unless a
    /// token must be fetched.
    #[inline]
    pub(crate) fn lookup(self: &Arc<Self>, head: RequestHead<'_>) -> Lookup {
        let Some(TokenKey {
            seller,
            slot: key,
            bundled: op,
        }) = self.key_of(head)
        else {
            return Lookup::PassThrough;
        };
        if self.settings.require_seller && head.extensions.get::<SellerId>().is_none() {
            return Lookup::Failed(Error::missing_seller());
        }
        let now = Instant::now();
        let peeked = self.cache.with_slot(seller, key, |slot| match slot {
            None => (Peek::Empty, None),
            Some(slot) => match slot.peek(now, op) {
                Peek::RefreshDue(h) => (Peek::RefreshDue(h), Some(Arc::clone(slot))),
                other => (other, None),
            },
        });
        match peeked {
            (Peek::Fresh(granted), _) => {
                self.counters.bump(Counter::Hits);
                tracing::trace!(seller = %seller, "token cache hit");
                Lookup::Ready(granted)
            }
            (Peek::RefreshDue(granted), slot) => {
                self.counters.bump(Counter::RefreshWindowHits);
                if let Some(slot) = slot {
                    self.refresh_in_background(&slot, seller, key, now);
                }
                Lookup::Ready(granted)
            }
            (Peek::Refused(error), _) => {
                self.counters.bump(Counter::RememberedErrors);
                Lookup::Failed(Error::from_fetch(error))
            }
            (Peek::Empty, _) => self.miss(seller, key, op, now),
        }
    }

    fn miss(
        self: &Arc<Self>,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
        op: Option<OperationId>,
        now: Instant,
    ) -> Lookup {
        self.counters.bump(Counter::Misses);
        if tokio::runtime::Handle::try_current().is_err() {
            return Lookup::Failed(Error::no_runtime());
        }
        if self.cache.sweep_if_due(now, &self.settings.retention) {
            self.limiter.sweep();
        }
        let slot = self.cache.slot(seller, key);
        let begun = slot.begin(now, op, || self.start_fetch(&slot, seller, key));
        match begun {
            // Published while this request looked: it was counted as a miss, and only as one.
            TokenOrFetch::Ready(header) => Lookup::Ready(header),
            TokenOrFetch::Remembered(error) => {
                self.counters.bump(Counter::RememberedErrors);
                tracing::debug!(seller = %seller, "serving a remembered token-fetch failure");
                Lookup::Failed(Error::from_fetch(error))
            }
            TokenOrFetch::Wait { fetch, leader } => {
                if !leader {
                    self.counters.bump(Counter::Coalesced);
                }
                let core = Arc::clone(self);
                let wait = self.settings.wait_timeout;
                Lookup::Pending(Box::pin(async move {
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

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        stats.tokens_cached = self.cache.tokens_held() as u64;
        stats.sellers_held = self.cache.sellers_held() as u64;
        stats.fleet_alone = self.shared.as_ref().is_some_and(|shared| shared.alone());
        stats
    }

    /// The token for `method uri`, waiting for it if needed: `Ok(None)` when the request needs none.
    pub(crate) async fn grant(
        self: &Arc<Self>,
        head: RequestHead<'_>,
    ) -> Result<Option<GrantedToken>, Error> {
        match self.lookup(head) {
            Lookup::PassThrough => Ok(None),
            Lookup::Ready(granted) => Ok(Some(granted)),
            Lookup::Pending(wait) => wait.await.map(Some),
            Lookup::Failed(error) => Err(error),
        }
    }

    /// Drops the cached token that `head` would use, if it is still generation `generation` (or
    /// whatever token is current when `None`). Returns whether a token was dropped.
    pub(crate) fn invalidate(&self, head: RequestHead<'_>, generation: Option<u64>) -> bool {
        let Some(key) = self.key_of(head) else {
            return false;
        };
        let seller = key.seller;
        let dropped = self.cache.with_slot(seller, key.slot, |slot| {
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

    /// After a 403 on `head` made with token `generation`: drops it, at most once per key per
    /// refusal period unless a replay shows the dropped token was stale (see [`Refusal`]).
    fn refused(&self, head: RequestHead<'_>, generation: u64) -> Refusal {
        let Some(key) = self.key_of(head) else {
            return Refusal::Kept;
        };
        let seller = key.seller;
        let refusal = self.cache.with_slot(seller, key.slot, |slot| {
            slot.map_or(Refusal::Replaced, |s| {
                s.refuse(
                    generation,
                    Instant::now(),
                    self.settings.retention.refusal_period,
                )
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
    fn replay_worked(&self, head: RequestHead<'_>) {
        if let Some(key) = self.key_of(head) {
            self.cache
                .with_slot(key.seller, key.slot, |slot| slot.map(|s| s.replay_worked()));
        }
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
    use crate::error::SourceError;
    use crate::layer::RestrictedDataTokenLayer;
    use crate::resource::TokenRequest;
    use crate::source::source_fn;
    use crate::token::{IssuedToken, SecretToken};

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
        let head = RequestHead {
            method: &method,
            uri: &uri,
            extensions: &ext,
        };
        assert!(core.grant(head).await.unwrap().is_some());
        assert_eq!(core.stats().misses, 1);
        // A request that looked just before the fetch published goes the miss way and finds it.
        let key = core.key_of(head).unwrap();
        assert!(matches!(
            core.miss(key.seller, key.slot, key.bundled, Instant::now()),
            Lookup::Ready(_)
        ));
        let stats = core.stats();
        assert_eq!((stats.misses, stats.hits), (2, 0), "{stats:?}");
    }
}

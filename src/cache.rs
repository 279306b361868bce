//! The token cache: one slot per (seller, origin, resource scope, target application).
//!
//! A slot holds the current token behind an `ArcSwapOption`, so the hot path reads it without a lock,
//! and a small mutex-guarded state for the rare paths: the fetch under way (shared by every waiter),
//! the last failure (remembered until its back-off ends) and the failure count. The mutex is never
//! held across an await.
//!
//! Tokens have two deadlines. Before the soft one the token is fresh. Between soft and hard it is
//! still served, and one background refresh is started. From the hard one on, requests wait for a
//! fetch. The soft deadline is jittered so that tokens fetched together are not refreshed together.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::future::{BoxFuture, Shared};
use http::{HeaderValue, Method};
use tokio::time::Instant;

use crate::catalog::DataElements;
use crate::resource::SellerId;
use crate::source::{ErrorKind, SourceError};
use crate::token::IssuedToken;

/// How long a token is fresh, and when it is refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Refresh this long before the hard deadline (at most half the token's life).
    pub(crate) refresh_ahead: Duration,
    /// Stop using a token this long before it expires (at most a tenth of its life).
    pub(crate) expiry_margin: Duration,
    /// Refresh up to this much earlier still, at random (at most half of `refresh_ahead`).
    pub(crate) jitter: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            refresh_ahead: Duration::from_secs(300),
            expiry_margin: Duration::from_secs(30),
            jitter: Duration::from_secs(60),
        }
    }
}

impl Windows {
    /// The soft and hard deadlines of a token that lives `life` from `now`.
    fn deadlines(&self, now: Instant, life: Duration) -> (Instant, Instant) {
        let usable = life.saturating_sub(self.expiry_margin.min(life / 10));
        let ahead = self.refresh_ahead.min(usable / 2);
        let jitter_max = self.jitter.min(ahead / 2);
        let jitter = jitter_max.mul_f64(fastrand::f64());
        let hard = now + usable;
        let soft = now + usable.saturating_sub(ahead + jitter);
        (soft, hard)
    }
}

/// How long failures are remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first transient failure is remembered this long; each further one doubles it.
    pub(crate) transient_base: Duration,
    /// The longest a transient failure is remembered.
    pub(crate) transient_max: Duration,
    /// How long a permanent failure is remembered.
    pub(crate) permanent: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            transient_base: Duration::from_secs(1),
            transient_max: Duration::from_secs(60),
            permanent: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    fn remember_for(&self, error: &FetchError, failures_in_a_row: u32) -> Duration {
        if error.kind() == ErrorKind::Permanent {
            return self.permanent;
        }
        let doubled = self
            .transient_base
            .saturating_mul(1u32 << failures_in_a_row.saturating_sub(1).min(16));
        let capped = doubled.min(self.transient_max);
        // Full jitter over the upper half, so replicas that failed together retry apart.
        let wait = capped.mul_f64(0.5 + fastrand::f64() / 2.0);
        match error {
            FetchError::Source(e) => wait.max(e.retry_after().unwrap_or_default()),
            _ => wait,
        }
    }
}

/// Why a fetch produced no token. Cheap to clone: every waiter gets the same one.
#[derive(Clone, Debug)]
pub(crate) enum FetchError {
    Source(Arc<SourceError>),
    RateLimited {
        needed: Duration,
    },
    TimedOut(Duration),
    /// The fetch task panicked or was cancelled (its runtime shut down).
    Aborted,
    /// A bundled token came back without the operation a request waited for.
    NotCovered,
}

impl FetchError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Source(e) => e.kind(),
            _ => ErrorKind::Transient,
        }
    }
}

/// A cached token and its deadlines.
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    pub(crate) soft: Instant,
    pub(crate) hard: Instant,
    pub(crate) generation: u64,
    /// For a bundled token: which operations it covers, and which were refused.
    pub(crate) bundle: Option<Box<BundleInfo>>,
}

/// What a bundled token covers.
#[derive(Debug, Default)]
pub(crate) struct BundleInfo {
    /// Catalogue indexes of the operations the token covers, sorted.
    pub(crate) covers: Vec<u32>,
    /// Operations Amazon refused for this seller, with the refusal and when it was learnt.
    pub(crate) denied: Vec<Denied>,
}

/// An operation that Amazon refused inside a bundle.
#[derive(Clone, Debug)]
pub(crate) struct Denied {
    pub(crate) op: u32,
    pub(crate) error: FetchError,
    pub(crate) since: Instant,
}

/// Whether a token may be handed to a request for operation `op` (`None`: not bundled).
pub(crate) enum Coverage {
    Covered,
    Denied(FetchError),
    Uncovered,
}

impl CachedToken {
    pub(crate) fn coverage(&self, op: Option<u32>) -> Coverage {
        match (op, &self.bundle) {
            (Some(op), Some(bundle)) => {
                if bundle.covers.binary_search(&op).is_ok() {
                    Coverage::Covered
                } else if let Some(d) = bundle.denied.iter().find(|d| d.op == op) {
                    Coverage::Denied(d.error.clone())
                } else {
                    Coverage::Uncovered
                }
            }
            _ => Coverage::Covered,
        }
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("soft", &self.soft)
            .field("hard", &self.hard)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

pub(crate) type FetchOutcome = Result<Arc<CachedToken>, FetchError>;
pub(crate) type SharedFetch = Shared<BoxFuture<'static, FetchOutcome>>;

/// A token handed to one request: the header value and the generation it came from (so that a
/// 403 can invalidate exactly that token).
#[derive(Clone)]
pub(crate) struct Granted {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    /// When the layer stops using the token.
    pub(crate) usable_until: Instant,
}

impl CachedToken {
    pub(crate) fn grant(&self) -> Granted {
        Granted {
            header: self.header.clone(),
            generation: self.generation,
            usable_until: self.hard,
        }
    }
}

/// What a slot's token is worth right now.
pub(crate) enum Peek {
    Fresh(Granted),
    /// Inside the refresh window: usable, and a refresh is due.
    Stale(Granted),
    /// A usable bundled token whose seller was refused this operation.
    Denied(FetchError),
    Missing,
}

/// What to do on a miss.
pub(crate) enum Begin {
    /// A token was published while we looked.
    Ready(Granted),
    /// The last fetch failed and its back-off has not ended.
    Remembered(FetchError),
    /// Wait for this fetch; `leader` when this caller started it.
    Wait { fetch: SharedFetch, leader: bool },
}

#[derive(Default)]
struct SlotState {
    inflight: Option<SharedFetch>,
    failure: Option<(FetchError, Instant)>,
    failures_in_a_row: u32,
    /// The last token `invalidate` dropped, so that a copy of it held elsewhere (fleet mode's shared
    /// store) is not taken back.
    revoked: Option<HeaderValue>,
}

/// One cache entry.
#[derive(Default)]
pub(crate) struct Slot {
    current: ArcSwapOption<CachedToken>,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock cannot leave the state half-written (every update is a
        // single assignment), so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current token for operation `op` (`None` unless the slot holds bundled tokens).
    #[inline]
    pub(crate) fn peek(&self, now: Instant, op: Option<u32>) -> Peek {
        let current = self.current.load();
        let Some(t) = current.as_deref().filter(|t| now < t.hard) else {
            return Peek::Missing;
        };
        match t.coverage(op) {
            Coverage::Covered if now < t.soft => Peek::Fresh(t.grant()),
            Coverage::Covered => Peek::Stale(t.grant()),
            Coverage::Denied(e) => Peek::Denied(e),
            Coverage::Uncovered => Peek::Missing,
        }
    }

    /// The current token, usable or not.
    pub(crate) fn current(&self) -> Option<Arc<CachedToken>> {
        self.current.load_full()
    }

    /// The generation of the current token, if it is still usable.
    pub(crate) fn generation_at(&self, now: Instant) -> Option<u64> {
        let current = self.current.load();
        current
            .as_deref()
            .filter(|t| now < t.hard)
            .map(|t| t.generation)
    }

    /// On a miss: serve what appeared meanwhile, a remembered failure, the fetch under way, or start
    /// one with `start` (called under the slot's lock, so at most one fetch runs per slot).
    pub(crate) fn begin(
        &self,
        now: Instant,
        op: Option<u32>,
        start: impl FnOnce() -> SharedFetch,
    ) -> Begin {
        let mut state = self.state();
        match self.peek(now, op) {
            Peek::Fresh(h) | Peek::Stale(h) => return Begin::Ready(h),
            Peek::Denied(e) => return Begin::Remembered(e),
            Peek::Missing => {}
        }
        if let Some(fetch) = &state.inflight {
            // A finished fetch whose task could not publish (it was cancelled) is stale.
            if fetch.peek().is_none() {
                return Begin::Wait {
                    fetch: fetch.clone(),
                    leader: false,
                };
            }
            state.inflight = None;
        }
        if let Some((error, until)) = &state.failure
            && now < *until
        {
            return Begin::Remembered(error.clone());
        }
        let fetch = start();
        state.inflight = Some(fetch.clone());
        Begin::Wait {
            fetch,
            leader: true,
        }
    }

    /// In the refresh window: start one background fetch unless one runs or a failure is remembered.
    /// Never blocks: a contended lock means someone else is handling the slot.
    pub(crate) fn begin_refresh(&self, now: Instant, start: impl FnOnce() -> SharedFetch) -> bool {
        let Ok(mut state) = self.state.try_lock() else {
            return false;
        };
        if state.inflight.as_ref().is_some_and(|f| f.peek().is_none()) {
            return false;
        }
        if state
            .failure
            .as_ref()
            .is_some_and(|(_, until)| now < *until)
        {
            return false;
        }
        state.inflight = Some(start());
        true
    }

    /// Records a fetch's outcome. A failure never removes a token that is still usable.
    pub(crate) fn publish(&self, outcome: &FetchOutcome, now: Instant, backoff: &Backoff) {
        let mut state = self.state();
        state.inflight = None;
        match outcome {
            Ok(token) => {
                self.current.store(Some(Arc::clone(token)));
                state.failure = None;
                state.failures_in_a_row = 0;
            }
            Err(error) => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                let wait = backoff.remember_for(error, state.failures_in_a_row);
                state.failure = Some((error.clone(), now + wait));
            }
        }
    }

    /// Drops the current token if it is still generation `generation`. Returns whether it did.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        let mut state = self.state();
        let current = self.current.load();
        match current.as_deref() {
            Some(t) if t.generation == generation => {
                state.revoked = Some(t.header.clone());
                self.current.store(None);
                true
            }
            _ => false,
        }
    }

    /// The value of the last token dropped by [`invalidate`](Self::invalidate), if any.
    pub(crate) fn revoked(&self) -> Option<HeaderValue> {
        self.state().revoked.clone()
    }
}

/// Which resources a slot's token covers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// One catalogue operation's generic template, with these data elements.
    Operation { index: u32, elements: DataElements },
    /// One specific path.
    Path { method: Method, path: Arc<str> },
    /// A bundle of generic operations (the layer's `chunk`-th group of at most 50).
    Bundle { chunk: u16 },
}

/// A borrowed [`Scope`], so the hot path can look a slot up without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeRef<'a> {
    Operation { index: u32, elements: DataElements },
    Path { method: &'a Method, path: &'a str },
    Bundle { chunk: u16 },
}

impl Scope {
    fn as_ref(&self) -> ScopeRef<'_> {
        match self {
            Scope::Operation { index, elements } => ScopeRef::Operation {
                index: *index,
                elements: *elements,
            },
            Scope::Path { method, path } => ScopeRef::Path { method, path },
            Scope::Bundle { chunk } => ScopeRef::Bundle { chunk: *chunk },
        }
    }
}

impl ScopeRef<'_> {
    fn to_owned(self) -> Scope {
        match self {
            ScopeRef::Operation { index, elements } => Scope::Operation { index, elements },
            ScopeRef::Path { method, path } => Scope::Path {
                method: method.clone(),
                path: path.into(),
            },
            ScopeRef::Bundle { chunk } => Scope::Bundle { chunk },
        }
    }
}

/// A slot's key within one seller: the origin (by its index in the layer's allowed origins), the
/// scope, and the target application when delegating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotKeyRef<'a> {
    pub(crate) origin: u16,
    pub(crate) scope: ScopeRef<'a>,
    pub(crate) target: Option<&'a str>,
}

struct SlotKey {
    origin: u16,
    scope: Scope,
    target: Option<Arc<str>>,
}

impl SlotKey {
    fn as_ref(&self) -> SlotKeyRef<'_> {
        SlotKeyRef {
            origin: self.origin,
            scope: self.scope.as_ref(),
            target: self.target.as_deref(),
        }
    }
}

/// One seller's slots. Few per seller (one per operation used), so a copy-on-write list that is
/// read without locks and scanned linearly beats a map.
#[derive(Default)]
struct SellerSlots {
    slots: ArcSwap<Vec<(SlotKey, Arc<Slot>)>>,
    write: Mutex<()>,
}

impl SellerSlots {
    fn find<R>(&self, key: SlotKeyRef<'_>, f: impl FnOnce(Option<&Arc<Slot>>) -> R) -> R {
        let slots = self.slots.load();
        f(slots
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, s)| s))
    }

    fn get_or_insert(&self, key: SlotKeyRef<'_>) -> Arc<Slot> {
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let slot = Arc::new(Slot::default());
        let mut next = Vec::with_capacity(self.slots.load().len() + 1);
        next.extend(
            self.slots
                .load()
                .iter()
                .map(|(k, s)| (k.clone_key(), Arc::clone(s))),
        );
        next.push((
            SlotKey {
                origin: key.origin,
                scope: key.scope.to_owned(),
                target: key.target.map(Arc::from),
            },
            Arc::clone(&slot),
        ));
        self.slots.store(Arc::new(next));
        slot
    }
}

impl SlotKey {
    fn clone_key(&self) -> SlotKey {
        SlotKey {
            origin: self.origin,
            scope: self.scope.clone(),
            target: self.target.clone(),
        }
    }
}

/// Every seller's slots.
pub(crate) struct TokenCache {
    sellers: papaya::HashMap<SellerId, SellerSlots>,
    generation: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new() -> Self {
        TokenCache {
            // Blocking resizes: with the default incremental mode, lookups in a map filled by
            // `get_or_insert_with` slowed from ~25 ns to ~600 ns at 100,000 sellers (measured).
            sellers: papaya::HashMap::builder()
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the slot for `seller` and `key`, if there is one, without allocating or locking.
    #[inline]
    pub(crate) fn with_slot<R>(
        &self,
        seller: &SellerId,
        key: SlotKeyRef<'_>,
        f: impl FnOnce(Option<&Arc<Slot>>) -> R,
    ) -> R {
        let sellers = self.sellers.pin();
        match sellers.get(seller) {
            Some(slots) => slots.find(key, f),
            None => f(None),
        }
    }

    /// The slot for `seller` and `key`, made if missing.
    pub(crate) fn slot(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> Arc<Slot> {
        let sellers = self.sellers.pin();
        let slots = sellers.get_or_insert_with(seller.clone(), SellerSlots::default);
        slots.get_or_insert(key)
    }

    /// Turns a fetched token into a cache entry with its deadlines and a new generation.
    pub(crate) fn entry(
        &self,
        token: IssuedToken,
        now: Instant,
        windows: &Windows,
        bundle: Option<BundleInfo>,
    ) -> CachedToken {
        let (soft, hard) = windows.deadlines(now, token.expires_in());
        self.entry_with_deadlines(token.token().header_value().clone(), soft, hard, bundle)
    }

    /// A cache entry with deadlines decided elsewhere (fleet mode: by the replica that fetched it).
    pub(crate) fn entry_with_deadlines(
        &self,
        header: HeaderValue,
        soft: Instant,
        hard: Instant,
        bundle: Option<BundleInfo>,
    ) -> CachedToken {
        CachedToken {
            header,
            soft: soft.min(hard),
            hard,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            bundle: bundle.map(Box::new),
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("sellers", &self.sellers.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_never_cause_a_refresh_storm() {
        let now = Instant::now();
        let w = Windows::default();
        // Refreshing ahead takes at most half the usable life, however long `refresh_ahead` is:
        // without jitter, a token is fresh for at least half its usable life.
        let greedy = Windows {
            refresh_ahead: Duration::from_secs(86_400),
            jitter: Duration::ZERO,
            ..w
        };
        // The jitter adds at most half of that again: with it, at least a quarter.
        let jittery = Windows {
            jitter: Duration::from_secs(86_400),
            ..greedy
        };
        for life in [0u64, 1, 10, 60, 600, 3600, 86_400] {
            let life = Duration::from_secs(life);
            let (soft, hard) = greedy.deadlines(now, life);
            let usable = hard - now;
            assert_eq!(soft - now, usable - usable / 2, "{life:?}");
            for windows in [w, jittery] {
                for _ in 0..50 {
                    let (soft, hard) = windows.deadlines(now, life);
                    assert!(soft <= hard);
                    assert!(hard <= now + life);
                    let usable = hard - now;
                    assert!(soft - now >= usable - usable / 2 - usable / 4, "{life:?}");
                }
            }
        }
        let (soft, hard) = w.deadlines(now, Duration::from_secs(3600));
        assert_eq!(hard - now, Duration::from_secs(3570));
        assert!(soft - now <= Duration::from_secs(3270));
        assert!(soft - now >= Duration::from_secs(3210));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::default();
        let err = FetchError::Source(Arc::new(SourceError::transient("x")));
        let first = b.remember_for(&err, 1);
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        let tenth = b.remember_for(&err, 10);
        assert!(tenth <= Duration::from_secs(60) && tenth >= Duration::from_secs(30));
        let perm = FetchError::Source(Arc::new(SourceError::permanent("x")));
        assert_eq!(b.remember_for(&perm, 1), Duration::from_secs(60));
        let asked = FetchError::Source(Arc::new(
            SourceError::transient("x").with_retry_after(Duration::from_secs(7)),
        ));
        assert!(b.remember_for(&asked, 1) >= Duration::from_secs(7));
    }
}

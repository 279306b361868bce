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
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::future::{BoxFuture, Shared};
use http::{HeaderValue, Method};
use tokio::time::Instant;

use crate::catalog::DataElements;
use crate::error::FetchError;
use crate::resource::SellerId;
use crate::source::{ErrorKind, SourceError};
use crate::time;
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
        let jitter = time::scale(jitter_max, fastrand::f64());
        let hard = time::add(now, usable);
        let soft = time::add(now, usable.saturating_sub(ahead.saturating_add(jitter)));
        (soft, hard)
    }
}

/// How long failures are remembered.
///
/// A source's `Retry-After` is honoured up to [`transient_max`](Self::transient_max) and no
/// further: that is the documented ceiling on how long any answer can keep a seller from a token.
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
    pub(crate) fn remember_for(&self, error: &FetchError, failures_in_a_row: u32) -> Duration {
        if error.kind() == ErrorKind::Permanent {
            return self.permanent;
        }
        let doubled = self
            .transient_base
            .saturating_mul(1u32 << failures_in_a_row.saturating_sub(1).min(16));
        let capped = doubled.min(self.transient_max);
        // Full jitter over the upper half, so replicas that failed together retry apart.
        let wait = time::scale(capped, 0.5 + fastrand::f64() / 2.0);
        match error {
            FetchError::Source(e) => wait.max(self.retry_after(e)),
            _ => wait,
        }
    }

    /// How long `error` asks to wait, cut to [`transient_max`](Self::transient_max).
    pub(crate) fn retry_after(&self, error: &SourceError) -> Duration {
        error
            .retry_after()
            .unwrap_or_default()
            .min(self.transient_max)
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
    /// When a 403 last dropped this slot's token, until a replay with the next token worked.
    refused_at: Option<Instant>,
    /// For a bundle's slot: the operations Amazon refused, kept across failed fetches and
    /// invalidated tokens.
    bundle_denied: Vec<Denied>,
}

/// What a 403 on a restricted call did to the token it was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The token was dropped: a replay gets a new one.
    Dropped,
    /// The token is no longer the slot's (a newer one, or none): a replay goes through the cache.
    Replaced,
    /// The token was kept: a 403 dropped this slot's token within the refusal period and no replay
    /// has worked since, so this 403 is taken for a refusal of the request, not of the token.
    Kept,
}

/// One cache entry.
pub(crate) struct Slot {
    current: ArcSwapOption<CachedToken>,
    state: Mutex<SlotState>,
    /// The cache's count of slots holding a token, kept by every change of `current`.
    held: Arc<AtomicUsize>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new(Arc::default())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.current.load().is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Slot {
    fn new(held: Arc<AtomicUsize>) -> Self {
        Slot {
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            held,
        }
    }

    /// Replaces the current token, keeping the cache's count of held tokens.
    fn set_current(&self, token: Option<Arc<CachedToken>>) {
        let adds = token.is_some();
        let had = self.current.swap(token).is_some();
        match (had, adds) {
            (false, true) => {
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Whether the slot holds nothing worth keeping at `now`: no usable token, no fetch under way,
    /// no failure still remembered, no bundle refusal younger than `keep.bundle_recheck` and no
    /// 403 drop younger than `keep.refusal_period`. An expired token is dropped on the way,
    /// whatever the answer.
    fn sweep(&self, now: Instant, keep: &Keep) -> bool {
        let mut state = self.state();
        let expired = self
            .current
            .load()
            .as_deref()
            .is_some_and(|t| now >= t.hard);
        if expired {
            self.set_current(None);
        }
        state
            .bundle_denied
            .retain(|d| now.saturating_duration_since(d.since) < keep.bundle_recheck);
        self.current.load().is_none()
            && state.inflight.as_ref().is_none_or(|f| f.peek().is_some())
            && state
                .failure
                .as_ref()
                .is_none_or(|(_, until)| now >= *until)
            && state.bundle_denied.is_empty()
            && state
                .refused_at
                .is_none_or(|at| now >= time::add(at, keep.refusal_period))
    }

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
        // The caller saw a token in its refresh window before it took the lock: a refresh may have
        // published a fresh one since.
        if self.current.load().as_deref().is_some_and(|t| now < t.soft) {
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
                self.set_current(Some(Arc::clone(token)));
                state.failure = None;
                state.failures_in_a_row = 0;
            }
            Err(error) => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                let wait = backoff.remember_for(error, state.failures_in_a_row);
                state.failure = Some((error.clone(), time::add(now, wait)));
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
                self.set_current(None);
                true
            }
            _ => false,
        }
    }

    /// After a 403 on a request made with token `generation`: drops the token, unless a 403 dropped
    /// this slot's token less than `period` ago and no replay has worked since (see [`Refusal`]).
    pub(crate) fn refuse(&self, generation: u64, now: Instant, period: Duration) -> Refusal {
        let mut state = self.state();
        let current = self.current.load();
        match current.as_deref() {
            Some(t) if t.generation == generation && now < t.hard => {
                if state
                    .refused_at
                    .is_some_and(|at| now < time::add(at, period))
                {
                    return Refusal::Kept;
                }
                state.revoked = Some(t.header.clone());
                state.refused_at = Some(now);
                self.set_current(None);
                Refusal::Dropped
            }
            _ => Refusal::Replaced,
        }
    }

    /// A request replayed after a 403 worked with a new token: the dropped one was stale, so the
    /// next 403 may drop a token again at once.
    pub(crate) fn replay_worked(&self) {
        self.state().refused_at = None;
    }

    /// The operations Amazon refused in this bundle slot, as the last bundle fetch left them.
    pub(crate) fn bundle_denied(&self) -> Vec<Denied> {
        self.state().bundle_denied.clone()
    }

    /// Replaces the operations refused in this bundle slot.
    pub(crate) fn set_bundle_denied(&self, denied: Vec<Denied>) {
        self.state().bundle_denied = denied;
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

/// One seller's slots for operations and bundles. Few per seller (one per operation used, bounded by
/// the catalogue), so a copy-on-write list that is read without locks and scanned linearly beats a
/// map. Specific-path slots, which grow with traffic, live in [`TokenCache`]'s own map instead.
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

    fn get_or_insert(&self, key: SlotKeyRef<'_>, held: &Arc<AtomicUsize>) -> Arc<Slot> {
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let slot = Arc::new(Slot::new(Arc::clone(held)));
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

    /// Drops the slots that hold nothing worth keeping and that no one else holds; returns whether
    /// none is left.
    fn sweep(&self, now: Instant, keep: &Keep) -> bool {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let slots = self.slots.load_full();
        let keep: Vec<(SlotKey, Arc<Slot>)> = slots
            .iter()
            .filter(|(_, slot)| !(slot.sweep(now, keep) && Arc::strong_count(slot) == 1))
            .map(|(k, s)| (k.clone_key(), Arc::clone(s)))
            .collect();
        let empty = keep.is_empty();
        if keep.len() != slots.len() {
            self.slots.store(Arc::new(keep));
        }
        empty
    }
}

/// The key of a specific-path slot: seller, origin, method, path and target application.
struct PathKey {
    seller: SellerId,
    origin: u16,
    method: Method,
    path: Arc<str>,
    target: Option<Arc<str>>,
}

/// A borrowed [`PathKey`], to look a path slot up without allocating.
#[derive(Clone, Copy)]
struct PathKeyRef<'a> {
    seller: &'a SellerId,
    origin: u16,
    method: &'a Method,
    path: &'a str,
    target: Option<&'a str>,
}

impl PathKey {
    fn as_ref(&self) -> PathKeyRef<'_> {
        PathKeyRef {
            seller: &self.seller,
            origin: self.origin,
            method: &self.method,
            path: &self.path,
            target: self.target.as_deref(),
        }
    }
}

impl PathKeyRef<'_> {
    fn to_owned(self) -> PathKey {
        PathKey {
            seller: self.seller.clone(),
            origin: self.origin,
            method: self.method.clone(),
            path: Arc::from(self.path),
            target: self.target.map(Arc::from),
        }
    }
}

// The owned and borrowed keys hash and compare through the same borrowed form, as papaya's
// `Equivalent` lookups require.
impl Hash for PathKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seller.hash(state);
        self.origin.hash(state);
        self.method.hash(state);
        self.path.hash(state);
        self.target.hash(state);
    }
}

impl PartialEq for PathKeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.path == other.path
            && self.method == other.method
            && self.target == other.target
            && self.seller == other.seller
    }
}

impl Eq for PathKeyRef<'_> {}

impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl PartialEq for PathKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for PathKey {}

impl papaya::Equivalent<PathKey> for PathKeyRef<'_> {
    fn equivalent(&self, key: &PathKey) -> bool {
        *self == key.as_ref()
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

/// The key of `key`'s slot in the path map, when it is a specific-path scope.
fn path_key<'a>(seller: &'a SellerId, key: SlotKeyRef<'a>) -> Option<PathKeyRef<'a>> {
    match key.scope {
        ScopeRef::Path { method, path } => Some(PathKeyRef {
            seller,
            origin: key.origin,
            method,
            path,
            target: key.target,
        }),
        _ => None,
    }
}

/// How long a sweep keeps what a slot remembers besides its token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keep {
    /// Bundle refusals younger than this stay (the layer's `bundle_recheck`).
    pub(crate) bundle_recheck: Duration,
    /// A 403 drop younger than this stays (the layer's `refusal_period`).
    pub(crate) refusal_period: Duration,
}

/// How often the cache is swept of what has outlived its tokens (on a miss, when due).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Every seller's slots.
///
/// Memory is bounded by what is in use: at most once every [`SWEEP_EVERY`], the next miss sweeps
/// the cache, dropping expired tokens, then every slot that holds nothing else worth keeping (no
/// fetch under way, no failure still remembered, no recent bundle refusal), then every seller left
/// with no slot. Specific-path slots (one per report document) live in their own map, looked up in
/// constant time whatever a seller holds.
pub(crate) struct TokenCache {
    sellers: papaya::HashMap<SellerId, SellerSlots>,
    paths: papaya::HashMap<PathKey, Arc<Slot>>,
    generation: AtomicU64,
    /// How many slots hold a token (usable or not yet swept).
    held: Arc<AtomicUsize>,
    /// When the next sweep is due (`None`: at the next miss).
    next_sweep: Mutex<Option<Instant>>,
}

impl TokenCache {
    pub(crate) fn new() -> Self {
        TokenCache {
            // Blocking resizes: with the default incremental mode, lookups in a map filled by
            // `get_or_insert_with` slowed from ~25 ns to ~600 ns at 100,000 sellers (measured).
            sellers: papaya::HashMap::builder()
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            paths: papaya::HashMap::builder()
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            generation: AtomicU64::new(0),
            held: Arc::default(),
            next_sweep: Mutex::new(None),
        }
    }

    /// How many tokens the cache holds.
    pub(crate) fn tokens_held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// How many sellers have operation or bundle slots.
    pub(crate) fn sellers_held(&self) -> usize {
        self.sellers.len()
    }

    /// Sweeps the cache if a sweep is due at `now` (see [`TokenCache`]); returns whether it did.
    pub(crate) fn sweep_if_due(&self, now: Instant, keep: &Keep) -> bool {
        {
            let Ok(mut next) = self.next_sweep.try_lock() else {
                return false;
            };
            if next.is_some_and(|at| now < at) {
                return false;
            }
            *next = Some(time::add(now, SWEEP_EVERY));
        }
        self.sweep(now, keep);
        true
    }

    fn sweep(&self, now: Instant, keep: &Keep) {
        self.paths
            .pin()
            .retain(|_, slot| !(slot.sweep(now, keep) && Arc::strong_count(slot) == 1));
        let sellers = self.sellers.pin();
        let emptied: Vec<SellerId> = sellers
            .iter()
            .filter(|(_, slots)| slots.sweep(now, keep))
            .map(|(seller, _)| seller.clone())
            .collect();
        for seller in emptied {
            // A slot added since stays, with its seller.
            let _ = sellers.remove_if(&seller, |_, slots| slots.slots.load().is_empty());
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
        if let Some(path) = path_key(seller, key) {
            return f(self.paths.pin().get(&path));
        }
        let sellers = self.sellers.pin();
        match sellers.get(seller) {
            Some(slots) => slots.find(key, f),
            None => f(None),
        }
    }

    /// The slot for `seller` and `key`, made if missing.
    pub(crate) fn slot(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> Arc<Slot> {
        if let Some(path) = path_key(seller, key) {
            let paths = self.paths.pin();
            if let Some(slot) = paths.get(&path) {
                return Arc::clone(slot);
            }
            return Arc::clone(paths.get_or_insert_with(path.to_owned(), || {
                Arc::new(Slot::new(Arc::clone(&self.held)))
            }));
        }
        let sellers = self.sellers.pin();
        let slots = sellers.get_or_insert_with(seller.clone(), SellerSlots::default);
        slots.get_or_insert(key, &self.held)
    }

    /// Turns a fetched token into a cache entry with its deadlines and a new generation.
    pub(crate) fn entry(
        &self,
        token: IssuedToken,
        now: Instant,
        windows: &Windows,
        bundle: Option<BundleInfo>,
    ) -> CachedToken {
        let (soft, hard) = windows.deadlines(now, time::cap_lifetime(token.expires_in()));
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
            .field("paths", &self.paths.len())
            .field("tokens", &self.tokens_held())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn never() -> SharedFetch {
        futures_util::future::pending::<FetchOutcome>()
            .boxed()
            .shared()
    }

    fn header(value: &'static str) -> HeaderValue {
        HeaderValue::from_static(value)
    }

    #[tokio::test(start_paused = true)]
    async fn path_slots_stay_out_of_the_sellers_list_and_are_swept() {
        let cache = TokenCache::new();
        let seller = SellerId::new("S");
        let method = Method::GET;
        let operation = SlotKeyRef {
            origin: 0,
            scope: ScopeRef::Operation {
                index: 1,
                elements: DataElements::NONE,
            },
            target: None,
        };
        cache.slot(&seller, operation);
        let now = Instant::now();
        for i in 0..10_000 {
            let path = format!("/reports/2021-06-30/documents/{i}");
            let key = SlotKeyRef {
                origin: 0,
                scope: ScopeRef::Path {
                    method: &method,
                    path: &path,
                },
                target: None,
            };
            let slot = cache.slot(&seller, key);
            let token = cache.entry_with_deadlines(
                header("Atz.sprdt|doc"),
                now + Duration::from_secs(30),
                now + Duration::from_secs(60),
                None,
            );
            slot.publish(&Ok(Arc::new(token)), now, &Backoff::default());
            assert!(cache.with_slot(&seller, key, |s| s.is_some()));
        }
        // The seller's own list, which every lookup of an operation scans, holds one slot whatever
        // the number of documents.
        let sellers = cache.sellers.pin();
        assert_eq!(sellers.get(&seller).unwrap().slots.load().len(), 1);
        assert_eq!(cache.paths.len(), 10_000);
        assert_eq!(cache.tokens_held(), 10_000);
        let keep = Keep {
            bundle_recheck: Duration::from_secs(3600),
            refusal_period: Duration::from_secs(60),
        };
        assert!(cache.sweep_if_due(now + Duration::from_secs(61), &keep));
        assert_eq!((cache.paths.len(), cache.tokens_held()), (0, 0));
        // The operation slot held nothing: its seller is gone too.
        assert_eq!(cache.sellers_held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_hit_after_a_refresh_published_starts_no_second_refresh() {
        let cache = TokenCache::new();
        let slot = Slot::default();
        let now = Instant::now();
        let in_window =
            cache.entry_with_deadlines(header("old"), now, now + Duration::from_secs(100), None);
        slot.set_current(Some(Arc::new(in_window)));
        // A request sees the token in its refresh window...
        assert!(matches!(slot.peek(now, None), Peek::Stale(_)));
        // ...while the refresh under way publishes a fresh one.
        assert!(slot.begin_refresh(now, never));
        let fresh = cache.entry_with_deadlines(
            header("new"),
            now + Duration::from_secs(50),
            now + Duration::from_secs(100),
            None,
        );
        slot.publish(&Ok(Arc::new(fresh)), now, &Backoff::default());
        let mut started = 0;
        let began = slot.begin_refresh(now, || {
            started += 1;
            never()
        });
        assert!(!began);
        assert_eq!(started, 0);
    }

    #[test]
    fn windows_never_cause_a_refresh_storm() {
        let now = Instant::now();
        let w = Windows::default();
        for life in [0u64, 1, 10, 60, 600, 3600, 86_400] {
            let life = Duration::from_secs(life);
            for _ in 0..50 {
                let (soft, hard) = w.deadlines(now, life);
                assert!(soft <= hard);
                assert!(hard <= now + life);
                // The token is fresh for at least half its usable life.
                let usable = hard - now;
                assert!(soft - now >= usable / 2 - usable / 4, "{life:?}");
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
        // A Retry-After counts up to the transient maximum and no further.
        let huge = FetchError::Source(Arc::new(
            SourceError::transient("x").with_retry_after(Duration::MAX),
        ));
        assert_eq!(b.remember_for(&huge, 1), b.transient_max);
        assert_eq!(b.remember_for(&perm, 1), Duration::from_secs(60));
        let asked = FetchError::Source(Arc::new(
            SourceError::transient("x").with_retry_after(Duration::from_secs(7)),
        ));
        assert!(b.remember_for(&asked, 1) >= Duration::from_secs(7));
    }
}

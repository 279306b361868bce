//! One cache slot: the current token behind an `ArcSwapOption` (read without a lock), and the state
//! of the rare paths behind a mutex (the fetch under way, the last failure, refusals).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::time::Instant;

use crate::catalog::OperationId;
use crate::error::FetchError;
use crate::time;

use super::{CachedToken, Coverage, Denied, FailureMemory, FetchOutcome, Retention, SharedFetch};
use crate::header::GrantedToken;

/// What a slot holds for an operation right now: a fresh token, a token in its refresh window, a
/// remembered refusal, or nothing usable.
pub(crate) enum Peek {
    /// Before its `refresh_at`.
    Fresh(GrantedToken),
    /// Inside the refresh window: usable, and a refresh is due.
    RefreshDue(GrantedToken),
    /// A usable bundled token, but Amazon refused the seller this operation.
    Refused(FetchError),
    /// No token usable for the operation.
    Empty,
}

/// What a miss finds in a slot: a token published meanwhile, a remembered failure, or the fetch
/// to wait for (and whether this request started it).
pub(crate) enum TokenOrFetch {
    /// A token was published while we looked.
    Ready(GrantedToken),
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
    pub(super) fn new(held: Arc<AtomicUsize>) -> Self {
        Slot {
            current: ArcSwapOption::empty(),
            state: Mutex::default(),
            held,
        }
    }

    /// Replaces the current token, keeping the cache's count of held tokens.
    pub(super) fn set_current(&self, token: Option<Arc<CachedToken>>) {
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
    /// no failure still remembered, no bundle refusal younger than `retention.bundle_recheck` and no
    /// 403 drop younger than `retention.refusal_period`. An expired token is dropped on the way,
    /// whatever the answer.
    pub(super) fn sweep(&self, now: Instant, retention: &Retention) -> bool {
        let mut state = self.state();
        let expired = self
            .current
            .load()
            .as_deref()
            .is_some_and(|t| now >= t.usable_until);
        if expired {
            self.set_current(None);
        }
        state
            .bundle_denied
            .retain(|d| now.saturating_duration_since(d.since) < retention.bundle_recheck);
        self.current.load().is_none()
            && state.inflight.as_ref().is_none_or(|f| f.peek().is_some())
            && state
                .failure
                .as_ref()
                .is_none_or(|(_, until)| now >= *until)
            && state.bundle_denied.is_empty()
            && state
                .refused_at
                .is_none_or(|at| now >= time::add(at, retention.refusal_period))
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock cannot leave the state half-written (every update is a
        // single assignment), so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current token for operation `op` (`None` unless the slot holds bundled tokens).
    #[inline]
    pub(crate) fn peek(&self, now: Instant, op: Option<OperationId>) -> Peek {
        let current = self.current.load();
        let Some(t) = current.as_deref().filter(|t| now < t.usable_until) else {
            return Peek::Empty;
        };
        match t.coverage(op) {
            Coverage::Covered if now < t.refresh_at => Peek::Fresh(t.grant()),
            Coverage::Covered => Peek::RefreshDue(t.grant()),
            Coverage::Denied(e) => Peek::Refused(e),
            Coverage::Uncovered => Peek::Empty,
        }
    }

    /// The generation of the current token, if it is still usable.
    pub(crate) fn generation_at(&self, now: Instant) -> Option<u64> {
        let current = self.current.load();
        current
            .as_deref()
            .filter(|t| now < t.usable_until)
            .map(|t| t.generation)
    }

    /// On a miss: serve what appeared meanwhile, a remembered failure, the fetch under way, or start
    /// one with `start` (called under the slot's lock, so at most one fetch runs per slot).
    pub(crate) fn begin(
        &self,
        now: Instant,
        op: Option<OperationId>,
        start: impl FnOnce() -> SharedFetch,
    ) -> TokenOrFetch {
        let mut state = self.state();
        match self.peek(now, op) {
            Peek::Fresh(h) | Peek::RefreshDue(h) => return TokenOrFetch::Ready(h),
            Peek::Refused(e) => return TokenOrFetch::Remembered(e),
            Peek::Empty => {}
        }
        if let Some(fetch) = &state.inflight {
            // A finished fetch whose task could not publish (it was cancelled) is stale.
            if fetch.peek().is_none() {
                return TokenOrFetch::Wait {
                    fetch: fetch.clone(),
                    leader: false,
                };
            }
            state.inflight = None;
        }
        if let Some((error, until)) = &state.failure
            && now < *until
        {
            return TokenOrFetch::Remembered(error.clone());
        }
        let fetch = start();
        state.inflight = Some(fetch.clone());
        TokenOrFetch::Wait {
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
        if self
            .current
            .load()
            .as_deref()
            .is_some_and(|t| now < t.refresh_at)
        {
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
    pub(crate) fn publish(&self, outcome: &FetchOutcome, now: Instant, failures: &FailureMemory) {
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
                let wait = failures.remember_for(error, state.failures_in_a_row);
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
            Some(t) if t.generation == generation && now < t.usable_until => {
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

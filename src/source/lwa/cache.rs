//! The per-seller cache of LWA access tokens: refreshed ahead of expiry, one call per seller at a
//! time, failures remembered with back-off, and invalidated by value at most once per refusal period.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use crate::backoff::FailureMemory;
use crate::error::{ErrorKind, SourceError};
use crate::resource::SellerId;
use crate::time;
use crate::token::SecretToken;

use super::credentials::LwaCredentials;
use super::parse::LwaGrant;

/// After the SP-API refused a seller's LWA token and it was dropped, a refusal within this period
/// keeps the token: a new token refused again at once says the refusal is not about the token (a
/// missing role, a wrong seller), and dropping it on every refused call would turn each one into an
/// LWA call. The same period as the token layer's default `refusal_period`.
pub(in crate::source) const LWA_REFUSAL_PERIOD: Duration = Duration::from_secs(60);

/// A cached access token and when to refresh it.
struct Cached {
    token: SecretToken,
    refresh_at: Instant,
}

/// One seller's credentials and access-token state.
pub(in crate::source) struct SellerSlot {
    credentials: LwaCredentials,
    margin: Duration,
    /// The current token: read without a lock.
    current: ArcSwapOption<Cached>,
    /// Held while one LWA call is in flight; remembers the last call's outcome.
    flight: tokio::sync::Mutex<LastCall>,
    /// How many LWA calls have completed (successfully or not).
    completed: AtomicU64,
    /// How long failed calls are remembered.
    failures: FailureMemory,
    /// When a refusal last dropped the token (see [`LWA_REFUSAL_PERIOD`]).
    dropped_at: Mutex<Option<Instant>>,
}

/// The last LWA call's outcome: shared with the callers that queued behind it, and while it is a
/// remembered failure, with every caller until `failed_until`.
#[derive(Default)]
struct LastCall {
    outcome: Option<Result<SecretToken, SourceError>>,
    failed_until: Option<Instant>,
    failures_in_a_row: u32,
}

impl fmt::Debug for SellerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SellerSlot")
            .field("credentials", &self.credentials)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl SellerSlot {
    pub(super) fn new(credentials: LwaCredentials, margin: Duration) -> Self {
        SellerSlot {
            credentials,
            margin,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(LastCall::default()),
            completed: AtomicU64::new(0),
            failures: FailureMemory::default(),
            dropped_at: Mutex::new(None),
        }
    }

    pub(in crate::source) fn credentials(&self) -> &LwaCredentials {
        &self.credentials
    }

    fn fresh(&self, now: Instant) -> Option<SecretToken> {
        let current = self.current.load();
        match current.as_deref() {
            Some(c) if now < c.refresh_at => Some(c.token.clone()),
            _ => None,
        }
    }

    /// When a token granted at `start` for `life` should be refreshed: `margin` before its expiry,
    /// but never before half its life.
    fn refresh_at(&self, start: Instant, life: Duration) -> Instant {
        crate::time::add(start, life - self.margin.min(life / 2))
    }

    /// The seller's access token: the cached one while fresh, otherwise one from `fetch`, called by
    /// one caller at a time; callers that waited for a call share its token or its error, and a
    /// failure is answered without calling LWA until its back-off ends (a permanent one, such as
    /// `invalid_grant`, for a minute; a transient one from about a second, doubling, up to a minute,
    /// or as long as LWA's `Retry-After` asks within that minute).
    pub(in crate::source) async fn access_token<F, Fut>(
        &self,
        fetch: F,
    ) -> Result<SecretToken, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LwaGrant, SourceError>>,
    {
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        let seen = self.completed.load(Ordering::Acquire);
        let mut last = self.flight.lock().await;
        if self.completed.load(Ordering::Acquire) != seen {
            // A call completed while this one waited: its outcome is this caller's too, fresh or
            // not (a token shorter-lived than the call itself must not make every waiter call again).
            match last.outcome.as_ref() {
                Some(Ok(token)) => return Ok(token.clone()),
                Some(Err(err)) => return Err(share(err)),
                None => {}
            }
        }
        let now = Instant::now();
        if let Some(token) = self.fresh(now) {
            return Ok(token);
        }
        if let (Some(Err(err)), Some(until)) = (last.outcome.as_ref(), last.failed_until)
            && now < until
        {
            return Err(share(err).with_retry_after(until - now));
        }
        // Lifetimes count from before the call, which errs on the early side.
        let outcome = fetch().await;
        let result = match outcome {
            Ok(grant) => {
                let refresh_at = self.refresh_at(now, grant.expires_in);
                self.current.store(Some(Arc::new(Cached {
                    token: grant.token.clone(),
                    refresh_at,
                })));
                *last = LastCall {
                    outcome: Some(Ok(grant.token.clone())),
                    failed_until: None,
                    failures_in_a_row: 0,
                };
                Ok(grant.token)
            }
            Err(err) => {
                let failures_in_a_row = last.failures_in_a_row.saturating_add(1);
                let wait = self.failures.remember_source_error(&err, failures_in_a_row);
                // The caller learns when LWA will be asked again (a retry sooner would only meet
                // this failure again).
                let err = err.with_retry_after(wait);
                *last = LastCall {
                    outcome: Some(Err(share(&err))),
                    failed_until: Some(time::add(Instant::now(), wait)),
                    failures_in_a_row,
                };
                Err(err)
            }
        };
        self.completed.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// After the SP-API refused `refused` (401/403): forgets it if it is still the cached token,
    /// unless a refusal dropped this seller's token less than [`LWA_REFUSAL_PERIOD`] ago. Returns
    /// whether it dropped the token (a newer token is kept).
    pub(in crate::source) fn invalidate(&self, refused: &SecretToken) -> bool {
        let now = Instant::now();
        let mut dropped_at = self
            .dropped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if dropped_at.is_some_and(|at| now < time::add(at, LWA_REFUSAL_PERIOD)) {
            return false;
        }
        let current = self.current.load_full();
        match &current {
            Some(c) if &c.token == refused => {
                self.current.compare_and_swap(&current, None);
                *dropped_at = Some(now);
                true
            }
            _ => false,
        }
    }
}

/// A copy of an error for the callers that share it (without the underlying error, which cannot be
/// cloned; its message is kept).
fn share(err: &SourceError) -> SourceError {
    let mut copy = match err.kind() {
        ErrorKind::Transient => SourceError::transient(err.message()),
        ErrorKind::Permanent => SourceError::permanent(err.message()),
    };
    if let Some(status) = err.status() {
        copy = copy.with_status(status);
    }
    if let Some(code) = err.code() {
        copy = copy.with_code(code.to_owned());
    }
    if let Some(cure) = err.cure() {
        copy = copy.with_cure(cure.to_owned());
    }
    if let Some(wait) = err.retry_after() {
        copy = copy.with_retry_after(wait);
    }
    copy
}

/// Every seller's LWA state.
pub(in crate::source) struct LwaCache {
    sellers: RwLock<HashMap<SellerId, Arc<SellerSlot>>>,
    margin: Duration,
}

impl LwaCache {
    pub(in crate::source) fn new(margin: Duration) -> Self {
        LwaCache {
            sellers: RwLock::new(HashMap::new()),
            margin,
        }
    }

    pub(in crate::source) fn margin(&self) -> Duration {
        self.margin
    }

    /// Adds or replaces a seller's credentials (a replacement starts with no cached token).
    pub(in crate::source) fn insert(&self, seller: SellerId, credentials: LwaCredentials) {
        let slot = Arc::new(SellerSlot::new(credentials, self.margin));
        self.sellers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seller, slot);
    }

    pub(in crate::source) fn remove(&self, seller: &SellerId) -> bool {
        self.sellers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(seller)
            .is_some()
    }

    pub(in crate::source) fn slot(&self, seller: &SellerId) -> Option<Arc<SellerSlot>> {
        self.sellers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(seller)
            .cloned()
    }

    /// The sellers with credentials, sorted.
    pub(in crate::source) fn sellers(&self) -> Vec<SellerId> {
        let mut ids: Vec<_> = self
            .sellers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

//! The per-seller cache of LWA access tokens: refreshed ahead of expiry, one call per seller at a
//! time, and invalidated by value.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use crate::error::{ErrorKind, SourceError};
use crate::resource::SellerId;
use crate::token::SecretToken;

use super::credentials::LwaCredentials;
use super::parse::LwaGrant;

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
    /// Peek while one LWA call is in flight; holds the last call's outcome for the callers that
    /// queued behind it.
    flight: tokio::sync::Mutex<Option<Result<SecretToken, SourceError>>>,
    /// How many LWA calls have completed (successfully or not).
    completed: AtomicU64,
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
            flight: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
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
    /// one caller at a time; callers that waited for a call share its token or its error.
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
            match last.as_ref() {
                Some(Ok(token)) => return Ok(token.clone()),
                Some(Err(err)) => return Err(share(err)),
                None => {}
            }
        }
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        // Lifetimes count from before the call, which errs on the early side.
        let start = Instant::now();
        let outcome = fetch().await;
        let result = match outcome {
            Ok(grant) => {
                let refresh_at = self.refresh_at(start, grant.expires_in);
                self.current.store(Some(Arc::new(Cached {
                    token: grant.token.clone(),
                    refresh_at,
                })));
                *last = Some(Ok(grant.token.clone()));
                Ok(grant.token)
            }
            Err(err) => {
                *last = Some(Err(share(&err)));
                Err(err)
            }
        };
        self.completed.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Forgets `stale` if it is still the cached token (a newer one is kept).
    pub(in crate::source) fn invalidate(&self, stale: &SecretToken) {
        let current = self.current.load_full();
        if let Some(c) = &current
            && &c.token == stale
        {
            self.current.compare_and_swap(&current, None);
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

//! The token cache: one slot per (seller, origin, resource scope, target application).
//!
//! A slot holds the current token behind an `ArcSwapOption`, so the hot path reads it without a lock,
//! and a small mutex-guarded state for the rare paths: the fetch under way (shared by every waiter),
//! the last failure (remembered until its back-off ends) and the failure count. The mutex is never
//! held across an await.
//!
//! Every cached token has two deadlines ([`CachedToken`]):
//! - before `refresh_at` it is fresh;
//! - from `refresh_at` to `usable_until` (its refresh window) it is still served, and one background
//!   refresh is started;
//! - from `usable_until` on (a margin before Amazon's expiry) it is no longer used, and requests wait
//!   for a fetch.
//!
//! `refresh_at` is jittered so that tokens fetched together are not refreshed together; the margins
//! are [`RefreshTiming`]'s.

mod entry;
mod key;
mod slot;
mod timing;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::fast::RandomState;
use http::HeaderValue;
use tokio::time::Instant;

use crate::resource::SellerId;
use crate::time;
use crate::token::IssuedToken;

pub(crate) use crate::backoff::FailureMemory;
pub(crate) use entry::{BundleInfo, CachedToken, Coverage, Denied, FetchOutcome, SharedFetch};
pub(crate) use key::{BundleId, ScopeRef, SlotKeyRef};
use key::{MapKey, MapKeyRef};
pub(crate) use slot::{Peek, Refusal, Slot, TokenOrFetch};
pub(crate) use timing::RefreshTiming;

/// How long a sweep keeps what a slot remembers besides its token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    /// Bundle refusals younger than this stay (the layer's `bundle_recheck`).
    pub(crate) bundle_recheck: Duration,
    /// A 403 drop younger than this stays (the layer's `refusal_period`).
    pub(crate) refusal_period: Duration,
}

/// How often the cache is swept of what has outlived its tokens (on a miss, when due).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The last generation given to a token, in the whole process: a generation names one token
/// whichever layer's cache holds it.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Every slot, in one map keyed by (seller, origin, scope, target application).
///
/// Memory is bounded by what is in use: at most once every [`SWEEP_EVERY`], the next miss sweeps
/// the cache, dropping expired tokens, then every slot that holds nothing else worth keeping (no
/// fetch under way, no failure still remembered, no recent bundle refusal). A lookup is one probe
/// of the map, whatever a seller holds.
pub(crate) struct TokenCache {
    slots: papaya::HashMap<MapKey, Arc<Slot>, RandomState>,
    /// How many operation and bundle slots each seller has: the sellers held.
    sellers: Mutex<HashMap<SellerId, usize, RandomState>>,
    /// How many slots hold a token (usable or not yet swept).
    held: Arc<AtomicUsize>,
    /// When the next sweep is due (`None`: at the next miss).
    next_sweep: Mutex<Option<Instant>>,
}

impl TokenCache {
    pub(crate) fn new() -> Self {
        TokenCache {
            // Blocking resizes: with the default incremental mode, lookups in a map filled by
            // inserts slowed from ~25 ns to ~600 ns at 100,000 sellers (measured).
            slots: papaya::HashMap::builder()
                .hasher(RandomState::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            sellers: Mutex::default(),
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
        self.sellers().len()
    }

    fn sellers(&self) -> MutexGuard<'_, HashMap<SellerId, usize, RandomState>> {
        // Every update is a single insert or remove: a poisoned lock is still good to use.
        self.sellers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sweeps the cache if a sweep is due at `now` (see [`TokenCache`]); returns whether it did.
    pub(crate) fn sweep_if_due(&self, now: Instant, retention: &Retention) -> bool {
        {
            let Ok(mut next) = self.next_sweep.try_lock() else {
                return false;
            };
            if next.is_some_and(|at| now < at) {
                return false;
            }
            *next = Some(time::add(now, SWEEP_EVERY));
        }
        self.sweep(now, retention);
        true
    }

    fn sweep(&self, now: Instant, retention: &Retention) {
        let mut gone: Vec<SellerId> = Vec::new();
        self.slots.pin().retain(|key, slot| {
            let drop = slot.sweep(now, retention) && Arc::strong_count(slot) == 1;
            if drop && let Some(seller) = key.counted_seller() {
                gone.push(seller.clone());
            }
            !drop
        });
        for seller in &gone {
            self.uncount(seller);
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
        f(self.slots.pin().get(&MapKeyRef { seller, key }))
    }

    /// The slot for `seller` and `key`, made if missing.
    pub(crate) fn slot(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> Arc<Slot> {
        let lookup = MapKeyRef { seller, key };
        let slots = self.slots.pin();
        if let Some(slot) = slots.get(&lookup) {
            return Arc::clone(slot);
        }
        // The seller is counted before its slot is in the map: a sweep may drop the slot as soon
        // as it is there (it is empty and nobody else holds it yet), and its uncounting must
        // find the count.
        let counted = !lookup.is_path();
        if counted {
            *self.sellers().entry(seller.clone()).or_default() += 1;
        }
        let made = Arc::new(Slot::new(Arc::clone(&self.held)));
        match slots.try_insert(lookup.to_key(), made) {
            Ok(slot) => Arc::clone(slot),
            Err(occupied) => {
                if counted {
                    self.uncount(seller);
                }
                Arc::clone(occupied.current)
            }
        }
    }

    /// Takes one slot off `seller`'s count, and the seller off the map at zero.
    fn uncount(&self, seller: &SellerId) {
        let mut sellers = self.sellers();
        if let Some(count) = sellers.get_mut(seller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sellers.remove(seller);
            }
        }
    }

    /// Turns a fetched token into a cache entry with its deadlines and a new generation.
    pub(crate) fn entry(
        &self,
        token: IssuedToken,
        now: Instant,
        refresh: &RefreshTiming,
        bundle: Option<BundleInfo>,
    ) -> CachedToken {
        let (refresh_at, usable_until) =
            refresh.deadlines(now, time::cap_lifetime(token.expires_in()));
        self.entry_with_deadlines(
            token.token().header_value().clone(),
            refresh_at,
            usable_until,
            bundle,
        )
    }

    /// A cache entry with deadlines decided elsewhere (fleet mode: by the replica that fetched it).
    pub(crate) fn entry_with_deadlines(
        &self,
        header: HeaderValue,
        refresh_at: Instant,
        usable_until: Instant,
        bundle: Option<BundleInfo>,
    ) -> CachedToken {
        CachedToken {
            header,
            refresh_at: refresh_at.min(usable_until),
            usable_until,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
            bundle: bundle.map(Box::new),
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("slots", &self.slots.len())
            .field("sellers", &self.sellers_held())
            .field("tokens", &self.tokens_held())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DataElements, OperationId};
    use futures_util::FutureExt;
    use http::Method;

    fn never() -> SharedFetch {
        futures_util::future::pending::<FetchOutcome>()
            .boxed()
            .shared()
    }

    fn header(value: &'static str) -> HeaderValue {
        HeaderValue::from_static(value)
    }

    #[tokio::test(start_paused = true)]
    async fn path_slots_do_not_count_as_sellers_and_are_swept() {
        let cache = TokenCache::new();
        let seller = SellerId::new("S");
        let method = Method::GET;
        let operation = SlotKeyRef {
            origin: 0,
            scope: ScopeRef::Operation {
                op: OperationId::at(1),
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
            slot.publish(&Ok(Arc::new(token)), now, &FailureMemory::default());
            assert!(cache.with_slot(&seller, key, |s| s.is_some()));
        }
        // One seller, whatever the number of documents; one slot per document besides the
        // operation's.
        assert_eq!(cache.sellers_held(), 1);
        assert_eq!(cache.slots.len(), 10_001);
        assert_eq!(cache.tokens_held(), 10_000);
        let keep = Retention {
            bundle_recheck: Duration::from_secs(3600),
            refusal_period: Duration::from_secs(60),
        };
        assert!(cache.sweep_if_due(now + Duration::from_secs(61), &keep));
        assert_eq!((cache.slots.len(), cache.tokens_held()), (0, 0));
        // The operation slot held nothing: its seller is gone too.
        assert_eq!(cache.sellers_held(), 0);
    }

    #[test]
    fn sweeps_racing_new_slots_leave_no_seller_counted_without_a_slot() {
        let cache = TokenCache::new();
        let key = SlotKeyRef {
            origin: 0,
            scope: ScopeRef::Operation {
                op: OperationId::at(1),
                elements: DataElements::NONE,
            },
            target: None,
        };
        let keep = Retention {
            bundle_recheck: Duration::from_secs(3600),
            refusal_period: Duration::from_secs(60),
        };
        let now = Instant::now();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..20_000 {
                    drop(cache.slot(&SellerId::new(format!("S{i}")), key));
                }
                done.store(true, Ordering::Relaxed);
            });
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    cache.sweep(now, &keep);
                }
            });
        });
        cache.sweep(now, &keep);
        // Every slot was empty and unheld: all are gone, and so is every seller.
        assert_eq!((cache.slots.len(), cache.sellers_held()), (0, 0));
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
        assert!(matches!(slot.peek(now, None), Peek::RefreshDue(_)));
        // ...while the refresh under way publishes a fresh one.
        assert!(slot.begin_refresh(now, never));
        let fresh = cache.entry_with_deadlines(
            header("new"),
            now + Duration::from_secs(50),
            now + Duration::from_secs(100),
            None,
        );
        slot.publish(&Ok(Arc::new(fresh)), now, &FailureMemory::default());
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
        let w = RefreshTiming::default();
        // Refreshing ahead takes at most half the usable life, however long `refresh_ahead` is:
        // without jitter, a token is fresh for at least half its usable life.
        let greedy = RefreshTiming {
            refresh_ahead: Duration::from_secs(86_400),
            jitter: Duration::ZERO,
            ..w
        };
        // The jitter adds at most half of that again: with it, at least a quarter.
        let jittery = RefreshTiming {
            jitter: Duration::from_secs(86_400),
            ..greedy
        };
        for life in [0u64, 1, 10, 60, 600, 3600, 86_400] {
            let life = Duration::from_secs(life);
            let (refresh_at, usable_until) = greedy.deadlines(now, life);
            let usable = usable_until - now;
            assert_eq!(refresh_at - now, usable - usable / 2, "{life:?}");
            for timing in [w, jittery] {
                for _ in 0..50 {
                    let (refresh_at, usable_until) = timing.deadlines(now, life);
                    assert!(refresh_at <= usable_until);
                    assert!(usable_until <= crate::time::add(now, life));
                    let usable = usable_until - now;
                    assert!(
                        refresh_at - now >= usable - usable / 2 - usable / 4,
                        "{life:?}"
                    );
                }
            }
        }
        let (refresh_at, usable_until) = w.deadlines(now, Duration::from_secs(3600));
        assert_eq!(usable_until - now, Duration::from_secs(3570));
        assert!(refresh_at - now <= Duration::from_secs(3270));
        assert!(refresh_at - now >= Duration::from_secs(3210));
    }
}

//! Counters of what the layer did, cheap enough to bump on every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of the layer's counters since it was built. Every clone of a layer and of its
/// services adds to the same counters.
///
/// ```
/// use spapi_rdt::{RestrictedDataTokenLayer, source_fn, error::SourceError, TokenRequest, IssuedToken};
///
/// let layer = RestrictedDataTokenLayer::new(source_fn(|_req: TokenRequest| async {
///     Err::<IssuedToken, _>(SourceError::permanent("no tokens here"))
/// }));
/// assert_eq!(layer.stats().fetches, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Restricted requests served from the cache with a fresh token.
    pub hits: u64,
    /// Restricted requests served a cached token inside its refresh window (a background refresh
    /// was due).
    pub refresh_window_hits: u64,
    /// Restricted requests that found no usable token and waited for one (or found one that was
    /// published while they looked; such a request counts as a miss only, never also as a hit).
    pub misses: u64,
    /// Of the misses, those that joined a fetch already under way instead of starting one.
    pub coalesced: u64,
    /// Calls made to the token source (each attempt counts).
    pub fetches: u64,
    /// Background refreshes started in the refresh window.
    pub refreshes: u64,
    /// Fetches that had to wait for the seller's rate limit.
    pub rate_limit_waits: u64,
    /// Fetches that failed (after their retries).
    pub fetch_errors: u64,
    /// Requests answered with a remembered error, without calling the source.
    pub remembered_errors: u64,
    /// Requests that waited past their deadline.
    pub timeouts: u64,
    /// Cached tokens dropped by `invalidate` (a 403 on a restricted call).
    pub invalidations: u64,
    /// Fleet mode: fetches answered from the shared store with a token another replica fetched,
    /// without calling the source.
    pub fleet_hits: u64,
    /// Fleet mode: fetches that waited for another replica's fetch of the same token (its lease).
    pub fleet_waits: u64,
    /// Fleet mode: times a fetch went on with this replica's own cache and rate limiter alone,
    /// because the shared store or limiter failed, timed out, or had failed moments before.
    pub fleet_fallbacks: u64,
    /// Gauge: tokens the cache holds now. Expired tokens count until the next sweep (at most a
    /// minute after they expire, on the next request that misses the cache).
    pub tokens_cached: u64,
    /// Gauge: sellers the cache holds operation or bundle slots for. A seller whose tokens have
    /// all expired, with nothing else to remember, is dropped by the next sweep.
    pub sellers_held: u64,
    /// Fleet mode: whether this replica works alone now, with its own cache and rate limiter,
    /// because its last call to the shared store or limiter failed; `false` again after the next
    /// call that works. Always `false` outside fleet mode.
    pub fleet_alone: bool,
}

/// Counter slots, each on its own cache line, so threads bumping counters do not contend.
const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe([AtomicU64; FIELDS]);

const FIELDS: usize = Counter::FleetFallbacks as usize + 1;

#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Counter {
    Hits,
    RefreshWindowHits,
    Misses,
    Coalesced,
    Fetches,
    Refreshes,
    RateLimitWaits,
    FetchErrors,
    RememberedErrors,
    Timeouts,
    Invalidations,
    FleetHits,
    FleetWaits,
    FleetFallbacks,
}

#[derive(Default)]
pub(crate) struct Counters {
    stripes: [Stripe; STRIPES],
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl Counters {
    #[inline]
    pub(crate) fn bump(&self, counter: Counter) {
        self.stripes[stripe_index()].0[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[counter as usize].load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.sum(Counter::Hits),
            refresh_window_hits: self.sum(Counter::RefreshWindowHits),
            misses: self.sum(Counter::Misses),
            coalesced: self.sum(Counter::Coalesced),
            fetches: self.sum(Counter::Fetches),
            refreshes: self.sum(Counter::Refreshes),
            rate_limit_waits: self.sum(Counter::RateLimitWaits),
            fetch_errors: self.sum(Counter::FetchErrors),
            remembered_errors: self.sum(Counter::RememberedErrors),
            timeouts: self.sum(Counter::Timeouts),
            invalidations: self.sum(Counter::Invalidations),
            fleet_hits: self.sum(Counter::FleetHits),
            fleet_waits: self.sum(Counter::FleetWaits),
            fleet_fallbacks: self.sum(Counter::FleetFallbacks),
            tokens_cached: 0,
            sellers_held: 0,
            fleet_alone: false,
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.snapshot(), f)
    }
}

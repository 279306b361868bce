//! The per-seller rate limit on token calls: governor's GCRA on tokio's clock.
//!
//! Amazon allows each seller authorization 1 token request a second with a burst of 10, per region.
//! Only the leader of a fetch takes a cell, so however many requests miss the cache at once, the
//! limiter sees one call per key. Waiting happens on `tokio::time` (so tests on paused time see it)
//! and is bounded.

use std::fmt;
use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::resource::{Origin, SellerId};

/// The token-call quota of one seller on one origin.
///
/// ```
/// use std::time::Duration;
/// use spapi_rdt::TokenQuota;
///
/// let amazon = TokenQuota::default();
/// assert_eq!((amazon.per_second(), amazon.burst()), (1.0, 10));
/// let sandbox = TokenQuota::new(5.0, 15).unwrap();
/// assert!(TokenQuota::new(0.0, 10).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenQuota {
    per_second: f64,
    burst: NonZeroU32,
}

impl TokenQuota {
    /// `per_second` calls a second on average, up to `burst` at once. `None` for a rate that is not
    /// positive and finite, or a burst of 0.
    pub fn new(per_second: f64, burst: u32) -> Option<Self> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return None;
        }
        Some(TokenQuota {
            per_second,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// Calls a second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Calls at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The longest a full bucket may take to refill (`burst` calls at the quota's interval): a
    /// century. governor counts in 64-bit nanoseconds (584 years), and slower quotas have no use.
    pub(crate) const MAX_REFILL: Duration = Duration::from_secs(86_400 * 365 * 100);

    /// The time between two calls once the burst is spent, `margin` included (saturating).
    pub(crate) fn interval(self, margin: Duration) -> Duration {
        Duration::try_from_secs_f64(1.0 / self.per_second)
            .unwrap_or(Duration::MAX)
            .saturating_add(margin)
            .max(Duration::from_nanos(1))
    }

    /// Whether this quota, spaced by `margin`, refills its burst within [`Self::MAX_REFILL`]; the
    /// error says what is wrong and whether `margin` alone is to blame.
    pub(crate) fn check(self, margin: Duration) -> Result<(), QuotaProblem> {
        if margin >= Self::MAX_REFILL {
            return Err(QuotaProblem::Margin);
        }
        let refill = self.interval(margin).saturating_mul(self.burst.get());
        if refill > Self::MAX_REFILL {
            return Err(QuotaProblem::Quota);
        }
        Ok(())
    }

    /// governor's quota, with `margin` added between two calls (bursts are unchanged). A quota that
    /// [`check`](Self::check) refuses is slowed no further than a full refill in
    /// [`Self::MAX_REFILL`], so governor's arithmetic cannot overflow.
    fn to_governor(self, margin: Duration) -> Quota {
        let longest = Self::MAX_REFILL / self.burst.get();
        let period = self
            .interval(margin)
            .min(longest.max(Duration::from_nanos(1)));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(self.burst)
    }
}

impl Default for TokenQuota {
    /// Amazon's documented quota for `createRestrictedDataToken`: 1 a second, burst 10.
    fn default() -> Self {
        TokenQuota {
            per_second: 1.0,
            burst: NonZeroU32::MIN.saturating_add(9),
        }
    }
}

/// Why [`TokenQuota::check`] refused a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaProblem {
    /// The margin alone is a year or more.
    Margin,
    /// The burst takes more than a year to refill.
    Quota,
}

/// A point in tokio time, as governor wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;
    /// Exact, not saturated at the crate's 30-year horizon: governor's instants reach as far as a
    /// full refill ([`TokenQuota::MAX_REFILL`], a century) past the limiter's start, and an earlier
    /// answer here would read as "free now" while governor still refuses, a wait of zero for ever.
    /// `u64` nanoseconds (584 years) fit in every platform's monotonic clock; should one not, the
    /// farthest instant that does is the answer.
    fn add(self, other: Nanos) -> Self {
        let duration = Duration::from(other);
        TokioInstant(
            self.0
                .checked_add(duration)
                .unwrap_or_else(|| crate::time::add(self.0, duration)),
        )
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(
            self.0
                .checked_sub(Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

/// governor's clock, read from `tokio::time::Instant::now()`: paused and advanced with tokio's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

type LimitKey = (SellerId, Origin);
type Keyed =
    RateLimiter<LimitKey, HashMapStateStore<LimitKey>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// Why no cell was granted in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WouldWaitTooLong {
    pub(crate) needed: Duration,
}

/// Per-(seller, origin) limiter on token calls.
pub(crate) struct TokenRateLimiter {
    limiter: Keyed,
    quota: TokenQuota,
}

impl TokenRateLimiter {
    /// A limiter for `quota`, spacing calls after a burst by `margin` more than the quota asks:
    /// Amazon's bucket starts when the first call arrives, ours when it leaves, so a later call on a
    /// warm connection can arrive a hair early and meet a 429 at exactly the quota.
    pub(crate) fn new(quota: TokenQuota, margin: Duration) -> Self {
        let store = HashMapStateStore::default();
        TokenRateLimiter {
            limiter: RateLimiter::new(quota.to_governor(margin), store, TokioClock),
            quota,
        }
    }

    /// Takes one cell for `seller` on `origin`, sleeping on tokio time until one is free, but not
    /// past `max_wait`. Returns how long it waited (zero when a cell was free at once, even on the
    /// wall clock, where some time always passes).
    pub(crate) async fn acquire(
        &self,
        seller: &SellerId,
        origin: &Origin,
        max_wait: Duration,
    ) -> Result<Duration, WouldWaitTooLong> {
        let key = (seller.clone(), origin.clone());
        let start = tokio::time::Instant::now();
        let mut slept = false;
        // Refusals in a row that named no wait: on the wall clock one can happen (the cell came
        // free between governor's check and our reading of the clock), never two. More means
        // governor and this clock disagree, and sleeping zero again would spin.
        let mut refusals_without_wait = 0u8;
        loop {
            match self.limiter.check_key(&key) {
                Ok(()) if !slept => return Ok(Duration::ZERO),
                Ok(()) => return Ok(start.elapsed()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    let waited = start.elapsed();
                    if wait.is_zero() {
                        refusals_without_wait += 1;
                        if refusals_without_wait > 2 {
                            return Err(WouldWaitTooLong {
                                needed: Duration::MAX,
                            });
                        }
                    } else {
                        refusals_without_wait = 0;
                    }
                    let needed = waited.saturating_add(wait);
                    if needed > max_wait {
                        return Err(WouldWaitTooLong { needed });
                    }
                    tokio::time::sleep(wait).await;
                    slept = true;
                }
            }
        }
    }
}

impl TokenRateLimiter {
    /// Forgets the sellers whose state is back to a full bucket (as a seller never seen has).
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl fmt::Debug for TokenRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRateLimiter")
            .field("quota", &self.quota)
            .field("keys", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Region;

    #[tokio::test]
    async fn a_free_cell_is_no_wait_on_the_wall_clock() {
        let limiter = TokenRateLimiter::new(TokenQuota::default(), Duration::ZERO);
        let (s, o) = (SellerId::default(), Region::Europe.origin());
        for _ in 0..3 {
            let waited = limiter.acquire(&s, &o, Duration::ZERO).await.unwrap();
            assert_eq!(waited, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_one_a_second_on_paused_time() {
        let limiter = TokenRateLimiter::new(TokenQuota::default(), Duration::ZERO);
        let (s, o) = (SellerId::default(), Region::Europe.origin());
        for _ in 0..10 {
            let waited = limiter.acquire(&s, &o, Duration::ZERO).await.unwrap();
            assert_eq!(waited, Duration::ZERO);
        }
        // The 11th waits one period, on tokio's clock: a second, and at most the millisecond that
        // tokio's timer rounds a sleep up to.
        let start = tokio::time::Instant::now();
        let waited = limiter
            .acquire(&s, &o, Duration::from_secs(5))
            .await
            .unwrap();
        let period = Duration::from_secs(1)..=Duration::from_millis(1_001);
        assert!(period.contains(&waited), "{waited:?}");
        assert_eq!(start.elapsed(), waited);
        // Another seller is not affected.
        let other = SellerId::new("other");
        assert_eq!(
            limiter.acquire(&other, &o, Duration::ZERO).await.unwrap(),
            Duration::ZERO
        );
        // Same seller on another region has its own bucket.
        assert!(
            limiter
                .acquire(&s, &Region::FarEast.origin(), Duration::ZERO)
                .await
                .is_ok()
        );
        // A wait longer than allowed is refused at once.
        let err = limiter
            .acquire(&s, &o, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(err.needed > Duration::from_millis(10));
    }

    /// A quota whose one call refills in 31.7 years, past the 30 years every deadline of the
    /// crate saturates at: a second call must be refused at once (its wait is past any budget), not
    /// spun on with waits of zero. Before governor's instants were exact, this never returned.
    #[tokio::test(start_paused = true)]
    async fn a_refill_past_thirty_years_is_refused_not_spun_on() {
        let quota = TokenQuota::new(1e-9, 1).unwrap();
        assert!(quota.check(Duration::ZERO).is_ok());
        let limiter = TokenRateLimiter::new(quota, Duration::ZERO);
        let (s, o) = (SellerId::default(), Region::Europe.origin());
        let budget = crate::time::FAR_FUTURE;
        assert_eq!(limiter.acquire(&s, &o, budget).await, Ok(Duration::ZERO));
        let interval = quota.interval(Duration::ZERO);
        let err = limiter.acquire(&s, &o, budget).await.unwrap_err();
        assert_eq!(err.needed, interval);
        // Thirty years on, the wait left is what governor says, not zero, and it is honoured.
        tokio::time::advance(budget).await;
        let err = limiter.acquire(&s, &o, Duration::ZERO).await.unwrap_err();
        assert_eq!(err.needed, interval - budget);
        // tokio's timer rounds a sleep up to the millisecond.
        let waited = limiter.acquire(&s, &o, budget).await.unwrap();
        let left = interval - budget;
        assert!(
            (left..=left + Duration::from_millis(1)).contains(&waited),
            "{waited:?}"
        );
    }

    #[test]
    fn quota_rejects_nonsense() {
        assert!(TokenQuota::new(f64::NAN, 1).is_none());
        assert!(TokenQuota::new(-1.0, 1).is_none());
        assert!(TokenQuota::new(1.0, 0).is_none());
        assert!(TokenQuota::new(1e12, 1).is_some());
    }
}

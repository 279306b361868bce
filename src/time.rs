//! Time arithmetic that cannot panic, and the bounds put on durations that come from outside.
//!
//! Every deadline in the crate is an instant plus a duration, and some of those durations come from
//! outside: a setting, a token's stated lifetime, a `Retry-After` header. `Instant + Duration`
//! panics when the sum does not fit, so the crate never writes it: it calls [`add`], which
//! saturates at [`FAR_FUTURE`] from the instant (about 30 years, as tokio's own far-future sleeps
//! do). A deadline that far away is as good as never on any clock the crate runs on.
//!
//! The bounds on outside numbers live here too: a token lifetime is cut to
//! [`MAX_TOKEN_LIFETIME`] whatever source stated it, one under [`MIN_TOKEN_LIFETIME`] is refused,
//! and a `Retry-After` is cut to the layer's longest transient back-off (see `FailureMemory` in
//! `backoff`).

use std::time::Duration;

use tokio::time::Instant;

/// The furthest into the future a deadline is put: about 30 years.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The longest lifetime believed from any token source: one day. A longer one is cut to it, so a
/// token is fetched anew at least once a day whatever its source says.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// The shortest lifetime accepted from any token source: one second. A token that lives less is
/// dead on arrival (or would be fetched again for nearly every request): the fetch fails with a
/// transient error instead, retried a bounded number of times and then remembered with back-off,
/// so a source that only hands out such tokens costs a bounded number of calls. The same line
/// the default source draws for `expiresIn`.
pub(crate) const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(1);

/// `instant + duration`, saturating at [`FAR_FUTURE`] after `instant` instead of overflowing.
#[inline]
pub(crate) fn add(instant: Instant, duration: Duration) -> Instant {
    let duration = duration.min(FAR_FUTURE);
    // Thirty years fit in every platform's monotonic clock; should one not, the instant itself is
    // the only answer that cannot panic.
    instant.checked_add(duration).unwrap_or(instant)
}

/// `duration * factor` for a finite, non-negative `factor`, saturating at `Duration::MAX` where
/// `Duration::mul_f64` would panic (it rounds `Duration::MAX` up when converting to seconds).
#[inline]
pub(crate) fn scale(duration: Duration, factor: f64) -> Duration {
    if !(factor.is_finite() && factor >= 0.0) {
        return duration;
    }
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// `lifetime` when it is at least [`MIN_TOKEN_LIFETIME`], else `None`.
#[inline]
pub(crate) fn usable_lifetime(lifetime: Duration) -> Option<Duration> {
    (lifetime >= MIN_TOKEN_LIFETIME).then_some(lifetime)
}

/// A stated lifetime, cut to [`MAX_TOKEN_LIFETIME`].
#[inline]
pub(crate) fn cap_lifetime(lifetime: Duration) -> Duration {
    lifetime.min(MAX_TOKEN_LIFETIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            add(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(add(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            add(add(now, Duration::MAX), Duration::MAX),
            now + FAR_FUTURE + FAR_FUTURE
        );
    }

    #[test]
    fn scaling_saturates_instead_of_panicking() {
        assert_eq!(scale(Duration::MAX, 1.0), Duration::MAX);
        assert_eq!(
            scale(Duration::MAX, 0.75).as_secs(),
            (u64::MAX as f64 * 0.75) as u64
        );
        assert_eq!(scale(Duration::from_secs(10), 0.5), Duration::from_secs(5));
        assert_eq!(
            scale(Duration::from_secs(10), f64::NAN),
            Duration::from_secs(10)
        );
    }
}

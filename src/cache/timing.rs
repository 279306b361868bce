//! How long a token is fresh and usable ([`RefreshTiming`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::time;

/// When a token is refreshed and when it stops being used: the margins before its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RefreshTiming {
    /// Refresh this long before `usable_until` (at most half the token's life).
    pub(crate) refresh_ahead: Duration,
    /// Stop using a token this long before it expires (at most a tenth of its life).
    pub(crate) expiry_margin: Duration,
    /// Refresh up to this much earlier still, at random (at most half of `refresh_ahead`).
    pub(crate) jitter: Duration,
}

impl Default for RefreshTiming {
    fn default() -> Self {
        RefreshTiming {
            refresh_ahead: Duration::from_secs(300),
            expiry_margin: Duration::from_secs(30),
            jitter: Duration::from_secs(60),
        }
    }
}

impl RefreshTiming {
    /// The `refresh_at` and `usable_until` deadlines of a token that lives `life` from `now`.
    pub(super) fn deadlines(&self, now: Instant, life: Duration) -> (Instant, Instant) {
        let usable = life.saturating_sub(self.expiry_margin.min(life / 10));
        let ahead = self.refresh_ahead.min(usable / 2);
        let jitter_max = self.jitter.min(ahead / 2);
        let jitter = time::scale(jitter_max, fastrand::f64());
        let usable_until = time::add(now, usable);
        let refresh_at = time::add(now, usable.saturating_sub(ahead.saturating_add(jitter)));
        (refresh_at, usable_until)
    }
}

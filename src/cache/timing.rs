//! How long a token is fresh and usable ([`RefreshTiming`]), and how long a failed fetch is remembered
//! ([`FailureMemory`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::FetchError;
use crate::error::{ErrorKind, SourceError};
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

/// How long failures are remembered.
///
/// A source's `Retry-After` is honoured up to [`transient_max`](Self::transient_max) and no
/// further: that is the documented ceiling on how long any answer can keep a seller from a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FailureMemory {
    /// The first transient failure is remembered this long; each further one doubles it.
    pub(crate) transient_base: Duration,
    /// The longest a transient failure is remembered.
    pub(crate) transient_max: Duration,
    /// How long a permanent failure is remembered.
    pub(crate) permanent: Duration,
}

impl Default for FailureMemory {
    fn default() -> Self {
        FailureMemory {
            transient_base: Duration::from_secs(1),
            transient_max: Duration::from_secs(60),
            permanent: Duration::from_secs(60),
        }
    }
}

impl FailureMemory {
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

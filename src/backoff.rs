//! How long a failure is remembered before the same thing is tried again: one policy for the token
//! cache's fetches and the LWA source's calls.

use std::time::Duration;

use crate::error::{ErrorKind, FetchError, SourceError};
use crate::time;

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
    /// How long a failed token fetch is remembered, the `failures_in_a_row`-th in a row.
    pub(crate) fn remember_for(&self, error: &FetchError, failures_in_a_row: u32) -> Duration {
        match error {
            FetchError::Source(e) => self.remember_source_error(e, failures_in_a_row),
            _ => self.remember(ErrorKind::Transient, Duration::ZERO, failures_in_a_row),
        }
    }

    /// How long a source's failure is remembered, the `failures_in_a_row`-th in a row.
    pub(crate) fn remember_source_error(
        &self,
        error: &SourceError,
        failures_in_a_row: u32,
    ) -> Duration {
        self.remember(error.kind(), self.retry_after(error), failures_in_a_row)
    }

    fn remember(&self, kind: ErrorKind, asked: Duration, failures_in_a_row: u32) -> Duration {
        if kind == ErrorKind::Permanent {
            return self.permanent;
        }
        let doubled = self
            .transient_base
            .saturating_mul(1u32 << failures_in_a_row.saturating_sub(1).min(16));
        let capped = doubled.min(self.transient_max);
        // Full jitter over the upper half, so replicas that failed together retry apart.
        time::scale(capped, 0.5 + fastrand::f64() / 2.0).max(asked)
    }

    /// How long `error` asks to wait, cut to [`transient_max`](Self::transient_max).
    pub(crate) fn retry_after(&self, error: &SourceError) -> Duration {
        error
            .retry_after()
            .unwrap_or_default()
            .min(self.transient_max)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = FailureMemory::default();
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

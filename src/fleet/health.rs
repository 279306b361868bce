//! Whether a shared store may be called: every call bounded by a timeout, and after a failure the
//! replica works alone for a while, warns at most once a minute, and says when the store is back.
//! The token path ([`run`](super::run)) and the usage-plan buckets ([`crate::pacing`]) both go
//! by it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::FleetFuture;
use crate::error::FleetError;
use crate::time;

/// How often, at most, a warning says that a shared store is failing.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A shared store's health, as one replica sees it.
pub(crate) struct StoreHealth {
    /// What the logs call the store, and what the replica does alone.
    store: &'static str,
    alone: &'static str,
    call_timeout: Duration,
    retry_after: Duration,
    state: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// While set and in the future, the shared store is not called.
    down_until: Option<Instant>,
    /// Whether the last call failed (so that a success is worth a log line).
    degraded: bool,
    last_warning: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
    /// Warnings logged so far (tests read it: tracing's process-wide interest cache makes counting
    /// log events unreliable while other tests run in parallel).
    warnings: u64,
}

impl StoreHealth {
    /// The health of `store` (as logs name it), whose calls may take `call_timeout` and which is
    /// left alone for `retry_after` after a failure, while the replica does `alone`.
    pub(crate) fn new(
        store: &'static str,
        alone: &'static str,
        call_timeout: Duration,
        retry_after: Duration,
    ) -> Self {
        StoreHealth {
            store,
            alone,
            call_timeout,
            retry_after,
            state: Mutex::new(Health::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Health> {
        // Every update is a few plain assignments: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the last call failed: the replica works alone.
    pub(crate) fn degraded(&self) -> bool {
        self.state().degraded
    }

    /// Whether the store may be called now (it has not failed within `retry_after`).
    pub(crate) fn available(&self) -> bool {
        self.state()
            .down_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Warnings logged so far.
    #[cfg(test)]
    pub(crate) fn warnings(&self) -> u64 {
        self.state().warnings
    }

    /// Runs one call, bounded by the call timeout, and keeps the health up to date.
    pub(crate) async fn call<T>(
        &self,
        what: &'static str,
        call: FleetFuture<'_, T>,
    ) -> Result<T, ()> {
        let timeout = self.call_timeout;
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(FleetError::timed_out(what, timeout)),
        };
        match result {
            Ok(value) => {
                self.succeeded();
                Ok(value)
            }
            Err(error) => {
                self.failed(what, &error);
                Err(())
            }
        }
    }

    fn succeeded(&self) {
        let mut health = self.state();
        if health.degraded {
            health.degraded = false;
            health.down_until = None;
            drop(health);
            tracing::info!(
                store = self.store,
                "fleet mode: the shared store answers again; back to shared mode"
            );
        }
    }

    fn failed(&self, what: &'static str, error: &FleetError) {
        let now = Instant::now();
        let retry_after = self.retry_after;
        let mut health = self.state();
        health.degraded = true;
        health.down_until = Some(time::add(now, retry_after));
        health.unreported += 1;
        let due = health
            .last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
        if due {
            let failures = std::mem::take(&mut health.unreported);
            health.last_warning = Some(now);
            health.warnings += 1;
            drop(health);
            tracing::warn!(
                store = self.store, call = what, %error, failures, ?retry_after, alone = self.alone,
                "fleet mode: the shared store failed; this replica works alone until it answers again"
            );
        } else {
            drop(health);
            tracing::debug!(store = self.store, call = what, %error, "fleet mode: shared store call failed");
        }
    }
}

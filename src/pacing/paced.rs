//! A paced request's way through its bucket: classified, given a slot, sent, and after the answer
//! the bucket corrected (a learned rate, a 429 drained) and a bounded retry. Both front ends (the
//! tower service and the reqwest middleware) run it; only how a request is sent differs ([`Wire`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, StatusCode, Uri};
use tokio::time::Instant;

use super::bucket::{BucketKey, Buckets, Priority, Slot};
use super::layer::{Shared, UnknownOperations};
use super::rate;
use crate::catalog::{PlanId, UsagePlan};
use crate::control::Background;
use crate::error::PacingError;
use crate::resource::SellerId;
use crate::time;

/// How a front end sends a request below it and reads the answer.
pub(super) trait Wire {
    type Request;
    type Response;
    type Error;

    /// The error a request too long to wait for fails with.
    fn refused(error: PacingError) -> Self::Error;

    /// A copy of the request for a retry, when its body can be sent again.
    fn replay(request: &Self::Request) -> Option<Self::Request>;

    /// Sends the request below.
    fn send(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send + '_;

    /// The answer's status and headers.
    fn head(response: &Self::Response) -> (StatusCode, &HeaderMap);
}

/// A request the layer paces: its bucket and plan.
pub(super) struct Paced {
    key: BucketKey,
    plan: UsagePlan,
    priority: Priority,
}

impl Paced {
    /// The bucket and plan of a request, or `None` when the layer leaves it alone.
    pub(super) fn of(
        shared: &Shared,
        method: &Method,
        uri: &Uri,
        extensions: &Extensions,
    ) -> Option<Paced> {
        let operation = shared
            .plans
            .classify(method, uri.path())
            .map(|(id, op)| (id, op.plan()));
        let (operation, plan) = match (operation, shared.unknown) {
            (Some((id, plan)), _) => (id, shared.overrides.get(&id).copied().or(plan)),
            (None, UnknownOperations::DefaultPlan) => (PlanId::UNKNOWN, None),
            (None, UnknownOperations::PassThrough) => return None,
        };
        Some(Paced {
            key: BucketKey {
                seller: extensions.get::<SellerId>().cloned(),
                origin: uri.authority().cloned(),
                operation,
            },
            plan: plan.unwrap_or(UsagePlan::CONSERVATIVE_DEFAULT),
            priority: if extensions.get::<Background>().is_some() {
                Priority::Background
            } else {
                Priority::Urgent
            },
        })
    }

    /// Waits for the request's slot, sends it, corrects the bucket from the answer, and after a
    /// 429 sends a copy again at its next slot (plus jitter), at most `retries` times and never
    /// past `max_wait`.
    pub(super) async fn run<W: Wire>(
        self,
        shared: Arc<Shared>,
        mut wire: W,
        mut request: W::Request,
    ) -> Result<W::Response, W::Error> {
        let counters = &shared.counters;
        let start = Instant::now();
        let mut retries_left = shared.retries;
        let mut throttled: Option<W::Response> = None;
        loop {
            if let Err(wait) = self.wait_for_slot(&shared, start).await {
                // After a 429, the answer Amazon gave says more than a wait that is too long.
                if let Some(response) = throttled {
                    return Ok(response);
                }
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(W::refused(self.too_long(&shared, wait)));
            }
            if throttled.is_some() {
                // Replicas throttled together come back apart.
                tokio::time::sleep(time::scale(Duration::from_secs(1), fastrand::f64())).await;
            }
            let replay = if retries_left > 0 {
                W::replay(&request)
            } else {
                None
            };
            let response = wire.send(request).await?;
            let (status, headers) = W::head(&response);
            if status != StatusCode::TOO_MANY_REQUESTS {
                if let Some(rate) = rate::stated_rate(status, headers)
                    && lock(&shared).learn(&self.key, rate)
                {
                    counters.learned.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(response);
            }
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            lock(&shared).drain(&self.key, Instant::now());
            let Some(next) = replay else {
                return Ok(response);
            };
            retries_left -= 1;
            counters.retries.fetch_add(1, Ordering::Relaxed);
            throttled = Some(response);
            request = next;
        }
    }

    /// Takes a slot and waits for it; `Err` with the wait when it would pass `max_wait` counted
    /// from `start`. With every bucket busy, the request goes at once, unpaced.
    async fn wait_for_slot(&self, shared: &Shared, start: Instant) -> Result<(), Duration> {
        let counters = &shared.counters;
        loop {
            let now = Instant::now();
            let waited = now.saturating_duration_since(start);
            let left = shared.max_wait.saturating_sub(waited);
            let slot = lock(shared).take(&self.key, self.plan, self.priority, now, left);
            match slot {
                None => {
                    counters.unpaced.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Some(Slot::TooFar(wait)) => return Err(waited.saturating_add(wait)),
                Some(Slot::Retry(at)) => tokio::time::sleep_until(at).await,
                Some(Slot::At(at)) => {
                    counters.paced.fetch_add(1, Ordering::Relaxed);
                    if at > now {
                        let total = at.saturating_duration_since(start);
                        counters.waited.fetch_add(1, Ordering::Relaxed);
                        let micros = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
                        counters.wait_micros.fetch_add(micros, Ordering::Relaxed);
                        tokio::time::sleep_until(at).await;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn too_long(&self, shared: &Shared, wait: Duration) -> PacingError {
        let (api, operation) = shared
            .plans
            .get(self.key.operation)
            .map_or(("", "an operation of no model"), |op| (op.api(), op.name()));
        PacingError {
            api: api.to_owned(),
            operation: operation.to_owned(),
            wait,
            limit: shared.max_wait,
        }
    }
}

/// The buckets, for one short, await-free step. A poisoned lock is taken over: the buckets hold
/// plain numbers, which a panic elsewhere cannot leave half-written in a way that matters.
fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Buckets> {
    shared
        .buckets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

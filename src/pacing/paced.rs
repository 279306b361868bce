//! A paced request's way through its bucket: classified, given a slot, sent, and after the answer
//! the bucket corrected (a learned rate, a 429 drained) and a bounded retry. Both front ends (the
//! tower service and the reqwest middleware) run it; only how a request is sent differs ([`Wire`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Extensions, HeaderMap, Method, StatusCode, Uri};
use tokio::time::Instant;

use super::bucket::{BucketKey, Buckets, Host, Priority, Slot};
use super::layer::{FleetBuckets, Shared, UnknownOperations};
use super::rate;
use crate::catalog::{PlanId, UsagePlan};
use crate::control::Background;
use crate::error::PacingError;
use crate::fleet::{PlanAsk, PlanBucket, PlanSlot};
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

    /// Puts what pacing did in the answer's extensions.
    fn report(response: &mut Self::Response, report: PacingReport);
}

/// What pacing did to one request: in the extensions of its answer, from both front ends
/// ([`Pacing`](super::Pacing) and [`PacingMiddleware`](super::PacingMiddleware)), for logs and
/// metrics by operation. Answers to requests the layer left alone carry none.
///
/// ```
/// use spapi_rdt::catalog::UsagePlans;
/// use spapi_rdt::pacing::PacingReport;
///
/// fn log(response: &http::Response<String>, plans: &UsagePlans) {
///     if let Some(report) = response.extensions().get::<PacingReport>() {
///         let name = report.operation.and_then(|id| plans.get(id)).map_or("?", |op| op.name());
///         println!("{name}: held {:?}, {} × 429", report.waited, report.throttled);
///     }
/// }
/// # let _ = log;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PacingReport {
    /// The operation, as [`UsagePlans::get`](crate::catalog::UsagePlans::get) knows it; `None`
    /// for a path of no model operation, paced by the default plan.
    pub operation: Option<PlanId>,
    /// How long the layer held the request, all attempts together: the waits for slots and the
    /// jitter before retries, not the time the service below took.
    pub waited: Duration,
    /// 429 answers met, the one returned included.
    pub throttled: u32,
    /// Times the request was sent again after a 429.
    pub retries: u32,
    /// The rate (requests a second) the answer's `x-amzn-RateLimit-Limit` stated, as believed
    /// (bounded, see the [module](super) documentation); `None` when it stated none.
    pub stated_rate: Option<f64>,
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
            (Some((id, plan)), _) if shared.overrides.is_empty() => (id, plan),
            (Some((id, plan)), _) => (id, shared.overrides.get(&id).copied().or(plan)),
            (None, UnknownOperations::DefaultPlan) => (PlanId::UNKNOWN, None),
            (None, UnknownOperations::PassThrough) => return None,
        };
        Some(Paced {
            key: BucketKey {
                seller: extensions.get::<SellerId>().cloned(),
                origin: uri.authority().map(Host::of),
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
        // When the request came, read at its first slot (one clock read fewer on the warm path).
        let mut start = None;
        let mut retries_left = shared.retries;
        let mut throttled: Option<W::Response> = None;
        let mut report = PacingReport {
            operation: (self.key.operation != PlanId::UNKNOWN).then_some(self.key.operation),
            waited: Duration::ZERO,
            throttled: 0,
            retries: 0,
            stated_rate: None,
        };
        let finish = |mut response: W::Response, report: PacingReport| {
            W::report(&mut response, report);
            response
        };
        loop {
            match self.wait_for_slot(&shared, &mut start).await {
                Ok(waited) => report.waited = report.waited.saturating_add(waited),
                Err(wait) => {
                    // After a 429, the answer Amazon gave says more than a wait that is too long.
                    if let Some(response) = throttled {
                        return Ok(finish(response, report));
                    }
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(W::refused(self.too_long(&shared, wait)));
                }
            }
            if throttled.is_some() {
                // A retry is counted once its slot is taken, when it is sure to be sent.
                report.retries += 1;
                counters.retries.fetch_add(1, Ordering::Relaxed);
                // Replicas throttled together come back apart.
                let jitter = time::scale(Duration::from_secs(1), fastrand::f64());
                report.waited = report.waited.saturating_add(jitter);
                tokio::time::sleep(jitter).await;
            }
            let replay = if retries_left > 0 {
                W::replay(&request)
            } else {
                None
            };
            let response = wire.send(request).await?;
            let (status, headers) = W::head(&response);
            if status != StatusCode::TOO_MANY_REQUESTS {
                report.stated_rate = rate::stated_rate(status, headers);
                if let Some(rate) = report.stated_rate
                    && lock(&shared).learn(&self.key, rate)
                {
                    counters.learned.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(finish(response, report));
            }
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            report.throttled += 1;
            self.drain(&shared).await;
            let Some(next) = replay else {
                return Ok(finish(response, report));
            };
            retries_left -= 1;
            throttled = Some(response);
            request = next;
        }
    }

    /// Takes a slot and waits for it: how long it waited, or `Err` with the wait when it would
    /// pass `max_wait` counted from `start` (set to now on the first call). With every bucket
    /// busy, the request goes at once, unpaced.
    async fn wait_for_slot(
        &self,
        shared: &Shared,
        start: &mut Option<Instant>,
    ) -> Result<Duration, Duration> {
        let counters = &shared.counters;
        let mut slept = Duration::ZERO;
        loop {
            let now = Instant::now();
            let start = *start.get_or_insert(now);
            let waited = now.saturating_duration_since(start);
            let left = shared.max_wait.saturating_sub(waited);
            let slot = match &shared.fleet {
                None => lock(shared).take(&self.key, self.plan, self.priority, now, left, 1),
                Some(fleet) => self.take_in_fleet(shared, fleet, now, left).await,
            };
            match slot {
                None => {
                    counters.unpaced.fetch_add(1, Ordering::Relaxed);
                    return Ok(slept);
                }
                Some(Slot::TooFar(wait)) => return Err(waited.saturating_add(wait)),
                Some(Slot::Retry(at)) => {
                    slept = slept.saturating_add(at.saturating_duration_since(now));
                    tokio::time::sleep_until(at).await;
                }
                Some(Slot::At(at)) => {
                    counters.paced.fetch_add(1, Ordering::Relaxed);
                    if at > now {
                        let total = at.saturating_duration_since(start);
                        counters.waited.fetch_add(1, Ordering::Relaxed);
                        let micros = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
                        counters.wait_micros.fetch_add(micros, Ordering::Relaxed);
                        slept = slept.saturating_add(at.saturating_duration_since(now));
                        tokio::time::sleep_until(at).await;
                    }
                    return Ok(slept);
                }
            }
        }
    }

    /// A slot of the bucket every replica shares, or, when the shared buckets fail (or are left
    /// alone after a failure), of this replica's own at its share of the plan.
    async fn take_in_fleet(
        &self,
        shared: &Shared,
        fleet: &FleetBuckets,
        now: Instant,
        left: Duration,
    ) -> Option<Slot> {
        if fleet.health.available() {
            let (interval, tolerance) = lock(shared).gcra(&self.key, self.plan, self.priority, now);
            let ask = PlanAsk {
                interval,
                tolerance,
                max_wait: left,
                ahead: self.priority == Priority::Urgent,
            };
            let bucket = self.shared_bucket(shared);
            if let Ok(slot) = fleet
                .health
                .call("usage plan", fleet.store.take(&bucket, ask))
                .await
            {
                // The store's numbers come from outside: a wait past what was asked is refused.
                let answered = Instant::now();
                return Some(match slot {
                    PlanSlot::Taken(wait) if wait <= left => Slot::At(time::add(answered, wait)),
                    PlanSlot::Retry(wait) if wait <= left => Slot::Retry(time::add(answered, wait)),
                    PlanSlot::Taken(wait) | PlanSlot::Retry(wait) | PlanSlot::TooFar(wait) => {
                        Slot::TooFar(wait)
                    }
                });
            }
        }
        shared
            .counters
            .fleet_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        let share = fleet.replicas;
        lock(shared).take(&self.key, self.plan, self.priority, now, left, share)
    }

    /// The name every replica gives this request's bucket.
    fn shared_bucket(&self, shared: &Shared) -> PlanBucket {
        let origin = self.key.origin.as_ref().map_or("", |o| o.as_str());
        let operation = shared.plans.get(self.key.operation).map_or_else(
            || "unknown".to_owned(),
            |op| format!("{} {}", op.api(), op.name()),
        );
        PlanBucket {
            seller: self.key.seller.clone(),
            name: format!("{origin} {operation}"),
        }
    }

    /// Empties the request's bucket after a 429: this replica's, and the fleet's.
    async fn drain(&self, shared: &Shared) {
        let empty_for = lock(shared).drain(&self.key, self.plan, Instant::now());
        if let Some(fleet) = &shared.fleet
            && fleet.health.available()
        {
            let bucket = self.shared_bucket(shared);
            let _ = fleet
                .health
                .call("usage plan drain", fleet.store.drain(&bucket, empty_for))
                .await;
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

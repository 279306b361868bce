//! [`Pacing`]: the service that holds each request until its bucket has room.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower_service::Service;

use super::bucket::{BucketKey, Priority, Slot};
use super::future::ResponseFuture;
use super::layer::{Shared, UnknownOperations};
use super::rate;
use crate::BoxError;
use crate::catalog::{PlanId, UsagePlan};
use crate::control::Background;
use crate::error::PacingError;
use crate::recover::{ReplayBody, replayable};
use crate::resource::SellerId;
use crate::time;

/// The service of [`PacingLayer`](super::PacingLayer).
///
/// It is always ready: a request waits for its slot inside its future, and only then is a clone of
/// the inner service driven to readiness and called, so waiting requests hold none of the inner
/// service's capacity.
#[derive(Clone)]
pub struct Pacing<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Pacing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacing")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Pacing<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Pacing { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for Pacing<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<RB>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match Paced::of(&self.shared, &request) {
            None => ResponseFuture::new(send(inner, request)),
            Some(paced) => ResponseFuture::new(paced.run(Arc::clone(&self.shared), inner, request)),
        }
    }
}

/// Drives `inner` to readiness and sends `request`.
async fn send<S, B, RB>(mut inner: S, request: Request<B>) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    inner.call(request).await.map_err(Into::into)
}

/// A request the layer paces: its bucket and plan.
struct Paced {
    key: BucketKey,
    plan: UsagePlan,
    priority: Priority,
}

impl Paced {
    fn of<B>(shared: &Shared, request: &Request<B>) -> Option<Paced> {
        let uri = request.uri();
        let operation = shared
            .plans
            .classify(request.method(), uri.path())
            .map(|(id, op)| (id, op.plan()));
        let (operation, plan) = match (operation, shared.unknown) {
            (Some((id, plan)), _) => (id, shared.overrides.get(&id).copied().or(plan)),
            (None, UnknownOperations::DefaultPlan) => (PlanId::UNKNOWN, None),
            (None, UnknownOperations::PassThrough) => return None,
        };
        Some(Paced {
            key: BucketKey {
                seller: request.extensions().get::<SellerId>().cloned(),
                origin: uri.authority().cloned(),
                operation,
            },
            plan: plan.unwrap_or(UsagePlan::CONSERVATIVE_DEFAULT),
            priority: if request.extensions().get::<Background>().is_some() {
                Priority::Background
            } else {
                Priority::Urgent
            },
        })
    }

    async fn run<S, B, RB>(
        self,
        shared: Arc<Shared>,
        mut inner: S,
        mut request: Request<B>,
    ) -> Result<Response<RB>, BoxError>
    where
        S: Service<Request<B>, Response = Response<RB>>,
        S::Error: Into<BoxError>,
        B: ReplayBody,
    {
        let counters = &shared.counters;
        let start = Instant::now();
        let mut retries_left = shared.retries;
        let mut throttled: Option<Response<RB>> = None;
        loop {
            if let Err(wait) = self.wait_for_slot(&shared, start).await {
                // After a 429, the answer Amazon gave says more than a wait that is too long.
                if let Some(response) = throttled {
                    return Ok(response);
                }
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(self.too_long(&shared, wait).into());
            }
            if throttled.is_some() {
                // Replicas throttled together come back apart.
                tokio::time::sleep(time::scale(Duration::from_secs(1), fastrand::f64())).await;
            }
            let replay = if retries_left > 0 {
                replayable(&request)
            } else {
                None
            };
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = inner.call(request).await.map_err(Into::into)?;
            if response.status() != StatusCode::TOO_MANY_REQUESTS {
                if let Some(rate) = rate::stated_rate(response.status(), response.headers())
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
fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, super::bucket::Buckets> {
    shared
        .buckets
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

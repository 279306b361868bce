//! Pacing by usage plans in the proxy: the service that puts the library's
//! [`PacingLayer`](spapi_rdt::pacing::PacingLayer) in front of the upstream, or leaves it out
//! (`--no-usage-plans`).
//!
//! The layer itself is built in one place, [`App::new`](crate::App::new), from
//! [`UsagePlanSettings`](crate::config::UsagePlanSettings). What it did to each call is read from
//! the answer's [`PacingReport`](spapi_rdt::pacing::PacingReport) into the metrics, and a call it
//! refused ([`PacingError`](spapi_rdt::error::PacingError)) becomes a 429 with `Retry-After`
//! ([`Failure::wait_too_long`](crate::failure::Failure::wait_too_long)).

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use spapi_rdt::BoxError;
use spapi_rdt::pacing::Pacing;
use spapi_rdt::pacing::future::ResponseFuture;
use spapi_rdt::recover::ReplayBody;
use tower_service::Service;

/// The service below the token layer: paced by usage plans, or straight through.
#[derive(Clone)]
pub(crate) enum MaybePaced<S> {
    /// Each call waits for its slot (the default).
    Paced(Pacing<S>),
    /// Every call goes as it comes.
    Direct(S),
}

impl<S, B, RB> Service<Request<B>> for MaybePaced<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Either<ResponseFuture<Response<RB>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            MaybePaced::Paced(paced) => paced.poll_ready(cx),
            MaybePaced::Direct(inner) => inner.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self {
            MaybePaced::Paced(paced) => Either::Left(paced.call(request)),
            MaybePaced::Direct(inner) => Either::Right(inner.call(request)),
        }
    }
}

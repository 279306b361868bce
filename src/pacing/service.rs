//! [`Pacing`]: the service that holds each request until its bucket has room.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use super::paced::{Paced, PacingReport, Wire};
use crate::BoxError;
use crate::error::PacingError;
use crate::recover::{ReplayBody, replayable};

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
        let paced = Paced::of(
            &self.shared,
            request.method(),
            request.uri(),
            request.extensions(),
        );
        match paced {
            None => ResponseFuture::new(send(inner, request)),
            Some(paced) => {
                let wire = Below(inner, std::marker::PhantomData);
                ResponseFuture::new(paced.run(Arc::clone(&self.shared), wire, request))
            }
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

/// The service below, as the [`Wire`] a paced request goes down.
struct Below<S, B>(S, std::marker::PhantomData<fn(B)>);

impl<S, B, RB> Wire for Below<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    RB: 'static,
{
    type Request = Request<B>;
    type Response = Response<RB>;
    type Error = BoxError;

    fn refused(error: PacingError) -> BoxError {
        error.into()
    }

    fn replay(request: &Request<B>) -> Option<Request<B>> {
        replayable(request)
    }

    async fn send(&mut self, request: Request<B>) -> Result<Response<RB>, BoxError> {
        std::future::poll_fn(|cx| self.0.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        self.0.call(request).await.map_err(Into::into)
    }

    fn head(response: &Response<RB>) -> (StatusCode, &HeaderMap) {
        (response.status(), response.headers())
    }

    fn report(response: &mut Response<RB>, report: PacingReport) {
        response.extensions_mut().insert(report);
    }
}

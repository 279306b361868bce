//! [`RestrictedDataTokenService`]: the service the layer makes.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use crate::BoxError;
use crate::core::{Core, Lookup, RequestHead};
use crate::future::ResponseFuture;
use crate::header;
use crate::stats::Stats;

/// Gives restricted SP-API requests a Restricted Data Token; made by
/// [`RestrictedDataTokenLayer`](crate::RestrictedDataTokenLayer).
///
/// - Unrestricted requests go to the inner service untouched, with no allocation and no await.
/// - A restricted request with a fresh cached token gets it in `x-amz-access-token` (marked
///   sensitive) and goes on at once.
/// - Otherwise the request waits, in its response future, for the one fetch its key needs, then
///   goes on; or fails with an [`Error`](crate::error::Error) inside the [`BoxError`].
///
/// `poll_ready` is the inner service's. When a request must wait for its token, the response
/// future takes a clone of the inner service that has not been polled ready, and drives it to
/// readiness only once the token has arrived (the `Oneshot` pattern); the service that was polled
/// ready stays here for the next call. So a request waiting for a token holds none of the inner
/// service's capacity: with a `ConcurrencyLimit` or a `Buffer` below the layer, pass-through
/// traffic and other sellers are served meanwhile.
pub struct RestrictedDataTokenService<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S> RestrictedDataTokenService<S> {
    pub(crate) fn new(inner: S, core: Arc<Core>) -> Self {
        RestrictedDataTokenService { inner, core }
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

    /// A snapshot of the counters shared with the layer and its other services.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

impl<S: Clone> Clone for RestrictedDataTokenService<S> {
    fn clone(&self) -> Self {
        RestrictedDataTokenService {
            inner: self.inner.clone(),
            core: Arc::clone(&self.core),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RestrictedDataTokenService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedDataTokenService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RestrictedDataTokenService<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.core.lookup(RequestHead::of(&request)) {
            Lookup::PassThrough => ResponseFuture::called(self.inner.call(request)),
            Lookup::Ready(granted) => {
                header::insert_token(&mut request, granted);
                ResponseFuture::called(self.inner.call(request))
            }
            Lookup::Pending(pending) => {
                // The ready service (and whatever capacity it reserved) stays for the next call;
                // the future drives its own clone to readiness once the token is there.
                ResponseFuture::waiting(pending, self.inner.clone(), request)
            }
            Lookup::Failed(error) => ResponseFuture::failed(error),
        }
    }
}

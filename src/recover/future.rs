//! The response future of the recovery layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The response future of [`RecoverStaleToken`](super::RecoverStaleToken).
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Direct { #[pin] future: F },
        Recovering { future: BoxFuture<'static, Result<T, BoxError>> },
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Direct { future } => future.poll(cx).map_err(Into::into),
            StateProj::Recovering { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T> ResponseFuture<F, T> {
    /// The inner service's future, for a request the recovery layer leaves alone.
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            state: State::Direct { future },
        }
    }

    /// A request that a 403 may send again.
    pub(super) fn recovering(future: BoxFuture<'static, Result<T, BoxError>>) -> Self {
        ResponseFuture {
            state: State::Recovering { future },
        }
    }
}

//! [`ResponseFuture`]: the future of [`RestrictedDataTokenService`](crate::RestrictedDataTokenService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::Request;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::error::Error;
use crate::header;
use crate::header::GrantedToken;

pin_project! {
    /// The response future of [`RestrictedDataTokenService`](crate::RestrictedDataTokenService):
    /// either the inner service's future, or a wait for a token followed by the inner call.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Called {
            #[pin]
            future: S::Future,
        },
        // The rare states are boxed, so that the common one (`Called`) is not as large as a
        // request and a service: the future is moved on every call.
        Waiting {
            waiting: Box<Waiting<S, B>>,
        },
        // The token is in the request; the clone is being driven to readiness.
        Readying {
            readying: Box<Readying<S, B>>,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

/// Waiting for a token.
struct Waiting<S, B> {
    pending: BoxFuture<'static, Result<GrantedToken, Error>>,
    // A clone of the inner service, not yet polled ready, and the request; `Some` until the token
    // arrives.
    call: Option<(S, Request<B>)>,
}

/// The token is in the request; the inner service's clone is being driven to readiness.
struct Readying<S, B> {
    service: S,
    // `Some` until the inner service is called.
    request: Option<Request<B>>,
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Called { future },
        }
    }

    /// Waits for `pending`, then drives `service` (a clone that holds no capacity yet) to readiness
    /// and calls it.
    pub(crate) fn waiting(
        pending: BoxFuture<'static, Result<GrantedToken, Error>>,
        service: S,
        request: Request<B>,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                waiting: Box::new(Waiting {
                    pending,
                    call: Some((service, request)),
                }),
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Waiting { waiting } => {
                    let result = ready!(waiting.pending.as_mut().poll(cx));
                    let Some((service, mut request)) = waiting.call.take() else {
                        // Only reachable if polled again after completing with an error.
                        return Poll::Ready(Err(Error::polled_after_completion().into()));
                    };
                    match result {
                        Ok(granted) => {
                            header::insert_token(&mut request, granted);
                            this.state.set(State::Readying {
                                readying: Box::new(Readying {
                                    service,
                                    request: Some(request),
                                }),
                            });
                        }
                        Err(error) => {
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(error.into()));
                        }
                    }
                }
                StateProj::Readying { readying } => {
                    if let Err(error) = ready!(readying.service.poll_ready(cx)) {
                        this.state.set(State::Failed { error: None });
                        return Poll::Ready(Err(error.into()));
                    }
                    let Some(request) = readying.request.take() else {
                        return Poll::Ready(Err(Error::polled_after_completion().into()));
                    };
                    let future = readying.service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Failed { error } => {
                    let error = error.take().unwrap_or_else(Error::polled_after_completion);
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting for a token",
            State::Readying { .. } => "waiting for the inner service",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

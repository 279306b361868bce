//! Recovering from a stale token: a 403 on a restricted call invalidates exactly the token it was
//! made with, and a replayable request is sent once more with a fresh one.
//!
//! Amazon answers a restricted call made with a revoked or otherwise stale RDT with 403
//! `Unauthorized`. [`RecoverStaleTokenLayer`] goes outside a [`RestrictedDataTokenLayer`] built from
//! the same layer value:
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::{IssuedToken, RestrictedDataTokenLayer, SecretToken, SourceError, TokenRequest, source_fn};
//!
//! let rdt = RestrictedDataTokenLayer::new(source_fn(|_request: TokenRequest| async {
//!     let token = SecretToken::new("Atz.sprdt|example").map_err(SourceError::permanent)?;
//!     Ok(IssuedToken::new(token, Duration::from_secs(3600)))
//! }));
//! let client = tower::ServiceBuilder::new()
//!     .layer(rdt.recover_stale_tokens())
//!     .layer(rdt)
//!     .service_fn(|_request: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = client;
//! ```
//!
//! A request is replayed only when its body can be cloned ([`ReplayBody`]); otherwise the 403 is
//! returned as it is, after the token was invalidated, so the next request gets a fresh one.
//!
//! # Report documents of restricted types
//!
//! Under [`ReportPolicy::WhenRefused`](crate::control::ReportPolicy::WhenRefused), a
//! `getReportDocument` request not marked [`RestrictedReport`] goes without a token, and a 403 to
//! it is replayed once marked, with a token for its document's path. A response that comes from
//! such a replay carries [`ReplayedAsRestrictedReport`] in its extensions, so that the caller can
//! mark that document at once next time.
//!
//! # 403s that are not about the token
//!
//! Amazon also answers 403 to a request the token cannot help (another seller's order id, a role
//! the application lacks). So that a client looping over such requests cannot spend the seller's
//! token quota, a 403 drops a key's token **at most once per
//! [`refusal_period`](crate::RestrictedDataTokenLayerBuilder::refusal_period)** (60 s by default):
//! within the period after a drop, further 403s on that key keep the token and are returned as
//! they are, without a replay. One exception resets the period: when the request replayed after
//! the drop succeeds with the new token, the dropped token was stale indeed, and the next 403 may
//! drop a token again at once. Both front ends (this layer and the reqwest middleware) follow the
//! rule; [`RestrictedDataTokenLayer::invalidate`] is not limited by it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::control::{ReplayedAsRestrictedReport, RestrictedReport};
use crate::core::{Core, ReplayAs, RequestHead};
use crate::header::GenerationCell;
use crate::layer::RestrictedDataTokenLayer;

/// Request bodies that can be sent twice.
///
/// Implemented for the common in-memory bodies (`String`, `Vec<u8>`, `Bytes`, `()`, http-body-util's
/// `Full` and `Empty`, and `reqwest::Body` when it is not a stream); implement it for your own body
/// type, returning `None` when a body cannot be replayed (a stream). Streaming bodies that belong to
/// other crates (hyper's `Incoming`, axum's `Body`) cannot be replayed: convert them first, or leave
/// recovery out (a 403 is then returned as it is, and the token stays cached until it expires or
/// [`RestrictedDataTokenLayer::invalidate`] drops it).
pub trait ReplayBody: Sized {
    /// A copy of the body for a second attempt, if one can be made.
    fn try_clone(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($t:ty),*) => {$(
        impl ReplayBody for $t {
            fn try_clone(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}

replay_by_clone!(
    (),
    String,
    Vec<u8>,
    bytes::Bytes,
    &'static str,
    &'static [u8]
);

impl<D: Clone> ReplayBody for http_body_util::Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

#[cfg(feature = "reqwest")]
impl ReplayBody for reqwest::Body {
    fn try_clone(&self) -> Option<Self> {
        // In-memory bodies can be copied; streams cannot.
        self.as_bytes()
            .map(|bytes| reqwest::Body::from(bytes::Bytes::copy_from_slice(bytes)))
    }
}

/// Invalidates a token that Amazon refused with 403 and replays the request once; see the
/// [module docs](self).
#[derive(Clone)]
pub struct RecoverStaleTokenLayer {
    core: Arc<Core>,
}

impl RestrictedDataTokenLayer {
    /// A layer to put outside this one (same cache) that recovers from stale tokens.
    pub fn recover_stale_tokens(&self) -> RecoverStaleTokenLayer {
        RecoverStaleTokenLayer {
            core: Arc::clone(self.core()),
        }
    }
}

impl<S> Layer<S> for RecoverStaleTokenLayer {
    type Service = RecoverStaleToken<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecoverStaleToken {
            inner,
            core: Arc::clone(&self.core),
        }
    }
}

impl fmt::Debug for RecoverStaleTokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverStaleTokenLayer")
            .finish_non_exhaustive()
    }
}

/// The service of [`RecoverStaleTokenLayer`].
#[derive(Clone)]
pub struct RecoverStaleToken<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S: fmt::Debug> fmt::Debug for RecoverStaleToken<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverStaleToken")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`RecoverStaleToken`].
    pub struct RecoverFuture<F, T> {
        #[pin]
        state: RecoverState<F, T>,
    }
}

pin_project! {
    #[project = RecoverProj]
    enum RecoverState<F, T> {
        Direct { #[pin] future: F },
        Recovering { future: BoxFuture<'static, Result<T, BoxError>> },
    }
}

impl<F, T, E> Future for RecoverFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RecoverProj::Direct { future } => future.poll(cx).map_err(Into::into),
            RecoverProj::Recovering { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, T> fmt::Debug for RecoverFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverFuture").finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for RecoverStaleToken<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: ReplayBody + Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = RecoverFuture<S::Future, Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.core.may_recover(RequestHead::of(&request)) {
            return RecoverFuture {
                state: RecoverState::Direct {
                    future: self.inner.call(request),
                },
            };
        }
        let used = GenerationCell::default();
        request.extensions_mut().insert(used.clone());
        // One copy of the request's parts per request (copying the extensions is most of this
        // layer's cost): the replay's, which a 403 is also matched against, or for a body that
        // cannot be replayed, just what a 403 is matched against.
        let kept = match replayable(&request) {
            Some(copy) => Kept::Replay(copy),
            None => Kept::Head(HeadCopy::of(&request)),
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let core = Arc::clone(&self.core);
        let future = async move {
            let response = inner.call(request).await.map_err(Into::into)?;
            if response.status() != StatusCode::FORBIDDEN {
                return Ok(response);
            }
            let sent_with = used.generation();
            let status = |response: &Response<RB>| response.status();
            let (response, replayed) = match kept {
                Kept::Head(head) => {
                    let none = None::<fn(ReplayAs) -> std::future::Ready<Result<_, BoxError>>>;
                    core.recover(head.head(), sent_with, response, status, none)
                        .await?
                }
                Kept::Replay(mut copy) => {
                    let head = HeadCopy::of(&copy);
                    let replay = |how| async move {
                        if how == ReplayAs::RestrictedReport {
                            copy.extensions_mut().insert(RestrictedReport);
                        }
                        std::future::poll_fn(|cx| inner.poll_ready(cx))
                            .await
                            .map_err(Into::into)?;
                        inner.call(copy).await.map_err(Into::into)
                    };
                    core.recover(head.head(), sent_with, response, status, Some(replay))
                        .await?
                }
            };
            let mut response = response;
            if replayed == Some(ReplayAs::RestrictedReport) {
                response.extensions_mut().insert(ReplayedAsRestrictedReport);
            }
            Ok(response)
        };
        RecoverFuture {
            state: RecoverState::Recovering {
                future: Box::pin(future),
            },
        }
    }
}

/// What the recovery layer keeps of a restricted request for the case of a 403.
enum Kept<B> {
    /// A copy to replay (extensions included).
    Replay(Request<B>),
    /// The body cannot be replayed: only what the 403 is matched against.
    Head(HeadCopy),
}

/// An owned copy of a request's head, for the 403 policy to match the refusal against after the
/// request itself went down the stack.
struct HeadCopy {
    method: http::Method,
    uri: http::Uri,
    extensions: http::Extensions,
}

impl HeadCopy {
    fn of<B>(request: &Request<B>) -> HeadCopy {
        HeadCopy {
            method: request.method().clone(),
            uri: request.uri().clone(),
            extensions: request.extensions().clone(),
        }
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            extensions: &self.extensions,
        }
    }
}

/// A copy of `request` for a second attempt (extensions included), if its body can be replayed.
fn replayable<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

//! [`RecoverStaleToken`]: the service that applies the 403 policy to restricted requests.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::future::ResponseFuture;
use super::{ReplayBody, replayable};
use crate::BoxError;
use crate::control::{ReplayedAsRestrictedReport, RestrictedReport};
use crate::core::{Core, ReplayAs, RequestHead};
use crate::header::GenerationCell;

/// The service of [`RecoverStaleTokenLayer`](super::RecoverStaleTokenLayer).
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

impl<S> RecoverStaleToken<S> {
    pub(super) fn new(inner: S, core: Arc<Core>) -> Self {
        RecoverStaleToken { inner, core }
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
    type Future = ResponseFuture<S::Future, Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.core.may_recover(RequestHead::of(&request)) {
            return ResponseFuture::direct(self.inner.call(request));
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
        ResponseFuture::recovering(Box::pin(future))
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

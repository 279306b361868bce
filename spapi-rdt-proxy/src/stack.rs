//! The proxy as a stack of tower services, outermost first:
//!
//! 1. [`RequireClient`] with [`Check::Network`]: a client outside the allowed networks gets
//!    nothing, not even the operations endpoints (the listener already closes its connections at
//!    accept; this guards a request that reaches the stack some other way);
//! 2. [`OpsEndpoints`]: `/healthz`, `/readyz` and `/metrics`, answered here without the secret,
//!    so that probes need none (or a 404 when they are served on their own address);
//! 3. [`RequireClient`] with [`Check::Secret`]: the bearer secret, when one is set;
//! 4. [`CountRequests`]: the `requests` metric, by operation and status;
//! 5. the forwarding service ([`App`](crate::App)'s): the seller, the upstream URI and the LWA
//!    token, over the report-document layer ([`documents`](crate::documents)) and the token stack:
//!    stale-token recovery, the RDT layer, then pacing by usage plans
//!    ([`usage_plans`](crate::usage_plans), on by default) nearest the upstream client.
//!
//! Every layer answers `Infallible`: a failure is an HTTP answer. The common path (a request
//! forwarded) allocates nothing in these layers; only the operations endpoints box their future.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use spapi_rdt::matcher::Matcher;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{ClientAuth, Denied};
use crate::failure::{Failure, ResponseBody};
use crate::metrics::{Metrics, OperationNames, RefusalLabels, RequestLabels};
use crate::ops::{self, Ops};

/// The client's address, which the listener puts in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

type Answer = Result<Response<ResponseBody>, Infallible>;

/// Answers the operations endpoints; passes every other request on. With `ops` `None` the
/// endpoints are served on an address of their own ([`serve_ops`](crate::serve_ops)): their paths
/// get a 404 here, never a trip upstream.
#[derive(Clone)]
pub(crate) struct OpsEndpointsLayer {
    pub(crate) ops: Option<Arc<Ops>>,
}

impl<S> Layer<S> for OpsEndpointsLayer {
    type Service = OpsEndpoints<S>;
    fn layer(&self, inner: S) -> OpsEndpoints<S> {
        OpsEndpoints {
            ops: self.ops.clone(),
            inner,
        }
    }
}

/// The service of [`OpsEndpointsLayer`].
#[derive(Clone)]
pub(crate) struct OpsEndpoints<S> {
    ops: Option<Arc<Ops>>,
    inner: S,
}

impl<S, B> Service<Request<B>> for OpsEndpoints<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<Pin<Box<dyn Future<Output = Answer> + Send>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !ops::is_endpoint(request.uri().path()) {
            return Either::Right(self.inner.call(request));
        }
        let Some(ops) = self.ops.clone() else {
            return Either::Left(Box::pin(ready(Ok(ops::served_elsewhere()))));
        };
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        Either::Left(Box::pin(async move {
            match ops.answer(&method, &path).await {
                Some(response) => Ok(response),
                None => Ok(Failure::internal("not an operations endpoint").into_response()),
            }
        }))
    }
}

/// What a [`RequireClient`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// The client's address is on an allowed network.
    Network,
    /// The request presents the bearer secret.
    Secret,
}

/// Refuses clients that are not on an allowed network, or not authenticated.
#[derive(Clone)]
pub(crate) struct RequireClientLayer {
    pub(crate) auth: ClientAuth,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) check: Check,
}

impl<S> Layer<S> for RequireClientLayer {
    type Service = RequireClient<S>;
    fn layer(&self, inner: S) -> RequireClient<S> {
        RequireClient {
            auth: self.auth.clone(),
            metrics: Arc::clone(&self.metrics),
            check: self.check,
            inner,
        }
    }
}

/// The service of [`RequireClientLayer`].
#[derive(Clone)]
pub(crate) struct RequireClient<S> {
    auth: ClientAuth,
    metrics: Arc<Metrics>,
    check: Check,
    inner: S,
}

impl<S, B> Service<Request<B>> for RequireClient<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(Peer(peer)) = request.extensions().get::<Peer>().copied() else {
            // The listener always says who the client is; a request without it is refused.
            return Either::Left(ready(Ok(Failure::internal(
                "the request came with no client address",
            )
            .into_response())));
        };
        let checked = match self.check {
            Check::Network if self.auth.admits_peer(peer.ip()) => Ok(()),
            Check::Network => Err(Denied::Network),
            Check::Secret => self.auth.check_secret(request.headers()),
        };
        let Err(denied) = checked else {
            return Either::Right(self.inner.call(request));
        };
        let (reason, failure) = match denied {
            Denied::Unauthenticated => (
                "unauthenticated",
                Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "this proxy needs `Authorization: Bearer <secret>`",
                ),
            ),
            Denied::Network => (
                "network",
                Failure::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "this client's network may not use this proxy",
                ),
            ),
        };
        self.metrics
            .refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
        // Counted in `clients_refused`; logged at debug only, so that a client cannot fill the log.
        tracing::debug!(peer = %peer.ip(), reason, "client refused");
        let mut response = failure.into_response();
        if denied == Denied::Unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Either::Left(ready(Ok(response)))
    }
}

/// Counts each request by operation and the status it was answered with.
#[derive(Clone)]
pub(crate) struct CountRequestsLayer {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) names: Arc<OperationNames>,
    /// Shared: a `Matcher` clone copies its catalogue and trees, and this layer is cloned with
    /// every connection's service.
    pub(crate) matcher: Arc<Matcher>,
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of [`CountRequestsLayer`].
#[derive(Clone)]
pub(crate) struct CountRequests<S> {
    layer: CountRequestsLayer,
    inner: S,
}

impl<S, B> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (api, operation) =
            self.layer
                .names
                .of(&self.layer.matcher, request.method(), request.uri().path());
        Counted {
            future: self.inner.call(request),
            metrics: Arc::clone(&self.layer.metrics),
            labels: Some((api, operation)),
        }
    }
}

pin_project! {
    /// The inner future, counted when it answers.
    pub(crate) struct Counted<F> {
        #[pin]
        future: F,
        metrics: Arc<Metrics>,
        labels: Option<(crate::metrics::Label, crate::metrics::Label)>,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Answer>,
{
    type Output = Answer;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.project();
        let answer = std::task::ready!(this.future.poll(cx));
        if let (Ok(response), Some((api, operation))) = (&answer, this.labels.take()) {
            this.metrics
                .requests
                .get_or_create(&RequestLabels {
                    api,
                    operation,
                    status: response.status().as_u16(),
                })
                .inc();
        }
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use spapi_rdt::catalog::Catalog;

    /// An inner service that answers 200 and counts its calls.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl Service<Request<()>> for Counting {
        type Response = Response<ResponseBody>;
        type Error = Infallible;
        type Future = Ready<Answer>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            let body = http_body_util::Full::new(Bytes::from_static(b"upstream"))
                .map_err(|never| match never {})
                .boxed();
            ready(Ok(Response::new(body)))
        }
    }

    async fn oneshot<S>(mut service: S, request: Request<()>) -> Response<ResponseBody>
    where
        S: Service<Request<()>, Response = Response<ResponseBody>, Error = Infallible>,
    {
        let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
        let Ok(response) = service.call(request).await;
        response
    }

    fn request(path: &str, peer: &str) -> Request<()> {
        let mut request = Request::get(path).body(()).unwrap();
        request.extensions_mut().insert(Peer(peer.parse().unwrap()));
        request
    }

    fn metrics() -> Arc<Metrics> {
        let layer = spapi_rdt::RestrictedDataTokenLayer::new(spapi_rdt::source_fn(
            |_request: spapi_rdt::TokenRequest| async {
                Err::<spapi_rdt::IssuedToken, _>(spapi_rdt::error::SourceError::permanent("none"))
            },
        ));
        let documents = crate::reports::RestrictedDocuments::new(crate::config::ReportSettings {
            capacity: 1,
            ttl: std::time::Duration::from_secs(1),
        });
        Arc::new(Metrics::new(layer, documents, None))
    }

    #[tokio::test]
    async fn a_client_outside_the_allowed_networks_never_reaches_the_inner_service() {
        let inner = Counting::default();
        let auth = ClientAuth::new(None, vec!["10.0.0.0/8".parse().unwrap()]).unwrap();
        let layer = RequireClientLayer {
            auth,
            metrics: metrics(),
            check: Check::Network,
        };
        let refused = oneshot(layer.layer(inner.clone()), request("/x", "192.0.2.1:1")).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(inner.0.load(Ordering::SeqCst), 0);
        let admitted = oneshot(layer.layer(inner.clone()), request("/x", "10.1.2.3:1")).await;
        assert_eq!(admitted.status(), StatusCode::OK);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        // No client address: refused, not forwarded.
        let bare = Request::get("/x").body(()).unwrap();
        let refused = oneshot(layer.layer(inner.clone()), bare).await;
        assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn requests_are_counted_by_operation_and_status() {
        let metrics = metrics();
        let matcher = Matcher::new(Catalog::amazon()).unwrap();
        let layer = CountRequestsLayer {
            metrics: Arc::clone(&metrics),
            names: Arc::new(OperationNames::new(&matcher)),
            matcher: Arc::new(matcher),
        };
        let path = "/orders/v0/orders/902-3159896-1390916/address";
        for _ in 0..2 {
            oneshot(
                layer.layer(Counting::default()),
                request(path, "127.0.0.1:1"),
            )
            .await;
        }
        let text = metrics.encode().unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("getOrderAddress") && l.contains("status=\"200\""))
            .unwrap_or_else(|| panic!("no counter for getOrderAddress:\n{text}"));
        assert!(line.ends_with(" 2"), "{line}");
    }
}

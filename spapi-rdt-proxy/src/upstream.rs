//! The innermost service: sends a request to the upstream with reqwest, streaming both bodies, and
//! the header rules of a reverse proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use spapi_rdt::{BoxError, SecretToken, SellerId, SpApiTokenSource, X_AMZ_ACCESS_TOKEN};
use tokio::time::Instant;
use tower_service::Service;

use crate::metrics::Metrics;

/// The reqwest client for the upstream: no redirects (a followed redirect would take the token to
/// another host), no proxy from the environment (requests go straight to the upstream), HTTP/1.1
/// or HTTP/2 as the server offers, pooled connections, and a bound on each call.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

/// The LWA token the proxy put on a request, to tell afterwards whether it went out with it.
#[derive(Clone)]
pub(crate) struct LwaSent {
    pub(crate) seller: SellerId,
    pub(crate) token: SecretToken,
}

/// A 403 answered to this request says nothing about the LWA token (a report document of a
/// restricted type is refused that way), so the token is kept; a 401 still drops it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeepLwaOnRefusal;

/// Sends requests upstream.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) http: reqwest::Client,
    pub(crate) source: SpApiTokenSource,
    pub(crate) metrics: Arc<Metrics>,
}

impl Service<Request<reqwest::Body>> for Upstream {
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<reqwest::Body>) -> Self::Future {
        let (http, source, metrics) = (
            self.http.clone(),
            self.source.clone(),
            Arc::clone(&self.metrics),
        );
        Box::pin(async move {
            // Still the LWA token, or did the layer put an RDT in its place?
            let lwa = request
                .extensions()
                .get::<LwaSent>()
                .cloned()
                .filter(|sent| {
                    request.headers().get(X_AMZ_ACCESS_TOKEN) == Some(sent.token.header_value())
                });
            let keep_lwa = request.extensions().get::<KeepLwaOnRefusal>().is_some();
            let started = Instant::now();
            let response = http.execute(reqwest::Request::try_from(request)?).await?;
            metrics
                .upstream_latency
                .observe(started.elapsed().as_secs_f64());
            let refused = match response.status().as_u16() {
                401 => true,
                403 => !keep_lwa,
                _ => false,
            };
            if let Some(sent) = lwa
                && refused
            {
                source.invalidate_lwa_access_token(&sent.seller, &sent.token);
            }
            Ok(Response::from(response))
        })
    }
}

/// Removes the hop-by-hop headers: those named in `Connection`, and the standard ones.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut drop: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    drop.extend(
        headers
            .keys()
            .filter(|name| {
                let name = name.as_str();
                name.starts_with("proxy-")
                    || matches!(
                        name,
                        "connection"
                            | "keep-alive"
                            | "te"
                            | "trailer"
                            | "transfer-encoding"
                            | "upgrade"
                    )
            })
            .cloned(),
    );
    for name in drop {
        headers.remove(name);
    }
}

//! The proxy itself: turns a plain request into an SP-API call with the right token and back,
//! after the operations endpoints ([`crate::ops`]) and client authentication ([`crate::auth`])
//! had their say.
//!
//! A request is forwarded to the upstream of its seller, with the path and query it came with; the
//! proxy never builds a URL from anything else, so no request can reach another host. Bodies are
//! streamed both ways; a client that goes away drops its upstream call with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use spapi_rdt::control::ReportPolicy;
use spapi_rdt::error::{BuildError, PacingError, RedisFleetError};
use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
use spapi_rdt::pacing::{PacingLayer, PacingReport};
use spapi_rdt::recover::RecoverStaleToken;
use spapi_rdt::{
    BoxError, Origin, RestrictedDataTokenLayer, RestrictedDataTokenService, SellerId,
    SpApiTokenSource, X_AMZ_ACCESS_TOKEN,
};
use tower_layer::Layer as _;
use tower_service::Service;

use crate::auth::ClientAuth;
use crate::config::{PLANS, Settings};
use crate::document_budget::DocumentBudget;
use crate::documents::{ClientMarked, ReportDocuments, ReportDocumentsLayer};
use crate::failure::{Failure, ResponseBody};
use crate::metrics::{ConnectionMetrics, Metrics, OperationNames, RefusalLabels};
use crate::ops::{self, Ops, Readiness};
use crate::reports::RestrictedDocuments;
use crate::stack::{
    Check, CountRequests, CountRequestsLayer, OpsEndpoints, OpsEndpointsLayer, Peer, RequireClient,
    RequireClientLayer,
};
use crate::upstream::{self, LwaSent, Upstream, strip_hop_by_hop};
use crate::usage_plans::MaybePaced;

/// Names the seller a request is for (removed before forwarding).
/// The methods SP-API's operations use; the proxy forwards no other.
const FORWARDED_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The most of a path the log shows: a client's path is outside input, and the log volume must not
/// follow it (a 64 KiB path would make a 64 KiB line a request).
const LOGGED_PATH_MAX: usize = 256;

/// `path`, cut to [`LOGGED_PATH_MAX`] bytes at a character boundary, saying how long it was.
fn loggable_path(path: &str) -> String {
    if path.len() <= LOGGED_PATH_MAX {
        return path.to_owned();
    }
    let mut end = LOGGED_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &path[..end], path.len())
}

/// Whether `path` is the Tokens API's: calls to it mint tokens a client could use elsewhere.
fn is_tokens_api(path: &str) -> bool {
    const PREFIX: &str = "/tokens/";
    path.get(..PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(PREFIX))
}

pub(crate) const SELLER_HEADER: HeaderName = HeaderName::from_static("x-spapi-seller");
/// Marks a `getReportDocument` call as fetching a restricted report (removed before forwarding).
pub(crate) const RESTRICTED_REPORT_HEADER: HeaderName =
    HeaderName::from_static("x-spapi-restricted-report");

/// The token stack requests go through: the report-document policy, stale-token recovery, the RDT
/// layer, pacing by usage plans, the upstream.
type Stack = ReportDocuments<RecoverStaleToken<RestrictedDataTokenService<MaybePaced<Upstream>>>>;

/// The proxy's whole service: the [`stack`](crate::stack) over the forwarding service.
type Served = RequireClient<OpsEndpoints<RequireClient<CountRequests<Forward>>>>;

/// The proxy. Cloning is cheap; clones share everything.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
    service: Served,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("upstream", &self.inner.upstream)
            .field("sellers", &self.inner.upstreams.len())
            .finish_non_exhaustive()
    }
}

struct AppInner {
    /// The fleet store, checked at start ([`App::verify_fleet`]).
    fleet: Option<RedisFleet>,
    upstream: Origin,
    upstreams: HashMap<SellerId, Origin>,
    source: SpApiTokenSource,
    /// For tests that read the layer's statistics.
    #[cfg(test)]
    layer: RestrictedDataTokenLayer,
    /// For tests that read the pacing layer's statistics.
    #[cfg(test)]
    pacing: Option<PacingLayer>,
    stack: Stack,
    auth: ClientAuth,
    allow_tokens_api: bool,
    metrics: Arc<Metrics>,
    /// The operations endpoints, for [`App::handle_ops`].
    ops: Arc<Ops>,
    /// For tests that read what was learned.
    #[cfg(test)]
    documents: RestrictedDocuments,
}

impl App {
    /// Builds the token source, the layer, the upstream client and the metrics from `settings`.
    /// Nothing is contacted yet.
    pub fn new(settings: &Settings) -> Result<App, BoxError> {
        let http = upstream::client(settings.upstream_timeout)?;
        let mut source = SpApiTokenSource::builder().http_client(http.clone());
        for seller in &settings.sellers {
            source = source.seller(seller.id.clone(), seller.credentials.clone());
        }
        if let Some(url) = &settings.lwa_url {
            source = source.lwa_url(url.clone());
        }
        let source = source.build()?;

        // Tokens only for the configured upstreams.
        let mut builder = RestrictedDataTokenLayer::builder(source.clone())
            .origins(settings.origins())
            // Documents not known to be of a restricted type go with the LWA token; a 403 is
            // replayed once with a token for the document (the recovery layer's policy).
            .report_policy(ReportPolicy::WhenRefused);
        let fleet = match &settings.fleet {
            None => None,
            Some(fleet) => {
                let key = EncryptionKey::from_hex(&fleet.key_hex)
                    .map_err(|e| format!("{}: {e}", crate::config::FLEET_KEY_VAR))?;
                let mut redis = RedisFleet::builder(&fleet.redis_url)
                    .encryption_key(key)
                    .cluster(fleet.cluster);
                if let Some(prefix) = &fleet.key_prefix {
                    redis = redis.key_prefix(prefix.clone());
                }
                if let Some(pem) = &fleet.ca_pem {
                    redis = redis.ca_certificate(pem.clone());
                }
                let redis = redis.build()?;
                builder = builder.fleet(redis.clone());
                Some(redis)
            }
        };
        let layer = builder.build()?;

        // Usage plans: the one place the pacing layer is built; in fleet mode the replicas share
        // its buckets through the fleet's Redis.
        let pacing = if settings.usage_plans.enabled {
            let plans = &settings.usage_plans;
            let mut builder = PacingLayer::builder().max_wait(plans.max_wait);
            if let (Some(redis), Some(fleet)) = (&fleet, &settings.fleet) {
                builder = builder.fleet(redis, fleet.replicas);
            }
            for o in &plans.overrides {
                builder = builder.plan(o.api, o.operation, o.plan);
            }
            // The settings were checked against the same rules already; should the layer refuse
            // one all the same, the error names the flag or key, not the builder's method.
            let pacing = builder.build().map_err(|e| match e {
                BuildError::Setting { name: "plan", .. } => {
                    let unknown = plans
                        .overrides
                        .iter()
                        .filter(|o| PLANS.find(o.api, o.operation).is_none())
                        .map(|o| o.setting.as_str())
                        .collect::<Vec<_>>();
                    format!("{}: {e}", unknown.join(", "))
                }
                BuildError::Setting {
                    name: "max_wait", ..
                } => format!("--usage-plan-max-wait (config `usage_plans.max_wait_secs`): {e}"),
                e => format!("usage plans: {e}"),
            })?;
            Some(pacing)
        } else {
            None
        };

        let documents = RestrictedDocuments::new(settings.reports);
        let metrics = Arc::new(Metrics::new(
            layer.clone(),
            documents.clone(),
            pacing.clone(),
        ));
        let service = Upstream {
            http,
            source: source.clone(),
            metrics: Arc::clone(&metrics),
        };
        // Pacing goes below the token layer, nearest the wire. A call takes its slot once it has
        // its token and is about to leave, so a slow token fetch never spends a slot (nor sends a
        // burst late); each resend of the recovery layer above (a 403 retried with a new token)
        // is a call Amazon counts, and is paced as one; and the request it holds is the
        // `reqwest::Body` request the proxy built, whose empty body can be sent again after a 429
        // (a streamed body cannot: that 429 goes back to the client as Amazon sent it).
        let upstream = match &pacing {
            Some(pacing) => MaybePaced::Paced(pacing.layer(service)),
            None => MaybePaced::Direct(service),
        };
        let stack = ReportDocumentsLayer {
            documents: documents.clone(),
            budget: Arc::new(DocumentBudget::new(settings.document_tokens)),
            metrics: Arc::clone(&metrics),
        }
        .layer(layer.recover_stale_tokens().layer(layer.layer(upstream)));
        let ops = Arc::new(Ops {
            readiness: Arc::new(Readiness::new(
                source.clone(),
                settings.sellers.iter().map(|s| s.id.clone()).collect(),
                fleet.is_some().then(|| layer.clone()),
            )),
            metrics: Arc::clone(&metrics),
        });
        let count = CountRequestsLayer {
            metrics: Arc::clone(&metrics),
            names: Arc::new(OperationNames::new(layer.matcher())),
            matcher: Arc::new(layer.matcher().clone()),
        };
        let require = |check| RequireClientLayer {
            auth: settings.client_auth.clone(),
            metrics: Arc::clone(&metrics),
            check,
        };
        let (require_network, require_secret) = (require(Check::Network), require(Check::Secret));
        let inner = Arc::new(AppInner {
            fleet,
            upstream: settings.upstream.clone(),
            upstreams: settings
                .sellers
                .iter()
                .map(|s| (s.id.clone(), s.upstream.clone()))
                .collect(),
            source,
            #[cfg(test)]
            layer,
            #[cfg(test)]
            pacing,
            stack,
            auth: settings.client_auth.clone(),
            allow_tokens_api: settings.allow_tokens_api,
            metrics: Arc::clone(&metrics),
            ops: Arc::clone(&ops),
            #[cfg(test)]
            documents,
        });
        let forward = Forward {
            inner: Arc::clone(&inner),
        };
        // Served on the client address unless they have one of their own.
        let ops = settings.ops_listen.is_none().then_some(ops);
        let service = require_network
            .layer(OpsEndpointsLayer { ops }.layer(require_secret.layer(count.layer(forward))));
        Ok(App { inner, service })
    }

    /// Answers one request on the operations endpoints' own address: `/healthz`, `/readyz` and
    /// `/metrics`, and a 404 for any other path. No network or secret check: the operator chose
    /// who reaches that address.
    pub(crate) async fn handle_ops<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        let (method, path) = (request.method(), request.uri().path());
        match self.inner.ops.answer(method, path).await {
            Some(response) => response,
            None => ops::not_an_endpoint(),
        }
    }

    /// In fleet mode, checks that the Redis server is one fleet mode can work on (see
    /// [`RedisFleet::verify`]): an error names what cannot work, so the proxy refuses to start
    /// instead of running alone unseen. A server that does not answer is only logged: the proxy
    /// starts alone and shares once Redis is back.
    pub async fn verify_fleet(&self) -> Result<(), BoxError> {
        let Some(fleet) = &self.inner.fleet else {
            return Ok(());
        };
        match fleet.verify().await {
            Ok(()) => Ok(()),
            Err(RedisFleetError::Unreachable(why)) => {
                tracing::warn!(%why, "the fleet's Redis does not answer yet: starting alone");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The restricted report documents known so far.
    #[cfg(test)]
    pub(crate) fn documents(&self) -> &RestrictedDocuments {
        &self.inner.documents
    }

    /// The token layer (its statistics).
    #[cfg(test)]
    pub(crate) fn layer(&self) -> &RestrictedDataTokenLayer {
        &self.inner.layer
    }

    /// The pacing layer (its statistics), unless usage plans are off.
    #[cfg(test)]
    pub(crate) fn pacing(&self) -> Option<&PacingLayer> {
        self.inner.pacing.as_ref()
    }

    /// Whether a connection from `peer` may send requests at all (its network is allowed).
    pub(crate) fn admits(&self, peer: std::net::IpAddr) -> bool {
        self.inner.auth.admits_peer(peer)
    }

    /// Counts a connection closed at accept, for `reason` (`network`, `connection_cap`).
    pub(crate) fn count_refused_connection(&self, reason: &'static str) {
        self.inner
            .metrics
            .refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// The open-connection gauges, for a listener that admits at most `max_connections`.
    pub(crate) fn connection_metrics(&self, max_connections: usize) -> ConnectionMetrics {
        self.inner.metrics.connections(max_connections)
    }

    /// Answers one request from `peer`: the [`stack`](crate::stack) of operations endpoints, client
    /// checks and metrics over the forwarding service.
    pub(crate) async fn handle<B>(
        &self,
        peer: SocketAddr,
        mut request: Request<B>,
    ) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        request.extensions_mut().insert(Peer(peer));
        let mut service = self.service.clone();
        let Ok(()) =
            std::future::poll_fn(|cx| Service::<Request<B>>::poll_ready(&mut service, cx)).await;
        let Ok(response) = service.call(request).await;
        response
    }
}

/// The innermost service: forwards a request through the token stack, and logs how it went.
#[derive(Clone)]
struct Forward {
    inner: Arc<AppInner>,
}

impl<B> Service<Request<B>> for Forward
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.respond(request).await) })
    }
}

impl AppInner {
    async fn respond<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let started = tokio::time::Instant::now();
        let method = request.method().clone();
        // The path only (no query string, no header, no token), and a bounded part of it.
        let path = loggable_path(request.uri().path());
        match self.forward(request).await {
            Ok((seller, response)) => {
                tracing::info!(
                    %method,
                    path,
                    seller = seller.as_str(),
                    status = response.status().as_u16(),
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "forwarded"
                );
                response
            }
            Err(failure) => {
                tracing::warn!(
                    %method,
                    path,
                    status = failure.status.as_u16(),
                    error = failure.message.as_str(),
                    "not forwarded"
                );
                failure.into_response()
            }
        }
    }

    async fn forward<B>(
        &self,
        request: Request<B>,
    ) -> Result<(SellerId, Response<ResponseBody>), Failure>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        if !FORWARDED_METHODS.contains(request.method()) {
            return Err(Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "this proxy forwards the methods SP-API uses: GET, POST, PUT, PATCH and DELETE",
            ));
        }
        let (mut parts, incoming) = request.into_parts();
        let seller = self.seller(&parts.headers)?;
        let upstream = self.upstreams.get(&seller).unwrap_or(&self.upstream);
        let marked = parts
            .headers
            .get(RESTRICTED_REPORT_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v == "1");
        parts.uri = upstream_uri(upstream, &parts.uri)?;
        // Judged on the normalized path, the one that is sent.
        if !self.allow_tokens_api && is_tokens_api(parts.uri.path()) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "this proxy does not hand out tokens: restricted calls through it get theirs \
                 (the operator may allow the Tokens API with --allow-tokens-api)",
            ));
        }
        strip_hop_by_hop(&mut parts.headers);
        for name in [header::HOST, SELLER_HEADER, RESTRICTED_REPORT_HEADER] {
            parts.headers.remove(name);
        }
        if self.auth.has_secret() {
            // The client's credential for this proxy, not for Amazon.
            parts.headers.remove(header::AUTHORIZATION);
        }
        parts.version = Version::HTTP_11;

        // The LWA token goes on every call; the layer replaces it on restricted ones.
        let lwa = self
            .source
            .lwa_access_token(&seller)
            .await
            .map_err(|e| Failure::token(e.kind(), format!("no LWA access token: {e}")))?;
        parts
            .headers
            .insert(X_AMZ_ACCESS_TOKEN, lwa.header_value().clone());
        let sent = LwaSent {
            seller: seller.clone(),
            token: lwa,
        };

        let bodiless = incoming.is_end_stream();
        parts.extensions = Extensions::new();
        parts.extensions.insert(seller.clone());
        parts.extensions.insert(sent);
        if marked {
            parts.extensions.insert(ClientMarked);
        }

        // A request without a body gets an in-memory empty one, which the recovery layer can
        // replay; any other body is streamed as it arrives.
        let body = if bodiless {
            reqwest::Body::from(Bytes::new())
        } else {
            reqwest::Body::wrap(incoming)
        };
        let response = self.send(Request::from_parts(parts, body)).await?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok((seller, Response::from_parts(parts, body)))
    }

    async fn send(
        &self,
        request: Request<reqwest::Body>,
    ) -> Result<Response<ResponseBody>, Failure> {
        let mut stack = self.stack.clone();
        futures_util::future::poll_fn(|cx| stack.poll_ready(cx))
            .await
            .map_err(Failure::upstream)?;
        match stack.call(request).await {
            Ok(response) => {
                if let Some(report) = response.extensions().get::<PacingReport>() {
                    self.metrics.paced(report);
                }
                Ok(response)
            }
            Err(error) => {
                if let Some(refused) = error.downcast_ref::<PacingError>() {
                    self.metrics.refused_by_plan(refused);
                }
                Err(Failure::upstream(error))
            }
        }
    }

    fn seller(&self, headers: &HeaderMap) -> Result<SellerId, Failure> {
        let named = headers.get(SELLER_HEADER);
        let seller = match named {
            None => SellerId::default(),
            Some(value) => match value.to_str() {
                Ok(name) if !name.trim().is_empty() => SellerId::new(name.trim()),
                _ => {
                    return Err(Failure::new(
                        StatusCode::BAD_REQUEST,
                        "InvalidSeller",
                        "the x-spapi-seller header must be a non-empty ASCII name",
                    ));
                }
            },
        };
        if self.source.has_seller(&seller) {
            return Ok(seller);
        }
        let message = match named {
            None => {
                "no x-spapi-seller header, and no default seller (SPAPI_REFRESH_TOKEN)".to_owned()
            }
            Some(_) => format!("unknown seller `{seller}` (no SPAPI_REFRESH_TOKEN_{seller})"),
        };
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "UnknownSeller",
            message,
        ))
    }
}

/// The request's path and query on `upstream`. The URL is normalized here, as the upstream client
/// would do it, so the layer classifies exactly the path that is sent; the result is checked to be
/// on `upstream`.
fn upstream_uri(upstream: &Origin, uri: &Uri) -> Result<Uri, Failure> {
    let bad = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "InvalidPath",
            "the request target cannot be forwarded",
        )
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(bad());
    }
    let url = reqwest::Url::parse(&format!("{upstream}{path}")).map_err(|_| bad())?;
    let uri: Uri = url.as_str().parse().map_err(|_| bad())?;
    if !upstream.matches_uri(&uri) {
        return Err(bad());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_path_is_bounded_whatever_its_length() {
        assert_eq!(loggable_path("/orders/v0/orders"), "/orders/v0/orders");
        let long = format!("/{}", "é".repeat(40_000));
        let logged = loggable_path(&long);
        assert!(logged.len() < LOGGED_PATH_MAX + 32, "{}", logged.len());
        assert!(
            logged.ends_with(&format!("({} bytes)", long.len())),
            "{logged}"
        );
    }
}

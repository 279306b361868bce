//! A reverse proxy that lets any HTTP client call SP-API without knowing about tokens.
//!
//! The client sends plain requests (no `x-amz-access-token` at all) to the proxy; the proxy forwards
//! each one to the SP-API origin with the seller's LWA access token, and the
//! [`RestrictedDataTokenLayer`] swaps in a Restricted Data Token on the restricted ones. Bodies are
//! streamed both ways, status codes and end-to-end headers are kept, hop-by-hop headers are dropped,
//! and tokens never appear in the log.
//!
//! Try it by hand against the emulator (`examples/emulator.rs` prints the exports and this command
//! with the right port):
//!
//! ```text
//! cargo run --example emulator                  # terminal 1: prints what to export
//! export SPAPI_CLIENT_ID=... SPAPI_CLIENT_SECRET=... SPAPI_REFRESH_TOKEN=... SPAPI_REFRESH_TOKEN_B=...
//! cargo run --example proxy -- --listen 127.0.0.1:8080 \
//!     --upstream http://127.0.0.1:PORT --lwa-url http://127.0.0.1:PORT/auth/o2/token
//! curl -i http://127.0.0.1:8080/orders/v0/orders/902-3159896-1390916/address
//! curl -i -H 'x-spapi-seller: B' http://127.0.0.1:8080/sellers/v1/marketplaceParticipations
//! ```
//!
//! Against Amazon, `--upstream https://sellingpartnerapi-eu.amazon.com` (or `-na`, `-fe`) and no
//! `--lwa-url`. Sandbox hosts get the LWA token only (the layer's default sandbox policy).
//!
//! - Credentials: `SPAPI_CLIENT_ID` and `SPAPI_CLIENT_SECRET` (the application's), and one refresh
//!   token per seller: `SPAPI_REFRESH_TOKEN` for requests without a seller header, and
//!   `SPAPI_REFRESH_TOKEN_<NAME>` for requests with `x-spapi-seller: <NAME>` (the name as written
//!   in the variable).
//! - `x-spapi-restricted-report: true` marks a `getReportDocument` call as fetching a restricted
//!   report type, so it gets a token too.
//! - Both headers are removed before the request goes on, as are `Host` (set from the upstream) and
//!   the hop-by-hop headers: `Connection` and those it names, `Keep-Alive`, `Proxy-*`, `TE`,
//!   `Trailer`, `Transfer-Encoding` and `Upgrade`.
//! - A restricted call refused with 403 has its token dropped, and is sent once more with a fresh
//!   one when it has no body; a call refused with the LWA token drops that token, so the next call
//!   gets a fresh one.
//! - The proxy's own errors use SP-API's error shape: 400 for a bad seller header, 502 when a token
//!   was refused or the upstream could not be reached, 503 when a token is not available yet.
//!
//! The upstream client is reqwest (rustls), so the proxy reaches Amazon over TLS; the server side is
//! hyper (HTTP/1.1 and h2c). `tests/examples.rs` runs this file's [`Proxy`] in-process.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use spapi_rdt::control::RestrictedReport;
use spapi_rdt::recover::RecoverStaleToken;
use spapi_rdt::{
    BoxError, ErrorKind, LwaCredentials, Origin, RestrictedDataTokenLayer,
    RestrictedDataTokenService, SecretToken, SellerId, SpApiTokenSource, X_AMZ_ACCESS_TOKEN,
};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Names the seller a request is for (removed before forwarding).
pub(crate) const SELLER_HEADER: HeaderName = HeaderName::from_static("x-spapi-seller");
/// Marks a `getReportDocument` call as fetching a restricted report (removed before forwarding).
pub(crate) const RESTRICTED_REPORT_HEADER: HeaderName =
    HeaderName::from_static("x-spapi-restricted-report");

const USAGE: &str = "\
usage: proxy --listen ADDR:PORT --upstream URL [--lwa-url URL]

  --listen    where to accept connections, e.g. 127.0.0.1:8080
  --upstream  the SP-API origin, e.g. https://sellingpartnerapi-eu.amazon.com
  --lwa-url   the LWA token endpoint (default: Amazon's)

environment: SPAPI_CLIENT_ID, SPAPI_CLIENT_SECRET, and SPAPI_REFRESH_TOKEN (requests without
x-spapi-seller) and/or SPAPI_REFRESH_TOKEN_<NAME> (requests with x-spapi-seller: <NAME>)";

/// What the proxy needs: where to listen, where to forward, and the sellers' credentials.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    pub(crate) upstream: Origin,
    pub(crate) lwa_url: Option<String>,
    pub(crate) sellers: Vec<(SellerId, LwaCredentials)>,
}

impl Config {
    /// Reads the command line (without the program name) and the environment. Error messages
    /// name variables, never their values.
    pub(crate) fn parse(
        args: impl IntoIterator<Item = String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let (mut listen, mut upstream, mut lwa_url) = (None, None, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg, None),
            };
            let slot = match flag.as_str() {
                "--listen" => &mut listen,
                "--upstream" => &mut upstream,
                "--lwa-url" => &mut lwa_url,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| format!("`{flag}` needs a value\n\n{USAGE}"))?,
            };
            *slot = Some(value);
        }
        let listen = listen
            .ok_or_else(|| format!("missing --listen\n\n{USAGE}"))?
            .parse()
            .map_err(|e| format!("--listen: {e}"))?;
        let upstream = upstream.ok_or_else(|| format!("missing --upstream\n\n{USAGE}"))?;
        let upstream = Origin::parse(&upstream).map_err(|e| format!("--upstream: {e}"))?;

        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, value)| name.starts_with("SPAPI_") && !value.trim().is_empty())
            .collect();
        let read = |name: &str| {
            vars.get(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))
        };
        let client_id = read("SPAPI_CLIENT_ID")?;
        let client_secret = read("SPAPI_CLIENT_SECRET")?;
        let mut sellers = Vec::new();
        for (name, refresh_token) in &vars {
            let seller = match name.strip_prefix("SPAPI_REFRESH_TOKEN") {
                Some("") => SellerId::default(),
                Some(rest) => match rest.strip_prefix('_') {
                    Some(seller) if !seller.is_empty() => SellerId::new(seller),
                    _ => continue,
                },
                None => continue,
            };
            let credentials = LwaCredentials::new(client_id, client_secret, refresh_token);
            sellers.push((seller, credentials));
        }
        if sellers.is_empty() {
            return Err(
                "no refresh token: set SPAPI_REFRESH_TOKEN and/or SPAPI_REFRESH_TOKEN_<NAME>"
                    .to_owned(),
            );
        }
        Ok(Config {
            listen,
            upstream,
            lwa_url,
            sellers,
        })
    }
}

/// The token stack the proxy sends requests through: stale-token recovery, the RDT layer, and the
/// upstream HTTP client.
type Stack = RecoverStaleToken<RestrictedDataTokenService<Upstream>>;

/// The proxy: turns a plain request into an SP-API call with the right token, and back.
#[derive(Clone)]
pub(crate) struct Proxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    upstream: Origin,
    source: SpApiTokenSource,
    stack: Stack,
}

impl Proxy {
    /// Builds the token source, the layer and the upstream client from `config`.
    pub(crate) fn new(config: &Config) -> Result<Proxy, BoxError> {
        // No redirects: a followed redirect would take the token to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let mut source = SpApiTokenSource::builder().http_client(http.clone());
        for (seller, credentials) in &config.sellers {
            source = source.seller(seller.clone(), credentials.clone());
        }
        if let Some(url) = &config.lwa_url {
            source = source.lwa_url(url.clone());
        }
        let source = source.build()?;
        let layer = RestrictedDataTokenLayer::builder(source.clone())
            .allow_origin(config.upstream.clone())
            .build()?;
        let stack = ServiceBuilder::new()
            .layer(layer.recover_stale_tokens())
            .layer(layer)
            .service(Upstream {
                http,
                source: source.clone(),
            });
        Ok(Proxy {
            inner: Arc::new(ProxyInner {
                upstream: config.upstream.clone(),
                source,
                stack,
            }),
        })
    }

    /// Answers one request: the upstream's response, or the proxy's own error.
    pub(crate) async fn handle(&self, request: Request<Incoming>) -> Response<reqwest::Body> {
        let started = Instant::now();
        let method = request.method().clone();
        // The path only: no query string, no header, no token in the log.
        let path = request.uri().path().to_owned();
        match self.forward(request).await {
            Ok((seller, response)) => {
                tracing::info!(
                    %method,
                    path,
                    seller = seller.as_str(),
                    status = response.status().as_u16(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
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

    async fn forward(
        &self,
        request: Request<Incoming>,
    ) -> Result<(SellerId, Response<reqwest::Body>), Failure> {
        if request.method() == Method::CONNECT {
            return Err(Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "this proxy forwards requests to one origin; it does not tunnel",
            ));
        }
        let (mut parts, incoming) = request.into_parts();
        let seller = self.seller(&parts.headers)?;
        let restricted_report = parts
            .headers
            .get(RESTRICTED_REPORT_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true") || v == "1");
        parts.uri = self.upstream_uri(&parts.uri)?;
        strip_hop_by_hop(&mut parts.headers);
        for name in [header::HOST, SELLER_HEADER, RESTRICTED_REPORT_HEADER] {
            parts.headers.remove(name);
        }
        parts.version = Version::HTTP_11;

        // The LWA token goes on every call; the layer replaces it on restricted ones.
        let lwa = self
            .inner
            .source
            .lwa_access_token(&seller)
            .await
            .map_err(|e| Failure::token(e.kind(), format!("no LWA access token: {e}")))?;
        parts
            .headers
            .insert(X_AMZ_ACCESS_TOKEN, lwa.header_value().clone());
        parts.extensions = Extensions::new();
        parts.extensions.insert(seller.clone());
        parts.extensions.insert(LwaSent {
            seller: seller.clone(),
            token: lwa,
        });
        if restricted_report {
            parts.extensions.insert(RestrictedReport);
        }

        // A request without a body gets an in-memory empty one, which the recovery layer can
        // replay; any other body is streamed as it arrives.
        let body = if incoming.is_end_stream() {
            reqwest::Body::from(Bytes::new())
        } else {
            reqwest::Body::wrap(incoming)
        };
        let response = self
            .inner
            .stack
            .clone()
            .oneshot(Request::from_parts(parts, body))
            .await
            .map_err(Failure::upstream)?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok((seller, Response::from_parts(parts, body)))
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
        if self.inner.source.has_seller(&seller) {
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

    /// The request's path and query on the upstream origin. The URL is normalized here, as the
    /// upstream client would do it, so the layer classifies exactly the path that is sent.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, Failure> {
        let bad = || {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "InvalidPath",
                "the request target cannot be forwarded",
            )
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if !path.starts_with('/') {
            return Err(bad());
        }
        let url =
            reqwest::Url::parse(&format!("{}{path}", self.inner.upstream)).map_err(|_| bad())?;
        let uri: Uri = url.as_str().parse().map_err(|_| bad())?;
        if !self.inner.upstream.matches_uri(&uri) {
            return Err(bad());
        }
        Ok(uri)
    }
}

/// Accepts connections on `listener` and serves each with `proxy`, until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, proxy: Proxy) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request).await) }
            });
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Builds the proxy, listens on `config.listen` and serves until Ctrl-C.
pub(crate) async fn run(config: Config) -> Result<(), BoxError> {
    let proxy = Proxy::new(&config)?;
    let listener = TcpListener::bind(config.listen).await?;
    let sellers: Vec<&str> = config.sellers.iter().map(|(s, _)| s.as_str()).collect();
    println!(
        "proxy on http://{} -> {} (sellers: {})",
        listener.local_addr()?,
        config.upstream,
        sellers.join(", ")
    );
    tokio::select! {
        () = serve(listener, proxy) => {}
        signal = tokio::signal::ctrl_c() => signal?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let vars = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    let config = match Config::parse(args, vars) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: {e}");
            ExitCode::FAILURE
        }
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

/// The LWA token the proxy put on a request, to tell afterwards whether it went out with it.
#[derive(Clone)]
struct LwaSent {
    seller: SellerId,
    token: SecretToken,
}

/// The innermost service: sends the request upstream with reqwest, streaming both bodies.
#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    source: SpApiTokenSource,
}

impl Service<Request<reqwest::Body>> for Upstream {
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<reqwest::Body>) -> Self::Future {
        let (http, source) = (self.http.clone(), self.source.clone());
        Box::pin(async move {
            // Still the LWA token, or did the layer put an RDT in its place?
            let lwa = request
                .extensions()
                .get::<LwaSent>()
                .cloned()
                .filter(|sent| {
                    request.headers().get(X_AMZ_ACCESS_TOKEN) == Some(sent.token.header_value())
                });
            let response = http.execute(reqwest::Request::try_from(request)?).await?;
            if let Some(sent) = lwa
                && matches!(response.status().as_u16(), 401 | 403)
            {
                source.invalidate_lwa_access_token(&sent.seller, &sent.token);
            }
            Ok(Response::from(response))
        })
    }
}

/// The proxy's own answer when it cannot forward a request.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }

    /// A token could not be had: worth a retry later (503), or not (502).
    fn token(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::Transient => {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "TokenUnavailable", message)
            }
            _ => Failure::new(StatusCode::BAD_GATEWAY, "TokenRefused", message),
        }
    }

    /// The stack failed: no RDT (the layer's error), or no answer from the upstream.
    fn upstream(error: BoxError) -> Self {
        match error.downcast_ref::<spapi_rdt::Error>() {
            Some(e) => Failure::token(e.kind(), e.to_string()),
            None => Failure::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnavailable",
                format!("the upstream did not answer: {error}"),
            ),
        }
    }

    fn into_response(self) -> Response<reqwest::Body> {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        });
        let mut response = Response::new(reqwest::Body::from(body.to_string()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

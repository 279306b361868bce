//! The Tokens API source, [`SpApiTokenSource`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::lwa::{
    ASSUMED_LIFETIME, Lifetime, LwaCache, LwaCredentials, LwaEndpoint, MAX_LIFETIME, SellerSlot,
    read_body, retry_after_header, scrub, transport_error,
};
use super::{ErrorKind, SourceError, TokenFuture, TokenSource};
use crate::resource::{SellerId, TokenRequest};
use crate::token::{IssuedToken, SecretToken};

/// The Tokens API operation's path.
const TOKENS_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";

/// The cure for a resource or data element the application has no role for.
const CURE_ROLE: &str = "grant the application the restricted role for this resource (or data element) in \
     Seller Central / the developer profile, then have the seller authorize the application again: \
     tokens only return PII after re-authorization";

/// The cure for a Tokens API call refused twice.
const CURE_CREDENTIALS: &str = "check that the LWA credentials (client id, client secret, refresh token) are \
     this application's and this seller's, and that the origin is the seller's region; if the seller \
     revoked the authorization, the seller must authorize the application again";

/// The default [`TokenSource`]: Amazon's Tokens API, authenticated with each seller's LWA access
/// token, over reqwest. Cloning is cheap, and clones share the LWA token cache.
///
/// ```
/// use spapi_rdt::{LwaCredentials, SellerId, SpApiTokenSource};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = SpApiTokenSource::builder()
///     // The default seller (requests that name none)...
///     .credentials(LwaCredentials::new("amzn1.application-oa2-client.0123", "secret", "Atzr|one"))
///     // ...and others, by the `SellerId` their requests carry.
///     .seller(
///         SellerId::new("A2EUQ1WTGCTBG2"),
///         LwaCredentials::new("amzn1.application-oa2-client.0123", "secret", "Atzr|two"),
///     )
///     .build()?;
/// // Or read the default seller's credentials from SPAPI_CLIENT_ID, SPAPI_CLIENT_SECRET and
/// // SPAPI_REFRESH_TOKEN with `LwaCredentials::from_env()`.
/// # let _ = source;
/// # Ok(())
/// # }
/// ```
///
/// # What one `fetch` does
///
/// It gets the seller's LWA access token (cached, refreshed ahead of expiry, one LWA call at a time
/// per seller), then makes one `POST {origin}/tokens/2021-03-01/restrictedDataToken` call. Rate
/// limiting, retries with back-off and caching of the tokens are the layer's job, so there is no
/// other retry, with one exception: when the Tokens API refuses the LWA token (401 or 403), the LWA
/// token is dropped, a new one is fetched and the call is made once more.
///
/// # How answers map to errors
///
/// | answer | result |
/// | --- | --- |
/// | 2xx with `restrictedDataToken` and `expiresIn` (bare or inside `payload`) | the token |
/// | 400 `InvalidInput` | permanent, with Amazon's message and the cure for a missing role |
/// | other 400, 404, 415, other 4xx, redirects | permanent |
/// | 401 / 403 | new LWA token and one more call; a second refusal is permanent |
/// | 408, 429, 5xx | transient (`Retry-After` in seconds is kept when sent) |
/// | timeout, connection failure, unreadable or malformed body | transient |
/// | LWA `invalid_grant` / `invalid_client` / other 4xx | permanent, with the cure |
/// | LWA 429 / 5xx / timeout / connection failure / malformed body | transient |
///
/// # LWA access tokens
///
/// Each seller's access token is cached and refreshed
/// [`lwa_refresh_margin`](SpApiTokenSourceBuilder::lwa_refresh_margin) before its expiry (5
/// minutes by default), but never before half its life, so a short-lived token cannot cause a
/// refresh storm. Concurrent callers for one seller share one LWA call, and callers that waited
/// for a failed call get its error rather than calling again. Time is `tokio::time::Instant`.
///
/// # Token lifetimes
///
/// `expiresIn` (and LWA's `expires_in`) is taken as stated when above zero and at most a day. Missing, or
/// more than a day, it is taken to be [`SpApiTokenSource::ASSUMED_TOKEN_LIFETIME`] (one hour, the
/// documented lifetime) and a warning is logged: a token that dies earlier is recovered by the
/// layer's retry on 403. Zero, negative or not a number, the answer is a transient error, as is a
/// token that cannot be sent in a header.
///
/// Errors and logs never hold a token, a refresh token or a client secret; Amazon's own messages
/// are kept (with any of those secrets scrubbed out).
///
/// Redirects are not followed by the client this source builds, since a followed redirect would
/// carry the `x-amz-access-token` header to another host. A client given with
/// [`SpApiTokenSourceBuilder::http_client`] should be built with
/// `reqwest::redirect::Policy::none()` too.
#[derive(Clone)]
pub struct SpApiTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    timeout: Duration,
    lwa_endpoint: LwaEndpoint,
    lwa: LwaCache,
}

/// Builds an [`SpApiTokenSource`]; from [`SpApiTokenSource::builder`].
#[derive(Debug)]
pub struct SpApiTokenSourceBuilder {
    sellers: Vec<(SellerId, LwaCredentials)>,
    lwa_url: String,
    client: Option<reqwest::Client>,
    request_timeout: Duration,
    lwa_refresh_margin: Duration,
}

/// Why an [`SpApiTokenSource`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceBuildError {
    /// The LWA URL is not an absolute `https` URL (or `http` on a loopback host).
    #[error("invalid LWA URL `{url}`: {reason}")]
    InvalidLwaUrl {
        /// The URL as given (hidden when it holds user information).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No seller has credentials.
    #[error(
        "no LWA credentials: give the builder `credentials` (the default seller) or `seller` (others)"
    )]
    NoCredentials,
    /// The request timeout is zero.
    #[error("the request timeout must be more than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (TLS initialization).
    #[error("could not build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// Feature `rustls-no-provider` is on, no other TLS feature is, and the application has not
    /// installed a rustls crypto provider: the source's own client would have no cryptography.
    #[error(
        "no rustls crypto provider is installed: call \
         `rustls::crypto::CryptoProvider::install_default` (for example with ring's provider) before \
         building the source, or give the builder your own client with `http_client`"
    )]
    NoCryptoProvider,
    /// No TLS feature is on (`rustls`, `rustls-no-provider`, `native-tls`), no client was given, and
    /// the LWA endpoint is an `https` URL: the source could never reach it.
    #[error(
        "the source's HTTP client has no TLS: turn on the feature `rustls`, `rustls-no-provider` or \
         `native-tls`, or give the builder your own client with `http_client`"
    )]
    NoTls,
}

impl SpApiTokenSource {
    /// Amazon's LWA token endpoint.
    pub const DEFAULT_LWA_URL: &'static str = "https://api.amazon.com/auth/o2/token";
    /// How long one HTTP call (LWA or Tokens API) may take, unless configured.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long before its expiry an LWA token is refreshed, unless configured.
    pub const DEFAULT_LWA_REFRESH_MARGIN: Duration = Duration::from_secs(300);
    /// The lifetime assumed for a token whose stated lifetime is missing or above
    /// [`MAX_TOKEN_LIFETIME`](Self::MAX_TOKEN_LIFETIME).
    pub const ASSUMED_TOKEN_LIFETIME: Duration = ASSUMED_LIFETIME;
    /// The longest stated token lifetime believed.
    pub const MAX_TOKEN_LIFETIME: Duration = MAX_LIFETIME;

    /// A builder with the defaults.
    pub fn builder() -> SpApiTokenSourceBuilder {
        SpApiTokenSourceBuilder {
            sellers: Vec::new(),
            lwa_url: Self::DEFAULT_LWA_URL.to_owned(),
            client: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            lwa_refresh_margin: Self::DEFAULT_LWA_REFRESH_MARGIN,
        }
    }

    /// The seller's LWA access token, from the cache or from LWA: for the unrestricted calls an
    /// application makes next to its restricted ones.
    pub async fn lwa_access_token(&self, seller: &SellerId) -> Result<SecretToken, SourceError> {
        let slot = self.inner.slot(seller)?;
        self.inner.lwa_token(&slot, seller).await
    }

    /// Forgets the seller's cached LWA access token if it is still `refused` (an SP-API call refused
    /// it with 401/403), so the next call gets a new one. A newer token is kept.
    pub fn invalidate_lwa_access_token(&self, seller: &SellerId, refused: &SecretToken) {
        if let Some(slot) = self.inner.lwa.slot(seller) {
            slot.invalidate(refused);
        }
    }

    /// Adds a seller, or replaces its credentials (and drops its cached LWA token), at run time.
    pub fn add_seller(&self, seller: SellerId, credentials: LwaCredentials) {
        self.inner.lwa.insert(seller, credentials);
    }

    /// Removes a seller; returns whether it had credentials. Its later requests fail permanently.
    pub fn remove_seller(&self, seller: &SellerId) -> bool {
        self.inner.lwa.remove(seller)
    }

    /// Whether the seller has credentials.
    pub fn has_seller(&self, seller: &SellerId) -> bool {
        self.inner.lwa.slot(seller).is_some()
    }
}

impl fmt::Debug for SpApiTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpApiTokenSource")
            .field("lwa_url", &self.inner.lwa_endpoint.url.as_str())
            .field("sellers", &self.inner.lwa.sellers())
            .field("request_timeout", &self.inner.timeout)
            .field("lwa_refresh_margin", &self.inner.lwa.margin())
            .finish()
    }
}

impl SpApiTokenSourceBuilder {
    /// The default seller's credentials (for requests that name no [`SellerId`]).
    #[must_use]
    pub fn credentials(self, credentials: LwaCredentials) -> Self {
        self.seller(SellerId::default(), credentials)
    }

    /// A seller's credentials. Giving a seller twice keeps the last.
    #[must_use]
    pub fn seller(mut self, seller: SellerId, credentials: LwaCredentials) -> Self {
        self.sellers.push((seller, credentials));
        self
    }

    /// The LWA token endpoint ([`SpApiTokenSource::DEFAULT_LWA_URL`] unless set): an `https` URL,
    /// or `http` on a loopback host (an emulator).
    #[must_use]
    pub fn lwa_url(mut self, url: impl Into<String>) -> Self {
        self.lwa_url = url.into();
        self
    }

    /// The HTTP client to use instead of the one built here (which follows no redirects, and uses
    /// the TLS the crate's features chose: see the crate docs' "TLS" section). Build yours with
    /// `reqwest::redirect::Policy::none()` too. Its own timeouts apply on top of
    /// [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How long one HTTP call may take, connection included
    /// ([`SpApiTokenSource::DEFAULT_REQUEST_TIMEOUT`] unless set). Past it, the call fails as a
    /// transient error.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long before its expiry an LWA access token is refreshed
    /// ([`SpApiTokenSource::DEFAULT_LWA_REFRESH_MARGIN`] unless set). Whatever the margin, a token
    /// is used for at least half its life.
    #[must_use]
    pub fn lwa_refresh_margin(mut self, margin: Duration) -> Self {
        self.lwa_refresh_margin = margin;
        self
    }

    /// Checks the settings and builds the source.
    pub fn build(self) -> Result<SpApiTokenSource, SourceBuildError> {
        let lwa_url = check_lwa_url(&self.lwa_url)?;
        if self.sellers.is_empty() {
            return Err(SourceBuildError::NoCredentials);
        }
        if self.request_timeout.is_zero() {
            return Err(SourceBuildError::ZeroTimeout);
        }
        let client = match self.client {
            Some(client) => client,
            None => default_client(&lwa_url)?,
        };
        let lwa = LwaCache::new(self.lwa_refresh_margin);
        for (seller, credentials) in self.sellers {
            lwa.insert(seller, credentials);
        }
        Ok(SpApiTokenSource {
            inner: Arc::new(Inner {
                lwa_endpoint: LwaEndpoint {
                    client: client.clone(),
                    url: lwa_url,
                    timeout: self.request_timeout,
                },
                client,
                timeout: self.request_timeout,
                lwa,
            }),
        })
    }
}

/// The client the source builds when it is given none: no redirects, and the TLS the crate's
/// features chose.
fn default_client(lwa_url: &reqwest::Url) -> Result<reqwest::Client, SourceBuildError> {
    const ANY_TLS: bool = cfg!(any(
        feature = "rustls",
        feature = "rustls-no-provider",
        feature = "native-tls"
    ));
    if !ANY_TLS && lwa_url.scheme() == "https" {
        return Err(SourceBuildError::NoTls);
    }
    // reqwest panics when it has rustls without a provider and finds none installed; say so first.
    #[cfg(all(
        feature = "rustls-no-provider",
        not(feature = "rustls"),
        not(feature = "native-tls")
    ))]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(SourceBuildError::NoCryptoProvider);
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "spapi-rdt/",
            env!("CARGO_PKG_VERSION"),
            " (Language=Rust)"
        ))
        .build()
        .map_err(SourceBuildError::HttpClient)
}

fn check_lwa_url(input: &str) -> Result<reqwest::Url, SourceBuildError> {
    let err = |reason| SourceBuildError::InvalidLwaUrl {
        url: if input.contains('@') {
            "<not shown: it holds user information>".to_owned()
        } else {
            input.chars().take(200).collect()
        },
        reason,
    };
    let url = reqwest::Url::parse(input).map_err(|_| err("not an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("user information is not allowed"));
    }
    let host = url.host_str().ok_or_else(|| err("no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if crate::resource::is_loopback(host) => {}
        "http" => return Err(err("plain http is allowed only on a loopback host")),
        _ => return Err(err("the scheme must be https (or http on loopback)")),
    }
    Ok(url)
}

impl TokenSource for SpApiTokenSource {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.issue(&request).await })
    }
}

/// The Tokens API request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokensBody<'a> {
    restricted_resources: Vec<ResourceBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_application: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceBody<'a> {
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    data_elements: Vec<&'static str>,
}

impl<'a> TokensBody<'a> {
    fn new(request: &'a TokenRequest) -> Self {
        TokensBody {
            restricted_resources: request
                .resources()
                .iter()
                .map(|r| ResourceBody {
                    method: r.method().as_str(),
                    path: r.path(),
                    data_elements: r.data_elements().iter().map(|e| e.as_str()).collect(),
                })
                .collect(),
            target_application: request.target_application(),
        }
    }
}

/// What one Tokens API call came to.
enum Outcome {
    Issued(IssuedToken),
    /// 401 or 403: the LWA token was refused.
    Refused(SourceError),
    Failed(SourceError),
}

/// Checks what can be checked before any call.
fn check(request: &TokenRequest) -> Result<(), SourceError> {
    let count = request.resources().len();
    if count == 0 {
        return Err(SourceError::permanent(
            "a token request needs at least one restricted resource",
        ));
    }
    if count > TokenRequest::MAX_RESOURCES {
        return Err(SourceError::permanent(format_args!(
            "a token request holds at most {} restricted resources; this one holds {count}",
            TokenRequest::MAX_RESOURCES
        )));
    }
    if let Some(r) = request
        .resources()
        .iter()
        .find(|r| ![Method::GET, Method::PUT, Method::POST, Method::DELETE].contains(r.method()))
    {
        return Err(SourceError::permanent(format_args!(
            "the Tokens API accepts only GET, PUT, POST and DELETE resources, not {r:?}"
        )));
    }
    Ok(())
}

impl Inner {
    fn slot(&self, seller: &SellerId) -> Result<Arc<SellerSlot>, SourceError> {
        self.lwa.slot(seller).ok_or_else(|| {
            SourceError::permanent(format_args!("no LWA credentials for seller `{seller}`"))
                .with_cure(
                    "give the seller's credentials to `SpApiTokenSourceBuilder::seller` or \
                     `SpApiTokenSource::add_seller`, or check the `SellerId` put in the request",
                )
        })
    }

    async fn lwa_token(
        &self,
        slot: &SellerSlot,
        seller: &SellerId,
    ) -> Result<SecretToken, SourceError> {
        slot.access_token(|| self.lwa_endpoint.grant(seller, slot.credentials()))
            .await
    }

    async fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, SourceError> {
        check(request)?;
        let seller = request.seller();
        let slot = self.slot(seller)?;
        let body = serde_json::to_vec(&TokensBody::new(request)).map_err(|err| {
            SourceError::permanent("could not encode the token request").with_source(err)
        })?;
        let body = Bytes::from(body);
        let lwa = self.lwa_token(&slot, seller).await?;
        match self.call(request, &slot, &lwa, body.clone(), 1).await {
            Outcome::Issued(token) => Ok(token),
            Outcome::Failed(err) => Err(err),
            Outcome::Refused(_) => {
                tracing::debug!(
                    seller = %seller,
                    origin = %request.origin(),
                    "the Tokens API refused the LWA access token; getting a new one and trying once more"
                );
                slot.invalidate(&lwa);
                let lwa = self.lwa_token(&slot, seller).await?;
                match self.call(request, &slot, &lwa, body, 2).await {
                    Outcome::Issued(token) => Ok(token),
                    Outcome::Failed(err) | Outcome::Refused(err) => Err(err.with_attempts(2)),
                }
            }
        }
    }

    /// One Tokens API call.
    async fn call(
        &self,
        request: &TokenRequest,
        slot: &SellerSlot,
        lwa: &SecretToken,
        body: Bytes,
        attempt: u32,
    ) -> Outcome {
        let seller = request.seller();
        let origin = request.origin();
        let started = Instant::now();
        let sent = self
            .client
            .post(format!("{origin}{TOKENS_PATH}"))
            .timeout(self.timeout)
            .header("x-amz-access-token", lwa.header_value().clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(
                    seller = %seller,
                    origin = %origin,
                    attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    error = %err,
                    "Tokens API call failed to complete"
                );
                let failure = if err.is_builder() {
                    SourceError::permanent(format_args!(
                        "could not make a Tokens API request for origin {origin}"
                    ))
                } else {
                    transport_error(
                        &err,
                        format_args!("the Tokens API at {origin} (seller `{seller}`)"),
                        self.timeout,
                    )
                };
                return Outcome::Failed(failure.with_source(err));
            }
        };
        let status = response.status();
        let retry_after = retry_after_header(response.headers().get(header::RETRY_AFTER));
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(100).collect::<String>());
        let body = read_body(response).await;
        tracing::debug!(
            seller = %seller,
            origin = %origin,
            attempt,
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Tokens API call"
        );
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                return Outcome::Failed(
                    SourceError::transient(format_args!(
                        "could not read the Tokens API's answer for seller `{seller}` at {origin}"
                    ))
                    .with_status(status)
                    .with_source(err),
                );
            }
        };
        let answer = Answer {
            request,
            secrets: [
                lwa.expose(),
                slot.credentials().refresh_token(),
                slot.credentials().client_secret(),
            ],
            status,
            retry_after,
            request_id: request_id.as_deref(),
        };
        answer.outcome(&body)
    }
}

/// Maps a Tokens API answer as a real call does, for the fuzz targets in `fuzz/`: the answer to a
/// request for `GET /orders/v0/orders/{orderId}/address` of seller `fuzz` on Europe's origin,
/// made with the LWA access token `secrets[0]` by a seller whose refresh token is `secrets[1]` and
/// client secret `secrets[2]`. Compiled only with `--cfg fuzzing` (as `cargo fuzz` builds).
#[cfg(fuzzing)]
pub fn fuzz_tokens_answer(
    status: StatusCode,
    body: &[u8],
    secrets: [&str; 3],
) -> Result<IssuedToken, SourceError> {
    let request = TokenRequest::new(
        SellerId::new("fuzz"),
        crate::resource::Region::Europe.origin(),
        [crate::resource::RestrictedResource::new(
            Method::GET,
            "/orders/v0/orders/{orderId}/address",
            crate::catalog::DataElements::NONE,
        )],
    );
    let answer = Answer {
        request: &request,
        secrets,
        status,
        retry_after: None,
        request_id: None,
    };
    match answer.outcome(body) {
        Outcome::Issued(token) => Ok(token),
        Outcome::Refused(err) | Outcome::Failed(err) => Err(err),
    }
}

/// A Tokens API answer and what is needed to describe it.
struct Answer<'a> {
    request: &'a TokenRequest,
    /// Scrubbed from anything Amazon says.
    secrets: [&'a str; 3],
    status: StatusCode,
    retry_after: Option<Duration>,
    request_id: Option<&'a str>,
}

impl Answer<'_> {
    fn outcome(&self, body: &[u8]) -> Outcome {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        if self.status.is_success() {
            return match self.issued(json.as_ref()) {
                Ok(token) => Outcome::Issued(token),
                Err(err) => Outcome::Failed(err.with_status(self.status)),
            };
        }
        let (code, amazon) = self.amazon_error(json.as_ref());
        let status = self.status;
        let mut message = format!(
            "the Tokens API at {} refused a token for seller `{}` ({})",
            self.request.origin(),
            self.request.seller(),
            self.resources()
        );
        match &amazon {
            Some(text) => {
                message.push_str(": ");
                message.push_str(text);
            }
            None => message.push_str(" with no error message"),
        }
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::UNSUPPORTED_MEDIA_TYPE
        ) {
            message.push_str(
                " (a wrong endpoint or content type: a bug, or an origin that is no SP-API)",
            );
        }
        if status.is_redirection() {
            message.push_str(" (a redirect, not followed: check the origin)");
        }
        if let Some(id) = self.request_id {
            message.push_str(" [request id ");
            message.push_str(id);
            message.push(']');
        }
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ErrorKind::Transient,
            s if s.is_server_error() => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let mut err = match kind {
            ErrorKind::Transient => SourceError::transient(message),
            ErrorKind::Permanent => SourceError::permanent(message),
        }
        .with_status(status);
        if let Some(code) = &code {
            err = err.with_code(code.clone());
        }
        if kind == ErrorKind::Transient
            && let Some(wait) = self.retry_after
        {
            err = err.with_retry_after(wait);
        }
        match status {
            StatusCode::BAD_REQUEST if code.as_deref() == Some("InvalidInput") => {
                Outcome::Failed(err.with_cure(CURE_ROLE))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Outcome::Refused(err.with_cure(CURE_CREDENTIALS))
            }
            _ => Outcome::Failed(err),
        }
    }

    /// A short list of the requested resources for messages.
    fn resources(&self) -> String {
        const SHOWN: usize = 3;
        let resources = self.request.resources();
        let mut text = resources
            .iter()
            .take(SHOWN)
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if resources.len() > SHOWN {
            text.push_str(&format!(" and {} more", resources.len() - SHOWN));
        }
        text
    }

    /// The token of a successful answer.
    fn issued(&self, json: Option<&Value>) -> Result<IssuedToken, SourceError> {
        let origin = self.request.origin();
        let malformed = || {
            SourceError::transient(format_args!(
                "the Tokens API at {origin} answered with a body that holds no restrictedDataToken"
            ))
        };
        let json = json.ok_or_else(malformed)?;
        // Early documentation wrapped the answer in `payload`.
        let answer = match json.get("payload") {
            Some(payload @ Value::Object(_)) if json.get("restrictedDataToken").is_none() => {
                payload
            }
            _ => json,
        };
        let token = answer
            .get("restrictedDataToken")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?;
        let token = SecretToken::new(token).map_err(|err| {
            SourceError::transient(format_args!(
                "the Tokens API at {origin} answered with a token that cannot be sent in a header"
            ))
            .with_source(err)
        })?;
        let expires_in =
            Lifetime::read(answer.get("expiresIn")).resolve("a Restricted Data Token")?;
        tracing::debug!(
            seller = %self.request.seller(),
            origin = %origin,
            expires_in_secs = expires_in.as_secs(),
            "Restricted Data Token issued"
        );
        Ok(IssuedToken::new(token, expires_in))
    }

    /// Amazon's first error code and its messages, from `{"errors": [{"code", "message", "details"}]}`.
    fn amazon_error(&self, json: Option<&Value>) -> (Option<String>, Option<String>) {
        let Some(errors) = json.and_then(|j| j.get("errors")).and_then(Value::as_array) else {
            return (None, None);
        };
        let code = errors
            .iter()
            .find_map(|e| e.get("code").and_then(Value::as_str))
            .filter(|c| !c.is_empty())
            .map(|c| scrub(c, &self.secrets));
        let messages: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                let details = e.get("details").and_then(Value::as_str).unwrap_or("");
                match (message.trim(), details.trim()) {
                    ("", "") => None,
                    (m, "") => Some(m.to_owned()),
                    ("", d) => Some(d.to_owned()),
                    (m, d) => Some(format!("{m} ({d})")),
                }
            })
            .collect();
        let message = (!messages.is_empty()).then(|| scrub(&messages.join("; "), &self.secrets));
        (code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{DataElement, DataElements};
    use crate::resource::{Region, RestrictedResource};

    fn request(resources: usize) -> TokenRequest {
        TokenRequest::new(
            SellerId::new("S1"),
            Region::Europe.origin(),
            (0..resources).map(|i| {
                RestrictedResource::new(Method::GET, format!("/r/{i}"), DataElements::NONE)
            }),
        )
    }

    fn answer(request: &TokenRequest, status: u16) -> Answer<'_> {
        Answer {
            request,
            secrets: ["Atza|lwa", "Atzr|refresh", "client-secret"],
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            request_id: Some("req-1"),
        }
    }

    #[test]
    fn body_has_data_elements_and_target_only_when_needed() {
        let r = TokenRequest::new(
            SellerId::default(),
            Region::NorthAmerica.origin(),
            [
                RestrictedResource::new(
                    Method::GET,
                    "/orders/v0/orders/{orderId}",
                    DataElements::NONE
                        .with(DataElement::BuyerInfo)
                        .with(DataElement::ShippingAddress),
                ),
                RestrictedResource::new(
                    Method::GET,
                    "/orders/v0/orders/{orderId}/address",
                    DataElements::NONE,
                ),
            ],
        );
        let json = serde_json::to_value(TokensBody::new(&r)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"restrictedResources": [
                {"method": "GET", "path": "/orders/v0/orders/{orderId}",
                 "dataElements": ["buyerInfo", "shippingAddress"]},
                {"method": "GET", "path": "/orders/v0/orders/{orderId}/address"},
            ]})
        );
        let r = r.with_target_application("amzn1.sellerapps.app.x");
        let json = serde_json::to_value(TokensBody::new(&r)).unwrap();
        assert_eq!(json["targetApplication"], "amzn1.sellerapps.app.x");
    }

    #[test]
    fn requests_are_checked_before_any_call() {
        assert!(check(&request(1)).is_ok());
        assert!(check(&request(50)).is_ok());
        for bad in [request(0), request(51)] {
            let err = check(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
        let patch = TokenRequest::new(
            SellerId::default(),
            Region::Europe.origin(),
            [RestrictedResource::new(
                Method::PATCH,
                "/x",
                DataElements::NONE,
            )],
        );
        assert!(check(&patch).unwrap_err().message().contains("PATCH"));
    }

    #[test]
    fn both_success_shapes_and_lifetimes() {
        let r = request(1);
        for body in [
            r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":3600}"#,
            r#"{"payload":{"restrictedDataToken":"Atz.sprdt|a","expiresIn":3600}}"#,
        ] {
            let Outcome::Issued(t) = answer(&r, 200).outcome(body.as_bytes()) else {
                panic!("{body}");
            };
            assert_eq!(t.token().expose(), "Atz.sprdt|a");
            assert_eq!(t.expires_in(), Duration::from_secs(3600));
        }
        for (body, transient) in [
            (
                r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":0}"#,
                true,
            ),
            (
                r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":-1}"#,
                true,
            ),
            (r#"{"restrictedDataToken":"","expiresIn":3600}"#, true),
            (
                r#"{"restrictedDataToken":"a\u0000b","expiresIn":3600}"#,
                true,
            ),
            (r#"{"expiresIn":3600}"#, true),
            ("<html>", true),
        ] {
            let Outcome::Failed(err) = answer(&r, 200).outcome(body.as_bytes()) else {
                panic!("{body}");
            };
            assert_eq!(err.is_transient(), transient, "{body}");
            assert_eq!(err.status(), Some(StatusCode::OK));
        }
    }

    #[test]
    fn error_answers_are_described_without_secrets() {
        let r = request(5);
        let body = br#"{"errors":[{"code":"InvalidInput","message":"Application does not have access to /r/0 for Atza|lwa","details":""}]}"#;
        let Outcome::Failed(err) = answer(&r, 400).outcome(body) else {
            panic!()
        };
        assert_eq!(err.code(), Some("InvalidInput"));
        assert!(err.message().contains("does not have access to /r/0"));
        assert!(err.message().contains("and 2 more"));
        assert!(err.message().contains("req-1"));
        assert!(!err.message().contains("Atza|lwa"));
        assert_eq!(err.cure(), Some(CURE_ROLE));

        let Outcome::Refused(err) = answer(&r, 403).outcome(b"") else {
            panic!()
        };
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        assert!(err.message().contains("no error message"));

        let Outcome::Failed(err) = answer(&r, 302).outcome(b"") else {
            panic!()
        };
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn lwa_urls_are_checked() {
        for ok in [
            SpApiTokenSource::DEFAULT_LWA_URL,
            "http://127.0.0.1:9000/auth/o2/token",
            "http://localhost/token",
            "http://[::1]:1/token",
        ] {
            assert!(check_lwa_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.amazon.com/auth/o2/token",
            "ftp://127.0.0.1/x",
            "/auth/o2/token",
            "https://user:pw@api.amazon.com/x",
        ] {
            let err = check_lwa_url(bad).unwrap_err();
            assert!(
                matches!(err, SourceBuildError::InvalidLwaUrl { .. }),
                "{bad}"
            );
            assert!(!err.to_string().contains("pw@"));
        }
    }

    /// What the crate's TLS features give the source's own client.
    #[test]
    fn the_default_client_follows_the_tls_features() {
        let credentials = || crate::LwaCredentials::new("id", "secret", "Atzr|refresh");
        let to_amazon = SpApiTokenSource::builder()
            .credentials(credentials())
            .build();
        let to_loopback = SpApiTokenSource::builder()
            .credentials(credentials())
            .lwa_url("http://127.0.0.1:9/token")
            .build();
        let any_tls = cfg!(any(
            feature = "rustls",
            feature = "rustls-no-provider",
            feature = "native-tls"
        ));
        let provider_needed = cfg!(all(
            feature = "rustls-no-provider",
            not(feature = "rustls"),
            not(feature = "native-tls")
        ));
        if !any_tls {
            // No TLS: Amazon's https endpoint could never be reached; plain loopback still can.
            assert!(matches!(to_amazon, Err(SourceBuildError::NoTls)));
            assert!(to_loopback.is_ok());
        } else if provider_needed {
            // No provider is installed in this test process: a typed error, not reqwest's panic.
            assert!(matches!(to_amazon, Err(SourceBuildError::NoCryptoProvider)));
        } else {
            assert!(to_amazon.is_ok() && to_loopback.is_ok());
        }
    }
}

//! Login with Amazon (LWA): a seller's credentials and the cache of their access tokens.
//!
//! Every SP-API call, the Tokens API's included, is authenticated with an LWA access token that the
//! application gets by trading the seller's refresh token at Amazon's LWA endpoint. An access token
//! lives an hour; this module keeps one per seller and refreshes it ahead of its expiry:
//!
//! - the refresh starts `margin` before the stated expiry (5 minutes by default), but never earlier
//!   than half the token's life, so a short-lived token cannot cause a refresh storm;
//! - concurrent callers for one seller share one LWA call (single flight), and callers that queued
//!   behind a failed call get its error instead of each calling LWA again;
//! - time is `tokio::time::Instant`, monotonic and testable with paused time;
//! - a token the SP-API refused (401/403) is invalidated by value, so an old refusal never evicts a
//!   newer token.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::resource::SellerId;
use crate::source::{ErrorKind, SourceError};
use crate::token::SecretToken;

/// The environment variable [`LwaCredentials::from_env`] reads the client id from.
const ENV_CLIENT_ID: &str = "SPAPI_CLIENT_ID";
/// The environment variable [`LwaCredentials::from_env`] reads the client secret from.
const ENV_CLIENT_SECRET: &str = "SPAPI_CLIENT_SECRET";
/// The environment variable [`LwaCredentials::from_env`] reads the refresh token from.
const ENV_REFRESH_TOKEN: &str = "SPAPI_REFRESH_TOKEN";

/// The lifetime assumed when a token endpoint states none (or an unbelievable one): one hour, the
/// documented lifetime of both LWA access tokens and Restricted Data Tokens.
pub(super) const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest stated lifetime believed: one day. Anything longer is treated as missing.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How much of an error body is read; Amazon's are a few hundred bytes.
pub(super) const MAX_BODY: usize = 64 * 1024;
/// How much of a message from Amazon is kept in an error.
const MAX_MESSAGE: usize = 500;

/// The cure for a refresh token that LWA no longer accepts.
pub(super) const CURE_REAUTHORIZE: &str =
    "the seller must authorize the application again to get a new refresh token";
/// The cure for a client id or secret that LWA does not accept.
const CURE_CLIENT: &str = "check the client id and secret (LWA credentials of the application in the developer \
     console; a rotated secret must be updated here)";

/// A seller authorization's Login with Amazon credentials: the application's client id and secret,
/// and the refresh token the seller's authorization produced.
///
/// `Debug` shows the client id and redacts the rest.
///
/// ```
/// use spapi_rdt::LwaCredentials;
///
/// let credentials = LwaCredentials::new(
///     "amzn1.application-oa2-client.0123",
///     "amzn1.oa2-cs.v1.secret",
///     "Atzr|refresh",
/// );
/// let shown = format!("{credentials:?}");
/// assert!(shown.contains("amzn1.application-oa2-client.0123"));
/// assert!(!shown.contains("amzn1.oa2-cs") && !shown.contains("Atzr|"));
/// ```
#[derive(Clone)]
pub struct LwaCredentials {
    inner: Arc<CredentialsInner>,
}

struct CredentialsInner {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

/// Why [`LwaCredentials::from_env`] found no credentials. Names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The variable is not set, or is empty.
    #[error("environment variable `{0}` is not set or is empty")]
    Missing(&'static str),
    /// The variable is set but is not valid Unicode.
    #[error("environment variable `{0}` is not valid Unicode")]
    NotUnicode(&'static str),
}

impl LwaCredentials {
    /// Credentials from the application's client id and secret and the seller's refresh token.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        LwaCredentials {
            inner: Arc::new(CredentialsInner {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                refresh_token: refresh_token.into(),
            }),
        }
    }

    /// Reads `SPAPI_CLIENT_ID`, `SPAPI_CLIENT_SECRET` and `SPAPI_REFRESH_TOKEN`. An unset or empty
    /// variable is an error that names it.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    fn from_lookup(
        mut lookup: impl FnMut(&str) -> Option<OsString>,
    ) -> Result<Self, CredentialsError> {
        let mut read = |name: &'static str| -> Result<String, CredentialsError> {
            let value = lookup(name).ok_or(CredentialsError::Missing(name))?;
            let value = value
                .into_string()
                .map_err(|_| CredentialsError::NotUnicode(name))?;
            if value.trim().is_empty() {
                return Err(CredentialsError::Missing(name));
            }
            Ok(value)
        };
        let client_id = read(ENV_CLIENT_ID)?;
        let client_secret = read(ENV_CLIENT_SECRET)?;
        let refresh_token = read(ENV_REFRESH_TOKEN)?;
        Ok(LwaCredentials::new(client_id, client_secret, refresh_token))
    }

    /// The application's client id (not a secret).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub(super) fn client_secret(&self) -> &str {
        &self.inner.client_secret
    }

    pub(super) fn refresh_token(&self) -> &str {
        &self.inner.refresh_token
    }

    /// Replaces any secret of these credentials found in `text` (a message from a server).
    pub(super) fn scrub(&self, text: &str) -> String {
        scrub(text, &[self.client_secret(), self.refresh_token()])
    }
}

impl fmt::Debug for LwaCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LwaCredentials")
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &format_args!("<redacted>"))
            .field("refresh_token", &format_args!("<redacted>"))
            .finish()
    }
}

/// Replaces every occurrence of a secret in `text` and keeps at most [`MAX_MESSAGE`] characters.
///
/// Secrets go first and the cut comes after, so that a secret straddling the cut cannot leave its
/// first part behind.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.trim().to_owned();
    for secret in secrets {
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, "<redacted>");
        }
    }
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => {
            text.truncate(end);
            text
        }
        None => text,
    }
}

/// What a token endpoint said about a token's lifetime.
pub(super) enum Lifetime {
    /// Absent or `null`.
    Missing,
    /// Present but not a number.
    Invalid,
    /// A number of seconds, possibly zero, negative or huge.
    Seconds(f64),
}

impl Lifetime {
    /// Reads `expires_in` / `expiresIn`: a JSON number, or a string holding one.
    pub(super) fn read(value: Option<&Value>) -> Self {
        let seconds = match value {
            None | Some(Value::Null) => return Lifetime::Missing,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match seconds {
            Some(s) if s.is_finite() => Lifetime::Seconds(s),
            _ => Lifetime::Invalid,
        }
    }

    /// Applies the lifetime rule shared by LWA tokens and RDTs:
    ///
    /// - `1 s ..= 1 day` (fractions allowed): used as stated;
    /// - missing, or more than a day: [`ASSUMED_LIFETIME`] (one hour), with a warning;
    /// - zero or negative (or so small it is zero as a `Duration`): a transient error (the token
    ///   would be dead on arrival);
    /// - not a number: a transient error, like any malformed body.
    pub(super) fn resolve(self, what: &str) -> Result<Duration, SourceError> {
        match self {
            Lifetime::Seconds(s)
                if Duration::try_from_secs_f64(s).map_or(s <= 0.0, |d| d.is_zero()) =>
            {
                Err(SourceError::transient(format_args!(
                    "{what} came with a lifetime of {s} seconds, which is already over"
                )))
            }
            Lifetime::Seconds(s) if s > MAX_LIFETIME.as_secs_f64() => {
                tracing::warn!(
                    stated_secs = s,
                    assumed_secs = ASSUMED_LIFETIME.as_secs(),
                    "{what} came with an unbelievable lifetime; assuming one hour"
                );
                Ok(ASSUMED_LIFETIME)
            }
            Lifetime::Seconds(s) => Ok(Duration::from_secs_f64(s)),
            Lifetime::Missing => {
                tracing::warn!(
                    assumed_secs = ASSUMED_LIFETIME.as_secs(),
                    "{what} came without a lifetime; assuming one hour"
                );
                Ok(ASSUMED_LIFETIME)
            }
            Lifetime::Invalid => Err(SourceError::transient(format_args!(
                "{what} came with a lifetime that is not a number"
            ))),
        }
    }
}

/// An access token as LWA granted it.
#[derive(Debug)]
pub(super) struct LwaGrant {
    pub(super) token: SecretToken,
    pub(super) expires_in: Duration,
}

/// Where and how LWA is called.
#[derive(Debug)]
pub(super) struct LwaEndpoint {
    pub(super) client: reqwest::Client,
    pub(super) url: reqwest::Url,
    pub(super) timeout: Duration,
}

impl LwaEndpoint {
    /// Trades the seller's refresh token for an access token: one LWA call, no retry.
    pub(super) async fn grant(
        &self,
        seller: &SellerId,
        credentials: &LwaCredentials,
    ) -> Result<LwaGrant, SourceError> {
        let started = Instant::now();
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", credentials.refresh_token()),
            ("client_id", credentials.client_id()),
            ("client_secret", credentials.client_secret()),
        ];
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(
                    seller = %seller,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    error = %err,
                    "LWA token refresh failed to complete"
                );
                return Err(transport_error(
                    &err,
                    format_args!("the LWA token endpoint for seller `{seller}`"),
                    self.timeout,
                )
                .with_source(err));
            }
        };
        let status = response.status();
        let retry_after = retry_after_header(response.headers().get(http::header::RETRY_AFTER));
        let body = read_body(response).await;
        tracing::debug!(
            seller = %seller,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "LWA token refresh"
        );
        let body = body.map_err(|err| {
            SourceError::transient(format_args!(
                "could not read the LWA token endpoint's answer for seller `{seller}`"
            ))
            .with_status(status)
            .with_source(err)
        })?;
        lwa_answer(seller, credentials, status, &body, retry_after)
    }
}

/// Maps an LWA answer as a real call does, for the fuzz targets in `fuzz/`: the answer to seller
/// `fuzz` with `credentials`, as the access token and its lifetime. Compiled only with
/// `--cfg fuzzing` (as `cargo fuzz` builds).
#[cfg(fuzzing)]
pub fn fuzz_lwa_answer(
    status: StatusCode,
    body: &[u8],
    credentials: &LwaCredentials,
) -> Result<(SecretToken, Duration), SourceError> {
    lwa_answer(&SellerId::new("fuzz"), credentials, status, body, None)
        .map(|grant| (grant.token, grant.expires_in))
}

/// Maps an LWA answer to a grant or an error.
fn lwa_answer(
    seller: &SellerId,
    credentials: &LwaCredentials,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<LwaGrant, SourceError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let malformed = || {
            SourceError::transient(format_args!(
                "the LWA token endpoint answered seller `{seller}` with a body that holds no access token"
            ))
            .with_status(status)
        };
        let json = json.ok_or_else(malformed)?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?;
        let token = SecretToken::new(token).map_err(|err| {
            SourceError::transient(format_args!(
                "the LWA token endpoint gave seller `{seller}` an access token that cannot be sent in a header"
            ))
            .with_status(status)
            .with_source(err)
        })?;
        let expires_in = Lifetime::read(json.get("expires_in"))
            .resolve("the LWA access token")
            .map_err(|e| e.with_status(status))?;
        return Ok(LwaGrant { token, expires_in });
    }

    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(|s| credentials.scrub(s))
    };
    let code = field("error");
    let description = field("error_description");
    let mut message = format!("the LWA token endpoint refused seller `{seller}`");
    if let Some(d) = description.as_deref().filter(|d| !d.is_empty()) {
        message.push_str(": ");
        message.push_str(d);
    }
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ErrorKind::Transient,
        s if s.is_server_error() => ErrorKind::Transient,
        s if s.is_client_error() => ErrorKind::Permanent,
        // 1xx and 3xx (redirects are not followed): not an answer LWA gives.
        _ => ErrorKind::Permanent,
    };
    let mut err = match kind {
        ErrorKind::Transient => SourceError::transient(message),
        ErrorKind::Permanent => SourceError::permanent(message),
    }
    .with_status(status);
    match code.as_deref() {
        Some("invalid_grant") => err = err.with_cure(CURE_REAUTHORIZE),
        Some("invalid_client") | Some("unauthorized_client") => err = err.with_cure(CURE_CLIENT),
        _ => {}
    }
    if let Some(code) = code.filter(|c| !c.is_empty()) {
        err = err.with_code(code);
    }
    if let Some(wait) = retry_after.filter(|_| kind == ErrorKind::Transient) {
        err = err.with_retry_after(wait);
    }
    Err(err)
}

/// Reads at most [`MAX_BODY`] bytes of a body; the rest is dropped.
pub(super) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok(body)
}

/// `Retry-After` (seconds or an HTTP date), when present and readable; see
/// [`retry_after`](super::retry_after) for the forms read. Unbounded: the layer bounds it.
pub(super) fn retry_after_header(value: Option<&http::HeaderValue>) -> Option<Duration> {
    super::retry_after::parse(value?.to_str().ok()?, std::time::SystemTime::now())
}

/// A transport failure (timeout, connection, protocol) as a transient error.
pub(super) fn transport_error(
    err: &reqwest::Error,
    what: fmt::Arguments<'_>,
    timeout: Duration,
) -> SourceError {
    if err.is_timeout() {
        SourceError::transient(format_args!(
            "{what} did not answer within {} ms",
            timeout.as_millis()
        ))
    } else if err.is_connect() {
        SourceError::transient(format_args!("could not connect to {what}"))
    } else {
        SourceError::transient(format_args!("the call to {what} failed"))
    }
}

/// A cached access token and when to refresh it.
struct Cached {
    token: SecretToken,
    refresh_at: Instant,
}

/// One seller's credentials and access-token state.
pub(super) struct SellerSlot {
    credentials: LwaCredentials,
    margin: Duration,
    /// The current token: read without a lock.
    current: ArcSwapOption<Cached>,
    /// Held while one LWA call is in flight; holds the last call's outcome for the callers that
    /// queued behind it.
    flight: tokio::sync::Mutex<Option<Result<SecretToken, SourceError>>>,
    /// How many LWA calls have completed (successfully or not).
    completed: AtomicU64,
}

impl fmt::Debug for SellerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SellerSlot")
            .field("credentials", &self.credentials)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl SellerSlot {
    fn new(credentials: LwaCredentials, margin: Duration) -> Self {
        SellerSlot {
            credentials,
            margin,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
        }
    }

    pub(super) fn credentials(&self) -> &LwaCredentials {
        &self.credentials
    }

    fn fresh(&self, now: Instant) -> Option<SecretToken> {
        let current = self.current.load();
        match current.as_deref() {
            Some(c) if now < c.refresh_at => Some(c.token.clone()),
            _ => None,
        }
    }

    /// When a token granted at `start` for `life` should be refreshed: `margin` before its expiry,
    /// but never before half its life.
    fn refresh_at(&self, start: Instant, life: Duration) -> Instant {
        crate::time::add(start, life - self.margin.min(life / 2))
    }

    /// The seller's access token: the cached one while fresh, otherwise one from `fetch`, called by
    /// one caller at a time; callers that waited for a call share its token or its error.
    pub(super) async fn access_token<F, Fut>(&self, fetch: F) -> Result<SecretToken, SourceError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LwaGrant, SourceError>>,
    {
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        let seen = self.completed.load(Ordering::Acquire);
        let mut last = self.flight.lock().await;
        if self.completed.load(Ordering::Acquire) != seen {
            // A call completed while this one waited: its outcome is this caller's too, fresh or
            // not (a token shorter-lived than the call itself must not make every waiter call again).
            match last.as_ref() {
                Some(Ok(token)) => return Ok(token.clone()),
                Some(Err(err)) => return Err(share(err)),
                None => {}
            }
        }
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        // Lifetimes count from before the call, which errs on the early side.
        let start = Instant::now();
        let outcome = fetch().await;
        let result = match outcome {
            Ok(grant) => {
                let refresh_at = self.refresh_at(start, grant.expires_in);
                self.current.store(Some(Arc::new(Cached {
                    token: grant.token.clone(),
                    refresh_at,
                })));
                *last = Some(Ok(grant.token.clone()));
                Ok(grant.token)
            }
            Err(err) => {
                *last = Some(Err(share(&err)));
                Err(err)
            }
        };
        self.completed.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Forgets `stale` if it is still the cached token (a newer one is kept).
    pub(super) fn invalidate(&self, stale: &SecretToken) {
        let current = self.current.load_full();
        if let Some(c) = &current
            && &c.token == stale
        {
            self.current.compare_and_swap(&current, None);
        }
    }
}

/// A copy of an error for the callers that share it (without the underlying error, which cannot be
/// cloned; its message is kept).
fn share(err: &SourceError) -> SourceError {
    let mut copy = match err.kind() {
        ErrorKind::Transient => SourceError::transient(err.message()),
        ErrorKind::Permanent => SourceError::permanent(err.message()),
    };
    if let Some(status) = err.status() {
        copy = copy.with_status(status);
    }
    if let Some(code) = err.code() {
        copy = copy.with_code(code.to_owned());
    }
    if let Some(cure) = err.cure() {
        copy = copy.with_cure(cure.to_owned());
    }
    if let Some(wait) = err.retry_after() {
        copy = copy.with_retry_after(wait);
    }
    copy
}

/// Every seller's LWA state.
pub(super) struct LwaCache {
    sellers: RwLock<HashMap<SellerId, Arc<SellerSlot>>>,
    margin: Duration,
}

impl LwaCache {
    pub(super) fn new(margin: Duration) -> Self {
        LwaCache {
            sellers: RwLock::new(HashMap::new()),
            margin,
        }
    }

    pub(super) fn margin(&self) -> Duration {
        self.margin
    }

    /// Adds or replaces a seller's credentials (a replacement starts with no cached token).
    pub(super) fn insert(&self, seller: SellerId, credentials: LwaCredentials) {
        let slot = Arc::new(SellerSlot::new(credentials, self.margin));
        self.sellers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seller, slot);
    }

    pub(super) fn remove(&self, seller: &SellerId) -> bool {
        self.sellers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(seller)
            .is_some()
    }

    pub(super) fn slot(&self, seller: &SellerId) -> Option<Arc<SellerSlot>> {
        self.sellers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(seller)
            .cloned()
    }

    /// The sellers with credentials, sorted.
    pub(super) fn sellers(&self) -> Vec<SellerId> {
        let mut ids: Vec<_> = self
            .sellers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn creds() -> LwaCredentials {
        LwaCredentials::new("client-id-1", "client-secret-1", "Atzr|refresh-1")
    }

    fn grant(n: usize, life: Duration) -> LwaGrant {
        LwaGrant {
            token: SecretToken::new(format!("Atza|lwa-{n}")).unwrap(),
            expires_in: life,
        }
    }

    /// A fake LWA: counts calls, takes `delay`, issues `Atza|lwa-<n>` living `life`.
    struct FakeLwa {
        calls: AtomicUsize,
        delay: Duration,
        life: Duration,
        fail: bool,
    }

    impl FakeLwa {
        fn new(life: Duration) -> Self {
            FakeLwa {
                calls: AtomicUsize::new(0),
                delay: Duration::from_millis(100),
                life,
                fail: false,
            }
        }
        async fn call(&self) -> Result<LwaGrant, SourceError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(SourceError::permanent("refused")
                    .with_code("invalid_grant")
                    .with_status(StatusCode::BAD_REQUEST)
                    .with_cure(CURE_REAUTHORIZE));
            }
            Ok(grant(n, self.life))
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let shown = format!("{:?}", creds());
        assert!(shown.contains("client-id-1"), "{shown}");
        assert!(!shown.contains("client-secret-1"), "{shown}");
        assert!(!shown.contains("refresh-1"), "{shown}");
    }

    #[test]
    fn from_env_names_the_missing_variable_only() {
        let all = |name: &str| -> Option<OsString> {
            match name {
                ENV_CLIENT_ID => Some("id".into()),
                ENV_CLIENT_SECRET => Some("very-secret".into()),
                ENV_REFRESH_TOKEN => Some("Atzr|tok".into()),
                _ => None,
            }
        };
        let ok = LwaCredentials::from_lookup(all).unwrap();
        assert_eq!(ok.client_id(), "id");
        assert_eq!(ok.client_secret(), "very-secret");
        assert_eq!(ok.refresh_token(), "Atzr|tok");

        let err =
            LwaCredentials::from_lookup(|n| if n == ENV_REFRESH_TOKEN { None } else { all(n) })
                .unwrap_err();
        assert_eq!(err, CredentialsError::Missing("SPAPI_REFRESH_TOKEN"));
        assert!(err.to_string().contains("SPAPI_REFRESH_TOKEN"));

        let err = LwaCredentials::from_lookup(|n| {
            if n == ENV_CLIENT_SECRET {
                Some("  ".into())
            } else {
                all(n)
            }
        })
        .unwrap_err();
        assert_eq!(err, CredentialsError::Missing("SPAPI_CLIENT_SECRET"));
        assert!(!err.to_string().contains("very-secret"));
    }

    #[test]
    fn scrub_removes_secrets_and_bounds_length() {
        let c = creds();
        let text = c.scrub("bad token Atzr|refresh-1 and client-secret-1!");
        assert!(!text.contains("refresh-1") && !text.contains("client-secret-1"));
        assert!(text.contains("<redacted>"));
        assert_eq!(c.scrub(&"x".repeat(10_000)).len(), MAX_MESSAGE);
    }

    #[test]
    fn lifetime_rule() {
        let r = |v: Value| Lifetime::read(Some(&v)).resolve("t");
        assert_eq!(
            r(serde_json::json!(1800)).unwrap(),
            Duration::from_secs(1800)
        );
        assert_eq!(
            r(serde_json::json!("900")).unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            r(serde_json::json!(1.5)).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(r(Value::Null).unwrap(), ASSUMED_LIFETIME);
        assert_eq!(Lifetime::read(None).resolve("t").unwrap(), ASSUMED_LIFETIME);
        assert_eq!(r(serde_json::json!(86_401)).unwrap(), ASSUMED_LIFETIME);
        assert_eq!(r(serde_json::json!(86_400)).unwrap(), MAX_LIFETIME);
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-5),
            // Above zero, but under a nanosecond: a zero `Duration`.
            serde_json::json!(1e-300),
            serde_json::json!("soon"),
            serde_json::json!({}),
        ] {
            let err = r(bad.clone()).unwrap_err();
            assert!(err.is_transient(), "{bad}");
        }
    }

    #[test]
    fn lwa_error_mapping() {
        let c = creds();
        let s = SellerId::new("S1");
        let body =
            br#"{"error":"invalid_grant","error_description":"The request has an invalid grant parameter : refresh_token"}"#;
        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, body, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.code(), Some("invalid_grant"));
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert!(err.to_string().contains("authorize the application again"));
        assert!(err.message().contains("invalid grant parameter"));

        let body =
            br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#;
        let err = lwa_answer(&s, &c, StatusCode::UNAUTHORIZED, body, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.cure().unwrap().contains("client id and secret"));

        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, b"{}", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.code(), None);

        for status in [429, 500, 503, 408] {
            let status = StatusCode::from_u16(status).unwrap();
            let err = lwa_answer(&s, &c, status, b"<html>", None).unwrap_err();
            assert!(err.is_transient(), "{status}");
        }

        // A description echoing a secret is scrubbed.
        let body = br#"{"error":"invalid_request","error_description":"bad Atzr|refresh-1"}"#;
        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, body, None).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("refresh-1"));

        // Success with a malformed body or token is transient.
        for body in [
            &b"not json"[..],
            br#"{"token_type":"bearer"}"#,
            br#"{"access_token":"a\nb"}"#,
        ] {
            let err = lwa_answer(&s, &c, StatusCode::OK, body, None).unwrap_err();
            assert!(err.is_transient());
        }
        let ok = lwa_answer(
            &s,
            &c,
            StatusCode::OK,
            br#"{"access_token":"Atza|x","token_type":"bearer","expires_in":3600}"#,
            None,
        )
        .unwrap();
        assert_eq!(ok.token.expose(), "Atza|x");
        assert_eq!(ok.expires_in, Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn cached_until_the_margin_then_refreshed() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let t1 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 1);
        // The grant's clock started before the 100 ms call: refresh due at 55 min from then.
        tokio::time::advance(Duration::from_secs(54 * 60)).await;
        let again = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(again, t1);
        assert_eq!(lwa.calls(), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        let t2 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
        assert_ne!(t1, t2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_refresh_at_half_life() {
        // A 60 s token with a 5 min margin: refreshed after 30 s, not on every call.
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(60));
        slot.access_token(|| lwa.call()).await.unwrap();
        tokio::time::advance(Duration::from_secs(25)).await;
        for _ in 0..5 {
            slot.access_token(|| lwa.call()).await.unwrap();
        }
        assert_eq!(lwa.calls(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_call() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let calls = (0..16).map(|_| slot.access_token(|| lwa.call()));
        let tokens = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        let first = tokens[0].as_ref().unwrap();
        assert!(tokens.iter().all(|t| t.as_ref().unwrap() == first));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_token_that_outlived_its_refresh_time_during_the_call() {
        // The call takes 100 ms and the token's refresh is due 5 ms after it started.
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_millis(10));
        let calls = (0..8).map(|_| slot.access_token(|| lwa.call()));
        let tokens = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        assert!(tokens.iter().all(|t| t.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_failure_instead_of_calling_again() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let mut lwa = FakeLwa::new(Duration::from_secs(3600));
        lwa.fail = true;
        let calls = (0..8).map(|_| slot.access_token(|| lwa.call()));
        let results = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        for r in results {
            let err = r.unwrap_err();
            assert_eq!(err.code(), Some("invalid_grant"));
            assert_eq!(err.kind(), ErrorKind::Permanent);
            assert_eq!(err.cure(), Some(CURE_REAUTHORIZE));
        }
        // A later caller tries again.
        assert!(slot.access_token(|| lwa.call()).await.is_err());
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_evicts_the_stale_token() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let t1 = slot.access_token(|| lwa.call()).await.unwrap();
        slot.invalidate(&t1);
        let t2 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
        assert_ne!(t1, t2);
        // A late refusal of t1 must not evict t2.
        slot.invalidate(&t1);
        assert_eq!(slot.access_token(|| lwa.call()).await.unwrap(), t2);
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_lets_the_next_caller_through() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), slot.access_token(|| lwa.call())).await;
        assert!(cancelled.is_err());
        slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
    }

    #[test]
    fn cache_adds_replaces_and_removes_sellers() {
        let cache = LwaCache::new(Duration::from_secs(300));
        assert!(cache.slot(&SellerId::default()).is_none());
        cache.insert(SellerId::new("b"), creds());
        cache.insert(SellerId::new("a"), creds());
        cache.insert(SellerId::new("a"), LwaCredentials::new("other", "s", "r"));
        assert_eq!(
            cache.sellers(),
            vec![SellerId::new("a"), SellerId::new("b")]
        );
        assert_eq!(
            cache
                .slot(&SellerId::new("a"))
                .unwrap()
                .credentials()
                .client_id(),
            "other"
        );
        assert!(cache.remove(&SellerId::new("b")));
        assert!(!cache.remove(&SellerId::new("b")));
    }
}

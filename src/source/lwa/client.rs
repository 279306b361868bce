//! Calling LWA: the credentials, the endpoint, and reading a bounded answer.

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::resource::SellerId;
use crate::source::SourceError;

use super::parse::LwaGrant;
use super::parse::lwa_answer;
use super::parse::scrub;

/// The environment variable [`LwaCredentials::from_env`] reads the client id from.
pub(super) const ENV_CLIENT_ID: &str = "SPAPI_CLIENT_ID";

/// The environment variable [`LwaCredentials::from_env`] reads the client secret from.
pub(super) const ENV_CLIENT_SECRET: &str = "SPAPI_CLIENT_SECRET";

/// The environment variable [`LwaCredentials::from_env`] reads the refresh token from.
pub(super) const ENV_REFRESH_TOKEN: &str = "SPAPI_REFRESH_TOKEN";

/// How much of an error body is read; Amazon's are a few hundred bytes.
pub(in crate::source) const MAX_BODY: usize = 64 * 1024;

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

    pub(super) fn from_lookup(
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

    pub(in crate::source) fn client_secret(&self) -> &str {
        &self.inner.client_secret
    }

    pub(in crate::source) fn refresh_token(&self) -> &str {
        &self.inner.refresh_token
    }

    /// Replaces any secret of these credentials found in `text` (a message from a server).
    pub(in crate::source) fn scrub(&self, text: &str) -> String {
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

/// Where and how LWA is called.
#[derive(Debug)]
pub(in crate::source) struct LwaEndpoint {
    pub(in crate::source) client: reqwest::Client,
    pub(in crate::source) url: reqwest::Url,
    pub(in crate::source) timeout: Duration,
}

impl LwaEndpoint {
    /// Trades the seller's refresh token for an access token: one LWA call, no retry.
    pub(in crate::source) async fn grant(
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

/// Reads at most [`MAX_BODY`] bytes of a body; the rest is dropped.
pub(in crate::source) async fn read_body(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, reqwest::Error> {
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
/// [`retry_after`](crate::source::retry_after) for the forms read. Unbounded: the layer bounds it.
pub(in crate::source) fn retry_after_header(value: Option<&http::HeaderValue>) -> Option<Duration> {
    crate::source::retry_after::parse(value?.to_str().ok()?, std::time::SystemTime::now())
}

/// A transport failure (timeout, connection, protocol) as a transient error.
pub(in crate::source) fn transport_error(
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

//! Calling LWA: the endpoint, and reading a bounded answer.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::SourceError;
use crate::resource::SellerId;

use super::credentials::LwaCredentials;
use super::parse::LwaGrant;
use super::parse::lwa_answer;

/// How much of an error body is read; Amazon's are a few hundred bytes.
pub(in crate::source) const MAX_BODY: usize = 64 * 1024;

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

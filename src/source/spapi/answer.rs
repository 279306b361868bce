//! Reading the Tokens API's answers: the token and its lifetime, or an error with its kind, its
//! cure and no secret quoted back.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::error::{ErrorKind, SourceError};
use crate::resource::TokenRequest;
use crate::source::lwa::{Lifetime, scrub};
use crate::token::{IssuedToken, SecretToken};

/// The cure for a resource or data element the application has no role for.
pub(super) const CURE_ROLE: &str = "grant the application the restricted role for this resource (or data element) in \
     Seller Central / the developer profile, then have the seller authorize the application again: \
     tokens only return PII after re-authorization";

/// The cure for a Tokens API call refused twice.
const CURE_CREDENTIALS: &str = "check that the LWA credentials (client id, client secret, refresh token) are \
     this application's and this seller's, and that the origin is the seller's region; if the seller \
     revoked the authorization, the seller must authorize the application again";

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

/// What one Tokens API call came to.
pub(super) enum Outcome {
    Issued(IssuedToken),
    /// 401 or 403: the LWA token was refused.
    Refused(SourceError),
    Failed(SourceError),
}

/// A Tokens API answer and what is needed to describe it.
pub(super) struct Answer<'a> {
    pub(super) request: &'a TokenRequest,
    /// Scrubbed from anything Amazon says.
    pub(super) secrets: [&'a str; 3],
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
    pub(super) request_id: Option<&'a str>,
}

impl Answer<'_> {
    pub(super) fn outcome(&self, body: &[u8]) -> Outcome {
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

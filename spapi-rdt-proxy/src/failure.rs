//! What the proxy answers by itself: its errors, in SP-API's error shape, and plain-text answers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use spapi_rdt::BoxError;
use spapi_rdt::error::{ErrorKind, PacingError};

/// The longest `Retry-After` the proxy answers: the longest wait for a usage plan it accepts.
const MAX_RETRY_AFTER_SECS: u64 = crate::config::MAX_USAGE_PLAN_WAIT_SECS;

/// The body of every answer: the upstream's, streamed, or the proxy's own.
pub(crate) type ResponseBody = BoxBody<Bytes, BoxError>;

/// A complete answer with `body`.
pub(crate) fn plain(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The proxy's own answer when it cannot forward a request, in SP-API's error shape.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Whole seconds for a `Retry-After` header, when the client should come back later.
    pub(crate) retry_after: Option<u64>,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A call its usage plan would hold longer than the proxy lets a call wait: 429, as Amazon
    /// answers a call past its plan, with the wait (whole seconds, rounded up) in `Retry-After`.
    /// The message names the operation and the wait; the error holds no URL, so no query string.
    pub(crate) fn wait_too_long(error: &PacingError) -> Self {
        let wait = error.wait();
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0))
            .clamp(1, MAX_RETRY_AFTER_SECS);
        let mut failure = Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "QuotaExceeded",
            format!(
                "{} {}: its usage plan would hold this call {:.1} s, longer than this proxy lets a \
                 call wait; nothing was sent to Amazon, retry after {secs} s",
                error.api(),
                error.operation(),
                wait.as_secs_f64(),
            ),
        );
        failure.retry_after = Some(secs);
        failure
    }

    /// A fault of the proxy itself (500).
    pub(crate) fn internal(message: &'static str) -> Self {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// A token could not be had: worth a retry later (503), or not (502).
    pub(crate) fn token(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::Transient => {
                Failure::new(StatusCode::SERVICE_UNAVAILABLE, "TokenUnavailable", message)
            }
            _ => Failure::new(StatusCode::BAD_GATEWAY, "TokenRefused", message),
        }
    }

    /// The stack failed: no RDT (the layer's error), a usage plan that would hold the call too long
    /// (the pacing layer's), or no answer from the upstream.
    /// The message never holds the request's URL: its query string can hold personal data (a
    /// buyer's e-mail address is a `getOrders` parameter).
    pub(crate) fn upstream(error: BoxError) -> Self {
        if let Some(e) = error.downcast_ref::<spapi_rdt::error::Error>() {
            return Failure::token(e.kind(), e.to_string());
        }
        if let Some(e) = error.downcast_ref::<PacingError>() {
            return Failure::wait_too_long(e);
        }
        let error = match error.downcast::<reqwest::Error>() {
            Ok(e) => BoxError::from(e.without_url()),
            Err(other) => other,
        };
        Failure::new(
            StatusCode::BAD_GATEWAY,
            "UpstreamUnavailable",
            format!("the upstream did not answer: {error}"),
        )
    }

    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        });
        let mut response = plain(
            self.status,
            "application/json",
            Bytes::from(body.to_string()),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

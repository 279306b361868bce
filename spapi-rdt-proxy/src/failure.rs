//! What the proxy answers by itself: its errors, in SP-API's error shape, and plain-text answers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use spapi_rdt::{BoxError, error::ErrorKind};

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
}

impl Failure {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            status,
            code,
            message: message.into(),
        }
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

    /// The stack failed: no RDT (the layer's error), or no answer from the upstream.
    /// The message never holds the request's URL: its query string can hold personal data (a
    /// buyer's e-mail address is a `getOrders` parameter).
    pub(crate) fn upstream(error: BoxError) -> Self {
        if let Some(e) = error.downcast_ref::<spapi_rdt::error::Error>() {
            return Failure::token(e.kind(), e.to_string());
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
        plain(
            self.status,
            "application/json",
            Bytes::from(body.to_string()),
        )
    }
}

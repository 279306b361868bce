//! What every endpoint of the emulator answers with: the paths and headers it knows, and the
//! response shapes (SP-API errors, OAuth errors, JSON with a request id). The endpoints and the
//! router use this module; it uses none of them.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

pub(crate) const LWA_PATH: &str = "/auth/o2/token";
pub(crate) const TOKENS_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";

pub(crate) const ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-amz-access-token");
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
pub(crate) const RATE_LIMIT: HeaderName = HeaderName::from_static("x-amzn-ratelimit-limit");
pub(crate) const SELLER: HeaderName = HeaderName::from_static("x-emulator-seller");
pub(crate) const PII: HeaderName = HeaderName::from_static("x-emulator-pii");
pub(crate) const TARGET_APPLICATION: HeaderName =
    HeaderName::from_static("x-emulator-target-application");

/// A random request id shaped like Amazon's (a UUID).
pub(crate) fn request_id() -> String {
    let hex = |n: usize| -> String {
        std::iter::repeat_with(|| fastrand::digit(16))
            .take(n)
            .collect()
    };
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

pub(crate) fn raw_json(status: StatusCode, body: Body) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_header(headers, REQUEST_ID, &request_id());
    response
}

/// A JSON answer with a request id.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    raw_json(status, Body::from(body.to_string()))
}

/// Amazon's SP-API error shape: `{"errors": [{"code", "message", "details"?}]}`.
pub(crate) fn sp_error(
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<&str>,
) -> Response {
    sp_errors(
        status,
        &[(code, message.to_owned(), details.map(str::to_owned))],
    )
}

/// As [`sp_error`], with several errors.
pub(crate) fn sp_errors(status: StatusCode, errors: &[(&str, String, Option<String>)]) -> Response {
    let list: Vec<Value> = errors
        .iter()
        .map(|(code, message, details)| {
            let mut e = json!({ "code": code, "message": message });
            if let (Some(details), Some(map)) = (details, e.as_object_mut()) {
                map.insert("details".to_owned(), Value::from(details.as_str()));
            }
            e
        })
        .collect();
    json_response(status, &json!({ "errors": list }))
}

/// OAuth2's error shape, as LWA answers.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// Sets a header when `value` can be one (it always can for the values the emulator makes).
pub(crate) fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

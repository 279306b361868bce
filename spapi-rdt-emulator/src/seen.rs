//! The request log: what the emulator was sent, for tests that check a client's requests.

use std::fmt;

use axum::body::Bytes;
use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use super::fault::{Endpoint, Target};
use super::lwa::parse_form;
use super::reply::ACCESS_TOKEN;

/// One request the emulator received, from [`Emulator::requests`](super::Emulator::requests).
///
/// Its `Debug` shows the method, the path and the header names only: the values and the body carry
/// tokens and client secrets.
#[derive(Clone)]
pub struct SeenRequest {
    target: Target,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl SeenRequest {
    pub(crate) fn new(
        target: Target,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Self {
        SeenRequest {
            target,
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            body: body.clone(),
        }
    }

    pub(crate) fn went_to(&self, endpoint: Endpoint) -> bool {
        endpoint.covers(self.target)
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's target, path and query.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The request's body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body decoded as an `application/x-www-form-urlencoded` form, in order, or `None` when
    /// it is not one.
    pub fn form(&self) -> Option<Vec<(String, String)>> {
        parse_form(&self.body)
    }

    /// The value of the form field `name` (see [`form`](Self::form)).
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form()?
            .into_iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// The `x-amz-access-token` the request carried, if any.
    pub fn access_token(&self) -> Option<&str> {
        self.headers.get(ACCESS_TOKEN)?.to_str().ok()
    }
}

impl fmt::Debug for SeenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenRequest")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

//! The HTTP side: routing and fault rendering.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::json;
use spapi_rdt::catalog::{OperationId, PlanId};

use super::api::{self, Unrestricted};
use super::fault::{Fault, Target};
use super::reply::{
    ACCESS_TOKEN, LWA_PATH, TOKENS_PATH, json_response, oauth_error, raw_json, sp_error,
};
use super::seen::SeenRequest;
use super::state::Shared;
use super::tokens::bearer;
use super::{lwa, tokens, usage};

/// Where a request goes.
#[derive(Debug)]
enum Route<'p> {
    Lwa,
    Tokens,
    Restricted(OperationId),
    Unrestricted(Unrestricted<'p>),
    Unknown,
}

impl Route<'_> {
    fn target(&self) -> Target {
        match self {
            Route::Lwa => Target::Lwa,
            Route::Tokens => Target::Tokens,
            Route::Restricted(_) => Target::Restricted,
            Route::Unrestricted(_) => Target::Unrestricted,
            Route::Unknown => Target::Unknown,
        }
    }
}

/// The one handler: every request of every endpoint comes through here.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let route = if path == LWA_PATH {
        Route::Lwa
    } else if path == TOKENS_PATH {
        Route::Tokens
    } else if let Some(hit) = shared.matcher.classify(&method, path) {
        Route::Restricted(hit.id())
    } else if let Some(op) = Unrestricted::route(&method, path) {
        Route::Unrestricted(op)
    } else {
        Route::Unknown
    };
    let target = route.target();
    // The usage-plan operation the call meters, when plans are enforced (the Tokens API meters its
    // own, always).
    let metered = match route {
        Route::Lwa | Route::Tokens => None,
        _ => shared.usage.classify(&method, path),
    };
    count_request(&shared, target, &headers);
    shared.record(SeenRequest::new(target, &method, &uri, &headers, &body));

    let plan = shared.take_faults(target);
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    let (fault, expires_in) = match plan.fault {
        Some(Fault::ExpiresIn(value)) => (None, Some(value)),
        other => (other, None),
    };
    let response = match fault {
        Some(fault) => render_fault(&shared, target, &fault),
        None => match route {
            Route::Lwa => lwa::handle(&shared, &method, &headers, &body, expires_in),
            Route::Tokens => tokens::handle(&shared, &method, &headers, &body, expires_in),
            Route::Restricted(id) => api::restricted(&shared, &method, path, id, metered, &headers),
            Route::Unrestricted(op) => api::unrestricted(&shared, op, metered, &headers),
            Route::Unknown => unknown(&shared, metered, &headers),
        },
    };
    count_response(&shared, target, response.status());
    response
}

/// The 404 of a path the emulator does not serve. A path of an SP-API operation it does not emulate
/// is metered like any other call when a live token names its caller.
fn unknown(shared: &Shared, metered: Option<PlanId>, headers: &HeaderMap) -> Response {
    let caller = metered
        .and(bearer(headers))
        .and_then(|t| shared.caller_of(t));
    let rate = match caller {
        Some(caller) => match api::meter(shared, metered, || caller) {
            Ok(rate) => rate,
            Err(usage::QuotaExceeded) => return usage::quota_exceeded(),
        },
        None => None,
    };
    let response = sp_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource was not found.",
        None,
    );
    usage::stamp(response, rate.as_deref())
}

fn count_request(shared: &Shared, target: Target, headers: &HeaderMap) {
    let mut inner = shared.lock();
    match target {
        Target::Lwa => inner.counters.lwa_calls += 1,
        Target::Tokens => {
            inner.counters.token_calls += 1;
            let seller = headers
                .get(ACCESS_TOKEN)
                .and_then(|v| v.to_str().ok())
                .and_then(|t| inner.access.get(t))
                .and_then(|g| g.seller.clone());
            if let Some(seller) = seller {
                *inner
                    .counters
                    .token_calls_by_seller
                    .entry(seller)
                    .or_insert(0) += 1;
            }
        }
        Target::Restricted => inner.counters.restricted_calls += 1,
        Target::Unrestricted => inner.counters.unrestricted_calls += 1,
        Target::Unknown => {}
    }
}

fn count_response(shared: &Shared, target: Target, status: StatusCode) {
    let mut inner = shared.lock();
    if status == StatusCode::TOO_MANY_REQUESTS {
        inner.counters.throttled += 1;
    }
    if target == Target::Restricted && status == StatusCode::FORBIDDEN {
        inner.counters.restricted_forbidden += 1;
    }
}

/// The answer an injected fault replaces the endpoint's own with.
fn render_fault(shared: &Shared, target: Target, fault: &Fault) -> Response {
    match fault {
        Fault::Status(status) if target == Target::Lwa => {
            let error = match status.as_u16() {
                401 => "invalid_client",
                403 => "unauthorized_client",
                503 => "temporarily_unavailable",
                500..=599 => "server_error",
                _ => "invalid_request",
            };
            oauth_error(*status, error, "Injected by the emulator.")
        }
        Fault::Status(status) => {
            let code = match status.as_u16() {
                400 => "InvalidInput",
                401 | 403 => "Unauthorized",
                404 => "NotFound",
                413 => "RequestTooLarge",
                415 => "UnsupportedMediaType",
                429 => "QuotaExceeded",
                503 => "ServiceUnavailable",
                _ => "InternalFailure",
            };
            let message = status
                .canonical_reason()
                .unwrap_or("Injected by the emulator.");
            sp_error(*status, code, message, Some("Injected by the emulator."))
        }
        Fault::MalformedBody => raw_json(
            StatusCode::OK,
            Body::from("<html><body><h1>502 Bad Gateway</h1></body></html>"),
        ),
        Fault::MissingFields => {
            let body = match target {
                Target::Lwa => json!({
                    "token_type": "bearer",
                    "expires_in": shared.config.lwa_lifetime.as_secs(),
                }),
                Target::Tokens => tokens::wrap(
                    shared,
                    json!({ "expiresIn": shared.config.rdt_lifetime.as_secs() }),
                ),
                _ => json!({}),
            };
            json_response(StatusCode::OK, &body)
        }
        Fault::DropConnection => {
            let chunks: [Result<Bytes, std::io::Error>; 2] = [
                Ok(Bytes::from_static(b"{\"payload\":{\"partial\":\"")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "connection dropped by the emulator",
                )),
            ];
            let mut response = raw_json(
                StatusCode::OK,
                Body::from_stream(futures_util::stream::iter(chunks)),
            );
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from_static("512"));
            response
        }
        Fault::Reply(canned) => {
            let mut response = Response::new(Body::from(canned.body.clone()));
            *response.status_mut() = canned.status;
            *response.headers_mut() = canned.headers.clone();
            response
        }
        // Handled before rendering: a delay is waited out, an `expiresIn` goes to the endpoint.
        Fault::Delay(_) | Fault::ExpiresIn(_) => sp_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The emulator could not apply a fault.",
            None,
        ),
    }
}

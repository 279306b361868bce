//! Login with Amazon: `POST /auth/o2/token`.

use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::reply::{json_response, oauth_error};
use super::state::Shared;

/// The scopes Amazon grants `client_credentials` (grantless) tokens for.
const GRANTLESS_SCOPES: [&str; 2] = [
    "sellingpartnerapi::notifications",
    "sellingpartnerapi::client_credential:rotation",
];

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    expires_in: Option<Option<i64>>,
) -> Response {
    if method != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "The token endpoint accepts POST only.",
        );
    }
    let form_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_type {
        return invalid_request("The body must be application/x-www-form-urlencoded.");
    }
    let Some(form) = parse_form(body) else {
        return invalid_request("The body is not a valid form.");
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(grant_type) = field("grant_type") else {
        return invalid_request("The request is missing a required parameter: grant_type.");
    };
    if grant_type != "refresh_token" && grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    let (Some(client_id), Some(client_secret)) = (field("client_id"), field("client_secret"))
    else {
        return invalid_request(
            "The request is missing a required parameter: client_id or client_secret.",
        );
    };
    if client_id != shared.config.client_id || client_secret != shared.config.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    }
    let lifetime = shared.config.lwa_lifetime;
    let mut answer = Map::new();
    if grant_type == "refresh_token" {
        let Some(refresh_token) = field("refresh_token") else {
            return invalid_request("The request is missing a required parameter: refresh_token.");
        };
        let mut inner = shared.lock();
        let Some(seller) = inner.refresh_tokens.get(refresh_token).cloned() else {
            drop(inner);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The request has an invalid grant parameter: refresh_token.",
            );
        };
        let token = inner.issue_access(Some(&seller), lifetime);
        inner.counters.access_tokens_issued += 1;
        drop(inner);
        answer.insert("access_token".to_owned(), Value::from(token));
        answer.insert("refresh_token".to_owned(), Value::from(refresh_token));
    } else {
        let Some(scope) = field("scope") else {
            return invalid_request("The request is missing a required parameter: scope.");
        };
        if !scope.split(' ').all(|s| GRANTLESS_SCOPES.contains(&s)) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "An unknown scope was requested.",
            );
        }
        let mut inner = shared.lock();
        let token = inner.issue_access(None, lifetime);
        inner.counters.access_tokens_issued += 1;
        drop(inner);
        answer.insert("access_token".to_owned(), Value::from(token));
        answer.insert("scope".to_owned(), Value::from(scope));
    }
    answer.insert("token_type".to_owned(), json!("bearer"));
    match expires_in {
        None => {
            answer.insert("expires_in".to_owned(), json!(lifetime.as_secs()));
        }
        Some(Some(value)) => {
            answer.insert("expires_in".to_owned(), json!(value));
        }
        Some(None) => {}
    }
    json_response(StatusCode::OK, &Value::Object(answer))
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Decodes an `application/x-www-form-urlencoded` body; `None` when it is not valid UTF-8 after
/// decoding or holds a broken percent escape.
pub(crate) fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for part in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let mut kv = part.splitn(2, |b| *b == b'=');
        let key = decode(kv.next().unwrap_or_default())?;
        let value = decode(kv.next().unwrap_or_default())?;
        pairs.push((key, value));
    }
    Some(pairs)
}

fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let form = parse_form(b"a=1&b=x%7Cy+z&c=&d").unwrap();
        assert_eq!(
            form,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x|y z".to_owned()),
                ("c".to_owned(), String::new()),
                ("d".to_owned(), String::new()),
            ]
        );
        assert!(parse_form(b"a=%4").is_none());
        assert!(parse_form(b"a=%zz").is_none());
        assert!(parse_form(b"a=%ff").is_none());
        assert!(parse_form(b"a=%+1").is_none());
    }
}

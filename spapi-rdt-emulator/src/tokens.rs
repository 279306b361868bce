//! The Tokens API: `POST /tokens/2021-03-01/restrictedDataToken`.

use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::reply::{ACCESS_TOKEN, SELLER, json_response, set_header, sp_error, sp_errors};
use super::state::{Coverage, Rdt, Shared, deadline, live, match_template, scope_of};
use super::usage::{self, Caller, Metered};
use spapi_rdt::catalog::{DataElement, DataElements};

const INVALID_PARAMETERS: &str = "Request is missing or has invalid parameters";

/// One entry of `restrictedResources`, checked.
#[derive(Debug)]
struct Wanted {
    method: Method,
    path: String,
    elements: DataElements,
}

/// A request body that passed validation.
#[derive(Debug)]
struct Checked {
    target_application: Option<String>,
    resources: Vec<Wanted>,
}

/// One error entry: code, message, details.
type ErrorEntry = (&'static str, String, Option<String>);

pub(crate) fn handle(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    expires_in: Option<Option<i64>>,
) -> Response {
    if method != Method::POST {
        return sp_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The Tokens API accepts POST only.",
            None,
        );
    }
    let Some(token) = bearer(headers) else {
        return missing_token();
    };
    let (seller, rate) = {
        let inner = shared.lock();
        let now = Instant::now();
        let seller = match inner.access.get(token) {
            None => {
                return forbidden(
                    "The access token you provided is revoked, malformed or invalid.",
                );
            }
            Some(grant) if !live(grant.expires_at, now) => {
                return forbidden("The access token you provided has expired.");
            }
            Some(grant) => match &grant.seller {
                Some(seller) => seller.clone(),
                None => {
                    return forbidden(
                        "A grantless access token cannot be used to create a restricted data token.",
                    );
                }
            },
        };
        drop(inner);
        let caller = Caller::Seller {
            seller: seller.clone(),
            app: None,
        };
        match shared.meter(caller, Metered::Tokens) {
            Some(rate) => (seller, rate),
            None => return usage::quota_exceeded(),
        }
    };
    let with_rate = |response: Response| usage::stamp(response, Some(&rate));

    let json_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.to_ascii_lowercase().contains("json"));
    if !json_type {
        return sp_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "The request payload is in an unsupported format.",
            Some("Send the body as application/json."),
        );
    }
    let checked = match serde_json::from_slice::<Value>(body) {
        Err(_) => Err(vec![(
            "InvalidInput",
            INVALID_PARAMETERS.to_owned(),
            Some("The body is not valid JSON.".to_owned()),
        )]),
        Ok(value) => check(&value),
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(errors) => return with_rate(sp_errors(StatusCode::BAD_REQUEST, &errors)),
    };

    let mut inner = shared.lock();
    let mut errors: Vec<ErrorEntry> = Vec::new();
    if let Some(app) = &checked.target_application
        && !inner.target_applications.contains(app)
    {
        errors.push((
            "InvalidInput",
            format!("Invalid targetApplication: {app}"),
            Some("The target application is not one this application may delegate to.".to_owned()),
        ));
    }
    for wanted in &checked.resources {
        let denied = inner
            .denied_resources
            .iter()
            .any(|(m, t)| *m == wanted.method && match_template(t, &wanted.path).is_some());
        let offender = format!("{} {}", wanted.method, wanted.path);
        if denied
            && !errors
                .iter()
                .any(|e| e.2.as_deref() == Some(offender.as_str()))
        {
            errors.push((
                "InvalidInput",
                format!("Application does not have access to the restricted resource {offender}"),
                Some(offender),
            ));
        }
        for element in wanted.elements.intersection(inner.denied_elements).iter() {
            let name = element.as_str().to_owned();
            if !errors.iter().any(|e| e.2.as_deref() == Some(name.as_str())) {
                errors.push((
                    "InvalidInput",
                    format!("Application does not have access to the data element {name}"),
                    Some(name),
                ));
            }
        }
    }
    if !errors.is_empty() {
        drop(inner);
        return with_rate(sp_errors(StatusCode::BAD_REQUEST, &errors));
    }

    let coverage = checked
        .resources
        .iter()
        .map(|w| Coverage {
            method: w.method.clone(),
            scope: scope_of(&shared.matcher, &w.method, &w.path),
            elements: w.elements,
        })
        .collect();
    let lifetime = shared.config.rdt_lifetime;
    let token = inner.issue_rdt(Rdt {
        seller: seller.clone(),
        coverage,
        target_application: checked.target_application,
        expires_at: deadline(Instant::now(), lifetime),
    });
    inner.counters.rdts_issued += 1;
    drop(inner);

    let mut answer = Map::new();
    answer.insert("restrictedDataToken".to_owned(), Value::from(token));
    match expires_in {
        None => {
            answer.insert("expiresIn".to_owned(), json!(lifetime.as_secs()));
        }
        Some(Some(value)) => {
            answer.insert("expiresIn".to_owned(), json!(value));
        }
        Some(None) => {}
    }
    let mut response = with_rate(json_response(
        StatusCode::OK,
        &wrap(shared, Value::Object(answer)),
    ));
    set_header(response.headers_mut(), SELLER, &seller);
    response
}

/// Wraps the answer in `{"payload": ...}` when the configuration asks for it.
pub(crate) fn wrap(shared: &Shared, answer: Value) -> Value {
    if shared.config.wrap_in_payload {
        json!({ "payload": answer })
    } else {
        answer
    }
}

/// The `x-amz-access-token` header, if the request has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ACCESS_TOKEN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The 403 Amazon answers a request without an access token.
pub(crate) fn missing_token() -> Response {
    sp_error(
        StatusCode::FORBIDDEN,
        "MissingAuthenticationToken",
        "Missing Authentication Token",
        Some("The request has no x-amz-access-token header."),
    )
}

/// Amazon's 403 `Unauthorized`.
pub(crate) fn forbidden(details: &str) -> Response {
    sp_error(
        StatusCode::FORBIDDEN,
        "Unauthorized",
        "Access to requested resource is denied.",
        Some(details),
    )
}

/// Validates a request body against the Tokens model.
fn check(body: &Value) -> Result<Checked, Vec<ErrorEntry>> {
    let invalid =
        |details: String| vec![("InvalidInput", INVALID_PARAMETERS.to_owned(), Some(details))];
    let Some(body) = body.as_object() else {
        return Err(invalid("The body must be a JSON object.".to_owned()));
    };
    let target_application = match body.get("targetApplication") {
        None | Some(Value::Null) => None,
        Some(Value::String(app)) => Some(app.clone()),
        Some(_) => return Err(invalid("targetApplication must be a string.".to_owned())),
    };
    let Some(list) = body.get("restrictedResources").and_then(Value::as_array) else {
        return Err(invalid(
            "restrictedResources is required and must be an array.".to_owned(),
        ));
    };
    if list.is_empty() {
        return Err(invalid(
            "restrictedResources must hold at least one resource.".to_owned(),
        ));
    }
    if list.len() > spapi_rdt::TokenRequest::MAX_RESOURCES {
        return Err(invalid(format!(
            "restrictedResources holds {} resources; at most {} are allowed.",
            list.len(),
            spapi_rdt::TokenRequest::MAX_RESOURCES
        )));
    }
    let mut resources = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Some(item) = item.as_object() else {
            return Err(invalid(format!(
                "restrictedResources[{i}] must be an object."
            )));
        };
        let method = item.get("method").and_then(Value::as_str).unwrap_or("");
        let path = item.get("path").and_then(Value::as_str).unwrap_or("");
        if method.is_empty() || path.is_empty() {
            // What Amazon's sandbox answers for an empty method.
            return Err(vec![(
                "InvalidRequest",
                INVALID_PARAMETERS.to_owned(),
                Some("Resource not provided.".to_owned()),
            )]);
        }
        let method = match method {
            "GET" => Method::GET,
            "PUT" => Method::PUT,
            "POST" => Method::POST,
            "DELETE" => Method::DELETE,
            other => {
                return Err(invalid(format!(
                    "restrictedResources[{i}].method `{other}` is not one of GET, PUT, POST, DELETE."
                )));
            }
        };
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "restrictedResources[{i}].path must start with `/`."
            )));
        }
        let mut elements = DataElements::NONE;
        match item.get("dataElements") {
            None | Some(Value::Null) => {}
            Some(Value::Array(names)) => {
                for name in names {
                    let element = name.as_str().and_then(DataElement::from_name);
                    let Some(element) = element else {
                        return Err(invalid(format!(
                            "restrictedResources[{i}].dataElements holds {name}, which is not one of buyerInfo, shippingAddress, buyerTaxInformation."
                        )));
                    };
                    elements = elements.with(element);
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "restrictedResources[{i}].dataElements must be an array of strings."
                )));
            }
        }
        resources.push(Wanted {
            method,
            path: path.to_owned(),
            elements,
        });
    }
    Ok(Checked {
        target_application,
        resources,
    })
}

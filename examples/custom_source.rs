//! A `TokenSource` of your own: workers that hold no credentials ask an internal token service for
//! Restricted Data Tokens over HTTP.
//!
//! Run it with `cargo run --example custom_source`. It starts the SP-API emulator and, in front of
//! it, a tiny token service (axum) that holds the LWA credentials and issues tokens with
//! `SpApiTokenSource`. The worker's source, [`TokenService`], is the few lines that implement
//! `TokenSource` by asking that service. What it shows:
//!
//! - implementing [`TokenSource::fetch`] by hand: turn the `TokenRequest` (seller, origin,
//!   resources) into a call, and the answer into an `IssuedToken` or a `SourceError` whose kind
//!   (transient or permanent) tells the layer whether to retry;
//! - the layer in the worker still caches, rate-limits and shares fetches, so the token service is
//!   asked once per operation however many orders the worker reads;
//! - a refusal (the application has no role for an operation) travels back as a permanent error,
//!   which the layer remembers instead of asking again.
//!
//! For a one-off source, [`spapi_rdt::source_fn`] turns a closure into a `TokenSource`; the
//! quickstart example uses it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use spapi_rdt::catalog::{DataElement, DataElements};
use spapi_rdt::{
    BoxError, IssuedToken, LwaCredentials, Origin, RestrictedDataTokenLayer, RestrictedResource,
    SecretToken, SellerId, SpApiTokenSource, Stats, TokenFuture, TokenRequest, TokenSource,
    error::SourceError,
};
use spapi_rdt_emulator::Emulator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};

/// The worker's token source: asks the internal token service at `url`.
#[derive(Clone, Debug)]
pub(crate) struct TokenService {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl TokenSource for TokenService {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        let (http, url) = (self.http.clone(), self.url.clone());
        Box::pin(async move {
            let unreachable = |e: reqwest::Error| {
                SourceError::transient("token service unreachable").with_source(e)
            };
            let response = http
                .post(url)
                .json(&to_json(&request))
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status();
            let body: Value = response.json().await.map_err(unreachable)?;
            if !status.is_success() {
                let message = body["error"]
                    .as_str()
                    .unwrap_or("the token service refused");
                let transient = body["transient"]
                    .as_bool()
                    .unwrap_or(status.is_server_error());
                let mut error = if transient {
                    SourceError::transient(message)
                } else {
                    SourceError::permanent(message)
                };
                if let Some(code) = body["code"].as_str() {
                    error = error.with_code(code);
                }
                if let Some(cure) = body["cure"].as_str() {
                    error = error.with_cure(cure.to_owned());
                }
                // Amazon's status when the service passes one on, else the service's own.
                let amazon = body["status"].as_u64().and_then(|s| u16::try_from(s).ok());
                let status = amazon
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(status);
                return Err(error.with_status(status));
            }
            let token = SecretToken::new(body["restrictedDataToken"].as_str().unwrap_or_default())
                .map_err(SourceError::permanent)?;
            let expires_in = Duration::from_secs(body["expiresIn"].as_u64().unwrap_or(0));
            Ok(IssuedToken::new(token, expires_in))
        })
    }
}

/// The wire format between worker and token service: the `TokenRequest`, as JSON.
fn to_json(request: &TokenRequest) -> Value {
    let resources: Vec<Value> = request
        .resources()
        .iter()
        .map(|r| {
            let elements: Vec<&str> = r.data_elements().iter().map(DataElement::as_str).collect();
            json!({ "method": r.method().as_str(), "path": r.path(), "dataElements": elements })
        })
        .collect();
    json!({
        "seller": request.seller().as_str(),
        "origin": request.origin().as_str(),
        "resources": resources,
    })
}

/// The inverse of [`to_json`]; `None` for anything malformed.
fn from_json(body: &Value) -> Option<TokenRequest> {
    let origin = Origin::parse(body["origin"].as_str()?).ok()?;
    let mut resources = Vec::new();
    for resource in body["resources"].as_array()? {
        let method = Method::from_bytes(resource["method"].as_str()?.as_bytes()).ok()?;
        let mut elements = DataElements::NONE;
        for name in resource["dataElements"].as_array()? {
            elements = elements.with(DataElement::from_name(name.as_str()?)?);
        }
        let path = resource["path"].as_str()?;
        resources.push(RestrictedResource::new(method, path, elements));
    }
    let seller = SellerId::new(body["seller"].as_str()?);
    Some(TokenRequest::new(seller, origin, resources))
}

/// The internal token service, running.
#[derive(Debug)]
pub(crate) struct TokenServiceHandle {
    /// Where workers send token requests.
    pub(crate) url: String,
    /// Token requests the service received.
    pub(crate) requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for TokenServiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct ServiceState {
    source: SpApiTokenSource,
    /// The origins the service fetches tokens for: a token is only as safe as where it goes.
    origins: Arc<[Origin]>,
    requests: Arc<AtomicU64>,
}

/// Starts the token service on loopback: it holds the credentials, and asks `source` (LWA and the
/// Tokens API) for tokens on the `origins` it serves.
pub(crate) async fn start_token_service(
    source: SpApiTokenSource,
    origins: Vec<Origin>,
) -> std::io::Result<TokenServiceHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/rdt", listener.local_addr()?);
    let requests = Arc::new(AtomicU64::new(0));
    let state = ServiceState {
        source,
        origins: origins.into(),
        requests: Arc::clone(&requests),
    };
    let app = axum::Router::new()
        .route("/rdt", axum::routing::post(issue))
        .with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(TokenServiceHandle {
        url,
        requests,
        task,
    })
}

async fn issue(
    State(state): State<ServiceState>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let refuse = |status: StatusCode, message: &str, transient: bool| {
        (
            status,
            Json(json!({ "error": message, "transient": transient })),
        )
    };
    let Some(request) = from_json(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "malformed token request", false);
    };
    if !state.origins.contains(request.origin()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this service issues no tokens for that origin",
            false,
        );
    }
    match state.source.fetch(request).await {
        Ok(issued) => (
            StatusCode::OK,
            Json(json!({
                "restrictedDataToken": issued.token().expose(),
                "expiresIn": issued.expires_in().as_secs(),
            })),
        ),
        Err(e) => {
            let body = json!({
                "error": e.message(),
                "status": e.status().map(|s| s.as_u16()),
                "code": e.code(),
                "cure": e.cure(),
                "transient": e.is_transient(),
            });
            (StatusCode::BAD_GATEWAY, Json(body))
        }
    }
}

/// One restricted call a worker made, and what came back.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) path: String,
    /// The status, or the layer's error when no token could be had.
    pub(crate) result: Result<(StatusCode, Option<String>), String>,
}

/// What the run did.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) calls: Vec<Call>,
    /// The worker layer's counters.
    pub(crate) stats: Stats,
    /// Token requests the token service received.
    pub(crate) service_requests: u64,
}

/// The paths the worker reads; the last two are refused (no role for `getOrderRegulatedInfo`).
pub(crate) const PATHS: [&str; 8] = [
    "/orders/v0/orders/902-3159896-1390916/address",
    "/orders/v0/orders/113-6740393-2451453/address",
    "/orders/v0/orders/026-1520163-6049104/address",
    "/orders/v0/orders/902-3159896-1390916/orderItems",
    "/orders/v0/orders/113-6740393-2451453/orderItems",
    "/vendor/directFulfillment/shipping/2021-12-28/shippingLabels/PO-0001",
    "/orders/v0/orders/902-3159896-1390916/regulatedInfo",
    "/orders/v0/orders/113-6740393-2451453/regulatedInfo",
];

/// Starts the token service on `emulator`, and makes a worker's calls through it.
pub(crate) async fn run(emulator: &Emulator) -> Result<Outcome, BoxError> {
    // The token service: the only place that holds credentials.
    let refresh_token = emulator
        .refresh_token(SellerId::DEFAULT_NAME)
        .ok_or("the emulator has no default seller")?;
    let source = SpApiTokenSource::builder()
        .credentials(LwaCredentials::new(
            emulator.client_id(),
            emulator.client_secret(),
            refresh_token,
        ))
        .lwa_url(emulator.lwa_url())
        .build()?;
    let service = start_token_service(source, vec![emulator.origin()]).await?;
    // The application lacks one role, to show how a refusal travels.
    emulator.deny_resource(Method::GET, "/orders/v0/orders/{orderId}/regulatedInfo");

    // The worker: its own layer, with the hand-written source.
    let worker_source = TokenService {
        http: reqwest::Client::new(),
        url: service.url.clone(),
    };
    let layer = RestrictedDataTokenLayer::builder(worker_source)
        .allow_origin(emulator.origin())
        .build()?;
    let client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(Client::builder(TokioExecutor::new()).build_http::<String>());

    let mut calls = Vec::new();
    for path in PATHS {
        let request = Request::get(emulator.url(path)).body(String::new())?;
        let result = match client.clone().oneshot(request).await {
            Ok(response) => {
                let pii = response
                    .headers()
                    .get("x-emulator-pii")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let status = response.status();
                response.into_body().collect().await?;
                Ok((status, pii))
            }
            Err(e) => Err(e.to_string()),
        };
        calls.push(Call {
            path: path.to_owned(),
            result,
        });
    }
    Ok(Outcome {
        calls,
        stats: layer.stats(),
        service_requests: service.requests.load(Ordering::Relaxed),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = async {
        let emulator = Emulator::start().await?;
        run(&emulator).await
    }
    .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("custom_source: {e}");
            return ExitCode::FAILURE;
        }
    };
    for call in &outcome.calls {
        match &call.result {
            Ok((status, pii)) => println!(
                "{:<70} {} pii={}",
                call.path,
                status.as_u16(),
                pii.as_deref().unwrap_or("-")
            ),
            Err(e) => println!("{:<70} failed: {e}", call.path),
        }
    }
    println!();
    println!(
        "token service asked {} times; worker layer: {} fetches, {} cache hits, {} remembered errors",
        outcome.service_requests,
        outcome.stats.fetches,
        outcome.stats.hits,
        outcome.stats.remembered_errors
    );
    ExitCode::SUCCESS
}

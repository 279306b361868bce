//! Scripted LWA and Tokens API servers on 127.0.0.1, shared by the `SpApiTokenSource` tests.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub use std::collections::{HashMap, VecDeque};
pub use std::io::Write;
pub use std::sync::atomic::{AtomicUsize, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;

pub use axum::Router;
pub use axum::extract::{Form, State};
pub use axum::http::{HeaderMap, StatusCode};
pub use axum::response::{IntoResponse, Response};
pub use axum::routing::post;
pub use http::Method;
pub use serde_json::{Value, json};
pub use spapi_rdt::catalog::{DataElement, DataElements};
pub use spapi_rdt::{
    LwaCredentials, Origin, RestrictedResource, SellerId, SpApiTokenSource, TokenRequest,
    TokenSource, error::ErrorKind, error::SourceBuildError, error::SourceError,
};

pub const CLIENT_ID: &str = "amzn1.application-oa2-client.test";
pub const CLIENT_SECRET: &str = "cs-very-secret-77";
pub const REFRESH_TOKEN: &str = "Atzr|refresh-secret-42";

/// Strings that must never show in Debug, Display or logs.
pub const SECRETS: [&str; 4] = [
    "very-secret",
    "refresh-secret",
    "Atza|lwa-",
    "Atz.sprdt|rdt-",
];

pub fn credentials() -> LwaCredentials {
    LwaCredentials::new(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN)
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply::raw(status, &body.to_string())
    }
    pub fn raw(status: u16, body: &str) -> Self {
        Reply {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub fn errors(status: u16, code: &str, message: &str) -> Self {
        Reply::json(
            status,
            json!({"errors": [{"code": code, "message": message, "details": ""}]}),
        )
    }
}

/// A Tokens API call as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub headers: HeaderMap,
    pub body: Value,
}

/// The scripted servers' state.
#[derive(Default)]
pub struct Mock {
    pub lwa_script: Mutex<VecDeque<Reply>>,
    pub token_script: Mutex<VecDeque<Reply>>,
    pub lwa_delay: Mutex<Duration>,
    pub lwa_calls: AtomicUsize,
    pub token_calls: AtomicUsize,
    pub lwa_forms: Mutex<Vec<(HeaderMap, HashMap<String, String>)>>,
    pub token_requests: Mutex<Vec<Seen>>,
}

pub async fn answer(reply: Reply) -> Response {
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

pub async fn lwa(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = mock.lwa_calls.fetch_add(1, Ordering::SeqCst) + 1;
    mock.lwa_forms.lock().unwrap().push((headers, form));
    let scripted = mock.lwa_script.lock().unwrap().pop_front();
    let delay = *mock.lwa_delay.lock().unwrap();
    let reply = scripted.unwrap_or_else(|| {
        Reply::json(
            200,
            json!({"access_token": format!("Atza|lwa-{n}"), "token_type": "bearer", "expires_in": 3600}),
        )
        .delayed(delay)
    });
    answer(reply).await
}

pub async fn tokens(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    let n = mock.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    mock.token_requests
        .lock()
        .unwrap()
        .push(Seen { headers, body });
    let scripted = mock.token_script.lock().unwrap().pop_front();
    let reply = scripted.unwrap_or_else(|| {
        Reply::json(
            200,
            json!({"restrictedDataToken": format!("Atz.sprdt|rdt-{n}"), "expiresIn": 3600}),
        )
    });
    answer(reply).await
}

/// Both servers on one loopback port.
pub struct Server {
    pub mock: Arc<Mock>,
    pub port: u16,
}

impl Server {
    pub async fn start() -> Self {
        let mock = Arc::new(Mock::default());
        let app = Router::new()
            .route("/auth/o2/token", post(lwa))
            .route("/tokens/2021-03-01/restrictedDataToken", post(tokens))
            .with_state(Arc::clone(&mock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { mock, port }
    }

    pub fn lwa_url(&self) -> String {
        format!("http://127.0.0.1:{}/auth/o2/token", self.port)
    }

    pub fn origin(&self) -> Origin {
        Origin::parse(&format!("http://127.0.0.1:{}", self.port)).unwrap()
    }

    pub fn source(&self) -> SpApiTokenSource {
        SpApiTokenSource::builder()
            .credentials(credentials())
            .lwa_url(self.lwa_url())
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    pub fn request(&self) -> TokenRequest {
        self.request_for(SellerId::default())
    }

    pub fn request_for(&self, seller: SellerId) -> TokenRequest {
        TokenRequest::new(
            seller,
            self.origin(),
            [RestrictedResource::new(
                Method::GET,
                "/orders/v0/orders/{orderId}/address",
                DataElements::NONE,
            )],
        )
    }

    pub fn script_lwa(&self, reply: Reply) {
        self.mock.lwa_script.lock().unwrap().push_back(reply);
    }

    pub fn script_tokens(&self, reply: Reply) {
        self.mock.token_script.lock().unwrap().push_back(reply);
    }

    pub fn lwa_calls(&self) -> usize {
        self.mock.lwa_calls.load(Ordering::SeqCst)
    }

    pub fn token_calls(&self) -> usize {
        self.mock.token_calls.load(Ordering::SeqCst)
    }

    pub fn token_requests(&self) -> Vec<Seen> {
        self.mock.token_requests.lock().unwrap().clone()
    }

    pub fn access_tokens_sent(&self) -> Vec<String> {
        self.token_requests()
            .iter()
            .map(|s| s.headers["x-amz-access-token"].to_str().unwrap().to_owned())
            .collect()
    }
}

pub fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "`{secret}` leaked in: {text}");
    }
}

#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use super::dead_port::{DeadPort, dead_port};

//! Test doubles shared by the integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spapi_rdt::{
    IssuedToken, SecretToken, TokenRequest, TokenSource, error::SourceError, source_fn,
};

/// A programmable token source that counts its calls and records the requests it saw.
#[derive(Clone)]
pub struct ScriptedSource {
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    pub delay: Duration,
    pub lifetime: Duration,
    /// Calls whose (1-based) number is in this list fail with a transient error; others succeed.
    pub fail: Arc<std::sync::Mutex<Vec<(usize, SourceErrorSpec)>>>,
}

#[derive(Clone, Copy, Debug)]
pub enum SourceErrorSpec {
    Transient,
    Permanent,
}

impl ScriptedSource {
    pub fn new() -> Self {
        ScriptedSource {
            calls: Arc::default(),
            seen: Arc::default(),
            delay: Duration::from_millis(5),
            lifetime: Duration::from_secs(3600),
            fail: Arc::default(),
        }
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    pub fn fail_calls(self, calls: impl IntoIterator<Item = usize>, spec: SourceErrorSpec) -> Self {
        self.fail
            .lock()
            .unwrap()
            .extend(calls.into_iter().map(|c| (c, spec)));
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn source(&self) -> impl TokenSource + Clone {
        let me = self.clone();
        source_fn(move |request: TokenRequest| {
            let me = me.clone();
            async move {
                let n = me.calls.fetch_add(1, Ordering::SeqCst) + 1;
                me.seen.lock().unwrap().push(request.clone());
                tokio::time::sleep(me.delay).await;
                let failure = me
                    .fail
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(c, _)| *c == n)
                    .map(|(_, s)| *s);
                match failure {
                    Some(SourceErrorSpec::Transient) => {
                        Err(SourceError::transient(format!("call {n} failed")))
                    }
                    Some(SourceErrorSpec::Permanent) => {
                        Err(SourceError::permanent(format!("call {n} refused")))
                    }
                    None => {
                        let token =
                            SecretToken::new(token_value(n)).map_err(SourceError::permanent)?;
                        Ok(IssuedToken::new(token, me.lifetime))
                    }
                }
            }
        })
    }
}

/// The token value the scripted source returns on call `n`.
pub fn token_value(n: usize) -> String {
    format!("Atz.sprdt|secret-token-{n:04}")
}

/// An inner service that answers with the `x-amz-access-token` it received (or "none").
pub fn echo_token() -> impl tower::Service<
    http::Request<()>,
    Response = String,
    Error = Infallible,
    Future = std::future::Ready<Result<String, Infallible>>,
> + Clone {
    tower::service_fn(|request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_else(|| "none".to_owned());
        std::future::ready(Ok(token))
    })
}

pub const NA: &str = "https://sellingpartnerapi-na.amazon.com";

pub fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("{NA}{path}")).body(()).unwrap()
}

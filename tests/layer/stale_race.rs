//! A 403 that arrives late never drops a newer token.
//!
//! The race, written out step by step: request A is sent with token 1 and its answer is held back;
//! meanwhile token 1 is invalidated and request B fetches and uses token 2; then A's 403, an answer
//! to token 1, comes in. Recovery must drop only the token that A used: token 2 stays cached, A's replay and
//! every later request use it, and the source is called twice in all. Both front ends that recover
//! from a 403 are covered: the tower recovery layer and the reqwest-middleware front end.

use crate::support::common;

use std::sync::Arc;

use common::{ScriptedSource, get, token_value};
use http::StatusCode;
use spapi_rdt::Origin;
use spapi_rdt::RestrictedDataTokenLayer;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower::{Service, ServiceBuilder, ServiceExt};

const PATH: &str = "/orders/v0/orders/1/address";

/// Where the upstream holds the first answer made with token 1: it says when the request is in,
/// and answers 403 only once the test lets it go. Any other token gets 200 with the token as body.
#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    /// The status and body for a request that carried `token`.
    async fn answer(&self, token: Option<&str>) -> (StatusCode, String) {
        let token = token.unwrap_or("none").to_owned();
        if token == token_value(1) {
            self.entered.notify_one();
            self.release.acquire().await.unwrap().forget();
            return (StatusCode::FORBIDDEN, token);
        }
        (StatusCode::OK, token)
    }
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_the_token_but_never_a_newer_one_in_the_recovery_layer() {
    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let gate = Gate::new();
    let upstream = {
        let gate = gate.clone();
        tower::service_fn(move |request: http::Request<()>| {
            let gate = gate.clone();
            async move {
                let token = request
                    .headers()
                    .get("x-amz-access-token")
                    .map(|v| v.to_str().unwrap().to_owned());
                let (status, body) = gate.answer(token.as_deref()).await;
                let mut response = http::Response::new(body);
                *response.status_mut() = status;
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let client = ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(upstream);

    // A goes out with token 1 and waits for its answer.
    let a = tokio::spawn(client.clone().oneshot(get(PATH)));
    gate.entered.notified().await;
    assert_eq!(source.calls(), 1);
    // Token 1 is dropped (as another 403 or the application would), and B publishes token 2.
    assert!(rdt.invalidate(&get(PATH)));
    let b = client.clone().oneshot(get(PATH)).await.unwrap();
    assert_eq!(
        (b.status(), b.body().as_str()),
        (StatusCode::OK, token_value(2).as_str())
    );
    assert_eq!(source.calls(), 2);
    // Now A's 403 for token 1 arrives: token 2 survives and A's replay uses it.
    gate.release.add_permits(1);
    let a = a.await.unwrap().unwrap();
    assert_eq!(
        (a.status(), a.body().as_str()),
        (StatusCode::OK, token_value(2).as_str())
    );
    assert_eq!(source.calls(), 2, "the late 403 dropped the newer token");
    assert_eq!(rdt.stats().invalidations, 1);
    // And so does the next request.
    let mut client = client;
    let c = client.ready().await.unwrap().call(get(PATH)).await.unwrap();
    assert_eq!(c.body().as_str(), token_value(2));
    assert_eq!(source.calls(), 2);
}

#[tokio::test]
async fn invalidate_drops_the_token_but_never_a_newer_one_in_the_middleware() {
    let gate = Gate::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = {
        let gate = gate.clone();
        axum::Router::new().fallback(move |headers: http::HeaderMap| {
            let gate = gate.clone();
            async move {
                let token = headers
                    .get("x-amz-access-token")
                    .map(|v| v.to_str().unwrap().to_owned());
                gate.answer(token.as_deref()).await
            }
        })
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::builder(source.source())
        .origins([Origin::parse(&origin).unwrap()])
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(rdt.middleware())
        .build();
    let url = format!("{origin}{PATH}");
    let send = |client: reqwest_middleware::ClientWithMiddleware| {
        let url = url.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    // A goes out with token 1 and waits for its answer.
    let a = tokio::spawn(send(client.clone()));
    gate.entered.notified().await;
    assert_eq!(source.calls(), 1);
    // Token 1 is dropped, and B publishes token 2.
    let same = http::Request::get(&url).body(()).unwrap();
    assert!(rdt.invalidate(&same));
    assert_eq!(send(client.clone()).await, (200, token_value(2)));
    assert_eq!(source.calls(), 2);
    // A's 403 for token 1 arrives: token 2 survives and A's replay uses it.
    gate.release.add_permits(1);
    assert_eq!(a.await.unwrap(), (200, token_value(2)));
    assert_eq!(source.calls(), 2, "the late 403 dropped the newer token");
    assert_eq!(rdt.stats().invalidations, 1);
    assert_eq!(send(client).await, (200, token_value(2)));
    assert_eq!(source.calls(), 2);
    server.abort();
}

//! Stale-token recovery under 403s that have nothing to do with staleness (another seller's order
//! id, a missing role): they must not burn the seller's token quota, in either front end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ScriptedSource, get, token_value};
use spapi_rdt::{Origin, RestrictedDataTokenLayer};
use tower::{Service, ServiceExt};

/// An inner service that answers 403 to every request while `refuse` is set, 200 otherwise.
fn api(
    refuse: Arc<AtomicBool>,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<String>, Infallible>>,
> + Clone {
    tower::service_fn(move |request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let mut response = http::Response::new(token);
        if refuse.load(Ordering::SeqCst) {
            *response.status_mut() = http::StatusCode::FORBIDDEN;
        }
        std::future::ready(Ok(response))
    })
}

#[tokio::test(start_paused = true)]
async fn a_hundred_403s_on_one_key_cost_one_token_call() {
    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let refuse = Arc::new(AtomicBool::new(true));
    let mut client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(api(Arc::clone(&refuse)));
    for i in 0..100 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(get(&format!("/orders/v0/orders/{i}/address")))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    }
    // The first token, and the one fetched after the first 403 dropped it.
    assert_eq!(source.calls(), 2);
    assert_eq!(rdt.stats().invalidations, 1);

    // A period later, one 403 may drop the token again.
    tokio::time::advance(Duration::from_secs(61)).await;
    for i in 0..10 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(get(&format!("/orders/v0/orders/{i}/address")))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    }
    assert_eq!(source.calls(), 3);
    assert_eq!(rdt.stats().invalidations, 2);
}

#[tokio::test(start_paused = true)]
async fn a_replay_that_works_shows_the_token_was_stale() {
    // Two revocations in a row, each cured by the replay with a new token: both are recovered.
    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let refused = Arc::new(std::sync::Mutex::new(vec![token_value(1), token_value(2)]));
    let seen = Arc::clone(&refused);
    let inner = tower::service_fn(move |request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let mut response = http::Response::new(token.clone());
        if seen.lock().unwrap().contains(&token) {
            *response.status_mut() = http::StatusCode::FORBIDDEN;
        }
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(inner);
    let response = client
        .clone()
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        http::StatusCode::FORBIDDEN,
        "token 1 refused, token 2 too"
    );
    // Token 2 was refused on the replay: the key is under suspicion; a 403 does not drop it.
    assert_eq!(source.calls(), 2);
    refused.lock().unwrap().clear();
    refused.lock().unwrap().push(token_value(2));
    let response = client
        .clone()
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(source.calls(), 2);
    // After the period, the 403 drops token 2; the replay with token 3 works, which clears the
    // suspicion: the next revocation is recovered at once.
    tokio::time::advance(Duration::from_secs(61)).await;
    let response = client
        .clone()
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.body(), &token_value(3));
    refused.lock().unwrap().push(token_value(3));
    let response = client
        .clone()
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.body(), &token_value(4));
    assert_eq!(source.calls(), 4);
}

#[tokio::test]
async fn a_hundred_403s_through_the_middleware_cost_one_token_call() {
    let app = axum::Router::new().fallback(|| async { (http::StatusCode::FORBIDDEN, "no") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = ScriptedSource::new().delay(Duration::ZERO);
    let rdt = RestrictedDataTokenLayer::builder(source.source())
        .allow_origin(Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap())
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(rdt.middleware())
        .build();
    for i in 0..100 {
        let response = client
            .get(format!(
                "http://127.0.0.1:{port}/orders/v0/orders/{i}/address"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    }
    assert_eq!(source.calls(), 2);
    assert_eq!(rdt.stats().invalidations, 1);
}

//! The 403 policy in both front ends: 403s that have nothing to do with staleness (another
//! seller's order id, a missing role) must not burn the seller's token quota, and report documents
//! refused without a token are replayed with one under `ReportPolicy::WhenRefused`.

use crate::support::common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ScriptedSource, get, token_value};
use spapi_rdt::control::{ReplayedAsRestrictedReport, ReportPolicy, RestrictedReport};
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

/// An inner service standing for Amazon's document endpoint: a document of a restricted report
/// type answers 403 unless a token came along.
fn documents() -> impl Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<String>, Infallible>>,
> + Clone {
    tower::service_fn(|request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = http::Response::new(token.clone().unwrap_or_default());
        if token.is_none() {
            *response.status_mut() = http::StatusCode::FORBIDDEN;
        }
        std::future::ready(Ok(response))
    })
}

const DOCUMENT: &str = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.90210";

#[tokio::test(start_paused = true)]
async fn a_refused_document_is_replayed_once_with_a_token_for_its_path() {
    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::builder(source.source())
        .report_policy(ReportPolicy::WhenRefused)
        .build()
        .unwrap();
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(documents());
    let response = client.clone().oneshot(get(DOCUMENT)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.body(), &token_value(1));
    assert!(
        response
            .extensions()
            .get::<ReplayedAsRestrictedReport>()
            .is_some()
    );
    assert_eq!(source.calls(), 1);
    assert_eq!(rdt.stats().invalidations, 0, "no token of ours was refused");

    // Marked next time, it goes with the cached token at once: no replay, no new token call.
    let mut marked = get(DOCUMENT);
    marked.extensions_mut().insert(RestrictedReport);
    let response = client.clone().oneshot(marked).await.unwrap();
    assert_eq!(response.body(), &token_value(1));
    assert!(
        response
            .extensions()
            .get::<ReplayedAsRestrictedReport>()
            .is_none()
    );
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn under_the_default_policy_a_refused_document_is_returned_as_it_is() {
    let source = ScriptedSource::new();
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(documents());
    let response = client.oneshot(get(DOCUMENT)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert!(
        response
            .extensions()
            .get::<ReplayedAsRestrictedReport>()
            .is_none()
    );
    assert_eq!(source.calls(), 0);
}

#[tokio::test]
async fn a_refused_document_is_replayed_by_the_middleware_too() {
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        match headers.get("x-amz-access-token") {
            Some(token) => (
                http::StatusCode::OK,
                token.to_str().unwrap_or_default().to_owned(),
            ),
            None => (http::StatusCode::FORBIDDEN, String::new()),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = ScriptedSource::new().delay(Duration::ZERO);
    let rdt = RestrictedDataTokenLayer::builder(source.source())
        .allow_origin(Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap())
        .report_policy(ReportPolicy::WhenRefused)
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(rdt.middleware())
        .build();
    let response = client
        .get(format!("http://127.0.0.1:{port}{DOCUMENT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert!(
        response
            .extensions()
            .get::<ReplayedAsRestrictedReport>()
            .is_some()
    );
    assert_eq!(response.text().await.unwrap(), token_value(1));
    assert_eq!(source.calls(), 1);
    // Unrestricted calls pass untouched.
    let response = client
        .get(format!(
            "http://127.0.0.1:{port}/sellers/v1/marketplaceParticipations"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(source.calls(), 1);
}

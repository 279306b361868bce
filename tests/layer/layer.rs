//! The tower front end over a scripted source, on paused tokio time.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{NA, ScriptedSource, SourceErrorSpec, echo_token, get, token_value};
use futures::future::join_all;
use spapi_rdt::catalog::{DataElement, DataElements};
use spapi_rdt::control::{ReportPolicy, RestrictedReport, TokenMode};
use spapi_rdt::{BoxError, RestrictedDataTokenLayer, SellerId, error::Error};
use tower::{Layer, Service, ServiceExt};

fn layer(source: &ScriptedSource) -> RestrictedDataTokenLayer {
    RestrictedDataTokenLayer::new(source.source())
}

async fn call(
    layer: &RestrictedDataTokenLayer,
    request: http::Request<()>,
) -> Result<String, BoxError> {
    layer.layer(echo_token()).oneshot(request).await
}

#[tokio::test(start_paused = true)]
async fn unrestricted_requests_pass_through_untouched() {
    let source = ScriptedSource::new();
    let layer = layer(&source);
    for path in [
        "/catalog/2022-04-01/items/B01",
        "/orders/2026-01-01/orders/1",
        "/orders/v0/orders/1/shipmentConfirmation",
        "/tokens/2021-03-01/restrictedDataToken",
    ] {
        assert_eq!(call(&layer, get(path)).await.unwrap(), "none", "{path}");
    }
    // A restricted path on a host that is not an SP-API origin gets no token either.
    let foreign = http::Request::get("https://example.com/orders/v0/orders/1/address")
        .body(())
        .unwrap();
    assert_eq!(call(&layer, foreign).await.unwrap(), "none");
    let plain_http =
        http::Request::get("http://sellingpartnerapi-na.amazon.com/orders/v0/orders/1/address")
            .body(())
            .unwrap();
    assert_eq!(call(&layer, plain_http).await.unwrap(), "none");
    assert_eq!(source.calls(), 0);
    let stats = layer.stats();
    assert_eq!((stats.hits, stats.misses, stats.fetches), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn one_generic_token_serves_every_order_id() {
    let source = ScriptedSource::new();
    let layer = layer(&source);
    for id in ["111-1", "222-2", "333-3"] {
        let got = call(&layer, get(&format!("/orders/v0/orders/{id}/address")))
            .await
            .unwrap();
        assert_eq!(got, token_value(1));
    }
    assert_eq!(source.calls(), 1);
    let seen = source.seen.lock().unwrap();
    assert_eq!(
        seen[0].resources()[0].path(),
        "/orders/v0/orders/{orderId}/address"
    );
    assert_eq!(seen[0].origin().as_str(), NA);
    let stats = layer.stats();
    assert_eq!((stats.misses, stats.hits, stats.fetches), (1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn single_flight_under_a_thousand_concurrent_callers() {
    let source = ScriptedSource::new().delay(Duration::from_millis(50));
    let layer = layer(&source);
    let calls = (0..1000).map(|i| call(&layer, get(&format!("/orders/v0/orders/{i}/buyerInfo"))));
    let results = join_all(calls).await;
    assert!(
        results
            .iter()
            .all(|r| r.as_deref().ok() == Some(token_value(1).as_str()))
    );
    assert_eq!(source.calls(), 1);
    let stats = layer.stats();
    assert_eq!(stats.misses, 1000);
    assert_eq!(stats.coalesced, 999);
}

/// The same on four worker threads, each caller a spawned task released by one barrier: the
/// callers really run at the same time, so a check-then-start race in the cache would show as a
/// second source call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_under_a_thousand_callers_on_four_threads() {
    const CALLERS: usize = 1000;
    let source = ScriptedSource::new().delay(Duration::from_millis(50));
    let layer = layer(&source);
    let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (layer, start) = (layer.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                call(&layer, get(&format!("/orders/v0/orders/{i}/buyerInfo"))).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), token_value(1));
    }
    assert_eq!(source.calls(), 1);
    let stats = layer.stats();
    assert_eq!(stats.fetches, 1);
    // Whoever came after the token was cached is a hit; everyone else waited for the one fetch
    // (a caller that missed on the lock-free read and found the token under the lock counts as
    // both, hence no equality).
    assert!(stats.misses + stats.hits >= CALLERS as u64, "{stats:?}");
    assert!(stats.coalesced < stats.misses, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_waiter_from_one_call() {
    let source = ScriptedSource::new()
        .delay(Duration::from_millis(50))
        .fail_calls([1], SourceErrorSpec::Permanent);
    let layer = layer(&source);
    let results =
        join_all((0..100).map(|i| call(&layer, get(&format!("/mfn/v0/shipments/{i}"))))).await;
    for r in &results {
        let err = r
            .as_ref()
            .unwrap_err()
            .downcast_ref::<Error>()
            .expect("the layer's error");
        assert_eq!(err.source_error().unwrap().message(), "call 1 refused");
    }
    assert_eq!(source.calls(), 1);
    // The failure is remembered: an immediate retry does not call the source.
    assert!(call(&layer, get("/mfn/v0/shipments/x")).await.is_err());
    assert_eq!(source.calls(), 1);
    assert_eq!(layer.stats().remembered_errors, 1);
    // After the permanent-error TTL (60 s by default), the source is asked again.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        call(&layer, get("/mfn/v0/shipments/x")).await.unwrap(),
        token_value(2)
    );
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_a_bounded_number_of_times() {
    let source = ScriptedSource::new().fail_calls([1, 2], SourceErrorSpec::Transient);
    let layer = layer(&source);
    assert_eq!(
        call(&layer, get("/mfn/v0/shipments/1")).await.unwrap(),
        token_value(3)
    );
    assert_eq!(source.calls(), 3);

    let always = ScriptedSource::new().fail_calls(1..=100, SourceErrorSpec::Transient);
    let layer = RestrictedDataTokenLayer::builder(always.source())
        .max_attempts(4)
        .build()
        .unwrap();
    let err = call(&layer, get("/mfn/v0/shipments/1")).await.unwrap_err();
    let err = err.downcast_ref::<Error>().unwrap();
    assert_eq!(err.source_error().unwrap().attempts(), 4);
    assert_eq!(always.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_does_not_cancel_the_shared_fetch() {
    let source = ScriptedSource::new().delay(Duration::from_millis(100));
    let layer = layer(&source);
    let leader = tokio::spawn({
        let layer = layer.clone();
        async move { call(&layer, get("/orders/v0/orders/1/address")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let followers: Vec<_> = (0..10)
        .map(|i| {
            let layer = layer.clone();
            tokio::spawn(async move {
                call(&layer, get(&format!("/orders/v0/orders/{i}/address"))).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    // Half the followers give up too.
    for f in &followers[..5] {
        f.abort();
    }
    for f in followers.into_iter().skip(5) {
        assert_eq!(f.await.unwrap().unwrap(), token_value(1));
    }
    assert_eq!(source.calls(), 1);
    assert_eq!(layer.stats().fetches, 1);
}

#[tokio::test(start_paused = true)]
async fn soft_window_serves_the_old_token_and_refreshes_once_in_the_background() {
    let source = ScriptedSource::new().delay(Duration::from_millis(100));
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(
        call(&layer, get("/orders/v0/orders/1/address"))
            .await
            .unwrap(),
        token_value(1)
    );
    // 3600 s life, 30 s expiry margin, 300 s ahead: soft at 3270 s, hard at 3570 s.
    tokio::time::advance(Duration::from_secs(3300)).await;
    let served =
        join_all((0..20).map(|i| call(&layer, get(&format!("/orders/v0/orders/{i}/address")))))
            .await;
    // Nobody waited: all were served the old token while one refresh ran.
    assert!(
        served
            .iter()
            .all(|r| r.as_deref().ok() == Some(token_value(1).as_str()))
    );
    assert_eq!(layer.stats().refreshes, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        call(&layer, get("/orders/v0/orders/1/address"))
            .await
            .unwrap(),
        token_value(2)
    );
    assert_eq!(source.calls(), 2);
    assert_eq!(layer.stats().misses, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_never_evicts_a_valid_token() {
    let source = ScriptedSource::new().fail_calls(2..=100, SourceErrorSpec::Permanent);
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .refresh_jitter(Duration::ZERO)
        .permanent_error_ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(
        call(&layer, get("/mfn/v0/shipments/1")).await.unwrap(),
        token_value(1)
    );
    tokio::time::advance(Duration::from_secs(3280)).await;
    for _ in 0..30 {
        // Every 10 s in the window a refresh is tried, fails, and the valid token is still served.
        assert_eq!(
            call(&layer, get("/mfn/v0/shipments/1")).await.unwrap(),
            token_value(1)
        );
        tokio::time::sleep(Duration::from_secs(9)).await;
    }
    // Requests at 3280 s, 3289 s, ... 3541 s, all inside the window (soft 3270 s, hard 3570 s). A
    // refused refresh is remembered 10 s from when it failed (5 ms after it started), so the
    // request 9 s later is answered from the cache alone and the one 18 s later refreshes again:
    // requests 1, 3, 5, ... 29 refresh, 15 of the 30.
    let calls_in_window = source.calls() - 1;
    assert_eq!(calls_in_window, 15, "{calls_in_window} refreshes");
    // Past the hard deadline the token is not used any more: the error shows.
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(call(&layer, get("/mfn/v0/shipments/1")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn hard_window_waits_with_a_bounded_timeout() {
    let source = ScriptedSource::new().delay(Duration::from_secs(30));
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .wait_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = call(&layer, get("/mfn/v0/shipments/1")).await.unwrap_err();
    let err = err.downcast_ref::<Error>().unwrap();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(layer.stats().timeouts, 1);
    // The fetch went on and its token serves the next caller.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(
        call(&layer, get("/mfn/v0/shipments/2")).await.unwrap(),
        token_value(1)
    );
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn token_calls_wait_for_the_sellers_rate_limit() {
    let source = ScriptedSource::new().delay(Duration::ZERO);
    let layer = layer(&source);
    let start = tokio::time::Instant::now();
    // 13 distinct restricted operations: 13 keys, 13 token calls for one seller.
    let paths: Vec<String> = layer
        .matcher()
        .catalog()
        .operations()
        .iter()
        .filter(|op| {
            op.method() == http::Method::GET
                && op.path_kind() == spapi_rdt::catalog::PathKind::Generic
        })
        .take(13)
        .map(|op| op.template().replace(['{', '}'], ""))
        .collect();
    assert_eq!(paths.len(), 13);
    let results = join_all(paths.iter().map(|p| call(&layer, get(p)))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(source.calls(), 13);
    // Burst of 10, then one a second plus the default 100 ms margin: the 13th call goes out
    // 3 x 1.1 s after the first, give or take the millisecond tokio's timer rounds each wait to.
    let elapsed = start.elapsed();
    let expected = Duration::from_millis(3_300);
    assert!(
        elapsed >= expected && elapsed <= expected + Duration::from_millis(3),
        "{elapsed:?}"
    );
    assert_eq!(layer.stats().rate_limit_waits, 3);
    // Another seller has its own bucket.
    let mut other = get(&paths[0]);
    other.extensions_mut().insert(SellerId::new("other"));
    let t = tokio::time::Instant::now();
    call(&layer, other).await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}

/// `invalidate` drops whatever token is current; that a late 403 never drops a newer token than the
/// one it was answered for is tests/stale_race.rs.
#[tokio::test(start_paused = true)]
async fn invalidate_drops_the_current_token() {
    let source = ScriptedSource::new();
    let layer = layer(&source);
    let request = || get("/orders/v0/orders/1/address");
    assert_eq!(call(&layer, request()).await.unwrap(), token_value(1));
    assert!(layer.invalidate(&request()));
    assert_eq!(call(&layer, request()).await.unwrap(), token_value(2));
    assert_eq!(layer.stats().invalidations, 1);
    // Nothing cached for an unrestricted request.
    assert!(!layer.invalidate(&get("/catalog/2022-04-01/items/x")));
}

#[tokio::test(start_paused = true)]
async fn sellers_data_elements_and_modes_come_from_extensions() {
    let source = ScriptedSource::new();
    let layer = layer(&source);
    // Default data elements: buyerInfo + shippingAddress, within what getOrder accepts.
    call(&layer, get("/orders/v0/orders/1")).await.unwrap();
    // Narrowed per request.
    let mut narrowed = get("/orders/v0/orders/1");
    narrowed
        .extensions_mut()
        .insert(DataElements::only(DataElement::ShippingAddress));
    call(&layer, narrowed).await.unwrap();
    // Another seller.
    let mut other = get("/orders/v0/orders/1");
    other
        .extensions_mut()
        .insert(SellerId::new("A2EUQ1WTGCTBG2"));
    call(&layer, other).await.unwrap();
    // Skip.
    let mut skipped = get("/orders/v0/orders/1");
    skipped.extensions_mut().insert(TokenMode::Skip);
    assert_eq!(call(&layer, skipped).await.unwrap(), "none");
    // Force on a path the catalogue does not know: the specific path.
    let mut forced = get("/some/new/restricted/op");
    forced.extensions_mut().insert(TokenMode::Force);
    assert_ne!(call(&layer, forced).await.unwrap(), "none");
    let seen = source.seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    let elements: Vec<Vec<&str>> = seen
        .iter()
        .map(|r| {
            r.resources()[0]
                .data_elements()
                .iter()
                .map(DataElement::as_str)
                .collect()
        })
        .collect();
    assert_eq!(elements[0], ["buyerInfo", "shippingAddress"]);
    assert_eq!(elements[1], ["shippingAddress"]);
    assert_eq!(seen[2].seller().as_str(), "A2EUQ1WTGCTBG2");
    assert_eq!(seen[3].resources()[0].path(), "/some/new/restricted/op");
}

#[tokio::test(start_paused = true)]
async fn report_documents_need_a_marker_and_use_the_specific_path() {
    let source = ScriptedSource::new();
    let layer = layer(&source);
    let doc = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.abc";
    assert_eq!(call(&layer, get(doc)).await.unwrap(), "none");
    let mut marked = get(doc);
    marked.extensions_mut().insert(RestrictedReport);
    assert_ne!(call(&layer, marked).await.unwrap(), "none");
    assert_eq!(source.seen.lock().unwrap()[0].resources()[0].path(), doc);

    let always = RestrictedDataTokenLayer::builder(source.source())
        .report_policy(ReportPolicy::Always)
        .build()
        .unwrap();
    assert_ne!(call(&always, get(doc)).await.unwrap(), "none");
}

/// An inner service that panics when called without being polled ready first.
#[derive(Clone, Default)]
struct StrictReadiness {
    ready: bool,
    calls: Arc<AtomicUsize>,
}

impl Service<http::Request<()>> for StrictReadiness {
    type Response = bool;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<bool, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        assert!(self.ready, "called without poll_ready");
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(request.headers().contains_key("x-amz-access-token")))
    }
}

#[tokio::test(start_paused = true)]
async fn the_service_keeps_the_tower_readiness_contract() {
    let source = ScriptedSource::new().delay(Duration::from_millis(20));
    let layer = layer(&source);
    let inner = StrictReadiness::default();
    let calls = Arc::clone(&inner.calls);
    let mut service = layer.layer(inner);
    // One service value, called repeatedly as tower requires: ready, call, ready, call...
    let mut futures = Vec::new();
    for i in 0..5 {
        service.ready().await.unwrap();
        futures.push(service.call(get(&format!("/orders/v0/orders/{i}/address"))));
        service.ready().await.unwrap();
        futures.push(service.call(get("/catalog/2022-04-01/items/x")));
    }
    let results = join_all(futures).await;
    let with_token = results.iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(with_token, 5);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn works_over_a_concurrency_limited_inner_service() {
    let source = ScriptedSource::new().delay(Duration::from_millis(20));
    let layer = layer(&source);
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .concurrency_limit(2)
        .service(echo_token());
    let results = join_all((0..50).map(|i| {
        service
            .clone()
            .oneshot(get(&format!("/orders/v0/orders/{i}/address")))
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_deref().ok() == Some(token_value(1).as_str()))
    );
    // And with the limit outside the layer.
    let outer = tower::ServiceBuilder::new()
        .concurrency_limit(2)
        .layer(layer)
        .service(echo_token());
    let results = join_all((0..50).map(|i| {
        outer
            .clone()
            .oneshot(get(&format!("/mfn/v0/shipments/{i}")))
    }))
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(source.calls(), 2);
}

/// The layer inside an axum `Router` (as a client-side stack that routes on the path): a request
/// with an absolute SP-API URI gets its token, and the layer's error reaches `HandleErrorLayer`.
#[tokio::test(start_paused = true)]
async fn axum_accepts_the_layer_with_handle_error() {
    use axum::{Router, error_handling::HandleErrorLayer, routing::get as route_get};
    // The second token call (another operation, so another cache slot) is refused.
    let source = ScriptedSource::new().fail_calls([2], SourceErrorSpec::Permanent);
    let layer = layer(&source);
    let echo = |headers: http::HeaderMap| async move {
        headers
            .get("x-amz-access-token")
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned())
    };
    let app: Router = Router::new().route("/{*path}", route_get(echo)).layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: BoxError| async move {
                (http::StatusCode::BAD_GATEWAY, format!("handled: {e}"))
            }))
            .layer(layer),
    );
    let send = |path: &str| {
        let request = http::Request::get(format!("{NA}{path}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    assert_eq!(
        send("/orders/v0/orders/1/address").await,
        (http::StatusCode::OK, token_value(1))
    );
    let (status, body) = send("/orders/v0/orders/1/buyerInfo").await;
    assert_eq!(status, http::StatusCode::BAD_GATEWAY);
    assert!(
        body.starts_with("handled: ") && body.contains("call 2 refused"),
        "{body}"
    );
    // An unrestricted path goes through untouched.
    assert_eq!(
        send("/catalog/2022-04-01/items/B01").await,
        (http::StatusCode::OK, "none".to_owned())
    );
    assert_eq!(source.calls(), 2);
}

#[tokio::test]
async fn without_a_runtime_clock_the_error_is_typed() {
    // A token is needed but the future runs on an executor without Tokio: a typed error, no panic.
    let source = ScriptedSource::new();
    let layer = layer(&source);
    let result = std::thread::spawn(move || {
        futures::executor::block_on(
            layer
                .layer(echo_token())
                .oneshot(get("/mfn/v0/shipments/1")),
        )
    })
    .join()
    .unwrap();
    let err = result.unwrap_err();
    assert!(
        err.downcast_ref::<Error>()
            .unwrap()
            .to_string()
            .contains("Tokio runtime")
    );
}

/// An inner service that answers 403 to the token values in `refuse`, 200 otherwise.
fn refusing(
    refuse: &'static [usize],
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>,
> + Clone {
    tower::service_fn(move |request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let refused = refuse.iter().any(|n| token == token_value(*n));
        let mut response = http::Response::new(token);
        if refused {
            *response.status_mut() = http::StatusCode::FORBIDDEN;
        }
        std::future::ready(Ok(response))
    })
}

#[tokio::test(start_paused = true)]
async fn a_403_invalidates_that_token_and_replays_once() {
    let source = ScriptedSource::new();
    let rdt = layer(&source);
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(refusing(&[1]));
    let response = client
        .clone()
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.body(), &token_value(2));
    assert_eq!(source.calls(), 2);
    assert_eq!(rdt.stats().invalidations, 1);
    // Unrestricted requests are not touched by recovery.
    let response = client
        .oneshot(get("/catalog/2022-04-01/items/x"))
        .await
        .unwrap();
    assert_eq!(response.body(), "none");

    // A token that keeps being refused is retried once, not in a loop.
    let source = ScriptedSource::new();
    let rdt = layer(&source);
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(refusing(&[1, 2, 3]));
    let response = client.oneshot(get("/mfn/v0/shipments/1")).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(source.calls(), 2);
}

/// A body that cannot be replayed.
struct OneShotBody;

impl spapi_rdt::recover::ReplayBody for OneShotBody {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_403_on_a_body_that_cannot_be_replayed_is_returned_after_invalidation() {
    let source = ScriptedSource::new();
    let rdt = layer(&source);
    let inner = tower::service_fn(|request: http::Request<OneShotBody>| async move {
        let first = request
            .headers()
            .get("x-amz-access-token")
            .is_some_and(|v| v == token_value(1).as_str());
        let status = if first {
            http::StatusCode::FORBIDDEN
        } else {
            http::StatusCode::OK
        };
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        Ok::<_, std::convert::Infallible>(response)
    });
    let client = tower::ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(inner);
    let request = || {
        http::Request::post(format!("{NA}/mfn/v0/shipments"))
            .body(OneShotBody)
            .unwrap()
    };
    let first = client.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(source.calls(), 1);
    // The refused token is gone: the next request gets a new one.
    let second = client.oneshot(request()).await.unwrap();
    assert_eq!(second.status(), http::StatusCode::OK);
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn works_under_buffer_and_load_shed() {
    let source = ScriptedSource::new().delay(Duration::from_millis(20));
    let layer = layer(&source);
    // Buffer outside: requests queue in a worker task that drives the layer.
    let buffered = tower::ServiceBuilder::new()
        .buffer(64)
        .layer(layer.clone())
        .service(echo_token());
    let results = join_all((0..200).map(|i| {
        buffered
            .clone()
            .oneshot(get(&format!("/orders/v0/orders/{i}/address")))
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_deref().ok() == Some(token_value(1).as_str()))
    );
    // Load shedding inside, over a service that is never ready: requests are shed, not hung.
    let shed = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .load_shed()
        .concurrency_limit(1)
        .service(tower::service_fn(|_r: http::Request<()>| {
            std::future::pending::<Result<String, std::convert::Infallible>>()
        }));
    let first = tokio::spawn(shed.clone().oneshot(get("/mfn/v0/shipments/1")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = shed.clone().oneshot(get("/mfn/v0/shipments/2")).await;
    let err = second.unwrap_err();
    assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
    first.abort();
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_while_the_source_fails_all_end_and_nothing_leaks() {
    let source = ScriptedSource::new()
        .delay(Duration::from_millis(200))
        .fail_calls(1..=10_000, SourceErrorSpec::Transient);
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .wait_timeout(Duration::from_secs(5))
        .max_attempts(2)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let results =
        join_all((0..10_000).map(|i| call(&layer, get(&format!("/orders/v0/orders/{i}/address")))))
            .await;
    assert!(results.iter().all(Result::is_err));
    assert!(start.elapsed() <= Duration::from_secs(5));
    // One fetch (two attempts) for all of them.
    assert_eq!(source.calls(), 2);
    // During the back-off, more requests are answered from the remembered failure.
    assert!(
        call(&layer, get("/orders/v0/orders/x/address"))
            .await
            .is_err()
    );
    assert_eq!(source.calls(), 2);
    // After it, exactly one more fetch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again =
        join_all((0..100).map(|i| call(&layer, get(&format!("/orders/v0/orders/{i}/address")))))
            .await;
    assert!(again.iter().all(Result::is_err));
    assert_eq!(source.calls(), 4);
    // Drop the layer while a background fetch could still run: once it ends, nothing holds the
    // source any more (no task outlives its work, no reference cycle keeps the core alive).
    drop(layer);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(Arc::strong_count(&source.calls), 1);
}

#[tokio::test]
async fn the_injected_header_is_marked_sensitive() {
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::new(source.source());
    let inner = tower::service_fn(|request: http::Request<()>| async move {
        let value = request.headers().get("x-amz-access-token").cloned();
        Ok::<_, std::convert::Infallible>(value)
    });
    let value = layer
        .layer(inner)
        .oneshot(get("/orders/v0/orders/1/address"))
        .await
        .unwrap()
        .unwrap();
    assert!(value.is_sensitive());
    assert_eq!(format!("{value:?}"), "Sensitive");
}

#[tokio::test(start_paused = true)]
async fn sources_can_be_shared_or_boxed_trait_objects() {
    let source = ScriptedSource::new();
    let shared: Arc<dyn spapi_rdt::TokenSource> = Arc::new(source.source());
    let boxed: Box<dyn spapi_rdt::TokenSource> = Box::new(Arc::clone(&shared));
    let a = RestrictedDataTokenLayer::new(Arc::clone(&shared));
    let b = RestrictedDataTokenLayer::new(boxed);
    assert_eq!(
        call(&a, get("/mfn/v0/shipments/1")).await.unwrap(),
        token_value(1)
    );
    assert_eq!(
        call(&b, get("/mfn/v0/shipments/1")).await.unwrap(),
        token_value(2)
    );
    // Two layers are two caches; clones of one layer share one.
    assert_eq!(
        call(&a.clone(), get("/mfn/v0/shipments/2")).await.unwrap(),
        token_value(1)
    );
    assert_eq!(source.calls(), 2);
}

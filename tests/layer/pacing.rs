//! The pacing layer on paused time: each operation kept under its usage plan, per seller, in
//! order, with bounded waits; rates learned from the answers within bounds; a 429 drained and
//! retried a bounded number of times; background work kept off the urgent half of the burst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use http::{Request, Response, StatusCode};
use spapi_rdt::catalog::UsagePlan;
use spapi_rdt::control::Background;
use spapi_rdt::error::{BuildError, PacingError};
use spapi_rdt::pacing::{PacingLayer, PacingReport, UnknownOperations};
use spapi_rdt::recover::ReplayBody;
use spapi_rdt::{BoxError, SellerId};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const ORIGIN: &str = "https://sellingpartnerapi-na.amazon.com";
const ITEMS: &str = "/orders/v0/orders/902-3159896-1390916/orderItems";

/// A request's path, its seller and when it arrived.
type Sent = (String, Option<String>, Duration);

/// What the fake Amazon saw: each request's path, seller and instant (from the test's start).
#[derive(Clone, Default)]
struct Amazon {
    sent: Arc<Mutex<Vec<Sent>>>,
    /// The statuses to answer, in turn; 200 once they are used up.
    statuses: Arc<Mutex<Vec<u16>>>,
    /// The `x-amzn-RateLimit-Limit` of every answer.
    rate_header: Option<&'static str>,
    /// How many times the layer asked whether it was ready.
    readiness_checks: Arc<AtomicUsize>,
    start: Option<Instant>,
}

impl Amazon {
    fn new() -> Self {
        Amazon {
            start: Some(Instant::now()),
            ..Amazon::default()
        }
    }

    fn answering(self, statuses: &[u16]) -> Self {
        *self.statuses.lock().unwrap() = statuses.iter().rev().copied().collect();
        self
    }

    /// When each request arrived, in seconds from the start, in arrival order.
    fn times(&self) -> Vec<f64> {
        let sent = self.sent.lock().unwrap();
        sent.iter().map(|(_, _, at)| at.as_secs_f64()).collect()
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

impl<B: Send + 'static> Service<Request<B>> for Amazon {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.readiness_checks.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let at = Instant::now() - self.start.unwrap();
        let seller = request
            .extensions()
            .get::<SellerId>()
            .map(|s| s.as_str().to_owned());
        self.sent
            .lock()
            .unwrap()
            .push((request.uri().path().to_owned(), seller, at));
        let status = self.statuses.lock().unwrap().pop().unwrap_or(200);
        let mut response = Response::builder().status(status);
        if let Some(rate) = self.rate_header {
            response = response.header("x-amzn-RateLimit-Limit", rate);
        }
        let response = response.body(String::new()).unwrap();
        Box::pin(async move { Ok(response) })
    }
}

fn request(path: &str, seller: &str) -> Request<String> {
    let mut request = Request::get(format!("{ORIGIN}{path}"))
        .body(String::new())
        .unwrap();
    request.extensions_mut().insert(SellerId::new(seller));
    request
}

/// A builder that paces getOrderItems by `rate` a second and a burst of `burst`.
fn items_at(rate: f64, burst: u32) -> spapi_rdt::pacing::PacingLayerBuilder {
    PacingLayer::builder().plan(
        "Orders v0",
        "getOrderItems",
        UsagePlan::new(rate, burst).unwrap(),
    )
}

/// getOrderItems at 1 a second, burst 5: 3 at once after the headroom of 2.
fn one_a_second_burst_five() -> PacingLayer {
    items_at(1.0, 5).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_usable_burst_goes_at_once_then_one_a_plan_interval_in_arrival_order() {
    let amazon = Amazon::new();
    let layer = one_a_second_burst_five();
    let service = layer.layer(amazon.clone());
    let calls = (0..6).map(|i| {
        let service = service.clone();
        async move {
            service
                .oneshot(request(&format!("{ITEMS}?call={i}"), "A1"))
                .await
                .unwrap()
        }
    });
    join_all(calls).await;
    assert_eq!(amazon.times(), [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
    let stats = layer.stats();
    assert_eq!((stats.paced, stats.waited), (6, 3));
    assert_eq!(stats.wait_time, Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn sellers_and_operations_have_buckets_of_their_own() {
    let amazon = Amazon::new();
    let service = one_a_second_burst_five().layer(amazon.clone());
    let mut calls = Vec::new();
    for seller in ["A1", "A2"] {
        for path in [ITEMS, "/orders/v0/orders/902-3159896-1390916"] {
            for _ in 0..3 {
                calls.push(service.clone().oneshot(request(path, seller)));
            }
        }
    }
    join_all(calls).await;
    // getOrder (0.5/30 in the model) and getOrderItems, for two sellers: nobody waited.
    assert_eq!(amazon.times(), [0.0; 12]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_max_wait_fails_at_once_naming_the_operation_and_sends_nothing() {
    let amazon = Amazon::new();
    let layer = items_at(0.1, 1)
        .max_wait(Duration::from_secs(15))
        .build()
        .unwrap();
    let service = layer.layer(amazon.clone());
    service.clone().oneshot(request(ITEMS, "A1")).await.unwrap();
    // The next slot is 10 s away: within the 15 s.
    let second = tokio::spawn(service.clone().oneshot(request(ITEMS, "A1")));
    tokio::task::yield_now().await;
    // The third would wait 20 s: refused at once.
    let before = Instant::now();
    let error = service
        .clone()
        .oneshot(request(ITEMS, "A1"))
        .await
        .unwrap_err();
    assert_eq!(Instant::now(), before);
    let error = error.downcast_ref::<PacingError>().unwrap();
    assert_eq!(
        (error.api(), error.operation()),
        ("Orders v0", "getOrderItems")
    );
    assert_eq!(error.wait(), Duration::from_secs(20));
    assert!(error.to_string().contains("nothing was sent"), "{error}");
    second.await.unwrap().unwrap();
    assert_eq!(amazon.times(), [0.0, 10.0]);
    assert_eq!(layer.stats().refused, 1);
    // The refusal took no slot: the next request goes 10 s after the second.
    service.oneshot(request(ITEMS, "A1")).await.unwrap();
    assert_eq!(amazon.times(), [0.0, 10.0, 20.0]);
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_hold_no_capacity_of_the_service_below() {
    let amazon = Amazon::new();
    let service = one_a_second_burst_five().layer(amazon.clone());
    let mut service = service;
    // The layer is ready without asking the service below.
    std::future::poll_fn(|cx| Service::<Request<String>>::poll_ready(&mut service, cx))
        .await
        .unwrap();
    assert_eq!(amazon.readiness_checks.load(Ordering::SeqCst), 0);
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(request(ITEMS, "A1"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Three went; the two waiting for their slot have not touched the service below.
    assert_eq!(amazon.readiness_checks.load(Ordering::SeqCst), 3);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(amazon.readiness_checks.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn background_work_leaves_the_urgent_half_of_the_burst() {
    let amazon = Amazon::new();
    // 1 a second, burst 10: 8 usable, 4 of them for background work.
    let layer = items_at(1.0, 10).build().unwrap();
    let service = layer.layer(amazon.clone());
    let polling: Vec<_> = (0..6)
        .map(|i| {
            let mut request = request(&format!("{ITEMS}?poll={i}"), "A1");
            request.extensions_mut().insert(Background);
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    tokio::task::yield_now().await;
    // A user's requests arrive behind six background ones, and still go at once.
    let urgent = (0..4).map(|_| service.clone().oneshot(request(ITEMS, "A1")));
    let started = Instant::now();
    join_all(urgent).await;
    assert_eq!(Instant::now(), started);
    for poll in polling {
        poll.await.unwrap().unwrap();
    }
    let times = amazon.times();
    assert_eq!(&times[..8], [0.0; 8]);
    // The two background requests left waited until the bucket held more than the urgent half.
    assert!(times[8] >= 4.0 && times[9] > times[8], "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn the_rate_amazon_states_is_learned_within_bounds() {
    let mut amazon = Amazon::new();
    amazon.rate_header = Some("0.25");
    let layer = items_at(1.0, 1).build().unwrap();
    let service = layer.layer(amazon.clone());
    for _ in 0..3 {
        service.clone().oneshot(request(ITEMS, "A1")).await.unwrap();
    }
    // The first answer said 0.25 a second: one every 4 s from then on (the second slot was
    // taken at the model's 1 s).
    assert_eq!(amazon.times(), [0.0, 1.0, 5.0]);
    assert_eq!(layer.stats().learned, 1);

    // Zero, negative or unreadable rates are not believed.
    for garbage in ["0", "-3", "fast"] {
        let mut amazon = Amazon::new();
        amazon.rate_header = Some(garbage);
        let layer = one_a_second_burst_five();
        let service = layer.layer(amazon.clone());
        for _ in 0..4 {
            service.clone().oneshot(request(ITEMS, "A1")).await.unwrap();
        }
        assert_eq!(amazon.times(), [0.0, 0.0, 0.0, 1.0], "{garbage}");
        assert_eq!(layer.stats().learned, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_drains_the_bucket_and_is_retried_a_bounded_number_of_times() {
    // Throttled once, then served: one retry, an interval (plus jitter) later.
    let amazon = Amazon::new().answering(&[429]);
    let layer = one_a_second_burst_five();
    let response = layer
        .layer(amazon.clone())
        .oneshot(request(ITEMS, "A1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let times = amazon.times();
    assert_eq!(times.len(), 2);
    // Drained: the retry's slot is an interval away (1 s), then up to 1 s of jitter.
    assert!((1.0..=2.0).contains(&times[1]), "{times:?}");
    let stats = layer.stats();
    assert_eq!((stats.throttled, stats.retries), (1, 1));

    // Always throttled: the first call and two retries, then Amazon's 429.
    let amazon = Amazon::new().answering(&[429; 10]);
    let response = one_a_second_burst_five()
        .layer(amazon.clone())
        .oneshot(request(ITEMS, "A1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(amazon.count(), 3);

    // A retry that would wait past max_wait is not made: the 429 is returned.
    let amazon = Amazon::new().answering(&[429; 10]);
    let layer = items_at(0.1, 3)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = layer
        .layer(amazon.clone())
        .oneshot(request(ITEMS, "A1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(amazon.count(), 1);
    assert_eq!(layer.stats().refused, 0);
}

#[tokio::test(start_paused = true)]
async fn each_answer_reports_what_pacing_did_to_its_request() {
    let plans = spapi_rdt::catalog::UsagePlans::amazon();
    let items = plans.find("Orders v0", "getOrderItems").map(|op| op.name());
    // Throttled once, then served with a stated rate: 3 slots at once, so the fourth request
    // waits 1 s, and the throttled one a slot (1 s after the drain) plus its jitter.
    let amazon = Amazon {
        rate_header: Some("0.5"),
        ..Amazon::new()
    };
    let layer = one_a_second_burst_five();
    let service = layer.layer(amazon.clone());
    let reports: Vec<PacingReport> = join_all((0..4).map(|_| {
        let service = service.clone();
        async move {
            let response = service.oneshot(request(ITEMS, "A1")).await.unwrap();
            *response.extensions().get::<PacingReport>().unwrap()
        }
    }))
    .await;
    let waits: Vec<Duration> = reports.iter().map(|r| r.waited).collect();
    let s = Duration::from_secs;
    assert_eq!(waits, [s(0), s(0), s(0), s(1)]);
    for report in &reports {
        assert_eq!(
            report
                .operation
                .and_then(|id| plans.get(id))
                .map(|op| op.name()),
            items
        );
        assert_eq!((report.throttled, report.retries), (0, 0));
        assert_eq!(report.stated_rate, Some(0.5));
    }

    let amazon = Amazon::new().answering(&[429]);
    let response = one_a_second_burst_five()
        .layer(amazon.clone())
        .oneshot(request(ITEMS, "A1"))
        .await
        .unwrap();
    let report = *response.extensions().get::<PacingReport>().unwrap();
    assert_eq!((report.throttled, report.retries), (1, 1));
    // The retry's slot, an interval after the drain, and up to a second of jitter.
    assert!(
        (s(1)..=s(2)).contains(&report.waited),
        "{:?}",
        report.waited
    );
    assert_eq!(report.stated_rate, None);

    // A path the layer leaves alone carries no report.
    let response = one_a_second_burst_five()
        .layer(Amazon::new())
        .oneshot(request("/not/an/operation", "A1"))
        .await
        .unwrap();
    assert!(response.extensions().get::<PacingReport>().is_none());
}

/// A body that cannot be sent twice (a stream, say).
struct OnceBody;

impl ReplayBody for OnceBody {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_replayed_gets_its_429() {
    let amazon = Amazon::new().answering(&[429]);
    let layer = one_a_second_burst_five();
    let mut request = Request::get(format!("{ORIGIN}{ITEMS}"))
        .body(OnceBody)
        .unwrap();
    request.extensions_mut().insert(SellerId::new("A1"));
    let response = layer.layer(amazon.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(amazon.count(), 1);
    assert_eq!(layer.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn paths_of_no_operation_pass_untouched_unless_asked() {
    let amazon = Amazon::new();
    let service = PacingLayer::new().layer(amazon.clone());
    join_all((0..5).map(|_| service.clone().oneshot(request("/not/an/operation", "A1")))).await;
    assert_eq!(amazon.times(), [0.0; 5]);

    // Paced by the conservative default (burst 1) until an answer says more.
    let amazon = Amazon::new();
    let layer = PacingLayer::builder()
        .unknown_operations(UnknownOperations::DefaultPlan)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let service = layer.layer(amazon.clone());
    let results =
        join_all((0..2).map(|_| service.clone().oneshot(request("/new/api", "A1")))).await;
    assert!(results[0].is_ok());
    let error = results[1].as_ref().unwrap_err();
    assert!(error.downcast_ref::<PacingError>().is_some(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_and_a_request_past_it_goes_unpaced() {
    let amazon = Amazon::new();
    let layer = items_at(0.1, 1).max_buckets(2).build().unwrap();
    let service = layer.layer(amazon.clone());
    for seller in ["A1", "A2", "A3"] {
        service
            .clone()
            .oneshot(request(ITEMS, seller))
            .await
            .unwrap();
    }
    let stats = layer.stats();
    assert_eq!((stats.paced, stats.unpaced, stats.buckets), (2, 1, 2));
    assert_eq!(amazon.count(), 3);
}

#[test]
fn settings_out_of_range_are_named() {
    let refused = |builder: spapi_rdt::pacing::PacingLayerBuilder, name: &str| match builder.build()
    {
        Err(BuildError::Setting { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected `{name}` refused, got {other:?}"),
    };
    refused(PacingLayer::builder().retries(6), "retries");
    refused(PacingLayer::builder().max_buckets(0), "max_buckets");
    refused(
        PacingLayer::builder().max_wait(Duration::from_secs(86_401)),
        "max_wait",
    );
    refused(
        PacingLayer::builder().plan("Orders v0", "getOrderz", UsagePlan::new(1.0, 1).unwrap()),
        "plan",
    );
    assert!(UsagePlan::new(f64::NAN, 1).is_err());
    assert!(UsagePlan::new(0.0, 1).is_err());
}

#[test]
fn the_layer_suits_axum_and_tower_bounds() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<PacingLayer>();
    send_sync_static::<spapi_rdt::pacing::Pacing<Amazon>>();
}

/// A loopback server answering each request (one per connection) with the next status of
/// `statuses` (200 once they are used up) and `x-amzn-RateLimit-Limit: 5`; counts the requests.
#[cfg(feature = "reqwest-middleware")]
async fn plain_server(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let index = counter.fetch_add(1, Ordering::SeqCst);
            let status = statuses.get(index).copied().unwrap_or(200);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\
                 x-amzn-RateLimit-Limit: 5\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (format!("http://{address}"), seen)
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_paces_retries_and_refuses_like_the_layer() {
    let (origin, seen) = plain_server(vec![429]).await;
    let layer = items_at(0.1, 1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(layer.middleware())
        .build();
    let url = format!("{origin}{ITEMS}");
    // Throttled: the 429 drains the bucket (0.1 a second), whose next slot, 10 s away, is past
    // max_wait, so no retry is made and Amazon's 429 comes back.
    let response = client
        .get(&url)
        .with_extension(SellerId::new("A1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let report = response.extensions().get::<PacingReport>().unwrap();
    assert_eq!((report.throttled, report.retries), (1, 0));
    // The bucket is drained: the next request fails at once with the typed error, unsent.
    let error = client
        .get(&url)
        .with_extension(SellerId::new("A1"))
        .send()
        .await
        .unwrap_err();
    match error {
        reqwest_middleware::Error::Middleware(e) => {
            let e = e.downcast_ref::<PacingError>().unwrap();
            assert_eq!(e.operation(), "getOrderItems");
        }
        other => panic!("expected the pacing error, got {other:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // Another seller's bucket is full: served, and its answer's rate (5 a second) is learned.
    let response = client
        .get(&url)
        .with_extension(SellerId::new("A2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = layer.stats();
    assert_eq!((stats.throttled, stats.refused, stats.learned), (1, 1, 1));
}

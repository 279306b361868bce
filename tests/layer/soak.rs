//! A soak test on paused time: one simulated day, 1,000 sellers, random restricted traffic, a token
//! source that misbehaves in every way it can, and random 403s from the API. Invariants are checked
//! throughout: no panic, no request waits past its deadline, no seller's token calls exceed the
//! quota in any window, every request gets its own seller's token or a typed error, and the memory
//! gauges stay bounded.

use crate::support::common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::get;
use futures::future::join_all;
use http::StatusCode;
use spapi_rdt::{
    IssuedToken, RestrictedDataTokenLayer, SecretToken, SellerId, TokenRequest, error::Error,
    error::SourceError, source_fn,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const SELLERS: usize = 1_000;
const DAY: Duration = Duration::from_secs(86_400);
const WAIT: Duration = Duration::from_secs(30);

/// Token calls per seller, with when they were made.
type Calls = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

fn misbehaving_source(seed: u64, calls: Calls) -> impl spapi_rdt::TokenSource {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    source_fn(move |request: TokenRequest| {
        let seller = request.seller().as_str().to_owned();
        calls
            .lock()
            .unwrap()
            .entry(seller.clone())
            .or_default()
            .push(Instant::now());
        let (roll, pick) = {
            let mut rng = rng.lock().unwrap();
            (rng.u32(0..100), rng.usize(0..5))
        };
        async move {
            let throttled = |after: Option<Duration>| {
                let e = SourceError::transient("QuotaExceeded")
                    .with_status(StatusCode::TOO_MANY_REQUESTS);
                match after {
                    Some(after) => Err(e.with_retry_after(after)),
                    None => Err(e),
                }
            };
            match roll {
                0..=4 => throttled(Some(Duration::from_secs(2))),
                5..=6 => throttled(Some(Duration::from_secs(u64::MAX))),
                7 => throttled(Some(Duration::MAX)),
                // A garbage Retry-After reaches a source as none at all.
                8 => throttled(None),
                9..=12 => Err(SourceError::transient("internal error")
                    .with_status(StatusCode::INTERNAL_SERVER_ERROR)),
                13..=14 => {
                    // Longer than the fetch timeout.
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    Err(SourceError::transient("too late"))
                }
                15..=16 => Err(SourceError::permanent("Application does not have access")
                    .with_status(StatusCode::BAD_REQUEST)
                    .with_code("InvalidInput")),
                _ => {
                    let lifetime = [
                        Duration::ZERO,
                        Duration::from_millis(1500),
                        Duration::from_secs(3600),
                        Duration::from_secs(86_400 * 30),
                        Duration::MAX,
                    ][pick];
                    let token = SecretToken::new(format!("Atz.sprdt|{seller}|{roll}"))
                        .map_err(SourceError::permanent)?;
                    Ok(IssuedToken::new(token, lifetime))
                }
            }
        }
    })
}

/// The API: echoes the token it got, or answers 403 at random.
fn api(
    seed: u64,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<http::Response<String>, Infallible>>,
> + Clone {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
    tower::service_fn(move |request: http::Request<()>| {
        let token = request
            .headers()
            .get("x-amz-access-token")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let mut response = http::Response::new(token);
        if rng.lock().unwrap().u32(0..100) < 3 {
            *response.status_mut() = StatusCode::FORBIDDEN;
        }
        std::future::ready(Ok(response))
    })
}

/// Whether `calls` (sorted) ever exceed Amazon's quota, 1 a second with a burst of 10.
fn over_quota(calls: &[Instant]) -> Option<String> {
    for (i, start) in calls.iter().enumerate() {
        for (j, end) in calls.iter().enumerate().skip(i) {
            let window = end.saturating_duration_since(*start);
            let allowed = 10 + window.as_secs() as usize;
            if j - i + 1 > allowed {
                return Some(format!("{} calls in {window:?}", j - i + 1));
            }
        }
    }
    None
}

#[tokio::test(start_paused = true)]
async fn a_day_of_hostile_traffic_keeps_every_invariant() {
    let calls: Calls = Arc::default();
    let layer = RestrictedDataTokenLayer::builder(misbehaving_source(7, Arc::clone(&calls)))
        .wait_timeout(WAIT)
        .build()
        .unwrap();
    let client = tower::ServiceBuilder::new()
        .layer(layer.recover_stale_tokens())
        .layer(layer.clone())
        .service(api(11));
    let mut rng = fastrand::Rng::with_seed(3);
    let paths = [
        "/orders/v0/orders/1/address",
        "/orders/v0/orders/1/buyerInfo",
        "/orders/v0/orders/1",
    ];
    let started = Instant::now();
    let (mut served, mut refused) = (0usize, 0usize);
    while started.elapsed() < DAY {
        let batch: Vec<_> = (0..rng.usize(1..8))
            .map(|_| {
                let seller = format!("seller-{}", rng.usize(0..SELLERS));
                let mut request = get(paths[rng.usize(0..paths.len())]);
                request
                    .extensions_mut()
                    .insert(SellerId::new(seller.as_str()));
                let client = client.clone();
                async move {
                    let sent = Instant::now();
                    let result = client.oneshot(request).await;
                    (seller, sent.elapsed(), result)
                }
            })
            .collect();
        for (seller, took, result) in join_all(batch).await {
            // A replayed 403 may wait for a second token.
            assert!(took <= 2 * WAIT, "{seller} waited {took:?}");
            match result {
                Ok(response) if response.status() == StatusCode::FORBIDDEN => refused += 1,
                Ok(response) => {
                    assert!(
                        response.body().starts_with(&format!("Atz.sprdt|{seller}|")),
                        "{seller} got {}",
                        response.body()
                    );
                    served += 1;
                }
                Err(err) => {
                    let err = err
                        .downcast_ref::<Error>()
                        .unwrap_or_else(|| panic!("untyped error: {err}"));
                    assert!(!err.to_string().contains("aborted"), "{err}");
                }
            }
        }
        let stats = layer.stats();
        assert!(stats.sellers_held <= SELLERS as u64, "{stats:?}");
        assert!(
            stats.tokens_cached <= (SELLERS * paths.len()) as u64,
            "{stats:?}"
        );
        tokio::time::advance(Duration::from_millis(rng.u64(0..20_000))).await;
    }
    for (seller, times) in calls.lock().unwrap().iter_mut() {
        times.sort();
        if let Some(excess) = over_quota(times) {
            panic!("{seller}: {excess}");
        }
    }
    assert!(
        served > 1_000 && refused > 0,
        "{served} served, {refused} refused"
    );
    // A day after the last token was cached, the sweep leaves nothing behind. The day passes as a
    // sleep, not an `advance`: a jump straight to its end would wake the fetches still under way
    // (their timeouts are due) without running them, and the sweep must keep a slot whose fetch
    // has not finished.
    tokio::time::sleep(DAY * 2).await;
    let mut late = get(paths[0]);
    late.extensions_mut().insert(SellerId::new("late"));
    let _ = client.clone().oneshot(late).await;
    let stats = layer.stats();
    assert!(stats.sellers_held <= 1, "{stats:?}");
    assert!(stats.tokens_cached <= 1, "{stats:?}");
}

//! `pacing`: what a request pays for going through the `PacingLayer` on its warm path (a bucket
//! that exists and has room), against what the work would cost done by hand.
//!
//! One group, each contender building the same getOrderItems request inside the iteration:
//! - `bare`: the inner service alone, driven through `poll_ready`, `call` and one poll;
//! - `layer`: `PacingLayer` over it, a plan so generous that no request ever waits;
//! - `layer_without_retries`: the same with `retries(0)`, which makes no copy of the request for a
//!   retry after a 429: what that copy costs;
//! - `governor_check_and_classify`: the reference, not a service: `UsagePlans::classify` of the
//!   request plus one governor `check_key` on one key, the least a pacing layer must do.
//!
//! Issue 21's goal: `layer − bare` at most 1.5 × `governor_check_and_classify`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use http::Uri;
use spapi_rdt::SellerId;
use spapi_rdt::catalog::{UsagePlan, UsagePlans};
use spapi_rdt::pacing::PacingLayer;
use support::{drive, get, inner};
use tower::Layer;

const ITEMS: &str =
    "https://sellingpartnerapi-na.amazon.com/orders/v0/orders/902-3159896-1390916/orderItems";

fn pacing(c: &mut Criterion) {
    let uri = Uri::from_static(ITEMS);
    let seller = SellerId::new("A2EUQ1WTGCTBG2");
    let request = || {
        let mut request = get(&uri);
        request.extensions_mut().insert(seller.clone());
        request
    };
    let layer = PacingLayer::builder()
        .plan(
            "Orders v0",
            "getOrderItems",
            UsagePlan::new(1e9, u32::MAX).unwrap(),
        )
        .build()
        .unwrap();
    let no_retries = PacingLayer::builder()
        .plan(
            "Orders v0",
            "getOrderItems",
            UsagePlan::new(1e9, u32::MAX).unwrap(),
        )
        .retries(0)
        .build()
        .unwrap();
    let mut bare = inner();
    let mut paced = layer.layer(inner());
    let mut paced_once = no_retries.layer(inner());
    // The warm path: the bucket exists, and no request waits.
    drive(&mut paced, request());
    drive(&mut paced_once, request());
    assert_eq!(layer.stats().waited, 0);

    let plans = UsagePlans::amazon();
    let limiter = RateLimiter::keyed(Quota::per_second(NonZeroU32::MAX));

    let mut group = c.benchmark_group("pacing");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(drive(&mut bare, black_box(request()))))
    });
    group.bench_function("layer", |b| {
        b.iter(|| black_box(drive(&mut paced, black_box(request()))))
    });
    group.bench_function("layer_without_retries", |b| {
        b.iter(|| black_box(drive(&mut paced_once, black_box(request()))))
    });
    group.bench_function("governor_check_and_classify", |b| {
        b.iter(|| {
            let request = black_box(request());
            let (id, _) = plans
                .classify(request.method(), request.uri().path())
                .unwrap();
            let key = (request.extensions().get::<SellerId>().cloned(), id);
            black_box(limiter.check_key(&key).is_ok())
        })
    });
    group.finish();
    assert_eq!(
        layer.stats().waited,
        0,
        "a request waited: the warm path was not measured"
    );
}

criterion_group!(benches, pacing);
criterion_main!(benches);

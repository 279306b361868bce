//! Memory stays bounded: tokens, sellers and rate-limiter state that have outlived their tokens are
//! swept, and `Stats` shows what is held.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{echo_token, get};
use spapi_rdt::control::ReportPolicy;
use spapi_rdt::{
    IssuedToken, RestrictedDataTokenLayer, SecretToken, SellerId, TokenQuota, TokenRequest,
    error::SourceError, source_fn,
};
use tower::{Layer, ServiceExt};

const N: usize = 100_000;

#[tokio::test(start_paused = true)]
async fn expired_sellers_and_report_documents_leave_the_gauges_near_zero() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            let token = SecretToken::new(format!("Atz.sprdt|t-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    });
    let layer = RestrictedDataTokenLayer::builder(source)
        .report_policy(ReportPolicy::Always)
        .quota(TokenQuota::new(1e6, 1_000_000).unwrap())
        .build()
        .unwrap();
    let service = layer.layer(echo_token());
    assert_eq!(layer.stats().sellers_held, 0);

    // 100,000 sellers, one restricted call each.
    for i in 0..N {
        let mut request = get("/orders/v0/orders/1/address");
        request
            .extensions_mut()
            .insert(SellerId::new(format!("seller-{i}")));
        service.clone().oneshot(request).await.unwrap();
        if i % 1000 == 999 {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
    }
    let stats = layer.stats();
    assert_eq!(stats.sellers_held, N as u64);
    assert_eq!(stats.tokens_cached, N as u64);

    // 100,000 report documents of one seller, one token each.
    for i in 0..N {
        let path = format!("/reports/2021-06-30/documents/doc-{i}");
        service.clone().oneshot(get(&path)).await.unwrap();
        if i % 1000 == 999 {
            tokio::time::advance(Duration::from_millis(100)).await;
        }
    }
    let stats = layer.stats();
    assert_eq!(
        stats.sellers_held, N as u64,
        "report documents hold no seller slot"
    );
    assert_eq!(stats.tokens_cached, 2 * N as u64);
    assert_eq!(calls.load(Ordering::Relaxed), 2 * N);

    // Two hours later every token has expired: the next miss sweeps them, their sellers and their
    // rate-limiter state away.
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    let mut late = get("/orders/v0/orders/1/address");
    late.extensions_mut().insert(SellerId::new("late"));
    service.clone().oneshot(late).await.unwrap();
    let stats = layer.stats();
    assert!(stats.sellers_held <= 1, "{stats:?}");
    assert!(stats.tokens_cached <= 1, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_swept_seller_gets_a_new_token_and_an_invalidated_token_leaves_the_gauge() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        async move {
            let token = SecretToken::new(format!("Atz.sprdt|t-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    });
    let layer = RestrictedDataTokenLayer::new(source);
    let service = layer.layer(echo_token());
    let call = |path: &'static str| service.clone().oneshot(get(path));
    assert_eq!(
        call("/orders/v0/orders/1/address").await.unwrap(),
        "Atz.sprdt|t-1"
    );
    assert_eq!(layer.stats().tokens_cached, 1);
    assert!(layer.invalidate(&get("/orders/v0/orders/1/address")));
    assert_eq!(layer.stats().tokens_cached, 0);
    assert_eq!(
        call("/orders/v0/orders/1/address").await.unwrap(),
        "Atz.sprdt|t-2"
    );
    assert_eq!(layer.stats().tokens_cached, 1);
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    assert_eq!(
        call("/orders/v0/orders/1/address").await.unwrap(),
        "Atz.sprdt|t-3"
    );
    let stats = layer.stats();
    assert_eq!(
        (stats.sellers_held, stats.tokens_cached),
        (1, 1),
        "{stats:?}"
    );
}

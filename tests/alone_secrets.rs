//! No token ever shows in Debug output, Display output, errors or logs.
//!
//! This file holds one test on purpose: tracing caches each call site's interest process-wide, so a
//! test running in parallel without the capturing subscriber could hide events from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;
use support::capture;
use support::common;

use std::time::Duration;

use capture::Captured;
use common::{ScriptedSource, SourceErrorSpec, echo_token, get, token_value};
use futures::future::join_all;
use spapi_rdt::{RestrictedDataTokenLayer, SecretToken};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn no_token_in_debug_output_errors_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let source = ScriptedSource::new()
        .lifetime(Duration::from_secs(600))
        .fail_calls([3], SourceErrorSpec::Transient)
        .fail_calls([5], SourceErrorSpec::Permanent);
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .max_attempts(1)
        .refresh_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let mut printed = Vec::new();
    let service = layer.layer(echo_token());
    printed.push(format!("{layer:?} {:?}", layer.stats()));
    // Hits, misses, refreshes, failures and an injected-header inspection.
    for round in 0..4 {
        let results = join_all((0..5).map(|i| {
            service
                .clone()
                .oneshot(get(&format!("/orders/v0/orders/{i}/address")))
        }))
        .await;
        for r in results {
            match r {
                Ok(token) => assert!(token.starts_with("Atz.sprdt|") || token == "none"),
                Err(e) => printed.push(format!("{e} {e:?}")),
            }
        }
        let mut svc = service.clone();
        svc.ready().await.unwrap();
        let fut = svc.call(get("/mfn/v0/shipments/1"));
        printed.push(format!("{fut:?}"));
        match fut.await {
            Ok(_) => {}
            Err(e) => printed.push(format!("{e} {e:?}")),
        }
        printed.push(format!("{layer:?} round {round}"));
        tokio::time::sleep(Duration::from_secs(590)).await;
    }
    assert!(
        source.calls() >= 5,
        "the scenario reached the failing calls"
    );
    let token = SecretToken::new(token_value(1)).unwrap();
    printed.push(format!("{token:?}"));
    printed.push(format!("{:?}", source.seen.lock().unwrap()));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token fetched"),
        "the log was captured: {logs}"
    );
    assert!(logs.contains("token fetch failed"));
    let everything = format!("{}\n{logs}", printed.join("\n"));
    for n in 1..=source.calls() {
        assert!(
            !everything.contains(&token_value(n)),
            "token {n} leaked:\n{everything}"
        );
    }
    assert!(!everything.contains("secret-token"));
}

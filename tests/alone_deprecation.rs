//! Deprecated restricted operations (Orders v0's PII operations, removed 2027-03-27): they still get
//! their tokens, and each layer warns once per operation, not per request. Orders v2026-01-01 calls
//! pass through untouched.
//!
//! Alone in its binary: tracing caches each call site's interest process-wide, so a test running in
//! parallel without the capturing subscriber could hide events from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use support::capture;
use support::common;

use capture::capture;
use common::{ScriptedSource, echo_token, get};
use spapi_rdt::RestrictedDataTokenLayer;
use tower::{Layer, ServiceExt};

async fn send(layer: &RestrictedDataTokenLayer, path: &str) -> String {
    layer.layer(echo_token()).oneshot(get(path)).await.unwrap()
}

fn warnings_for(logs: &str, operation: &str) -> usize {
    logs.lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("operation=\"{operation}\"")))
        .count()
}

#[tokio::test]
async fn a_deprecated_operation_gets_its_token_and_one_warning_per_layer() {
    let (captured, _guard) = capture(tracing::Level::WARN);

    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::new(source.source());
    for i in 0..5 {
        let token = send(&layer, &format!("/orders/v0/orders/902-{i}/address")).await;
        assert!(token.starts_with("Atz.sprdt|"), "getOrderAddress: {token}");
    }
    for i in 0..3 {
        let token = send(&layer, &format!("/orders/v0/orders/902-{i}")).await;
        assert!(token.starts_with("Atz.sprdt|"), "getOrder: {token}");
        // Not deprecated: it stays restricted after the migration.
        let token = send(&layer, &format!("/orders/v0/orders/902-{i}/regulatedInfo")).await;
        assert!(
            token.starts_with("Atz.sprdt|"),
            "getOrderRegulatedInfo: {token}"
        );
    }
    // Orders v2026-01-01 needs roles, not RDTs: no token, no token call.
    let before = source.calls();
    assert_eq!(send(&layer, "/orders/2026-01-01/orders").await, "none");
    assert_eq!(
        send(&layer, "/orders/2026-01-01/orders/902-1").await,
        "none"
    );
    assert_eq!(source.calls(), before);

    let logs = captured.text();
    assert_eq!(warnings_for(&logs, "getOrderAddress"), 1, "{logs}");
    assert_eq!(warnings_for(&logs, "getOrder"), 1, "{logs}");
    assert_eq!(warnings_for(&logs, "getOrderRegulatedInfo"), 0, "{logs}");
    let warning = logs
        .lines()
        .find(|l| l.contains("operation=\"getOrderAddress\""))
        .unwrap();
    assert!(warning.contains("removal=\"2027-03-27\""), "{warning}");
    assert!(
        warning.contains("Orders v2026-01-01 getOrder with includedData=RECIPIENT"),
        "{warning}"
    );
    assert!(!logs.contains("Atz.sprdt"), "no token in the logs: {logs}");

    // Another layer warns again, once.
    let other = RestrictedDataTokenLayer::new(ScriptedSource::new().source());
    send(&other, "/orders/v0/orders/902-9/address").await;
    send(&other, "/orders/v0/orders/902-9/address").await;
    assert_eq!(warnings_for(&captured.text(), "getOrderAddress"), 2);
}

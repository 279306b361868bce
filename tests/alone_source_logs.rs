//! `SpApiTokenSource`'s logs: what happened, and no secret.
//!
//! Alone in its binary: tracing caches each call site's interest process-wide, so a test running in
//! parallel without the capturing subscriber could hide events from it.
#![cfg(feature = "reqwest")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use capture::capture;
use support::capture;

use support::amazon::*;

#[tokio::test]
async fn logs_say_what_happened_without_secrets() {
    let (captured, _guard) = capture(tracing::Level::TRACE);

    let server = Amazon::start().await;
    let source = server.source();
    server.reply(Endpoint::Tokens, errors(403, "Unauthorized", "denied"));
    source.fetch(server.request()).await.unwrap();
    server.reply(
        Endpoint::Tokens,
        json_reply(200, json!({"restrictedDataToken": "Atz.sprdt|rdt-x"})),
    );
    source.fetch(server.request()).await.unwrap();
    // A source that holds no LWA token yet meets a refused grant.
    let fresh = server.source();
    server.reply(
        Endpoint::Lwa,
        json_reply(400, json!({"error": "invalid_grant"})),
    );
    let err: SourceError = fresh.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_grant"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("LWA token refresh"), "{logs}");
    assert!(logs.contains("Tokens API call"), "{logs}");
    assert!(logs.contains("seller=default"), "{logs}");
    assert!(logs.contains("status=403"), "{logs}");
    assert!(logs.contains("assuming one hour"), "{logs}");
    server.assert_no_secret(&logs);
}

//! Delegation: a delegator hands tokens out, a delegatee injects what it was handed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ScriptedSource, echo_token, get, token_value};
use spapi_rdt::RestrictedDataTokenLayer;
use spapi_rdt::control::TargetApplication;
use spapi_rdt::delegate::SuppliedTokens;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_delegator_hands_out_and_a_delegatee_injects() {
    let source = ScriptedSource::new();
    let delegator = RestrictedDataTokenLayer::new(source.source());
    let mut request = get("/orders/v0/orders/1/address");
    request
        .extensions_mut()
        .insert(TargetApplication::new("amzn1.sellerapps.app.delegatee"));
    let handed = delegator.token_for(&request).await.unwrap().unwrap();
    assert_eq!(handed.token().expose(), token_value(1));
    assert!(handed.expires_in() > Duration::from_secs(3500));
    assert_eq!(
        handed.request().target_application(),
        Some("amzn1.sellerapps.app.delegatee")
    );
    // The source was asked with the target application; a second ask is served from the cache.
    assert_eq!(
        source.seen.lock().unwrap()[0].target_application(),
        Some("amzn1.sellerapps.app.delegatee")
    );
    delegator.token_for(&request).await.unwrap().unwrap();
    assert_eq!(source.calls(), 1);
    // Unrestricted requests need no token.
    assert!(
        delegator
            .token_for(&get("/catalog/2022-04-01/items/x"))
            .await
            .unwrap()
            .is_none()
    );

    // The delegatee injects the handed-over token for any order id.
    let supplied = SuppliedTokens::new();
    let delegatee = RestrictedDataTokenLayer::new(supplied.clone());
    let before = delegatee
        .layer(echo_token())
        .oneshot(get("/orders/v0/orders/9/address"))
        .await;
    assert!(before.is_err(), "nothing supplied yet");
    supplied.supply_delegated(&handed);
    tokio::time::advance(Duration::from_secs(2)).await;
    let after = delegatee
        .layer(echo_token())
        .oneshot(get("/orders/v0/orders/9/address"))
        .await;
    assert_eq!(after.unwrap(), token_value(1));
    assert!(!format!("{supplied:?} {handed:?}").contains(&token_value(1)));
}

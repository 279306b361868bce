//! Delegation: a delegator hands tokens out, a delegatee injects what it was handed.

use crate::support::common;

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

/// An application in draft or test state is named `<id>&version=beta`: the layer sends that form to
/// the Tokens API verbatim (JSON-escaped, not URL-encoded or cut at the `&`).
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_draft_application_is_sent_with_version_beta_verbatim() {
    use spapi_rdt::{LwaCredentials, SpApiTokenSource};
    use spapi_rdt_emulator::{Emulator, EmulatorConfig};

    let app = "amzn1.sp.solution.0bf296b5-draft";
    let target = TargetApplication::beta(app);
    assert_eq!(target.as_str(), format!("{app}&version=beta"));
    let em = Emulator::start_with(EmulatorConfig::default().target_application(target.as_str()))
        .await
        .unwrap();
    let source = SpApiTokenSource::builder()
        .lwa_url(em.lwa_url())
        .credentials(LwaCredentials::new(
            em.client_id(),
            em.client_secret(),
            em.refresh_token("default").unwrap(),
        ))
        .build()
        .unwrap();
    let layer = RestrictedDataTokenLayer::builder(source)
        .allow_origin(em.origin())
        .build()
        .unwrap();
    let request = |target: TargetApplication| {
        let mut request = http::Request::get(em.url("/orders/v0/orders/1/address"))
            .body(())
            .unwrap();
        request.extensions_mut().insert(target);
        request
    };
    let handed = layer.token_for(&request(target.clone())).await.unwrap();
    let handed = handed.unwrap();
    assert_eq!(handed.request().target_application(), Some(target.as_str()));
    assert_eq!(em.counters().token_calls, 1);
    // The emulator knows only the beta form: the bare id is refused, so the suffix did reach it.
    assert!(
        layer
            .token_for(&request(TargetApplication::new(app)))
            .await
            .is_err()
    );
}

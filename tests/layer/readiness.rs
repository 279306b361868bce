//! Readiness: while a request waits for its token, the layer holds none of the inner service's
//! capacity, and drives the inner service to readiness once the token arrives.

use crate::support::common;

use std::time::Duration;

use common::{ScriptedSource, echo_token, get, token_value};
use spapi_rdt::RestrictedDataTokenLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_pass_through_request_is_served_while_a_restricted_one_waits_for_its_token() {
    let source = ScriptedSource::new().delay(Duration::from_secs(10));
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let mut client = ServiceBuilder::new()
        .layer(rdt)
        .layer(ConcurrencyLimitLayer::new(1))
        .service(echo_token());

    let restricted = client
        .ready()
        .await
        .unwrap()
        .call(get("/orders/v0/orders/1/address"));
    let restricted = tokio::spawn(restricted);
    tokio::task::yield_now().await;
    assert_eq!(source.calls(), 1);

    // The only slot below the layer is free: the unrestricted request goes through at once.
    let passed = tokio::time::timeout(Duration::from_secs(1), async {
        client
            .ready()
            .await
            .unwrap()
            .call(get("/sellers/v1/marketplaceParticipations"))
            .await
    })
    .await
    .expect("the pass-through request was blocked by the waiting one")
    .unwrap();
    assert_eq!(passed, "none");
    assert!(!restricted.is_finished());

    // The token arrives after 10 s; the waiting request then takes the slot and goes on.
    assert_eq!(restricted.await.unwrap().unwrap(), token_value(1));
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_takes_the_slot_only_when_it_is_free() {
    // A second handle holds the only slot (polled ready, not yet called) while the token arrives:
    // the waiting request waits for the slot, then goes on once it is released.
    let source = ScriptedSource::new().delay(Duration::from_secs(1));
    let rdt = RestrictedDataTokenLayer::new(source.source());
    let mut client = ServiceBuilder::new()
        .layer(rdt)
        .layer(ConcurrencyLimitLayer::new(1))
        .service(echo_token());
    let restricted = tokio::spawn(
        client
            .ready()
            .await
            .unwrap()
            .call(get("/orders/v0/orders/1/address")),
    );
    tokio::task::yield_now().await;
    // `client` still holds the slot it was polled ready with; drop it to release the slot.
    let mut other = client.clone();
    drop(client);
    other.ready().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!restricted.is_finished(), "it went on without the slot");
    drop(other);
    assert_eq!(restricted.await.unwrap().unwrap(), token_value(1));
}

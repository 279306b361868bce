//! Runs the stack of each example against the emulator, in-process: the examples' own code, included
//! as modules, so a broken example fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)]
#[path = "../examples/custom_source.rs"]
mod custom_source;
#[allow(dead_code)]
#[path = "../examples/hyper_client.rs"]
mod hyper_client;
#[allow(dead_code)]
#[path = "../examples/reqwest_middleware.rs"]
mod reqwest_mw;

use http::StatusCode;
use spapi_rdt::testing::Emulator;

// ---------------------------------------------------------------------------------------------
// hyper_client, reqwest_middleware, custom_source
// ---------------------------------------------------------------------------------------------

fn is_restricted(path: &str) -> bool {
    path.starts_with("/orders/v0/") || path.starts_with("/mfn/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_stack_gets_pii_for_restricted_calls_only() {
    let emulator = hyper_client::start_emulator().await.unwrap();
    let outcome = hyper_client::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 10);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = is_restricted(&call.path).then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    let get_order = outcome
        .calls
        .iter()
        .find(|c| c.path == "/orders/v0/orders/902-3159896-1390916")
        .unwrap();
    // The layer asked for the usual data elements.
    assert!(get_order.body.contains("ShippingAddress"), "{get_order:?}");
    assert!(get_order.body.contains("BuyerInfo"), "{get_order:?}");

    let counters = emulator.counters();
    // getOrder, getOrderAddress, getShipment for `default`, getOrderBuyerInfo for seller-b, and a
    // fresh getOrderAddress token after the revocation: one token per operation, not per order.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(hyper_client::SELLER_B), 1);
    assert_eq!(
        counters.restricted_forbidden, 1,
        "the revoked token was refused once"
    );
    assert_eq!(counters.pii_withheld, 0);
    assert_eq!(counters.unrestricted_calls, 3);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_middleware_stack_gets_pii_with_a_seller_per_request() {
    let emulator = reqwest_mw::start_emulator().await.unwrap();
    let outcome = reqwest_mw::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 7);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = (call.what != "getMarketplaceParticipations").then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.what == "createShipment" && c.body.contains("Jane Doe"))
    );
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.seller.as_str() == reqwest_mw::SELLER_B)
    );
    let counters = emulator.counters();
    // getOrder, getOrderAddress (two orders, one token), createShipment, seller-b's
    // getOrderBuyerInfo, and getOrderAddress again after the revocation.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(reqwest_mw::SELLER_B), 1);
    assert_eq!(counters.restricted_forbidden, 1);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_source_asks_the_token_service_once_per_operation() {
    let emulator = Emulator::start().await.unwrap();
    let outcome = custom_source::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), custom_source::PATHS.len());
    for call in &outcome.calls {
        if call.path.ends_with("/regulatedInfo") {
            let error = call.result.as_ref().unwrap_err();
            // The refusal came back through the token service with its cure.
            assert!(error.contains("regulatedInfo"), "{error}");
            assert!(error.contains("InvalidInput"), "{error}");
            assert!(error.contains("authorize the application again"), "{error}");
            assert!(!error.contains("Atz"), "no token in errors: {error}");
        } else {
            let (status, pii) = call.result.as_ref().unwrap();
            assert_eq!(*status, StatusCode::OK, "{call:?}");
            assert_eq!(pii.as_deref(), Some("served"), "{call:?}");
        }
    }
    // getOrderAddress, getOrderItems, getShippingLabel and the refused getOrderRegulatedInfo: the
    // second refused call was answered from the layer's memory of the refusal.
    assert_eq!(outcome.service_requests, 4);
    assert_eq!(emulator.counters().token_calls, 4);
    assert_eq!(outcome.stats.remembered_errors, 1);
    assert_eq!(outcome.stats.hits, 3);
}

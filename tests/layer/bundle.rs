//! The bundling strategy: one token per seller for every generic operation, and isolation of an
//! operation Amazon refuses.

use crate::support::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{echo_token, get};
use futures::future::join_all;
use http::StatusCode;
use spapi_rdt::catalog::{Catalog, PathKind};
use spapi_rdt::control::Strategy;
use spapi_rdt::{
    BoxError, IssuedToken, RestrictedDataTokenLayer, SecretToken, TokenRequest, error::Error,
    error::SourceError, source_fn,
};
use tower::{Layer, ServiceExt};

/// A source that refuses, like Amazon, any request naming one of `denied` paths.
fn source(
    denied: &'static [&'static str],
) -> (
    impl spapi_rdt::TokenSource,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<TokenRequest>>>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (Arc::clone(&calls), Arc::clone(&seen));
    let source = source_fn(move |request: TokenRequest| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        s.lock().unwrap().push(request.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(r) = request
                .resources()
                .iter()
                .find(|r| denied.contains(&r.path()))
            {
                return Err(SourceError::permanent(format!(
                    "Application does not have access to one or more requested data elements: {}",
                    r.path()
                ))
                .with_status(StatusCode::BAD_REQUEST)
                .with_code("InvalidInput"));
            }
            let token = SecretToken::new(format!("Atz.sprdt|bundle-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    });
    (source, calls, seen)
}

/// A sample request path for every generic operation of the catalogue.
fn generic_paths() -> Vec<(http::Method, String)> {
    Catalog::amazon()
        .operations()
        .iter()
        .filter(|op| op.path_kind() == PathKind::Generic)
        .map(|op| (op.method().clone(), op.template().replace(['{', '}'], "")))
        .collect()
}

async fn call(
    layer: &RestrictedDataTokenLayer,
    method: &http::Method,
    path: &str,
) -> Result<String, BoxError> {
    let mut request = get(path);
    *request.method_mut() = method.clone();
    layer.layer(echo_token()).oneshot(request).await
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_across_the_catalogue_make_one_token_call() {
    let (source, calls, seen) = source(&[]);
    let layer = RestrictedDataTokenLayer::builder(source)
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    let paths = generic_paths();
    assert_eq!(paths.len(), 31);
    let results = join_all((0..1000).map(|i| {
        let (method, path) = &paths[i % paths.len()];
        call(&layer, method, path)
    }))
    .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_deref().ok() == Some("Atz.sprdt|bundle-1"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let request = &seen.lock().unwrap()[0];
    assert_eq!(request.resources().len(), 31);
    let get_order = request
        .resources()
        .iter()
        .find(|r| r.path() == "/orders/v0/orders/{orderId}")
        .unwrap();
    assert_eq!(
        get_order.data_elements().len(),
        2,
        "the usual data elements are asked for"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_operation_is_isolated_and_the_rest_still_work() {
    let denied = "/orders/v0/orders/{orderId}/regulatedInfo";
    let (source, calls, seen) = source(&["/orders/v0/orders/{orderId}/regulatedInfo"]);
    let layer = RestrictedDataTokenLayer::builder(source)
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    let paths = generic_paths();
    let results = join_all((0..310).map(|i| {
        let (method, path) = &paths[i % paths.len()];
        call(&layer, method, path)
    }))
    .await;
    let mut failed = 0;
    for (i, r) in results.iter().enumerate() {
        let (_, path) = &paths[i % paths.len()];
        if path.ends_with("/regulatedInfo") {
            let err = r.as_ref().unwrap_err().downcast_ref::<Error>().unwrap();
            let source = err.source_error().unwrap();
            assert!(source.message().contains("regulatedInfo"), "{source}");
            assert_eq!(source.code(), Some("InvalidInput"));
            failed += 1;
        } else {
            assert!(
                r.as_deref().unwrap().starts_with("Atz.sprdt|bundle-"),
                "{path}: {r:?}"
            );
        }
    }
    assert_eq!(failed, 10);
    // One refused bundle, seven probes over five halvings (two where the left half is refused and
    // the right one passes), one final bundle: far fewer calls than operations.
    let n = calls.load(Ordering::SeqCst);
    assert_eq!(n, 9, "{n} token calls");
    let last = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.resources().len(), 30);
    assert!(last.resources().iter().all(|r| r.path() != denied));
    // The refusal is remembered: more calls for it do not reach the source.
    for _ in 0..5 {
        assert!(
            call(
                &layer,
                &http::Method::GET,
                "/orders/v0/orders/1/regulatedInfo"
            )
            .await
            .is_err()
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), n);
    // The refresh an hour later leaves it out without asking again.
    tokio::time::advance(Duration::from_secs(3400)).await;
    call(&layer, &http::Method::GET, "/orders/v0/orders/1/address")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), n + 1);
    assert_eq!(seen.lock().unwrap().last().unwrap().resources().len(), 30);
}

/// Every generic path of the catalogue, as the source sees them (templates).
fn every_template() -> &'static [&'static str] {
    let templates: Vec<&'static str> = Catalog::amazon()
        .operations()
        .iter()
        .filter(|op| op.path_kind() == PathKind::Generic)
        .map(|op| &*Box::leak(op.template().to_owned().into_boxed_str()))
        .collect();
    Box::leak(templates.into_boxed_slice())
}

#[tokio::test(start_paused = true)]
async fn a_bundle_refused_as_a_whole_fails_without_bisecting_and_is_remembered() {
    let (source, calls, _) = source(every_template());
    let layer = RestrictedDataTokenLayer::builder(source)
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    let paths = generic_paths();
    let results = join_all((0..100).map(|i| {
        let (method, path) = &paths[i % paths.len()];
        call(&layer, method, path)
    }))
    .await;
    for r in &results {
        let err = r.as_ref().unwrap_err().downcast_ref::<Error>().unwrap();
        assert_eq!(err.source_error().unwrap().code(), Some("InvalidInput"));
    }
    // The bundle, and its two halves: both refused, so the bundle is refused as a whole.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Past the permanent-error TTL, the refusal is still remembered: no call.
    tokio::time::advance(Duration::from_secs(120)).await;
    let err = call(&layer, &http::Method::GET, "/orders/v0/orders/1/address")
        .await
        .unwrap_err();
    let err = err.downcast_ref::<Error>().unwrap();
    assert_eq!(err.source_error().unwrap().code(), Some("InvalidInput"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Past the recheck period, the bundle is tried again, once more for three calls.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        call(&layer, &http::Method::GET, "/orders/v0/orders/1/address")
            .await
            .is_err()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn refusals_survive_an_invalidated_bundle_token() {
    let (source, calls, seen) = source(&["/orders/v0/orders/{orderId}/regulatedInfo"]);
    let layer = RestrictedDataTokenLayer::builder(source)
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    call(&layer, &http::Method::GET, "/orders/v0/orders/1/address")
        .await
        .unwrap();
    let isolated = calls.load(Ordering::SeqCst);
    assert!(layer.invalidate(&get("/orders/v0/orders/1/address")));
    // One call for the new bundle, without the refused operation: no isolation again.
    call(&layer, &http::Method::GET, "/orders/v0/orders/1/address")
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), isolated + 1);
    assert_eq!(seen.lock().unwrap().last().unwrap().resources().len(), 30);
    assert!(
        call(
            &layer,
            &http::Method::GET,
            "/orders/v0/orders/1/regulatedInfo"
        )
        .await
        .is_err()
    );
    assert_eq!(calls.load(Ordering::SeqCst), isolated + 1);
}

#[tokio::test(start_paused = true)]
async fn one_isolation_spends_a_bounded_number_of_token_calls() {
    // Every other operation of the second half refused: too many offenders to find one by one.
    let templates = every_template();
    let refused: Vec<&'static str> = templates[15..].iter().copied().step_by(2).collect();
    assert_eq!(refused.len(), 8);
    let (source, calls, seen) = source(Box::leak(refused.clone().into_boxed_slice()));
    let layer = RestrictedDataTokenLayer::builder(source)
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    let paths = generic_paths();
    let results = join_all(
        paths
            .iter()
            .map(|(method, path)| call(&layer, method, path)),
    )
    .await;
    // The bundle, the isolation's budget of 2 * ceil(log2(31)) = 10 probes, and the final bundle
    // of the operations the probes proved good.
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    let last = seen.lock().unwrap().last().unwrap().clone();
    assert!(
        last.resources()
            .iter()
            .all(|r| !refused.contains(&r.path()))
    );
    // The first half passed its probe: all of it is served. Refused operations fail with Amazon's
    // refusal; the rest of the second half is served or, if the budget ran out before it was
    // cleared, refused with the error of the set it was found in.
    for (i, (r, template)) in results.iter().zip(templates).enumerate() {
        match r {
            Ok(_) => assert!(!refused.contains(template), "{template}"),
            Err(err) => {
                assert!(i >= 15, "{template} was not served");
                let err = err.downcast_ref::<Error>().unwrap();
                assert_eq!(err.source_error().unwrap().code(), Some("InvalidInput"));
            }
        }
    }
}

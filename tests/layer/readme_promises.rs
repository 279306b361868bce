//! README promises that no other test checks: the sandbox and report policies, bundles split at
//! 50 resources and bundles with narrowed data elements, and the reqwest-middleware front end
//! sharing one cache and one rate limiter with the tower layer.

use crate::support::common;

use common::{NA, ScriptedSource, echo_token, get, token_value};
use http::Method;
use spapi_rdt::catalog::{Catalog, DataElement, DataElements, PathKind, RestrictedOperation};
use spapi_rdt::control::{ReportPolicy, RestrictedReport, SandboxPolicy, Strategy, TokenMode};
use spapi_rdt::{Origin, Region, RestrictedDataTokenLayer, TokenQuota};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

const ADDRESS: &str = "/orders/v0/orders/1/address";

async fn call(layer: &RestrictedDataTokenLayer, request: http::Request<()>) -> String {
    layer.layer(echo_token()).oneshot(request).await.unwrap()
}

fn on(origin: &Origin, path: &str) -> http::Request<()> {
    http::Request::get(format!("{}{path}", origin.as_str()))
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn sandbox_hosts_get_no_token_by_default_and_one_from_the_sandbox_with_fetch() {
    let sandbox = Region::NorthAmerica.sandbox_origin();
    // Default: SandboxPolicy::Skip.
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::new(source.source());
    assert_eq!(call(&layer, on(&sandbox, ADDRESS)).await, "none");
    assert_eq!(source.calls(), 0);
    // Production is unaffected.
    assert_eq!(call(&layer, get(ADDRESS)).await, token_value(1));

    // Fetch: the sandbox gets its own token, asked of the sandbox origin.
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .sandbox_policy(SandboxPolicy::Fetch)
        .build()
        .unwrap();
    assert_eq!(call(&layer, on(&sandbox, ADDRESS)).await, token_value(1));
    assert_eq!(call(&layer, get(ADDRESS)).await, token_value(2));
    let seen = source.seen.lock().unwrap();
    assert_eq!(seen[0].origin(), &sandbox);
    assert_eq!(seen[1].origin().as_str(), NA);
}

#[tokio::test(start_paused = true)]
async fn report_policy_never_gives_no_report_document_a_token_even_when_marked() {
    let document = "/reports/2021-06-30/documents/DOC-1";
    let marked = || {
        let mut request = get(document);
        request.extensions_mut().insert(RestrictedReport);
        request
    };
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .report_policy(ReportPolicy::Never)
        .build()
        .unwrap();
    assert_eq!(call(&layer, marked()).await, "none");
    assert_eq!(call(&layer, get(document)).await, "none");
    assert_eq!(source.calls(), 0);
    // Forcing a token still works, for the specific path.
    let mut forced = marked();
    forced.extensions_mut().insert(TokenMode::Force);
    assert_eq!(call(&layer, forced).await, token_value(1));
    assert_eq!(
        source.seen.lock().unwrap()[0].resources()[0].path(),
        document
    );

    // The default (WhenMarked) gives the marked one a token: the policy is what made the difference.
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::new(source.source());
    assert_eq!(call(&layer, marked()).await, token_value(1));
}

/// Amazon's catalogue plus synthetic generic operations, `extra` of them.
fn big_catalogue(extra: usize) -> Catalog {
    let mut catalog = Catalog::amazon();
    for i in 0..extra {
        catalog.push(RestrictedOperation::new(
            "Synthetic",
            format!("getThing{i}"),
            Method::GET,
            format!("/synthetic/v1/things{i}/{{thingId}}"),
        ));
    }
    catalog
}

#[tokio::test(start_paused = true)]
async fn bundles_hold_at_most_50_resources() {
    let catalog = big_catalogue(40);
    let generic: Vec<&RestrictedOperation> = catalog
        .operations()
        .iter()
        .filter(|op| op.path_kind() == PathKind::Generic)
        .collect();
    assert!(
        generic.len() > 50 && generic.len() <= 100,
        "{}",
        generic.len()
    );
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .catalog(catalog.clone())
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    // Every generic operation, once: two bundles, so two token calls.
    for op in &generic {
        let path = op.template().replace('{', "x").replace('}', "");
        let request = http::Request::builder()
            .method(op.method().clone())
            .uri(format!("{NA}{path}"))
            .body(())
            .unwrap();
        assert_ne!(call(&layer, request).await, "none", "{}", op.name());
    }
    assert_eq!(source.calls(), 2);
    let seen = source.seen.lock().unwrap();
    let sizes: Vec<usize> = seen.iter().map(|r| r.resources().len()).collect();
    assert_eq!(sizes, [50, generic.len() - 50]);
    // Together the two bundles name every generic template once.
    let mut named: Vec<(String, &str)> = seen
        .iter()
        .flat_map(|r| r.resources())
        .map(|r| (r.method().to_string(), r.path()))
        .collect();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), generic.len());
}

#[tokio::test(start_paused = true)]
async fn a_bundle_request_that_narrows_its_data_elements_gets_a_token_of_its_own() {
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .strategy(Strategy::Bundle)
        .build()
        .unwrap();
    // The bundle.
    assert_eq!(call(&layer, get(ADDRESS)).await, token_value(1));
    let bundle = source.seen.lock().unwrap()[0].resources().len();
    assert!(bundle > 1, "{bundle}");
    // Narrowed: its own token, for its own operation and exactly those elements.
    let narrowed = || {
        let mut request = get("/orders/v0/orders/1");
        request
            .extensions_mut()
            .insert(DataElements::only(DataElement::ShippingAddress));
        request
    };
    assert_eq!(call(&layer, narrowed()).await, token_value(2));
    assert_eq!(call(&layer, narrowed()).await, token_value(2));
    // Not narrowed: the bundle's token again.
    assert_eq!(
        call(&layer, get("/orders/v0/orders/1")).await,
        token_value(1)
    );
    assert_eq!(source.calls(), 2);
    let seen = source.seen.lock().unwrap();
    let own = seen[1].resources();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].path(), "/orders/v0/orders/{orderId}");
    assert_eq!(
        own[0].data_elements(),
        DataElements::only(DataElement::ShippingAddress)
    );
}

/// A loopback server that answers with the token it was sent.
async fn echo_server() -> (Origin, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = Origin::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        headers
            .get("x-amz-access-token")
            .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned())
    });
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (origin, task)
}

#[tokio::test]
async fn the_middleware_shares_the_layers_cache_and_rate_limiter() {
    let (origin, server) = echo_server().await;
    let source = ScriptedSource::new();
    // One token call at once, then one a second: the second fetch must wait, whichever front end
    // makes it.
    let layer = RestrictedDataTokenLayer::builder(source.source())
        .origins([origin.clone()])
        .quota(TokenQuota::new(1.0, 1).unwrap())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    )
    .with(layer.middleware())
    .build();
    let via_middleware = |path: &str| {
        let request = client.get(format!("{}{path}", origin.as_str()));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };

    // The tower layer fetches; the middleware is served from the same cache.
    assert_eq!(call(&layer, on(&origin, ADDRESS)).await, token_value(1));
    assert_eq!(via_middleware(ADDRESS).await, token_value(1));
    assert_eq!(source.calls(), 1);
    // The middleware fetches another operation's token: the shared limiter makes it wait for the
    // cell the tower layer's fetch took.
    assert_eq!(
        via_middleware("/orders/v0/orders/1/buyerInfo").await,
        token_value(2)
    );
    assert_eq!(source.calls(), 2);
    let stats = layer.stats();
    assert_eq!(stats.rate_limit_waits, 1, "{stats:?}");
    assert_eq!((stats.hits, stats.misses, stats.fetches), (1, 2, 2));
    // And the tower layer is served the middleware's token.
    assert_eq!(
        call(&layer, on(&origin, "/orders/v0/orders/2/buyerInfo")).await,
        token_value(2)
    );
    assert_eq!(source.calls(), 2);
    server.abort();
}

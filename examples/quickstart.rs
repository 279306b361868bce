//! The main job: a client stack with the layer calls restricted and unrestricted SP-API operations
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! for several orders, and reports what happened.
//!
//! Run it with `cargo run --example quickstart`. It needs no credentials and no network: the token
//! source is an in-process stand-in and the "HTTP client" is a service that answers like SP-API.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spapi_rdt::{
    BoxError, IssuedToken, RestrictedDataTokenLayer, SecretToken, SourceError, TokenRequest,
    source_fn,
};
use tower::{ServiceBuilder, ServiceExt};

const NA: &str = "https://sellingpartnerapi-na.amazon.com";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let token_calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&token_calls);
    let source = source_fn(move |request: TokenRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            println!("  token call {n}: {:?}", request.resources());
            let token =
                SecretToken::new(format!("Atz.sprdt|demo-{n}")).map_err(SourceError::permanent)?;
            Ok(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    });
    let layer = RestrictedDataTokenLayer::new(source);
    let client = ServiceBuilder::new().layer(layer.clone()).service_fn(
        |request: http::Request<()>| async move {
            let restricted = request.headers().contains_key("x-amz-access-token");
            Ok::<_, Infallible>((request.uri().path().to_owned(), restricted))
        },
    );

    let orders = [
        "902-3159896-1390916",
        "113-6740393-2451453",
        "026-1520163-6049104",
    ];
    let mut calls = 0;
    let mut with_rdt = 0;
    for order in orders {
        for path in [
            format!("/orders/v0/orders/{order}/address"),
            format!("/orders/v0/orders/{order}/buyerInfo"),
            format!("/orders/v0/orders/{order}"),
            format!("/orders/2026-01-01/orders/{order}"),
        ] {
            let request = http::Request::get(format!("{NA}{path}")).body(())?;
            let (path, restricted) = client.clone().oneshot(request).await?;
            calls += 1;
            with_rdt += usize::from(restricted);
            println!(
                "  {path:<52} {}",
                if restricted { "RDT" } else { "no RDT needed" }
            );
        }
    }
    let stats = layer.stats();
    println!();
    println!("calls made:        {calls}");
    println!("calls with an RDT: {with_rdt}");
    println!("token calls:       {}", token_calls.load(Ordering::SeqCst));
    println!("cache hits:        {}", stats.hits);
    Ok(())
}

//! A [tower] layer that gives Amazon Selling Partner API calls for buyers' personal data the
//! Restricted Data Token (RDT) they need, fetched once, cached, rate-limited and never leaked.
//!
//! SP-API operations that return personal data (order addresses, buyer info, shipping labels,
//! restricted reports) must carry an RDT in `x-amz-access-token` instead of the LWA access token.
//! [`RestrictedDataTokenLayer`] does it for any `tower::Service<http::Request<B>>`:
//!
//! 1. it classifies each request against Amazon's catalogue of restricted operations
//!    ([`catalog`], [`matcher`]); other requests pass through untouched, at no cost;
//! 2. it asks for a token for the generic path wherever Amazon accepts one, so a single token serves
//!    every order id of a seller for its whole life;
//! 3. it caches tokens per seller, origin and resource, refreshes them in the background before they
//!    expire, and makes concurrent misses share a single fetch;
//! 4. it calls the [`TokenSource`] under a per-seller rate limit (Amazon allows 1 call a second with a
//!    burst of 10), with bounded retries and remembered failures;
//! 5. it inserts the token as a sensitive header value, and nothing else changes.
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::{IssuedToken, RestrictedDataTokenLayer, SecretToken, error::SourceError, TokenRequest, source_fn};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), spapi_rdt::BoxError> {
//! // Where tokens come from: here a stand-in; in production `SpApiTokenSource`.
//! let source = source_fn(|_request: TokenRequest| async {
//!     let token = SecretToken::new("Atz.sprdt|example").map_err(SourceError::permanent)?;
//!     Ok(IssuedToken::new(token, Duration::from_secs(3600)))
//! });
//! let layer = RestrictedDataTokenLayer::new(source);
//! let mut client = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service_fn(|request: http::Request<()>| async move {
//!         // Your HTTP client goes here; this one reports whether a token came along.
//!         Ok::<_, std::convert::Infallible>(request.headers().contains_key("x-amz-access-token"))
//!     });
//!
//! let address = http::Request::get(
//!     "https://sellingpartnerapi-na.amazon.com/orders/v0/orders/902-3159896-1390916/address",
//! )
//! .body(())?;
//! assert!(client.ready().await?.call(address).await?);
//!
//! let catalog = http::Request::get(
//!     "https://sellingpartnerapi-na.amazon.com/catalog/2022-04-01/items/B000000000",
//! )
//! .body(())?;
//! assert!(!client.ready().await?.call(catalog).await?);
//! assert_eq!(layer.stats().fetches, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `reqwest` (default): `SpApiTokenSource`, the source that calls Amazon's Tokens API with an LWA
//!   access token, over reqwest. It brings no TLS by itself: see "TLS" below.
//! - `rustls` (default), `rustls-no-provider`, `native-tls`: the TLS of the source's own client,
//!   and of `RedisFleet`'s connection when its URL is `rediss://`.
//! - `reqwest-middleware`: [`RestrictedDataTokenLayer::middleware`], the same layer as a
//!   `reqwest_middleware::Middleware`.
//! - `redis`: `spapi_rdt::fleet::RedisFleet`, fleet mode on Redis: replicas share one token fetch
//!   per key and one rate limit per seller, with tokens encrypted at rest ([`fleet`]).
//!
//! The SP-API emulator that the examples and tests run on is a package of its own,
//! `spapi-rdt-emulator`, and the sidecar is `spapi-rdt-proxy`.
//!
//! # TLS
//! The TLS stack is the application's choice; the crate only follows it. The default feature
//! `rustls` builds the source's client on rustls with the aws-lc-rs crypto provider, as reqwest does
//! by default. An application that already uses rustls with another provider (ring, a FIPS build)
//! must not add that one: with two providers compiled in, rustls cannot pick a process default and
//! panics at start-up ("Could not automatically determine the process-level CryptoProvider from
//! Rustls crate features"). Such an application turns the default features off and takes
//! `rustls-no-provider`, then installs its provider before building the source
//! (`rustls::crypto::ring::default_provider().install_default()`); without one, `build()` returns
//! `SourceBuildError::NoCryptoProvider` rather than panicking. `native-tls` uses the platform's TLS
//! library (OpenSSL on Linux) and no rustls at all. Whatever the features, a client of your own
//! given to `SpApiTokenSourceBuilder::http_client` is used as it is.
//!
//! ```toml
//! # An application on rustls with ring:
//! spapi-rdt = { version = "0.1", default-features = false, features = ["rustls-no-provider"] }
//! ```
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod cache;
pub mod catalog;
pub mod control;
mod core;
pub mod delegate;
mod deprecation;
pub mod error;
pub mod fleet;
pub mod future;
mod header;
mod layer;
mod limit;
pub mod matcher;
#[cfg(feature = "reqwest-middleware")]
pub mod middleware;
pub mod pacing;
pub mod recover;
mod resource;
mod service;
mod source;
mod stats;
mod time;
mod token;

pub use header::X_AMZ_ACCESS_TOKEN;
pub use layer::{RestrictedDataTokenLayer, RestrictedDataTokenLayerBuilder};
pub use limit::TokenQuota;
pub use resource::{Origin, Region, RestrictedResource, SellerId, TokenRequest};
pub use service::RestrictedDataTokenService;
pub use source::{SourceFn, TokenFuture, TokenSource, source_fn};
pub use stats::Stats;
pub use token::{IssuedToken, SecretToken};

#[cfg(feature = "reqwest")]
pub use source::{LwaCredentials, SpApiTokenSource, SpApiTokenSourceBuilder};

/// Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (as
/// `cargo fuzz` builds): not part of the API.
#[cfg(all(fuzzing, feature = "reqwest"))]
#[doc(hidden)]
pub use source::fuzzing;

/// The README's code blocks, compiled as doc tests so that they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The boxed error type of the layer's service, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

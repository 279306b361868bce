//! Recovering from a stale token: a 403 on a restricted call invalidates exactly the token it was
//! made with, and a replayable request is sent once more with a fresh one.
//!
//! Amazon answers a restricted call made with a revoked or otherwise stale RDT with 403
//! `Unauthorized`. [`RecoverStaleTokenLayer`] goes outside a [`RestrictedDataTokenLayer`](crate::RestrictedDataTokenLayer) built from
//! the same layer value:
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::{IssuedToken, RestrictedDataTokenLayer, SecretToken, error::SourceError, TokenRequest, source_fn};
//!
//! let rdt = RestrictedDataTokenLayer::new(source_fn(|_request: TokenRequest| async {
//!     let token = SecretToken::new("Atz.sprdt|example").map_err(SourceError::permanent)?;
//!     Ok(IssuedToken::new(token, Duration::from_secs(3600)))
//! }));
//! let client = tower::ServiceBuilder::new()
//!     .layer(rdt.recover_stale_tokens())
//!     .layer(rdt)
//!     .service_fn(|_request: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = client;
//! ```
//!
//! A request is replayed only when its body can be cloned ([`ReplayBody`]); otherwise the 403 is
//! returned as it is, after the token was invalidated, so the next request gets a fresh one.
//!
//! # Report documents of restricted types
//!
//! Under [`ReportPolicy::WhenRefused`](crate::control::ReportPolicy::WhenRefused), a
//! `getReportDocument` request not marked [`RestrictedReport`](crate::control::RestrictedReport) goes without a token, and a 403 to
//! it is replayed once marked, with a token for its document's path. A response that comes from
//! such a replay carries [`ReplayedAsRestrictedReport`](crate::control::ReplayedAsRestrictedReport) in its extensions, so that the caller can
//! mark that document at once next time.
//!
//! # 403s that are not about the token
//!
//! Amazon also answers 403 to a request the token cannot help (another seller's order id, a role
//! the application lacks). So that a client looping over such requests cannot spend the seller's
//! token quota, a 403 drops a key's token **at most once per
//! [`refusal_period`](crate::RestrictedDataTokenLayerBuilder::refusal_period)** (60 s by default):
//! within the period after a drop, further 403s on that key keep the token and are returned as
//! they are, without a replay. One exception resets the period: when the request replayed after
//! the drop succeeds with the new token, the dropped token was stale indeed, and the next 403 may
//! drop a token again at once. Both front ends (this layer and the reqwest middleware) follow the
//! rule; [`RestrictedDataTokenLayer::invalidate`](crate::RestrictedDataTokenLayer::invalidate) is not limited by it.

pub mod future;
mod layer;
mod service;

pub use layer::RecoverStaleTokenLayer;
pub use service::RecoverStaleToken;

/// A copy of `request` for a second attempt, when its body can be replayed.
pub(crate) fn replayable<B: ReplayBody>(request: &http::Request<B>) -> Option<http::Request<B>> {
    let body = request.body().try_clone()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// Request bodies that can be sent twice.
///
/// Implemented for the common in-memory bodies (`String`, `Vec<u8>`, `Bytes`, `()`, http-body-util's
/// `Full` and `Empty`, and `reqwest::Body` when it is not a stream); implement it for your own body
/// type, returning `None` when a body cannot be replayed (a stream). Streaming bodies that belong to
/// other crates (hyper's `Incoming`, axum's `Body`) cannot be replayed: convert them first, or leave
/// recovery out (a 403 is then returned as it is, and the token stays cached until it expires or
/// [`RestrictedDataTokenLayer::invalidate`](crate::RestrictedDataTokenLayer::invalidate) drops it).
pub trait ReplayBody: Sized {
    /// A copy of the body for a second attempt, if one can be made.
    fn try_clone(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($t:ty),*) => {$(
        impl ReplayBody for $t {
            fn try_clone(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}

replay_by_clone!(
    (),
    String,
    Vec<u8>,
    bytes::Bytes,
    &'static str,
    &'static [u8]
);

impl<D: Clone> ReplayBody for http_body_util::Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

#[cfg(feature = "reqwest")]
impl ReplayBody for reqwest::Body {
    fn try_clone(&self) -> Option<Self> {
        // In-memory bodies can be copied; streams cannot.
        self.as_bytes()
            .map(|bytes| reqwest::Body::from(bytes::Bytes::copy_from_slice(bytes)))
    }
}

//! spapi-rdt
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod catalog;
pub mod matcher;
mod resource;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod token;

pub use resource::{Origin, OriginError, Region, RestrictedResource, SellerId, TokenRequest};
pub use source::{ErrorKind, SourceError, TokenFuture, TokenSource, source_fn};
pub use token::{InvalidToken, IssuedToken, SecretToken};

/// The boxed error type of the layer's service, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

//! Where tokens come from: the [`TokenSource`] trait and its implementations.
//!
//! A source turns a [`TokenRequest`] into an [`IssuedToken`]. The layer calls it only on a cache miss,
//! once per key however many requests are waiting, and only after the seller's rate limiter allowed
//! it. Write your own in a few lines with [`source_fn`]:
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::{source_fn, IssuedToken, SecretToken, error::SourceError, TokenRequest};
//!
//! // A source that asks an internal token service; here, a stand-in that makes up a token.
//! let source = source_fn(|request: TokenRequest| async move {
//!     let value = format!("Atz.sprdt|for-{}", request.seller());
//!     let token = SecretToken::new(value).map_err(SourceError::permanent)?;
//!     Ok::<_, SourceError>(IssuedToken::new(token, Duration::from_secs(3600)))
//! });
//! # let _ = source;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::SourceError;
use crate::resource::TokenRequest;
use crate::token::IssuedToken;

#[cfg(feature = "reqwest")]
mod lwa;
#[cfg(feature = "reqwest")]
mod retry_after;
#[cfg(feature = "reqwest")]
mod spapi;

#[cfg(feature = "reqwest")]
pub use lwa::LwaCredentials;
#[cfg(feature = "reqwest")]
pub use spapi::{SpApiTokenSource, SpApiTokenSourceBuilder};

/// Entry points for the fuzz targets in `fuzz/`.
#[cfg(all(fuzzing, feature = "reqwest"))]
pub mod fuzzing {
    pub use super::lwa::fuzz_lwa_answer;
    pub use super::spapi::fuzz_tokens_answer;
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<IssuedToken, SourceError>> + Send>>;

/// Something that issues Restricted Data Tokens.
///
/// Implement it for a type of your own, or wrap a closure with [`source_fn`]. `Arc<T>`, `Box<T>` and
/// `dyn TokenSource` are sources too, so a source can be shared or boxed.
///
/// The returned future must be `'static`: clone what it needs from `self` before the `async` block.
pub trait TokenSource: Send + Sync + 'static {
    /// Issues one token covering every resource of `request`.
    fn fetch(&self, request: TokenRequest) -> TokenFuture;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        (**self).fetch(request)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        (**self).fetch(request)
    }
}

/// A [`TokenSource`] made from a closure; see [`source_fn`].
#[derive(Clone)]
pub struct SourceFn<F> {
    f: F,
}

/// Makes a [`TokenSource`] from a closure `Fn(TokenRequest) -> impl Future<Output = Result<IssuedToken, SourceError>>`.
pub fn source_fn<F, Fut>(f: F) -> SourceFn<F>
where
    F: Fn(TokenRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<IssuedToken, SourceError>> + Send + 'static,
{
    SourceFn { f }
}

impl<F, Fut> TokenSource for SourceFn<F>
where
    F: Fn(TokenRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<IssuedToken, SourceError>> + Send + 'static,
{
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        Box::pin((self.f)(request))
    }
}

impl<F> fmt::Debug for SourceFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceFn").finish_non_exhaustive()
    }
}

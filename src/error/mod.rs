//! Every error of the crate, in one place.
//!
//! - [`Error`]: what the layer's service returns when a restricted request gets no token.
//! - [`SourceError`] and [`ErrorKind`]: what a [`TokenSource`](crate::TokenSource) reports.
//! - Building: [`BuildError`] (the layer), [`CatalogError`] (a catalogue of your own),
//!   [`UsagePlanError`] (a usage plan of your own), [`OriginError`], [`InvalidToken`], and with
//!   feature `reqwest` [`SourceBuildError`] and [`CredentialsError`] (the default source).
//! - Pacing: [`PacingError`] (a request its usage plan would hold too long).
//! - Fleet mode: [`FleetError`] (what a shared store reports), and with feature `redis`
//!   [`RedisFleetError`] and [`InvalidKey`].
//!
//! The service's error type is [`BoxError`](crate::BoxError), as in tower; errors of the inner service
//! pass through unchanged, and the layer's own are an [`Error`] inside, which you can downcast:
//!
//! ```
//! use spapi_rdt::{BoxError, error::Error};
//!
//! fn describe(err: &BoxError) -> String {
//!     match err.downcast_ref::<Error>() {
//!         Some(e) if e.is_timeout() => "the token took too long".to_owned(),
//!         Some(e) => format!("no token: {e}"),
//!         None => format!("the request failed: {err}"),
//!     }
//! }
//! # let _ = describe;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod catalog;
mod fleet;
mod pacing;
mod source;

pub use catalog::{CatalogError, UsagePlanError};
pub use fleet::FleetError;
#[cfg(feature = "redis")]
pub use fleet::{InvalidKey, RedisFleetError};
pub use pacing::PacingError;
pub use source::{ErrorKind, SourceError};

/// Why a restricted request could not get a Restricted Data Token. It never holds a secret.
#[derive(Clone)]
pub struct Error {
    kind: Kind,
}

/// What went wrong: a fetch's failure, which every request waiting for that fetch shares, or a
/// failure of this request alone.
#[derive(Clone)]
enum Kind {
    Fetch(FetchError),
    WaitTimedOut(Duration),
    NoRuntime,
    PolledAfterCompletion,
    MissingSeller,
}

impl Error {
    pub(crate) fn from_fetch(e: FetchError) -> Self {
        Error {
            kind: Kind::Fetch(e),
        }
    }

    pub(crate) fn wait_timed_out(waited: Duration) -> Self {
        Error {
            kind: Kind::WaitTimedOut(waited),
        }
    }

    pub(crate) fn no_runtime() -> Self {
        Error {
            kind: Kind::NoRuntime,
        }
    }

    pub(crate) fn missing_seller() -> Self {
        Error {
            kind: Kind::MissingSeller,
        }
    }

    pub(crate) fn polled_after_completion() -> Self {
        Error {
            kind: Kind::PolledAfterCompletion,
        }
    }

    /// The token source's error, when the source failed.
    pub fn source_error(&self) -> Option<&SourceError> {
        match &self.kind {
            Kind::Fetch(FetchError::Source(e)) => Some(e),
            _ => None,
        }
    }

    /// Whether the request waited past its deadline, or the fetch did.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::WaitTimedOut(_) | Kind::Fetch(FetchError::TimedOut(_))
        )
    }

    /// Whether the seller's token-call rate limit would have made the fetch wait too long.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.kind, Kind::Fetch(FetchError::RateLimited { .. }))
    }

    /// Whether the request carried no [`SellerId`](crate::SellerId) while the layer was built with
    /// [`require_seller`](crate::RestrictedDataTokenLayerBuilder::require_seller).
    pub fn is_missing_seller(&self) -> bool {
        matches!(self.kind, Kind::MissingSeller)
    }

    /// Whether trying again later can help.
    pub fn kind(&self) -> ErrorKind {
        match &self.kind {
            Kind::Fetch(e) => e.kind(),
            Kind::WaitTimedOut(_) => ErrorKind::Transient,
            Kind::NoRuntime | Kind::PolledAfterCompletion | Kind::MissingSeller => {
                ErrorKind::Permanent
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no restricted data token: ")?;
        match &self.kind {
            Kind::Fetch(FetchError::Source(e)) => fmt::Display::fmt(e, f),
            Kind::Fetch(FetchError::RateLimited { needed }) => write!(
                f,
                "the seller's token-call rate limit would delay the fetch by {needed:?}, past its deadline"
            ),
            Kind::Fetch(FetchError::TimedOut(d)) => {
                write!(f, "the token fetch did not finish within {d:?}")
            }
            Kind::Fetch(FetchError::Aborted) => {
                f.write_str("the token fetch was aborted (it panicked or its runtime stopped)")
            }
            Kind::Fetch(FetchError::NotCovered) => {
                f.write_str("the bundled token does not cover this operation")
            }
            Kind::WaitTimedOut(d) => write!(f, "no token arrived within {d:?}"),
            Kind::NoRuntime => f.write_str("a token fetch needs a Tokio runtime with time enabled"),
            Kind::PolledAfterCompletion => {
                f.write_str("the response future was polled after it completed")
            }
            Kind::MissingSeller => f.write_str(
                "the request names no seller (a `SellerId` extension), and the layer requires one",
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        match &self.kind {
            Kind::Fetch(FetchError::Source(e)) => d.field("source", e),
            Kind::Fetch(FetchError::RateLimited { needed }) => d.field("rate_limited_for", needed),
            Kind::Fetch(FetchError::TimedOut(t)) => d.field("fetch_timed_out", t),
            Kind::Fetch(FetchError::Aborted) => d.field("fetch_aborted", &true),
            Kind::Fetch(FetchError::NotCovered) => d.field("not_covered", &true),
            Kind::WaitTimedOut(t) => d.field("wait_timed_out", t),
            Kind::NoRuntime => d.field("no_runtime", &true),
            Kind::PolledAfterCompletion => d.field("polled_after_completion", &true),
            Kind::MissingSeller => d.field("missing_seller", &true),
        };
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Fetch(FetchError::Source(e)) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a fetch produced no token. Cheap to clone: every waiter gets the same one. Its messages are
/// [`Error`]'s.
#[derive(Clone, Debug)]
pub(crate) enum FetchError {
    Source(Arc<SourceError>),
    RateLimited {
        needed: Duration,
    },
    TimedOut(Duration),
    /// The fetch task panicked or was cancelled (its runtime shut down).
    Aborted,
    /// A bundled token came back without the operation a request waited for.
    NotCovered,
}

impl FetchError {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            FetchError::Source(e) => e.kind(),
            _ => ErrorKind::Transient,
        }
    }
}

/// Why a layer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The catalogue does not compile.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A setting is out of range.
    #[error("invalid setting `{name}`: {reason}")]
    Setting {
        /// The builder method.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a string is not a usable [`Origin`](crate::Origin).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SP-API origin `{input}`: {reason}")]
pub struct OriginError {
    pub(crate) input: String,
    pub(crate) reason: &'static str,
}

/// A token value that cannot be sent in a header (empty, or holding control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token must be a non-empty string of visible ASCII characters")]
pub struct InvalidToken(pub(crate) ());

#[cfg(feature = "reqwest")]
/// Why [`LwaCredentials::from_env`](crate::LwaCredentials::from_env) found no credentials. Names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The variable is not set, or is empty.
    #[error("environment variable `{0}` is not set or is empty")]
    Missing(&'static str),
    /// The variable is set but is not valid Unicode.
    #[error("environment variable `{0}` is not valid Unicode")]
    NotUnicode(&'static str),
}

#[cfg(feature = "reqwest")]
/// Why an [`SpApiTokenSource`](crate::SpApiTokenSource) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceBuildError {
    /// The LWA URL is not an absolute `https` URL (or `http` on a loopback host).
    #[error("invalid LWA URL `{url}`: {reason}")]
    InvalidLwaUrl {
        /// The URL as given (hidden when it holds user information).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No seller has credentials.
    #[error(
        "no LWA credentials: give the builder `credentials` (the default seller) or `seller` (others)"
    )]
    NoCredentials,
    /// The request timeout is zero.
    #[error("the request timeout must be more than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (TLS initialization).
    #[error("could not build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// Feature `rustls-no-provider` is on, no other TLS feature is, and the application has not
    /// installed a rustls crypto provider: the source's own client would have no cryptography.
    #[error(
        "no rustls crypto provider is installed: call \
         `rustls::crypto::CryptoProvider::install_default` (for example with ring's provider) before \
         building the source, or give the builder your own client with `http_client`"
    )]
    NoCryptoProvider,
    /// No TLS feature is on (`rustls`, `rustls-no-provider`, `native-tls`), no client was given, and
    /// the LWA endpoint is an `https` URL: the source could never reach it.
    #[error(
        "the source's HTTP client has no TLS: turn on the feature `rustls`, `rustls-no-provider` or \
         `native-tls`, or give the builder your own client with `http_client`"
    )]
    NoTls,
}

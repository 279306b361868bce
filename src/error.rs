//! The error the layer's service returns when a restricted request gets no token.
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

use crate::source::{ErrorKind, SourceError};

/// Why a restricted request could not get a Restricted Data Token. It never holds a secret.
#[derive(Clone)]
pub struct Error {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Source(Arc<SourceError>),
    RateLimited { needed: Duration },
    FetchTimedOut(Duration),
    WaitTimedOut(Duration),
    FetchAborted,
    NoRuntime,
    PolledAfterCompletion,
    NotCovered,
    MissingSeller,
}

impl Error {
    pub(crate) fn from_fetch(e: FetchError) -> Self {
        let kind = match e {
            FetchError::Source(e) => Kind::Source(e),
            FetchError::RateLimited { needed } => Kind::RateLimited { needed },
            FetchError::TimedOut(d) => Kind::FetchTimedOut(d),
            FetchError::Aborted => Kind::FetchAborted,
            FetchError::NotCovered => Kind::NotCovered,
        };
        Error { kind }
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
            Kind::Source(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the request waited past its deadline, or the fetch did.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::WaitTimedOut(_) | Kind::FetchTimedOut(_))
    }

    /// Whether the seller's token-call rate limit would have made the fetch wait too long.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.kind, Kind::RateLimited { .. })
    }

    /// Whether the request carried no [`SellerId`](crate::SellerId) while the layer was built with
    /// [`require_seller`](crate::RestrictedDataTokenLayerBuilder::require_seller).
    pub fn is_missing_seller(&self) -> bool {
        matches!(self.kind, Kind::MissingSeller)
    }

    /// Whether trying again later can help.
    pub fn kind(&self) -> ErrorKind {
        match &self.kind {
            Kind::Source(e) => e.kind(),
            Kind::NoRuntime | Kind::PolledAfterCompletion | Kind::MissingSeller => {
                ErrorKind::Permanent
            }
            _ => ErrorKind::Transient,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no restricted data token: ")?;
        match &self.kind {
            Kind::Source(e) => fmt::Display::fmt(e, f),
            Kind::RateLimited { needed } => write!(
                f,
                "the seller's token-call rate limit would delay the fetch by {needed:?}, past its deadline"
            ),
            Kind::FetchTimedOut(d) => write!(f, "the token fetch did not finish within {d:?}"),
            Kind::WaitTimedOut(d) => write!(f, "no token arrived within {d:?}"),
            Kind::FetchAborted => {
                f.write_str("the token fetch was aborted (it panicked or its runtime stopped)")
            }
            Kind::NoRuntime => f.write_str("a token fetch needs a Tokio runtime with time enabled"),
            Kind::PolledAfterCompletion => {
                f.write_str("the response future was polled after it completed")
            }
            Kind::NotCovered => f.write_str("the bundled token does not cover this operation"),
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
            Kind::Source(e) => d.field("source", e),
            Kind::RateLimited { needed } => d.field("rate_limited_for", needed),
            Kind::FetchTimedOut(t) => d.field("fetch_timed_out", t),
            Kind::WaitTimedOut(t) => d.field("wait_timed_out", t),
            Kind::FetchAborted => d.field("fetch_aborted", &true),
            Kind::NoRuntime => d.field("no_runtime", &true),
            Kind::PolledAfterCompletion => d.field("polled_after_completion", &true),
            Kind::NotCovered => d.field("not_covered", &true),
            Kind::MissingSeller => d.field("missing_seller", &true),
        };
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Source(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a fetch produced no token. Cheap to clone: every waiter gets the same one.
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

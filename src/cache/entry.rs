//! What a slot holds: a token with its deadlines and generation ([`CachedToken`]), what a bundled
//! token covers, and what a request takes away ([`TokenHeader`]).

use std::fmt;
use std::sync::Arc;

use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use tokio::time::Instant;

use crate::error::FetchError;

/// A cached token and its deadlines.
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    pub(crate) soft: Instant,
    pub(crate) hard: Instant,
    pub(crate) generation: u64,
    /// For a bundled token: which operations it covers, and which were refused.
    pub(crate) bundle: Option<Box<BundleInfo>>,
}

/// What a bundled token covers.
#[derive(Debug, Default)]
pub(crate) struct BundleInfo {
    /// Catalogue indexes of the operations the token covers, sorted.
    pub(crate) covers: Vec<u32>,
    /// Operations Amazon refused for this seller, with the refusal and when it was learnt.
    pub(crate) denied: Vec<Denied>,
}

/// An operation that Amazon refused inside a bundle.
#[derive(Clone, Debug)]
pub(crate) struct Denied {
    pub(crate) op: u32,
    pub(crate) error: FetchError,
    pub(crate) since: Instant,
}

/// Whether a token may be handed to a request for operation `op` (`None`: not bundled).
pub(crate) enum Coverage {
    Covered,
    Denied(FetchError),
    Uncovered,
}

impl CachedToken {
    pub(crate) fn coverage(&self, op: Option<u32>) -> Coverage {
        match (op, &self.bundle) {
            (Some(op), Some(bundle)) => {
                if bundle.covers.binary_search(&op).is_ok() {
                    Coverage::Covered
                } else if let Some(d) = bundle.denied.iter().find(|d| d.op == op) {
                    Coverage::Denied(d.error.clone())
                } else {
                    Coverage::Uncovered
                }
            }
            _ => Coverage::Covered,
        }
    }
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("soft", &self.soft)
            .field("hard", &self.hard)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

pub(crate) type FetchOutcome = Result<Arc<CachedToken>, FetchError>;
pub(crate) type SharedFetch = Shared<BoxFuture<'static, FetchOutcome>>;

/// A token handed to one request: the header value and the generation it came from (so that a
/// 403 can invalidate exactly that token).
#[derive(Clone)]
pub(crate) struct TokenHeader {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    /// When the layer stops using the token.
    pub(crate) usable_until: Instant,
}

impl CachedToken {
    pub(crate) fn grant(&self) -> TokenHeader {
        TokenHeader {
            header: self.header.clone(),
            generation: self.generation,
            usable_until: self.hard,
        }
    }
}

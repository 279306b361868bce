//! What a slot holds: a token with its deadlines and generation ([`CachedToken`]), what a bundled
//! token covers.

use std::fmt;
use std::sync::Arc;

use futures_util::future::{BoxFuture, Shared};
use http::HeaderValue;
use tokio::time::Instant;

use crate::catalog::OperationId;
use crate::error::FetchError;
use crate::header::GrantedToken;

/// A cached token and its deadlines (see the [cache's docs](super)).
pub(crate) struct CachedToken {
    pub(crate) header: HeaderValue,
    /// From here on, a request that gets the token starts one background refresh.
    pub(crate) refresh_at: Instant,
    /// From here on (a margin before the token expires), the token is not used.
    pub(crate) usable_until: Instant,
    pub(crate) generation: u64,
    /// For a bundled token: which operations it covers, and which were refused.
    pub(crate) bundle: Option<Box<BundleInfo>>,
}

/// What a bundled token covers.
#[derive(Debug, Default)]
pub(crate) struct BundleInfo {
    /// Catalogue indexes of the operations the token covers, sorted.
    pub(crate) covers: Vec<OperationId>,
    /// Operations Amazon refused for this seller, with the refusal and when it was learnt.
    pub(crate) denied: Vec<Denied>,
}

/// An operation that Amazon refused inside a bundle.
#[derive(Clone, Debug)]
pub(crate) struct Denied {
    pub(crate) op: OperationId,
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
    pub(crate) fn coverage(&self, op: Option<OperationId>) -> Coverage {
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
            .field("refresh_at", &self.refresh_at)
            .field("usable_until", &self.usable_until)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

pub(crate) type FetchOutcome = Result<Arc<CachedToken>, FetchError>;
pub(crate) type SharedFetch = Shared<BoxFuture<'static, FetchOutcome>>;

impl CachedToken {
    /// The token as handed to one request.
    pub(crate) fn grant(&self) -> GrantedToken {
        GrantedToken {
            header: self.header.clone(),
            generation: self.generation,
            usable_until: self.usable_until,
        }
    }
}

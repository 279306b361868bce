//! [`RecoverStaleTokenLayer`], made by [`RestrictedDataTokenLayer::recover_stale_tokens`].

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::RecoverStaleToken;
use crate::core::Core;
use crate::layer::RestrictedDataTokenLayer;

/// Invalidates a token that Amazon refused with 403 and replays the request once; see the
/// [module docs](crate::recover).
#[derive(Clone)]
pub struct RecoverStaleTokenLayer {
    core: Arc<Core>,
}

impl RestrictedDataTokenLayer {
    /// A layer to put outside this one (same cache) that recovers from stale tokens.
    pub fn recover_stale_tokens(&self) -> RecoverStaleTokenLayer {
        RecoverStaleTokenLayer {
            core: Arc::clone(self.core()),
        }
    }
}

impl<S> Layer<S> for RecoverStaleTokenLayer {
    type Service = RecoverStaleToken<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecoverStaleToken::new(inner, Arc::clone(&self.core))
    }
}

impl fmt::Debug for RecoverStaleTokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoverStaleTokenLayer")
            .finish_non_exhaustive()
    }
}

//! The error of the pacing layer: a request its operation's usage plan would hold too long.

use std::time::Duration;

/// The usage plan of the request's operation would hold it longer than the layer lets a request
/// wait ([`PacingLayerBuilder::max_wait`](crate::pacing::PacingLayerBuilder::max_wait)). Nothing
/// was sent, and the request took no place in the bucket.
///
/// Returned through the service's `BoxError`; downcast to read it.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "{api} {operation}: its usage plan would hold this request {wait:?}, longer than the {limit:?} \
     a request may wait; nothing was sent"
)]
pub struct PacingError {
    pub(crate) api: String,
    pub(crate) operation: String,
    pub(crate) wait: Duration,
    pub(crate) limit: Duration,
}

impl PacingError {
    /// The API of the operation (as in [`UsagePlans`](crate::catalog::UsagePlans)).
    pub fn api(&self) -> &str {
        &self.api
    }

    /// The operation's name (its `operationId`).
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// How long the request would have waited for its slot.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

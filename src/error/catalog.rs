//! [`CatalogError`]: a catalogue the matcher cannot compile.

use http::Method;

use crate::catalog::RestrictedOperation;

/// A catalogue that cannot be compiled: a malformed template, or two operations a request could not
/// tell apart.
#[derive(Debug, thiserror::Error)]
#[error("restricted-operation catalogue: {api} {name} ({method} {template}): {reason}")]
pub struct CatalogError {
    api: String,
    name: String,
    method: Method,
    template: String,
    reason: String,
}

impl CatalogError {
    pub(crate) fn new(op: &RestrictedOperation, reason: impl Into<String>) -> Self {
        CatalogError {
            api: op.api().to_owned(),
            name: op.name().to_owned(),
            method: op.method().clone(),
            template: op.template().to_owned(),
            reason: reason.into(),
        }
    }
}

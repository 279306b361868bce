//! [`CatalogError`]: a catalogue the matcher cannot compile. [`UsagePlanError`]: a rate and a
//! burst that make no usage plan.

use http::Method;

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
    /// The error of the operation `api` `name` (`method` `template`). It takes the operation's
    /// parts rather than the operation, so that this module needs nothing of the catalogue's.
    pub(crate) fn new(
        api: &str,
        name: &str,
        method: &Method,
        template: &str,
        reason: impl Into<String>,
    ) -> Self {
        CatalogError {
            api: api.to_owned(),
            name: name.to_owned(),
            method: method.clone(),
            template: template.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Why a rate and a burst do not make a
/// [`UsagePlan`](crate::catalog::UsagePlan); the variant names the setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsagePlanError {
    /// The rate is zero, negative, NaN or infinite.
    #[error(
        "invalid usage plan: the rate must be a finite number of requests per second above zero"
    )]
    Rate,
    /// The burst is zero.
    #[error("invalid usage plan: the burst must be at least 1")]
    Burst,
}

//! [`SourceError`] and [`ErrorKind`]: what a token source reports, and whether it is worth trying again.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::BoxError;

/// Whether trying again later can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A passing failure (throttled, server error, timeout, connection): retried after a back-off.
    Transient,
    /// A failure that the same request will meet again (no role, bad credentials, a bug): remembered
    /// for a while and reported to every caller without calling the source again.
    Permanent,
}

/// Why a [`TokenSource`](crate::TokenSource) could not issue a token.
///
/// Messages must never hold a secret: the error is logged and shown to callers.
///
/// ```
/// use http::StatusCode;
/// use spapi_rdt::{error::ErrorKind, error::SourceError};
///
/// let err = SourceError::permanent("the application has no role for buyerInfo")
///     .with_status(StatusCode::BAD_REQUEST)
///     .with_code("InvalidInput")
///     .with_cure("grant the role, then have the seller authorize the application again");
/// assert_eq!(err.kind(), ErrorKind::Permanent);
/// assert!(err.to_string().contains("authorize the application again"));
/// ```
pub struct SourceError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    status: Option<StatusCode>,
    code: Option<String>,
    cure: Option<Cow<'static, str>>,
    retry_after: Option<Duration>,
    attempts: u32,
    source: Option<BoxError>,
}

impl SourceError {
    fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        SourceError {
            kind,
            message: Cow::Owned(message.to_string()),
            status: None,
            code: None,
            cure: None,
            retry_after: None,
            attempts: 1,
            source: None,
        }
    }

    /// A failure that may pass.
    pub fn transient(message: impl fmt::Display) -> Self {
        SourceError::new(ErrorKind::Transient, message)
    }

    /// A failure that will not pass by itself.
    pub fn permanent(message: impl fmt::Display) -> Self {
        SourceError::new(ErrorKind::Permanent, message)
    }

    /// Adds the HTTP status the token endpoint answered.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Adds Amazon's error code (`InvalidInput`, `QuotaExceeded`, `invalid_grant`...).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Adds what the user should do about it.
    #[must_use]
    pub fn with_cure(mut self, cure: impl Into<Cow<'static, str>>) -> Self {
        self.cure = Some(cure.into());
        self
    }

    /// Adds how long to wait before trying again, when the endpoint said so.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Records how many attempts the source made before giving up.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Adds the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether trying again can help.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether this is a [`ErrorKind::Transient`] failure.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of the token endpoint's answer, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Amazon's error code, if there was one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// What to do about it, when known.
    pub fn cure(&self) -> Option<&str> {
        self.cure.as_deref()
    }

    /// How long the endpoint asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        };
        write!(f, "{kind} token source failure: {}", self.message)?;
        match (self.status, &self.code) {
            (Some(s), Some(c)) => write!(f, " (HTTP {}, {c})", s.as_u16())?,
            (Some(s), None) => write!(f, " (HTTP {})", s.as_u16())?,
            (None, Some(c)) => write!(f, " ({c})")?,
            (None, None) => {}
        }
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        if let Some(cure) = &self.cure {
            write!(f, "; to fix: {cure}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("status", &self.status)
            .field("code", &self.code)
            .field("cure", &self.cure)
            .field("retry_after", &self.retry_after)
            .field("attempts", &self.attempts)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

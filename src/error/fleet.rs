//! The errors of fleet mode: a shared store's failure, and (feature `redis`) building the Redis
//! store and its key.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::BoxError;

/// Why a shared store or limiter call failed. The layer answers it by going on alone for a while;
/// it never reaches a caller. Its message must not hold a secret.
pub struct FleetError {
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl FleetError {
    /// An error with `message`.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        FleetError {
            message: message.into(),
            source: None,
        }
    }

    /// Adds the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn timed_out(what: &str, after: Duration) -> Self {
        FleetError::new(format!("{what} did not answer within {after:?}"))
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetError")
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for FleetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(feature = "redis")]
/// A key that is not 32 bytes (64 hex digits). The message never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an encryption key must be exactly 32 bytes (64 hexadecimal digits)")]
pub struct InvalidKey(pub(crate) ());

#[cfg(feature = "redis")]
/// Why a [`RedisFleet`](crate::fleet::RedisFleet) could not be built. Never holds the URL's password or the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisFleetError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// No [`RedisFleetBuilder::encryption_key`](crate::fleet::RedisFleetBuilder::encryption_key): tokens are never stored in clear.
    #[error("fleet mode on Redis needs an encryption key (RedisFleetBuilder::encryption_key)")]
    MissingKey,
    /// A setting is out of range.
    #[error("invalid setting `{name}`: {reason}")]
    Setting {
        /// The builder method.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// [`RedisFleet::verify`](crate::fleet::RedisFleet::verify): fleet mode cannot work on this
    /// server as configured (a cluster node reached as a standalone server, a replica, a refused
    /// password or permission); the message names what to change.
    #[error("fleet mode cannot work on this Redis server: {0}")]
    Unusable(String),
    /// [`RedisFleet::verify`](crate::fleet::RedisFleet::verify): the server did not answer. Fleet
    /// mode rides this out (each replica goes on alone until it is back).
    #[error("the Redis server did not answer: {0}")]
    Unreachable(String),
}

//! A seller authorization's LWA credentials: from code or from the environment, never shown.

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;

use crate::error::CredentialsError;

/// The environment variable [`LwaCredentials::from_env`] reads the client id from.
pub(super) const ENV_CLIENT_ID: &str = "SPAPI_CLIENT_ID";

/// The environment variable [`LwaCredentials::from_env`] reads the client secret from.
pub(super) const ENV_CLIENT_SECRET: &str = "SPAPI_CLIENT_SECRET";

/// The environment variable [`LwaCredentials::from_env`] reads the refresh token from.
pub(super) const ENV_REFRESH_TOKEN: &str = "SPAPI_REFRESH_TOKEN";

/// A seller authorization's Login with Amazon credentials: the application's client id and secret,
/// and the refresh token the seller's authorization produced.
///
/// `Debug` shows the client id and redacts the rest.
///
/// ```
/// use spapi_rdt::LwaCredentials;
///
/// let credentials = LwaCredentials::new(
///     "amzn1.application-oa2-client.0123",
///     "amzn1.oa2-cs.v1.secret",
///     "Atzr|refresh",
/// );
/// let shown = format!("{credentials:?}");
/// assert!(shown.contains("amzn1.application-oa2-client.0123"));
/// assert!(!shown.contains("amzn1.oa2-cs") && !shown.contains("Atzr|"));
/// ```
#[derive(Clone)]
pub struct LwaCredentials {
    inner: Arc<CredentialsInner>,
}

struct CredentialsInner {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

impl LwaCredentials {
    /// Credentials from the application's client id and secret and the seller's refresh token.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        LwaCredentials {
            inner: Arc::new(CredentialsInner {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                refresh_token: refresh_token.into(),
            }),
        }
    }

    /// Reads `SPAPI_CLIENT_ID`, `SPAPI_CLIENT_SECRET` and `SPAPI_REFRESH_TOKEN`. An unset or empty
    /// variable is an error that names it.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    pub(super) fn from_lookup(
        mut lookup: impl FnMut(&str) -> Option<OsString>,
    ) -> Result<Self, CredentialsError> {
        let mut read = |name: &'static str| -> Result<String, CredentialsError> {
            let value = lookup(name).ok_or(CredentialsError::Missing(name))?;
            let value = value
                .into_string()
                .map_err(|_| CredentialsError::NotUnicode(name))?;
            if value.trim().is_empty() {
                return Err(CredentialsError::Missing(name));
            }
            Ok(value)
        };
        let client_id = read(ENV_CLIENT_ID)?;
        let client_secret = read(ENV_CLIENT_SECRET)?;
        let refresh_token = read(ENV_REFRESH_TOKEN)?;
        Ok(LwaCredentials::new(client_id, client_secret, refresh_token))
    }

    /// The application's client id (not a secret).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub(in crate::source) fn client_secret(&self) -> &str {
        &self.inner.client_secret
    }

    pub(in crate::source) fn refresh_token(&self) -> &str {
        &self.inner.refresh_token
    }

    /// Replaces any secret of these credentials found in `text` (a message from a server).
    pub(in crate::source) fn scrub(&self, text: &str) -> String {
        scrub(text, &[self.client_secret(), self.refresh_token()])
    }
}

impl fmt::Debug for LwaCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LwaCredentials")
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &format_args!("<redacted>"))
            .field("refresh_token", &format_args!("<redacted>"))
            .finish()
    }
}

/// Replaces every occurrence of a secret in `text` and keeps at most [`MAX_MESSAGE`] characters.
///
/// Secrets go first and the cut comes after, so that a secret straddling the cut cannot leave its
/// first part behind.
pub(in crate::source) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.trim().to_owned();
    for secret in secrets {
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, "<redacted>");
        }
    }
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => {
            text.truncate(end);
            text
        }
        None => text,
    }
}

/// How much of a message from Amazon is kept in an error.
pub(super) const MAX_MESSAGE: usize = 500;

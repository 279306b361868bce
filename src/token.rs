//! Token values: secrets that never show in `Debug` or `Display`.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

use crate::error::InvalidToken;

/// A secret token value: a Restricted Data Token or an LWA access token.
///
/// It is held as a header value already marked sensitive, so injecting it costs a reference-count
/// increment and HTTP/2 stacks never index it. `Debug` prints `SecretToken(<redacted>)`.
///
/// ```
/// use spapi_rdt::SecretToken;
///
/// let token = SecretToken::new("Atz.sprdt|AYABeMW2yjTTC9zd").unwrap();
/// assert_eq!(format!("{token:?}"), "SecretToken(<redacted>)");
/// assert_eq!(token.expose(), "Atz.sprdt|AYABeMW2yjTTC9zd");
/// assert!(SecretToken::new("line\nbreak").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(HeaderValue);

impl SecretToken {
    /// Wraps a token value, checking that it can go in a header.
    pub fn new(value: impl AsRef<str>) -> Result<Self, InvalidToken> {
        let value = value.as_ref();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(InvalidToken(()));
        }
        let mut header = HeaderValue::from_str(value).map_err(|_| InvalidToken(()))?;
        header.set_sensitive(true);
        Ok(SecretToken(header))
    }

    /// The token as a string. Handle with care: this is the secret itself.
    pub fn expose(&self) -> &str {
        // The value was checked to be visible ASCII when it was made.
        self.0.to_str().unwrap_or_default()
    }

    pub(crate) fn from_header(header: HeaderValue) -> Self {
        let mut header = header;
        header.set_sensitive(true);
        SecretToken(header)
    }

    /// The token as a header value marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// A token as a [`TokenSource`](crate::TokenSource) returns it: the value and how long it lives from
/// now (the Tokens API's `expiresIn`).
#[derive(Clone, Debug)]
pub struct IssuedToken {
    token: SecretToken,
    expires_in: Duration,
}

impl IssuedToken {
    /// A token that expires `expires_in` from now.
    pub fn new(token: SecretToken, expires_in: Duration) -> Self {
        IssuedToken { token, expires_in }
    }

    /// The token value.
    pub fn token(&self) -> &SecretToken {
        &self.token
    }

    /// How long the token lives, counted from when the source returned it.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The token value, consuming this.
    pub fn into_token(self) -> SecretToken {
        self.token
    }
}

//! Reading LWA's answers: the token and its stated lifetime, errors with their cure, and secrets
//! scrubbed from anything quoted back.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::error::{ErrorKind, SourceError};
use crate::resource::SellerId;
use crate::token::SecretToken;

use super::credentials::LwaCredentials;

/// The lifetime assumed when a token endpoint states none (or an unbelievable one): one hour, the
/// documented lifetime of both LWA access tokens and Restricted Data Tokens.
pub(in crate::source) const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest stated lifetime believed: one day. Anything longer is treated as missing.
pub(in crate::source) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The cure for a refresh token that LWA no longer accepts.
pub(in crate::source) const CURE_REAUTHORIZE: &str =
    "the seller must authorize the application again to get a new refresh token";

/// The cure for a client id or secret that LWA does not accept.
const CURE_CLIENT: &str = "check the client id and secret (LWA credentials of the application in the developer \
     console; a rotated secret must be updated here)";

/// What a token endpoint said about a token's lifetime.
pub(in crate::source) enum Lifetime {
    /// Absent or `null`.
    Missing,
    /// Present but not a number.
    Invalid,
    /// A number of seconds, possibly zero, negative or huge.
    Seconds(f64),
}

impl Lifetime {
    /// Reads `expires_in` / `expiresIn`: a JSON number, or a string holding one.
    pub(in crate::source) fn read(value: Option<&Value>) -> Self {
        let seconds = match value {
            None | Some(Value::Null) => return Lifetime::Missing,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match seconds {
            Some(s) if s.is_finite() => Lifetime::Seconds(s),
            _ => Lifetime::Invalid,
        }
    }

    /// Applies the lifetime rule shared by LWA tokens and RDTs:
    ///
    /// - `1 s ..= 1 day` (fractions allowed): used as stated;
    /// - missing, or more than a day: [`ASSUMED_LIFETIME`] (one hour), with a warning;
    /// - zero or negative (or so small it is zero as a `Duration`): a transient error (the token
    ///   would be dead on arrival);
    /// - not a number: a transient error, like any malformed body.
    pub(in crate::source) fn resolve(self, what: &str) -> Result<Duration, SourceError> {
        match self {
            Lifetime::Seconds(s)
                if Duration::try_from_secs_f64(s).map_or(s <= 0.0, |d| d.is_zero()) =>
            {
                Err(SourceError::transient(format_args!(
                    "{what} came with a lifetime of {s} seconds, which is already over"
                )))
            }
            Lifetime::Seconds(s) if s > MAX_LIFETIME.as_secs_f64() => {
                tracing::warn!(
                    stated_secs = s,
                    assumed_secs = ASSUMED_LIFETIME.as_secs(),
                    "{what} came with an unbelievable lifetime; assuming one hour"
                );
                Ok(ASSUMED_LIFETIME)
            }
            Lifetime::Seconds(s) => Ok(Duration::from_secs_f64(s)),
            Lifetime::Missing => {
                tracing::warn!(
                    assumed_secs = ASSUMED_LIFETIME.as_secs(),
                    "{what} came without a lifetime; assuming one hour"
                );
                Ok(ASSUMED_LIFETIME)
            }
            Lifetime::Invalid => Err(SourceError::transient(format_args!(
                "{what} came with a lifetime that is not a number"
            ))),
        }
    }
}

/// An access token as LWA granted it.
#[derive(Debug)]
pub(in crate::source) struct LwaGrant {
    pub(in crate::source) token: SecretToken,
    pub(in crate::source) expires_in: Duration,
}

/// Maps an LWA answer as a real call does, for the fuzz targets in `fuzz/`: the answer to seller
/// `fuzz` with `credentials`, as the access token and its lifetime. Compiled only with
/// `--cfg fuzzing` (as `cargo fuzz` builds).
#[cfg(fuzzing)]
pub fn fuzz_lwa_answer(
    status: StatusCode,
    body: &[u8],
    credentials: &LwaCredentials,
) -> Result<(SecretToken, Duration), SourceError> {
    lwa_answer(&SellerId::new("fuzz"), credentials, status, body, None)
        .map(|grant| (grant.token, grant.expires_in))
}

/// Maps an LWA answer to a grant or an error.
pub(super) fn lwa_answer(
    seller: &SellerId,
    credentials: &LwaCredentials,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<LwaGrant, SourceError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        let malformed = || {
            SourceError::transient(format_args!(
                "the LWA token endpoint answered seller `{seller}` with a body that holds no access token"
            ))
            .with_status(status)
        };
        let json = json.ok_or_else(malformed)?;
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(malformed)?;
        let token = SecretToken::new(token).map_err(|err| {
            SourceError::transient(format_args!(
                "the LWA token endpoint gave seller `{seller}` an access token that cannot be sent in a header"
            ))
            .with_status(status)
            .with_source(err)
        })?;
        let expires_in = Lifetime::read(json.get("expires_in"))
            .resolve("the LWA access token")
            .map_err(|e| e.with_status(status))?;
        return Ok(LwaGrant { token, expires_in });
    }

    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(|s| credentials.scrub(s))
    };
    let code = field("error");
    let description = field("error_description");
    let mut message = format!("the LWA token endpoint refused seller `{seller}`");
    if let Some(d) = description.as_deref().filter(|d| !d.is_empty()) {
        message.push_str(": ");
        message.push_str(d);
    }
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ErrorKind::Transient,
        s if s.is_server_error() => ErrorKind::Transient,
        s if s.is_client_error() => ErrorKind::Permanent,
        // 1xx and 3xx (redirects are not followed): not an answer LWA gives.
        _ => ErrorKind::Permanent,
    };
    let mut err = match kind {
        ErrorKind::Transient => SourceError::transient(message),
        ErrorKind::Permanent => SourceError::permanent(message),
    }
    .with_status(status);
    match code.as_deref() {
        Some("invalid_grant") => err = err.with_cure(CURE_REAUTHORIZE),
        Some("invalid_client") | Some("unauthorized_client") => err = err.with_cure(CURE_CLIENT),
        _ => {}
    }
    if let Some(code) = code.filter(|c| !c.is_empty()) {
        err = err.with_code(code);
    }
    if let Some(wait) = retry_after.filter(|_| kind == ErrorKind::Transient) {
        err = err.with_retry_after(wait);
    }
    Err(err)
}

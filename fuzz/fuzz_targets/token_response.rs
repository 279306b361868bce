//! Arbitrary bytes as the answer of the Tokens API and of LWA, through the crate's own mapping of
//! answers (the code a real call runs after reading the body). Any answer gives a token or a typed
//! error, never a panic, and:
//!
//! - a token comes only from a 2xx answer, is a valid header value and lives more than zero and at
//!   most a day;
//! - an error carries the answer's status, is transient for 2xx, 408, 429 and 5xx, has a bounded
//!   message, and never shows the LWA access token, the refresh token or the client secret, even
//!   when the answer echoes them.
//!
//! Input: two bytes of status (`100 + u16 % 900`), then the body.
#![no_main]

use std::time::Duration;

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use spapi_rdt::fuzzing::{fuzz_lwa_answer, fuzz_tokens_answer};
use spapi_rdt::{LwaCredentials, SecretToken, error::SourceError};

const LWA_TOKEN: &str = "Atza|fuzz-lwa-access-token";
const REFRESH_TOKEN: &str = "Atzr|fuzz-refresh-token";
const CLIENT_SECRET: &str = "fuzz-client-secret-value";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn check_token(status: StatusCode, token: &SecretToken, life: Duration) {
    assert!(status.is_success(), "a token from a {status} answer");
    let value = token.expose();
    assert!(!value.is_empty());
    assert!(value.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    assert!(!life.is_zero(), "a token that lives {life:?}");
    assert!(life <= DAY, "a token that lives {life:?}");
}

fn check_error(status: StatusCode, err: &SourceError, secrets: &[&str]) {
    assert_eq!(err.status(), Some(status));
    let transient = status.is_success()
        || status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if transient {
        assert!(err.is_transient(), "{status}: {err}");
    }
    let shown = err.to_string();
    assert!(shown.len() <= 4096, "a {}-byte message", shown.len());
    let shown = format!("{shown} {err:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, body @ ..] = data else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(100 + u16::from_be_bytes([*a, *b]) % 900) else {
        return;
    };
    match fuzz_tokens_answer(status, body, [LWA_TOKEN, REFRESH_TOKEN, CLIENT_SECRET]) {
        Ok(issued) => check_token(status, issued.token(), issued.expires_in()),
        Err(err) => check_error(status, &err, &[LWA_TOKEN, REFRESH_TOKEN, CLIENT_SECRET]),
    }
    let credentials = LwaCredentials::new(
        "amzn1.application-oa2-client.fuzz",
        CLIENT_SECRET,
        REFRESH_TOKEN,
    );
    match fuzz_lwa_answer(status, body, &credentials) {
        Ok((token, life)) => check_token(status, &token, life),
        // LWA knows no access token before it issues one: only the credentials are secrets here.
        Err(err) => check_error(status, &err, &[REFRESH_TOKEN, CLIENT_SECRET]),
    }
});

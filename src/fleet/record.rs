//! The bytes a shared store keeps for one token: when it was written (wall clock, Unix
//! milliseconds), how long it stays fresh and usable from then, the token, and, for a bundled
//! token, which operations it covers and which Amazon refused. A small versioned binary layout,
//! checked on every read: the core needs no serde.
//!
//! The write time travels inside the record, so a store that encrypts records (as `RedisFleet`
//! does, with authenticated encryption) seals the token's expiry too: whoever can change a key's
//! time to live in the store cannot make a replica use the token longer. Version 1 records (without
//! the write time) are unreadable to this version: a replica reading one fetches its own token.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::cache::{BundleInfo, Denied};
use crate::catalog::OperationId;
use crate::error::Error;
use crate::error::FetchError;
use crate::error::{ErrorKind, SourceError};
use crate::token::SecretToken;

const VERSION: u8 = 2;
/// The first byte of a failure record: a fetch failed, and the others should not repeat it while
/// the record lives (its time to live is the back-off).
const FAILURE: u8 = 0xF2;

/// The bytes for a failed fetch's `error`, written at `written_ms` on the wall clock.
pub(crate) fn encode_failure(error: &FetchError, written_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FAILURE);
    put_u64(&mut out, written_ms);
    put_error(&mut out, error);
    out
}

/// The error of a failure record, with its write time; `None` for any other bytes.
pub(crate) fn decode_failure(bytes: &[u8]) -> Option<(FetchError, u64)> {
    let mut r = Reader(bytes);
    if r.u8()? != FAILURE {
        return None;
    }
    let written_ms = r.u64()?;
    let error = r.error()?;
    r.0.is_empty().then_some((error, written_ms))
}

/// A record read back.
pub(crate) struct Record {
    pub(crate) token: HeaderValue,
    /// When the record was written, in milliseconds since the Unix epoch.
    pub(crate) written_ms: u64,
    /// Counted from when the record was written.
    pub(crate) fresh: Duration,
    /// Counted from when the record was written.
    pub(crate) usable: Duration,
    pub(crate) bundle: Option<BundleInfo>,
}

/// The bytes for `token`, fresh for `fresh` and usable for `usable` from `now`, which is
/// `written_ms` on the wall clock.
pub(crate) fn encode(
    token: &HeaderValue,
    fresh: Duration,
    usable: Duration,
    bundle: Option<&BundleInfo>,
    now: Instant,
    written_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + token.len());
    out.push(VERSION);
    put_u64(&mut out, written_ms);
    put_u64(&mut out, millis(fresh));
    put_u64(&mut out, millis(usable));
    put_bytes(&mut out, token.as_bytes());
    match bundle {
        None => out.push(0),
        Some(info) => {
            out.push(1);
            put_u32(&mut out, len32(info.covers.len()));
            for op in &info.covers {
                put_u32(&mut out, op.to_bits());
            }
            put_u32(&mut out, len32(info.denied.len()));
            for denied in &info.denied {
                put_u32(&mut out, denied.op.to_bits());
                put_u64(
                    &mut out,
                    millis(now.saturating_duration_since(denied.since)),
                );
                put_error(&mut out, &denied.error);
            }
        }
    }
    out
}

/// Reads a record. Refusals inside a bundle are dated as if it was written at `now`. `None` for
/// bytes that are not a record of this version.
pub(crate) fn decode(bytes: &[u8], now: Instant) -> Option<Record> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let written_ms = r.u64()?;
    let fresh = Duration::from_millis(r.u64()?);
    let usable = Duration::from_millis(r.u64()?);
    let token = std::str::from_utf8(r.bytes()?).ok()?;
    // The same checks as any token a source returns: visible ASCII, sensitive header value.
    let token = SecretToken::new(token).ok()?.header_value().clone();
    let bundle = match r.u8()? {
        0 => None,
        1 => {
            let count = r.u32()?;
            let mut covers = Vec::new();
            for _ in 0..count {
                covers.push(OperationId::from_bits(r.u32()?));
            }
            covers.sort_unstable();
            let count = r.u32()?;
            let mut denied = Vec::new();
            for _ in 0..count {
                let op = OperationId::from_bits(r.u32()?);
                let age = Duration::from_millis(r.u64()?);
                let error = r.error()?;
                denied.push(Denied {
                    op,
                    error,
                    since: now.checked_sub(age).unwrap_or(now),
                });
            }
            Some(BundleInfo { covers, denied })
        }
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(Record {
        token,
        written_ms,
        fresh,
        usable,
        bundle,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Token values and error texts are far below 4 GiB; a longer one is cut, and then fails its
    // read-back checks rather than corrupting what follows.
    let len = len32(bytes.len());
    put_u32(out, len);
    out.extend_from_slice(&bytes[..len as usize]);
}

fn put_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put_bytes(out, t.as_bytes());
        }
    }
}

/// An error that refused an operation inside a bundle. Only a source's error carries detail worth
/// keeping; anything else keeps its message.
fn put_error(out: &mut Vec<u8>, error: &FetchError) {
    match error {
        FetchError::Source(e) => {
            out.push(match e.kind() {
                ErrorKind::Transient => 0,
                ErrorKind::Permanent => 1,
            });
            out.extend_from_slice(&e.status().map_or(0, |s| s.as_u16()).to_be_bytes());
            put_opt(out, e.code());
            put_bytes(out, e.message().as_bytes());
            put_opt(out, e.cure());
        }
        other => {
            out.push(0);
            out.extend_from_slice(&0u16.to_be_bytes());
            put_opt(out, None);
            put_bytes(out, Error::from_fetch(other.clone()).to_string().as_bytes());
            put_opt(out, None);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn opt_text(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.text().map(Some),
            _ => None,
        }
    }

    fn error(&mut self) -> Option<FetchError> {
        let kind = self.u8()?;
        let status = self.u16()?;
        let code = self.opt_text()?;
        let message = self.text()?;
        let cure = self.opt_text()?;
        let mut error = match kind {
            0 => SourceError::transient(message),
            1 => SourceError::permanent(message),
            _ => return None,
        };
        if status != 0 {
            error = error.with_status(StatusCode::from_u16(status).ok()?);
        }
        if let Some(code) = code {
            error = error.with_code(code);
        }
        if let Some(cure) = cure {
            error = error.with_cure(cure.to_owned());
        }
        Some(FetchError::Source(Arc::new(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        SecretToken::new(value).unwrap().header_value().clone()
    }

    #[test]
    fn a_plain_record_round_trips() {
        let now = Instant::now();
        let bytes = encode(
            &header("Atz.sprdt|abc"),
            Duration::from_secs(3000),
            Duration::from_secs(3570),
            None,
            now,
            1_700_000_000_000,
        );
        let record = decode(&bytes, now).unwrap();
        assert_eq!(record.written_ms, 1_700_000_000_000);
        assert_eq!(record.token, "Atz.sprdt|abc");
        assert!(record.token.is_sensitive());
        assert_eq!(record.fresh, Duration::from_secs(3000));
        assert_eq!(record.usable, Duration::from_secs(3570));
        assert!(record.bundle.is_none());
    }

    #[test]
    fn a_bundle_record_keeps_coverage_and_refusals() {
        let now = Instant::now();
        let refusal = SourceError::permanent("no role for /mfn/v0/shipments/{shipmentId}")
            .with_status(StatusCode::BAD_REQUEST)
            .with_code("InvalidInput")
            .with_cure("grant the role");
        let info = BundleInfo {
            covers: [3, 1, 2].map(OperationId::at).to_vec(),
            denied: vec![Denied {
                op: OperationId::at(7),
                error: FetchError::Source(Arc::new(refusal)),
                since: now,
            }],
        };
        let bytes = encode(
            &header("Atz.sprdt|bundle"),
            Duration::from_secs(10),
            Duration::from_secs(20),
            Some(&info),
            now,
            1_700_000_000_000,
        );
        let record = decode(&bytes, now).unwrap();
        assert_eq!(record.written_ms, 1_700_000_000_000);
        let bundle = record.bundle.unwrap();
        assert_eq!(bundle.covers, [1, 2, 3].map(OperationId::at));
        assert_eq!(bundle.denied.len(), 1);
        assert_eq!(bundle.denied[0].op, OperationId::at(7));
        let FetchError::Source(e) = &bundle.denied[0].error else {
            panic!("a source error");
        };
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(e.code(), Some("InvalidInput"));
        assert_eq!(e.cure(), Some("grant the role"));
    }

    #[test]
    fn damaged_bytes_are_refused_not_panicked_on() {
        let now = Instant::now();
        let bytes = encode(
            &header("Atz.sprdt|abc"),
            Duration::from_secs(1),
            Duration::from_secs(2),
            Some(&BundleInfo::default()),
            now,
            0,
        );
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], now).is_none(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, now).is_none());
        let mut other_version = bytes;
        other_version[0] = 1;
        assert!(decode(&other_version, now).is_none());
        // A token that could not go in a header is refused.
        let mut bad = vec![VERSION];
        put_u64(&mut bad, 1);
        put_u64(&mut bad, 1);
        put_u64(&mut bad, 1);
        put_bytes(&mut bad, b"line\nbreak");
        bad.push(0);
        assert!(decode(&bad, now).is_none());
    }
}

//! Client authentication: who may send requests through the proxy.
//!
//! Two checks, each on when configured, both required when both are: the client's address must be
//! in one of the allowed networks, and the request must carry the shared secret as a bearer token
//! (`Authorization: Bearer <secret>` or `Proxy-Authorization: Bearer <secret>`). The secret is
//! compared in constant time, and the header that carried it never goes upstream.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest shared secret accepted: a short one could be guessed.
const MIN_SECRET_LEN: usize = 16;

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No bearer secret, or the wrong one: 401.
    Unauthenticated,
    /// The client's address is outside the allowed networks: 403.
    Network,
}

/// The configured client authentication; `Default` is none (loopback use only).
#[derive(Clone, Default)]
pub(crate) struct ClientAuth {
    /// The SHA-256 digest of the bearer secret: a guess is compared digest to digest, so neither
    /// its length nor its content shows in the time an answer takes.
    secret: Option<Arc<[u8; 32]>>,
    networks: Arc<[IpNet]>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("networks", &self.networks)
            .finish()
    }
}

impl ClientAuth {
    /// `secret`: the shared bearer secret, if any; `networks`: the allowed client networks, if any.
    pub(crate) fn new(secret: Option<&str>, networks: Vec<IpNet>) -> Result<ClientAuth, String> {
        let secret = match secret.map(str::trim) {
            None => None,
            Some(s) if s.len() < MIN_SECRET_LEN => {
                return Err(format!(
                    "the secret must be at least {MIN_SECRET_LEN} characters"
                ));
            }
            Some(s) if !s.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err("the secret must be printable ASCII without spaces".to_owned());
            }
            Some(s) => Some(Arc::new(digest(s.as_bytes()))),
        };
        Ok(ClientAuth {
            secret,
            networks: networks.into(),
        })
    }

    /// Whether any check is on (required to listen beyond loopback).
    pub(crate) fn is_configured(&self) -> bool {
        self.secret.is_some() || !self.networks.is_empty()
    }

    /// Whether a bearer secret is expected (so `Authorization` is ours, not the client's).
    pub(crate) fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether a connection from `peer` may send requests at all.
    pub(crate) fn admits_peer(&self, peer: IpAddr) -> bool {
        // An IPv4 client on an IPv6 socket shows as ::ffff:a.b.c.d.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&peer))
    }

    /// Checks one request from `peer`: its network, then its secret.
    #[cfg(test)]
    pub(crate) fn check(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.admits_peer(peer) {
            return Err(Denied::Network);
        }
        self.check_secret(headers)
    }

    /// Checks the bearer secret a request presents (none needed when none is set).
    pub(crate) fn check_secret(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let presented = [PROXY_AUTHORIZATION, AUTHORIZATION]
            .into_iter()
            .flat_map(|name| headers.get_all(name))
            .filter_map(|value| bearer(value.as_bytes()));
        // Every presented value is compared, in constant time each, so the answer's timing says
        // nothing about how much of a guess was right.
        let mut matched = subtle::Choice::from(0);
        for candidate in presented {
            matched |= digest(candidate).ct_eq(&**secret);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        }
    }
}

/// The SHA-256 digest of `bytes`.
fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The credentials of a `Bearer` authorization value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_secret_is_kept_and_compared_as_a_fixed_size_digest() {
        let auth = ClientAuth::new(Some(SECRET), Vec::new()).unwrap();
        // What a guess is compared with has the same size whatever the secret's length: the
        // comparison cannot stop early at a length mismatch.
        let kept = auth.secret.as_deref().unwrap();
        assert_eq!(std::mem::size_of_val(kept), 32);
        let longer = ClientAuth::new(Some(&SECRET.repeat(3)), Vec::new()).unwrap();
        assert_eq!(std::mem::size_of_val(longer.secret.as_deref().unwrap()), 32);
    }

    #[test]
    fn only_the_exact_secret_is_admitted() {
        let auth = ClientAuth::new(Some(SECRET), Vec::new()).unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let bearer = |value: &str| format!("Bearer {value}");
        assert!(
            auth.check(peer, &headers(&[(&AUTHORIZATION, &bearer(SECRET))]))
                .is_ok()
        );
        assert!(
            auth.check(peer, &headers(&[(&PROXY_AUTHORIZATION, &bearer(SECRET))]))
                .is_ok()
        );
        for guess in [
            "",
            "0123",
            &SECRET[..31],
            &format!("{SECRET}0"),
            &SECRET.to_uppercase(),
        ] {
            assert_eq!(
                auth.check(peer, &headers(&[(&AUTHORIZATION, &bearer(guess))])),
                Err(Denied::Unauthenticated),
                "{guess:?}"
            );
        }
        // One right value among wrong ones is enough.
        let both = headers(&[
            (
                &AUTHORIZATION,
                &bearer("wrong-wrong-wrong-wrong-wrong-wrong"),
            ),
            (&PROXY_AUTHORIZATION, &bearer(SECRET)),
        ]);
        assert!(auth.check(peer, &both).is_ok());
    }
}

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
    secret: Option<Arc<[u8]>>,
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
            Some(s) => Some(Arc::from(s.as_bytes())),
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

    /// Checks one request from `peer`.
    pub(crate) fn check(&self, peer: IpAddr, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.admits_peer(peer) {
            return Err(Denied::Network);
        }
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
            matched |= candidate.ct_eq(secret);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        }
    }
}

/// The credentials of a `Bearer` authorization value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

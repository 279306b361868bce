//! The token header, the token granted to one request, and the cell through which the token layer tells an outer recovery layer
//! which token a request carried.
//!
//! Every front end (the tower service and its response future, stale-token recovery, the
//! reqwest-middleware front end) inserts tokens through this module, so none of them needs to
//! import another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;

/// The header that carries SP-API access tokens and Restricted Data Tokens.
pub const X_AMZ_ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-amz-access-token");

/// A token handed to one request: the header value, the generation of the cached token it came
/// from (so that a 403 drops exactly that token), and when the layer stops using it.
#[derive(Clone)]
pub(crate) struct GrantedToken {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) usable_until: Instant,
}

/// A shared cell holding the generation of the token the layer gave a request (0: none yet).
///
/// The recovery layer puts one in the request's extensions before calling the token layer; the
/// token layer writes into it, and after a 403 the recovery layer reads which token to drop.
#[derive(Clone, Default)]
pub(crate) struct GenerationCell(Arc<AtomicU64>);

impl GenerationCell {
    /// The generation written into the cell, if any.
    pub(crate) fn generation(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            g => Some(g),
        }
    }
}

/// Inserts `granted` into `request`, and notes its generation in the request's
/// [`GenerationCell`] when a recovery layer outside put one there.
#[inline]
pub(crate) fn insert_token<B>(request: &mut Request<B>, granted: GrantedToken) {
    if let Some(cell) = request.extensions().get::<GenerationCell>() {
        cell.0.store(granted.generation, Ordering::Relaxed);
    }
    request
        .headers_mut()
        .insert(X_AMZ_ACCESS_TOKEN, granted.header);
}

//! Delegation: one application obtains tokens that another application uses.
//!
//! Amazon lets a *delegator* application ask for a token on behalf of a *delegatee* application
//! (`targetApplication`), and hand it over; the delegatee then calls the restricted operation with it.
//!
//! - Delegator: [`RestrictedDataTokenLayer::token_for`] returns the token a request would carry,
//!   through the same cache and rate limiter, without sending anything. Put a
//!   [`TargetApplication`](crate::control::TargetApplication) in the request's extensions.
//! - Delegatee: [`SuppliedTokens`] is a [`TokenSource`] fed with the tokens handed over.
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::{RestrictedDataTokenLayer, SecretToken, SellerId, delegate::SuppliedTokens};
//! use spapi_rdt::catalog::DataElements;
//! use spapi_rdt::RestrictedResource;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), spapi_rdt::BoxError> {
//! // In the delegatee: tokens arrive from the delegator (over your own channel).
//! let supplied = SuppliedTokens::new();
//! supplied.supply(
//!     SellerId::default(),
//!     RestrictedResource::new(http::Method::GET, "/orders/v0/orders/{orderId}/address", DataElements::NONE),
//!     SecretToken::new("Atz.sprdt|handed-over")?,
//!     Duration::from_secs(3600),
//! );
//! let layer = RestrictedDataTokenLayer::new(supplied.clone());
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use crate::core::RequestHead;
use crate::error::Error;
use crate::error::SourceError;
use crate::layer::RestrictedDataTokenLayer;
use crate::resource::{RestrictedResource, SellerId, TokenRequest};
use crate::source::{TokenFuture, TokenSource};
use crate::token::{IssuedToken, SecretToken};

/// A token handed out for another application to use.
#[derive(Clone, Debug)]
pub struct DelegatedToken {
    token: SecretToken,
    expires_in: Duration,
    request: TokenRequest,
}

impl DelegatedToken {
    /// The token value.
    pub fn token(&self) -> &SecretToken {
        &self.token
    }

    /// How long the token may still be used (the layer's expiry margin taken off).
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// What the token covers: seller, origin, resources and target application.
    pub fn request(&self) -> &TokenRequest {
        &self.request
    }
}

impl RestrictedDataTokenLayer {
    /// The token a request like `request` would be given, fetched (or taken from the cache) but not
    /// sent anywhere: for a delegator handing tokens to another application. `Ok(None)` when the
    /// request needs no token.
    pub async fn token_for<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<Option<DelegatedToken>, Error> {
        let core = self.core();
        let head = RequestHead::of(request);
        let Some(token_request) = core.token_request_for(head) else {
            return Ok(None);
        };
        let Some(granted) = core.grant(head).await? else {
            return Ok(None);
        };
        Ok(Some(DelegatedToken {
            token: SecretToken::from_header(granted.header),
            expires_in: granted
                .usable_until
                .saturating_duration_since(Instant::now()),
            request: token_request,
        }))
    }
}

type SuppliedKey = (SellerId, Method, Arc<str>);

/// A [`TokenSource`] that serves tokens supplied from outside (a delegatee's source).
///
/// Each token is supplied for one seller and one resource (method and path, as the delegator asked
/// for it) with its lifetime. A request for a resource nobody supplied fails with a transient
/// error, so it is retried with back-off until the token arrives.
#[derive(Clone, Default)]
pub struct SuppliedTokens {
    tokens: Arc<Mutex<HashMap<SuppliedKey, (SecretToken, Instant)>>>,
}

impl SuppliedTokens {
    /// An empty store.
    pub fn new() -> Self {
        SuppliedTokens::default()
    }

    /// Supplies `token` for `seller` and `resource`, valid for `expires_in` from now.
    pub fn supply(
        &self,
        seller: SellerId,
        resource: RestrictedResource,
        token: SecretToken,
        expires_in: Duration,
    ) {
        let key = (
            seller,
            resource.method().clone(),
            Arc::from(resource.path()),
        );
        let until = crate::time::add(Instant::now(), expires_in);
        self.lock().insert(key, (token, until));
    }

    /// Supplies every resource of a [`DelegatedToken`].
    pub fn supply_delegated(&self, delegated: &DelegatedToken) {
        for resource in delegated.request().resources() {
            self.supply(
                delegated.request().seller().clone(),
                resource.clone(),
                delegated.token().clone(),
                delegated.expires_in(),
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SuppliedKey, (SecretToken, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, request: &TokenRequest) -> Result<IssuedToken, SourceError> {
        let now = Instant::now();
        let mut tokens = self.lock();
        tokens.retain(|_, (_, until)| *until > now);
        let mut found: Option<(SecretToken, Instant)> = None;
        for resource in request.resources() {
            let key = (
                request.seller().clone(),
                resource.method().clone(),
                Arc::from(resource.path()),
            );
            let Some((token, until)) = tokens.get(&key) else {
                return Err(SourceError::transient(format!(
                    "no token supplied for seller {} and {resource:?}",
                    request.seller()
                )));
            };
            match &found {
                Some((t, _)) if t != token => {
                    return Err(SourceError::permanent(
                        "the resources of this request were supplied with different tokens",
                    ));
                }
                Some((_, u)) if u <= until => {}
                _ => found = Some((token.clone(), *until)),
            }
        }
        let (token, until) = found.ok_or_else(|| SourceError::permanent("empty token request"))?;
        Ok(IssuedToken::new(
            token,
            until.saturating_duration_since(now),
        ))
    }
}

impl TokenSource for SuppliedTokens {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        let result = self.find(&request);
        Box::pin(std::future::ready(result))
    }
}

impl fmt::Debug for SuppliedTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuppliedTokens")
            .field("tokens", &self.lock().len())
            .finish()
    }
}

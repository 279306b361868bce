//! The reqwest-middleware front end: the same core (cache, limiter, counters) as
//! [`RestrictedDataTokenLayer`], for `reqwest_middleware::ClientWithMiddleware`.
//!
//! ```no_run
//! use spapi_rdt::{RestrictedDataTokenLayer, SellerId};
//! # fn source() -> impl spapi_rdt::TokenSource { spapi_rdt::delegate::SuppliedTokens::new() }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = RestrictedDataTokenLayer::new(source());
//! // No redirects below the middleware: a followed redirect would carry the token along.
//! let http = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()?;
//! let client = reqwest_middleware::ClientBuilder::new(http)
//!     // A retry middleware goes before (outside) this one, so each attempt is checked again.
//!     .with(layer.middleware())
//!     .build();
//! let response = client
//!     .get("https://sellingpartnerapi-eu.amazon.com/orders/v0/orders/305-1234567-1234567/address")
//!     .with_extension(SellerId::new("my-seller"))
//!     .send()
//!     .await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```
//!
//! The client's own redirect policy applies below this middleware, where the token is already in
//! the request: build the `reqwest::Client` with `reqwest::redirect::Policy::none()`, since
//! reqwest's default policy carries `x-amz-access-token` to another host.
//!
//! Per-request control uses the request's extensions (`with_extension`), as with the tower layer.
//! Put a retry middleware such as `reqwest-retry` *before* this one (`.with(retry).with(rdt)`): each
//! attempt then goes through the token cache again, and one that follows an invalidated token gets
//! a fresh one. A 403 on a restricted call invalidates exactly the token used and, when the request
//! body can be cloned, replays the request once with a new token; as with the tower front end, a
//! key's token is dropped for a 403 at most once per refusal period (see
//! [`recover`](crate::recover#403s-that-are-not-about-the-token)).

use std::fmt;
use std::sync::Arc;

use http::{Extensions, StatusCode};
use reqwest_middleware::{Middleware, Next, Result};

use crate::cache::Refusal;
use crate::core::Core;
use crate::header::X_AMZ_ACCESS_TOKEN;
use crate::layer::RestrictedDataTokenLayer;

/// Injects Restricted Data Tokens into a reqwest-middleware client; made by
/// [`RestrictedDataTokenLayer::middleware`].
#[derive(Clone)]
pub struct RestrictedDataTokenMiddleware {
    core: Arc<Core>,
}

impl RestrictedDataTokenLayer {
    /// The reqwest-middleware front end, sharing this layer's cache, limiter and counters.
    pub fn middleware(&self) -> RestrictedDataTokenMiddleware {
        RestrictedDataTokenMiddleware {
            core: Arc::clone(self.core()),
        }
    }
}

impl fmt::Debug for RestrictedDataTokenMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedDataTokenMiddleware")
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Middleware for RestrictedDataTokenMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let Ok(uri) = request.url().as_str().parse::<http::Uri>() else {
            return next.run(request, extensions).await;
        };
        let method = request.method().clone();
        let granted = self
            .core
            .grant(&method, &uri, extensions)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(granted) = granted else {
            return next.run(request, extensions).await;
        };
        let replay = request.try_clone();
        request
            .headers_mut()
            .insert(X_AMZ_ACCESS_TOKEN, granted.header);
        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::FORBIDDEN {
            return Ok(response);
        }
        let refusal = self
            .core
            .refused(&method, &uri, extensions, granted.generation);
        if refusal == Refusal::Kept {
            return Ok(response);
        }
        let Some(mut replay) = replay else {
            return Ok(response);
        };
        let fresh = self
            .core
            .grant(&method, &uri, extensions)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(fresh) = fresh else {
            return Ok(response);
        };
        tracing::debug!(
            path = uri.path(),
            "403 with a cached token: invalidated it, replaying once"
        );
        replay
            .headers_mut()
            .insert(X_AMZ_ACCESS_TOKEN, fresh.header);
        let response = next.run(replay, extensions).await?;
        if refusal == Refusal::Dropped && response.status() != StatusCode::FORBIDDEN {
            self.core.replay_worked(&method, &uri, extensions);
        }
        Ok(response)
    }
}

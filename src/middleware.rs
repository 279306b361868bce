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
//! [`recover`](crate::recover#403s-that-are-not-about-the-token)). Report documents refused under
//! [`ReportPolicy::WhenRefused`](crate::control::ReportPolicy::WhenRefused) are replayed as the
//! recovery layer replays them.

use std::fmt;
use std::sync::Arc;

use http::{Extensions, Method, StatusCode, Uri};
use reqwest_middleware::{Middleware, Next, Result};

use crate::control::{ReplayedAsRestrictedReport, RestrictedReport};
use crate::core::{Core, ReplayAs, RequestHead};
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
            .grant(head(&method, &uri, extensions))
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        if granted.is_none() && !self.core.replays_as_report(head(&method, &uri, extensions)) {
            return next.run(request, extensions).await;
        }
        let replay = request.try_clone();
        let sent_with = granted.map(|granted| {
            request
                .headers_mut()
                .insert(X_AMZ_ACCESS_TOKEN, granted.header);
            granted.generation
        });
        let response = next.clone().run(request, extensions).await?;
        if response.status() != StatusCode::FORBIDDEN {
            return Ok(response);
        }
        // The 403 path: the policy reads a copy of the extensions while the replay may mark them.
        let refused_with = extensions.clone();
        let replay = replay.map(|mut replay| {
            let core = &self.core;
            let (method, uri) = (&method, &uri);
            move |how| async move {
                if how == ReplayAs::RestrictedReport {
                    extensions.insert(RestrictedReport);
                }
                if let Some(fresh) = core
                    .grant(head(method, uri, extensions))
                    .await
                    .map_err(reqwest_middleware::Error::middleware)?
                {
                    replay
                        .headers_mut()
                        .insert(X_AMZ_ACCESS_TOKEN, fresh.header);
                }
                next.run(replay, extensions).await
            }
        });
        let status = |response: &reqwest::Response| response.status();
        let (mut response, replayed) = self
            .core
            .recover(
                head(&method, &uri, &refused_with),
                sent_with,
                response,
                status,
                replay,
            )
            .await?;
        if replayed == Some(ReplayAs::RestrictedReport) {
            response.extensions_mut().insert(ReplayedAsRestrictedReport);
        }
        Ok(response)
    }
}

/// The head the core reads, from the parts reqwest-middleware hands over separately.
fn head<'a>(method: &'a Method, uri: &'a Uri, extensions: &'a Extensions) -> RequestHead<'a> {
    RequestHead {
        method,
        uri,
        extensions,
    }
}

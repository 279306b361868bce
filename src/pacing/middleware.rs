//! The reqwest-middleware front end of the pacing layer: the same buckets, for
//! `reqwest_middleware::ClientWithMiddleware`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::{Extensions, HeaderMap, StatusCode};
use reqwest_middleware::{Middleware, Next};

use super::layer::{PacingLayer, Shared};
use super::paced::{Paced, PacingReport, Wire};
use crate::error::PacingError;

/// Paces a reqwest-middleware client's SP-API calls by their usage plans; made by
/// [`PacingLayer::middleware`]. Clones and the layer share one set of buckets.
#[derive(Clone)]
pub struct PacingMiddleware {
    shared: Arc<Shared>,
}

impl PacingLayer {
    /// The reqwest-middleware front end, sharing this layer's buckets and counters. Put it last
    /// (`.with(rdt.middleware()).with(pacing.middleware())`), nearest the wire. A request too long
    /// to wait for fails with `reqwest_middleware::Error::Middleware` holding the
    /// [`PacingError`](crate::error::PacingError).
    ///
    /// ```
    /// use spapi_rdt::pacing::PacingLayer;
    ///
    /// let pacing = PacingLayer::new();
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(pacing.middleware())
    ///     .build();
    /// # let _ = client;
    /// ```
    pub fn middleware(&self) -> PacingMiddleware {
        PacingMiddleware {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for PacingMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacingMiddleware").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Middleware for PacingMiddleware {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Ok(uri) = request.url().as_str().parse::<http::Uri>() else {
            return next.run(request, extensions).await;
        };
        let Some(paced) = Paced::of(&self.shared, request.method(), &uri, extensions) else {
            return next.run(request, extensions).await;
        };
        let wire = Onward { next, extensions };
        paced.run(Arc::clone(&self.shared), wire, request).await
    }
}

/// The rest of the middleware chain, as the [`Wire`] a paced request goes down.
struct Onward<'a> {
    next: Next<'a>,
    extensions: &'a mut Extensions,
}

impl Wire for Onward<'_> {
    type Request = reqwest::Request;
    type Response = reqwest::Response;
    type Error = reqwest_middleware::Error;

    fn refused(error: PacingError) -> reqwest_middleware::Error {
        reqwest_middleware::Error::middleware(error)
    }

    fn replay(request: &reqwest::Request) -> Option<reqwest::Request> {
        request.try_clone()
    }

    fn send(
        &mut self,
        request: reqwest::Request,
    ) -> impl Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + '_ {
        self.next.clone().run(request, self.extensions)
    }

    fn head(response: &reqwest::Response) -> (StatusCode, &HeaderMap) {
        (response.status(), response.headers())
    }

    fn report(response: &mut reqwest::Response, report: PacingReport) {
        response.extensions_mut().insert(report);
    }
}

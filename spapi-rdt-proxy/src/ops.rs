//! The operations endpoints: `/healthz`, `/readyz` and `/metrics`.
//!
//! SP-API paths all have an API and a version segment (`/orders/v0/...`); these single-segment
//! paths cannot shadow one. They answer without client authentication and never go upstream.
//! They are served on the client address, behind its network check, or on an address of their
//! own (`--ops-listen`, [`serve_ops`](crate::serve_ops)) that answers nothing else.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::{Method, Response, StatusCode};
use spapi_rdt::{RestrictedDataTokenLayer, SellerId, SpApiTokenSource};

use crate::failure::{Failure, ResponseBody, plain};
use crate::metrics::{self, Metrics};

/// Liveness.
pub(crate) const HEALTHZ: &str = "/healthz";
/// Readiness.
pub(crate) const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub(crate) const METRICS: &str = "/metrics";

/// How long a readiness check waits for LWA.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a readiness answer is given again without a new check. `/readyz` needs no client
/// authentication: without this, every probe while LWA fails would be one LWA call per seller.
const READY_REMEMBERED: Duration = Duration::from_secs(5);

/// Whether `path` is one of the operations endpoints.
pub(crate) fn is_endpoint(path: &str) -> bool {
    matches!(path, HEALTHZ | READYZ | METRICS)
}

/// The answer on the client address to an operations endpoint served on an address of its own.
pub(crate) fn served_elsewhere() -> Response<ResponseBody> {
    Failure::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the operations endpoints are served on the proxy's ops address (--ops-listen)",
    )
    .into_response()
}

/// The answer on the ops address to any path but the operations endpoints.
pub(crate) fn not_an_endpoint() -> Response<ResponseBody> {
    Failure::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "this address serves /healthz, /readyz and /metrics only",
    )
    .into_response()
}

/// What the operations endpoints look at.
pub(crate) struct Ops {
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) metrics: Arc<Metrics>,
}

/// What makes the proxy ready, and the last check of it.
pub(crate) struct Readiness {
    pub(crate) source: SpApiTokenSource,
    pub(crate) sellers: Vec<SellerId>,
    /// In fleet mode, the layer whose fleet health `/readyz` reports (read, never a Redis call).
    pub(crate) fleet_of: Option<RestrictedDataTokenLayer>,
    last: Mutex<Option<Check>>,
}

type Answer = Shared<BoxFuture<'static, Result<(), String>>>;

/// A readiness check, under way or done, and when it started.
struct Check {
    started: tokio::time::Instant,
    answer: Answer,
}

impl Ops {
    /// The answer for `/healthz`, `/readyz` and `/metrics`; `None` for any other path.
    pub(crate) async fn answer(
        &self,
        method: &Method,
        path: &str,
    ) -> Option<Response<ResponseBody>> {
        if !is_endpoint(path) {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(
                Failure::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "operations endpoints answer GET",
                )
                .into_response(),
            );
        }
        let (status, content_type, body) = match path {
            HEALTHZ => (
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok\n".to_owned(),
            ),
            READYZ => match self.readiness.answer().await {
                Ok(()) => (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    self.readiness.ready_text(),
                ),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("not ready: {reason}\n"),
                ),
            },
            _ => match self.metrics.encode() {
                Ok(text) => (StatusCode::OK, metrics::CONTENT_TYPE, text),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "metrics could not be encoded\n".to_owned(),
                ),
            },
        };
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(body)
        };
        Some(plain(status, content_type, body))
    }
}

impl Readiness {
    pub(crate) fn new(
        source: SpApiTokenSource,
        sellers: Vec<SellerId>,
        fleet_of: Option<RestrictedDataTokenLayer>,
    ) -> Self {
        Readiness {
            source,
            sellers,
            fleet_of,
            last: Mutex::new(None),
        }
    }

    /// The body of a 200: ready, and in fleet mode whether the replica shares or works alone.
    /// Working alone is no reason to leave the rotation (every request is still served, with
    /// this replica's own cache and rate limit), so it is said, not answered with 503.
    fn ready_text(&self) -> String {
        match &self.fleet_of {
            Some(layer) if layer.stats().fleet_alone => "ready; fleet mode degraded: the shared \
                 store failed, this replica works alone until it answers again\n"
                .to_owned(),
            Some(_) => "ready; fleet mode: shared\n".to_owned(),
            None => "ready\n".to_owned(),
        }
    }

    /// The readiness answer: the check under way, or one started less than
    /// [`READY_REMEMBERED`] ago, else a new check. So at most one check runs at a time, and at
    /// most one starts in each period, however many probes come.
    pub(crate) async fn answer(self: &Arc<Self>) -> Result<(), String> {
        let answer = {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            match &*last {
                Some(check)
                    if check.answer.peek().is_none()
                        || check.started.elapsed() < READY_REMEMBERED =>
                {
                    check.answer.clone()
                }
                _ => {
                    let this = Arc::clone(self);
                    let answer = async move { this.check().await }.boxed().shared();
                    *last = Some(Check {
                        started: tokio::time::Instant::now(),
                        answer: answer.clone(),
                    });
                    answer
                }
            }
        };
        answer.await
    }

    /// Ready when LWA gives a token for at least one seller. The reason given names no secret.
    async fn check(&self) -> Result<(), String> {
        for seller in &self.sellers {
            let fetched =
                tokio::time::timeout(READY_TIMEOUT, self.source.lwa_access_token(seller)).await;
            if matches!(fetched, Ok(Ok(_))) {
                return Ok(());
            }
        }
        Err("LWA gave no access token for any seller".to_owned())
    }
}

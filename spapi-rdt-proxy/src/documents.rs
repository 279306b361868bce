//! The report-document layer: which `getReportDocument` calls get a token, and what the proxy
//! learns on the way back. It wraps the token stack; the forwarding service above it deals with
//! sellers, URIs and the LWA token only.
//!
//! - A document the client marked (`x-spapi-restricted-report`, as a [`ClientMarked`] extension)
//!   or that the proxy learned is restricted goes marked [`RestrictedReport`], so it gets a token
//!   for its path at once.
//! - Any other document goes with the LWA token, which a 403 must not drop ([`KeepLwaOnRefusal`]);
//!   the token layer's [`ReportPolicy::WhenRefused`](spapi_rdt::control::ReportPolicy) replays a
//!   refused one with a token, and a replay that works is remembered.
//! - `getReport` and `getReports` answers are read as they stream by, and the documents of
//!   restricted report types in them are remembered ([`Learning`]).
//! - Every document token comes out of the seller's [`DocumentBudget`]: past it a marked document
//!   is answered 429 and an unmarked one goes without the replay; a document refused lately is
//!   not asked about again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use spapi_rdt::control::{ReplayedAsRestrictedReport, RestrictedReport, TokenMode};
use spapi_rdt::error::ErrorKind;
use spapi_rdt::{BoxError, SellerId};
use tower_layer::Layer;
use tower_service::Service;

use crate::document_budget::{Charge, DocumentBudget};
use crate::failure::{Failure, ResponseBody};
use crate::metrics::{DocumentRefusalLabels, Metrics, ReportLabels};
use crate::reports::{Learning, ReportCall, RestrictedDocuments};
use crate::upstream::KeepLwaOnRefusal;

/// The client said this `getReportDocument` call is for a restricted report type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientMarked;

/// Applies the report-document policy around the token stack.
#[derive(Clone)]
pub(crate) struct ReportDocumentsLayer {
    pub(crate) documents: RestrictedDocuments,
    pub(crate) budget: Arc<DocumentBudget>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<S> Layer<S> for ReportDocumentsLayer {
    type Service = ReportDocuments<S>;
    fn layer(&self, inner: S) -> ReportDocuments<S> {
        ReportDocuments {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service of [`ReportDocumentsLayer`].
#[derive(Clone)]
pub(crate) struct ReportDocuments<S> {
    layer: ReportDocumentsLayer,
    inner: S,
}

impl<S> Service<Request<reqwest::Body>> for ReportDocuments<S>
where
    S: Service<Request<reqwest::Body>, Response = Response<reqwest::Body>, Error = BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ReportFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<reqwest::Body>) -> Self::Future {
        let call = ReportCall::of(request.method(), request.uri().path());
        let mut document = None;
        match &call {
            Some(ReportCall::Listing) => {
                // A plain JSON answer, so that the proxy can read it on the way back.
                request.headers_mut().remove(header::ACCEPT_ENCODING);
            }
            Some(ReportCall::Document(id)) => {
                let layer = &self.layer;
                let seller = request
                    .extensions()
                    .get::<SellerId>()
                    .cloned()
                    .unwrap_or_default();
                let known = if request.extensions().get::<ClientMarked>().is_some() {
                    Some("header")
                } else if layer.documents.contains(id) {
                    Some("learned")
                } else {
                    None
                };
                let refused = layer.budget.was_refused(id);
                match known {
                    Some(_) if refused => {
                        return layer.answer(
                            "refused_before",
                            Failure::new(
                                StatusCode::BAD_GATEWAY,
                                "TokenRefused",
                                "Amazon refused this report document, or a token for it, within \
                                 the last hour; the proxy does not ask again before then",
                            )
                            .into_response(),
                        );
                    }
                    Some(how) => match layer.budget.take(&seller, id) {
                        Err(wait) => return layer.answer("budget", exhausted(wait)),
                        Ok(charge) => {
                            request.extensions_mut().insert(RestrictedReport);
                            layer
                                .metrics
                                .report_documents
                                .get_or_create(&ReportLabels { how })
                                .inc();
                            document = Some(Document {
                                id: id.clone(),
                                seller,
                                charge,
                                marked: true,
                            });
                        }
                    },
                    None => {
                        request.extensions_mut().insert(KeepLwaOnRefusal);
                        let charge = if refused {
                            None
                        } else {
                            layer.budget.take(&seller, id).ok()
                        };
                        match charge {
                            Some(charge) => {
                                document = Some(Document {
                                    id: id.clone(),
                                    seller,
                                    charge,
                                    marked: false,
                                });
                            }
                            None => {
                                // No replay with a token: the client gets Amazon's answer to
                                // the LWA token.
                                request.extensions_mut().insert(TokenMode::Skip);
                                let reason = if refused { "refused_before" } else { "budget" };
                                layer.count_refusal(reason);
                            }
                        }
                    }
                }
            }
            None => {}
        }
        ReportFuture {
            future: Some(self.inner.call(request)),
            answered: None,
            layer: self.layer.clone(),
            listing: call == Some(ReportCall::Listing),
            document,
        }
    }
}

impl ReportDocumentsLayer {
    fn count_refusal(&self, reason: &'static str) {
        self.metrics
            .document_tokens_refused
            .get_or_create(&DocumentRefusalLabels { reason })
            .inc();
    }

    /// The proxy's own answer, counted, without calling the token stack.
    fn answer<F>(&self, reason: &'static str, response: Response<ResponseBody>) -> ReportFuture<F> {
        self.count_refusal(reason);
        ReportFuture {
            future: None,
            answered: Some(response),
            layer: self.clone(),
            listing: false,
            document: None,
        }
    }
}

/// The 429 for a marked document past its seller's budget.
fn exhausted(wait: std::time::Duration) -> Response<ResponseBody> {
    let mut response = Failure::new(
        StatusCode::TOO_MANY_REQUESTS,
        "QuotaExceeded",
        "this seller's report-document tokens are spent for now (the proxy keeps most of the \
         Tokens API quota for other operations); retry after the time in Retry-After",
    )
    .into_response();
    let secs = wait.as_secs().saturating_add(1);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// A document whose token comes out of the budget.
#[derive(Debug)]
struct Document {
    id: String,
    seller: SellerId,
    charge: Charge,
    /// Sent with a token at once (else with the LWA token, and maybe replayed with one).
    marked: bool,
}

pin_project! {
    /// The token stack's future, or the proxy's own answer; on the stack's answer, remembers what
    /// the answer shows.
    pub(crate) struct ReportFuture<F> {
        #[pin]
        future: Option<F>,
        answered: Option<Response<ResponseBody>>,
        layer: ReportDocumentsLayer,
        listing: bool,
        document: Option<Document>,
    }
}

impl<F> Future for ReportFuture<F>
where
    F: Future<Output = Result<Response<reqwest::Body>, BoxError>>,
{
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(
                this.answered
                    .take()
                    .ok_or_else(|| BoxError::from("the report future was polled after it ended")),
            );
        };
        let result = std::task::ready!(future.poll(cx));
        let layer = &*this.layer;
        if let Some(document) = this.document.take() {
            layer.settle(document, &result);
        }
        let response = result?;
        let learn = *this.listing
            && response.status().is_success()
            && !response.headers().contains_key(header::CONTENT_ENCODING);
        let (parts, body) = response.into_parts();
        let body: ResponseBody = if learn {
            let (documents, metrics) = (layer.documents.clone(), Arc::clone(&layer.metrics));
            Learning::new(body, move |bytes: &[u8]| {
                let learned = documents.learn_from(bytes);
                if learned > 0 {
                    metrics.reports_learned.inc_by(learned as u64);
                    tracing::debug!(learned, "restricted report documents learned");
                }
            })
            .map_err(BoxError::from)
            .boxed()
        } else {
            body.map_err(BoxError::from).boxed()
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

impl ReportDocumentsLayer {
    /// What a document's answer says about its token: granted, refused, or never fetched.
    fn settle(&self, document: Document, result: &Result<Response<reqwest::Body>, BoxError>) {
        let Document {
            id,
            seller,
            charge,
            marked,
        } = document;
        let replayed = result
            .as_ref()
            .is_ok_and(|r| r.extensions().get::<ReplayedAsRestrictedReport>().is_some());
        if !marked && !replayed {
            // Sent with the LWA token and not replayed: no token was fetched.
            if charge == Charge::Taken {
                self.budget.give_back(&seller);
            }
            return;
        }
        match result {
            Ok(response) if response.status().is_success() => {
                self.budget.granted(&id);
                if replayed {
                    self.documents.remember(&id);
                    self.metrics
                        .report_documents
                        .get_or_create(&ReportLabels { how: "retried" })
                        .inc();
                }
            }
            Ok(response) => {
                if replayed {
                    self.metrics.report_retries_refused.inc();
                }
                if response.status() == StatusCode::FORBIDDEN {
                    self.budget.refused(&id);
                }
            }
            Err(error) => {
                let refused = error
                    .downcast_ref::<spapi_rdt::error::Error>()
                    .is_some_and(|e| e.kind() == ErrorKind::Permanent);
                if refused {
                    self.budget.refused(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use futures_util::future::{Ready, ready};

    use crate::config::ReportSettings;

    /// The token stack's stand-in: answers with `status`, marking the answer as a replay when
    /// `replayed`, and notes which markers each request carried.
    #[derive(Clone)]
    struct Stub {
        status: u16,
        replayed: bool,
        seen: Arc<Mutex<Vec<(bool, bool)>>>,
    }

    impl Service<Request<reqwest::Body>> for Stub {
        type Response = Response<reqwest::Body>;
        type Error = BoxError;
        type Future = Ready<Result<Response<reqwest::Body>, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: Request<reqwest::Body>) -> Self::Future {
            let ext = request.extensions();
            self.seen.lock().unwrap().push((
                ext.get::<RestrictedReport>().is_some(),
                ext.get::<KeepLwaOnRefusal>().is_some(),
            ));
            let mut response = Response::new(reqwest::Body::from("{}"));
            *response.status_mut() = http::StatusCode::from_u16(self.status).unwrap();
            if self.replayed {
                response.extensions_mut().insert(ReplayedAsRestrictedReport);
            }
            ready(Ok(response))
        }
    }

    fn layer() -> ReportDocumentsLayer {
        let source = spapi_rdt::source_fn(|_request: spapi_rdt::TokenRequest| async {
            Err::<spapi_rdt::IssuedToken, _>(spapi_rdt::error::SourceError::permanent("none"))
        });
        let documents = RestrictedDocuments::new(ReportSettings {
            capacity: 10,
            ttl: Duration::from_secs(60),
        });
        let metrics = Arc::new(Metrics::new(
            spapi_rdt::RestrictedDataTokenLayer::new(source),
            documents.clone(),
            None,
        ));
        ReportDocumentsLayer {
            documents,
            budget: Arc::new(DocumentBudget::new(
                crate::document_budget::DocumentTokenLimits::default(),
            )),
            metrics,
        }
    }

    async fn oneshot(service: &mut ReportDocuments<Stub>, request: Request<reqwest::Body>) -> u16 {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        service.call(request).await.unwrap().status().as_u16()
    }

    const DOCUMENT: &str = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.7";

    fn get(path: &str) -> Request<reqwest::Body> {
        Request::get(path).body(reqwest::Body::from("")).unwrap()
    }

    #[tokio::test]
    async fn a_document_whose_replay_worked_is_marked_next_time() {
        let layer = layer();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stub = |status, replayed| Stub {
            status,
            replayed,
            seen: Arc::clone(&seen),
        };
        // Unknown: goes unmarked, keeping the LWA token; the replay with a token worked.
        assert_eq!(
            oneshot(&mut layer.layer(stub(200, true)), get(DOCUMENT)).await,
            200
        );
        assert!(layer.documents.contains("amzn1.spdoc.1.4.na.7"));
        // Remembered: marked at once.
        assert_eq!(
            oneshot(&mut layer.layer(stub(200, false)), get(DOCUMENT)).await,
            200
        );
        // The client's own mark works for a document never seen.
        let mut marked = get("/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.8");
        marked.extensions_mut().insert(ClientMarked);
        oneshot(&mut layer.layer(stub(200, false)), marked).await;
        // A replay that was refused again is not remembered.
        let other = get("/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.9");
        assert_eq!(oneshot(&mut layer.layer(stub(403, true)), other).await, 403);
        assert!(!layer.documents.contains("amzn1.spdoc.1.4.na.9"));
        // Other calls carry no marker.
        oneshot(&mut layer.layer(stub(200, false)), get("/orders/v0/orders")).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (false, true),
                (true, false),
                (true, false),
                (false, true),
                (false, false)
            ]
        );
    }
}

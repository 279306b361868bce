//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! The proxy's own: requests by operation and status, upstream latency, client refusals and the
//! restricted-report learning. The token layer's counters ([`spapi_rdt::Stats`]: cache hits and
//! misses, token fetches, waits, errors, rate-limit waits, fleet fallbacks) are read from the layer
//! at each scrape, so they never drift from what the layer says.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use spapi_rdt::RestrictedDataTokenLayer;

use crate::reports::RestrictedDocuments;

/// The content type of the `/metrics` answer.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a forwarded request. Both values come from small fixed sets (catalogue operations,
/// HTTP status codes), never from the request's own text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) api: String,
    pub(crate) operation: String,
    pub(crate) status: u16,
}

/// Why a client was turned away.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    pub(crate) reason: &'static str,
}

/// How a `getReportDocument` got its token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReportLabels {
    /// `header`, `learned` (remembered from a getReport(s) answer or an earlier retry) or
    /// `retried` (refused with the LWA token, then sent with a token).
    pub(crate) how: &'static str,
}

/// The proxy's metrics and their registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) upstream_latency: Histogram,
    pub(crate) refused: Family<RefusalLabels, Counter>,
    pub(crate) reports_learned: Counter,
    pub(crate) report_documents: Family<ReportLabels, Counter>,
    pub(crate) report_retries_refused: Counter,
}

impl Metrics {
    pub(crate) fn new(layer: RestrictedDataTokenLayer, documents: RestrictedDocuments) -> Self {
        let mut registry = Registry::with_prefix("spapi_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests through the proxy, by SP-API API and operation (catalogue names, or `other`) and status",
            requests.clone(),
        );
        // 1 ms to about 33 s.
        let upstream_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "upstream_latency",
            "Time from sending a request upstream to its response head",
            Unit::Seconds,
            upstream_latency.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "clients_refused",
            "Requests turned away by client authentication, by reason",
            refused.clone(),
        );
        let reports_learned = Counter::default();
        registry.register(
            "restricted_reports_learned",
            "Restricted report documents learned from getReport/getReports answers",
            reports_learned.clone(),
        );
        let report_documents = Family::<ReportLabels, Counter>::default();
        registry.register(
            "restricted_report_documents",
            "getReportDocument calls sent with a Restricted Data Token, by how the proxy knew",
            report_documents.clone(),
        );
        let report_retries_refused = Counter::default();
        registry.register(
            "report_retries_refused",
            "getReportDocument calls refused with the LWA token and refused again with a token",
            report_retries_refused.clone(),
        );
        registry.register_collector(Box::new(LayerStats { layer, documents }));
        Metrics {
            registry,
            requests,
            upstream_latency,
            refused,
            reports_learned,
            report_documents,
            report_retries_refused,
        }
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the layer's counters at each scrape.
struct LayerStats {
    layer: RestrictedDataTokenLayer,
    documents: RestrictedDocuments,
}

impl fmt::Debug for LayerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerStats").finish_non_exhaustive()
    }
}

impl Collector for LayerStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stats = self.layer.stats();
        let counters: [(&str, &str, u64); 14] = [
            (
                "token_cache_hits",
                "Restricted requests served a cached token",
                stats.hits,
            ),
            (
                "token_cache_refresh_window_hits",
                "Restricted requests served a cached token due for a background refresh",
                stats.refresh_window_hits,
            ),
            (
                "token_cache_misses",
                "Restricted requests that waited for a token",
                stats.misses,
            ),
            (
                "token_cache_waits",
                "Misses that joined a token fetch already under way",
                stats.coalesced,
            ),
            (
                "token_fetches",
                "Calls to the Tokens API (each attempt)",
                stats.fetches,
            ),
            (
                "token_refreshes",
                "Background token refreshes",
                stats.refreshes,
            ),
            (
                "token_fetch_errors",
                "Token fetches that failed after their retries",
                stats.fetch_errors,
            ),
            (
                "token_remembered_errors",
                "Requests answered with a remembered token error",
                stats.remembered_errors,
            ),
            (
                "token_timeouts",
                "Requests that waited past their deadline for a token",
                stats.timeouts,
            ),
            (
                "token_invalidations",
                "Cached tokens dropped after a 403 on a restricted call",
                stats.invalidations,
            ),
            (
                "rate_limit_waits",
                "Token fetches that waited for the seller's rate limit",
                stats.rate_limit_waits,
            ),
            (
                "fleet_hits",
                "Fleet mode: tokens found in the shared store",
                stats.fleet_hits,
            ),
            (
                "fleet_waits",
                "Fleet mode: fetches that waited for another replica's fetch",
                stats.fleet_waits,
            ),
            (
                "fleet_fallbacks",
                "Fleet mode: fetches that went on alone because the shared store failed",
                stats.fleet_fallbacks,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let remembered = ConstGauge::new(i64::try_from(self.documents.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "restricted_reports_remembered",
            "Restricted report documents in memory",
            None,
            remembered.metric_type(),
        )?;
        remembered.encode(metric)?;
        Ok(())
    }
}

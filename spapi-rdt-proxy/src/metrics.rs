//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! The proxy's own: requests by operation and status, upstream latency, client refusals, the
//! restricted-report learning, and what pacing by usage plans did to each operation (from the
//! [`PacingReport`] of each answer and the [`PacingError`] of each refusal). The token layer's
//! counters ([`spapi_rdt::Stats`]: cache hits and misses, token fetches, waits, errors, rate-limit
//! waits, fleet fallbacks) and the pacing layer's table ([`PacingStats`](spapi_rdt::pacing::PacingStats))
//! are read from the layers at each scrape, so they never drift from what the layers say.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::Method;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use spapi_rdt::RestrictedDataTokenLayer;
use spapi_rdt::catalog::{OperationId, PlanId};
use spapi_rdt::error::PacingError;
use spapi_rdt::matcher::Matcher;
use spapi_rdt::pacing::{PacingLayer, PacingReport};

use crate::config::PLANS;
use crate::connections::Closed;
use crate::reports::{ReportCall, RestrictedDocuments};

/// The content type of the `/metrics` answer.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a forwarded request. Both values come from small fixed sets (catalogue operations,
/// HTTP status codes), never from the request's own text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) api: Label,
    pub(crate) operation: Label,
    pub(crate) status: u16,
}

/// A label value made once and shared, so that counting a request allocates nothing.
pub(crate) type Label = Arc<String>;

/// The `api` and `operation` label values of every operation the proxy counts by name: the
/// catalogue's restricted operations, `getReport` and `getReports`; anything else is `other`.
pub(crate) struct OperationNames {
    restricted: HashMap<OperationId, (Label, Label)>,
    reports: Label,
    get_report: Label,
    get_reports: Label,
    other: Label,
}

impl OperationNames {
    /// The names of `matcher`'s operations (each found by classifying its own template).
    pub(crate) fn new(matcher: &Matcher) -> Self {
        let label = |text: &str| Arc::new(text.to_owned());
        let restricted = matcher
            .catalog()
            .operations()
            .iter()
            .filter_map(|op| {
                let id = matcher.classify(op.method(), op.template())?.id();
                Some((id, (label(op.api()), label(op.name()))))
            })
            .collect();
        OperationNames {
            restricted,
            reports: label("Reports 2021-06-30"),
            get_report: label("getReport"),
            get_reports: label("getReports"),
            other: label("other"),
        }
    }

    /// The labels of a request for `method path`.
    pub(crate) fn of(&self, matcher: &Matcher, method: &Method, path: &str) -> (Label, Label) {
        let named = matcher
            .classify(method, path)
            .and_then(|hit| self.restricted.get(&hit.id()));
        if let Some((api, operation)) = named {
            return (Arc::clone(api), Arc::clone(operation));
        }
        match ReportCall::of(method, path) {
            Some(ReportCall::Listing) if path.ends_with("/reports") => {
                (Arc::clone(&self.reports), Arc::clone(&self.get_reports))
            }
            Some(ReportCall::Listing) => (Arc::clone(&self.reports), Arc::clone(&self.get_report)),
            _ => (Arc::clone(&self.other), Arc::clone(&self.other)),
        }
    }
}

impl fmt::Debug for OperationNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationNames")
            .field("restricted", &self.restricted.len())
            .finish_non_exhaustive()
    }
}

/// Labels of a usage-plan metric: an operation of the models, named as
/// [`UsagePlans`](spapi_rdt::catalog::UsagePlans) names it, so there are at most as many series as
/// the models have operations. Both values are `&'static` and counting allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PlanLabels {
    pub(crate) api: &'static str,
    pub(crate) operation: &'static str,
}

impl PlanLabels {
    /// What a path of no model operation is counted as (paced only if the layer paces those).
    const OTHER: PlanLabels = PlanLabels {
        api: "other",
        operation: "other",
    };

    /// The labels of the operation a [`PacingReport`] names.
    fn of(id: Option<PlanId>) -> Self {
        id.and_then(|id| PLANS.get(id))
            .map_or(PlanLabels::OTHER, |op| PlanLabels {
                api: op.api(),
                operation: op.name(),
            })
    }

    /// The labels of the operation a [`PacingError`] names.
    fn named(api: &str, operation: &str) -> Self {
        PLANS
            .find(api, operation)
            .map_or(PlanLabels::OTHER, |op| PlanLabels {
                api: op.api(),
                operation: op.name(),
            })
    }
}

/// What pacing did, by operation.
#[derive(Debug, Default)]
pub(crate) struct PlanMetrics {
    waits: Family<PlanLabels, Counter>,
    wait_seconds: Family<PlanLabels, Counter<f64, AtomicU64>>,
    throttled: Family<PlanLabels, Counter>,
    retries: Family<PlanLabels, Counter>,
    stated_rate: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    refused: Family<PlanLabels, Counter>,
}

impl PlanMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "usage_plan_waits",
            "Calls held for a slot of their usage plan before going to Amazon, by API and operation",
            self.waits.clone(),
        );
        registry.register_with_unit(
            "usage_plan_wait",
            "Time calls were held for their usage plan (before each attempt), by API and operation",
            Unit::Seconds,
            self.wait_seconds.clone(),
        );
        registry.register(
            "usage_plan_throttled",
            "429 answers Amazon gave to paced calls, retried or returned, by API and operation",
            self.throttled.clone(),
        );
        registry.register(
            "usage_plan_retries",
            "Paced calls sent again after a 429, by API and operation",
            self.retries.clone(),
        );
        registry.register(
            "usage_plan_stated_rate",
            "The last rate (requests a second) Amazon stated in x-amzn-RateLimit-Limit for a paced \
             call, by API and operation (sellers may differ)",
            self.stated_rate.clone(),
        );
        registry.register(
            "usage_plan_refused",
            "Calls the proxy answered 429 without sending because their usage plan would hold \
             them longer than --usage-plan-max-wait, by API and operation",
            self.refused.clone(),
        );
    }
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

/// Why a report document got no token from the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DocumentRefusalLabels {
    /// `budget` (the seller's document tokens are spent for now) or `refused_before` (Amazon
    /// refused this document lately).
    pub(crate) reason: &'static str,
}

/// Why the proxy closed a client connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ClosedLabels {
    /// `header_timeout`, `idle`, `age` or `drain` ([`Closed::label`]).
    pub(crate) reason: &'static str,
}

/// The client connections: how many are open, the cap, and why the proxy closed them.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    open: Gauge,
    closed: Family<ClosedLabels, Counter>,
}

impl ConnectionMetrics {
    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    /// A connection ended; `why` the proxy closed it, or `None` when the client did.
    pub(crate) fn closed(&self, why: Option<Closed>) {
        self.open.dec();
        if let Some(why) = why {
            self.closed
                .get_or_create(&ClosedLabels {
                    reason: why.label(),
                })
                .inc();
        }
    }
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
    pub(crate) document_tokens_refused: Family<DocumentRefusalLabels, Counter>,
    connections: ConnectionMetrics,
    max_connections: Gauge,
    plans: PlanMetrics,
}

impl Metrics {
    /// The metrics of a proxy with this token layer and report memory; the usage-plan metrics
    /// only when it paces calls (`pacing`).
    pub(crate) fn new(
        layer: RestrictedDataTokenLayer,
        documents: RestrictedDocuments,
        pacing: Option<PacingLayer>,
    ) -> Self {
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
            "Clients turned away, by reason: a connection from a refused network or past the \
             connection cap, a request without the client secret",
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
        let document_tokens_refused = Family::<DocumentRefusalLabels, Counter>::default();
        registry.register(
            "document_tokens_refused",
            "getReportDocument calls the proxy fetched no token for: the seller's document-token \
             budget was spent (a marked document got 429, an unmarked one no replay) or Amazon \
             refused the document lately",
            document_tokens_refused.clone(),
        );
        let report_retries_refused = Counter::default();
        registry.register(
            "report_retries_refused",
            "getReportDocument calls refused with the LWA token and refused again with a token",
            report_retries_refused.clone(),
        );
        let connections = ConnectionMetrics {
            open: Gauge::default(),
            closed: Family::default(),
        };
        registry.register(
            "connections_open",
            "Client connections open",
            connections.open.clone(),
        );
        let max_connections = Gauge::default();
        registry.register(
            "connections_max",
            "The most client connections open at once; past it, new ones are closed at accept",
            max_connections.clone(),
        );
        registry.register(
            "connections_closed",
            "Client connections the proxy closed, by reason (header_timeout, idle, age, drain)",
            connections.closed.clone(),
        );
        let plans = PlanMetrics::default();
        if pacing.is_some() {
            plans.register(&mut registry);
        }
        registry.register_collector(Box::new(LayerStats {
            layer,
            documents,
            pacing,
        }));
        Metrics {
            registry,
            requests,
            upstream_latency,
            refused,
            reports_learned,
            report_documents,
            report_retries_refused,
            document_tokens_refused,
            connections,
            max_connections,
            plans,
        }
    }

    /// Counts what pacing did to one answered call.
    pub(crate) fn paced(&self, report: &PacingReport) {
        let labels = PlanLabels::of(report.operation);
        let plans = &self.plans;
        if !report.waited.is_zero() {
            plans.waits.get_or_create(&labels).inc();
            plans
                .wait_seconds
                .get_or_create(&labels)
                .inc_by(report.waited.as_secs_f64());
        }
        if report.throttled > 0 {
            plans
                .throttled
                .get_or_create(&labels)
                .inc_by(u64::from(report.throttled));
        }
        if report.retries > 0 {
            plans
                .retries
                .get_or_create(&labels)
                .inc_by(u64::from(report.retries));
        }
        if let Some(rate) = report.stated_rate {
            plans.stated_rate.get_or_create(&labels).set(rate);
        }
    }

    /// Counts a call refused because its usage plan would hold it too long.
    pub(crate) fn refused_by_plan(&self, error: &PacingError) {
        self.plans
            .refused
            .get_or_create(&PlanLabels::named(error.api(), error.operation()))
            .inc();
    }

    /// The connection metrics, for a listener that admits at most `max_connections`.
    pub(crate) fn connections(&self, max_connections: usize) -> ConnectionMetrics {
        self.max_connections
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        self.connections.clone()
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the layers' counters at each scrape.
struct LayerStats {
    layer: RestrictedDataTokenLayer,
    documents: RestrictedDocuments,
    pacing: Option<PacingLayer>,
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
        let alone = ConstGauge::new(i64::from(stats.fleet_alone));
        let metric = encoder.encode_descriptor(
            "fleet_alone",
            "Fleet mode: 1 while this replica works alone because the shared store failed",
            None,
            alone.metric_type(),
        )?;
        alone.encode(metric)?;
        let remembered = ConstGauge::new(i64::try_from(self.documents.len()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "restricted_reports_remembered",
            "Restricted report documents in memory",
            None,
            remembered.metric_type(),
        )?;
        remembered.encode(metric)?;
        if let Some(pacing) = &self.pacing {
            let stats = pacing.stats();
            let unpaced = ConstCounter::new(stats.unpaced);
            let metric = encoder.encode_descriptor(
                "usage_plan_unpaced",
                "Calls sent without pacing because every usage-plan bucket the proxy may keep was \
                 busy",
                None,
                unpaced.metric_type(),
            )?;
            unpaced.encode(metric)?;
            let buckets = ConstGauge::new(i64::try_from(stats.buckets).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "usage_plan_buckets",
                "Usage-plan buckets kept: one per seller, upstream and operation called lately",
                None,
                buckets.metric_type(),
            )?;
            buckets.encode(metric)?;
            let fallbacks = ConstCounter::new(stats.fleet_fallbacks);
            let metric = encoder.encode_descriptor(
                "usage_plan_fleet_fallbacks",
                "Fleet mode: calls paced at this replica's share of their plan because the shared \
                 usage-plan buckets failed",
                None,
                fallbacks.metric_type(),
            )?;
            fallbacks.encode(metric)?;
            let alone = ConstGauge::new(i64::from(stats.fleet_alone));
            let metric = encoder.encode_descriptor(
                "usage_plan_fleet_alone",
                "Fleet mode: 1 while this replica paces alone at its share because the shared \
                 usage-plan buckets failed",
                None,
                alone.metric_type(),
            )?;
            alone.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spapi_rdt::catalog::Catalog;

    #[test]
    fn every_catalogue_operation_has_its_names_and_the_rest_is_other() {
        let matcher = Matcher::new(Catalog::amazon()).unwrap();
        let names = OperationNames::new(&matcher);
        assert_eq!(names.restricted.len(), matcher.catalog().operations().len());
        let (api, operation) = names.of(
            &matcher,
            &Method::GET,
            "/orders/v0/orders/902-3159896-1390916/address",
        );
        assert_eq!(
            (api.as_str(), operation.as_str()),
            ("Orders v0", "getOrderAddress")
        );
        let (api, operation) = names.of(&matcher, &Method::GET, "/reports/2021-06-30/reports");
        assert_eq!(
            (api.as_str(), operation.as_str()),
            ("Reports 2021-06-30", "getReports")
        );
        let (api, operation) = names.of(
            &matcher,
            &Method::GET,
            "/sellers/v1/marketplaceParticipations",
        );
        assert_eq!((api.as_str(), operation.as_str()), ("other", "other"));
        // Shared, not made anew: the same allocation every time.
        let (again, _) = names.of(&matcher, &Method::GET, "/anything");
        assert!(Arc::ptr_eq(&api, &again));
    }
}

//! Usage plans: which plan a call meets, the buckets that enforce it, and the
//! `x-amzn-RateLimit-Limit` header that states it.
//!
//! Every bucket is a GCRA on tokio's clock in whole nanoseconds: a bucket of `burst` requests lets
//! one more request through every `interval` (1 / (rate × time scale) seconds, rounded up to the
//! nanosecond). That is a token bucket with no rounding drift, so a test on paused time can tell
//! to the nanosecond when the next request goes through.

use std::collections::HashMap;
use std::time::Duration;

use axum::response::Response;
use http::{Method, StatusCode};
use spapi_rdt::catalog::{PlanId, PlannedOperation, UsagePlan, UsagePlans};
use tokio::time::Instant;

use super::config::EmulatorConfig;
use super::reply::{RATE_LIMIT, TOKENS_PATH, set_header, sp_error};

/// Whose bucket a call takes from: Amazon keeps one per selling partner and application.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// A seller's call: made by the emulator's application (`app: None`) or by the delegatee an
    /// RDT was issued to.
    Seller { seller: String, app: Option<String> },
    /// A grantless call of the emulator's application.
    Application,
}

impl Caller {
    /// The seller, if the call is made on one's behalf.
    fn seller(&self) -> Option<&str> {
        match self {
            Caller::Seller { seller, .. } => Some(seller),
            Caller::Application => None,
        }
    }
}

/// What a bucket meters besides its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Metered {
    /// The Tokens API, always enforced.
    Tokens,
    /// Another operation, enforced when the configuration says so.
    Operation(PlanId),
}

/// A plan as the emulator applies it to one call.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    /// Requests a second, before the time scale; 0 for a Tokens API quota without refill.
    rate: f64,
    burst: u32,
    /// The rate as the model writes it, when the plan is the model's.
    text: Option<String>,
    /// `"API operationId"`, for the counters.
    pub(crate) operation: String,
}

/// The usage-plan settings of a configuration, with every operation name resolved.
#[derive(Debug)]
pub(crate) struct Rules {
    plans: UsagePlans,
    enforce: bool,
    scale: f64,
    unstated: UsagePlan,
    by_operation: HashMap<PlanId, UsagePlan>,
    by_seller: HashMap<String, HashMap<PlanId, UsagePlan>>,
    /// The Tokens API's row of the table.
    tokens: Option<PlanId>,
    token_rate: f64,
    token_burst: u32,
}

impl Applied {
    /// How many requests the bucket holds.
    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }
}

impl Rules {
    /// Resolves the configuration's names against [`UsagePlans::amazon`]; an error names the first
    /// setting that cannot be enforced.
    pub(crate) fn new(config: &EmulatorConfig) -> Result<Rules, String> {
        let plans = UsagePlans::amazon();
        let scale = config.time_scale;
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!(
                "usage_plan_time_scale({scale}): the time scale must be a finite number above zero"
            ));
        }
        let mut by_operation = HashMap::new();
        for (operations, plan) in &config.plan_overrides {
            let ids = resolve(plans, operations)
                .ok_or_else(|| format!("usage_plan({operations:?}): {NAMES_NOTHING}"))?;
            for id in ids {
                by_operation.insert(id, *plan);
            }
        }
        let mut by_seller: HashMap<String, HashMap<PlanId, UsagePlan>> = HashMap::new();
        for (seller, operations, plan) in &config.seller_plans {
            let ids = resolve(plans, operations).ok_or_else(|| {
                format!("seller_usage_plan({seller:?}, {operations:?}): {NAMES_NOTHING}")
            })?;
            let own = by_seller.entry(seller.clone()).or_default();
            for id in ids {
                own.insert(id, *plan);
            }
        }
        Ok(Rules {
            plans,
            enforce: config.usage_plans,
            scale,
            unstated: config.unstated_plan,
            by_operation,
            by_seller,
            tokens: plans.classify(&Method::POST, TOKENS_PATH).map(|(id, _)| id),
            token_rate: config.token_rate,
            token_burst: config.token_burst,
        })
    }

    /// The operation a call meters, when plans are enforced and the call is one of the table's.
    pub(crate) fn classify(&self, method: &Method, path: &str) -> Option<PlanId> {
        if !self.enforce {
            return None;
        }
        self.plans.classify(method, path).map(|(id, _)| id)
    }

    /// The plan `caller`'s call of `metered` meets.
    pub(crate) fn applied(&self, caller: &Caller, metered: Metered) -> Applied {
        let id = match metered {
            Metered::Tokens => self.tokens,
            Metered::Operation(id) => Some(id),
        };
        let row = id.and_then(|id| self.plans.get(id));
        let operation = row.map_or_else(
            || "Tokens 2021-03-01 createRestrictedDataToken".to_owned(),
            |op| format!("{} {}", op.api(), op.name()),
        );
        let set = id.and_then(|id| {
            let own = caller
                .seller()
                .and_then(|seller| self.by_seller.get(seller))
                .and_then(|plans| plans.get(&id));
            own.or_else(|| self.by_operation.get(&id))
        });
        let (rate, burst, text) = match (set, metered) {
            (Some(plan), _) => (plan.rate_per_second(), plan.burst(), None),
            (None, Metered::Tokens) => (self.token_rate, self.token_burst, None),
            (None, Metered::Operation(_)) => match row.and_then(model_plan) {
                Some((plan, text)) => (plan.rate_per_second(), plan.burst(), Some(text)),
                None => (self.unstated.rate_per_second(), self.unstated.burst(), None),
            },
        };
        Applied {
            rate,
            burst,
            text,
            operation,
        }
    }

    /// How long the bucket of `plan` takes to refill one request; `None` when it never does.
    pub(crate) fn interval(&self, plan: &Applied) -> Option<Duration> {
        interval(plan.rate * self.scale)
    }

    /// The `x-amzn-RateLimit-Limit` value of `plan`: the model's text when the plan is the model's
    /// and the time runs at Amazon's pace, else the scaled rate.
    pub(crate) fn header(&self, plan: &Applied) -> String {
        match &plan.text {
            Some(text) if self.scale == 1.0 => decimal_text(text),
            _ => decimal(plan.rate * self.scale),
        }
    }
}

const NAMES_NOTHING: &str = "names no API, no operationId and no \"API operationId\" of the \
                             usage-plan table (spapi_rdt::catalog::UsagePlans::amazon)";

/// The operations `name` names (see [`EmulatorConfig::usage_plan`]), or `None` for none.
fn resolve(plans: UsagePlans, name: &str) -> Option<Vec<PlanId>> {
    let ids: Vec<PlanId> = plans
        .operations()
        .iter()
        .filter(|op| names(name, op))
        .filter_map(|op| row_id(plans, op))
        .collect();
    (!ids.is_empty()).then_some(ids)
}

/// The id of the table's row `op`: the row that a path made of its own template classifies as.
fn row_id(plans: UsagePlans, op: &PlannedOperation) -> Option<PlanId> {
    let sample = op.template().replace('{', "X").replace('}', "9");
    plans
        .classify(op.method(), &sample)
        .filter(|(_, hit)| std::ptr::eq(*hit, op))
        .map(|(id, _)| id)
}

/// Whether `name` names `op`: its API, its `operationId`, or both with a space between.
fn names(name: &str, op: &PlannedOperation) -> bool {
    name == op.api()
        || name == op.name()
        || name
            .strip_prefix(op.api())
            .and_then(|rest| rest.strip_prefix(' '))
            == Some(op.name())
}

/// The plan a row's model states, with its rate as the model writes it.
fn model_plan(op: &PlannedOperation) -> Option<(UsagePlan, String)> {
    Some((op.plan()?, op.model_rate()?.to_owned()))
}

/// A refill interval of `rate` requests a second, rounded up to the nanosecond (at least one);
/// `None` when the bucket never refills (no rate, or one too slow for the clock to hold).
pub(crate) fn interval(rate: f64) -> Option<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        return None;
    }
    let nanos = (1e9 / rate).ceil().max(1.0);
    // The largest f64 below 2^64: past it the interval is longer than the clock can hold.
    if nanos >= 18_446_744_073_709_549_568.0 {
        return None;
    }
    // In range and integral: the cast is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(Duration::from_nanos(nanos as u64))
}

/// A model's rate as Amazon's header writes a decimal: `"2"` as `"2.0"`, `".5"` as `"0.5"`.
fn decimal_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    if text.starts_with('.') {
        out.push('0');
    }
    out.push_str(text);
    if !text.contains('.') {
        out.push_str(".0");
    }
    out
}

/// A rate as a short decimal: at most ten decimals, at least one (`10.0`, `0.5`, `0.167`), in
/// exponent notation only for a rate too small for ten decimals.
pub(crate) fn decimal(rate: f64) -> String {
    let mut text = format!("{rate:.10}");
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.push('0');
        }
    }
    if rate > 0.0 && text == "0.0" {
        return format!("{rate:?}");
    }
    text
}

/// A GCRA bucket: `tat` is the instant at which the bucket will be full again; `spent` counts the
/// requests of a bucket that never refills.
#[derive(Debug)]
pub(crate) struct Bucket {
    tat: Instant,
    spent: u32,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn full(now: Instant) -> Bucket {
        Bucket { tat: now, spent: 0 }
    }

    /// Takes one request at `now` from a bucket of `burst` that refills one every `interval`
    /// (`None`: never); `false` when it is empty.
    pub(crate) fn take(&mut self, now: Instant, interval: Option<Duration>, burst: u32) -> bool {
        if burst == 0 {
            return false;
        }
        let Some(interval) = interval else {
            if self.spent < burst {
                self.spent += 1;
                return true;
            }
            return false;
        };
        // Full again by `tat`; each request held moves `tat` on by one interval, and the bucket
        // holds at most `burst` of them.
        let tolerance = interval.checked_mul(burst - 1).unwrap_or(Duration::MAX);
        let start = self.tat.max(now);
        if start.saturating_duration_since(now) > tolerance {
            return false;
        }
        match start.checked_add(interval) {
            Some(tat) => {
                self.tat = tat;
                true
            }
            // Past what the clock holds: as good as never refilled.
            None => false,
        }
    }

    /// Whether the bucket is full at `now`, so that forgetting it changes nothing.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.spent == 0 && self.tat <= now
    }
}

/// A call found its bucket empty: answer [`quota_exceeded`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuotaExceeded;

/// The 429 Amazon answers a call whose bucket is empty: no `x-amzn-RateLimit-Limit`, no
/// `Retry-After`.
pub(crate) fn quota_exceeded() -> Response {
    sp_error(
        StatusCode::TOO_MANY_REQUESTS,
        "QuotaExceeded",
        "You exceeded your quota for the requested resource.",
        Some(""),
    )
}

/// Adds `x-amzn-RateLimit-Limit: rate` to `response` when Amazon would: on a 2xx, 400 or 404.
pub(crate) fn stamp(mut response: Response, rate: Option<&str>) -> Response {
    let status = response.status();
    let states_rate =
        status.is_success() || status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND;
    if let (Some(rate), true) = (rate, states_rate) {
        set_header(response.headers_mut(), RATE_LIMIT, rate);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_written_as_decimals() {
        assert_eq!(decimal_text("0.0167"), "0.0167");
        assert_eq!(decimal_text(".5"), "0.5");
        assert_eq!(decimal_text("2"), "2.0");
        assert_eq!(decimal_text("2.0"), "2.0");
        assert_eq!(decimal(10.0), "10.0");
        assert_eq!(decimal(0.5), "0.5");
        assert_eq!(decimal(0.0167 * 10.0), "0.167");
        assert_eq!(decimal(0.0), "0.0");
        assert_eq!(decimal(1e-12), "1e-12");
    }

    #[test]
    fn intervals_round_up_to_the_nanosecond() {
        assert_eq!(interval(0.5), Some(Duration::from_secs(2)));
        assert_eq!(interval(3.0), Some(Duration::from_nanos(333_333_334)));
        assert_eq!(interval(1e12), Some(Duration::from_nanos(1)));
        assert_eq!(interval(0.0), None);
        assert_eq!(interval(f64::NAN), None);
        assert_eq!(interval(1e-30), None);
    }

    #[test]
    fn every_operation_name_resolves() {
        let plans = UsagePlans::amazon();
        for op in plans.operations() {
            let qualified = format!("{} {}", op.api(), op.name());
            let ids = resolve(plans, &qualified).unwrap();
            assert!(!ids.is_empty(), "{qualified}");
            for id in ids {
                let row = plans.get(id).unwrap();
                assert_eq!((row.api(), row.name()), (op.api(), op.name()));
            }
        }
        assert!(resolve(plans, "Orders v0").unwrap().len() >= 7);
        assert!(resolve(plans, "getOrder").unwrap().len() >= 2);
        assert!(resolve(plans, "Orders v9").is_none());
        assert!(resolve(plans, "Orders v0 getOrderz").is_none());
        assert!(resolve(plans, "").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_lets_its_burst_through_then_one_per_interval() {
        let now = Instant::now();
        let mut bucket = Bucket::full(now);
        let every = Some(Duration::from_secs(2));
        assert!((0..3).all(|_| bucket.take(now, every, 3)));
        assert!(!bucket.take(now, every, 3));
        let almost = now + Duration::from_secs(2) - Duration::from_nanos(1);
        assert!(!bucket.take(almost, every, 3));
        assert!(bucket.take(now + Duration::from_secs(2), every, 3));
        assert!(!bucket.take(now + Duration::from_secs(2), every, 3));
        assert!(!bucket.is_full(now + Duration::from_secs(7)));
        assert!(bucket.is_full(now + Duration::from_secs(8)));

        let mut never = Bucket::full(now);
        assert!(never.take(now, None, 2) && never.take(now, None, 2));
        assert!(!never.take(now + Duration::from_secs(3600), None, 2));
        assert!(!Bucket::full(now).take(now, every, 0));
    }
}

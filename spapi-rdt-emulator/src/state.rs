//! The emulator's shared state: sellers, issued tokens, usage-plan buckets, denials, faults and
//! counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use super::config::EmulatorConfig;
use super::fault::{self, Plan, Rule, Target};
use super::seen::SeenRequest;
use super::usage::{Bucket, Caller, Metered, Rules};
use spapi_rdt::catalog::{DataElements, OperationId, PathKind};
use spapi_rdt::matcher::Matcher;

/// A snapshot of what the emulator has seen and answered, from [`Emulator::counters`].
///
/// [`Emulator::counters`]: super::Emulator::counters
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests to the LWA endpoint, whatever their outcome.
    pub lwa_calls: u64,
    /// Requests to the Tokens API, whatever their outcome.
    pub token_calls: u64,
    /// Requests to the Tokens API per seller, for requests whose access token named a seller.
    pub token_calls_by_seller: BTreeMap<String, u64>,
    /// Restricted Data Tokens issued.
    pub rdts_issued: u64,
    /// LWA access tokens issued over HTTP (not those of
    /// [`Emulator::issue_lwa_token`](super::Emulator::issue_lwa_token)).
    pub access_tokens_issued: u64,
    /// 429 responses sent, from any endpoint, injected ones included.
    pub throttled: u64,
    /// Requests to restricted operations, whatever their outcome.
    pub restricted_calls: u64,
    /// 403 responses to restricted operations, injected ones included.
    pub restricted_forbidden: u64,
    /// Successful restricted calls whose answer held personal data.
    pub pii_served: u64,
    /// Successful restricted calls whose answer left personal data out (an Orders v0 call with an
    /// LWA token, or with a token issued without the data elements the operation needs).
    pub pii_withheld: u64,
    /// Requests to the unrestricted operations the emulator serves, whatever their outcome.
    pub unrestricted_calls: u64,
    /// Injected faults that requests met.
    pub faults_injected: u64,
    /// 429 `QuotaExceeded` answers the emulator's usage plans sent (the Tokens API's included),
    /// injected ones not included: the calls that found their bucket empty.
    pub quota_exceeded: u64,
    /// [`quota_exceeded`](Self::quota_exceeded) per operation, named `"API operationId"` as in
    /// [`UsagePlans::amazon`](spapi_rdt::catalog::UsagePlans::amazon), such as
    /// `"Orders v0 getOrder"`.
    pub quota_exceeded_by_operation: BTreeMap<String, u64>,
    /// Calls that took a request from their usage-plan bucket, per operation (named as in
    /// [`quota_exceeded_by_operation`](Self::quota_exceeded_by_operation)): the Tokens API's
    /// always, the other operations' when usage plans are enforced.
    pub admitted_by_operation: BTreeMap<String, u64>,
}

impl Counters {
    /// Requests to the Tokens API made with `seller`'s access token.
    pub fn token_calls_for(&self, seller: &str) -> u64 {
        self.token_calls_by_seller.get(seller).copied().unwrap_or(0)
    }

    /// Calls of `operation` (`"API operationId"`, such as `"Orders v0 getOrder"`) that their
    /// usage plan let through.
    pub fn admitted(&self, operation: &str) -> u64 {
        self.admitted_by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of `operation` (named as for [`admitted`](Self::admitted)) that found their bucket
    /// empty and were answered 429.
    pub fn quota_exceeded_for(&self, operation: &str) -> u64 {
        self.quota_exceeded_by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

/// What an issued LWA access token stands for.
#[derive(Debug)]
pub(crate) struct AccessGrant {
    /// `None` for a grantless (`client_credentials`) token.
    pub(crate) seller: Option<String>,
    pub(crate) expires_at: Option<Instant>,
}

/// What one resource of an issued RDT lets its holder call.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Any call of this operation (generic path).
    Operation(OperationId),
    /// Exactly this path (specific path) of this operation.
    Path(OperationId, String),
    /// Nothing: an unknown path, or a generic path Amazon accepts only as a specific one.
    Nothing,
}

#[derive(Debug, Clone)]
pub(crate) struct Coverage {
    pub(crate) method: Method,
    pub(crate) scope: Scope,
    pub(crate) elements: DataElements,
}

#[derive(Debug)]
pub(crate) struct Rdt {
    pub(crate) seller: String,
    pub(crate) coverage: Vec<Coverage>,
    pub(crate) target_application: Option<String>,
    pub(crate) expires_at: Option<Instant>,
}

impl Rdt {
    /// The data elements the token grants for a call of operation `id` at `path`, or `None`
    /// when the token does not cover the call.
    pub(crate) fn covers(
        &self,
        method: &Method,
        id: OperationId,
        path: &str,
    ) -> Option<DataElements> {
        let mut granted: Option<DataElements> = None;
        for c in &self.coverage {
            if c.method != *method {
                continue;
            }
            let hit = match &c.scope {
                Scope::Operation(i) => *i == id,
                Scope::Path(i, p) => *i == id && p == path,
                Scope::Nothing => false,
            };
            if hit {
                let so_far = granted.unwrap_or(DataElements::NONE);
                granted = Some(c.elements.iter().fold(so_far, DataElements::with));
            }
        }
        granted
    }
}

/// Everything behind the lock. No `Debug`: the maps are keyed by secret token values.
pub(crate) struct Inner {
    /// refresh token → seller.
    pub(crate) refresh_tokens: HashMap<String, String>,
    /// seller → refresh token.
    pub(crate) sellers: BTreeMap<String, String>,
    pub(crate) access: HashMap<String, AccessGrant>,
    pub(crate) rdts: HashMap<String, Rdt>,
    buckets: HashMap<(Caller, Metered), Bucket>,
    /// Past this many buckets, full ones are forgotten.
    sweep_buckets_above: usize,
    pub(crate) denied_resources: Vec<(Method, String)>,
    pub(crate) denied_elements: DataElements,
    pub(crate) target_applications: Vec<String>,
    pub(crate) faults: Vec<Rule>,
    pub(crate) counters: Counters,
    /// The last [`REQUEST_LOG_CAPACITY`] requests, oldest first.
    pub(crate) seen: VecDeque<SeenRequest>,
}

/// How many requests the log keeps; older ones are forgotten.
pub(crate) const REQUEST_LOG_CAPACITY: usize = 1024;

/// State shared by the server task and the [`Emulator`](super::Emulator) handle.
pub(crate) struct Shared {
    pub(crate) matcher: Matcher,
    pub(crate) config: EmulatorConfig,
    pub(crate) usage: Rules,
    inner: Mutex<Inner>,
}

/// Past this many entries, expired tokens are swept out when a new one is issued.
const SWEEP_ABOVE: usize = 1024;

impl Shared {
    /// The state of an emulator configured with `config`; an error names a setting the emulator
    /// cannot apply.
    pub(crate) fn new(config: EmulatorConfig, matcher: Matcher) -> Result<Self, String> {
        let usage = Rules::new(&config)?;
        let mut inner = Inner {
            refresh_tokens: HashMap::new(),
            sellers: BTreeMap::new(),
            access: HashMap::new(),
            rdts: HashMap::new(),
            buckets: HashMap::new(),
            sweep_buckets_above: SWEEP_ABOVE,
            denied_resources: Vec::new(),
            denied_elements: DataElements::NONE,
            target_applications: config.target_applications.clone(),
            faults: Vec::new(),
            counters: Counters::default(),
            seen: VecDeque::new(),
        };
        for (seller, refresh) in &config.sellers {
            inner.add_seller(seller, refresh);
        }
        Ok(Shared {
            matcher,
            config,
            usage,
            inner: Mutex::new(inner),
        })
    }

    /// Locks the state. A panic while the lock was held leaves the state usable, so poisoning is
    /// ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the faults a request to `target` meets.
    pub(crate) fn take_faults(&self, target: Target) -> Plan {
        let mut inner = self.lock();
        let plan = fault::take(&mut inner.faults, target);
        inner.counters.faults_injected += plan.count();
        plan
    }

    /// Adds a request to the log, forgetting the oldest past [`REQUEST_LOG_CAPACITY`].
    pub(crate) fn record(&self, request: SeenRequest) {
        let mut inner = self.lock();
        if inner.seen.len() >= REQUEST_LOG_CAPACITY {
            inner.seen.pop_front();
        }
        inner.seen.push_back(request);
    }

    /// Takes one request from `caller`'s bucket for `metered`, before the call runs: the
    /// `x-amzn-RateLimit-Limit` value its answer states, or `None` when the bucket is empty (answer
    /// [`quota_exceeded`](super::usage::quota_exceeded) then).
    pub(crate) fn meter(&self, caller: Caller, metered: Metered) -> Option<String> {
        let plan = self.usage.applied(&caller, metered);
        let interval = self.usage.interval(&plan);
        let burst = plan.burst();
        let mut inner = self.lock();
        let admitted = inner.take(caller, metered, interval, burst);
        let counters = &mut inner.counters;
        let by_operation = if admitted {
            &mut counters.admitted_by_operation
        } else {
            counters.quota_exceeded += 1;
            &mut counters.quota_exceeded_by_operation
        };
        match by_operation.get_mut(&plan.operation) {
            Some(count) => *count += 1,
            None => {
                by_operation.insert(plan.operation.clone(), 1);
            }
        }
        drop(inner);
        admitted.then(|| self.usage.header(&plan))
    }

    /// Who a live token calls for: `None` for a token the emulator does not know or that expired.
    pub(crate) fn caller_of(&self, token: &str) -> Option<Caller> {
        let now = Instant::now();
        let inner = self.lock();
        if let Some(rdt) = inner.rdts.get(token) {
            return live(rdt.expires_at, now).then(|| Caller::Seller {
                seller: rdt.seller.clone(),
                app: rdt.target_application.clone(),
            });
        }
        let grant = inner.access.get(token)?;
        live(grant.expires_at, now).then(|| match &grant.seller {
            Some(seller) => Caller::Seller {
                seller: seller.clone(),
                app: None,
            },
            None => Caller::Application,
        })
    }
}

impl Inner {
    pub(crate) fn add_seller(&mut self, seller: &str, refresh_token: &str) {
        if let Some(old) = self
            .sellers
            .insert(seller.to_owned(), refresh_token.to_owned())
        {
            self.refresh_tokens.remove(&old);
        }
        self.refresh_tokens
            .insert(refresh_token.to_owned(), seller.to_owned());
    }

    /// Issues an LWA access token.
    pub(crate) fn issue_access(&mut self, seller: Option<&str>, lifetime: Duration) -> String {
        let now = Instant::now();
        if self.access.len() > SWEEP_ABOVE {
            self.access.retain(|_, g| live(g.expires_at, now));
        }
        let token = format!("Atza|{}", random_string(96));
        self.access.insert(
            token.clone(),
            AccessGrant {
                seller: seller.map(str::to_owned),
                expires_at: deadline(now, lifetime),
            },
        );
        token
    }

    /// Issues a Restricted Data Token.
    pub(crate) fn issue_rdt(&mut self, rdt: Rdt) -> String {
        let now = Instant::now();
        if self.rdts.len() > SWEEP_ABOVE {
            self.rdts.retain(|_, r| live(r.expires_at, now));
        }
        let token = format!("Atz.sprdt|{}", random_string(96));
        self.rdts.insert(token.clone(), rdt);
        token
    }

    /// Takes one request from the bucket of `caller` and `metered` (created full), which holds
    /// `burst` and refills one every `interval` (`None`: never); `false` when it is empty.
    fn take(
        &mut self,
        caller: Caller,
        metered: Metered,
        interval: Option<Duration>,
        burst: u32,
    ) -> bool {
        let now = Instant::now();
        if self.buckets.len() >= self.sweep_buckets_above {
            // A full bucket is as good as none. Sweeping again only once the map has doubled keeps
            // the cost per call constant however many buckets stay in use.
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
            self.sweep_buckets_above = SWEEP_ABOVE.max(self.buckets.len().saturating_mul(2));
        }
        self.buckets
            .entry((caller, metered))
            .or_insert_with(|| Bucket::full(now))
            .take(now, interval, burst)
    }
}

/// Whether something expiring at `expires_at` (`None`: never) is still alive at `now`.
pub(crate) fn live(expires_at: Option<Instant>, now: Instant) -> bool {
    expires_at.is_none_or(|at| now < at)
}

/// The instant `lifetime` after `now`, or `None` (never) when that is past what the clock can hold.
pub(crate) fn deadline(now: Instant, lifetime: Duration) -> Option<Instant> {
    now.checked_add(lifetime)
}

/// A random string of letters and digits, for token values and request ids.
pub(crate) fn random_string(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// The catalogue operation a token resource names, and what the token will cover for it.
pub(crate) fn scope_of(matcher: &Matcher, method: &Method, path: &str) -> Scope {
    let Some(hit) = matcher.classify(method, path) else {
        return Scope::Nothing;
    };
    let op = hit.operation();
    if path == op.template() {
        match op.path_kind() {
            PathKind::Generic => Scope::Operation(hit.id()),
            PathKind::SpecificOnly => Scope::Nothing,
        }
    } else {
        // A specific path, or a template with other placeholder names, which Amazon takes as a
        // literal path that no real call will ever have.
        Scope::Path(hit.id(), path.to_owned())
    }
}

/// Matches `path` against `template` segment by segment: a `{placeholder}` segment takes any
/// non-empty value. Returns the placeholder values, in order.
pub(crate) fn match_template<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut values = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(values),
            (Some(ts), Some(ps)) => {
                if ts.len() > 2 && ts.starts_with('{') && ts.ends_with('}') {
                    if ps.is_empty() {
                        return None;
                    }
                    values.push(ps);
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spapi_rdt::catalog::Catalog;

    #[test]
    fn templates_match_segment_by_segment() {
        let t = "/orders/v0/orders/{orderId}/address";
        assert_eq!(
            match_template(t, "/orders/v0/orders/1-2/address"),
            Some(vec!["1-2"])
        );
        assert_eq!(match_template(t, t), Some(vec!["{orderId}"]));
        assert_eq!(match_template(t, "/orders/v0/orders//address"), None);
        assert_eq!(match_template(t, "/orders/v0/orders/1/address/"), None);
        assert_eq!(match_template("/a", "/a"), Some(vec![]));
    }

    #[test]
    fn resources_cover_what_amazon_would() {
        let m = Matcher::new(Catalog::amazon()).unwrap();
        let generic = scope_of(&m, &Method::GET, "/orders/v0/orders/{orderId}/address");
        assert!(matches!(generic, Scope::Operation(_)));
        let specific = scope_of(&m, &Method::GET, "/orders/v0/orders/123-4/address");
        assert!(matches!(specific, Scope::Path(_, _)));
        let report = scope_of(
            &m,
            &Method::GET,
            "/reports/2021-06-30/documents/{reportDocumentId}",
        );
        assert!(matches!(report, Scope::Nothing));
        let unknown = scope_of(&m, &Method::GET, "/orders/v1/orders/1/address");
        assert!(matches!(unknown, Scope::Nothing));
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_on_tokio_time() {
        let m = Matcher::new(Catalog::amazon()).unwrap();
        let shared = Shared::new(EmulatorConfig::default().token_quota(1.0, 3), m).unwrap();
        let seller = |s: &str| Caller::Seller {
            seller: s.to_owned(),
            app: None,
        };
        for _ in 0..3 {
            assert!(shared.meter(seller("s"), Metered::Tokens).is_some());
        }
        assert!(shared.meter(seller("s"), Metered::Tokens).is_none());
        assert!(
            shared.meter(seller("other"), Metered::Tokens).is_some(),
            "buckets are per seller"
        );
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(
            shared.meter(seller("s"), Metered::Tokens).as_deref(),
            Some("1.0")
        );
        assert!(shared.meter(seller("s"), Metered::Tokens).is_none());
        let counters = shared.lock().counters.clone();
        assert_eq!(counters.quota_exceeded, 2);
        let tokens = "Tokens 2021-03-01 createRestrictedDataToken";
        assert_eq!(counters.admitted(tokens), 5);
        assert_eq!(counters.quota_exceeded_for(tokens), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_swept_past_the_bound() {
        let m = Matcher::new(Catalog::amazon()).unwrap();
        let shared = Shared::new(EmulatorConfig::default(), m).unwrap();
        let seller = |i: usize| Caller::Seller {
            seller: format!("s{i}"),
            app: None,
        };
        for i in 0..SWEEP_ABOVE {
            assert!(shared.meter(seller(i), Metered::Tokens).is_some());
        }
        assert_eq!(shared.lock().buckets.len(), SWEEP_ABOVE);
        // One second refills every bucket of 1/s: the next new seller sweeps them all out.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(shared.meter(seller(SWEEP_ABOVE), Metered::Tokens).is_some());
        assert_eq!(shared.lock().buckets.len(), 1);
    }
}

//! The emulator's shared state: sellers, issued tokens, rate limits, denials, faults and counters.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use super::config::EmulatorConfig;
use super::fault::{self, Plan, Rule, Target};
use super::seen::SeenRequest;
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
}

impl Counters {
    /// Requests to the Tokens API made with `seller`'s access token.
    pub fn token_calls_for(&self, seller: &str) -> u64 {
        self.token_calls_by_seller.get(seller).copied().unwrap_or(0)
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

/// A token bucket on tokio's clock.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Everything behind the lock. No `Debug`: the maps are keyed by secret token values.
pub(crate) struct Inner {
    /// refresh token → seller.
    pub(crate) refresh_tokens: HashMap<String, String>,
    /// seller → refresh token.
    pub(crate) sellers: BTreeMap<String, String>,
    pub(crate) access: HashMap<String, AccessGrant>,
    pub(crate) rdts: HashMap<String, Rdt>,
    buckets: HashMap<String, Bucket>,
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
    inner: Mutex<Inner>,
}

/// Past this many entries, expired tokens are swept out when a new one is issued.
const SWEEP_ABOVE: usize = 1024;

impl Shared {
    pub(crate) fn new(config: EmulatorConfig, matcher: Matcher) -> Self {
        let mut inner = Inner {
            refresh_tokens: HashMap::new(),
            sellers: BTreeMap::new(),
            access: HashMap::new(),
            rdts: HashMap::new(),
            buckets: HashMap::new(),
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
        Shared {
            matcher,
            config,
            inner: Mutex::new(inner),
        }
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

    /// The Tokens API's `x-amzn-RateLimit-Limit` value.
    pub(crate) fn rate_header(&self) -> String {
        format!("{:?}", self.config.token_rate)
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

    /// Takes one request from `seller`'s bucket; `false` when the bucket is empty.
    pub(crate) fn admit(&mut self, seller: &str, rate: f64, burst: u32) -> bool {
        let now = Instant::now();
        let burst = f64::from(burst);
        let bucket = self.buckets.entry(seller.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
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
        let shared = Shared::new(EmulatorConfig::default(), m);
        {
            let mut inner = shared.lock();
            for _ in 0..3 {
                assert!(inner.admit("s", 1.0, 3));
            }
            assert!(!inner.admit("s", 1.0, 3));
            assert!(inner.admit("other", 1.0, 3), "buckets are per seller");
        }
        tokio::time::advance(Duration::from_millis(1000)).await;
        let mut inner = shared.lock();
        assert!(inner.admit("s", 1.0, 3));
        assert!(!inner.admit("s", 1.0, 3));
    }
}

//! [`RestrictedDataTokenLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::catalog::{Catalog, DataElements};
use crate::control::Strategy;
use crate::control::{ReportPolicy, SandboxPolicy};
use crate::core::SharedTokens;
use crate::core::{Core, RequestHead, Settings};
use crate::error::BuildError;
use crate::fleet::Fleet;
use crate::fleet::run::FleetState;
use crate::limit::{QuotaProblem, TokenQuota, TokenRateLimiter};
use crate::matcher::Matcher;
use crate::resource::{Origin, Region, SellerId};
use crate::service::RestrictedDataTokenService;
use crate::source::TokenSource;
use crate::stats::Stats;

/// A tower [`Layer`] that gives restricted SP-API requests a Restricted Data Token in
/// `x-amz-access-token`.
///
/// Every clone of the layer, and every service it makes, shares one cache, one rate limiter and one
/// set of counters (like tower's `GlobalConcurrencyLimitLayer`): clone it freely.
///
/// ```
/// use std::time::Duration;
/// use spapi_rdt::{IssuedToken, RestrictedDataTokenLayer, SecretToken, error::SourceError, TokenRequest, source_fn};
///
/// let source = source_fn(|_request: TokenRequest| async {
///     let token = SecretToken::new("Atz.sprdt|example").map_err(SourceError::permanent)?;
///     Ok(IssuedToken::new(token, Duration::from_secs(3600)))
/// });
/// let layer = RestrictedDataTokenLayer::builder(source)
///     .refresh_ahead(Duration::from_secs(120))
///     .build()?;
/// let client = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service(tower::service_fn(|request: http::Request<String>| async move {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
/// # let _ = client;
/// # Ok::<(), spapi_rdt::error::BuildError>(())
/// ```
///
/// # Redirects
///
/// Tokens go only to the allowed origins, and the layer judges each request it is handed. It
/// cannot see a redirect that the HTTP client *below* it follows: such a client sends the next
/// request with the first one's headers, the token included, wherever `Location` points. reqwest's
/// default policy and tower-http's `FollowRedirect` both do so to another host (they drop only
/// `Authorization`, `Cookie` and the like). Build the client below the layer with
/// `reqwest::redirect::Policy::none()` (or a policy that stops at another origin), or follow
/// redirects *above* the layer, where every hop is checked again. hyper's client follows none.
#[derive(Clone)]
pub struct RestrictedDataTokenLayer {
    core: Arc<Core>,
}

impl RestrictedDataTokenLayer {
    /// A layer with Amazon's catalogue, the official production and sandbox origins, and default
    /// settings (see [`RestrictedDataTokenLayerBuilder`] for each default).
    pub fn new(source: impl TokenSource) -> Self {
        RestrictedDataTokenLayer {
            core: Arc::new(
                RestrictedDataTokenLayerBuilder::new(Arc::new(source)).into_core(Matcher::amazon()),
            ),
        }
    }

    /// A builder, to change the catalogue, the origins or the settings.
    pub fn builder(source: impl TokenSource) -> RestrictedDataTokenLayerBuilder {
        RestrictedDataTokenLayerBuilder::new(Arc::new(source))
    }

    /// A snapshot of the counters shared by every clone.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Drops the cached token a request like `request` would be given, so that the next such request
    /// fetches a new one. Use it when a restricted call answered 403 with a cached token. Returns
    /// whether a token was dropped.
    pub fn invalidate<B>(&self, request: &http::Request<B>) -> bool {
        self.core.invalidate(RequestHead::of(request), None)
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The compiled catalogue this layer classifies requests with.
    pub fn matcher(&self) -> &Matcher {
        &self.core.matcher
    }
}

impl<S> Layer<S> for RestrictedDataTokenLayer {
    type Service = RestrictedDataTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestrictedDataTokenService::new(inner, Arc::clone(&self.core))
    }
}

impl fmt::Debug for RestrictedDataTokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedDataTokenLayer")
            .field("core", &self.core)
            .finish()
    }
}

/// Configures a [`RestrictedDataTokenLayer`].
pub struct RestrictedDataTokenLayerBuilder {
    source: Arc<dyn TokenSource>,
    catalog: Catalog,
    origins: Vec<Origin>,
    quota: TokenQuota,
    rate_margin: Duration,
    settings: Settings,
    fleet: Option<Fleet>,
}

impl RestrictedDataTokenLayerBuilder {
    /// The most [`max_attempts`](Self::max_attempts) accepts. Each attempt takes a token-call
    /// cell of the seller's quota; past ten, a source that keeps failing would spend the whole
    /// burst of one seller on one fetch, and with no pause between attempts a fetch would loop
    /// for as long as its timeout allows.
    pub const MAX_ATTEMPTS: u32 = 10;

    fn new(source: Arc<dyn TokenSource>) -> Self {
        let origins = Region::ALL
            .into_iter()
            .flat_map(|r| [r.origin(), r.sandbox_origin()])
            .collect();
        RestrictedDataTokenLayerBuilder {
            source,
            catalog: Catalog::amazon(),
            origins,
            quota: TokenQuota::default(),
            rate_margin: Duration::from_millis(100),
            settings: Settings::default(),
            fleet: None,
        }
    }

    /// The restricted operations to recognize. Default: [`Catalog::amazon`].
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Adds an origin that may receive tokens (an emulator on loopback, a regional proxy). The
    /// defaults are the three production hosts and their sandboxes.
    pub fn allow_origin(mut self, origin: Origin) -> Self {
        if !self.origins.contains(&origin) {
            self.origins.push(origin);
        }
        self
    }

    /// Replaces the origins that may receive tokens.
    pub fn origins(mut self, origins: impl IntoIterator<Item = Origin>) -> Self {
        self.origins.clear();
        for origin in origins {
            self = self.allow_origin(origin);
        }
        self
    }

    /// The seller of requests that carry no [`SellerId`] extension. Default: [`SellerId::default`].
    pub fn default_seller(mut self, seller: SellerId) -> Self {
        self.settings.default_seller = seller;
        self
    }

    /// Multi-tenant safety: when `true`, a restricted request without a [`SellerId`] extension
    /// fails with an [`Error`](crate::error::Error) for which
    /// [`is_missing_seller`](crate::error::Error::is_missing_seller) holds, and the source is not called,
    /// instead of being given the [`default_seller`](Self::default_seller)'s token. Requests the
    /// layer passes through need no seller. Default: `false`.
    pub fn require_seller(mut self, required: bool) -> Self {
        self.settings.require_seller = required;
        self
    }

    /// The data elements to ask for, where an operation accepts them and the request does not narrow
    /// them. Default: [`DataElements::USUAL`] (`buyerInfo`, `shippingAddress`). Ask only for what the
    /// application holds roles for: one element too many fails the whole token request.
    pub fn data_elements(mut self, elements: DataElements) -> Self {
        self.settings.data_elements = elements;
        self
    }

    /// The token-call quota per seller and origin. Default: Amazon's, 1 a second with a burst of 10.
    pub fn quota(mut self, quota: TokenQuota) -> Self {
        self.quota = quota;
        self
    }

    /// Extra time between two token calls of a seller once its burst is spent, on top of what the
    /// quota asks. Amazon counts from when a call arrives and the layer from when it leaves, so at
    /// exactly the quota a call on a warm connection can arrive early and meet a 429 (measured on
    /// loopback: 1 in 15). Default: 100 ms (1 call every 1.1 s at Amazon's quota); bursts are
    /// unchanged. In [fleet mode](Self::fleet) the same margin spaces the limiter the replicas
    /// share. [`build`](Self::build) refuses a margin of a century or more, and a quota whose
    /// burst, at its rate plus this margin, takes more than a century to refill.
    pub fn rate_margin(mut self, margin: Duration) -> Self {
        self.rate_margin = margin;
        self
    }

    /// When `getReportDocument` gets a token. Default: [`ReportPolicy::WhenMarked`].
    pub fn report_policy(mut self, policy: ReportPolicy) -> Self {
        self.settings.report_policy = policy;
        self
    }

    /// What to do on sandbox hosts. Default: [`SandboxPolicy::Skip`].
    pub fn sandbox_policy(mut self, policy: SandboxPolicy) -> Self {
        self.settings.sandbox_policy = policy;
        self
    }

    /// How long a request waits for a token before failing with a timeout. The fetch goes on for
    /// the others. Default: 30 s.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.settings.wait_timeout = timeout;
        self
    }

    /// How long one fetch may take in all: rate-limit waits, attempts and pauses. Default: 60 s.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// How many times a fetch calls the source when it fails transiently: 1 to
    /// [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS). Default: 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// The pause before the first retry; it doubles with each further one, with jitter.
    /// Default: 250 ms.
    pub fn retry_base(mut self, pause: Duration) -> Self {
        self.settings.retry_base = pause;
        self
    }

    /// Refresh a token in the background this long before it expires (at most half its life, so
    /// short-lived tokens never cause a refresh storm). Default: 5 min.
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.settings.refresh.refresh_ahead = ahead;
        self
    }

    /// Stop using a token this long before it expires (at most a tenth of its life), so that a
    /// request never reaches Amazon with a token that just died. Default: 30 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.settings.refresh.expiry_margin = margin;
        self
    }

    /// Spread refreshes over up to this much extra time, at random. Default: 60 s.
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.settings.refresh.jitter = jitter;
        self
    }

    /// How long a permanent failure (no role, bad credentials) is remembered and served to callers
    /// without calling the source again. Default: 60 s.
    pub fn permanent_error_ttl(mut self, ttl: Duration) -> Self {
        self.settings.failures.permanent = ttl;
        self
    }

    /// How long transient failures are remembered: `base` after the first, doubling up to `max`.
    /// Defaults: 1 s and 60 s.
    pub fn transient_error_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.settings.failures.transient_base = base;
        self.settings.failures.transient_max = max;
        self
    }

    /// Whether tokens are per operation (the default) or bundled per seller; see [`Strategy`].
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.settings.strategy = strategy;
        self
    }

    /// Under [`Strategy::Bundle`], how long an operation Amazon refused stays out of the bundle
    /// before it is tried again (after a role grant and re-authorization, say). Default: 1 hour.
    pub fn bundle_recheck(mut self, period: Duration) -> Self {
        self.settings.retention.bundle_recheck = period;
        self
    }

    /// After a 403 drops a key's token (stale-token recovery, in either front end), how long further
    /// 403s on that key keep the next token and are returned without a replay, unless the replay
    /// after the drop worked. This stops 403s that have nothing to do with the token (another
    /// seller's order id, a missing role) from spending the seller's token quota: at most one token
    /// call per key per period. See [`recover`](crate::recover#403s-that-are-not-about-the-token).
    /// `Duration::ZERO` drops the token on every 403. Default: 60 s.
    pub fn refusal_period(mut self, period: Duration) -> Self {
        self.settings.retention.refusal_period = period;
        self
    }

    /// Fleet mode: share tokens and the rate limit with the other replicas of this service through
    /// a shared store, such as [`RedisFleet`](crate::fleet::RedisFleet) (feature `redis`). The local
    /// cache and limiter stay in front; the shared ones are consulted on a local miss only, and
    /// when they fail, this replica goes on alone. See [`fleet`](crate::fleet). Default: off.
    pub fn fleet(mut self, fleet: impl Into<Fleet>) -> Self {
        self.fleet = Some(fleet.into());
        self
    }

    /// Builds the layer, or says which setting it cannot honour ([`BuildError::Setting`] names
    /// the builder method): a zero `wait_timeout` or `fetch_timeout`, no attempts or more than
    /// [`MAX_ATTEMPTS`](Self::MAX_ATTEMPTS), more than 65535 origins, a quota or rate margin
    /// governor cannot count (see [`rate_margin`](Self::rate_margin)), or a fleet timing of zero.
    ///
    /// Every other duration may be anything from zero to `Duration::MAX`: deadlines saturate about
    /// 30 years ahead (a rate-limit wait past a fetch's deadline fails the fetch at once), token
    /// lifetimes are cut to a day, a token that lives less than a second fails its fetch with a
    /// transient error, and a `Retry-After` is honoured up to the transient back-off's maximum
    /// ([`transient_error_backoff`](Self::transient_error_backoff)). So every fetch ends after at
    /// most `MAX_ATTEMPTS` calls to the source, and no setting makes the layer wait for nothing.
    pub fn build(self) -> Result<RestrictedDataTokenLayer, BuildError> {
        let bad = |name, reason| Err(BuildError::Setting { name, reason });
        if self.origins.len() > usize::from(u16::MAX) {
            return bad("origins", "at most 65535 origins");
        }
        if self.settings.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.settings.max_attempts > Self::MAX_ATTEMPTS {
            return bad("max_attempts", "must be at most 10 (MAX_ATTEMPTS)");
        }
        if self.settings.wait_timeout.is_zero() {
            return bad("wait_timeout", "must be more than zero");
        }
        if self.settings.fetch_timeout.is_zero() {
            return bad("fetch_timeout", "must be more than zero");
        }
        match self.quota.check(self.rate_margin) {
            Ok(()) => {}
            Err(QuotaProblem::Margin) => return bad("rate_margin", "must be less than a century"),
            Err(QuotaProblem::Quota) => {
                return bad(
                    "quota",
                    "the burst, at the quota's rate plus the rate margin, must refill within a century",
                );
            }
        }
        if let Some(fleet) = &self.fleet {
            if fleet.lease_ttl.is_zero() {
                return bad("fleet.lease_ttl", "must be more than zero");
            }
            if fleet.poll_interval.is_zero() {
                return bad("fleet.poll_interval", "must be more than zero");
            }
            if fleet.call_timeout.is_zero() {
                return bad("fleet.call_timeout", "must be more than zero");
            }
        }
        let matcher = Matcher::new(self.catalog.clone())?;
        Ok(RestrictedDataTokenLayer {
            core: Arc::new(self.into_core(matcher)),
        })
    }

    fn into_core(self, matcher: Matcher) -> Core {
        let shared = self.fleet.map(|f| {
            Box::new(FleetState::new(f, self.quota, self.rate_margin)) as Box<dyn SharedTokens>
        });
        let limiter = TokenRateLimiter::new(self.quota, self.rate_margin);
        Core::new(
            matcher,
            self.origins,
            self.source,
            limiter,
            self.settings,
            shared,
        )
    }
}

impl fmt::Debug for RestrictedDataTokenLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestrictedDataTokenLayerBuilder")
            .field("operations", &self.catalog.operations().len())
            .field("origins", &self.origins)
            .field("quota", &self.quota)
            .field("settings", &self.settings)
            .field("fleet", &self.fleet)
            .finish_non_exhaustive()
    }
}

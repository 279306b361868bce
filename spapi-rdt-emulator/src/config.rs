//! The emulator's configuration.

use std::fmt;
use std::time::Duration;

use spapi_rdt::catalog::UsagePlan;

/// How an [`Emulator`](super::Emulator) behaves: the application it plays, its sellers, token
/// lifetimes, the Tokens API's rate limit and the usage plans of the other operations.
///
/// [`EmulatorConfig::default`] is one application with one seller, `"default"`, whose refresh token
/// is `"Atzr|emulator-default"`; tokens live 3600 s; the Tokens API allows 1 request a second per
/// seller with a burst of 10, as Amazon's usage plan says. The usage plans of the other operations
/// are not enforced unless [`usage_plans`](Self::usage_plans) turns them on (see that method for
/// why, and the crate documentation for what enforcing them means).
///
/// ```
/// use std::time::Duration;
/// use spapi_rdt_emulator::EmulatorConfig;
///
/// let config = EmulatorConfig::default()
///     .seller("A2EUQ1WTGCTBG2", "Atzr|second-seller")
///     .token_quota(5.0, 15)
///     .rdt_lifetime(Duration::from_secs(60))
///     .target_application("amzn1.sellerapps.app.delegatee");
/// assert_eq!(config.sellers().count(), 2);
/// ```
#[derive(Clone)]
pub struct EmulatorConfig {
    pub(crate) app_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) sellers: Vec<(String, String)>,
    pub(crate) rdt_lifetime: Duration,
    pub(crate) lwa_lifetime: Duration,
    pub(crate) token_rate: f64,
    pub(crate) token_burst: u32,
    pub(crate) target_applications: Vec<String>,
    pub(crate) wrap_in_payload: bool,
    pub(crate) usage_plans: bool,
    pub(crate) time_scale: f64,
    pub(crate) unstated_plan: UsagePlan,
    /// `(operations, plan)`, in the order they were set.
    pub(crate) plan_overrides: Vec<(String, UsagePlan)>,
    /// `(seller, operations, plan)`, in the order they were set.
    pub(crate) seller_plans: Vec<(String, String, UsagePlan)>,
}

/// 10 requests a second with a burst of 10: see [`EmulatorConfig::UNSTATED_USAGE_PLAN`].
const UNSTATED: UsagePlan = match UsagePlan::new(10.0, 10) {
    Ok(plan) => plan,
    // Evaluated at compile time: a bad literal fails the build, never a run.
    Err(_) => panic!("the emulator's plan for unstated operations is not a valid plan"),
};

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            app_id: "amzn1.sp.solution.emulator-application".to_owned(),
            client_id: "amzn1.application-oa2-client.emulator".to_owned(),
            client_secret: "amzn1.oa2-cs.v1.emulator-client-secret".to_owned(),
            sellers: vec![(
                spapi_rdt::SellerId::DEFAULT_NAME.to_owned(),
                "Atzr|emulator-default".to_owned(),
            )],
            rdt_lifetime: Duration::from_secs(3600),
            lwa_lifetime: Duration::from_secs(3600),
            token_rate: 1.0,
            token_burst: 10,
            target_applications: Vec::new(),
            wrap_in_payload: false,
            usage_plans: EmulatorConfig::ENFORCES_USAGE_PLANS,
            time_scale: 1.0,
            unstated_plan: UNSTATED,
            plan_overrides: Vec::new(),
            seller_plans: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// The default configuration (see the type's documentation).
    pub fn new() -> Self {
        EmulatorConfig::default()
    }

    /// Sets the application id (`amzn1.sp.solution...`) the emulator plays.
    #[must_use]
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }

    /// Sets the LWA client id and client secret that the LWA endpoint accepts.
    #[must_use]
    pub fn client(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.client_id = client_id.into();
        self.client_secret = client_secret.into();
        self
    }

    /// Adds a seller who authorized the application, with its refresh token. A seller added twice
    /// keeps the last refresh token.
    #[must_use]
    pub fn seller(mut self, seller: impl Into<String>, refresh_token: impl Into<String>) -> Self {
        let seller = seller.into();
        self.sellers.retain(|(s, _)| *s != seller);
        self.sellers.push((seller, refresh_token.into()));
        self
    }

    /// Removes every seller, the default one included.
    #[must_use]
    pub fn without_sellers(mut self) -> Self {
        self.sellers.clear();
        self
    }

    /// Sets the Tokens API's rate limit per seller: a token bucket refilled at `per_second` tokens a
    /// second holding at most `burst`. A negative or non-finite rate counts as 0 (no refill). The
    /// [time scale](Self::usage_plan_time_scale) applies to it, and an override naming the Tokens
    /// API ([`usage_plan`](Self::usage_plan), [`seller_usage_plan`](Self::seller_usage_plan))
    /// takes its place.
    #[must_use]
    pub fn token_quota(mut self, per_second: f64, burst: u32) -> Self {
        self.token_rate = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            0.0
        };
        self.token_burst = burst;
        self
    }

    /// Sets how long a Restricted Data Token lives (and the `expiresIn` the Tokens API answers).
    #[must_use]
    pub fn rdt_lifetime(mut self, lifetime: Duration) -> Self {
        self.rdt_lifetime = lifetime;
        self
    }

    /// Sets how long an LWA access token lives (and the `expires_in` the LWA endpoint answers).
    #[must_use]
    pub fn lwa_lifetime(mut self, lifetime: Duration) -> Self {
        self.lwa_lifetime = lifetime;
        self
    }

    /// Registers an application id that token requests may name as `targetApplication`
    /// (delegation). Any other target is refused with 400 `InvalidInput`.
    #[must_use]
    pub fn target_application(mut self, app_id: impl Into<String>) -> Self {
        self.target_applications.push(app_id.into());
        self
    }

    /// Wraps the Tokens API's answer as `{"payload": {...}}`, as Amazon's early documentation
    /// showed it.
    #[must_use]
    pub fn wrap_in_payload(mut self, wrap: bool) -> Self {
        self.wrap_in_payload = wrap;
        self
    }

    /// Whether a default configuration enforces the usage plans of SP-API operations besides the
    /// Tokens API (see [`usage_plans`](Self::usage_plans)).
    pub const ENFORCES_USAGE_PLANS: bool = false;

    /// The plan the emulator enforces for an operation whose model states none (70 operations of
    /// [`UsagePlans::amazon`](spapi_rdt::catalog::UsagePlans::amazon), such as Seller Wallet's):
    /// 10 requests a second with a burst of 10, the plan the models state most often. Amazon has a
    /// real plan for those operations that its documentation does not give; this stands in for it.
    /// It is not the library's [`UsagePlan::CONSERVATIVE_DEFAULT`], which is what a client should
    /// assume before Amazon tells, not what Amazon enforces. Change it with
    /// [`unstated_usage_plan`](Self::unstated_usage_plan).
    pub const UNSTATED_USAGE_PLAN: UsagePlan = UNSTATED;

    /// Turns the enforcement of usage plans on or off for every SP-API operation besides the Tokens
    /// API, whose limit ([`token_quota`](Self::token_quota)) always holds.
    ///
    /// When on, every call of an operation of
    /// [`UsagePlans::amazon`](spapi_rdt::catalog::UsagePlans::amazon) made with a live token takes
    /// one request from the bucket of its caller (the seller, or the application for a grantless
    /// token) and operation, after the token was checked and before the operation runs; an empty
    /// bucket answers 429 `QuotaExceeded`. The answers (2xx, 400 and 404) then state the rate in
    /// `x-amzn-RateLimit-Limit`. The crate documentation has the details.
    ///
    /// Off by default ([`ENFORCES_USAGE_PLANS`](Self::ENFORCES_USAGE_PLANS)): tests and benches
    /// written before the emulator enforced plans call operations with small bursts, such as
    /// Merchant Fulfillment's `getShipment` (1 a second, burst 1), faster than Amazon would allow.
    #[must_use]
    pub fn usage_plans(mut self, enforce: bool) -> Self {
        self.usage_plans = enforce;
        self
    }

    /// Makes every bucket refill `scale` times as fast as Amazon's plan says: with `10.0`, an
    /// operation of 0.5 requests a second refills at 5 a second, so a bench that meets Amazon's
    /// limits runs in a tenth of the time. Bursts stay as they are. It applies to the Tokens API's
    /// bucket as well. The default is `1.0`, Amazon's own pace.
    ///
    /// `x-amzn-RateLimit-Limit` states the scaled rate (5.0 in the example): what the emulator
    /// enforces, so that a client which paces itself by that header (as one facing Amazon should)
    /// learns the pace it can keep here. The header then differs from Amazon's.
    ///
    /// The scale must be a finite number above zero: [`Emulator::start_with`] refuses any other.
    ///
    /// [`Emulator::start_with`]: super::Emulator::start_with
    #[must_use]
    pub fn usage_plan_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Enforces `plan` instead of the model's on `operations`, for every caller that has no plan of
    /// its own for them ([`seller_usage_plan`](Self::seller_usage_plan)). `operations` names, in
    /// the naming of [`UsagePlans::amazon`](spapi_rdt::catalog::UsagePlans::amazon):
    ///
    /// - an API, such as `"Orders v0"`: each of its operations;
    /// - an `operationId`, such as `"getOrder"`: that operation in every API that has one;
    /// - an API and an `operationId` separated by a space, such as `"Orders v0 getOrder"`: that
    ///   operation alone.
    ///
    /// A later setting wins over an earlier one for the operations they share.
    /// [`Emulator::start_with`](super::Emulator::start_with) refuses a name that names no
    /// operation. Naming the Tokens API (`"Tokens 2021-03-01"`, `"createRestrictedDataToken"`)
    /// sets its plan as [`token_quota`](Self::token_quota) does.
    ///
    /// ```
    /// use spapi_rdt::catalog::UsagePlan;
    /// use spapi_rdt_emulator::EmulatorConfig;
    ///
    /// let config = EmulatorConfig::default()
    ///     .usage_plans(true)
    ///     .usage_plan("Orders v0", UsagePlan::new(1.0, 5)?)
    ///     .usage_plan("Orders v0 getOrders", UsagePlan::new(0.5, 2)?);
    /// # let _ = config;
    /// # Ok::<(), spapi_rdt::error::UsagePlanError>(())
    /// ```
    #[must_use]
    pub fn usage_plan(mut self, operations: impl Into<String>, plan: UsagePlan) -> Self {
        self.plan_overrides.push((operations.into(), plan));
        self
    }

    /// Enforces `plan` on `seller`'s calls of `operations` (named as for
    /// [`usage_plan`](Self::usage_plan)), whatever else is set: a dynamic usage plan, which Amazon
    /// grants some selling partners. `x-amzn-RateLimit-Limit` on those calls states it, which is
    /// how a client learns such a plan. The seller need not be configured yet. A later setting for
    /// the same seller wins over an earlier one for the operations they share.
    ///
    /// ```
    /// use spapi_rdt::catalog::UsagePlan;
    /// use spapi_rdt_emulator::EmulatorConfig;
    ///
    /// let config = EmulatorConfig::default()
    ///     .usage_plans(true)
    ///     .seller_usage_plan("default", "getOrders", UsagePlan::new(1.0, 40)?);
    /// # let _ = config;
    /// # Ok::<(), spapi_rdt::error::UsagePlanError>(())
    /// ```
    #[must_use]
    pub fn seller_usage_plan(
        mut self,
        seller: impl Into<String>,
        operations: impl Into<String>,
        plan: UsagePlan,
    ) -> Self {
        self.seller_plans
            .push((seller.into(), operations.into(), plan));
        self
    }

    /// Sets the plan enforced on operations whose model states none, in place of
    /// [`UNSTATED_USAGE_PLAN`](Self::UNSTATED_USAGE_PLAN).
    #[must_use]
    pub fn unstated_usage_plan(mut self, plan: UsagePlan) -> Self {
        self.unstated_plan = plan;
        self
    }

    /// Whether usage plans are enforced (see [`usage_plans`](Self::usage_plans)).
    pub fn enforces_usage_plans(&self) -> bool {
        self.usage_plans
    }

    /// How many times as fast as Amazon's the buckets refill (see
    /// [`usage_plan_time_scale`](Self::usage_plan_time_scale)).
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// The sellers, as `(seller id, refresh token)` pairs.
    pub fn sellers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sellers.iter().map(|(s, r)| (s.as_str(), r.as_str()))
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sellers: Vec<&str> = self.sellers.iter().map(|(s, _)| s.as_str()).collect();
        f.debug_struct("EmulatorConfig")
            .field("app_id", &self.app_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("sellers", &sellers)
            .field("rdt_lifetime", &self.rdt_lifetime)
            .field("lwa_lifetime", &self.lwa_lifetime)
            .field("token_rate", &self.token_rate)
            .field("token_burst", &self.token_burst)
            .field("target_applications", &self.target_applications)
            .field("wrap_in_payload", &self.wrap_in_payload)
            .field("usage_plans", &self.usage_plans)
            .field("time_scale", &self.time_scale)
            .field("unstated_plan", &self.unstated_plan)
            .field("plan_overrides", &self.plan_overrides)
            .field("seller_plans", &self.seller_plans)
            .finish()
    }
}

//! The emulator's configuration.

use std::fmt;
use std::time::Duration;

/// How an [`Emulator`](super::Emulator) behaves: the application it plays, its sellers, token
/// lifetimes and the Tokens API's rate limit.
///
/// [`EmulatorConfig::default`] is one application with one seller, `"default"`, whose refresh token
/// is `"Atzr|emulator-default"`; tokens live 3600 s; the Tokens API allows 1 request a second per
/// seller with a burst of 10, as Amazon's usage plan says.
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
}

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
    /// second holding at most `burst`. A negative or non-finite rate counts as 0 (no refill).
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
            .finish()
    }
}

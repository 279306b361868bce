//! An in-process SP-API emulator for tests and examples.
//!
//! [`Emulator`] is an HTTP/1 server on `127.0.0.1` (an ephemeral port, on the current tokio
//! runtime) that answers like Amazon on everything this crate touches, all on one origin:
//!
//! - **LWA**, `POST /auth/o2/token`: `refresh_token` grants for the configured sellers, and
//!   `client_credentials` (grantless) grants, which never work for restricted operations or the
//!   Tokens API. Errors are OAuth2's (`invalid_grant`, `invalid_client`, `invalid_request`,
//!   `unsupported_grant_type`).
//! - **Tokens API**, `POST /tokens/2021-03-01/restrictedDataToken`: validates the body as Amazon's
//!   model does (1 to 50 resources, method GET/PUT/POST/DELETE, known data elements, a registered
//!   `targetApplication`), applies the application's role grants ([`Emulator::deny_resource`],
//!   [`Emulator::deny_data_element`]) and a per-seller token bucket (429 `QuotaExceeded` without
//!   `x-amzn-RateLimit-Limit`; see [usage plans](#usage-plans)). Like Amazon, it accepts paths that name no restricted operation and
//!   issues a token that covers nothing, and it accepts the generic path of `getReportDocument` but
//!   issues a token that covers no document.
//! - **Restricted operations**: every `(method, path)` that
//!   [`Matcher::new(Catalog::amazon())`](spapi_rdt::matcher::Matcher) classifies. A live RDT covering the
//!   call gets personal data (`x-emulator-pii: served`); Orders v0 returns `BuyerInfo`,
//!   `ShippingAddress` and `BuyerTaxInformation` only for the data elements the token was issued
//!   with. Orders v0 with a plain LWA token answers 200 without personal data
//!   (`x-emulator-pii: withheld`); any other restricted operation answers 403 `Unauthorized`.
//! - **Unrestricted operations**: `GET /sellers/v1/marketplaceParticipations`,
//!   `GET /orders/2026-01-01/orders[/{orderId}]` and `GET /reports/2021-06-30/reports[/{reportId}]`
//!   need an LWA access token; an RDT gets 403.
//!
//! Every authenticated answer names the seller whose token was used in `x-emulator-seller`.
//! Usage plans can be enforced on every operation, as Amazon does ([below](#usage-plans)).
//! Faults ([`Fault`], a whole [`CannedReply`] among them) can be injected for the next requests to
//! an endpoint; [`Counters`] tell what the emulator saw and answered, and
//! [`Emulator::requests`] what it was sent. Dropping the [`Emulator`] stops the server.
//!
//! ```
//! use spapi_rdt_emulator::{Emulator, EmulatorConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let emulator = Emulator::start_with(EmulatorConfig::default().seller("seller-b", "Atzr|b")).await?;
//! let origin = emulator.origin();
//! assert_eq!(origin.host(), "127.0.0.1");
//! assert_eq!(emulator.lwa_url(), format!("{origin}/auth/o2/token"));
//! assert_eq!(emulator.refresh_token("seller-b").as_deref(), Some("Atzr|b"));
//!
//! // A token source under test would now call `emulator.lwa_url()` and the Tokens API on `origin`.
//! let counters = emulator.counters();
//! assert_eq!(counters.token_calls, 0);
//! assert_eq!(counters.pii_served, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Usage plans
//!
//! Amazon limits every SP-API operation with a token bucket per selling partner and application:
//! a rate (requests a second) and a burst. The Tokens API's bucket is always on
//! ([`EmulatorConfig::token_quota`], Amazon's 1 a second and burst 10 by default).
//! [`EmulatorConfig::usage_plans(true)`](EmulatorConfig::usage_plans) turns on the others, with
//! the plans of [`UsagePlans::amazon`](spapi_rdt::catalog::UsagePlans::amazon):
//!
//! - **Which calls.** Every `(method, path)` that
//!   [`UsagePlans::classify`](spapi_rdt::catalog::UsagePlans::classify) knows, served by the
//!   emulator or not (one it does not serve answers 404, metered as well). The LWA endpoint has no
//!   plan.
//! - **Whose bucket.** One per operation and caller: the seller whose token is used (an RDT issued
//!   for a `targetApplication` calls for that application, with a bucket of its own), or the
//!   application for a grantless token. A call is metered once its token has been accepted and
//!   before the operation runs: a call answered 401 or 403 takes nothing, and a call that finds
//!   its bucket empty is answered 429 `QuotaExceeded` (`"details": ""`, no `Retry-After`, no
//!   `x-amzn-RateLimit-Limit`) and does nothing else. An answer injected with
//!   [`Emulator::inject`] (other than a delay or an `expiresIn`) replaces the call, metering
//!   included.
//! - **Which plan**, first match: the seller's own
//!   ([`EmulatorConfig::seller_usage_plan`], a dynamic plan); the operation's override
//!   ([`EmulatorConfig::usage_plan`]); the model's; for the Tokens API,
//!   [`EmulatorConfig::token_quota`]; for an operation whose model states none,
//!   [`EmulatorConfig::UNSTATED_USAGE_PLAN`] (10 a second, burst 10, the plan the models state
//!   most often; [`EmulatorConfig::unstated_usage_plan`] changes it).
//! - **The clock** is tokio's, so a test on paused time (`tokio::time::pause`,
//!   `#[tokio::test(start_paused = true)]`) decides when buckets refill. A bucket starts full and
//!   lets one more request through every 1 / rate seconds, rounded up to the nanosecond, exactly.
//! - **A time scale** ([`EmulatorConfig::usage_plan_time_scale`]) makes every bucket, the Tokens
//!   API's included, refill that many times as fast, so that a bench meeting Amazon's limits runs
//!   in seconds.
//! - **`x-amzn-RateLimit-Limit`** is on the 2xx, 400 and 404 answers of metered calls, never on
//!   401, 403 or 429: the rate of the plan the call met, per second, as a decimal (`"0.0167"`,
//!   `"0.5"`, `"10.0"`; a model's rate as the model writes it, `"2"` written `"2.0"`). It states a
//!   seller's own plan, which is how a client learns a dynamic plan, and the scaled rate under a
//!   time scale, so that a client pacing itself by the header keeps to what the emulator
//!   enforces.
//! - **Counters**: [`Counters::quota_exceeded`] and, per operation,
//!   [`Counters::admitted_by_operation`] and [`Counters::quota_exceeded_by_operation`].
//!
//! They are off by default ([`EmulatorConfig::ENFORCES_USAGE_PLANS`]): tests written against an
//! emulator without them call operations with small bursts faster than Amazon allows.
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::catalog::UsagePlan;
//! use spapi_rdt_emulator::{Emulator, EmulatorConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EmulatorConfig::default()
//!     .usage_plans(true)
//!     // Buckets refill 60 times as fast: getOrders (0.0167/s) lets about one call a second through.
//!     .usage_plan_time_scale(60.0)
//!     // The default seller has a dynamic plan for getOrderItems.
//!     .seller_usage_plan("default", "Orders v0 getOrderItems", UsagePlan::new(1.0, 40)?);
//! let emulator = Emulator::start_with(config).await?;
//! // A client under test now meets 429s past each burst, and learns each rate from the answers.
//! # let _ = emulator;
//! # Ok(())
//! # }
//! ```

mod api;
mod config;
mod fault;
mod lwa;
mod reply;
mod seen;
mod server;
mod state;
mod tokens;
mod usage;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::Method;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::EmulatorConfig;
pub use fault::{CannedReply, Endpoint, Fault};
pub use seen::SeenRequest;
pub use state::Counters;

use fault::Rule;
use spapi_rdt::Origin;
use spapi_rdt::catalog::{Catalog, DataElement};
use spapi_rdt::matcher::Matcher;
use state::Shared;

/// A running SP-API emulator. Dropping it stops the server: it accepts no new connection, and
/// open connections close once their request in flight is answered.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    origin: Origin,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Starts an emulator with [`EmulatorConfig::default`].
    pub async fn start() -> std::io::Result<Emulator> {
        Emulator::start_with(EmulatorConfig::default()).await
    }

    /// Starts an emulator with `config`, on `127.0.0.1` and a port the system picks, serving on a
    /// task of the current tokio runtime.
    ///
    /// # Errors
    ///
    /// An error of kind [`InvalidInput`](std::io::ErrorKind::InvalidInput), naming the setting,
    /// when the configuration cannot be applied: a time scale
    /// ([`EmulatorConfig::usage_plan_time_scale`]) that is not a finite number above zero, or a
    /// usage-plan override ([`EmulatorConfig::usage_plan`],
    /// [`EmulatorConfig::seller_usage_plan`]) that names no operation. Else the errors of binding
    /// the listener.
    pub async fn start_with(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let matcher = Matcher::new(Catalog::amazon()).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let origin = Origin::parse(&format!("http://{addr}")).map_err(std::io::Error::other)?;
        let shared = Shared::new(config, matcher)
            .map_err(|problem| std::io::Error::new(std::io::ErrorKind::InvalidInput, problem))?;
        let shared = Arc::new(shared);
        let router = axum::Router::new()
            .fallback(server::handle)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            // `serve` only returns on an accept error it cannot recover from.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Emulator {
            shared,
            addr,
            origin,
            task,
        })
    }

    /// The origin to send SP-API calls to, `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> Origin {
        self.origin.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path_and_query` on the emulator, e.g. `url("/orders/v0/orders/1")`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.origin)
    }

    /// The LWA token endpoint, `http://127.0.0.1:PORT/auth/o2/token`.
    pub fn lwa_url(&self) -> String {
        self.url(reply::LWA_PATH)
    }

    /// The LWA client id the emulator accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.config.client_id
    }

    /// The LWA client secret the emulator accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.config.client_secret
    }

    /// The application id the emulator plays.
    pub fn app_id(&self) -> &str {
        &self.shared.config.app_id
    }

    /// The configuration the emulator started with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// `seller`'s refresh token, if the seller is known.
    pub fn refresh_token(&self, seller: &str) -> Option<String> {
        self.shared.lock().sellers.get(seller).cloned()
    }

    /// Adds a seller (or gives a known seller a new refresh token, which voids the old one, as a
    /// re-authorization does).
    pub fn add_seller(&self, seller: &str, refresh_token: &str) {
        self.shared.lock().add_seller(seller, refresh_token);
    }

    /// Registers one more application id that token requests may name as `targetApplication`.
    pub fn register_target_application(&self, app_id: &str) {
        let mut inner = self.shared.lock();
        if !inner.target_applications.iter().any(|a| a == app_id) {
            inner.target_applications.push(app_id.to_owned());
        }
    }

    /// Takes away the application's role for a resource: from now on, a token request naming a
    /// path that matches `path_template` (each `{placeholder}` segment matching any value, the
    /// template itself included) with `method` fails whole with 400 `InvalidInput` naming it.
    pub fn deny_resource(&self, method: Method, path_template: &str) {
        self.shared
            .lock()
            .denied_resources
            .push((method, path_template.to_owned()));
    }

    /// Takes away the application's role for a data element: from now on, a token request asking
    /// for it fails whole with 400 `InvalidInput` naming it.
    pub fn deny_data_element(&self, element: DataElement) {
        let mut inner = self.shared.lock();
        inner.denied_elements = inner.denied_elements.with(element);
    }

    /// Gives back every role taken with [`deny_resource`](Self::deny_resource) and
    /// [`deny_data_element`](Self::deny_data_element).
    pub fn clear_denials(&self) {
        let mut inner = self.shared.lock();
        inner.denied_resources.clear();
        inner.denied_elements = spapi_rdt::catalog::DataElements::NONE;
    }

    /// Makes the next `times` requests to `endpoint` meet `fault` (see [`Fault`] for how faults
    /// combine). `times == 0` does nothing.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.shared.lock().faults.push(Rule {
            endpoint,
            fault,
            remaining: times,
        });
    }

    /// Removes every injected fault not yet used.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The requests received at `endpoint`, oldest first, from the last
    /// [`REQUEST_LOG_CAPACITY`](Self::REQUEST_LOG_CAPACITY) requests of all endpoints.
    ///
    /// ```
    /// # use spapi_rdt_emulator::{Emulator, Endpoint};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let emulator = Emulator::start().await?;
    /// // ... a client under test calls LWA ...
    /// for request in emulator.requests(Endpoint::Lwa) {
    ///     assert_eq!(request.form_field("grant_type").as_deref(), Some("refresh_token"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn requests(&self, endpoint: Endpoint) -> Vec<SeenRequest> {
        let inner = self.shared.lock();
        inner
            .seen
            .iter()
            .filter(|r| r.went_to(endpoint))
            .cloned()
            .collect()
    }

    /// How many requests [`requests`](Self::requests) remembers, over all endpoints; the oldest are
    /// forgotten first, so the log's memory is bounded however long the emulator runs.
    pub const REQUEST_LOG_CAPACITY: usize = state::REQUEST_LOG_CAPACITY;

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
    }

    /// Makes every Restricted Data Token issued so far invalid: restricted calls made with one get
    /// 403 `Unauthorized`, as with a stale token.
    pub fn revoke_rdts(&self) {
        self.shared.lock().rdts.clear();
    }

    /// Makes every LWA access token issued so far invalid (as when Amazon ends a token before its
    /// stated lifetime).
    pub fn revoke_access_tokens(&self) {
        self.shared.lock().access.clear();
    }

    /// Issues an LWA access token for `seller` without an HTTP call (not counted), for tests that
    /// call operations directly. The seller need not be known.
    pub fn issue_lwa_token(&self, seller: &str) -> String {
        let lifetime = self.shared.config.lwa_lifetime;
        self.shared.lock().issue_access(Some(seller), lifetime)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("origin", &self.origin)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

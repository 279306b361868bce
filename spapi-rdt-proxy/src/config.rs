//! The proxy's settings: the command line over the optional TOML file over the defaults, with the
//! secrets from the environment. Everything is checked here, before anything listens: an error
//! names the flag, key or variable at fault, never a secret's value.
//!
//! ```toml
//! listen = "0.0.0.0:8080"          # needs client authentication, see [client_auth]
//! ops_listen = "0.0.0.0:9090"      # /healthz, /readyz, /metrics here instead, from any network
//! region = "eu"                    # or: upstream = "https://sellingpartnerapi-eu.amazon.com"
//! sandbox = false
//! log_format = "json"
//! upstream_timeout_secs = 60
//! drain_timeout_secs = 20
//! header_timeout_secs = 30
//! idle_timeout_secs = 60           # a client connection with nothing in flight
//! max_connection_age_secs = 600    # then closed once its requests are answered
//! http2_keepalive_secs = 30        # HTTP/2 ping interval (and the wait for its answer)
//! max_connections = 512            # open client connections; more are closed at accept
//! allow_tokens_api = false         # true: clients may call createRestrictedDataToken
//!
//! [client_auth]
//! allow_networks = ["10.0.0.0/8"]  # and/or the SPAPI_PROXY_CLIENT_TOKEN secret
//!
//! [sellers.A2EUQ1WTGCTBG2]         # refresh token in SPAPI_REFRESH_TOKEN_A2EUQ1WTGCTBG2
//! region = "na"                    # this seller's calls go to North America
//!
//! [fleet]
//! redis_url = "redis://127.0.0.1:6379/0"
//! key_prefix = "spapi-rdt"
//! cluster = false                  # true: the URL names one node of a Redis Cluster
//! replicas = 3                     # replicas sharing it: each paces at 1/3 of a plan if it fails
//!
//! [reports]
//! remember = 10000                 # restricted report documents kept in memory
//! remember_secs = 86400
//! document_tokens_per_minute = 12  # per seller, once a burst of document_token_burst is spent
//! document_token_burst = 5
//!
//! [usage_plans]                    # calls held per seller and operation under Amazon's plans
//! enabled = true                   # false: send every call as it comes (--no-usage-plans)
//! max_wait_secs = 60               # longer waits get 429 with Retry-After at once
//!
//! [usage_plans.plans]              # plans Amazon raised for this application ("API operationId")
//! "Orders v0 getOrder" = { rate = 0.5, burst = 30 }   # --usage-plan "Orders v0 getOrder=0.5/30"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use spapi_rdt::catalog::{UsagePlan, UsagePlans};
use spapi_rdt::pacing::PacingLayerBuilder;
use spapi_rdt::{LwaCredentials, Origin, SellerId};

use crate::auth::ClientAuth;
use crate::cli::{Args, LogFormat, RegionName};
use crate::connections::{Limits, MAX_CONNECTIONS};
use crate::document_budget::DocumentTokenLimits;

/// The listen address when none is given: loopback only.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The environment variable holding the client bearer secret.
pub(crate) const CLIENT_TOKEN_VAR: &str = "SPAPI_PROXY_CLIENT_TOKEN";
/// The environment variable holding the fleet encryption key.
pub(crate) const FLEET_KEY_VAR: &str = "SPAPI_RDT_FLEET_KEY";
/// The environment variable that may hold the Redis URL (with its password).
pub(crate) const REDIS_URL_VAR: &str = "SPAPI_PROXY_REDIS_URL";

/// The config file, as written. Unknown keys are errors, so a secret pasted into the file (or a
/// typo) stops the proxy instead of being ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<SocketAddr>,
    ops_listen: Option<SocketAddr>,
    upstream: Option<String>,
    region: Option<RegionName>,
    sandbox: Option<bool>,
    lwa_url: Option<String>,
    log_format: Option<LogFormat>,
    upstream_timeout_secs: Option<u64>,
    drain_timeout_secs: Option<u64>,
    header_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connection_age_secs: Option<u64>,
    http2_keepalive_secs: Option<u64>,
    max_connections: Option<usize>,
    allow_tokens_api: Option<bool>,
    #[serde(default)]
    client_auth: ClientAuthFile,
    #[serde(default)]
    sellers: BTreeMap<String, SellerFile>,
    fleet: Option<FleetFile>,
    #[serde(default)]
    reports: ReportsFile,
    #[serde(default)]
    usage_plans: UsagePlansFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientAuthFile {
    #[serde(default)]
    allow_networks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SellerFile {
    region: Option<RegionName>,
    upstream: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    redis_url: Option<String>,
    key_prefix: Option<String>,
    cluster: Option<bool>,
    ca_file: Option<PathBuf>,
    replicas: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsFile {
    remember: Option<usize>,
    remember_secs: Option<u64>,
    document_tokens_per_minute: Option<u32>,
    document_token_burst: Option<u32>,
}

/// The `[usage_plans]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsagePlansFile {
    enabled: Option<bool>,
    max_wait_secs: Option<u64>,
    /// Overrides, keyed `"API operationId"`.
    #[serde(default)]
    plans: BTreeMap<String, PlanFile>,
}

/// One override of `[usage_plans.plans]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    rate: f64,
    burst: u32,
}

/// Why the proxy cannot start with the settings it was given. The message names the flag, key or
/// variable at fault and never holds a secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file (`--config`) cannot be read or is not valid TOML of the expected shape.
    File(String),
    /// A flag, config key or environment variable has a value the proxy cannot run with.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File(message) | ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    /// Parses the file's text; `origin` names the file in errors.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    fn read(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        FileConfig::parse(&text, &path.display().to_string())
    }
}

/// One seller: its name, its credentials and where its calls go.
#[derive(Clone)]
pub(crate) struct SellerSettings {
    pub(crate) id: SellerId,
    pub(crate) credentials: LwaCredentials,
    pub(crate) upstream: Origin,
}

impl fmt::Debug for SellerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seller")
            .field("id", &self.id)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Fleet mode: where the shared store is and the key that encrypts tokens there.
#[derive(Clone)]
pub(crate) struct FleetSettings {
    pub(crate) redis_url: String,
    pub(crate) key_hex: String,
    pub(crate) key_prefix: Option<String>,
    /// The URL names one node of a Redis Cluster.
    pub(crate) cluster: bool,
    /// The CA certificate (PEM) trusted for a `rediss://` server, read from its file at start.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// How many replicas share the fleet: alone, each paces at this share of each usage plan.
    pub(crate) replicas: u32,
}

impl fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("key_prefix", &self.key_prefix)
            .field("cluster", &self.cluster)
            .field("ca_certificate", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// How many restricted report documents are remembered, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReportSettings {
    pub(crate) capacity: usize,
    pub(crate) ttl: Duration,
}

/// How calls are kept under their operations' usage plans.
#[derive(Debug, Clone)]
pub(crate) struct UsagePlanSettings {
    /// Whether the pacing layer is in the stack at all.
    pub(crate) enabled: bool,
    /// The longest a call may wait for its slot.
    pub(crate) max_wait: Duration,
    /// Plans that replace the models' ones, at most one per operation.
    pub(crate) overrides: Vec<PlanOverride>,
}

/// A plan set by the operator for one operation of the models.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlanOverride {
    /// The API, as [`UsagePlans`] names it (`"Orders v0"`).
    pub(crate) api: &'static str,
    /// The operationId (`"getOrder"`).
    pub(crate) operation: &'static str,
    pub(crate) plan: UsagePlan,
    /// The flag or key that set it, for error messages.
    pub(crate) setting: String,
}

/// The longest wait for a usage plan's slot the pacing layer accepts.
pub(crate) const MAX_USAGE_PLAN_WAIT_SECS: u64 = 86_400;

/// The default wait for a usage plan's slot: one interval of the one-a-minute plans.
const DEFAULT_USAGE_PLAN_WAIT_SECS: u64 = 60;

/// Every operation of the models, for naming overrides (and for the metrics' labels).
pub(crate) static PLANS: std::sync::LazyLock<UsagePlans> =
    std::sync::LazyLock::new(UsagePlans::amazon);

impl UsagePlanSettings {
    /// The flags over the `[usage_plans]` table: overrides of both are merged, a flag winning over
    /// the file for the same operation.
    fn resolve(args: &Args, file: UsagePlansFile) -> Result<UsagePlanSettings, String> {
        let max_wait = args
            .usage_plan_max_wait
            .or(file.max_wait_secs)
            .unwrap_or(DEFAULT_USAGE_PLAN_WAIT_SECS);
        if !(1..=MAX_USAGE_PLAN_WAIT_SECS).contains(&max_wait) {
            return Err(format!(
                "--usage-plan-max-wait (config `usage_plans.max_wait_secs`) must be between 1 and \
                 {MAX_USAGE_PLAN_WAIT_SECS} seconds"
            ));
        }
        let mut overrides: Vec<PlanOverride> = Vec::new();
        for (name, plan) in &file.plans {
            let setting = format!("config `usage_plans.plans.\"{name}\"`");
            overrides.push(PlanOverride::new(name, plan.rate, plan.burst, setting)?);
        }
        for value in &args.usage_plans {
            let setting = format!("--usage-plan \"{value}\"");
            let parsed = value.rsplit_once('=').and_then(|(name, plan)| {
                let (rate, burst) = plan.split_once('/')?;
                Some((
                    name,
                    rate.trim().parse::<f64>(),
                    burst.trim().parse::<u32>(),
                ))
            });
            let (name, rate, burst) = match parsed {
                Some((name, Ok(rate), Ok(burst))) => (name, rate, burst),
                _ => {
                    return Err(format!(
                        "{setting}: write OPERATION=RATE/BURST, e.g. \"Orders v0 getOrder=0.5/30\" \
                         (requests a second, and a whole burst of at least 1)"
                    ));
                }
            };
            let plan = PlanOverride::new(name, rate, burst, setting)?;
            overrides.retain(|o| (o.api, o.operation) != (plan.api, plan.operation));
            overrides.push(plan);
        }
        Ok(UsagePlanSettings {
            enabled: !args.no_usage_plans && file.enabled.unwrap_or(true),
            max_wait: Duration::from_secs(max_wait),
            overrides,
        })
    }
}

impl PlanOverride {
    /// Checks that `name` (`"API operationId"`) is an operation of the models and that `rate` and
    /// `burst` make a plan; an error names `setting`.
    fn new(name: &str, rate: f64, burst: u32, setting: String) -> Result<PlanOverride, String> {
        let plans: &'static UsagePlans = &PLANS;
        let found = name
            .trim()
            .rsplit_once(' ')
            .and_then(|(api, operation)| plans.find(api.trim(), operation));
        let Some(op) = found else {
            return Err(format!(
                "{setting}: names no operation of Amazon's models; give the API and the \
                 operationId as the models name them, e.g. \"Orders v0 getOrder\""
            ));
        };
        let plan = UsagePlan::new(rate, burst).map_err(|e| format!("{setting}: {e}"))?;
        Ok(PlanOverride {
            api: op.api(),
            operation: op.name(),
            plan,
            setting,
        })
    }
}

/// Everything the proxy runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) listen: SocketAddr,
    /// Where the operations endpoints are served instead of `listen`, if anywhere.
    pub(crate) ops_listen: Option<SocketAddr>,
    /// Where calls of sellers without their own region go.
    pub(crate) upstream: Origin,
    pub(crate) lwa_url: Option<String>,
    pub(crate) sellers: Vec<SellerSettings>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) log_format: LogFormat,
    pub(crate) upstream_timeout: Duration,
    /// How client connections are treated, and the drain.
    pub(crate) limits: Limits,
    /// Whether clients may call the Tokens API through the proxy.
    pub(crate) allow_tokens_api: bool,
    pub(crate) fleet: Option<FleetSettings>,
    pub(crate) reports: ReportSettings,
    /// The per-seller budget of report-document tokens.
    pub(crate) document_tokens: DocumentTokenLimits,
    /// Pacing by usage plans.
    pub(crate) usage_plans: UsagePlanSettings,
}

/// An upper bound for the durations read from outside, so no setting overflows time arithmetic.
const MAX_SECS: u64 = 7 * 24 * 3600;

fn secs(value: u64, name: &str) -> Result<Duration, String> {
    if value == 0 || value > MAX_SECS {
        return Err(format!("{name} must be between 1 and {MAX_SECS} seconds"));
    }
    Ok(Duration::from_secs(value))
}

fn origin(input: &str, name: &str) -> Result<Origin, String> {
    Origin::parse(input).map_err(|e| format!("{name}: {e}"))
}

impl Settings {
    /// Reads the config file named by `args` (if any), then resolves the settings.
    pub fn load(
        args: &Args,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::read(path).map_err(ConfigError::File)?,
            None => FileConfig::default(),
        };
        Settings::resolve(args, file, vars).map_err(ConfigError::Invalid)
    }

    /// The command line over the file over the defaults, secrets from `vars`.
    pub(crate) fn resolve(
        args: &Args,
        file: FileConfig,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        // Only our own variables, and only those with a value.
        let mut vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with("SPAPI_"))
            .collect();
        // A client secret that is set must be one: a blank one would turn authentication off
        // without a word. Any other blank variable counts as unset.
        if vars
            .get(CLIENT_TOKEN_VAR)
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(format!(
                "{CLIENT_TOKEN_VAR} is set but blank: set the client secret, or unset the variable"
            ));
        }
        vars.retain(|_, value| !value.trim().is_empty());

        let sandbox = args.sandbox || file.sandbox.unwrap_or(false);
        if args.sandbox && args.upstream.is_some() {
            return Err(
                "--sandbox picks the sandbox host of --region; with --upstream, name the \
                        sandbox host itself"
                    .to_owned(),
            );
        }
        let upstream = match (&args.upstream, args.region) {
            (Some(url), _) => origin(url, "--upstream")?,
            (None, Some(region)) => region.origin(sandbox),
            (None, None) => match (&file.upstream, file.region) {
                (Some(_), Some(_)) => {
                    return Err("config: give `upstream` or `region`, not both".to_owned());
                }
                (Some(url), None) => origin(url, "config `upstream`")?,
                (None, Some(region)) => region.origin(sandbox),
                (None, None) => {
                    return Err(
                        "no upstream: give --region na|eu|fe or --upstream URL (or `region` in \
                         the config file)"
                            .to_owned(),
                    );
                }
            },
        };
        let listen = match args.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| format!("default listen address: {e}"))?,
        };
        let ops_listen = args.ops_listen.or(file.ops_listen);
        if ops_listen.is_some_and(|ops| ops == listen && ops.port() != 0) {
            return Err(format!(
                "--ops-listen (config `ops_listen`) {listen} is the client address: give the \
                 operations endpoints another port, or leave it out to serve them on --listen"
            ));
        }
        let lwa_url = args.lwa_url.clone().or(file.lwa_url);

        // Client authentication: a secret from the environment, and/or client networks.
        let networks: Vec<IpNet> = if args.allow_networks.is_empty() {
            file.client_auth
                .allow_networks
                .iter()
                .map(|n| {
                    n.parse::<IpNet>()
                        .map_err(|e| format!("config `client_auth.allow_networks` `{n}`: {e}"))
                })
                .collect::<Result<_, _>>()?
        } else {
            args.allow_networks.clone()
        };
        let client_auth = ClientAuth::new(vars.get(CLIENT_TOKEN_VAR).map(String::as_str), networks)
            .map_err(|e| format!("{CLIENT_TOKEN_VAR}: {e}"))?;
        if !listen.ip().is_loopback() && !client_auth.is_configured() {
            return Err(format!(
                "refusing to listen on {listen}: it is not a loopback address and no client \
                 authentication is configured; set {CLIENT_TOKEN_VAR} (a shared secret clients \
                 send as `Authorization: Bearer ...`) and/or --allow-network CIDR, or listen on \
                 127.0.0.1"
            ));
        }

        let sellers = sellers(&vars, &file.sellers, &upstream, sandbox)?;

        let upstream_timeout = secs(
            args.upstream_timeout
                .or(file.upstream_timeout_secs)
                .unwrap_or(60),
            "the upstream timeout",
        )?;
        let defaults = Limits::default();
        let or_default = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).unwrap_or(default.as_secs())
        };
        let max_connections = args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(defaults.max_connections);
        if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
            return Err(format!(
                "the connection cap must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        let limits = Limits {
            header_timeout: secs(
                or_default(
                    args.header_timeout,
                    file.header_timeout_secs,
                    defaults.header_timeout,
                ),
                "the header timeout",
            )?,
            idle_timeout: secs(
                or_default(
                    args.idle_timeout,
                    file.idle_timeout_secs,
                    defaults.idle_timeout,
                ),
                "the idle timeout",
            )?,
            max_connection_age: secs(
                or_default(
                    args.max_connection_age,
                    file.max_connection_age_secs,
                    defaults.max_connection_age,
                ),
                "the maximum connection age",
            )?,
            http2_keepalive: secs(
                or_default(
                    args.http2_keepalive,
                    file.http2_keepalive_secs,
                    defaults.http2_keepalive,
                ),
                "the HTTP/2 keep-alive interval",
            )?,
            max_connections,
            drain_timeout: secs(
                or_default(
                    args.drain_timeout,
                    file.drain_timeout_secs,
                    defaults.drain_timeout,
                ),
                "the drain timeout",
            )?,
        };
        let reports = ReportSettings {
            capacity: file.reports.remember.unwrap_or(10_000).clamp(1, 1_000_000),
            ttl: secs(
                file.reports.remember_secs.unwrap_or(24 * 3600),
                "config `reports.remember_secs`",
            )?,
        };
        let document_defaults = DocumentTokenLimits::default();
        let document_tokens = DocumentTokenLimits {
            per_minute: args
                .document_tokens_per_minute
                .or(file.reports.document_tokens_per_minute)
                .unwrap_or(document_defaults.per_minute),
            burst: file
                .reports
                .document_token_burst
                .unwrap_or(document_defaults.burst),
            remembered: reports.capacity,
        };
        // The Tokens API allows a seller 60 calls a minute and 10 at once: a larger budget for
        // documents alone would mean nothing, and 0 would refuse every restricted document.
        if !(1..=60).contains(&document_tokens.per_minute) {
            return Err(
                "--document-tokens-per-minute (config `reports.document_tokens_per_minute`) must \
                 be between 1 and 60"
                    .to_owned(),
            );
        }
        if !(1..=10).contains(&document_tokens.burst) {
            return Err(
                "config `reports.document_token_burst` must be between 1 and 10".to_owned(),
            );
        }

        let usage_plans = UsagePlanSettings::resolve(args, file.usage_plans)?;

        let redis_url = args
            .redis_url
            .clone()
            .or_else(|| vars.get(REDIS_URL_VAR).cloned())
            .or_else(|| file.fleet.as_ref().and_then(|f| f.redis_url.clone()));
        let fleet = match redis_url {
            None => None,
            Some(redis_url) => {
                let key_hex = vars.get(FLEET_KEY_VAR).cloned().ok_or_else(|| {
                    format!("fleet mode needs {FLEET_KEY_VAR} (64 hexadecimal digits)")
                })?;
                let cluster = args.redis_cluster
                    || file.fleet.as_ref().and_then(|f| f.cluster).unwrap_or(false);
                let ca_file = args
                    .redis_ca_file
                    .clone()
                    .or_else(|| file.fleet.as_ref().and_then(|f| f.ca_file.clone()));
                let ca_pem = match ca_file {
                    None => None,
                    Some(path) => Some(std::fs::read(&path).map_err(|e| {
                        format!("the Redis CA file {} cannot be read: {e}", path.display())
                    })?),
                };
                let replicas = args
                    .fleet_replicas
                    .or_else(|| file.fleet.as_ref().and_then(|f| f.replicas))
                    .unwrap_or(1);
                if !(1..=PacingLayerBuilder::MAX_REPLICAS).contains(&replicas) {
                    return Err(format!(
                        "--fleet-replicas (config `fleet.replicas`) must be from 1 to {}",
                        PacingLayerBuilder::MAX_REPLICAS
                    ));
                }
                Some(FleetSettings {
                    redis_url,
                    key_hex,
                    key_prefix: file.fleet.and_then(|f| f.key_prefix),
                    cluster,
                    ca_pem,
                    replicas,
                })
            }
        };

        Ok(Settings {
            listen,
            ops_listen,
            upstream,
            lwa_url,
            sellers,
            client_auth,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            upstream_timeout,
            limits,
            allow_tokens_api: args.allow_tokens_api || file.allow_tokens_api.unwrap_or(false),
            fleet,
            reports,
            document_tokens,
            usage_plans,
        })
    }

    /// How [`serve`](crate::serve) treats client connections, and how long it drains.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every origin the proxy may send a request (and so a token) to.
    pub(crate) fn origins(&self) -> Vec<Origin> {
        let mut origins = vec![self.upstream.clone()];
        for seller in &self.sellers {
            if !origins.contains(&seller.upstream) {
                origins.push(seller.upstream.clone());
            }
        }
        origins
    }
}

/// The sellers: one per `SPAPI_REFRESH_TOKEN[_<NAME>]`, each on its own region when the file says.
fn sellers(
    vars: &BTreeMap<String, String>,
    file: &BTreeMap<String, SellerFile>,
    upstream: &Origin,
    sandbox: bool,
) -> Result<Vec<SellerSettings>, String> {
    let read = |name: &str| {
        vars.get(name)
            .ok_or_else(|| format!("environment variable `{name}` is not set"))
    };
    let client_id = read("SPAPI_CLIENT_ID")?;
    let client_secret = read("SPAPI_CLIENT_SECRET")?;
    let mut sellers = Vec::new();
    for (name, refresh_token) in vars {
        let id = match name.strip_prefix("SPAPI_REFRESH_TOKEN") {
            Some("") => SellerId::default(),
            Some(rest) => match rest.strip_prefix('_') {
                Some(seller) if !seller.is_empty() => SellerId::new(seller),
                _ => continue,
            },
            None => continue,
        };
        let own = file.get(id.as_str());
        let upstream = match own {
            Some(SellerFile {
                region: Some(_),
                upstream: Some(_),
            }) => {
                return Err(format!(
                    "config `sellers.{id}`: give `upstream` or `region`, not both"
                ));
            }
            Some(SellerFile {
                upstream: Some(url),
                ..
            }) => origin(url, &format!("config `sellers.{id}.upstream`"))?,
            Some(SellerFile {
                region: Some(region),
                ..
            }) => region.origin(sandbox),
            _ => upstream.clone(),
        };
        let credentials = LwaCredentials::new(client_id, client_secret, refresh_token);
        sellers.push(SellerSettings {
            id,
            credentials,
            upstream,
        });
    }
    for name in file.keys() {
        if !sellers.iter().any(|s| s.id.as_str() == name) {
            let var = if name == SellerId::DEFAULT_NAME {
                "SPAPI_REFRESH_TOKEN".to_owned()
            } else {
                format!("SPAPI_REFRESH_TOKEN_{name}")
            };
            return Err(format!(
                "config `sellers.{name}`: environment variable `{var}` is not set"
            ));
        }
    }
    if sellers.is_empty() {
        return Err(
            "no refresh token: set SPAPI_REFRESH_TOKEN and/or SPAPI_REFRESH_TOKEN_<NAME>"
                .to_owned(),
        );
    }
    Ok(sellers)
}

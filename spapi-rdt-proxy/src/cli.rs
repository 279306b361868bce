//! The command line. Every flag has a config-file counterpart, and a flag given wins over the file;
//! secrets have neither: they come from the environment only (see [`ENVIRONMENT`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;
use spapi_rdt::{Origin, Region};

/// What `--help` shows after the flags: the environment, the files and the endpoints.
pub(crate) const ENVIRONMENT: &str = "\
ENVIRONMENT (secrets are read from here only, never from flags or the config file):
  SPAPI_CLIENT_ID                 the application's LWA client id
  SPAPI_CLIENT_SECRET             the application's LWA client secret
  SPAPI_REFRESH_TOKEN             refresh token of the seller used without an x-spapi-seller header
  SPAPI_REFRESH_TOKEN_<NAME>      refresh token of the seller named <NAME> (x-spapi-seller: <NAME>)
  SPAPI_PROXY_CLIENT_TOKEN        shared secret clients must present as `Authorization: Bearer ...`
                                  (or `Proxy-Authorization: Bearer ...`); compared in constant time
  SPAPI_RDT_FLEET_KEY             fleet mode: 64 hex digits, the key that encrypts tokens in Redis
  SPAPI_PROXY_REDIS_URL           fleet mode: the Redis URL, when it holds a password
  RUST_LOG                        log filter, e.g. `info` (default) or `spapi_rdt=debug,info`

REQUESTS:
  Point any SP-API client at http://LISTEN instead of the SP-API host. The proxy adds the seller's
  LWA access token to every call and a Restricted Data Token to restricted ones; clients send no
  token at all. Two optional request headers, removed before forwarding:
    x-spapi-seller: <NAME>          which seller (SPAPI_REFRESH_TOKEN_<NAME>); none: the default one
    x-spapi-restricted-report: true this getReportDocument call is for a restricted report type
                                    (rarely needed: the proxy learns it from getReport/getReports
                                    answers, and retries a refused document once with a token)

CONFIG FILE (--config FILE, TOML; flags given on the command line win; unknown keys are errors):
  listen = \"127.0.0.1:8080\"   ops_listen = \"127.0.0.1:9090\"
  region = \"eu\"  (or upstream = \"https://...\")   sandbox = false
  lwa_url = \"...\"   log_format = \"json\"   upstream_timeout_secs = 60   drain_timeout_secs = 20
  header_timeout_secs = 30   idle_timeout_secs = 60   max_connection_age_secs = 600
  http2_keepalive_secs = 30   max_connections = 512   allow_tokens_api = false
  [client_auth]  allow_networks = [\"10.0.0.0/8\"]
  [sellers.<NAME>]  region = \"na\"  (or upstream = \"https://...\"); token in SPAPI_REFRESH_TOKEN_<NAME>
  [fleet]  redis_url = \"redis://127.0.0.1:6379/0\"   key_prefix = \"spapi-rdt\"   cluster = false
           ca_file = \"/etc/ssl/redis-ca.pem\"   replicas = 3
  [reports]  remember = 10000   remember_secs = 86400   (restricted report documents kept)
             document_tokens_per_minute = 12   document_token_burst = 5   (per seller)
  [usage_plans]  enabled = true   max_wait_secs = 60
  [usage_plans.plans]  \"Orders v0 getOrder\" = { rate = 0.5, burst = 30 }   (flags win)

USAGE PLANS (on by default; --no-usage-plans turns them off):
  Each call of an operation of Amazon's models is held, per seller and operation, until its usage
  plan (rate and burst, from the models or --usage-plan, then the x-amzn-RateLimit-Limit Amazon
  states) lets it go, so a client that knows nothing of quotas does not meet 429s. Two requests of
  each burst are kept in reserve. A call that would wait longer than --usage-plan-max-wait gets 429
  QuotaExceeded with Retry-After at once and is not sent. A 429 from Amazon empties the bucket and a
  call without a body is sent again (twice at most). Paths of no known operation pass untouched.

OPERATIONS (outside the SP-API path space, no client authentication; on --listen, to the allowed
networks, or on --ops-listen alone, to anyone who reaches that address):
  GET /healthz   200 while the process serves
  GET /readyz    200 once LWA answered for at least one seller; in fleet mode, shared or alone
  GET /metrics   Prometheus / OpenMetrics text
  SIGTERM or SIGINT: stop accepting, finish in-flight requests for up to --drain-timeout, exit 0.

SAFETY:
  Listens on loopback unless told otherwise, and refuses to start on another address unless client
  authentication is configured (SPAPI_PROXY_CLIENT_TOKEN and/or --allow-network). Requests only go
  to the configured upstream(s), redirects are not followed, and HTTP(S)_PROXY is ignored.";

/// A reverse proxy that gives any SP-API client the Restricted Data Tokens it needs.
///
/// Run it next to an application written in any language, point the application's SP-API client
/// at it, and every restricted call (order addresses, buyer info, shipping labels, restricted
/// report documents) gets a cached Restricted Data Token, with one token call per operation and
/// seller an hour, under Amazon's rate limit.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "spapi-rdt-proxy", version, after_long_help = ENVIRONMENT)]
pub struct Args {
    /// Where to accept connections. Default 127.0.0.1:8080. A non-loopback address needs client
    /// authentication (SPAPI_PROXY_CLIENT_TOKEN or --allow-network).
    #[arg(long, value_name = "ADDR:PORT", env = "SPAPI_PROXY_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// Serve /healthz, /readyz and /metrics on this address of their own instead of --listen,
    /// e.g. 0.0.0.0:9090 for probes and a scraper that come from outside --allow-network. That
    /// address answers nothing else and asks no client authentication: bind it where only they
    /// reach it.
    #[arg(long, value_name = "ADDR:PORT", env = "SPAPI_PROXY_OPS_LISTEN")]
    pub(crate) ops_listen: Option<SocketAddr>,

    /// The SP-API origin to forward to, e.g. https://sellingpartnerapi-eu.amazon.com (https, or
    /// http on loopback only). Shorthand: --region.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "region",
        env = "SPAPI_PROXY_UPSTREAM"
    )]
    pub(crate) upstream: Option<String>,

    /// The SP-API region to forward to: na, eu or fe (the production host, or the sandbox one with
    /// --sandbox).
    #[arg(long, value_enum, env = "SPAPI_PROXY_REGION")]
    pub(crate) region: Option<RegionName>,

    /// Use the sandbox host of --region (and of per-seller regions). Sandbox calls get the LWA
    /// token only: Amazon's sandbox answers fixtures whatever the token.
    #[arg(long)]
    pub(crate) sandbox: bool,

    /// The LWA token endpoint. Default: Amazon's, https://api.amazon.com/auth/o2/token.
    #[arg(long, value_name = "URL", env = "SPAPI_PROXY_LWA_URL")]
    pub(crate) lwa_url: Option<String>,

    /// A TOML file for what flags make awkward: sellers with their own region, client networks,
    /// fleet mode, timeouts. Flags given on the command line win over the file.
    #[arg(long, value_name = "FILE", env = "SPAPI_PROXY_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// A client network allowed to use the proxy, e.g. 10.0.0.0/8 (repeatable). Connections from
    /// elsewhere are refused with 403. Replaces the file's `client_auth.allow_networks`.
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub(crate) allow_networks: Vec<IpNet>,

    /// Log format on stderr: text or json. Default text. Filter with RUST_LOG.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "SPAPI_PROXY_LOG_FORMAT"
    )]
    pub(crate) log_format: Option<LogFormat>,

    /// Fleet mode: share tokens and the token-call rate limit with other proxies through Redis,
    /// e.g. redis://127.0.0.1:6379/0. Put a URL with a password in SPAPI_PROXY_REDIS_URL instead.
    /// Needs SPAPI_RDT_FLEET_KEY.
    #[arg(long, value_name = "URL")]
    pub(crate) redis_url: Option<String>,

    /// Fleet mode: the Redis URL names one node of a Redis Cluster or Valkey cluster; the proxy
    /// finds the others. At start the proxy checks the server and refuses to run when the two do
    /// not match, or when the server is a replica or refuses the password.
    #[arg(long)]
    pub(crate) redis_cluster: bool,

    /// Fleet mode over TLS (a rediss:// URL): the PEM file of the CA that signed the server's
    /// certificate, trusted instead of the system's store (a private CA). Without it the system's
    /// store is used. The certificate is always checked.
    #[arg(long, value_name = "PATH")]
    pub(crate) redis_ca_file: Option<std::path::PathBuf>,

    /// Fleet mode: how many replicas share the fleet. The replicas share each usage-plan bucket
    /// through Redis; when Redis fails, each paces alone at this share of every plan, so that
    /// together they stay under it. Default 1 (alone, a replica then paces at the whole plan).
    #[arg(long, value_name = "N")]
    pub(crate) fleet_replicas: Option<u32>,

    /// Forward calls of the Tokens API (createRestrictedDataToken) from clients. Off by default: a
    /// client then never receives a token, and the seller's token quota is the proxy's alone.
    #[arg(long)]
    pub(crate) allow_tokens_api: bool,

    /// Seconds an upstream call may take, response body included. Default 60.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) upstream_timeout: Option<u64>,

    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT. Default 20.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) drain_timeout: Option<u64>,

    /// Seconds a client connection may take to send a request head (its first, and each next one
    /// on a kept-alive HTTP/1.1 connection) before it is closed. Default 30.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) header_timeout: Option<u64>,

    /// Seconds a client connection may stay open with no request in flight (HTTP/1.1 and HTTP/2).
    /// Default 60.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) idle_timeout: Option<u64>,

    /// Seconds a client connection may live; then it is closed once its requests are answered, and
    /// the client reconnects. Default 600.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) max_connection_age: Option<u64>,

    /// Seconds between HTTP/2 pings to a client; one that does not answer within as long is
    /// closed. Default 30.
    #[arg(long = "http2-keepalive", value_name = "SECONDS")]
    pub(crate) http2_keepalive: Option<u64>,

    /// How many client connections may be open at once; more are closed at accept (counted in
    /// `spapi_proxy_clients_refused_total{reason="connection_cap"}`). Keep it under the descriptor
    /// limit (`ulimit -n`) minus the upstream connections. Default 512.
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,

    /// Send every call to Amazon as it comes: do not hold calls to keep each operation under its
    /// usage plan (for a client that paces itself, or a load test against a server without
    /// plans). Config: `usage_plans.enabled = false`.
    #[arg(long)]
    pub(crate) no_usage_plans: bool,

    /// Seconds a call may wait for its usage plan to let it go; a call that would wait longer is
    /// answered 429 with Retry-After at once, and nothing is sent. 1 to 86400; default 60 (one
    /// interval of the one-a-minute plans, such as getOrders). Keep it under the clients' own
    /// timeout. Config: `usage_plans.max_wait_secs`.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) usage_plan_max_wait: Option<u64>,

    /// Pace an operation by this plan instead of its model's, e.g. "Orders v0 getOrder=0.5/30"
    /// (API and operationId as in the models, requests a second, burst), for a plan Amazon raised
    /// for this application (repeatable). Wins over the same operation in the config file's
    /// `[usage_plans.plans]`. A rate Amazon states in x-amzn-RateLimit-Limit still wins over it.
    #[arg(long = "usage-plan", value_name = "OPERATION=RATE/BURST")]
    pub(crate) usage_plans: Vec<String>,

    /// How many report-document tokens a seller's clients may make the proxy fetch each minute
    /// once a burst of 5 is spent (each document needs a token of its own, out of the Tokens API
    /// quota the other operations need too); past it a marked document gets 429. 1 to 60;
    /// default 12.
    #[arg(long, value_name = "N")]
    pub(crate) document_tokens_per_minute: Option<u32>,
}

/// An SP-API region, as named on the command line and in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RegionName {
    /// North America.
    Na,
    /// Europe, India, Turkey, the Middle East, Africa.
    Eu,
    /// Far East.
    Fe,
}

impl RegionName {
    /// The region's origin: production, or its sandbox.
    pub(crate) fn origin(self, sandbox: bool) -> Origin {
        let region = match self {
            RegionName::Na => Region::NorthAmerica,
            RegionName::Eu => Region::Europe,
            RegionName::Fe => Region::FarEast,
        };
        if sandbox {
            region.sandbox_origin()
        } else {
            region.origin()
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

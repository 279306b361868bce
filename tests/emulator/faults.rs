//! Reliability against the emulator's fault injection, through the full stack: the recovery layer,
//! `RestrictedDataTokenLayer`, `SpApiTokenSource` and a real HTTP client, all on 127.0.0.1 and real
//! time (real sockets and paused time do not mix), with small timeouts.
//!
//! `fault_matrix` runs one row per fault. Each row has its own emulator and two sellers:
//!
//! - **cold** (seller `cold`): a request with nothing cached meets the fault. The row checks the
//!   typed error (`spapi_rdt::error::Error`: kind, HTTP status, Amazon/OAuth code, cure), the attempts
//!   (the error's `attempts()` and the Tokens API / LWA calls the emulator counted) and how long
//!   the request waited against its deadline.
//! - **warm** (seller `default`): a token is fetched before the fault is armed; once the token is
//!   in its refresh window the fault hits the background refresh, and every request in the window
//!   must still be served the cached token (the emulator answers them with personal data).
//!
//! Every row also checks that the token calls stayed within the rate limit (the emulator throttled
//! nothing, except in the 429 row where throttling is the fault). The matrix (row → observed
//! outcome) is printed (`cargo test --test faults -- --nocapture`) and written to
//! `<target dir>/fault-matrix.md`.

use crate::support::stack;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use http::StatusCode;
use spapi_rdt::{
    BoxError, LwaCredentials, Origin, RestrictedDataTokenLayer, SellerId, SpApiTokenSource,
    error::Error, error::ErrorKind,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use stack::{ADDRESS, Forwarder, Upstream, credentials, dead_port, get, http_client};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// Each HTTP call of the token source may take this long.
const SOURCE_TIMEOUT: Duration = Duration::from_millis(300);
/// The layer's wait and fetch deadlines (the stall row uses shorter ones).
const WAIT: Duration = Duration::from_secs(2);
const FETCH: Duration = Duration::from_millis(1500);
/// How far past its deadline a request may end before the row fails (scheduling on a busy host).
const SLACK: Duration = Duration::from_secs(1);
/// Token lifetimes in the emulator. With `refresh_ahead(4 s)` and the default expiry margin (a
/// tenth of the life, 1 s), an RDT is fresh for 5 s, then in its refresh window until 9 s.
const RDT_LIFE: Duration = Duration::from_secs(10);
const REFRESH_AHEAD: Duration = Duration::from_secs(4);
/// LWA tokens are refreshed at half their life, so the warm seller's is due again by the RDT's
/// refresh window and LWA faults hit that refresh too.
const LWA_LIFE: Duration = Duration::from_secs(2);
/// When the warm requests are made, after the token was fetched: all inside the refresh window,
/// the last 2.6 s before its end.
const WINDOW_SAMPLES: [Duration; 4] = [
    Duration::from_millis(5200),
    Duration::from_millis(5600),
    Duration::from_millis(6000),
    Duration::from_millis(6400),
];
const MAX_ATTEMPTS: u32 = 3;
/// Attempts at a fetch whose LWA call fails transiently: the source remembers the failure for
/// 0.5 to 1 s and then 1 to 2 s, and says so (`retry_after`), so the third attempt would start
/// past the 1.5 s fetch deadline and the fetch ends after two.
const LWA_ATTEMPTS: u32 = 2;
/// How many rows of the fault matrix run at the same time.
const ROWS_AT_ONCE: usize = 5;

const COLD: &str = "cold";
const COLD_REFRESH: &str = "Atzr|cold-seller-refresh";

/// How a row breaks things.
#[derive(Clone, Debug)]
enum Setup {
    /// This fault on every Tokens API call.
    Tokens(Fault),
    /// This fault on every LWA call.
    Lwa(Fault),
    /// The Tokens API's port refuses connections.
    Refused,
    /// The Tokens API sends a complete head, part of the body, and closes the connection.
    CutMidBody,
    /// The sellers authorized the application again: the refresh tokens the sources hold are void.
    Reauthorized,
}

/// What the cold request must end with.
#[derive(Clone, Debug)]
enum Want {
    Token,
    Fail {
        kind: ErrorKind,
        status: Option<u16>,
        code: Option<&'static str>,
        says: &'static str,
        cure: Option<&'static str>,
        attempts: u32,
    },
    /// The layer's wait deadline ends the request (`is_timeout`); a request made after the fetch
    /// gave up gets the remembered fetch timeout.
    Timeout {
        says: &'static str,
        later: &'static str,
    },
}

#[derive(Clone, Debug)]
struct Row {
    name: &'static str,
    setup: Setup,
    want: Want,
    /// Tokens API calls (cold seller) the emulator must count.
    token_calls: std::ops::RangeInclusive<u64>,
    /// LWA calls during the cold request.
    lwa_calls: u64,
    /// Shorter layer deadlines (wait, fetch) than the source's retries need.
    deadlines: (Duration, Duration),
}

fn fail(
    kind: ErrorKind,
    status: Option<u16>,
    code: Option<&'static str>,
    says: &'static str,
    attempts: u32,
) -> Want {
    Want::Fail {
        kind,
        status,
        code,
        says,
        cure: None,
        attempts,
    }
}

fn with_cure(want: Want, cure: &'static str) -> Want {
    match want {
        Want::Fail {
            kind,
            status,
            code,
            says,
            attempts,
            ..
        } => Want::Fail {
            kind,
            status,
            code,
            says,
            cure: Some(cure),
            attempts,
        },
        other => other,
    }
}

fn rows() -> Vec<Row> {
    use ErrorKind::{Permanent, Transient};
    let status = |s: u16| StatusCode::from_u16(s).unwrap();
    let row = |name, setup, want, token_calls, lwa_calls| Row {
        name,
        setup,
        want,
        token_calls,
        lwa_calls,
        deadlines: (WAIT, FETCH),
    };
    let transient3 = MAX_ATTEMPTS as u64..=MAX_ATTEMPTS as u64;
    vec![
        row(
            "Tokens 429",
            Setup::Tokens(Fault::Status(status(429))),
            fail(Transient, Some(429), Some("QuotaExceeded"), "refused", 3),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens 500",
            Setup::Tokens(Fault::Status(status(500))),
            fail(Transient, Some(500), Some("InternalFailure"), "refused", 3),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens 503",
            Setup::Tokens(Fault::Status(status(503))),
            fail(
                Transient,
                Some(503),
                Some("ServiceUnavailable"),
                "refused",
                3,
            ),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens 400 InvalidInput",
            Setup::Tokens(Fault::Status(status(400))),
            with_cure(
                fail(Permanent, Some(400), Some("InvalidInput"), "refused", 1),
                "restricted role",
            ),
            1..=1,
            1,
        ),
        row(
            "Tokens 403",
            Setup::Tokens(Fault::Status(status(403))),
            with_cure(
                fail(Permanent, Some(403), Some("Unauthorized"), "refused", 2),
                "LWA credentials",
            ),
            // The source replaces the refused LWA token and calls once more.
            2..=2,
            2,
        ),
        row(
            "Tokens timeout (1 s delay > 300 ms)",
            Setup::Tokens(Fault::Delay(Duration::from_secs(1))),
            fail(Transient, None, None, "did not answer within 300 ms", 3),
            transient3.clone(),
            1,
        ),
        Row {
            name: "Tokens 30 s stall",
            setup: Setup::Tokens(Fault::Delay(Duration::from_secs(30))),
            want: Want::Timeout {
                says: "no token arrived within",
                later: "did not finish within",
            },
            token_calls: 1..=3,
            lwa_calls: 1,
            deadlines: (Duration::from_millis(600), Duration::from_millis(900)),
        },
        row(
            "Tokens connection refused",
            Setup::Refused,
            fail(Transient, None, None, "could not connect", 3),
            0..=0,
            1,
        ),
        row(
            // The emulator's `DropConnection`: hyper aborts the connection when the body stream
            // fails, before the response head leaves, so the client sees no response at all.
            "Tokens connection dropped (emulator DropConnection)",
            Setup::Tokens(Fault::DropConnection),
            fail(Transient, None, None, "failed", 3),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens connection dropped mid-body (head, 40 of 512 bytes)",
            Setup::CutMidBody,
            fail(Transient, Some(200), None, "could not read", 3),
            // The cut answers come from the forwarder: the emulator sees no call.
            0..=0,
            1,
        ),
        row(
            "Tokens body not JSON",
            Setup::Tokens(Fault::MalformedBody),
            fail(
                Transient,
                Some(200),
                None,
                "holds no restrictedDataToken",
                3,
            ),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens body missing fields",
            Setup::Tokens(Fault::MissingFields),
            fail(
                Transient,
                Some(200),
                None,
                "holds no restrictedDataToken",
                3,
            ),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens expiresIn 0",
            Setup::Tokens(Fault::ExpiresIn(Some(0))),
            fail(Transient, Some(200), None, "lifetime of 0 seconds", 3),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens expiresIn -60",
            Setup::Tokens(Fault::ExpiresIn(Some(-60))),
            fail(Transient, Some(200), None, "lifetime of -60 seconds", 3),
            transient3.clone(),
            1,
        ),
        row(
            "Tokens expiresIn 10^10 (assumed 1 h)",
            Setup::Tokens(Fault::ExpiresIn(Some(10_000_000_000))),
            Want::Token,
            1..=1,
            1,
        ),
        row(
            "Tokens expiresIn missing (assumed 1 h)",
            Setup::Tokens(Fault::ExpiresIn(None)),
            Want::Token,
            1..=1,
            1,
        ),
        row(
            "LWA 500",
            Setup::Lwa(Fault::Status(status(500))),
            fail(
                Transient,
                Some(500),
                Some("server_error"),
                "LWA",
                LWA_ATTEMPTS,
            ),
            0..=0,
            LWA_ATTEMPTS.into(),
        ),
        row(
            "LWA 401 invalid_client",
            Setup::Lwa(Fault::Status(status(401))),
            with_cure(
                fail(Permanent, Some(401), Some("invalid_client"), "LWA", 1),
                "client id and secret",
            ),
            0..=0,
            1,
        ),
        row(
            "LWA invalid_grant (seller re-authorized)",
            Setup::Reauthorized,
            with_cure(
                fail(Permanent, Some(400), Some("invalid_grant"), "LWA", 1),
                "authorize the application again",
            ),
            0..=0,
            1,
        ),
        // Each attempt takes the 300 ms timeout: the second ends by 0.3 + 1 + 0.3 = 1.6 s, and a
        // third could not start before 0.3 + 0.5 + 0.3 + 1 = 2.1 s. A 1.9 s fetch deadline lets
        // exactly two attempts run, whatever the back-off's jitter and a busy host's delays.
        Row {
            deadlines: (Duration::from_millis(2500), Duration::from_millis(1900)),
            ..row(
                "LWA timeout (1 s delay > 300 ms)",
                Setup::Lwa(Fault::Delay(Duration::from_secs(1))),
                fail(
                    Transient,
                    None,
                    None,
                    "did not answer within 300 ms",
                    LWA_ATTEMPTS,
                ),
                0..=0,
                LWA_ATTEMPTS.into(),
            )
        },
        row(
            "LWA body not JSON",
            Setup::Lwa(Fault::MalformedBody),
            fail(
                Transient,
                Some(200),
                None,
                "holds no access token",
                LWA_ATTEMPTS,
            ),
            0..=0,
            LWA_ATTEMPTS.into(),
        ),
        row(
            "LWA expires_in 0",
            Setup::Lwa(Fault::ExpiresIn(Some(0))),
            fail(
                Transient,
                Some(200),
                None,
                "lifetime of 0 seconds",
                LWA_ATTEMPTS,
            ),
            0..=0,
            LWA_ATTEMPTS.into(),
        ),
    ]
}

/// What a row observed.
#[derive(Debug, Default)]
struct Observed {
    outcome: String,
    attempts: String,
    waited: String,
    warm: String,
    throttled: u64,
    problems: Vec<String>,
}

fn layer(
    source: SpApiTokenSource,
    origin: Origin,
    seller: &str,
    (wait, fetch): (Duration, Duration),
) -> RestrictedDataTokenLayer {
    RestrictedDataTokenLayer::builder(source)
        .origins([origin])
        .default_seller(SellerId::new(seller))
        .wait_timeout(wait)
        .fetch_timeout(fetch)
        .max_attempts(MAX_ATTEMPTS)
        .retry_base(Duration::from_millis(25))
        .refresh_ahead(REFRESH_AHEAD)
        .refresh_jitter(Duration::ZERO)
        .transient_error_backoff(Duration::from_secs(1), Duration::from_secs(4))
        .permanent_error_ttl(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// One line of a typed error: kind, status, code, cure.
fn describe(error: &Error) -> String {
    let kind = match error.kind() {
        ErrorKind::Transient => "transient",
        ErrorKind::Permanent => "permanent",
    };
    match error.source_error() {
        Some(e) => {
            let mut text = format!("{kind} source error");
            if let Some(s) = e.status() {
                let _ = write!(text, ", HTTP {}", s.as_u16());
            }
            if let Some(c) = e.code() {
                let _ = write!(text, ", `{c}`");
            }
            if e.cure().is_some() {
                text.push_str(", with cure");
            }
            text
        }
        None if error.is_timeout() => format!("{kind} layer timeout"),
        None => format!("{kind} layer error"),
    }
}

fn downcast(err: &BoxError) -> Option<&Error> {
    err.downcast_ref::<Error>()
}

/// HTTP clients built once (building one with rustls takes a while in a debug build) and shared.
#[derive(Clone)]
struct Clients {
    /// For the sources and below the layers.
    plain: reqwest::Client,
    /// Keeps no idle connection, for a source whose server will refuse connections.
    unpooled: reqwest::Client,
}

impl Clients {
    fn new() -> Self {
        Clients {
            plain: http_client(),
            unpooled: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }
}

async fn run(row: Row, clients: Clients) -> Observed {
    let row = &row;
    let mut seen = Observed::default();
    let problems = &mut seen.problems;
    let config = EmulatorConfig::default()
        .seller(COLD, COLD_REFRESH)
        .rdt_lifetime(RDT_LIFE)
        .lwa_lifetime(LWA_LIFE);
    let em = Emulator::start_with(config).await.unwrap();
    // These rows put a forwarder between the source and the Tokens API, which then breaks.
    let forwarded = matches!(row.setup, Setup::Refused | Setup::CutMidBody);
    let forwarder = if forwarded {
        Some(Forwarder::start(em.local_addr()).await)
    } else {
        None
    };
    let origin = forwarder
        .as_ref()
        .map_or_else(|| em.origin(), Forwarder::origin);
    // Behind a forwarder that will break, the source must not reuse a connection made before.
    let source_client = if forwarded {
        clients.unpooled.clone()
    } else {
        clients.plain.clone()
    };
    let started = Instant::now();

    // Warm seller: a token is cached before anything breaks.
    let warm_source = stack::source(
        &em,
        "default",
        credentials(&em, "default"),
        SOURCE_TIMEOUT,
        Some(source_client),
    );
    let warm_layer = layer(warm_source, origin.clone(), "default", row.deadlines);
    // The restricted calls themselves always reach the emulator.
    let upstream = Upstream::new(clients.plain.clone()).with_base(em.origin().to_string());
    let warm = ServiceBuilder::new()
        .layer(warm_layer.recover_stale_tokens())
        .layer(warm_layer.clone())
        .service(upstream.clone());
    let first = warm.clone().oneshot(get(&origin, ADDRESS)).await;
    let t0 = Instant::now();
    match &first {
        Ok(r) if r.status() == StatusCode::OK => {}
        other => problems.push(format!("the warm-up request failed: {other:?}")),
    }
    let cached = upstream.last_token();

    // Break things.
    match &row.setup {
        Setup::Tokens(fault) => em.inject(Endpoint::Tokens, fault.clone(), 10_000),
        Setup::Lwa(fault) => em.inject(Endpoint::Lwa, fault.clone(), 10_000),
        Setup::Refused => {
            if let Some(f) = &forwarder {
                f.close().await;
            }
        }
        Setup::CutMidBody => {
            if let Some(f) = &forwarder {
                f.cut_mid_body();
            }
        }
        Setup::Reauthorized => {
            em.add_seller("default", "Atzr|default-reauthorized");
            em.add_seller(COLD, "Atzr|cold-reauthorized");
        }
    }

    // Cold seller: nothing cached, the fault hits the first fetch.
    let dead = dead_port();
    let cold_origin = if matches!(row.setup, Setup::Refused) {
        Origin::parse(&format!("http://127.0.0.1:{}", dead.port())).unwrap()
    } else {
        origin.clone()
    };
    let cold_source = stack::source(
        &em,
        COLD,
        LwaCredentials::new(em.client_id(), em.client_secret(), COLD_REFRESH),
        SOURCE_TIMEOUT,
        Some(if forwarded {
            clients.unpooled.clone()
        } else {
            clients.plain.clone()
        }),
    );
    let cold_layer = layer(cold_source, cold_origin.clone(), COLD, row.deadlines);
    let cold_upstream = Upstream::new(clients.plain.clone()).with_base(em.origin().to_string());
    let cold = ServiceBuilder::new()
        .layer(cold_layer.recover_stale_tokens())
        .layer(cold_layer.clone())
        .service(cold_upstream.clone());
    let before = em.counters();
    let asked = Instant::now();
    let result = cold.clone().oneshot(get(&cold_origin, ADDRESS)).await;
    let waited = asked.elapsed();
    let deadline = row.deadlines.0;
    seen.waited = format!("{} ms / {} ms", waited.as_millis(), deadline.as_millis());
    if waited > deadline + SLACK {
        problems.push(format!("the request waited {waited:?}, past {deadline:?}"));
    }
    let later = match row.want {
        Want::Timeout { .. } => {
            // After the fetch gave up, its failure is remembered and served at once.
            tokio::time::sleep_until(asked + row.deadlines.1 + Duration::from_millis(100)).await;
            let t = Instant::now();
            let later = cold.clone().oneshot(get(&cold_origin, ADDRESS)).await;
            if t.elapsed() > deadline + SLACK {
                problems.push(format!("the later request waited {:?}", t.elapsed()));
            }
            Some(later)
        }
        _ => None,
    };
    let after = em.counters();
    let token_calls = after.token_calls_for(COLD) - before.token_calls_for(COLD);
    let lwa_calls = after.lwa_calls - before.lwa_calls;
    if !row.token_calls.contains(&token_calls) {
        problems.push(format!(
            "{token_calls} Tokens API calls, expected {:?}",
            row.token_calls
        ));
    }
    if lwa_calls != row.lwa_calls {
        problems.push(format!("{lwa_calls} LWA calls, expected {}", row.lwa_calls));
    }
    let mut error_attempts = None;
    match (&row.want, &result) {
        (Want::Token, Ok(response)) => {
            seen.outcome = format!("token; restricted call HTTP {}", response.status().as_u16());
            if response.status() != StatusCode::OK
                || response
                    .headers()
                    .get("x-emulator-pii")
                    .map(|v| v.as_bytes())
                    != Some(&b"served"[..])
            {
                problems.push(format!("the restricted call was not served: {response:?}"));
            }
        }
        (
            Want::Fail {
                kind,
                status,
                code,
                says,
                cure,
                attempts,
            },
            Err(err),
        ) => match downcast(err) {
            None => problems.push(format!("not a spapi_rdt::error::Error: {err}")),
            Some(e) => {
                seen.outcome = describe(e);
                if !says.is_empty() && e.to_string().contains(says) {
                    let _ = write!(seen.outcome, ": \"…{says}…\"");
                }
                let source = e.source_error();
                error_attempts = source.map(|s| s.attempts());
                if e.kind() != *kind {
                    problems.push(format!("kind {:?}, expected {kind:?}", e.kind()));
                }
                if source.and_then(|s| s.status()).map(|s| s.as_u16()) != *status {
                    problems.push(format!("status of {e}, expected {status:?}"));
                }
                if source.and_then(|s| s.code()) != *code {
                    problems.push(format!("code of {e}, expected {code:?}"));
                }
                if !e.to_string().contains(says) {
                    problems.push(format!("`{e}` does not say `{says}`"));
                }
                if let Some(cure) = cure {
                    let has = source
                        .and_then(|s| s.cure())
                        .is_some_and(|c| c.contains(cure));
                    if !has || !e.to_string().contains(cure) {
                        problems.push(format!("`{e}` does not give the cure `{cure}`"));
                    }
                }
                if error_attempts != Some(*attempts) {
                    problems.push(format!(
                        "attempts() is {error_attempts:?}, expected {attempts}"
                    ));
                }
            }
        },
        (
            Want::Timeout {
                says,
                later: says_later,
            },
            Err(err),
        ) => match downcast(err) {
            None => problems.push(format!("not a spapi_rdt::error::Error: {err}")),
            Some(e) => {
                seen.outcome = describe(e);
                if !e.is_timeout() || !e.to_string().contains(says) {
                    problems.push(format!("`{e}` is not the wait timeout"));
                }
                match later.as_ref().map(|r| r.as_ref().map_err(downcast)) {
                    Some(Err(Some(e))) if e.is_timeout() && e.to_string().contains(says_later) => {
                        let _ = write!(seen.outcome, "; then remembered: fetch timeout");
                    }
                    other => problems.push(format!("the later request got {other:?}")),
                }
            }
        },
        (want, got) => {
            seen.outcome = match got {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.to_string(),
            };
            problems.push(format!("expected {want:?}, got {got:?}"));
        }
    }
    seen.attempts = format!(
        "{} / {token_calls} / {lwa_calls}",
        error_attempts.map_or("-".to_owned(), |a| a.to_string())
    );

    // Warm seller: the fault hits the refresh; the cached token is served meanwhile.
    let mut served = 0;
    for at in WINDOW_SAMPLES {
        tokio::time::sleep_until(t0 + at).await;
        let t = Instant::now();
        let response = warm.clone().oneshot(get(&origin, ADDRESS)).await;
        if t.elapsed() > row.deadlines.0 + SLACK {
            problems.push(format!("a warm request waited {:?}", t.elapsed()));
        }
        let used = upstream.last_token();
        let pii = response
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("x-emulator-pii"))
            .is_some_and(|v| v == "served");
        let same = used.is_some() && used == cached;
        // When the refresh succeeds (a lifetime the source accepts), the new token is served.
        if pii && (same || matches!(row.want, Want::Token)) {
            served += 1;
        } else {
            problems.push(format!(
                "warm request at {at:?} was not served the cached token: {response:?}"
            ));
        }
    }
    // A refresh the first sample started ends by its fetch deadline, failed or not.
    tokio::time::sleep_until(t0 + WINDOW_SAMPLES[0] + row.deadlines.1 + Duration::from_millis(200))
        .await;
    let stats = warm_layer.stats();
    let warm_calls = em.counters().token_calls_for("default").saturating_sub(1);
    seen.warm = format!(
        "{served}/{} served; {} refresh(es), {} failed; {warm_calls} Tokens call(s)",
        WINDOW_SAMPLES.len(),
        stats.refreshes,
        stats.fetch_errors,
    );
    if stats.refreshes == 0 {
        problems.push("no refresh was started in the window".to_owned());
    }
    if !matches!(row.want, Want::Token) && stats.fetch_errors == 0 {
        problems.push("the fault never hit the refresh".to_owned());
    }

    // Rate limit: nobody was throttled (unless throttling is the fault), and no seller made more
    // token calls than the quota allows (a burst of 10, then 1 a second).
    let end = em.counters();
    seen.throttled = end.throttled;
    let is_429 = matches!(&row.setup, Setup::Tokens(Fault::Status(s)) if s.as_u16() == 429);
    if !is_429 && end.throttled != 0 {
        problems.push(format!("{} token calls were throttled", end.throttled));
    }
    let allowed = 10 + started.elapsed().as_secs() + 1;
    for seller in ["default", COLD] {
        if end.token_calls_for(seller) > allowed {
            problems.push(format!(
                "{} token calls for `{seller}`, more than the quota's {allowed}",
                end.token_calls_for(seller)
            ));
        }
    }
    seen
}

/// `<target dir>/fault-matrix.md`, found from this test binary's path (`<target>/debug/deps/`).
fn matrix_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| std::path::PathBuf::from("target"), |p| p.to_path_buf());
    target.join("fault-matrix.md")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix() {
    let rows = rows();
    let clients = Clients::new();
    // Each row on its own task, a few at a time: the rows check their waits against deadlines
    // with a second of slack, and all of them at once on two busy cores left too little of it
    // (the slack stays as it was; fewer rows compete for the cores instead).
    let at_once = Arc::new(tokio::sync::Semaphore::new(ROWS_AT_ONCE));
    let runs = join_all(rows.iter().map(|row| {
        let (row, clients, at_once) = (row.clone(), clients.clone(), Arc::clone(&at_once));
        tokio::spawn(async move {
            let _turn = at_once.acquire_owned().await.unwrap();
            run(row, clients).await
        })
    }));
    // A hang guard far beyond what the rows need (about 8 s each, ROWS_AT_ONCE together).
    let observed: Vec<Observed> = tokio::time::timeout(Duration::from_secs(300), runs)
        .await
        .expect("the fault matrix hung")
        .into_iter()
        .map(|joined| joined.expect("a row panicked"))
        .collect();

    let mut table = String::new();
    table.push_str(
        "| fault | cold request: outcome | attempts: error / Tokens calls / LWA calls | waited / deadline | refresh hit by the fault: cached token | throttled | check |\n",
    );
    table.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (row, seen) in rows.iter().zip(&observed) {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            seen.outcome,
            seen.attempts,
            seen.waited,
            seen.warm,
            seen.throttled,
            if seen.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
        );
    }
    println!("\n{table}");
    let path = matrix_path();
    if let Err(e) = std::fs::write(&path, &table) {
        println!("could not write {}: {e}", path.display());
    } else {
        println!("written to {}", path.display());
    }
    let failures: Vec<String> = rows
        .iter()
        .zip(&observed)
        .filter(|(_, seen)| !seen.problems.is_empty())
        .map(|(row, seen)| format!("{}: {}", row.name, seen.problems.join("; ")))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Polls `done` every 10 ms; panics after 10 s (a hang guard, far beyond what is needed).
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn plain_layer(em: &Emulator, timeout: Duration) -> RestrictedDataTokenLayer {
    let source = stack::source(em, "default", credentials(em, "default"), timeout, None);
    RestrictedDataTokenLayer::builder(source)
        .origins([em.origin()])
        .build()
        .unwrap()
}

/// With the real source, waiters dropped mid-fetch (the leader among them) cancel nothing: the
/// others get the token of the one Tokens API call, and a fetch whose waiters all left still
/// completes and serves the next request from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_waiters_and_the_leader_mid_fetch_cancels_nothing() {
    let em = Emulator::start().await.unwrap();
    let rdt = plain_layer(&em, Duration::from_secs(5));
    let upstream = Upstream::new(http_client());
    let service = ServiceBuilder::new()
        .layer(rdt.clone())
        .service(upstream.clone());
    let origin = em.origin();
    let address = |i: usize| get(&origin, &format!("/orders/v0/orders/{i}/address"));

    // The Tokens API holds the first call for 3 s: time enough, on a busy machine, for the ten
    // waiters to join and for the aborts below to land while it is held (checked, not assumed).
    em.inject(Endpoint::Tokens, Fault::Delay(Duration::from_secs(3)), 1);
    let leader = tokio::spawn(service.clone().oneshot(address(0)));
    wait_until("the token call reached the emulator", || {
        em.counters().token_calls == 1
    })
    .await;
    let waiters: Vec<_> = (1..=10)
        .map(|i| tokio::spawn(service.clone().oneshot(address(i))))
        .collect();
    wait_until("the ten waiters joined the fetch", || {
        rdt.stats().coalesced == 10
    })
    .await;
    // The leader and half the waiters give up while the call is held.
    assert!(!leader.is_finished());
    leader.abort();
    for waiter in &waiters[..5] {
        waiter.abort();
    }
    assert!(leader.await.unwrap_err().is_cancelled());
    let mut served = Vec::new();
    for (i, waiter) in waiters.into_iter().enumerate() {
        match waiter.await {
            Ok(Ok(response)) => {
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(response.headers()["x-emulator-pii"], "served");
                served.push(i);
            }
            Ok(Err(e)) => panic!("waiter {i} failed: {e}"),
            Err(e) => assert!(i < 5 && e.is_cancelled(), "waiter {i}: {e}"),
        }
    }
    assert_eq!(served, [5, 6, 7, 8, 9]);
    let counters = em.counters();
    assert_eq!(counters.token_calls, 1);
    assert_eq!(counters.rdts_issued, 1);
    assert_eq!(rdt.stats().fetches, 1);
    // The five that stayed all sent the one token.
    let tokens = upstream.tokens();
    assert_eq!(tokens.len(), 5);
    assert!(tokens.iter().all(|t| *t == tokens[0]));

    // Every waiter of a fetch leaves: the fetch still completes and its token is cached.
    em.inject(Endpoint::Tokens, Fault::Delay(Duration::from_secs(2)), 1);
    let buyer = |i: usize| get(&origin, &format!("/orders/v0/orders/{i}/buyerInfo"));
    let gone: Vec<_> = (0..4)
        .map(|i| tokio::spawn(service.clone().oneshot(buyer(i))))
        .collect();
    wait_until("the second token call reached the emulator", || {
        em.counters().token_calls == 2
    })
    .await;
    for waiter in &gone {
        assert!(
            !waiter.is_finished(),
            "the held token call ended before its waiters left"
        );
        waiter.abort();
    }
    wait_until("the abandoned fetch got its token", || {
        em.counters().rdts_issued == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = service.clone().oneshot(buyer(9)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Had the fetch been cancelled with its waiters, this request would have made a third call.
    assert_eq!(em.counters().token_calls, 2);
    let stats = rdt.stats();
    assert_eq!(stats.fetches, 2);
    assert_eq!(stats.fetch_errors, 0);
}

/// `Buffer` *inside* the layer (the layer over a buffered HTTP client), which `tests/layer.rs`
/// does not cover. A request that waits for its token holds no buffer slot meanwhile: the service
/// keeps the slot its `poll_ready` reserved for its next call, and the waiting request drives a
/// clone of the buffer to readiness once its token is there. So waiting requests cannot starve the
/// fetch or the unrestricted traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_inside_the_layer() {
    let em = Emulator::start().await.unwrap();
    let rdt = plain_layer(&em, Duration::from_secs(5));
    let upstream = Upstream::new(http_client());
    let service = ServiceBuilder::new()
        .layer(rdt.clone())
        .buffer(1)
        .service(upstream.clone());
    let origin = em.origin();

    // Fifty requests through a one-slot buffer while the token is fetched (held 300 ms).
    em.inject(
        Endpoint::Tokens,
        Fault::Delay(Duration::from_millis(300)),
        1,
    );
    let all = join_all((0..50).map(|i| {
        service
            .clone()
            .oneshot(get(&origin, &format!("/orders/v0/orders/{i}/address")))
    }));
    let results = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("requests through a one-slot buffer hung");
    for r in &results {
        assert_eq!(r.as_ref().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(upstream.tokens().len(), 50);

    // A request waits for its token (held 3 s, under the source's 5 s timeout) without holding
    // the only slot...
    em.inject(Endpoint::Tokens, Fault::Delay(Duration::from_secs(3)), 1);
    let waiter = tokio::spawn(
        service
            .clone()
            .oneshot(get(&origin, "/orders/v0/orders/1/buyerInfo")),
    );
    wait_until("the second token call reached the emulator", || {
        em.counters().token_calls == 2
    })
    .await;
    // ...so an unrestricted request is served meanwhile...
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        service
            .clone()
            .oneshot(get(&origin, "/sellers/v1/marketplaceParticipations")),
    )
    .await
    .expect("the unrestricted request hung")
    .unwrap();
    assert!(!waiter.is_finished(), "served only after the waiter");
    // Sent without any token, as an unrestricted call is: the emulator wants an LWA token.
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream.sent.lock().unwrap().last().unwrap().token, None);
    // ...and the waiter takes the slot once its token is there.
    let response = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter never got the slot")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

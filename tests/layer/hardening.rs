//! Hardening: no answer from a token source and no setting makes the layer panic, lock a seller out
//! for long, or leak a secret.

use crate::support::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::amazon::{
    Amazon, Endpoint, HeaderValue, RETRY_AFTER, errors, json, json_reply,
};
use common::{echo_token, get};
use http::StatusCode;
use proptest::prelude::*;
use spapi_rdt::{
    BoxError, IssuedToken, RestrictedDataTokenLayer, SecretToken, SellerId, TokenQuota,
    TokenRequest, error::BuildError, error::Error, error::SourceError, source_fn,
};
use tower::{Layer, ServiceExt};

const ADDRESS: &str = "/orders/v0/orders/1/address";

async fn call(layer: &RestrictedDataTokenLayer, path: &str) -> Result<String, BoxError> {
    layer.layer(echo_token()).oneshot(get(path)).await
}

fn layer_error(result: Result<String, BoxError>) -> Error {
    layer_error_of(result.unwrap_err())
}

/// The layer's error inside `err`; any other error fails the test.
fn layer_error_of(err: BoxError) -> Error {
    match err.downcast_ref::<Error>() {
        Some(e) => e.clone(),
        None => panic!("not the layer's error: {err}"),
    }
}

/// A source that fails with a 429 asking to wait `retry_after`, and counts its calls.
fn throttled(retry_after: Duration) -> (impl spapi_rdt::TokenSource, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            Err::<IssuedToken, _>(
                SourceError::transient("QuotaExceeded")
                    .with_status(StatusCode::TOO_MANY_REQUESTS)
                    .with_retry_after(retry_after),
            )
        }
    });
    (source, calls)
}

#[tokio::test]
async fn a_429_with_a_retry_after_of_u64_max_is_remembered_not_a_panic() {
    let server = Amazon::start().await;
    server.reply(
        Endpoint::Tokens,
        errors(429, "QuotaExceeded", "You exceeded your quota").header(
            RETRY_AFTER,
            HeaderValue::from_static("18446744073709551615"),
        ),
    );
    let layer = RestrictedDataTokenLayer::builder(server.source())
        .allow_origin(server.origin())
        .max_attempts(1)
        .build()
        .unwrap();
    let url = |path: &str| server.emulator.url(path);
    let request = || http::Request::get(url(ADDRESS)).body(()).unwrap();
    let first = layer_error(layer.layer(echo_token()).oneshot(request()).await);
    let source = first
        .source_error()
        .unwrap_or_else(|| panic!("the fetch did not fail with the source's error: {first}"));
    assert_eq!(source.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    // The failure is remembered: the next request does not call the Tokens API again.
    let second = layer_error(layer.layer(echo_token()).oneshot(request()).await);
    assert_eq!(
        second.source_error().and_then(SourceError::status),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(server.token_calls(), 1);
    assert_eq!(layer.stats().remembered_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_capped_by_the_transient_backoff_maximum() {
    let (source, calls) = throttled(Duration::from_secs(99_999_999_999));
    let layer = RestrictedDataTokenLayer::builder(source)
        .max_attempts(1)
        .transient_error_backoff(Duration::from_secs(1), Duration::from_secs(60))
        .build()
        .unwrap();
    layer_error(call(&layer, ADDRESS).await);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(59)).await;
    layer_error(call(&layer, ADDRESS).await);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "remembered within the cap");
    tokio::time::advance(Duration::from_secs(2)).await;
    layer_error(call(&layer, ADDRESS).await);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "asked again past the cap");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_duration_max_from_a_custom_source_does_not_panic() {
    let (source, calls) = throttled(Duration::MAX);
    let layer = RestrictedDataTokenLayer::builder(source).build().unwrap();
    let err = layer_error(call(&layer, ADDRESS).await);
    assert!(err.source_error().is_some(), "{err}");
    let again = layer_error(call(&layer, ADDRESS).await);
    assert!(again.source_error().is_some(), "{again}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A source whose tokens live `lifetime`, counting its calls.
fn lasting(lifetime: Duration) -> (impl spapi_rdt::TokenSource, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let token = SecretToken::new(format!("Atz.sprdt|t-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, lifetime))
        }
    });
    (source, calls)
}

#[tokio::test(start_paused = true)]
async fn a_lifetime_of_duration_max_is_capped_at_a_day() {
    let (source, calls) = lasting(Duration::MAX);
    let layer = RestrictedDataTokenLayer::builder(source).build().unwrap();
    assert_eq!(call(&layer, ADDRESS).await.unwrap(), "Atz.sprdt|t-1");
    assert_eq!(call(&layer, ADDRESS).await.unwrap(), "Atz.sprdt|t-1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(24 * 3600 + 1)).await;
    assert_eq!(call(&layer, ADDRESS).await.unwrap(), "Atz.sprdt|t-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

fn setting_error(result: Result<RestrictedDataTokenLayer, BuildError>) -> &'static str {
    match result {
        Err(BuildError::Setting { name, .. }) => name,
        Err(other) => panic!("not a setting error: {other}"),
        Ok(_) => panic!("built"),
    }
}

#[test]
fn build_names_the_setting_it_cannot_honour() {
    let (source, _) = lasting(Duration::from_secs(3600));
    let source = Arc::new(source);
    let builder = || RestrictedDataTokenLayer::builder(Arc::clone(&source));
    assert_eq!(
        setting_error(builder().rate_margin(Duration::MAX).build()),
        "rate_margin"
    );
    let glacial = TokenQuota::new(1e-30, 1).unwrap();
    assert_eq!(setting_error(builder().quota(glacial).build()), "quota");
    let wide = TokenQuota::new(1.0 / (200.0 * 86_400.0), u32::MAX).unwrap();
    assert_eq!(setting_error(builder().quota(wide).build()), "quota");
    assert!(
        builder()
            .quota(TokenQuota::new(1e12, u32::MAX).unwrap())
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn duration_max_settings_do_not_panic() {
    // Every call fails once, then works.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n % 2 == 1 {
                return Err(SourceError::transient("try again"));
            }
            let token = SecretToken::new(format!("Atz.sprdt|t-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, Duration::MAX))
        }
    });
    let layer = RestrictedDataTokenLayer::builder(source)
        .permanent_error_ttl(Duration::MAX)
        .transient_error_backoff(Duration::MAX, Duration::MAX)
        .retry_base(Duration::MAX)
        .fetch_timeout(Duration::MAX)
        .wait_timeout(Duration::MAX)
        .refresh_ahead(Duration::MAX)
        .expiry_margin(Duration::MAX)
        .refresh_jitter(Duration::MAX)
        .bundle_recheck(Duration::MAX)
        .build()
        .unwrap();
    // The first call fails; the retry pause is far past the fetch deadline, so the fetch fails.
    match call(&layer, ADDRESS).await {
        Ok(token) => assert_eq!(token, "Atz.sprdt|t-2"),
        Err(err) => {
            let err = err.downcast_ref::<Error>().unwrap();
            assert!(
                err.source_error().is_some(),
                "not the source's error: {err}"
            );
        }
    }
}

/// `at` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[tokio::test]
async fn retry_after_is_read_in_both_forms_and_garbage_is_ignored() {
    let server = Amazon::start().await;
    let source = server.source();
    let in_ten_minutes = std::time::SystemTime::now() + Duration::from_secs(600);
    for (value, expected) in [
        ("7".to_owned(), Some(7..=7)),
        (http_date(in_ten_minutes), Some(590..=600)),
        ("soon".to_owned(), None),
        ("18446744073709551616".to_owned(), None),
    ] {
        server.reply(
            Endpoint::Tokens,
            errors(429, "QuotaExceeded", "slow down")
                .header(RETRY_AFTER, HeaderValue::from_str(&value).unwrap()),
        );
        let err = spapi_rdt::TokenSource::fetch(&source, server.request())
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{value}");
        let seconds = err.retry_after().map(|d| d.as_secs());
        match expected {
            Some(range) => assert!(range.contains(&seconds.unwrap()), "{value}: {seconds:?}"),
            None => assert_eq!(seconds, None, "{value}"),
        }
    }
}

#[tokio::test]
async fn a_secret_straddling_the_message_limit_is_scrubbed_whole() {
    let server = Amazon::start().await;
    let secret = server.emulator.client_secret().to_owned();
    for pad in 480..500 {
        server.reply(
            Endpoint::Lwa,
            json_reply(
                401,
                json!({"error": "invalid_client",
                       "error_description": format!("{}{secret}", "x".repeat(pad))}),
            ),
        );
    }
    let source = server.source();
    let prefix = &secret[..5];
    for _ in 480..500 {
        let err = spapi_rdt::TokenSource::fetch(&source, server.request())
            .await
            .unwrap_err();
        assert!(
            !err.message().contains(prefix),
            "part of the secret leaked: {}",
            err.message()
        );
    }
}

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(3600)),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(Duration::MAX),
    ]
}

fn rates() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1e-30),
        Just(1e-9),
        Just(1e-6),
        Just(1.0),
        Just(1e6),
        Just(1e12),
        Just(1e300),
    ]
}

#[derive(Debug, Clone)]
struct Extreme {
    rate: f64,
    burst: u32,
    durations: [Duration; 13],
    attempts: u32,
    lifetime: Duration,
    fail_first: bool,
}

fn extremes() -> impl Strategy<Value = Extreme> {
    (
        rates(),
        prop_oneof![Just(1u32), Just(10), Just(u32::MAX)],
        proptest::array::uniform13(durations()),
        prop_oneof![Just(0u32), Just(1), Just(3), Just(u32::MAX)],
        durations(),
        any::<bool>(),
    )
        .prop_map(
            |(rate, burst, durations, attempts, lifetime, fail_first)| Extreme {
                rate,
                burst,
                durations,
                attempts,
                lifetime,
                fail_first,
            },
        )
}

/// What [`build_and_call`] saw: the builder's refusal, or each request's outcome (`None` when the
/// test's own timeout ended it).
type Outcomes = Result<Vec<Option<Result<String, Error>>>, BuildError>;

/// Builds a layer from `e` and makes two requests on paused time: nothing may panic, and every error
/// is the layer's.
fn build_and_call(e: &Extreme) -> Outcomes {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (lifetime, fail_first) = (e.lifetime, e.fail_first);
    let calls = Arc::new(AtomicUsize::new(0));
    let source = source_fn(move |_request: TokenRequest| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if fail_first && n == 1 {
                return Err(SourceError::transient("first call fails").with_retry_after(lifetime));
            }
            let token = SecretToken::new(format!("Atz.sprdt|t-{n}")).unwrap();
            Ok::<_, SourceError>(IssuedToken::new(token, lifetime))
        }
    });
    let d = e.durations;
    let mut builder = RestrictedDataTokenLayer::builder(source)
        .rate_margin(d[0])
        .wait_timeout(d[1])
        .fetch_timeout(d[2])
        .retry_base(d[3])
        .refresh_ahead(d[4])
        .expiry_margin(d[5])
        .refresh_jitter(d[6])
        .permanent_error_ttl(d[7])
        .transient_error_backoff(d[8], d[9])
        .bundle_recheck(d[10])
        .max_attempts(e.attempts);
    if let Some(quota) = TokenQuota::new(e.rate, e.burst) {
        builder = builder.quota(quota);
    }
    let layer = builder.build()?;
    Ok(runtime.block_on(async {
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let result =
                tokio::time::timeout(d[11].max(Duration::from_secs(1)), call(&layer, ADDRESS))
                    .await;
            outcomes.push(result.ok().map(|r| r.map_err(layer_error_of)));
            tokio::time::advance(d[12].min(Duration::from_secs(86_400 * 365))).await;
        }
        outcomes
    }))
}

/// Runs [`build_and_call`] on its own thread and ends the whole test process, naming the case, if
/// it has not finished after a minute of wall-clock time. A spinning layer never lets paused time
/// advance, so only the wall clock can catch it. This guards against hangs; it is no timing target
/// (a case takes milliseconds).
fn build_and_call_or_exit(e: &Extreme) -> Outcomes {
    const PATIENCE: Duration = Duration::from_secs(60);
    let (done, finished) = std::sync::mpsc::channel();
    let case = e.clone();
    let worker = std::thread::spawn(move || {
        let outcomes = build_and_call(&case);
        let _ = done.send(());
        outcomes
    });
    match finished.recv_timeout(PATIENCE) {
        // Finished, or panicked (the sender dropped): join to pass a panic on to proptest.
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(outcomes) => outcomes,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // The spinning thread cannot be stopped, and shrinking would spin again: stop here.
            eprintln!(
                "no_extreme_setting_panics: this case did not finish within {PATIENCE:?}: {e:?}"
            );
            std::process::exit(101);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn no_extreme_setting_panics(e in extremes()) {
        let _ = build_and_call_or_exit(&e);
    }
}

/// The case that made `no_extreme_setting_panics` spin (proptest seed 4): a quota whose one call
/// refills in 31.7 years, while the limiter's instants saturated 30 years after its start, so
/// governor kept refusing with a wait of zero on paused time; a token source whose tokens live no
/// time at all; and no bound on attempts.
fn seed_4_case() -> Extreme {
    let half_max = Duration::from_secs(u64::MAX / 2);
    Extreme {
        rate: 1e-9,
        burst: 1,
        durations: [
            Duration::from_millis(1),
            half_max,
            Duration::MAX,
            Duration::ZERO,
            Duration::ZERO,
            half_max,
            Duration::MAX,
            Duration::from_millis(1),
            half_max,
            Duration::ZERO,
            Duration::ZERO,
            Duration::MAX,
            Duration::from_secs(1),
        ],
        attempts: u32::MAX,
        lifetime: Duration::ZERO,
        fail_first: false,
    }
}

#[test]
fn the_seed_4_case_is_refused_for_its_attempts() {
    let err = build_and_call_or_exit(&seed_4_case()).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Setting {
                name: "max_attempts",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_seed_4_case_with_bounded_attempts_ends_with_typed_errors() {
    let case = Extreme {
        attempts: 3,
        ..seed_4_case()
    };
    let outcomes = build_and_call_or_exit(&case).unwrap();
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        // The token that lives no time is refused; the retry would wait 31.7 years for the quota,
        // past the fetch's 30-year horizon, so the fetch ends at once, refused by the rate limit.
        let err = outcome
            .expect("ended before the test's timeout")
            .unwrap_err();
        assert!(err.is_rate_limited(), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn require_seller_refuses_a_restricted_request_without_a_seller() {
    let (source, calls) = lasting(Duration::from_secs(3600));
    let layer = RestrictedDataTokenLayer::builder(source)
        .require_seller(true)
        .build()
        .unwrap();
    let err = layer_error(call(&layer, ADDRESS).await);
    assert!(err.is_missing_seller(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Unrestricted requests need no seller.
    assert_eq!(
        call(&layer, "/sellers/v1/marketplaceParticipations")
            .await
            .unwrap(),
        "none"
    );
    let mut request = get(ADDRESS);
    request.extensions_mut().insert(SellerId::new("A1"));
    let token = layer.layer(echo_token()).oneshot(request).await.unwrap();
    assert_eq!(token, "Atz.sprdt|t-1");
    // Without the setting, the default seller is used as before.
    let (source, _) = lasting(Duration::from_secs(3600));
    let open = RestrictedDataTokenLayer::new(source);
    assert_eq!(call(&open, ADDRESS).await.unwrap(), "Atz.sprdt|t-1");
}

#[tokio::test(start_paused = true)]
async fn a_token_that_lives_under_a_second_fails_its_fetch_a_bounded_number_of_times() {
    for lifetime in [Duration::ZERO, Duration::from_millis(999)] {
        let (source, calls) = lasting(lifetime);
        let layer = RestrictedDataTokenLayer::builder(source).build().unwrap();
        let err = layer_error(call(&layer, ADDRESS).await);
        let source_error = err.source_error().expect("the source's error");
        assert_eq!(source_error.kind(), spapi_rdt::error::ErrorKind::Transient);
        assert!(source_error.message().contains("less than the 1s"), "{err}");
        // The default three attempts, then the failure is remembered: no call for the next request.
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{lifetime:?}");
        layer_error(call(&layer, ADDRESS).await);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{lifetime:?}");
    }
    // One second is enough.
    let (source, calls) = lasting(Duration::from_secs(1));
    let layer = RestrictedDataTokenLayer::builder(source).build().unwrap();
    assert_eq!(call(&layer, ADDRESS).await.unwrap(), "Atz.sprdt|t-1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn max_attempts_is_bounded() {
    let (source, _) = lasting(Duration::from_secs(3600));
    let builder = RestrictedDataTokenLayer::builder(source);
    let max = spapi_rdt::RestrictedDataTokenLayerBuilder::MAX_ATTEMPTS;
    assert!(builder.max_attempts(max).build().is_ok());
    let (source, _) = lasting(Duration::from_secs(3600));
    let err = RestrictedDataTokenLayer::builder(source)
        .max_attempts(max + 1)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

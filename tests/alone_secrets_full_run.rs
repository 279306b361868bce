//! No secret shows in any output over a full run against the emulator: `SpApiTokenSource` and
//! the layer (tower and reqwest-middleware front ends) through successes, 403 recovery, Tokens API
//! faults and LWA failures. Everything is captured: every tracing event at TRACE level from every
//! thread (the `log` records of reqwest included), and the Debug and Display of every error (with
//! its source chain), of the requests the HTTP client was handed, and of the public values.
//!
//! The secrets come from the emulator: refresh tokens and the client secret from its
//! configuration, the RDTs from what the layer injected (sniffed by the service below it), the
//! LWA access tokens from the source (`lwa_access_token`) and `Emulator::issue_lwa_token`. On top
//! of the exact values, no output may hold a token prefix (`Atz.sprdt|`, `Atza|`, `Atzr|`) at all,
//! which covers tokens the run never saw (those in answers the source rejected).
//!
//! This file holds one test on purpose: tracing caches each call site's interest process-wide, and
//! the subscriber is global so that events from runtime worker threads are captured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;
use support::capture;
use support::stack;

use capture::Captured;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, SecretToken, SellerId, SpApiTokenSource,
    TokenQuota,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use stack::Upstream;
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::util::SubscriberInitExt;

const SELLER_B: &str = "A2EUQ1WTGCTBG2";
/// Sellers whose only calls meet LWA failures: the source remembers a seller's LWA failure for a
/// while, so each failure gets a seller of its own.
const LWA_FAULT_SELLERS: [&str; 5] = [
    "LWA-FAULT-1",
    "LWA-FAULT-2",
    "LWA-FAULT-3",
    "LWA-FAULT-4",
    "REAUTHORIZED",
];

/// Everything shown during the run.
#[derive(Clone, Default)]
struct Shown(Arc<Mutex<Vec<String>>>);

impl Shown {
    fn push(&self, text: String) {
        self.0.lock().unwrap().push(text);
    }

    /// An error's Display and Debug, and those of every error in its source chain.
    fn error(&self, err: &(dyn std::error::Error + 'static)) {
        let mut next = Some(err);
        while let Some(e) = next {
            self.push(format!("{e} | {e:?}"));
            next = e.source();
        }
    }
}

/// A restricted request (method, path) for each operation of the catalogue with a generic path,
/// Orders v0 (the successes' operations) left out: each needs a fetch of its own.
fn operation_paths(layer: &RestrictedDataTokenLayer) -> Vec<(http::Method, String)> {
    layer
        .matcher()
        .catalog()
        .operations()
        .iter()
        .filter(|op| {
            op.path_kind() == spapi_rdt::catalog::PathKind::Generic
                && !op.template().starts_with("/orders/v0/")
        })
        .map(|op| {
            let path = op
                .template()
                .split('/')
                .map(|s| if s.starts_with('{') { "902-0000001" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            (op.method().clone(), path)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_debug_display_or_errors_over_a_full_run() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish()
        .try_init()
        .expect("the only subscriber of this binary");

    let mut config = EmulatorConfig::default()
        .seller(SELLER_B, "Atzr|seller-b-first-authorization")
        .token_quota(100.0, 100)
        .lwa_lifetime(Duration::from_secs(3600));
    for (n, seller) in LWA_FAULT_SELLERS.iter().enumerate() {
        config = config.seller(*seller, format!("Atzr|lwa-fault-seller-{n}"));
    }
    let em = Emulator::start_with(config).await.unwrap();
    let mut refresh_tokens: Vec<String> =
        em.config().sellers().map(|(_, r)| r.to_owned()).collect();
    let client_secret = em.client_secret().to_owned();
    let shown = Shown::default();

    let mut source = SpApiTokenSource::builder()
        .credentials(stack::credentials(&em, "default"))
        .seller(SellerId::new(SELLER_B), stack::credentials(&em, SELLER_B));
    for seller in LWA_FAULT_SELLERS {
        source = source.seller(SellerId::new(seller), stack::credentials(&em, seller));
    }
    let source = source
        .lwa_url(em.lwa_url())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let rdt = RestrictedDataTokenLayer::builder(source.clone())
        .origins([em.origin()])
        .quota(TokenQuota::new(100.0, 100).unwrap())
        .max_attempts(2)
        .retry_base(Duration::from_millis(20))
        .wait_timeout(Duration::from_secs(3))
        .fetch_timeout(Duration::from_secs(2))
        .transient_error_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .permanent_error_ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    let upstream = Upstream::new(stack::http_client());
    // The service below the layer shows the request it was handed (with the injected header).
    let seen = shown.clone();
    let inner = upstream.clone();
    let below = tower::service_fn(move |request: http::Request<String>| {
        seen.push(format!("{request:?}"));
        inner.clone().oneshot(request)
    });
    let client = ServiceBuilder::new()
        .layer(rdt.recover_stale_tokens())
        .layer(rdt.clone())
        .service(below);
    let middleware = reqwest_middleware::ClientBuilder::new(stack::http_client())
        .with(rdt.middleware())
        .build();
    let paths = operation_paths(&rdt);
    assert!(paths.len() >= 17, "{} operations", paths.len());
    let mut next_path = paths.iter();
    let origin = em.origin();

    let call = |(method, path): (&http::Method, &str), seller: &str| {
        let mut request = stack::get(&origin, path);
        *request.method_mut() = method.clone();
        request.extensions_mut().insert(SellerId::new(seller));
        let client = client.clone();
        let shown = shown.clone();
        async move {
            match client.oneshot(request).await {
                Ok(response) => {
                    shown.push(format!("{response:?}"));
                    Some(response.status())
                }
                Err(err) => {
                    let err: BoxError = err;
                    shown.error(&*err);
                    None
                }
            }
        }
    };

    // Successes, for both sellers, through both front ends.
    for seller in ["default", SELLER_B] {
        for path in [
            "/orders/v0/orders/902-1/address",
            "/orders/v0/orders/902-2/address",
            "/orders/v0/orders/902-1/buyerInfo",
            "/orders/v0/orders/902-1",
        ] {
            assert_eq!(
                call((&http::Method::GET, path), seller).await,
                Some(StatusCode::OK),
                "{path}"
            );
        }
    }
    let response = middleware
        .get(em.url("/orders/v0/orders/902-3/address"))
        .send()
        .await
        .unwrap();
    shown.push(format!("{response:?}"));
    assert_eq!(response.status(), StatusCode::OK);

    // 403 recovery: the emulator forgets every RDT; the next calls get new ones.
    em.revoke_rdts();
    assert_eq!(
        call(
            (&http::Method::GET, "/orders/v0/orders/902-1/address"),
            "default"
        )
        .await,
        Some(StatusCode::OK)
    );
    em.revoke_rdts();
    let response = middleware
        .get(em.url("/orders/v0/orders/902-4/address"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(rdt.stats().invalidations >= 2);

    // Tokens API faults, each on a fresh operation (a fetch), for both attempts.
    let tokens_faults = [
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Fault::Status(StatusCode::BAD_REQUEST),
        Fault::Status(StatusCode::FORBIDDEN),
        Fault::MalformedBody,
        Fault::MissingFields,
        Fault::ExpiresIn(Some(0)),
        Fault::ExpiresIn(Some(-1)),
        Fault::DropConnection,
        Fault::Delay(Duration::from_secs(1)),
    ];
    for fault in tokens_faults {
        em.clear_faults();
        em.inject(Endpoint::Tokens, fault.clone(), 4);
        let (method, path) = next_path.next().unwrap();
        assert_eq!(call((method, path), "default").await, None, "{fault:?}");
    }
    em.clear_faults();
    // Through the middleware: its error type.
    em.inject(
        Endpoint::Tokens,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        4,
    );
    let (method, path) = next_path.next().unwrap();
    let err = middleware
        .request(method.clone(), em.url(path))
        .send()
        .await
        .unwrap_err();
    shown.error(&err);
    em.clear_faults();

    // LWA failures, each for a seller with no LWA token yet, so the source asks LWA.
    let lwa_faults = [
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Fault::Status(StatusCode::UNAUTHORIZED),
        Fault::MalformedBody,
        Fault::ExpiresIn(Some(0)),
    ];
    for (fault, seller) in lwa_faults.into_iter().zip(LWA_FAULT_SELLERS) {
        let lwa_calls = em.requests(Endpoint::Lwa).len();
        em.inject(Endpoint::Lwa, fault.clone(), 4);
        let (method, path) = next_path.next().unwrap();
        assert_eq!(call((method, path), seller).await, None, "{fault:?}");
        assert!(
            em.requests(Endpoint::Lwa).len() > lwa_calls,
            "{fault:?} was met"
        );
        em.clear_faults();
    }
    // A seller authorizes the application again: the refresh token the source holds is void.
    let reauthorized = LWA_FAULT_SELLERS[4];
    em.add_seller(reauthorized, "Atzr|reauthorized-second-authorization");
    refresh_tokens.push(em.refresh_token(reauthorized).unwrap());
    let (method, path) = next_path.next().unwrap();
    assert_eq!(call((method, path), reauthorized).await, None);

    // Everything works again for the first seller.
    let (method, path) = next_path.next().unwrap();
    assert!(call((method, path), "default").await.is_some());

    // The LWA access tokens: the source's current ones, and one the emulator issues directly.
    let mut lwa_tokens = Vec::new();
    let current = source.lwa_access_token(&SellerId::default()).await.unwrap();
    shown.push(format!("{current:?}"));
    lwa_tokens.push(current.expose().to_owned());
    match source.lwa_access_token(&SellerId::new(SELLER_B)).await {
        Ok(token) => lwa_tokens.push(token.expose().to_owned()),
        Err(err) => shown.error(&err),
    }
    let direct = em.issue_lwa_token("default");
    let unrestricted = stack::http_client()
        .get(em.url("/sellers/v1/marketplaceParticipations"))
        .header("x-amz-access-token", &direct)
        .send()
        .await
        .unwrap();
    assert_eq!(unrestricted.status(), StatusCode::OK);
    lwa_tokens.push(direct);

    // Debug of the public values.
    let credentials = LwaCredentials::new(em.client_id(), &client_secret, &refresh_tokens[0]);
    shown.push(format!(
        "{rdt:?} {:?} {source:?} {credentials:?} {em:?} {:?} {:?} {middleware:?}",
        rdt.stats(),
        em.config(),
        SecretToken::new(&lwa_tokens[0]).unwrap(),
    ));

    // Let background refreshes and their logs finish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rdts = upstream.tokens();
    assert!(rdts.len() >= 10, "the run sent tokens: {}", rdts.len());
    assert!(rdts.iter().all(|t| t.starts_with("Atz.sprdt|")));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // The capture saw the whole story.
    for expected in [
        "token cache hit",
        "token fetched",
        "token fetch failed",
        "LWA token refresh",
        "Tokens API call",
        "403 with a cached token",
        "reqwest",
    ] {
        assert!(logs.contains(expected), "no `{expected}` in the log");
    }
    let everything = format!("{}\n{logs}", shown.0.lock().unwrap().join("\n"));
    let mut secrets: Vec<(&str, &str)> = Vec::new();
    secrets.push(("client secret", &client_secret));
    secrets.extend(refresh_tokens.iter().map(|t| ("refresh token", t.as_str())));
    secrets.extend(rdts.iter().map(|t| ("RDT", t.as_str())));
    secrets.extend(lwa_tokens.iter().map(|t| ("LWA access token", t.as_str())));
    // The random part alone, in case a token were shown cut after its prefix.
    let tails: Vec<String> = rdts
        .iter()
        .chain(&lwa_tokens)
        .filter_map(|t| t.split_once('|').map(|(_, tail)| tail[..24].to_owned()))
        .collect();
    secrets.extend(tails.iter().map(|t| ("token body", t.as_str())));
    secrets.extend([
        ("RDT prefix", "Atz.sprdt|"),
        ("LWA prefix", "Atza|"),
        ("refresh prefix", "Atzr|"),
        ("client secret stem", "emulator-client-secret"),
    ]);
    for (what, secret) in &secrets {
        if let Some(at) = everything.find(secret) {
            let from = everything[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!(
                "a {what} leaked:\n…{}…",
                &everything[from..(at + 40).min(everything.len())]
            );
        }
    }
    println!(
        "checked {} secrets over {} bytes of logs and {} shown values",
        secrets.len(),
        logs.len(),
        shown.0.lock().unwrap().len()
    );
}

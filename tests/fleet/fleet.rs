//! Fleet mode on a real `redis-server` and the SP-API emulator.
//!
//! Each "replica" is what a separate process would hold: its own layer (cache, limiter, counters),
//! its own `SpApiTokenSource` with its own HTTP client, and its own `RedisFleet` connection. They
//! run in this one test process (not separate OS processes) and share only Redis and the emulator.
//!
//! The Redis comes from `SPAPI_RDT_REDIS_URL` or a `redis-server` the tests start; without either
//! they are skipped with one line on stderr, or fail under `SPAPI_RDT_REQUIRE_REDIS=1` (see
//! `tests/redis_server`).
#![cfg(all(feature = "redis", feature = "reqwest"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, join_all};
use http::StatusCode;
use spapi_rdt::catalog::DataElements;
use spapi_rdt::control::{RestrictedReport, Strategy};
use spapi_rdt::fleet::{EncryptionKey, Fleet, FleetKey, RedisFleet};
use spapi_rdt::{
    BoxError, LwaCredentials, RestrictedDataTokenLayer, RestrictedResource, SellerId,
    SpApiTokenSource, TokenQuota, TokenRequest,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tower::{Layer, ServiceExt};

use crate::support::redis_server;

use redis_server::Redis;

// ---------------------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------------------

pub(super) const SELLERS: [&str; 3] = ["default", "A2EUQ1WTGCTBG2", "A1PA6795UKMFR9"];
pub(super) const KEY: [u8; 32] = [0x5a; 32];

pub(super) fn emulator_config() -> EmulatorConfig {
    EmulatorConfig::default()
        .seller(SELLERS[1], "Atzr|second")
        .seller(SELLERS[2], "Atzr|third")
}

pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One replica: its own HTTP client, token source, Redis connection and layer.
pub(super) struct Replica {
    pub(super) layer: RestrictedDataTokenLayer,
    pub(super) redis: RedisFleet,
    client: reqwest::Client,
}

pub(super) struct Options {
    pub(super) key: [u8; 32],
    pub(super) quota: TokenQuota,
    pub(super) strategy: Strategy,
    pub(super) fleet: bool,
    pub(super) tune: fn(Fleet) -> Fleet,
    /// `RedisFleetBuilder::command_timeout`.
    pub(super) command_timeout: Duration,
    /// `RedisFleetBuilder::ca_certificate`.
    pub(super) ca_pem: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            key: KEY,
            quota: TokenQuota::default(),
            strategy: Strategy::default(),
            fleet: true,
            tune: |f| f,
            command_timeout: Duration::from_millis(200),
            ca_pem: None,
        }
    }
}

/// Options for the load tests, which assert that no replica fell back: Redis commands and fleet
/// calls may take 5 s instead of the default 200 ms. With a thousand tasks on two busy cores (the rest of the suite
/// and other builds beside it) a call over the Unix socket sometimes took longer than 200 ms, and
/// the replica rightly went on alone; falling back is tested on its own, with Redis stopped.
pub(super) fn patient() -> Options {
    Options {
        tune: |f| f.call_timeout(Duration::from_secs(5)),
        command_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

pub(super) fn replica(em: &Emulator, redis: &Redis, options: Options) -> Replica {
    replica_at(em, redis.url(), redis.prefix(), false, options)
}

/// A replica on the Redis at `url` (a Redis Cluster node when `cluster`), writing under `prefix`.
pub(super) fn replica_at(
    em: &Emulator,
    url: &str,
    prefix: &str,
    cluster: bool,
    options: Options,
) -> Replica {
    let client = http_client();
    let mut source = SpApiTokenSource::builder()
        .lwa_url(em.lwa_url())
        .http_client(client.clone());
    for seller in SELLERS {
        let credentials = LwaCredentials::new(
            em.client_id(),
            em.client_secret(),
            em.refresh_token(seller).unwrap(),
        );
        source = source.seller(SellerId::new(seller), credentials);
    }
    let mut redis_fleet = RedisFleet::builder(url)
        .encryption_key(EncryptionKey::from_bytes(options.key))
        .key_prefix(prefix)
        .cluster(cluster)
        .command_timeout(options.command_timeout);
    if let Some(pem) = options.ca_pem {
        redis_fleet = redis_fleet.ca_certificate(pem);
    }
    let redis_fleet = redis_fleet.build().unwrap();
    let mut builder = RestrictedDataTokenLayer::builder(source.build().unwrap())
        .allow_origin(em.origin())
        .quota(options.quota)
        .strategy(options.strategy);
    if options.fleet {
        builder = builder.fleet((options.tune)(Fleet::from(redis_fleet.clone())));
    }
    Replica {
        layer: builder.build().unwrap(),
        redis: redis_fleet,
        client,
    }
}

/// What the emulator answered a restricted call.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    seller: Option<String>,
    pii: Option<String>,
}

impl Replica {
    /// Sends `request` through the layer to the emulator.
    ///
    /// Boxed as a `Send` future by name: left to inference, a spawned task that awaits it fails the
    /// compiler's higher-ranked `Send` check.
    fn send(&self, request: http::Request<()>) -> BoxFuture<'_, Result<Answer, BoxError>> {
        let client = self.client.clone();
        let inner = tower::service_fn(move |request: http::Request<()>| {
            let client = client.clone();
            async move {
                let mut call = client.request(request.method().clone(), request.uri().to_string());
                for (name, value) in request.headers() {
                    call = call.header(name, value);
                }
                let response = call.send().await?;
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Ok::<_, BoxError>(Answer {
                    status: response.status(),
                    seller: header("x-emulator-seller"),
                    pii: header("x-emulator-pii"),
                })
            }
        });
        Box::pin(self.layer.layer(inner).oneshot(request))
    }

    /// The token the layer would send with `request` (nothing is sent anywhere).
    pub(super) async fn token(&self, request: http::Request<()>) -> Result<String, BoxError> {
        let echo = tower::service_fn(|request: http::Request<()>| async move {
            let token = request
                .headers()
                .get("x-amz-access-token")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "none".to_owned());
            Ok::<_, BoxError>(token)
        });
        self.layer.layer(echo).oneshot(request).await
    }
}

pub(super) fn request(em: &Emulator, seller: &str, path: &str) -> http::Request<()> {
    let mut request = http::Request::get(em.url(path)).body(()).unwrap();
    request.extensions_mut().insert(SellerId::new(seller));
    request
}

/// A restricted report document: each id is a token of its own (the specific path).
fn report(em: &Emulator, seller: &str, id: &str) -> http::Request<()> {
    let mut request = request(em, seller, &format!("/reports/2021-06-30/documents/{id}"));
    request.extensions_mut().insert(RestrictedReport);
    request
}

/// The token request the layer makes for getOrderAddress of `seller`.
fn address_token_request(em: &Emulator, seller: &str) -> TokenRequest {
    TokenRequest::new(
        SellerId::new(seller),
        em.origin(),
        [RestrictedResource::new(
            http::Method::GET,
            "/orders/v0/orders/{orderId}/address",
            DataElements::NONE,
        )],
    )
}

pub(super) fn total(replicas: &[Replica], f: fn(&spapi_rdt::Stats) -> u64) -> u64 {
    replicas.iter().map(|r| f(&r.layer.stats())).sum()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_across_four_replicas_make_one_token_call_per_key() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let replicas: Arc<Vec<Replica>> =
        Arc::new((0..4).map(|_| replica(&em, &redis, patient())).collect());
    let paths = [
        "/orders/v0/orders/{}/address",
        "/orders/v0/orders/{}/buyerInfo",
        "/orders/v0/orders/{}/orderItems",
        "/mfn/v0/shipments/{}",
    ];
    // Each call a spawned task, so the two worker threads run them truly at once.
    let calls = (0..1000).map(|i| {
        let replicas = Arc::clone(&replicas);
        let path = paths[(i / 4) % paths.len()].replace("{}", &format!("902-{i:07}"));
        let seller = SELLERS[(i / 16) % SELLERS.len()];
        let request = request(&em, seller, &path);
        tokio::spawn(async move { (seller, replicas[i % 4].send(request).await) })
    });
    let answers: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    for (seller, answer) in &answers {
        let answer = answer.as_ref().unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.seller.as_deref(), Some(*seller));
        assert_eq!(answer.pii.as_deref(), Some("served"), "{answer:?}");
    }
    let keys = (paths.len() * SELLERS.len()) as u64;
    let counters = em.counters();
    let fetches = total(&replicas, |s| s.fetches);
    let fleet_hits = total(&replicas, |s| s.fleet_hits);
    eprintln!(
        "1000 calls, {keys} keys, 4 replicas: token calls {}, 429s {}, source calls {fetches}, \
         fleet hits {fleet_hits}, fleet waits {}, fallbacks {}",
        counters.token_calls,
        counters.throttled,
        total(&replicas, |s| s.fleet_waits),
        total(&replicas, |s| s.fleet_fallbacks),
    );
    assert_eq!(counters.token_calls, keys);
    for seller in SELLERS {
        assert_eq!(counters.token_calls_for(seller), paths.len() as u64);
    }
    assert_eq!(counters.throttled, 0);
    assert_eq!(fetches, keys);
    assert_eq!(total(&replicas, |s| s.fleet_fallbacks), 0);
    // Per key and replica: every replica sees all the keys, and in each the first request for a
    // key leads one local fetch (the others join it). That fetch ends either in the shared store
    // (a fleet hit) or in the one source call for the key, so each replica's leaders are exactly
    // its fleet hits plus its source calls, and the fleet as a whole made one source call per key.
    for (r, replica) in replicas.iter().enumerate() {
        let stats = replica.layer.stats();
        assert_eq!(
            stats.misses - stats.coalesced,
            keys,
            "replica {r}: {stats:?}"
        );
        assert_eq!(
            stats.fleet_hits + stats.fetches,
            keys,
            "replica {r}: {stats:?}"
        );
    }
    assert_eq!(fleet_hits, keys * (replicas.len() as u64 - 1));
}

/// N replicas × many keys of one seller, all at once, against Amazon's quota.
async fn run_quota_load(
    redis: &Redis,
    fleet: bool,
) -> (spapi_rdt_emulator::Counters, Vec<Replica>, Duration) {
    // A faster quota than Amazon's 1/s (the same shape: a burst, then a steady rate), so that the
    // test takes seconds.
    let em = Emulator::start_with(emulator_config().token_quota(5.0, 5))
        .await
        .unwrap();
    let options = || Options {
        quota: TokenQuota::new(5.0, 5).unwrap(),
        fleet,
        ..patient()
    };
    let replicas: Vec<Replica> = (0..3).map(|_| replica(&em, redis, options())).collect();
    let calls = replicas.iter().enumerate().flat_map(|(r, replica)| {
        (0..8).map({
            let em = &em;
            move |d| replica.token(report(em, "default", &format!("DOC-{r}-{d}")))
        })
    });
    let start = Instant::now();
    let results = join_all(calls).await;
    let elapsed = start.elapsed();
    if fleet {
        for result in &results {
            assert!(result.as_ref().unwrap().starts_with("Atz.sprdt|"));
        }
    }
    (em.counters(), replicas, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_rate_limit_per_seller() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let (counters, replicas, elapsed) = run_quota_load(&redis, true).await;
    eprintln!(
        "3 replicas x 8 keys, quota 5/s burst 5, fleet: token calls {}, 429s {}, limiter waits {}, \
         {elapsed:?}",
        counters.token_calls,
        counters.throttled,
        total(&replicas, |s| s.rate_limit_waits)
    );
    assert_eq!(counters.token_calls, 24);
    assert_eq!(counters.throttled, 0);
    assert_eq!(total(&replicas, |s| s.fleet_fallbacks), 0);
    // 24 calls, 5 at once, then one per 200 ms + the 100 ms margin: the 24th call is admitted
    // 19 x 300 ms = 5.7 s after the first, so all of them take at least that (a 50 ms allowance
    // for the limiter's clock in Redis). Only the first 5 go without waiting.
    let floor = Duration::from_millis(19 * 300 - 50);
    assert!(elapsed >= floor, "{elapsed:?}");
    assert_eq!(total(&replicas, |s| s.rate_limit_waits), 19);
    // And the shared limit is all that held them: real time on a busy machine, so the ceiling is
    // loose, but far under what one replica's 8 calls after another's would take.
    assert!(elapsed < floor * 2, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fleet_the_same_load_is_throttled() {
    // The control for the test above: each replica alone believes it has the whole quota.
    let Some(redis) = Redis::any() else {
        return;
    };
    let (counters, _replicas, _elapsed) = run_quota_load(&redis, false).await;
    eprintln!(
        "3 replicas x 8 keys, quota 5/s burst 5, no fleet: token calls {}, 429s {}",
        counters.token_calls, counters.throttled
    );
    assert!(counters.throttled > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_go_on_alone_while_redis_is_down_and_share_again_after() {
    let Some(mut redis) = Redis::own() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let options = || Options {
        tune: |f| f.retry_after(Duration::from_millis(300)),
        ..Options::default()
    };
    let a = replica(&em, &redis, options());
    let b = replica(&em, &redis, options());

    // Shared mode: B uses the token A fetched.
    let address = |seller| request(&em, seller, "/orders/v0/orders/1/address");
    let first = a.token(address("default")).await.unwrap();
    assert_eq!(b.token(address("default")).await.unwrap(), first);
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(b.layer.stats().fleet_hits, 1);

    // Redis dies. Cached tokens still serve, and new ones are fetched by each replica alone.
    redis.kill();
    for i in 0..5 {
        for (replica, seller) in [(&a, SELLERS[1]), (&b, SELLERS[2])] {
            let answer = replica
                .send(request(&em, seller, &format!("/mfn/v0/shipments/S-{i}")))
                .await
                .unwrap();
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(replica.token(address("default")).await.unwrap(), first);
        }
        let doc = report(&em, "default", &format!("DOC-down-{i}"));
        assert!(a.token(doc).await.unwrap().starts_with("Atz.sprdt|"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (fa, fb) = (
        a.layer.stats().fleet_fallbacks,
        b.layer.stats().fleet_fallbacks,
    );
    eprintln!("while Redis was down: fallbacks A {fa}, B {fb}");
    assert!(fa > 0 && fb > 0);

    // Redis is back (empty) on the same port: shared mode resumes once the retry period ends.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    loop {
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let doc = format!("DOC-back-{attempt}");
        let token_a = a.token(report(&em, "default", &doc)).await.unwrap();
        let before = em.counters().token_calls;
        let token_b = b.token(report(&em, "default", &doc)).await.unwrap();
        if em.counters().token_calls == before {
            assert_eq!(token_a, token_b);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shared mode did not resume within 30 s of Redis restarting"
        );
    }
    eprintln!(
        "after the restart: shared again after {attempt} attempt(s); fallbacks A {}, B {}",
        a.layer.stats().fleet_fallbacks,
        b.layer.stats().fleet_fallbacks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_rate_key_costs_a_seller_one_interval_at_most() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let mut raw = redis.client().await;
    // A value far in the future (the finding: "would delay the fetch by 98203716768 s"), text,
    // and what Lua reads as NaN and minus infinity.
    let damaged = ["98203716768000000", "garbage", "nan", "-inf"];
    for (n, damage) in damaged.iter().enumerate() {
        // A replica of its own and an operation not yet fetched: the call goes through the limiter.
        let a = replica(&em, &redis, Options::default());
        let key = a.redis.rate_key(&SellerId::default(), &em.origin());
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(*damage)
            .query_async(&mut raw)
            .await
            .unwrap();
        let path = [
            "/orders/v0/orders/902-1/address",
            "/orders/v0/orders/902-1/buyerInfo",
            "/orders/v0/orders/902-1/orderItems/buyerInfo",
            "/mfn/v0/shipments/SHIP-1",
        ][n];
        // Before the fix, the request failed after its 30 s wait timeout: the limiter asked for
        // years. Now it waits one interval at most (1.1 s with the rate margin).
        let token = a.token(request(&em, "default", path)).await;
        assert!(token.unwrap().starts_with("Atz.sprdt|"), "{damage}");
        // The limiter wrote back a time it could have written itself.
        let stored: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let stored: f64 = stored
            .parse()
            .unwrap_or_else(|e| panic!("{damage}: {stored:?}: {e}"));
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as f64;
        assert!(
            stored < now_micros + 11.0 * 1.1e6 + 5e6,
            "{damage}: {stored}"
        );
        assert_eq!(a.layer.stats().fleet_fallbacks, 0, "{damage}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_encrypted_in_redis() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let a = replica(&em, &redis, Options::default());
    let token = a
        .token(request(&em, "default", "/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert!(token.starts_with("Atz.sprdt|"));

    let mut raw = redis.client().await;
    let key = a
        .redis
        .token_key(&FleetKey::for_request(&address_token_request(
            &em, "default",
        )));
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let value = value.expect("the token is stored under its key");
    assert!(!value.windows(token.len()).any(|w| w == token.as_bytes()));
    assert!(!value.windows(9).any(|w| w == b"Atz.sprdt"));
    // Nothing in Redis holds a token in clear.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", redis.prefix()))
        .query_async(&mut raw)
        .await
        .unwrap();
    for k in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(k)
            .query_async(&mut raw)
            .await
            .unwrap();
        if kind == "string" {
            let v: Vec<u8> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert!(!v.windows(9).any(|w| w == b"Atz.sprdt"), "{k}");
        }
    }

    // A replica with another key cannot read it, so it fetches its own (and writes it over).
    let other = replica(
        &em,
        &redis,
        Options {
            key: [0x11; 32],
            ..Options::default()
        },
    );
    let before = em.counters().token_calls;
    let theirs = other
        .token(request(&em, "default", "/orders/v0/orders/2/address"))
        .await
        .unwrap();
    assert_ne!(theirs, token);
    assert_eq!(em.counters().token_calls, before + 1);
    assert_eq!(other.layer.stats().fleet_hits, 0);
    // What it wrote over the unreadable value is its own token: the stored bytes changed, and a
    // replica with its key is served from Redis with no token call.
    let now: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let now = now.expect("a token is stored under the key");
    assert!(
        now != value,
        "the value that did not decrypt is still there"
    );
    let third = replica(
        &em,
        &redis,
        Options {
            key: [0x11; 32],
            ..Options::default()
        },
    );
    let before = em.counters().token_calls;
    let shared = third
        .token(request(&em, "default", "/orders/v0/orders/3/address"))
        .await
        .unwrap();
    assert_eq!(shared, theirs);
    assert_eq!(em.counters().token_calls, before);
    assert_eq!(third.layer.stats().fleet_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leaders_lease_delays_the_others_at_most_its_ttl() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let lease_ttl = Duration::from_secs(2);
    let a = replica(
        &em,
        &redis,
        Options {
            tune: |f| f.lease_ttl(Duration::from_secs(2)),
            ..Options::default()
        },
    );
    // A replica took the lease for this token and died: its lease stays until it expires.
    let lease = a
        .redis
        .lease_key(&FleetKey::for_request(&address_token_request(
            &em, "default",
        )));
    let mut raw = redis.client().await;
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("crashed-replica")
        .arg("PX")
        .arg(lease_ttl.as_millis() as u64)
        .query_async(&mut raw)
        .await
        .unwrap();
    let started = Instant::now();
    let token = a
        .token(request(&em, "default", "/orders/v0/orders/1/address"))
        .await
        .unwrap();
    let waited = started.elapsed();
    eprintln!("a lease of {lease_ttl:?} left by a dead replica delayed the fetch by {waited:?}");
    assert!(token.starts_with("Atz.sprdt|"));
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(a.layer.stats().fleet_waits, 1);
    // It respected the lease...
    assert!(
        waited >= lease_ttl - Duration::from_millis(500),
        "{waited:?}"
    );
    // ...and took over once it expired (generous bound; without a takeover the request would hang
    // until its 30 s wait timeout).
    assert!(waited < lease_ttl + Duration::from_secs(5), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundled_token_serves_every_replica() {
    let Some(redis) = Redis::any() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let options = || Options {
        strategy: Strategy::Bundle,
        ..Options::default()
    };
    let a = replica(&em, &redis, options());
    let b = replica(&em, &redis, options());
    let answer = a
        .send(request(&em, "default", "/orders/v0/orders/1/address"))
        .await
        .unwrap();
    assert_eq!(answer.pii.as_deref(), Some("served"));
    // Another operation of the same bundle, on the other replica: no token call.
    let answer = b
        .send(request(&em, "default", "/mfn/v0/shipments/S-1"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.pii.as_deref(), Some("served"));
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(b.layer.stats().fleet_hits, 1);
}

//! Fleet mode on the Redis deployments people run: Redis Cluster, Valkey (standalone and cluster),
//! TLS with a CA of the test's own, ACL users, and the set-ups that cannot work, each named.
#![cfg(all(feature = "redis", feature = "reqwest"))]

use futures::future::join_all;
use spapi_rdt::error::RedisFleetError;
use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
use spapi_rdt_emulator::Emulator;

use super::fleet::{
    KEY, Options, Replica, SELLERS, emulator_config, patient, replica_at, request, total,
};
use crate::support::redis_server::{Redis, RedisCluster};

// ---------------------------------------------------------------------------------------------
// The Redis deployments people run
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_replicas_share_tokens() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    replicas_share_tokens_on_a_cluster(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_valkey_cluster_replicas_share_tokens() {
    let Some(cluster) = RedisCluster::start_valkey() else {
        return;
    };
    replicas_share_tokens_on_a_cluster(&cluster).await;
}

/// Three replicas on `cluster` (given one node's URL) ask for each seller's two operations at once:
/// one token call per seller and operation, every record on the node of its slot.
async fn replicas_share_tokens_on_a_cluster(cluster: &RedisCluster) {
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let replicas: Vec<Replica> = (0..3)
        .map(|_| replica_at(&em, &cluster.url(), cluster.prefix(), true, patient()))
        .collect();
    replicas[0].redis.verify().await.unwrap();
    // Every replica asks for each seller's two operations at once.
    let em_ref = &em;
    let calls = replicas.iter().flat_map(|replica| {
        SELLERS.into_iter().flat_map(move |seller| {
            [
                "/orders/v0/orders/902-1/address",
                "/orders/v0/orders/902-1/buyerInfo",
            ]
            .map(|path| replica.token(request(em_ref, seller, path)))
        })
    });
    for token in join_all(calls).await {
        assert!(token.unwrap().starts_with("Atz.sprdt|"));
    }
    assert_eq!(em.counters().token_calls, 6, "one per seller and operation");
    assert_eq!(total(&replicas, |s| s.fleet_fallbacks), 0);
    assert_eq!(total(&replicas, |s| s.fleet_hits), 12);
    // The token records are in the cluster, each seller's keys on the node of its slot.
    let mut keys = 0;
    for url in cluster.node_urls() {
        let mut node = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let found: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:tok:*", cluster.prefix()))
            .query_async(&mut node)
            .await
            .unwrap();
        keys += found.len();
    }
    assert_eq!(keys, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_what_cannot_work() {
    let fleet = |url: &str, cluster: bool| {
        RedisFleet::builder(url)
            .encryption_key(EncryptionKey::from_bytes(KEY))
            .cluster(cluster)
            .build()
            .unwrap()
    };
    let unusable = |result: Result<(), RedisFleetError>, says: &str| match result {
        Err(RedisFleetError::Unusable(why)) => assert!(why.contains(says), "{why}"),
        other => panic!("expected Unusable ({says}), got {other:?}"),
    };
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    // A cluster node given as a standalone server, and a standalone server given as a cluster.
    unusable(fleet(&cluster.url(), false).verify().await, "Redis Cluster");
    let Some(plain) = Redis::own() else {
        return;
    };
    // A cluster client learns nodes' addresses from the cluster itself: TCP only.
    let on_a_socket = RedisFleet::builder(plain.url())
        .encryption_key(EncryptionKey::from_bytes(KEY))
        .cluster(true)
        .build();
    assert!(matches!(on_a_socket, Err(RedisFleetError::InvalidUrl(_))));
    fleet(plain.url(), false).verify().await.unwrap();

    // A password the server refuses, or none.
    let Some(protected) = Redis::own_with(&["--requirepass", "right-password"]) else {
        return;
    };
    // On a Unix socket, redis-rs takes the password as `?pass=`.
    let with_password = |password: &str| format!("{}?pass={password}", protected.url());
    unusable(
        fleet(protected.url(), false).verify().await,
        "authentication",
    );
    unusable(
        fleet(&with_password("wrong"), false).verify().await,
        "authentication",
    );
    let with_right = with_password("right-password");
    fleet(&with_right, false).verify().await.unwrap();

    // A read-only replica.
    let Some(replica) = Redis::own() else {
        return;
    };
    let mut admin = replica.client().await;
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query_async(&mut admin)
        .await
        .unwrap();
    unusable(fleet(replica.url(), false).verify().await, "replica");

    // Nothing there.
    let dead = fleet("redis://127.0.0.1:1/", false);
    assert!(matches!(
        dead.verify().await,
        Err(RedisFleetError::Unreachable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_without_transactions_shares_tokens() {
    let Some(redis) = Redis::own() else {
        return;
    };
    let mut admin = redis.client().await;
    let () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "fleet",
                "on",
                ">fleet-password",
                "~*",
                "&*",
                "+@all",
                "-multi",
                "-exec",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("{}?user=fleet&pass=fleet-password", redis.url());
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let a = replica_at(&em, &url, redis.prefix(), false, Options::default());
    let b = replica_at(&em, &url, redis.prefix(), false, Options::default());
    a.redis.verify().await.unwrap();
    let path = "/orders/v0/orders/902-1/address";
    a.token(request(&em, "default", path)).await.unwrap();
    b.token(request(&em, "default", path)).await.unwrap();
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(b.layer.stats().fleet_hits, 1);
    assert_eq!(
        a.layer.stats().fleet_fallbacks + b.layer.stats().fleet_fallbacks,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_valkey_replicas_share_tokens() {
    let Some(valkey) = Redis::own_valkey() else {
        return;
    };
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let replicas = [(); 3].map(|()| {
        replica_at(
            &em,
            valkey.url(),
            valkey.prefix(),
            false,
            Options::default(),
        )
    });
    replicas[0].redis.verify().await.unwrap();
    two_replicas_take_one_token(&em, &replicas).await;
}

// ---------------------------------------------------------------------------------------------
// TLS (rediss://)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_replicas_share_tokens() {
    let Some(redis) = Redis::own_tls() else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    let em = Emulator::start_with(emulator_config()).await.unwrap();
    let replicas = [(); 3].map(|()| {
        let options = Options {
            ca_pem: Some(redis.ca_pem().to_vec()),
            ..Options::default()
        };
        replica_at(&em, redis.url(), redis.prefix(), false, options)
    });
    replicas[0].redis.verify().await.unwrap();
    two_replicas_take_one_token(&em, &replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_set_ups_that_cannot_work_are_named() {
    let Some(mut redis) = Redis::own_tls() else {
        return;
    };
    let other_ca = redis.other_ca_pem();
    let fleet = |url: &str, ca: Option<&[u8]>| {
        let builder = RedisFleet::builder(url).encryption_key(EncryptionKey::from_bytes(KEY));
        match ca {
            Some(pem) => builder.ca_certificate(pem.to_vec()),
            None => builder,
        }
        .build()
    };
    let setting = |result: Result<RedisFleet, RedisFleetError>, name: &str, says: &str| match result
    {
        Err(RedisFleetError::Setting { name: n, reason }) => {
            assert_eq!(n, name);
            assert!(reason.contains(says), "{reason}");
        }
        other => panic!("expected a refused `{name}`, got {other:?}"),
    };
    // Refused when built: a check turned off, a CA for a plain connection, a CA that is no PEM.
    setting(
        fleet(&format!("{}#insecure", redis.url()), None),
        "url",
        "#insecure",
    );
    setting(
        fleet("redis://127.0.0.1:6379/", Some(redis.ca_pem())),
        "ca_certificate",
        "rediss://",
    );
    setting(
        fleet(redis.url(), Some(b"not a certificate")),
        "ca_certificate",
        "PEM",
    );

    // A server whose certificate no trusted CA signed: the platform's store, or another CA.
    for untrusted in [
        fleet(redis.url(), None),
        fleet(redis.url(), Some(&other_ca)),
    ] {
        match untrusted.unwrap().verify().await {
            Err(RedisFleetError::Unusable(why)) => assert!(why.contains("certificate"), "{why}"),
            other => panic!("expected Unusable (certificate), got {other:?}"),
        }
    }
    // TLS to a port that serves plain Redis.
    let plain_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(_plain) = Redis::own_with(&["--port", &plain_port.to_string()]) else {
        return;
    };
    let to_plain = fleet(
        &format!("rediss://127.0.0.1:{plain_port}/"),
        Some(redis.ca_pem()),
    );
    match to_plain.unwrap().verify().await {
        Err(RedisFleetError::Unreachable(why)) => assert!(why.contains("TLS port"), "{why}"),
        other => panic!("expected Unreachable (a TLS port?), got {other:?}"),
    }
    // The right CA.
    fleet(redis.url(), Some(redis.ca_pem()))
        .unwrap()
        .verify()
        .await
        .unwrap();
}

/// Two of `replicas` ask for the same token in turn: one token call, the second replica served
/// from the store.
async fn two_replicas_take_one_token(em: &Emulator, replicas: &[Replica]) {
    let path = "/orders/v0/orders/902-1/address";
    let first = replicas[0]
        .token(request(em, SELLERS[1], path))
        .await
        .unwrap();
    let second = replicas[1]
        .token(request(em, SELLERS[1], path))
        .await
        .unwrap();
    assert!(first.starts_with("Atz.sprdt|"));
    assert_eq!(first, second);
    assert_eq!(em.counters().token_calls, 1);
    assert_eq!(replicas[1].layer.stats().fleet_hits, 1);
    assert_eq!(total(replicas, |s| s.fleet_fallbacks), 0);
}

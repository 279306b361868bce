//! Fleet mode on Redis: the token store, the fetch lease and a fleet-wide GCRA rate limiter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::cipher::{Cipher, EncryptionKey};
use super::{
    Admission, FleetFuture, FleetKey, PlanAsk, PlanBucket, PlanSlot, SharedBuckets,
    SharedRateLimiter, SharedTokenStore, TokenRecord,
};
use crate::TokenQuota;
use crate::error::{FleetError, RedisFleetError};
use crate::resource::{Origin, SellerId};

/// Takes or extends a lease: `KEYS[1]` the lease, `ARGV[1]` the holder, `ARGV[2]` the time to live
/// in milliseconds. 1 when the holder has it.
const LEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// A token record and its time to live in milliseconds, or nil: one script rather than a
/// MULTI/EXEC transaction, which ACL users without `+multi` cannot run and which redis-rs 1.2
/// mishandles when MULTI itself is refused.
const GET_WITH_TTL: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then
  return nil
end
return {value, redis.call('PTTL', KEYS[1])}
";

/// Gives a lease back if `ARGV[1]` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// GCRA on the server's clock: `KEYS[1]` holds the theoretical arrival time (microseconds),
/// `ARGV[1]` the emission interval (microseconds), `ARGV[2]` the burst. Returns 0 when a call may
/// go (and books it), or the microseconds to wait. A stored time the quota could not have written
/// (past a full burst from now, not a number, NaN) is cut back, and written back, to the latest it
/// could: a damaged key costs a seller one interval, not the fleet's token calls.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
local latest = now + burst * interval
if not tat or tat ~= tat or tat < now then
  tat = now
elseif tat > latest then
  tat = latest
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return math.max(1, math.ceil(allow_at - now))
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
";

/// Takes a slot of a usage-plan bucket, GCRA on the server's clock: `KEYS[1]` holds the bucket's
/// theoretical arrival time (microseconds); `ARGV` the interval, the tolerance and the longest wait
/// (microseconds), and 1 to take a slot ahead or 0 to take one only if free now. Returns
/// `{0, wait}` when the slot is taken, `{1, wait}` when the caller must ask again after `wait`,
/// `{2, wait}` when the wait would pass the longest. A stored time no replica could have written
/// (not a number, or further ahead than a day's wait and a burst) counts as a full bucket.
const PACE: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat ~= tat or tat < now or tat > now + 86400000000 + tolerance + interval then
  tat = now
end
local earliest = math.max(now, tat - tolerance)
local wait = earliest - now
if wait > max_wait then
  return {2, wait}
end
if ARGV[4] ~= '1' and wait > 0 then
  return {1, wait}
end
local next_tat = math.max(tat, earliest) + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return {0, wait}
";

/// Empties a usage-plan bucket: its theoretical arrival time goes to at least `ARGV[1]`
/// microseconds from now.
const DRAIN: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local empty_until = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat ~= tat or tat < empty_until then
  redis.call('SET', KEYS[1], string.format('%.0f', empty_until), 'PX', math.ceil((empty_until - now) / 1000) + 1000)
end
return 1
";

/// Fleet mode on Redis: a [`SharedTokenStore`] and a [`SharedRateLimiter`] in one value (feature
/// `redis`). Cloning is cheap; clones share one connection.
///
/// - **Tokens** are stored under `<prefix>:tok:{<seller>}:<digest>` (the digest is SHA-256 of the
///   key's [name](FleetKey::name), cut to 128 bits), encrypted with AES-256-GCM under the
///   [`EncryptionKey`] (a fresh random nonce per write, the Redis key as associated data), and
///   expire with the token. A value that does not decrypt (another key, tampering) counts as
///   missing: the replica fetches a token and writes it over.
/// - **Leases** are `<prefix>:lease:{<seller>}:<digest>`, taken, extended and released by Lua
///   scripts that check the holder.
/// - **The rate limit** is GCRA in a Lua script on the server's clock, under
///   `<prefix>:rate:{<seller>}:<origin>`: atomic, whatever the number of replicas.
/// - **Usage-plan buckets** (for [`PacingLayerBuilder::fleet`](crate::pacing::PacingLayerBuilder::fleet))
///   are GCRA in a Lua script on the server's clock, under `<prefix>:plan:{<seller>}:<digest>`
///   (the digest of the origin and the operation; `{#grantless}` for calls without a seller).
///   Each expires once its bucket is full again.
/// - **The seller in braces** is a Redis Cluster hash tag: every key of a seller lives in one slot,
///   so the store works on a Redis or Valkey cluster too ([`RedisFleetBuilder::cluster`]), and
///   sellers spread over its shards.
///
/// Seller ids made of letters, digits, `.`, `_` and `-` (up to 64) appear as they are; others are
/// digested. The connection is made on first use and remade after a failure (redis-rs's
/// `ConnectionManager`, or its cluster connection); nothing connects before the first token fetch,
/// so a replica starts even while Redis is down. [`RedisFleet::verify`] checks, before serving,
/// that the server is one the store can work with.
///
/// ```
/// use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
///
/// let fleet = RedisFleet::builder("redis://:secret-password@127.0.0.1:6379/2")
///     .encryption_key(EncryptionKey::from_bytes([7; 32]))
///     .key_prefix("orders-service")
///     .build()
///     .unwrap();
/// // Neither the password nor the key shows.
/// let shown = format!("{fleet:?}");
/// assert!(shown.contains("127.0.0.1:6379") && !shown.contains("secret-password"));
/// ```
#[derive(Clone)]
pub struct RedisFleet {
    inner: Arc<Inner>,
}

struct Inner {
    server: Server,
    connection: OnceCell<Connection>,
    prefix: String,
    cipher: Cipher,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// `host:port/db`, for `Debug`: never the password.
    endpoint: String,
    /// Whether the URL is `rediss://`.
    tls: bool,
    get_with_ttl: Script,
    lease: Script,
    release: Script,
    gcra: Script,
    pace: Script,
    drain: Script,
}

/// A standalone server (or a cluster's single endpoint), or a Redis Cluster found from one node.
enum Server {
    Single(Client),
    Cluster(ClusterClient),
}

/// The shared connection to a [`Server`]: both kinds reconnect by themselves.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Configures a [`RedisFleet`]; from [`RedisFleet::builder`].
pub struct RedisFleetBuilder {
    url: String,
    cluster: bool,
    key: Option<EncryptionKey>,
    /// Further keys that open records (key rotation).
    old_keys: Vec<EncryptionKey>,
    prefix: String,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// PEM certificates trusted instead of the platform's store (`rediss://` only).
    ca_certificate: Option<Vec<u8>>,
}

impl RedisFleet {
    /// A builder for the Redis server at `url`: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (ElastiCache with in-transit encryption, MemoryDB), which needs one of
    /// the features `rustls`, `rustls-no-provider` or `native-tls`. `valkey://` and `valkeys://`
    /// are the same. The server's certificate is always checked: against the platform's trust
    /// store, or the CA given to [`RedisFleetBuilder::ca_certificate`].
    pub fn builder(url: &str) -> RedisFleetBuilder {
        RedisFleetBuilder {
            url: url.to_owned(),
            cluster: false,
            key: None,
            old_keys: Vec::new(),
            prefix: "spapi-rdt".to_owned(),
            command_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            ca_certificate: None,
        }
    }

    /// The Redis key a token for `key` is stored under.
    pub fn token_key(&self, key: &FleetKey) -> String {
        format!(
            "{}:tok:{{{}}}:{}",
            self.inner.prefix,
            seller_part(key.seller()),
            digest(key.name())
        )
    }

    /// The Redis key of the fetch lease for `key`.
    pub fn lease_key(&self, key: &FleetKey) -> String {
        format!(
            "{}:lease:{{{}}}:{}",
            self.inner.prefix,
            seller_part(key.seller()),
            digest(key.name())
        )
    }

    /// The Redis key of the rate limit of `seller` on `origin`.
    pub fn rate_key(&self, seller: &SellerId, origin: &Origin) -> String {
        format!(
            "{}:rate:{{{}}}:{}",
            self.inner.prefix,
            seller_part(seller),
            origin
        )
    }

    /// The Redis key of a usage-plan bucket.
    pub(crate) fn plan_key(&self, bucket: &PlanBucket) -> String {
        let seller = bucket
            .seller
            .as_ref()
            .map_or_else(|| "#grantless".to_owned(), seller_part);
        format!(
            "{}:plan:{{{}}}:{}",
            self.inner.prefix,
            seller,
            digest(&bucket.name)
        )
    }

    /// The shared connection, made on first use.
    async fn connection(&self) -> Result<Connection, FleetError> {
        let inner = &self.inner;
        let connection = inner
            .connection
            .get_or_try_init(|| async {
                match &inner.server {
                    Server::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(inner.connect_timeout))
                            .set_response_timeout(Some(inner.command_timeout))
                            .set_number_of_retries(2)
                            .set_min_delay(Duration::from_millis(50))
                            .set_max_delay(Duration::from_secs(1));
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                            .map(Connection::Single)
                            .map_err(failed("connect"))
                    }
                    Server::Cluster(client) => {
                        let config = ClusterConfig::new()
                            .set_connection_timeout(inner.connect_timeout)
                            .set_response_timeout(inner.command_timeout);
                        Ok(Connection::Cluster(
                            client.get_pending_async_connection_with_config(config),
                        ))
                    }
                }
            })
            .await?;
        Ok(connection.clone())
    }

    /// Checks that the store can work on the server: its password or ACL user is accepted, it is
    /// no read-only replica, and it is a Redis Cluster exactly when the builder said so
    /// ([`RedisFleetBuilder::cluster`]). A caller that would rather refuse to start than have its
    /// replicas silently work alone calls it before serving; the sidecar does.
    ///
    /// [`RedisFleetError::Unusable`] names what cannot work; [`RedisFleetError::Unreachable`] says
    /// the server did not answer, which fleet mode rides out (each replica goes on alone until it
    /// is back).
    pub async fn verify(&self) -> Result<(), RedisFleetError> {
        let patience = self
            .inner
            .connect_timeout
            .saturating_add(self.inner.command_timeout.saturating_mul(4));
        match tokio::time::timeout(patience, self.check_server()).await {
            Ok(result) => result,
            // A plain Redis port takes a TLS handshake for an unfinished command and waits.
            Err(_) if self.inner.tls => Err(RedisFleetError::Unreachable(format!(
                "the server did not answer within {patience:?} (a plain Redis port never \
                 answers a TLS handshake: is it a TLS port?)"
            ))),
            Err(_) => Err(RedisFleetError::Unreachable(format!(
                "the server did not answer within {patience:?}"
            ))),
        }
    }

    async fn check_server(&self) -> Result<(), RedisFleetError> {
        let unusable_or_unreachable = |e: RedisError| match diagnosis(&e) {
            Some(why) => RedisFleetError::Unusable(why.to_owned()),
            None if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => {
                RedisFleetError::Unreachable(e.to_string())
            }
            // The server answered, with an error no store call can get past.
            None => RedisFleetError::Unusable(e.to_string()),
        };
        let mut con = self
            .connection()
            .await
            .map_err(|e| RedisFleetError::Unreachable(e.to_string()))?;
        if let Connection::Cluster(_) = con {
            // The cluster client learnt the slots on connecting; one keyed read shows it works.
            let probe = format!("{}:verify:{{probe}}", self.inner.prefix);
            let _: i64 = redis::cmd("PTTL")
                .arg(&probe)
                .query_async(&mut con)
                .await
                .map_err(unusable_or_unreachable)?;
            return Ok(());
        }
        let cluster: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut con)
            .await
            .map_err(unusable_or_unreachable)?;
        let replication: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con)
            .await
            .map_err(unusable_or_unreachable)?;
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if field(&cluster, "cluster_enabled").as_deref() == Some("1") {
            return Err(RedisFleetError::Unusable(
                "the server is a Redis Cluster node: keys of other shards would answer MOVED; \
                 build the store with `cluster(true)` (the sidecar: --redis-cluster)"
                    .to_owned(),
            ));
        }
        if matches!(
            field(&replication, "role").as_deref(),
            Some("slave" | "replica")
        ) {
            return Err(RedisFleetError::Unusable(
                "the server is a read-only replica: point fleet mode at the primary".to_owned(),
            ));
        }
        Ok(())
    }

    async fn get_record(&self, key: &FleetKey) -> Result<Option<TokenRecord>, FleetError> {
        let name = self.token_key(key);
        let mut con = self.connection().await?;
        let found: Option<(Vec<u8>, i64)> = self
            .inner
            .get_with_ttl
            .key(&name)
            .invoke_async(&mut con)
            .await
            .map_err(failed("GET"))?;
        let Some((sealed, ttl)) = found else {
            return Ok(None);
        };
        let Ok(ttl) = u64::try_from(ttl) else {
            // Kept without expiry (-1), which this crate never writes.
            return Ok(None);
        };
        match self.inner.cipher.open(&sealed, name.as_bytes()) {
            // The plaintext moves into the record, which zeroes it when dropped: no copy is left
            // behind unzeroed.
            Some(mut plain) => Ok(Some(TokenRecord::new(
                std::mem::take(&mut *plain),
                Duration::from_millis(ttl),
            ))),
            None => {
                tracing::debug!(key = %name, "a token record in Redis does not decrypt with this key: ignored");
                Ok(None)
            }
        }
    }

    async fn put_record(&self, key: &FleetKey, record: TokenRecord) -> Result<(), FleetError> {
        let name = self.token_key(key);
        let ttl = millis(record.ttl()).max(1);
        let sealed = self.inner.cipher.seal(record.as_bytes(), name.as_bytes())?;
        let mut con = self.connection().await?;
        redis::cmd("SET")
            .arg(&name)
            .arg(sealed)
            .arg("PX")
            .arg(ttl)
            .exec_async(&mut con)
            .await
            .map_err(failed("SET"))
    }

    async fn lease(&self, key: &FleetKey, holder: &str, ttl: Duration) -> Result<bool, FleetError> {
        let name = self.lease_key(key);
        let mut con = self.connection().await?;
        let held: i64 = self
            .inner
            .lease
            .key(&name)
            .arg(holder)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut con)
            .await
            .map_err(failed("lease"))?;
        Ok(held == 1)
    }

    async fn unlease(&self, key: &FleetKey, holder: &str) -> Result<(), FleetError> {
        let name = self.lease_key(key);
        let mut con = self.connection().await?;
        let _: i64 = self
            .inner
            .release
            .key(&name)
            .arg(holder)
            .invoke_async(&mut con)
            .await
            .map_err(failed("release"))?;
        Ok(())
    }

    async fn admit(
        &self,
        seller: &SellerId,
        origin: &Origin,
        quota: TokenQuota,
    ) -> Result<Admission, FleetError> {
        let name = self.rate_key(seller, origin);
        let interval = (1e6 / quota.per_second()).ceil().clamp(1.0, 1e15) as u64;
        let mut con = self.connection().await?;
        let wait: i64 = self
            .inner
            .gcra
            .key(&name)
            .arg(interval)
            .arg(quota.burst())
            .invoke_async(&mut con)
            .await
            .map_err(failed("rate limit"))?;
        Ok(match u64::try_from(wait) {
            Ok(0) | Err(_) => Admission::Granted,
            Ok(micros) => Admission::RetryAfter(Duration::from_micros(micros)),
        })
    }
}

impl RedisFleet {
    async fn take_slot(&self, bucket: &PlanBucket, ask: PlanAsk) -> Result<PlanSlot, FleetError> {
        let name = self.plan_key(bucket);
        let mut con = self.connection().await?;
        let (kind, wait): (i64, i64) = self
            .inner
            .pace
            .key(&name)
            .arg(micros(ask.interval).max(1))
            .arg(micros(ask.tolerance))
            .arg(micros(ask.max_wait))
            .arg(u8::from(ask.ahead))
            .invoke_async(&mut con)
            .await
            .map_err(failed("usage plan"))?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        Ok(match kind {
            0 => PlanSlot::Taken(wait),
            1 => PlanSlot::Retry(wait),
            _ => PlanSlot::TooFar(wait),
        })
    }

    async fn drain_bucket(
        &self,
        bucket: &PlanBucket,
        empty_for: Duration,
    ) -> Result<(), FleetError> {
        let name = self.plan_key(bucket);
        let mut con = self.connection().await?;
        let _: i64 = self
            .inner
            .drain
            .key(&name)
            .arg(micros(empty_for))
            .invoke_async(&mut con)
            .await
            .map_err(failed("usage plan drain"))?;
        Ok(())
    }
}

impl SharedBuckets for RedisFleet {
    fn take<'a>(&'a self, bucket: &'a PlanBucket, ask: PlanAsk) -> FleetFuture<'a, PlanSlot> {
        Box::pin(self.take_slot(bucket, ask))
    }

    fn drain<'a>(&'a self, bucket: &'a PlanBucket, empty_for: Duration) -> FleetFuture<'a, ()> {
        Box::pin(self.drain_bucket(bucket, empty_for))
    }
}

impl RedisFleetBuilder {
    /// The key that encrypts tokens at rest. Required.
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// One more key that records may be encrypted with: records are written with the
    /// [`encryption_key`](Self::encryption_key) and read with it or any decryption key, so keys
    /// rotate without downtime. Give every replica the new key with this method first; once all
    /// run with it, make it their encryption key and keep the old one here; drop the old one once
    /// the records it sealed have expired (a token's lifetime, an hour). A record no key opens is
    /// ignored and the replica fetches its own token.
    pub fn decryption_key(mut self, key: EncryptionKey) -> Self {
        self.old_keys.push(key);
        self
    }

    /// The prefix of every Redis key, so that services sharing a Redis stay apart. Default:
    /// `spapi-rdt`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether the URL names one node of a Redis Cluster (or a Valkey cluster) rather than a
    /// standalone server: the client then finds the other nodes and sends each seller's keys to
    /// the shard that holds them. Default: `false`. A cluster behind a single endpoint that
    /// answers every key (a proxy, or a managed service's configuration endpoint with a cluster
    /// mode of its own) may need either; [`RedisFleet::verify`] tells.
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How long the client waits for one answer before it gives up (the layer also bounds each
    /// call, with [`Fleet::call_timeout`](super::Fleet::call_timeout)). Default: 200 ms.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Default: 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The certificate authority (PEM, one or more certificates) that signed the server's
    /// certificate, trusted instead of the platform's store: a private CA, or a throwaway one in
    /// tests. Needs a `rediss://` URL and rustls (feature `rustls` or `rustls-no-provider`;
    /// `native-tls` trusts the platform's store only); [`build`](Self::build) says which is
    /// missing.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Builds the fleet. Does not connect: the connection is made on first use.
    pub fn build(self) -> Result<RedisFleet, RedisFleetError> {
        check_tls(&self.url, self.ca_certificate.as_deref())?;
        // redis-rs's messages name the part of the URL at fault, never the password.
        let client = Client::open(self.url.as_str())
            .map_err(|e| RedisFleetError::InvalidUrl(e.to_string()))?;
        let client = match &self.ca_certificate {
            Some(pem) => with_ca(client, pem)?,
            None => client,
        };
        let key = self.key.ok_or(RedisFleetError::MissingKey)?;
        if self.prefix.contains(['{', '}']) {
            return Err(RedisFleetError::Setting {
                name: "key_prefix",
                reason: "must not hold `{` or `}`: the braces around each seller keep its keys in \
                         one Redis Cluster slot",
            });
        }
        if self.command_timeout.is_zero() {
            return Err(RedisFleetError::Setting {
                name: "command_timeout",
                reason: "must be more than zero",
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(RedisFleetError::Setting {
                name: "connect_timeout",
                reason: "must be more than zero",
            });
        }
        let keys: Vec<&EncryptionKey> = std::iter::once(&key).chain(&self.old_keys).collect();
        let cipher = Cipher::with_keys(&keys).map_err(|_| RedisFleetError::MissingKey)?;
        let info = client.get_connection_info();
        let endpoint = format!("{}/{}", info.addr(), info.redis_settings().db());
        let server = if self.cluster {
            let builder = ClusterClient::builder([self.url.as_str()])
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.command_timeout)
                .retries(2);
            let builder = match &self.ca_certificate {
                Some(pem) => cluster_with_ca(builder, pem),
                None => builder,
            };
            let client = builder
                .build()
                .map_err(|e| RedisFleetError::InvalidUrl(e.to_string()))?;
            Server::Cluster(client)
        } else {
            Server::Single(client)
        };
        Ok(RedisFleet {
            inner: Arc::new(Inner {
                server,
                connection: OnceCell::new(),
                prefix: self.prefix,
                cipher,
                command_timeout: self.command_timeout,
                connect_timeout: self.connect_timeout,
                endpoint,
                tls: is_tls(&self.url),
                get_with_ttl: Script::new(GET_WITH_TTL),
                lease: Script::new(LEASE),
                release: Script::new(RELEASE),
                gcra: Script::new(GCRA),
                pace: Script::new(PACE),
                drain: Script::new(DRAIN),
            }),
        })
    }
}

impl SharedTokenStore for RedisFleet {
    fn get<'a>(&'a self, key: &'a FleetKey) -> FleetFuture<'a, Option<TokenRecord>> {
        Box::pin(self.get_record(key))
    }

    fn put<'a>(&'a self, key: &'a FleetKey, record: TokenRecord) -> FleetFuture<'a, ()> {
        Box::pin(self.put_record(key, record))
    }

    fn try_lease<'a>(
        &'a self,
        key: &'a FleetKey,
        holder: &'a str,
        ttl: Duration,
    ) -> FleetFuture<'a, bool> {
        Box::pin(self.lease(key, holder, ttl))
    }

    fn release<'a>(&'a self, key: &'a FleetKey, holder: &'a str) -> FleetFuture<'a, ()> {
        Box::pin(self.unlease(key, holder))
    }
}

impl SharedRateLimiter for RedisFleet {
    fn acquire<'a>(
        &'a self,
        seller: &'a SellerId,
        origin: &'a Origin,
        quota: TokenQuota,
    ) -> FleetFuture<'a, Admission> {
        Box::pin(self.admit(seller, origin, quota))
    }
}

impl From<RedisFleet> for super::Fleet {
    /// Fleet mode with Redis as both the store and the limiter, and default timings.
    fn from(redis: RedisFleet) -> Self {
        super::Fleet::new(redis.clone(), redis)
    }
}

impl fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleet")
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.command_timeout)
            .field("connect_timeout", &self.inner.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisFleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleetBuilder")
            .field("prefix", &self.prefix)
            .field("has_key", &self.key.is_some())
            .field("has_ca_certificate", &self.ca_certificate.is_some())
            .field("decryption_keys", &self.old_keys.len())
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether the client was built with TLS, and with rustls (which takes a CA of the caller's).
const TLS: bool = cfg!(any(
    feature = "rustls",
    feature = "rustls-no-provider",
    feature = "native-tls"
));
const RUSTLS: bool = cfg!(any(feature = "rustls", feature = "rustls-no-provider"));

/// Whether `url` asks for TLS.
fn is_tls(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
    })
}

/// Refuses, before anything connects, the TLS set-ups that could only fail later or would be
/// unsafe: TLS without a TLS feature, a check turned off, a CA that would be ignored.
fn check_tls(url: &str, ca: Option<&[u8]>) -> Result<(), RedisFleetError> {
    let setting = |name, reason| Err(RedisFleetError::Setting { name, reason });
    let tls = is_tls(url);
    if tls && !TLS {
        return setting(
            "url",
            "a rediss:// URL needs TLS: enable the feature rustls, rustls-no-provider or native-tls",
        );
    }
    if tls && url.ends_with("#insecure") {
        return setting(
            "url",
            "`#insecure` would turn the check of the server's certificate off; give the CA that \
             signed it to `ca_certificate` instead",
        );
    }
    if let Some(pem) = ca {
        if !tls {
            return setting(
                "ca_certificate",
                "a CA certificate is for TLS: the URL must be rediss://",
            );
        }
        if !RUSTLS {
            return setting(
                "ca_certificate",
                "a CA certificate of your own needs rustls (feature rustls or rustls-no-provider); \
                 native-tls trusts the platform's store only",
            );
        }
        if !pem
            .windows(CERTIFICATE_PEM.len())
            .any(|w| w == CERTIFICATE_PEM)
        {
            return setting(
                "ca_certificate",
                "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
            );
        }
    }
    // rustls without a provider of its own panics at the first handshake when the application
    // installed none; say so now.
    #[cfg(all(feature = "rustls-no-provider", not(feature = "rustls")))]
    if tls && rustls::crypto::CryptoProvider::get_default().is_none() {
        return setting(
            "url",
            "rediss:// with the feature rustls-no-provider needs a crypto provider: install one \
             (rustls::crypto::CryptoProvider::install_default) before building the store",
        );
    }
    Ok(())
}

const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// The client, trusting `pem` (checked by [`check_tls`]: only reached with rustls).
fn with_ca(client: Client, pem: &[u8]) -> Result<Client, RedisFleetError> {
    #[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
    {
        Client::build_with_tls(client.get_connection_info().clone(), certificates(pem)).map_err(
            |_| RedisFleetError::Setting {
                name: "ca_certificate",
                reason: "is not a PEM certificate that rustls accepts",
            },
        )
    }
    #[cfg(not(any(feature = "rustls", feature = "rustls-no-provider")))]
    {
        let _ = pem;
        Ok(client)
    }
}

fn cluster_with_ca(
    builder: redis::cluster::ClusterClientBuilder,
    pem: &[u8],
) -> redis::cluster::ClusterClientBuilder {
    #[cfg(any(feature = "rustls", feature = "rustls-no-provider"))]
    {
        builder.certs(certificates(pem))
    }
    #[cfg(not(any(feature = "rustls", feature = "rustls-no-provider")))]
    {
        let _ = pem;
        builder
    }
}

/// A mapper from a Redis error to a [`FleetError`]. Redis errors name commands and kinds, never
/// the values sent.
fn failed(what: &'static str) -> impl Fn(RedisError) -> FleetError {
    move |e| match diagnosis(&e) {
        Some(why) => FleetError::new(format!("redis {what} failed: {why}")).with_source(e),
        None => FleetError::new(format!("redis {what} failed")).with_source(e),
    }
}

/// What a Redis error says about the set-up, when it says something an operator must fix: a
/// cluster node reached as a standalone server, a replica, a refused password or permission.
fn diagnosis(e: &RedisError) -> Option<&'static str> {
    if e.is_io_error() {
        return tls_diagnosis(&e.to_string());
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return Some("authentication failed: check the user and password in the Redis URL");
    }
    match e.code()? {
        "MOVED" | "ASK" | "CLUSTERDOWN" | "CROSSSLOT" => Some(
            "the server is part of a Redis Cluster: build the store with `cluster(true)` (the \
             sidecar: --redis-cluster)",
        ),
        "READONLY" => Some("the server is a read-only replica: point fleet mode at the primary"),
        "NOAUTH" | "WRONGPASS" => {
            Some("authentication failed: check the user and password in the Redis URL")
        }
        "NOPERM" => Some(
            "the ACL user may not run a command fleet mode needs (GET, SET, PTTL, EVAL, EVALSHA, \
             SCRIPT, INFO on its keys)",
        ),
        _ => None,
    }
}

/// What an I/O error's text says about TLS. The TLS library's error reaches us only as text
/// inside redis-rs's I/O error; rustls and OpenSSL both name the certificate.
fn tls_diagnosis(text: &str) -> Option<&'static str> {
    let text = text.to_ascii_lowercase();
    if text.contains("certificate") {
        Some(
            "TLS: the server's certificate is not trusted or not for this host: give the CA that \
             signed it to `ca_certificate` (the sidecar: --redis-ca-file) and check the host in \
             the URL",
        )
    } else if [
        "invalidcontenttype",
        "corrupt message",
        "wrong version number",
    ]
    .iter()
    .any(|sign| text.contains(sign))
    {
        Some("TLS: the server did not answer in TLS: is it a plain Redis port (then redis://)?")
    } else {
        None
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds, bounded to a year: the scripts' numbers stay exact in Lua's doubles.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(365 * 86_400 * 1_000_000)
}

/// SHA-256 of `text`, the first 128 bits in hex.
fn digest(text: &str) -> String {
    use std::fmt::Write;
    let hash = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The seller as it appears in keys: as is when short and plain, else `#` and its digest (`#` is
/// not a plain character, so the two forms never meet).
fn seller_part(seller: &SellerId) -> String {
    let id = seller.as_str();
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        id.to_owned()
    } else {
        format!("#{}", digest(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Region, RestrictedResource, TokenRequest};

    fn fleet() -> RedisFleet {
        RedisFleet::builder("redis://127.0.0.1:1/")
            .encryption_key(EncryptionKey::from_bytes([1; 32]))
            .build()
            .unwrap()
    }

    #[test]
    fn keys_name_the_seller_and_digest_the_rest() {
        let fleet = fleet();
        let request = TokenRequest::new(
            SellerId::new("A2EUQ1WTGCTBG2"),
            Region::Europe.origin(),
            [RestrictedResource::new(
                http::Method::GET,
                "/orders/v0/orders/{orderId}/address",
                crate::catalog::DataElements::NONE,
            )],
        );
        let key = FleetKey::for_request(&request);
        let token_key = fleet.token_key(&key);
        assert!(token_key.starts_with("spapi-rdt:tok:{A2EUQ1WTGCTBG2}:"));
        assert_eq!(
            token_key.len(),
            "spapi-rdt:tok:{A2EUQ1WTGCTBG2}:".len() + 32
        );
        assert_eq!(fleet.lease_key(&key).replace(":lease:", ":tok:"), token_key);
        let odd = SellerId::new("tenant 42 / eu");
        assert!(seller_part(&odd).starts_with('#'));
        assert_eq!(seller_part(&odd).len(), 33);
        assert_eq!(
            fleet.rate_key(&SellerId::new("s-1"), &Region::Europe.origin()),
            "spapi-rdt:rate:{s-1}:https://sellingpartnerapi-eu.amazon.com"
        );
        // A seller's keys share one Redis Cluster hash tag, hence one slot.
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&token_key), "{A2EUQ1WTGCTBG2}");
        assert_eq!(tag(&fleet.lease_key(&key)), "{A2EUQ1WTGCTBG2}");
        assert_eq!(
            tag(&fleet.rate_key(&SellerId::new("A2EUQ1WTGCTBG2"), &Region::Europe.origin())),
            "{A2EUQ1WTGCTBG2}"
        );
    }

    #[test]
    fn usage_plan_buckets_are_hash_tagged_by_seller() {
        use crate::fleet::PlanBucket;
        let fleet = fleet();
        let bucket = |seller: Option<&str>| PlanBucket {
            seller: seller.map(SellerId::new),
            name: "sellingpartnerapi-na.amazon.com Orders v0 getOrder".to_owned(),
        };
        let key = fleet.plan_key(&bucket(Some("A2EUQ1WTGCTBG2")));
        assert!(key.starts_with("spapi-rdt:plan:{A2EUQ1WTGCTBG2}:"), "{key}");
        // The operation is digested: no path or origin in the key.
        assert!(!key.contains("getOrder"), "{key}");
        let grantless = fleet.plan_key(&bucket(None));
        assert!(
            grantless.starts_with("spapi-rdt:plan:{#grantless}:"),
            "{grantless}"
        );
        // Another operation of the same seller: another key, the same slot.
        let other = fleet.plan_key(&PlanBucket {
            seller: Some(SellerId::new("A2EUQ1WTGCTBG2")),
            name: "sellingpartnerapi-na.amazon.com Orders v0 getOrders".to_owned(),
        });
        assert_ne!(key, other);
        assert_eq!(key.split('}').next(), other.split('}').next());
    }

    #[test]
    fn a_prefix_with_braces_is_refused() {
        let err = RedisFleet::builder("redis://127.0.0.1/")
            .encryption_key(EncryptionKey::from_bytes([1; 32]))
            .key_prefix("app-{eu}")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                RedisFleetError::Setting {
                    name: "key_prefix",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn builder_requires_a_key_and_a_url() {
        assert!(matches!(
            RedisFleet::builder("redis://127.0.0.1/").build(),
            Err(RedisFleetError::MissingKey)
        ));
        let err = RedisFleet::builder("http://user:hunter2@host/")
            .encryption_key(EncryptionKey::from_bytes([1; 32]))
            .build()
            .unwrap_err();
        assert!(matches!(err, RedisFleetError::InvalidUrl(_)));
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn tls_failures_are_named_from_the_tls_librarys_words() {
        // rustls's and OpenSSL's words for an untrusted certificate and for a peer that speaks no TLS.
        for text in [
            "invalid peer certificate: UnknownIssuer",
            "error:0A000086:SSL routines::certificate verify failed",
        ] {
            assert!(tls_diagnosis(text).is_some_and(|why| why.contains("certificate")));
        }
        for text in [
            "received corrupt message of type InvalidContentType",
            "error:0A00010B:SSL routines::wrong version number",
        ] {
            assert!(tls_diagnosis(text).is_some_and(|why| why.contains("plain Redis port")));
        }
        assert_eq!(tls_diagnosis("Connection refused (os error 111)"), None);
    }

    #[test]
    fn tls_urls_are_recognised_whatever_the_case() {
        for url in ["rediss://h/", "REDISS://h/", "valkeys://h:6380/0"] {
            assert!(is_tls(url), "{url}");
        }
        for url in ["redis://h/", "redis+unix:///tmp/s", "rediss"] {
            assert!(!is_tls(url), "{url}");
        }
    }

    /// What a TLS URL meets under each TLS feature (`.ci/run` runs it with `redis` alone and with
    /// `redis,rustls-no-provider`, as well as with every feature).
    #[test]
    fn a_tls_url_follows_the_tls_features() {
        let built = RedisFleet::builder("rediss://127.0.0.1:6380/")
            .encryption_key(EncryptionKey::from_bytes([1; 32]))
            .build();
        let no_provider = cfg!(all(feature = "rustls-no-provider", not(feature = "rustls")));
        match built {
            Ok(_) => assert!(TLS && !no_provider),
            Err(RedisFleetError::Setting {
                name: "url",
                reason,
            }) if !TLS => {
                assert!(reason.contains("enable the feature"), "{reason}");
            }
            // Nothing in this test installs a provider.
            Err(RedisFleetError::Setting {
                name: "url",
                reason,
            }) if no_provider => {
                assert!(reason.contains("crypto provider"), "{reason}");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

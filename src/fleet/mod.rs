//! Fleet mode: replicas of a service share one token fetch per key and one rate limit per seller.
//!
//! Each [`RestrictedDataTokenLayer`](crate::RestrictedDataTokenLayer) keeps its tokens in its own
//! process and limits its own token calls. Run ten replicas and each fetches its own tokens and
//! believes it has the seller's whole quota: ten token calls where one would do, and 429s from
//! Amazon once their bursts add up. Fleet mode puts a shared store behind the local cache:
//!
//! - the in-process cache and limiter stay the fast path: a request served from the local cache
//!   never touches the shared store;
//! - on a local miss, the fetch first looks in the [`SharedTokenStore`]: a token another replica
//!   fetched is used for the rest of its life, without a token call;
//! - otherwise the replica takes the key's **lease** (single flight across replicas), fetches under
//!   the [`SharedRateLimiter`] (one quota per seller and origin for the whole fleet), stores the
//!   token with its lifetime and releases the lease. Replicas that did not get the lease poll the
//!   store with short jittered sleeps and take the lease if it expires: a replica that crashed
//!   while holding it delays the others by at most the lease's time to live;
//! - when the shared store fails or is slow (every call is bounded by
//!   [`Fleet::call_timeout`]), the replica goes on with its own cache and limiter, logs a warning
//!   (at most one a minute), counts it in [`Stats::fleet_fallbacks`](crate::Stats::fleet_fallbacks)
//!   and tries the shared store again after [`Fleet::retry_after`]. No request fails because the
//!   shared store did.
//!
//! The same store can share usage-plan buckets between replicas' pacing layers
//! ([`PacingLayerBuilder::fleet`](crate::pacing::PacingLayerBuilder::fleet), Redis only).
//!
//! Keys name the seller, the origin and a digest of the token's scope; never a secret. What the
//! store keeps for a key is a [`TokenRecord`]: the token itself and its deadlines. The Redis
//! implementation ([`RedisFleet`], feature `redis`) encrypts records with AES-256-GCM under a key
//! you supply.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
//! use spapi_rdt::RestrictedDataTokenLayer;
//!
//! # let source = spapi_rdt::source_fn(|_: spapi_rdt::TokenRequest| async {
//! #     Err::<spapi_rdt::IssuedToken, _>(spapi_rdt::error::SourceError::permanent("example"))
//! # });
//! // The same 256-bit key on every replica, from your secret manager (64 hex digits here).
//! let key = EncryptionKey::from_hex(&std::env::var("SPAPI_RDT_FLEET_KEY")?)?;
//! let redis = RedisFleet::builder("redis://redis.internal:6379/")
//!     .encryption_key(key)
//!     .build()?;
//! let layer = RestrictedDataTokenLayer::builder(source)
//!     .fleet(redis) // the store and the rate limiter
//!     .build()?;
//! # let _ = layer;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```
//!
//! Other engines plug in through the two traits; both are object-safe and return boxed futures.
//! The layer bounds every call with [`Fleet::call_timeout`] whatever the implementation does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::TokenQuota;
use crate::catalog::OperationId;
use crate::error::FleetError;
use crate::resource::{Origin, SellerId, TokenRequest};

pub(crate) mod health;
pub(crate) mod record;
pub(crate) mod run;

#[cfg(feature = "redis")]
mod cipher;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use cipher::EncryptionKey;
#[cfg(feature = "redis")]
pub use redis::{RedisFleet, RedisFleetBuilder};

/// How long one call to a shared store may take, unless configured otherwise.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a replica works alone after a failed call, unless configured otherwise.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The future a [`SharedTokenStore`] or [`SharedRateLimiter`] returns.
pub type FleetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FleetError>> + Send + 'a>>;

/// What a token is stored under: its seller, its origin, and a canonical description of its scope
/// (the resources, their data elements, the target application). No part of it is secret.
///
/// Two replicas configured alike give equal keys for equal token requests. A store that wants short
/// keys should digest [`name`](Self::name) (the Redis store keeps the seller readable and digests the
/// rest with SHA-256).
///
/// ```
/// use http::Method;
/// use spapi_rdt::catalog::DataElements;
/// use spapi_rdt::fleet::FleetKey;
/// use spapi_rdt::{Region, RestrictedResource, SellerId, TokenRequest};
///
/// let request = TokenRequest::new(
///     SellerId::new("A2EUQ1WTGCTBG2"),
///     Region::Europe.origin(),
///     [RestrictedResource::new(Method::GET, "/orders/v0/orders/{orderId}/address", DataElements::NONE)],
/// );
/// let key = FleetKey::for_request(&request);
/// assert_eq!(key.seller().as_str(), "A2EUQ1WTGCTBG2");
/// assert!(key.name().contains("/orders/v0/orders/{orderId}/address"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FleetKey {
    seller: SellerId,
    origin: Origin,
    name: Arc<str>,
}

impl FleetKey {
    /// The key of the token that answers `request`.
    pub fn for_request(request: &TokenRequest) -> Self {
        FleetKey::build(request, None)
    }

    /// The key of a bundled token: the request of a bundle, and the catalogue indexes of the
    /// operations in it (a token's record names operations by index, so the indexes are part of
    /// the key).
    pub(crate) fn for_bundle(request: &TokenRequest, operations: &[OperationId]) -> Self {
        FleetKey::build(request, Some(operations))
    }

    fn build(request: &TokenRequest, operations: Option<&[OperationId]>) -> Self {
        use std::fmt::Write;
        let mut name = String::with_capacity(64 + 48 * request.resources().len());
        // `fmt::Write` for `String` never fails.
        let _ = write!(
            name,
            "v1|seller={}|origin={}|target={}",
            request.seller(),
            request.origin(),
            request.target_application().unwrap_or("")
        );
        for resource in request.resources() {
            let _ = write!(name, "|{} {}", resource.method(), resource.path());
            for (i, element) in resource.data_elements().iter().enumerate() {
                name.push(if i == 0 { ' ' } else { ',' });
                name.push_str(element.as_str());
            }
        }
        if let Some(ops) = operations {
            name.push_str("|bundle=");
            for (i, op) in ops.iter().enumerate() {
                if i > 0 {
                    name.push(',');
                }
                let _ = write!(name, "{}", op.to_bits());
            }
        }
        FleetKey {
            seller: request.seller().clone(),
            origin: request.origin().clone(),
            name: name.into(),
        }
    }

    /// The seller.
    pub fn seller(&self) -> &SellerId {
        &self.seller
    }

    /// The origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The canonical description of the whole key (seller, origin, target application, resources),
    /// with a version prefix. It can be long: up to 50 resources.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

/// What the shared store keeps for a key: the token and its deadlines, serialized by the layer,
/// and how long the store should keep it (or, read back, how long it has left).
///
/// **The bytes hold the token in clear.** A store must protect them at rest (the Redis store
/// encrypts them) and never log them; `Debug` shows only the length. A record zeroes its bytes
/// when dropped (with `zeroize` under the `redis` feature; otherwise by overwriting them, which
/// the optimizer is kept from removing).
#[derive(Clone)]
pub struct TokenRecord {
    bytes: Vec<u8>,
    ttl: Duration,
}

impl TokenRecord {
    /// A record as a store read it back: the bytes the layer gave it and the time left before it
    /// expires.
    pub fn new(bytes: Vec<u8>, ttl: Duration) -> Self {
        TokenRecord { bytes, ttl }
    }

    /// The serialized token (secret).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialized token (secret), consuming the record. The caller takes over the duty of
    /// zeroing them.
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    /// When storing: keep the record this long and no longer. When read back: its time left.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Drop for TokenRecord {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        zeroize::Zeroize::zeroize(&mut self.bytes);
        #[cfg(not(feature = "redis"))]
        {
            self.bytes.fill(0);
            std::hint::black_box(&self.bytes);
        }
    }
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRecord")
            .field(
                "bytes",
                &format_args!("<{} bytes redacted>", self.bytes.len()),
            )
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A shared rate limiter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The call may go now (the cell is taken).
    Granted,
    /// No cell is free: ask again after this long.
    RetryAfter(Duration),
}

/// Where replicas share tokens, and the lease that makes one of them fetch each token.
///
/// Implementations must be cheap to call concurrently and must not log record bytes. Every method
/// is called at most a few times per token fetch, never per request.
pub trait SharedTokenStore: Send + Sync + 'static {
    /// The record stored under `key` and its time left, if there is one.
    fn get<'a>(&'a self, key: &'a FleetKey) -> FleetFuture<'a, Option<TokenRecord>>;

    /// Stores `record` under `key` for [`record.ttl()`](TokenRecord::ttl), replacing any other.
    fn put<'a>(&'a self, key: &'a FleetKey, record: TokenRecord) -> FleetFuture<'a, ()>;

    /// Takes the lease on `key` for `holder` (a random id per fetch) for `ttl`, unless another
    /// holder has it. Taking a lease one already holds extends it. `true` when `holder` holds it.
    fn try_lease<'a>(
        &'a self,
        key: &'a FleetKey,
        holder: &'a str,
        ttl: Duration,
    ) -> FleetFuture<'a, bool>;

    /// Gives back the lease on `key` if `holder` still holds it.
    fn release<'a>(&'a self, key: &'a FleetKey, holder: &'a str) -> FleetFuture<'a, ()>;
}

/// A rate limit on token calls that every replica shares, per seller and origin.
pub trait SharedRateLimiter: Send + Sync + 'static {
    /// Takes one cell of `quota` for `seller` on `origin` if one is free.
    fn acquire<'a>(
        &'a self,
        seller: &'a SellerId,
        origin: &'a Origin,
        quota: TokenQuota,
    ) -> FleetFuture<'a, Admission>;
}

/// A usage-plan bucket every replica shares: whose (the seller, or `None` for the application's
/// grantless calls) and which (the origin and the operation, as one name that is the same on every
/// replica).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PlanBucket {
    pub(crate) seller: Option<SellerId>,
    pub(crate) name: String,
}

/// What a replica asks of a shared usage-plan bucket, kept as a GCRA: its theoretical arrival time
/// moves `interval` on per request taken, and a request may go while that time is at most
/// `tolerance` ahead of now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlanAsk {
    pub(crate) interval: Duration,
    pub(crate) tolerance: Duration,
    /// The longest wait the request accepts; past it nothing is taken.
    pub(crate) max_wait: Duration,
    /// Whether the request takes a slot ahead (and waits for it), or only one free now.
    pub(crate) ahead: bool,
}

/// A shared usage-plan bucket's answer; waits count from when the answer arrives.
// Only the Redis store (feature `redis`) and the tests' store give one.
#[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlanSlot {
    /// The slot is taken: send after this wait.
    Taken(Duration),
    /// Nothing taken (a request that takes no slot ahead): ask again after this wait.
    Retry(Duration),
    /// Nothing taken: the wait would pass the request's `max_wait`.
    TooFar(Duration),
}

/// Usage-plan buckets every replica shares ([`RedisFleet`] is one).
pub(crate) trait SharedBuckets: Send + Sync + 'static {
    /// Takes a slot of `bucket` as `ask` says.
    fn take<'a>(&'a self, bucket: &'a PlanBucket, ask: PlanAsk) -> FleetFuture<'a, PlanSlot>;

    /// Empties `bucket` for `empty_for` from now (Amazon answered 429).
    fn drain<'a>(&'a self, bucket: &'a PlanBucket, empty_for: Duration) -> FleetFuture<'a, ()>;
}

impl<T: SharedTokenStore + ?Sized> SharedTokenStore for Arc<T> {
    fn get<'a>(&'a self, key: &'a FleetKey) -> FleetFuture<'a, Option<TokenRecord>> {
        (**self).get(key)
    }
    fn put<'a>(&'a self, key: &'a FleetKey, record: TokenRecord) -> FleetFuture<'a, ()> {
        (**self).put(key, record)
    }
    fn try_lease<'a>(
        &'a self,
        key: &'a FleetKey,
        holder: &'a str,
        ttl: Duration,
    ) -> FleetFuture<'a, bool> {
        (**self).try_lease(key, holder, ttl)
    }
    fn release<'a>(&'a self, key: &'a FleetKey, holder: &'a str) -> FleetFuture<'a, ()> {
        (**self).release(key, holder)
    }
}

impl<T: SharedRateLimiter + ?Sized> SharedRateLimiter for Arc<T> {
    fn acquire<'a>(
        &'a self,
        seller: &'a SellerId,
        origin: &'a Origin,
        quota: TokenQuota,
    ) -> FleetFuture<'a, Admission> {
        (**self).acquire(seller, origin, quota)
    }
}

/// Fleet mode's configuration: the shared store, the shared limiter and their timings. Give it to
/// [`RestrictedDataTokenLayerBuilder::fleet`](crate::RestrictedDataTokenLayerBuilder::fleet).
///
/// ```
/// use std::time::Duration;
/// use spapi_rdt::fleet::{Admission, Fleet, FleetFuture, FleetKey, SharedRateLimiter, SharedTokenStore, TokenRecord};
/// use spapi_rdt::{Origin, SellerId, TokenQuota};
///
/// // A stand-in that has nothing and always admits: your engine goes here.
/// struct Nothing;
/// impl SharedTokenStore for Nothing {
///     fn get<'a>(&'a self, _: &'a FleetKey) -> FleetFuture<'a, Option<TokenRecord>> {
///         Box::pin(async { Ok(None) })
///     }
///     fn put<'a>(&'a self, _: &'a FleetKey, _: TokenRecord) -> FleetFuture<'a, ()> {
///         Box::pin(async { Ok(()) })
///     }
///     fn try_lease<'a>(&'a self, _: &'a FleetKey, _: &'a str, _: Duration) -> FleetFuture<'a, bool> {
///         Box::pin(async { Ok(true) })
///     }
///     fn release<'a>(&'a self, _: &'a FleetKey, _: &'a str) -> FleetFuture<'a, ()> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// impl SharedRateLimiter for Nothing {
///     fn acquire<'a>(&'a self, _: &'a SellerId, _: &'a Origin, _: TokenQuota) -> FleetFuture<'a, Admission> {
///         Box::pin(async { Ok(Admission::Granted) })
///     }
/// }
/// let fleet = Fleet::new(Nothing, Nothing)
///     .lease_ttl(Duration::from_secs(10))
///     .retry_after(Duration::from_secs(2));
/// # let _ = fleet;
/// ```
#[derive(Clone)]
pub struct Fleet {
    pub(crate) store: Arc<dyn SharedTokenStore>,
    pub(crate) limiter: Arc<dyn SharedRateLimiter>,
    pub(crate) lease_ttl: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) retry_after: Duration,
}

impl Fleet {
    /// Fleet mode on `store` and `limiter` (often one value implementing both, cloned).
    pub fn new(store: impl SharedTokenStore, limiter: impl SharedRateLimiter) -> Self {
        Fleet {
            store: Arc::new(store),
            limiter: Arc::new(limiter),
            lease_ttl: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// How long a fetch lease lasts unless its holder renews it (it does, every third of this,
    /// while its fetch runs). A replica that dies holding a lease delays the others by at most this.
    /// Default: 5 s.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How often a replica waiting for another one's fetch looks in the store, on average (each
    /// pause is jittered between half and one and a half of it). Default: 50 ms.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The longest any one call to the store or the limiter may take before it counts as failed.
    /// Default: 200 ms.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// After a failed call, how long this replica works alone (its own cache and limiter) before it
    /// tries the shared store again. Default: 5 s.
    #[must_use]
    pub fn retry_after(mut self, period: Duration) -> Self {
        self.retry_after = period;
        self
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("lease_ttl", &self.lease_ttl)
            .field("poll_interval", &self.poll_interval)
            .field("call_timeout", &self.call_timeout)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

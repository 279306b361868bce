//! [`PacingLayer`], its builder, its settings and its counters.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_layer::Layer;

use super::bucket::{Buckets, Shape};
use super::service::Pacing;
use crate::catalog::{PlanId, UsagePlan, UsagePlans};
use crate::error::BuildError;
use crate::fleet::health::StoreHealth;
use crate::fleet::{DEFAULT_CALL_TIMEOUT, DEFAULT_RETRY_AFTER, SharedBuckets};

/// What the layer does with a request whose path is no operation of the models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownOperations {
    /// Let it through untouched (not every request below the layer is an SP-API call).
    #[default]
    PassThrough,
    /// Pace it, per seller and origin, with [`UsagePlan::CONSERVATIVE_DEFAULT`] until an answer
    /// states its rate: for a stack that sends SP-API calls only, some of them newer than the
    /// models.
    DefaultPlan,
}

/// A tower layer that keeps every SP-API operation under its usage plan: see the
/// [module documentation](super).
///
/// Clones share one set of buckets and counters.
#[derive(Clone)]
pub struct PacingLayer {
    pub(super) shared: Arc<Shared>,
}

/// What every clone of the layer and its services share.
pub(super) struct Shared {
    pub(super) plans: UsagePlans,
    pub(super) overrides: HashMap<PlanId, UsagePlan>,
    pub(super) buckets: Mutex<Buckets>,
    pub(super) max_wait: Duration,
    pub(super) retries: u32,
    pub(super) unknown: UnknownOperations,
    pub(super) counters: Counters,
    /// Buckets shared with the other replicas, if any.
    pub(super) fleet: Option<FleetBuckets>,
}

/// The fleet's shared buckets, and what a replica does without them.
pub(super) struct FleetBuckets {
    pub(super) store: Arc<dyn SharedBuckets>,
    /// How many replicas share the buckets: alone, a replica paces at its share of each plan.
    pub(super) replicas: u32,
    pub(super) health: StoreHealth,
}

/// The counters behind [`PacingStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) paced: AtomicU64,
    pub(super) waited: AtomicU64,
    pub(super) wait_micros: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) learned: AtomicU64,
    pub(super) unpaced: AtomicU64,
    pub(super) fleet_fallbacks: AtomicU64,
}

/// What a [`PacingLayer`] has done since it was built (all clones together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacingStats {
    /// Requests that took a slot of a bucket (each retry too).
    pub paced: u64,
    /// Of those, the ones that had to wait for it.
    pub waited: u64,
    /// How long they waited, all together.
    pub wait_time: Duration,
    /// Requests failed at once because their wait would pass `max_wait`.
    pub refused: u64,
    /// 429 answers seen.
    pub throttled: u64,
    /// Requests sent again after a 429.
    pub retries: u64,
    /// Times an answer's `x-amzn-RateLimit-Limit` changed the rate a bucket goes by.
    pub learned: u64,
    /// Requests let through unpaced because every bucket was busy and no more may be kept.
    pub unpaced: u64,
    /// Buckets kept now.
    pub buckets: usize,
    /// Slots taken from this replica's own buckets at its share of the plan, because the fleet's
    /// shared buckets failed or were being left alone after a failure (fleet mode only).
    pub fleet_fallbacks: u64,
    /// Whether the last call to the fleet's shared buckets failed: this replica paces alone at
    /// its share until they answer again.
    pub fleet_alone: bool,
}

impl PacingLayer {
    /// A layer with the default settings and Amazon's plans.
    pub fn new() -> Self {
        PacingLayer::builder().into_layer()
    }

    /// A builder, to change the settings.
    pub fn builder() -> PacingLayerBuilder {
        PacingLayerBuilder::default()
    }

    /// What the layer has done so far.
    pub fn stats(&self) -> PacingStats {
        let c = &self.shared.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        PacingStats {
            paced: get(&c.paced),
            waited: get(&c.waited),
            wait_time: Duration::from_micros(get(&c.wait_micros)),
            refused: get(&c.refused),
            throttled: get(&c.throttled),
            retries: get(&c.retries),
            learned: get(&c.learned),
            unpaced: get(&c.unpaced),
            fleet_fallbacks: get(&c.fleet_fallbacks),
            fleet_alone: self
                .shared
                .fleet
                .as_ref()
                .is_some_and(|fleet| fleet.health.degraded()),
            buckets: self
                .shared
                .buckets
                .lock()
                .map_or(0, |buckets| buckets.len()),
        }
    }
}

impl Default for PacingLayer {
    fn default() -> Self {
        PacingLayer::new()
    }
}

impl fmt::Debug for PacingLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacingLayer")
            .field("max_wait", &self.shared.max_wait)
            .field("retries", &self.shared.retries)
            .field("unknown", &self.shared.unknown)
            .field("overrides", &self.shared.overrides.len())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for PacingLayer {
    type Service = Pacing<S>;

    fn layer(&self, inner: S) -> Pacing<S> {
        Pacing::new(inner, Arc::clone(&self.shared))
    }
}

/// Settings of a [`PacingLayer`]; from [`PacingLayer::builder`].
#[derive(Clone)]
pub struct PacingLayerBuilder {
    plans: UsagePlans,
    overrides: Vec<(String, String, UsagePlan)>,
    max_wait: Duration,
    retries: u32,
    max_buckets: usize,
    headroom: u32,
    unknown: UnknownOperations,
    fleet: Option<(Arc<dyn SharedBuckets>, u32)>,
}

impl fmt::Debug for PacingLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacingLayerBuilder")
            .field("overrides", &self.overrides.len())
            .field("max_wait", &self.max_wait)
            .field("retries", &self.retries)
            .field("max_buckets", &self.max_buckets)
            .field("unknown", &self.unknown)
            .field("replicas", &self.fleet.as_ref().map(|(_, n)| n))
            .finish_non_exhaustive()
    }
}

impl Default for PacingLayerBuilder {
    fn default() -> Self {
        PacingLayerBuilder {
            plans: UsagePlans::amazon(),
            overrides: Vec::new(),
            max_wait: Duration::from_secs(60),
            retries: 2,
            max_buckets: 10_000,
            headroom: 2,
            unknown: UnknownOperations::default(),
            fleet: None,
        }
    }
}

impl PacingLayerBuilder {
    /// The most retries after a 429 that [`retries`](Self::retries) accepts.
    pub const MAX_RETRIES: u32 = 5;

    /// Paces operation `name` of `api` (as [`UsagePlans::find`] names them) by `plan` instead of
    /// its model's, until an answer states another rate: for a plan Amazon raised for your
    /// application. An operation the catalogue does not know fails [`build`](Self::build).
    pub fn plan(mut self, api: &str, name: &str, plan: UsagePlan) -> Self {
        self.overrides.push((api.to_owned(), name.to_owned(), plan));
        self
    }

    /// How long a request may wait for its slot; past it the request fails at once with a
    /// [`PacingError`](crate::error::PacingError). Default: 60 s, an interval of the one-a-minute
    /// plans (`getOrders`, `getReportDocument`). At most a day.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many times a request is sent again after a 429 (when its body can be). Default: 2;
    /// at most [`MAX_RETRIES`](Self::MAX_RETRIES).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The most buckets kept at once. Default: 10,000. At least 1.
    pub fn max_buckets(mut self, max_buckets: usize) -> Self {
        self.max_buckets = max_buckets;
        self
    }

    /// What to do with a request whose path is no operation of the models. Default:
    /// [`UnknownOperations::PassThrough`].
    pub fn unknown_operations(mut self, unknown: UnknownOperations) -> Self {
        self.unknown = unknown;
        self
    }

    /// The most replicas [`fleet`](Self::fleet) accepts.
    pub const MAX_REPLICAS: u32 = 1024;

    /// Fleet mode: every replica's layer shares each bucket through `redis` (feature `redis`), so
    /// that `replicas` processes together stay under each plan, as one would. Each slot is one
    /// call to Redis (a Lua script on the server's clock, the seller's keys hash-tagged
    /// `{seller}`), bounded by 200 ms. When Redis fails or is slow, this replica paces alone at
    /// its share of each plan (the rate and the usable burst divided by `replicas`), counts it in
    /// [`PacingStats::fleet_fallbacks`], and tries Redis again after 5 s. `replicas` is from 1 to
    /// [`MAX_REPLICAS`](Self::MAX_REPLICAS); give the number of replicas you run (more is safe,
    /// fewer lets a fleet without Redis send past the plans).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use spapi_rdt::fleet::{EncryptionKey, RedisFleet};
    /// use spapi_rdt::pacing::PacingLayer;
    ///
    /// let key = EncryptionKey::from_hex(&std::env::var("SPAPI_RDT_FLEET_KEY")?)?;
    /// let redis = RedisFleet::builder("redis://redis.internal:6379/")
    ///     .encryption_key(key)
    ///     .build()?;
    /// let pacing = PacingLayer::builder().fleet(&redis, 3).build()?;
    /// # let _ = pacing;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn fleet(self, redis: &crate::fleet::RedisFleet, replicas: u32) -> Self {
        self.shared_buckets(Arc::new(redis.clone()), replicas)
    }

    /// Fleet mode on any shared buckets (the tests' in-memory ones).
    #[cfg(any(feature = "redis", test))]
    pub(crate) fn shared_buckets(mut self, store: Arc<dyn SharedBuckets>, replicas: u32) -> Self {
        self.fleet = Some((store, replicas));
        self
    }

    /// Builds the layer, or says which setting is out of range.
    pub fn build(self) -> Result<PacingLayer, BuildError> {
        let setting = |name, reason| Err(BuildError::Setting { name, reason });
        if self.max_wait > Duration::from_secs(86_400) {
            return setting("max_wait", "must be at most a day");
        }
        if self.retries > Self::MAX_RETRIES {
            return setting(
                "retries",
                "must be at most PacingLayerBuilder::MAX_RETRIES (5)",
            );
        }
        if self.max_buckets == 0 {
            return setting("max_buckets", "must be at least 1");
        }
        if let Some((_, replicas)) = &self.fleet
            && !(1..=Self::MAX_REPLICAS).contains(replicas)
        {
            return setting(
                "fleet",
                "replicas must be from 1 to PacingLayerBuilder::MAX_REPLICAS (1024)",
            );
        }
        let mut overrides = HashMap::new();
        for (api, name, plan) in &self.overrides {
            let Some(id) = self.plans.id_of(api, name) else {
                return setting("plan", "names no operation of the catalogue");
            };
            overrides.insert(id, *plan);
        }
        Ok(self.finish(overrides))
    }

    /// The defaults need no check.
    fn into_layer(self) -> PacingLayer {
        self.finish(HashMap::new())
    }

    fn finish(self, overrides: HashMap<PlanId, UsagePlan>) -> PacingLayer {
        let shape = Shape {
            headroom: self.headroom,
            urgent_share: 0.5,
        };
        PacingLayer {
            shared: Arc::new(Shared {
                plans: self.plans,
                overrides,
                buckets: Mutex::new(Buckets::new(self.max_buckets, shape)),
                max_wait: self.max_wait,
                retries: self.retries,
                unknown: self.unknown,
                counters: Counters::default(),
                fleet: self.fleet.map(|(store, replicas)| FleetBuckets {
                    store,
                    replicas,
                    health: StoreHealth::new(
                        "the shared usage-plan buckets",
                        "its share of each usage plan",
                        DEFAULT_CALL_TIMEOUT,
                        DEFAULT_RETRY_AFTER,
                    ),
                }),
            }),
        }
    }
}

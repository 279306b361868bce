//! The buckets: one GCRA per (seller, origin, operation), with reservations, in bounded memory.
//!
//! A bucket is kept as its *theoretical arrival time* (`tat`): the instant at which it would be
//! full again if nothing more were taken. A request that may spend the whole usable burst goes at
//! `max(now, tat - tolerance)` and moves `tat` one interval on; because it takes its slot when it
//! arrives, even one in the future, urgent requests go in the order they came. governor answers
//! "may I go now?" only, which cannot give a waiting request its place in line: hence this small
//! hand-written bucket.

use std::collections::HashMap;
use std::time::Duration;

use foldhash::fast::RandomState;
use http::uri::Authority;

use tokio::time::Instant;

use crate::catalog::{PlanId, UsagePlan};
use crate::resource::SellerId;
use crate::time;

/// Whose bucket: a seller's (or the application's, for a request with no seller), on one origin,
/// for one operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct BucketKey {
    pub(super) seller: Option<SellerId>,
    /// `None` for a request with a relative URI.
    pub(super) origin: Option<Host>,
    pub(super) operation: PlanId,
}

/// An origin's authority in lower case, compared and hashed as plain bytes: `Authority`'s own
/// `Hash` and `Eq` ignore case byte by byte, which costs more than the rest of a bucket lookup.
#[derive(Clone, Debug)]
pub(super) struct Host(Authority);

impl Host {
    /// `authority`, lowered when it has a capital letter (never, for the hosts SP-API clients use).
    pub(super) fn of(authority: &Authority) -> Host {
        let text = authority.as_str();
        if !text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Host(authority.clone());
        }
        // A lowered authority is still an authority; keep the original should that ever fail.
        Host(Authority::try_from(text.to_ascii_lowercase()).unwrap_or_else(|_| authority.clone()))
    }

    pub(super) fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::hash::Hash for Host {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Host {}

/// What a request is allowed of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Priority {
    /// Any slot of the usable burst, in order of arrival.
    Urgent,
    /// Only while the bucket holds more than the part kept for urgent requests; no reservation
    /// ahead, so a queue of background work never pushes urgent requests back.
    Background,
}

/// The outcome of asking a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// The slot is taken: send at this instant.
    At(Instant),
    /// A background request must ask again at this instant.
    Retry(Instant),
    /// The wait would be longer than the caller accepts; nothing was taken.
    TooFar(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tat: Instant,
    plan: UsagePlan,
    /// The rate Amazon's answers stated, which replaces the plan's.
    learned: Option<f64>,
}

impl Bucket {
    fn rate(&self) -> f64 {
        self.learned.unwrap_or(self.plan.rate_per_second())
    }

    fn interval(&self) -> Duration {
        // Rates are finite and above zero (UsagePlan and the clamp on learned rates see to it).
        Duration::try_from_secs_f64(1.0 / self.rate()).unwrap_or(time::FAR_FUTURE)
    }
}

/// How a table sizes its buckets.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// Slots of each burst never spent, so that a little forwarding jitter does not meet an empty
    /// bucket at Amazon.
    pub(super) headroom: u32,
    /// The share of the usable burst that background requests leave to urgent ones.
    pub(super) urgent_share: f64,
}

impl Shape {
    /// How many requests may go at once, after the headroom.
    fn usable(self, burst: u32) -> u32 {
        burst.saturating_sub(self.headroom).max(1)
    }

    /// How many of them background requests may spend.
    fn background(self, burst: u32) -> u32 {
        let usable = self.usable(burst);
        let kept = (f64::from(usable) * self.urgent_share).ceil() as u32;
        usable.saturating_sub(kept).max(1)
    }

    /// The GCRA of `bucket` for a request of `priority` at a `share` of the plan: the interval
    /// between requests, and how far ahead of now the bucket's time may be for one to go.
    fn gcra(self, bucket: &Bucket, priority: Priority, share: u32) -> (Duration, Duration) {
        let share = share.max(1);
        let interval = bucket.interval().saturating_mul(share);
        let slots = match priority {
            Priority::Urgent => self.usable(bucket.plan.burst()),
            Priority::Background => self.background(bucket.plan.burst()),
        };
        let slots = (slots / share).max(1);
        (interval, interval.saturating_mul(slots.saturating_sub(1)))
    }
}

/// Every bucket, at most `capacity` of them.
#[derive(Debug)]
pub(super) struct Buckets {
    /// Seeded at random per map: sellers and origins come from outside.
    buckets: HashMap<BucketKey, Bucket, RandomState>,
    capacity: usize,
    shape: Shape,
}

impl Buckets {
    pub(super) fn new(capacity: usize, shape: Shape) -> Self {
        Buckets {
            buckets: HashMap::default(),
            capacity,
            shape,
        }
    }

    /// Takes a slot of `key`'s bucket (made from `plan` if new) for a request that accepts
    /// waiting up to `max_wait`, at a `share` of the plan (1: all of it; `n`: the rate and the
    /// usable burst divided by `n`, a replica's share of a fleet's). `None` when the table is full
    /// of busy buckets: the caller lets the request through unpaced rather than fail it.
    pub(super) fn take(
        &mut self,
        key: &BucketKey,
        plan: UsagePlan,
        priority: Priority,
        now: Instant,
        max_wait: Duration,
        share: u32,
    ) -> Option<Slot> {
        let shape = self.shape;
        let bucket = self.bucket(key, plan, now)?;
        let (interval, tolerance) = shape.gcra(bucket, priority, share);
        let earliest = bucket
            .tat
            .checked_sub(tolerance)
            .map_or(now, |t| t.max(now));
        let wait = earliest.saturating_duration_since(now);
        if wait > max_wait {
            return Some(Slot::TooFar(wait));
        }
        if priority == Priority::Background && earliest > now {
            return Some(Slot::Retry(earliest));
        }
        bucket.tat = time::add(bucket.tat.max(earliest), interval);
        Some(Slot::At(earliest))
    }

    /// The interval and tolerance a shared bucket for `key` goes by: this table's bucket's (made
    /// from `plan` if new, so that a rate learned here counts), or `plan`'s when the table is full.
    pub(super) fn gcra(
        &mut self,
        key: &BucketKey,
        plan: UsagePlan,
        priority: Priority,
        now: Instant,
    ) -> (Duration, Duration) {
        let shape = self.shape;
        let fresh = Bucket {
            tat: now,
            plan,
            learned: None,
        };
        let bucket = self.bucket(key, plan, now).map_or(fresh, |bucket| *bucket);
        shape.gcra(&bucket, priority, 1)
    }

    /// Empties `key`'s bucket: Amazon answered 429, so its bucket is empty whatever ours said.
    /// Returns for how long: a usable burst of intervals (of `plan`, for a bucket not kept).
    pub(super) fn drain(&mut self, key: &BucketKey, plan: UsagePlan, now: Instant) -> Duration {
        let shape = self.shape;
        let full_burst = |bucket: &Bucket| {
            bucket
                .interval()
                .saturating_mul(shape.usable(bucket.plan.burst()))
        };
        match self.buckets.get_mut(key) {
            Some(bucket) => {
                let empty_for = full_burst(bucket);
                bucket.tat = bucket.tat.max(time::add(now, empty_for));
                empty_for
            }
            None => full_burst(&Bucket {
                tat: now,
                plan,
                learned: None,
            }),
        }
    }

    /// Records the rate Amazon stated for `key` (already bounded by the caller). True when it
    /// changed what the bucket believed.
    pub(super) fn learn(&mut self, key: &BucketKey, rate: f64) -> bool {
        match self.buckets.get_mut(key) {
            Some(bucket) if bucket.rate() != rate => {
                bucket.learned = Some(rate);
                true
            }
            _ => false,
        }
    }

    /// The rate `key`'s bucket goes by, if it exists.
    #[cfg(test)]
    pub(super) fn rate(&self, key: &BucketKey) -> Option<f64> {
        self.buckets.get(key).map(Bucket::rate)
    }

    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }

    fn bucket(&mut self, key: &BucketKey, plan: UsagePlan, now: Instant) -> Option<&mut Bucket> {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.capacity {
                // A full bucket (its tat passed) is the same as a new one, bar a learned rate that
                // the next answer teaches again: forgetting it loses nothing that matters.
                self.buckets.retain(|_, bucket| bucket.tat > now);
                if self.buckets.len() >= self.capacity {
                    return None;
                }
            }
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tat: now,
                    plan,
                    learned: None,
                },
            );
        }
        self.buckets.get_mut(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: Duration = Duration::from_secs(3600);

    fn key(seller: &str) -> BucketKey {
        BucketKey {
            seller: Some(SellerId::new(seller)),
            origin: Some(Host::of(&Authority::from_static(
                "sellingpartnerapi-na.amazon.com",
            ))),
            operation: PlanId::at(7),
        }
    }

    fn at(slot: Option<Slot>) -> Instant {
        match slot {
            Some(Slot::At(t)) => t,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    fn shape(headroom: u32) -> Shape {
        Shape {
            headroom,
            urgent_share: 0.5,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_usable_burst_goes_at_once_then_one_an_interval_in_order() {
        let plan = UsagePlan::new(0.5, 5).unwrap();
        let mut buckets = Buckets::new(10, shape(2));
        let now = Instant::now();
        let slots: Vec<Duration> = (0..6)
            .map(|_| at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1)) - now)
            .collect();
        let s = Duration::from_secs;
        // Burst 5 less 2 of headroom: 3 at once, then every 2 s.
        assert_eq!(slots, [s(0), s(0), s(0), s(2), s(4), s(6)]);
        // Another seller has a bucket of its own.
        assert_eq!(
            at(buckets.take(&key("b"), plan, Priority::Urgent, now, NO_LIMIT, 1)),
            now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_limit_takes_nothing() {
        let plan = UsagePlan::new(1.0, 1).unwrap();
        let mut buckets = Buckets::new(10, shape(0));
        let now = Instant::now();
        let limit = Duration::from_millis(1500);
        assert_eq!(
            at(buckets.take(&key("a"), plan, Priority::Urgent, now, limit, 1)),
            now
        );
        let second = at(buckets.take(&key("a"), plan, Priority::Urgent, now, limit, 1));
        assert_eq!(second - now, Duration::from_secs(1));
        assert_eq!(
            buckets.take(&key("a"), plan, Priority::Urgent, now, limit, 1),
            Some(Slot::TooFar(Duration::from_secs(2)))
        );
        // The refusal took no slot: a second later the next slot is still 2 s after the start.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            at(buckets.take(&key("a"), plan, Priority::Urgent, later, limit, 1)),
            now + Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_requests_leave_the_urgent_share_and_reserve_nothing_ahead() {
        let plan = UsagePlan::new(1.0, 10).unwrap();
        let mut buckets = Buckets::new(10, shape(2));
        let now = Instant::now();
        // 8 usable, half kept for urgent requests: background gets 4 at once.
        for _ in 0..4 {
            assert_eq!(
                at(buckets.take(&key("a"), plan, Priority::Background, now, NO_LIMIT, 1)),
                now
            );
        }
        let retry = buckets.take(&key("a"), plan, Priority::Background, now, NO_LIMIT, 1);
        assert_eq!(retry, Some(Slot::Retry(now + Duration::from_secs(1))));
        // Urgent requests still have their four at once.
        for _ in 0..4 {
            assert_eq!(
                at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1)),
                now
            );
        }
        // The background retry finds the bucket lower now, and must wait longer.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            buckets.take(&key("a"), plan, Priority::Background, later, NO_LIMIT, 1),
            Some(Slot::Retry(now + Duration::from_secs(5)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_bucket_gives_its_next_slot_an_interval_later() {
        let plan = UsagePlan::new(2.0, 10).unwrap();
        let mut buckets = Buckets::new(10, shape(0));
        let now = Instant::now();
        at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        buckets.drain(&key("a"), plan, now);
        assert_eq!(
            at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1)) - now,
            Duration::from_millis(500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_learned_rate_replaces_the_plans() {
        let plan = UsagePlan::new(1.0, 1).unwrap();
        let mut buckets = Buckets::new(10, shape(0));
        let now = Instant::now();
        at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        assert!(buckets.learn(&key("a"), 0.25));
        assert!(!buckets.learn(&key("a"), 0.25));
        assert_eq!(buckets.rate(&key("a")), Some(0.25));
        // The slot already taken moved tat by the old interval; the next one takes the new.
        let next = at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        let after = at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        assert_eq!(after - next, Duration::from_secs(4));
    }

    #[test]
    fn an_origin_is_one_bucket_whatever_its_case() {
        let lower = Host::of(&Authority::from_static("sellingpartnerapi-na.amazon.com"));
        let upper = Host::of(&Authority::from_static("SellingPartnerAPI-NA.amazon.com"));
        assert_eq!(lower, upper);
        let state = RandomState::default();
        assert_eq!(
            std::hash::BuildHasher::hash_one(&state, &lower),
            std::hash::BuildHasher::hash_one(&state, &upper)
        );
        assert_eq!(upper.as_str(), "sellingpartnerapi-na.amazon.com");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_idle_buckets_go_first() {
        let plan = UsagePlan::new(1.0, 1).unwrap();
        let mut buckets = Buckets::new(2, shape(0));
        let now = Instant::now();
        at(buckets.take(&key("a"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        at(buckets.take(&key("b"), plan, Priority::Urgent, now, NO_LIMIT, 1));
        // Both busy: a third seller is not paced rather than refused.
        assert_eq!(
            buckets.take(&key("c"), plan, Priority::Urgent, now, NO_LIMIT, 1),
            None
        );
        assert_eq!(buckets.len(), 2);
        // Once they are full again they make room.
        let later = now + Duration::from_secs(2);
        at(buckets.take(&key("c"), plan, Priority::Urgent, later, NO_LIMIT, 1));
        assert_eq!(buckets.len(), 1);
    }
}

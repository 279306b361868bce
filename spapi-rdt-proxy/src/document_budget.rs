//! How many report-document tokens a seller's clients may make the proxy fetch.
//!
//! Every `getReportDocument` token is for one document's path, so distinct document ids, real or
//! made up, each cost a call to the Tokens API, whose quota (1/s, burst 10 per seller) the
//! generic operations need too. The budget keeps documents to a share of it, so that they come
//! after the generic operations:
//!
//! - a seller's document-token fetches take cells from a bucket of their own, smaller than the
//!   Tokens API's (5 at once and 12 a minute by default): past it a marked document is answered 429
//!   and an unmarked one goes without the replay that would fetch its token;
//! - a document whose token was granted in the last 55 minutes costs nothing again (its token is
//!   cached);
//! - a document whose token, or whose replay with a token, was refused is remembered for an hour
//!   and not asked about again.
//!
//! The buckets are keyed by seller, and sellers are the configured ones, so memory is bounded; the
//! document ids are held in bounded, expiring sets.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use spapi_rdt::SellerId;
use tokio::time::Instant;

use crate::reports::ExpiringIds;

/// How long a granted document costs nothing again: under the hour an RDT lives.
const GRANTED_FOR: Duration = Duration::from_secs(55 * 60);
/// How long a refused document is not asked about again.
const REFUSED_FOR: Duration = Duration::from_secs(3600);

/// The budget's settings (config `[reports]`, flag `--document-tokens-per-minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocumentTokenLimits {
    /// Document-token fetches a seller may start each minute, once the burst is spent.
    pub(crate) per_minute: u32,
    /// Document-token fetches a seller may start at once.
    pub(crate) burst: u32,
    /// How many granted and refused document ids are remembered (each).
    pub(crate) remembered: usize,
}

impl Default for DocumentTokenLimits {
    fn default() -> Self {
        DocumentTokenLimits {
            per_minute: 12,
            burst: 5,
            remembered: 10_000,
        }
    }
}

/// What a document's next token fetch may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Its token was granted lately: it is cached, nothing is spent.
    Free,
    /// A cell was taken; give it back if no token is fetched after all.
    Taken,
}

/// The per-seller document-token budget, and the documents granted and refused lately.
#[derive(Debug)]
pub(crate) struct DocumentBudget {
    limits: DocumentTokenLimits,
    buckets: Mutex<HashMap<SellerId, Bucket>>,
    granted: ExpiringIds,
    refused: ExpiringIds,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    cells: f64,
    at: Instant,
}

impl DocumentBudget {
    pub(crate) fn new(limits: DocumentTokenLimits) -> Self {
        DocumentBudget {
            limits,
            buckets: Mutex::new(HashMap::new()),
            granted: ExpiringIds::new(limits.remembered, GRANTED_FOR),
            refused: ExpiringIds::new(limits.remembered, REFUSED_FOR),
        }
    }

    fn burst(&self) -> f64 {
        f64::from(self.limits.burst.max(1))
    }

    fn per_second(&self) -> f64 {
        f64::from(self.limits.per_minute.max(1)) / 60.0
    }

    /// Takes a cell for a token fetch of document `id` for `seller`, unless its token was granted
    /// lately; `Err` holds how long until a cell is free.
    pub(crate) fn take(&self, seller: &SellerId, id: &str) -> Result<Charge, Duration> {
        if self.granted.contains(id) {
            return Ok(Charge::Free);
        }
        let now = Instant::now();
        let (burst, rate) = (self.burst(), self.per_second());
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(seller.clone()).or_insert(Bucket {
            cells: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.cells = (bucket.cells + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.cells >= 1.0 {
            bucket.cells -= 1.0;
            Ok(Charge::Taken)
        } else {
            let wait = (1.0 - bucket.cells) / rate;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(60)))
        }
    }

    /// Returns a cell [`take`](Self::take) took for a fetch that did not happen.
    pub(crate) fn give_back(&self, seller: &SellerId) {
        let burst = self.burst();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(seller) {
            bucket.cells = (bucket.cells + 1.0).min(burst);
        }
    }

    /// A token for document `id` was granted (and is cached).
    pub(crate) fn granted(&self, id: &str) {
        self.granted.insert(id);
    }

    /// A token for document `id`, or its replay with one, was refused.
    pub(crate) fn refused(&self, id: &str) {
        self.refused.insert(id);
    }

    /// Whether document `id` was refused lately.
    pub(crate) fn was_refused(&self, id: &str) -> bool {
        self.refused.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_seller_spends_its_burst_then_a_cell_every_five_seconds() {
        let budget = DocumentBudget::new(DocumentTokenLimits::default());
        let (a, b) = (SellerId::new("A"), SellerId::new("B"));
        for n in 0..5 {
            assert_eq!(budget.take(&a, &format!("doc-{n}")), Ok(Charge::Taken));
        }
        assert_eq!(budget.take(&a, "doc-5"), Err(Duration::from_secs(5)));
        assert_eq!(budget.take(&b, "doc-5"), Ok(Charge::Taken), "per seller");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.take(&a, "doc-5"), Ok(Charge::Taken));
        assert!(budget.take(&a, "doc-6").is_err());
        // A cell given back serves the next document; the bucket never grows past its burst.
        budget.give_back(&a);
        assert_eq!(budget.take(&a, "doc-6"), Ok(Charge::Taken));
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..10 {
            budget.give_back(&a);
        }
        for n in 0..5 {
            assert_eq!(budget.take(&a, &format!("x-{n}")), Ok(Charge::Taken));
        }
        assert!(budget.take(&a, "x-5").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn granted_documents_are_free_and_refused_ones_remembered_for_an_hour() {
        let budget = DocumentBudget::new(DocumentTokenLimits {
            burst: 1,
            ..DocumentTokenLimits::default()
        });
        let a = SellerId::new("A");
        assert_eq!(budget.take(&a, "doc-1"), Ok(Charge::Taken));
        budget.granted("doc-1");
        assert_eq!(budget.take(&a, "doc-1"), Ok(Charge::Free));
        assert!(budget.take(&a, "doc-2").is_err());
        budget.refused("doc-3");
        assert!(budget.was_refused("doc-3"));
        tokio::time::advance(GRANTED_FOR).await;
        assert_eq!(
            budget.take(&a, "doc-1"),
            Ok(Charge::Taken),
            "granted expired"
        );
        tokio::time::advance(REFUSED_FOR - GRANTED_FOR).await;
        assert!(!budget.was_refused("doc-3"));
    }

    #[test]
    fn the_memory_of_ids_is_bounded() {
        let budget = DocumentBudget::new(DocumentTokenLimits {
            remembered: 3,
            ..DocumentTokenLimits::default()
        });
        for n in 0..10 {
            budget.refused(&format!("doc-{n}"));
        }
        assert_eq!(budget.refused.len(), 3);
        assert!(budget.was_refused("doc-9") && !budget.was_refused("doc-6"));
    }
}

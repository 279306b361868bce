//! Pacing: every SP-API operation kept under its usage plan, per seller, before Amazon says 429.
//!
//! Amazon limits each operation with a token bucket per selling partner and application: a
//! *rate* (requests a second) and a *burst* ([`UsagePlan`](crate::catalog::UsagePlan)). A
//! [`PacingLayer`] keeps the same bucket on the caller's side, for each (seller, origin, operation),
//! and holds a request until its bucket has room, so that Amazon never sees more than the plan.
//!
//! # The contract
//! - **Which requests.** Each request is classified against every operation of Amazon's models
//!   ([`UsagePlans`](crate::catalog::UsagePlans)). A path of no model operation passes untouched
//!   (or, with [`UnknownOperations::DefaultPlan`], is paced by the conservative default plan). The
//!   seller is the request's [`SellerId`](crate::SellerId) extension; a request without one is
//!   paced per application, as Amazon paces grantless operations.
//! - **Which plan.** The model's, or the conservative default for an operation whose model states
//!   none, or an override of yours ([`PacingLayerBuilder::plan`]); and once Amazon's answers state
//!   one (`x-amzn-RateLimit-Limit` on 2xx, 400 and 404 answers), the rate they state, per seller
//!   and operation. A stated rate is believed within bounds: zero, negative or unreadable values
//!   are ignored, and others are kept between the strictest plan of the models (0.0056 a second,
//!   so an answer can never stop a seller for longer than three minutes a request) and 100 a
//!   second (above every plan of the models, so an answer can never flood Amazon).
//! - **Headroom.** Two requests of each burst are never spent (one, for a burst of two; none, for
//!   a burst of one): pacing exactly at the plan, a millisecond of jitter on the way to Amazon
//!   meets an empty bucket there. The cost is a burst two smaller; the steady rate is the plan's.
//! - **In order, bounded.** Requests take their slot in the order they arrive and wait for it; a
//!   request that would wait longer than [`max_wait`](PacingLayerBuilder::max_wait) (60 s by
//!   default) fails at once with a [`PacingError`](crate::error::PacingError) naming the
//!   operation and the wait, takes no slot, and nothing is sent. A waiting request holds no
//!   capacity of the service below: the layer drives a clone of it to readiness only once the
//!   request's slot has come.
//! - **Background work.** A request marked [`Background`](crate::control::Background) (polling,
//!   reports, anything that can wait) may not spend the half of the burst kept for the others,
//!   and takes no slot ahead: it goes when the bucket holds more than that half.
//! - **On a 429 anyway** (another application of the seller, a plan lowered): the bucket is
//!   drained, and a request whose body can be sent again ([`ReplayBody`](crate::recover::ReplayBody))
//!   is retried at its next slot plus up to a second of jitter, at most
//!   [`retries`](PacingLayerBuilder::retries) times (2 by default) and never past `max_wait`; then
//!   the 429 is returned as Amazon sent it.
//! - **Bounded memory.** At most [`max_buckets`](PacingLayerBuilder::max_buckets) buckets (10,000
//!   by default). A full bucket is forgotten when room is needed (it is the same as a new one);
//!   when every bucket is busy, a request for a new one goes unpaced and is counted
//!   ([`PacingStats::unpaced`]).
//!
//! - **Fleet-wide.** With [`PacingLayerBuilder::fleet`] (feature `redis`), replicas share each
//!   bucket through Redis, so that N processes together stay under each plan as one would: a
//!   slot is one Lua script on the server's clock, under a key hash-tagged by the seller. When
//!   Redis fails or is slow (200 ms), a replica paces alone at its share of each plan (rate and
//!   usable burst divided by the number of replicas), counts it
//!   ([`PacingStats::fleet_fallbacks`]), and tries Redis again 5 s later. A 429 drains the shared
//!   bucket too; rates learned from the answers stay per replica (each sees the same header).
//!
//! Clones of a layer share its buckets, and so does its reqwest-middleware front end
//! ([`PacingLayer::middleware`], feature `reqwest-middleware`). The clock is tokio's, so tests run
//! on paused time.
//!
//! ```
//! use std::time::Duration;
//! use spapi_rdt::pacing::PacingLayer;
//!
//! let pacing = PacingLayer::builder()
//!     .max_wait(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! let client = tower::ServiceBuilder::new()
//!     .layer(pacing.clone())
//!     .service_fn(|_request: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = client;
//! assert_eq!(pacing.stats().paced, 0);
//! ```

mod bucket;
pub mod future;
mod layer;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod paced;
mod rate;
mod service;
#[cfg(test)]
mod tests;

pub use layer::{PacingLayer, PacingLayerBuilder, PacingStats, UnknownOperations};
#[cfg(feature = "reqwest-middleware")]
pub use middleware::PacingMiddleware;
pub use paced::PacingReport;
pub use service::Pacing;

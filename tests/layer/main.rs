//! The `layer` tests, one module per subject.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod bundle;
mod delegate;
mod hardening;
mod hostile;
mod layer;
mod memory;
mod pacing;
mod readiness;
mod readme_promises;
mod refusals;
mod soak;
mod stale_race;

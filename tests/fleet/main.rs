//! The `fleet` tests, one module per subject.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod deployments;
mod fleet;
mod usage_plans;

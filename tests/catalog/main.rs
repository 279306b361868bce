//! The `catalog` tests, one module per subject.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod catalog_models;
mod matcher_reference;
mod usage_plans;

//! The `emulator` tests, one module per subject.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

mod emulator;
mod end_to_end;
mod examples;
mod faults;
mod security;
mod usage_plans;

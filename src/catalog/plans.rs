//! Usage plans: the rate limit Amazon applies to every SP-API operation, as its models state it.
//!
//! The rows themselves are generated into `usage_plans.rs` by `cargo xtask usage-plans`; this file
//! holds the types around them. Classifying a request against every row lives with the other
//! matcher ([`crate::matcher`]), next to the radix tree it shares with the restricted catalogue.

use std::fmt;

use http::Method;

use super::usage_plans;
use crate::error::UsagePlanError;

/// The token bucket Amazon applies to an operation: `rate` requests a second, refilling a bucket
/// of `burst` requests.
///
/// ```
/// use spapi_rdt::catalog::UsagePlan;
/// use spapi_rdt::error::UsagePlanError;
///
/// let plan = UsagePlan::new(0.5, 30)?;
/// assert_eq!((plan.rate_per_second(), plan.burst()), (0.5, 30));
/// assert_eq!(UsagePlan::new(0.0, 30), Err(UsagePlanError::Rate));
/// assert_eq!(UsagePlan::new(0.5, 0), Err(UsagePlanError::Burst));
/// # Ok::<(), UsagePlanError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsagePlan {
    rate: f64,
    burst: u32,
}

impl UsagePlan {
    /// The plan to assume for an operation whose model states none, until Amazon's answers (the
    /// `x-amzn-RateLimit-Limit` header) tell the real one: the lowest rate and the lowest burst of
    /// all the plans the models state. In this snapshot of the models that is 0.0056 requests a
    /// second, one request every three minutes (Orders 2026-01-01 `searchOrders`), and a burst of
    /// 1 (that of many operations, such as `rotateApplicationClientSecret` and Merchant
    /// Fulfillment's `getShipment`).
    ///
    /// An operation the models say nothing about is thereby treated as if it were as strict as the
    /// strictest one they describe, on both counts; a burst of 1 still lets the first call go at
    /// once, so that its answer can correct the guess. `cargo xtask usage-plans` derives the value
    /// from the models along with the rows, and a test checks it against them.
    pub const CONSERVATIVE_DEFAULT: UsagePlan = usage_plans::LOWEST;

    /// A plan of `rate` requests a second and a bucket of `burst` requests. The rate must be a
    /// finite number above zero ([`UsagePlanError::Rate`]) and the burst at least 1
    /// ([`UsagePlanError::Burst`]).
    pub const fn new(rate: f64, burst: u32) -> Result<UsagePlan, UsagePlanError> {
        // NaN is not finite, and fails every comparison besides.
        let usable = rate.is_finite() && rate > 0.0;
        if !usable {
            return Err(UsagePlanError::Rate);
        }
        if burst == 0 {
            return Err(UsagePlanError::Burst);
        }
        Ok(UsagePlan { rate, burst })
    }

    /// A plan from the generated table, whose values the generator and the tests have checked.
    pub(super) const fn from_model(rate: f64, burst: u32) -> UsagePlan {
        UsagePlan { rate, burst }
    }

    /// How many requests a second the bucket refills.
    pub const fn rate_per_second(&self) -> f64 {
        self.rate
    }

    /// How many requests the bucket holds: how many can go at once after a quiet spell.
    pub const fn burst(&self) -> u32 {
        self.burst
    }
}

/// One operation of Amazon's models and the usage plan its description states, if any: one row of
/// [`UsagePlans`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedOperation {
    api: &'static str,
    name: &'static str,
    method: Method,
    template: &'static str,
    plan: Option<UsagePlan>,
    model_rate: Option<&'static str>,
}

impl PlannedOperation {
    /// A generated row whose model states a plan: the rate as the model writes it, the same rate
    /// parsed, and the burst.
    pub(super) const fn planned(
        api: &'static str,
        name: &'static str,
        method: Method,
        template: &'static str,
        model_rate: &'static str,
        rate: f64,
        burst: u32,
    ) -> Self {
        PlannedOperation {
            api,
            name,
            method,
            template,
            plan: Some(UsagePlan::from_model(rate, burst)),
            model_rate: Some(model_rate),
        }
    }

    /// A generated row whose model states no plan.
    pub(super) const fn unplanned(
        api: &'static str,
        name: &'static str,
        method: Method,
        template: &'static str,
    ) -> Self {
        PlannedOperation {
            api,
            name,
            method,
            template,
            plan: None,
            model_rate: None,
        }
    }

    /// The API the operation belongs to, named as the restricted catalogue names its APIs, such as
    /// `"Orders v0"` or `"Vendor DF Shipping 2021-12-28"`.
    pub fn api(&self) -> &str {
        self.api
    }

    /// The operation's `operationId` in the model, such as `"getOrderItems"`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template, as the model writes it.
    pub fn template(&self) -> &str {
        self.template
    }

    /// The plan the model's description states; `None` when it states none (no table, or a table
    /// without values). [`UsagePlan::CONSERVATIVE_DEFAULT`] is the plan to assume then.
    pub fn plan(&self) -> Option<UsagePlan> {
        self.plan
    }

    /// The rate exactly as the model's table writes it (`"0.0167"`, `".5"`), when it states one.
    pub fn model_rate(&self) -> Option<&str> {
        self.model_rate
    }
}

/// Names one operation of [`UsagePlans`]: comparable and hashable, for keeping state per
/// operation. It names nothing in a restricted [`Catalog`](super::Catalog), whose operations have
/// [`OperationId`](super::OperationId)s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanId(u32);

impl PlanId {
    /// Stands for every path of no model operation, when such paths are paced.
    pub(crate) const UNKNOWN: PlanId = PlanId(u32::MAX);

    /// The id of the operation at `index` (the table holds far fewer than `u32::MAX`).
    pub(crate) fn at(index: usize) -> Self {
        PlanId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// The operation's position in the table.
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// Every operation of Amazon's models with the usage plan its description states: generated from
/// the models in the repository by `cargo xtask usage-plans` and checked against them by a test.
///
/// ```
/// use http::Method;
/// use spapi_rdt::catalog::{UsagePlan, UsagePlans};
///
/// let plans = UsagePlans::amazon();
/// let (id, op) = plans
///     .classify(&Method::GET, "/orders/v0/orders/902-3159896-1390916/orderItems")
///     .unwrap();
/// assert_eq!((op.api(), op.name()), ("Orders v0", "getOrderItems"));
/// assert_eq!(plans.get(id), Some(op));
///
/// let plan = op.plan().unwrap_or(UsagePlan::CONSERVATIVE_DEFAULT);
/// assert_eq!((plan.rate_per_second(), plan.burst()), (0.5, 30));
/// assert_eq!(op.model_rate(), Some("0.5"));
///
/// // Some operations state no plan: assume the conservative default until Amazon's answers tell.
/// let wallet = plans.find("Seller Wallet 2024-03-01", "listAccounts").unwrap();
/// assert_eq!(wallet.plan(), None);
/// ```
#[derive(Clone, Copy)]
pub struct UsagePlans {
    operations: &'static [PlannedOperation],
}

impl UsagePlans {
    /// The operations of the models in this crate's repository (see its `spapi-models/SOURCE`):
    /// 370 operations of 66 APIs, 300 of which state a usage plan.
    pub fn amazon() -> Self {
        UsagePlans {
            operations: &usage_plans::OPERATIONS,
        }
    }

    /// The operations, by model, path template and method.
    pub fn operations(&self) -> &[PlannedOperation] {
        self.operations
    }

    /// The operation `id` names.
    pub fn get(&self, id: PlanId) -> Option<&PlannedOperation> {
        self.operations.get(id.index())
    }

    /// The first operation with this API and name. (One model, Shipping v2, gives two operations
    /// one `operationId`: `linkCarrierAccount` is both a `PUT` and a `POST`; [`classify`] tells
    /// them apart.)
    ///
    /// [`classify`]: UsagePlans::classify
    pub fn find(&self, api: &str, name: &str) -> Option<&PlannedOperation> {
        self.operations
            .iter()
            .find(|op| op.api == api && op.name == name)
    }

    /// The id of the first operation with this API and name.
    pub(crate) fn id_of(&self, api: &str, name: &str) -> Option<PlanId> {
        self.operations
            .iter()
            .position(|op| op.api == api && op.name == name)
            .map(PlanId::at)
    }

    /// The generated rows, for the matcher that classifies requests against them.
    pub(crate) fn table() -> &'static [PlannedOperation] {
        &usage_plans::OPERATIONS
    }
}

impl fmt::Debug for UsagePlans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsagePlans")
            .field("operations", &self.operations.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_plan_is_a_valid_plan() {
        for op in UsagePlans::table() {
            if let Some(plan) = op.plan() {
                assert_eq!(
                    UsagePlan::new(plan.rate_per_second(), plan.burst()),
                    Ok(plan),
                    "{} {}",
                    op.api(),
                    op.name()
                );
                assert!(op.model_rate().is_some(), "{}", op.name());
            } else {
                assert_eq!(op.model_rate(), None, "{}", op.name());
            }
        }
    }

    #[test]
    fn the_default_is_the_lowest_rate_and_burst_of_the_table() {
        let plans: Vec<UsagePlan> = UsagePlans::table()
            .iter()
            .filter_map(PlannedOperation::plan)
            .collect();
        let lowest_rate = plans
            .iter()
            .map(UsagePlan::rate_per_second)
            .fold(f64::INFINITY, f64::min);
        let lowest_burst = plans.iter().map(UsagePlan::burst).min();
        let default = UsagePlan::CONSERVATIVE_DEFAULT;
        assert_eq!(default.rate_per_second(), lowest_rate);
        assert_eq!(Some(default.burst()), lowest_burst);
        assert_eq!(UsagePlan::new(lowest_rate, default.burst()), Ok(default));
    }

    #[test]
    fn ids_round_trip() {
        let plans = UsagePlans::amazon();
        for (index, op) in plans.operations().iter().enumerate() {
            assert_eq!(plans.get(PlanId::at(index)), Some(op));
        }
        assert_eq!(plans.get(PlanId::at(plans.operations().len())), None);
    }
}

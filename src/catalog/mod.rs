//! Amazon's restricted operations, as data.
//!
//! The [`Catalog`] lists every SP-API operation that needs a Restricted Data Token: its API, operation
//! name, HTTP method, path template (exactly as it stands in Amazon's OpenAPI models), the data elements
//! it accepts, whether Amazon accepts the generic path (the template with its placeholders) or only the
//! specific path, and its deprecation. [`Catalog::amazon`] holds Amazon's list; a catalogue is an
//! ordinary value that you can read, extend and trim before building a layer from it.
//!
//! ```
//! use http::Method;
//! use spapi_rdt::catalog::{Catalog, RestrictedOperation};
//!
//! let mut catalog = Catalog::amazon();
//! assert_eq!(catalog.operations().len(), 32);
//!
//! // Leave out the Vendor Direct Fulfillment operations, which a seller app never calls.
//! catalog.retain(|op| !op.api().starts_with("Vendor"));
//!
//! // Add an operation Amazon has restricted since this crate was released.
//! catalog.push(RestrictedOperation::new(
//!     "Orders v0",
//!     "getOrderFutureInfo",
//!     Method::GET,
//!     "/orders/v0/orders/{orderId}/futureInfo",
//! ));
//! assert!(catalog.find("Orders v0", "getOrderFutureInfo").is_some());
//! ```
//!
//! # Usage plans
//! [`UsagePlans`] lists every operation of Amazon's models, restricted or not, with the usage plan
//! (rate and burst of the token bucket Amazon applies) that its description states, and classifies
//! a request as one of them. The table is generated from the models by `cargo xtask usage-plans`;
//! an operation whose model states no plan has `None`, for which [`UsagePlan::CONSERVATIVE_DEFAULT`]
//! is the plan to assume.
//!
//! ```
//! use http::Method;
//! use spapi_rdt::catalog::UsagePlans;
//!
//! let plans = UsagePlans::amazon();
//! let (_, op) = plans.classify(&Method::GET, "/orders/v0/orders").unwrap();
//! let plan = op.plan().unwrap();
//! assert_eq!((op.model_rate(), plan.burst()), (Some("0.0167"), 20));
//! ```

use std::borrow::Cow;
use std::fmt;

use http::Method;

mod plans;
mod usage_plans;

pub use plans::{PlanId, PlannedOperation, UsagePlan, UsagePlans};

/// A category of personal data that Orders v0 returns only when the token was requested for it.
///
/// Asking for an element the application has no role for fails the whole token request, and asking
/// for none silently yields a token that returns no personal data at all, so which elements to ask
/// for is configuration ([`crate::RestrictedDataTokenLayerBuilder::data_elements`]) and can be narrowed per
/// request (a [`DataElements`] value in the request's extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DataElement {
    /// `buyerInfo`: the buyer's name, email and tax details.
    BuyerInfo,
    /// `shippingAddress`: the address the order ships to.
    ShippingAddress,
    /// `buyerTaxInformation`: the buyer's tax information (Turkey only).
    BuyerTaxInformation,
}

impl DataElement {
    /// Every data element, in the order Amazon's documentation lists them.
    pub const ALL: [DataElement; 3] = [
        DataElement::BuyerInfo,
        DataElement::ShippingAddress,
        DataElement::BuyerTaxInformation,
    ];

    /// The name Amazon uses in `dataElements`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataElement::BuyerInfo => "buyerInfo",
            DataElement::ShippingAddress => "shippingAddress",
            DataElement::BuyerTaxInformation => "buyerTaxInformation",
        }
    }

    /// Parses the name Amazon uses in `dataElements`; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        DataElement::ALL.into_iter().find(|e| e.as_str() == name)
    }

    const fn bit(self) -> u8 {
        match self {
            DataElement::BuyerInfo => 1,
            DataElement::ShippingAddress => 2,
            DataElement::BuyerTaxInformation => 4,
        }
    }
}

impl fmt::Display for DataElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`DataElement`]s: a small `Copy` bit set, always iterated in canonical order.
///
/// Put one in a request's extensions to narrow the elements asked for that request.
///
/// ```
/// use spapi_rdt::catalog::{DataElement, DataElements};
///
/// let wanted = DataElements::from_iter([DataElement::ShippingAddress, DataElement::BuyerInfo]);
/// let names: Vec<_> = wanted.iter().map(DataElement::as_str).collect();
/// assert_eq!(names, ["buyerInfo", "shippingAddress"]);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataElements(u8);

impl DataElements {
    /// The empty set.
    pub const NONE: DataElements = DataElements(0);
    /// The elements most applications hold roles for: `buyerInfo` and `shippingAddress`.
    pub const USUAL: DataElements =
        DataElements(DataElement::BuyerInfo.bit() | DataElement::ShippingAddress.bit());
    /// All three elements.
    pub const ALL: DataElements = DataElements(
        DataElement::BuyerInfo.bit()
            | DataElement::ShippingAddress.bit()
            | DataElement::BuyerTaxInformation.bit(),
    );

    /// A set holding exactly `element`.
    pub const fn only(element: DataElement) -> Self {
        DataElements(element.bit())
    }

    /// This set with `element` added.
    #[must_use]
    pub const fn with(self, element: DataElement) -> Self {
        DataElements(self.0 | element.bit())
    }

    /// This set without `element`.
    #[must_use]
    pub const fn without(self, element: DataElement) -> Self {
        DataElements(self.0 & !element.bit())
    }

    /// The elements in both sets.
    #[must_use]
    pub const fn intersection(self, other: DataElements) -> Self {
        DataElements(self.0 & other.0)
    }

    /// Whether `element` is in the set.
    pub const fn contains(self, element: DataElement) -> bool {
        self.0 & element.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many elements the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The elements, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = DataElement> {
        DataElement::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }
}

impl FromIterator<DataElement> for DataElements {
    fn from_iter<I: IntoIterator<Item = DataElement>>(iter: I) -> Self {
        iter.into_iter()
            .fold(DataElements::NONE, DataElements::with)
    }
}

impl fmt::Debug for DataElements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Which path a token must be requested for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// The template itself (`/orders/v0/orders/{orderId}/address`): one token covers every id of the
    /// seller. Templates without placeholders are generic too.
    Generic,
    /// Only the path of the real call (`/reports/2021-06-30/documents/<id>`): one token per resource.
    SpecificOnly,
}

/// A restricted operation: one row of the [`Catalog`].
///
/// ```
/// use http::Method;
/// use spapi_rdt::catalog::{DataElements, PathKind, RestrictedOperation};
///
/// let op = RestrictedOperation::new("Orders v0", "getOrder", Method::GET, "/orders/v0/orders/{orderId}")
///     .with_data_elements(DataElements::ALL)
///     .deprecated("2027-03-27")
///     .replaced_by("Orders v2026-01-01 getOrder");
/// assert_eq!(op.path_kind(), PathKind::Generic);
/// assert_eq!(op.removal_date(), Some("2027-03-27"));
/// assert_eq!(op.replacement(), Some("Orders v2026-01-01 getOrder"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestrictedOperation {
    api: Cow<'static, str>,
    name: Cow<'static, str>,
    method: Method,
    template: Cow<'static, str>,
    data_elements: DataElements,
    path_kind: PathKind,
    removal_date: Option<Cow<'static, str>>,
    replacement: Option<Cow<'static, str>>,
    in_model: bool,
}

impl RestrictedOperation {
    /// A generic-path operation without data elements. `template` is the path as Amazon's model writes
    /// it, with `{name}` placeholders.
    pub fn new(
        api: impl Into<Cow<'static, str>>,
        name: impl Into<Cow<'static, str>>,
        method: Method,
        template: impl Into<Cow<'static, str>>,
    ) -> Self {
        RestrictedOperation {
            api: api.into(),
            name: name.into(),
            method,
            template: template.into(),
            data_elements: DataElements::NONE,
            path_kind: PathKind::Generic,
            removal_date: None,
            replacement: None,
            in_model: true,
        }
    }

    /// The data elements the operation accepts.
    #[must_use]
    pub fn with_data_elements(mut self, elements: DataElements) -> Self {
        self.data_elements = elements;
        self
    }

    /// Marks the operation as accepting only the specific path of the call.
    #[must_use]
    pub fn specific_path_only(mut self) -> Self {
        self.path_kind = PathKind::SpecificOnly;
        self
    }

    /// Marks the operation as deprecated, to be removed on `removal_date` (`YYYY-MM-DD`).
    #[must_use]
    pub fn deprecated(mut self, removal_date: impl Into<Cow<'static, str>>) -> Self {
        self.removal_date = Some(removal_date.into());
        self
    }

    /// Names what replaces a deprecated operation, for the warning the layer logs the first time it
    /// serves the operation (such as `"Orders v2026-01-01 getOrder with includedData=RECIPIENT"`).
    #[must_use]
    pub fn replaced_by(mut self, replacement: impl Into<Cow<'static, str>>) -> Self {
        self.replacement = Some(replacement.into());
        self
    }

    /// Marks the operation as one that Amazon's list still names but its current model no longer has.
    #[must_use]
    pub fn not_in_model(mut self) -> Self {
        self.in_model = false;
        self
    }

    /// The API the operation belongs to, such as `"Orders v0"`.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// The operation's name (its `operationId` in the model), such as `"getOrderAddress"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template, such as `"/orders/v0/orders/{orderId}/address"`.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The data elements the operation accepts (empty for most operations).
    pub fn data_elements(&self) -> DataElements {
        self.data_elements
    }

    /// Whether a token may be requested for the template or only for the specific path.
    pub fn path_kind(&self) -> PathKind {
        self.path_kind
    }

    /// When the operation is deprecated, the date Amazon announced for its removal.
    pub fn removal_date(&self) -> Option<&str> {
        self.removal_date.as_deref()
    }

    /// What replaces the operation, when it is deprecated and the catalogue says.
    pub fn replacement(&self) -> Option<&str> {
        self.replacement.as_deref()
    }

    /// Whether Amazon's current OpenAPI model still describes the operation.
    pub fn in_model(&self) -> bool {
        self.in_model
    }
}

/// Report types whose documents need a Restricted Data Token (`getReportDocument`).
pub const RESTRICTED_REPORT_TYPES: [&str; 16] = [
    "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_INVOICING",
    "GET_AMAZON_FULFILLED_SHIPMENTS_DATA_TAX",
    "GET_FLAT_FILE_ACTIONABLE_ORDER_DATA_SHIPPING",
    "GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING",
    "GET_FLAT_FILE_ORDER_REPORT_DATA_INVOICING",
    "GET_FLAT_FILE_ORDER_REPORT_DATA_TAX",
    "GET_FLAT_FILE_ORDERS_RECONCILIATION_DATA_TAX",
    "GET_FLAT_FILE_ORDERS_RECONCILIATION_DATA_INVOICING",
    "GET_FLAT_FILE_ORDERS_RECONCILIATION_DATA_SHIPPING",
    "GET_ORDER_REPORT_DATA_INVOICING",
    "GET_ORDER_REPORT_DATA_TAX",
    "GET_ORDER_REPORT_DATA_SHIPPING",
    "GET_EASYSHIP_DOCUMENTS",
    "GET_GST_MTR_B2B_CUSTOM",
    "GET_VAT_TRANSACTION_DATA",
    "SC_VAT_TAX_REPORT",
];

/// Whether `report_type` is one of Amazon's [`RESTRICTED_REPORT_TYPES`].
pub fn is_restricted_report_type(report_type: &str) -> bool {
    RESTRICTED_REPORT_TYPES.contains(&report_type)
}

/// Names one operation of a [`Catalog`]: what [`Classified::id`](crate::matcher::Classified::id)
/// gives for a request, comparable and hashable, without saying where in the catalogue the operation
/// sits. Ids of one catalogue name nothing in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(u32);

impl OperationId {
    /// The id of the operation at `index` (a catalogue holds far fewer than `u32::MAX`).
    pub(crate) fn at(index: usize) -> Self {
        OperationId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// The operation's position in its catalogue.
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }

    /// The id as stored in a fleet record.
    pub(crate) fn to_bits(self) -> u32 {
        self.0
    }

    /// An id read back from a fleet record.
    pub(crate) fn from_bits(bits: u32) -> Self {
        OperationId(bits)
    }
}

/// A list of restricted operations, from which a [`Matcher`](crate::matcher::Matcher) is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    operations: Vec<RestrictedOperation>,
}

/// The day Amazon removes Orders v0's deprecated operations.
const ORDERS_V0_REMOVAL: &str = "2027-03-27";

impl Catalog {
    /// An empty catalogue.
    pub fn empty() -> Self {
        Catalog {
            operations: Vec::new(),
        }
    }

    /// Amazon's restricted operations: 32 operations in 10 APIs, each template checked against
    /// Amazon's OpenAPI models.
    pub fn amazon() -> Self {
        use Method as M;
        type Op = RestrictedOperation;
        // Orders v0's PII operations are deprecated in favour of Orders v2026-01-01, whose buyer data
        // needs roles, not RDTs.
        let orders = |name: &'static str, path: &'static str, replacement: &'static str| {
            Op::new("Orders v0", name, M::GET, path)
                .deprecated(ORDERS_V0_REMOVAL)
                .replaced_by(replacement)
        };
        let order_elements = DataElements::ALL;
        let mut ops = vec![
            orders(
                "getOrders",
                "/orders/v0/orders",
                "Orders v2026-01-01 searchOrders with includedData=BUYER,RECIPIENT",
            )
            .with_data_elements(order_elements),
            orders(
                "getOrder",
                "/orders/v0/orders/{orderId}",
                "Orders v2026-01-01 getOrder with includedData=BUYER,RECIPIENT",
            )
            .with_data_elements(order_elements),
            orders(
                "getOrderItems",
                "/orders/v0/orders/{orderId}/orderItems",
                "Orders v2026-01-01 getOrder (order items) with includedData=BUYER",
            )
            .with_data_elements(DataElements::only(DataElement::BuyerInfo)),
            orders(
                "getOrderAddress",
                "/orders/v0/orders/{orderId}/address",
                "Orders v2026-01-01 getOrder with includedData=RECIPIENT",
            ),
            orders(
                "getOrderBuyerInfo",
                "/orders/v0/orders/{orderId}/buyerInfo",
                "Orders v2026-01-01 getOrder with includedData=BUYER",
            ),
            orders(
                "getOrderItemsBuyerInfo",
                "/orders/v0/orders/{orderId}/orderItems/buyerInfo",
                "Orders v2026-01-01 getOrder (order items) with includedData=BUYER",
            ),
            // Not marked deprecated in the model: it stays after the other PII operations go.
            Op::new(
                "Orders v0",
                "getOrderRegulatedInfo",
                M::GET,
                "/orders/v0/orders/{orderId}/regulatedInfo",
            ),
            Op::new(
                "Merchant Fulfillment v0",
                "getShipment",
                M::GET,
                "/mfn/v0/shipments/{shipmentId}",
            ),
            Op::new(
                "Merchant Fulfillment v0",
                "cancelShipment",
                M::DELETE,
                "/mfn/v0/shipments/{shipmentId}",
            ),
            Op::new(
                "Merchant Fulfillment v0",
                "createShipment",
                M::POST,
                "/mfn/v0/shipments",
            ),
            Op::new(
                "Merchant Fulfillment v0",
                "cancelShipmentOld",
                M::PUT,
                "/mfn/v0/shipments/{shipmentId}/cancel",
            )
            .not_in_model(),
            Op::new(
                "Shipping v1",
                "getShipment",
                M::GET,
                "/shipping/v1/shipments/{shipmentId}",
            ),
            Op::new(
                "Shipment Invoicing v0",
                "getShipmentDetails",
                M::GET,
                "/fba/outbound/brazil/v0/shipments/{shipmentId}",
            ),
            Op::new(
                "Reports 2021-06-30",
                "getReportDocument",
                M::GET,
                "/reports/2021-06-30/documents/{reportDocumentId}",
            )
            .specific_path_only(),
            Op::new(
                "Easy Ship 2022-03-23",
                "createScheduledPackageBulk",
                M::POST,
                "/easyShip/2022-03-23/packages/bulk",
            ),
        ];
        for (api, version) in [
            ("Vendor DF Orders v1", "v1"),
            ("Vendor DF Orders 2021-12-28", "2021-12-28"),
        ] {
            let base = format!("/vendor/directFulfillment/orders/{version}/purchaseOrders");
            ops.push(Op::new(api, "getOrders", M::GET, base.clone()));
            ops.push(Op::new(
                api,
                "getOrder",
                M::GET,
                format!("{base}/{{purchaseOrderNumber}}"),
            ));
        }
        for (api, version) in [
            ("Vendor DF Shipping v1", "v1"),
            ("Vendor DF Shipping 2021-12-28", "2021-12-28"),
        ] {
            let base = format!("/vendor/directFulfillment/shipping/{version}");
            for (plural, singular) in [
                ("shippingLabels", "ShippingLabel"),
                ("packingSlips", "PackingSlip"),
                ("customerInvoices", "CustomerInvoice"),
            ] {
                let list = format!("{base}/{plural}");
                let one = format!("{list}/{{purchaseOrderNumber}}");
                ops.push(Op::new(api, format!("get{singular}s"), M::GET, list));
                ops.push(Op::new(api, format!("get{singular}"), M::GET, one.clone()));
                if version != "v1" && plural == "shippingLabels" {
                    ops.push(Op::new(api, "createShippingLabels", M::POST, one));
                }
            }
        }
        Catalog { operations: ops }
    }

    /// The operations, in catalogue order.
    pub fn operations(&self) -> &[RestrictedOperation] {
        &self.operations
    }

    /// The operation `id` names, if it is one of this catalogue's.
    pub fn get(&self, id: OperationId) -> Option<&RestrictedOperation> {
        self.operations.get(id.index())
    }

    /// Adds an operation. A duplicate (same method and path shape) is reported when the matcher is built.
    pub fn push(&mut self, operation: RestrictedOperation) {
        self.operations.push(operation);
    }

    /// Keeps only the operations for which `keep` returns `true`.
    pub fn retain(&mut self, keep: impl FnMut(&RestrictedOperation) -> bool) {
        self.operations.retain(keep);
    }

    /// Finds an operation by API and name.
    pub fn find(&self, api: &str, name: &str) -> Option<&RestrictedOperation> {
        self.operations
            .iter()
            .find(|op| op.api() == api && op.name() == name)
    }
}

impl Default for Catalog {
    /// Amazon's list, as [`Catalog::amazon`].
    fn default() -> Self {
        Catalog::amazon()
    }
}

impl Extend<RestrictedOperation> for Catalog {
    fn extend<I: IntoIterator<Item = RestrictedOperation>>(&mut self, iter: I) {
        self.operations.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amazon_catalogue_has_every_row_of_the_domain_table() {
        let catalog = Catalog::amazon();
        assert_eq!(catalog.operations().len(), 32);
        let vendor_shipping = catalog
            .operations()
            .iter()
            .filter(|op| op.api().starts_with("Vendor DF Shipping"))
            .count();
        assert_eq!(vendor_shipping, 13);
        let report = catalog
            .find("Reports 2021-06-30", "getReportDocument")
            .expect("row");
        assert_eq!(report.path_kind(), PathKind::SpecificOnly);
        let items = catalog.find("Orders v0", "getOrderItems").expect("row");
        assert_eq!(
            items.data_elements(),
            DataElements::only(DataElement::BuyerInfo)
        );
        // Every deprecated operation says what replaces it, and only those do.
        for op in catalog.operations() {
            assert_eq!(
                op.removal_date().is_some(),
                op.replacement().is_some(),
                "{}",
                op.name()
            );
        }
        assert!(
            !catalog
                .find("Merchant Fulfillment v0", "cancelShipmentOld")
                .expect("row")
                .in_model()
        );
    }

    #[test]
    fn data_elements_round_trip_names() {
        for e in DataElement::ALL {
            assert_eq!(DataElement::from_name(e.as_str()), Some(e));
        }
        assert_eq!(DataElement::from_name("buyerinfo"), None);
        assert_eq!(DataElements::ALL.len(), 3);
        assert!(DataElements::USUAL.contains(DataElement::ShippingAddress));
        assert!(!DataElements::USUAL.contains(DataElement::BuyerTaxInformation));
    }
}

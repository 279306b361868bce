//! The SP-API operations the emulator serves: every restricted operation of the catalogue, and a
//! few unrestricted ones.

use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PII, SELLER, TARGET_APPLICATION, json_response, set_header, sp_error};
use super::state::{Shared, live, match_template};
use super::tokens::{bearer, forbidden, missing_token};
use super::usage::{self, Caller, Metered, QuotaExceeded};
use spapi_rdt::catalog::{DataElement, DataElements, OperationId, PlanId, RestrictedOperation};

const MARKETPLACE: &str = "ATVPDKIKX0DER";
const CREATED: &str = "2026-01-15T10:00:00Z";

/// The unrestricted operations the emulator serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unrestricted<'p> {
    /// Sellers v1 `getMarketplaceParticipations`.
    MarketplaceParticipations,
    /// Orders 2026-01-01 `searchOrders`.
    SearchOrders,
    /// Orders 2026-01-01 `getOrder`.
    GetOrder(&'p str),
    /// Reports 2021-06-30 `getReports`.
    GetReports,
    /// Reports 2021-06-30 `getReport`.
    GetReport(&'p str),
}

impl<'p> Unrestricted<'p> {
    pub(crate) fn route(method: &Method, path: &'p str) -> Option<Self> {
        if method != Method::GET {
            return None;
        }
        let one = |template: &str| {
            match_template(template, path).and_then(|values| values.first().copied())
        };
        match path {
            "/sellers/v1/marketplaceParticipations" => {
                Some(Unrestricted::MarketplaceParticipations)
            }
            "/orders/2026-01-01/orders" => Some(Unrestricted::SearchOrders),
            "/reports/2021-06-30/reports" => Some(Unrestricted::GetReports),
            _ => one("/orders/2026-01-01/orders/{orderId}")
                .map(Unrestricted::GetOrder)
                .or_else(|| {
                    one("/reports/2021-06-30/reports/{reportId}").map(Unrestricted::GetReport)
                }),
        }
    }
}

/// What the caller's token lets a restricted call see.
#[derive(Debug)]
enum Access {
    /// A Restricted Data Token covering the call, issued with these data elements.
    Rdt(DataElements),
    /// A plain LWA access token: Orders v0 answers without personal data.
    Lwa,
}

/// Takes the call's request from its usage-plan bucket, once its token has been accepted: the
/// `x-amzn-RateLimit-Limit` value to answer with (`None` when the operation is not metered), or
/// [`QuotaExceeded`] when the bucket is empty.
pub(crate) fn meter(
    shared: &Shared,
    metered: Option<PlanId>,
    caller: impl FnOnce() -> Caller,
) -> Result<Option<String>, QuotaExceeded> {
    match metered {
        Some(id) => shared
            .meter(caller(), Metered::Operation(id))
            .map(Some)
            .ok_or(QuotaExceeded),
        None => Ok(None),
    }
}

pub(crate) fn restricted(
    shared: &Shared,
    method: &Method,
    path: &str,
    id: OperationId,
    metered: Option<PlanId>,
    headers: &HeaderMap,
) -> Response {
    let Some(op) = shared.matcher.catalog().get(id) else {
        return sp_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The emulator lost track of an operation.",
            None,
        );
    };
    let Some(token) = bearer(headers) else {
        return missing_token();
    };
    let now = Instant::now();
    let inner = shared.lock();
    let (seller, target, access) = if let Some(rdt) = inner.rdts.get(token) {
        if !live(rdt.expires_at, now) {
            return forbidden("The access token you provided has expired.");
        }
        let Some(elements) = rdt.covers(method, id, path) else {
            return forbidden("The restricted data token does not cover this resource.");
        };
        (
            rdt.seller.clone(),
            rdt.target_application.clone(),
            Access::Rdt(elements),
        )
    } else if let Some(grant) = inner.access.get(token) {
        if !live(grant.expires_at, now) {
            return forbidden("The access token you provided has expired.");
        }
        match (&grant.seller, op.api() == "Orders v0") {
            (Some(seller), true) => (seller.clone(), None, Access::Lwa),
            (Some(_), false) => {
                return forbidden("This operation needs a restricted data token.");
            }
            (None, _) => {
                return forbidden("A grantless access token cannot call this operation.");
            }
        }
    } else {
        return forbidden("The access token you provided is revoked, malformed or invalid.");
    };
    drop(inner);
    let rate = match meter(shared, metered, || Caller::Seller {
        seller: seller.clone(),
        app: target.clone(),
    }) {
        Ok(rate) => rate,
        Err(QuotaExceeded) => return usage::quota_exceeded(),
    };

    let values = match_template(op.template(), path).unwrap_or_default();
    let (body, served) = restricted_body(op, &values, &access);
    {
        let mut inner = shared.lock();
        if served {
            inner.counters.pii_served += 1;
        } else {
            inner.counters.pii_withheld += 1;
        }
    }
    let mut response = json_response(StatusCode::OK, &body);
    let headers = response.headers_mut();
    set_header(headers, PII, if served { "served" } else { "withheld" });
    set_header(headers, SELLER, &seller);
    if let Some(target) = target {
        set_header(headers, TARGET_APPLICATION, &target);
    }
    usage::stamp(response, rate.as_deref())
}

pub(crate) fn unrestricted(
    shared: &Shared,
    op: Unrestricted<'_>,
    metered: Option<PlanId>,
    headers: &HeaderMap,
) -> Response {
    let Some(token) = bearer(headers) else {
        return missing_token();
    };
    let seller = {
        let inner = shared.lock();
        if inner.rdts.contains_key(token) {
            return forbidden("A restricted data token cannot call this operation.");
        }
        match inner.access.get(token) {
            None => {
                return forbidden(
                    "The access token you provided is revoked, malformed or invalid.",
                );
            }
            Some(grant) if !live(grant.expires_at, Instant::now()) => {
                return forbidden("The access token you provided has expired.");
            }
            Some(grant) => match &grant.seller {
                Some(seller) => seller.clone(),
                None => return forbidden("A grantless access token cannot call this operation."),
            },
        }
    };
    let rate = match meter(shared, metered, || Caller::Seller {
        seller: seller.clone(),
        app: None,
    }) {
        Ok(rate) => rate,
        Err(QuotaExceeded) => return usage::quota_exceeded(),
    };
    let body = match op {
        Unrestricted::MarketplaceParticipations => json!({
            "payload": [{
                "marketplace": {
                    "id": MARKETPLACE,
                    "countryCode": "US",
                    "name": "Amazon.com",
                    "defaultCurrencyCode": "USD",
                    "defaultLanguageCode": "en_US",
                    "domainName": "www.amazon.com",
                },
                "participation": { "isParticipating": true, "hasSuspendedListings": false },
                "storeName": format!("Store of {seller}"),
            }]
        }),
        Unrestricted::SearchOrders => json!({
            "orders": [order_2026("902-0000001-0000001"), order_2026("902-0000002-0000002")],
            "createdBefore": CREATED,
        }),
        Unrestricted::GetOrder(id) => json!({ "order": order_2026(id) }),
        Unrestricted::GetReports => json!({ "reports": [report("50001")] }),
        Unrestricted::GetReport(id) => report(id),
    };
    let mut response = json_response(StatusCode::OK, &body);
    set_header(response.headers_mut(), SELLER, &seller);
    usage::stamp(response, rate.as_deref())
}

fn order_2026(id: &str) -> Value {
    json!({
        "orderId": id,
        "createdTime": CREATED,
        "salesChannel": { "marketplaceId": MARKETPLACE, "channelName": "AMAZON" },
        "fulfillment": { "fulfillmentStatus": "UNSHIPPED" },
    })
}

fn report(id: &str) -> Value {
    json!({
        "reportId": id,
        "reportType": "GET_FLAT_FILE_ORDER_REPORT_DATA_SHIPPING",
        "marketplaceIds": [MARKETPLACE],
        "processingStatus": "DONE",
        "createdTime": CREATED,
        "reportDocumentId": format!("amzn1.spdoc.1.4.na.{id}"),
    })
}

fn buyer_info() -> Value {
    json!({ "BuyerEmail": "jane.doe@marketplace.example", "BuyerName": "Jane Doe" })
}

fn shipping_address() -> Value {
    json!({
        "Name": "Jane Doe",
        "AddressLine1": "1 Example Street",
        "City": "Seattle",
        "StateOrRegion": "WA",
        "PostalCode": "98101",
        "CountryCode": "US",
        "Phone": "+1 206 555 0100",
    })
}

fn buyer_tax_information() -> Value {
    json!({
        "BuyerLegalCompanyName": "Example Ltd",
        "BuyerBusinessAddress": "1 Example Street, Istanbul",
        "BuyerTaxRegistrationId": "1234567890",
        "BuyerTaxOffice": "Istanbul",
    })
}

/// An Orders v0 order with the personal data that `elements` allow.
fn order_v0(id: &str, elements: DataElements) -> Value {
    let mut order = json!({
        "AmazonOrderId": id,
        "PurchaseDate": CREATED,
        "LastUpdateDate": CREATED,
        "OrderStatus": "Unshipped",
        "MarketplaceId": MARKETPLACE,
        "OrderTotal": { "CurrencyCode": "USD", "Amount": "25.00" },
    });
    if let Some(map) = order.as_object_mut() {
        for element in elements.iter() {
            let (key, value) = match element {
                DataElement::BuyerInfo => ("BuyerInfo", buyer_info()),
                DataElement::ShippingAddress => ("ShippingAddress", shipping_address()),
                DataElement::BuyerTaxInformation => {
                    ("BuyerTaxInformation", buyer_tax_information())
                }
                // An element added to the library after this emulator: nothing to show for it.
                _ => continue,
            };
            map.insert(key.to_owned(), value);
        }
    }
    order
}

/// The answer of a restricted call, and whether it holds personal data.
fn restricted_body(op: &RestrictedOperation, values: &[&str], access: &Access) -> (Value, bool) {
    let id = values.first().copied().unwrap_or("902-0000001-0000001");
    let full = matches!(access, Access::Rdt(_));
    // The data elements this call returns: only those the token was issued with and the
    // operation accepts.
    let elements = match access {
        Access::Rdt(granted) => granted.intersection(op.data_elements()),
        Access::Lwa => DataElements::NONE,
    };
    let with = |key: &str, value: Value, base: Value| -> Value {
        let mut base = base;
        if let Some(map) = base.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
        base
    };
    if op.api() == "Orders v0" {
        let payload = match op.name() {
            "getOrders" => json!({
                "Orders": [
                    order_v0("902-0000001-0000001", elements),
                    order_v0("902-0000002-0000002", elements),
                ],
                "CreatedBefore": CREATED,
            }),
            "getOrder" => order_v0(id, elements),
            "getOrderItems" => {
                let mut item = json!({
                    "ASIN": "B00EXAMPLE",
                    "SellerSKU": "SKU-1",
                    "OrderItemId": "10000000000001",
                    "Title": "An example product",
                    "QuantityOrdered": 1,
                });
                if elements.contains(DataElement::BuyerInfo) {
                    item = with(
                        "BuyerInfo",
                        json!({ "GiftMessageText": "Happy birthday, Jane" }),
                        item,
                    );
                }
                json!({ "AmazonOrderId": id, "OrderItems": [item] })
            }
            "getOrderAddress" if full => {
                json!({ "AmazonOrderId": id, "ShippingAddress": shipping_address() })
            }
            "getOrderBuyerInfo" if full => with("AmazonOrderId", json!(id), buyer_info()),
            "getOrderItemsBuyerInfo" if full => json!({
                "AmazonOrderId": id,
                "OrderItems": [{
                    "OrderItemId": "10000000000001",
                    "BuyerCustomizedInfo": { "CustomizedURL": "https://customization.example/1" },
                    "GiftMessageText": "Happy birthday, Jane",
                }],
            }),
            "getOrderRegulatedInfo" if full => json!({
                "AmazonOrderId": id,
                "RequiresDosageLabel": false,
                "RegulatedInformation": {
                    "Fields": [{ "FieldId": "pet_name", "FieldLabel": "Name", "FieldType": "Text", "FieldValue": "Jane Doe" }],
                },
                "RegulatedOrderVerificationStatus": { "Status": "Approved", "RequiresMerchantAction": false },
            }),
            "getOrderItemsBuyerInfo" => json!({
                "AmazonOrderId": id,
                "OrderItems": [{ "OrderItemId": "10000000000001" }],
            }),
            _ => json!({ "AmazonOrderId": id }),
        };
        let served = if op.data_elements().is_empty() {
            full
        } else {
            !elements.is_empty()
        };
        return (json!({ "payload": payload }), served);
    }
    if op.name() == "getReportDocument" {
        let body = json!({
            "reportDocumentId": id,
            "url": format!("https://documents.emulator.invalid/{id}"),
            "compressionAlgorithm": "GZIP",
        });
        return (body, full);
    }
    let body = json!({
        "payload": {
            "api": op.api(),
            "operation": op.name(),
            "id": values.first(),
            "pii": { "name": "Jane Doe", "address": shipping_address() },
        }
    });
    (body, full)
}

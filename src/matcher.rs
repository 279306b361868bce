//! Classifying requests: `(method, path)` → the restricted operation it calls, if any.
//!
//! The [`Matcher`] compiles a [`Catalog`] into one radix tree per HTTP method, so a lookup walks
//! the path once and its cost does not grow with the size of the catalogue. The same trees, built
//! over every operation of Amazon's models, answer
//! [`UsagePlans::classify`](crate::catalog::UsagePlans::classify), with the same rules.
//!
//! # What matches
//! - The path is matched as sent, byte for byte, against the templates of the catalogue. A placeholder
//!   matches one non-empty path segment: any bytes but `/`, so a percent-encoded slash (`%2F`) stays
//!   inside the segment it is in. A dot segment (`.` or `..`) is never taken as a placeholder's value.
//! - The query string is not part of the path ([`Matcher::classify_uri`] drops it).
//! - Nothing is normalized: a trailing slash, an empty segment (`//`), a dot segment (`/./`, `/../`)
//!   or a different letter case makes the path a different path, which matches no template. Amazon
//!   routes on the path as sent too, and a token is only valid for the path it was requested for,
//!   so a path that is not exactly a catalogue path gets no token rather than a useless one.
//! - Any input, however long or odd, is an answer (`Some` or `None`), never a panic.
//!
//! ```
//! use http::Method;
//! use spapi_rdt::{catalog::Catalog, matcher::Matcher};
//!
//! let matcher = Matcher::new(Catalog::amazon())?;
//! let hit = matcher.classify(&Method::GET, "/orders/v0/orders/902-3159896-1390916/address").unwrap();
//! assert_eq!(hit.operation().name(), "getOrderAddress");
//! assert!(matcher.classify(&Method::POST, "/orders/v0/orders/1/shipmentConfirmation").is_none());
//! assert!(matcher.classify(&Method::GET, "/orders/2026-01-01/orders/1").is_none());
//! # Ok::<(), spapi_rdt::error::CatalogError>(())
//! ```

mod gate;
mod plans;
mod routes;
mod tree;

use std::fmt;

use http::{Method, Uri};

use crate::catalog::{Catalog, OperationId, RestrictedOperation};
use crate::error::CatalogError;
use routes::Routes;

/// The operation a request calls.
#[derive(Clone, Copy, Debug)]
pub struct Classified<'a> {
    id: OperationId,
    operation: &'a RestrictedOperation,
}

impl<'a> Classified<'a> {
    /// The operation.
    pub fn operation(&self) -> &'a RestrictedOperation {
        self.operation
    }

    /// The operation's id in the matcher's catalogue.
    pub fn id(&self) -> OperationId {
        self.id
    }
}

/// The compiled catalogue. Build it once; lookups are read-only and lock-free.
#[derive(Clone)]
pub struct Matcher {
    catalog: Catalog,
    routes: Routes,
}

impl Matcher {
    /// Compiles `catalog`. Fails on a malformed template or on two operations with the same method
    /// whose templates overlap.
    pub fn new(catalog: Catalog) -> Result<Self, CatalogError> {
        let (matcher, mut errors) = Matcher::compile(catalog);
        match errors.drain(..).next() {
            Some(first) => Err(first),
            None => Ok(matcher),
        }
    }

    /// Amazon's catalogue ([`Catalog::amazon`]), compiled. It always compiles (a test checks it).
    pub fn amazon() -> Self {
        Matcher::compile(Catalog::amazon()).0
    }

    /// Compiles what can be compiled, returning the operations that could not be, in catalogue
    /// order.
    fn compile(catalog: Catalog) -> (Self, Vec<CatalogError>) {
        let operations = catalog.operations();
        let (routes, faults) =
            Routes::compile(operations.iter().map(|op| (op.method(), op.template())));
        let errors = faults
            .into_iter()
            .filter_map(|(index, fault)| {
                let op = operations.get(index)?;
                let reason = fault.reason();
                Some(CatalogError::new(
                    op.api(),
                    op.name(),
                    op.method(),
                    op.template(),
                    reason,
                ))
            })
            .collect();
        (Matcher { catalog, routes }, errors)
    }

    /// The restricted operation that `method` and `path` call, if any. `path` is the path alone,
    /// without the query string.
    #[inline]
    pub fn classify(&self, method: &Method, path: &str) -> Option<Classified<'_>> {
        let index = self.routes.find(method, path)?;
        let operation = self.catalog.operations().get(index)?;
        Some(Classified {
            id: OperationId::at(index),
            operation,
        })
    }

    /// As [`classify`](Self::classify), taking the path from a URI and ignoring its query string.
    pub fn classify_uri(&self, method: &Method, uri: &Uri) -> Option<Classified<'_>> {
        self.classify(method, uri.path())
    }

    /// The catalogue this matcher was built from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("operations", &self.catalog.operations().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Matcher {
        let (matcher, errors) = Matcher::compile(Catalog::amazon());
        assert!(errors.is_empty(), "{errors:?}");
        matcher
    }

    #[test]
    fn every_catalogue_template_matches_a_sample_path() {
        let m = matcher();
        for (i, op) in m.catalog().operations().iter().enumerate() {
            let sample = op.template().replace('{', "X").replace('}', "9");
            let hit = m.classify(op.method(), &sample).unwrap();
            assert_eq!(hit.id().index(), i, "{}", op.name());
        }
    }

    #[test]
    fn look_alikes_are_not_restricted() {
        let m = matcher();
        for (method, path) in [
            (Method::PATCH, "/orders/v0/orders/1/regulatedInfo"),
            (Method::POST, "/orders/v0/orders/1/shipmentConfirmation"),
            (Method::POST, "/orders/v0/orders/1/shipment"),
            (Method::POST, "/mfn/v0/eligibleShippingServices"),
            (Method::POST, "/mfn/v0/additionalSellerInputs"),
            (
                Method::POST,
                "/vendor/directFulfillment/shipping/v1/shippingLabels",
            ),
            (
                Method::POST,
                "/vendor/directFulfillment/shipping/2021-12-28/shippingLabels",
            ),
            (Method::GET, "/vendor/orders/v1/purchaseOrders"),
            (Method::GET, "/shipping/v2/shipments/1/documents"),
            (Method::GET, "/reports/2021-06-30/reports"),
            (Method::GET, "/reports/2021-06-30/reports/1"),
            (Method::POST, "/tokens/2021-03-01/restrictedDataToken"),
            (Method::GET, "/orders/2026-01-01/orders/1"),
            (Method::GET, "/orders/2026-01-01/orders"),
        ] {
            assert!(m.classify(&method, path).is_none(), "{method} {path}");
        }
    }

    #[test]
    fn odd_paths_do_not_match_and_do_not_panic() {
        let m = matcher();
        let long = format!("/orders/v0/orders/{}/address", "9".repeat(70_000));
        assert!(m.classify(&Method::GET, &long).is_some());
        for path in [
            "",
            "/",
            "//",
            "/orders/v0/orders/",
            "/orders/v0/orders/1/address/",
            "/orders/v0/orders//address",
            "/orders/v0/orders/./address",
            "/orders/v0/orders/../orders/1/address",
            "/ORDERS/v0/orders/1/address",
            "/orders/v0/orders/1/address?x=1",
            "/orders/v0/orders/1/addréss",
            "orders/v0/orders/1/address",
        ] {
            assert!(m.classify(&Method::GET, path).is_none(), "{path:?}");
        }
        // An encoded slash stays inside its segment.
        let hit = m.classify(&Method::GET, "/orders/v0/orders/a%2Fb/address");
        assert_eq!(hit.map(|h| h.operation().name()), Some("getOrderAddress"));
        let uri: Uri = "https://h/orders/v0/orders?CreatedAfter=2020"
            .parse()
            .unwrap();
        assert!(m.classify_uri(&Method::GET, &uri).is_some());
    }

    #[test]
    fn ambiguous_or_malformed_catalogues_are_errors() {
        let mut c = Catalog::amazon();
        c.push(RestrictedOperation::new(
            "X",
            "dup",
            Method::GET,
            "/orders/v0/orders/{id}",
        ));
        let err = Matcher::new(c).unwrap_err().to_string();
        assert!(err.contains("dup") && err.contains("overlaps"), "{err}");
        for bad in ["orders", "/a/{b", "/a/x{b}", "/a?b", "/a//b"] {
            let mut c = Catalog::empty();
            c.push(RestrictedOperation::new("X", "bad", Method::GET, bad));
            assert!(Matcher::new(c).is_err(), "{bad}");
        }
    }

    #[test]
    fn catalogue_can_be_trimmed() {
        let mut c = Catalog::amazon();
        c.retain(|op| op.api() != "Orders v0");
        let m = Matcher::new(c).unwrap();
        assert!(
            m.classify(&Method::GET, "/orders/v0/orders/1/address")
                .is_none()
        );
        assert!(m.classify(&Method::GET, "/mfn/v0/shipments/1").is_some());
    }

    #[test]
    fn long_templates_compile_and_match() {
        // Building and dropping the tree must not recurse once per byte or per placeholder.
        let long = format!("/{}", "a".repeat(1_000_000));
        let many = "/b/{x}".repeat(20_000);
        let mut c = Catalog::empty();
        c.push(RestrictedOperation::new(
            "X",
            "long",
            Method::GET,
            long.clone(),
        ));
        c.push(RestrictedOperation::new(
            "X",
            "many",
            Method::GET,
            many.clone(),
        ));
        let m = Matcher::new(c).unwrap();
        let hit = |path: &str| m.classify(&Method::GET, path).map(|h| h.id().index());
        assert_eq!(hit(&long), Some(0));
        assert_eq!(hit(&many.replace("{x}", "1")), Some(1));
        assert_eq!(hit(&many.replace("{x}", ".")), None);
    }
}

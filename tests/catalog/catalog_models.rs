//! The restricted-operation catalogue, checked against Amazon's OpenAPI models.
//!
//! # Where the operations come from
//! The tests read every `*.json` model (Swagger 2.0) in the repository's `spapi-models/` folder (a
//! vendored copy of `amzn/selling-partner-api-models`; `spapi-models/SOURCE` names the commit), or in
//! `$SPAPI_MODELS_DIR` when that is set, to try a newer checkout before vendoring it. Each operation
//! becomes one row: model file, `operationId`, method, path template, `deprecated`. A missing or
//! unreadable model is a failure, never a reason to check less.
//!
//! `tests/data/model_operations.tsv` lists those rows, one line per operation, so that a refresh of the
//! models shows up in review as a readable diff; `snapshot_matches_the_models` fails when it is stale.
//! `spapi-models/refresh.sh` refreshes the models and regenerates it; by hand:
//!
//! ```text
//! UPDATE_MODEL_SNAPSHOT=1 cargo test --all-features --test catalog_models snapshot_matches_the_models
//! ```
//!
//! (rows sorted by file, path, method).
//!
//! # What is checked
//! - the models hold 370 operations (this snapshot of the models), no two with the same method and
//!   path template;
//! - every catalogue operation that is in the model has exactly that method and template, under its
//!   name as `operationId`, in the model file of its API; `cancelShipmentOld` is in no model;
//! - the operations the model marks deprecated are exactly the catalogue operations with a removal date;
//! - a sample path of every model operation is classified as restricted if and only if the operation is
//!   in the catalogue, and then as exactly that catalogue operation;
//! - the look-alikes of `DOMAIN.md` (taken from the models by file and `operationId`) are not restricted;
//! - the data elements: the Orders v0 model says nothing about them; the Tokens model names the
//!   operations that take them and their possible values, which the catalogue must agree with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use spapi_rdt::catalog::{Catalog, DataElement, RestrictedOperation};
use spapi_rdt::matcher::Matcher;

/// How many operations this snapshot of the models holds.
const EXPECTED_OPERATIONS: usize = 370;
/// The snapshot, relative to the manifest directory.
const SNAPSHOT: &str = "tests/data/model_operations.tsv";
/// The snapshot's header line.
const SNAPSHOT_HEADER: &str = "file\toperationId\tmethod\tpath\tdeprecated";
/// The keys of a Swagger 2.0 path item that are operations.
const OPERATION_KEYS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// One operation of one model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ModelOperation {
    pub(crate) file: String,
    pub(crate) operation_id: String,
    pub(crate) method: String,
    pub(crate) path: String,
    deprecated: bool,
}

impl fmt::Display for ModelOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ({})",
            self.file, self.operation_id, self.method, self.path
        )
    }
}

/// The folder the models were read from.
#[derive(Debug)]
pub(crate) struct Source(PathBuf);

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "models in {}", self.0.display())
    }
}

/// The operations of every model, the folder they were read from, and the parsed models by file name.
#[derive(Debug)]
pub(crate) struct Models {
    pub(crate) source: Source,
    pub(crate) operations: Vec<ModelOperation>,
    pub(crate) documents: BTreeMap<String, serde_json::Value>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn snapshot_path() -> PathBuf {
    manifest_dir().join(SNAPSHOT)
}

/// The models directory: `$SPAPI_MODELS_DIR` when set, else the vendored `spapi-models/`. Either
/// must exist: the catalogue is always checked against the full models.
fn models_dir() -> PathBuf {
    let dir = match std::env::var_os("SPAPI_MODELS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => manifest_dir().join("spapi-models"),
    };
    assert!(
        dir.is_dir(),
        "the models folder {} is missing: it is part of the repository (spapi-models/), \
         or set SPAPI_MODELS_DIR to a folder of Amazon's models",
        dir.display()
    );
    dir
}

/// Reads every `*.json` model of `dir` and lists its operations.
fn read_models(dir: &Path) -> (Vec<ModelOperation>, BTreeMap<String, serde_json::Value>) {
    let mut documents = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let file = path.file_name().unwrap().to_str().unwrap().to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let document: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            documents.insert(file, document);
        }
    }
    let mut operations = Vec::new();
    for (file, document) in &documents {
        assert_eq!(
            document["swagger"].as_str(),
            Some("2.0"),
            "{file}: not a Swagger 2.0 model"
        );
        let paths = document["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("{file}: no `paths` object"));
        for (path, item) in paths {
            let item = item
                .as_object()
                .unwrap_or_else(|| panic!("{file} {path}: the path item is not an object"));
            for (key, operation) in item {
                if !OPERATION_KEYS.contains(&key.as_str()) {
                    // Path-level parameters, `$ref` and vendor extensions (`x-amzn-api-sandbox`).
                    assert!(
                        key == "parameters" || key == "$ref" || key.starts_with("x-"),
                        "{file} {path}: unexpected path item key `{key}`"
                    );
                    continue;
                }
                let operation_id = operation["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file} {key} {path}: no operationId"));
                let deprecated = match operation.get("deprecated") {
                    None => false,
                    Some(flag) => flag.as_bool().unwrap_or_else(|| {
                        panic!("{file} {operation_id}: `deprecated` is not a boolean")
                    }),
                };
                operations.push(ModelOperation {
                    file: file.clone(),
                    operation_id: operation_id.to_owned(),
                    method: key.to_ascii_uppercase(),
                    path: path.clone(),
                    deprecated,
                });
            }
        }
    }
    // An order that does not depend on how the JSON maps were built.
    operations.sort_by(|a, b| (&a.file, &a.path, &a.method).cmp(&(&b.file, &b.path, &b.method)));
    (operations, documents)
}

/// The snapshot text of `operations`: a header line, then one tab-separated line per operation.
fn render_snapshot(operations: &[ModelOperation]) -> String {
    let mut out = String::from(SNAPSHOT_HEADER);
    out.push('\n');
    for op in operations {
        let fields = [
            op.file.as_str(),
            op.operation_id.as_str(),
            op.method.as_str(),
            op.path.as_str(),
        ];
        for field in fields {
            assert!(
                !field.is_empty() && !field.contains(['\t', '\n', '\r']),
                "{op}: a field cannot be written to the snapshot: {field:?}"
            );
            out.push_str(field);
            out.push('\t');
        }
        out.push_str(if op.deprecated { "true" } else { "false" });
        out.push('\n');
    }
    out
}

fn parse_snapshot(text: &str) -> Vec<ModelOperation> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(SNAPSHOT_HEADER), "snapshot header");
    lines
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [file, operation_id, method, path, deprecated] = fields[..] else {
                panic!("snapshot line {}: expected 5 fields: {line:?}", i + 2);
            };
            let deprecated = match deprecated {
                "true" => true,
                "false" => false,
                other => panic!("snapshot line {}: bad `deprecated` {other:?}", i + 2),
            };
            ModelOperation {
                file: file.to_owned(),
                operation_id: operation_id.to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
                deprecated,
            }
        })
        .collect()
}

/// The operations, read once for all tests (`usage_plans.rs` reads them here too).
pub(crate) fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = models_dir();
        let (operations, documents) = read_models(&dir);
        assert!(
            documents.len() > 1,
            "{}: expected Amazon's model files, found {}",
            dir.display(),
            documents.len()
        );
        Models {
            source: Source(dir),
            operations,
            documents,
        }
    })
}

/// The model file that describes each API of the catalogue.
fn model_file(api: &str) -> &'static str {
    match api {
        "Orders v0" => "ordersV0.json",
        "Merchant Fulfillment v0" => "merchantFulfillmentV0.json",
        "Shipping v1" => "shipping.json",
        "Shipment Invoicing v0" => "shipmentInvoicingV0.json",
        "Reports 2021-06-30" => "reports_2021-06-30.json",
        "Easy Ship 2022-03-23" => "easyShip_2022-03-23.json",
        "Vendor DF Orders v1" => "vendorDirectFulfillmentOrdersV1.json",
        "Vendor DF Orders 2021-12-28" => "vendorDirectFulfillmentOrders_2021-12-28.json",
        "Vendor DF Shipping v1" => "vendorDirectFulfillmentShippingV1.json",
        "Vendor DF Shipping 2021-12-28" => "vendorDirectFulfillmentShipping_2021-12-28.json",
        other => panic!("no model file known for the catalogue API {other:?}: add it here"),
    }
}

/// Whether the catalogue operation `op` is the model operation `model`.
fn is_catalogue_row_of(op: &RestrictedOperation, model: &ModelOperation) -> bool {
    op.in_model()
        && model_file(op.api()) == model.file
        && op.method().as_str() == model.method
        && op.template() == model.path
}

/// A realistic value for the path placeholder `name`.
fn sample_value(name: &str) -> &'static str {
    let value = match name {
        "orderId" | "amazonOrderId" => "902-3159896-1390916",
        "shipmentId" => "FBA15DJ9SVVD",
        "purchaseOrderNumber" => "2JK3S9VC",
        "reportDocumentId" => {
            "amzn1.spdoc.1.4.na.5c8b2e2d-7c3f-4f5e-9d2a-1f0e8b6c4a31.T3YUVYPGKE9BMY.2651"
        }
        "reportId" | "feedId" => "50039018869",
        "sellerId" => "A2EUQ1WTGCTBG2",
        "sku" | "sellerSku" | "SellerSKU" => "SKU-RED-42",
        "asin" | "Asin" => "B07N4M94KL",
        "notificationType" => "ANY_OFFER_CHANGED",
        "productType" => "LUGGAGE",
        "trackingId" => "1Z999AA10123456784",
        // Most other ids in the models are opaque strings; a UUID is a realistic one.
        _ => "4f2a9c1e-77b0-4d2e-9a35-0c6e8d1b2f90",
    };
    assert!(
        !value.is_empty() && value != "." && value != ".." && !value.contains('/'),
        "sample value for {name} must be one path segment"
    );
    value
}

/// `template` with every `{placeholder}` replaced by a realistic value.
pub(crate) fn sample_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .unwrap_or_else(|| panic!("unclosed placeholder in {template}"));
        out.push_str(&rest[..open]);
        out.push_str(sample_value(&rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    assert!(!out.contains(['{', '}']), "{template} -> {out}");
    out
}

pub(crate) fn method(model: &ModelOperation) -> http::Method {
    http::Method::from_bytes(model.method.as_bytes()).unwrap()
}

fn matcher() -> Matcher {
    Matcher::new(Catalog::amazon()).unwrap()
}

#[test]
fn models_hold_370_distinct_operations() {
    let models = models();
    let ops = &models.operations;
    let files: BTreeSet<&str> = ops.iter().map(|op| op.file.as_str()).collect();
    println!("{} operations in {} model files", ops.len(), files.len());
    assert_eq!(ops.len(), EXPECTED_OPERATIONS, "source: {}", models.source);

    // The matcher keys on method + path, so no two model operations may share them.
    let mut seen = BTreeMap::new();
    for op in ops {
        if let Some(first) = seen.insert((op.method.as_str(), op.path.as_str()), op) {
            panic!("two model operations share a method and path: {first} and {op}");
        }
    }
    // operationIds are unique within a file except where a model repeats one (reported, not fatal).
    let mut ids: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for op in ops {
        *ids.entry((op.file.as_str(), op.operation_id.as_str()))
            .or_default() += 1;
    }
    for ((file, id), n) in ids.iter().filter(|(_, n)| **n > 1) {
        println!("note: {file} uses operationId {id} {n} times");
    }
}

#[test]
fn snapshot_matches_the_models() {
    let models = models();
    let Source(dir) = &models.source;
    let fresh = render_snapshot(&models.operations);
    let file = snapshot_path();
    if std::env::var_os("UPDATE_MODEL_SNAPSHOT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &fresh).unwrap();
        println!(
            "wrote {} ({} operations from {})",
            file.display(),
            models.operations.len(),
            dir.display()
        );
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    // Compare parsed rows too, so the failure names the first stale row.
    if committed != fresh {
        let old = if committed.is_empty() {
            Vec::new()
        } else {
            parse_snapshot(&committed)
        };
        let first_difference = old
            .iter()
            .zip(&models.operations)
            .find(|(a, b)| a != b)
            .map(|(a, b)| {
                format!(
                    "snapshot has {a} deprecated={}, models have {b} deprecated={}",
                    a.deprecated, b.deprecated
                )
            })
            .unwrap_or_else(|| {
                format!(
                    "snapshot has {} rows, models have {}",
                    old.len(),
                    models.operations.len()
                )
            });
        panic!(
            "{} is stale against {}: {first_difference}; regenerate it with \
             UPDATE_MODEL_SNAPSHOT=1 cargo test --all-features --test catalog_models \
             snapshot_matches_the_models (or run spapi-models/refresh.sh)",
            file.display(),
            dir.display()
        );
    }
}

#[test]
fn catalogue_operations_are_in_the_models() {
    let models = models();
    let catalog = Catalog::amazon();
    let mut problems = Vec::new();
    for op in catalog.operations() {
        let file = model_file(op.api());
        let label = format!(
            "{} {} {} {}",
            op.api(),
            op.name(),
            op.method(),
            op.template()
        );
        let same_route: Vec<&ModelOperation> = models
            .operations
            .iter()
            .filter(|m| m.method == op.method().as_str() && m.path == op.template())
            .collect();
        let same_name: Vec<&ModelOperation> = models
            .operations
            .iter()
            .filter(|m| m.file == file && m.operation_id == op.name())
            .collect();
        if op.in_model() {
            match same_route.as_slice() {
                [m] if m.file == file && m.operation_id == op.name() => {}
                [m] => problems.push(format!("{label}: the model has this route as {m}")),
                [] => problems.push(format!("{label}: no model has this method and path")),
                more => problems.push(format!("{label}: several model operations: {more:?}")),
            }
            if same_name.len() != 1 {
                problems.push(format!(
                    "{label}: {file} has {} operations named {}",
                    same_name.len(),
                    op.name()
                ));
            }
        } else {
            if let Some(m) = same_route.first() {
                problems.push(format!(
                    "{label}: marked not in model, but the model has {m}"
                ));
            }
            if let Some(m) = same_name.first() {
                problems.push(format!("{label}: marked not in model, but {file} has {m}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "catalogue vs models ({}):\n{}",
        models.source,
        problems.join("\n")
    );
    let absent: Vec<&str> = catalog
        .operations()
        .iter()
        .filter(|op| !op.in_model())
        .map(RestrictedOperation::name)
        .collect();
    assert_eq!(absent, ["cancelShipmentOld"]);
    println!(
        "{} catalogue operations in the models, {} absent as expected ({absent:?})",
        catalog.operations().len() - absent.len(),
        absent.len()
    );
}

#[test]
fn deprecated_in_the_model_iff_catalogue_has_a_removal_date() {
    let models = models();
    let catalog = Catalog::amazon();
    let mut problems = Vec::new();
    for model in &models.operations {
        let row = catalog
            .operations()
            .iter()
            .find(|op| is_catalogue_row_of(op, model));
        match (model.deprecated, row) {
            (true, None) => problems.push(format!(
                "{model}: deprecated in the model, but not in the catalogue"
            )),
            (true, Some(op)) if op.removal_date().is_none() => problems.push(format!(
                "{model}: deprecated in the model, but the catalogue has no removal date for {} {}",
                op.api(),
                op.name()
            )),
            (false, Some(op)) if op.removal_date().is_some() => problems.push(format!(
                "{model}: not deprecated in the model, but the catalogue removes {} {} on {}",
                op.api(),
                op.name(),
                op.removal_date().unwrap_or_default()
            )),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "deprecation ({}):\n{}",
        models.source,
        problems.join("\n")
    );

    let deprecated: BTreeSet<(&str, &str)> = models
        .operations
        .iter()
        .filter(|m| m.deprecated)
        .map(|m| (m.file.as_str(), m.operation_id.as_str()))
        .collect();
    // The six operations that the models' README names as deprecated.
    let readme: BTreeSet<(&str, &str)> = [
        "getOrders",
        "getOrder",
        "getOrderBuyerInfo",
        "getOrderAddress",
        "getOrderItems",
        "getOrderItemsBuyerInfo",
    ]
    .into_iter()
    .map(|name| ("ordersV0.json", name))
    .collect();
    assert_eq!(deprecated, readme);
    println!(
        "{} deprecated operations, all with a removal date",
        deprecated.len()
    );
}

#[test]
fn matcher_flags_exactly_the_catalogue_operations() {
    let models = models();
    let matcher = matcher();
    let catalog = matcher.catalog();
    let mut restricted = 0;
    let mut hits_per_row = vec![0_usize; catalog.operations().len()];
    for model in &models.operations {
        let path = sample_path(&model.path);
        let expected = catalog
            .operations()
            .iter()
            .position(|op| is_catalogue_row_of(op, model));
        let hit = matcher.classify(&method(model), &path);
        match (expected, hit) {
            (None, None) => {}
            (None, Some(hit)) => {
                let op = hit.operation();
                panic!(
                    "{model}: {path} is not restricted, but was classified as {} {} {} {}",
                    op.api(),
                    op.name(),
                    op.method(),
                    op.template()
                );
            }
            (Some(i), None) => {
                let op = &catalog.operations()[i];
                panic!(
                    "{model}: {path} is {} {}, but was not classified as restricted",
                    op.api(),
                    op.name()
                );
            }
            (Some(i), Some(hit)) => {
                let want = &catalog.operations()[i];
                let got = hit.operation();
                assert_eq!(catalog.get(hit.id()), Some(want), "{model}: {path}");
                assert_eq!(
                    (got.api(), got.name(), got.method(), got.template()),
                    (want.api(), want.name(), want.method(), want.template()),
                    "{model}: {path}"
                );
                assert_eq!(got.name(), model.operation_id, "{model}: {path}");
                restricted += 1;
                hits_per_row[i] += 1;
            }
        }
    }
    let total = models.operations.len();
    println!(
        "{total} model operations: {restricted} restricted, {} not ({})",
        total - restricted,
        models.source
    );
    for (op, hits) in catalog.operations().iter().zip(&hits_per_row) {
        let want = usize::from(op.in_model());
        assert_eq!(
            *hits,
            want,
            "{} {} matched {hits} model operations",
            op.api(),
            op.name()
        );
    }
    let in_model = catalog
        .operations()
        .iter()
        .filter(|op| op.in_model())
        .count();
    assert_eq!(restricted, in_model);
    assert_eq!((total, restricted), (EXPECTED_OPERATIONS, 31));
}

/// How a look-alike of `DOMAIN.md` is found in the models.
enum LookAlike {
    /// One operation: model file, method, operationId, and how its path must end.
    Operation(&'static str, &'static str, &'static str, &'static str),
    /// Every operation of a model file, whose paths all start with this prefix.
    EveryOperationOf(&'static str, &'static str),
}

#[test]
fn look_alikes_are_not_restricted() {
    use LookAlike::{EveryOperationOf, Operation};
    let models = models();
    let matcher = matcher();
    let orders = "ordersV0.json";
    let mfn = "merchantFulfillmentV0.json";
    let reports = "reports_2021-06-30.json";
    let df_v1 = "vendorDirectFulfillmentShippingV1.json";
    let df_2021 = "vendorDirectFulfillmentShipping_2021-12-28.json";
    let look_alikes = [
        Operation(
            orders,
            "PATCH",
            "updateVerificationStatus",
            "/regulatedInfo",
        ),
        Operation(
            orders,
            "POST",
            "confirmShipment",
            "/orders/v0/orders/{orderId}/shipmentConfirmation",
        ),
        Operation(
            orders,
            "POST",
            "updateShipmentStatus",
            "/orders/{orderId}/shipment",
        ),
        Operation(
            mfn,
            "POST",
            "getEligibleShipmentServices",
            "/mfn/v0/eligibleShippingServices",
        ),
        Operation(
            mfn,
            "POST",
            "getAdditionalSellerInputs",
            "/mfn/v0/additionalSellerInputs",
        ),
        Operation(
            df_v1,
            "POST",
            "submitShippingLabelRequest",
            "/shippingLabels",
        ),
        Operation(
            df_2021,
            "POST",
            "submitShippingLabelRequest",
            "/shippingLabels",
        ),
        Operation(
            "vendorOrders.json",
            "GET",
            "getPurchaseOrders",
            "/vendor/orders/v1/purchaseOrders",
        ),
        Operation(
            "vendorOrders.json",
            "GET",
            "getPurchaseOrder",
            "/vendor/orders/v1/purchaseOrders/{purchaseOrderNumber}",
        ),
        EveryOperationOf("shippingV2.json", "/shipping/v2/"),
        Operation(reports, "GET", "getReports", "/reports/2021-06-30/reports"),
        Operation(
            reports,
            "GET",
            "getReport",
            "/reports/2021-06-30/reports/{reportId}",
        ),
        Operation(
            "tokens_2021-03-01.json",
            "POST",
            "createRestrictedDataToken",
            "/tokens/2021-03-01/restrictedDataToken",
        ),
        EveryOperationOf("orders_2026-01-01.json", "/orders/2026-01-01/"),
    ];
    let mut checked = Vec::new();
    for look_alike in &look_alikes {
        let found: Vec<&ModelOperation> = match look_alike {
            Operation(file, method, id, suffix) => {
                let found: Vec<_> = models
                    .operations
                    .iter()
                    .filter(|m| m.file == *file && m.operation_id == *id && m.method == *method)
                    .collect();
                assert_eq!(
                    found.len(),
                    1,
                    "look-alike {method} {id} of {file}: not exactly once in the models ({})",
                    models.source
                );
                assert!(
                    found[0].path.ends_with(suffix),
                    "look-alike {}: its path does not end with {suffix}",
                    found[0]
                );
                found
            }
            EveryOperationOf(file, prefix) => {
                let found: Vec<_> = models
                    .operations
                    .iter()
                    .filter(|m| m.file == *file)
                    .collect();
                assert!(
                    !found.is_empty(),
                    "look-alike API {file}: no operations in the models ({})",
                    models.source
                );
                for m in &found {
                    assert!(
                        m.path.starts_with(prefix),
                        "look-alike {m}: not under {prefix}"
                    );
                }
                found
            }
        };
        for m in found {
            let path = sample_path(&m.path);
            if let Some(hit) = matcher.classify(&method(m), &path) {
                panic!(
                    "look-alike {m}: {path} classified as {} {}",
                    hit.operation().api(),
                    hit.operation().name()
                );
            }
            // The template itself (a generic path) is no more restricted than a real path.
            assert!(
                matcher.classify(&method(m), &m.path).is_none(),
                "look-alike {m}"
            );
            checked.push(m);
        }
    }
    println!("{} look-alike operations, none restricted", checked.len());
    assert!(checked.len() >= look_alikes.len());
}

/// Every string in `value`, with its JSON pointer.
fn strings<'a>(value: &'a serde_json::Value, pointer: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        serde_json::Value::String(s) => out.push((pointer, s)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{pointer}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                strings(item, format!("{pointer}/{key}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn data_elements_agree_with_the_models() {
    let models = models();
    let catalog = Catalog::amazon();

    // Orders v0: does its model say anything about data elements? (In this snapshot it does not, so
    // there is nothing to check there; print what there is for a reader of a newer snapshot.)
    let orders = &models.documents["ordersV0.json"];
    let mut all = Vec::new();
    strings(orders, String::new(), &mut all);
    let mentions: Vec<&(String, &str)> = all
        .iter()
        .filter(|(_, s)| s.contains("dataElements"))
        .collect();
    if mentions.is_empty() {
        println!("ordersV0.json says nothing about dataElements: no check from it");
    }
    for (pointer, text) in &mentions {
        println!("ordersV0.json mentions dataElements at {pointer}: {text}");
    }

    // Tokens: `RestrictedResource.dataElements` names the operations that take data elements and
    // lists the possible values in bold.
    let tokens = &models.documents["tokens_2021-03-01.json"];
    let description =
        tokens["definitions"]["RestrictedResource"]["properties"]["dataElements"]["description"]
            .as_str()
            .expect("the Tokens model describes RestrictedResource.dataElements");
    let named_operations: BTreeSet<&str> = description
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| word.starts_with("getOrder"))
        .collect();
    let listed_values: BTreeSet<&str> = description.split("**").skip(1).step_by(2).collect();
    println!("Tokens model: operations {named_operations:?}, values {listed_values:?}");
    assert!(
        !named_operations.is_empty() && !listed_values.is_empty(),
        "{description}"
    );

    let with_elements: BTreeSet<&str> = catalog
        .operations()
        .iter()
        .filter(|op| !op.data_elements().is_empty())
        .inspect(|op| assert_eq!(op.api(), "Orders v0", "{}", op.name()))
        .map(RestrictedOperation::name)
        .collect();
    assert_eq!(with_elements, named_operations);

    let known: BTreeSet<&str> = DataElement::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(known, listed_values);
    let used: BTreeSet<&str> = catalog
        .operations()
        .iter()
        .flat_map(|op| op.data_elements().iter())
        .map(DataElement::as_str)
        .collect();
    assert_eq!(used, listed_values);
}

//! Writes, or checks, `src/catalog/usage_plans.rs`: every operation of the vendored models in
//! `spapi-models/` with the usage plan its description states.
//!
//! ```sh
//! cargo xtask usage-plans          # rewrites the file from the models
//! cargo xtask usage-plans --check  # fails, with the lines added and removed, when it is stale
//! ```
//!
//! # What is read
//! Each `*.json` model (Swagger 2.0) gives, per operation, its API (named from `info.title` and
//! `info.version` as the restricted catalogue names APIs: see [`api_name`]), `operationId`, method,
//! path template, and the usage plan of its description: a Markdown table
//!
//! ```text
//! | Rate (requests per second) | Burst |
//! | ---- | ---- |
//! | 0.0167 | 20 |
//! ```
//!
//! The variants the models hold are read too: the table written with literal `\n` sequences
//! instead of line breaks; a first `Plan type` column, with a `Default` row (the plan) and a
//! `Selling partner specific` row of `Variable` values; and a value row of placeholders (`n`),
//! which states no plan. Columns are found by their header, whatever the spacing and case, and a
//! footnote mark after a number (`0.5*`) is dropped. A table this program cannot read with
//! certainty (a second table, a missing separator, a row of another width, several unlabelled
//! rows, a number with anything else around it) is an error that names the operation, never a
//! guess.
//!
//! The rows go out in the order of model file, path and method, one line each, with the rate both
//! as the model writes it and parsed. The file also holds the lowest rate and the lowest burst of
//! all the plans, the conservative default for operations without one.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The generated file, relative to the repository root.
const OUTPUT: &str = "src/catalog/usage_plans.rs";
/// The vendored models, relative to the repository root.
const MODELS: &str = "spapi-models";
/// The keys of a Swagger 2.0 path item that are operations.
const OPERATION_KEYS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Names for the APIs whose title, once shortened by [`api_name`], names a subject rather than an
/// API, or differs from the name Amazon's documentation uses.
const RENAMES: [(&str, &str); 17] = [
    ("third party application integrations", "App Integrations"),
    ("FBA inbound operations", "Fulfillment Inbound"),
    ("FBA Inbound Eligibilty", "FBA Inbound Eligibility"),
    ("tracking services provided by Amazon", "Tracking"),
    ("Amazon Seller Wallet Open Banking API", "Seller Wallet"),
    ("Amazon Shipping API", "Shipping"),
    ("CustomerFeedback", "Customer Feedback"),
    ("Pricing", "Product Pricing"),
    (
        "Vendor Direct Fulfillment Sandbox Test Data",
        "Vendor DF Sandbox Test Data",
    ),
    (
        "Amazon External Fulfillment Return Item Processing",
        "External Fulfillment Returns",
    ),
    (
        "Amazon External Fulfillment Shipments Processing",
        "External Fulfillment Shipments",
    ),
    (
        "External Fulfillment Inventory Management",
        "External Fulfillment Inventory",
    ),
    ("Retail Procurement Orders", "Vendor Orders"),
    ("Retail Procurement Payments", "Vendor Invoices"),
    ("Retail Procurement Shipments", "Vendor Shipments"),
    (
        "Retail Procurement Transaction Status",
        "Vendor Transaction Status",
    ),
    ("Automotive", "Vehicles"),
];

/// What a description says about the operation's usage plan.
#[derive(Clone, Debug, PartialEq)]
enum Table {
    /// No usage-plan table.
    Absent,
    /// A table whose values are placeholders (`n`): no plan either.
    NoValues { rate: String, burst: String },
    /// A plan: the rate as written, the rate parsed, the burst.
    Plan { text: String, rate: f64, burst: u32 },
}

/// One operation of one model.
#[derive(Debug)]
struct Operation {
    file: String,
    api: String,
    name: String,
    method: String,
    path: String,
    table: Table,
}

/// `cargo xtask usage-plans [--check]`.
pub(crate) fn run(args: &[String]) -> Result<(), Box<dyn Error>> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        [other, ..] => {
            return Err(format!(
                "usage-plans: unexpected argument `{other}` (usage: cargo xtask usage-plans [--check])"
            )
            .into());
        }
    };
    let root = repository();
    let models = root.join(MODELS);
    let source = std::fs::read_to_string(models.join("SOURCE"))
        .map_err(|e| format!("{}: {e}", models.join("SOURCE").display()))?;
    let operations = read_models(&models)?;
    let text = render(source.trim(), &operations)?;
    summary(&operations);
    let path = root.join(OUTPUT);
    if !check {
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {OUTPUT}");
        return Ok(());
    }
    let committed = match std::fs::read_to_string(&path) {
        Ok(committed) => committed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    if committed == text {
        println!("{OUTPUT} is up to date");
        return Ok(());
    }
    let (removed, added) = line_diff(&committed, &text);
    println!("--- {OUTPUT} (committed)");
    println!("+++ {OUTPUT} (from the models)");
    for line in &removed {
        println!("-{line}");
    }
    for line in &added {
        println!("+{line}");
    }
    if removed.is_empty() && added.is_empty() {
        println!("  (the same lines: only their order or the line endings differ)");
    }
    Err(format!(
        "{OUTPUT} is stale against {MODELS}/: run `cargo xtask usage-plans`, review the diff and \
         commit it with the models"
    )
    .into())
}

/// The repository root: the folder above this package.
fn repository() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map_or(xtask.clone(), Path::to_path_buf)
}

/// Reads every `*.json` model of `dir`: its operations, in the order of file, path and method.
fn read_models(dir: &Path) -> Result<Vec<Operation>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no models (*.json)", dir.display()).into());
    }
    let mut operations = Vec::new();
    let mut apis: BTreeMap<String, String> = BTreeMap::new();
    for path in &files {
        let file = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| format!("{}: not a UTF-8 file name", path.display()))?
            .to_owned();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let document: Value =
            serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
        let before = operations.len();
        let api = read_model(&file, &document, &mut operations)?;
        if operations.len() == before {
            return Err(format!("{file}: no operations").into());
        }
        if let Some(other) = apis.insert(api.clone(), file.clone()) {
            return Err(format!(
                "{other} and {file} are both named {api:?}: give one a name in RENAMES of \
                 xtask/src/usage_plans.rs"
            )
            .into());
        }
    }
    operations.sort_by(|a, b| (&a.file, &a.path, &a.method).cmp(&(&b.file, &b.path, &b.method)));
    let mut routes = BTreeSet::new();
    for op in &operations {
        if !routes.insert((op.method.as_str(), op.path.as_str())) {
            return Err(format!(
                "two operations are {} {}: the classification keys on method and path",
                op.method, op.path
            )
            .into());
        }
    }
    Ok(operations)
}

/// Adds the operations of one model to `out`; returns the name of its API.
fn read_model(
    file: &str,
    document: &Value,
    out: &mut Vec<Operation>,
) -> Result<String, Box<dyn Error>> {
    if document["swagger"].as_str() != Some("2.0") {
        return Err(format!("{file}: not a Swagger 2.0 model").into());
    }
    let title = document["info"]["title"]
        .as_str()
        .ok_or_else(|| format!("{file}: no info.title"))?;
    let version = document["info"]["version"]
        .as_str()
        .ok_or_else(|| format!("{file}: no info.version"))?;
    let api = api_name(title, version);
    let paths = document["paths"]
        .as_object()
        .ok_or_else(|| format!("{file}: no `paths` object"))?;
    for (path, item) in paths {
        let item = item
            .as_object()
            .ok_or_else(|| format!("{file} {path}: the path item is not an object"))?;
        for (key, operation) in item {
            if !OPERATION_KEYS.contains(&key.as_str()) {
                if key == "parameters" || key == "$ref" || key.starts_with("x-") {
                    continue;
                }
                return Err(format!("{file} {path}: unexpected path item key `{key}`").into());
            }
            let name = operation["operationId"]
                .as_str()
                .ok_or_else(|| format!("{file} {key} {path}: no operationId"))?;
            let description = operation["description"].as_str().unwrap_or_default();
            let table = usage_table(description)
                .map_err(|e| format!("{file} {name} ({key} {path}): {e}"))?;
            out.push(Operation {
                file: file.to_owned(),
                api: api.clone(),
                name: name.to_owned(),
                method: key.to_ascii_uppercase(),
                path: path.clone(),
                table,
            });
        }
    }
    Ok(api)
}

/// The name of an API as the restricted catalogue writes it (`Orders v0`, `Vendor DF Shipping
/// 2021-12-28`): the model's title without "The" and "Selling Partner API for", the Direct
/// Fulfillment APIs as "Vendor DF", a few titles renamed ([`RENAMES`]), then the version.
fn api_name(title: &str, version: &str) -> String {
    let mut name = title.trim();
    for prefix in [
        "The ",
        "Selling Partner APIs for ",
        "Selling Partner API for ",
    ] {
        name = name.strip_prefix(prefix).unwrap_or(name);
    }
    let name = name.trim_end_matches('.').trim();
    let name = match name.strip_prefix("Direct Fulfillment ") {
        Some(rest) => format!("Vendor DF {rest}"),
        None => name.to_owned(),
    };
    let name = RENAMES
        .iter()
        .find(|(from, _)| *from == name)
        .map_or(name.clone(), |(_, to)| (*to).to_owned());
    format!("{name} {}", version.trim())
}

/// The cells of a Markdown table row, trimmed: `| a | b |` → `["a", "b"]`.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    Some(inner.split('|').map(str::trim).collect())
}

/// The columns of the rate and the burst, when `cells` are the header of a usage-plan table
/// (whatever its spacing and case).
fn header_columns(cells: &[&str]) -> Option<(usize, usize)> {
    let words = |cell: &str| cell.split_whitespace().collect::<Vec<_>>().join(" ");
    let column = |name: &str| {
        cells
            .iter()
            .position(|cell| words(cell).eq_ignore_ascii_case(name))
    };
    Some((column("Rate (requests per second)")?, column("Burst")?))
}

/// Whether `cells` are a Markdown separator row (`| --- | :--: |`).
fn is_separator(cells: &[&str]) -> bool {
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
}

/// A value cell without a trailing footnote mark (`0.5*`, `0.5\*`, `0.5†`).
fn without_footnote(cell: &str) -> &str {
    cell.trim_end_matches(['*', '\\', '†', '‡']).trim_end()
}

/// Whether `text` is a plain decimal: digits with at most one point, at least one digit (`0.0167`,
/// `.5`, `2.0`, `10`).
fn is_decimal(text: &str) -> bool {
    let mut parts = text.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next().unwrap_or_default();
    parts.next().is_none()
        && !(whole.is_empty() && fraction.is_empty())
        && whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
}

/// The usage plan a description states.
fn usage_table(description: &str) -> Result<Table, String> {
    // Some descriptions carry the two characters `\n` where a line break belongs.
    let text = description.replace("\\n", "\n").replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<(usize, Vec<&str>, (usize, usize))> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let header = cells(line)?;
            let columns = header_columns(&header)?;
            Some((i, header, columns))
        })
        .collect();
    let (at, header, (rate_column, burst_column)) = match &headers[..] {
        [] => return Ok(Table::Absent),
        [(at, header, columns)] => (*at, header, *columns),
        _ => return Err("more than one usage-plan table".to_owned()),
    };
    let separator = lines.get(at + 1).and_then(|line| cells(line));
    if !separator.is_some_and(|c| is_separator(&c)) {
        return Err("the usage-plan table has no separator row under its header".to_owned());
    }
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .skip(at + 2)
        .map_while(|line| cells(line))
        .collect();
    if let Some(row) = rows.iter().find(|row| row.len() != header.len()) {
        return Err(format!(
            "usage-plan row {row:?} does not have the header's {} columns",
            header.len()
        ));
    }
    // Columns other than the rate and the burst label the rows (`| Plan type | ...`, with a
    // `Default` row and a `Selling partner specific` one): the plan is then the `Default` row.
    // Without labels, the table must have exactly one row.
    let labels: Vec<usize> = (0..header.len())
        .filter(|&i| i != rate_column && i != burst_column)
        .collect();
    let row = if labels.is_empty() {
        match &rows[..] {
            [row] => row,
            [] => return Err("the usage-plan table has no value row".to_owned()),
            _ => return Err("the usage-plan table has several rows and no labels".to_owned()),
        }
    } else {
        let is_default = |row: &&Vec<&str>| {
            labels.iter().any(|&i| {
                row.get(i)
                    .is_some_and(|label| label.eq_ignore_ascii_case("Default"))
            })
        };
        let mut defaults = rows.iter().filter(is_default);
        match (defaults.next(), defaults.next()) {
            (Some(row), None) => row,
            _ => return Err("the usage-plan table has not exactly one `Default` row".to_owned()),
        }
    };
    let (Some(rate), Some(burst)) = (row.get(rate_column), row.get(burst_column)) else {
        return Err(format!("usage-plan row {row:?} is too short"));
    };
    let (rate, burst) = (without_footnote(rate), without_footnote(burst));
    let has_digit = |cell: &str| cell.bytes().any(|b| b.is_ascii_digit());
    if !has_digit(rate) && !has_digit(burst) {
        return Ok(Table::NoValues {
            rate: rate.to_owned(),
            burst: burst.to_owned(),
        });
    }
    if !is_decimal(rate) {
        return Err(format!("unreadable rate {rate:?}"));
    }
    let parsed: f64 = rate
        .parse()
        .map_err(|e| format!("unreadable rate {rate:?}: {e}"))?;
    if !(parsed.is_finite() && parsed > 0.0) {
        return Err(format!("rate {rate:?} is not above zero"));
    }
    let plain = !burst.is_empty() && burst.bytes().all(|b| b.is_ascii_digit());
    let burst: u32 = match burst.parse() {
        Ok(value) if plain && value > 0 => value,
        _ => return Err(format!("unreadable burst {burst:?}")),
    };
    Ok(Table::Plan {
        text: rate.to_owned(),
        rate: parsed,
        burst,
    })
}

/// The generated file.
fn render(source: &str, operations: &[Operation]) -> Result<String, Box<dyn Error>> {
    let plans: Vec<(f64, u32)> = operations
        .iter()
        .filter_map(|op| match op.table {
            Table::Plan { rate, burst, .. } => Some((rate, burst)),
            _ => None,
        })
        .collect();
    let lowest_rate = plans.iter().map(|(rate, _)| *rate).reduce(f64::min);
    let lowest_burst = plans.iter().map(|(_, burst)| *burst).min();
    let (Some(lowest_rate), Some(lowest_burst)) = (lowest_rate, lowest_burst) else {
        return Err("no model states a usage plan".into());
    };
    let rate_of = |wanted: f64| {
        operations
            .iter()
            .filter(|op| matches!(op.table, Table::Plan { rate, .. } if rate == wanted))
            .map(|op| format!("{} {}", op.api, op.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "//! Every operation of Amazon's SP-API models, with the usage plan its description states."
    )?;
    writeln!(w, "//!")?;
    writeln!(
        w,
        "//! @generated by `cargo xtask usage-plans` from the models in `spapi-models/`:"
    )?;
    writeln!(w, "//! {source}.")?;
    writeln!(
        w,
        "//! Do not edit by hand: change the models or `xtask/src/usage_plans.rs`, then run"
    )?;
    writeln!(
        w,
        "//! `cargo xtask usage-plans` (`--check` tells whether this file is stale)."
    )?;
    writeln!(w)?;
    writeln!(w, "use http::Method;")?;
    writeln!(w)?;
    writeln!(w, "use super::{{PlannedOperation, UsagePlan}};")?;
    writeln!(w)?;
    writeln!(
        w,
        "/// The lowest rate of all the plans ({}), and the lowest burst.",
        rate_of(lowest_rate)
    )?;
    writeln!(
        w,
        "pub(super) const LOWEST: UsagePlan = UsagePlan::from_model({lowest_rate:?}, {lowest_burst});"
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "/// The operations, by model file, path template and method."
    )?;
    writeln!(w, "#[rustfmt::skip]")?;
    writeln!(
        w,
        "pub(super) static OPERATIONS: [PlannedOperation; {}] = [",
        operations.len()
    )?;
    let mut file = "";
    for op in operations {
        if op.file != file {
            file = &op.file;
            writeln!(w, "    // {file}")?;
        }
        // The operation keys, upper-cased, are the names of `http::Method`'s constants.
        let (api, name, method, path) = (&op.api, &op.name, &op.method, &op.path);
        match &op.table {
            Table::Plan { text, rate, burst } => writeln!(
                w,
                "    PlannedOperation::planned({api:?}, {name:?}, Method::{method}, {path:?}, {text:?}, {rate:?}, {burst}),"
            )?,
            Table::Absent => writeln!(
                w,
                "    PlannedOperation::unplanned({api:?}, {name:?}, Method::{method}, {path:?}),"
            )?,
            Table::NoValues { rate, burst } => writeln!(
                w,
                "    PlannedOperation::unplanned({api:?}, {name:?}, Method::{method}, {path:?}), // table without values: {rate:?} / {burst:?}"
            )?,
        }
    }
    writeln!(w, "];")?;
    Ok(out)
}

/// Prints what the models hold.
fn summary(operations: &[Operation]) {
    let files: BTreeSet<&str> = operations.iter().map(|op| op.file.as_str()).collect();
    let count = |f: fn(&Table) -> bool| operations.iter().filter(|op| f(&op.table)).count();
    let plans = count(|t| matches!(t, Table::Plan { .. }));
    let no_values = count(|t| matches!(t, Table::NoValues { .. }));
    let absent = count(|t| matches!(t, Table::Absent));
    println!(
        "{} operations in {} models: {} with a usage-plan table ({plans} with a plan, {no_values} \
         without values), {absent} without a table",
        operations.len(),
        files.len(),
        plans + no_values
    );
    for op in operations {
        if let Table::NoValues { rate, burst } = &op.table {
            println!(
                "  no values: {} {} ({} {}): {rate:?} / {burst:?}",
                op.api, op.name, op.method, op.path
            );
        }
    }
}

/// The lines of `old` missing from `new` and those of `new` missing from `old`, counting repeated
/// lines, each in the order of its text.
fn line_diff<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let count = |text: &'a str| {
        let mut counts = BTreeMap::<&str, usize>::new();
        for line in text.lines() {
            *counts.entry(line).or_default() += 1;
        }
        counts
    };
    let only_in = |text: &'a str, mut other: BTreeMap<&'a str, usize>| {
        text.lines()
            .filter(|line| match other.get_mut(line) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .collect::<Vec<_>>()
    };
    (only_in(old, count(new)), only_in(new, count(old)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, rate: f64, burst: u32) -> Table {
        Table::Plan {
            text: text.to_owned(),
            rate,
            burst,
        }
    }

    #[test]
    fn the_usual_table_is_read() {
        let description = "Returns orders.\n\n**Usage Plan:**\n\n| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 0.0167 | 20 |\n\nThe `x-amzn-RateLimit-Limit` header ...";
        assert_eq!(usage_table(description), Ok(plan("0.0167", 0.0167, 20)));
    }

    #[test]
    fn variants_of_the_models_are_read() {
        // Literal `\n` sequences, a leading point, no spaces.
        let escaped = r"Usage Plan:\n\n| Rate (requests per second) | Burst |\n| ---- | ---- |\n|.5|30|\n\nMore.";
        assert_eq!(usage_table(escaped), Ok(plan(".5", 0.5, 30)));
        // A labelled default row and a row of variable values.
        let labelled = "| Plan type | Rate (requests per second) | Burst |\n| ---- | ---- | ---- |\n|Default| 5 | 10 |\n|Selling partner specific| Variable | Variable |\n";
        assert_eq!(usage_table(labelled), Ok(plan("5", 5.0, 10)));
        // Placeholders.
        let placeholders = "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| n | n |\n";
        assert_eq!(
            usage_table(placeholders),
            Ok(Table::NoValues {
                rate: "n".to_owned(),
                burst: "n".to_owned()
            })
        );
        // A footnote mark, other spacing and case in the header, a third column's worth of dashes.
        let footnote = "|  Rate  (Requests per second)|burst|\n|:--|--:|\n| 2.0* | 15 |\n";
        assert_eq!(usage_table(footnote), Ok(plan("2.0", 2.0, 15)));
        assert_eq!(usage_table("No table here."), Ok(Table::Absent));
    }

    #[test]
    fn doubtful_tables_are_errors() {
        for description in [
            "| Rate (requests per second) | Burst |\n| 1 | 2 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 0 | 2 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 0 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1/60 | 2 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 2.5 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 2 | 3 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 2 |\n| 3 | 4 |\n",
            "| Plan | Rate (requests per second) | Burst |\n| - | - | - |\n| Other | 1 | 2 |\n",
            "| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 2 |\n\n| Rate (requests per second) | Burst |\n| ---- | ---- |\n| 1 | 2 |\n",
        ] {
            assert!(usage_table(description).is_err(), "{description:?}");
        }
    }

    #[test]
    fn api_names_follow_the_restricted_catalogue() {
        let cases = [
            ("Selling Partner API for Orders", "v0", "Orders v0"),
            (
                "Selling Partner API for Tokens ",
                "2021-03-01",
                "Tokens 2021-03-01",
            ),
            (
                "Selling Partner API for Direct Fulfillment Shipping",
                "2021-12-28",
                "Vendor DF Shipping 2021-12-28",
            ),
            (
                "The Selling Partner API for Invoices.",
                "2024-06-19",
                "Invoices 2024-06-19",
            ),
            ("Amazon Shipping API", "v2", "Shipping v2"),
        ];
        for (title, version, name) in cases {
            assert_eq!(api_name(title, version), name);
        }
    }

    #[test]
    fn decimals_are_plain() {
        for yes in ["0.0167", ".5", "2.0", "10", "5."] {
            assert!(is_decimal(yes), "{yes}");
        }
        for no in ["", ".", "1.2.3", "-1", "1e3", "n", "0x1"] {
            assert!(!is_decimal(no), "{no}");
        }
    }
}

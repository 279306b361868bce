//! Prints a Markdown report of the last `cargo bench` run: each target of the benchmark suite with
//! its measurement, its baseline, the ratio and whether the target was met, then every measurement.
//!
//! ```sh
//! cargo bench --all-features -- --noplot
//! cargo run --example bench_report
//! ```
//!
//! It reads criterion's results (`<target>/criterion/**/new/{benchmark,estimates}.json`, where
//! `<target>` honours `CRITERION_HOME` and `CARGO_TARGET_DIR` as criterion does) and the figures the
//! benches leave in `<target>/criterion/spapi-rdt-extra.json` (bytes per cached seller, source calls
//! per burst, classification samples). A bench that has not run shows as "not run".

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One criterion measurement.
struct Measure {
    /// Nanoseconds per iteration (criterion's typical value: the slope, else the mean).
    ns: f64,
    /// Elements per iteration, when the bench declared a throughput.
    elements: Option<u64>,
}

impl Measure {
    /// Nanoseconds per element (per request, per lookup), or per iteration without a throughput.
    fn per_element(&self) -> f64 {
        self.ns / self.elements.unwrap_or(1).max(1) as f64
    }
}

/// Every measurement, by criterion id (`group/function/parameter`).
struct Results(BTreeMap<String, Measure>);

impl Results {
    fn per(&self, id: &str) -> Option<f64> {
        self.0.get(id).map(Measure::per_element)
    }
}

/// Where criterion writes, found as criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
        .and_then(|m| m.get("target_directory")?.as_str().map(PathBuf::from));
    match target {
        Some(target) => target.join("criterion"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Collects every `new/benchmark.json` under `dir` with its `estimates.json`.
fn collect(dir: &Path, into: &mut BTreeMap<String, Measure>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let (Some(bench), Some(estimates)) = (
                read_json(&path.join("benchmark.json")),
                read_json(&path.join("estimates.json")),
            ) else {
                continue;
            };
            let Some(id) = bench.get("full_id").and_then(Value::as_str) else {
                continue;
            };
            let typical = ["slope", "mean"].into_iter().find_map(|k| {
                estimates
                    .get(k)?
                    .get("point_estimate")?
                    .as_f64()
                    .filter(|ns| ns.is_finite())
            });
            let Some(ns) = typical else {
                continue;
            };
            let elements = bench
                .get("throughput")
                .and_then(|t| t.get("Elements"))
                .and_then(Value::as_u64);
            into.insert(id.to_owned(), Measure { ns, elements });
        } else {
            collect(&path, into);
        }
    }
}

fn time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

fn opt_time(ns: Option<f64>) -> String {
    ns.map_or_else(|| "not run".to_owned(), time)
}

/// Whether a row met its target.
enum Verdict {
    Met,
    Missed,
    /// Missed on one of the row's two targets.
    MissedPart(&'static str),
    /// A row shown for comparison, with no target of its own.
    Reference,
    NotRun,
}

impl Verdict {
    fn of(met: bool) -> Self {
        if met { Verdict::Met } else { Verdict::Missed }
    }
}

/// One line of the targets table.
struct Row {
    bench: String,
    measured: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Verdict,
}

impl Row {
    fn print(&self) {
        let verdict = match self.met {
            Verdict::Met => "met".to_owned(),
            Verdict::Missed => "**missed**".to_owned(),
            Verdict::MissedPart(part) => format!("**missed** ({part})"),
            Verdict::Reference => "—".to_owned(),
            Verdict::NotRun => "not run".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            self.bench, self.measured, self.baseline, self.ratio, self.target, verdict
        );
    }
}

fn not_run(bench: &str, target: &str) -> Row {
    Row {
        bench: bench.to_owned(),
        measured: "not run".to_owned(),
        baseline: String::new(),
        ratio: String::new(),
        target: target.to_owned(),
        met: Verdict::NotRun,
    }
}

/// The largest over the smallest of `values`, if all are there.
fn spread(values: &[Option<f64>]) -> Option<(f64, f64, f64)> {
    let values: Option<Vec<f64>> = values.iter().copied().collect();
    let values = values?;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    (min > 0.0).then_some((min, max, max / min))
}

/// How much "flat" may vary: the slowest case at most this many times the fastest.
const FLAT: f64 = 1.5;

fn targets(r: &Results, extra: &Value) -> Vec<Row> {
    let mut rows = Vec::new();

    // 1. passthrough
    let target = "overhead ≤ 25 ns";
    rows.push(
        match (
            r.per("passthrough/layer"),
            r.per("passthrough/bare"),
            r.per("passthrough/set_request_header"),
        ) {
            (Some(layer), Some(bare), Some(header)) => Row {
                bench: "passthrough: unrestricted request".into(),
                measured: format!("{} (+{} over bare)", time(layer), time(layer - bare)),
                baseline: format!(
                    "bare {}; SetRequestHeader {} (+{})",
                    time(bare),
                    time(header),
                    time(header - bare)
                ),
                ratio: format!("{:.2}× bare", layer / bare),
                target: target.into(),
                met: Verdict::of(layer - bare <= 25.0),
            },
            _ => not_run("passthrough", target),
        },
    );

    // 2. cached
    let target = "overhead ≤ 1.25× SetRequestHeader's";
    rows.push(
        match (
            r.per("cached/layer"),
            r.per("cached/bare"),
            r.per("cached/set_request_header"),
        ) {
            (Some(layer), Some(bare), Some(header)) => {
                let ratio = (layer - bare) / (header - bare);
                Row {
                    bench: "cached: restricted request, warm token".into(),
                    measured: format!("{} (+{} over bare)", time(layer), time(layer - bare)),
                    baseline: format!(
                        "SetRequestHeader {} (+{}); bare {}",
                        time(header),
                        time(header - bare),
                        time(bare)
                    ),
                    ratio: format!("{ratio:.2}× its overhead"),
                    target: target.into(),
                    met: Verdict::of(ratio <= 1.25),
                }
            }
            _ => not_run("cached", target),
        },
    );

    // 3. classify
    let samples = extra["classify"]["samples"].as_u64();
    for (set, label) in [
        ("all", "every model operation"),
        ("hits", "restricted ones (hits)"),
        ("misses", "the others (misses)"),
    ] {
        let count = extra["classify"][set]
            .as_u64()
            .or(samples.filter(|_| set == "all"));
        let bench = match count {
            Some(n) => format!("classify: {label}, {n} paths"),
            None => format!("classify: {label}"),
        };
        let target = "≤ 50 ns per lookup; ≥ 10× faster than RegexSet";
        rows.push(
            match (
                r.per(&format!("classify/lookup/matcher/{set}")),
                r.per(&format!("classify/lookup/regex_set/{set}")),
            ) {
                (Some(matcher), Some(regex)) => Row {
                    bench,
                    measured: format!("{} per lookup", time(matcher)),
                    baseline: format!("RegexSet {}", time(regex)),
                    ratio: format!("{:.1}× faster", regex / matcher),
                    target: target.into(),
                    met: match (matcher <= 50.0, regex / matcher >= 10.0) {
                        (true, true) => Verdict::Met,
                        (false, false) => Verdict::Missed,
                        (false, true) => Verdict::MissedPart("time"),
                        (true, false) => Verdict::MissedPart("vs RegexSet"),
                    },
                },
                _ => not_run(&bench, target),
            },
        );
    }
    let sizes = [8, 16, 32, 256, 1024];
    let same_work = extra["classify"]["same_work"].as_u64();
    for (who, name, judged) in [
        (
            "matcher_same_work",
            "matcher, same lookups at every size",
            true,
        ),
        ("matcher", "matcher, all samples", false),
        ("regex_set", "RegexSet, all samples", false),
    ] {
        let times: Vec<Option<f64>> = sizes
            .iter()
            .map(|n| r.per(&format!("classify/catalogue_size/{who}/{n}")))
            .collect();
        let bench = match (who, same_work) {
            ("matcher_same_work", Some(n)) => format!(
                "classify: {name} ({n} paths that hit one of the first 8 operations), 8 to 1024 operations"
            ),
            _ => format!("classify: {name}, 8 to 1024 operations"),
        };
        let target = if judged {
            format!("flat: slowest ≤ {FLAT}× fastest")
        } else {
            "(reference)".to_owned()
        };
        rows.push(match spread(&times) {
            Some((min, max, ratio)) => Row {
                bench,
                measured: times
                    .iter()
                    .zip(sizes)
                    .map(|(t, n)| format!("{n}: {}", opt_time(*t)))
                    .collect::<Vec<_>>()
                    .join(", "),
                baseline: format!("fastest {}, slowest {}", time(min), time(max)),
                ratio: format!("{ratio:.2}×"),
                target,
                met: if judged {
                    Verdict::of(ratio <= FLAT)
                } else {
                    Verdict::Reference
                },
            },
            None => not_run(&bench, &target),
        });
    }

    // 4. cold_burst
    for n in [1_000u64, 10_000] {
        let target = if n == 10_000 {
            "exactly 1 source call per key"
        } else {
            "1 source call per key"
        };
        let bench = format!("cold_burst: {n} concurrent callers, cold cache, 5 ms source");
        let figures = &extra["cold_burst"][n.to_string()];
        let layer = r.0.get(&format!("cold_burst/layer/{n}")).map(|m| m.ns);
        let floor =
            r.0.get(&format!("cold_burst/shared_future/{n}"))
                .map(|m| m.ns);
        rows.push(match (layer, floor, figures["source_calls_max"].as_u64()) {
            (Some(layer), Some(floor), Some(max)) => {
                let keys = figures["keys"].as_u64().unwrap_or(1);
                let min = figures["source_calls_min"].as_u64().unwrap_or(max);
                let bursts = figures["bursts"].as_u64().unwrap_or(0);
                Row {
                    bench,
                    measured: format!(
                        "{} to completion; {min}–{max} source calls for {keys} keys in each of {bursts} bursts",
                        time(layer)
                    ),
                    baseline: format!("shared-future floor {}", time(floor)),
                    ratio: format!("{:.2}× floor", layer / floor),
                    target: target.into(),
                    met: Verdict::of(min == keys && max == keys),
                }
            }
            _ => not_run(&bench, target),
        });
    }

    // 5. sellers
    let memory = &extra["sellers"]["memory"];
    let token_len = extra["sellers"]["token_len"].as_u64();
    let target = "≤ 1 KiB per cached token";
    let bench = match token_len {
        Some(len) => format!("sellers: memory per cached seller ({len}-character token)"),
        None => "sellers: memory per cached seller".to_owned(),
    };
    rows.push(match memory["100000"]["bytes_per_seller"].as_f64() {
        Some(bytes) => Row {
            bench,
            measured: format!(
                "{bytes:.0} B requested, {:.1} allocations (at 100,000 sellers)",
                memory["100000"]["allocations_per_seller"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            baseline: format!(
                "resident memory +{:.0} B per seller; {:.0} B at 1,000 sellers",
                memory["100000"]["rss_bytes_per_seller"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                memory["1000"]["bytes_per_seller"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            ratio: format!("{:.2} KiB", bytes / 1024.0),
            target: target.into(),
            met: Verdict::of(bytes <= 1024.0),
        },
        None => not_run(&bench, target),
    });
    for (kind, label) in [
        ("hot", "the same seller each time"),
        ("spread", "every seller in turn"),
    ] {
        let times: Vec<Option<f64>> = [1, 1_000, 100_000]
            .iter()
            .map(|n| r.per(&format!("sellers/{kind}/{n}")))
            .collect();
        let bench = format!("sellers: warm lookup, {label}");
        let target = format!("flat from 1 to 100,000 sellers (≤ {FLAT}×)");
        rows.push(match (times[0], times[2]) {
            (Some(one), Some(many)) => Row {
                bench,
                measured: format!(
                    "1: {}, 1,000: {}, 100,000: {}",
                    time(one),
                    opt_time(times[1]),
                    time(many)
                ),
                baseline: if kind == "spread" {
                    format!(
                        "bare, same sellers: 1: {}, 100,000: {}",
                        opt_time(r.per("sellers/bare_spread/1")),
                        opt_time(r.per("sellers/bare_spread/100000"))
                    )
                } else {
                    format!("bare {}", opt_time(r.per("sellers/bare")))
                },
                ratio: format!("{:.2}× (100,000 vs 1)", many / one),
                target,
                met: Verdict::of(many / one <= FLAT),
            },
            _ => not_run(&bench, &target),
        });
    }

    // 6. threads
    for (who, name) in [
        ("layer", "layer"),
        ("set_request_header", "SetRequestHeader, one shared token"),
        (
            "set_request_header_own_copy",
            "SetRequestHeader, a token copy per worker",
        ),
    ] {
        let one = r.0.get(&format!("threads/{who}/1")).map(|m| m.ns);
        let two = r.0.get(&format!("threads/{who}/2")).map(|m| m.ns);
        let bench = format!("threads: {name}, cached path, 1 vs 2 workers");
        let target = if who == "layer" {
            "2 threads ≥ 1.7× 1 thread"
        } else {
            "(reference)"
        };
        rows.push(match (one, two) {
            (Some(one), Some(two)) => {
                // One iteration is one request per worker.
                let rate1 = 1e9 / one;
                let rate2 = 2e9 / two;
                let shared = &extra["threads"]["2"][who];
                let parallel = match (
                    shared["runs"].as_u64(),
                    shared["runs_sharing_a_thread"].as_u64(),
                ) {
                    (Some(runs), Some(serial)) => {
                        format!("; {serial} of {runs} 2-worker runs had both tasks on one thread")
                    }
                    _ => String::new(),
                };
                Row {
                    bench,
                    measured: format!(
                        "1: {:.2} M req/s, 2: {:.2} M req/s{parallel}",
                        rate1 / 1e6,
                        rate2 / 1e6
                    ),
                    baseline: "the same service on 1 worker".into(),
                    ratio: format!("{:.2}×", rate2 / rate1),
                    target: target.into(),
                    met: if who == "layer" {
                        Verdict::of(rate2 / rate1 >= 1.7)
                    } else {
                        Verdict::Reference
                    },
                }
            }
            _ => not_run(&bench, target),
        });
    }
    rows
}

/// This machine, as the README names it.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let rustc =
        std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "rustc (unknown version)".to_owned());
    format!("{cores} cores ({cpu}), {rustc}")
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = criterion_dir();
    let mut measures = BTreeMap::new();
    collect(&dir, &mut measures);
    if measures.is_empty() {
        return Err(format!(
            "no criterion results under {}: run `cargo bench --all-features` first",
            dir.display()
        )
        .into());
    }
    let results = Results(measures);
    let extra = read_json(&dir.join("spapi-rdt-extra.json")).unwrap_or(Value::Null);

    println!("Machine: {}.", machine());
    println!();
    println!("| bench | measured | baseline | ratio | target | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for row in targets(&results, &extra) {
        row.print();
    }
    if let Some(counts) = extra["sellers"]["allocations_per_request"].as_object() {
        println!();
        let list: Vec<String> = counts
            .iter()
            .map(|(name, c)| {
                format!(
                    "{name} {} ({} B)",
                    c["allocations"].as_f64().unwrap_or(f64::NAN),
                    c["bytes"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect();
        println!(
            "Allocations per request, building the request included: {}.",
            list.join(", ")
        );
    }
    println!();
    println!("All measurements (time per element: per request, per lookup, per caller):");
    println!();
    println!("| criterion id | per iteration | elements | per element |");
    println!("| --- | ---: | ---: | ---: |");
    for (id, m) in &results.0 {
        println!(
            "| {id} | {} | {} | {} |",
            time(m.ns),
            m.elements.map_or_else(String::new, |e| e.to_string()),
            time(m.per_element())
        );
    }
    Ok(())
}

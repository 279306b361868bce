//! Prints a Markdown report of the last `cargo bench` run: each target of the benchmark suite with
//! its measurement, its baseline, the ratio and whether the target was met, then every measurement.
//! After a full run it also writes them down in `BENCHMARKS.md` (both tables; the prose from its
//! `## What each bench measures` heading on is kept as it is). A quick run writes nothing.
//!
//! ```sh
//! cargo bench --all-features -- --noplot
//! cargo xtask bench-report
//! ```
//!
//! It reads criterion's results (`<target>/criterion/**/new/{benchmark,estimates}.json`, where
//! `<target>` honours `CRITERION_HOME` and `CARGO_TARGET_DIR` as criterion does) and the figures the
//! benches leave in `<target>/criterion/spapi-rdt-extra.json` (bytes per cached seller, source calls
//! per burst, classification samples, and the `end_to_end` run's token calls, 429s and wall times,
//! which criterion does not measure). A bench that has not run shows as "not run".
//!
//! Verdicts use criterion's confidence interval, not its point estimate: a target is met only when
//! the whole interval is inside it, missed when the whole interval is outside, and "unclear" when
//! the interval straddles it. Overheads are taken against a baseline's interval the same way (the
//! worst case: the slowest the layer might be against the fastest the baseline might be).
//!
//! One table holds one run: the newest result decides which run that is (its mode, quick or full,
//! and when it was written), and results of another mode or written more than [`RUN_SPAN`] before
//! it are set aside and listed, never mixed in (criterion leaves a `new/` folder behind for every
//! benchmark that ever ran, and a quick run writes over a full run's one benchmark at a time).
//! Quick-mode results are shown but never judged: two samples give no usable interval.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// How far apart in time the results of one run may be written: a full run of every bench takes
/// well under this, and a run made another day is not the same run.
const RUN_SPAN: Duration = Duration::from_secs(2 * 3600);

/// A time and its confidence interval, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Est {
    ns: f64,
    lo: f64,
    hi: f64,
}

impl Est {
    fn scaled(self, by: f64) -> Est {
        Est {
            ns: self.ns * by,
            lo: self.lo * by,
            hi: self.hi * by,
        }
    }

    /// `self - other` as an interval: from the least to the most it can be.
    fn minus(self, other: Est) -> Est {
        Est {
            ns: self.ns - other.ns,
            lo: self.lo - other.hi,
            hi: self.hi - other.lo,
        }
    }

    /// `self / other` as an interval, when `other` is surely positive.
    fn over(self, other: Est) -> Option<Est> {
        (other.lo > 0.0).then(|| {
            let ends = [
                self.lo / other.lo,
                self.lo / other.hi,
                self.hi / other.lo,
                self.hi / other.hi,
            ];
            Est {
                ns: self.ns / other.ns,
                lo: ends.into_iter().fold(f64::INFINITY, f64::min),
                hi: ends.into_iter().fold(f64::NEG_INFINITY, f64::max),
            }
        })
    }
}

/// Which kind of run wrote a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `--quick`: two samples, timings shown but never judged (counts are).
    Quick,
    Full,
}

/// One criterion measurement.
struct Measure {
    /// Nanoseconds per iteration (criterion's typical value: the slope, else the mean) and its
    /// confidence interval.
    est: Est,
    /// Elements per iteration, when the bench declared a throughput.
    elements: Option<u64>,
    mode: Mode,
    /// When criterion wrote it.
    written: SystemTime,
}

impl Measure {
    /// Per element (per request, per lookup), or per iteration without a throughput.
    fn per_element(&self) -> Est {
        self.est
            .scaled(1.0 / self.elements.unwrap_or(1).max(1) as f64)
    }
}

/// Every measurement of one run, by criterion id (`group/function/parameter`).
struct Results {
    measures: BTreeMap<String, Measure>,
    mode: Mode,
}

impl Results {
    fn per(&self, id: &str) -> Option<Est> {
        self.measures.get(id).map(Measure::per_element)
    }

    fn whole(&self, id: &str) -> Option<Est> {
        self.measures.get(id).map(|m| m.est)
    }

    /// The verdict for an interval checked against a target: met when `ok` holds at both ends,
    /// missed when it holds at neither, unclear otherwise; never judged in a quick run.
    fn judge(&self, range: Est, ok: impl Fn(f64) -> bool) -> Verdict {
        if self.mode == Mode::Quick {
            return Verdict::NotJudged;
        }
        match (ok(range.lo), ok(range.hi)) {
            (true, true) => Verdict::Met,
            (false, false) => Verdict::Missed,
            _ => Verdict::Unclear,
        }
    }
}

/// Keeps the results of the newest run: the newest result's mode, written within [`RUN_SPAN`]
/// before it. Returns the kept ones and the ids of those set aside.
fn newest_run(all: BTreeMap<String, Measure>) -> (Results, Vec<String>) {
    let newest = all
        .values()
        .max_by_key(|m| m.written)
        .map(|m| (m.mode, m.written));
    let Some((mode, newest)) = newest else {
        return (
            Results {
                measures: all,
                mode: Mode::Full,
            },
            Vec::new(),
        );
    };
    let (kept, aside): (BTreeMap<_, _>, BTreeMap<_, _>) = all.into_iter().partition(|(_, m)| {
        m.mode == mode
            && newest
                .duration_since(m.written)
                .is_ok_and(|age| age <= RUN_SPAN)
    });
    (
        Results {
            measures: kept,
            mode,
        },
        aside.into_keys().collect(),
    )
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
        .current_dir(repository())
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<Value>(&out.stdout).ok())
        .and_then(|m| m.get("target_directory")?.as_str().map(PathBuf::from));
    match target {
        Some(target) => target.join("criterion"),
        None => repository().join("target/criterion"),
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
                let estimate = estimates.get(k)?;
                let number = |v: Option<&Value>| v?.as_f64().filter(|ns| ns.is_finite());
                let interval = estimate.get("confidence_interval");
                Some(Est {
                    ns: number(estimate.get("point_estimate"))?,
                    lo: number(interval.and_then(|i| i.get("lower_bound")))?,
                    hi: number(interval.and_then(|i| i.get("upper_bound")))?,
                })
            });
            let Some(est) = typical else {
                continue;
            };
            let elements = bench
                .get("throughput")
                .and_then(|t| t.get("Elements"))
                .and_then(Value::as_u64);
            // A quick run keeps two samples; a full run at least ten.
            let samples = read_json(&path.join("sample.json"))
                .and_then(|s| Some(s.get("iters")?.as_array()?.len()))
                .unwrap_or(0);
            let mode = if samples <= 2 {
                Mode::Quick
            } else {
                Mode::Full
            };
            let Ok(written) =
                std::fs::metadata(path.join("estimates.json")).and_then(|m| m.modified())
            else {
                continue;
            };
            into.insert(
                id.to_owned(),
                Measure {
                    est,
                    elements,
                    mode,
                    written,
                },
            );
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

fn opt_time(est: Option<Est>) -> String {
    est.map_or_else(|| "not run".to_owned(), |e| time(e.ns))
}

/// A time with its interval: `12.3 ns (12.1–12.6)`.
fn timed(est: Est) -> String {
    format!("{} ({}–{})", time(est.ns), time(est.lo), time(est.hi))
}

/// Whether a row met its target.
#[derive(Clone, Copy)]
enum Verdict {
    Met,
    Missed,
    /// The confidence interval straddles the target.
    Unclear,
    /// Missed on one of the row's two targets (the other met or unclear).
    MissedPart(&'static str),
    /// Unclear on one of the row's two targets, the other met.
    UnclearPart(&'static str),
    /// The baseline's own overhead is not surely positive: a ratio to it means nothing.
    NoBaseline,
    /// A quick run: shown, not judged.
    NotJudged,
    /// A row shown for comparison, with no target of its own.
    Reference,
    NotRun,
}

impl Verdict {
    /// A target on a count, not a timing: met or missed.
    fn of(met: bool) -> Self {
        if met { Verdict::Met } else { Verdict::Missed }
    }

    /// Both of a row's targets: missed if either is, then unclear, met only if both are.
    fn both(
        first: Verdict,
        first_name: &'static str,
        second: Verdict,
        second_name: &'static str,
    ) -> Verdict {
        match (first, second) {
            (Verdict::NotJudged, _) | (_, Verdict::NotJudged) => Verdict::NotJudged,
            (Verdict::Met, Verdict::Met) => Verdict::Met,
            (Verdict::Missed, Verdict::Missed) => Verdict::Missed,
            (Verdict::Missed, _) => Verdict::MissedPart(first_name),
            (_, Verdict::Missed) => Verdict::MissedPart(second_name),
            (Verdict::Unclear, Verdict::Met) => Verdict::UnclearPart(first_name),
            (Verdict::Met, Verdict::Unclear) => Verdict::UnclearPart(second_name),
            _ => Verdict::Unclear,
        }
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
    /// The row as a line of the Markdown table.
    fn line(&self) -> String {
        let verdict = match self.met {
            Verdict::Met => "met".to_owned(),
            Verdict::Missed => "**missed**".to_owned(),
            Verdict::MissedPart(part) => format!("**missed** ({part})"),
            Verdict::Unclear => "unclear (interval straddles the target)".to_owned(),
            Verdict::UnclearPart(part) => format!("unclear ({part})"),
            Verdict::NoBaseline => "no verdict (baseline overhead not positive)".to_owned(),
            Verdict::NotJudged => "not judged (quick run)".to_owned(),
            Verdict::Reference => "—".to_owned(),
            Verdict::NotRun => "not run".to_owned(),
        };
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.bench, self.measured, self.baseline, self.ratio, self.target, verdict
        )
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

/// The slowest over the fastest of `values`, if all are there: the fastest and slowest point
/// estimates, and the ratio as an interval (its top: the slowest upper bound over the fastest
/// lower bound).
fn spread(values: &[Option<Est>]) -> Option<(f64, f64, Est)> {
    let values: Option<Vec<Est>> = values.iter().copied().collect();
    let values = values?;
    let min = values.iter().map(|e| e.ns).fold(f64::INFINITY, f64::min);
    let max = values.iter().map(|e| e.ns).fold(0.0, f64::max);
    let min_lo = values.iter().map(|e| e.lo).fold(f64::INFINITY, f64::min);
    let max_lo = values.iter().map(|e| e.lo).fold(0.0, f64::max);
    let min_hi = values.iter().map(|e| e.hi).fold(f64::INFINITY, f64::min);
    let max_hi = values.iter().map(|e| e.hi).fold(0.0, f64::max);
    (min > 0.0 && min_lo > 0.0 && min_hi > 0.0).then(|| {
        let ratio = Est {
            ns: max / min,
            lo: (max_lo / min_hi).max(1.0),
            hi: max_hi / min_lo,
        };
        (min, max, ratio)
    })
}

/// How much "flat" may vary: the slowest case at most this many times the fastest.
const FLAT: f64 = 1.5;

/// A group with `bare`, `layer` and `set_request_header`: the layer's overhead over bare against
/// SetRequestHeader's, judged against `limit`.
fn against_set_request_header(
    r: &Results,
    group: &str,
    bench: &str,
    target: &str,
    limit: f64,
) -> Row {
    let (Some(layer), Some(bare), Some(header)) = (
        r.per(&format!("{group}/layer")),
        r.per(&format!("{group}/bare")),
        r.per(&format!("{group}/set_request_header")),
    ) else {
        return not_run(group, target);
    };
    let ours = layer.minus(bare);
    let theirs = header.minus(bare);
    // A baseline no slower than bare (within its interval) has no overhead to compare with: no
    // ratio, no verdict.
    let (ratio, met) = match ours.over(theirs) {
        Some(ratio) => (
            format!(
                "{:.2}× its overhead ({:.2}–{:.2})",
                ratio.ns, ratio.lo, ratio.hi
            ),
            r.judge(ratio, |x| x <= limit),
        ),
        None if r.mode == Mode::Quick => ("—".to_owned(), Verdict::NotJudged),
        None => ("—".to_owned(), Verdict::NoBaseline),
    };
    Row {
        bench: bench.into(),
        measured: format!("{} (+{} over bare)", timed(layer), timed(ours)),
        baseline: format!(
            "SetRequestHeader {} (+{}); bare {}",
            timed(header),
            timed(theirs),
            timed(bare)
        ),
        ratio,
        target: target.into(),
        met,
    }
}

fn targets(r: &Results, extra: &Value) -> Vec<Row> {
    let mut rows = Vec::new();

    // 1. passthrough
    // SetRequestHeader inserts a header, which the layer does not do for an unrestricted request:
    // it is shown for reference, not used as the baseline.
    let target = "overhead ≤ 10 ns";
    rows.push(
        match (r.per("passthrough/layer"), r.per("passthrough/bare")) {
            (Some(layer), Some(bare)) => {
                let overhead = layer.minus(bare);
                Row {
                    bench: "passthrough: unrestricted request".into(),
                    measured: format!("{} (+{} over bare)", timed(layer), timed(overhead)),
                    baseline: format!(
                        "bare {}; for reference, SetRequestHeader (inserts a header: other work) {}",
                        timed(bare),
                        opt_time(r.per("passthrough/set_request_header"))
                    ),
                    ratio: format!("{:.2}× bare", layer.ns / bare.ns),
                    target: target.into(),
                    met: r.judge(overhead, |o| o <= 10.0),
                }
            }
            _ => not_run("passthrough", target),
        },
    );

    // The pacing layer's warm path (issue 21): its overhead over bare against the least a pacing
    // layer must do, a classification and one governor check.
    let target = "overhead ≤ 1.5× classify + governor check";
    rows.push(
        match (
            r.per("pacing/layer"),
            r.per("pacing/bare"),
            r.per("pacing/governor_check_and_classify"),
        ) {
            (Some(layer), Some(bare), Some(reference)) => {
                let overhead = layer.minus(bare);
                // The reference builds the same request, which bare pays too.
                let work = reference.minus(bare);
                Row {
                    bench: "pacing: warm bucket, no wait".into(),
                    measured: format!("{} (+{} over bare)", timed(layer), timed(overhead)),
                    baseline: format!(
                        "classify + governor check_key {} (+{} over building the request)",
                        timed(reference),
                        timed(work)
                    ),
                    ratio: format!("{:.2}× the reference's work", overhead.ns / work.ns),
                    target: target.into(),
                    met: r.judge(overhead, |o| o <= 1.5 * work.ns),
                }
            }
            _ => not_run("pacing", target),
        },
    );

    // 2. cached, and the README's recommended stack: the layer against SetRequestHeader in its
    // place, overhead over bare against overhead over bare.
    rows.push(against_set_request_header(
        r,
        "cached",
        "cached: restricted request, warm token",
        "overhead ≤ 1.10× SetRequestHeader's",
        1.10,
    ));
    rows.push(against_set_request_header(
        r,
        "stack",
        "stack: recovery + layer, four extensions, small body, warm token",
        "overhead ≤ 1.25× the same stack's with SetRequestHeader",
        1.25,
    ));

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
        // The baseline is regex-automata's meta::Regex, which names the matching pattern without
        // allocating; RegexSet allocates per lookup and is shown for reference.
        let target = "≤ 15 ns per lookup; ≥ 10× faster than a meta::Regex";
        rows.push(
            match (
                r.per(&format!("classify/lookup/matcher/{set}")),
                r.per(&format!("classify/lookup/regex_meta/{set}")),
            ) {
                (Some(matcher), Some(regex)) => {
                    let faster = regex.over(matcher);
                    Row {
                        bench,
                        measured: format!("{} per lookup", timed(matcher)),
                        baseline: format!(
                            "meta::Regex {}; for reference, RegexSet (allocates per lookup) {}",
                            timed(regex),
                            opt_time(r.per(&format!("classify/lookup/regex_set/{set}")))
                        ),
                        ratio: faster.map_or_else(
                            || "—".to_owned(),
                            |f| format!("{:.1}× faster ({:.1}–{:.1})", f.ns, f.lo, f.hi),
                        ),
                        target: target.into(),
                        met: Verdict::both(
                            r.judge(matcher, |ns| ns <= 15.0),
                            "time",
                            faster.map_or(Verdict::NoBaseline, |f| r.judge(f, |x| x >= 10.0)),
                            "vs meta::Regex",
                        ),
                    }
                }
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
        ("regex_meta", "meta::Regex, all samples", false),
        ("regex_set", "RegexSet, all samples", false),
    ] {
        let times: Vec<Option<Est>> = sizes
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
                ratio: format!("{:.2}× ({:.2}–{:.2})", ratio.ns, ratio.lo, ratio.hi),
                target,
                met: if judged {
                    r.judge(ratio, |x| x <= FLAT)
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
        let layer = r.whole(&format!("cold_burst/layer/{n}")).map(|e| e.ns);
        let floor = r
            .whole(&format!("cold_burst/shared_future/{n}"))
            .map(|e| e.ns);
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
        let times: Vec<Option<Est>> = [1, 1_000, 100_000]
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
                    timed(one),
                    opt_time(times[1]),
                    timed(many)
                ),
                baseline: if kind == "spread" {
                    let (map_one, map_many) = (
                        r.per("sellers/map_spread/1"),
                        r.per("sellers/map_spread/100000"),
                    );
                    format!(
                        "bare, same sellers: 1: {}, 100,000: {}; the floor of a hash-map cache \
                         (`HashMap<SellerId, HeaderValue>` looked up and inserted): 1: {}, \
                         100,000: {}{}",
                        opt_time(r.per("sellers/bare_spread/1")),
                        opt_time(r.per("sellers/bare_spread/100000")),
                        opt_time(map_one),
                        opt_time(map_many),
                        match map_many.zip(map_one).and_then(|(many, one)| many.over(one)) {
                            Some(x) => format!(" ({:.2}× ({:.2}–{:.2}))", x.ns, x.lo, x.hi),
                            None => String::new(),
                        }
                    )
                } else {
                    format!("bare {}", opt_time(r.per("sellers/bare")))
                },
                ratio: many.over(one).map_or_else(
                    || "—".to_owned(),
                    |x| format!("{:.2}× ({:.2}–{:.2}), 100,000 vs 1", x.ns, x.lo, x.hi),
                ),
                target,
                met: many
                    .over(one)
                    .map_or(Verdict::NoBaseline, |x| r.judge(x, |x| x <= FLAT)),
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
        let one = r.whole(&format!("threads/{who}/1"));
        let two = r.whole(&format!("threads/{who}/2"));
        let bench = format!("threads: {name}, cached path, 1 vs 2 workers");
        let target = if who == "layer" {
            "2 threads ≥ 1.80× 1 thread"
        } else {
            "(reference)"
        };
        rows.push(match (one, two) {
            (Some(one), Some(two)) => {
                // One iteration is one request per worker: two workers' rate over one's is
                // 2 x (time with one) / (time with two).
                let rate1 = 1e9 / one.ns;
                let rate2 = 2e9 / two.ns;
                let scaling = one.scaled(2.0).over(two);
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
                    ratio: scaling.map_or_else(
                        || "—".to_owned(),
                        |x| format!("{:.2}× ({:.2}–{:.2})", x.ns, x.lo, x.hi),
                    ),
                    target: target.into(),
                    met: match (who, scaling) {
                        ("layer", Some(x)) => r.judge(x, |x| x >= 1.8),
                        ("layer", None) => Verdict::NoBaseline,
                        _ => Verdict::Reference,
                    },
                }
            }
            _ => not_run(&bench, target),
        });
    }

    // 7. end_to_end
    rows.push(end_to_end(r, &extra["end_to_end"]));

    // 8. fleet_pacing
    rows.push(fleet_pacing(
        r,
        &extra["fleet_pacing"],
        &extra["fleet_pacing_sidecar"],
    ));
    rows
}

/// Whether `figures`, left by a bench that is no criterion benchmark, belong to this table: of
/// its mode, written within [`RUN_SPAN`] of its newest result. `Err` with what the row shows
/// instead.
fn from_this_run(r: &Results, figures: &Value) -> Result<(), String> {
    let mode = match figures["mode"].as_str() {
        Some("quick") => Mode::Quick,
        Some("full") => Mode::Full,
        _ => return Err("not run".to_owned()),
    };
    let newest = r.measures.values().map(|m| m.written).max();
    let written = figures["written_unix"]
        .as_u64()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    let same_run = match (newest, written) {
        (Some(newest), Some(written)) => {
            let apart = newest
                .duration_since(written)
                .or_else(|_| written.duration_since(newest))
                .unwrap_or_default();
            apart <= RUN_SPAN
        }
        _ => false,
    };
    if mode != r.mode || !same_run {
        return Err(format!(
            "not run in this run (figures of a {} run set aside)",
            if mode == Mode::Quick { "quick" } else { "full" }
        ));
    }
    Ok(())
}

/// `fleet_pacing`: 3 replicas × 8 workers at 5× a plan, per-process buckets against buckets
/// shared through Redis: 429s, wall time against the plan's minimum, and the spread of the
/// workers' mean waits. The counts are judged in a quick run too; the wall time in a full one.
fn fleet_pacing(r: &Results, figures: &Value, sidecar: &Value) -> Row {
    let target = "fleet: 0 × 429; wall time ≤ 1.05× the plan's minimum, (n − burst) ÷ rate";
    let (Some(n), Some(rate), Some(burst), Some(minimum_ms)) = (
        figures["calls"].as_u64(),
        figures["rate_per_s"].as_f64(),
        figures["burst"].as_u64(),
        figures["minimum_ms"].as_f64(),
    ) else {
        return not_run("fleet_pacing", target);
    };
    let bench = format!(
        "fleet_pacing: {} replicas × {} workers, {n} calls at {}× a plan ({rate}/s, burst {burst}) on the emulator",
        figures["replicas"].as_u64().unwrap_or(0),
        figures["workers"].as_u64().unwrap_or(0),
        figures["offered"].as_f64().unwrap_or(f64::NAN),
    );
    if let Err(shown) = from_this_run(r, figures) {
        return Row {
            measured: shown,
            ..not_run(&bench, target)
        };
    }
    let describe = |who: &str| -> Option<(String, u64, u64, f64)> {
        let s = &figures["strategies"][who];
        let (throttled, failed, ms) = (
            s["throttled"].as_u64()?,
            s["failed"].as_u64()?,
            s["wall_ms"].as_f64()?,
        );
        let waits: Vec<f64> = s["worker_wait_ms"]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let lo = waits.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = waits.iter().copied().fold(0.0, f64::max);
        Some((
            format!(
                "{throttled} × 429, {failed} failed, {}, workers' mean wait {}–{}",
                wall(ms),
                wall(lo),
                wall(hi)
            ),
            throttled,
            failed,
            ms,
        ))
    };
    let (Some(peers), Some(fleet)) = (describe("per_process"), describe("fleet")) else {
        return not_run(&bench, target);
    };
    let ratio = fleet.3 / minimum_ms;
    // The sidecar's half (spapi-rdt-proxy's `usage_plans` bench), when it ran in the same run.
    let sidecar = match (
        from_this_run(r, sidecar),
        sidecar["throttled"].as_u64(),
        sidecar["failed"].as_u64(),
        sidecar["wall_ms"].as_f64(),
        sidecar["minimum_ms"].as_f64(),
    ) {
        (Ok(()), Some(throttled), Some(failed), Some(ms), Some(min)) => {
            Some((throttled, failed, ms, ms / min))
        }
        _ => None,
    };
    let sidecar_text = sidecar.map_or_else(
        || "; 3 sidecars: not run".to_owned(),
        |(throttled, failed, ms, x)| {
            format!(
                "; 3 sidecars in fleet mode, a client that knows no quota: {throttled} × 429, \
                 {failed} failed, {} ({x:.3}× the minimum)",
                wall(ms)
            )
        },
    );
    let counts = Verdict::of(
        fleet.1 == 0 && fleet.2 == 0 && sidecar.is_none_or(|(t, f, _, _)| t == 0 && f == 0),
    );
    let met = match r.mode {
        Mode::Full => Verdict::both(counts, "429s", Verdict::of(ratio <= 1.05), "wall time"),
        Mode::Quick => counts,
    };
    Row {
        bench,
        measured: format!("fleet: {}{sidecar_text}", fleet.0),
        baseline: format!(
            "per-process buckets: {}; minimum {}",
            peers.0,
            wall(minimum_ms)
        ),
        ratio: format!("{ratio:.3}× the minimum; 429s {} → {}", peers.1, fleet.1),
        target: target.into(),
        met,
    }
}

/// A wall time in milliseconds, in seconds from 1 s up.
fn wall(ms: f64) -> String {
    if ms >= 1_000.0 {
        format!("{:.2} s", ms / 1_000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// `end_to_end`: token calls, 429s and wall time of the three strategies, from the figures the
/// bench leaves (it is no criterion benchmark: the per-call strategy waits on the real quota). The
/// figures count only when they come from a run of this table's mode, written within
/// [`RUN_SPAN`] of its newest result; a quick run's are shown, not judged.
fn end_to_end(r: &Results, figures: &Value) -> Row {
    let target =
        "layer: ≤ 1 token call per operation; bundle: ≤ 1 per 50 operations; no 429 for either";
    let strategies = &figures["strategies"];
    let count = |who: &str, what: &str| strategies[who][what].as_u64();
    let (Some(n), Some(templates), Some(bundles)) = (
        figures["calls"].as_u64(),
        figures["templates"].as_u64(),
        figures["bundles"].as_u64(),
    ) else {
        return not_run("end_to_end", target);
    };
    let bench = format!(
        "end_to_end: {n} restricted calls ({templates} operations, one seller) at Amazon's token quota ({}/s, burst {}), loopback",
        figures["token_rate_per_s"].as_f64().unwrap_or(f64::NAN),
        figures["token_burst"].as_u64().unwrap_or(0)
    );
    if let Err(shown) = from_this_run(r, figures) {
        return Row {
            measured: shown,
            ..not_run(&bench, target)
        };
    }
    let mut parts = Vec::new();
    let mut walls = Vec::new();
    for (who, label) in [
        ("per_call", "per call"),
        ("layer", "layer"),
        ("bundle", "bundle"),
    ] {
        let (Some(calls), Some(throttled), Some(ms)) = (
            count(who, "token_calls"),
            count(who, "throttled"),
            strategies[who]["wall_ms"].as_f64(),
        ) else {
            return not_run(&bench, target);
        };
        parts.push(format!(
            "{label}: {calls} token call{}, {throttled} × 429, {}",
            if calls == 1 { "" } else { "s" },
            wall(ms)
        ));
        walls.push((calls, throttled, ms));
    }
    let [
        (per_call, _, per_call_ms),
        (layer, layer_429, layer_ms),
        (bundle, bundle_429, bundle_ms),
    ] = walls[..]
    else {
        return not_run(&bench, target);
    };
    // Counts, not timings: judged in a quick run too, like cold_burst's source calls.
    let met = Verdict::both(
        Verdict::of(layer <= templates && layer_429 == 0),
        "layer",
        Verdict::of(bundle <= bundles && bundle_429 == 0),
        "bundle",
    );
    Row {
        bench,
        measured: format!("{}; {}", parts[1], parts[2]),
        baseline: format!(
            "{} (a token before every call, {} back-off after a 429)",
            parts[0],
            wall(figures["backoff_ms"].as_f64().unwrap_or(f64::NAN))
        ),
        ratio: format!(
            "token calls {per_call} → {layer} → {bundle}; per call's wall time {:.0}× the layer's, {:.0}× the bundle's",
            per_call_ms / layer_ms,
            per_call_ms / bundle_ms
        ),
        target: target.into(),
        met,
    }
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

/// Where the generated file goes: the repository root, the parent of this package.
fn repository() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map_or(xtask.clone(), Path::to_path_buf)
}

/// Where the hand-written part of `BENCHMARKS.md` begins: from this heading on, a full run keeps
/// the file as it is.
const PROSE_HEADING: &str = "## What each bench measures";

/// The summary: machine, run, the targets table and the allocation counts.
fn summary(results: &Results, aside: &[String], extra: &Value) -> String {
    let mut out = format!("Machine: {}.\n\n", machine());
    out.push_str(match results.mode {
        Mode::Full => "A full run: verdicts from criterion's confidence intervals.\n",
        Mode::Quick => {
            "A quick run (`--quick`): timings shown, not judged; counts (source and token calls, \
             429s, bytes) judged as in a full run.\n"
        }
    });
    if !aside.is_empty() {
        out.push_str(&format!(
            "\nSet aside, from another run (older than {} h before the newest result, or not a {} run): {}.\n",
            RUN_SPAN.as_secs() / 3600,
            match results.mode {
                Mode::Full => "full",
                Mode::Quick => "quick",
            },
            aside.join(", ")
        ));
    }
    out.push_str("\n| bench | measured | baseline | ratio | target | |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for row in targets(results, extra) {
        out.push_str(&row.line());
        out.push('\n');
    }
    if let Some(counts) = extra["sellers"]["allocations_per_request"].as_object() {
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
        out.push_str(&format!(
            "\nAllocations per request, building the request included: {}.\n",
            list.join(", ")
        ));
    }
    out
}

/// Every measurement of the run, one line per criterion id.
fn every_measurement(results: &Results) -> String {
    let mut out = String::from(
        "| criterion id | per iteration | elements | per element |\n| --- | ---: | ---: | ---: |\n",
    );
    for (id, m) in &results.measures {
        out.push_str(&format!(
            "| {id} | {} | {} | {} |\n",
            timed(m.est),
            m.elements.map_or_else(String::new, |e| e.to_string()),
            timed(m.per_element())
        ));
    }
    out
}

/// Writes `BENCHMARKS.md` from a full run, keeping its hand-written part.
fn write_files(summary: &str, all: &str) -> Result<(), Box<dyn Error>> {
    let path = repository().join("BENCHMARKS.md");
    let previous = std::fs::read_to_string(&path).unwrap_or_default();
    let prose = previous
        .find(PROSE_HEADING)
        .map_or("", |start| &previous[start..]);
    let benchmarks = format!(
        "# Benchmarks\n\nWritten by `cargo xtask bench-report` after \
         `cargo bench --all-features -- --noplot` (a full run; a quick run writes nothing). What each \
         bench compares is below the tables.\n\n## Targets\n\n{summary}\n\
         ## Every measurement\n\nTime per element: per request, per lookup, per caller.\n\n{all}\n{prose}"
    );
    std::fs::write(path, benchmarks)?;
    Ok(())
}

/// `cargo xtask bench-report`.
pub(crate) fn run() -> Result<(), Box<dyn Error>> {
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
    let (results, aside) = newest_run(measures);
    let extra = read_json(&dir.join("spapi-rdt-extra.json")).unwrap_or(Value::Null);

    let summary = summary(&results, &aside, &extra);
    let all = every_measurement(&results);
    println!("{summary}");
    println!("All measurements (time per element: per request, per lookup, per caller):\n");
    println!("{all}");
    if results.mode == Mode::Full {
        write_files(&summary, &all)?;
        println!("Wrote BENCHMARKS.md.");
    }
    Ok(())
}

//! `classify`: the matcher that decides which requests need a token.
//!
//! Samples: one concrete path for every operation in Amazon's OpenAPI models (the vendored
//! `spapi-models/*.json`; the bench stops when they are missing), each placeholder filled with an id.
//! The restricted ones are hits, the rest misses.
//!
//! - `classify/lookup`: per-lookup time of `Matcher::classify` over all samples, the hits and the
//!   misses, against two regex classifiers per method built from the same catalogue templates
//!   (anchored, each `{x}` as `[^/]+`), the usual hand-rolled alternative:
//!   - `regex_meta`, the fair baseline: one `regex_automata::meta::Regex` over every template,
//!     whose anchored `search` names the pattern that matched and allocates nothing, as the matcher
//!     allocates nothing;
//!   - `regex_set`, for comparison with earlier runs: `regex::RegexSet::matches`, which also
//!     allocates a `Vec<bool>` of every pattern per lookup (work the matcher does not do);
//!   - `matcher/one_hit_repeated`: one Orders v0 hit as many times as there are hits, so that the
//!     walk's branches are all predicted (in `hits` the paths take turns);
//! - `classify/catalogue_size`: the same lookups with the catalogue trimmed to 8 and 16 operations,
//!   Amazon's 32, and grown with synthetic operations to 256 and 1024, for both; and
//!   `matcher_same_work`: only the samples that hit one of the first 8 operations, which every
//!   catalogue size holds, so that each size does the same work and only the catalogue changes
//!   (with all samples, small catalogues reject most paths at their first byte).
// `criterion_group!` makes an undocumented public function; benches may unwrap.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use regex::RegexSet;
use regex_automata::{Anchored, Input, meta};
use spapi_rdt::catalog::{Catalog, RestrictedOperation};
use spapi_rdt::matcher::Matcher;

/// One request to classify.
struct Sample {
    method: Method,
    path: String,
}

/// A sample path for `template`: every `{name}` becomes an id.
fn fill(template: &str) -> String {
    let mut path = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                path.push_str("A1B2C3D4E5");
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    path.push_str(rest);
    path
}

/// One sample per operation of every vendored model. Also says where they came from.
fn samples() -> (Vec<Sample>, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spapi-models");
    let mut samples = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the vendored models {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in &files {
        let model: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        let paths = model["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no `paths` object", file.display()));
        for (template, operations) in paths {
            let Some(operations) = operations.as_object() else {
                continue;
            };
            for method in operations.keys() {
                let method = match method.as_str() {
                    "get" => Method::GET,
                    "put" => Method::PUT,
                    "post" => Method::POST,
                    "delete" => Method::DELETE,
                    "patch" => Method::PATCH,
                    "head" => Method::HEAD,
                    "options" => Method::OPTIONS,
                    _ => continue,
                };
                samples.push(Sample {
                    method,
                    path: fill(template),
                });
            }
        }
    }
    assert!(
        samples.len() > 100,
        "{}: only {} operations in the models",
        dir.display(),
        samples.len()
    );
    let from = format!("{} models in {}", files.len(), dir.display());
    (samples, from)
}

/// Per method: one anchored pattern per template (`{x}` as `[^/]+`), and the operations' indexes.
fn patterns_by_method(catalog: &Catalog) -> Vec<(Method, Vec<String>, Vec<usize>)> {
    let mut by_method: Vec<(Method, Vec<String>, Vec<usize>)> = Vec::new();
    for (index, op) in catalog.operations().iter().enumerate() {
        let mut pattern = String::from("^");
        for segment in op.template().split('/').skip(1) {
            pattern.push('/');
            if segment.starts_with('{') && segment.ends_with('}') {
                pattern.push_str("[^/]+");
            } else {
                pattern.push_str(&regex::escape(segment));
            }
        }
        pattern.push('$');
        match by_method.iter_mut().find(|(m, ..)| m == op.method()) {
            Some((_, patterns, indexes)) => {
                patterns.push(pattern);
                indexes.push(index);
            }
            None => by_method.push((op.method().clone(), vec![pattern], vec![index])),
        }
    }
    by_method
}

/// The earlier baseline: one `RegexSet` per method, one anchored pattern per template.
struct RegexClassifier {
    sets: Vec<(Method, RegexSet, Vec<usize>)>,
}

impl RegexClassifier {
    fn new(catalog: &Catalog) -> Self {
        let sets = patterns_by_method(catalog)
            .into_iter()
            .map(|(m, patterns, indexes)| (m, RegexSet::new(patterns).unwrap(), indexes))
            .collect();
        RegexClassifier { sets }
    }

    #[inline]
    fn classify(&self, method: &Method, path: &str) -> Option<usize> {
        let (_, set, indexes) = self.sets.iter().find(|(m, ..)| m == method)?;
        set.matches(path).iter().next().map(|i| indexes[i])
    }
}

/// The fair baseline: one `meta::Regex` per method with one anchored pattern per template. An
/// anchored search returns the pattern that matched (templates end in `$`, so only a whole-path
/// match counts) from a cache the regex keeps, without allocating.
struct MetaClassifier {
    regexes: Vec<(Method, meta::Regex, Vec<usize>)>,
}

impl MetaClassifier {
    fn new(catalog: &Catalog) -> Self {
        let regexes = patterns_by_method(catalog)
            .into_iter()
            .map(|(m, patterns, indexes)| (m, meta::Regex::new_many(&patterns).unwrap(), indexes))
            .collect();
        MetaClassifier { regexes }
    }

    #[inline]
    fn classify(&self, method: &Method, path: &str) -> Option<usize> {
        let (_, regex, indexes) = self.regexes.iter().find(|(m, ..)| m == method)?;
        let input = Input::new(path).anchored(Anchored::Yes);
        regex
            .search(&input)
            .map(|found| indexes[found.pattern().as_usize()])
    }
}

/// Amazon's catalogue cut to its first `n` operations, or grown to `n` with synthetic operations
/// shaped like SP-API ones (each synthetic API has eight operations under its own prefix).
fn catalogue_of(n: usize) -> Catalog {
    let mut catalog = Catalog::amazon();
    let amazon = catalog.operations().len();
    if n <= amazon {
        let mut kept = 0;
        catalog.retain(|_| {
            kept += 1;
            kept <= n
        });
        return catalog;
    }
    for i in 0..n - amazon {
        let api = i / 8;
        let (method, template) = match i % 8 {
            0 => (Method::GET, format!("/synthetic{api}/2024-01-01/items")),
            1 => (
                Method::GET,
                format!("/synthetic{api}/2024-01-01/items/{{id}}"),
            ),
            2 => (
                Method::DELETE,
                format!("/synthetic{api}/2024-01-01/items/{{id}}"),
            ),
            3 => (
                Method::GET,
                format!("/synthetic{api}/2024-01-01/items/{{id}}/buyerInfo"),
            ),
            4 => (Method::POST, format!("/synthetic{api}/2024-01-01/orders")),
            5 => (
                Method::GET,
                format!("/synthetic{api}/2024-01-01/orders/{{id}}"),
            ),
            6 => (
                Method::GET,
                format!("/synthetic{api}/2024-01-01/orders/{{id}}/address"),
            ),
            _ => (
                Method::PUT,
                format!("/synthetic{api}/2024-01-01/orders/{{id}}/cancel"),
            ),
        };
        catalog.push(RestrictedOperation::new(
            "Synthetic",
            format!("synthetic{i}"),
            method,
            template,
        ));
    }
    catalog
}

fn classify(c: &mut Criterion) {
    let (samples, from) = samples();
    let matcher = Matcher::new(Catalog::amazon()).unwrap();
    let regexes = RegexClassifier::new(matcher.catalog());
    let metas = MetaClassifier::new(matcher.catalog());

    // The classifiers must agree on every sample, or the race is not fair.
    for s in &samples {
        let by_matcher = matcher.classify(&s.method, &s.path).and_then(|h| {
            let ops = matcher.catalog().operations();
            ops.iter().position(|op| op == h.operation())
        });
        let by_regex = regexes.classify(&s.method, &s.path);
        assert_eq!(by_matcher, by_regex, "{} {}", s.method, s.path);
        assert_eq!(
            by_matcher,
            metas.classify(&s.method, &s.path),
            "{} {}",
            s.method,
            s.path
        );
    }
    let (hits, misses): (Vec<&Sample>, Vec<&Sample>) = samples
        .iter()
        .partition(|s| matcher.classify(&s.method, &s.path).is_some());
    let all: Vec<&Sample> = samples.iter().collect();
    let smallest = Matcher::new(catalogue_of(8)).unwrap();
    let same_work: Vec<&Sample> = samples
        .iter()
        .filter(|s| smallest.classify(&s.method, &s.path).is_some())
        .collect();
    println!(
        "classify: {} samples from {from}: {} restricted (hits), {} not (misses)",
        samples.len(),
        hits.len(),
        misses.len()
    );
    support::record_extra(
        "classify",
        serde_json::json!({
            "samples": samples.len(),
            "hits": hits.len(),
            "misses": misses.len(),
            "same_work": same_work.len(),
            "from": from,
        }),
    );

    let mut group = c.benchmark_group("classify/lookup");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    for (name, set) in [("all", &all), ("hits", &hits), ("misses", &misses)] {
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_with_input(BenchmarkId::new("matcher", name), set, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(matcher.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("regex_meta", name), set, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(metas.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("regex_set", name), set, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(regexes.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
    }
    // One hit over and over, as many times as there are hits: what a hit costs when every branch
    // of the walk is predicted, against `matcher/hits`, where the paths take turns.
    let one = hits
        .iter()
        .find(|s| s.path.starts_with("/orders/v0/orders/"));
    let repeated: Vec<&Sample> = one.into_iter().cycle().take(hits.len()).copied().collect();
    group.throughput(Throughput::Elements(repeated.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("matcher", "one_hit_repeated"),
        &repeated,
        |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(matcher.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        },
    );
    group.finish();

    let mut group = c.benchmark_group("classify/catalogue_size");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(all.len() as u64));
    for size in [8usize, 16, 32, 256, 1024] {
        let catalog = catalogue_of(size);
        assert_eq!(catalog.operations().len(), size);
        let matcher = Matcher::new(catalog).unwrap();
        let regexes = RegexClassifier::new(matcher.catalog());
        let metas = MetaClassifier::new(matcher.catalog());
        group.bench_with_input(BenchmarkId::new("matcher", size), &all, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(matcher.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("regex_meta", size), &all, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(metas.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("regex_set", size), &all, |b, set| {
            b.iter(|| {
                for s in set.iter() {
                    black_box(regexes.classify(black_box(&s.method), black_box(&s.path)));
                }
            })
        });
        group.throughput(Throughput::Elements(same_work.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("matcher_same_work", size),
            &same_work,
            |b, set| {
                b.iter(|| {
                    for s in set.iter() {
                        assert!(
                            matcher
                                .classify(black_box(&s.method), black_box(&s.path))
                                .is_some()
                        );
                    }
                })
            },
        );
        group.throughput(Throughput::Elements(all.len() as u64));
    }
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);

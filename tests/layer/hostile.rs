//! Hostile input: methods, paths, percent-encodings, dot segments, long ids and query strings never
//! panic, classification agrees with a plain reference matcher, and the query string never changes
//! what a request gets.
//!
//! The generated cases start from real templates (Amazon's catalogue and every operation of the
//! vendored models, `tests/data/model_operations.tsv`) and mutate them, and the method is mostly one
//! the catalogue uses, so the router itself is reached on most cases rather than the method lookup
//! turning them away. `hostile_paths_match_the_reference_and_ignore_the_query` counts the cases that
//! reached a template and asserts a floor on that count.

use crate::support::common;

use std::sync::OnceLock;

use common::{ScriptedSource, echo_token};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spapi_rdt::catalog::{Catalog, PathKind};
use spapi_rdt::matcher::Matcher;
use spapi_rdt::{IssuedToken, RestrictedDataTokenLayer, SecretToken, TokenRequest, source_fn};
use tower::{Layer, ServiceExt};

fn matcher() -> Matcher {
    Matcher::amazon()
}

/// Every template the generators start from: the catalogue's, then every model operation's.
fn templates() -> &'static [(Method, String)] {
    static TEMPLATES: OnceLock<Vec<(Method, String)>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut all: Vec<(Method, String)> = Catalog::amazon()
            .operations()
            .iter()
            .map(|op| (op.method().clone(), op.template().to_owned()))
            .collect();
        let models = include_str!("../data/model_operations.tsv");
        for line in models.lines().skip(1) {
            let columns: Vec<&str> = line.split('\t').collect();
            let method = Method::from_bytes(columns[2].as_bytes()).unwrap();
            all.push((method, columns[3].to_owned()));
        }
        assert!(all.len() > 300, "{} templates", all.len());
        all
    })
}

/// The methods a request is sent with: the catalogue's, weighted up, and a few it never uses
/// (including an extension method and a lower-case `get`, which is not `GET`).
fn method() -> impl Strategy<Value = Method> {
    let mut ours: Vec<Method> = Catalog::amazon()
        .operations()
        .iter()
        .map(|op| op.method().clone())
        .collect();
    ours.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    ours.dedup();
    let others = ["HEAD", "PATCH", "OPTIONS", "TRACE", "get", "PURGE"]
        .map(|m| Method::from_bytes(m.as_bytes()).unwrap());
    prop_oneof![
        8 => proptest::sample::select(ours),
        1 => proptest::sample::select(others.to_vec()),
    ]
}

/// One path segment value as an id might be: URI-safe bytes, no `/`, not a dot segment.
fn id_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~:@!$&'()*+,;=-]{1,40}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

/// What is done to a filled-in template.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    TrailingSlash,
    EmptySegment(usize),
    /// Replaces segment `n` with `.` or `..`.
    DotSegment(usize, &'static str),
    /// Inserts a `.` or `..` segment before segment `n`.
    InsertDot(usize, &'static str),
    /// Percent-encodes one byte of segment `n` (`%6F` for `o`).
    PercentEncode(usize, usize),
    /// Flips the letter case of one byte of segment `n`.
    FlipCase(usize, usize),
    /// Replaces one byte of segment `n` with another.
    ReplaceByte(usize, usize, char),
    /// Drops segment `n`.
    DropSegment(usize),
    /// Adds a segment at the end.
    ExtraSegment(String),
    /// Every placeholder gets an id of this many bytes.
    LongIds(usize),
    /// An encoded slash inside an id.
    EncodedSlashInId,
    /// The first id is arbitrary bytes, percent-encoded where a URI needs it (non-UTF-8 too).
    RawBytesId(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = 0usize..12;
    let dot = prop_oneof![Just("."), Just("..")];
    prop_oneof![
        6 => Just(Mutation::None),
        1 => Just(Mutation::TrailingSlash),
        1 => n.clone().prop_map(Mutation::EmptySegment),
        1 => (n.clone(), dot.clone()).prop_map(|(n, d)| Mutation::DotSegment(n, d)),
        1 => (n.clone(), dot).prop_map(|(n, d)| Mutation::InsertDot(n, d)),
        1 => (n.clone(), 0usize..40).prop_map(|(n, i)| Mutation::PercentEncode(n, i)),
        1 => (n.clone(), 0usize..40).prop_map(|(n, i)| Mutation::FlipCase(n, i)),
        1 => (n.clone(), 0usize..40, proptest::sample::select(
                "AZaz09._~:@!$&'()*+,;=%-".chars().collect::<Vec<_>>()
            ))
            .prop_map(|(n, i, c)| Mutation::ReplaceByte(n, i, c)),
        1 => n.prop_map(Mutation::DropSegment),
        1 => id_segment().prop_map(Mutation::ExtraSegment),
        2 => (1_000usize..20_000).prop_map(Mutation::LongIds),
        1 => Just(Mutation::EncodedSlashInId),
        1 => proptest::collection::vec(any::<u8>(), 1..200).prop_map(Mutation::RawBytesId),
    ]
}

/// A generated request: method, path (without the query) and query.
#[derive(Clone, Debug)]
struct Case {
    method: Method,
    path: String,
    query: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    let ours = Catalog::amazon().operations().len();
    (
        // Half the cases start from a catalogue template, half from any model operation.
        prop_oneof![0..ours, ours..templates().len()],
        prop_oneof![3 => Just(true), 1 => Just(false)],
        method(),
        proptest::collection::vec(id_segment(), 4),
        mutation(),
        proptest::option::of("[a-zA-Z0-9=&%./?+-]{0,40}"),
    )
        .prop_map(|(index, own_method, other, ids, mutation, query)| {
            let (template_method, template) = &templates()[index];
            let method = if own_method {
                template_method.clone()
            } else {
                other
            };
            Case {
                method,
                path: mutate(template, &ids, &mutation),
                query,
            }
        })
}

/// Fills `template`'s placeholders from `ids` and applies `mutation`. Segment numbers wrap around
/// the segments the path has (segment 0 is the empty one before the first `/`, so it is skipped).
fn mutate(template: &str, ids: &[String], mutation: &Mutation) -> String {
    let mut k = 0;
    let mut segments: Vec<String> = template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                let id = match mutation {
                    Mutation::LongIds(len) => "7".repeat(*len),
                    Mutation::EncodedSlashInId => format!("{}%2F{}", ids[k % ids.len()], k),
                    Mutation::RawBytesId(raw) if k == 0 => encode(raw),
                    _ => ids[k % ids.len()].clone(),
                };
                k += 1;
                id
            } else {
                seg.to_owned()
            }
        })
        .collect();
    let pick = |n: usize, len: usize| 1 + n % (len - 1).max(1);
    match mutation {
        Mutation::None
        | Mutation::LongIds(_)
        | Mutation::EncodedSlashInId
        | Mutation::RawBytesId(_) => {}
        Mutation::TrailingSlash => segments.push(String::new()),
        Mutation::EmptySegment(n) => segments.insert(pick(*n, segments.len()), String::new()),
        Mutation::DotSegment(n, dot) => {
            let at = pick(*n, segments.len());
            segments[at] = (*dot).to_owned();
        }
        Mutation::InsertDot(n, dot) => segments.insert(pick(*n, segments.len()), (*dot).to_owned()),
        Mutation::PercentEncode(n, i) => {
            let at = pick(*n, segments.len());
            let seg = &segments[at];
            if !seg.is_empty() {
                let i = i % seg.len();
                let encoded = format!("{}%{:02X}{}", &seg[..i], seg.as_bytes()[i], &seg[i + 1..]);
                segments[at] = encoded;
            }
        }
        Mutation::FlipCase(n, i) => {
            let at = pick(*n, segments.len());
            let mut bytes = segments[at].clone().into_bytes();
            let len = bytes.len();
            if let Some(j) = (0..len)
                .map(|j| (i + j) % len)
                .find(|j| bytes[*j].is_ascii_alphabetic())
            {
                bytes[j] ^= 0x20;
            }
            segments[at] = String::from_utf8(bytes).unwrap();
        }
        Mutation::ReplaceByte(n, i, c) => {
            let at = pick(*n, segments.len());
            let seg = &segments[at];
            if !seg.is_empty() {
                let i = i % seg.len();
                let c = if *c == '/' || *c == '?' || *c == '#' {
                    '~'
                } else {
                    *c
                };
                segments[at] = format!("{}{c}{}", &seg[..i], &seg[i + 1..]);
            }
        }
        Mutation::DropSegment(n) => {
            if segments.len() > 2 {
                segments.remove(pick(*n, segments.len()));
            }
        }
        Mutation::ExtraSegment(extra) => segments.push(extra.clone()),
    }
    segments.join("/")
}

/// `raw` as a path segment: unreserved bytes as they are, everything else percent-encoded.
fn encode(raw: &[u8]) -> String {
    let mut out = String::new();
    for b in raw {
        if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
            out.push(char::from(*b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The operation a plain reading of the catalogue gives: same method, same number of segments,
/// literal segments equal byte for byte, placeholders filled by any non-empty segment that is not a
/// dot segment.
fn reference(catalog: &Catalog, method: &Method, path: &str) -> Option<usize> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut found = catalog.operations().iter().enumerate().filter(|(_, op)| {
        let template: Vec<&str> = op.template().split('/').collect();
        op.method() == method
            && template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') {
                    !s.is_empty() && *s != "." && *s != ".."
                } else {
                    t == s
                }
            })
    });
    let first = found.next().map(|(i, _)| i);
    assert!(
        found.next().is_none(),
        "two operations match {method} {path}"
    );
    first
}

/// A source whose token names the path it was asked for, so every answer shows which resource the
/// layer requested.
fn naming_source() -> impl spapi_rdt::TokenSource + Clone {
    source_fn(|request: TokenRequest| async move {
        let path = request.resources()[0].path().to_owned();
        let token = SecretToken::new(format!("rdt {path}")).unwrap();
        Ok(IssuedToken::new(
            token,
            std::time::Duration::from_secs(3600),
        ))
    })
}

/// How the cases went, for the floor and the printed summary.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    past_method_lookup: usize,
    hits: usize,
    tokens: usize,
}

#[test]
fn hostile_paths_match_the_reference_and_ignore_the_query() {
    const CASES: u32 = 2_000;
    let matcher = matcher();
    let catalog = Catalog::amazon();
    let methods: Vec<Method> = catalog
        .operations()
        .iter()
        .map(|op| op.method().clone())
        .collect();
    let layer = RestrictedDataTokenLayer::new(naming_source());
    // Paused time: the seller's token-rate limit spaces the fetches for new templates a second
    // apart, which the runtime skips instead of waiting out.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let tally = std::sync::Mutex::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&case(), |case| {
        let Case {
            method,
            path,
            query,
        } = case;
        let got = matcher.classify(&method, &path).map(|h| index_of(&h));
        prop_assert_eq!(
            got,
            reference(&catalog, &method, &path),
            "{} {}",
            method,
            path
        );
        // A URI's path leaves its query out, and classifying the URI answers as its path does.
        let uri = match &query {
            Some(q) => format!("https://sellingpartnerapi-na.amazon.com{path}?{q}"),
            None => format!("https://sellingpartnerapi-na.amazon.com{path}"),
        };
        let uri: http::Uri = uri
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{e}: {path}")))?;
        prop_assert_eq!(uri.path(), path.as_str());
        let by_uri = matcher.classify_uri(&method, &uri).map(|h| index_of(&h));
        prop_assert_eq!(by_uri, got);
        // Through the layer, with and without the query: the same answer, and a token exactly when
        // the path is a generic catalogue operation, requested for its template.
        let bare: http::Uri = format!("https://sellingpartnerapi-na.amazon.com{path}")
            .parse()
            .unwrap();
        let send = |uri: http::Uri| {
            let request = http::Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(())
                .unwrap();
            runtime
                .block_on(layer.layer(echo_token()).oneshot(request))
                .unwrap()
        };
        let with_query = send(uri);
        let without = send(bare);
        prop_assert_eq!(&with_query, &without);
        let expected = got
            .map(|i| &catalog.operations()[i])
            .filter(|op| op.path_kind() == PathKind::Generic)
            .map(|op| format!("rdt {}", op.template()))
            .unwrap_or_else(|| "none".to_owned());
        prop_assert_eq!(&without, &expected, "{} {}", method, path);
        let mut tally = tally.lock().unwrap();
        tally.cases += 1;
        tally.past_method_lookup += usize::from(methods.contains(&method));
        tally.hits += usize::from(got.is_some());
        tally.tokens += usize::from(without != "none");
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let tally = tally.into_inner().unwrap();
    println!("hostile paths: {tally:?}");
    // Proptest reruns shrinking cases only on failure, so every case was counted once.
    assert_eq!(tally.cases, CASES as usize);
    // By the weights: about 85% of the cases use a catalogue method; half start from a catalogue
    // template, about half of those keep a matching shape (no mutation, long ids, encoded bytes in
    // an id) and about four in five keep its method, so some 20% should hit. The floors sit well
    // under that, and far above what a method drawn from `[A-Z]{1,10}` would give (almost none).
    assert!(tally.past_method_lookup >= tally.cases * 3 / 5, "{tally:?}");
    assert!(tally.hits >= tally.cases / 10, "{tally:?}");
    assert!(tally.tokens >= tally.cases / 10, "{tally:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_matcher_agrees_with_the_reference_on_any_string(method in method(), path in any::<String>()) {
        let got = matcher().classify(&method, &path).map(|h| index_of(&h));
        prop_assert_eq!(got, reference(&Catalog::amazon(), &method, &path));
    }

    #[test]
    fn every_template_matches_any_id_and_nothing_else_nearby(
        index in 0usize..32,
        ids in proptest::collection::vec(id_segment(), 2),
        suffix in prop_oneof![Just(""), Just("/"), Just("/x"), Just("//")],
    ) {
        let m = matcher();
        let catalog = Catalog::amazon();
        let op = &catalog.operations()[index];
        let mut k = 0;
        let path: String = op
            .template()
            .split('/')
            .map(|seg| if seg.starts_with('{') { k += 1; ids[k - 1].clone() } else { seg.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        let hit = m.classify(op.method(), &path).map(|h| index_of(&h));
        prop_assert_eq!(hit, Some(index), "{}", path);
        // A trailing slash, an extra segment or an empty one is another path.
        let odd = format!("{path}{suffix}");
        let other = m.classify(op.method(), &odd).map(|h| h.operation().template().to_owned());
        if !suffix.is_empty() {
            prop_assert_ne!(other, Some(op.template().to_owned()), "{}", odd);
        }
    }

    #[test]
    fn dot_segments_never_match(index in 0usize..32, dots in prop_oneof![Just("."), Just("..")]) {
        let m = matcher();
        let catalog = Catalog::amazon();
        let op = &catalog.operations()[index];
        let path = op.template().replace("{", "").replace("}", "");
        let with_dots: String = path
            .split('/')
            .map(|seg| if op.template().contains(&format!("{{{seg}}}")) { dots.to_owned() } else { seg.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        if with_dots != path {
            prop_assert!(m.classify(op.method(), &with_dots).is_none(), "{}", with_dots);
        }
    }
}

#[tokio::test]
async fn a_64_kib_path_is_handled() {
    let source = ScriptedSource::new();
    let layer = RestrictedDataTokenLayer::new(source.source());
    // http::Uri holds at most 64 KiB - 2 bytes; fill it.
    let id = "9".repeat(65_534 - 80);
    let uri = format!("https://sellingpartnerapi-na.amazon.com/orders/v0/orders/{id}/address");
    let request = http::Request::get(uri).body(()).unwrap();
    let token = layer.layer(echo_token()).oneshot(request).await.unwrap();
    assert_ne!(token, "none");
    // The token was asked for the template, not for the 64 KiB path.
    assert_eq!(
        source.seen.lock().unwrap()[0].resources()[0].path(),
        "/orders/v0/orders/{orderId}/address"
    );
}

/// Where the operation `hit` names sits in Amazon's catalogue (what the references answer).
fn index_of(hit: &spapi_rdt::matcher::Classified<'_>) -> usize {
    let catalog = Catalog::amazon();
    let ops = catalog.operations();
    ops.iter()
        .position(|op| op == hit.operation())
        .expect("a hit names a catalogue operation")
}

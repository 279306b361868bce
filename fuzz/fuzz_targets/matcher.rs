//! The matcher against arbitrary input: any method bytes and any path give an answer, never a
//! panic, and the answer is the one an independent, segment-by-segment reading of the catalogue's
//! templates gives.
//!
//! Input: one byte `n`, then `n` bytes of method, then the path (invalid UTF-8 replaced).
#![no_main]

use std::sync::LazyLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use spapi_rdt::matcher::Matcher;

static MATCHER: LazyLock<Matcher> = LazyLock::new(Matcher::amazon);

/// Whether `path` fills `template`: as many segments, literal segments equal byte for byte, each
/// placeholder taking one non-empty segment that is not a dot segment.
fn fills(template: &str, path: &str) -> bool {
    let wanted = template.split('/');
    let given = path.split('/');
    wanted.clone().count() == given.clone().count()
        && wanted.zip(given).all(|(t, p)| {
            if t.len() > 2 && t.starts_with('{') && t.ends_with('}') {
                !p.is_empty() && p != "." && p != ".."
            } else {
                t == p
            }
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (method, path) = rest.split_at(n);
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    let matcher = &*MATCHER;
    let hit = matcher.classify(&method, &path);
    let candidates: Vec<usize> = matcher
        .catalog()
        .operations()
        .iter()
        .enumerate()
        .filter(|(_, op)| *op.method() == method && fills(op.template(), &path))
        .map(|(i, _)| i)
        .collect();
    match hit {
        Some(hit) => {
            assert_eq!(*hit.operation().method(), method);
            assert!(
                candidates.contains(&hit.index()),
                "{method} {path:?} classified as {} {}, but the templates it fills are {candidates:?}",
                hit.operation().method(),
                hit.operation().template(),
            );
        }
        None => assert!(
            candidates.is_empty(),
            "{method} {path:?} not classified, but it fills {:?}",
            candidates
                .iter()
                .map(|i| matcher.catalog().operations()[*i].template())
                .collect::<Vec<_>>()
        ),
    }
});

//! The matcher against the router it replaced: a `matchit` tree per method, with a match that puts
//! a dot segment in a parameter thrown away. Random catalogues over a small alphabet make literal
//! and placeholder children meet at the same place (which Amazon's catalogue never does), so the
//! walk's way back from a failed literal branch is checked too, along with which catalogues are
//! refused.

use http::Method;
use proptest::prelude::*;
use spapi_rdt::catalog::{Catalog, RestrictedOperation};
use spapi_rdt::matcher::Matcher;

/// The old classifier: what `Matcher` did with matchit, kept here as the reference.
struct Reference {
    routers: Vec<(Method, matchit::Router<usize>)>,
}

impl Reference {
    /// `None` when matchit refuses the catalogue.
    fn new(catalog: &Catalog) -> Option<Self> {
        let mut routers: Vec<(Method, matchit::Router<usize>)> = Vec::new();
        for (index, op) in catalog.operations().iter().enumerate() {
            let mut route = String::new();
            let mut placeholders = 0;
            for segment in op.template().split('/').skip(1) {
                route.push('/');
                if segment.starts_with('{') {
                    route.push_str(&format!("{{p{placeholders}}}"));
                    placeholders += 1;
                } else {
                    route.push_str(segment);
                }
            }
            let at = match routers.iter().position(|(m, _)| m == op.method()) {
                Some(at) => at,
                None => {
                    routers.push((op.method().clone(), matchit::Router::new()));
                    routers.len() - 1
                }
            };
            routers[at].1.insert(route, index).ok()?;
        }
        Some(Reference { routers })
    }

    fn classify(&self, method: &Method, path: &str) -> Option<usize> {
        let (_, router) = self.routers.iter().find(|(m, _)| m == method)?;
        let found = router.at(path).ok()?;
        if found.params.iter().any(|(_, v)| v == "." || v == "..") {
            return None;
        }
        Some(*found.value)
    }
}

/// A template's segments: a few short literals (some sharing first bytes, some dots) and
/// placeholders.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec!["a", "ab", "b", "ba", "abc", ".", "..", "x.y"]).prop_map(str::to_owned),
        2 => Just("{id}".to_owned()),
    ]
}

fn template() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..5).prop_map(|segments| {
        if segments.is_empty() {
            "/".to_owned()
        } else {
            format!("/{}", segments.join("/"))
        }
    })
}

fn method() -> impl Strategy<Value = Method> {
    proptest::sample::select(vec![Method::GET, Method::POST])
}

/// A path: the same literals, ids, dot and empty segments, and sometimes a trailing slash.
fn path() -> impl Strategy<Value = String> {
    let segment = proptest::sample::select(vec![
        "a", "ab", "b", "ba", "abc", "abd", ".", "..", "x.y", "", "7", "a%2Fb",
    ]);
    proptest::collection::vec(segment, 0..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_matcher_answers_as_matchit_did(
        templates in proptest::collection::vec((method(), template()), 1..12),
        paths in proptest::collection::vec((method(), path()), 1..24),
    ) {
        let mut catalog = Catalog::empty();
        for (i, (method, template)) in templates.into_iter().enumerate() {
            catalog.push(RestrictedOperation::new("X", format!("op{i}"), method, template));
        }
        let reference = Reference::new(&catalog);
        let matcher = Matcher::new(catalog);
        prop_assert_eq!(matcher.is_ok(), reference.is_some(), "{:?}", matcher.as_ref().err());
        let (Ok(matcher), Some(reference)) = (matcher, reference) else {
            return Ok(());
        };
        for (method, path) in &paths {
            prop_assert_eq!(
                matcher.classify(method, path).map(|hit| hit.operation().name().to_owned()),
                reference.classify(method, path).map(|i| format!("op{i}")),
                "{} {}",
                method,
                path
            );
        }
        // Every template, filled in, is found by both.
        for op in matcher.catalog().operations() {
            let path = op.template().replace("{id}", "7");
            prop_assert_eq!(
                matcher
                    .classify(op.method(), &path)
                    .map(|hit| hit.operation().name().to_owned()),
                reference.classify(op.method(), &path).map(|i| format!("op{i}")),
                "{} {}",
                op.method(),
                path
            );
        }
    }
}

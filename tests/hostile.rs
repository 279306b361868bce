//! Hostile input: arbitrary methods, paths, percent-encodings, dot segments and huge paths never
//! panic, and classification is stable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ScriptedSource, echo_token};
use proptest::prelude::*;
use spapi_rdt::RestrictedDataTokenLayer;
use spapi_rdt::catalog::Catalog;
use spapi_rdt::matcher::Matcher;
use tower::{Layer, ServiceExt};

fn matcher() -> Matcher {
    Matcher::amazon()
}

/// One path segment value as an id might be: printable, no `/`, not a dot segment.
fn id_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9%._~:@!$&'()*+,;=-]{1,40}"
        .prop_filter("not a dot segment", |s| s != "." && s != "..")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_matcher_never_panics_on_any_string(method in "[A-Z]{1,10}", path in any::<String>()) {
        let m = matcher();
        if let Ok(method) = http::Method::from_bytes(method.as_bytes()) {
            let _ = m.classify(&method, &path);
        }
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
        let hit = m.classify(op.method(), &path).map(|h| h.index());
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_layer_never_panics_and_ignores_the_query(
        method in "[A-Z]{1,8}",
        raw in proptest::collection::vec(any::<u8>(), 0..200),
        query in "[a-zA-Z0-9=&%]{0,30}",
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let source = ScriptedSource::new();
            let layer = RestrictedDataTokenLayer::new(source.source());
            // Arbitrary bytes, percent-encoded where a URI needs it (non-UTF-8 included).
            let mut path = String::from("/orders/v0/orders/");
            for b in &raw {
                if b.is_ascii_alphanumeric() || b"/-._~".contains(b) {
                    path.push(*b as char);
                } else {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
            let Ok(method) = http::Method::from_bytes(method.as_bytes()) else { return Ok(()) };
            let base = format!("https://sellingpartnerapi-na.amazon.com{path}");
            let Ok(plain) = http::Request::builder().method(method.clone()).uri(&base).body(()) else { return Ok(()) };
            let with_query = http::Request::builder().method(method).uri(format!("{base}?{query}")).body(()).unwrap();
            let a = layer.layer(echo_token()).oneshot(plain).await.unwrap();
            let b = layer.layer(echo_token()).oneshot(with_query).await.unwrap();
            prop_assert_eq!(a == "none", b == "none");
            Ok(())
        })?;
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

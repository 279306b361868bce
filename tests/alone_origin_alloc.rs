//! `Origin::matches_uri` allocates nothing: counted by a global allocator that this test binary has
//! to itself (one test, so no other test allocates while it counts; libtest's threads still may).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spapi_rdt::Region as SpRegion;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[test]
fn origin_matches_uris_without_allocating() {
    let origin = SpRegion::FarEast.origin();
    let uris: Vec<(http::Uri, bool)> = [
        (
            "https://sellingpartnerapi-fe.amazon.com/orders/v0/orders",
            true,
        ),
        (
            "https://SELLINGPARTNERAPI-FE.amazon.com:443/orders/v0/orders",
            true,
        ),
        ("HTTPS://sellingpartnerapi-fe.amazon.com/x", true),
        ("http://sellingpartnerapi-fe.amazon.com/x", false),
        ("https://sellingpartnerapi-fe.amazon.com:8443/x", false),
        (
            "https://sellingpartnerapi-fe.amazon.com.evil.example/x",
            false,
        ),
        ("https://sellingpartnerapi-eu.amazon.com/x", false),
        ("ftp://sellingpartnerapi-fe.amazon.com/x", false),
        ("/orders/v0/orders", false),
    ]
    .into_iter()
    .map(|(uri, yes)| (uri.parse().unwrap(), yes))
    .collect();

    // The counter sees an allocation made inside a region, so a zero below means something.
    let probe = Region::new(GLOBAL);
    let boxed = std::hint::black_box(Box::new([0u8; 64]));
    drop(boxed);
    assert!(
        probe.change().allocations >= 1,
        "the allocator does not count"
    );

    // The allocator counts every thread, and libtest's own threads allocate now and then while a
    // test runs (4 allocations, 900 bytes, seen once in ten runs). So: five rounds of 9,000 calls,
    // and the quietest must count nothing. An allocation in `matches_uri` would show in every round,
    // 9,000 times over.
    let mut quietest = None;
    for _ in 0..5 {
        let region = Region::new(GLOBAL);
        let mut matched = 0usize;
        for _ in 0..1_000 {
            for (uri, _) in &uris {
                matched += usize::from(origin.matches_uri(std::hint::black_box(uri)));
            }
        }
        let change = region.change();
        assert_eq!(matched, 3_000);
        let counted = (
            change.allocations,
            change.reallocations,
            change.bytes_allocated,
        );
        if quietest.is_none_or(|q: (usize, usize, usize)| counted < q) {
            quietest = Some(counted);
        }
    }
    assert_eq!(quietest, Some((0, 0, 0)));
    for (uri, yes) in &uris {
        assert_eq!(origin.matches_uri(uri), *yes, "{uri}");
    }
}

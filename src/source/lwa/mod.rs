//! Login with Amazon (LWA): a seller's credentials and the cache of their access tokens.
//!
//! Every SP-API call, the Tokens API's included, is authenticated with an LWA access token that the
//! application gets by trading the seller's refresh token at Amazon's LWA endpoint. An access token
//! lives an hour; this module keeps one per seller and refreshes it ahead of its expiry:
//!
//! - the refresh starts `margin` before the stated expiry (5 minutes by default), but never earlier
//!   than half the token's life, so a short-lived token cannot cause a refresh storm;
//! - concurrent callers for one seller share one LWA call (single flight), and callers that queued
//!   behind a failed call get its error instead of each calling LWA again;
//! - time is `tokio::time::Instant`, monotonic and testable with paused time;
//! - a token the SP-API refused (401/403) is invalidated by value, so an old refusal never evicts a
//!   newer token.

mod cache;
mod client;
mod credentials;
mod parse;

pub(in crate::source) use cache::LwaCache;
pub(in crate::source) use cache::SellerSlot;
pub(in crate::source) use client::LwaEndpoint;
pub(in crate::source) use client::read_body;
pub(in crate::source) use client::retry_after_header;
pub(in crate::source) use client::transport_error;
pub use credentials::LwaCredentials;
pub(in crate::source) use credentials::scrub;
pub(in crate::source) use parse::ASSUMED_LIFETIME;
pub(in crate::source) use parse::Lifetime;
pub(in crate::source) use parse::MAX_LIFETIME;
#[cfg(fuzzing)]
pub use parse::fuzz_lwa_answer;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CredentialsError;
    use std::ffi::OsString;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::StatusCode;
    use serde_json::Value;

    use super::cache::LWA_REFUSAL_PERIOD;
    use super::credentials::MAX_MESSAGE;
    use super::credentials::{ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_REFRESH_TOKEN};
    use super::parse::{CURE_REAUTHORIZE, LwaGrant, lwa_answer};
    use crate::error::{ErrorKind, SourceError};
    use crate::resource::SellerId;
    use crate::token::SecretToken;

    fn creds() -> LwaCredentials {
        LwaCredentials::new("client-id-1", "client-secret-1", "Atzr|refresh-1")
    }

    fn grant(n: usize, life: Duration) -> LwaGrant {
        LwaGrant {
            token: SecretToken::new(format!("Atza|lwa-{n}")).unwrap(),
            expires_in: life,
        }
    }

    /// A fake LWA: counts calls, takes `delay`, issues `Atza|lwa-<n>` living `life`.
    struct FakeLwa {
        calls: AtomicUsize,
        delay: Duration,
        life: Duration,
        fail: bool,
    }

    impl FakeLwa {
        fn new(life: Duration) -> Self {
            FakeLwa {
                calls: AtomicUsize::new(0),
                delay: Duration::from_millis(100),
                life,
                fail: false,
            }
        }
        async fn call(&self) -> Result<LwaGrant, SourceError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(SourceError::permanent("refused")
                    .with_code("invalid_grant")
                    .with_status(StatusCode::BAD_REQUEST)
                    .with_cure(CURE_REAUTHORIZE));
            }
            Ok(grant(n, self.life))
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let shown = format!("{:?}", creds());
        assert!(shown.contains("client-id-1"), "{shown}");
        assert!(!shown.contains("client-secret-1"), "{shown}");
        assert!(!shown.contains("refresh-1"), "{shown}");
    }

    #[test]
    fn from_env_names_the_missing_variable_only() {
        let all = |name: &str| -> Option<OsString> {
            match name {
                ENV_CLIENT_ID => Some("id".into()),
                ENV_CLIENT_SECRET => Some("very-secret".into()),
                ENV_REFRESH_TOKEN => Some("Atzr|tok".into()),
                _ => None,
            }
        };
        let ok = LwaCredentials::from_lookup(all).unwrap();
        assert_eq!(ok.client_id(), "id");
        assert_eq!(ok.client_secret(), "very-secret");
        assert_eq!(ok.refresh_token(), "Atzr|tok");

        let err =
            LwaCredentials::from_lookup(|n| if n == ENV_REFRESH_TOKEN { None } else { all(n) })
                .unwrap_err();
        assert_eq!(err, CredentialsError::Missing("SPAPI_REFRESH_TOKEN"));
        assert!(err.to_string().contains("SPAPI_REFRESH_TOKEN"));

        let err = LwaCredentials::from_lookup(|n| {
            if n == ENV_CLIENT_SECRET {
                Some("  ".into())
            } else {
                all(n)
            }
        })
        .unwrap_err();
        assert_eq!(err, CredentialsError::Missing("SPAPI_CLIENT_SECRET"));
        assert!(!err.to_string().contains("very-secret"));
    }

    #[test]
    fn scrub_removes_secrets_and_bounds_length() {
        let c = creds();
        let text = c.scrub("bad token Atzr|refresh-1 and client-secret-1!");
        assert!(!text.contains("refresh-1") && !text.contains("client-secret-1"));
        assert!(text.contains("<redacted>"));
        assert_eq!(c.scrub(&"x".repeat(10_000)).len(), MAX_MESSAGE);
    }

    #[test]
    fn lifetime_rule() {
        let r = |v: Value| Lifetime::read(Some(&v)).resolve("t");
        assert_eq!(
            r(serde_json::json!(1800)).unwrap(),
            Duration::from_secs(1800)
        );
        assert_eq!(
            r(serde_json::json!("900")).unwrap(),
            Duration::from_secs(900)
        );
        assert_eq!(
            r(serde_json::json!(1.5)).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(r(Value::Null).unwrap(), ASSUMED_LIFETIME);
        assert_eq!(Lifetime::read(None).resolve("t").unwrap(), ASSUMED_LIFETIME);
        assert_eq!(r(serde_json::json!(86_401)).unwrap(), ASSUMED_LIFETIME);
        assert_eq!(r(serde_json::json!(86_400)).unwrap(), MAX_LIFETIME);
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-5),
            // Above zero, but under a nanosecond: a zero `Duration`.
            serde_json::json!(1e-300),
            serde_json::json!("soon"),
            serde_json::json!({}),
        ] {
            let err = r(bad.clone()).unwrap_err();
            assert!(err.is_transient(), "{bad}");
        }
    }

    #[test]
    fn lwa_error_mapping() {
        let c = creds();
        let s = SellerId::new("S1");
        let body =
            br#"{"error":"invalid_grant","error_description":"The request has an invalid grant parameter : refresh_token"}"#;
        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, body, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.code(), Some("invalid_grant"));
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert!(err.to_string().contains("authorize the application again"));
        assert!(err.message().contains("invalid grant parameter"));

        let body =
            br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#;
        let err = lwa_answer(&s, &c, StatusCode::UNAUTHORIZED, body, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.cure().unwrap().contains("client id and secret"));

        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, b"{}", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.code(), None);

        for status in [429, 500, 503, 408] {
            let status = StatusCode::from_u16(status).unwrap();
            let err = lwa_answer(&s, &c, status, b"<html>", None).unwrap_err();
            assert!(err.is_transient(), "{status}");
        }

        // A description echoing a secret is scrubbed.
        let body = br#"{"error":"invalid_request","error_description":"bad Atzr|refresh-1"}"#;
        let err = lwa_answer(&s, &c, StatusCode::BAD_REQUEST, body, None).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("refresh-1"));

        // Success with a malformed body or token is transient.
        for body in [
            &b"not json"[..],
            br#"{"token_type":"bearer"}"#,
            br#"{"access_token":"a\nb"}"#,
        ] {
            let err = lwa_answer(&s, &c, StatusCode::OK, body, None).unwrap_err();
            assert!(err.is_transient());
        }
        let ok = lwa_answer(
            &s,
            &c,
            StatusCode::OK,
            br#"{"access_token":"Atza|x","token_type":"bearer","expires_in":3600}"#,
            None,
        )
        .unwrap();
        assert_eq!(ok.token.expose(), "Atza|x");
        assert_eq!(ok.expires_in, Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn cached_until_the_margin_then_refreshed() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let t1 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 1);
        // The grant's clock started before the 100 ms call: refresh due at 55 min from then.
        tokio::time::advance(Duration::from_secs(54 * 60)).await;
        let again = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(again, t1);
        assert_eq!(lwa.calls(), 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        let t2 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
        assert_ne!(t1, t2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_refresh_at_half_life() {
        // A 60 s token with a 5 min margin: refreshed after 30 s, not on every call.
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(60));
        slot.access_token(|| lwa.call()).await.unwrap();
        tokio::time::advance(Duration::from_secs(25)).await;
        for _ in 0..5 {
            slot.access_token(|| lwa.call()).await.unwrap();
        }
        assert_eq!(lwa.calls(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_call() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let calls = (0..16).map(|_| slot.access_token(|| lwa.call()));
        let tokens = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        let first = tokens[0].as_ref().unwrap();
        assert!(tokens.iter().all(|t| t.as_ref().unwrap() == first));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_token_that_outlived_its_refresh_time_during_the_call() {
        // The call takes 100 ms and the token's refresh is due 5 ms after it started.
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_millis(10));
        let calls = (0..8).map(|_| slot.access_token(|| lwa.call()));
        let tokens = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        assert!(tokens.iter().all(|t| t.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_failure_instead_of_calling_again() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let mut lwa = FakeLwa::new(Duration::from_secs(3600));
        lwa.fail = true;
        let calls = (0..8).map(|_| slot.access_token(|| lwa.call()));
        let results = futures_util::future::join_all(calls).await;
        assert_eq!(lwa.calls(), 1);
        for r in results {
            let err = r.unwrap_err();
            assert_eq!(err.code(), Some("invalid_grant"));
            assert_eq!(err.kind(), ErrorKind::Permanent);
            assert_eq!(err.cure(), Some(CURE_REAUTHORIZE));
        }
        // A later caller gets the remembered failure until its back-off ends, then tries again.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(slot.access_token(|| lwa.call()).await.is_err());
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_grant_is_remembered_for_a_minute() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let mut lwa = FakeLwa::new(Duration::from_secs(3600));
        lwa.fail = true;
        for _ in 0..10 {
            let err = slot.access_token(|| lwa.call()).await.unwrap_err();
            assert_eq!(err.code(), Some("invalid_grant"));
            assert_eq!(err.kind(), ErrorKind::Permanent);
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        assert_eq!(
            lwa.calls(),
            1,
            "calls within the minute after invalid_grant"
        );
        let err = slot.access_token(|| lwa.call()).await.unwrap_err();
        assert!(
            err.retry_after().unwrap() <= Duration::from_secs(10),
            "{err:?}"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        lwa.fail = false;
        slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_and_a_success_resets_them() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let failing = |n: &AtomicUsize| {
            n.fetch_add(1, Ordering::SeqCst);
            async { Err(SourceError::transient("LWA answered 503")) }
        };
        let calls = AtomicUsize::new(0);
        let mut waits = Vec::new();
        for _ in 0..6 {
            // Each failure is remembered: the calls right after it do not reach LWA.
            let before = calls.load(Ordering::SeqCst);
            assert!(slot.access_token(|| failing(&calls)).await.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), before + 1);
            let err = slot.access_token(|| failing(&calls)).await.unwrap_err();
            assert_eq!(calls.load(Ordering::SeqCst), before + 1);
            let wait = err.retry_after().unwrap();
            waits.push(wait);
            tokio::time::advance(wait).await;
        }
        // About 1, 2, 4, 8, 16, 32 s (each in the upper half of its step): growing, bounded.
        assert!(waits[0] <= Duration::from_secs(1), "{waits:?}");
        assert!(waits[5] >= Duration::from_secs(16), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        slot.access_token(|| lwa.call()).await.unwrap();
        slot.invalidate(&slot.access_token(|| lwa.call()).await.unwrap());
        // After a success, the next failure is remembered for about a second again.
        assert!(slot.access_token(|| failing(&calls)).await.is_err());
        let err = slot.access_token(|| failing(&calls)).await.unwrap_err();
        assert!(
            err.retry_after().unwrap() <= Duration::from_secs(1),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_dropped_at_most_once_a_refusal_period() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let t1 = slot.access_token(|| lwa.call()).await.unwrap();
        assert!(slot.invalidate(&t1));
        let t2 = slot.access_token(|| lwa.call()).await.unwrap();
        // Twenty more refusals within the period: the new token stays, LWA is not called again.
        for _ in 0..20 {
            assert!(!slot.invalidate(&t2));
            assert_eq!(slot.access_token(|| lwa.call()).await.unwrap(), t2);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(lwa.calls(), 2);
        tokio::time::advance(LWA_REFUSAL_PERIOD).await;
        assert!(slot.invalidate(&t2));
        assert_ne!(slot.access_token(|| lwa.call()).await.unwrap(), t2);
        assert_eq!(lwa.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_evicts_the_stale_token() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let t1 = slot.access_token(|| lwa.call()).await.unwrap();
        assert!(slot.invalidate(&t1));
        let t2 = slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
        assert_ne!(t1, t2);
        // A late refusal of t1 must not evict t2, even after the refusal period.
        tokio::time::advance(LWA_REFUSAL_PERIOD).await;
        assert!(!slot.invalidate(&t1));
        assert_eq!(slot.access_token(|| lwa.call()).await.unwrap(), t2);
        assert_eq!(lwa.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_call_lets_the_next_caller_through() {
        let slot = SellerSlot::new(creds(), Duration::from_secs(300));
        let lwa = FakeLwa::new(Duration::from_secs(3600));
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), slot.access_token(|| lwa.call())).await;
        assert!(cancelled.is_err());
        slot.access_token(|| lwa.call()).await.unwrap();
        assert_eq!(lwa.calls(), 2);
    }

    #[test]
    fn cache_adds_replaces_and_removes_sellers() {
        let cache = LwaCache::new(Duration::from_secs(300));
        assert!(cache.slot(&SellerId::default()).is_none());
        cache.insert(SellerId::new("b"), creds());
        cache.insert(SellerId::new("a"), creds());
        cache.insert(SellerId::new("a"), LwaCredentials::new("other", "s", "r"));
        assert_eq!(
            cache.sellers(),
            vec![SellerId::new("a"), SellerId::new("b")]
        );
        assert_eq!(
            cache
                .slot(&SellerId::new("a"))
                .unwrap()
                .credentials()
                .client_id(),
            "other"
        );
        assert!(cache.remove(&SellerId::new("b")));
        assert!(!cache.remove(&SellerId::new("b")));
    }
}

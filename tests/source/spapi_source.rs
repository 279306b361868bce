//! `SpApiTokenSource` against the emulator's LWA and Tokens API on 127.0.0.1, with canned answers
//! for what the emulator does not say by itself.
#![cfg(feature = "reqwest")]

use crate::support::amazon::*;

#[tokio::test]
async fn request_shape_headers_and_lwa_form() {
    let server = Amazon::start().await;
    server
        .emulator
        .register_target_application("amzn1.sellerapps.app.delegatee");
    let source = server.source();
    let request = TokenRequest::new(
        SellerId::default(),
        server.origin(),
        [
            RestrictedResource::new(
                Method::GET,
                "/orders/v0/orders/{orderId}",
                DataElements::NONE
                    .with(DataElement::BuyerInfo)
                    .with(DataElement::ShippingAddress),
            ),
            RestrictedResource::new(
                Method::GET,
                "/orders/v0/orders/{orderId}/address",
                DataElements::NONE,
            ),
        ],
    );
    let issued = source.fetch(request.clone()).await.unwrap();
    assert!(issued.token().expose().starts_with("Atz.sprdt|"));
    assert_eq!(issued.expires_in(), Duration::from_secs(3600));
    assert_eq!(server.emulator.counters().rdts_issued, 1);

    let seen = server.token_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].json().unwrap(),
        json!({"restrictedResources": [
            {"method": "GET", "path": "/orders/v0/orders/{orderId}",
             "dataElements": ["buyerInfo", "shippingAddress"]},
            {"method": "GET", "path": "/orders/v0/orders/{orderId}/address"},
        ]})
    );
    assert!(seen[0].access_token().unwrap().starts_with("Atza|"));
    assert_eq!(seen[0].headers()["content-type"], "application/json");

    let forms = server.emulator.requests(Endpoint::Lwa);
    assert_eq!(forms.len(), 1);
    assert_eq!(
        forms[0].headers()["content-type"],
        "application/x-www-form-urlencoded"
    );
    let mut form = forms[0].form().unwrap();
    form.sort();
    let mut expected: Vec<(String, String)> = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "Atzr|emulator-default"),
        ("client_id", server.emulator.client_id()),
        ("client_secret", server.emulator.client_secret()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    expected.sort();
    assert_eq!(form, expected);

    // With a target application, and only then, the body names it.
    source
        .fetch(request.with_target_application("amzn1.sellerapps.app.delegatee"))
        .await
        .unwrap();
    let seen = server.token_requests();
    assert_eq!(
        seen[1].json().unwrap()["targetApplication"],
        "amzn1.sellerapps.app.delegatee"
    );
    assert!(seen[0].json().unwrap().get("targetApplication").is_none());
    // The LWA token was reused.
    assert_eq!(server.lwa_calls(), 1);
}

#[tokio::test]
async fn success_shapes_and_expires_in_rules() {
    let server = Amazon::start().await;
    let source = server.source();
    let ok = |body: Value| json_reply(200, body);
    // (answer, expected lifetime or None for a transient error)
    let cases: Vec<(CannedReply, Option<Duration>)> = vec![
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-a", "expiresIn": 1800})),
            Some(Duration::from_secs(1800)),
        ),
        (
            ok(json!({"payload": {"restrictedDataToken": "Atz.sprdt|rdt-b", "expiresIn": 900}})),
            Some(Duration::from_secs(900)),
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-c"})),
            Some(SpApiTokenSource::ASSUMED_TOKEN_LIFETIME),
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-d", "expiresIn": 864_000})),
            Some(SpApiTokenSource::ASSUMED_TOKEN_LIFETIME),
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-e", "expiresIn": 0})),
            None,
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-f", "expiresIn": -60})),
            None,
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-g", "expiresIn": "later"})),
            None,
        ),
        (
            ok(json!({"restrictedDataToken": "Atz.sprdt|rdt-\u{1}h", "expiresIn": 3600})),
            None,
        ),
        (ok(json!({"expiresIn": 3600})), None),
        (raw_reply(200, "<html>not json</html>"), None),
    ];
    for (reply, expected) in cases {
        let shown = format!("{reply:?}");
        server.reply(Endpoint::Tokens, reply);
        let result = source.fetch(server.request()).await;
        match expected {
            Some(life) => {
                let issued = result.unwrap_or_else(|e| panic!("{shown}: {e}"));
                assert_eq!(issued.expires_in(), life, "{shown}");
                assert!(issued.token().expose().starts_with("Atz.sprdt|rdt-"));
            }
            None => {
                let err = result.expect_err(&shown);
                assert_eq!(err.kind(), ErrorKind::Transient, "{shown}: {err}");
                assert_eq!(err.status(), Some(http::StatusCode::OK), "{shown}");
                server.assert_no_secret(&format!("{err} {err:?}"));
            }
        }
    }
}

#[tokio::test]
async fn error_statuses_map_to_kinds_codes_and_cures() {
    let server = Amazon::start().await;
    let source = server.source();
    struct Case {
        reply: CannedReply,
        kind: ErrorKind,
        code: Option<&'static str>,
        cure: Option<&'static str>,
        message: Option<&'static str>,
        retry_after: Option<Duration>,
    }
    let case = |reply: CannedReply, kind, code| Case {
        reply,
        kind,
        code,
        cure: None,
        message: None,
        retry_after: None,
    };
    let cases = vec![
        Case {
            cure: Some("authorize the application again"),
            message: Some("[buyerInfo]"),
            ..case(
                errors(
                    400,
                    "InvalidInput",
                    "Application does not have access to one or more requested data elements: [buyerInfo]",
                ),
                ErrorKind::Permanent,
                Some("InvalidInput"),
            )
        },
        case(
            errors(400, "InvalidRequest", "Invalid method"),
            ErrorKind::Permanent,
            Some("InvalidRequest"),
        ),
        case(raw_reply(404, ""), ErrorKind::Permanent, None),
        case(
            errors(415, "UnsupportedMediaType", "no"),
            ErrorKind::Permanent,
            Some("UnsupportedMediaType"),
        ),
        case(
            errors(
                429,
                "QuotaExceeded",
                "You exceeded your quota for the requested resource.",
            ),
            ErrorKind::Transient,
            Some("QuotaExceeded"),
        ),
        Case {
            retry_after: Some(Duration::from_secs(7)),
            ..case(
                errors(429, "QuotaExceeded", "slow down")
                    .header(RETRY_AFTER, HeaderValue::from_static("7")),
                ErrorKind::Transient,
                Some("QuotaExceeded"),
            )
        },
        case(
            errors(500, "InternalFailure", "oops"),
            ErrorKind::Transient,
            Some("InternalFailure"),
        ),
        case(
            errors(503, "ServiceUnavailable", "later"),
            ErrorKind::Transient,
            Some("ServiceUnavailable"),
        ),
        case(
            raw_reply(502, "<html>bad gateway</html>"),
            ErrorKind::Transient,
            None,
        ),
    ];
    for c in cases {
        let status = c.reply.status().as_u16();
        server.reply(Endpoint::Tokens, c.reply);
        let err = source.fetch(server.request()).await.unwrap_err();
        assert_eq!(err.kind(), c.kind, "{status}: {err}");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
        assert_eq!(err.code(), c.code, "{status}: {err}");
        assert_eq!(err.retry_after(), c.retry_after, "{status}");
        assert_eq!(err.attempts(), 1, "{status}");
        if let Some(cure) = c.cure {
            assert!(err.to_string().contains(cure), "{err}");
        }
        if let Some(message) = c.message {
            assert!(err.message().contains(message), "{err}");
        }
        server.assert_no_secret(&format!("{err} {err:?}"));
    }
    // No error ever retried, and the LWA token served every call.
    assert_eq!(server.token_calls(), 9);
    assert_eq!(server.lwa_calls(), 1);
}

#[tokio::test]
async fn a_refused_lwa_token_is_replaced_and_the_call_retried_once() {
    let server = Amazon::start().await;
    let source = server.source();
    server.reply(
        Endpoint::Tokens,
        errors(
            403,
            "Unauthorized",
            "Access to requested resource is denied.",
        ),
    );
    let issued = source.fetch(server.request()).await.unwrap();
    assert!(issued.token().expose().starts_with("Atz.sprdt|"));
    assert_eq!(server.emulator.counters().rdts_issued, 1);
    assert_eq!(server.lwa_calls(), 2);
    let sent = server.access_tokens_sent();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], sent[1], "the retry used a new LWA token");

    // The new LWA token is cached for the next fetch.
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 2);
    assert_eq!(server.access_tokens_sent()[2], sent[1]);
}

#[tokio::test]
async fn a_second_refusal_is_permanent_after_exactly_one_retry() {
    let server = Amazon::start().await;
    let source = server.source();
    server.reply(Endpoint::Tokens, errors(401, "Unauthorized", "denied"));
    server.reply(
        Endpoint::Tokens,
        errors(403, "Unauthorized", "denied again"),
    );
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(err.status(), Some(http::StatusCode::FORBIDDEN));
    assert_eq!(err.code(), Some("Unauthorized"));
    assert_eq!(err.attempts(), 2);
    assert!(err.cure().unwrap().contains("LWA credentials"), "{err}");
    assert!(err.message().contains("denied again"));
    assert_eq!(server.token_calls(), 2);
    assert_eq!(server.lwa_calls(), 2);
    let sent = server.access_tokens_sent();
    assert_ne!(sent[0], sent[1], "the retry used a new LWA token");
}

#[tokio::test]
async fn a_refused_retry_fails_with_the_lwa_error_when_lwa_fails() {
    let server = Amazon::start().await;
    let source = server.source();
    source.fetch(server.request()).await.unwrap();
    server.reply(Endpoint::Tokens, errors(403, "Unauthorized", "denied"));
    server.reply(Endpoint::Lwa, json_reply(
        400,
        json!({"error": "invalid_grant", "error_description": "The request has an invalid grant parameter : refresh_token"}),
    ));
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_grant"));
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(server.token_calls(), 2);
}

#[tokio::test]
async fn concurrent_fetches_for_one_seller_make_one_lwa_call() {
    let server = Amazon::start().await;
    // Every fetch starts while the first LWA call is in flight.
    server
        .emulator
        .inject(Endpoint::Lwa, Fault::Delay(Duration::from_millis(300)), 1);
    let source = server.source();
    let fetches = (0..8).map(|i| {
        let request = TokenRequest::new(
            SellerId::default(),
            server.origin(),
            [RestrictedResource::new(
                Method::GET,
                format!("/mfn/v0/shipments/{i}"),
                DataElements::NONE,
            )],
        );
        source.fetch(request)
    });
    let results = futures_util::future::join_all(fetches).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.lwa_calls(), 1);
    assert_eq!(server.token_calls(), 8);
    let sent = server.access_tokens_sent();
    assert!(sent.iter().all(|t| *t == sent[0]), "one LWA token for all");
}

#[tokio::test]
async fn a_short_lived_lwa_token_is_refreshed_at_half_life() {
    let server = Amazon::start().await;
    let source = server.source();
    // A 4 s token with the default 5 min margin: refreshed after 2 s, not on every call.
    server
        .emulator
        .inject(Endpoint::Lwa, Fault::ExpiresIn(Some(4)), 1);
    source.fetch(server.request()).await.unwrap();
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 2);
    let sent = server.access_tokens_sent();
    assert_eq!(sent[0], sent[1]);
    assert_ne!(sent[1], sent[2], "refreshed at half life");
}

#[tokio::test]
async fn lwa_errors_are_mapped() {
    let server = Amazon::start().await;
    let cases = [
        (
            json_reply(
                400,
                json!({"error": "invalid_grant", "error_description": "The request has an invalid grant parameter : refresh_token"}),
            ),
            ErrorKind::Permanent,
            Some("invalid_grant"),
            Some("the seller must authorize the application again to get a new refresh token"),
        ),
        (
            json_reply(
                401,
                json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
            ),
            ErrorKind::Permanent,
            Some("invalid_client"),
            Some("check the client id and secret"),
        ),
        (
            json_reply(400, json!({"error": "invalid_request"})),
            ErrorKind::Permanent,
            Some("invalid_request"),
            None,
        ),
        (raw_reply(429, ""), ErrorKind::Transient, None, None),
        (raw_reply(500, "<html>"), ErrorKind::Transient, None, None),
        (
            json_reply(200, json!({"token_type": "bearer"})),
            ErrorKind::Transient,
            None,
            None,
        ),
    ];
    for (reply, kind, code, cure) in cases {
        let status = reply.status().as_u16();
        // A source of its own: a source remembers a seller's LWA failure for a while.
        let source = server.source();
        server.reply(Endpoint::Lwa, reply);
        let err = source.fetch(server.request()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert_eq!(err.code(), code, "{status}");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        if let Some(cure) = cure {
            assert!(err.to_string().contains(cure), "{err}");
        }
        server.assert_no_secret(&format!("{err} {err:?}"));
    }
    // No Tokens API call without an LWA token.
    assert_eq!(server.token_calls(), 0);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let server = Amazon::start().await;
    let dead = dead_port();
    let port = dead.port();
    // The Tokens API is down.
    let source = server.source();
    let request = TokenRequest::new(
        SellerId::default(),
        Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        server.request().resources().to_vec(),
    );
    let err = source.fetch(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("could not connect"), "{err}");
    assert!(std::error::Error::source(&err).is_some());

    // LWA is down.
    let source = SpApiTokenSource::builder()
        .credentials(server.credentials())
        .lwa_url(format!("http://127.0.0.1:{port}/auth/o2/token"))
        .build()
        .unwrap();
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("LWA"), "{err}");
}

#[tokio::test]
async fn a_slow_server_hits_the_request_timeout() {
    let server = Amazon::start().await;
    let source = SpApiTokenSource::builder()
        .credentials(server.credentials())
        .lwa_url(server.lwa_url())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    // If the timeout did not work, this answer would be a success after 10 s.
    server
        .emulator
        .inject(Endpoint::Tokens, Fault::Delay(Duration::from_secs(10)), 1);
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("within 200 ms"), "{err}");

    // A slow LWA too.
    let slow_lwa = Amazon::start().await;
    slow_lwa
        .emulator
        .inject(Endpoint::Lwa, Fault::Delay(Duration::from_secs(10)), 1);
    let source = SpApiTokenSource::builder()
        .credentials(slow_lwa.credentials())
        .lwa_url(slow_lwa.lwa_url())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = source.fetch(slow_lwa.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(slow_lwa.token_calls(), 0);
}

#[tokio::test]
async fn bad_requests_and_unknown_sellers_fail_before_any_call() {
    let server = Amazon::start().await;
    let source = server.source();
    let err = source
        .fetch(server.request_for(SellerId::new("A-NOBODY")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.message().contains("A-NOBODY"), "{err}");

    let none = TokenRequest::new(SellerId::default(), server.origin(), []);
    assert_eq!(
        source.fetch(none).await.unwrap_err().kind(),
        ErrorKind::Permanent
    );
    let many = TokenRequest::new(
        SellerId::default(),
        server.origin(),
        (0..51).map(|i| {
            RestrictedResource::new(
                Method::GET,
                format!("/mfn/v0/shipments/{i}"),
                DataElements::NONE,
            )
        }),
    );
    let err = source.fetch(many).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.message().contains("51"), "{err}");
    assert_eq!(server.lwa_calls(), 0);
    assert_eq!(server.token_calls(), 0);
}

#[tokio::test]
async fn each_seller_uses_its_own_credentials() {
    let server = Amazon::start_with(
        EmulatorConfig::default()
            .seller("S2", "Atzr|second")
            .seller("S3", "Atzr|third"),
    )
    .await;
    let source = SpApiTokenSource::builder()
        .credentials(server.credentials())
        .seller(SellerId::new("S2"), server.credentials_of("S2"))
        .lwa_url(server.lwa_url())
        .build()
        .unwrap();
    source.fetch(server.request()).await.unwrap();
    source
        .fetch(server.request_for(SellerId::new("S2")))
        .await
        .unwrap();
    // Added at run time.
    assert!(!source.has_seller(&SellerId::new("S3")));
    source.add_seller(SellerId::new("S3"), server.credentials_of("S3"));
    source
        .fetch(server.request_for(SellerId::new("S3")))
        .await
        .unwrap();
    let refresh_tokens: Vec<String> = server
        .emulator
        .requests(Endpoint::Lwa)
        .iter()
        .map(|r| r.form_field("refresh_token").unwrap())
        .collect();
    assert_eq!(
        refresh_tokens,
        ["Atzr|emulator-default", "Atzr|second", "Atzr|third"]
    );
    // Each Tokens API call carried its own seller's LWA token.
    let counters = server.emulator.counters();
    for seller in [SellerId::DEFAULT_NAME, "S2", "S3"] {
        assert_eq!(counters.token_calls_for(seller), 1, "{seller}");
    }
    // Removed at run time.
    assert!(source.remove_seller(&SellerId::new("S3")));
    let err = source
        .fetch(server.request_for(SellerId::new("S3")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
}

#[tokio::test]
async fn lwa_access_tokens_are_available_for_unrestricted_calls() {
    let server = Amazon::start().await;
    let source = server.source();
    let seller = SellerId::default();
    let t1 = source.lwa_access_token(&seller).await.unwrap();
    assert!(t1.expose().starts_with("Atza|"));
    assert_eq!(source.lwa_access_token(&seller).await.unwrap(), t1);
    // The RDT call shares the cache.
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 1);
    // An unrestricted call refused it: the next one gets a new token.
    source.invalidate_lwa_access_token(&seller, &t1);
    let t2 = source.lwa_access_token(&seller).await.unwrap();
    assert_ne!(t2, t1);
    assert_eq!(server.lwa_calls(), 2);
    let err = source
        .lwa_access_token(&SellerId::new("nobody"))
        .await
        .unwrap_err();
    assert!(err.message().contains("nobody"));
}

#[test]
fn build_errors_are_typed() {
    let credentials = || LwaCredentials::new("client", "secret", "Atzr|refresh");
    let err = SpApiTokenSource::builder().build().unwrap_err();
    assert!(matches!(err, SourceBuildError::NoCredentials), "{err}");
    for url in [
        "http://api.amazon.com/auth/o2/token",
        "not a url",
        "ftp://127.0.0.1/x",
    ] {
        let err = SpApiTokenSource::builder()
            .credentials(credentials())
            .lwa_url(url)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, SourceBuildError::InvalidLwaUrl { .. }),
            "{url}: {err}"
        );
    }
    let err = SpApiTokenSource::builder()
        .credentials(credentials())
        .request_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, SourceBuildError::ZeroTimeout));
    assert!(
        SpApiTokenSource::builder()
            .credentials(credentials())
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn debug_output_holds_no_secret() {
    let server = Amazon::start().await;
    let source = server.source();
    source.fetch(server.request()).await.unwrap();
    let shown = format!("{source:?} {:?}", server.credentials());
    assert!(shown.contains(server.emulator.client_id()), "{shown}");
    assert!(shown.contains("127.0.0.1"), "{shown}");
    server.assert_no_secret(&shown);
    let issued = source.fetch(server.request()).await.unwrap();
    server.assert_no_secret(&format!("{issued:?}"));
    // The builder too.
    let builder = SpApiTokenSource::builder().credentials(server.credentials());
    server.assert_no_secret(&format!("{builder:?}"));
}

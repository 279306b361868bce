//! `SpApiTokenSource` against scripted LWA and Tokens API servers on 127.0.0.1.
#![cfg(feature = "reqwest")]

use crate::support::spapi_mock;

#[allow(unused_imports)]
use spapi_mock::*;

#[tokio::test]
async fn request_shape_headers_and_lwa_form() {
    let server = Server::start().await;
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
    assert_eq!(issued.token().expose(), "Atz.sprdt|rdt-1");
    assert_eq!(issued.expires_in(), Duration::from_secs(3600));

    let seen = server.token_requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({"restrictedResources": [
            {"method": "GET", "path": "/orders/v0/orders/{orderId}",
             "dataElements": ["buyerInfo", "shippingAddress"]},
            {"method": "GET", "path": "/orders/v0/orders/{orderId}/address"},
        ]})
    );
    assert_eq!(seen[0].headers["x-amz-access-token"], "Atza|lwa-1");
    assert_eq!(seen[0].headers["content-type"], "application/json");

    let forms = server.mock.lwa_forms.lock().unwrap().clone();
    assert_eq!(forms.len(), 1);
    let (headers, form) = &forms[0];
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    let expected: HashMap<String, String> = [
        ("grant_type", "refresh_token"),
        ("refresh_token", REFRESH_TOKEN),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(form, &expected);

    // With a target application, and only then, the body names it.
    source
        .fetch(request.with_target_application("amzn1.sellerapps.app.delegatee"))
        .await
        .unwrap();
    let seen = server.token_requests();
    assert_eq!(
        seen[1].body["targetApplication"],
        "amzn1.sellerapps.app.delegatee"
    );
    assert!(seen[0].body.get("targetApplication").is_none());
    // The LWA token was reused.
    assert_eq!(server.lwa_calls(), 1);
}

#[tokio::test]
async fn success_shapes_and_expires_in_rules() {
    let server = Server::start().await;
    let source = server.source();
    let ok = |body: Value| Reply::json(200, body);
    // (answer, expected lifetime or None for a transient error)
    let cases: Vec<(Reply, Option<Duration>)> = vec![
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
        (Reply::raw(200, "<html>not json</html>"), None),
    ];
    for (reply, expected) in cases {
        let shown = reply.body.clone();
        server.script_tokens(reply);
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
                assert_no_secret(&format!("{err} {err:?}"));
            }
        }
    }
}

#[tokio::test]
async fn error_statuses_map_to_kinds_codes_and_cures() {
    let server = Server::start().await;
    let source = server.source();
    struct Case {
        reply: Reply,
        kind: ErrorKind,
        code: Option<&'static str>,
        cure: Option<&'static str>,
        message: Option<&'static str>,
        retry_after: Option<Duration>,
    }
    let case = |reply: Reply, kind, code| Case {
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
                Reply::errors(
                    400,
                    "InvalidInput",
                    "Application does not have access to one or more requested data elements: [buyerInfo]",
                ),
                ErrorKind::Permanent,
                Some("InvalidInput"),
            )
        },
        case(
            Reply::errors(400, "InvalidRequest", "Invalid method"),
            ErrorKind::Permanent,
            Some("InvalidRequest"),
        ),
        case(Reply::raw(404, ""), ErrorKind::Permanent, None),
        case(
            Reply::errors(415, "UnsupportedMediaType", "no"),
            ErrorKind::Permanent,
            Some("UnsupportedMediaType"),
        ),
        case(
            Reply::errors(
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
                Reply::errors(429, "QuotaExceeded", "slow down").header("retry-after", "7"),
                ErrorKind::Transient,
                Some("QuotaExceeded"),
            )
        },
        case(
            Reply::errors(500, "InternalFailure", "oops"),
            ErrorKind::Transient,
            Some("InternalFailure"),
        ),
        case(
            Reply::errors(503, "ServiceUnavailable", "later"),
            ErrorKind::Transient,
            Some("ServiceUnavailable"),
        ),
        case(
            Reply::raw(502, "<html>bad gateway</html>"),
            ErrorKind::Transient,
            None,
        ),
    ];
    for c in cases {
        let status = c.reply.status;
        server.script_tokens(c.reply);
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
        assert_no_secret(&format!("{err} {err:?}"));
    }
    // No error ever retried, and the LWA token served every call.
    assert_eq!(server.token_calls(), 9);
    assert_eq!(server.lwa_calls(), 1);
}

#[tokio::test]
async fn a_refused_lwa_token_is_replaced_and_the_call_retried_once() {
    let server = Server::start().await;
    let source = server.source();
    server.script_tokens(Reply::errors(
        403,
        "Unauthorized",
        "Access to requested resource is denied.",
    ));
    let issued = source.fetch(server.request()).await.unwrap();
    assert_eq!(issued.token().expose(), "Atz.sprdt|rdt-2");
    assert_eq!(server.lwa_calls(), 2);
    assert_eq!(server.access_tokens_sent(), ["Atza|lwa-1", "Atza|lwa-2"]);

    // The new LWA token is cached for the next fetch.
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 2);
    assert_eq!(server.access_tokens_sent()[2], "Atza|lwa-2");
}

#[tokio::test]
async fn a_second_refusal_is_permanent_after_exactly_one_retry() {
    let server = Server::start().await;
    let source = server.source();
    server.script_tokens(Reply::errors(401, "Unauthorized", "denied"));
    server.script_tokens(Reply::errors(403, "Unauthorized", "denied again"));
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert_eq!(err.status(), Some(http::StatusCode::FORBIDDEN));
    assert_eq!(err.code(), Some("Unauthorized"));
    assert_eq!(err.attempts(), 2);
    assert!(err.cure().unwrap().contains("LWA credentials"), "{err}");
    assert!(err.message().contains("denied again"));
    assert_eq!(server.token_calls(), 2);
    assert_eq!(server.lwa_calls(), 2);
    assert_eq!(server.access_tokens_sent(), ["Atza|lwa-1", "Atza|lwa-2"]);
}

#[tokio::test]
async fn a_refused_retry_fails_with_the_lwa_error_when_lwa_fails() {
    let server = Server::start().await;
    let source = server.source();
    source.fetch(server.request()).await.unwrap();
    server.script_tokens(Reply::errors(403, "Unauthorized", "denied"));
    server.script_lwa(Reply::json(
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
    let server = Server::start().await;
    *server.mock.lwa_delay.lock().unwrap() = Duration::from_millis(300);
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
    assert!(
        server
            .access_tokens_sent()
            .iter()
            .all(|t| t == "Atza|lwa-1")
    );
}

#[tokio::test]
async fn a_short_lived_lwa_token_is_refreshed_at_half_life() {
    let server = Server::start().await;
    let source = server.source();
    // A 4 s token with the default 5 min margin: refreshed after 2 s, not on every call.
    server.script_lwa(Reply::json(
        200,
        json!({"access_token": "Atza|lwa-short", "token_type": "bearer", "expires_in": 4}),
    ));
    source.fetch(server.request()).await.unwrap();
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 2);
    assert_eq!(
        server.access_tokens_sent(),
        ["Atza|lwa-short", "Atza|lwa-short", "Atza|lwa-2"]
    );
}

#[tokio::test]
async fn lwa_errors_are_mapped() {
    let server = Server::start().await;
    let source = server.source();
    let cases = [
        (
            Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "The request has an invalid grant parameter : refresh_token"}),
            ),
            ErrorKind::Permanent,
            Some("invalid_grant"),
            Some("the seller must authorize the application again to get a new refresh token"),
        ),
        (
            Reply::json(
                401,
                json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
            ),
            ErrorKind::Permanent,
            Some("invalid_client"),
            Some("check the client id and secret"),
        ),
        (
            Reply::json(400, json!({"error": "invalid_request"})),
            ErrorKind::Permanent,
            Some("invalid_request"),
            None,
        ),
        (Reply::raw(429, ""), ErrorKind::Transient, None, None),
        (Reply::raw(500, "<html>"), ErrorKind::Transient, None, None),
        (
            Reply::json(200, json!({"token_type": "bearer"})),
            ErrorKind::Transient,
            None,
            None,
        ),
    ];
    for (reply, kind, code, cure) in cases {
        let status = reply.status;
        server.script_lwa(reply);
        let err = source.fetch(server.request()).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert_eq!(err.code(), code, "{status}");
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        if let Some(cure) = cure {
            assert!(err.to_string().contains(cure), "{err}");
        }
        assert_no_secret(&format!("{err} {err:?}"));
    }
    // No Tokens API call without an LWA token.
    assert_eq!(server.token_calls(), 0);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let server = Server::start().await;
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
        .credentials(credentials())
        .lwa_url(format!("http://127.0.0.1:{port}/auth/o2/token"))
        .build()
        .unwrap();
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("LWA"), "{err}");
}

#[tokio::test]
async fn a_slow_server_hits_the_request_timeout() {
    let server = Server::start().await;
    let source = SpApiTokenSource::builder()
        .credentials(credentials())
        .lwa_url(server.lwa_url())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    // If the timeout did not work, this answer would be a success after 10 s.
    server.script_tokens(
        Reply::json(
            200,
            json!({"restrictedDataToken": "Atz.sprdt|rdt-slow", "expiresIn": 3600}),
        )
        .delayed(Duration::from_secs(10)),
    );
    let err = source.fetch(server.request()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("within 200 ms"), "{err}");

    // A slow LWA too.
    let slow_lwa = Server::start().await;
    slow_lwa.script_lwa(
        Reply::json(
            200,
            json!({"access_token": "Atza|lwa-slow", "expires_in": 3600}),
        )
        .delayed(Duration::from_secs(10)),
    );
    let source = SpApiTokenSource::builder()
        .credentials(credentials())
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
    let server = Server::start().await;
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
    let server = Server::start().await;
    let source = SpApiTokenSource::builder()
        .credentials(credentials())
        .seller(
            SellerId::new("S2"),
            LwaCredentials::new(CLIENT_ID, CLIENT_SECRET, "Atzr|second"),
        )
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
    source.add_seller(
        SellerId::new("S3"),
        LwaCredentials::new(CLIENT_ID, CLIENT_SECRET, "Atzr|third"),
    );
    source
        .fetch(server.request_for(SellerId::new("S3")))
        .await
        .unwrap();
    let refresh_tokens: Vec<String> = server
        .mock
        .lwa_forms
        .lock()
        .unwrap()
        .iter()
        .map(|(_, f)| f["refresh_token"].clone())
        .collect();
    assert_eq!(refresh_tokens, [REFRESH_TOKEN, "Atzr|second", "Atzr|third"]);
    assert_eq!(
        server.access_tokens_sent(),
        ["Atza|lwa-1", "Atza|lwa-2", "Atza|lwa-3"]
    );
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
    let server = Server::start().await;
    let source = server.source();
    let seller = SellerId::default();
    let t1 = source.lwa_access_token(&seller).await.unwrap();
    assert_eq!(t1.expose(), "Atza|lwa-1");
    assert_eq!(source.lwa_access_token(&seller).await.unwrap(), t1);
    // The RDT call shares the cache.
    source.fetch(server.request()).await.unwrap();
    assert_eq!(server.lwa_calls(), 1);
    // An unrestricted call refused it: the next one gets a new token.
    source.invalidate_lwa_access_token(&seller, &t1);
    assert_eq!(
        source.lwa_access_token(&seller).await.unwrap().expose(),
        "Atza|lwa-2"
    );
    let err = source
        .lwa_access_token(&SellerId::new("nobody"))
        .await
        .unwrap_err();
    assert!(err.message().contains("nobody"));
}

#[test]
fn build_errors_are_typed() {
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
    let server = Server::start().await;
    let source = server.source();
    source.fetch(server.request()).await.unwrap();
    let shown = format!("{source:?} {:?}", credentials());
    assert!(shown.contains(CLIENT_ID), "{shown}");
    assert!(shown.contains("127.0.0.1"), "{shown}");
    assert_no_secret(&shown);
    assert!(!shown.contains(CLIENT_SECRET) && !shown.contains(REFRESH_TOKEN));
    let issued = source.fetch(server.request()).await.unwrap();
    assert_no_secret(&format!("{issued:?}"));
    // The builder too.
    let builder = SpApiTokenSource::builder().credentials(credentials());
    assert_no_secret(&format!("{builder:?}"));
}

//! The SP-API emulator, driven over real loopback sockets with reqwest.
#![cfg(feature = "reqwest")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use spapi_rdt::catalog::DataElement;
use spapi_rdt_emulator::{CannedReply, Emulator, EmulatorConfig, Endpoint, Fault};

const TOKENS: &str = "/tokens/2021-03-01/restrictedDataToken";
const SANDBOX_TARGET: &str = "amzn1.sellerapps.app.target-application";

fn fresh_client() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

thread_local! {
    // Each test runs on a thread of its own, with a runtime of its own: one client per test.
    static CLIENT: Client = fresh_client();
}

fn client() -> Client {
    CLIENT.with(Client::clone)
}

/// Calls the LWA endpoint with `form`.
async fn lwa(em: &Emulator, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = client().post(em.lwa_url()).form(form).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// An access token for `seller`, through the LWA endpoint.
async fn access_token(em: &Emulator, seller: &str) -> String {
    let refresh = em.refresh_token(seller).unwrap();
    let (status, body) = lwa(
        em,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", em.client_id()),
            ("client_secret", em.client_secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn token_call(em: &Emulator, access: &str, body: &Value) -> Response {
    client()
        .post(em.url(TOKENS))
        .header("x-amz-access-token", access)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// An RDT for `resources` (`(method, path, data elements)`), asserting success.
async fn rdt(em: &Emulator, access: &str, resources: &[(&str, &str, &[&str])]) -> String {
    let list: Vec<Value> = resources
        .iter()
        .map(|(m, p, e)| json!({ "method": m, "path": p, "dataElements": e }))
        .collect();
    let response = token_call(em, access, &json!({ "restrictedResources": list })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["restrictedDataToken"].as_str().unwrap().to_owned()
}

async fn get(em: &Emulator, path: &str, token: &str) -> Response {
    client()
        .get(em.url(path))
        .header("x-amz-access-token", token)
        .send()
        .await
        .unwrap()
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn first_error(body: &Value) -> (&str, &str) {
    let e = &body["errors"][0];
    (
        e["code"].as_str().unwrap_or_default(),
        e["details"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn lwa_refresh_grant_issues_an_access_token() {
    let em = Emulator::start().await.unwrap();
    let refresh = em.refresh_token("default").unwrap();
    assert_eq!(refresh, "Atzr|emulator-default");
    let (status, body) = lwa(
        &em,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", em.client_id()),
            ("client_secret", em.client_secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("Atza|") && token.len() > 40, "{token}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    // Two grants give two different tokens.
    assert_ne!(access_token(&em, "default").await, token);
    let counters = em.counters();
    assert_eq!(counters.lwa_calls, 2);
    assert_eq!(counters.access_tokens_issued, 2);
}

/// A form, the status it gets, and the OAuth2 error code.
type LwaCase<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'static str);

#[tokio::test]
async fn lwa_errors_are_oauth2_errors() {
    let em = Emulator::start().await.unwrap();
    let (id, secret) = (em.client_id().to_owned(), em.client_secret().to_owned());
    let refresh = em.refresh_token("default").unwrap();
    let cases: Vec<LwaCase<'_>> = vec![
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "Atzr|nobody"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &id),
                ("client_secret", "wrong"),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "someone-else"),
                ("client_secret", &secret),
            ],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![
                ("refresh_token", &refresh),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (form, status, error) in cases {
        let (got, body) = lwa(&em, &form).await;
        assert_eq!(got, status, "{form:?}: {body}");
        assert_eq!(body["error"], error, "{form:?}");
        assert!(body["error_description"].is_string());
        assert!(body.get("access_token").is_none());
    }
    // A JSON body is not a form.
    let response = client()
        .post(em.lwa_url())
        .json(&json!({ "grant_type": "refresh_token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(em.counters().access_tokens_issued, 0);
}

#[tokio::test]
async fn reauthorization_voids_the_old_refresh_token() {
    let em = Emulator::start().await.unwrap();
    let old = em.refresh_token("default").unwrap();
    em.add_seller("default", "Atzr|reauthorized");
    assert_eq!(em.refresh_token("default").unwrap(), "Atzr|reauthorized");
    let (status, body) = lwa(
        &em,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &old),
            ("client_id", em.client_id()),
            ("client_secret", em.client_secret()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    access_token(&em, "default").await;
}

#[tokio::test]
async fn grantless_tokens_never_reach_restricted_data() {
    let em = Emulator::start().await.unwrap();
    let (status, body) = lwa(
        &em,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            ("client_id", em.client_id()),
            ("client_secret", em.client_secret()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grantless = body["access_token"].as_str().unwrap().to_owned();
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    let response = token_call(&em, &grantless, &request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_error(&body).0, "Unauthorized");
    for path in [
        "/orders/v0/orders/1",
        "/mfn/v0/shipments/1",
        "/sellers/v1/marketplaceParticipations",
    ] {
        assert_eq!(
            get(&em, path, &grantless).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let (status, body) = lwa(
        &em,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::everything"),
            ("client_id", em.client_id()),
            ("client_secret", em.client_secret()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn tokens_api_issues_an_rdt() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({
        "restrictedResources": [{
            "method": "GET",
            "path": "/orders/v0/orders/{orderId}",
            "dataElements": ["buyerInfo", "shippingAddress"]
        }]
    });
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-amzn-RateLimit-Limit"), Some("1.0"));
    assert_eq!(
        header(&response, "x-amzn-RequestId").map(str::len),
        Some(36)
    );
    assert_eq!(header(&response, "x-emulator-seller"), Some("default"));
    let body: Value = response.json().await.unwrap();
    let token = body["restrictedDataToken"].as_str().unwrap();
    assert!(
        token.starts_with("Atz.sprdt|") && token.len() > 40,
        "{token}"
    );
    assert_eq!(body["expiresIn"], 3600);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let counters = em.counters();
    assert_eq!(counters.token_calls, 1);
    assert_eq!(counters.rdts_issued, 1);
    assert_eq!(counters.token_calls_for("default"), 1);
}

#[tokio::test]
async fn tokens_api_can_wrap_its_answer_in_a_payload() {
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .wrap_in_payload(true)
            .rdt_lifetime(Duration::from_secs(900)),
    )
    .await
    .unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    let body: Value = token_call(&em, &access, &request)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        body["payload"]["restrictedDataToken"]
            .as_str()
            .unwrap()
            .starts_with("Atz.sprdt|")
    );
    assert_eq!(body["payload"]["expiresIn"], 900);
    assert!(body.get("restrictedDataToken").is_none());
}

/// Amazon's Tokens model, from the vendored models.
fn tokens_model() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spapi-models/tokens_2021-03-01.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn sandbox_fixtures_of_the_tokens_model_replay() {
    let model = tokens_model();
    let responses = model["paths"][TOKENS]["post"]["responses"]
        .as_object()
        .unwrap();
    let em = Emulator::start_with(EmulatorConfig::default().target_application(SANDBOX_TARGET))
        .await
        .unwrap();
    let access = access_token(&em, "default").await;
    let mut replayed = 0;
    for (status, response) in responses {
        let Some(fixtures) = response["x-amzn-api-sandbox"]["static"].as_array() else {
            continue;
        };
        let status: u16 = status.parse().unwrap();
        for fixture in fixtures {
            let request = &fixture["request"]["parameters"]["body"]["value"];
            let expected = &fixture["response"];
            let got = token_call(&em, &access, request).await;
            assert_eq!(got.status().as_u16(), status, "{request}");
            let body: Value = got.json().await.unwrap();
            if status == 200 {
                let token = body["restrictedDataToken"].as_str().unwrap();
                let want = expected["restrictedDataToken"].as_str().unwrap();
                assert_eq!(token.split('|').next(), want.split('|').next());
                assert_eq!(body["expiresIn"], expected["expiresIn"]);
            } else {
                let errors = body["errors"].as_array().unwrap();
                let want = expected["errors"].as_array().unwrap();
                assert_eq!(errors.len(), want.len());
                for (e, w) in errors.iter().zip(want) {
                    assert_eq!(e["code"], w["code"]);
                    assert!(e["message"].is_string());
                }
            }
            replayed += 1;
        }
    }
    assert_eq!(
        replayed, 3,
        "the model has two 200 fixtures and one 400 fixture"
    );
}

#[tokio::test]
async fn tokens_api_validates_requests() {
    let em = Emulator::start_with(EmulatorConfig::default().token_quota(100.0, 100))
        .await
        .unwrap();
    let access = access_token(&em, "default").await;
    let resources = |n: usize| -> Value {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({ "method": "GET", "path": format!("/orders/v0/orders/{i}/address") }))
            .collect();
        json!({ "restrictedResources": list })
    };
    let bad: Vec<(Value, &str)> = vec![
        (resources(51), "50"),
        (resources(0), "at least one"),
        (json!({}), "restrictedResources"),
        (json!([]), "object"),
        (
            json!({ "restrictedResources": [{ "method": "PATCH", "path": "/orders/v0/orders" }] }),
            "PATCH",
        ),
        (
            json!({ "restrictedResources": [{ "method": "get", "path": "/orders/v0/orders" }] }),
            "get",
        ),
        (
            json!({ "restrictedResources": [{ "method": "GET", "path": "orders/v0/orders" }] }),
            "path",
        ),
        (
            json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders", "dataElements": ["buyerinfo"] }] }),
            "buyerinfo",
        ),
        (
            json!({ "targetApplication": "amzn1.sellerapps.app.stranger", "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders" }] }),
            "amzn1.sellerapps.app.stranger",
        ),
    ];
    for (body, needle) in bad {
        let response = token_call(&em, &access, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(header(&response, "x-amzn-RateLimit-Limit").is_some());
        let answer: Value = response.json().await.unwrap();
        assert_eq!(first_error(&answer).0, "InvalidInput", "{body}");
        assert!(answer.to_string().contains(needle), "{needle} in {answer}");
    }
    assert_eq!(
        token_call(&em, &access, &resources(50)).await.status(),
        StatusCode::OK
    );

    // A body that is not JSON at all.
    let response = client()
        .post(em.url(TOKENS))
        .header("x-amz-access-token", &access)
        .header("content-type", "application/json")
        .body("{\"restrictedResources\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(first_error(&answer).0, "InvalidInput");

    // Authentication.
    let no_token = client()
        .post(em.url(TOKENS))
        .json(&resources(1))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let answer: Value = no_token.json().await.unwrap();
    assert_eq!(first_error(&answer).0, "MissingAuthenticationToken");
    let unknown = token_call(&em, "Atza|made-up", &resources(1)).await;
    assert_eq!(unknown.status(), StatusCode::FORBIDDEN);
    assert!(header(&unknown, "x-amzn-RateLimit-Limit").is_none());
    let answer: Value = unknown.json().await.unwrap();
    assert_eq!(first_error(&answer).0, "Unauthorized");
    // An RDT is not an LWA token.
    let rdt = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    assert_eq!(
        token_call(&em, &rdt, &resources(1)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn denied_roles_fail_the_whole_request_naming_the_offender() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    em.deny_resource(http::Method::GET, "/mfn/v0/shipments/{shipmentId}");
    em.deny_data_element(DataElement::BuyerTaxInformation);
    let request = json!({ "restrictedResources": [
        { "method": "GET", "path": "/orders/v0/orders/{orderId}/address" },
        { "method": "GET", "path": "/mfn/v0/shipments/FBA123" },
    ]});
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        first_error(&body),
        ("InvalidInput", "GET /mfn/v0/shipments/FBA123")
    );

    // The generic path matches the denied template too; another method does not.
    let generic = json!({ "restrictedResources": [{ "method": "GET", "path": "/mfn/v0/shipments/{shipmentId}" }] });
    assert_eq!(
        token_call(&em, &access, &generic).await.status(),
        StatusCode::BAD_REQUEST
    );
    let delete = json!({ "restrictedResources": [{ "method": "DELETE", "path": "/mfn/v0/shipments/{shipmentId}" }] });
    assert_eq!(
        token_call(&em, &access, &delete).await.status(),
        StatusCode::OK
    );

    let elements = json!({ "restrictedResources": [{
        "method": "GET",
        "path": "/orders/v0/orders/{orderId}",
        "dataElements": ["buyerInfo", "buyerTaxInformation"]
    }]});
    let response = token_call(&em, &access, &elements).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_error(&body), ("InvalidInput", "buyerTaxInformation"));
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("buyerTaxInformation")
    );

    let usual = json!({ "restrictedResources": [{
        "method": "GET",
        "path": "/orders/v0/orders/{orderId}",
        "dataElements": ["buyerInfo", "shippingAddress"]
    }]});
    assert_eq!(
        token_call(&em, &access, &usual).await.status(),
        StatusCode::OK
    );
    em.clear_denials();
    assert_eq!(
        token_call(&em, &access, &elements).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_eleventh_rapid_token_call_is_throttled() {
    let em = Emulator::start_with(EmulatorConfig::default().seller("other", "Atzr|other"))
        .await
        .unwrap();
    let access = access_token(&em, "default").await;
    let other = access_token(&em, "other").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    let started = Instant::now();
    let mut successes = 0;
    let throttled = loop {
        let response = token_call(&em, &access, &request).await;
        if response.status() == StatusCode::OK {
            assert!(header(&response, "x-amzn-RateLimit-Limit").is_some());
            successes += 1;
            assert!(successes < 100, "never throttled");
        } else {
            break response;
        }
    };
    // Default quota: burst 10, refilled at 1/s, so 10 calls pass plus one per second elapsed.
    let elapsed = started.elapsed().as_secs() as usize;
    assert!(
        (10..=10 + elapsed).contains(&successes),
        "{successes} in {elapsed}s"
    );
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&throttled, "x-amzn-RateLimit-Limit").is_none());
    assert!(header(&throttled, "x-amzn-RequestId").is_some());
    let body: Value = throttled.json().await.unwrap();
    assert_eq!(first_error(&body).0, "QuotaExceeded");
    // The limit is per seller.
    assert_eq!(
        token_call(&em, &other, &request).await.status(),
        StatusCode::OK
    );
    let counters = em.counters();
    assert_eq!(counters.throttled, 1);
    assert_eq!(counters.token_calls_for("default"), successes as u64 + 1);
    assert_eq!(counters.token_calls_for("other"), 1);
    assert_eq!(counters.rdts_issued, successes as u64 + 1);
}

#[tokio::test]
async fn a_bucket_without_refill_allows_exactly_its_burst() {
    let em = Emulator::start_with(EmulatorConfig::default().token_quota(0.0, 3))
        .await
        .unwrap();
    let access = access_token(&em, "default").await;
    let request =
        json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders" }] });
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(token_call(&em, &access, &request).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn orders_pii_follows_the_data_elements_of_the_token() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let both = rdt(
        &em,
        &access,
        &[(
            "GET",
            "/orders/v0/orders/{orderId}",
            &["buyerInfo", "shippingAddress"],
        )],
    )
    .await;
    let response = get(&em, "/orders/v0/orders/902-1-2", &both).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-emulator-pii"), Some("served"));
    assert_eq!(header(&response, "x-emulator-seller"), Some("default"));
    let body: Value = response.json().await.unwrap();
    let order = &body["payload"];
    assert_eq!(order["AmazonOrderId"], "902-1-2");
    assert!(order["BuyerInfo"]["BuyerName"].is_string());
    assert!(order["ShippingAddress"]["AddressLine1"].is_string());
    assert!(order.get("BuyerTaxInformation").is_none());

    let address_only = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}", &["shippingAddress"])],
    )
    .await;
    let body: Value = get(&em, "/orders/v0/orders/9", &address_only)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["payload"].get("BuyerInfo").is_none());
    assert!(body["payload"]["ShippingAddress"].is_object());

    // A token without data elements silently returns no PII.
    let none = rdt(&em, &access, &[("GET", "/orders/v0/orders/{orderId}", &[])]).await;
    let response = get(&em, "/orders/v0/orders/9", &none).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-emulator-pii"), Some("withheld"));
    let body: Value = response.json().await.unwrap();
    assert!(body["payload"].get("ShippingAddress").is_none());

    // getOrders and getOrderItems.
    let list = rdt(
        &em,
        &access,
        &[
            ("GET", "/orders/v0/orders", &["buyerInfo"]),
            (
                "GET",
                "/orders/v0/orders/{orderId}/orderItems",
                &["buyerInfo"],
            ),
        ],
    )
    .await;
    let body: Value = get(&em, "/orders/v0/orders?CreatedAfter=2026-01-01", &list)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["payload"]["Orders"][0]["BuyerInfo"].is_object());
    let body: Value = get(&em, "/orders/v0/orders/5/orderItems", &list)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["payload"]["OrderItems"][0]["BuyerInfo"].is_object());
    // The same token does not cover getOrder.
    assert_eq!(
        get(&em, "/orders/v0/orders/5", &list).await.status(),
        StatusCode::FORBIDDEN
    );
    let counters = em.counters();
    assert_eq!((counters.pii_served, counters.pii_withheld), (4, 1));
    assert_eq!(counters.restricted_forbidden, 1);
}

#[tokio::test]
async fn lwa_tokens_get_orders_without_pii_and_nothing_else_restricted() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    for path in [
        "/orders/v0/orders/1",
        "/orders/v0/orders/1/address",
        "/orders/v0/orders",
    ] {
        let response = get(&em, path, &access).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "x-emulator-pii"), Some("withheld"));
        let body: Value = response.json().await.unwrap();
        let text = body.to_string();
        assert!(
            !text.contains("ShippingAddress") && !text.contains("BuyerInfo"),
            "{text}"
        );
    }
    for path in [
        "/mfn/v0/shipments/1",
        "/reports/2021-06-30/documents/doc-1",
        "/shipping/v1/shipments/1",
    ] {
        let response = get(&em, path, &access).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(first_error(&body).0, "Unauthorized");
    }
    let counters = em.counters();
    assert_eq!(counters.restricted_calls, 6);
    assert_eq!(counters.restricted_forbidden, 3);
    assert_eq!((counters.pii_served, counters.pii_withheld), (0, 3));
}

#[tokio::test]
async fn unrestricted_operations_take_lwa_tokens_only() {
    let em = Emulator::start_with(EmulatorConfig::default().seller("seller-b", "Atzr|b"))
        .await
        .unwrap();
    let b = access_token(&em, "seller-b").await;
    for path in [
        "/sellers/v1/marketplaceParticipations",
        "/orders/2026-01-01/orders/902-1",
        "/reports/2021-06-30/reports/7",
    ] {
        let response = get(&em, path, &b).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "x-emulator-seller"), Some("seller-b"));
        assert!(header(&response, "x-emulator-pii").is_none());
    }
    let direct = em.issue_lwa_token("default");
    let response = get(&em, "/orders/2026-01-01/orders/902-1", &direct).await;
    assert_eq!(header(&response, "x-emulator-seller"), Some("default"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["order"]["orderId"], "902-1");

    let rdt = rdt(
        &em,
        &b,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    let response = get(&em, "/sellers/v1/marketplaceParticipations", &rdt).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client()
        .get(em.url("/sellers/v1/marketplaceParticipations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(em.counters().unrestricted_calls, 6);
}

#[tokio::test]
async fn generic_and_specific_paths_cover_what_amazon_covers() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;

    let generic = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    for id in ["111-1111111-1111111", "222-2222222-2222222"] {
        let response = get(&em, &format!("/orders/v0/orders/{id}/address"), &generic).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-emulator-pii"), Some("served"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["payload"]["AmazonOrderId"], id);
        assert!(body["payload"]["ShippingAddress"].is_object());
    }
    // Another operation, or the same path with another method, is not covered.
    assert_eq!(
        get(&em, "/orders/v0/orders/1/buyerInfo", &generic)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let specific = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/123-4/address", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/123-4/address", &specific)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&em, "/orders/v0/orders/999/address", &specific)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // getReportDocument: the generic template yields a token that covers no document.
    let useless = rdt(
        &em,
        &access,
        &[(
            "GET",
            "/reports/2021-06-30/documents/{reportDocumentId}",
            &[],
        )],
    )
    .await;
    let doc = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.7";
    assert_eq!(
        get(&em, doc, &useless).await.status(),
        StatusCode::FORBIDDEN
    );
    let report: Value = get(&em, "/reports/2021-06-30/reports/7", &access)
        .await
        .json()
        .await
        .unwrap();
    let doc_id = report["reportDocumentId"].as_str().unwrap();
    let doc_path = format!("/reports/2021-06-30/documents/{doc_id}");
    assert_eq!(doc_path, doc);
    let exact = rdt(&em, &access, &[("GET", &doc_path, &[])]).await;
    let response = get(&em, doc, &exact).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-emulator-pii"), Some("served"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reportDocumentId"], doc_id);
    assert_eq!(
        get(&em, "/reports/2021-06-30/documents/other", &exact)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Unknown paths are accepted and yield a token that covers nothing.
    let nothing = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/adress", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &nothing)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let slash = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address/", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &slash)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Other APIs and methods.
    let mfn = rdt(
        &em,
        &access,
        &[("DELETE", "/mfn/v0/shipments/{shipmentId}", &[])],
    )
    .await;
    let response = client()
        .delete(em.url("/mfn/v0/shipments/FBA1"))
        .header("x-amz-access-token", &mfn)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["payload"]["operation"], "cancelShipment");
    assert!(body["payload"]["pii"].is_object());
    assert_eq!(
        get(&em, "/mfn/v0/shipments/FBA1", &mfn).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn stale_tokens_are_refused() {
    // Lifetimes long enough for the two token calls and a first use on a busy machine (checked
    // below, so a slow set-up fails loudly instead of passing for the wrong reason); the wait
    // starts after both tokens were issued, so it always outlasts them.
    const LIFE: Duration = Duration::from_secs(2);
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .rdt_lifetime(LIFE)
            .lwa_lifetime(LIFE),
    )
    .await
    .unwrap();
    let access = access_token(&em, "default").await;
    let short = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &short)
            .await
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(LIFE + Duration::from_millis(100)).await;
    let response = get(&em, "/orders/v0/orders/1/address", &short).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_error(&body).0, "Unauthorized");
    let request =
        json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders" }] });
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&em, "/sellers/v1/marketplaceParticipations", &access)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn revoked_tokens_are_refused() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let token = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &token)
            .await
            .status(),
        StatusCode::OK
    );
    em.revoke_rdts();
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &token)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let fresh = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &fresh)
            .await
            .status(),
        StatusCode::OK
    );
    em.revoke_access_tokens();
    let request =
        json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders" }] });
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &fresh)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn delegated_tokens_record_their_target_application() {
    let em = Emulator::start().await.unwrap();
    em.register_target_application("amzn1.sellerapps.app.delegatee");
    let access = access_token(&em, "default").await;
    let request = json!({
        "targetApplication": "amzn1.sellerapps.app.delegatee",
        "restrictedResources": [{ "method": "GET", "path": "/mfn/v0/shipments/{shipmentId}" }]
    });
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["restrictedDataToken"].as_str().unwrap();
    let response = get(&em, "/mfn/v0/shipments/FBA9", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "x-emulator-target-application"),
        Some("amzn1.sellerapps.app.delegatee")
    );
}

#[tokio::test]
async fn injected_statuses_have_amazon_shaped_bodies() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });

    em.inject(
        Endpoint::Tokens,
        Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
        1,
    );
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_error(&body).0, "InternalFailure");
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::OK,
        "used up"
    );

    em.inject(
        Endpoint::Tokens,
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
        2,
    );
    for _ in 0..2 {
        let response = token_call(&em, &access, &request).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&response, "x-amzn-RateLimit-Limit").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(first_error(&body).0, "QuotaExceeded");
    }

    em.inject(
        Endpoint::Lwa,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        1,
    );
    let (status, body) = lwa(&em, &[("grant_type", "refresh_token")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");

    let token = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    em.inject(
        Endpoint::Restricted,
        Fault::Status(StatusCode::FORBIDDEN),
        1,
    );
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &token)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &token)
            .await
            .status(),
        StatusCode::OK
    );

    em.inject(
        Endpoint::Unrestricted,
        Fault::Status(StatusCode::NOT_FOUND),
        1,
    );
    let response = get(&em, "/sellers/v1/marketplaceParticipations", &access).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // `Any` takes whatever comes next.
    em.inject(Endpoint::Any, Fault::Status(StatusCode::BAD_GATEWAY), 2);
    assert_eq!(
        get(&em, "/sellers/v1/marketplaceParticipations", &access)
            .await
            .status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        token_call(&em, &access, &request).await.status(),
        StatusCode::OK
    );

    let counters = em.counters();
    assert_eq!(counters.faults_injected, 8);
    assert_eq!(counters.throttled, 2);
    assert_eq!(counters.restricted_forbidden, 1);
}

#[tokio::test]
async fn injected_delays_are_waited_out() {
    let em = Emulator::start().await.unwrap();
    em.inject(Endpoint::Lwa, Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let access = access_token(&em, "default").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A client that does not wait that long gives up.
    em.inject(Endpoint::Tokens, Fault::Delay(Duration::from_secs(5)), 1);
    let impatient = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let request =
        json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders" }] });
    let err = impatient
        .post(em.url(TOKENS))
        .header("x-amz-access-token", &access)
        .json(&request)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // A delay combines with one other fault.
    em.inject(
        Endpoint::Tokens,
        Fault::Delay(Duration::from_millis(200)),
        1,
    );
    em.inject(
        Endpoint::Tokens,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        1,
    );
    let started = Instant::now();
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn injected_bad_bodies_reach_the_client() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });

    em.inject(Endpoint::Tokens, Fault::MalformedBody, 1);
    let response = token_call(&em, &access, &request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert!(response.json::<Value>().await.is_err());

    em.inject(Endpoint::Tokens, Fault::MissingFields, 1);
    let body: Value = token_call(&em, &access, &request)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("restrictedDataToken").is_none());
    assert!(body.is_object());

    em.inject(Endpoint::Lwa, Fault::MissingFields, 1);
    let refresh = em.refresh_token("default").unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", em.client_id()),
        ("client_secret", em.client_secret()),
    ];
    let (status, body) = lwa(&em, &form).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("access_token").is_none());
    assert_eq!(body["token_type"], "bearer");

    em.inject(Endpoint::Lwa, Fault::MalformedBody, 1);
    let response = client()
        .post(em.lwa_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(response.json::<Value>().await.is_err());

    let token = rdt(
        &em,
        &access,
        &[("GET", "/orders/v0/orders/{orderId}/address", &[])],
    )
    .await;
    em.inject(Endpoint::Restricted, Fault::DropConnection, 1);
    match client()
        .get(em.url("/orders/v0/orders/1/address"))
        .header("x-amz-access-token", &token)
        .send()
        .await
    {
        Err(_) => {}
        Ok(response) => assert!(
            response.bytes().await.is_err(),
            "the body must be cut short"
        ),
    }
    em.inject(Endpoint::Tokens, Fault::DropConnection, 1);
    match token_call_raw(&em, &access, &request).await {
        Err(_) => {}
        Ok(response) => assert!(response.json::<Value>().await.is_err()),
    }
    // The server carries on.
    assert_eq!(
        get(&em, "/orders/v0/orders/1/address", &token)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(em.counters().faults_injected, 6);
}

#[tokio::test]
async fn canned_replies_are_sent_as_they_are_in_order() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    em.inject(
        Endpoint::Tokens,
        Fault::Reply(
            CannedReply::json(
                http::StatusCode::TOO_MANY_REQUESTS,
                &json!({"errors": [{"code": "QuotaExceeded", "message": "first"}]}),
            )
            .header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("7"),
            ),
        ),
        1,
    );
    em.inject(
        Endpoint::Tokens,
        Fault::Reply(CannedReply::new(
            http::StatusCode::OK,
            "<html>second</html>",
        )),
        1,
    );
    let first = token_call(&em, &access, &request).await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&first, "retry-after"), Some("7"));
    assert_eq!(
        first.json::<Value>().await.unwrap()["errors"][0]["message"],
        "first"
    );
    let second = token_call(&em, &access, &request).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, "content-type"), Some("application/json"));
    assert_eq!(second.text().await.unwrap(), "<html>second</html>");
    // Used up: the Tokens API answers for itself again.
    let third: Value = token_call(&em, &access, &request)
        .await
        .json()
        .await
        .unwrap();
    assert!(third["restrictedDataToken"].is_string(), "{third}");
    let counters = em.counters();
    assert_eq!(
        (
            counters.throttled,
            counters.faults_injected,
            counters.rdts_issued
        ),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn the_request_log_tells_what_was_sent_within_a_bound() {
    let em = Emulator::start().await.unwrap();
    let access = access_token(&em, "default").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    token_call(&em, &access, &request).await;
    get(&em, "/sellers/v1/marketplaceParticipations?x=1", &access).await;

    let lwa = em.requests(Endpoint::Lwa);
    assert_eq!(lwa.len(), 1);
    assert_eq!(lwa[0].method(), http::Method::POST);
    assert_eq!(
        lwa[0].form_field("grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(
        lwa[0].form_field("client_id").as_deref(),
        Some(em.client_id())
    );
    assert_eq!(lwa[0].form_field("nothing"), None);
    let tokens = em.requests(Endpoint::Tokens);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].json(), Some(request));
    assert_eq!(tokens[0].access_token(), Some(access.as_str()));
    assert_eq!(tokens[0].uri().path(), TOKENS);
    let unrestricted = em.requests(Endpoint::Unrestricted);
    assert_eq!(unrestricted[0].uri().query(), Some("x=1"));
    assert!(unrestricted[0].body().is_empty());
    assert_eq!(em.requests(Endpoint::Any).len(), 3);
    assert!(em.requests(Endpoint::Restricted).is_empty());
    // Its Debug names no token or secret.
    let shown = format!("{:?}", em.requests(Endpoint::Any));
    assert!(
        !shown.contains(&access) && !shown.contains(em.client_secret()),
        "{shown}"
    );

    // However many requests come, the log keeps the last ones only.
    let url = em.url("/nowhere");
    for _ in 0..Emulator::REQUEST_LOG_CAPACITY {
        client().get(&url).send().await.unwrap();
    }
    let all = em.requests(Endpoint::Any);
    assert_eq!(all.len(), Emulator::REQUEST_LOG_CAPACITY);
    assert!(all.iter().all(|r| r.uri().path() == "/nowhere"));
}

async fn token_call_raw(em: &Emulator, access: &str, body: &Value) -> reqwest::Result<Response> {
    client()
        .post(em.url(TOKENS))
        .header("x-amz-access-token", access)
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn injected_expires_in_values_are_reported_and_tokens_still_work() {
    let em = Emulator::start().await.unwrap();
    let refresh = em.refresh_token("default").unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", em.client_id()),
        ("client_secret", em.client_secret()),
    ];
    em.inject(Endpoint::Lwa, Fault::ExpiresIn(None), 1);
    let (status, body) = lwa(&em, &form).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("expires_in").is_none());
    let access = body["access_token"].as_str().unwrap().to_owned();

    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}/address" }] });
    for value in [Some(0), Some(-30), Some(i64::MAX), None] {
        // `Any` waits for a token endpoint: the restricted call below does not use it up.
        em.inject(Endpoint::Any, Fault::ExpiresIn(value), 1);
        let response = token_call(&em, &access, &request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        match value {
            Some(v) => assert_eq!(body["expiresIn"], json!(v)),
            None => assert!(body.get("expiresIn").is_none()),
        }
        let token = body["restrictedDataToken"].as_str().unwrap();
        assert_eq!(
            get(&em, "/orders/v0/orders/1/address", token)
                .await
                .status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn counters_add_up() {
    let em = Emulator::start_with(
        EmulatorConfig::default()
            .seller("b", "Atzr|b")
            .token_quota(0.0, 2),
    )
    .await
    .unwrap();
    let a = access_token(&em, "default").await;
    let b = access_token(&em, "b").await;
    let request = json!({ "restrictedResources": [{ "method": "GET", "path": "/orders/v0/orders/{orderId}", "dataElements": ["shippingAddress"] }] });
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let response = token_call(&em, &a, &request).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            tokens.push(body["restrictedDataToken"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(tokens.len(), 2);
    assert_eq!(token_call(&em, &b, &request).await.status(), StatusCode::OK);
    assert_eq!(
        token_call(&em, "Atza|unknown", &request).await.status(),
        StatusCode::FORBIDDEN
    );
    em.inject(Endpoint::Tokens, Fault::MalformedBody, 1);
    token_call(&em, &b, &request).await;

    get(&em, "/orders/v0/orders/1", &tokens[0]).await; // served
    get(&em, "/orders/v0/orders/1", &a).await; // withheld
    get(&em, "/mfn/v0/shipments/1", &a).await; // 403
    get(&em, "/mfn/v0/shipments/1", &tokens[1]).await; // 403: not covered
    get(&em, "/sellers/v1/marketplaceParticipations", &b).await;
    get(&em, "/no/such/path", &b).await;

    let c = em.counters();
    assert_eq!(c.lwa_calls, 2);
    assert_eq!(c.access_tokens_issued, 2);
    assert_eq!(c.token_calls, 6);
    assert_eq!(c.token_calls_for("default"), 3);
    assert_eq!(c.token_calls_for("b"), 2);
    assert_eq!(
        c.token_calls_by_seller.values().sum::<u64>(),
        5,
        "the unknown token names no seller"
    );
    assert_eq!(c.rdts_issued, 3);
    assert_eq!(c.throttled, 1);
    assert_eq!(c.restricted_calls, 4);
    assert_eq!(c.pii_served, 1);
    assert_eq!(c.pii_withheld, 1);
    assert_eq!(c.restricted_forbidden, 2);
    assert_eq!(
        c.pii_served + c.pii_withheld + c.restricted_forbidden,
        c.restricted_calls
    );
    assert_eq!(c.unrestricted_calls, 1);
    assert_eq!(c.faults_injected, 1);
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let em =
        Emulator::start_with(EmulatorConfig::default().client("client-x", "very-secret-value"))
            .await
            .unwrap();
    let text = format!("{em:?} {:?}", em.config());
    assert!(!text.contains("very-secret-value"), "{text}");
    assert!(!text.contains("Atzr|emulator-default"), "{text}");
    assert!(text.contains("client-x"));
}

#[tokio::test]
async fn dropping_the_emulator_stops_the_server() {
    let em = Emulator::start().await.unwrap();
    let url = em.url("/sellers/v1/marketplaceParticipations");
    assert!(client().get(&url).send().await.is_ok());
    drop(em);
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if fresh_client().get(&url).send().await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "the server still answers after the emulator was dropped"
    );
}

//! The emulator's usage plans over HTTP: buckets, refills on paused time, the time scale, the
//! `x-amzn-RateLimit-Limit` header, overrides, and the settings it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use spapi_rdt::catalog::{UsagePlan, UsagePlans};
use spapi_rdt_emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn rate(&self) -> Option<&str> {
        self.header("x-amzn-RateLimit-Limit")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// One HTTP/1.1 request on a connection of its own: no client timers, so paused time moves only
/// when a test advances it.
async fn send(
    em: &Emulator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, String)>,
) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        em.local_addr()
    );
    if let Some(token) = token {
        request.push_str(&format!("x-amz-access-token: {token}\r\n"));
    }
    let body = match body {
        Some((content_type, body)) => {
            request.push_str(&format!("content-type: {content_type}\r\n"));
            body
        }
        None => String::new(),
    };
    request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    let mut stream = TcpStream::connect(em.local_addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: body.to_owned(),
    }
}

async fn get(em: &Emulator, path: &str, token: &str) -> Answer {
    send(em, "GET", path, Some(token), None).await
}

/// A Restricted Data Token for `resources` (`(method, path)`), asked for with `access`.
async fn token_call(em: &Emulator, access: &str, body: &Value) -> Answer {
    let body = Some(("application/json", body.to_string()));
    send(
        em,
        "POST",
        "/tokens/2021-03-01/restrictedDataToken",
        Some(access),
        body,
    )
    .await
}

async fn rdt(em: &Emulator, access: &str, body: Value) -> String {
    let answer = token_call(em, access, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()["restrictedDataToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A grantless LWA token, over HTTP as a client would get one.
async fn grantless(em: &Emulator) -> String {
    let form = format!(
        "grant_type=client_credentials&scope=sellingpartnerapi%3A%3Anotifications&client_id={}&client_secret={}",
        em.client_id(),
        em.client_secret()
    );
    let body = Some(("application/x-www-form-urlencoded", form));
    let answer = send(em, "POST", "/auth/o2/token", None, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.rate(), None, "LWA has no usage plan");
    answer.json()["access_token"].as_str().unwrap().to_owned()
}

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start_with(config.usage_plans(true))
        .await
        .unwrap()
}

/// The time Amazon's bucket takes to refill one request at `rate`, as the emulator counts it:
/// 1 / rate seconds, rounded up to the nanosecond.
fn refill(rate: f64) -> Duration {
    Duration::from_nanos((1e9 / rate).ceil() as u64)
}

const PARTICIPATIONS: &str = "/sellers/v1/marketplaceParticipations";
const PARTICIPATIONS_OP: &str = "Sellers v1 getMarketplaceParticipations";
const NANO: Duration = Duration::from_nanos(1);

#[tokio::test(start_paused = true)]
async fn a_burst_then_429_then_one_more_per_refill() {
    let em = start(EmulatorConfig::default()).await;
    let access = em.issue_lwa_token("default");
    // getMarketplaceParticipations: 0.016 a second, burst 15.
    for i in 0..15 {
        let answer = get(&em, PARTICIPATIONS, &access).await;
        assert_eq!(answer.status, StatusCode::OK, "call {i}");
        assert_eq!(answer.rate(), Some("0.016"));
    }
    let throttled = get(&em, PARTICIPATIONS, &access).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.rate(), None);
    assert_eq!(throttled.header("retry-after"), None);
    assert!(throttled.header("x-amzn-RequestId").is_some());
    assert_eq!(
        throttled.json(),
        json!({"errors": [{
            "code": "QuotaExceeded",
            "message": "You exceeded your quota for the requested resource.",
            "details": "",
        }]})
    );

    // One request comes back after 1 / 0.016 = 62.5 s, not a nanosecond sooner.
    assert_eq!(refill(0.016), Duration::from_millis(62_500));
    tokio::time::advance(refill(0.016) - NANO).await;
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(NANO).await;
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Three refills' time brings three back.
    tokio::time::advance(refill(0.016) * 3).await;
    for _ in 0..3 {
        assert_eq!(
            get(&em, PARTICIPATIONS, &access).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let counters = em.counters();
    assert_eq!(counters.quota_exceeded, 4);
    assert_eq!(counters.throttled, 4);
    assert_eq!(counters.admitted(PARTICIPATIONS_OP), 19);
    assert_eq!(counters.quota_exceeded_for(PARTICIPATIONS_OP), 4);
    assert_eq!(counters.unrestricted_calls, 23);
}

#[tokio::test(start_paused = true)]
async fn a_model_rate_that_is_no_whole_number_of_nanoseconds_refills_exactly() {
    let em = start(EmulatorConfig::default()).await;
    let access = em.issue_lwa_token("default");
    let token = rdt(
        &em,
        &access,
        json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}]}),
    )
    .await;
    // getOrders: 0.0167 a second, burst 20.
    for _ in 0..20 {
        let answer = get(&em, "/orders/v0/orders", &token).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.rate(), Some("0.0167"));
    }
    assert_eq!(
        get(&em, "/orders/v0/orders", &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(refill(0.0167), Duration::from_nanos(59_880_239_521));
    tokio::time::advance(refill(0.0167) - NANO).await;
    assert_eq!(
        get(&em, "/orders/v0/orders", &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(NANO).await;
    assert_eq!(
        get(&em, "/orders/v0/orders", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(em.counters().admitted("Orders v0 getOrders"), 21);
}

#[tokio::test(start_paused = true)]
async fn the_time_scale_speeds_every_bucket_up_and_the_header_says_so() {
    let em = start(EmulatorConfig::default().usage_plan_time_scale(10.0)).await;
    let access = em.issue_lwa_token("default");
    for _ in 0..15 {
        let answer = get(&em, PARTICIPATIONS, &access).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.rate(), Some("0.16"), "the scaled rate");
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // 6.25 s instead of 62.5 s.
    assert_eq!(refill(0.16), Duration::from_millis(6_250));
    tokio::time::advance(refill(0.16) - NANO).await;
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(NANO).await;
    assert_eq!(
        get(&em, PARTICIPATIONS, &access).await.status,
        StatusCode::OK
    );

    // The Tokens API's bucket too: 1 a second becomes 10, its burst stays 10.
    let body = json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}]});
    for _ in 0..10 {
        let answer = token_call(&em, &access, &body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.rate(), Some("10.0"));
    }
    assert_eq!(
        token_call(&em, &access, &body).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(token_call(&em, &access, &body).await.status, StatusCode::OK);
    assert_eq!(em.counters().quota_exceeded, 3);
}

#[tokio::test(start_paused = true)]
async fn the_header_is_on_2xx_400_and_404_only() {
    let em = start(EmulatorConfig::default()).await;
    let access = em.issue_lwa_token("default");

    // 200 of a restricted operation, with an RDT; its answer states its own plan.
    let body = json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders/{orderId}/address"}]});
    let token = rdt(&em, &access, body).await;
    let served = get(&em, "/orders/v0/orders/1-2-3/address", &token).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.header("x-emulator-pii"), Some("served"));
    assert_eq!(served.rate(), Some("0.5"));

    // 400 of the Tokens API: it states its plan (the configured 1 a second).
    let bad = token_call(&em, &access, &json!({"restrictedResources": []})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.rate(), Some("1.0"));

    // 404 of an operation the emulator does not serve: metered like any other, with its plan
    // (searchCatalogItems: 2 a second, burst 2; the model writes "2").
    let unserved = get(&em, "/catalog/2022-04-01/items?keywords=x", &access).await;
    assert_eq!(unserved.status, StatusCode::NOT_FOUND);
    assert_eq!(unserved.rate(), Some("2.0"));
    assert_eq!(
        get(&em, "/catalog/2022-04-01/items", &access).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&em, "/catalog/2022-04-01/items", &access).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the third call within the burst of 2"
    );
    // A path of no operation: no plan, no header.
    let nowhere = get(&em, "/no/such/operation", &access).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert_eq!(nowhere.rate(), None);
    // An unserved operation without a token names no caller: nothing to meter.
    let anonymous = send(&em, "GET", "/catalog/2022-04-01/items", None, None).await;
    assert_eq!(anonymous.status, StatusCode::NOT_FOUND);
    assert_eq!(anonymous.rate(), None);

    // 403: no header, and nothing taken from the bucket.
    // getShipment (Merchant Fulfillment v0): 1 a second, burst 1.
    let shipment = "/mfn/v0/shipments/shp-1";
    for _ in 0..3 {
        let refused = get(&em, shipment, &access).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.rate(), None);
    }
    let no_token = send(&em, "GET", shipment, None, None).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert_eq!(no_token.rate(), None);
    let body = json!({"restrictedResources": [{"method": "GET", "path": shipment}]});
    let mfn = rdt(&em, &access, body).await;
    let first = get(&em, shipment, &mfn).await;
    assert_eq!(first.status, StatusCode::OK, "the 403s took nothing");
    assert_eq!(first.rate(), Some("1.0"));
    // 429: no header.
    let second = get(&em, shipment, &mfn).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.rate(), None);

    let counters = em.counters();
    assert_eq!(counters.admitted("Merchant Fulfillment v0 getShipment"), 1);
    assert_eq!(
        counters.admitted("Catalog Items 2022-04-01 searchCatalogItems"),
        2
    );
    assert_eq!(counters.admitted("Orders v0 getOrderAddress"), 1);
    assert_eq!(
        counters.admitted("Tokens 2021-03-01 createRestrictedDataToken"),
        3,
        "the 400 took from the bucket too"
    );
    assert_eq!(counters.quota_exceeded, 2);
}

#[tokio::test(start_paused = true)]
async fn without_enforcement_only_the_tokens_api_is_metered() {
    let em = Emulator::start().await.unwrap();
    assert!(!em.config().enforces_usage_plans());
    let access = em.issue_lwa_token("default");
    for _ in 0..20 {
        let answer = get(&em, PARTICIPATIONS, &access).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.rate(), None);
    }
    let unserved = get(&em, "/catalog/2022-04-01/items", &access).await;
    assert_eq!(unserved.rate(), None);
    let body = json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}]});
    assert_eq!(token_call(&em, &access, &body).await.rate(), Some("1.0"));
    let counters = em.counters();
    assert_eq!(counters.admitted(PARTICIPATIONS_OP), 0);
    assert_eq!(
        counters.admitted_by_operation.len(),
        1,
        "the Tokens API only"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sellers_own_plan_is_enforced_and_stated() {
    let b_plan = UsagePlan::new(2.0, 3).unwrap();
    let em = start(
        EmulatorConfig::default()
            .seller("b", "Atzr|b")
            .usage_plan(PARTICIPATIONS_OP, UsagePlan::new(1.0, 2).unwrap())
            .seller_usage_plan("b", "getMarketplaceParticipations", b_plan),
    )
    .await;
    let a = em.issue_lwa_token("default");
    let b = em.issue_lwa_token("b");
    for _ in 0..3 {
        let answer = get(&em, PARTICIPATIONS, &b).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.rate(), Some("2.0"), "b's own plan");
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &b).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The default seller meets the operation's override, not b's plan.
    for _ in 0..2 {
        assert_eq!(get(&em, PARTICIPATIONS, &a).await.rate(), Some("1.0"));
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &a).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // b refills at 2 a second: half a second brings one back; a needs a whole second.
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(get(&em, PARTICIPATIONS, &b).await.status, StatusCode::OK);
    assert_eq!(
        get(&em, PARTICIPATIONS, &a).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(get(&em, PARTICIPATIONS, &a).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn two_sellers_have_buckets_of_their_own() {
    let em = start(EmulatorConfig::default().seller("b", "Atzr|b")).await;
    let a = em.issue_lwa_token("default");
    let b = em.issue_lwa_token("b");
    for _ in 0..15 {
        assert_eq!(get(&em, PARTICIPATIONS, &a).await.status, StatusCode::OK);
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &a).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..15 {
        assert_eq!(get(&em, PARTICIPATIONS, &b).await.status, StatusCode::OK);
    }
    assert_eq!(
        get(&em, PARTICIPATIONS, &b).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A second access token of the same seller shares its bucket.
    let a_again = em.issue_lwa_token("default");
    assert_eq!(
        get(&em, PARTICIPATIONS, &a_again).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Operations have buckets of their own as well.
    assert_eq!(
        get(&em, "/reports/2021-06-30/reports/50001", &a)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(em.counters().quota_exceeded, 3);
}

#[tokio::test(start_paused = true)]
async fn a_delegatee_and_a_grantless_caller_have_buckets_of_their_own() {
    let target = "amzn1.sellerapps.app.delegatee";
    let em = start(EmulatorConfig::default().target_application(target)).await;
    let access = em.issue_lwa_token("default");
    let shipment = "/mfn/v0/shipments/shp-9";
    let own = rdt(
        &em,
        &access,
        json!({"restrictedResources": [{"method": "GET", "path": shipment}]}),
    )
    .await;
    let delegated = rdt(
        &em,
        &access,
        json!({"targetApplication": target, "restrictedResources": [{"method": "GET", "path": shipment}]}),
    )
    .await;
    assert_eq!(get(&em, shipment, &own).await.status, StatusCode::OK);
    assert_eq!(
        get(&em, shipment, &own).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let other_app = get(&em, shipment, &delegated).await;
    assert_eq!(other_app.status, StatusCode::OK);
    assert_eq!(
        other_app.header("x-emulator-target-application"),
        Some(target)
    );
    assert_eq!(
        get(&em, shipment, &delegated).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Grantless calls (getDestinations: 1 a second, burst 5) are the application's.
    let app = grantless(&em).await;
    for _ in 0..5 {
        let answer = get(&em, "/notifications/v1/destinations", &app).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "not emulated");
        assert_eq!(answer.rate(), Some("1.0"));
    }
    let app_again = grantless(&em).await;
    assert_eq!(
        get(&em, "/notifications/v1/destinations", &app_again)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&em, "/notifications/v1/destinations", &access)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "a seller's bucket is not the application's"
    );
}

#[tokio::test(start_paused = true)]
async fn operations_without_a_stated_plan_get_the_documented_one() {
    let plans = UsagePlans::amazon();
    let wallet = plans
        .find("Seller Wallet 2024-03-01", "listAccounts")
        .unwrap();
    assert_eq!(wallet.plan(), None);
    let path = wallet.template();
    let unstated = EmulatorConfig::UNSTATED_USAGE_PLAN;
    assert_eq!((unstated.rate_per_second(), unstated.burst()), (10.0, 10));
    assert_ne!(unstated, UsagePlan::CONSERVATIVE_DEFAULT);

    let em = start(EmulatorConfig::default()).await;
    let access = em.issue_lwa_token("default");
    for _ in 0..10 {
        let answer = get(&em, path, &access).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.rate(), Some("10.0"));
    }
    assert_eq!(
        get(&em, path, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(get(&em, path, &access).await.status, StatusCode::NOT_FOUND);

    // The stand-in plan can be changed.
    let em = start(EmulatorConfig::default().unstated_usage_plan(UsagePlan::new(0.25, 1).unwrap()))
        .await;
    let access = em.issue_lwa_token("default");
    assert_eq!(get(&em, path, &access).await.rate(), Some("0.25"));
    assert_eq!(
        get(&em, path, &access).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn overrides_name_an_api_an_operation_or_both_and_the_last_wins() {
    let em = start(
        EmulatorConfig::default()
            .usage_plan("Reports 2021-06-30", UsagePlan::new(4.0, 1).unwrap())
            .usage_plan("getReport", UsagePlan::new(8.0, 2).unwrap())
            .usage_plan(
                "Tokens 2021-03-01 createRestrictedDataToken",
                UsagePlan::new(0.5, 1).unwrap(),
            ),
    )
    .await;
    let access = em.issue_lwa_token("default");
    let reports = get(&em, "/reports/2021-06-30/reports", &access).await;
    assert_eq!(reports.rate(), Some("4.0"), "the API's override");
    let report = get(&em, "/reports/2021-06-30/reports/1", &access).await;
    assert_eq!(report.rate(), Some("8.0"), "the later, narrower one");
    assert_eq!(
        get(&em, "/reports/2021-06-30/reports/1", &access)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&em, "/reports/2021-06-30/reports/1", &access)
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Naming the Tokens API takes the place of token_quota.
    let body = json!({"restrictedResources": [{"method": "GET", "path": "/orders/v0/orders"}]});
    let first = token_call(&em, &access, &body).await;
    assert_eq!((first.status, first.rate()), (StatusCode::OK, Some("0.5")));
    assert_eq!(
        token_call(&em, &access, &body).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(token_call(&em, &access, &body).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn injected_answers_take_nothing_from_the_bucket() {
    let em = start(EmulatorConfig::default()).await;
    let access = em.issue_lwa_token("default");
    let body =
        json!({"restrictedResources": [{"method": "GET", "path": "/mfn/v0/shipments/shp-1"}]});
    let token = rdt(&em, &access, body).await;
    em.inject(
        Endpoint::Restricted,
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        2,
    );
    for _ in 0..2 {
        let injected = get(&em, "/mfn/v0/shipments/shp-1", &token).await;
        assert_eq!(injected.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(injected.rate(), None);
    }
    // A delay is no answer: the call is metered after it.
    em.inject(
        Endpoint::Restricted,
        Fault::Delay(Duration::from_secs(5)),
        1,
    );
    let delayed = get(&em, "/mfn/v0/shipments/shp-1", &token).await;
    assert_eq!(
        (delayed.status, delayed.rate()),
        (StatusCode::OK, Some("1.0"))
    );
    assert_eq!(
        get(&em, "/mfn/v0/shipments/shp-1", &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let counters = em.counters();
    assert_eq!(counters.quota_exceeded, 1);
    assert_eq!(counters.admitted("Merchant Fulfillment v0 getShipment"), 1);
}

#[tokio::test]
async fn settings_that_cannot_be_enforced_are_refused() {
    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let refused = Emulator::start_with(EmulatorConfig::default().usage_plan_time_scale(scale))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput, "{scale}");
        assert!(refused.to_string().contains("time scale"), "{refused}");
    }
    let plan = UsagePlan::new(1.0, 1).unwrap();
    for name in [
        "Orders v9",
        "getOrderz",
        "Orders v0 getOrderz",
        "orders v0",
        "",
    ] {
        let refused = Emulator::start_with(EmulatorConfig::default().usage_plan(name, plan))
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            refused.to_string().contains(&format!("{name:?}")),
            "{refused}"
        );
        let refused = Emulator::start_with(
            EmulatorConfig::default().seller_usage_plan("default", name, plan),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            refused.to_string().contains("seller_usage_plan"),
            "{refused}"
        );
    }
    // Settings that can be are taken, enforcement on or off.
    let fine = EmulatorConfig::default()
        .usage_plan_time_scale(0.5)
        .usage_plan("Orders v0 getOrder", plan);
    assert!(Emulator::start_with(fine.clone()).await.is_ok());
    assert!(Emulator::start_with(fine.usage_plans(true)).await.is_ok());
}

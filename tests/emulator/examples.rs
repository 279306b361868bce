//! Runs the stack of each example against the emulator, in-process: the examples' own code, included
//! as modules, so a broken example fails here.

#[allow(dead_code)]
#[path = "../../examples/custom_source.rs"]
mod custom_source;
#[allow(dead_code)]
#[path = "../../examples/hyper_client.rs"]
mod hyper_client;
#[allow(dead_code)]
#[path = "../../examples/reqwest_middleware.rs"]
mod reqwest_mw;

use std::time::Duration;

use http::StatusCode;
use spapi_rdt::Origin;
use spapi_rdt_emulator::Emulator;

/// How long an example binary may take before a test gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// hyper_client, reqwest_middleware, custom_source
// ---------------------------------------------------------------------------------------------

fn is_restricted(path: &str) -> bool {
    path.starts_with("/orders/v0/") || path.starts_with("/mfn/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_stack_gets_pii_for_restricted_calls_only() {
    let emulator = hyper_client::start_emulator().await.unwrap();
    let outcome = hyper_client::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 10);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = is_restricted(&call.path).then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    let get_order = outcome
        .calls
        .iter()
        .find(|c| c.path == "/orders/v0/orders/902-3159896-1390916")
        .unwrap();
    // The layer asked for the usual data elements.
    assert!(get_order.body.contains("ShippingAddress"), "{get_order:?}");
    assert!(get_order.body.contains("BuyerInfo"), "{get_order:?}");

    let counters = emulator.counters();
    // getOrder, getOrderAddress, getShipment for `default`, getOrderBuyerInfo for seller-b, and a
    // fresh getOrderAddress token after the revocation: one token per operation, not per order.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(hyper_client::SELLER_B), 1);
    assert_eq!(
        counters.restricted_forbidden, 1,
        "the revoked token was refused once"
    );
    assert_eq!(counters.pii_withheld, 0);
    assert_eq!(counters.unrestricted_calls, 3);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_middleware_stack_gets_pii_with_a_seller_per_request() {
    let emulator = reqwest_mw::start_emulator().await.unwrap();
    let outcome = reqwest_mw::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), 7);
    for call in &outcome.calls {
        assert_eq!(call.status, StatusCode::OK, "{call:?}");
        let expected = (call.what != "getMarketplaceParticipations").then_some("served");
        assert_eq!(call.pii.as_deref(), expected, "{call:?}");
        assert_eq!(
            call.answered_for.as_deref(),
            Some(call.seller.as_str()),
            "{call:?}"
        );
    }
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.what == "createShipment" && c.body.contains("Jane Doe"))
    );
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.seller.as_str() == reqwest_mw::SELLER_B)
    );
    let counters = emulator.counters();
    // getOrder, getOrderAddress (two orders, one token), createShipment, seller-b's
    // getOrderBuyerInfo, and getOrderAddress again after the revocation.
    assert_eq!(counters.token_calls, 5);
    assert_eq!(counters.token_calls_for(reqwest_mw::SELLER_B), 1);
    assert_eq!(counters.restricted_forbidden, 1);
    assert_eq!(outcome.stats.invalidations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_source_asks_the_token_service_once_per_operation() {
    let emulator = Emulator::start().await.unwrap();
    let outcome = custom_source::run(&emulator).await.unwrap();

    assert_eq!(outcome.calls.len(), custom_source::PATHS.len());
    for call in &outcome.calls {
        if call.path.ends_with("/regulatedInfo") {
            let error = call.result.as_ref().unwrap_err();
            // The refusal came back through the token service with its cure.
            assert!(error.contains("regulatedInfo"), "{error}");
            assert!(error.contains("InvalidInput"), "{error}");
            assert!(error.contains("authorize the application again"), "{error}");
            assert!(!error.contains("Atz"), "no token in errors: {error}");
        } else {
            let (status, pii) = call.result.as_ref().unwrap();
            assert_eq!(*status, StatusCode::OK, "{call:?}");
            assert_eq!(pii.as_deref(), Some("served"), "{call:?}");
        }
    }
    // getOrderAddress, getOrderItems, getShippingLabel and the refused getOrderRegulatedInfo: the
    // second refused call was answered from the layer's memory of the refusal.
    assert_eq!(outcome.service_requests, 4);
    assert_eq!(emulator.counters().token_calls, 4);
    assert_eq!(outcome.stats.remembered_errors, 1);
    assert_eq!(outcome.stats.hits, 3);
}

// ---------------------------------------------------------------------------------------------
// quickstart and emulator: the example binaries themselves
// ---------------------------------------------------------------------------------------------

/// The built example `name` (`<target>/debug/examples/<name>`, next to this test's `deps/`).
/// `cargo test` builds every example before it runs the tests; a test run that selects this test
/// alone (`--test examples`) builds none, so build them first in that case.
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(std::path::Path::parent).unwrap();
    let binary = profile.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --all-features` builds the examples (or run \
         `cargo build --all-features --examples` before `--test examples`)",
        binary.display()
    );
    binary
}

/// The example's command, with none of the variables that would send it to Amazon.
fn example_command(name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(example_binary(name));
    for var in [
        "SPAPI_CLIENT_ID",
        "SPAPI_CLIENT_SECRET",
        "SPAPI_REFRESH_TOKEN",
        "SPAPI_ENDPOINT",
        "SPAPI_ORDER_IDS",
    ] {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

/// The value after `prefix` on the line that starts with it.
fn after<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    text.lines().find_map(|line| line.strip_prefix(prefix))
}

#[tokio::test]
async fn the_quickstart_runs_against_the_emulator_and_gets_pii() {
    let output = tokio::time::timeout(PATIENCE, example_command("quickstart").output())
        .await
        .expect("the quickstart hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("SP-API emulator at http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // Every restricted call got personal data, and the tokens came from few token calls.
    let pii = after(&stdout, "PII received:  ").expect("no PII line");
    let (got, of) = pii
        .split_once(" restricted calls")
        .unwrap()
        .0
        .split_once(" of ")
        .unwrap();
    assert_eq!(got, of, "{pii}");
    assert!(got.parse::<u32>().unwrap() > 0, "{pii}");
    let calls = after(&stdout, "token calls:   ").expect("no token-call line");
    assert!(
        calls.ends_with(", 0 throttled (emulator's counts)"),
        "{calls}"
    );
    let token_calls: u32 = calls.split(' ').next().unwrap().parse().unwrap();
    assert!(token_calls < got.parse().unwrap(), "{calls}; {pii}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_example_serves_what_it_prints_until_ctrl_c() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = example_command("emulator")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line == "Ctrl-C stops the emulator." {
                return;
            }
        }
        panic!("the emulator example ended early:\n{printed}");
    })
    .await
    .expect("the emulator example never said it was ready");

    // Its exports and the sidecar command are enough to get a token and personal data.
    let origin = Origin::parse(after(&printed, "SP-API emulator on ").unwrap()).unwrap();
    let export = |name: &str| {
        after(&printed, &format!("export {name}='"))
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or_else(|| panic!("no {name} in:\n{printed}"))
            .to_owned()
    };
    let lwa_url = after(&printed, "cargo run -p spapi-rdt-proxy -- ")
        .and_then(|command| command.split("--lwa-url ").nth(1))
        .unwrap()
        .to_owned();
    let credentials = spapi_rdt::LwaCredentials::new(
        export("SPAPI_CLIENT_ID"),
        export("SPAPI_CLIENT_SECRET"),
        export("SPAPI_REFRESH_TOKEN"),
    );
    let source = spapi_rdt::SpApiTokenSource::builder()
        .credentials(credentials)
        .lwa_url(lwa_url)
        .build()
        .unwrap();
    let layer = spapi_rdt::RestrictedDataTokenLayer::builder(source)
        .origins([origin.clone()])
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(layer.middleware())
        .build();
    let response = client
        .get(format!(
            "{}/orders/v0/orders/902-3159896-1390916/address",
            origin.as_str()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-emulator-pii"], "served");

    // Ctrl-C: it stops, says what it served, and exits cleanly.
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the emulator example did not stop on Ctrl-C")
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "{status}\n{rest}");
    assert!(
        rest.contains(
            "served 1 restricted calls (1 with personal data), 0 unrestricted calls, 1 token calls"
        ),
        "{rest}"
    );
}

//! The installed program: starts the `spapi-rdt-proxy` binary cargo built, points it at the
//! emulator on loopback, and makes restricted calls through it with a client that sends no token:
//! on its own, with the operations endpoints on an address of their own, and with its log pipe
//! closed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt_emulator::Emulator;

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_binary_serves_a_restricted_call_with_a_token() {
    let emulator = Emulator::start().await.unwrap();
    // The port is the system's choice, read back from the "serving" log line.
    let (_child, serving) = started(&emulator, &["--listen", "127.0.0.1:0"], false).await;
    let listen = address(&serving, "listen");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let address = format!("http://{listen}/orders/v0/orders/902-3159896-1390916/address");
    let response = client.get(address.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-emulator-pii"],
        "served",
        "the restricted call went with a Restricted Data Token"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert_eq!(emulator.counters().token_calls, 1);
}

/// The binary in front of `emulator` with `args`, logging JSON into a pipe; its "serving" line
/// once it logs it. The log is then read to its end, or (`close_log`) its reading end is closed,
/// as when a log collector goes away.
async fn started(
    emulator: &Emulator,
    args: &[&str],
    close_log: bool,
) -> (Killed, serde_json::Value) {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_spapi-rdt-proxy"))
        .args(args)
        .args(["--upstream", emulator.origin().as_str()])
        .args(["--lwa-url", &emulator.lwa_url(), "--log-format", "json"])
        .env_clear()
        .env("SPAPI_CLIENT_ID", emulator.client_id())
        .env("SPAPI_CLIENT_SECRET", emulator.client_secret())
        .env(
            "SPAPI_REFRESH_TOKEN",
            emulator
                .refresh_token("default")
                .expect("the default seller"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (found, serving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        if let Some(line) = lines.by_ref().find(|line| line.contains("\"serving\"")) {
            let _ = found.send(line);
        }
        if !close_log {
            lines.for_each(drop);
        }
    });
    let serving = tokio::task::spawn_blocking(move || serving.recv());
    let line = tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("no \"serving\" log line within 30 s")
        .unwrap()
        .expect("the binary stopped before serving");
    (Killed(child), serde_json::from_str(&line).unwrap())
}

/// A field of a log line that names an address.
fn address(line: &serde_json::Value, name: &str) -> String {
    line[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_binary_serves_the_ops_endpoints_on_their_own_address() {
    let emulator = Emulator::start().await.unwrap();
    // Both ports chosen by the system, read back from the "serving" log line.
    let args = ["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"];
    let (_child, serving) = started(&emulator, &args, false).await;
    let (listen, ops) = (address(&serving, "listen"), address(&serving, "ops_listen"));
    assert_ne!(listen, ops);

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url.parse().unwrap()).await.unwrap().status() }
    };
    assert_eq!(get(format!("http://{ops}/healthz")).await, 200);
    assert_eq!(get(format!("http://{ops}/metrics")).await, 200);
    assert_eq!(get(format!("http://{listen}/healthz")).await, 404);
    assert_eq!(
        get(format!(
            "http://{listen}/orders/v0/orders/902-3159896-1390916/address"
        ))
        .await,
        200
    );
    assert_eq!(emulator.counters().token_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_costs_no_request() {
    let emulator = Emulator::start().await.unwrap();
    let (_child, serving) = started(&emulator, &["--listen", "127.0.0.1:0"], true).await;
    let listen = address(&serving, "listen");

    // Each forwarded call is logged, into the closed pipe.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for _ in 0..3 {
        let address = format!("http://{listen}/orders/v0/orders/902-3159896-1390916/address");
        let response = client.get(address.parse().unwrap()).await;
        assert_eq!(
            response.map(|r| r.status()).map_err(|e| e.to_string()),
            Ok(http::StatusCode::OK)
        );
    }
}

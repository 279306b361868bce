//! Load on loopback: restricted requests through `spapi-rdt-proxy` (the binary's own code) to the
//! emulator, and the same requests sent straight to the emulator with a token, in one run, to show
//! what the proxy adds.
//!
//! ```text
//! cargo run --release -p spapi-rdt-proxy --example proxy_load            # 10000 requests, 200 connections
//! cargo run --release -p spapi-rdt-proxy --example proxy_load -- 2000 50 # requests, connections
//! ```
//!
//! It checks what the proxy must keep under load (every answer 200 with personal data, one token
//! call per operation, nothing throttled) and exits non-zero otherwise. Everything stays on
//! 127.0.0.1, and the run is bounded by the request count.

mod driver;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http::{HeaderValue, Method};
use spapi_rdt::catalog::DataElements;
use spapi_rdt::{
    BoxError, RestrictedResource, SellerId, SpApiTokenSource, TokenRequest, TokenSource,
    X_AMZ_ACCESS_TOKEN,
};
use spapi_rdt_emulator::{Emulator, EmulatorConfig};
use tokio::net::TcpListener;

/// The restricted operations the load cycles through (generic paths: one token each).
pub const TEMPLATES: [&str; 4] = [
    "/orders/v0/orders/{orderId}/address",
    "/orders/v0/orders/{orderId}/buyerInfo",
    "/mfn/v0/shipments/{shipmentId}",
    "/vendor/directFulfillment/shipping/v1/shippingLabels/{purchaseOrderNumber}",
];

/// Concrete paths: each template with a few ids.
pub fn paths() -> Vec<String> {
    let mut paths = Vec::new();
    for i in 0..25 {
        for template in TEMPLATES {
            let id = format!("902-{:07}-{:07}", 3_159_896 + i, 1_390_916 + i);
            let (before, rest) = template.split_once('{').unwrap_or((template, "}"));
            let after = rest.split_once('}').map_or("", |(_, after)| after);
            paths.push(format!("{before}{id}{after}"));
        }
    }
    paths
}

fn show(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(requests: usize, connections: usize) -> Result<bool, BoxError> {
    let per_connection = requests.div_ceil(connections);
    let load = driver::Load {
        connections,
        per_connection,
    };
    let emulator = Emulator::start_with(EmulatorConfig::default()).await?;
    let refresh = emulator
        .refresh_token("default")
        .ok_or("the emulator has no default seller")?;
    let paths = paths();

    // Straight to the emulator: one token for the four operations, fetched here.
    let source = SpApiTokenSource::builder()
        .credentials(spapi_rdt::LwaCredentials::new(
            emulator.client_id(),
            emulator.client_secret(),
            &refresh,
        ))
        .lwa_url(emulator.lwa_url())
        .build()?;
    let resources = TEMPLATES
        .iter()
        .map(|t| RestrictedResource::new(Method::GET, *t, DataElements::NONE));
    let issued = source
        .fetch(TokenRequest::new(
            SellerId::default(),
            emulator.origin(),
            resources,
        ))
        .await?;
    let token = HeaderValue::from_str(issued.token().expose())?;
    let direct = driver::run(
        emulator.local_addr(),
        &paths,
        &[(X_AMZ_ACCESS_TOKEN, token)],
        load,
    )
    .await?;
    let tokens_before = emulator.counters().token_calls;

    // Through the proxy.
    let lwa = emulator.lwa_url();
    let args = spapi_rdt_proxy::Args::try_parse_from([
        "spapi-rdt-proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        emulator.origin().as_str(),
        "--lwa-url",
        lwa.as_str(),
        // The load is far above Amazon's usage plans, which the emulator does not enforce here:
        // pacing would hold most calls, and this measures what the proxy adds to a call.
        "--no-usage-plans",
    ])?;
    let vars = [
        ("SPAPI_CLIENT_ID", emulator.client_id().to_owned()),
        ("SPAPI_CLIENT_SECRET", emulator.client_secret().to_owned()),
        ("SPAPI_REFRESH_TOKEN", refresh),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let settings = spapi_rdt_proxy::Settings::load(&args, vars)?;
    let app = spapi_rdt_proxy::App::new(&settings)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(spapi_rdt_proxy::serve(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        spapi_rdt_proxy::Limits {
            drain_timeout: Duration::from_secs(5),
            ..settings.limits()
        },
    ));
    let proxied = driver::run(addr, &paths, &[], load).await?;
    let _ = stop.send(());
    let _ = serving.await;
    let counters = emulator.counters();
    let proxy_tokens = counters.token_calls - tokens_before;

    println!(
        "{} restricted requests over {connections} connections, {} operations, loopback",
        proxied.count(),
        TEMPLATES.len()
    );
    println!("| path | p50 | p99 | max | requests/s | statuses |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, outcome) in [
        ("direct to the emulator", &direct),
        ("through the proxy", &proxied),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.0} | {:?} |",
            show(outcome.percentile(0.50)),
            show(outcome.percentile(0.99)),
            show(outcome.percentile(1.0)),
            outcome.count() as f64 / outcome.elapsed.as_secs_f64(),
            outcome.statuses
        );
    }
    let added = |f: f64| {
        proxied.percentile(f).as_secs_f64() * 1000.0 - direct.percentile(f).as_secs_f64() * 1000.0
    };
    println!(
        "proxy added: p50 {:.2} ms, p99 {:.2} ms",
        added(0.50),
        added(0.99)
    );
    println!(
        "through the proxy: {} with PII of {}, {proxy_tokens} token calls, {} throttled",
        proxied.pii_served,
        proxied.count(),
        counters.throttled
    );
    let ok = proxied.pii_served == proxied.count()
        && proxied.statuses.keys().all(|s| *s == 200)
        && proxy_tokens == TEMPLATES.len() as u64
        && counters.throttled == 0;
    Ok(ok)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let requests = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let connections = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    match run(requests, connections).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("proxy_load: a check failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("proxy_load: {e}");
            ExitCode::FAILURE
        }
    }
}

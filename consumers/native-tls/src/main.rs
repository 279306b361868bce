//! An application on the platform's TLS library (OpenSSL on Linux): spapi-rdt with `native-tls`,
//! and no rustls anywhere in the graph.

#[path = "../../common.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), spapi_rdt::BoxError> {
    common::run_over_plain_http("native-tls").await
}

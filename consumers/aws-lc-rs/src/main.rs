//! An application that takes spapi-rdt's defaults: the source's client uses rustls with aws-lc-rs,
//! and nothing has to be installed.

#[path = "../../common.rs"]
mod common;

#[tokio::main]
async fn main() -> Result<(), spapi_rdt::BoxError> {
    common::run_over_plain_http("aws-lc-rs (default features)").await
}

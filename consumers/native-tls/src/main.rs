//! An application on the platform's TLS library (OpenSSL on Linux): spapi-rdt with `native-tls`,
//! and no rustls anywhere in the graph.

#[path = "../../common.rs"]
mod common;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spapi_rdt::BoxError;
use spapi_rdt::testing::Emulator;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::start().await?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    common::call_restricted(&emulator, common::source(&emulator)?, client).await?;
    println!("native-tls: restricted call served with its token");
    Ok(())
}

//! An application that takes spapi-rdt's defaults: the source's client uses rustls with aws-lc-rs,
//! and nothing has to be installed.

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
    println!("aws-lc-rs (default features): restricted call served with its token");
    Ok(())
}

//! The emulator as the one fake Amazon of the `SpApiTokenSource` tests: a source wired to it, the
//! token request they use, canned answers for what the emulator does not say by itself, and what
//! it was sent.
#![allow(unused_imports)] // a prelude: each test binary uses a part of it

pub use std::time::Duration;

pub use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
pub use http::{Method, StatusCode};
pub use serde_json::{Value, json};
pub use spapi_rdt::catalog::{DataElement, DataElements};
pub use spapi_rdt::{
    LwaCredentials, Origin, RestrictedResource, SellerId, SpApiTokenSource, TokenRequest,
    TokenSource, error::ErrorKind, error::SourceBuildError, error::SourceError,
};
pub use spapi_rdt_emulator::{CannedReply, Emulator, EmulatorConfig, Endpoint, Fault, SeenRequest};

pub use super::dead_port::{DeadPort, dead_port};

/// The emulator, and the source under test's view of it.
pub struct Amazon {
    pub emulator: Emulator,
}

impl Amazon {
    pub async fn start() -> Self {
        Amazon::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> Self {
        Amazon {
            emulator: Emulator::start_with(config).await.unwrap(),
        }
    }

    /// The default seller's LWA credentials.
    pub fn credentials(&self) -> LwaCredentials {
        self.credentials_of(SellerId::DEFAULT_NAME)
    }

    pub fn credentials_of(&self, seller: &str) -> LwaCredentials {
        LwaCredentials::new(
            self.emulator.client_id(),
            self.emulator.client_secret(),
            self.emulator.refresh_token(seller).unwrap(),
        )
    }

    pub fn lwa_url(&self) -> String {
        self.emulator.lwa_url()
    }

    pub fn origin(&self) -> Origin {
        self.emulator.origin()
    }

    /// A source for the default seller, with a 5 s request timeout.
    pub fn source(&self) -> SpApiTokenSource {
        SpApiTokenSource::builder()
            .credentials(self.credentials())
            .lwa_url(self.lwa_url())
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// A token request for the default seller's `getOrderAddress`, generic path.
    pub fn request(&self) -> TokenRequest {
        self.request_for(SellerId::default())
    }

    pub fn request_for(&self, seller: SellerId) -> TokenRequest {
        TokenRequest::new(
            seller,
            self.origin(),
            [RestrictedResource::new(
                Method::GET,
                "/orders/v0/orders/{orderId}/address",
                DataElements::NONE,
            )],
        )
    }

    /// The next request to `endpoint` gets `reply`, after the replies given before it.
    pub fn reply(&self, endpoint: Endpoint, reply: CannedReply) {
        self.emulator.inject(endpoint, Fault::Reply(reply), 1);
    }

    pub fn lwa_calls(&self) -> u64 {
        self.emulator.counters().lwa_calls
    }

    pub fn token_calls(&self) -> u64 {
        self.emulator.counters().token_calls
    }

    pub fn token_requests(&self) -> Vec<SeenRequest> {
        self.emulator.requests(Endpoint::Tokens)
    }

    /// The LWA access token of each Tokens API call, in order.
    pub fn access_tokens_sent(&self) -> Vec<String> {
        self.token_requests()
            .iter()
            .map(|r| r.access_token().unwrap().to_owned())
            .collect()
    }

    /// Fails when `text` holds a secret: the client secret, a refresh token the emulator knows, or
    /// any LWA access token or RDT (the emulator's all start with Amazon's prefixes).
    pub fn assert_no_secret(&self, text: &str) {
        let mut secrets = vec![
            "Atza|".to_owned(),
            "Atz.sprdt|".to_owned(),
            "Atzr|".to_owned(),
            self.emulator.client_secret().to_owned(),
        ];
        secrets.extend(
            self.emulator
                .config()
                .sellers()
                .map(|(_, refresh)| refresh.to_owned()),
        );
        for secret in secrets {
            assert!(!text.contains(&secret), "`{secret}` leaked in: {text}");
        }
    }
}

/// An SP-API error answer, `{"errors": [{"code", "message", "details"}]}`.
pub fn errors(status: u16, code: &str, message: &str) -> CannedReply {
    json_reply(
        status,
        json!({"errors": [{"code": code, "message": message, "details": ""}]}),
    )
}

pub fn json_reply(status: u16, body: Value) -> CannedReply {
    CannedReply::json(StatusCode::from_u16(status).unwrap(), &body)
}

pub fn raw_reply(status: u16, body: &str) -> CannedReply {
    CannedReply::new(StatusCode::from_u16(status).unwrap(), body.to_owned())
}

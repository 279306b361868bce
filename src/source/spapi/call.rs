//! One call of the Tokens API: the request body, the checks before it, and the LWA token it is
//! made with.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, header};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::SourceError;
use crate::resource::{SellerId, TokenRequest};
use crate::source::lwa::{SellerSlot, read_body, retry_after_header, transport_error};
use crate::token::{IssuedToken, SecretToken};

use super::Inner;
use super::answer::{Answer, Outcome};

/// The Tokens API operation's path.
const TOKENS_PATH: &str = "/tokens/2021-03-01/restrictedDataToken";

/// The Tokens API request body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokensBody<'a> {
    restricted_resources: Vec<ResourceBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_application: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceBody<'a> {
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    data_elements: Vec<&'static str>,
}

impl<'a> TokensBody<'a> {
    pub(super) fn new(request: &'a TokenRequest) -> Self {
        TokensBody {
            restricted_resources: request
                .resources()
                .iter()
                .map(|r| ResourceBody {
                    method: r.method().as_str(),
                    path: r.path(),
                    data_elements: r.data_elements().iter().map(|e| e.as_str()).collect(),
                })
                .collect(),
            target_application: request.target_application(),
        }
    }
}

/// Checks what can be checked before any call.
pub(super) fn check(request: &TokenRequest) -> Result<(), SourceError> {
    let count = request.resources().len();
    if count == 0 {
        return Err(SourceError::permanent(
            "a token request needs at least one restricted resource",
        ));
    }
    if count > TokenRequest::MAX_RESOURCES {
        return Err(SourceError::permanent(format_args!(
            "a token request holds at most {} restricted resources; this one holds {count}",
            TokenRequest::MAX_RESOURCES
        )));
    }
    if let Some(r) = request
        .resources()
        .iter()
        .find(|r| ![Method::GET, Method::PUT, Method::POST, Method::DELETE].contains(r.method()))
    {
        return Err(SourceError::permanent(format_args!(
            "the Tokens API accepts only GET, PUT, POST and DELETE resources, not {r:?}"
        )));
    }
    Ok(())
}

impl Inner {
    pub(super) fn slot(&self, seller: &SellerId) -> Result<Arc<SellerSlot>, SourceError> {
        self.lwa.slot(seller).ok_or_else(|| {
            SourceError::permanent(format_args!("no LWA credentials for seller `{seller}`"))
                .with_cure(
                    "give the seller's credentials to `SpApiTokenSourceBuilder::seller` or \
                     `SpApiTokenSource::add_seller`, or check the `SellerId` put in the request",
                )
        })
    }

    pub(super) async fn lwa_token(
        &self,
        slot: &SellerSlot,
        seller: &SellerId,
    ) -> Result<SecretToken, SourceError> {
        slot.access_token(|| self.lwa_endpoint.grant(seller, slot.credentials()))
            .await
    }

    pub(super) async fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, SourceError> {
        check(request)?;
        let seller = request.seller();
        let slot = self.slot(seller)?;
        let body = serde_json::to_vec(&TokensBody::new(request)).map_err(|err| {
            SourceError::permanent("could not encode the token request").with_source(err)
        })?;
        let body = Bytes::from(body);
        let lwa = self.lwa_token(&slot, seller).await?;
        match self.call(request, &slot, &lwa, body.clone(), 1).await {
            Outcome::Issued(token) => Ok(token),
            Outcome::Failed(err) => Err(err),
            Outcome::Refused(err) => {
                if !slot.invalidate(&lwa) {
                    // A token dropped within the refusal period was refused again: a new one
                    // would not help.
                    return Err(err);
                }
                tracing::debug!(
                    seller = %seller,
                    origin = %request.origin(),
                    "the Tokens API refused the LWA access token; getting a new one and trying once more"
                );
                let lwa = self.lwa_token(&slot, seller).await?;
                match self.call(request, &slot, &lwa, body, 2).await {
                    Outcome::Issued(token) => Ok(token),
                    Outcome::Failed(err) | Outcome::Refused(err) => Err(err.with_attempts(2)),
                }
            }
        }
    }

    /// One Tokens API call.
    async fn call(
        &self,
        request: &TokenRequest,
        slot: &SellerSlot,
        lwa: &SecretToken,
        body: Bytes,
        attempt: u32,
    ) -> Outcome {
        let seller = request.seller();
        let origin = request.origin();
        let started = Instant::now();
        let sent = self
            .client
            .post(format!("{origin}{TOKENS_PATH}"))
            .timeout(self.timeout)
            .header("x-amz-access-token", lwa.header_value().clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(
                    seller = %seller,
                    origin = %origin,
                    attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    error = %err,
                    "Tokens API call failed to complete"
                );
                let failure = if err.is_builder() {
                    SourceError::permanent(format_args!(
                        "could not make a Tokens API request for origin {origin}"
                    ))
                } else {
                    transport_error(
                        &err,
                        format_args!("the Tokens API at {origin} (seller `{seller}`)"),
                        self.timeout,
                    )
                };
                return Outcome::Failed(failure.with_source(err));
            }
        };
        let status = response.status();
        let retry_after = retry_after_header(response.headers().get(header::RETRY_AFTER));
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(100).collect::<String>());
        let body = read_body(response).await;
        tracing::debug!(
            seller = %seller,
            origin = %origin,
            attempt,
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Tokens API call"
        );
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                return Outcome::Failed(
                    SourceError::transient(format_args!(
                        "could not read the Tokens API's answer for seller `{seller}` at {origin}"
                    ))
                    .with_status(status)
                    .with_source(err),
                );
            }
        };
        let answer = Answer {
            request,
            secrets: [
                lwa.expose(),
                slot.credentials().refresh_token(),
                slot.credentials().client_secret(),
            ],
            status,
            retry_after,
            request_id: request_id.as_deref(),
        };
        answer.outcome(&body)
    }
}

//! The Tokens API source, [`SpApiTokenSource`].

mod answer;
mod builder;
mod call;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::lwa::{ASSUMED_LIFETIME, LwaCache, LwaCredentials, LwaEndpoint, MAX_LIFETIME};
use super::{SourceError, TokenFuture, TokenSource};
use crate::resource::{SellerId, TokenRequest};
use crate::token::SecretToken;

#[cfg(fuzzing)]
pub use answer::fuzz_tokens_answer;
pub use builder::SpApiTokenSourceBuilder;

/// The default [`TokenSource`]: Amazon's Tokens API, authenticated with each seller's LWA access
/// token, over reqwest. Cloning is cheap, and clones share the LWA token cache.
///
/// ```
/// use spapi_rdt::{LwaCredentials, SellerId, SpApiTokenSource};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let source = SpApiTokenSource::builder()
///     // The default seller (requests that name none)...
///     .credentials(LwaCredentials::new("amzn1.application-oa2-client.0123", "secret", "Atzr|one"))
///     // ...and others, by the `SellerId` their requests carry.
///     .seller(
///         SellerId::new("A2EUQ1WTGCTBG2"),
///         LwaCredentials::new("amzn1.application-oa2-client.0123", "secret", "Atzr|two"),
///     )
///     .build()?;
/// // Or read the default seller's credentials from SPAPI_CLIENT_ID, SPAPI_CLIENT_SECRET and
/// // SPAPI_REFRESH_TOKEN with `LwaCredentials::from_env()`.
/// # let _ = source;
/// # Ok(())
/// # }
/// ```
///
/// # What one `fetch` does
///
/// It gets the seller's LWA access token (cached, refreshed ahead of expiry, one LWA call at a time
/// per seller), then makes one `POST {origin}/tokens/2021-03-01/restrictedDataToken` call. Rate
/// limiting, retries with back-off and caching of the tokens are the layer's job, so there is no
/// other retry, with one exception: when the Tokens API refuses the LWA token (401 or 403), the LWA
/// token is dropped, a new one is fetched and the call is made once more.
///
/// # How answers map to errors
///
/// | answer | result |
/// | --- | --- |
/// | 2xx with `restrictedDataToken` and `expiresIn` (bare or inside `payload`) | the token |
/// | 400 `InvalidInput` | permanent, with Amazon's message and the cure for a missing role |
/// | other 400, 404, 415, other 4xx, redirects | permanent |
/// | 401 / 403 | new LWA token and one more call; a second refusal is permanent |
/// | 408, 429, 5xx | transient (`Retry-After` in seconds is kept when sent) |
/// | timeout, connection failure, unreadable or malformed body | transient |
/// | LWA `invalid_grant` / `invalid_client` / other 4xx | permanent, with the cure |
/// | LWA 429 / 5xx / timeout / connection failure / malformed body | transient |
///
/// # LWA access tokens
///
/// Each seller's access token is cached and refreshed
/// [`lwa_refresh_margin`](SpApiTokenSourceBuilder::lwa_refresh_margin) before its expiry (5
/// minutes by default), but never before half its life, so a short-lived token cannot cause a
/// refresh storm. Concurrent callers for one seller share one LWA call, and callers that waited
/// for a failed call get its error rather than calling again. Time is `tokio::time::Instant`.
///
/// # Token lifetimes
///
/// `expiresIn` (and LWA's `expires_in`) is taken as stated when above zero and at most a day. Missing, or
/// more than a day, it is taken to be [`SpApiTokenSource::ASSUMED_TOKEN_LIFETIME`] (one hour, the
/// documented lifetime) and a warning is logged: a token that dies earlier is recovered by the
/// layer's retry on 403. Zero, negative or not a number, the answer is a transient error, as is a
/// token that cannot be sent in a header.
///
/// Errors and logs never hold a token, a refresh token or a client secret; Amazon's own messages
/// are kept (with any of those secrets scrubbed out).
///
/// Redirects are not followed by the client this source builds, since a followed redirect would
/// carry the `x-amz-access-token` header to another host. A client given with
/// [`SpApiTokenSourceBuilder::http_client`] should be built with
/// `reqwest::redirect::Policy::none()` too.
#[derive(Clone)]
pub struct SpApiTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    timeout: Duration,
    lwa_endpoint: LwaEndpoint,
    lwa: LwaCache,
}

impl SpApiTokenSource {
    /// Amazon's LWA token endpoint.
    pub const DEFAULT_LWA_URL: &'static str = "https://api.amazon.com/auth/o2/token";
    /// How long one HTTP call (LWA or Tokens API) may take, unless configured.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long before its expiry an LWA token is refreshed, unless configured.
    pub const DEFAULT_LWA_REFRESH_MARGIN: Duration = Duration::from_secs(300);
    /// The lifetime assumed for a token whose stated lifetime is missing or above
    /// [`MAX_TOKEN_LIFETIME`](Self::MAX_TOKEN_LIFETIME).
    pub const ASSUMED_TOKEN_LIFETIME: Duration = ASSUMED_LIFETIME;
    /// The longest stated token lifetime believed.
    pub const MAX_TOKEN_LIFETIME: Duration = MAX_LIFETIME;

    /// A builder with the defaults.
    pub fn builder() -> SpApiTokenSourceBuilder {
        SpApiTokenSourceBuilder {
            sellers: Vec::new(),
            lwa_url: Self::DEFAULT_LWA_URL.to_owned(),
            client: None,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            lwa_refresh_margin: Self::DEFAULT_LWA_REFRESH_MARGIN,
        }
    }

    /// The seller's LWA access token, from the cache or from LWA: for the unrestricted calls an
    /// application makes next to its restricted ones.
    pub async fn lwa_access_token(&self, seller: &SellerId) -> Result<SecretToken, SourceError> {
        let slot = self.inner.slot(seller)?;
        self.inner.lwa_token(&slot, seller).await
    }

    /// Forgets the seller's cached LWA access token if it is still `refused` (an SP-API call refused
    /// it with 401/403), so the next call gets a new one; returns whether it did.
    ///
    /// A newer token is kept, and so is any token within a minute of the last drop for this seller:
    /// a fresh token refused again at once says the refusal is about something else (a missing
    /// role, the wrong seller), and dropping it on every refused call would make each one an LWA
    /// call.
    pub fn invalidate_lwa_access_token(&self, seller: &SellerId, refused: &SecretToken) -> bool {
        self.inner
            .lwa
            .slot(seller)
            .is_some_and(|slot| slot.invalidate(refused))
    }

    /// Adds a seller, or replaces its credentials (and drops its cached LWA token), at run time.
    pub fn add_seller(&self, seller: SellerId, credentials: LwaCredentials) {
        self.inner.lwa.insert(seller, credentials);
    }

    /// Removes a seller; returns whether it had credentials. Its later requests fail permanently.
    pub fn remove_seller(&self, seller: &SellerId) -> bool {
        self.inner.lwa.remove(seller)
    }

    /// Whether the seller has credentials.
    pub fn has_seller(&self, seller: &SellerId) -> bool {
        self.inner.lwa.slot(seller).is_some()
    }
}

impl fmt::Debug for SpApiTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpApiTokenSource")
            .field("lwa_url", &self.inner.lwa_endpoint.url.as_str())
            .field("sellers", &self.inner.lwa.sellers())
            .field("request_timeout", &self.inner.timeout)
            .field("lwa_refresh_margin", &self.inner.lwa.margin())
            .finish()
    }
}

impl TokenSource for SpApiTokenSource {
    fn fetch(&self, request: TokenRequest) -> TokenFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.issue(&request).await })
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};

    use crate::error::SourceBuildError;

    use super::answer::{Answer, CURE_ROLE, Outcome};
    use super::builder::check_lwa_url;
    use super::call::{TokensBody, check};
    use super::*;
    use crate::catalog::{DataElement, DataElements};
    use crate::error::ErrorKind;
    use crate::resource::{Region, RestrictedResource};

    fn request(resources: usize) -> TokenRequest {
        TokenRequest::new(
            SellerId::new("S1"),
            Region::Europe.origin(),
            (0..resources).map(|i| {
                RestrictedResource::new(Method::GET, format!("/r/{i}"), DataElements::NONE)
            }),
        )
    }

    fn answer(request: &TokenRequest, status: u16) -> Answer<'_> {
        Answer {
            request,
            secrets: ["Atza|lwa", "Atzr|refresh", "client-secret"],
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            request_id: Some("req-1"),
        }
    }

    #[test]
    fn body_has_data_elements_and_target_only_when_needed() {
        let r = TokenRequest::new(
            SellerId::default(),
            Region::NorthAmerica.origin(),
            [
                RestrictedResource::new(
                    Method::GET,
                    "/orders/v0/orders/{orderId}",
                    DataElements::NONE
                        .with(DataElement::BuyerInfo)
                        .with(DataElement::ShippingAddress),
                ),
                RestrictedResource::new(
                    Method::GET,
                    "/orders/v0/orders/{orderId}/address",
                    DataElements::NONE,
                ),
            ],
        );
        let json = serde_json::to_value(TokensBody::new(&r)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"restrictedResources": [
                {"method": "GET", "path": "/orders/v0/orders/{orderId}",
                 "dataElements": ["buyerInfo", "shippingAddress"]},
                {"method": "GET", "path": "/orders/v0/orders/{orderId}/address"},
            ]})
        );
        let r = r.with_target_application("amzn1.sellerapps.app.x");
        let json = serde_json::to_value(TokensBody::new(&r)).unwrap();
        assert_eq!(json["targetApplication"], "amzn1.sellerapps.app.x");
    }

    #[test]
    fn requests_are_checked_before_any_call() {
        assert!(check(&request(1)).is_ok());
        assert!(check(&request(50)).is_ok());
        for bad in [request(0), request(51)] {
            let err = check(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent);
        }
        let patch = TokenRequest::new(
            SellerId::default(),
            Region::Europe.origin(),
            [RestrictedResource::new(
                Method::PATCH,
                "/x",
                DataElements::NONE,
            )],
        );
        assert!(check(&patch).unwrap_err().message().contains("PATCH"));
    }

    #[test]
    fn both_success_shapes_and_lifetimes() {
        let r = request(1);
        for body in [
            r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":3600}"#,
            r#"{"payload":{"restrictedDataToken":"Atz.sprdt|a","expiresIn":3600}}"#,
        ] {
            let Outcome::Issued(t) = answer(&r, 200).outcome(body.as_bytes()) else {
                panic!("{body}");
            };
            assert_eq!(t.token().expose(), "Atz.sprdt|a");
            assert_eq!(t.expires_in(), Duration::from_secs(3600));
        }
        for (body, transient) in [
            (
                r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":0}"#,
                true,
            ),
            (
                r#"{"restrictedDataToken":"Atz.sprdt|a","expiresIn":-1}"#,
                true,
            ),
            (r#"{"restrictedDataToken":"","expiresIn":3600}"#, true),
            (
                r#"{"restrictedDataToken":"a\u0000b","expiresIn":3600}"#,
                true,
            ),
            (r#"{"expiresIn":3600}"#, true),
            ("<html>", true),
        ] {
            let Outcome::Failed(err) = answer(&r, 200).outcome(body.as_bytes()) else {
                panic!("{body}");
            };
            assert_eq!(err.is_transient(), transient, "{body}");
            assert_eq!(err.status(), Some(StatusCode::OK));
        }
    }

    #[test]
    fn error_answers_are_described_without_secrets() {
        let r = request(5);
        let body = br#"{"errors":[{"code":"InvalidInput","message":"Application does not have access to /r/0 for Atza|lwa","details":""}]}"#;
        let Outcome::Failed(err) = answer(&r, 400).outcome(body) else {
            panic!()
        };
        assert_eq!(err.code(), Some("InvalidInput"));
        assert!(err.message().contains("does not have access to /r/0"));
        assert!(err.message().contains("and 2 more"));
        assert!(err.message().contains("req-1"));
        assert!(!err.message().contains("Atza|lwa"));
        assert_eq!(err.cure(), Some(CURE_ROLE));

        let Outcome::Refused(err) = answer(&r, 403).outcome(b"") else {
            panic!()
        };
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        assert!(err.message().contains("no error message"));

        let Outcome::Failed(err) = answer(&r, 302).outcome(b"") else {
            panic!()
        };
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn lwa_urls_are_checked() {
        for ok in [
            SpApiTokenSource::DEFAULT_LWA_URL,
            "http://127.0.0.1:9000/auth/o2/token",
            "http://localhost/token",
            "http://[::1]:1/token",
        ] {
            assert!(check_lwa_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.amazon.com/auth/o2/token",
            "ftp://127.0.0.1/x",
            "/auth/o2/token",
            "https://user:pw@api.amazon.com/x",
        ] {
            let err = check_lwa_url(bad).unwrap_err();
            assert!(
                matches!(err, SourceBuildError::InvalidLwaUrl { .. }),
                "{bad}"
            );
            assert!(!err.to_string().contains("pw@"));
        }
    }

    /// What the crate's TLS features give the source's own client.
    #[test]
    fn the_default_client_follows_the_tls_features() {
        let credentials = || crate::LwaCredentials::new("id", "secret", "Atzr|refresh");
        let to_amazon = SpApiTokenSource::builder()
            .credentials(credentials())
            .build();
        let to_loopback = SpApiTokenSource::builder()
            .credentials(credentials())
            .lwa_url("http://127.0.0.1:9/token")
            .build();
        let any_tls = cfg!(any(
            feature = "rustls",
            feature = "rustls-no-provider",
            feature = "native-tls"
        ));
        let provider_needed = cfg!(all(
            feature = "rustls-no-provider",
            not(feature = "rustls"),
            not(feature = "native-tls")
        ));
        if !any_tls {
            // No TLS: Amazon's https endpoint could never be reached; plain loopback still can.
            assert!(matches!(to_amazon, Err(SourceBuildError::NoTls)));
            assert!(to_loopback.is_ok());
        } else if provider_needed {
            // No provider is installed in this test process: a typed error, not reqwest's panic.
            assert!(matches!(to_amazon, Err(SourceBuildError::NoCryptoProvider)));
        } else {
            assert!(to_amazon.is_ok() && to_loopback.is_ok());
        }
    }
}

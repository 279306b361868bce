//! Building an [`SpApiTokenSource`](super::SpApiTokenSource): endpoints, credentials, the HTTP client
//! and its TLS, checked once.

use std::sync::Arc;
use std::time::Duration;

use crate::error::SourceBuildError;
use crate::resource::SellerId;
use crate::source::lwa::{LwaCache, LwaCredentials, LwaEndpoint};

use super::Inner;
use super::SpApiTokenSource;

/// Builds an [`SpApiTokenSource`]; from [`SpApiTokenSource::builder`].
#[derive(Debug)]
pub struct SpApiTokenSourceBuilder {
    pub(super) sellers: Vec<(SellerId, LwaCredentials)>,
    pub(super) lwa_url: String,
    pub(super) client: Option<reqwest::Client>,
    pub(super) request_timeout: Duration,
    pub(super) lwa_refresh_margin: Duration,
}

impl SpApiTokenSourceBuilder {
    /// The default seller's credentials (for requests that name no [`SellerId`]).
    #[must_use]
    pub fn credentials(self, credentials: LwaCredentials) -> Self {
        self.seller(SellerId::default(), credentials)
    }

    /// A seller's credentials. Giving a seller twice keeps the last.
    #[must_use]
    pub fn seller(mut self, seller: SellerId, credentials: LwaCredentials) -> Self {
        self.sellers.push((seller, credentials));
        self
    }

    /// The LWA token endpoint ([`SpApiTokenSource::DEFAULT_LWA_URL`] unless set): an `https` URL,
    /// or `http` on a loopback host (an emulator).
    #[must_use]
    pub fn lwa_url(mut self, url: impl Into<String>) -> Self {
        self.lwa_url = url.into();
        self
    }

    /// The HTTP client to use instead of the one built here (which follows no redirects, and uses
    /// the TLS the crate's features chose: see the crate docs' "TLS" section). Build yours with
    /// `reqwest::redirect::Policy::none()` too. Its own timeouts apply on top of
    /// [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// How long one HTTP call may take, connection included
    /// ([`SpApiTokenSource::DEFAULT_REQUEST_TIMEOUT`] unless set). Past it, the call fails as a
    /// transient error.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long before its expiry an LWA access token is refreshed
    /// ([`SpApiTokenSource::DEFAULT_LWA_REFRESH_MARGIN`] unless set). Whatever the margin, a token
    /// is used for at least half its life.
    #[must_use]
    pub fn lwa_refresh_margin(mut self, margin: Duration) -> Self {
        self.lwa_refresh_margin = margin;
        self
    }

    /// Checks the settings and builds the source.
    pub fn build(self) -> Result<SpApiTokenSource, SourceBuildError> {
        let lwa_url = check_lwa_url(&self.lwa_url)?;
        if self.sellers.is_empty() {
            return Err(SourceBuildError::NoCredentials);
        }
        if self.request_timeout.is_zero() {
            return Err(SourceBuildError::ZeroTimeout);
        }
        let client = match self.client {
            Some(client) => client,
            None => default_client(&lwa_url)?,
        };
        let lwa = LwaCache::new(self.lwa_refresh_margin);
        for (seller, credentials) in self.sellers {
            lwa.insert(seller, credentials);
        }
        Ok(SpApiTokenSource {
            inner: Arc::new(Inner {
                lwa_endpoint: LwaEndpoint {
                    client: client.clone(),
                    url: lwa_url,
                    timeout: self.request_timeout,
                },
                client,
                timeout: self.request_timeout,
                lwa,
            }),
        })
    }
}

/// The client the source builds when it is given none: no redirects, and the TLS the crate's
/// features chose.
fn default_client(lwa_url: &reqwest::Url) -> Result<reqwest::Client, SourceBuildError> {
    const ANY_TLS: bool = cfg!(any(
        feature = "rustls",
        feature = "rustls-no-provider",
        feature = "native-tls"
    ));
    if !ANY_TLS && lwa_url.scheme() == "https" {
        return Err(SourceBuildError::NoTls);
    }
    // reqwest panics when it has rustls without a provider and finds none installed; say so first.
    #[cfg(all(
        feature = "rustls-no-provider",
        not(feature = "rustls"),
        not(feature = "native-tls")
    ))]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(SourceBuildError::NoCryptoProvider);
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "spapi-rdt/",
            env!("CARGO_PKG_VERSION"),
            " (Language=Rust)"
        ))
        .build()
        .map_err(SourceBuildError::HttpClient)
}

pub(super) fn check_lwa_url(input: &str) -> Result<reqwest::Url, SourceBuildError> {
    let err = |reason| SourceBuildError::InvalidLwaUrl {
        url: if input.contains('@') {
            "<not shown: it holds user information>".to_owned()
        } else {
            input.chars().take(200).collect()
        },
        reason,
    };
    let url = reqwest::Url::parse(input).map_err(|_| err("not an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("user information is not allowed"));
    }
    let host = url.host_str().ok_or_else(|| err("no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if crate::resource::is_loopback(host) => {}
        "http" => return Err(err("plain http is allowed only on a loopback host")),
        _ => return Err(err("the scheme must be https (or http on loopback)")),
    }
    Ok(url)
}

//! What a token is asked for: sellers, origins, restricted resources and token requests.

use std::fmt;
use std::sync::Arc;

use http::Method;

use crate::catalog::DataElements;
use crate::error::OriginError;

/// Who a token is for: one seller authorization (selling partner account + application).
///
/// One layer serves many sellers; put a `SellerId` in a request's extensions to say which seller the
/// request is made for. Requests without one use the layer's default seller
/// ([`SellerId::DEFAULT_NAME`] unless configured). The id is an opaque name of your choosing (a
/// selling partner id, a tenant id): never a secret, since it appears in logs and cache keys.
///
/// ```
/// use spapi_rdt::SellerId;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(SellerId::new("A2EUQ1WTGCTBG2"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SellerId(Arc<str>);

impl SellerId {
    /// The name of the seller used when a request names none.
    pub const DEFAULT_NAME: &'static str = "default";

    /// A seller id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        SellerId(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SellerId {
    fn default() -> Self {
        SellerId::new(SellerId::DEFAULT_NAME)
    }
}

impl fmt::Debug for SellerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SellerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SellerId {
    fn from(id: &str) -> Self {
        SellerId::new(id)
    }
}

impl From<String> for SellerId {
    fn from(id: String) -> Self {
        SellerId::new(id)
    }
}

/// An SP-API origin: scheme, host and port, such as `https://sellingpartnerapi-na.amazon.com`.
///
/// The Tokens API must be called on the same origin as the restricted call, so every token request
/// names one. Build the official ones with [`Region`]; parse others (an emulator on loopback) with
/// [`Origin::parse`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    // Normalized: lower-case scheme and host, default port omitted, no trailing slash.
    text: Arc<str>,
    https: bool,
    host_len: usize,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed). Only `https`, or `http` on a
    /// loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), is accepted: a token never travels in
    /// clear text over a network.
    pub fn parse(input: &str) -> Result<Self, OriginError> {
        let err = |reason| OriginError {
            input: input.chars().take(200).collect(),
            reason,
        };
        let uri: http::Uri = input.parse().map_err(|_| err("not a URI"))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return Err(err("the scheme must be https (or http on loopback)")),
        };
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user information is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(err("an origin has no path or query"));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(err("no host"));
        }
        if !https && !is_loopback(&host) {
            return Err(err("plain http is allowed only on a loopback host"));
        }
        let default_port = if https { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        Ok(Origin::from_parts(https, &host, port))
    }

    fn from_parts(https: bool, host: &str, port: u16) -> Self {
        let scheme = if https { "https" } else { "http" };
        let default_port = if https { 443 } else { 80 };
        let text = if port == default_port {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        Origin {
            text: text.into(),
            https,
            host_len: host.len(),
            port,
        }
    }

    /// The origin as a string, without a trailing slash: prefix it to a path to make a URL.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host, lower-case.
    pub fn host(&self) -> &str {
        let start = if self.https { 8 } else { 7 };
        &self.text[start..start + self.host_len]
    }

    /// The port (443 or 80 when the origin names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Whether this is one of Amazon's sandbox hosts (`sandbox.sellingpartnerapi-*.amazon.com`).
    pub fn is_sandbox(&self) -> bool {
        self.host().starts_with("sandbox.")
    }

    /// Whether a request URI's scheme, host and port are this origin's. Allocation-free, and it
    /// compares the authority as a string rather than parsing it again.
    #[inline]
    pub fn matches_uri(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => return false,
        };
        if https != self.https {
            return false;
        }
        let Some(authority) = uri.authority() else {
            return false;
        };
        let given = authority.as_str();
        let start = if self.https { 8 } else { 7 };
        // `host` or `host:port`, as this origin writes it.
        let ours = &self.text[start..];
        if given.eq_ignore_ascii_case(ours) {
            return true;
        }
        // The default port may be spelled out: `host:443`.
        let default_port = if self.https { "443" } else { "80" };
        ours.len() == self.host_len
            && given.len() == ours.len() + 1 + default_port.len()
            && given.as_bytes().get(ours.len()) == Some(&b':')
            && given
                .get(..ours.len())
                .is_some_and(|host| host.eq_ignore_ascii_case(ours))
            && given.get(ours.len() + 1..) == Some(default_port)
    }
}

pub(crate) fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Origin {
    type Err = OriginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::parse(s)
    }
}

/// Amazon's SP-API regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// North America: `sellingpartnerapi-na.amazon.com`.
    NorthAmerica,
    /// Europe (and India, Turkey, the Middle East, Africa): `sellingpartnerapi-eu.amazon.com`.
    Europe,
    /// Far East: `sellingpartnerapi-fe.amazon.com`.
    FarEast,
}

impl Region {
    /// Every region.
    pub const ALL: [Region; 3] = [Region::NorthAmerica, Region::Europe, Region::FarEast];

    /// The production host.
    pub const fn host(self) -> &'static str {
        match self {
            Region::NorthAmerica => "sellingpartnerapi-na.amazon.com",
            Region::Europe => "sellingpartnerapi-eu.amazon.com",
            Region::FarEast => "sellingpartnerapi-fe.amazon.com",
        }
    }

    /// The sandbox host.
    pub const fn sandbox_host(self) -> &'static str {
        match self {
            Region::NorthAmerica => "sandbox.sellingpartnerapi-na.amazon.com",
            Region::Europe => "sandbox.sellingpartnerapi-eu.amazon.com",
            Region::FarEast => "sandbox.sellingpartnerapi-fe.amazon.com",
        }
    }

    /// The production origin, `https://<host>`.
    pub fn origin(self) -> Origin {
        Origin::from_parts(true, self.host(), 443)
    }

    /// The sandbox origin, `https://<sandbox host>`.
    pub fn sandbox_origin(self) -> Origin {
        Origin::from_parts(true, self.sandbox_host(), 443)
    }
}

/// One entry of a token request's `restrictedResources`: a method, a path (generic template or
/// specific path) and the data elements asked for.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RestrictedResource {
    method: Method,
    path: Arc<str>,
    data_elements: DataElements,
}

impl RestrictedResource {
    /// A resource. The layer builds these from the catalogue; build one yourself only for a custom
    /// source or a test.
    pub fn new(method: Method, path: impl Into<Arc<str>>, data_elements: DataElements) -> Self {
        RestrictedResource {
            method,
            path: path.into(),
            data_elements,
        }
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path: a template with placeholders, or a specific path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The data elements asked for (empty for most operations).
    pub fn data_elements(&self) -> DataElements {
        self.data_elements
    }
}

impl fmt::Debug for RestrictedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.data_elements.is_empty() {
            write!(f, " {:?}", self.data_elements)?;
        }
        Ok(())
    }
}

/// What a [`TokenSource`](crate::TokenSource) is asked for: one token covering every resource, for
/// one seller, on one origin, optionally for another application (delegation).
///
/// Resources are kept in canonical order (sorted, no duplicates), so equal requests compare equal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    seller: SellerId,
    origin: Origin,
    resources: Vec<RestrictedResource>,
    target_application: Option<Arc<str>>,
}

impl TokenRequest {
    /// The most resources Amazon accepts in one token request.
    pub const MAX_RESOURCES: usize = 50;

    /// A request for `resources` (sorted and deduplicated here).
    pub fn new(
        seller: SellerId,
        origin: Origin,
        resources: impl IntoIterator<Item = RestrictedResource>,
    ) -> Self {
        let mut resources: Vec<_> = resources.into_iter().collect();
        resources.sort();
        resources.dedup();
        TokenRequest {
            seller,
            origin,
            resources,
            target_application: None,
        }
    }

    /// Asks for a token that application `app_id` will use (delegation). Leave it unset otherwise:
    /// Amazon answers a wrong target application with a misleading 400.
    #[must_use]
    pub fn with_target_application(mut self, app_id: impl Into<Arc<str>>) -> Self {
        self.target_application = Some(app_id.into());
        self
    }

    /// The seller.
    pub fn seller(&self) -> &SellerId {
        &self.seller
    }

    /// The origin the restricted call goes to, and so the one to ask for the token.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The resources, in canonical order.
    pub fn resources(&self) -> &[RestrictedResource] {
        &self.resources
    }

    /// The application the token is for, when delegating.
    pub fn target_application(&self) -> Option<&str> {
        self.target_application.as_deref()
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TokenRequest");
        d.field("seller", &self.seller)
            .field("origin", &self.origin)
            .field("resources", &self.resources);
        if let Some(app) = &self.target_application {
            d.field("target_application", app);
        }
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_and_checked() {
        let o = Origin::parse("HTTPS://SellingPartnerAPI-NA.amazon.com:443/").unwrap();
        assert_eq!(o, Region::NorthAmerica.origin());
        assert_eq!(o.as_str(), "https://sellingpartnerapi-na.amazon.com");
        assert_eq!(o.host(), "sellingpartnerapi-na.amazon.com");
        let local = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(local.as_str(), "http://127.0.0.1:8080");
        assert_eq!(local.host(), "127.0.0.1");
        assert!(Origin::parse("http://[::1]:1").is_ok());
        assert!(Origin::parse("http://localhost").is_ok());
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "ftp://x",
            "https://u:p@h",
            "https://h/path",
            "",
            "/relative",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert!(Region::Europe.sandbox_origin().is_sandbox());
        assert!(!Region::Europe.origin().is_sandbox());
    }

    #[test]
    fn origin_matches_uris() {
        let o = Region::FarEast.origin();
        let yes: http::Uri = "https://SELLINGPARTNERAPI-FE.amazon.com:443/orders/v0/orders"
            .parse()
            .unwrap();
        assert!(o.matches_uri(&yes));
        for no in [
            "http://sellingpartnerapi-fe.amazon.com/x",
            "https://sellingpartnerapi-fe.amazon.com:8443/x",
            "https://sellingpartnerapi-fe.amazon.com.evil.example/x",
            "/orders/v0/orders",
        ] {
            assert!(!o.matches_uri(&no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn token_requests_are_canonical() {
        let a = RestrictedResource::new(Method::GET, "/b", DataElements::NONE);
        let b = RestrictedResource::new(Method::GET, "/a", DataElements::NONE);
        let r1 = TokenRequest::new(
            SellerId::default(),
            Region::Europe.origin(),
            [a.clone(), b.clone(), a.clone()],
        );
        let r2 = TokenRequest::new(SellerId::default(), Region::Europe.origin(), [b, a]);
        assert_eq!(r1, r2);
        assert_eq!(r1.resources().len(), 2);
        assert_eq!(r1.resources()[0].path(), "/a");
    }
}

//! Where tokens may go: the host allow-list, look-alike hosts, redirects followed by HTTP clients
//! below the layer (which the layer cannot see), and plain-http origins.
//!
//! What the redirect tests pin down (run with `--nocapture` to see the table):
//!
//! - The layer decides per request it is given. A client *below* it that follows a redirect sends
//!   the redirected request with the headers of the first one, `x-amz-access-token` included,
//!   and the layer never sees that second request.
//! - reqwest's default policy (`redirect::Policy::default()`, up to 10 hops) removes only
//!   `Authorization`, `Cookie`, `Proxy-Authorization` and `WWW-Authenticate` on a cross-host
//!   redirect: it forwards the RDT to the redirect target, for 301, 302, 303, 307 and 308. Through
//!   the reqwest-middleware front end too, since the client's redirects happen below it.
//! - tower-http's `FollowRedirect` with its `Standard` policy filters the same few headers: below
//!   the layer it forwards the RDT; above the layer each hop goes through the layer again, and the
//!   target (not an allowed origin) gets nothing.
//! - Safe below the layer: reqwest with `Policy::none()` or a policy that stops at another origin,
//!   and hyper-util's client (it follows no redirect).
//! - `SpApiTokenSource`'s own client follows no redirect. A client handed to it with
//!   `http_client` and reqwest's default policy forwards the LWA access token to a Tokens API
//!   redirect target and re-sends the LWA form (refresh token and client secret) to an LWA
//!   redirect target on 307/308.

use crate::support::common;
use crate::support::stack;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::BodyExt;
use spapi_rdt::{
    IssuedToken, Origin, RestrictedDataTokenLayer, RestrictedResource, SecretToken, SellerId,
    SpApiTokenSource, TokenRequest, TokenSource, error::ErrorKind, error::SourceError, source_fn,
};
use spapi_rdt_emulator::Emulator;
use stack::Upstream;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

/// The token the test source issues: its value must never reach a host that is not allowed.
const RDT: &str = "Atz.sprdt|security-test-secret-rdt";
const ADDRESS: &str = "/orders/v0/orders/902-3159896-1390916/address";

/// A token source issuing [`RDT`] and counting its calls.
fn counting_source() -> (impl TokenSource + Clone, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source = source_fn(move |_request: TokenRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            let token = SecretToken::new(RDT).map_err(SourceError::permanent)?;
            Ok(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    });
    (source, calls)
}

/// What a [`Server`] received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    token: Option<String>,
    body: String,
}

/// A local HTTP server that records every request; when `redirect` is set it answers every request
/// with that status and `Location: <target><path and query>`, otherwise 200.
struct Server {
    origin: Origin,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(redirect: Option<(StatusCode, String)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = Arc::clone(&received);
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = Arc::clone(&log);
            let redirect = redirect.clone();
            async move {
                log.lock().unwrap().push(Received {
                    path: uri.path().to_owned(),
                    token: headers
                        .get("x-amz-access-token")
                        .map(|v| v.to_str().unwrap_or("?").to_owned()),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let mut response = http::Response::new(axum::body::Body::from("{}"));
                if let Some((status, target)) = redirect {
                    *response.status_mut() = status;
                    let location = format!(
                        "{target}{}",
                        uri.path_and_query().map_or("/", |p| p.as_str())
                    );
                    response
                        .headers_mut()
                        .insert(http::header::LOCATION, location.parse().unwrap());
                }
                response
            }
        };
        let app = axum::Router::new().fallback(handler);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            origin,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn tokens(&self) -> Vec<Option<String>> {
        self.received().into_iter().map(|r| r.token).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn get(url: &str) -> http::Request<String> {
    http::Request::get(url).body(String::new()).unwrap()
}

/// A restricted request to a port that is not allowed, or to the allowed port under another name,
/// gets no token and causes no token call.
#[tokio::test]
async fn tokens_go_only_to_the_allowed_origin() {
    let allowed = Server::start(None).await;
    let other = Server::start(None).await;
    let (source, calls) = counting_source();
    let rdt = RestrictedDataTokenLayer::builder(source)
        .allow_origin(allowed.origin.clone())
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(rdt.clone())
        .service(Upstream::new(stack::http_client()));

    let ok = client.clone().oneshot(get(&allowed.url(ADDRESS))).await;
    assert_eq!(ok.unwrap().status(), StatusCode::OK);
    assert_eq!(allowed.tokens(), [Some(RDT.to_owned())]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another port of 127.0.0.1, and the allowed port named `localhost`: other origins.
    let port = allowed.origin.port();
    for url in [
        other.url(ADDRESS),
        other.url("/mfn/v0/shipments/1"),
        format!("http://localhost:{port}/mfn/v0/shipments/2"),
    ] {
        let response = client.clone().oneshot(get(&url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }
    assert_eq!(other.tokens(), [None, None]);
    let via_localhost = allowed.received();
    assert_eq!(via_localhost.len(), 2);
    assert_eq!(via_localhost[1].path, "/mfn/v0/shipments/2");
    assert_eq!(via_localhost[1].token, None);
    // No token was fetched for them either.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(rdt.stats().fetches, 1);
}

/// Hosts that look like an SP-API origin, or like the allowed loopback one, get no token; the
/// genuine ones (in any letter case, with an explicit default port) do.
#[tokio::test]
async fn look_alike_hosts_get_no_token() {
    let (source, calls) = counting_source();
    let local = Origin::parse("http://127.0.0.1:8123").unwrap();
    let rdt = RestrictedDataTokenLayer::builder(source)
        .allow_origin(local)
        .build()
        .unwrap();
    let client = tower::Layer::layer(&rdt, common::echo_token());
    let refused = [
        "https://sellingpartnerapi-na.amazon.com.evil.example",
        "https://evil-sellingpartnerapi-na.amazon.com",
        "https://sellingpartnerapi-na.amazon.co",
        "https://sellingpartnerapi-na.amazon.com.",
        "https://sellingpartnerapi-na.amazon.com:8443",
        "https://sellingpartnerapi-na.amazon.com:80",
        "http://sellingpartnerapi-na.amazon.com",
        "http://sellingpartnerapi-na.amazon.com:443",
        "https://sellingpartnerapi-na.amazon.com@evil.example",
        "https://evil.example@sellingpartnerapi-na.amazon.co",
        "https://sellingpartnerapi-xx.amazon.com",
        "https://api.amazon.com",
        "https://127.0.0.1:8123",
        "http://127.0.0.1:8124",
        "http://127.0.0.1",
        "http://127.0.0.2:8123",
        "http://localhost:8123",
        "http://[::1]:8123",
        "http://2130706433:8123",
    ];
    let mut unparsable = Vec::new();
    for base in refused {
        // A URI that http cannot even parse never reaches a layer; it is listed, not skipped.
        let Ok(request) = http::Request::get(format!("{base}{ADDRESS}")).body(()) else {
            unparsable.push(base);
            continue;
        };
        assert_eq!(
            client.clone().oneshot(request).await.unwrap(),
            "none",
            "{base}"
        );
    }
    assert_eq!(unparsable, [] as [&str; 0], "these never reached the layer");
    // A request with no authority at all (a relative URI).
    let relative = http::Request::get(ADDRESS).body(()).unwrap();
    assert_eq!(client.clone().oneshot(relative).await.unwrap(), "none");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let accepted = [
        "https://sellingpartnerapi-na.amazon.com",
        "HTTPS://SELLINGPARTNERAPI-NA.AMAZON.COM",
        "https://sellingpartnerapi-na.amazon.com:443",
        "https://sellingpartnerapi-eu.amazon.com",
        "https://sellingpartnerapi-fe.amazon.com",
        "http://127.0.0.1:8123",
    ];
    for base in accepted {
        let request = http::Request::get(format!("{base}{ADDRESS}"))
            .body(())
            .unwrap();
        assert_eq!(
            client.clone().oneshot(request).await.unwrap(),
            RDT,
            "{base}"
        );
    }
}

/// Plain `http://` is accepted only on loopback hosts, however the host is spelt.
#[test]
fn plain_http_origins_are_refused_off_loopback() {
    for bad in [
        "http://sellingpartnerapi-na.amazon.com",
        "http://SELLINGPARTNERAPI-EU.AMAZON.COM:80",
        "http://192.168.1.10:8080",
        "http://10.0.0.1",
        "http://0.0.0.0:8080",
        "http://[::]:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://localhost.",
        "http://127.1",
        "http://2130706433",
        "http://0x7f000001",
        "http://example.com@127.0.0.1",
        "http://127.0.0.1@example.com",
        "ws://127.0.0.1:1",
    ] {
        let err = Origin::parse(bad).unwrap_err();
        assert!(!err.to_string().is_empty(), "{bad}");
    }
    for good in [
        "http://127.0.0.1:1",
        "http://127.8.9.10",
        "http://localhost:8080",
        "HTTP://LOCALHOST",
        "http://[::1]",
        "https://sellingpartnerapi-na.amazon.com",
        "https://10.0.0.1:8443",
    ] {
        let origin = Origin::parse(good).unwrap();
        assert_eq!(
            origin.is_https(),
            good.to_ascii_lowercase().starts_with("https"),
            "{good}"
        );
    }
}

/// How a client below (or above) the layer treats a redirect from the allowed origin to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    ReqwestDefault,
    ReqwestNone,
    ReqwestSameOrigin,
    HyperUtil,
    MiddlewareOverReqwestDefault,
    FollowRedirectBelowLayer,
    FollowRedirectAboveLayer,
}

impl Client {
    const ALL: [Client; 7] = [
        Client::ReqwestDefault,
        Client::ReqwestNone,
        Client::ReqwestSameOrigin,
        Client::HyperUtil,
        Client::MiddlewareOverReqwestDefault,
        Client::FollowRedirectBelowLayer,
        Client::FollowRedirectAboveLayer,
    ];

    fn describe(self) -> &'static str {
        match self {
            Client::ReqwestDefault => "layer over reqwest, `redirect::Policy::default()`",
            Client::ReqwestNone => "layer over reqwest, `redirect::Policy::none()`",
            Client::ReqwestSameOrigin => {
                "layer over reqwest, `Policy::custom` stopping at another origin"
            }
            Client::HyperUtil => "layer over hyper-util `client::legacy::Client`",
            Client::MiddlewareOverReqwestDefault => {
                "reqwest-middleware front end, reqwest `Policy::default()`"
            }
            Client::FollowRedirectBelowLayer => {
                "layer over tower-http `FollowRedirect` (Standard) over reqwest `none()`"
            }
            Client::FollowRedirectAboveLayer => {
                "tower-http `FollowRedirect` (Standard) over layer over reqwest `none()`"
            }
        }
    }

    /// Whether the redirect target gets the token (what the test pins).
    fn leaks(self) -> bool {
        matches!(
            self,
            Client::ReqwestDefault
                | Client::MiddlewareOverReqwestDefault
                | Client::FollowRedirectBelowLayer
        )
    }
}

/// reqwest with a policy that follows redirects within the origin of the previous hop only.
fn same_origin_reqwest() -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().last().is_some_and(|previous| {
            let next = attempt.url();
            previous.scheme() == next.scheme()
                && previous.host_str() == next.host_str()
                && previous.port_or_known_default() == next.port_or_known_default()
        });
        if same && attempt.previous().len() < 10 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder().redirect(policy).build().unwrap()
}

/// Sends one restricted GET to `url` through the stack `client` describes; returns the final status.
async fn send_through(client: Client, rdt: &RestrictedDataTokenLayer, url: &str) -> u16 {
    let reqwest_default = || reqwest::Client::builder().build().unwrap();
    let via_upstream = |http: reqwest::Client| {
        ServiceBuilder::new()
            .layer(rdt.clone())
            .service(Upstream::new(http))
    };
    let response = match client {
        Client::ReqwestDefault => via_upstream(reqwest_default()).oneshot(get(url)).await,
        Client::ReqwestNone => via_upstream(stack::http_client()).oneshot(get(url)).await,
        Client::ReqwestSameOrigin => via_upstream(same_origin_reqwest()).oneshot(get(url)).await,
        Client::HyperUtil => {
            let hyper =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<String>();
            let service = ServiceBuilder::new().layer(rdt.clone()).service(hyper);
            let response = service.oneshot(get(url)).await.unwrap();
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            return status;
        }
        Client::MiddlewareOverReqwestDefault => {
            let client = reqwest_middleware::ClientBuilder::new(reqwest_default())
                .with(rdt.middleware())
                .build();
            let response = client.get(url).send().await.unwrap();
            return response.status().as_u16();
        }
        Client::FollowRedirectBelowLayer => {
            ServiceBuilder::new()
                .layer(rdt.clone())
                .layer(tower_http::follow_redirect::FollowRedirectLayer::new())
                .service(Upstream::new(stack::http_client()))
                .oneshot(get(url))
                .await
        }
        Client::FollowRedirectAboveLayer => {
            ServiceBuilder::new()
                .layer(tower_http::follow_redirect::FollowRedirectLayer::new())
                .layer(rdt.clone())
                .service(Upstream::new(stack::http_client()))
                .oneshot(get(url))
                .await
        }
    };
    response.unwrap().status().as_u16()
}

/// The allowed origin redirects a restricted call to another local server: which clients carry
/// the token there. The layer cannot see redirects followed below it; this pins what each common
/// client does, so that a change shows.
#[tokio::test]
async fn redirects_followed_below_the_layer_carry_the_token() {
    let mut table = String::from("| stack | redirect | target got the RDT | final status |\n");
    table.push_str("| --- | --- | --- | --- |\n");
    let mut wrong = Vec::new();
    for client in Client::ALL {
        for status in [301u16, 302, 303, 307, 308] {
            let target = Server::start(None).await;
            let redirector = Server::start(Some((
                StatusCode::from_u16(status).unwrap(),
                target.origin.to_string(),
            )))
            .await;
            let (source, _calls) = counting_source();
            let rdt = RestrictedDataTokenLayer::builder(source)
                .allow_origin(redirector.origin.clone())
                .build()
                .unwrap();
            let final_status = tokio::time::timeout(
                Duration::from_secs(30),
                send_through(client, &rdt, &redirector.url(ADDRESS)),
            )
            .await
            .expect("hung");
            // The allowed origin always got the token.
            assert_eq!(redirector.tokens(), [Some(RDT.to_owned())], "{client:?}");
            let arrived = target.received();
            let leaked = arrived.iter().any(|r| r.token.as_deref() == Some(RDT));
            let _ = writeln!(
                table,
                "| {} | {status} | {} | {final_status} |",
                client.describe(),
                match (arrived.is_empty(), leaked) {
                    (true, _) => "not followed",
                    (false, true) => "YES",
                    (false, false) => "no (followed without it)",
                },
            );
            if leaked != client.leaks() {
                wrong.push(format!("{client:?} {status}: leaked = {leaked}"));
            }
            // A client that did not follow returned the redirect itself.
            if arrived.is_empty() {
                assert_eq!(final_status, status, "{client:?}");
            }
        }
    }
    println!("\n{table}");
    assert!(wrong.is_empty(), "{wrong:?}\n{table}");
}

/// The token source's own HTTP client follows no redirect: a redirect from the Tokens API or from
/// LWA is a permanent error naming it, and the redirect target gets nothing. A client given with
/// `http_client` that follows redirects (reqwest's default) sends the target the LWA access token
/// (Tokens API redirect) or the LWA form with the refresh token and client secret (LWA 307).
#[tokio::test]
async fn the_token_source_follows_no_redirect() {
    let em = Emulator::start().await.unwrap();
    let refresh = em.refresh_token("default").unwrap();
    let secret = em.client_secret().to_owned();
    let request = |origin: &Origin| {
        TokenRequest::new(
            SellerId::default(),
            origin.clone(),
            [RestrictedResource::new(
                Method::GET,
                "/orders/v0/orders/{orderId}/address",
                spapi_rdt::catalog::DataElements::NONE,
            )],
        )
    };
    let build = |lwa_url: String, client: Option<reqwest::Client>| {
        let builder = SpApiTokenSource::builder()
            .credentials(stack::credentials(&em, "default"))
            .lwa_url(lwa_url)
            .request_timeout(Duration::from_secs(5));
        match client {
            Some(c) => builder.http_client(c),
            None => builder,
        }
        .build()
        .unwrap()
    };

    // The Tokens API redirects.
    let target = Server::start(None).await;
    let redirector = Server::start(Some((
        StatusCode::TEMPORARY_REDIRECT,
        target.origin.to_string(),
    )))
    .await;
    let source = build(em.lwa_url(), None);
    let err = source.fetch(request(&redirector.origin)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert_eq!(err.status(), Some(StatusCode::TEMPORARY_REDIRECT));
    assert!(err.to_string().contains("redirect"), "{err}");
    assert!(target.received().is_empty());
    assert_eq!(redirector.received().len(), 1);

    // LWA redirects.
    let lwa_target = Server::start(None).await;
    let lwa_redirector = Server::start(Some((
        StatusCode::TEMPORARY_REDIRECT,
        lwa_target.origin.to_string(),
    )))
    .await;
    let source = build(lwa_redirector.url("/auth/o2/token"), None);
    let err = source.fetch(request(&em.origin())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert_eq!(err.status(), Some(StatusCode::TEMPORARY_REDIRECT));
    assert!(lwa_target.received().is_empty());
    assert!(!format!("{err} {err:?}").contains(&refresh));

    // The hazard of a caller's client that follows redirects (reqwest's default policy).
    let following = reqwest::Client::builder().build().unwrap();
    let source = build(em.lwa_url(), Some(following.clone()));
    let _ = source.fetch(request(&redirector.origin)).await;
    let forwarded = target.received();
    assert_eq!(forwarded.len(), 1);
    let lwa_token = forwarded[0].token.clone().unwrap_or_default();
    assert!(
        lwa_token.starts_with("Atza|"),
        "the Tokens API redirect target got the LWA access token"
    );
    let source = build(lwa_redirector.url("/auth/o2/token"), Some(following));
    let _ = source.fetch(request(&em.origin())).await;
    let forwarded = lwa_target.received();
    assert_eq!(forwarded.len(), 1);
    let form = &forwarded[0].body;
    assert!(
        form.contains("refresh_token=") && form.contains("client_secret="),
        "the LWA redirect target got the form: {}",
        form.len()
    );
    // The values are there, form-encoded (`|` as %7C).
    let encoded_refresh = refresh.replace('|', "%7C");
    assert!(form.contains(&encoded_refresh) || form.contains(&refresh));
    assert!(form.contains(&secret));
}

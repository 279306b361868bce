//! The full stack the reliability and security tests drive: `RestrictedDataTokenLayer` over
//! `SpApiTokenSource`, with a real HTTP client (reqwest) below the layer, all against servers on
//! 127.0.0.1 (the emulator, a TCP forwarder that can be switched off, recording servers).
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use spapi_rdt::{
    BoxError, LwaCredentials, Origin, RestrictedDataTokenLayer, SellerId, SpApiTokenSource,
};
use spapi_rdt_emulator::Emulator;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A restricted operation the emulator serves: `getOrderAddress`.
pub const ADDRESS: &str = "/orders/v0/orders/902-3159896-1390916/address";

/// The emulator's credentials for `seller` (its refresh token as configured).
pub fn credentials(em: &Emulator, seller: &str) -> LwaCredentials {
    let refresh = em
        .refresh_token(seller)
        .expect("a seller the emulator knows");
    LwaCredentials::new(em.client_id(), em.client_secret(), refresh)
}

/// An `SpApiTokenSource` for one seller of the emulator, with `timeout` per HTTP call.
pub fn source(
    em: &Emulator,
    seller: &str,
    credentials: LwaCredentials,
    timeout: Duration,
    client: Option<reqwest::Client>,
) -> SpApiTokenSource {
    let builder = SpApiTokenSource::builder()
        .seller(SellerId::new(seller), credentials)
        .lwa_url(em.lwa_url())
        .request_timeout(timeout);
    let builder = match client {
        Some(client) => builder.http_client(client),
        None => builder,
    };
    builder.build().unwrap()
}

/// The token layer for the emulator's default seller, tokens allowed to the emulator's origin.
pub fn default_seller_layer(em: &Emulator) -> RestrictedDataTokenLayer {
    let source = source(
        em,
        "default",
        credentials(em, "default"),
        Duration::from_secs(30),
        None,
    );
    RestrictedDataTokenLayer::builder(source)
        .allow_origin(em.origin())
        .build()
        .unwrap()
}

/// A plain HTTP/1 client below the layer, like an application's: no redirects unless asked.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What the upstream (the HTTP client below the layer) saw and answered.
#[derive(Clone, Debug)]
pub struct Sent {
    pub token: Option<String>,
    pub status: u16,
}

/// The HTTP client as a tower service below the layer: `http::Request<String>` in,
/// `http::Response<String>` out. It records the `x-amz-access-token` each request carried (what
/// the layer injected) and, when `base` is set, sends every request to that base URL whatever
/// its authority (a client configured with a fixed endpoint).
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base: Option<String>,
    pub sent: Arc<Mutex<Vec<Sent>>>,
}

impl Upstream {
    pub fn new(client: reqwest::Client) -> Self {
        Upstream {
            client,
            base: None,
            sent: Arc::default(),
        }
    }

    /// Sends every request to `base` (scheme, host, port) instead of its own authority.
    pub fn with_base(mut self, base: impl Into<String>) -> Self {
        self.base = Some(base.into());
        self
    }

    /// Every token value the layer injected, in order.
    pub fn tokens(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.token.clone())
            .collect()
    }

    pub fn last_token(&self) -> Option<String> {
        self.sent
            .lock()
            .unwrap()
            .last()
            .and_then(|s| s.token.clone())
    }
}

impl tower::Service<http::Request<String>> for Upstream {
    type Response = http::Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<String>) -> Self::Future {
        let client = self.client.clone();
        let sent = Arc::clone(&self.sent);
        let url = match &self.base {
            Some(base) => format!(
                "{base}{}",
                request.uri().path_and_query().map_or("/", |p| p.as_str())
            ),
            None => request.uri().to_string(),
        };
        Box::pin(async move {
            let token = request
                .headers()
                .get("x-amz-access-token")
                .map(|v| v.to_str().unwrap_or("<not text>").to_owned());
            let (parts, body) = request.into_parts();
            let response = client
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    sent.lock().unwrap().push(Sent { token, status: 0 });
                    return Err(e.into());
                }
            };
            let status = response.status();
            sent.lock().unwrap().push(Sent {
                token,
                status: status.as_u16(),
            });
            let mut out = http::Response::builder().status(status);
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            let text = response.text().await.unwrap_or_default();
            Ok(out.body(text)?)
        })
    }
}

/// A GET request for `path` on `origin`.
pub fn get(origin: &Origin, path: &str) -> http::Request<String> {
    http::Request::get(format!("{origin}{path}"))
        .body(String::new())
        .unwrap()
}

#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use super::dead_port::{DeadPort, dead_port};

/// A TCP forwarder on 127.0.0.1 to `target`, which can be switched off (afterwards its port
/// refuses connections, and the connections it carried are cut) or made to answer every new
/// connection with a response cut in the middle of its body.
pub struct Forwarder {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    cut: Arc<AtomicBool>,
    /// After `close`: a socket bound to the forwarder's port that never listens, so the port keeps
    /// refusing connections and no other test's listener can take it.
    closed: Mutex<Option<tokio::net::TcpSocket>>,
}

/// What a cut answer sends before closing: a complete head announcing 512 bytes, then 40.
pub const CUT_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 512\r\n\r\n{\"restrictedDataToken\":\"Atz.sprdt|cut-sh";

impl Forwarder {
    pub async fn start(target: SocketAddr) -> Self {
        // SO_REUSEPORT, so that `close` can bind a stand-in to the port before letting it go.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseport(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(128).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = Arc::clone(&connections);
        let cut = Arc::new(AtomicBool::new(false));
        let cutting = Arc::clone(&cut);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let cut = cutting.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if cut {
                        answer_cut(&mut inbound).await;
                    } else if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(task);
            }
        });
        Forwarder {
            addr,
            accept,
            connections,
            cut,
            closed: Mutex::new(None),
        }
    }

    /// From now on, new connections get [`CUT_RESPONSE`] and are closed.
    pub fn cut_mid_body(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn origin(&self) -> Origin {
        Origin::parse(&format!("http://{}", self.addr)).unwrap()
    }

    /// Stops listening and cuts every connection. The port stays bound (see `closed`).
    pub async fn close(&self) {
        let stand_in = tokio::net::TcpSocket::new_v4().unwrap();
        stand_in.set_reuseport(true).unwrap();
        stand_in.bind(self.addr).unwrap();
        *self.closed.lock().unwrap() = Some(stand_in);
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
        // Let the aborted tasks drop their sockets.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one request (head and `content-length` body), answers with [`CUT_RESPONSE`] and closes.
async fn answer_cut(stream: &mut TcpStream) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            break true;
        }
    };
    if complete {
        let _ = stream.write_all(CUT_RESPONSE).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

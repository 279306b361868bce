//! A small load generator on loopback: a fixed number of HTTP/1.1 connections, each sending a fixed
//! number of GET requests one after the other, every latency recorded. Bounded in count by
//! construction; each request is also bounded in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use spapi_rdt::BoxError;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How much load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Connections open at once, each with one request in flight at a time.
    pub connections: usize,
    /// Requests each connection sends.
    pub per_connection: usize,
}

/// What came back.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Every request's time from sending to its whole answer, sorted.
    pub latencies: Vec<Duration>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Answers that said (in `x-emulator-pii`) that they held personal data.
    pub pii_served: usize,
    /// The whole run's time.
    pub elapsed: Duration,
}

impl Outcome {
    /// The latency below which `fraction` (0 to 1) of the requests were answered.
    pub(crate) fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies.len() - 1;
        let index = ((last as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        self.latencies[index.min(last)]
    }

    /// Requests answered.
    pub(crate) fn count(&self) -> usize {
        self.latencies.len()
    }
}

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `load` to `addr`, cycling through `paths`, each request with `headers`.
pub(crate) async fn run(
    addr: SocketAddr,
    paths: &[String],
    headers: &[(HeaderName, HeaderValue)],
    load: Load,
) -> Result<Outcome, BoxError> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.connections);
    for connection in 0..load.connections {
        let paths = paths.to_vec();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            one_connection(addr, connection, &paths, &headers, load.per_connection).await
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        let part = task.await??;
        outcome.latencies.extend(part.latencies);
        outcome.pii_served += part.pii_served;
        for (status, n) in part.statuses {
            *outcome.statuses.entry(status).or_default() += n;
        }
    }
    outcome.latencies.sort_unstable();
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

async fn one_connection(
    addr: SocketAddr,
    connection: usize,
    paths: &[String],
    headers: &[(HeaderName, HeaderValue)],
    requests: usize,
) -> Result<Outcome, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut outcome = Outcome::default();
    for i in 0..requests {
        let path = &paths[(connection + i) % paths.len()];
        let mut request = Request::get(path.as_str()).header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let pii = response
                .headers()
                .get("x-emulator-pii")
                .is_some_and(|v| v == "served");
            response.into_body().collect().await?;
            Ok::<_, BoxError>((status, pii))
        })
        .await
        .map_err(|_| "a request took longer than a minute")??;
        outcome.latencies.push(sent.elapsed());
        *outcome.statuses.entry(answer.0).or_default() += 1;
        outcome.pii_served += usize::from(answer.1);
    }
    drop(sender);
    driver.abort();
    Ok(outcome)
}

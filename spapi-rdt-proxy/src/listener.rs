//! Serving connections, and stopping: when the shutdown future completes (SIGTERM or SIGINT in
//! the binary, a channel in tests), the listener closes at once, connections with nothing in flight
//! are closed, in-flight requests get up to the drain timeout to finish, and serving returns.
//!
//! At most [`Limits::max_connections`] connections are open at once: past it, a new one is closed
//! at accept (counted, never a crash), so that a flood of idle connections cannot take the
//! descriptors the upstream calls need. Each connection lives by [`crate::connections`]' rules
//! (header, idle and age limits).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use spapi_rdt::BoxError;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Settings;
use crate::connections::{self, Activity, Limits, Tracked};
use crate::failure::ResponseBody;
use crate::proxy::App;

/// The least time between two warnings of the same kind ("accept failed", "connection cap").
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Complete,
    /// The drain timeout passed with requests still in flight; they were dropped.
    TimedOut,
}

/// A warning said at most once per [`WARN_EVERY`], with how many times it happened meanwhile.
#[derive(Debug, Default)]
struct Throttled {
    count: u64,
    last: Option<tokio::time::Instant>,
}

impl Throttled {
    /// Counts one more; `Some(count)` when the warning is due.
    fn due(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return None;
        }
        self.last = Some(tokio::time::Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// One client connection's service: each request is in flight on the connection's [`Activity`]
/// until its answer's body ends.
#[derive(Clone)]
struct Client {
    app: App,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

type Answer = Response<Tracked<ResponseBody>>;

impl hyper::service::Service<Request<Incoming>> for Client {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let (app, peer) = (self.app.clone(), self.peer);
        Box::pin(async move {
            let response = app.handle(peer, request).await;
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}

/// Serves connections on `listener` with `app` until `shutdown` completes; then stops accepting,
/// closes connections with nothing in flight, lets in-flight requests finish for up to
/// `limits.drain_timeout`, and returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> Drained {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's timeouts need a timer; without one they are silently off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(limits.http2_keepalive);
    // The cap; a connection holds a permit until its task ends.
    let max_connections = limits
        .max_connections
        .clamp(1, connections::MAX_CONNECTIONS);
    let slots = Arc::new(Semaphore::new(max_connections));
    let gauges = app.connection_metrics(max_connections);
    let (drain, draining) = watch::channel(false);
    let (mut accept_failed, mut capped) = (Throttled::default(), Throttled::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                if let Some(failures) = accept_failed.due() {
                    tracing::warn!(error = %e, failures, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !app.admits(peer.ip()) {
            // Outside the allowed networks: closed before a byte is read (debug only: a refused
            // network must not fill the log).
            app.count_refused_connection("network");
            tracing::debug!(peer = %peer.ip(), "connection from a refused network closed");
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            app.count_refused_connection("connection_cap");
            if let Some(refused) = capped.due() {
                tracing::warn!(
                    max_connections,
                    refused,
                    "connection cap reached: new connections are closed at accept"
                );
            }
            continue;
        };
        let activity = Activity::new();
        let service = Client {
            app: app.clone(),
            activity: Arc::clone(&activity),
            peer,
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let (draining, gauges) = (draining.clone(), gauges.clone());
        gauges.opened();
        tokio::spawn(async move {
            let closed = connections::drive(connection, &activity, draining, &limits).await;
            if let Some(why) = closed {
                tracing::debug!(%peer, why = why.label(), "connection closed");
            }
            gauges.closed(closed);
            drop(slot);
        });
    }
    // No new connections from here on.
    drop(listener);
    let open = max_connections - slots.available_permits();
    tracing::info!(open_connections = open, "draining");
    let _ = drain.send(true);
    // Every connection's task returns its slot when it ends.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all)).await {
        Ok(_) => Drained::Complete,
        Err(_) => Drained::TimedOut,
    }
}

/// Builds the proxy, binds, and serves until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Drained, BoxError> {
    let app = App::new(&settings)?;
    app.verify_fleet().await?;
    let listener = TcpListener::bind(settings.listen).await?;
    let sellers: Vec<&str> = settings.sellers.iter().map(|s| s.id.as_str()).collect();
    tracing::info!(
        listen = %listener.local_addr()?,
        upstream = %settings.upstream,
        sellers = sellers.join(","),
        fleet = settings.fleet.is_some(),
        client_auth = settings.client_auth.is_configured(),
        "serving"
    );
    let drained = serve(listener, app, shutdown, settings.limits()).await;
    match drained {
        Drained::Complete => tracing::info!("drained, stopping"),
        Drained::TimedOut => {
            tracing::warn!("drain timeout passed, stopping with requests in flight")
        }
    }
    Ok(drained)
}

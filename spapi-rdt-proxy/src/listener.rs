//! Serving connections, and stopping: when the shutdown future completes (SIGTERM or SIGINT in
//! the binary, a channel in tests), the listener closes at once, connections with nothing in flight
//! are closed, in-flight requests get up to the drain timeout to finish, and serving returns.
//!
//! At most [`Limits::max_connections`] connections are open at once: past it, a new one is closed
//! at accept (counted, never a crash), so that a flood of idle connections cannot take the
//! descriptors the upstream calls need. Each connection lives by [`crate::connections`]' rules
//! (header, idle and age limits).
//!
//! The operations endpoints may have an address of their own ([`serve_ops`]): it answers them and
//! nothing else, to any network, with a small connection cap of its own.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
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

/// The connection cap of the ops address: probes and scrapers hold a few at a time.
const OPS_MAX_CONNECTIONS: usize = 64;

/// Which address a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Door {
    /// The clients' address: the network check at accept, then the whole stack.
    Clients,
    /// The operations endpoints' own address: those endpoints only, from any network.
    Ops,
}

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
    door: Door,
}

type Answer = Response<Tracked<ResponseBody>>;

impl hyper::service::Service<Request<Incoming>> for Client {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let (app, peer, door) = (self.app.clone(), self.peer, self.door);
        Box::pin(async move {
            let response = match door {
                Door::Clients => app.handle(peer, request).await,
                Door::Ops => app.handle_ops(&request).await,
            };
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
    serve_door(listener, app, shutdown, limits, Door::Clients).await
}

/// Serves the operations endpoints (`/healthz`, `/readyz`, `/metrics`) of `app` on `listener`,
/// an address of their own, until `shutdown` completes, then drains like [`serve`]. Any network
/// may connect and no secret is asked: the address decides who reaches it. Other paths get a
/// 404. `app` must be built from settings that give the ops address (`--ops-listen`), so that the
/// client address no longer serves these endpoints. Connections are capped at 64, not counted
/// in the client connection metrics; `limits` gives the timeouts and the drain.
pub async fn serve_ops(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> Drained {
    let limits = Limits {
        max_connections: OPS_MAX_CONNECTIONS,
        ..limits
    };
    serve_door(listener, app, shutdown, limits, Door::Ops).await
}

async fn serve_door(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
    door: Door,
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
    // The connection metrics are the client address's.
    let gauges = (door == Door::Clients).then(|| app.connection_metrics(max_connections));
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
        if door == Door::Clients && !app.admits(peer.ip()) {
            // Outside the allowed networks: closed before a byte is read (debug only: a refused
            // network must not fill the log).
            app.count_refused_connection("network");
            tracing::debug!(peer = %peer.ip(), "connection from a refused network closed");
            continue;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if door == Door::Clients {
                app.count_refused_connection("connection_cap");
            }
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
            door,
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let (draining, gauges) = (draining.clone(), gauges.clone());
        if let Some(gauges) = &gauges {
            gauges.opened();
        }
        tokio::spawn(async move {
            let closed = connections::drive(connection, &activity, draining, &limits).await;
            if let Some(why) = closed {
                tracing::debug!(%peer, why = why.label(), "connection closed");
            }
            if let Some(gauges) = &gauges {
                gauges.closed(closed);
            }
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
    let ops_listener = match settings.ops_listen {
        Some(address) => Some(TcpListener::bind(address).await?),
        None => None,
    };
    let sellers: Vec<&str> = settings.sellers.iter().map(|s| s.id.as_str()).collect();
    tracing::info!(
        listen = %listener.local_addr()?,
        ops_listen = ops_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(tracing::field::display),
        upstream = %settings.upstream,
        sellers = sellers.join(","),
        fleet = settings.fleet.is_some(),
        client_auth = settings.client_auth.is_configured(),
        "serving"
    );
    let shutdown = shutdown.shared();
    let drained = match ops_listener {
        None => serve(listener, app, shutdown, settings.limits()).await,
        Some(ops_listener) => {
            let ops = serve_ops(
                ops_listener,
                app.clone(),
                shutdown.clone(),
                settings.limits(),
            );
            let (drained, _) = tokio::join!(serve(listener, app, shutdown, settings.limits()), ops);
            drained
        }
    };
    match drained {
        Drained::Complete => tracing::info!("drained, stopping"),
        Drained::TimedOut => {
            tracing::warn!("drain timeout passed, stopping with requests in flight")
        }
    }
    Ok(drained)
}

//! Serving connections, and stopping: when the shutdown future completes (SIGTERM or SIGINT in
//! the binary, a channel in tests), the listener closes at once, in-flight requests get up to the
//! drain timeout to finish, and serving returns.
//!
//! A connection must bring a request head within the header timeout, the first one and, on
//! HTTP/1.1, every one after it: otherwise it is closed. Without that, a client that connects and
//! sends nothing (or one byte, or half a head) would hold a task and a file descriptor for ever.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use spapi_rdt::BoxError;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::proxy::App;

/// The least time between two "accept failed" warnings.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Complete,
    /// The drain timeout passed with requests still in flight; they were dropped.
    TimedOut,
}

/// How long serving waits on clients and on itself.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a connection may take to bring a request head: its first one (whichever the
    /// protocol) and, on HTTP/1.1, each next one on a kept-alive connection.
    pub header: Duration,
    /// How long in-flight requests may take to finish after the shutdown future completes.
    pub drain: Duration,
}

/// Serves connections on `listener` with `app` until `shutdown` completes; then stops accepting,
/// lets in-flight requests finish for up to `timeouts.drain`, and returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    timeouts: Timeouts,
) -> Drained {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timeout needs a timer; without one it is silently off.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let (mut accept_failures, mut last_accept_warning) = (0u64, None);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin, and say so
                // at most once per ACCEPT_WARN_EVERY, with how many failures it stands for.
                accept_failures += 1;
                let due = last_accept_warning
                    .is_none_or(|at: tokio::time::Instant| at.elapsed() >= ACCEPT_WARN_EVERY);
                if due {
                    tracing::warn!(error = %e, failures = accept_failures, "accept failed");
                    accept_failures = 0;
                    last_accept_warning = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !app.admits(peer.ip()) {
            // Outside the allowed networks: closed before a byte is read (debug only: a refused
            // network must not fill the log).
            app.count_refused_connection();
            tracing::debug!(peer = %peer.ip(), "connection from a refused network closed");
            drop(stream);
            continue;
        }
        let app = app.clone();
        let requested = Arc::new(AtomicBool::new(false));
        let service = hyper::service::service_fn({
            let requested = Arc::clone(&requested);
            move |request| {
                requested.store(true, Ordering::Relaxed);
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(peer, request).await) }
            }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // hyper's timer does not cover the wait for the first bytes (which protocol?) nor an
            // HTTP/2 preface: until the first request head, this deadline does.
            let first = tokio::time::timeout(
                timeouts.header,
                std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
                    Poll::Ready(ended) => Poll::Ready(Some(ended)),
                    Poll::Pending if requested.load(Ordering::Relaxed) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }),
            )
            .await;
            let ended = match first {
                Err(_) => {
                    tracing::debug!(%peer, "no request within the header timeout: connection closed");
                    return;
                }
                Ok(Some(ended)) => ended,
                Ok(None) => connection.await,
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections from here on.
    drop(listener);
    tracing::info!(in_flight_connections = graceful.count(), "draining");
    match tokio::time::timeout(timeouts.drain, graceful.shutdown()).await {
        Ok(()) => Drained::Complete,
        Err(_) => Drained::TimedOut,
    }
}

/// Builds the proxy, binds, and serves until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<Drained, BoxError> {
    let app = App::new(&settings)?;
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
    let timeouts = Timeouts {
        header: settings.header_timeout,
        drain: settings.drain_timeout,
    };
    let drained = serve(listener, app, shutdown, timeouts).await;
    match drained {
        Drained::Complete => tracing::info!("drained, stopping"),
        Drained::TimedOut => {
            tracing::warn!("drain timeout passed, stopping with requests in flight")
        }
    }
    Ok(drained)
}

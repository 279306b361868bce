//! Serving connections, and stopping: when the shutdown future completes (SIGTERM or SIGINT in
//! the binary, a channel in tests), the listener closes at once, in-flight requests get up to the
//! drain timeout to finish, and serving returns.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use spapi_rdt::BoxError;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::server::App;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every in-flight request finished.
    Complete,
    /// The drain timeout passed with requests still in flight; they were dropped.
    TimedOut,
}

/// Serves connections on `listener` with `app` until `shutdown` completes; then stops accepting,
/// lets in-flight requests finish for up to `drain`, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Drained {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
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
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(peer, request).await) }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // No new connections from here on.
    drop(listener);
    tracing::info!(in_flight_connections = graceful.count(), "draining");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => Drained::Complete,
        Err(_) => Drained::TimedOut,
    }
}

/// Builds the proxy, binds, and serves until `shutdown` completes.
pub(crate) async fn run(
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
    let drained = serve(listener, app, shutdown, settings.drain_timeout).await;
    match drained {
        Drained::Complete => tracing::info!("drained, stopping"),
        Drained::TimedOut => {
            tracing::warn!("drain timeout passed, stopping with requests in flight")
        }
    }
    Ok(drained)
}

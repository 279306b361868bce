//! One client connection's life: what is in flight on it, and when it is closed.
//!
//! A connection is closed when it brings no request head within the header timeout, when it has
//! had nothing in flight for the idle timeout, when it reaches its maximum age, or when the proxy
//! drains. Each close but the first is graceful (HTTP/1 `Connection: close` after the answer in
//! flight, HTTP/2 GOAWAY); a connection with nothing in flight is then closed at once, whatever the
//! protocol or how much of a request head it had sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How long a connection closed with nothing in flight gets to say goodbye (flush an HTTP/2
/// GOAWAY) before it is dropped.
const GOODBYE: Duration = Duration::from_millis(250);

/// The most [`Limits::max_connections`] may be.
pub(crate) const MAX_CONNECTIONS: usize = 1_000_000;

/// How serving treats client connections: how long each may take and stay open, and how many may
/// be open at once. [`Settings::limits`](crate::Settings::limits) gives the configured ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to bring a request head: its first one (whichever the
    /// protocol) and, on HTTP/1.1, each next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight, on either protocol.
    pub idle_timeout: Duration,
    /// How long a connection may live: then it is closed gracefully once its requests in flight
    /// are answered, and its client reconnects (spreading clients over replicas again).
    pub max_connection_age: Duration,
    /// How often an HTTP/2 connection is pinged; a peer that does not answer within the same
    /// time is closed.
    pub http2_keepalive: Duration,
    /// How many client connections may be open at once (1 to 1,000,000); past it, new ones are
    /// closed at accept.
    pub max_connections: usize,
    /// How long in-flight requests may take to finish once the proxy drains.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    /// The command line's defaults: 30 s to bring a head, 60 s idle, 10 min of age, a ping every
    /// 30 s, 512 connections, 20 s to drain.
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(600),
            http2_keepalive: Duration::from_secs(30),
            max_connections: 512,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a connection was closed by the proxy (the label of `connections_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// It brought no request head in time.
    HeaderTimeout,
    /// Nothing was in flight on it for the idle timeout.
    Idle,
    /// It reached its maximum age.
    Age,
    /// The proxy drained.
    Drain,
}

impl Closed {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Idle => "idle",
            Closed::Age => "age",
            Closed::Drain => "drain",
        }
    }
}

/// What is in flight on one connection: requests count from their head to the end of their
/// answer's body (or until either is dropped).
#[derive(Debug)]
pub(crate) struct Activity {
    requested: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request in flight ended (or the connection opened).
    quiet_since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
        })
    }

    /// A request head arrived; it is in flight until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection will have been idle for `idle`, or `None` while a request is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if !self.quiet() {
            return None;
        }
        let since = *self
            .quiet_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(since.checked_add(idle).unwrap_or_else(far_future))
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *activity
                .quiet_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        activity.changed.notify_one();
    }
}

pin_project! {
    /// An answer's body that keeps its request in flight until the body ends or is dropped.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Tracked {
            body,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives `connection` to its end, closing it for the first of [`Closed`]'s reasons that comes.
/// Returns why the proxy closed it, or `None` when the client did (or the protocol ended it).
pub(crate) async fn drive<C>(
    connection: C,
    activity: &Activity,
    mut draining: watch::Receiver<bool>,
    limits: &Limits,
) -> Option<Closed>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let opened = Instant::now();
    let first_head_by = opened
        .checked_add(limits.header_timeout)
        .unwrap_or_else(far_future);
    let old_at = opened
        .checked_add(limits.max_connection_age)
        .unwrap_or_else(far_future);
    let mut connection = std::pin::pin!(connection);
    let mut closing: Option<(Closed, Instant)> = None;
    loop {
        if let Some((why, since)) = closing {
            // Answered what it had in flight, or had nothing: close now, after a moment for the
            // goodbye the graceful shutdown queued.
            if activity.quiet() {
                let goodbye = since.max(Instant::now()).checked_add(GOODBYE);
                let _ =
                    tokio::time::timeout_at(goodbye.unwrap_or_else(far_future), &mut connection)
                        .await;
                return Some(why);
            }
        }
        let idle_at = activity.idle_deadline(limits.idle_timeout);
        let mut close = None;
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return closing.map(|(why, _)| why);
            }
            () = activity.changed.notified() => {}
            Ok(_) = draining.wait_for(|d| *d), if closing.is_none() => close = Some(Closed::Drain),
            () = tokio::time::sleep_until(first_head_by),
                if closing.is_none() && !activity.requested.load(Ordering::Relaxed) =>
            {
                // No request head yet: hyper's own timer does not cover the wait for the first
                // bytes (which protocol?) nor an HTTP/2 preface. Nothing to be graceful about.
                return Some(Closed::HeaderTimeout);
            }
            () = tokio::time::sleep_until(old_at), if closing.is_none() => close = Some(Closed::Age),
            () = sleep_until_some(idle_at), if closing.is_none() && idle_at.is_some() => {
                close = Some(Closed::Idle);
            }
        }
        if let Some(why) = close {
            connection.as_mut().graceful_shutdown();
            closing = Some((why, Instant::now()));
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An instant no connection lives to see (for a setting too large for the clock).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_is_in_flight_until_its_answer_ends() {
        let activity = Activity::new();
        let idle = Duration::from_secs(60);
        let opened = activity.idle_deadline(idle).unwrap();
        let first = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.idle_deadline(idle), None);
        drop(first);
        assert_eq!(activity.idle_deadline(idle), None, "one still in flight");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        assert_eq!(
            activity.idle_deadline(idle),
            Some(opened + Duration::from_secs(5)),
            "idle from the end of the last answer"
        );
    }

    #[tokio::test]
    async fn a_tracked_body_ends_its_request_with_its_last_frame() {
        use http_body_util::{BodyExt, Full};
        let activity = Activity::new();
        let mut body = Tracked::new(Full::new(Bytes::from_static(b"answer")), activity.begin());
        assert!(!activity.quiet());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "answer");
        assert!(!activity.quiet(), "still sending");
        assert!(body.frame().await.is_none());
        assert!(
            activity.quiet(),
            "ended with the body, before the body is dropped"
        );
        drop(body);
        assert!(activity.quiet());
    }
}

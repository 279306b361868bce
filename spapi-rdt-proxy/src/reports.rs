//! Restricted report documents without a header.
//!
//! `getReportDocument` needs a Restricted Data Token only when the report is of a restricted type,
//! and the request does not say which type it is. No SDK marks such calls, so the proxy finds out:
//!
//! - **learning**: a `getReport` or `getReports` answer passing through names each report's
//!   `reportType` and `reportDocumentId`; documents of restricted types are remembered;
//! - **fallback**: a `getReportDocument` call sent with the LWA token and refused with 403 is sent
//!   once more with a token for its specific path, and remembered when that works.
//!
//! The memory is bounded (oldest first out) and each entry expires after a fixed time, on tokio's
//! clock. Only document ids are kept: no report content, no token.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Method;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;
use spapi_rdt::catalog::is_restricted_report_type;
use tokio::time::Instant;

use crate::config::ReportSettings;

/// The `getReportDocument` path prefix; the document id follows.
const DOCUMENTS: &str = "/reports/2021-06-30/documents/";
/// `getReports`.
const REPORTS: &str = "/reports/2021-06-30/reports";
/// The largest `getReport(s)` answer read for learning; a larger one passes through unread.
pub(crate) const MAX_LEARN_BYTES: usize = 4 * 1024 * 1024;

/// What a request is, as far as restricted reports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportCall {
    /// `getReportDocument` for this document id.
    Document(String),
    /// `getReport` or `getReports`: its answer names report types and documents.
    Listing,
}

impl ReportCall {
    /// Classifies a request by method and path.
    pub(crate) fn of(method: &Method, path: &str) -> Option<ReportCall> {
        if method != Method::GET {
            return None;
        }
        if let Some(id) = path.strip_prefix(DOCUMENTS) {
            return (!id.is_empty() && !id.contains('/'))
                .then(|| ReportCall::Document(id.to_owned()));
        }
        let rest = path.strip_prefix(REPORTS)?;
        match rest.strip_prefix('/') {
            None if rest.is_empty() => Some(ReportCall::Listing),
            Some(id) if !id.is_empty() && !id.contains('/') => Some(ReportCall::Listing),
            _ => None,
        }
    }
}

/// A bounded set of document ids, each forgotten a fixed time after it was remembered (oldest first
/// out when full), on tokio's clock. Cheap to clone: clones share the set.
#[derive(Debug, Clone)]
pub(crate) struct ExpiringIds {
    inner: Arc<Mutex<Memory>>,
    capacity: usize,
    ttl: std::time::Duration,
}

#[derive(Debug, Default)]
struct Memory {
    ids: HashSet<Arc<str>>,
    /// In the order remembered, so in the order they expire (one lifetime for all).
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Memory {
    fn purge(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

impl ExpiringIds {
    pub(crate) fn new(capacity: usize, ttl: std::time::Duration) -> Self {
        ExpiringIds {
            inner: Arc::default(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic elsewhere while holding the lock leaves a consistent set: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers `id`; `true` when it was not known yet.
    pub(crate) fn insert(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut memory = self.lock();
        memory.purge(now);
        if memory.ids.contains(id) {
            return false;
        }
        while memory.ids.len() >= self.capacity {
            match memory.order.pop_front() {
                Some((_, oldest)) => {
                    memory.ids.remove(&oldest);
                }
                None => break,
            }
        }
        let id: Arc<str> = Arc::from(id);
        memory.ids.insert(Arc::clone(&id));
        // The setting is bounded when read; should it ever not fit, the entry expires at once.
        let expires = now.checked_add(self.ttl).unwrap_or(now);
        memory.order.push_back((expires, id));
        true
    }

    /// Whether `id` is remembered.
    pub(crate) fn contains(&self, id: &str) -> bool {
        let mut memory = self.lock();
        memory.purge(Instant::now());
        memory.ids.contains(id)
    }

    /// How many ids are remembered.
    pub(crate) fn len(&self) -> usize {
        let mut memory = self.lock();
        memory.purge(Instant::now());
        memory.ids.len()
    }
}

/// The documents known to be of a restricted report type.
#[derive(Debug, Clone)]
pub(crate) struct RestrictedDocuments {
    ids: ExpiringIds,
}

impl RestrictedDocuments {
    pub(crate) fn new(settings: ReportSettings) -> Self {
        RestrictedDocuments {
            ids: ExpiringIds::new(settings.capacity, settings.ttl),
        }
    }

    /// Remembers `id` as restricted; `true` when it was not known yet.
    pub(crate) fn remember(&self, id: &str) -> bool {
        self.ids.insert(id)
    }

    /// Whether `id` is known to be restricted.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// How many documents are remembered.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Reads a `getReport`/`getReports` answer and remembers its restricted documents; returns how
    /// many were new. Anything that is not such an answer is ignored.
    pub(crate) fn learn_from(&self, body: &[u8]) -> usize {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return 0;
        };
        // getReports: {"reports": [...]}; getReport: the report itself. Older answers wrapped
        // either in {"payload": ...}.
        let value = value.get("payload").unwrap_or(&value);
        let reports: Vec<&Value> = match value.get("reports").and_then(Value::as_array) {
            Some(list) => list.iter().collect(),
            None => match value.as_array() {
                Some(list) => list.iter().collect(),
                None => vec![value],
            },
        };
        reports
            .into_iter()
            .filter(|report| {
                report
                    .get("reportType")
                    .and_then(Value::as_str)
                    .is_some_and(is_restricted_report_type)
            })
            .filter_map(|report| report.get("reportDocumentId").and_then(Value::as_str))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .filter(|id| self.remember(id))
            .count()
    }
}

pin_project_lite::pin_project! {
    /// A response body passed on to the client as it arrives, with a copy of its first
    /// [`MAX_LEARN_BYTES`] handed to `on_end` once it has been read to the end.
    pub(crate) struct Learning<B> {
        #[pin]
        inner: B,
        copy: Option<BytesMut>,
        on_end: Option<Box<dyn FnOnce(&[u8]) + Send + Sync>>,
    }
}

impl<B> Learning<B> {
    pub(crate) fn new(inner: B, on_end: impl FnOnce(&[u8]) + Send + Sync + 'static) -> Self {
        Learning {
            inner,
            copy: Some(BytesMut::new()),
            on_end: Some(Box::new(on_end)),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Learning<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(copy)) = (frame.data_ref(), this.copy.as_mut()) {
                    if copy.len() + data.len() > MAX_LEARN_BYTES {
                        // Too large to be an answer worth reading: pass it on unread.
                        *this.copy = None;
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                // The last frame: learn before the client has it, so that a request the client
                // makes next already finds what this answer taught.
                if this.inner.is_end_stream()
                    && let (Some(copy), Some(on_end)) = (this.copy.take(), this.on_end.take())
                {
                    on_end(&copy);
                }
            }
            Poll::Ready(None) => {
                if let (Some(copy), Some(on_end)) = (this.copy.take(), this.on_end.take()) {
                    on_end(&copy);
                }
            }
            Poll::Ready(Some(Err(_))) => *this.copy = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // Report the end only once the copy has been handed over.
        self.on_end.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

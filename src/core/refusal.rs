//! The 403 policy, in one place: what happens when Amazon refuses a restricted call.
//!
//! Every front end (the tower recovery layer, the reqwest-middleware front end, and through the
//! recovery layer the sidecar) calls [`Core::recover`] with the answer and its own way of sending
//! the request again; this module decides, in this order:
//!
//! 1. **Refused?** Only a 403 is looked at.
//! 2. **Keep or drop.** Sent with one of our tokens: that token is dropped, at most once per key
//!    per refusal period (see [`Refusal`]); a 403 within the period keeps the token and is returned
//!    as it is. Sent without a token, as a report document under
//!    [`ReportPolicy::WhenRefused`]: the document is most likely of a restricted report type, so
//!    it is replayed with a token for its path.
//! 3. **Replay once**, when the front end can (its body can be sent twice).
//! 4. **Replay worked?** A replay with a new token that is not refused shows the dropped token was
//!    stale: the key's next 403 may drop a token again at once.

use std::future::Future;

use http::StatusCode;

use crate::cache::Refusal;
use crate::control::ReportPolicy;

use super::{Core, RequestHead};

/// How a refused request is sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayAs {
    /// With a new token for the same key (the one it was sent with was dropped or replaced).
    NewToken,
    /// Marked [`RestrictedReport`](crate::control::RestrictedReport), so that it gets a token for
    /// its document's path.
    RestrictedReport,
}

impl Core {
    /// Whether a 403 to `head` could be recovered from: it gets a token, or it is a report
    /// document that a 403 would send again with one.
    pub(crate) fn may_recover(&self, head: RequestHead<'_>) -> bool {
        self.key_of(head).is_some() || self.replays_as_report(head)
    }

    /// The 403 policy (see the [module docs](self)). `response` answered `head`, sent with the
    /// token of generation `sent_with` (none: sent without one of ours); `replay` sends the
    /// request again as told, or is `None` when it cannot be sent twice. Returns the response to
    /// hand back, and how it was replayed if it was.
    pub(crate) async fn recover<T, E, Fut>(
        &self,
        head: RequestHead<'_>,
        sent_with: Option<u64>,
        response: T,
        status: impl Fn(&T) -> StatusCode,
        replay: Option<impl FnOnce(ReplayAs) -> Fut>,
    ) -> Result<(T, Option<ReplayAs>), E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        if status(&response) != StatusCode::FORBIDDEN {
            return Ok((response, None));
        }
        let (how, refusal) = match sent_with {
            Some(generation) => match self.refused(head, generation) {
                Refusal::Kept => return Ok((response, None)),
                refusal => (ReplayAs::NewToken, Some(refusal)),
            },
            None if self.replays_as_report(head) => (ReplayAs::RestrictedReport, None),
            None => return Ok((response, None)),
        };
        let Some(replay) = replay else {
            return Ok((response, None));
        };
        drop(response);
        tracing::debug!(
            path = head.uri.path(),
            replay = ?how,
            "403 on a restricted call: replaying once"
        );
        let again = replay(how).await?;
        if refusal == Some(Refusal::Dropped) && status(&again) != StatusCode::FORBIDDEN {
            self.replay_worked(head);
        }
        Ok((again, Some(how)))
    }

    /// Whether `head` went without a token only because it was not marked a restricted report,
    /// and the layer replays such documents when they are refused.
    pub(crate) fn replays_as_report(&self, head: RequestHead<'_>) -> bool {
        self.settings.report_policy == ReportPolicy::WhenRefused
            && self.key_of(head).is_none()
            && self.key_as(head, true).is_some()
    }
}

//! Per-request control through `http::Extensions`, and the layer's policies.
//!
//! Put these in a request's extensions to steer the layer for that request alone:
//! - [`SellerId`](crate::SellerId): which seller the request is for (multi-tenant apps);
//! - [`DataElements`](crate::catalog::DataElements): narrow the data elements asked for;
//! - [`TokenMode`]: skip the token, or force one for a path the catalogue does not know;
//! - [`RestrictedReport`]: this `getReportDocument` call fetches a restricted report type;
//! - [`TargetApplication`]: ask for a token for another application (delegation);
//! - [`Background`]: this request can wait (polling): the pacing layer keeps part of each burst
//!   from it.
//!
//! ```
//! use spapi_rdt::{SellerId, control::{RestrictedReport, TokenMode}};
//!
//! let mut request = http::Request::get(
//!     "https://sellingpartnerapi-eu.amazon.com/reports/2021-06-30/documents/amzn1.spdoc.1.4.eu.1234",
//! )
//! .body(())
//! .unwrap();
//! request.extensions_mut().insert(SellerId::new("A2EUQ1WTGCTBG2"));
//! request.extensions_mut().insert(RestrictedReport);
//! # let _ = TokenMode::Skip;
//! ```

use std::fmt;
use std::sync::Arc;

/// Whether a request gets a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenMode {
    /// As the catalogue and the policies say.
    #[default]
    Auto,
    /// Never, whatever the path.
    Skip,
    /// Always, for the specific path of the request, even when the catalogue does not know it.
    Force,
}

/// Marks a `getReportDocument` request as fetching a restricted report type (see
/// [`RESTRICTED_REPORT_TYPES`](crate::catalog::RESTRICTED_REPORT_TYPES)); the request itself does
/// not say which type its document is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RestrictedReport;

/// Marks a request as background work (polling for a report, a feed, an order list): the
/// [`PacingLayer`](crate::pacing::PacingLayer) lets it spend only the half of its operation's
/// burst that is not kept for other requests, and reserves no slot ahead for it, so that a queue
/// of polling never delays a request a user waits for. Amazon's own advice: do not spend the burst
/// on polling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Background;

/// Found in the extensions of a response that answers a replay: a `getReportDocument` request sent
/// without a token was refused with 403, and sent again with a token for its document's path (see
/// [`ReportPolicy::WhenRefused`]). When the response succeeded, the document is of a restricted
/// report type: mark its next requests with [`RestrictedReport`] to save the refused round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReplayedAsRestrictedReport;

/// Asks for a token on behalf of another application (`targetApplication`): delegation.
///
/// The value is sent to the Tokens API exactly as given. Send it only when delegating: Amazon answers
/// a wrong one with a misleading 400.
///
/// A delegatee application that is still in draft or test state (not yet published) is named by its
/// id followed by `&version=beta`; [`TargetApplication::beta`] writes that form, and
/// [`TargetApplication::new`] takes it as it is. Switch to the plain id once the application is
/// published.
///
/// ```
/// use spapi_rdt::control::TargetApplication;
///
/// let published = TargetApplication::new("amzn1.sp.solution.0bf296b5-example");
/// let draft = TargetApplication::beta("amzn1.sp.solution.0bf296b5-example");
/// assert_eq!(draft.as_str(), "amzn1.sp.solution.0bf296b5-example&version=beta");
/// assert_eq!(TargetApplication::new(draft.as_str()), draft);
/// # let _ = published;
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TargetApplication(Arc<str>);

impl TargetApplication {
    /// The suffix Amazon wants after the id of an application in draft or test state.
    pub const BETA_SUFFIX: &'static str = "&version=beta";

    /// The application id, such as `amzn1.sp.solution.0bf296b5-36a6-4942-a13e-example`, or any form
    /// Amazon accepts (such as the id followed by `&version=beta`), sent verbatim.
    pub fn new(app_id: impl Into<Arc<str>>) -> Self {
        TargetApplication(app_id.into())
    }

    /// An application still in draft or test state: its id followed by `&version=beta` (added
    /// once: an id that already ends with it is kept as it is).
    pub fn beta(app_id: &str) -> Self {
        if app_id.ends_with(Self::BETA_SUFFIX) {
            TargetApplication::new(app_id)
        } else {
            TargetApplication::new(format!("{app_id}{}", Self::BETA_SUFFIX))
        }
    }

    /// The application id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TargetApplication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// When `getReportDocument` gets a token. Only restricted report types need one, and only for the
/// specific document path, so the default asks the caller to say so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReportPolicy {
    /// Only for requests marked with [`RestrictedReport`].
    #[default]
    WhenMarked,
    /// For requests marked with [`RestrictedReport`]; others go without a token, and a 403 to one
    /// is replayed once with a token for its document's path, by the recovery layer
    /// ([`recover_stale_tokens`](crate::RestrictedDataTokenLayer::recover_stale_tokens)) or the
    /// reqwest-middleware front end. The answer to the replay carries
    /// [`ReplayedAsRestrictedReport`]. For callers that cannot tell a document's report type.
    WhenRefused,
    /// For every document (one token call per document: costly under the rate limit).
    Always,
    /// Never.
    Never,
}

/// What to do for restricted calls to Amazon's sandbox hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SandboxPolicy {
    /// Send no token: the sandbox answers its static fixtures whatever the token.
    #[default]
    Skip,
    /// Fetch one from the sandbox's Tokens API, as on production.
    Fetch,
}

/// How tokens map to operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One token per operation template (per seller and origin): a seller that uses `n` restricted
    /// operations makes `n` token calls a token lifetime.
    #[default]
    PerOperation,
    /// One token per seller and origin covering every generic operation of the catalogue (in groups
    /// of at most 50, Amazon's limit a request): one token call a token lifetime. When Amazon refuses
    /// the bundle because the application lacks the role for one operation, the layer isolates it by
    /// splitting the bundle, remembers it, serves the others, and answers requests for the refused
    /// operation with Amazon's error. Requests that narrow their data elements use their own token.
    ///
    /// Isolation is bounded: one makes at most `2 * ceil(log2 n)` probe token calls for a group of
    /// `n` operations (12 for 50), besides the refused bundle call and the final one. When both
    /// halves of the group are refused (no PII role, a wrong target application), the group is
    /// taken as refused as a whole after those two probes, and every request for it fails with
    /// Amazon's refusal. Refusals are remembered per seller for
    /// [`bundle_recheck`](crate::RestrictedDataTokenLayerBuilder::bundle_recheck) (1 hour by
    /// default), across failed fetches and invalidated tokens; operations still suspected when the
    /// probe budget runs out count as refused for that long too.
    Bundle,
}

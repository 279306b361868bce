//! [`Strategy::Bundle`](crate::control::Strategy::Bundle): one token per seller for a group of up
//! to 50 generic operations, and the isolation of operations Amazon refuses inside a bundle.

use tokio::time::Instant;

use crate::cache::{BundleId, BundleInfo, Denied, Slot};
use crate::catalog::{OperationId, PathKind};
use crate::error::ErrorKind;
use crate::error::{Error, FetchError};
use crate::matcher::Matcher;
use crate::resource::{RestrictedResource, TokenRequest};
use crate::token::IssuedToken;

use super::Core;

/// The generic operations of the catalogue in groups of at most 50, each a [`BundleId`].
#[derive(Debug, Default)]
pub(crate) struct Bundles {
    /// Each bundle's operations, in catalogue order.
    groups: Vec<Vec<OperationId>>,
    /// Each catalogue operation's bundle, if it is generic.
    bundle_of: Vec<Option<BundleId>>,
}

impl Bundles {
    pub(crate) fn new(matcher: &Matcher) -> Self {
        let mut bundles = Bundles::default();
        for (index, op) in matcher.catalog().operations().iter().enumerate() {
            let generic = op.path_kind() == PathKind::Generic;
            let bundle = generic.then(|| {
                if bundles
                    .groups
                    .last()
                    .is_none_or(|c| c.len() >= TokenRequest::MAX_RESOURCES)
                {
                    bundles.groups.push(Vec::new());
                }
                let last = bundles.groups.len() - 1;
                bundles.groups[last].push(OperationId::at(index));
                // A catalogue of more than 65535 groups of 50 would not fit in memory anyway.
                BundleId(u16::try_from(last).unwrap_or(u16::MAX))
            });
            bundles.bundle_of.push(bundle);
        }
        bundles
    }

    /// The bundle operation `op` belongs to, if it is generic.
    #[inline]
    pub(crate) fn of(&self, op: OperationId) -> Option<BundleId> {
        self.bundle_of.get(op.index()).copied().flatten()
    }

    /// The operations of `bundle` (none for an id this layer never made).
    pub(crate) fn operations(&self, bundle: BundleId) -> &[OperationId] {
        self.groups
            .get(usize::from(bundle.0))
            .map_or(&[][..], Vec::as_slice)
    }
}

impl Core {
    /// The resources of a bundle: each operation with the configured data elements it accepts.
    pub(super) fn bundle_resources(&self, ops: &[OperationId]) -> Vec<RestrictedResource> {
        let catalog = self.matcher.catalog();
        let wanted = self.settings.data_elements;
        ops.iter()
            .filter_map(|id| catalog.get(*id))
            .map(|op| {
                let elements = op.data_elements().intersection(wanted);
                RestrictedResource::new(op.method().clone(), op.template(), elements)
            })
            .collect()
    }

    /// `base` (seller, origin, target application) for the operations `ops` of a bundle.
    fn subset_request(&self, base: &TokenRequest, ops: &[OperationId]) -> TokenRequest {
        let request = TokenRequest::new(
            base.seller().clone(),
            base.origin().clone(),
            self.bundle_resources(ops),
        );
        match base.target_application() {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    /// Fetches a bundled token for `bundle`. Operations refused within the last
    /// `bundle_recheck` stay out (the slot keeps them across failures and invalidations). When
    /// Amazon refuses the bundle for its input, [`isolate`](Self::isolate) looks for the offenders
    /// once; they are left out and the rest is fetched once more. A bundle refused as a whole fails
    /// with the bundle call's error, and all its operations are remembered as refused.
    pub(super) async fn fetch_bundle(
        &self,
        base: &TokenRequest,
        bundle: BundleId,
        slot: &Slot,
        deadline: Instant,
    ) -> Result<(IssuedToken, BundleInfo), FetchError> {
        let now = Instant::now();
        let recheck = self.settings.retention.bundle_recheck;
        let mut denied: Vec<Denied> = slot
            .bundle_denied()
            .into_iter()
            .filter(|d| now.saturating_duration_since(d.since) < recheck)
            .collect();
        let mut good: Vec<OperationId> = self
            .bundles
            .operations(bundle)
            .iter()
            .copied()
            .filter(|op| !denied.iter().any(|d| d.op == *op))
            .collect();
        let mut isolated = false;
        let outcome = loop {
            if good.is_empty() {
                break Err(denied
                    .first()
                    .map_or(FetchError::NotCovered, |d| d.error.clone()));
            }
            let error = match self
                .fetch_with_retries(&self.subset_request(base, &good), deadline)
                .await
            {
                Ok(token) => break Ok(token),
                // One isolation a fetch: a bundle of operations that each passed a probe and is
                // refused again is not split further.
                Err(e) if refused_input(&e) && !isolated => e,
                Err(e) => break Err(e),
            };
            isolated = true;
            let offenders = match self.isolate(base, &good, error.clone(), deadline).await {
                Ok(Isolation::Offenders(offenders)) => offenders,
                Ok(Isolation::Whole) => {
                    tracing::warn!(
                        seller = %base.seller(),
                        operations = good.len(),
                        error = %Error::from_fetch(error.clone()),
                        "Amazon refused the whole token bundle (both of its halves): no operation \
                         of it gets a token until the refusal is rechecked"
                    );
                    let since = Instant::now();
                    denied.extend(good.drain(..).map(|op| Denied {
                        op,
                        error: error.clone(),
                        since,
                    }));
                    break Err(error);
                }
                Err(e) => break Err(e),
            };
            let since = Instant::now();
            for (op, error) in offenders {
                let name = self
                    .matcher
                    .catalog()
                    .get(op)
                    .map(|o| format!("{} {}", o.api(), o.name()))
                    .unwrap_or_default();
                tracing::warn!(
                    seller = %base.seller(),
                    operation = %name,
                    error = %Error::from_fetch(error.clone()),
                    "Amazon refused a restricted operation inside the token bundle: it is left out"
                );
                good.retain(|g| *g != op);
                denied.push(Denied { op, error, since });
            }
        };
        slot.set_bundle_denied(denied.clone());
        let token = outcome?;
        good.sort_unstable();
        Ok((
            token,
            BundleInfo {
                covers: good,
                denied,
            },
        ))
    }

    /// Finds the operations of `refused` (a set Amazon refused with `error`) that Amazon refuses,
    /// by splitting in halves and asking for a token for each half (a probe).
    ///
    /// - Both halves of the whole set refused: the set is taken as refused as a whole
    ///   ([`Isolation::Whole`]) after two probes, without bisecting further.
    /// - Otherwise one offender costs about two probes a halving, and one isolation makes at most
    ///   [`isolation_budget`] probes (`2 * ceil(log2 n)`: 10 for 31 operations, 12 for 50). Sets
    ///   still suspected when the budget is spent are treated as refused, with the error of the
    ///   set, until `bundle_recheck` passes; only operations a probe proved good stay in the bundle.
    ///
    /// Each probe goes through the rate limiter and may retry transient failures like any fetch.
    async fn isolate(
        &self,
        base: &TokenRequest,
        refused: &[OperationId],
        error: FetchError,
        deadline: Instant,
    ) -> Result<Isolation, FetchError> {
        let mut budget = isolation_budget(refused.len());
        let mut offenders = Vec::new();
        let mut suspects = vec![(refused.to_vec(), error, true)];
        while let Some((set, error, whole)) = suspects.pop() {
            if set.len() <= 1 || budget == 0 {
                offenders.extend(set.into_iter().map(|op| (op, error.clone())));
                continue;
            }
            let (left, right) = set.split_at(set.len() / 2);
            budget -= 1;
            let left_error = match self
                .fetch_with_retries(&self.subset_request(base, left), deadline)
                .await
            {
                // The left half passes, so the offenders are all on the right.
                Ok(_) => {
                    suspects.push((right.to_vec(), error, false));
                    continue;
                }
                Err(e) if refused_input(&e) => e,
                Err(e) => return Err(e),
            };
            if budget == 0 {
                suspects.push((left.to_vec(), left_error, false));
                suspects.push((right.to_vec(), error, false));
                continue;
            }
            budget -= 1;
            match self
                .fetch_with_retries(&self.subset_request(base, right), deadline)
                .await
            {
                Ok(_) => suspects.push((left.to_vec(), left_error, false)),
                Err(e) if refused_input(&e) && whole => return Ok(Isolation::Whole),
                Err(e) if refused_input(&e) => {
                    suspects.push((left.to_vec(), left_error, false));
                    suspects.push((right.to_vec(), e, false));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Isolation::Offenders(offenders))
    }
}

/// What an isolation found in a refused bundle.
enum Isolation {
    /// Both halves of the bundle were refused: the bundle is refused as a whole.
    Whole,
    /// The operations to leave out, each with the refusal it was found in.
    Offenders(Vec<(OperationId, FetchError)>),
}

/// The most probes one isolation of `n` operations makes: two a halving, `2 * ceil(log2 n)`.
fn isolation_budget(n: usize) -> usize {
    let halvings = usize::BITS - n.saturating_sub(1).leading_zeros();
    2 * halvings as usize
}

/// Whether Amazon refused a token request's input (a resource or data element the application has
/// no role for): the error that bundle isolation looks for.
fn refused_input(error: &FetchError) -> bool {
    match error {
        FetchError::Source(e) => {
            e.kind() == ErrorKind::Permanent && e.status() == Some(http::StatusCode::BAD_REQUEST)
        }
        _ => false,
    }
}

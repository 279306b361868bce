//! Classifying a request: whether it gets a token, and under which cache key (seller, origin,
//! scope, target application); and the token request a key stands for.

use crate::cache::{ScopeRef, SlotKeyRef};
use crate::catalog::{DataElements, OperationId, PathKind};
use crate::control::{
    ReportPolicy, RestrictedReport, SandboxPolicy, Strategy, TargetApplication, TokenMode,
};
use crate::resource::{RestrictedResource, SellerId, TokenRequest};

use super::{Core, RequestHead};

/// Where a request's token is cached: whose it is, the slot's key, and for a bundled token the
/// operation the request calls (the bundle may not cover it).
#[derive(Clone, Copy)]
pub(crate) struct TokenKey<'a> {
    pub(crate) seller: &'a SellerId,
    pub(crate) slot: SlotKeyRef<'a>,
    pub(crate) bundled: Option<OperationId>,
}

impl Core {
    /// Where the token of a request that gets one is cached; `None` for one that passes through.
    #[inline]
    pub(crate) fn key_of<'a>(&'a self, head: RequestHead<'a>) -> Option<TokenKey<'a>> {
        self.key_as(head, false)
    }

    /// [`key_of`](Self::key_of), with `as_restricted_report` taking a `getReportDocument` request
    /// as marked [`RestrictedReport`] (what a replay after a 403 will be).
    #[inline]
    pub(super) fn key_as<'a>(
        &'a self,
        head: RequestHead<'a>,
        as_restricted_report: bool,
    ) -> Option<TokenKey<'a>> {
        let RequestHead {
            method,
            uri,
            extensions: ext,
        } = head;
        let mode = ext.get::<TokenMode>().copied().unwrap_or_default();
        if mode == TokenMode::Skip {
            return None;
        }
        let path = uri.path();
        let mut bundled = None;
        let scope = match (self.matcher.classify(method, path), mode) {
            (Some(hit), _) => {
                let op = hit.operation();
                self.deprecations.note(hit.id(), op);
                match op.path_kind() {
                    PathKind::Generic => {
                        let narrowed = ext.get::<DataElements>().copied();
                        match (self.settings.strategy, narrowed, self.bundles.of(hit.id())) {
                            (Strategy::Bundle, None, Some(bundle)) => {
                                bundled = Some(hit.id());
                                ScopeRef::Bundle { bundle }
                            }
                            _ => ScopeRef::Operation {
                                op: hit.id(),
                                elements: op
                                    .data_elements()
                                    .intersection(narrowed.unwrap_or(self.settings.data_elements)),
                            },
                        }
                    }
                    PathKind::SpecificOnly => {
                        let wanted = match self.settings.report_policy {
                            ReportPolicy::Always => true,
                            ReportPolicy::Never => false,
                            ReportPolicy::WhenMarked | ReportPolicy::WhenRefused => {
                                as_restricted_report || ext.get::<RestrictedReport>().is_some()
                            }
                        };
                        if !wanted && mode != TokenMode::Force {
                            return None;
                        }
                        ScopeRef::Path { method, path }
                    }
                }
            }
            (None, TokenMode::Force) => ScopeRef::Path { method, path },
            (None, _) => return None,
        };
        let Some(origin) = self.origins.iter().position(|o| o.matches_uri(uri)) else {
            tracing::debug!(%method, path, "restricted path on a host outside the allowed SP-API origins: no token");
            return None;
        };
        if self.settings.sandbox_policy == SandboxPolicy::Skip && self.origins[origin].is_sandbox()
        {
            return None;
        }
        let seller = ext
            .get::<SellerId>()
            .unwrap_or(&self.settings.default_seller);
        let slot = SlotKeyRef {
            // The builder refuses more origins than fit in a u16.
            origin: origin as u16,
            scope,
            target: ext
                .get::<TargetApplication>()
                .map(TargetApplication::as_str),
        };
        Some(TokenKey {
            seller,
            slot,
            bundled,
        })
    }

    /// The token request a request like `head` maps to, if it gets a token.
    pub(crate) fn token_request_for(&self, head: RequestHead<'_>) -> Option<TokenRequest> {
        let key = self.key_of(head)?;
        Some(self.token_request(key.seller, key.slot))
    }

    pub(super) fn token_request(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> TokenRequest {
        let resources = match key.scope {
            ScopeRef::Operation { op, elements } => self.resource(op, elements),
            ScopeRef::Path { method, path } => {
                vec![RestrictedResource::new(
                    method.clone(),
                    path,
                    DataElements::NONE,
                )]
            }
            ScopeRef::Bundle { bundle } => self.bundle_resources(self.bundles.operations(bundle)),
        };
        let origin = self.origins[usize::from(key.origin)].clone();
        let request = TokenRequest::new(seller.clone(), origin, resources);
        match key.target {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    /// The resource for catalogue operation `id` (none for an id the catalogue lacks).
    fn resource(&self, id: OperationId, elements: DataElements) -> Vec<RestrictedResource> {
        let op = self.matcher.catalog().get(id);
        op.map(|op| RestrictedResource::new(op.method().clone(), op.template(), elements))
            .into_iter()
            .collect()
    }
}

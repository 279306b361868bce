//! Classifying a request: whether it gets a token, and under which cache key (seller, origin,
//! scope, target application); and the token request a key stands for.

use crate::cache::{ScopeRef, SlotKeyRef};
use crate::catalog::{DataElements, PathKind};
use crate::control::{
    ReportPolicy, RestrictedReport, SandboxPolicy, Strategy, TargetApplication, TokenMode,
};
use crate::resource::{RestrictedResource, SellerId, TokenRequest};

use super::{Core, RequestHead};

impl Core {
    /// The seller and cache key of a request that gets a token; `None` for one that passes through.
    #[inline]
    pub(crate) fn key_of<'a>(
        &'a self,
        head: RequestHead<'a>,
    ) -> Option<(&'a SellerId, SlotKeyRef<'a>, Option<u32>)> {
        self.key_as(head, false)
    }

    /// [`key_of`](Self::key_of), with `as_restricted_report` taking a `getReportDocument` request
    /// as marked [`RestrictedReport`] (what a replay after a 403 will be).
    #[inline]
    pub(super) fn key_as<'a>(
        &'a self,
        head: RequestHead<'a>,
        as_restricted_report: bool,
    ) -> Option<(&'a SellerId, SlotKeyRef<'a>, Option<u32>)> {
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
                self.deprecations.note(hit.index(), op);
                match op.path_kind() {
                    PathKind::Generic => {
                        // The catalogue is far smaller than u32::MAX operations.
                        let index = hit.index() as u32;
                        let narrowed = ext.get::<DataElements>().copied();
                        let chunk = self.bundles.chunk_of.get(hit.index()).copied().flatten();
                        match (self.settings.strategy, narrowed, chunk) {
                            (Strategy::Bundle, None, Some(chunk)) => {
                                bundled = Some(index);
                                ScopeRef::Bundle { chunk }
                            }
                            _ => ScopeRef::Operation {
                                index,
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
        let key = SlotKeyRef {
            // The builder refuses more origins than fit in a u16.
            origin: origin as u16,
            scope,
            target: ext
                .get::<TargetApplication>()
                .map(TargetApplication::as_str),
        };
        Some((seller, key, bundled))
    }

    /// The token request a request like `head` maps to, if it gets a token.
    pub(crate) fn token_request_for(&self, head: RequestHead<'_>) -> Option<TokenRequest> {
        let (seller, key, _) = self.key_of(head)?;
        Some(self.token_request(seller, key))
    }

    pub(super) fn token_request(&self, seller: &SellerId, key: SlotKeyRef<'_>) -> TokenRequest {
        let resources = match key.scope {
            ScopeRef::Operation { index, elements } => self.resource(index, elements),
            ScopeRef::Path { method, path } => {
                vec![RestrictedResource::new(
                    method.clone(),
                    path,
                    DataElements::NONE,
                )]
            }
            ScopeRef::Bundle { chunk } => self.bundle_resources(
                self.bundles
                    .chunks
                    .get(usize::from(chunk))
                    .map_or(&[][..], Vec::as_slice),
            ),
        };
        let origin = self.origins[usize::from(key.origin)].clone();
        let request = TokenRequest::new(seller.clone(), origin, resources);
        match key.target {
            Some(app) => request.with_target_application(app),
            None => request,
        }
    }

    /// The resource for catalogue operation `index` (empty for an index the catalogue lacks).
    fn resource(&self, index: u32, elements: DataElements) -> Vec<RestrictedResource> {
        let op = self.matcher.catalog().operations().get(index as usize);
        op.map(|op| RestrictedResource::new(op.method().clone(), op.template(), elements))
            .into_iter()
            .collect()
    }
}

//! Cache keys: the scope of a token (an operation, a path, a bundle), and the key a slot is found
//! under (seller, origin, scope, target application), borrowed on the hot path and owned in the
//! map.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::Method;

use crate::catalog::{DataElements, OperationId};
use crate::resource::SellerId;

/// Which resources a slot's token covers.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One catalogue operation's generic template, with these data elements.
    Operation {
        op: OperationId,
        elements: DataElements,
    },
    /// One specific path.
    Path { method: Method, path: Arc<str> },
    /// A bundle of generic operations (one of the layer's groups of at most 50).
    Bundle { bundle: BundleId },
}

/// One of the layer's bundles of generic operations (under `Strategy::Bundle`): its position in
/// the layer's list of groups of at most 50.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BundleId(pub(crate) u16);

/// A borrowed [`Scope`], so the hot path can look a slot up without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ScopeRef<'a> {
    Operation {
        op: OperationId,
        elements: DataElements,
    },
    Path {
        method: &'a Method,
        path: &'a str,
    },
    Bundle {
        bundle: BundleId,
    },
}

impl Scope {
    fn as_ref(&self) -> ScopeRef<'_> {
        match self {
            Scope::Operation { op, elements } => ScopeRef::Operation {
                op: *op,
                elements: *elements,
            },
            Scope::Path { method, path } => ScopeRef::Path { method, path },
            Scope::Bundle { bundle } => ScopeRef::Bundle { bundle: *bundle },
        }
    }
}

impl ScopeRef<'_> {
    fn to_scope(self) -> Scope {
        match self {
            ScopeRef::Operation { op, elements } => Scope::Operation { op, elements },
            ScopeRef::Path { method, path } => Scope::Path {
                method: method.clone(),
                path: path.into(),
            },
            ScopeRef::Bundle { bundle } => Scope::Bundle { bundle },
        }
    }
}

/// A slot's key within one seller: the origin (by its index in the layer's allowed origins), the
/// scope, and the target application when delegating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SlotKeyRef<'a> {
    pub(crate) origin: u16,
    pub(crate) scope: ScopeRef<'a>,
    pub(crate) target: Option<&'a str>,
}

/// The key of a slot in the cache's map: the seller and the slot's key within it.
pub(super) struct MapKey {
    seller: SellerId,
    origin: u16,
    scope: Scope,
    target: Option<Arc<str>>,
}

/// A borrowed [`MapKey`], to look a slot up without allocating.
#[derive(Clone, Copy)]
pub(super) struct MapKeyRef<'a> {
    pub(super) seller: &'a SellerId,
    pub(super) key: SlotKeyRef<'a>,
}

impl MapKey {
    fn as_ref(&self) -> MapKeyRef<'_> {
        MapKeyRef {
            seller: &self.seller,
            key: SlotKeyRef {
                origin: self.origin,
                scope: self.scope.as_ref(),
                target: self.target.as_deref(),
            },
        }
    }

    /// The seller, when the slot counts towards the sellers held: operation and bundle slots do,
    /// specific-path slots (one per report document) do not.
    pub(super) fn counted_seller(&self) -> Option<&SellerId> {
        match self.scope {
            Scope::Path { .. } => None,
            Scope::Operation { .. } | Scope::Bundle { .. } => Some(&self.seller),
        }
    }
}

impl MapKeyRef<'_> {
    pub(super) fn to_key(self) -> MapKey {
        MapKey {
            seller: self.seller.clone(),
            origin: self.key.origin,
            scope: self.key.scope.to_scope(),
            target: self.key.target.map(Arc::from),
        }
    }

    pub(super) fn is_path(&self) -> bool {
        matches!(self.key.scope, ScopeRef::Path { .. })
    }
}

// The owned and borrowed keys hash and compare through the same borrowed form, as papaya's
// `Equivalent` lookups require.
impl Hash for MapKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seller.hash(state);
        self.key.hash(state);
    }
}

impl PartialEq for MapKeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        // The cheap comparisons first; the seller's is a pointer comparison when both requests
        // carry clones of one `SellerId`.
        self.key == other.key && self.seller == other.seller
    }
}

impl Eq for MapKeyRef<'_> {}

impl Hash for MapKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for MapKey {}

impl papaya::Equivalent<MapKey> for MapKeyRef<'_> {
    fn equivalent(&self, key: &MapKey) -> bool {
        *self == key.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn owned_and_borrowed_keys_hash_and_compare_alike() {
        let hasher = foldhash::fast::RandomState::default();
        let seller = SellerId::new("A1");
        let other_seller = SellerId::new("A2");
        let method = Method::GET;
        let scopes = [
            ScopeRef::Operation {
                op: OperationId::at(3),
                elements: DataElements::USUAL,
            },
            ScopeRef::Operation {
                op: OperationId::at(3),
                elements: DataElements::NONE,
            },
            ScopeRef::Path {
                method: &method,
                path: "/reports/2021-06-30/documents/1",
            },
            ScopeRef::Bundle {
                bundle: BundleId(3),
            },
        ];
        let keys: Vec<MapKeyRef<'_>> = [&seller, &other_seller]
            .into_iter()
            .flat_map(|seller| {
                scopes.iter().flat_map(move |scope| {
                    [None, Some("amzn1.sp.solution.x")].map(|target| MapKeyRef {
                        seller,
                        key: SlotKeyRef {
                            origin: 0,
                            scope: *scope,
                            target,
                        },
                    })
                })
            })
            .collect();
        for (i, a) in keys.iter().enumerate() {
            let owned = a.to_key();
            let owned_key: &MapKey = &owned;
            assert_eq!(hasher.hash_one(a), hasher.hash_one(owned_key));
            assert!(papaya::Equivalent::equivalent(a, &owned));
            for (j, b) in keys.iter().enumerate() {
                assert_eq!(papaya::Equivalent::equivalent(b, &owned), i == j);
            }
        }
    }
}

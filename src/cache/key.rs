//! Cache keys: the scope of a token (an operation, a path, a bundle), and the keys a seller's slots
//! are found under, borrowed on the hot path and owned in the maps.

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::Method;
use tokio::time::Instant;

use crate::catalog::DataElements;
use crate::resource::SellerId;

use super::{Keep, Slot};

/// Which resources a slot's token covers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// One catalogue operation's generic template, with these data elements.
    Operation { index: u32, elements: DataElements },
    /// One specific path.
    Path { method: Method, path: Arc<str> },
    /// A bundle of generic operations (the layer's `chunk`-th group of at most 50).
    Bundle { chunk: u16 },
}

/// A borrowed [`Scope`], so the hot path can look a slot up without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeRef<'a> {
    Operation { index: u32, elements: DataElements },
    Path { method: &'a Method, path: &'a str },
    Bundle { chunk: u16 },
}

impl Scope {
    fn as_ref(&self) -> ScopeRef<'_> {
        match self {
            Scope::Operation { index, elements } => ScopeRef::Operation {
                index: *index,
                elements: *elements,
            },
            Scope::Path { method, path } => ScopeRef::Path { method, path },
            Scope::Bundle { chunk } => ScopeRef::Bundle { chunk: *chunk },
        }
    }
}

impl ScopeRef<'_> {
    pub(super) fn to_owned(self) -> Scope {
        match self {
            ScopeRef::Operation { index, elements } => Scope::Operation { index, elements },
            ScopeRef::Path { method, path } => Scope::Path {
                method: method.clone(),
                path: path.into(),
            },
            ScopeRef::Bundle { chunk } => Scope::Bundle { chunk },
        }
    }
}

/// A slot's key within one seller: the origin (by its index in the layer's allowed origins), the
/// scope, and the target application when delegating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotKeyRef<'a> {
    pub(crate) origin: u16,
    pub(crate) scope: ScopeRef<'a>,
    pub(crate) target: Option<&'a str>,
}

pub(super) struct SlotKey {
    origin: u16,
    scope: Scope,
    target: Option<Arc<str>>,
}

impl SlotKey {
    fn as_ref(&self) -> SlotKeyRef<'_> {
        SlotKeyRef {
            origin: self.origin,
            scope: self.scope.as_ref(),
            target: self.target.as_deref(),
        }
    }
}

/// One seller's slots for operations and bundles. Few per seller (one per operation used, bounded by
/// the catalogue), so a copy-on-write list that is read without locks and scanned linearly beats a
/// map. Specific-path slots, which grow with traffic, live in [`TokenCache`]'s own map instead.
#[derive(Default)]
pub(super) struct SellerSlots {
    pub(super) slots: ArcSwap<Vec<(SlotKey, Arc<Slot>)>>,
    write: Mutex<()>,
}

impl SellerSlots {
    pub(super) fn find<R>(
        &self,
        key: SlotKeyRef<'_>,
        f: impl FnOnce(Option<&Arc<Slot>>) -> R,
    ) -> R {
        let slots = self.slots.load();
        f(slots
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, s)| s))
    }

    pub(super) fn get_or_insert(&self, key: SlotKeyRef<'_>, held: &Arc<AtomicUsize>) -> Arc<Slot> {
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = self.find(key, |s| s.cloned()) {
            return slot;
        }
        let slot = Arc::new(Slot::new(Arc::clone(held)));
        let mut next = Vec::with_capacity(self.slots.load().len() + 1);
        next.extend(
            self.slots
                .load()
                .iter()
                .map(|(k, s)| (k.clone_key(), Arc::clone(s))),
        );
        next.push((
            SlotKey {
                origin: key.origin,
                scope: key.scope.to_owned(),
                target: key.target.map(Arc::from),
            },
            Arc::clone(&slot),
        ));
        self.slots.store(Arc::new(next));
        slot
    }

    /// Drops the slots that hold nothing worth keeping and that no one else holds; returns whether
    /// none is left.
    pub(super) fn sweep(&self, now: Instant, keep: &Keep) -> bool {
        let _write = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let slots = self.slots.load_full();
        let keep: Vec<(SlotKey, Arc<Slot>)> = slots
            .iter()
            .filter(|(_, slot)| !(slot.sweep(now, keep) && Arc::strong_count(slot) == 1))
            .map(|(k, s)| (k.clone_key(), Arc::clone(s)))
            .collect();
        let empty = keep.is_empty();
        if keep.len() != slots.len() {
            self.slots.store(Arc::new(keep));
        }
        empty
    }
}

/// The key of a specific-path slot: seller, origin, method, path and target application.
pub(super) struct PathKey {
    seller: SellerId,
    origin: u16,
    method: Method,
    path: Arc<str>,
    target: Option<Arc<str>>,
}

/// A borrowed [`PathKey`], to look a path slot up without allocating.
#[derive(Clone, Copy)]
pub(super) struct PathKeyRef<'a> {
    seller: &'a SellerId,
    origin: u16,
    method: &'a Method,
    path: &'a str,
    target: Option<&'a str>,
}

impl PathKey {
    fn as_ref(&self) -> PathKeyRef<'_> {
        PathKeyRef {
            seller: &self.seller,
            origin: self.origin,
            method: &self.method,
            path: &self.path,
            target: self.target.as_deref(),
        }
    }
}

impl PathKeyRef<'_> {
    pub(super) fn to_owned(self) -> PathKey {
        PathKey {
            seller: self.seller.clone(),
            origin: self.origin,
            method: self.method.clone(),
            path: Arc::from(self.path),
            target: self.target.map(Arc::from),
        }
    }
}

// The owned and borrowed keys hash and compare through the same borrowed form, as papaya's
// `Equivalent` lookups require.
impl Hash for PathKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seller.hash(state);
        self.origin.hash(state);
        self.method.hash(state);
        self.path.hash(state);
        self.target.hash(state);
    }
}

impl PartialEq for PathKeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && self.path == other.path
            && self.method == other.method
            && self.target == other.target
            && self.seller == other.seller
    }
}

impl Eq for PathKeyRef<'_> {}

impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl PartialEq for PathKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for PathKey {}

impl papaya::Equivalent<PathKey> for PathKeyRef<'_> {
    fn equivalent(&self, key: &PathKey) -> bool {
        *self == key.as_ref()
    }
}

impl SlotKey {
    fn clone_key(&self) -> SlotKey {
        SlotKey {
            origin: self.origin,
            scope: self.scope.clone(),
            target: self.target.clone(),
        }
    }
}

/// The key of `key`'s slot in the path map, when it is a specific-path scope.
pub(super) fn path_key<'a>(seller: &'a SellerId, key: SlotKeyRef<'a>) -> Option<PathKeyRef<'a>> {
    match key.scope {
        ScopeRef::Path { method, path } => Some(PathKeyRef {
            seller,
            origin: key.origin,
            method,
            path,
            target: key.target,
        }),
        _ => None,
    }
}

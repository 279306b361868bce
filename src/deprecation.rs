//! One warning per deprecated operation per layer.
//!
//! Amazon deprecates restricted operations with a removal date (Orders v0's PII operations go on
//! 2027-03-27, replaced by Orders v2026-01-01, which needs no token). Until then they still get
//! their tokens; the layer says once, through `tracing`, which operation a service still calls,
//! what replaces it and by when. After that first warning an operation costs one relaxed atomic load
//! per request, and an operation that is not deprecated costs a field read.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::catalog::{Catalog, OperationId, RestrictedOperation};

/// Which deprecated operations of a layer's catalogue have been warned about.
#[derive(Debug)]
pub(crate) struct DeprecationWarnings {
    /// One flag per catalogue operation, by index.
    warned: Box<[AtomicBool]>,
}

impl DeprecationWarnings {
    pub(crate) fn new(catalog: &Catalog) -> Self {
        DeprecationWarnings {
            warned: catalog
                .operations()
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
        }
    }

    /// Warns about `op` (the catalogue's operation `id`) the first time a deprecated
    /// operation is served; does nothing for operations that are not deprecated.
    #[inline]
    pub(crate) fn note(&self, id: OperationId, op: &RestrictedOperation) {
        if op.removal_date().is_none() {
            return;
        }
        let Some(flag) = self.warned.get(id.index()) else {
            return;
        };
        if !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed) {
            warn(op);
        }
    }
}

#[cold]
fn warn(op: &RestrictedOperation) {
    tracing::warn!(
        api = op.api(),
        operation = op.name(),
        removal = op.removal_date().unwrap_or("unknown"),
        replacement = op
            .replacement()
            .unwrap_or("see Amazon's deprecation notice"),
        "a deprecated restricted operation is still in use: it gets its token until Amazon removes it; \
         migrate to the replacement before the removal date"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_deprecated_operation_and_never_for_the_rest() {
        let catalog = Catalog::amazon();
        let warnings = DeprecationWarnings::new(&catalog);
        for (index, op) in catalog.operations().iter().enumerate() {
            warnings.note(OperationId::at(index), op);
            warnings.note(OperationId::at(index), op);
            let flagged = warnings.warned[index].load(Ordering::Relaxed);
            assert_eq!(flagged, op.removal_date().is_some(), "{}", op.name());
        }
    }
}

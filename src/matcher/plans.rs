//! [`UsagePlans::classify`]: a request → the model operation it calls, on the same radix trees as
//! the restricted catalogue's [`Matcher`](super::Matcher).
//!
//! The method is written here rather than beside the type in `catalog`, so that the catalogue
//! stays plain data that the matcher reads, and no import runs the other way.

use std::sync::OnceLock;

use http::Method;

use super::routes::Routes;
use crate::catalog::{PlanId, PlannedOperation, UsagePlans};

impl UsagePlans {
    /// The model operation that `method` and `path` call, with its id; `None` for a path of no
    /// model operation. `path` is the path alone, without the query string, matched as the
    /// [`Matcher`](super::Matcher) matches it: byte for byte, a placeholder taking one whole
    /// segment. The trees are compiled at the first call.
    ///
    /// ```
    /// use http::Method;
    /// use spapi_rdt::catalog::UsagePlans;
    ///
    /// let plans = UsagePlans::amazon();
    /// let path = "/reports/2021-06-30/documents/amzn1.spdoc.1.4.na.0d5c";
    /// let (_, op) = plans.classify(&Method::GET, path).unwrap();
    /// assert_eq!(op.name(), "getReportDocument");
    /// assert!(plans.classify(&Method::DELETE, path).is_none());
    /// ```
    #[inline]
    pub fn classify(&self, method: &Method, path: &str) -> Option<(PlanId, &PlannedOperation)> {
        let index = routes().find(method, path)?;
        let operation = self.operations().get(index)?;
        Some((PlanId::at(index), operation))
    }
}

/// The generated table, compiled once. Every value of [`UsagePlans`] holds that same table, so one
/// set of trees serves them all.
fn routes() -> &'static Routes {
    static ROUTES: OnceLock<Routes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let table = UsagePlans::table();
        // A template that does not compile is left out: the tests check that every operation of
        // the table classifies as itself.
        Routes::compile(table.iter().map(|op| (op.method(), op.template()))).0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_table_compiles() {
        let table = UsagePlans::table();
        let (_, faults) = Routes::compile(table.iter().map(|op| (op.method(), op.template())));
        let faults: Vec<String> = faults
            .iter()
            .map(|(index, fault)| {
                let op = &table[*index];
                format!(
                    "{} {} {}: {}",
                    op.api(),
                    op.name(),
                    op.template(),
                    fault.reason()
                )
            })
            .collect();
        assert!(faults.is_empty(), "{faults:#?}");
    }

    #[test]
    fn every_row_classifies_as_itself() {
        let plans = UsagePlans::amazon();
        for (index, op) in plans.operations().iter().enumerate() {
            let sample = op.template().replace('{', "X").replace('}', "9");
            let hit = plans.classify(op.method(), &sample).map(|(id, _)| id);
            assert_eq!(hit, Some(PlanId::at(index)), "{} {}", op.api(), op.name());
        }
    }
}

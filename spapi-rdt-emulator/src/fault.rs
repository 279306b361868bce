//! Fault injection: what goes wrong, and where.

use std::time::Duration;

use axum::body::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Which requests an injected [`Fault`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The LWA token endpoint, `POST /auth/o2/token`.
    Lwa,
    /// The Tokens API, `POST /tokens/2021-03-01/restrictedDataToken`.
    Tokens,
    /// Every restricted operation of [`Catalog::amazon`](spapi_rdt::catalog::Catalog::amazon).
    Restricted,
    /// The unrestricted operations the emulator serves.
    Unrestricted,
    /// Every request, whatever its path (unknown paths included).
    Any,
}

/// Something that goes wrong with a request, injected with
/// [`Emulator::inject`](super::Emulator::inject).
///
/// A request meets at most one [`Fault::Delay`] and at most one other fault, each taken from the
/// oldest injection that applies to it and still has uses left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an error body shaped as the endpoint shapes its errors (OAuth2's
    /// `{"error", "error_description"}` for LWA, `{"errors": [{"code", "message"}]}` for SP-API).
    /// A 429 carries no rate-limit header.
    Status(StatusCode),
    /// Wait this long (a tokio sleep) before handling the request as usual.
    Delay(Duration),
    /// Answer 200 with `content-type: application/json` and a body that is not JSON.
    MalformedBody,
    /// Answer 200 with JSON that lacks the fields that matter (the token).
    MissingFields,
    /// Issue a real token but report this `expiresIn` (`expires_in` for LWA); `None` leaves the
    /// field out. The token lives its configured lifetime whatever is reported. Applies only to
    /// [`Endpoint::Lwa`] and [`Endpoint::Tokens`]: other requests leave it for the next one.
    ExpiresIn(Option<i64>),
    /// Send the status line, the headers and part of the body, then abort the connection.
    DropConnection,
    /// Answer with exactly this, whatever the endpoint would have answered: for what the emulator
    /// never says by itself (an `expiresIn` of the wrong type, a `Retry-After`, an error body of a
    /// proxy in between).
    Reply(CannedReply),
}

/// A whole answer, sent as it is by [`Fault::Reply`].
///
/// ```
/// use http::StatusCode;
/// use http::header::{HeaderValue, RETRY_AFTER};
/// use spapi_rdt_emulator::{CannedReply, Fault};
///
/// let throttled = CannedReply::json(
///     StatusCode::TOO_MANY_REQUESTS,
///     &serde_json::json!({"errors": [{"code": "QuotaExceeded", "message": "slow down"}]}),
/// )
/// .header(RETRY_AFTER, HeaderValue::from_static("7"));
/// let fault = Fault::Reply(throttled);
/// # let _ = fault;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CannedReply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl CannedReply {
    /// An answer with `status` and `body` as it is, labelled `content-type: application/json`
    /// (whether or not it is JSON, as a misbehaving server would).
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        CannedReply {
            status,
            headers,
            body: body.into(),
        }
    }

    /// An answer with `status` and `body` serialized.
    pub fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        CannedReply::new(status, body.to_string())
    }

    /// Adds a header to the answer (a second value of a name already set is added, not replaced).
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The status the answer has.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// Where a request went, as far as faults and counters care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Lwa,
    Tokens,
    Restricted,
    Unrestricted,
    Unknown,
}

impl Endpoint {
    pub(crate) fn covers(self, target: Target) -> bool {
        match self {
            Endpoint::Any => true,
            Endpoint::Lwa => target == Target::Lwa,
            Endpoint::Tokens => target == Target::Tokens,
            Endpoint::Restricted => target == Target::Restricted,
            Endpoint::Unrestricted => target == Target::Unrestricted,
        }
    }
}

impl Fault {
    fn applies_to(&self, target: Target) -> bool {
        match self {
            Fault::ExpiresIn(_) => matches!(target, Target::Lwa | Target::Tokens),
            _ => true,
        }
    }
}

/// One injection: a fault for the next `remaining` requests to an endpoint.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) endpoint: Endpoint,
    pub(crate) fault: Fault,
    pub(crate) remaining: usize,
}

/// The faults one request meets.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) delay: Option<Duration>,
    pub(crate) fault: Option<Fault>,
}

impl Plan {
    /// How many injected faults the request meets.
    pub(crate) fn count(&self) -> u64 {
        u64::from(self.delay.is_some()) + u64::from(self.fault.is_some())
    }
}

/// Takes the faults a request to `target` meets, using up one use of each rule taken.
pub(crate) fn take(rules: &mut Vec<Rule>, target: Target) -> Plan {
    let mut plan = Plan::default();
    for rule in rules.iter_mut() {
        if rule.remaining == 0 || !rule.endpoint.covers(target) || !rule.fault.applies_to(target) {
            continue;
        }
        match &rule.fault {
            Fault::Delay(d) if plan.delay.is_none() => {
                plan.delay = Some(*d);
                rule.remaining -= 1;
            }
            Fault::Delay(_) => {}
            other if plan.fault.is_none() => {
                plan.fault = Some(other.clone());
                rule.remaining -= 1;
            }
            _ => {}
        }
    }
    rules.retain(|r| r.remaining > 0);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_in_order_and_run_out() {
        let mut rules = vec![
            Rule {
                endpoint: Endpoint::Tokens,
                fault: Fault::Status(StatusCode::INTERNAL_SERVER_ERROR),
                remaining: 1,
            },
            Rule {
                endpoint: Endpoint::Any,
                fault: Fault::Delay(Duration::from_millis(5)),
                remaining: 2,
            },
            Rule {
                endpoint: Endpoint::Any,
                fault: Fault::ExpiresIn(Some(0)),
                remaining: 1,
            },
        ];
        let first = take(&mut rules, Target::Restricted);
        assert_eq!(first.delay, Some(Duration::from_millis(5)));
        assert_eq!(first.fault, None, "ExpiresIn waits for a token endpoint");
        let second = take(&mut rules, Target::Tokens);
        assert_eq!(
            second.fault,
            Some(Fault::Status(StatusCode::INTERNAL_SERVER_ERROR))
        );
        assert_eq!(second.count(), 2);
        let third = take(&mut rules, Target::Tokens);
        assert_eq!(third.fault, Some(Fault::ExpiresIn(Some(0))));
        assert_eq!(third.delay, None);
        assert!(rules.is_empty());
    }
}

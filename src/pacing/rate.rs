//! The rate Amazon's answers state, and the bounds it is believed within.

use http::{HeaderMap, StatusCode};

use crate::catalog::UsagePlan;

/// The header in which Amazon states the caller's rate for the operation.
pub(super) const RATE_LIMIT_HEADER: &str = "x-amzn-ratelimit-limit";

/// The slowest rate believed: the strictest plan of the models. Slower would let one answer stop a
/// seller's calls to an operation for longer than any published plan does.
pub(super) const MIN_RATE: f64 = UsagePlan::CONSERVATIVE_DEFAULT.rate_per_second();

/// The fastest rate believed: above every plan of the models (the highest is 80 a second).
pub(super) const MAX_RATE: f64 = 100.0;

/// The rate a response states, bounded; `None` when it states none that can be believed. Only
/// 2xx, 400 and 404 answers carry the caller's plan.
pub(super) fn stated_rate(status: StatusCode, headers: &HeaderMap) -> Option<f64> {
    if !(status.is_success()
        || status == StatusCode::BAD_REQUEST
        || status == StatusCode::NOT_FOUND)
    {
        return None;
    }
    let text = headers.get(RATE_LIMIT_HEADER)?.to_str().ok()?.trim();
    // A rate is a short decimal; anything longer is not one.
    if text.len() > 32 {
        return None;
    }
    bounded(text.parse().ok()?)
}

/// `rate` within [`MIN_RATE`]..=[`MAX_RATE`]; `None` for zero, a negative number or NaN.
pub(super) fn bounded(rate: f64) -> Option<f64> {
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    Some(rate.clamp(MIN_RATE, MAX_RATE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(status: u16, value: &str) -> Option<f64> {
        let mut headers = HeaderMap::new();
        headers.insert(RATE_LIMIT_HEADER, value.parse().unwrap());
        stated_rate(StatusCode::from_u16(status).unwrap(), &headers)
    }

    #[test]
    fn believable_rates_are_read_from_the_answers_that_carry_them() {
        assert_eq!(stated(200, "0.0167"), Some(0.0167));
        assert_eq!(stated(404, " 2.0 "), Some(2.0));
        assert_eq!(stated(400, "10"), Some(10.0));
        // 401/403/429 answers carry no plan.
        assert_eq!(stated(403, "5"), None);
        assert_eq!(stated(429, "5"), None);
        assert_eq!(stated(200, ""), None);
    }

    #[test]
    fn outside_numbers_never_stop_a_seller_or_flood_amazon() {
        for garbage in ["0", "-1", "NaN", "abc", "1e", &"9".repeat(40)] {
            assert_eq!(stated(200, garbage), None, "{garbage}");
        }
        assert_eq!(stated(200, "1e-12"), Some(MIN_RATE));
        assert_eq!(stated(200, "inf"), Some(MAX_RATE));
        assert_eq!(stated(200, "1e300"), Some(MAX_RATE));
    }
}

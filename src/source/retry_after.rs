//! Reading `Retry-After` (RFC 9110, section 10.2.3): a number of seconds, or an HTTP date.
//!
//! What this module promises: any header value gives a duration or `None`, never a panic.
//! - `delay-seconds` (digits only): that many seconds, even `u64::MAX` of them;
//! - an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`): the time from now until then, zero when it
//!   is past;
//! - anything else (the obsolete RFC 850 and asctime date forms included, which Amazon does not
//!   send): `None`, and the answer is treated like any transient error.
//!
//! The duration is not bounded here: the layer cuts every `Retry-After` to its longest transient
//! back-off, whichever source the number came from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a `Retry-After` value asks to wait, counted from `now` for a date.
pub(super) fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as a point in time.
fn imf_fixdate(value: &str) -> Option<SystemTime> {
    let (weekday, rest) = value.split_once(", ")?;
    const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    if !WEEKDAYS.contains(&weekday) {
        return None;
    }
    let mut parts = rest.split(' ');
    let day = number(parts.next()?, 2)?;
    let month = month(parts.next()?)?;
    let year = number(parts.next()?, 4)?;
    let mut clock = parts.next()?.split(':');
    let hour = number(clock.next()?, 2)?;
    let minute = number(clock.next()?, 2)?;
    let second = number(clock.next()?, 2)?;
    if clock.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Exactly `digits` ASCII digits as a number.
fn number(text: &str, digits: usize) -> Option<u64> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn month(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == text).map(|i| i as u64 + 1)
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian; `year >= 1970`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    // Howard Hinnant's algorithm, with years starting in March so leap days come last.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn seconds() {
        let now = SystemTime::now();
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse("18446744073709551615", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for garbage in [
            "18446744073709551616",
            "-1",
            "1.5",
            "",
            "soon",
            "12 s",
            "+3",
        ] {
            assert_eq!(parse(garbage, now), None, "{garbage}");
        }
    }

    #[test]
    fn dates() {
        // 1994-11-06 08:49:37 UTC.
        let date = 784_111_777;
        let value = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse(value, at(date - 90)), Some(Duration::from_secs(90)));
        assert_eq!(parse(value, at(date + 90)), Some(Duration::ZERO));
        assert_eq!(
            parse("Thu, 29 Feb 2024 00:00:00 GMT", at(1_709_164_800 - 1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse("Thu, 01 Jan 1970 00:00:00 GMT", at(0)),
            Some(Duration::ZERO)
        );
        for garbage in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 99999 08:49:37 GMT",
        ] {
            assert_eq!(parse(garbage, at(date)), None, "{garbage}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_not_without_panicking(text in ".{0,40}", now in any::<u32>()) {
            let _ = parse(&text, at(u64::from(now)));
        }

        #[test]
        fn any_fixdate_shape_parses_or_not_without_panicking(
            d in 0u32..100, mo in 0usize..12, y in 0u32..10_000, h in 0u32..100, mi in 0u32..100, s in 0u32..100,
        ) {
            let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let text = format!("Mon, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT", months[mo]);
            let _ = parse(&text, at(0));
        }
    }
}

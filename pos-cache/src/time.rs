//! Ages (`7d`, `21d`, `12h`) and times (`2026-11-20`, `2026-11-20T14:00:00Z`), held as
//! milliseconds since the Unix epoch (UTC).

use crate::error::{Error, Result};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// A length of time in milliseconds.
pub type Age = i64;

const SECOND: Age = 1000;
const MINUTE: Age = 60 * SECOND;
const HOUR: Age = 60 * MINUTE;
const DAY: Age = 24 * HOUR;

/// The default maximum age of a check: 7 days (the strictest published figure).
pub const DEFAULT_MAX_AGE: Age = 7 * DAY;
/// Maximum ages above this (21 days) are refused without `--allow-stale-cache`.
pub const HARD_MAX_AGE: Age = 21 * DAY;

/// Parses an age: a whole number and a unit, `w` weeks, `d` days, `h` hours, `m` minutes or
/// `s` seconds (`7d`, `21d`, `12h`, `90m`).
pub fn parse_age(s: &str) -> Result<Age> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::Usage(format!(
            "not an age: {s:?} (write a whole number and a unit: 7d, 21d, 12h, 90m, 2w)"
        ))
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit = match unit.trim() {
        "w" => 7 * DAY,
        "d" => DAY,
        "h" => HOUR,
        "m" => MINUTE,
        "s" => SECOND,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// An age as the largest whole unit that divides it (`7d`, `36h`, `90m`, `5s`, `1500ms`).
pub fn format_age(age: Age) -> String {
    for (unit, name) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m"), (SECOND, "s")] {
        if age % unit == 0 {
            return format!("{}{name}", age / unit);
        }
    }
    format!("{age}ms")
}

/// Parses a time: RFC 3339 (`2026-11-20T14:00:00Z`, any offset) or a date (`2026-11-20`,
/// taken as 00:00 UTC that day).
pub fn parse_time(s: &str) -> Result<i64> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_millis());
        }
    }
    Err(Error::Usage(format!(
        "not a date or time: {s:?} (write 2026-11-20 for 00:00 UTC that day, or \
         2026-11-20T14:00:00Z)"
    )))
}

/// A time as RFC 3339, UTC, to the second (or the millisecond when it has one).
pub fn format_time(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) if ms % 1000 == 0 => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms}ms"),
    }
}

/// Now, in milliseconds.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The time in a MESH message id (`yyyyMMddHHmmssffffff_XXXXXX`: when MESH accepted the
/// message), if it has that form.
pub(crate) fn message_id_time(id: &str) -> Option<i64> {
    let stamp = id.get(..20)?;
    if id.as_bytes().get(20) != Some(&b'_') || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(&stamp[..14], "%Y%m%d%H%M%S").ok()?;
    let micros: i64 = stamp[14..].parse().ok()?;
    Some(t.and_utc().timestamp_millis() + micros / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times() {
        assert_eq!(parse_age("7d").unwrap(), DEFAULT_MAX_AGE);
        assert_eq!(parse_age("21d").unwrap(), HARD_MAX_AGE);
        assert_eq!(parse_age("12h").unwrap(), 12 * HOUR);
        assert_eq!(parse_age("3w").unwrap(), HARD_MAX_AGE);
        for bad in ["", "7", "d", "7x", "-1d", "1.5d", "99999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(format_age(parse_age("36h").unwrap()), "36h");
        assert_eq!(format_age(DEFAULT_MAX_AGE), "7d");
        let t = parse_time("2026-11-20").unwrap();
        assert_eq!(format_time(t), "2026-11-20T00:00:00Z");
        assert_eq!(parse_time("2026-11-20T01:00:00+01:00").unwrap(), t);
        assert!(parse_time("20/11/2026").is_err());
        assert_eq!(
            message_id_time("20261120140001123456_3573F8"),
            Some(parse_time("2026-11-20T14:00:01.123Z").unwrap())
        );
        assert_eq!(message_id_time("ABB0E6F08B5B4706904954A869AC54FC"), None);
    }
}

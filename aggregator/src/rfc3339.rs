//! RFC 3339 timestamps (`2026-11-21T08:00:00Z`, `2026-11-21T09:00:00.5+01:00`) ↔ epoch ns.
//!
//! Role: parses the `--from`/`--to` of `replay` and formats times in messages. Strict: a date,
//! `T` (or a space), a time with optional fraction (up to nanoseconds), then `Z` or `±HH:MM`.
//! Pure: touches nothing.

use crate::engine::Nanos;

/// Text that is not an RFC 3339 timestamp, or one outside the i64-nanosecond range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 timestamp like 2026-11-21T08:00:00Z: {why}")]
pub struct Rfc3339Error {
    text: String,
    why: &'static str,
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an RFC 3339 timestamp into nanoseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Result<Nanos, Rfc3339Error> {
    let fail = |why| Rfc3339Error { text: text.to_string(), why };
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, Rfc3339Error> {
        let part = b.get(range).ok_or_else(|| fail("too short"))?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(fail("expected digits"));
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(fail("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return Err(fail("field out of range"));
    }
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = &b[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return Err(fail("fraction must have 1 to 9 digits"));
        }
        frac = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')) * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(fail("offset out of range"));
            }
            let secs = oh * 3600 + om * 60;
            if sign == b'+' { secs } else { -secs }
        }
        _ => return Err(fail("expected Z or ±HH:MM at the end")),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(|| fail("outside the representable range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-21T08:00:00Z"), Ok(1_795_248_000_000_000_000));
        assert_eq!(parse_rfc3339("2026-11-21T09:00:00+01:00"), Ok(1_795_248_000_000_000_000));
        assert_eq!(parse_rfc3339("2026-11-21 07:30:00.5-00:30"), Ok(1_795_248_000_500_000_000));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00.000000001Z"), Ok(1_709_164_800_000_000_001));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
    }

    #[test]
    fn rejects_what_is_not_rfc_3339() {
        for bad in [
            "",
            "2026-11-21",
            "2026-11-21T08:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T08:00:00.Z",
            "2026-11-21T08:00:00.1234567890Z",
            "2026-11-21T08:00:00+0100",
            "2026-11-21T08:00:00Zjunk",
            "２０２６-11-21T08:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }
}

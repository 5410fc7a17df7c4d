//! Duration text: `500ms`, `10s`, `2h`.
//!
//! Role: parses and prints the durations used in the agent's configuration (TOML values,
//! environment variables and flags), so that all three layers accept the same syntax. A
//! duration is a non-negative integer followed by one unit: `ns`, `us`, `ms`, `s`, `m`, `h` or
//! `d` (the units the aggregator's configuration accepts too). Touches nothing else.

use std::time::Duration;

/// Why a duration text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty text.
    #[error("empty duration (expected e.g. \"500ms\", \"10s\", \"2h\")")]
    Empty,
    /// No leading digits.
    #[error("duration {0:?} does not start with a number (expected e.g. \"500ms\", \"10s\", \"2h\")")]
    NoNumber(String),
    /// Digits without a unit, or an unknown unit.
    #[error("duration {0:?} has no valid unit (use one of ns, us, ms, s, m, h, d)")]
    BadUnit(String),
    /// The value does not fit in a `Duration`.
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

const UNITS: [(&str, u64); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `<integer><unit>` (surrounding whitespace allowed).
///
/// # Errors
/// [`DurationError`] naming what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(DurationError::NoNumber(text.to_owned()));
    }
    let (number, unit) = t.split_at(digits_end);
    let factor = UNITS
        .iter()
        .find(|(name, _)| *name == unit.trim_start())
        .map(|(_, f)| *f)
        .ok_or_else(|| DurationError::BadUnit(text.to_owned()))?;
    let n: u64 = number.parse().map_err(|_| DurationError::TooLarge(text.to_owned()))?;
    let nanos = u128::from(n) * u128::from(factor);
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| DurationError::TooLarge(text.to_owned()))?;
    // The remainder is below 10⁹, so it always fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

/// Prints a duration in the largest unit that represents it exactly (`1500ms`, `10s`, `2h`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (name, factor) in UNITS {
        let f = u128::from(factor);
        if nanos.is_multiple_of(f) {
            return format!("{}{name}", nanos / f);
        }
    }
    format!("{nanos}ns")
}

/// `serde(with = "...")` adapter storing a `Duration` as duration text.
pub mod serde_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as duration text, e.g. `"10s"`.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Deserializes duration text, e.g. `"10s"`.
    ///
    /// # Errors
    /// The text is not a valid duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("9ns"), Ok(Duration::from_nanos(9)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("s"), Err(DurationError::NoNumber("s".into())));
        assert_eq!(parse_duration("-1s"), Err(DurationError::NoNumber("-1s".into())));
        assert_eq!(parse_duration("10"), Err(DurationError::BadUnit("10".into())));
        assert_eq!(parse_duration("10 years"), Err(DurationError::BadUnit("10 years".into())));
        assert_eq!(parse_duration("1.5s"), Err(DurationError::BadUnit("1.5s".into())));
        assert!(matches!(parse_duration("99999999999999999999999d"), Err(DurationError::TooLarge(_))));
        assert!(matches!(parse_duration("18446744073709551615d"), Err(DurationError::TooLarge(_))));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1500ms", "10s", "2h", "1d", "3m", "7us", "9ns", "0s"] {
            let d = parse_duration(text).unwrap_or_default();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::from_millis(60_000)), "1m");
    }
}

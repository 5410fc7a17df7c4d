//! Event-time arithmetic: the nanosecond time base, the valid ranges and duration text.
//!
//! Role: every time in the engine is an `i64` count of nanoseconds since the Unix epoch.
//! Valid event times are bounded to ±2⁶² ns (years 1823..2116) and configured durations to
//! 2⁵⁸ ns (~9 years), so `time + duration` sums never overflow. Touches nothing else.

use std::fmt;

/// Nanoseconds since the Unix epoch (event time, processing time) or a duration.
pub type Nanos = i64;

/// Nanoseconds per millisecond.
pub const NANOS_PER_MILLI: Nanos = 1_000_000;
/// Nanoseconds per second.
pub const NANOS_PER_SEC: Nanos = 1_000_000_000;
/// Earliest accepted event time (about 1823-11-12).
pub const MIN_EVENT_TIME: Nanos = -(1 << 62);
/// Latest accepted event time (about 2116-02-20).
pub const MAX_EVENT_TIME: Nanos = 1 << 62;
/// Longest configurable duration (about 9.1 years).
pub const MAX_DURATION: Nanos = 1 << 58;
/// The watermark before any input has spoken: nothing is complete.
pub const WATERMARK_NONE: Nanos = i64::MIN;
/// The watermark after [`crate::engine::WindowEngine::finish`]: everything is complete.
pub const WATERMARK_END: Nanos = i64::MAX;

/// Start of the step-aligned interval `[start, start + step)` that contains `t`, where
/// intervals are `offset + k·step`. `step > 0`; inputs within the documented ranges.
#[inline]
pub fn align_down(t: Nanos, offset: Nanos, step: Nanos) -> Nanos {
    t - (t - offset).rem_euclid(step)
}

/// A duration could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (expected a number and a unit: ns, us, ms, s, m, h, d, e.g. \"10s\")")]
pub struct DurationParseError {
    text: String,
    why: &'static str,
}

/// Parses `"10s"`, `"500ms"`, `"5m"`, `"1h"`, `"2d"`, `"250us"`, `"7ns"` or `"0"` into
/// nanoseconds. Rejects negatives, fractions, missing units and values above [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Nanos, DurationParseError> {
    let err = |why| DurationParseError { text: text.to_owned(), why };
    let s = text.trim();
    if s == "0" {
        return Ok(0);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| err("missing unit"))?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(err("missing number"));
    }
    let n: i64 = digits.parse().map_err(|_| err("number too large"))?;
    let scale = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        _ => return Err(err("unknown unit")),
    };
    match n.checked_mul(scale) {
        Some(v) if v <= MAX_DURATION => Ok(v),
        _ => Err(err("longer than the maximum of about 9 years")),
    }
}

/// Formats nanoseconds as the shortest exact duration text that [`parse_duration`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationText(pub Nanos);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n == 0 {
            return f.write_str("0");
        }
        const UNITS: [(Nanos, &str); 7] = [
            (86_400 * NANOS_PER_SEC, "d"),
            (3_600 * NANOS_PER_SEC, "h"),
            (60 * NANOS_PER_SEC, "m"),
            (NANOS_PER_SEC, "s"),
            (NANOS_PER_MILLI, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ];
        for (scale, unit) in UNITS {
            if n % scale == 0 {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_duration("10s"), Ok(10 * NANOS_PER_SEC));
        assert_eq!(parse_duration("500ms"), Ok(500 * NANOS_PER_MILLI));
        assert_eq!(parse_duration("2d"), Ok(172_800 * NANOS_PER_SEC));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "s", "10", "-5s", "1.5s", "10 parsecs", "99999999999999999999s", "3650d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn display_round_trips() {
        for n in [1, 999, 1_000, NANOS_PER_MILLI * 1500, 90 * NANOS_PER_SEC, 86_400 * NANOS_PER_SEC] {
            assert_eq!(parse_duration(&DurationText(n).to_string()), Ok(n));
        }
    }

    #[test]
    fn align_down_handles_negative_times_and_offsets() {
        assert_eq!(align_down(15, 0, 10), 10);
        assert_eq!(align_down(-1, 0, 10), -10);
        assert_eq!(align_down(12, 3, 10), 3);
        assert_eq!(align_down(2, 3, 10), -7);
    }
}

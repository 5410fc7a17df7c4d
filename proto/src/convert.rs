//! Exact conversions between wire types and plain integers.
//!
//! * `google.protobuf.Timestamp` ⇄ `i64` nanoseconds since the Unix epoch
//!   ([`timestamp_to_nanos`], [`nanos_to_timestamp`]);
//! * `google.protobuf.Duration` ⇄ `i64` nanoseconds
//!   ([`duration_to_nanos`], [`nanos_to_duration`]);
//! * [`Decimal`] ⇄ `i128` nano units, i.e. the value times 10⁹
//!   ([`Decimal::to_nano_units`], [`Decimal::from_nano_units`]), and ⇄ decimal
//!   text ([`fmt::Display`], [`FromStr`]).
//!
//! Every conversion is exact: values that cannot be represented on the other
//! side are reported as errors, never clamped or rounded. Nothing here panics,
//! whatever the input.

use std::fmt;
use std::str::FromStr;

use prost_types::{Duration, Timestamp};

use crate::v1::{Decimal, Number, number};

/// Nanoseconds in one second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Largest magnitude of [`Decimal::nanos`] (and of `Duration::nanos`).
pub const MAX_NANOS: i32 = 999_999_999;

const NANOS_PER_SECOND_I32: i32 = 1_000_000_000;
const NANOS_PER_SECOND_I128: i128 = 1_000_000_000;

/// Why a timestamp or duration cannot be turned into `i64` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TimeError {
    /// `nanos` is outside its valid range: `0..1_000_000_000` for a
    /// timestamp, `-999_999_999..=999_999_999` for a duration.
    #[error("nanos field out of range")]
    NanosOutOfRange,
    /// A duration whose `seconds` and `nanos` have opposite signs.
    #[error("duration seconds and nanos have opposite signs")]
    MixedSigns,
    /// The value does not fit in `i64` nanoseconds (for timestamps: it lies
    /// outside 1677-09-21T00:12:43.145224192Z..=2262-04-11T23:47:16.854775807Z).
    #[error("value does not fit in i64 nanoseconds")]
    OutOfRange,
}

/// Why a [`Decimal`] is invalid or cannot be converted / parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecimalError {
    /// `nanos` is outside `-999_999_999..=999_999_999`.
    #[error("decimal nanos out of range -999999999..=999999999")]
    NanosOutOfRange,
    /// `units` and `nanos` have opposite signs.
    #[error("decimal units and nanos have opposite signs")]
    MixedSigns,
    /// The value's whole part does not fit in `i64` units.
    #[error("decimal value out of range")]
    OutOfRange,
    /// Empty text.
    #[error("empty decimal text")]
    Empty,
    /// Text that is not `[+-]?[0-9]+(\.[0-9]+)?`.
    #[error("invalid decimal syntax")]
    InvalidSyntax,
    /// More than 9 fractional digits (would need rounding).
    #[error("more than 9 fractional digits")]
    TooManyFractionalDigits,
}

/// Converts a timestamp to nanoseconds since the Unix epoch.
///
/// # Errors
/// [`TimeError::NanosOutOfRange`] if `ts.nanos` is not in `0..1_000_000_000`,
/// [`TimeError::OutOfRange`] if the instant does not fit in `i64` nanoseconds.
pub fn timestamp_to_nanos(ts: &Timestamp) -> Result<i64, TimeError> {
    if !(0..NANOS_PER_SECOND_I32).contains(&ts.nanos) {
        return Err(TimeError::NanosOutOfRange);
    }
    seconds_nanos_to_i64(ts.seconds, ts.nanos)
}

/// Converts nanoseconds since the Unix epoch to a normalised timestamp
/// (`nanos` in `0..1_000_000_000`; instants before the epoch have negative
/// `seconds`, floored). Total: every `i64` is representable.
pub fn nanos_to_timestamp(n: i64) -> Timestamp {
    Timestamp { seconds: n.div_euclid(NANOS_PER_SECOND), nanos: small_nanos(n.rem_euclid(NANOS_PER_SECOND)) }
}

/// Converts a duration to signed nanoseconds.
///
/// # Errors
/// [`TimeError::NanosOutOfRange`] if `d.nanos` is not in
/// `-999_999_999..=999_999_999`, [`TimeError::MixedSigns`] if `seconds` and
/// `nanos` have opposite signs, [`TimeError::OutOfRange`] if the duration
/// does not fit in `i64` nanoseconds.
pub fn duration_to_nanos(d: &Duration) -> Result<i64, TimeError> {
    if !(-MAX_NANOS..=MAX_NANOS).contains(&d.nanos) {
        return Err(TimeError::NanosOutOfRange);
    }
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(TimeError::MixedSigns);
    }
    seconds_nanos_to_i64(d.seconds, d.nanos)
}

/// Converts signed nanoseconds to a normalised duration (`nanos` has the sign
/// of `seconds`, magnitude below one second). Total: every `i64` is
/// representable.
pub fn nanos_to_duration(n: i64) -> Duration {
    Duration { seconds: n / NANOS_PER_SECOND, nanos: small_nanos(n % NANOS_PER_SECOND) }
}

/// `seconds * 10⁹ + nanos` as `i64`, computed in `i128` so that instants near
/// `i64::MIN` (whose `seconds * 10⁹` alone would overflow `i64`) are exact.
fn seconds_nanos_to_i64(seconds: i64, nanos: i32) -> Result<i64, TimeError> {
    let total = i128::from(seconds)
        .checked_mul(NANOS_PER_SECOND_I128)
        .and_then(|s| s.checked_add(i128::from(nanos)))
        .ok_or(TimeError::OutOfRange)?;
    i64::try_from(total).map_err(|_| TimeError::OutOfRange)
}

/// Narrows a value known to satisfy `|v| < 10⁹` to `i32`.
fn small_nanos(v: i64) -> i32 {
    // |v| < 10⁹ < i32::MAX, so the conversion cannot fail; 0 is unreachable.
    i32::try_from(v).unwrap_or(0)
}

impl Decimal {
    /// Builds a decimal after checking it is valid (see [`Decimal::validate`]).
    ///
    /// # Errors
    /// As [`Decimal::validate`].
    pub fn new(units: i64, nanos: i32) -> Result<Decimal, DecimalError> {
        let d = Decimal { units, nanos };
        d.validate()?;
        Ok(d)
    }

    /// Checks the `google.type.Money` rules: `nanos` within
    /// `-999_999_999..=999_999_999` and `units`/`nanos` not of opposite signs.
    ///
    /// # Errors
    /// [`DecimalError::NanosOutOfRange`] or [`DecimalError::MixedSigns`].
    pub fn validate(&self) -> Result<(), DecimalError> {
        if !(-MAX_NANOS..=MAX_NANOS).contains(&self.nanos) {
            return Err(DecimalError::NanosOutOfRange);
        }
        if (self.units > 0 && self.nanos < 0) || (self.units < 0 && self.nanos > 0) {
            return Err(DecimalError::MixedSigns);
        }
        Ok(())
    }

    /// The exact value times 10⁹ (`units * 10⁹ + nanos`).
    ///
    /// # Errors
    /// [`DecimalError::NanosOutOfRange`] or [`DecimalError::MixedSigns`] for
    /// an invalid decimal.
    pub fn to_nano_units(&self) -> Result<i128, DecimalError> {
        self.validate()?;
        Ok(self.raw_nano_units())
    }

    /// The decimal whose value is `v * 10⁻⁹`.
    ///
    /// # Errors
    /// [`DecimalError::OutOfRange`] if the whole part does not fit in `i64`.
    pub fn from_nano_units(v: i128) -> Result<Decimal, DecimalError> {
        // Truncating division: remainder has the sign of `v`, so units and
        // nanos never have opposite signs and |nanos| <= 999_999_999.
        let units = i64::try_from(v / NANOS_PER_SECOND_I128).map_err(|_| DecimalError::OutOfRange)?;
        let nanos = i32::try_from(v % NANOS_PER_SECOND_I128).map_err(|_| DecimalError::OutOfRange)?;
        Ok(Decimal { units, nanos })
    }

    /// `units * 10⁹ + nanos` without validation. Cannot overflow: the result
    /// is below 2⁹⁴ in magnitude.
    fn raw_nano_units(&self) -> i128 {
        i128::from(self.units) * NANOS_PER_SECOND_I128 + i128::from(self.nanos)
    }
}

/// Exact decimal text with trailing fractional zeros trimmed: `42`, `-1.5`,
/// `0.000000001`. Never fails: a decimal violating the sign/range rules is
/// printed as its mathematical value `units + nanos·10⁻⁹`. Width, fill, `+`
/// and `0` flags are honoured; precision is ignored (no rounding).
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.raw_nano_units();
        let abs = v.unsigned_abs();
        let whole = abs / NANOS_PER_SECOND_I128.unsigned_abs();
        let frac = abs % NANOS_PER_SECOND_I128.unsigned_abs();
        let text = if frac == 0 {
            whole.to_string()
        } else {
            let digits = format!("{frac:09}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        };
        f.pad_integral(v >= 0, "", &text)
    }
}

/// Parses `[+-]?[0-9]+(\.[0-9]{1,9})?` exactly. Rejects empty text,
/// whitespace, exponents, a bare `.`/sign, more than 9 fractional digits
/// ([`DecimalError::TooManyFractionalDigits`], never rounded) and values whose
/// whole part does not fit in `i64` ([`DecimalError::OutOfRange`]).
impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DecimalError::Empty);
        }
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || (body.contains('.') && !all_digits(frac)) {
            return Err(DecimalError::InvalidSyntax);
        }
        if frac.len() > 9 {
            return Err(DecimalError::TooManyFractionalDigits);
        }

        let mut nano_units: i128 = 0;
        for b in whole.bytes() {
            nano_units = nano_units
                .checked_mul(10)
                .and_then(|x| x.checked_add(i128::from(b - b'0')))
                .ok_or(DecimalError::OutOfRange)?;
        }
        let mut frac_nanos: i128 = 0;
        for i in 0..9 {
            let digit = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
            frac_nanos = frac_nanos * 10 + i128::from(digit);
        }
        nano_units = nano_units
            .checked_mul(NANOS_PER_SECOND_I128)
            .and_then(|x| x.checked_add(frac_nanos))
            .ok_or(DecimalError::OutOfRange)?;
        if negative {
            nano_units = -nano_units;
        }
        Decimal::from_nano_units(nano_units)
    }
}

impl Number {
    /// A floating-point number.
    pub fn from_f64(v: f64) -> Number {
        Number { kind: Some(number::Kind::DoubleValue(v)) }
    }

    /// An exact decimal number.
    pub fn from_decimal(d: Decimal) -> Number {
        Number { kind: Some(number::Kind::DecimalValue(d)) }
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Number {
        Number::from_f64(v)
    }
}

impl From<Decimal> for Number {
    fn from(d: Decimal) -> Number {
        Number::from_decimal(d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    fn dec(units: i64, nanos: i32) -> Decimal {
        Decimal { units, nanos }
    }

    #[test]
    fn timestamp_basic() {
        assert_eq!(timestamp_to_nanos(&ts(0, 0)), Ok(0));
        assert_eq!(timestamp_to_nanos(&ts(1, 5)), Ok(1_000_000_005));
        assert_eq!(timestamp_to_nanos(&ts(-1, 999_999_999)), Ok(-1));
        assert_eq!(nanos_to_timestamp(-1), ts(-1, 999_999_999));
        assert_eq!(nanos_to_timestamp(-1_000_000_000), ts(-1, 0));
        assert_eq!(nanos_to_timestamp(1_500_000_000), ts(1, 500_000_000));
    }

    #[test]
    fn timestamp_edges() {
        // i64::MIN ns = 1677-09-21T00:12:43.145224192Z
        let min = ts(-9_223_372_037, 145_224_192);
        assert_eq!(timestamp_to_nanos(&min), Ok(i64::MIN));
        assert_eq!(nanos_to_timestamp(i64::MIN), min);
        assert_eq!(timestamp_to_nanos(&ts(-9_223_372_037, 145_224_191)), Err(TimeError::OutOfRange));
        // i64::MAX ns = 2262-04-11T23:47:16.854775807Z
        let max = ts(9_223_372_036, 854_775_807);
        assert_eq!(timestamp_to_nanos(&max), Ok(i64::MAX));
        assert_eq!(nanos_to_timestamp(i64::MAX), max);
        assert_eq!(timestamp_to_nanos(&ts(9_223_372_036, 854_775_808)), Err(TimeError::OutOfRange));
        assert_eq!(timestamp_to_nanos(&ts(i64::MAX, 0)), Err(TimeError::OutOfRange));
        assert_eq!(timestamp_to_nanos(&ts(i64::MIN, 0)), Err(TimeError::OutOfRange));
        assert_eq!(timestamp_to_nanos(&ts(i64::MAX, 999_999_999)), Err(TimeError::OutOfRange));
    }

    #[test]
    fn timestamp_bad_nanos() {
        assert_eq!(timestamp_to_nanos(&ts(0, -1)), Err(TimeError::NanosOutOfRange));
        assert_eq!(timestamp_to_nanos(&ts(0, 1_000_000_000)), Err(TimeError::NanosOutOfRange));
        assert_eq!(timestamp_to_nanos(&ts(0, i32::MIN)), Err(TimeError::NanosOutOfRange));
        // nanos is checked before range.
        assert_eq!(timestamp_to_nanos(&ts(i64::MAX, -1)), Err(TimeError::NanosOutOfRange));
    }

    #[test]
    fn duration_conversions() {
        let d = |seconds, nanos| Duration { seconds, nanos };
        assert_eq!(duration_to_nanos(&d(-1, -500_000_000)), Ok(-1_500_000_000));
        assert_eq!(duration_to_nanos(&d(0, -5)), Ok(-5));
        assert_eq!(nanos_to_duration(-1_500_000_000), d(-1, -500_000_000));
        assert_eq!(nanos_to_duration(-5), d(0, -5));
        assert_eq!(duration_to_nanos(&d(1, -1)), Err(TimeError::MixedSigns));
        assert_eq!(duration_to_nanos(&d(-1, 1)), Err(TimeError::MixedSigns));
        assert_eq!(duration_to_nanos(&d(0, 1_000_000_000)), Err(TimeError::NanosOutOfRange));
        assert_eq!(duration_to_nanos(&d(i64::MAX, 0)), Err(TimeError::OutOfRange));
        for n in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
            assert_eq!(duration_to_nanos(&nanos_to_duration(n)), Ok(n));
        }
        assert_eq!(duration_to_nanos(&d(-9_223_372_036, -854_775_809)), Err(TimeError::OutOfRange));
    }

    #[test]
    fn decimal_validation() {
        assert_eq!(dec(1, -1).to_nano_units(), Err(DecimalError::MixedSigns));
        assert_eq!(dec(-1, 1).to_nano_units(), Err(DecimalError::MixedSigns));
        assert_eq!(dec(0, 1_000_000_000).to_nano_units(), Err(DecimalError::NanosOutOfRange));
        assert_eq!(dec(0, -1_000_000_000).to_nano_units(), Err(DecimalError::NanosOutOfRange));
        assert_eq!(dec(0, -5).to_nano_units(), Ok(-5));
        assert_eq!(dec(0, 5).to_nano_units(), Ok(5));
        assert_eq!(Decimal::new(3, -1), Err(DecimalError::MixedSigns));
        assert_eq!(Decimal::new(-3, -1), Ok(dec(-3, -1)));
    }

    #[test]
    fn decimal_nano_unit_edges() {
        let max = dec(i64::MAX, MAX_NANOS);
        let min = dec(i64::MIN, -MAX_NANOS);
        let max_v = max.to_nano_units().unwrap();
        let min_v = min.to_nano_units().unwrap();
        assert_eq!(Decimal::from_nano_units(max_v), Ok(max));
        assert_eq!(Decimal::from_nano_units(min_v), Ok(min));
        assert_eq!(Decimal::from_nano_units(max_v + 1), Err(DecimalError::OutOfRange));
        assert_eq!(Decimal::from_nano_units(min_v - 1), Err(DecimalError::OutOfRange));
        assert_eq!(Decimal::from_nano_units(i128::MAX), Err(DecimalError::OutOfRange));
        assert_eq!(Decimal::from_nano_units(i128::MIN), Err(DecimalError::OutOfRange));
    }

    #[test]
    fn decimal_display() {
        assert_eq!(dec(42, 0).to_string(), "42");
        assert_eq!(dec(-1, -500_000_000).to_string(), "-1.5");
        assert_eq!(dec(0, 1).to_string(), "0.000000001");
        assert_eq!(dec(0, -1).to_string(), "-0.000000001");
        assert_eq!(dec(0, 0).to_string(), "0");
        assert_eq!(dec(i64::MIN, 0).to_string(), "-9223372036854775808");
        assert_eq!(dec(i64::MAX, MAX_NANOS).to_string(), "9223372036854775807.999999999");
        assert_eq!(format!("{:>6}", dec(1, 500_000_000)), "   1.5");
        assert_eq!(format!("{:+}", dec(2, 0)), "+2");
        assert_eq!(format!("{:.1}", dec(2, 250_000_000)), "2.25");
        // Invalid decimals print their mathematical value instead of failing.
        assert_eq!(dec(1, -500_000_000).to_string(), "0.5");
        assert_eq!(dec(0, i32::MIN).to_string(), "-2.147483648");
    }

    #[test]
    fn decimal_parse() {
        let p = |s: &str| s.parse::<Decimal>();
        assert_eq!(p("42"), Ok(dec(42, 0)));
        assert_eq!(p("+42"), Ok(dec(42, 0)));
        assert_eq!(p("-1.5"), Ok(dec(-1, -500_000_000)));
        assert_eq!(p("-0.5"), Ok(dec(0, -500_000_000)));
        assert_eq!(p("0.000000001"), Ok(dec(0, 1)));
        assert_eq!(p("1.100000000"), Ok(dec(1, 100_000_000)));
        assert_eq!(p("007.50"), Ok(dec(7, 500_000_000)));
        assert_eq!(p("-0"), Ok(dec(0, 0)));
        assert_eq!(p("-9223372036854775808.999999999"), Ok(dec(i64::MIN, -MAX_NANOS)));
        assert_eq!(p("9223372036854775808"), Err(DecimalError::OutOfRange));
        assert_eq!(p(&"9".repeat(100)), Err(DecimalError::OutOfRange));
        assert_eq!(p(""), Err(DecimalError::Empty));
        assert_eq!(p("0.0000000001"), Err(DecimalError::TooManyFractionalDigits));
        assert_eq!(p("1.0000000000"), Err(DecimalError::TooManyFractionalDigits));
        for bad in [
            "-", "+", ".", ".5", "5.", "1e5", " 1", "1 ", "1. 5", "--1", "+-1", "1.2.3", "0x10", "١", "1_000", "NaN",
            "inf", "-.5",
        ] {
            assert_eq!(p(bad), Err(DecimalError::InvalidSyntax), "{bad:?}");
        }
    }

    #[test]
    fn number_helpers() {
        assert_eq!(Number::from_f64(1.5).kind, Some(number::Kind::DoubleValue(1.5)));
        assert_eq!(Number::from(dec(1, 0)).kind, Some(number::Kind::DecimalValue(dec(1, 0))));
    }
}

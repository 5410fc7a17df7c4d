//! Input validation: decides whether a record may enter a window at all.
//!
//! Role: a pure check of one record against [`Limits`] and the current processing time,
//! answering with the reason it is invalid. Invalid records go to the invalid output with
//! that reason and a counter; they never touch window state. Touches nothing else.

use std::fmt;

use super::config::Limits;
use super::record::{Record, Value};
use super::time::{MAX_EVENT_TIME, MIN_EVENT_TIME, Nanos};

/// Why a record was refused. `as_str()` names are stable (they label counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// The value is NaN or ±infinity.
    NonFiniteValue,
    /// The metric name is empty.
    EmptyMetric,
    /// A metric, cluster or node name exceeds `max_name_len`.
    NameTooLong,
    /// A name, tag key or tag value holds a control character (e.g. a newline).
    ControlCharacter,
    /// More tags than `max_tags`.
    TooManyTags,
    /// A tag key or value exceeds `max_tag_len`.
    TagTooLong,
    /// A tag key is empty.
    EmptyTagKey,
    /// Two tags share a key.
    DuplicateTagKey,
    /// The event time lies outside the representable range (years 1823..2116).
    AbsurdTime,
    /// The event time is further ahead of processing time than `max_future`.
    FutureTime,
    /// The event time is further behind processing time than `max_past`.
    TooOld,
    /// Accepting the record would create more live series than `max_series`.
    CardinalityLimit,
    /// The wire record carried no value.
    MissingValue,
    /// The wire record's decimal broke the encoding rules (nanos range or mixed signs).
    InvalidDecimal,
    /// The wire record carried no event time, or an invalid one (nanos out of range).
    MissingTime,
}

impl InvalidReason {
    /// Every reason, in counter order.
    pub const ALL: [InvalidReason; 15] = [
        InvalidReason::NonFiniteValue,
        InvalidReason::EmptyMetric,
        InvalidReason::NameTooLong,
        InvalidReason::ControlCharacter,
        InvalidReason::TooManyTags,
        InvalidReason::TagTooLong,
        InvalidReason::EmptyTagKey,
        InvalidReason::DuplicateTagKey,
        InvalidReason::AbsurdTime,
        InvalidReason::FutureTime,
        InvalidReason::TooOld,
        InvalidReason::CardinalityLimit,
        InvalidReason::MissingValue,
        InvalidReason::InvalidDecimal,
        InvalidReason::MissingTime,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::NonFiniteValue => "non_finite_value",
            InvalidReason::EmptyMetric => "empty_metric",
            InvalidReason::NameTooLong => "name_too_long",
            InvalidReason::ControlCharacter => "control_character",
            InvalidReason::TooManyTags => "too_many_tags",
            InvalidReason::TagTooLong => "tag_too_long",
            InvalidReason::EmptyTagKey => "empty_tag_key",
            InvalidReason::DuplicateTagKey => "duplicate_tag_key",
            InvalidReason::AbsurdTime => "absurd_time",
            InvalidReason::FutureTime => "future_time",
            InvalidReason::TooOld => "too_old",
            InvalidReason::CardinalityLimit => "cardinality_limit",
            InvalidReason::MissingValue => "missing_value",
            InvalidReason::InvalidDecimal => "invalid_decimal",
            InvalidReason::MissingTime => "missing_time",
        }
    }

    /// Position in [`InvalidReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True when `s` holds an ASCII control character (branch-free, so it vectorises).
#[inline]
fn has_control(s: &str) -> bool {
    s.bytes().fold(false, |acc, b| acc | (b < 0x20) | (b == 0x7f))
}

/// Checks one record. `now` is the caller's processing time (nanoseconds since the epoch).
pub fn validate(record: &Record, limits: &Limits, now: Nanos) -> Result<(), InvalidReason> {
    validate_context(record, limits)?;
    validate_point(record, limits, now)
}

/// Checks what records of one agent batch usually share: cluster, node and tags.
pub fn validate_context(record: &Record, limits: &Limits) -> Result<(), InvalidReason> {
    let max_name = limits.max_name_len;
    if record.cluster.len() > max_name || record.node.len() > max_name {
        return Err(InvalidReason::NameTooLong);
    }
    if has_control(&record.cluster) || has_control(&record.node) {
        return Err(InvalidReason::ControlCharacter);
    }
    if record.tags.len() > limits.max_tags {
        return Err(InvalidReason::TooManyTags);
    }
    for (i, (k, v)) in record.tags.iter().enumerate() {
        if k.is_empty() {
            return Err(InvalidReason::EmptyTagKey);
        }
        if k.len() > limits.max_tag_len || v.len() > limits.max_tag_len {
            return Err(InvalidReason::TagTooLong);
        }
        if has_control(k) || has_control(v) {
            return Err(InvalidReason::ControlCharacter);
        }
        if record.tags[..i].iter().any(|(other, _)| other == k) {
            return Err(InvalidReason::DuplicateTagKey);
        }
    }
    Ok(())
}

/// Checks what is particular to each record: value, metric name and event time.
pub fn validate_point(record: &Record, limits: &Limits, now: Nanos) -> Result<(), InvalidReason> {
    if let Value::Float(v) = record.value
        && !v.is_finite()
    {
        return Err(InvalidReason::NonFiniteValue);
    }
    if record.metric.is_empty() {
        return Err(InvalidReason::EmptyMetric);
    }
    if record.metric.len() > limits.max_name_len {
        return Err(InvalidReason::NameTooLong);
    }
    if has_control(&record.metric) {
        return Err(InvalidReason::ControlCharacter);
    }
    let t = record.time;
    if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&t) {
        return Err(InvalidReason::AbsurdTime);
    }
    if let Some(ahead) = limits.max_future
        && t > now.saturating_add(ahead)
    {
        return Err(InvalidReason::FutureTime);
    }
    if let Some(behind) = limits.max_past
        && t < now.saturating_sub(behind)
    {
        return Err(InvalidReason::TooOld);
    }
    Ok(())
}

/// True when two records share cluster, node and tags (the context of an agent batch).
#[inline]
pub fn same_context(a: &Record, b: &Record) -> bool {
    a.node == b.node && a.cluster == b.cluster && a.tags == b.tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::time::NANOS_PER_SEC;

    fn rec() -> Record {
        Record {
            metric: "cpu".into(),
            value: Value::Float(1.0),
            time: 1_000 * NANOS_PER_SEC,
            cluster: "c".into(),
            node: "n".into(),
            tags: vec![("k".into(), "v".into())],
        }
    }

    fn check(f: impl FnOnce(&mut Record)) -> Result<(), InvalidReason> {
        let mut r = rec();
        f(&mut r);
        validate(&r, &Limits::default(), 1_000 * NANOS_PER_SEC)
    }

    #[test]
    fn each_reason_is_detected() {
        use InvalidReason::*;
        assert_eq!(check(|_| {}), Ok(()));
        assert_eq!(check(|r| r.value = Value::Float(f64::NAN)), Err(NonFiniteValue));
        assert_eq!(check(|r| r.value = Value::Float(f64::NEG_INFINITY)), Err(NonFiniteValue));
        assert_eq!(check(|r| r.metric.clear()), Err(EmptyMetric));
        assert_eq!(check(|r| r.node = "x".repeat(257)), Err(NameTooLong));
        assert_eq!(check(|r| r.metric = "a\nb".into()), Err(ControlCharacter));
        assert_eq!(check(|r| r.tags[0].1 = "x\0".into()), Err(ControlCharacter));
        assert_eq!(check(|r| r.tags = (0..33).map(|i| (i.to_string(), String::new())).collect()), Err(TooManyTags));
        assert_eq!(check(|r| r.tags[0].1 = "v".repeat(300)), Err(TagTooLong));
        assert_eq!(check(|r| r.tags[0].0.clear()), Err(EmptyTagKey));
        assert_eq!(check(|r| r.tags.push(("k".into(), "w".into()))), Err(DuplicateTagKey));
        assert_eq!(check(|r| r.time = i64::MAX), Err(AbsurdTime));
        assert_eq!(check(|r| r.time += 601 * NANOS_PER_SEC), Err(FutureTime));
        assert_eq!(check(|r| r.time -= 8 * 86_400 * NANOS_PER_SEC), Err(TooOld));
    }

    #[test]
    fn reason_names_are_unique_and_indexed() {
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::HashSet<_> = InvalidReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), InvalidReason::ALL.len());
    }
}

//! Records as the agent forwards them: defaults stamped on, obviously broken ones refused.
//!
//! Role: [`RecordDefaults`] fills what a pusher or plugin left empty — cluster, node, and the
//! global tags (a record's own tags win key by key); [`check`] refuses records the aggregator
//! could never count (no metric, no value, NaN/∞, an invalid decimal, an unrepresentable time) so
//! the pusher hears about them at once, and gives a missing event time the current time
//! ([`check_facts`] is the same check on what `wire.rs` reads from a record's encoding).
//! Constructors for in-process pushes: [`double_record`], [`decimal_record`]. Pure: touches
//! nothing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use meshmon_proto::v1::{Decimal, Record, record};
use meshmon_proto::{DecimalError, TimeError, Timestamp, nanos_to_timestamp, timestamp_to_nanos};

use crate::wire::RecordFacts;

/// Values stamped on records that do not carry their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordDefaults {
    /// Cluster for records whose `cluster` is empty.
    pub cluster: String,
    /// Node for records whose `node` is empty.
    pub node: String,
    /// Tags added to every record that lacks the key.
    pub tags: BTreeMap<String, String>,
}

impl RecordDefaults {
    /// Fills empty cluster/node and adds missing global tags.
    pub fn apply(&self, r: &mut Record) {
        if r.cluster.is_empty() {
            r.cluster.clone_from(&self.cluster);
        }
        if r.node.is_empty() {
            r.node.clone_from(&self.node);
        }
        for (k, v) in &self.tags {
            if !r.tags.contains_key(k) {
                r.tags.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Why a record is refused by the agent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidRecord {
    /// `metric` is empty.
    #[error("metric must not be empty")]
    EmptyMetric,
    /// Neither `double_value` nor `decimal_value` is set.
    #[error("record has no value")]
    MissingValue,
    /// A NaN or infinite double.
    #[error("value {0} is not finite")]
    NonFinite(f64),
    /// An invalid decimal.
    #[error("invalid decimal value: {0}")]
    Decimal(DecimalError),
    /// An event time that cannot be represented in i64 nanoseconds.
    #[error("invalid event time: {0}")]
    Time(TimeError),
}

/// Checks that a record can be counted, setting a missing `event_time` to `now`.
///
/// # Errors
/// [`InvalidRecord`] saying what is wrong.
pub fn check(r: &mut Record, now: Timestamp) -> Result<(), InvalidRecord> {
    check_facts(&RecordFacts::of(r))?;
    if r.event_time.is_none() {
        r.event_time = Some(now);
    }
    Ok(())
}

/// [`check`] on what was read from a record's encoding (a missing event time is not an error:
/// the caller gives it the current time).
///
/// # Errors
/// [`InvalidRecord`] saying what is wrong, tested in the same order as [`check`].
pub fn check_facts(f: &RecordFacts) -> Result<(), InvalidRecord> {
    if f.metric_empty {
        return Err(InvalidRecord::EmptyMetric);
    }
    match &f.value {
        None => return Err(InvalidRecord::MissingValue),
        Some(record::Value::DoubleValue(v)) if !v.is_finite() => return Err(InvalidRecord::NonFinite(*v)),
        Some(record::Value::DecimalValue(d)) => d.validate().map_err(InvalidRecord::Decimal)?,
        Some(record::Value::DoubleValue(_)) => {}
    }
    if let Some(t) = &f.event_time {
        timestamp_to_nanos(t).map_err(InvalidRecord::Time)?;
    }
    Ok(())
}

/// The current wall-clock time as a timestamp.
pub fn now_timestamp() -> Timestamp {
    timestamp_of(SystemTime::now())
}

/// A `SystemTime` as a timestamp (times before the epoch are negative).
pub fn timestamp_of(t: SystemTime) -> Timestamp {
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
    };
    nanos_to_timestamp(nanos)
}

/// The value of a record with a double value (`None` for decimals or no value).
pub fn double_value(r: &Record) -> Option<f64> {
    match r.value {
        Some(record::Value::DoubleValue(v)) => Some(v),
        _ => None,
    }
}

/// The double value of the first record named `metric` that carries every tag of `tags`.
pub fn find_double(records: &[Record], metric: &str, tags: &[(&str, &str)]) -> Option<f64> {
    records
        .iter()
        .find(|r| r.metric == metric && tags.iter().all(|(k, v)| r.tags.get(*k).map(String::as_str) == Some(*v)))
        .and_then(double_value)
}

/// A record with a double value (cluster, node and tags left for the defaults).
pub fn double_record(metric: impl Into<String>, value: f64, event_time: Timestamp) -> Record {
    Record {
        metric: metric.into(),
        value: Some(record::Value::DoubleValue(value)),
        event_time: Some(event_time),
        ..Record::default()
    }
}

/// A record with an exact decimal value.
pub fn decimal_record(metric: impl Into<String>, value: Decimal, event_time: Timestamp) -> Record {
    Record {
        metric: metric.into(),
        value: Some(record::Value::DecimalValue(value)),
        event_time: Some(event_time),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let d = RecordDefaults {
            cluster: "c".into(),
            node: "n".into(),
            tags: [("env".to_owned(), "prod".to_owned()), ("dc".to_owned(), "x".to_owned())].into(),
        };
        let mut r = double_record("m", 1.0, nanos_to_timestamp(0));
        r.tags.insert("env".into(), "dev".into());
        r.node = "own".into();
        d.apply(&mut r);
        assert_eq!(r.cluster, "c");
        assert_eq!(r.node, "own");
        assert_eq!(r.tags.get("env").map(String::as_str), Some("dev"), "pushed tag wins");
        assert_eq!(r.tags.get("dc").map(String::as_str), Some("x"), "global tag added");
    }

    #[test]
    fn check_refuses_uncountable_records() {
        let now = nanos_to_timestamp(42);
        let mut ok = double_record("m", 1.0, now);
        ok.event_time = None;
        check(&mut ok, now).unwrap();
        assert_eq!(ok.event_time, Some(now), "missing time becomes now");
        let cases = [
            (double_record("", 1.0, now), InvalidRecord::EmptyMetric),
            (Record { metric: "m".into(), ..Record::default() }, InvalidRecord::MissingValue),
            (double_record("m", f64::INFINITY, now), InvalidRecord::NonFinite(f64::INFINITY)),
            (
                decimal_record("m", Decimal { units: 1, nanos: -1 }, now),
                InvalidRecord::Decimal(DecimalError::MixedSigns),
            ),
            (
                double_record("m", 1.0, Timestamp { seconds: i64::MAX, nanos: 0 }),
                InvalidRecord::Time(TimeError::OutOfRange),
            ),
        ];
        for (mut r, want) in cases {
            assert_eq!(check(&mut r, now), Err(want));
        }
        let mut nan = double_record("m", f64::NAN, now);
        assert!(matches!(check(&mut nan, now), Err(InvalidRecord::NonFinite(_))));
    }

    #[test]
    fn timestamps_of_system_time() {
        assert_eq!(timestamp_of(UNIX_EPOCH), Timestamp { seconds: 0, nanos: 0 });
        let before = UNIX_EPOCH - std::time::Duration::from_millis(1500);
        assert_eq!(timestamp_of(before), Timestamp { seconds: -2, nanos: 500_000_000 });
    }
}

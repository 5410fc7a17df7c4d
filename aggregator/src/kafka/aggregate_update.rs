//! `meshmon.v1.AggregateUpdate`: how an aggregate change travels on the Kafka output topic.
//!
//! Role: turns an [`AggregateChange`] into a Kafka (key, value): the key is the embedded
//! store's point key (`metric | dimension | window spec | window start`, `store/keys.rs`) so
//! both sinks share one key design and a compacted topic keeps the latest correction of each
//! point; an upsert's value is an encoded `AggregateUpdate`, a retraction is a tombstone (no
//! value). Also decodes updates (tests, consumers in Rust). Pure: touches nothing else.

use meshmon_proto::prost::Message;
use meshmon_proto::v1;
use meshmon_proto::v1::Decimal;
use meshmon_proto::{nanos_to_duration, nanos_to_timestamp};

use crate::engine::{Dimension, Stats, Value, WindowSpec};
use crate::store::AggregateChange;
use crate::store::keys::{point_key, series_prefix};

/// One message for the output topic.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputMessage {
    /// Series + window: the compaction key.
    pub key: Vec<u8>,
    /// The encoded `AggregateUpdate`; `None` for a retraction (tombstone).
    pub value: Option<Vec<u8>>,
}

/// The output-topic message for `change`.
pub fn output_message(change: &AggregateChange) -> OutputMessage {
    match change {
        AggregateChange::Upsert { series, window_spec, window, stats, revision } => {
            let key = point_key(&series_prefix(&series.metric, &series.dimension, window_spec), window.start);
            let update = v1::AggregateUpdate {
                metric: series.metric.to_string(),
                dimension: Some(dimension_to_proto(&series.dimension)),
                window: Some(window_spec_to_proto(window_spec)),
                point: Some(v1::AggregatePoint {
                    window_start: Some(nanos_to_timestamp(window.start)),
                    window_end: Some(nanos_to_timestamp(window.end)),
                    stats: Some(stats_to_proto(stats)),
                    revision: *revision,
                }),
            };
            OutputMessage { key, value: Some(update.encode_to_vec()) }
        }
        AggregateChange::Retract { series, window_spec, window_start } => OutputMessage {
            key: point_key(&series_prefix(&series.metric, &series.dimension, window_spec), *window_start),
            value: None,
        },
    }
}

/// The wire form of a dimension value.
pub fn dimension_to_proto(d: &Dimension) -> v1::Dimension {
    let (kind, names, values): (v1::DimensionKind, Vec<String>, Vec<String>) = match d {
        Dimension::Fleet => (v1::DimensionKind::Fleet, vec![], vec![]),
        Dimension::Cluster(c) => (v1::DimensionKind::Cluster, vec![], vec![c.to_string()]),
        Dimension::Node(n) => (v1::DimensionKind::Node, vec![], vec![n.to_string()]),
        Dimension::Tag { key, value } => (v1::DimensionKind::Tag, vec![key.to_string()], vec![value.to_string()]),
        Dimension::Set(pairs) => (
            v1::DimensionKind::Set,
            pairs.iter().map(|(k, _)| k.to_string()).collect(),
            pairs.iter().map(|(_, v)| v.to_string()).collect(),
        ),
    };
    v1::Dimension { kind: kind as i32, names, values }
}

/// The wire form of a window spec.
pub fn window_spec_to_proto(spec: &WindowSpec) -> v1::WindowSpec {
    let kind = match *spec {
        WindowSpec::Tumbling { size, offset } => v1::window_spec::Kind::Tumbling(v1::Tumbling {
            size: Some(nanos_to_duration(size)),
            offset: (offset != 0).then(|| nanos_to_duration(offset)),
        }),
        WindowSpec::Sliding { size, slide, .. } => v1::window_spec::Kind::Sliding(v1::Sliding {
            size: Some(nanos_to_duration(size)),
            slide: Some(nanos_to_duration(slide)),
        }),
        WindowSpec::Session { gap } => {
            v1::window_spec::Kind::Session(v1::Session { gap: Some(nanos_to_duration(gap)) })
        }
    };
    v1::WindowSpec { kind: Some(kind) }
}

/// The wire form of a value: a double, or an exact decimal (a double if out of its range).
pub fn number(value: Value) -> v1::Number {
    match value {
        Value::Float(v) => v1::Number::from_f64(v),
        Value::Decimal(n) => match Decimal::from_nano_units(n) {
            Ok(d) => v1::Number::from_decimal(d),
            Err(_) => v1::Number::from_f64(value.as_f64()),
        },
    }
}

/// The wire form of window statistics.
pub fn stats_to_proto(s: &Stats) -> v1::Stats {
    v1::Stats {
        max: Some(number(s.totals.max)),
        min: Some(number(s.totals.min)),
        avg: Some(number(s.avg())),
        last: Some(number(s.last)),
        sum: Some(number(s.sum())),
        count: s.count(),
    }
}

/// Decodes an output-topic value.
pub fn decode_update(bytes: &[u8]) -> Result<v1::AggregateUpdate, meshmon_proto::prost::DecodeError> {
    v1::AggregateUpdate::decode(bytes)
}

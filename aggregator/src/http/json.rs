//! JSON shapes of the API answers.
//!
//! Role: turns store and engine types into the JSON the API returns. The number rules:
//! - times are integer epoch **milliseconds** (nanoseconds rounded down);
//! - a double value is a JSON number (non-finite doubles, which only dead letters can hold,
//!   are the strings `"NaN"`, `"inf"`, `"-inf"`);
//! - an exact decimal value is a JSON **string** holding its exact decimal text (`"0.3"`,
//!   `"-1.5"`, `"42"`), so no digit is lost to a JSON parser's doubles;
//! - a raw payload is a string when it is UTF-8, else `{"base64": "<standard base64>"}`, and
//!   `null` when the agent kept none.
//!
//! Pure: touches nothing else.

use serde::Serialize;
use serde_json::Value as Json;

use super::dimension_key;
use super::params::ns_to_ms;
use crate::engine::{Dimension, Record, RecordId, Value};
use crate::store::{DeadLetter, RawRecordView, StoredPoint};

/// A value as JSON (see the module documentation).
pub fn value(v: Value) -> Json {
    match v {
        Value::Float(f) => serde_json::Number::from_f64(f).map_or_else(|| Json::String(v.to_string()), Json::Number),
        Value::Decimal(_) => Json::String(v.to_string()),
    }
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A raw payload as JSON (see the module documentation).
pub fn raw_payload(raw: Option<&[u8]>) -> Json {
    match raw {
        None => Json::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Json::String(text.to_owned()),
            Err(_) => serde_json::json!({ "base64": base64(bytes) }),
        },
    }
}

/// One dimension value, with its key text.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DimensionView {
    /// The fleet.
    Fleet {
        /// Key text.
        key: String,
    },
    /// A cluster.
    Cluster {
        /// The cluster.
        value: String,
        /// Key text.
        key: String,
    },
    /// A node.
    Node {
        /// The node.
        value: String,
        /// Key text.
        key: String,
    },
    /// A tag `name=value`.
    Tag {
        /// Tag key.
        name: String,
        /// Tag value.
        value: String,
        /// Key text.
        key: String,
    },
    /// A dimension-set tuple.
    Set {
        /// (field, value) pairs in configured order.
        pairs: Vec<[String; 2]>,
        /// Key text.
        key: String,
    },
}

impl DimensionView {
    /// The view of `d`.
    pub fn of(d: &Dimension) -> DimensionView {
        let key = dimension_key::encode(d);
        match d {
            Dimension::Fleet => DimensionView::Fleet { key },
            Dimension::Cluster(c) => DimensionView::Cluster { value: c.to_string(), key },
            Dimension::Node(n) => DimensionView::Node { value: n.to_string(), key },
            Dimension::Tag { key: name, value } => {
                DimensionView::Tag { name: name.to_string(), value: value.to_string(), key }
            }
            Dimension::Set(pairs) => {
                DimensionView::Set { pairs: pairs.iter().map(|(f, v)| [f.to_string(), v.to_string()]).collect(), key }
            }
        }
    }
}

/// One aggregate point.
#[derive(Debug, Serialize)]
pub struct PointView {
    /// Window start (ms).
    pub start: i64,
    /// Window end, exclusive (ms).
    pub end: i64,
    /// 0 for a first firing, higher after corrections.
    pub revision: u32,
    /// Number of records.
    pub count: u64,
    /// Sum.
    pub sum: Json,
    /// Mean.
    pub avg: Json,
    /// Smallest value.
    pub min: Json,
    /// Largest value.
    pub max: Json,
    /// Value of the record with the greatest event time.
    pub last: Json,
    /// Event time of that record (ms).
    pub last_time: i64,
}

impl PointView {
    /// The view of a stored point.
    pub fn of(p: &StoredPoint) -> PointView {
        let s = &p.stats;
        PointView {
            start: ns_to_ms(p.window.start),
            end: ns_to_ms(p.window.end),
            revision: p.revision,
            count: s.count(),
            sum: value(s.sum()),
            avg: value(s.avg()),
            min: value(s.totals.min),
            max: value(s.totals.max),
            last: value(s.last),
            last_time: ns_to_ms(s.last_time),
        }
    }
}

/// A record's fields, shared by raw records and dead letters.
#[derive(Debug, Serialize)]
pub struct RecordView {
    /// Sending agent.
    pub agent: String,
    /// Batch sequence number.
    pub sequence: u64,
    /// Index in the batch.
    pub index: u32,
    /// Metric name.
    pub metric: String,
    /// Event time (ms).
    pub time: i64,
    /// The value.
    pub value: Json,
    /// Cluster (may be empty).
    pub cluster: String,
    /// Node (may be empty).
    pub node: String,
    /// Tags as an object.
    pub tags: serde_json::Map<String, Json>,
    /// The original payload.
    pub raw: Json,
}

impl RecordView {
    /// The view of a record with its identity and payload.
    pub fn of(id: &RecordId, r: &Record, raw: Option<&[u8]>) -> RecordView {
        RecordView {
            agent: id.agent.to_string(),
            sequence: id.sequence,
            index: id.index,
            metric: r.metric.clone(),
            time: ns_to_ms(r.time),
            value: value(r.value),
            cluster: r.cluster.clone(),
            node: r.node.clone(),
            tags: r.tags.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect(),
            raw: raw_payload(raw),
        }
    }

    /// The view of a drilled-down raw record.
    pub fn of_raw(v: &RawRecordView) -> RecordView {
        RecordView::of(&v.id, &v.record, v.raw.as_deref())
    }
}

/// One dead letter.
#[derive(Debug, Serialize)]
pub struct DeadLetterView {
    /// Processing time of its arrival (ms).
    pub arrival: i64,
    /// Why it was not counted, e.g. `invalid: non_finite_value` or `late: …`.
    pub reason: String,
    /// The record.
    #[serde(flatten)]
    pub record: RecordView,
}

impl DeadLetterView {
    /// The view of a dead letter.
    pub fn of(d: &DeadLetter) -> DeadLetterView {
        DeadLetterView {
            arrival: ns_to_ms(d.arrival),
            reason: d.reason.clone(),
            record: RecordView::of(&d.id, &d.record, d.raw.as_deref()),
        }
    }
}

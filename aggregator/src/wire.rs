//! Wire decoding: `meshmon.v1.RecordBatch` (protobuf) → engine records.
//!
//! Role: converts what agents send into [`Record`]s without losing any record's identity: a
//! wire record that cannot be converted (no value, a malformed decimal, no or invalid event
//! time, a time outside the i64-nanosecond range) keeps its index as a placeholder and is
//! listed in `defects`, so the ingest gate refuses it with that reason and counts it. Tags are
//! sorted by key (protobuf maps have no order) so processing is deterministic. Raw payloads are
//! kept beside the records for the raw store. Touches only the proto types and the engine's
//! record types.

use meshmon_proto::prost::{self, Message};
use meshmon_proto::v1::{self, RecordBatch};
use meshmon_proto::{TimeError, timestamp_to_nanos};

use crate::engine::{Batch, InvalidReason, Nanos, Record, Value};

/// A wire batch converted for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    /// The sending agent.
    pub agent: String,
    /// The agent's batch sequence number.
    pub sequence: u64,
    /// When the agent sent it, if it said (and the time was valid).
    pub sent_at: Option<Nanos>,
    /// One record per wire record, in wire order (placeholders at defect indices).
    pub records: Vec<Record>,
    /// Raw payloads, aligned with `records` (shared by every actor that handles the batch).
    pub raw: std::sync::Arc<[Option<Vec<u8>>]>,
    /// Records that could not be converted, ascending by index, with the reason.
    pub defects: Vec<(u32, InvalidReason)>,
}

impl DecodedBatch {
    /// The engine's view of the batch (pass `defects` alongside).
    pub fn batch(&self) -> Batch<'_> {
        Batch { agent: &self.agent, sequence: self.sequence, records: &self.records }
    }
}

/// Bytes that are not a `RecordBatch`.
#[derive(Debug, thiserror::Error)]
#[error("malformed RecordBatch protobuf: {0}")]
pub struct WireError(#[from] prost::DecodeError);

/// Decodes protobuf bytes (e.g. a Kafka message) into an engine batch.
pub fn decode_bytes(bytes: &[u8]) -> Result<DecodedBatch, WireError> {
    Ok(decode_batch(RecordBatch::decode(bytes)?))
}

/// Converts a wire batch, moving its strings (no copies).
pub fn decode_batch(batch: RecordBatch) -> DecodedBatch {
    let mut records = Vec::with_capacity(batch.records.len());
    let mut raw = Vec::with_capacity(batch.records.len());
    let mut defects = Vec::new();
    for (i, wire) in batch.records.into_iter().enumerate() {
        let (record, payload, defect) = decode_record(wire);
        if let Some(reason) = defect {
            defects.push((u32::try_from(i).unwrap_or(u32::MAX), reason));
        }
        records.push(record);
        raw.push(payload);
    }
    DecodedBatch {
        agent: batch.agent_id,
        sequence: batch.sequence,
        sent_at: batch.sent_at.as_ref().and_then(|t| timestamp_to_nanos(t).ok()),
        records,
        raw: raw.into(),
        defects,
    }
}

fn decode_record(wire: v1::Record) -> (Record, Option<Vec<u8>>, Option<InvalidReason>) {
    let mut defect = None;
    let value = match wire.value {
        Some(v1::record::Value::DoubleValue(v)) => Value::Float(v),
        Some(v1::record::Value::DecimalValue(d)) => match d.to_nano_units() {
            Ok(n) => Value::Decimal(n),
            Err(_) => {
                defect = Some(InvalidReason::InvalidDecimal);
                Value::Float(0.0)
            }
        },
        None => {
            defect = Some(InvalidReason::MissingValue);
            Value::Float(0.0)
        }
    };
    let time = match wire.event_time.as_ref().map(timestamp_to_nanos) {
        Some(Ok(t)) => t,
        Some(Err(TimeError::OutOfRange)) => {
            defect = defect.or(Some(InvalidReason::AbsurdTime));
            0
        }
        Some(Err(_)) | None => {
            defect = defect.or(Some(InvalidReason::MissingTime));
            0
        }
    };
    let mut tags: Vec<(String, String)> = wire.tags.into_iter().collect();
    tags.sort_unstable();
    let record = Record { metric: wire.metric, value, time, cluster: wire.cluster, node: wire.node, tags };
    (record, wire.raw, defect)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use meshmon_proto::{Timestamp, nanos_to_timestamp};

    fn wire(value: Option<v1::record::Value>, time: Option<Timestamp>) -> v1::Record {
        v1::Record {
            metric: "orders.value".into(),
            value,
            event_time: time,
            cluster: "eu".into(),
            node: "n1".into(),
            tags: [("z".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())].into(),
            raw: Some(b"line".to_vec()),
        }
    }

    #[test]
    fn converts_values_times_and_keeps_identity_of_defects() {
        let t = nanos_to_timestamp(1_767_225_600_123_456_789);
        let batch = RecordBatch {
            agent_id: "a1".into(),
            sequence: 7,
            sent_at: Some(t),
            records: vec![
                wire(Some(v1::record::Value::DoubleValue(2.5)), Some(t)),
                wire(Some(v1::record::Value::DecimalValue(v1::Decimal { units: 19, nanos: 990_000_000 })), Some(t)),
                wire(None, Some(t)),
                wire(Some(v1::record::Value::DecimalValue(v1::Decimal { units: 1, nanos: -5 })), Some(t)),
                wire(Some(v1::record::Value::DoubleValue(1.0)), None),
                wire(Some(v1::record::Value::DoubleValue(1.0)), Some(Timestamp { seconds: i64::MAX, nanos: 0 })),
                wire(Some(v1::record::Value::DoubleValue(1.0)), Some(Timestamp { seconds: 1, nanos: -1 })),
            ],
        };
        let bytes = batch.encode_to_vec();
        let d = decode_bytes(&bytes).unwrap();
        assert_eq!((d.agent.as_str(), d.sequence, d.sent_at), ("a1", 7, Some(1_767_225_600_123_456_789)));
        assert_eq!(d.records.len(), 7, "every wire record keeps its index");
        assert_eq!(d.records[0].value, Value::Float(2.5));
        assert_eq!(d.records[0].time, 1_767_225_600_123_456_789);
        assert_eq!(d.records[1].value, Value::Decimal(19_990_000_000));
        assert_eq!(d.records[0].tags, [("a".to_string(), "2".to_string()), ("z".to_string(), "1".to_string())]);
        assert_eq!(d.raw[0].as_deref(), Some(&b"line"[..]));
        assert_eq!(
            d.defects,
            [
                (2, InvalidReason::MissingValue),
                (3, InvalidReason::InvalidDecimal),
                (4, InvalidReason::MissingTime),
                (5, InvalidReason::AbsurdTime),
                (6, InvalidReason::MissingTime),
            ]
        );
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        assert!(decode_bytes(&[0xff, 0xff, 0xff, 0x0f, 0x01]).is_err());
        assert!(decode_bytes(b"\x0a\x05ab").is_err(), "truncated");
    }

    #[test]
    fn defects_are_refused_by_the_engine_with_their_reason() {
        use crate::engine::{EngineConfig, LatestResults, Limits, WindowEngine};
        let t = nanos_to_timestamp(1_000);
        let batch = RecordBatch {
            agent_id: "a".into(),
            sequence: 1,
            sent_at: None,
            records: vec![wire(None, Some(t)), wire(Some(v1::record::Value::DoubleValue(1.0)), Some(t))],
        };
        let d = decode_batch(batch);
        let config = EngineConfig { limits: Limits { max_past: None, ..Limits::default() }, ..EngineConfig::default() };
        let mut engine = WindowEngine::new(config).unwrap();
        let mut out = LatestResults::default();
        let o = engine.process_decoded("p", &d.batch(), &d.defects, 2_000, &mut out);
        assert_eq!((o.accepted, o.invalid), (1, 1));
        assert_eq!(out.invalid[0].2, InvalidReason::MissingValue);
        assert_eq!(out.invalid[0].0.index, 0);
        assert!(engine.counters().balanced());
    }
}

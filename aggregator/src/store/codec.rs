//! Stored value formats: aggregate points, raw rows and dead letters.
//!
//! Role: versioned, compact binary encodings (a leading format byte, then `wire.rs` fields) of
//! what the store keeps under each key, and their exact decoders. Doubles are stored as their
//! bits and decimals as exact `i128` nano-units, so every value reads back identical. A raw row
//! stores only what its row key does not already hold (value, tags, raw payload, arrival
//! watermark); [`RawRowValue::into_view`] joins the two back into the engine `Record`. Pure:
//! touches nothing but `wire.rs`.

use super::row_key::RawRowKey;
use super::wire::{CodecError, ValueReader, ValueWriter};
use crate::engine::stats::Totals;
use crate::engine::{Nanos, Record, RecordId, Stats, StoredResult, Value, Window};

/// Format version of stored aggregate points.
const POINT_V1: u8 = 1;
/// Format version of raw row values.
const RAW_V1: u8 = 1;
/// Format version of dead-letter values.
const DEAD_V1: u8 = 1;

/// One stored aggregate point: the latest result of one (series, window spec, window start).
pub type StoredPoint = StoredResult;

fn put_value(w: &mut ValueWriter, v: Value) {
    match v {
        Value::Float(f) => {
            w.u8(0);
            w.f64(f);
        }
        Value::Decimal(n) => {
            w.u8(1);
            w.var_i128(n);
        }
    }
}

fn get_value(r: &mut ValueReader<'_>, field: &'static str) -> Result<Value, CodecError> {
    match r.u8(field)? {
        0 => Ok(Value::Float(r.f64(field)?)),
        1 => Ok(Value::Decimal(r.var_i128(field)?)),
        tag => Err(CodecError::UnknownTag { field, tag }),
    }
}

fn put_tags(w: &mut ValueWriter, tags: &[(String, String)]) {
    w.var_u64(tags.len() as u64);
    for (k, v) in tags {
        w.str(k);
        w.str(v);
    }
}

fn get_tags(r: &mut ValueReader<'_>) -> Result<Vec<(String, String)>, CodecError> {
    let n = r.var_u64("tag count")?;
    // Each tag takes at least two bytes: a corrupt count cannot make us allocate much.
    let mut tags = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(64));
    for _ in 0..n {
        tags.push((r.str("tag key")?, r.str("tag value")?));
    }
    Ok(tags)
}

fn put_raw(w: &mut ValueWriter, raw: Option<&[u8]>) {
    match raw {
        None => w.u8(0),
        Some(b) => {
            w.u8(1);
            w.bytes(b);
        }
    }
}

fn get_raw(r: &mut ValueReader<'_>) -> Result<Option<Vec<u8>>, CodecError> {
    match r.u8("raw payload")? {
        0 => Ok(None),
        1 => Ok(Some(r.bytes("raw payload")?.to_vec())),
        tag => Err(CodecError::UnknownTag { field: "raw payload", tag }),
    }
}

/// Encodes a point (its window start lives in the key).
pub fn encode_point(window_end: Nanos, stats: &Stats, revision: u32) -> Vec<u8> {
    let mut w = ValueWriter::versioned(POINT_V1);
    let t = &stats.totals;
    w.i64(window_end);
    w.var_u64(u64::from(revision));
    w.var_u64(t.count);
    w.var_u64(t.float_count);
    w.f64(t.float_sum);
    w.var_i128(t.decimal_sum);
    put_value(&mut w, t.min);
    put_value(&mut w, t.max);
    put_value(&mut w, stats.last);
    w.i64(stats.last_time);
    w.str(&stats.last_id.agent);
    w.var_u64(stats.last_id.sequence);
    w.var_u64(u64::from(stats.last_id.index));
    w.into_bytes()
}

/// Decodes a point stored under window start `window_start`.
pub fn decode_point(window_start: Nanos, bytes: &[u8]) -> Result<StoredPoint, CodecError> {
    let mut r = ValueReader::versioned(bytes, "aggregate point", POINT_V1)?;
    let end = r.i64("window end")?;
    let revision = r.var_u32("revision")?;
    let totals = Totals {
        count: r.var_u64("count")?,
        float_count: r.var_u64("float count")?,
        float_sum: r.f64("float sum")?,
        decimal_sum: r.var_i128("decimal sum")?,
        min: get_value(&mut r, "min")?,
        max: get_value(&mut r, "max")?,
    };
    let last = get_value(&mut r, "last")?;
    let last_time = r.i64("last time")?;
    let last_id = RecordId {
        agent: r.str("last agent")?.into(),
        sequence: r.var_u64("last sequence")?,
        index: r.var_u32("last index")?,
    };
    r.finish()?;
    Ok(StoredResult {
        window: Window { start: window_start, end },
        stats: Stats { totals, last, last_time, last_id },
        revision,
    })
}

/// What a raw row stores besides its key.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRowValue {
    /// The measured value.
    pub value: Value,
    /// The record's tags.
    pub tags: Vec<(String, String)>,
    /// The original payload, if the agent kept it.
    pub raw: Option<Vec<u8>>,
    /// The watermark the record was judged against when it arrived.
    pub watermark: Nanos,
}

/// One raw record as a drill-down returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecordView {
    /// Its identity.
    pub id: RecordId,
    /// The record.
    pub record: Record,
    /// The original payload, if the agent kept it.
    pub raw: Option<Vec<u8>>,
    /// The watermark at its arrival.
    pub watermark: Nanos,
}

impl RawRowValue {
    /// Encodes the value part of a raw row.
    pub fn encode(value: Value, tags: &[(String, String)], raw: Option<&[u8]>, watermark: Nanos) -> Vec<u8> {
        let mut w = ValueWriter::versioned(RAW_V1);
        w.i64(watermark);
        put_value(&mut w, value);
        put_tags(&mut w, tags);
        put_raw(&mut w, raw);
        w.into_bytes()
    }

    /// Reads the watermark only (the drill-down filter needs nothing else before it matches).
    pub fn decode_watermark(bytes: &[u8]) -> Result<Nanos, CodecError> {
        ValueReader::versioned(bytes, "raw row", RAW_V1)?.i64("watermark")
    }

    /// Decodes the value part of a raw row.
    pub fn decode(bytes: &[u8]) -> Result<RawRowValue, CodecError> {
        let mut r = ValueReader::versioned(bytes, "raw row", RAW_V1)?;
        let watermark = r.i64("watermark")?;
        let value = get_value(&mut r, "value")?;
        let tags = get_tags(&mut r)?;
        let raw = get_raw(&mut r)?;
        r.finish()?;
        Ok(RawRowValue { value, tags, raw, watermark })
    }

    /// Joins the key and the value back into the stored record.
    pub fn into_view(self, key: RawRowKey) -> RawRecordView {
        RawRecordView {
            id: RecordId { agent: key.agent.into(), sequence: key.sequence, index: key.index },
            record: Record {
                metric: key.metric,
                value: self.value,
                time: key.time,
                cluster: key.cluster,
                node: key.node,
                tags: self.tags,
            },
            raw: self.raw,
            watermark: self.watermark,
        }
    }
}

/// What a dead letter stores besides its key (arrival time, agent, sequence, index).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterValue {
    /// Why the record was not counted, e.g. `invalid: non_finite_value`.
    pub reason: String,
    /// The record.
    pub record: Record,
    /// The original payload, if the agent kept it.
    pub raw: Option<Vec<u8>>,
}

impl DeadLetterValue {
    /// Encodes a dead letter's value.
    pub fn encode(reason: &str, record: &Record, raw: Option<&[u8]>) -> Vec<u8> {
        let mut w = ValueWriter::versioned(DEAD_V1);
        w.str(reason);
        w.str(&record.metric);
        put_value(&mut w, record.value);
        w.i64(record.time);
        w.str(&record.cluster);
        w.str(&record.node);
        put_tags(&mut w, &record.tags);
        put_raw(&mut w, raw);
        w.into_bytes()
    }

    /// Decodes a dead letter's value.
    pub fn decode(bytes: &[u8]) -> Result<DeadLetterValue, CodecError> {
        let mut r = ValueReader::versioned(bytes, "dead letter", DEAD_V1)?;
        let reason = r.str("reason")?;
        let record = Record {
            metric: r.str("metric")?,
            value: get_value(&mut r, "value")?,
            time: r.i64("time")?,
            cluster: r.str("cluster")?,
            node: r.str("node")?,
            tags: get_tags(&mut r)?,
        };
        let raw = get_raw(&mut r)?;
        r.finish()?;
        Ok(DeadLetterValue { reason, record, raw })
    }
}

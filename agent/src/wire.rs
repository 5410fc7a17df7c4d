//! Records kept in their protobuf encoding from the push API to the aggregator.
//!
//! Role: the agent forwards what applications push without decoding it into `Record` structs
//! and encoding it again (that cost ~8 allocations and frees per record twice over, and was the
//! throughput limit of the gRPC push path). A [`WireRecord`] is one encoded `meshmon.v1.Record`
//! message, usually a zero-copy slice of the received request. [`decode_pushed`] reads a pushed
//! `RecordBatch` straight from its bytes: it learns from each record only what the agent checks
//! and stamps ([`RecordFacts`]), with exactly the meaning prost gives the bytes — anything
//! unusual (groups, wire-type mismatches, invalid UTF-8, truncation, ...) falls back to prost's
//! own decoder, so every batch prost accepts is accepted identically and every batch it refuses
//! is refused with prost's error. [`WireStamp`] stamps defaults by **appending** fields (in
//! protobuf the last value of a field wins and map entries add keys), so a record needing no
//! default is forwarded untouched. [`WireBatch`] is a closed batch; [`BatchCodec`] (sender) and
//! [`PushCodec`] (push server) are the tonic codecs that write and read these forms. Pure:
//! touches nothing.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshmon_proto::Timestamp;
use meshmon_proto::v1::{BatchAck, Decimal, Record, RecordBatch, record};
use prost::Message;
use prost::encoding::{WireType, decode_varint, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::record::RecordDefaults;

/// Field numbers of `meshmon.v1.Record` and `meshmon.v1.RecordBatch`.
mod field {
    pub const METRIC: u32 = 1;
    pub const DOUBLE_VALUE: u32 = 2;
    pub const DECIMAL_VALUE: u32 = 3;
    pub const EVENT_TIME: u32 = 4;
    pub const CLUSTER: u32 = 5;
    pub const NODE: u32 = 6;
    pub const TAGS: u32 = 7;
    pub const RAW: u32 = 8;

    pub const BATCH_AGENT_ID: u32 = 1;
    pub const BATCH_SEQUENCE: u32 = 2;
    pub const BATCH_SENT_AT: u32 = 3;
    pub const BATCH_RECORDS: u32 = 4;
}

/// One `meshmon.v1.Record` message in its protobuf encoding, as it goes into a batch: the bytes
/// as pushed (usually a slice of the received request) followed by the fields the agent stamped
/// on (usually shared by many records), written one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    head: Bytes,
    tail: Bytes,
}

impl WireRecord {
    /// The encoding of `record`.
    pub fn encode(record: &Record) -> WireRecord {
        WireRecord { head: Bytes::from(record.encode_to_vec()), tail: Bytes::new() }
    }

    /// Length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The encoded message in one piece.
    pub fn to_bytes(&self) -> Bytes {
        if self.tail.is_empty() {
            return self.head.clone();
        }
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_slice(&self.head);
        b.put_slice(&self.tail);
        b.freeze()
    }

    /// Decodes the record (tests, diagnostics; the agent itself never needs to).
    ///
    /// # Errors
    /// A [`prost::DecodeError`] if the bytes are not a valid `Record` (never for records the
    /// agent built or accepted).
    pub fn decode(&self) -> Result<Record, prost::DecodeError> {
        Record::decode(self.head.clone().chain(self.tail.clone()))
    }

    fn put(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.head);
        buf.put_slice(&self.tail);
    }
}

/// A closed batch: the agent id, its sequence number and its records.
#[derive(Debug, Clone, PartialEq)]
pub struct WireBatch {
    /// The agent's id.
    pub agent_id: String,
    /// The batch's sequence number.
    pub sequence: u64,
    /// The records, encoded.
    pub records: Vec<WireRecord>,
}

impl WireBatch {
    /// Decodes the batch as the aggregator sees it (`sent_at` unset); for tests and diagnostics.
    ///
    /// # Errors
    /// A [`prost::DecodeError`] if a record is not valid (never for batches the agent built).
    pub fn decode(&self) -> Result<RecordBatch, prost::DecodeError> {
        let records = self.records.iter().map(WireRecord::decode).collect::<Result<_, _>>()?;
        Ok(RecordBatch { agent_id: self.agent_id.clone(), sequence: self.sequence, sent_at: None, records })
    }

    /// The `RecordBatch` message with this `sent_at`, in one buffer: exactly the bytes the gRPC
    /// sender writes for it (the Kafka output's message value).
    pub fn encode_message(&self, sent_at: &Timestamp) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len(sent_at));
        self.encode(sent_at, &mut buf);
        buf.freeze()
    }

    fn encoded_len(&self, sent_at: &Timestamp) -> usize {
        let records: usize =
            self.records.iter().map(WireRecord::encoded_len).map(|n| 1 + encoded_len_varint(n as u64) + n).sum();
        let agent_id = if self.agent_id.is_empty() {
            0
        } else {
            prost::encoding::string::encoded_len(field::BATCH_AGENT_ID, &self.agent_id)
        };
        let sequence = if self.sequence == 0 {
            0
        } else {
            prost::encoding::uint64::encoded_len(field::BATCH_SEQUENCE, &self.sequence)
        };
        agent_id + sequence + prost::encoding::message::encoded_len(field::BATCH_SENT_AT, sent_at) + records
    }

    /// Writes the `RecordBatch` message (exactly what prost writes for the decoded batch with
    /// this `sent_at`, fields in order; empty/zero fields omitted like prost does).
    fn encode(&self, sent_at: &Timestamp, buf: &mut impl BufMut) {
        if !self.agent_id.is_empty() {
            prost::encoding::string::encode(field::BATCH_AGENT_ID, &self.agent_id, buf);
        }
        if self.sequence != 0 {
            prost::encoding::uint64::encode(field::BATCH_SEQUENCE, &self.sequence, buf);
        }
        prost::encoding::message::encode(field::BATCH_SENT_AT, sent_at, buf);
        for r in &self.records {
            encode_key(field::BATCH_RECORDS, WireType::LengthDelimited, buf);
            encode_varint(r.encoded_len() as u64, buf);
            r.put(buf);
        }
    }
}

/// What the agent checks and stamps, read from one pushed record's encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecordFacts {
    /// `metric` is empty.
    pub metric_empty: bool,
    /// The value.
    pub value: Option<record::Value>,
    /// The event time.
    pub event_time: Option<Timestamp>,
    /// `cluster` is empty.
    pub cluster_empty: bool,
    /// `node` is empty.
    pub node_empty: bool,
}

impl RecordFacts {
    /// The facts of a decoded record.
    pub fn of(r: &Record) -> RecordFacts {
        RecordFacts {
            metric_empty: r.metric.is_empty(),
            value: r.value,
            event_time: r.event_time,
            cluster_empty: r.cluster.is_empty(),
            node_empty: r.node.is_empty(),
        }
    }
}

/// One record of a pushed batch: its encoding and its facts.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedRecord {
    bytes: Bytes,
    /// What the agent needs to know about it.
    pub facts: RecordFacts,
}

impl PushedRecord {
    /// A record pushed in-process or decoded by the fallback path.
    pub fn from_record(r: &Record) -> PushedRecord {
        PushedRecord { bytes: Bytes::from(r.encode_to_vec()), facts: RecordFacts::of(r) }
    }

    /// The record's encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A `RecordBatch` pushed by an application, its records left encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushedBatch {
    /// The pusher's id.
    pub agent_id: String,
    /// The pusher's sequence number (0: unsequenced).
    pub sequence: u64,
    /// The records, in order.
    pub records: Vec<PushedRecord>,
    /// Size of the received message, in bytes.
    pub wire_len: usize,
}

/// Reads a pushed `RecordBatch`. Accepts and refuses exactly what
/// `RecordBatch::decode` accepts and refuses, with the same meaning.
///
/// # Errors
/// prost's [`prost::DecodeError`] for a malformed message.
pub fn decode_pushed(data: Bytes) -> Result<PushedBatch, prost::DecodeError> {
    if let Some(batch) = scan_batch(&data) {
        return Ok(batch);
    }
    let wire_len = data.len();
    // Something the fast reader does not vouch for: let prost decide, and re-encode.
    let batch = RecordBatch::decode(data)?;
    Ok(PushedBatch {
        agent_id: batch.agent_id,
        sequence: batch.sequence,
        records: batch.records.iter().map(PushedRecord::from_record).collect(),
        wire_len,
    })
}

/// A bounds-checked reader over one message's bytes. Every method returns `None` on anything
/// it does not handle, which sends the whole batch to prost.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // One byte covers keys and short lengths: the common case, decoded inline.
        let b = *self.data.get(self.pos)?;
        if b < 0x80 {
            self.pos += 1;
            return Some(u64::from(b));
        }
        let mut rest = self.rest();
        let v = decode_varint(&mut rest).ok()?;
        self.pos = self.data.len() - rest.len();
        Some(v)
    }

    /// A field key, as `prost::encoding::decode_key` reads it (`None` where it errs).
    #[inline]
    fn key(&mut self) -> Option<(u32, WireType)> {
        let key = u32::try_from(self.varint()?).ok()?;
        let wire_type = match key & 0x07 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            _ => return None,
        };
        let tag = key >> 3;
        (tag >= 1).then_some((tag, wire_type))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A length-delimited payload and its offset in the message.
    #[inline]
    fn delimited(&mut self, wire_type: WireType) -> Option<(usize, &'a [u8])> {
        if wire_type != WireType::LengthDelimited {
            return None;
        }
        let n = usize::try_from(self.varint()?).ok()?;
        let start = self.pos;
        Some((start, self.take(n)?))
    }

    #[inline]
    fn string(&mut self, wire_type: WireType) -> Option<&'a [u8]> {
        let (_, s) = self.delimited(wire_type)?;
        if !s.is_ascii() {
            std::str::from_utf8(s).ok()?;
        }
        Some(s)
    }

    fn scalar_varint(&mut self, wire_type: WireType) -> Option<u64> {
        if wire_type != WireType::Varint {
            return None;
        }
        self.varint()
    }

    fn skip(&mut self, wire_type: WireType) -> Option<()> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::SixtyFourBit => self.take(8).map(drop),
            WireType::ThirtyTwoBit => self.take(4).map(drop),
            WireType::LengthDelimited => self.delimited(wire_type).map(drop),
            WireType::StartGroup | WireType::EndGroup => None,
        }
    }
}

/// Merges a `google.protobuf.Timestamp` message into `ts` (prost semantics: last value wins).
fn merge_timestamp(data: &[u8], ts: &mut Timestamp) -> Option<()> {
    let mut c = Cursor::new(data);
    while !c.done() {
        let (tag, wire_type) = c.key()?;
        match tag {
            1 => ts.seconds = c.scalar_varint(wire_type)? as i64,
            2 => ts.nanos = c.scalar_varint(wire_type)? as i32,
            _ => c.skip(wire_type)?,
        }
    }
    Some(())
}

/// Merges a `meshmon.v1.Decimal` message into `d`.
fn merge_decimal(data: &[u8], d: &mut Decimal) -> Option<()> {
    let mut c = Cursor::new(data);
    while !c.done() {
        let (tag, wire_type) = c.key()?;
        match tag {
            1 => d.units = c.scalar_varint(wire_type)? as i64,
            2 => {
                if wire_type != WireType::ThirtyTwoBit {
                    return None;
                }
                let b: [u8; 4] = c.take(4)?.try_into().ok()?;
                d.nanos = i32::from_le_bytes(b);
            }
            _ => c.skip(wire_type)?,
        }
    }
    Some(())
}

/// Reads one map entry (`key` = 1, `value` = 2, both strings) and returns its key.
fn scan_tag_entry(data: &[u8]) -> Option<&[u8]> {
    let mut c = Cursor::new(data);
    let mut key: &[u8] = &[];
    while !c.done() {
        let (tag, wire_type) = c.key()?;
        match tag {
            1 => key = c.string(wire_type)?,
            2 => drop(c.string(wire_type)?),
            _ => c.skip(wire_type)?,
        }
    }
    Some(key)
}

/// Reads one `meshmon.v1.Record`, calling `on_tag_key` with the key of every tag entry.
/// `None` when the bytes are anything but plain, valid protobuf of the schema.
fn scan_record(data: &[u8], mut on_tag_key: impl FnMut(&[u8])) -> Option<RecordFacts> {
    let mut c = Cursor::new(data);
    let mut facts = RecordFacts { metric_empty: true, cluster_empty: true, node_empty: true, ..RecordFacts::default() };
    while !c.done() {
        let (tag, wire_type) = c.key()?;
        match tag {
            field::METRIC => facts.metric_empty = c.string(wire_type)?.is_empty(),
            field::DOUBLE_VALUE => {
                if wire_type != WireType::SixtyFourBit {
                    return None;
                }
                let b: [u8; 8] = c.take(8)?.try_into().ok()?;
                facts.value = Some(record::Value::DoubleValue(f64::from_le_bytes(b)));
            }
            field::DECIMAL_VALUE => {
                let (_, m) = c.delimited(wire_type)?;
                let mut d = match facts.value {
                    Some(record::Value::DecimalValue(d)) => d,
                    _ => Decimal::default(),
                };
                merge_decimal(m, &mut d)?;
                facts.value = Some(record::Value::DecimalValue(d));
            }
            field::EVENT_TIME => {
                let (_, m) = c.delimited(wire_type)?;
                merge_timestamp(m, facts.event_time.get_or_insert_default())?;
            }
            field::CLUSTER => facts.cluster_empty = c.string(wire_type)?.is_empty(),
            field::NODE => facts.node_empty = c.string(wire_type)?.is_empty(),
            field::TAGS => {
                let (_, m) = c.delimited(wire_type)?;
                on_tag_key(scan_tag_entry(m)?);
            }
            field::RAW => drop(c.delimited(wire_type)?),
            _ => c.skip(wire_type)?,
        }
    }
    Some(facts)
}

/// Most records [`scan_batch`] reserves room for up front.
const RESERVE_RECORDS: usize = 8192;

/// The fast path of [`decode_pushed`]: records become slices of `data`.
fn scan_batch(data: &Bytes) -> Option<PushedBatch> {
    let mut c = Cursor::new(data);
    let mut agent_id: &[u8] = &[];
    let mut sequence = 0;
    let mut records = Vec::new();
    while !c.done() {
        let (tag, wire_type) = c.key()?;
        match tag {
            field::BATCH_AGENT_ID => agent_id = c.string(wire_type)?,
            field::BATCH_SEQUENCE => sequence = c.scalar_varint(wire_type)?,
            field::BATCH_SENT_AT => {
                let (_, m) = c.delimited(wire_type)?;
                merge_timestamp(m, &mut Timestamp::default())?;
            }
            field::BATCH_RECORDS => {
                let (start, m) = c.delimited(wire_type)?;
                let facts = scan_record(m, |_| {})?;
                if records.is_empty() {
                    // Records of one batch tend to be alike: size the vector from the first
                    // (bounded: a tiny first record must not reserve for millions).
                    records.reserve((c.rest().len() / (m.len() + 2) + 1).min(RESERVE_RECORDS));
                }
                records.push(PushedRecord { bytes: data.slice(start..start + m.len()), facts });
            }
            _ => c.skip(wire_type)?,
        }
    }
    let agent_id = std::str::from_utf8(agent_id).ok()?.to_owned();
    Some(PushedBatch { agent_id, sequence, records, wire_len: data.len() })
}

/// [`RecordDefaults`] as encoded fields, appended to records that lack them.
#[derive(Debug, Clone, Default)]
pub struct WireStamp {
    /// `cluster` field, empty when there is no default cluster.
    cluster: Bytes,
    /// `node` field, empty when there is no default node.
    node: Bytes,
    /// Global tags sorted by key, each with its encoded map entry field.
    tags: Vec<(String, Bytes)>,
}

fn encoded_fields(r: &Record) -> Bytes {
    Bytes::from(r.encode_to_vec())
}

/// Which defaults one record lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Missing {
    event_time: bool,
    cluster: bool,
    node: bool,
    tags: MissingTags,
}

/// Global tags up to this many are tracked in a bit mask.
const MASK_TAGS: usize = 64;
/// Distinct sets of stamped fields remembered per batch.
const CACHE_ENTRIES: usize = 8;

impl WireStamp {
    /// The encoded form of `defaults`.
    pub fn new(defaults: &RecordDefaults) -> WireStamp {
        let cluster = encoded_fields(&Record { cluster: defaults.cluster.clone(), ..Record::default() });
        let node = encoded_fields(&Record { node: defaults.node.clone(), ..Record::default() });
        let tags = defaults
            .tags
            .iter()
            .map(|(k, v)| {
                let entry = Record { tags: [(k.clone(), v.clone())].into(), ..Record::default() };
                (k.clone(), encoded_fields(&entry))
            })
            .collect();
        WireStamp { cluster, node, tags }
    }

    /// A stamper for one batch whose records lacking an event time get `now`.
    pub fn batch(&self, now: Timestamp) -> BatchStamper<'_> {
        BatchStamper { stamp: self, now, event_time: None, cache: Vec::new() }
    }

    /// Calls `present` with the index of every global tag `record` carries.
    fn present_tags(&self, record: &[u8], mut present: impl FnMut(usize)) {
        let mut mark = |key: &[u8]| {
            if let Ok(i) = self.tags.binary_search_by(|(k, _)| k.as_bytes().cmp(key)) {
                present(i);
            }
        };
        if scan_record(record, &mut mark).is_none() {
            // Not expected (the record was read before); decode it the slow, certain way.
            if let Ok(r) = Record::decode(record) {
                r.tags.keys().for_each(|k| mark(k.as_bytes()));
            }
        }
    }

    /// Which global tags `record` lacks.
    fn missing_tags(&self, record: &[u8]) -> MissingTags {
        if self.tags.is_empty() {
            return MissingTags::Mask(0);
        }
        if self.tags.len() <= MASK_TAGS {
            let mut present = 0u64;
            self.present_tags(record, |i| present |= 1 << i);
            let all = u64::MAX >> (MASK_TAGS - self.tags.len());
            return MissingTags::Mask(all & !present);
        }
        let mut missing = vec![true; self.tags.len()];
        self.present_tags(record, |i| missing[i] = false);
        MissingTags::List(missing)
    }
}

/// Which global tags a record lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MissingTags {
    /// Bit `i`: global tag `i` (of at most [`MASK_TAGS`]) is missing.
    Mask(u64),
    /// More global tags than fit a mask.
    List(Vec<bool>),
}

impl MissingTags {
    fn is_missing(&self, i: usize) -> bool {
        match self {
            MissingTags::Mask(m) => i < MASK_TAGS && m & (1 << i) != 0,
            MissingTags::List(l) => l.get(i).copied().unwrap_or(false),
        }
    }

    fn none(&self) -> bool {
        match self {
            MissingTags::Mask(m) => *m == 0,
            MissingTags::List(l) => !l.iter().any(|m| *m),
        }
    }
}

/// Stamps the defaults on the records of one pushed batch ([`WireStamp::batch`]).
#[derive(Debug)]
pub struct BatchStamper<'s> {
    stamp: &'s WireStamp,
    now: Timestamp,
    event_time: Option<Bytes>,
    /// Stamped fields already built for this batch: records of a batch tend to lack the same.
    cache: Vec<(Missing, Bytes)>,
}

impl BatchStamper<'_> {
    /// Stamps the defaults on a checked record: appends `event_time` (now, when it has none),
    /// the default cluster and node where its own are empty, and every global tag whose key it
    /// lacks. The record's own bytes are never copied; the appended fields are shared.
    pub fn stamp(&mut self, record: PushedRecord) -> WireRecord {
        let f = &record.facts;
        let s = self.stamp;
        let missing = Missing {
            event_time: f.event_time.is_none(),
            cluster: f.cluster_empty && !s.cluster.is_empty(),
            node: f.node_empty && !s.node.is_empty(),
            tags: s.missing_tags(&record.bytes),
        };
        if !missing.event_time && !missing.cluster && !missing.node && missing.tags.none() {
            return WireRecord { head: record.bytes, tail: Bytes::new() };
        }
        if let Some((_, tail)) = self.cache.iter().find(|(m, _)| *m == missing) {
            return WireRecord { head: record.bytes, tail: tail.clone() };
        }
        let mut tail = BytesMut::new();
        if missing.event_time {
            let now = self.now;
            tail.put_slice(
                self.event_time
                    .get_or_insert_with(|| encoded_fields(&Record { event_time: Some(now), ..Record::default() })),
            );
        }
        if missing.cluster {
            tail.put_slice(&s.cluster);
        }
        if missing.node {
            tail.put_slice(&s.node);
        }
        for (i, (_, field)) in s.tags.iter().enumerate() {
            if missing.tags.is_missing(i) {
                tail.put_slice(field);
            }
        }
        let tail = tail.freeze();
        if self.cache.len() < CACHE_ENTRIES {
            self.cache.push((missing, tail.clone()));
        }
        WireRecord { head: record.bytes, tail }
    }
}

/// Copies records out of a received message when they are less than half of it (say most of
/// it was refused), so that what waits in the queue does not keep large messages alive.
pub fn compact(records: &mut [WireRecord], message_len: usize) {
    let kept: usize = records.iter().map(|r| r.head.len()).sum();
    if kept.saturating_mul(2) >= message_len {
        return;
    }
    let mut buf = BytesMut::with_capacity(kept);
    for r in records.iter() {
        buf.put_slice(&r.head);
    }
    let mut buf = buf.freeze();
    for r in records.iter_mut() {
        r.head = buf.split_to(r.head.len());
    }
}

/// A batch on its way to the aggregator, with the time it is (re-)sent.
#[derive(Debug, Clone)]
pub struct OutgoingBatch {
    /// The batch (shared with the sender's in-flight window).
    pub batch: Arc<WireBatch>,
    /// `sent_at` for this transmission.
    pub sent_at: Timestamp,
}

/// Initial size of the sender's encoding buffer: a few typical batches.
const BUFFER_SIZE: usize = 256 * 1024;
/// The sender hands encoded bytes to HTTP/2 once this many are ready (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

fn decode_error(e: &prost::DecodeError) -> Status {
    Status::internal(e.to_string())
}

/// The sender's codec: writes [`OutgoingBatch`]es as `RecordBatch`, reads `BatchAck`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchCodec;

/// Encoder of [`BatchCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchEncoder;

/// Decoder of the `BatchAck`s the aggregator answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AckDecoder;

impl Encoder for BatchEncoder {
    type Item = OutgoingBatch;
    type Error = Status;

    fn encode(&mut self, item: OutgoingBatch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.batch.encoded_len(&item.sent_at));
        item.batch.encode(&item.sent_at, dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
    }
}

impl Decoder for AckDecoder {
    type Item = BatchAck;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<BatchAck>, Status> {
        BatchAck::decode(src).map(Some).map_err(|e| decode_error(&e))
    }
}

impl Codec for BatchCodec {
    type Encode = OutgoingBatch;
    type Decode = BatchAck;
    type Encoder = BatchEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// The push server's codec: reads [`PushedBatch`]es, writes `BatchAck`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushCodec;

/// Decoder of [`PushCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PushDecoder;

/// Encoder of `BatchAck`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct AckEncoder;

impl Decoder for PushDecoder {
    type Item = PushedBatch;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<PushedBatch>, Status> {
        // Zero-copy: the message's bytes are split off tonic's buffer; records slice them.
        let data = src.copy_to_bytes(src.remaining());
        decode_pushed(data).map(Some).map_err(|e| decode_error(&e))
    }
}

impl Encoder for AckEncoder {
    type Item = BatchAck;
    type Error = Status;

    fn encode(&mut self, item: BatchAck, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for PushCodec {
    type Encode = BatchAck;
    type Decode = PushedBatch;
    type Encoder = AckEncoder;
    type Decoder = PushDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> PushDecoder {
        PushDecoder
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::{decimal_record, double_record};
    use meshmon_proto::nanos_to_timestamp;

    fn sample_batch() -> RecordBatch {
        let t = nanos_to_timestamp(1_767_225_600_123_456_789);
        let mut a = double_record("cpu", 0.5, t);
        a.cluster = "c1".into();
        a.node = "n1".into();
        a.tags = [("env".to_owned(), "prod".to_owned()), ("region".to_owned(), "eu".to_owned())].into();
        a.raw = Some(b"raw line".to_vec());
        let b = decimal_record("orders", Decimal { units: -3, nanos: -500 }, t);
        let mut c = double_record("", f64::INFINITY, t);
        c.event_time = None;
        RecordBatch {
            agent_id: "app-é".into(),
            sequence: 42,
            sent_at: Some(nanos_to_timestamp(7)),
            records: vec![a, b, c, Record::default()],
        }
    }

    /// NaN payloads compare unequal; give every NaN one stand-in value.
    fn no_nan(v: Option<record::Value>) -> Option<record::Value> {
        match v {
            Some(record::Value::DoubleValue(x)) if x.is_nan() => Some(record::Value::DoubleValue(-0.125)),
            v => v,
        }
    }

    /// `decode_pushed` and prost agree on `data`: both refuse it, or both read the same batch.
    fn agree(data: &[u8]) {
        let ours = decode_pushed(Bytes::copy_from_slice(data));
        let theirs = RecordBatch::decode(data);
        match (ours, theirs) {
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (Ok(a), Ok(b)) => {
                assert_eq!((&a.agent_id, a.sequence), (&b.agent_id, b.sequence));
                assert_eq!(a.records.len(), b.records.len());
                for (p, r) in a.records.iter().zip(&b.records) {
                    let mut forwarded = Record::decode(p.as_bytes()).unwrap();
                    forwarded.value = no_nan(forwarded.value);
                    let r = Record { value: no_nan(r.value), ..r.clone() };
                    assert_eq!(forwarded, r, "forwarded bytes mean the same record");
                    let facts = RecordFacts { value: no_nan(p.facts.value), ..p.facts };
                    assert_eq!(facts, RecordFacts::of(&r), "facts read from the bytes");
                }
            }
            (a, b) => panic!("disagree on {data:?}: ours {a:?}, prost {b:?}"),
        }
    }

    #[test]
    fn reads_plain_batches_without_copying() {
        let batch = sample_batch();
        let data = Bytes::from(batch.encode_to_vec());
        let pushed = scan_batch(&data).expect("fast path");
        assert_eq!(pushed.records.len(), 4);
        let non_empty = pushed.records.iter().filter(|r| !r.bytes.is_empty());
        assert!(
            non_empty.clone().count() == 3
                && non_empty.clone().all(|r| data.as_ptr_range().contains(&r.bytes.as_ptr())),
            "zero-copy slices"
        );
        agree(&data);
        let f = pushed.records[2].facts;
        assert!(f.metric_empty && f.event_time.is_none() && f.cluster_empty && f.node_empty);
    }

    #[test]
    fn agrees_with_prost_on_unusual_and_corrupt_input() {
        let plain = sample_batch().encode_to_vec();
        // Unusual but valid: repeated fields (last wins), merged messages, unknown fields,
        // groups, an empty record, a decimal after a double and back.
        let mut odd = plain.clone();
        let extra = [
            vec![0x22, 0x00],                                                       // empty record
            vec![0x22, 0x06, 0x0a, 0x01, b'x', 0x0a, 0x01, b'y'],                   // metric twice
            vec![0x22, 0x04, 0xf8, 0x01, 0x05, 0x00], // unknown varint 31 + tag... (corrupt key 0)
            vec![0x22, 0x05, 0x1b, 0x08, 0x01, 0x1c, 0x00], // group 3 in a record
            vec![0x22, 0x07, 0x22, 0x02, 0x08, 0x05, 0x22, 0x01, 0x10], // event_time twice, truncated
            vec![0x22, 0x0c, 0x1a, 0x02, 0x08, 0x07, 0x11, 0, 0, 0, 0, 0, 0, 0xf0], // decimal then double
            vec![0x3a, 0x03, 0x01, 0x02, 0x03],       // unknown LEN field 7
            vec![0x12, 0x00, 0x0a, 0x02, 0xff, 0xfe], // invalid UTF-8 agent id
        ];
        for e in &extra {
            let mut d = plain.clone();
            d.extend_from_slice(e);
            agree(&d);
            odd.extend_from_slice(e);
        }
        agree(&odd);
        // Deterministic pseudo-random corruption: flips, truncations and insertions.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut d = plain.clone();
            for _ in 0..rng.usize(1..4) {
                match rng.u8(0..4) {
                    0 => {
                        let i = rng.usize(0..d.len());
                        d[i] = rng.u8(..);
                    }
                    1 => d.truncate(rng.usize(0..d.len())),
                    2 => {
                        let i = rng.usize(0..=d.len());
                        d.insert(i, rng.u8(..));
                    }
                    _ => {
                        let i = rng.usize(0..d.len());
                        d[i] ^= 1 << rng.u8(0..8);
                    }
                }
                if d.is_empty() {
                    break;
                }
            }
            agree(&d);
        }
    }

    #[test]
    fn stamping_appends_only_what_is_missing() {
        let defaults = RecordDefaults {
            cluster: "c".into(),
            node: "n".into(),
            tags: [("env".to_owned(), "prod".to_owned()), ("dc".to_owned(), "x".to_owned())].into(),
        };
        let stamp = WireStamp::new(&defaults);
        let now = nanos_to_timestamp(99);
        let mut stamper = stamp.batch(now);
        let mut r = double_record("m", 1.0, nanos_to_timestamp(5));
        r.tags.insert("env".into(), "dev".into());
        r.node = "own".into();
        let mut no_time = r.clone();
        no_time.event_time = None;
        let bare = double_record("m", 2.0, nanos_to_timestamp(6));
        for (input, time) in [(&r, r.event_time), (&no_time, Some(now)), (&bare, bare.event_time), (&r, r.event_time)] {
            let mut want = Record { event_time: time, ..input.clone() };
            defaults.apply(&mut want);
            let got = stamper.stamp(PushedRecord::from_record(input));
            assert_eq!(got.decode().unwrap(), want);
            assert_eq!(Record::decode(got.to_bytes()).unwrap(), want);
        }
        assert_eq!(stamper.cache.len(), 3, "the second alike record reused the stamped fields");

        // Nothing missing: the very same bytes, nothing appended.
        let plain = WireStamp::new(&RecordDefaults::default());
        let p = PushedRecord::from_record(&r);
        let bytes = p.bytes.clone();
        let got = plain.batch(now).stamp(p);
        assert_eq!((got.head.as_ptr(), got.tail.len()), (bytes.as_ptr(), 0));
    }

    #[test]
    fn many_global_tags_and_compaction() {
        let tags: std::collections::BTreeMap<String, String> =
            (0..70).map(|i| (format!("k{i:02}"), format!("v{i}"))).collect();
        let defaults = RecordDefaults { tags, ..RecordDefaults::default() };
        let stamp = WireStamp::new(&defaults);
        let mut r = double_record("m", 1.0, nanos_to_timestamp(5));
        r.tags.insert("k03".into(), "own".into());
        r.tags.insert("k66".into(), "own".into());
        let mut want = r.clone();
        defaults.apply(&mut want);
        let mut got = vec![stamp.batch(nanos_to_timestamp(0)).stamp(PushedRecord::from_record(&r))];
        assert_eq!(got[0].decode().unwrap(), want);

        let head = got[0].head.clone();
        compact(&mut got, head.len() * 2);
        assert_eq!(got[0].head.as_ptr(), head.as_ptr(), "dense: left as it is");
        compact(&mut got, head.len() * 2 + 1);
        assert_ne!(got[0].head.as_ptr(), head.as_ptr(), "sparse: copied out");
        assert_eq!(got[0].decode().unwrap(), want);
    }

    #[test]
    fn outgoing_batches_encode_like_prost() {
        let batch = sample_batch();
        let wire = WireBatch {
            agent_id: batch.agent_id.clone(),
            sequence: batch.sequence,
            records: batch.records.iter().map(WireRecord::encode).collect(),
        };
        let sent_at = nanos_to_timestamp(1_000_000_123);
        let mut buf = Vec::new();
        wire.encode(&sent_at, &mut buf);
        assert_eq!(buf.len(), wire.encoded_len(&sent_at));
        let want = RecordBatch { sent_at: Some(sent_at), ..batch };
        assert_eq!(buf, want.encode_to_vec(), "byte for byte what prost writes");
        assert_eq!(wire.encode_message(&sent_at), buf, "the Kafka message value is the same bytes");
        assert_eq!(wire.decode().unwrap(), RecordBatch { sent_at: None, ..want });
    }
}

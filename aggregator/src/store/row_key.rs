//! The raw-record row key, shared by the embedded store and the HBase store.
//!
//! Role: [`RawRowKey`] names one stored raw record as the tuple (salt, metric, time bucket,
//! cluster, node, event time, agent id, sequence, index) and encodes it to bytes whose
//! lexicographic order is exactly the tuple order (see `keybytes.rs`). [`RowKeyLayout`] holds
//! the two layout settings — bucket size and salt buckets — and derives keys from records plus
//! the scan ranges a reader needs. The salt (FNV-1a of metric, cluster and node modulo the salt
//! buckets, one leading byte) spreads writes over regions while keeping one node's rows
//! together. Pure: touches nothing but `keybytes`.
//!
//! ```text
//! salt:u8 | metric:str | bucket:i64 | cluster:str | node:str | time:i64 | agent:str | sequence:u64 | index:u32
//! str = bytes with 0x00 → 0x00 0xFF, then 0x00 0x01;  i64 = big-endian, sign bit flipped;  u64/u32 = big-endian
//! ```

use super::keybytes::{KeyError, KeyReader, prefix_end, put_i64, put_str, put_u32, put_u64};
use crate::engine::{Nanos, Record, RecordIdRef};

/// The key of one raw record. The derived order is the tuple order, and equals the byte order
/// of [`RawRowKey::encode`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawRowKey {
    /// Spreads rows over `salt_buckets` key ranges (regions).
    pub salt: u8,
    /// The metric name.
    pub metric: String,
    /// The event time aligned down to the bucket size.
    pub bucket: Nanos,
    /// The cluster (may be empty).
    pub cluster: String,
    /// The node (may be empty).
    pub node: String,
    /// The event time.
    pub time: Nanos,
    /// The sending agent (any bytes: agent ids are not validated).
    pub agent: String,
    /// The batch sequence number.
    pub sequence: u64,
    /// The index within the batch.
    pub index: u32,
}

impl RawRowKey {
    /// The key as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(48 + self.metric.len() + self.cluster.len() + self.node.len() + self.agent.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the key bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.salt);
        put_str(out, &self.metric);
        put_i64(out, self.bucket);
        put_str(out, &self.cluster);
        put_str(out, &self.node);
        put_i64(out, self.time);
        put_str(out, &self.agent);
        put_u64(out, self.sequence);
        put_u32(out, self.index);
    }

    /// Reads a key back; malformed bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<RawRowKey, KeyError> {
        let mut r = KeyReader::new(bytes);
        let key = RawRowKey {
            salt: r.u8("salt")?,
            metric: r.str("metric")?,
            bucket: r.i64("bucket")?,
            cluster: r.str("cluster")?,
            node: r.str("node")?,
            time: r.i64("time")?,
            agent: r.str("agent")?,
            sequence: r.u64("sequence")?,
            index: r.u32("index")?,
        };
        r.finish()?;
        Ok(key)
    }

    /// Reads only the event time of an encoded key (no allocation: the scan filter's fast path).
    pub fn decode_time(bytes: &[u8]) -> Result<Nanos, KeyError> {
        let mut r = KeyReader::new(bytes);
        r.u8("salt")?;
        r.skip_str("metric")?;
        r.i64("bucket")?;
        r.skip_str("cluster")?;
        r.skip_str("node")?;
        r.i64("time")
    }

    /// The key bytes without the salt byte: the order of records across salts.
    pub fn unsalted(encoded: &[u8]) -> &[u8] {
        encoded.get(1..).unwrap_or_default()
    }
}

/// A layout setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The bucket size must be positive.
    #[error("raw row bucket size must be positive, got {0} ns")]
    BucketSize(Nanos),
    /// There must be at least one salt bucket.
    #[error("salt buckets must be at least 1")]
    SaltBuckets,
}

/// The settings that fix the row-key layout of a store. They must never change for a store
/// holding data: every key depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKeyLayout {
    bucket_size: Nanos,
    salt_buckets: u8,
}

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

impl RowKeyLayout {
    /// A layout with buckets of `bucket_size` ns and `salt_buckets` salts (1..=255).
    pub fn new(bucket_size: Nanos, salt_buckets: u8) -> Result<RowKeyLayout, LayoutError> {
        if bucket_size <= 0 {
            return Err(LayoutError::BucketSize(bucket_size));
        }
        if salt_buckets == 0 {
            return Err(LayoutError::SaltBuckets);
        }
        Ok(RowKeyLayout { bucket_size, salt_buckets })
    }

    /// The bucket size in nanoseconds.
    pub fn bucket_size(&self) -> Nanos {
        self.bucket_size
    }

    /// The number of salts.
    pub fn salt_buckets(&self) -> u8 {
        self.salt_buckets
    }

    /// The salt of a (metric, cluster, node): FNV-1a of the three (separated by `0xFF`, a byte
    /// UTF-8 never holds) modulo the salt buckets. Stable across processes and versions.
    pub fn salt(&self, metric: &str, cluster: &str, node: &str) -> u8 {
        let mut h = fnv1a(FNV_OFFSET, metric.as_bytes());
        h = fnv1a(h, &[0xFF]);
        h = fnv1a(h, cluster.as_bytes());
        h = fnv1a(h, &[0xFF]);
        h = fnv1a(h, node.as_bytes());
        (h % u64::from(self.salt_buckets)) as u8
    }

    /// The start of the bucket holding event time `t` (saturating at the ends of time).
    pub fn bucket(&self, t: Nanos) -> Nanos {
        t.saturating_sub(t.rem_euclid(self.bucket_size))
    }

    /// The starts of the buckets that overlap the event times `[from, to)`, ascending.
    pub fn buckets(&self, from: Nanos, to: Nanos) -> impl Iterator<Item = Nanos> + use<> {
        let size = self.bucket_size;
        let last = if from < to { Some(self.bucket(to - 1)) } else { None };
        let first = last.map(|_| self.bucket(from));
        std::iter::successors(first, move |&b| b.checked_add(size)).take_while(move |&b| last.is_some_and(|l| b <= l))
    }

    /// The key of a record.
    pub fn key(&self, id: RecordIdRef<'_>, record: &Record) -> RawRowKey {
        RawRowKey {
            salt: self.salt(&record.metric, &record.cluster, &record.node),
            metric: record.metric.clone(),
            bucket: self.bucket(record.time),
            cluster: record.cluster.clone(),
            node: record.node.clone(),
            time: record.time,
            agent: id.agent.to_owned(),
            sequence: id.sequence,
            index: id.index,
        }
    }

    /// Appends the encoded key of a record to `out` — the same bytes as
    /// `self.key(id, record).encode()`, without building the owned key.
    pub fn encode_key(&self, id: RecordIdRef<'_>, record: &Record, out: &mut Vec<u8>) {
        out.push(self.salt(&record.metric, &record.cluster, &record.node));
        put_str(out, &record.metric);
        put_i64(out, self.bucket(record.time));
        put_str(out, &record.cluster);
        put_str(out, &record.node);
        put_i64(out, record.time);
        put_str(out, id.agent);
        put_u64(out, id.sequence);
        put_u32(out, id.index);
    }

    /// The key prefix shared by every row of (salt, metric, bucket).
    pub fn bucket_prefix(&self, salt: u8, metric: &str, bucket: Nanos) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + metric.len());
        out.push(salt);
        put_str(&mut out, metric);
        put_i64(&mut out, bucket);
        out
    }

    /// The key range `[start, end)` of one salt that holds every row of `metric` with event
    /// time in `[from, to)` — whole buckets, so rows at the edges must still be filtered by
    /// time. `None` when the time range is empty.
    pub fn time_range(&self, salt: u8, metric: &str, from: Nanos, to: Nanos) -> Option<(Vec<u8>, Vec<u8>)> {
        if from >= to {
            return None;
        }
        let start = self.bucket_prefix(salt, metric, self.bucket(from));
        let last = self.bucket(to - 1);
        let end = match last.checked_add(1) {
            Some(next) => self.bucket_prefix(salt, metric, next),
            // The last bucket of time: end after every key of the metric.
            None => {
                let mut m = vec![salt];
                put_str(&mut m, metric);
                prefix_end(&m)?
            }
        };
        Some((start, end))
    }
}

impl Default for RowKeyLayout {
    /// 60 s buckets, 16 salts.
    fn default() -> Self {
        RowKeyLayout { bucket_size: 60_000_000_000, salt_buckets: 16 }
    }
}

//! The HBase table layout of raw records (and dead letters).
//!
//! Role: names the tables, column families and columns, builds the Thrift1 mutations that
//! write one raw record or dead letter, and the column descriptors of `createTable`. Pure:
//! touches nothing but the store's key and value encodings, which it reuses unchanged.
//!
//! ```text
//! table meshmon_raw            family r (1 version)   row = RawRowKey bytes   column r:v = RawRowValue v1
//! table meshmon_dead_letters   family d (1 version)   row = dead-letter key   column d:v = DeadLetterValue v1
//! ```
//!
//! The raw row key is exactly the embedded store's (`store/row_key.rs`: salt | metric |
//! bucket | cluster | node | time | agent | sequence | index), so writes spread over
//! `salt_buckets` key ranges (regions) and a drill-down is one key-range scan per salt and
//! bucket. The key alone is the aggregate → raw association: a point names (metric,
//! dimension, window), and its records are the rows of the metric in the window's buckets
//! that pass the dimension filter and the watermark rule (`store/drilldown.rs`); see
//! `docs/HBASE.md`.

use std::time::Duration;

use hbase_thrift::hbase::{BatchMutation, ColumnDescriptor, Mutation};

use super::error::HbaseError;
use crate::engine::RecordIdRef;
use crate::store::keys::dead_letter_key;
use crate::store::{DeadLetter, DeadLetterValue, RawRowValue, RawWrite, RowKeyLayout};

/// The column family of raw records.
pub const RAW_FAMILY: &[u8] = b"r";
/// The one column of a raw record: its [`RawRowValue`] encoding.
pub const RAW_COLUMN: &[u8] = b"r:v";
/// The column family of dead letters.
pub const DEAD_FAMILY: &[u8] = b"d";
/// The one column of a dead letter: its [`DeadLetterValue`] encoding.
pub const DEAD_COLUMN: &[u8] = b"d:v";

/// Where and how the HBase store keeps raw records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaseConfig {
    /// The raw-record table (default `meshmon_raw`).
    pub table: String,
    /// The dead-letter table (default `meshmon_dead_letters`).
    pub dead_letter_table: String,
    /// The row-key layout: bucket size and salt buckets. Fixed for the life of the table, as
    /// for an embedded store file; readers and writers must agree on it.
    pub layout: RowKeyLayout,
    /// Rows per `mutateRows` call (default 1 000).
    pub write_batch_rows: usize,
    /// Most rows per `scannerGetList` call (default 1 000; a drill-down asks for fewer when its
    /// page is smaller and doubles up to this).
    pub scan_batch_rows: usize,
    /// Connect, read and write timeout of the Thrift connection (default 30 s).
    pub timeout: Duration,
}

impl Default for HbaseConfig {
    fn default() -> Self {
        HbaseConfig {
            table: "meshmon_raw".to_owned(),
            dead_letter_table: "meshmon_dead_letters".to_owned(),
            layout: RowKeyLayout::default(),
            write_batch_rows: 1_000,
            scan_batch_rows: 1_000,
            timeout: Duration::from_secs(30),
        }
    }
}

impl HbaseConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), HbaseError> {
        if self.table.is_empty() || self.dead_letter_table.is_empty() {
            return Err(HbaseError::Config("table names must not be empty".to_owned()));
        }
        if self.table == self.dead_letter_table {
            return Err(HbaseError::Config("raw and dead-letter tables must differ".to_owned()));
        }
        if self.write_batch_rows == 0 || self.scan_batch_rows == 0 {
            return Err(HbaseError::Config("batch sizes must be at least 1".to_owned()));
        }
        if i32::try_from(self.scan_batch_rows).is_err() {
            return Err(HbaseError::Config(format!("scan_batch_rows too large: {}", self.scan_batch_rows)));
        }
        if self.timeout.is_zero() {
            return Err(HbaseError::Config("timeout must be positive".to_owned()));
        }
        Ok(())
    }
}

/// The row key and the `r:v` value of one raw record: the embedded store's bytes.
pub fn raw_row(layout: &RowKeyLayout, w: &RawWrite) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::with_capacity(64 + w.record.metric.len() + w.record.cluster.len() + w.record.node.len());
    let id = RecordIdRef { agent: &w.id.agent, sequence: w.id.sequence, index: w.id.index };
    layout.encode_key(id, &w.record, &mut key);
    let value = RawRowValue::encode(w.record.value, &w.record.tags, w.raw.as_deref(), w.watermark);
    (key, value)
}

fn put(row: Vec<u8>, column: &[u8], value: Vec<u8>) -> BatchMutation {
    BatchMutation::new(row, vec![Mutation::new(false, column.to_vec(), value, true)])
}

/// The `mutateRows` entry writing one raw record.
pub fn raw_mutation(layout: &RowKeyLayout, w: &RawWrite) -> BatchMutation {
    let (key, value) = raw_row(layout, w);
    put(key, RAW_COLUMN, value)
}

/// The `mutateRows` entry writing one dead letter (row = the embedded store's dead-letter key:
/// arrival, agent, sequence, index).
pub fn dead_letter_mutation(d: &DeadLetter) -> BatchMutation {
    let id = RecordIdRef { agent: &d.id.agent, sequence: d.id.sequence, index: d.id.index };
    put(dead_letter_key(d.arrival, id), DEAD_COLUMN, DeadLetterValue::encode(&d.reason, &d.record, d.raw.as_deref()))
}

/// The column descriptor of a family for `createTable`: one version (a re-written record
/// writes the same bytes), row bloom filter, block cache on, no TTL (retention is the
/// operator's choice: set a TTL on the family in HBase).
pub fn family_descriptor(family: &[u8]) -> ColumnDescriptor {
    let mut name = family.to_vec();
    name.push(b':');
    ColumnDescriptor {
        name: Some(name),
        max_versions: Some(1),
        compression: Some("NONE".to_owned()),
        in_memory: Some(false),
        bloom_filter_type: Some("ROW".to_owned()),
        bloom_filter_vector_size: Some(0),
        bloom_filter_nb_hashes: Some(0),
        block_cache_enabled: Some(true),
        time_to_live: Some(i32::MAX),
    }
}

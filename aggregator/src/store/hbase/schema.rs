//! The HBase table layout of raw records (and dead letters).
//!
//! Role: names the tables, column families and columns, holds [`HbaseConfig`] (where and how
//! the store talks to the Thrift server, with its retry policy), builds the Thrift1 mutations
//! that write one raw record, dead letter or the layout row, and the column descriptors of
//! `createTable`. Pure: touches nothing but the store's key and value encodings, which it
//! reuses unchanged.
//!
//! ```text
//! table meshmon_raw            family r (1 version)   row = RawRowKey bytes   column r:v = RawRowValue v1
//!                                                     row = ff "meshmon.layout"  column r:layout = layout record
//! table meshmon_dead_letters   family d (1 version)   row = dead-letter key   column d:v = DeadLetterValue v1
//! ```
//!
//! The raw row key is exactly the embedded store's (`store/row_key.rs`: salt | metric |
//! bucket | cluster | node | time | agent | sequence | index), so writes spread over
//! `salt_buckets` key ranges (regions) and a drill-down is one key-range scan per salt and
//! bucket. The key alone is the aggregate → raw association: a point names (metric,
//! dimension, window), and its records are the rows of the metric in the window's buckets
//! that pass the dimension filter and the watermark rule (`store/drilldown.rs`); see
//! `docs/HBASE.md`. The layout row's key starts with `0xFF`, which no salt (0..=254) is, so
//! no drill-down scan ever reaches it.

use std::time::Duration;

use hbase_thrift::hbase::{BatchMutation, ColumnDescriptor, Mutation};

use super::error::HbaseError;
use crate::engine::RecordIdRef;
use crate::store::keys::dead_letter_key;
use crate::store::{DeadLetter, DeadLetterValue, RawRowValue, RawWrite, RowKeyLayout};

/// The default column family of raw records.
pub const RAW_FAMILY: &str = "r";
/// The qualifier of a raw record's one column (`<family>:v`): its [`RawRowValue`] encoding.
pub const VALUE_QUALIFIER: &str = "v";
/// The qualifier of the layout record in the layout row (`<family>:layout`).
pub const LAYOUT_QUALIFIER: &str = "layout";
/// The row holding the table's row-key layout (bucket size, salt buckets). `0xFF` is never a
/// salt, so raw-record scans never include it.
pub const LAYOUT_ROW: &[u8] = b"\xffmeshmon.layout";
/// The column family of dead letters.
pub const DEAD_FAMILY: &[u8] = b"d";
/// The one column of a dead letter: its [`DeadLetterValue`] encoding.
pub const DEAD_COLUMN: &[u8] = b"d:v";

/// Where and how the HBase store keeps raw records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaseConfig {
    /// The raw-record table (default `meshmon_raw`; `namespace:table` is allowed).
    pub table: String,
    /// The column family of raw records in `table` (default `r`).
    pub family: String,
    /// The dead-letter table (default `meshmon_dead_letters`; written only by
    /// [`super::HbaseRawStore::write_dead_letters`], not by the running aggregator).
    pub dead_letter_table: String,
    /// The row-key layout: bucket size and salt buckets. Fixed for the life of the table, as
    /// for an embedded store file; recorded in the table's layout row and checked on open.
    pub layout: RowKeyLayout,
    /// Rows per `mutateRows` call (default 1 000).
    pub write_batch_rows: usize,
    /// Most rows per `scannerGetList` call (default 1 000; a drill-down asks for fewer when its
    /// page is smaller and doubles up to this).
    pub scan_batch_rows: usize,
    /// Connections one drill-down scans its salts' key ranges over in parallel (default 4;
    /// the extra ones are dialled on first use).
    pub scan_parallelism: usize,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Read and write timeout of one Thrift call (default 30 s).
    pub timeout: Duration,
    /// How often a write (one `mutateRows` call) is retried after a transient failure —
    /// connection refused or lost, timeout, an `IOError` the server marks retryable — before
    /// the write fails (default 10). Drill-downs retry such failures at most twice.
    pub retries: u32,
    /// The first pause between retries; it doubles up to `retry_backoff_max` (default 100 ms).
    pub retry_backoff: Duration,
    /// The longest pause between retries (default 10 s).
    pub retry_backoff_max: Duration,
    /// The family's time to live when the store creates the table (`None`: keep forever).
    /// HBase counts it from the cell's write time.
    pub ttl: Option<Duration>,
}

impl Default for HbaseConfig {
    fn default() -> Self {
        HbaseConfig {
            table: "meshmon_raw".to_owned(),
            family: RAW_FAMILY.to_owned(),
            dead_letter_table: "meshmon_dead_letters".to_owned(),
            layout: RowKeyLayout::default(),
            write_batch_rows: 1_000,
            scan_batch_rows: 1_000,
            scan_parallelism: 4,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            ttl: None,
        }
    }
}

/// Why `name` is not a usable HBase table name (`[namespace:]qualifier`, letters, digits,
/// `_`, `-`, `.`; the qualifier not starting with `.` or `-`).
fn table_name_problem(name: &str) -> Option<String> {
    let (namespace, qualifier) = match name.split_once(':') {
        Some((ns, q)) => (Some(ns), q),
        None => (None, name),
    };
    let word = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if qualifier.is_empty() || !word(qualifier) || qualifier.starts_with(['.', '-']) {
        return Some(format!(
            "{name:?} is not an HBase table name (letters, digits, '_', '-', '.', optionally namespace:table)"
        ));
    }
    if let Some(ns) = namespace
        && (ns.is_empty() || !ns.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Some(format!("{name:?}: the namespace must be letters, digits and '_'"));
    }
    None
}

impl HbaseConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), HbaseError> {
        let bad = |why: String| Err(HbaseError::Config(why));
        for (what, name) in [("table", &self.table), ("dead_letter_table", &self.dead_letter_table)] {
            if let Some(why) = table_name_problem(name) {
                return bad(format!("{what}: {why}"));
            }
        }
        if self.table == self.dead_letter_table {
            return bad("raw and dead-letter tables must differ".to_owned());
        }
        let family_ok =
            |f: &str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_graphic() && b != b':') && !f.starts_with('.');
        if !family_ok(&self.family) {
            return bad(format!(
                "column family {:?}: must be non-empty printable ASCII without ':' or a leading '.'",
                self.family
            ));
        }
        if self.write_batch_rows == 0 || self.scan_batch_rows == 0 {
            return bad("batch sizes must be at least 1".to_owned());
        }
        if !(1..=64).contains(&self.scan_parallelism) {
            return bad(format!("scan_parallelism must be 1..=64, not {}", self.scan_parallelism));
        }
        if i32::try_from(self.scan_batch_rows).is_err() {
            return bad(format!("scan_batch_rows too large: {}", self.scan_batch_rows));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive".to_owned());
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return bad(format!(
                "retry_backoff ({:?}) must be positive and at most retry_backoff_max ({:?})",
                self.retry_backoff, self.retry_backoff_max
            ));
        }
        if self.ttl.is_some_and(|t| t.as_secs() == 0) {
            return bad("ttl must be at least 1 s".to_owned());
        }
        Ok(())
    }

    /// The column of a raw record's value: `<family>:v`.
    pub fn value_column(&self) -> Vec<u8> {
        format!("{}:{VALUE_QUALIFIER}", self.family).into_bytes()
    }

    /// The column of the layout record: `<family>:layout`.
    pub fn layout_column(&self) -> Vec<u8> {
        format!("{}:{LAYOUT_QUALIFIER}", self.family).into_bytes()
    }
}

/// The row key and the value-column bytes of one raw record: the embedded store's bytes.
pub fn raw_row(layout: &RowKeyLayout, w: &RawWrite) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::with_capacity(64 + w.record.metric.len() + w.record.cluster.len() + w.record.node.len());
    let id = RecordIdRef { agent: &w.id.agent, sequence: w.id.sequence, index: w.id.index };
    layout.encode_key(id, &w.record, &mut key);
    let value = RawRowValue::encode(w.record.value, &w.record.tags, w.raw.as_deref(), w.watermark);
    (key, value)
}

fn put(row: Vec<u8>, column: Vec<u8>, value: Vec<u8>) -> BatchMutation {
    BatchMutation::new(row, vec![Mutation::new(false, column, value, true)])
}

/// The `mutateRows` entry writing one raw record into `column` (`<family>:v`).
pub fn raw_mutation(layout: &RowKeyLayout, column: &[u8], w: &RawWrite) -> BatchMutation {
    let (key, value) = raw_row(layout, w);
    put(key, column.to_vec(), value)
}

/// The `mutateRows` entry writing the layout record into `column` (`<family>:layout`).
pub fn layout_mutation(column: &[u8], layout_record: Vec<u8>) -> BatchMutation {
    put(LAYOUT_ROW.to_vec(), column.to_vec(), layout_record)
}

/// The `mutateRows` entry writing one dead letter (row = the embedded store's dead-letter key:
/// arrival, agent, sequence, index).
pub fn dead_letter_mutation(d: &DeadLetter) -> BatchMutation {
    let id = RecordIdRef { agent: &d.id.agent, sequence: d.id.sequence, index: d.id.index };
    let value = DeadLetterValue::encode(&d.reason, &d.record, d.raw.as_deref());
    put(dead_letter_key(d.arrival, id), DEAD_COLUMN.to_vec(), value)
}

/// The column descriptor of a family for `createTable`: one version (a re-written record
/// writes the same bytes), row bloom filter, block cache on, time to live `ttl` (HBase's
/// "forever", `i32::MAX` seconds, when `None`).
pub fn family_descriptor(family: &[u8], ttl: Option<Duration>) -> ColumnDescriptor {
    let mut name = family.to_vec();
    name.push(b':');
    let ttl = ttl.map_or(i32::MAX, |t| i32::try_from(t.as_secs()).unwrap_or(i32::MAX));
    ColumnDescriptor {
        name: Some(name),
        max_versions: Some(1),
        compression: Some("NONE".to_owned()),
        in_memory: Some(false),
        bloom_filter_type: Some("ROW".to_owned()),
        bloom_filter_vector_size: Some(0),
        bloom_filter_nb_hashes: Some(0),
        block_cache_enabled: Some(true),
        time_to_live: Some(ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(HbaseConfig::default().validate().is_ok());
        let ns = HbaseConfig { table: "monitoring:meshmon_raw".into(), ..HbaseConfig::default() };
        assert!(ns.validate().is_ok());
        let cases = [
            (HbaseConfig { table: String::new(), ..HbaseConfig::default() }, "table"),
            (HbaseConfig { table: "a b".into(), ..HbaseConfig::default() }, "not an HBase table name"),
            (HbaseConfig { table: ":x".into(), ..HbaseConfig::default() }, "namespace"),
            (HbaseConfig { family: "r:v".into(), ..HbaseConfig::default() }, "column family"),
            (HbaseConfig { family: String::new(), ..HbaseConfig::default() }, "column family"),
            (HbaseConfig { write_batch_rows: 0, ..HbaseConfig::default() }, "batch sizes"),
            (HbaseConfig { scan_parallelism: 0, ..HbaseConfig::default() }, "scan_parallelism"),
            (HbaseConfig { timeout: Duration::ZERO, ..HbaseConfig::default() }, "timeouts"),
            (HbaseConfig { retry_backoff: Duration::from_secs(20), ..HbaseConfig::default() }, "retry_backoff_max"),
            (HbaseConfig { ttl: Some(Duration::from_millis(10)), ..HbaseConfig::default() }, "ttl"),
        ];
        for (config, want) in cases {
            let err = config.validate().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{config:?}: {err:?} should mention {want:?}");
        }
    }

    #[test]
    fn columns_and_descriptors_follow_the_family() {
        let c = HbaseConfig { family: "raw".into(), ..HbaseConfig::default() };
        assert_eq!(c.value_column(), b"raw:v");
        assert_eq!(c.layout_column(), b"raw:layout");
        let d = family_descriptor(b"raw", Some(Duration::from_secs(86_400)));
        assert_eq!(d.name.as_deref(), Some(b"raw:".as_slice()));
        assert_eq!(d.time_to_live, Some(86_400));
        assert_eq!(family_descriptor(b"r", None).time_to_live, Some(i32::MAX));
        assert_eq!(family_descriptor(b"r", Some(Duration::from_secs(u64::MAX))).time_to_live, Some(i32::MAX));
    }
}

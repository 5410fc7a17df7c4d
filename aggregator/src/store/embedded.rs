//! `EmbeddedStore`: the aggregator's single-file store on redb.
//!
//! Role: the synchronous facade over one redb database file holding aggregate points, raw
//! records, dead letters and the listings (metrics, dimension values). It opens the file and
//! checks its row-key layout, applies a [`WriteBatch`] in one write transaction (`write.rs`),
//! answers listings, point queries, drill-downs (`drilldown.rs`) and dead-letter reads in read
//! transactions, and enforces retention (`retention.rs`). Safe to share between threads: redb
//! serialises writers and gives readers snapshots. Touches only its database file.
//!
//! **Durability.** Every `write` and `enforce_retention` commits with redb's default
//! `Durability::Immediate`: when the call returns, the transaction is fsynced to disk and
//! survives a crash or power loss; a crash mid-commit leaves the previous commit intact.
//! Batching many items per `write` is what amortises the fsync.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::batch::{DeadLetter, WriteBatch};
use super::codec::{DeadLetterValue, StoredPoint, decode_point};
use super::config::StoreConfig;
use super::drilldown::{DrillDown, RawPage};
use super::error::{StoreError, corrupt_key, corrupt_value};
use super::keybytes::{KeyReader, prefix_end};
use super::keys::{
    dead_letter_bound, decode_dead_letter_key, decode_dimension_key, decode_node_cluster_key, dimension_key,
    node_cluster_key, point_key, series_prefix,
};
use super::retention::RetentionReport;
use super::row_key::RowKeyLayout;
use super::tables::{
    AGGREGATES, AGGREGATES_BY_START, DEAD_LETTERS, DIMENSIONS, META, META_LAYOUT, METRICS, NODE_CLUSTERS, RAW,
};
use crate::engine::{Dimension, Nanos, RecordId, WindowSpec};

/// Entry counts of the main tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Aggregate points.
    pub aggregate_points: u64,
    /// Raw rows.
    pub raw_rows: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// The embedded store. See the module documentation.
#[derive(Debug)]
pub struct EmbeddedStore {
    db: Database,
    config: StoreConfig,
    layout: RowKeyLayout,
}

/// Format version of the stored layout record.
const LAYOUT_V1: u8 = 1;

/// The layout record: format version, salt buckets, bucket size (big-endian ns). The HBase
/// store keeps the same bytes in its layout row.
pub(crate) fn encode_layout(layout: &RowKeyLayout) -> Vec<u8> {
    let mut out = vec![LAYOUT_V1, layout.salt_buckets()];
    out.extend_from_slice(&layout.bucket_size().to_be_bytes());
    out
}

/// A layout record in words, for errors.
pub(crate) fn describe_layout(bytes: &[u8]) -> String {
    match bytes {
        [LAYOUT_V1, salts, size @ ..] if size.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(size);
            format!("bucket_size={}ns salt_buckets={salts}", i64::from_be_bytes(b))
        }
        other => format!("an unknown layout record {other:02x?}"),
    }
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating it if missing. A file created with another
    /// bucket size or salt count is refused ([`StoreError::LayoutMismatch`]).
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<EmbeddedStore, StoreError> {
        let layout = config.layout()?;
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(AGGREGATES)?;
            txn.open_table(AGGREGATES_BY_START)?;
            txn.open_table(RAW)?;
            txn.open_table(DEAD_LETTERS)?;
            txn.open_table(METRICS)?;
            txn.open_table(DIMENSIONS)?;
            txn.open_table(NODE_CLUSTERS)?;
            let mut meta = txn.open_table(META)?;
            let want = encode_layout(&layout);
            let stored = meta.get(META_LAYOUT)?.map(|g| g.value().to_vec());
            match stored {
                None => {
                    meta.insert(META_LAYOUT, want.as_slice())?;
                }
                Some(s) if s == want => {}
                Some(s) => {
                    return Err(StoreError::LayoutMismatch {
                        stored: describe_layout(&s),
                        configured: describe_layout(&want),
                    });
                }
            }
        }
        txn.commit()?;
        Ok(EmbeddedStore { db, config, layout })
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The raw-row key layout.
    pub fn layout(&self) -> &RowKeyLayout {
        &self.layout
    }

    /// Applies `batch` in one durable transaction: aggregate changes in order, raw rows, dead
    /// letters. All or nothing.
    pub fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        super::write::apply(&txn, &self.layout, batch, super::write::RawRows::Store)?;
        txn.commit()?;
        Ok(())
    }

    /// Like [`write`](Self::write), for a pipeline whose raw records are kept in another store
    /// (HBase): aggregate changes and dead letters are written, the raw rows only listed
    /// (their metrics, and the clusters of their nodes), not stored. All or nothing.
    pub fn write_raw_elsewhere(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        super::write::apply(&txn, &self.layout, batch, super::write::RawRows::ListOnly)?;
        txn.commit()?;
        Ok(())
    }

    /// Every metric with stored points or raw rows, sorted.
    pub fn list_metrics(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(METRICS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            out.push(item?.0.value().to_owned());
        }
        Ok(out)
    }

    /// The dimension values with stored points for `metric` (e.g. for drop-downs), in key order:
    /// fleet, clusters, nodes, tags, sets.
    pub fn list_dimensions(&self, metric: &str) -> Result<Vec<Dimension>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DIMENSIONS)?;
        let prefix = dimension_key(metric, None);
        let mut out = Vec::new();
        let range = match prefix_end(&prefix) {
            Some(end) => table.range::<&[u8]>(prefix.as_slice()..end.as_slice())?,
            None => table.range::<&[u8]>(prefix.as_slice()..)?,
        };
        for item in range {
            let (k, _) = item?;
            out.push(decode_dimension_key(k.value()).map_err(corrupt_key("dimensions"))?.1);
        }
        Ok(out)
    }

    /// The stored points of one series under `window_spec` whose window starts in `[from, to)`,
    /// ascending by window start.
    pub fn query_points(
        &self,
        metric: &str,
        dimension: &Dimension,
        window_spec: &WindowSpec,
        from: Nanos,
        to: Nanos,
    ) -> Result<Vec<StoredPoint>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let prefix = series_prefix(metric, dimension, window_spec);
        let (lo, hi) = (point_key(&prefix, from), point_key(&prefix, to));
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AGGREGATES)?;
        let mut out = Vec::new();
        for item in table.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (k, v) = item?;
            let tail = k.value().get(prefix.len()..).unwrap_or_default();
            let start = KeyReader::new(tail).i64("window start").map_err(corrupt_key("aggregates"))?;
            out.push(decode_point(start, v.value()).map_err(corrupt_value("aggregates"))?);
        }
        Ok(out)
    }

    /// One page (at most `page_size` records, at most [`super::MAX_PAGE_SIZE`]) of exactly the
    /// raw records behind an aggregate point; pass the previous page's `next_page_token` to
    /// continue. See `drilldown.rs` for the rule.
    pub fn drill_down(
        &self,
        query: &DrillDown,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<RawPage, StoreError> {
        let txn = self.db.begin_read()?;
        super::drilldown::drill_down(&txn, &self.layout, query, page_size, page_token)
    }

    /// Every cluster `node` ever reported `metric` under (the `node_clusters` listing, written
    /// with raw rows — also when they are kept in HBase), sorted.
    pub fn node_clusters(&self, metric: &str, node: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(NODE_CLUSTERS)?;
        let prefix = node_cluster_key(metric, node, None);
        let range = match prefix_end(&prefix) {
            Some(end) => table.range::<&[u8]>(prefix.as_slice()..end.as_slice())?,
            None => table.range::<&[u8]>(prefix.as_slice()..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (k, _) = item?;
            out.push(decode_node_cluster_key(k.value()).map_err(corrupt_key("node_clusters"))?);
        }
        Ok(out)
    }

    /// Dead letters that arrived in `[from, to)`, oldest first, at most `limit`.
    pub fn dead_letters(&self, from: Nanos, to: Nanos, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let (lo, hi) = (dead_letter_bound(from), dead_letter_bound(to));
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for item in table.range::<&[u8]>(lo.as_slice()..hi.as_slice())?.take(limit) {
            let (k, v) = item?;
            let (arrival, agent, sequence, index) =
                decode_dead_letter_key(k.value()).map_err(corrupt_key("dead_letters"))?;
            let value = DeadLetterValue::decode(v.value()).map_err(corrupt_value("dead_letters"))?;
            out.push(DeadLetter {
                arrival,
                id: RecordId { agent: agent.into(), sequence, index },
                reason: value.reason,
                record: value.record,
                raw: value.raw,
            });
        }
        Ok(out)
    }

    /// Entry counts of the main tables.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(StoreCounts {
            aggregate_points: txn.open_table(AGGREGATES)?.len()?,
            raw_rows: txn.open_table(RAW)?.len()?,
            dead_letters: txn.open_table(DEAD_LETTERS)?.len()?,
        })
    }

    /// Deletes raw rows, aggregate points and dead letters older than the retention, as of
    /// processing time `now`, in one durable transaction. See `retention.rs` for the rule.
    pub fn enforce_retention(&self, now: Nanos) -> Result<RetentionReport, StoreError> {
        let cutoff = now.saturating_sub(self.config.retention);
        let txn = self.db.begin_write()?;
        let report = super::retention::enforce(&txn, &self.layout, cutoff)?;
        txn.commit()?;
        Ok(report)
    }
}

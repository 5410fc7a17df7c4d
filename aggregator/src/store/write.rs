//! Applying one [`WriteBatch`] inside a redb write transaction.
//!
//! Role: the body of `EmbeddedStore::write` — aggregate changes in order (an upsert overwrites
//! the point and its retention-index entry, a retraction deletes both), raw rows under their
//! [`RawRowKey`](super::row_key::RawRowKey) (re-writing a record writes identical bytes under
//! the same key), dead letters, and the listing tables (metrics, dimension values with the
//! latest window start, clusters per node), each distinct listing entry touched once per
//! batch. When raw rows are kept in another store (HBase), only their listing entries are
//! written ([`RawRows::ListOnly`]). Touches only the tables of `tables.rs` through the
//! transaction it is given.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, WriteTransaction};

use super::batch::{AggregateChange, WriteBatch};
use super::codec::{DeadLetterValue, RawRowValue, encode_point};
use super::error::StoreError;
use super::keys::{dead_letter_key, dimension_key, node_cluster_key, point_index_key, point_key, series_prefix};
use super::row_key::RowKeyLayout;
use super::tables::{AGGREGATES, AGGREGATES_BY_START, DEAD_LETTERS, DIMENSIONS, METRICS, NODE_CLUSTERS, RAW};
use crate::engine::{Nanos, RecordId, RecordIdRef};

/// Listing entries a batch touches, gathered so each is written once.
#[derive(Debug, Default)]
struct Listings<'b> {
    metrics: BTreeSet<&'b str>,
    dimensions: BTreeMap<Vec<u8>, Nanos>,
    /// (metric, node, cluster)
    node_clusters: BTreeSet<(&'b str, &'b str, &'b str)>,
}

fn id_ref(id: &RecordId) -> RecordIdRef<'_> {
    RecordIdRef { agent: &id.agent, sequence: id.sequence, index: id.index }
}

/// What to do with a batch's raw rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawRows {
    /// Store them in the `raw` table (and list them).
    Store,
    /// Another store keeps them: only list their metrics and node clusters.
    ListOnly,
}

/// Writes every item of `batch` in `txn` (not committed here).
pub(crate) fn apply(
    txn: &WriteTransaction,
    layout: &RowKeyLayout,
    batch: &WriteBatch,
    raw_rows: RawRows,
) -> Result<(), StoreError> {
    let mut listings = Listings::default();
    apply_aggregates(txn, batch, &mut listings)?;
    if raw_rows == RawRows::Store && !batch.raw.is_empty() {
        let mut raw = txn.open_table(RAW)?;
        let mut key = Vec::with_capacity(128);
        for w in &batch.raw {
            key.clear();
            layout.encode_key(id_ref(&w.id), &w.record, &mut key);
            let value = RawRowValue::encode(w.record.value, &w.record.tags, w.raw.as_deref(), w.watermark);
            raw.insert(key.as_slice(), value.as_slice())?;
        }
    }
    for w in &batch.raw {
        listings.metrics.insert(&w.record.metric);
        listings.node_clusters.insert((&w.record.metric, &w.record.node, &w.record.cluster));
    }
    {
        let mut dead = txn.open_table(DEAD_LETTERS)?;
        for d in &batch.dead_letters {
            let value = DeadLetterValue::encode(&d.reason, &d.record, d.raw.as_deref());
            dead.insert(dead_letter_key(d.arrival, id_ref(&d.id)).as_slice(), value.as_slice())?;
        }
    }
    write_listings(txn, &listings)
}

fn apply_aggregates<'b>(
    txn: &WriteTransaction,
    batch: &'b WriteBatch,
    listings: &mut Listings<'b>,
) -> Result<(), StoreError> {
    if batch.aggregates.is_empty() {
        return Ok(());
    }
    let mut points = txn.open_table(AGGREGATES)?;
    let mut index = txn.open_table(AGGREGATES_BY_START)?;
    for change in &batch.aggregates {
        match change {
            AggregateChange::Upsert { series, window_spec, window, stats, revision } => {
                let key = point_key(&series_prefix(&series.metric, &series.dimension, window_spec), window.start);
                points.insert(key.as_slice(), encode_point(window.end, stats, *revision).as_slice())?;
                index.insert(point_index_key(window.start, &key).as_slice(), ())?;
                listings.metrics.insert(&series.metric);
                let latest = listings.dimensions.entry(dimension_key(&series.metric, Some(&series.dimension)));
                let latest = latest.or_insert(window.start);
                *latest = (*latest).max(window.start);
            }
            AggregateChange::Retract { series, window_spec, window_start } => {
                let key = point_key(&series_prefix(&series.metric, &series.dimension, window_spec), *window_start);
                points.remove(key.as_slice())?;
                index.remove(point_index_key(*window_start, &key).as_slice())?;
            }
        }
    }
    Ok(())
}

fn write_listings(txn: &WriteTransaction, listings: &Listings<'_>) -> Result<(), StoreError> {
    if !listings.metrics.is_empty() {
        let mut metrics = txn.open_table(METRICS)?;
        for &m in &listings.metrics {
            if metrics.get(m)?.is_none() {
                metrics.insert(m, ())?;
            }
        }
    }
    if !listings.dimensions.is_empty() {
        let mut dims = txn.open_table(DIMENSIONS)?;
        for (key, &start) in &listings.dimensions {
            let stored = dims.get(key.as_slice())?.map(|g| g.value());
            if stored.is_none_or(|s| s < start) {
                dims.insert(key.as_slice(), start)?;
            }
        }
    }
    if !listings.node_clusters.is_empty() {
        let mut node_clusters = txn.open_table(NODE_CLUSTERS)?;
        for &(metric, node, cluster) in &listings.node_clusters {
            let key = node_cluster_key(metric, node, Some(cluster));
            if node_clusters.get(key.as_slice())?.is_none() {
                node_clusters.insert(key.as_slice(), ())?;
            }
        }
    }
    Ok(())
}

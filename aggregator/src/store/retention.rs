//! Retention: deleting what is older than the configured retention.
//!
//! Role: the body of `EmbeddedStore::enforce_retention`, run in one write transaction with
//! `cutoff = now − retention`:
//! - raw rows whose whole bucket lies before the cutoff (`bucket + bucket_size ≤ cutoff`), per
//!   metric and salt as one key range each;
//! - aggregate points whose window starts before the cutoff, found through the
//!   `aggregates_by_start` index;
//! - dead letters that arrived before the cutoff;
//! - dimension values whose latest stored window starts before the cutoff.
//!
//! A point that survives (window start ≥ cutoff) only holds records with event time ≥ cutoff,
//! whose buckets end after the cutoff and so survive too: drill-down stays exact for every
//! stored point. Touches only the tables of `tables.rs` through the transaction it is given.

use redb::{ReadableTable, WriteTransaction};

use super::error::{StoreError, corrupt_key};
use super::keybytes::put_i64;
use super::keys::{dead_letter_bound, split_point_index_key};
use super::row_key::RowKeyLayout;
use super::tables::{AGGREGATES, AGGREGATES_BY_START, DEAD_LETTERS, DIMENSIONS, METRICS, RAW};
use crate::engine::Nanos;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Everything older than this was considered (`now − retention`).
    pub cutoff: Nanos,
    /// Raw rows deleted.
    pub raw_rows: u64,
    /// Aggregate points deleted.
    pub aggregate_points: u64,
    /// Dead letters deleted.
    pub dead_letters: u64,
    /// Dimension values no longer listed.
    pub dimensions: u64,
}

/// Deletes everything older than `cutoff` in `txn` (not committed here).
pub(crate) fn enforce(
    txn: &WriteTransaction,
    layout: &RowKeyLayout,
    cutoff: Nanos,
) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport { cutoff, ..RetentionReport::default() };
    let metrics: Vec<String> = {
        let table = txn.open_table(METRICS)?;
        let mut names = Vec::new();
        for item in table.iter()? {
            names.push(item?.0.value().to_owned());
        }
        names
    };
    {
        // Buckets strictly before the cutoff's bucket end at or before the cutoff.
        let keep_from = layout.bucket(cutoff);
        let mut raw = txn.open_table(RAW)?;
        for metric in &metrics {
            for salt in 0..layout.salt_buckets() {
                let start = layout.bucket_prefix(salt, metric, Nanos::MIN);
                let end = layout.bucket_prefix(salt, metric, keep_from);
                if start >= end {
                    continue;
                }
                raw.retain_in::<&[u8], _>(start.as_slice()..end.as_slice(), |_, _| {
                    report.raw_rows += 1;
                    false
                })?;
            }
        }
    }
    {
        let mut bound = Vec::with_capacity(8);
        put_i64(&mut bound, cutoff);
        let mut index = txn.open_table(AGGREGATES_BY_START)?;
        let mut expired: Vec<Vec<u8>> = Vec::new();
        index.retain_in::<&[u8], _>(..bound.as_slice(), |k, ()| {
            expired.push(k.to_vec());
            false
        })?;
        let mut points = txn.open_table(AGGREGATES)?;
        for k in &expired {
            let (_, point_key) = split_point_index_key(k).map_err(corrupt_key("aggregates_by_start"))?;
            if points.remove(point_key)?.is_some() {
                report.aggregate_points += 1;
            }
        }
    }
    {
        let bound = dead_letter_bound(cutoff);
        let mut dead = txn.open_table(DEAD_LETTERS)?;
        dead.retain_in::<&[u8], _>(..bound.as_slice(), |_, _| {
            report.dead_letters += 1;
            false
        })?;
    }
    {
        let mut dims = txn.open_table(DIMENSIONS)?;
        dims.retain(|_, latest| {
            let keep = latest >= cutoff;
            report.dimensions += u64::from(!keep);
            keep
        })?;
    }
    Ok(report)
}

//! The redb tables of the embedded store.
//!
//! Role: one definition per table, with the meaning of its keys and values; the key encodings
//! live in `row_key.rs` and `keys.rs`, the value encodings in `codec.rs`. Touches nothing else.

use redb::TableDefinition;

/// Aggregate points: `keys::point_key` → `codec::encode_point`.
pub const AGGREGATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("aggregates");
/// Retention index of points: `keys::point_index_key` → nothing.
pub const AGGREGATES_BY_START: TableDefinition<&[u8], ()> = TableDefinition::new("aggregates_by_start");
/// Raw rows: `RawRowKey::encode` → `RawRowValue::encode`.
pub const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
/// Dead letters (invalid and late-dropped records): `keys::dead_letter_key` → `DeadLetterValue::encode`.
pub const DEAD_LETTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dead_letters");
/// Metrics that have raw rows or points: name → nothing. Never expired (few, and raw-row
/// retention walks them).
pub const METRICS: TableDefinition<&str, ()> = TableDefinition::new("metrics");
/// Dimension values seen per metric: `keys::dimension_key` → latest window start stored.
pub const DIMENSIONS: TableDefinition<&[u8], i64> = TableDefinition::new("dimensions");
/// Clusters seen per (metric, node): `keys::node_cluster_key` → nothing.
pub const NODE_CLUSTERS: TableDefinition<&[u8], ()> = TableDefinition::new("node_clusters");
/// Store metadata: name → bytes (`layout`: the row-key layout the file was created with).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The meta key of the row-key layout.
pub const META_LAYOUT: &str = "layout";

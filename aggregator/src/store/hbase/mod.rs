//! The HBase raw-record store, spoken to over HBase's Thrift1 API (`hbase-thrift`).
//!
//! Role: keeps the raw records behind the aggregates in an HBase table under exactly the
//! embedded store's row key ([`crate::store::RawRowKey`]: salted, order-preserving) and
//! serves the same drill-down pages as [`crate::store::EmbeddedStore::drill_down`] —
//! same filter, same order, same page tokens. [`schema`] is the table layout and
//! [`HbaseConfig`], [`HbaseRawStore`] the synchronous Thrift1 client (binary protocol,
//! buffered transport: the HBase Thrift server's defaults; retries with backoff),
//! [`HbaseActor`] wraps it for an actix `SyncArbiter`, [`HbaseRaw`] is the pair of connection
//! pools the running aggregator writes and drills down through (selected by
//! `store.kind = "hbase"`), [`HbaseMetrics`] its self-metrics on `/metrics`. Touches only the
//! network connections to the Thrift server; the filtering and page tokens come from
//! `store/drilldown.rs`. The layout and its reasoning are in `docs/HBASE.md`.
//!
//! Tested against a Thrift1 server built from the crate's generated `HbaseSyncProcessor` over
//! an in-memory sorted map (`tests/src/hbase_thrift.rs`, used by
//! `aggregator/tests/hbase_protocol.rs` and `tests/tests/hbase_e2e.rs`): a **protocol test**
//! of our use of the Thrift1 API, not a test against HBase.

mod actor;
mod client;
mod error;
mod handle;
mod metrics;
pub mod schema;
mod wire;

pub use actor::{DrillDownQuery, HbaseActor, WriteRaw, WriteRawRange};
pub use client::{HbaseRawStore, TableReport};
pub use error::HbaseError;
pub use handle::{HbaseRaw, HbaseSetup};
pub use metrics::HbaseMetrics;
pub use schema::HbaseConfig;

//! The HBase raw-record store, spoken to over HBase's Thrift1 API (`hbase-thrift`).
//!
//! Role: keeps the raw records behind the aggregates in an HBase table under exactly the
//! embedded store's row key ([`crate::store::RawRowKey`]: salted, order-preserving) and
//! serves the same drill-down pages as [`crate::store::EmbeddedStore::drill_down`] —
//! same filter, same order, same page tokens. [`schema`] is the table layout,
//! [`HbaseRawStore`] the synchronous Thrift1 client (binary protocol, buffered transport:
//! the HBase Thrift server's defaults), [`HbaseActor`] wraps it for an actix `SyncArbiter`.
//! Touches only the network connection to the Thrift server; the filtering and page tokens
//! come from `store/drilldown.rs`. The layout and its reasoning are in `docs/HBASE.md`.
//!
//! Tested against a Thrift1 server built in `aggregator/tests/hbase_protocol.rs` from the
//! crate's generated `HbaseSyncProcessor` over an in-memory sorted map: a **protocol test**
//! of our use of the Thrift1 API, not a test against HBase.

mod actor;
mod client;
mod error;
pub mod schema;

pub use actor::{DrillDownQuery, HbaseActor, WriteRaw};
pub use client::HbaseRawStore;
pub use error::HbaseError;
pub use schema::HbaseConfig;

//! The aggregator's stores: the embedded single-file store and the shared raw-row key.
//!
//! Role: [`EmbeddedStore`] keeps aggregate points (corrections overwrite, retractions delete),
//! the raw records behind them for exact drill-down, dead letters and listings in one redb file;
//! [`RawRowKey`] is the one raw-record row-key design the embedded store and the HBase store
//! (`hbase/`) share; [`RawStore`] is whichever of the two keeps raw records (`store.kind`).
//! [`WriteBatchSink`] turns engine output into [`WriteBatch`]es. Layouts, exactness of
//! drill-down, retention and durability are described in `docs/STORAGE.md` and
//! `docs/HBASE.md`. Touches the engine only through its public output types.

mod batch;
mod codec;
mod config;
mod drilldown;
mod embedded;
mod error;
pub mod hbase;
pub mod keybytes;
pub mod keys;
mod raw;
mod retention;
pub mod row_key;
mod sink;
mod tables;
pub mod wire;
mod write;

pub use batch::{AggregateChange, DeadLetter, RawWrite, WriteBatch};
pub use codec::{DeadLetterValue, RawRecordView, RawRowValue, StoredPoint, decode_point, encode_point};
pub use config::StoreConfig;
pub use drilldown::{DrillDown, MAX_PAGE_SIZE, RawPage};
pub use embedded::{EmbeddedStore, StoreCounts};
pub use error::StoreError;
pub use keybytes::KeyError;
pub use raw::RawStore;
pub use retention::RetentionReport;
pub use row_key::{LayoutError, RawRowKey, RowKeyLayout};
pub use sink::WriteBatchSink;
pub use wire::CodecError;

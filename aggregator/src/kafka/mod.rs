//! Kafka mode: agents produce `RecordBatch`es to a topic; the aggregator consumes it with
//! exactly-once results.
//!
//! Role: `config.rs` (the `[kafka]` and `[checkpoint]` sections), `source.rs` (consumer thread
//! feeding the router, checkpoints), `merge.rs` (per-partition buffers in event-time order,
//! pause/resume), `context.rs` (rebalance and statistics callbacks), `output.rs` (aggregate
//! updates and dead letters to Kafka), `aggregate_update.rs` (their encoding), `metrics.rs`
//! (self-monitoring), `replay.rs` (rebuild a time range from the log). Exactly-once comes from
//! checkpointed offsets + a deterministic engine + keyed (idempotent) writes, not from broker
//! transactions (docs/KAFKA.md).

pub mod aggregate_update;
pub mod config;
pub mod context;
pub mod merge;
pub mod metrics;
pub mod output;
pub mod replay;
pub mod source;

pub use config::{CheckpointSection, KafkaSection, StartFrom};
pub use metrics::KafkaMetrics;
pub use output::{OutputError, OutputProducer};
pub use source::{SourceError, SourceHandle, SourceOptions};

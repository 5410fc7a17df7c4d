//! Sources: where records come from besides the gRPC ingest (files today; Kafka later).
//!
//! Role: each source turns its input into engine batches. Touches only its own input.

pub mod jsonl;

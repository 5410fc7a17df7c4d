//! The messages that travel the actor graph: batches, watermarks, ticks and store writes.
//!
//! Role: plain data with their actix `Message` impls. Batches are shared (`Arc`) between the
//! router and the shards, so a record is never copied on its way. Touches nothing else.

use std::sync::Arc;

use actix::Message;

use crate::checkpoint::{CheckpointError, CheckpointMeta, PartitionOffset};
use crate::engine::Nanos;
use crate::engine::snapshot::{GateSnapshot, ShardSnapshot, SnapshotError};
use crate::kafka::OutputError;
use crate::store::{StoreError, WriteBatch};
use crate::wire::DecodedBatch;

/// A decoded batch arriving at the router from `input` (an agent connection or a partition).
#[derive(Debug)]
pub struct IngestBatch {
    /// The input it arrived on (its watermark is tracked separately).
    pub input: String,
    /// The batch.
    pub batch: Arc<DecodedBatch>,
    /// Processing time of its arrival.
    pub now: Nanos,
}

/// What the router decided about a batch (becomes the agent's `BatchAck`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Already delivered: skipped whole.
    pub duplicate: bool,
    /// Records handed to the shards.
    pub admitted: u32,
    /// Records refused as invalid.
    pub invalid: u32,
}

/// The pipeline could not take a batch (an actor stopped, or the store failed).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A downstream actor is gone (shutting down).
    #[error("pipeline stopping: {0}")]
    Stopped(#[from] actix::MailboxError),
    /// The store refused a write.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Kafka output was not delivered.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The engine state could not be encoded.
    #[error("engine snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// InfluxDB did not take what was queued before a checkpoint (stopping while it is down).
    #[error(transparent)]
    Influx(#[from] crate::sinks::influxdb::InfluxError),
}

impl Message for IngestBatch {
    type Result = Result<IngestOutcome, PipelineError>;
}

/// Records `indices` of `batch` for one shard.
#[derive(Debug)]
pub struct ShardBatch {
    /// The whole batch (shared).
    pub batch: Arc<DecodedBatch>,
    /// Indices of the admitted records this shard owns, ascending.
    pub indices: Vec<u32>,
    /// Processing time of the batch's arrival.
    pub now: Nanos,
}

impl Message for ShardBatch {
    type Result = ();
}

/// The new global watermark, sent to every shard after each batch and tick.
#[derive(Debug, Clone, Copy)]
pub struct Advance {
    /// The watermark.
    pub watermark: Nanos,
    /// Processing time.
    pub now: Nanos,
    /// Write everything collected to the store now (shutdown).
    pub flush: bool,
}

impl Message for Advance {
    type Result = Result<(), PipelineError>;
}

/// Processing time passes with no data (idle inputs may release the watermark).
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Processing time.
    pub now: Nanos,
}

impl Message for Tick {
    type Result = Result<(), PipelineError>;
}

/// Write everything every shard collected to the store, then answer (graceful shutdown).
#[derive(Debug, Clone, Copy)]
pub struct Flush;

impl Message for Flush {
    type Result = Result<(), PipelineError>;
}

/// Apply one store transaction.
#[derive(Debug)]
pub struct Persist(pub WriteBatch);

impl Message for Persist {
    type Result = Result<(), PipelineError>;
}

/// Take a checkpoint after everything sent before it (router → shards → store → file).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The input topic.
    pub topic: String,
    /// Next offset per partition: exactly the messages before these were sent to the router.
    pub offsets: Vec<PartitionOffset>,
    /// Wall-clock time (stamped into the checkpoint).
    pub now: Nanos,
}

/// What a written checkpoint cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Its id.
    pub id: u64,
    /// Bytes written.
    pub bytes: usize,
    /// The watermark at the cut.
    pub watermark: Nanos,
}

impl Message for Checkpoint {
    type Result = Result<CheckpointReport, PipelineError>;
}

/// A shard writes what it collected to the store and returns its state.
#[derive(Debug, Clone, Copy)]
pub struct TakeSnapshot;

impl Message for TakeSnapshot {
    type Result = Result<ShardSnapshot, PipelineError>;
}

/// The store actor makes outputs durable (flushes Kafka output) and saves the checkpoint.
#[derive(Debug)]
pub struct CommitCheckpoint {
    /// Offsets and bookkeeping (the id is assigned by the store actor).
    pub meta: CheckpointMeta,
    /// The gate's state.
    pub gate: GateSnapshot,
    /// Every shard's state.
    pub shards: Vec<ShardSnapshot>,
}

impl Message for CommitCheckpoint {
    type Result = Result<CheckpointReport, PipelineError>;
}

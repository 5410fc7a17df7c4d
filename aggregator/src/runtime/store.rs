//! `StoreActor`: applies store transactions on its own thread.
//!
//! Role: the only writer of the embedded store. Runs on a dedicated arbiter, so blocking redb
//! commits never stall the shards' threads; shards await each `Persist`, which is how a slow
//! store slows ingest down instead of losing data. Also enforces retention periodically.
//! After each store write it hands the aggregate changes to the Kafka output producer and the
//! InfluxDB writer (when configured); a checkpoint waits until both have written everything.
//! Touches the store and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};

use super::clock::now_nanos;
use super::messages::{CheckpointReport, CommitCheckpoint, Persist, PipelineError};
use super::metrics::RuntimeMetrics;
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::engine::snapshot::{EngineSnapshot, SNAPSHOT_VERSION};
use crate::kafka::OutputProducer;
use crate::sinks::influxdb::InfluxWriter;
use crate::store::EmbeddedStore;

/// How long a checkpoint waits for Kafka output deliveries.
const OUTPUT_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the store actor also writes, in Kafka mode.
#[derive(Debug, Default)]
pub struct DurableOutputs {
    /// Aggregate updates go to the output topic after each store write.
    pub producer: Option<Arc<OutputProducer>>,
    /// Checkpoints are saved here.
    pub checkpoints: Option<CheckpointStore>,
    /// The id of the last checkpoint saved (restored from the file on start).
    pub last_checkpoint_id: u64,
    /// Aggregate changes are also written to InfluxDB (any mode); checkpoints wait for it.
    pub influxdb: Option<Arc<InfluxWriter>>,
}

/// Writes to the embedded store.
#[derive(Debug)]
pub struct StoreActor {
    store: Arc<EmbeddedStore>,
    metrics: Arc<RuntimeMetrics>,
    retention_every: Duration,
    outputs: DurableOutputs,
}

impl StoreActor {
    /// An actor writing to `store` (and `outputs`), enforcing retention every `retention_every`.
    pub fn new(
        store: Arc<EmbeddedStore>,
        metrics: Arc<RuntimeMetrics>,
        retention_every: Duration,
        outputs: DurableOutputs,
    ) -> StoreActor {
        StoreActor { store, metrics, retention_every, outputs }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(self.retention_every, |actor, _| match actor.store.enforce_retention(now_nanos()) {
            Ok(report) => tracing::debug!(?report, "retention enforced"),
            Err(e) => tracing::error!(error = %e, "retention failed"),
        });
    }
}

impl Handler<Persist> for StoreActor {
    type Result = Result<(), PipelineError>;

    fn handle(&mut self, Persist(batch): Persist, _: &mut Context<Self>) -> Self::Result {
        self.metrics.store_mailbox.fetch_sub(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.store.write(&batch);
        self.metrics.record_store_write(batch.len(), started.elapsed().as_secs_f64(), result.is_ok());
        if let Err(e) = &result {
            tracing::error!(error = %e, items = batch.len(), "store write failed");
        }
        result?;
        if let Some(producer) = &self.outputs.producer {
            producer.send_aggregates(&batch.aggregates)?;
        }
        if let Some(influxdb) = &self.outputs.influxdb {
            // Blocks while the writer's queue is full: a slow InfluxDB slows ingest down.
            influxdb.send_aggregates(&batch.aggregates);
        }
        Ok(())
    }
}

impl Handler<CommitCheckpoint> for StoreActor {
    type Result = Result<CheckpointReport, PipelineError>;

    /// Every store write before this message is committed (this actor applies them in order);
    /// Kafka output is flushed until the broker acknowledged all of it; then the checkpoint is
    /// saved in one transaction.
    fn handle(&mut self, msg: CommitCheckpoint, _: &mut Context<Self>) -> Self::Result {
        self.metrics.store_mailbox.fetch_sub(1, Ordering::Relaxed);
        if let Some(producer) = &self.outputs.producer {
            producer.flush(OUTPUT_FLUSH_TIMEOUT)?;
        }
        if let Some(influxdb) = &self.outputs.influxdb {
            // Everything queued so far reaches InfluxDB before the offsets move on: a crash
            // replays from the previous checkpoint and rewrites identical points. Waits as long
            // as InfluxDB is away (the writer retries; the source stalls meanwhile).
            let _ = influxdb.flush(None);
        }
        let mut meta = msg.meta;
        meta.id = self.outputs.last_checkpoint_id + 1;
        let snapshot = EngineSnapshot { version: SNAPSHOT_VERSION, gate: msg.gate, shards: msg.shards };
        let checkpoint = Checkpoint { engine: snapshot.encode(), meta };
        let bytes = match &self.outputs.checkpoints {
            Some(store) => store.save(&checkpoint)?,
            None => checkpoint.engine.len(),
        };
        self.outputs.last_checkpoint_id = checkpoint.meta.id;
        Ok(CheckpointReport { id: checkpoint.meta.id, bytes, watermark: checkpoint.meta.watermark })
    }
}

//! `StoreActor`: applies store transactions on its own thread.
//!
//! Role: the only writer of the embedded store. Runs on a dedicated arbiter, so blocking redb
//! commits never stall the shards' threads; shards await each `Persist`, which is how a slow
//! store slows ingest down instead of losing data. Also enforces retention periodically.
//! After each store write it hands the aggregate changes to the Kafka output producer and the
//! InfluxDB writer (when configured); a checkpoint waits until both have written everything.
//!
//! With the HBase raw store (`store.kind = "hbase"`, [`StoreActor::with_hbase`]) a `Persist`
//! first writes its raw rows to HBase (in parallel over the writer connections, each call
//! retried after transient failures) and awaits the server's acknowledgement of every row;
//! only then does it commit the aggregates, dead letters and listings to the embedded store
//! (so a point that can be read has its raw records readable) and hand aggregates on. The
//! handler is atomic: the next message — another `Persist` or a `CommitCheckpoint` — is taken
//! only after that, so a checkpoint never covers raw rows HBase has not acknowledged. A write
//! that fails for good raises the pipeline's [`Failure`] (`serve` stops, fail-stop) and every
//! later write and checkpoint is refused. Touches the store, the HBase store and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, WrapFuture};

use super::Failure;
use super::clock::now_nanos;
use super::messages::{CheckpointReport, CommitCheckpoint, Persist, PipelineError};
use super::metrics::RuntimeMetrics;
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::engine::snapshot::{EngineSnapshot, SNAPSHOT_VERSION};
use crate::kafka::OutputProducer;
use crate::sinks::influxdb::InfluxWriter;
use crate::store::hbase::HbaseRaw;
use crate::store::{EmbeddedStore, StoreError, WriteBatch};

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

/// Writes to the embedded store (and raw records to HBase when configured).
#[derive(Debug)]
pub struct StoreActor {
    store: Arc<EmbeddedStore>,
    metrics: Arc<RuntimeMetrics>,
    retention_every: Duration,
    outputs: DurableOutputs,
    hbase: Option<HbaseRaw>,
    failure: Failure,
}

impl StoreActor {
    /// An actor writing to `store` (and `outputs`), enforcing retention every `retention_every`.
    pub fn new(
        store: Arc<EmbeddedStore>,
        metrics: Arc<RuntimeMetrics>,
        retention_every: Duration,
        outputs: DurableOutputs,
    ) -> StoreActor {
        StoreActor { store, metrics, retention_every, outputs, hbase: None, failure: Failure::default() }
    }

    /// This actor writing raw records to `hbase` (when given) instead of the embedded store,
    /// raising `failure` when such a write fails for good.
    pub fn with_hbase(mut self, hbase: Option<HbaseRaw>, failure: Failure) -> StoreActor {
        self.hbase = hbase;
        self.failure = failure;
        self
    }

    /// Refuses to go on after a failure for good: nothing written after a gap.
    fn check_failed(&self) -> Result<(), PipelineError> {
        match self.failure.get() {
            Some(why) => Err(PipelineError::Store(StoreError::Aborted(format!("pipeline failed earlier: {why}")))),
            None => Ok(()),
        }
    }

    /// Commits `batch` to the embedded store (its raw rows only listed when they went to
    /// HBase), then hands its aggregate changes to the outputs.
    fn write_local(&self, batch: &WriteBatch, raw_elsewhere: bool) -> Result<(), PipelineError> {
        let started = Instant::now();
        let result = if raw_elsewhere { self.store.write_raw_elsewhere(batch) } else { self.store.write(batch) };
        let items = if raw_elsewhere { batch.len() - batch.raw.len() } else { batch.len() };
        self.metrics.record_store_write(items, started.elapsed().as_secs_f64(), result.is_ok());
        if let Err(e) = &result {
            tracing::error!(error = %e, items, "store write failed");
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

/// An answer that is ready now.
fn ready(r: Result<(), PipelineError>) -> AtomicResponse<StoreActor, Result<(), PipelineError>> {
    AtomicResponse::new(Box::pin(actix::fut::ready(r)))
}

impl Handler<Persist> for StoreActor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, Persist(mut batch): Persist, _: &mut Context<Self>) -> Self::Result {
        self.metrics.store_mailbox.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = self.check_failed() {
            return ready(Err(e));
        }
        let hbase = match &self.hbase {
            Some(h) if !batch.raw.is_empty() => h.clone(),
            Some(_) => return ready(self.write_local(&batch, true)),
            None => return ready(self.write_local(&batch, false)),
        };
        // Raw rows first, acknowledged by HBase; then the points they are behind.
        let raw = Arc::new(std::mem::take(&mut batch.raw));
        let rows = raw.len();
        let write = {
            let raw = raw.clone();
            async move { hbase.write(raw).await }
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(move |result, actor, _| {
            if let Err(e) = result {
                let why = format!("writing {rows} raw rows to HBase: {e}");
                tracing::error!(error = %e, rows, "HBase raw-row write failed for good; stopping (fail-stop)");
                actor.failure.fail(why);
                return Err(PipelineError::Store(StoreError::from(e)));
            }
            // The writers dropped their handles: this is the only one left (else, copy).
            batch.raw = Arc::try_unwrap(raw).unwrap_or_else(|shared| shared.as_ref().clone());
            actor.write_local(&batch, true)
        })))
    }
}

impl Handler<CommitCheckpoint> for StoreActor {
    type Result = Result<CheckpointReport, PipelineError>;

    /// Every store write before this message is committed (this actor applies them in order,
    /// and with HBase each waited for HBase's acknowledgement); Kafka output is flushed until
    /// the broker acknowledged all of it; then the checkpoint is saved in one transaction.
    fn handle(&mut self, msg: CommitCheckpoint, _: &mut Context<Self>) -> Self::Result {
        self.metrics.store_mailbox.fetch_sub(1, Ordering::Relaxed);
        self.check_failed()?;
        if let Some(producer) = &self.outputs.producer {
            producer.flush(OUTPUT_FLUSH_TIMEOUT)?;
        }
        if let Some(influxdb) = &self.outputs.influxdb {
            // Everything queued so far reaches InfluxDB before the offsets move on: a crash
            // replays from the previous checkpoint and rewrites identical points. Waits as long
            // as InfluxDB is away (the writer retries; the source stalls meanwhile) — while
            // stopping at most influxdb.shutdown_timeout, then the checkpoint is not saved.
            influxdb.flush(None)?;
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

//! `ShardActor`: one `ShardEngine` on its own thread.
//!
//! Role: owns the window state of the series routed to it (by metric). Adds the records of
//! each `ShardBatch`, and on each `Advance` fires and frees windows, then hands what it
//! collected — raw rows, results, corrections, retractions, late records — to the store as
//! one transaction, awaiting it (backpressure). Transactions are grouped: a flush happens when
//! enough items are pending, when `flush_every` passed, or on shutdown.
//! Touches its engine, its sink, the store actor's mailbox and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::{Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, WrapFuture};

use super::messages::{Advance, Persist, PipelineError, ShardBatch, TakeSnapshot};
use super::metrics::{RuntimeMetrics, ShardGauges};
use super::store::StoreActor;
use crate::engine::snapshot::ShardSnapshot;
use crate::engine::{EngineConfig, Nanos, ShardEngine};
use crate::store::WriteBatchSink;

/// Items pending in a shard that force a store flush.
const FLUSH_ITEMS: usize = 65_536;

/// A window shard actor.
#[derive(Debug)]
pub struct ShardActor {
    index: usize,
    engine: ShardEngine,
    sink: WriteBatchSink,
    store: Addr<StoreActor>,
    metrics: Arc<RuntimeMetrics>,
    flush_every: Nanos,
    last_flush: Nanos,
}

impl ShardActor {
    /// Shard `index` running `engine` (new or restored), writing to `store`.
    pub fn new(
        index: usize,
        config: &EngineConfig,
        engine: ShardEngine,
        store: Addr<StoreActor>,
        metrics: Arc<RuntimeMetrics>,
        flush_every: Nanos,
    ) -> ShardActor {
        ShardActor {
            index,
            engine,
            sink: WriteBatchSink::new(config.window),
            store,
            metrics,
            flush_every,
            last_flush: 0,
        }
    }

    fn publish(&self) {
        let gauges =
            ShardGauges { series: self.engine.series_count() as u64, state_size: self.engine.state_size() as u64 };
        self.metrics.publish_shard(self.index, self.engine.counters(), gauges);
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
    }
}

impl Handler<ShardBatch> for ShardActor {
    type Result = ();

    fn handle(&mut self, msg: ShardBatch, _: &mut Context<Self>) {
        self.metrics.shard_mailbox[self.index].fetch_sub(1, Ordering::Relaxed);
        let b = &msg.batch;
        self.sink.begin(msg.now, &b.agent, b.sequence, b.raw.clone());
        self.engine.add(&b.batch(), &msg.indices, &mut self.sink);
    }
}

impl Handler<Advance> for ShardActor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, msg: Advance, _: &mut Context<Self>) -> Self::Result {
        self.metrics.shard_mailbox[self.index].fetch_sub(1, Ordering::Relaxed);
        self.sink.begin(msg.now, "", 0, Vec::new());
        self.engine.advance(msg.watermark, &mut self.sink);
        self.publish();
        // Group store transactions: a commit costs an fsync, and redb writes ~4x more rows per
        // second in transactions of 10 000 than of 1 000 (docs/STORAGE.md).
        let pending = self.sink.batch().len();
        let due = msg.flush || pending >= FLUSH_ITEMS || msg.now.saturating_sub(self.last_flush) >= self.flush_every;
        if pending == 0 || !due {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(()))));
        }
        self.last_flush = msg.now;
        let batch = self.sink.take();
        self.metrics.store_mailbox.fetch_add(1, Ordering::Relaxed);
        let send = self.store.send(Persist(batch));
        AtomicResponse::new(Box::pin(async move { send.await? }.into_actor(self).map(|result, _, _| result)))
    }
}

impl Handler<TakeSnapshot> for ShardActor {
    type Result = AtomicResponse<Self, Result<ShardSnapshot, PipelineError>>;

    /// The state now, returned once everything it emitted so far is in the store: a checkpoint
    /// never holds state whose outputs could be lost.
    fn handle(&mut self, _: TakeSnapshot, _: &mut Context<Self>) -> Self::Result {
        let snapshot = self.engine.snapshot();
        let batch = self.sink.take();
        if batch.is_empty() {
            return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(snapshot))));
        }
        self.metrics.store_mailbox.fetch_add(1, Ordering::Relaxed);
        let send = self.store.send(Persist(batch));
        AtomicResponse::new(Box::pin(
            async move {
                send.await??;
                Ok(snapshot)
            }
            .into_actor(self)
            .map(|result, _, _| result),
        ))
    }
}

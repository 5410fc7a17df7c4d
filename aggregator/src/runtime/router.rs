//! `RouterActor`: the ingest gate of the pipeline and the source of its watermark.
//!
//! Role: for each batch — dedup, validation (invalid records become dead letters), routing of
//! the admitted records to the shard that owns their metric, then the new watermark to every
//! shard, in that order per shard (one mailbox each, so a shard always places a batch against
//! the watermark that preceded it, exactly like the single-threaded engine). Handlers are
//! atomic: the next batch is taken only when every shard has the previous one, so full
//! shard mailboxes slow ingest down (backpressure) and nothing is dropped. A periodic tick
//! lets idle inputs release the watermark. Touches the gate, the shard and store mailboxes and
//! the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler, ResponseActFuture, WrapFuture,
};

use super::clock::now_nanos;
use super::messages::{
    Advance, Checkpoint, CheckpointReport, CommitCheckpoint, Flush, IngestBatch, IngestOutcome, Persist, PipelineError,
    ShardBatch, TakeSnapshot, Tick,
};
use super::metrics::RuntimeMetrics;
use super::shard::ShardActor;
use super::store::StoreActor;
use crate::checkpoint::CheckpointMeta;
use crate::engine::{EngineConfig, IngestGate, Nanos, shard_of};
use crate::store::{WriteBatch, WriteBatchSink};

/// The router actor.
#[derive(Debug)]
pub struct RouterActor {
    gate: IngestGate,
    sink: WriteBatchSink,
    shards: Vec<Addr<ShardActor>>,
    store: Addr<StoreActor>,
    metrics: Arc<RuntimeMetrics>,
    /// `None`: ticks come from the source (Kafka mode: processing time is the log's).
    tick_every: Option<Duration>,
    admitted: Vec<u32>,
}

impl RouterActor {
    /// A router running `gate` (new or restored) for `config` in front of `shards`, writing
    /// dead letters to `store`, ticking itself every `tick_every` (wall clock) if given.
    pub fn new(
        config: &EngineConfig,
        gate: IngestGate,
        shards: Vec<Addr<ShardActor>>,
        store: Addr<StoreActor>,
        metrics: Arc<RuntimeMetrics>,
        tick_every: Option<Duration>,
    ) -> RouterActor {
        RouterActor {
            gate,
            sink: WriteBatchSink::new(config.window),
            shards,
            store,
            metrics,
            tick_every,
            admitted: Vec::new(),
        }
    }

    /// Sends, in order: each shard's records, the watermark to every shard, the dead letters.
    fn forward(
        &mut self,
        routed: Vec<(usize, ShardBatch)>,
        watermark: Nanos,
        now: Nanos,
        dead_letters: WriteBatch,
        flush: bool,
    ) -> ResponseActFuture<Self, Result<(), PipelineError>> {
        self.metrics.publish_gate(self.gate.counters(), watermark, now);
        let shards = self.shards.clone();
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                for (k, batch) in routed {
                    metrics.shard_mailbox[k].fetch_add(1, Ordering::Relaxed);
                    shards[k].send(batch).await?;
                }
                for (k, shard) in shards.iter().enumerate() {
                    metrics.shard_mailbox[k].fetch_add(1, Ordering::Relaxed);
                    shard.send(Advance { watermark, now, flush }).await??;
                }
                if !dead_letters.is_empty() {
                    metrics.store_mailbox.fetch_add(1, Ordering::Relaxed);
                    store.send(Persist(dead_letters)).await??;
                }
                Ok(())
            }
            .into_actor(self)
            .map(|result, _, _| result),
        )
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        if let Some(every) = self.tick_every {
            ctx.run_interval(every, |_, ctx| ctx.notify(Tick { now: now_nanos() }));
        }
    }
}

impl Handler<IngestBatch> for RouterActor {
    type Result = AtomicResponse<Self, Result<IngestOutcome, PipelineError>>;

    fn handle(&mut self, msg: IngestBatch, _: &mut Context<Self>) -> Self::Result {
        self.metrics.router_mailbox.fetch_sub(1, Ordering::Relaxed);
        let b = msg.batch;
        self.sink.begin(msg.now, &b.agent, b.sequence, b.raw.clone());
        let admission =
            self.gate.admit(&msg.input, &b.batch(), &b.defects, msg.now, &mut self.sink, &mut self.admitted);
        let outcome = IngestOutcome {
            duplicate: admission.duplicate,
            admitted: self.admitted.len() as u32,
            invalid: admission.invalid,
        };
        let n = self.shards.len();
        let mut per_shard: Vec<Vec<u32>> = vec![Vec::new(); n];
        for &i in &self.admitted {
            if let Some(r) = b.records.get(i as usize) {
                per_shard[shard_of(&r.metric, n)].push(i);
            }
        }
        let routed = per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, indices)| !indices.is_empty())
            .map(|(k, indices)| (k, ShardBatch { batch: b.clone(), indices, now: msg.now }))
            .collect();
        let dead_letters = self.sink.take();
        let watermark = if admission.duplicate { self.gate.watermark() } else { self.gate.advance(msg.now) };
        let forwarded = self.forward(routed, watermark, msg.now, dead_letters, false);
        AtomicResponse::new(Box::pin(forwarded.map(move |result, _, _| result.map(|()| outcome))))
    }
}

impl Handler<Tick> for RouterActor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, msg: Tick, _: &mut Context<Self>) -> Self::Result {
        let watermark = self.gate.advance(msg.now);
        AtomicResponse::new(self.forward(Vec::new(), watermark, msg.now, WriteBatch::default(), false))
    }
}

impl Handler<Flush> for RouterActor {
    type Result = AtomicResponse<Self, Result<(), PipelineError>>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let now = now_nanos();
        let watermark = self.gate.advance(now);
        AtomicResponse::new(self.forward(Vec::new(), watermark, now, WriteBatch::default(), true))
    }
}

impl Handler<Checkpoint> for RouterActor {
    type Result = AtomicResponse<Self, Result<CheckpointReport, PipelineError>>;

    /// A consistent cut: the gate's state now (every batch before this message is admitted),
    /// each shard's state once it has handled everything sent before (one mailbox each) and
    /// written its output, then the store actor makes the output durable and saves it all.
    fn handle(&mut self, msg: Checkpoint, _: &mut Context<Self>) -> Self::Result {
        let gate = self.gate.snapshot();
        let meta = CheckpointMeta {
            id: 0,
            created: msg.now,
            topic: msg.topic,
            offsets: msg.offsets,
            watermark: self.gate.watermark(),
        };
        let shards = self.shards.clone();
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let mut states = Vec::with_capacity(shards.len());
                for (k, shard) in shards.iter().enumerate() {
                    metrics.shard_mailbox[k].fetch_add(1, Ordering::Relaxed);
                    states.push(shard.send(TakeSnapshot).await??);
                }
                metrics.store_mailbox.fetch_add(1, Ordering::Relaxed);
                store.send(CommitCheckpoint { meta, gate, shards: states }).await?
            }
            .into_actor(self)
            .map(|result, _, _| result),
        ))
    }
}

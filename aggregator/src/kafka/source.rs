//! `KafkaSource`: the aggregator's input in Kafka mode.
//!
//! Role: one thread runs a consumer-group member on the input topic (no auto-commit; offsets
//! live in checkpoints). Fetched messages wait in per-partition buffers and are handed to the
//! router in event-time merge order (`merge.rs`), one at a time, each awaited — so a busy
//! pipeline pauses partitions (backpressure) instead of dropping anything. Each message's
//! timestamp is its processing time, so a replay decides exactly as the first run did; the
//! wall clock only drives ticks once every partition is caught up. Every partition is its own
//! watermark input (`topic/partition`). Messages that are not a `RecordBatch` go to the
//! dead-letter topic. Every `checkpoint.every`, on revocation and on stop it takes a
//! checkpoint (router → shards → store → file) with the offsets of exactly the messages
//! processed, then commits them to the group for lag tools. Any pipeline, output or
//! checkpoint failure stops the source with an error (fail-stop): a restart replays from the
//! last checkpoint and rewrites identical values. Touches the consumer, the router's mailbox,
//! the output producer and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{KafkaConfigError, KafkaSection, StartFrom};
use super::context::SourceContext;
use super::merge::{Fetched, PartitionMerge};
use super::metrics::KafkaMetrics;
use super::output::{DeadLetterOrigin, OutputProducer};
use crate::checkpoint::{CheckpointMeta, PartitionOffset};
use crate::engine::Nanos;
use crate::runtime::clock::now_nanos;
use crate::runtime::messages::{Checkpoint, CheckpointReport, IngestBatch, Tick};
use crate::runtime::metrics::RuntimeMetrics;
use crate::runtime::router::RouterActor;
use crate::wire::decode_bytes;

/// Messages handed to the router per loop turn before the consumer is polled again.
const MESSAGES_PER_TURN: usize = 256;

/// The source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The consumer could not be configured.
    #[error(transparent)]
    Config(#[from] KafkaConfigError),
    /// librdkafka failed.
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// The pipeline, the output or a checkpoint failed; the last checkpoint is the restart point.
    #[error("{0}")]
    Failed(String),
}

/// How the source runs.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Brokers, topics, group, merge settings.
    pub kafka: KafkaSection,
    /// Checkpoint interval.
    pub checkpoint_every: Duration,
    /// Tick interval (wall clock, only while caught up).
    pub tick_every: Duration,
}

#[derive(Debug)]
struct SourceState {
    merge: PartitionMerge,
    /// Next offset to process per partition (from the checkpoint, then from processing).
    offsets: BTreeMap<i32, i64>,
    /// High watermark per partition and the wall time it was reported (statistics).
    high: BTreeMap<i32, (i64, Nanos)>,
    /// Greatest message timestamp processed.
    log_now: Nanos,
    failure: Option<String>,
}

/// What the source thread and its consumer callbacks share.
#[derive(Debug)]
pub struct SourceCore {
    pub(crate) topic: String,
    pub(crate) start_from: StartFrom,
    router: Addr<RouterActor>,
    producer: Arc<OutputProducer>,
    metrics: Arc<RuntimeMetrics>,
    kafka_metrics: Arc<KafkaMetrics>,
    state: Mutex<SourceState>,
    runtime: tokio::runtime::Runtime,
}

impl SourceCore {
    fn lock(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn checkpointed_offset(&self, p: i32) -> Option<i64> {
        self.lock().offsets.get(&p).copied()
    }

    pub(crate) fn assigned(&self, p: i32) {
        self.lock().merge.assign(p);
    }

    pub(crate) fn revoked(&self, p: i32) {
        self.lock().merge.revoke(p);
        self.kafka_metrics.remove_partition(p);
    }

    pub(crate) fn note_high_watermark(&self, p: i32, high: i64) {
        let mut s = self.lock();
        s.high.insert(p, (high, now_nanos()));
        let pos = s.offsets.get(&p).copied().unwrap_or(0);
        self.kafka_metrics.set_partition(p, pos, high);
    }

    /// Partitions with nothing buffered whose next offset reached the high watermark of the
    /// latest statistics were caught up at the time of those statistics: this renews what the
    /// merge knows every statistics interval (end-of-partition events come only once).
    fn catch_up_from_high_watermarks(&self) {
        let mut s = self.lock();
        for p in s.merge.idle() {
            let Some(&(high, at)) = s.high.get(&p) else { continue };
            if s.offsets.get(&p).copied().unwrap_or(0) >= high {
                s.merge.end_of_partition(p, at);
            }
        }
    }

    pub(crate) fn fail(&self, message: String) {
        tracing::error!(%message, "kafka source failing");
        let mut s = self.lock();
        s.failure.get_or_insert(message);
    }

    fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// Takes a checkpoint of what was processed; commits its offsets to the group if
    /// `consumer` is given. A failure is recorded (the source then stops).
    pub(crate) fn checkpoint_now(&self, consumer: Option<&BaseConsumer<SourceContext>>) -> Option<CheckpointReport> {
        let started = Instant::now();
        let offsets: Vec<PartitionOffset> =
            self.lock().offsets.iter().map(|(&partition, &offset)| PartitionOffset { partition, offset }).collect();
        let msg = Checkpoint { topic: self.topic.clone(), offsets: offsets.clone(), now: now_nanos() };
        let m = &self.kafka_metrics;
        match self.runtime.block_on(self.router.send(msg)) {
            Ok(Ok(report)) => {
                m.checkpoints.fetch_add(1, Ordering::Relaxed);
                m.checkpoint_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.checkpoint_bytes.store(report.bytes as u64, Ordering::Relaxed);
                m.checkpoint_time.store(now_nanos() / 1_000_000_000, Ordering::Relaxed);
                m.checkpoint_watermark.store(report.watermark, Ordering::Relaxed);
                tracing::debug!(id = report.id, bytes = report.bytes, "checkpoint written");
                if let Some(consumer) = consumer {
                    self.commit(consumer, &offsets);
                }
                Some(report)
            }
            Ok(Err(e)) => {
                m.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                self.fail(format!("checkpoint failed: {e}"));
                None
            }
            Err(e) => {
                m.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                self.fail(format!("checkpoint failed: pipeline stopped: {e}"));
                None
            }
        }
    }

    /// Informational: the group's committed offsets follow the checkpoints (lag tools read
    /// them); the source never starts from them.
    fn commit(&self, consumer: &BaseConsumer<SourceContext>, offsets: &[PartitionOffset]) {
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            if tpl.add_partition_offset(&self.topic, o.partition, Offset::Offset(o.offset)).is_err() {
                return;
            }
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing offsets to the group failed (informational only)");
        }
    }

    /// Hands one message to the router (or the dead-letter topic); returns once it is done.
    fn process(&self, partition: i32, m: Fetched) -> Result<(), String> {
        let km = &self.kafka_metrics;
        km.messages_in.fetch_add(1, Ordering::Relaxed);
        let decoded = match &m.payload {
            None => Err("message without a value".to_string()),
            Some(bytes) => match decode_bytes(bytes) {
                Ok(b) if b.agent.is_empty() => Err("RecordBatch without agent_id".to_string()),
                Ok(b) => Ok(b),
                Err(e) => Err(e.to_string()),
            },
        };
        match decoded {
            Err(reason) => {
                let origin = DeadLetterOrigin { topic: &self.topic, partition, offset: m.offset, reason: &reason };
                tracing::warn!(partition, offset = m.offset, %reason, "input message dead-lettered");
                self.producer
                    .send_dead_letter(m.key.as_deref(), m.payload.as_deref(), origin)
                    .map_err(|e| e.to_string())?;
            }
            Ok(batch) => {
                let wall = now_nanos();
                let (mut delay_sum, mut counted) = (0u64, 0u64);
                for r in &batch.records {
                    if r.time > 0 {
                        delay_sum += u64::try_from(wall.saturating_sub(r.time) / 1_000).unwrap_or(0);
                        counted += 1;
                    }
                }
                km.records_in.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                km.event_delay_micros_sum.fetch_add(delay_sum, Ordering::Relaxed);
                km.event_delay_count.fetch_add(counted, Ordering::Relaxed);
                let msg = IngestBatch {
                    input: format!("{}/{partition}", self.topic),
                    batch: Arc::new(batch),
                    now: m.timestamp,
                };
                self.metrics.router_mailbox.fetch_add(1, Ordering::Relaxed);
                match self.runtime.block_on(self.router.send(msg)) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("pipeline: {e}")),
                    Err(e) => return Err(format!("pipeline stopped: {e}")),
                }
            }
        }
        let mut s = self.lock();
        s.offsets.insert(partition, m.offset + 1);
        s.log_now = s.log_now.max(m.timestamp);
        let high = s.high.get(&partition).map_or(m.offset + 1, |h| h.0);
        km.set_partition(partition, m.offset + 1, high.max(m.offset + 1));
        Ok(())
    }
}

/// A running source; stop it with [`SourceHandle::stop`].
#[derive(Debug)]
pub struct SourceHandle {
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Receiver<Result<(), SourceError>>,
    finished: Option<Result<(), SourceError>>,
}

impl SourceHandle {
    /// Resolves when the source stops by itself (an error); `Ok` only if it was told to stop.
    pub async fn failed(&mut self) -> Result<(), SourceError> {
        let result = match (&mut self.done).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Failed("source thread vanished".into())),
        };
        let report = match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(SourceError::Failed(e.to_string())),
        };
        self.finished = Some(result);
        report
    }

    /// Stops consuming, takes a final checkpoint and waits for the thread.
    pub async fn stop(mut self) -> Result<(), SourceError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(result) = self.finished.take() {
            return result;
        }
        match self.done.await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Failed("source thread vanished".into())),
        }
    }
}

/// Starts the source thread: subscribes to the input topic and feeds `router`. `restored`
/// is the checkpoint the pipeline was restored from (its offsets are where partitions start).
pub fn start(
    options: SourceOptions,
    router: Addr<RouterActor>,
    producer: Arc<OutputProducer>,
    metrics: Arc<RuntimeMetrics>,
    kafka_metrics: Arc<KafkaMetrics>,
    restored: Option<&CheckpointMeta>,
) -> Result<SourceHandle, SourceError> {
    let k = &options.kafka;
    let mut offsets = BTreeMap::new();
    if let Some(meta) = restored {
        if meta.topic == k.input_topic {
            offsets.extend(meta.offsets.iter().map(|o| (o.partition, o.offset)));
        } else {
            tracing::warn!(checkpoint_topic = %meta.topic, topic = %k.input_topic,
                "the checkpoint's offsets are for another topic: partitions start per start_from");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| SourceError::Failed(format!("source runtime: {e}")))?;
    let core = Arc::new(SourceCore {
        topic: k.input_topic.clone(),
        start_from: k.start_from,
        router,
        producer,
        metrics,
        kafka_metrics,
        state: Mutex::new(SourceState {
            merge: PartitionMerge::new(k.max_buffered_messages, k.merge_wait),
            offsets,
            high: BTreeMap::new(),
            log_now: 0,
            failure: None,
        }),
        runtime,
    });
    let mut config = k.consumer_config()?;
    // Statistics carry each partition's high watermark: the lag metric and caught-up detection.
    config.set("statistics.interval.ms", "1000");
    let consumer: BaseConsumer<SourceContext> = config.create_with_context(SourceContext { core: core.clone() })?;
    consumer.subscribe(&[k.input_topic.as_str()])?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, done) = tokio::sync::oneshot::channel();
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("kafka-source".into())
        .spawn(move || {
            let result = run(&core, &consumer, &flag, &options);
            if let Err(e) = &result {
                tracing::error!(error = %e, "kafka source stopped");
            }
            let _ = tx.send(result);
        })
        .map_err(|e| SourceError::Failed(format!("starting the source thread: {e}")))?;
    Ok(SourceHandle { stop, done, finished: None })
}

fn run(
    core: &SourceCore,
    consumer: &BaseConsumer<SourceContext>,
    stop: &AtomicBool,
    options: &SourceOptions,
) -> Result<(), SourceError> {
    let km = &core.kafka_metrics;
    let topic = options.kafka.input_topic.as_str();
    let mut last_checkpoint = Instant::now();
    let mut last_tick = Instant::now();
    loop {
        if let Some(f) = core.failure() {
            return Err(SourceError::Failed(f));
        }
        if stop.load(Ordering::Relaxed) {
            tracing::info!("kafka source stopping: final checkpoint");
            core.checkpoint_now(Some(consumer));
            return core.failure().map_or(Ok(()), |f| Err(SourceError::Failed(f)));
        }
        let buffered = core.lock().merge.buffered();
        let wait = if buffered > 0 { Duration::ZERO } else { Duration::from_millis(100) };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let fetched = Fetched {
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis().map_or_else(now_nanos, |ms| ms.saturating_mul(1_000_000)),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                };
                core.lock().merge.push(m.partition(), fetched);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => core.lock().merge.end_of_partition(p, now_nanos()),
            Some(Err(e)) => {
                km.consumer_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "kafka consumer error");
            }
            None => {}
        }
        core.catch_up_from_high_watermarks();
        for _ in 0..MESSAGES_PER_TURN {
            let next = core.lock().merge.next(Instant::now());
            let Some((partition, m)) = next else { break };
            core.process(partition, m).map_err(SourceError::Failed)?;
        }
        let (pause, resume, paused, expired, caught_up, log_now) = {
            let mut s = core.lock();
            let pause = s.merge.to_pause();
            let resume = s.merge.to_resume();
            (pause, resume, s.merge.paused(), s.merge.waits_expired(), s.merge.all_caught_up(), s.log_now)
        };
        for (parts, pausing) in [(pause, true), (resume, false)] {
            if parts.is_empty() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                tpl.add_partition(topic, *p);
            }
            let result = if pausing { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
            if let Err(e) = result {
                tracing::warn!(error = %e, partitions = ?parts, pausing, "pause/resume failed");
            }
        }
        km.paused_partitions.store(paused as u64, Ordering::Relaxed);
        if expired > km.merge_waits_expired.swap(expired, Ordering::Relaxed) {
            let lagging = core.lock().merge.lagging();
            tracing::warn!(?lagging, wait = ?options.kafka.merge_wait,
                "partitions had nothing fetched for merge_wait: going on without them (their records may be late)");
        }
        if last_tick.elapsed() >= options.tick_every {
            last_tick = Instant::now();
            // At the head of the log processing time may follow the wall clock (idle partitions
            // release the watermark); while catching up it is the log's own time.
            if caught_up {
                let now = now_nanos().max(log_now);
                match core.runtime.block_on(core.router.send(Tick { now })) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(SourceError::Failed(format!("pipeline: {e}"))),
                    Err(e) => return Err(SourceError::Failed(format!("pipeline stopped: {e}"))),
                }
            }
        }
        if last_checkpoint.elapsed() >= options.checkpoint_every {
            last_checkpoint = Instant::now();
            core.checkpoint_now(Some(consumer));
        }
    }
}

//! `meshmon-aggregator replay`: rebuild the aggregates and raw records of a time range from
//! the Kafka input topic.
//!
//! Role: reads every partition of the input topic from the offset of time `from − (allowed
//! lateness + out-of-orderness)` (broker offsets-for-times on message timestamps; a message is
//! never sent before the records in it were measured) to the end of the log as of the start —
//! every message that can hold records of windows inside `[from, to)`, whenever it was produced
//! (backfills, spooled batches) — in the same event-time merge order as the live source,
//! through a fresh engine with the configured window spec. It keeps only what
//! lies inside the range (windows with `from ≤ start` and `end ≤ to`; raw rows and dead letters
//! with event time in `[from, to)`) and writes it to the store and the output topic. Every
//! write is keyed, so a replay is idempotent: run twice, it writes the same values twice.
//! Shows a progress bar on stderr. Touches the input topic (reads, no group commits), the
//! store and the output producer.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{KafkaConfigError, KafkaSection};
use super::merge::{Fetched, PartitionMerge};
use super::output::{OutputError, OutputProducer};
use crate::engine::{EngineConfig, Nanos, WindowEngine, WindowSpec};
use crate::store::{AggregateChange, EmbeddedStore, StoreError, WriteBatch, WriteBatchSink};
use crate::wire::decode_bytes;

/// Items collected before they are written.
const WRITE_EVERY: usize = 20_000;
/// Broker request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The client could not be configured.
    #[error(transparent)]
    Config(#[from] KafkaConfigError),
    /// The engine configuration is not usable.
    #[error("engine configuration: {0}")]
    Engine(String),
    /// The broker failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The output topic failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The range is empty or reversed.
    #[error("--to must be after --from")]
    EmptyRange,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Input messages read.
    pub messages: u64,
    /// Messages that were not a `RecordBatch` (skipped; the live source dead-letters them).
    pub undecodable: u64,
    /// Aggregate changes written (inside the range).
    pub aggregates: u64,
    /// Raw rows written (inside the range).
    pub raw: u64,
    /// Dead letters written (inside the range).
    pub dead_letters: u64,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRange {
    /// Start of the range (ns since the epoch).
    pub from: Nanos,
    /// End of the range.
    pub to: Nanos,
}

/// Rebuilds `range` from the input topic of `kafka` into `store` (and the output topic when
/// `producer` is given), with the engine `config`. `progress`: draw a bar on stderr.
pub fn replay(
    kafka: &KafkaSection,
    config: &EngineConfig,
    range: &ReplayRange,
    store: &EmbeddedStore,
    producer: Option<&Arc<OutputProducer>>,
    progress: bool,
) -> Result<ReplayReport, ReplayError> {
    if range.to <= range.from {
        return Err(ReplayError::EmptyRange);
    }
    let mut engine = WindowEngine::new(config.clone()).map_err(|e| ReplayError::Engine(e.to_string()))?;
    let mut client = kafka.client_config()?;
    client
        .set("group.id", format!("meshmon-replay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = client.create()?;
    let topic = kafka.input_topic.as_str();
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let slack = config.allowed_lateness.saturating_add(config.out_of_orderness);
    let start_ms = range.from.saturating_sub(slack) / 1_000_000;
    let starts = offsets_at(&consumer, topic, &partitions, start_ms)?;
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        ends.insert(p, consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?.1);
    }
    let mut assignment = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    let mut total: u64 = 0;
    for &p in &partitions {
        let (start, end) = (starts[&p], ends[&p]);
        if end > start {
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
            remaining.insert(p, end);
            total += (end - start) as u64;
        }
    }
    let mut report = ReplayReport::default();
    if remaining.is_empty() {
        draw(progress, 0, 0, &report, true);
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    let mut merge = PartitionMerge::new(usize::MAX, Duration::from_secs(3600));
    for &p in remaining.keys() {
        merge.assign(p);
    }
    let mut sink = WriteBatchSink::new(config.window);
    let mut pending = WriteBatch::default();
    let mut last_draw = Instant::now();
    let mut done: u64 = 0;
    while !remaining.is_empty() || merge.buffered() > 0 {
        if !remaining.is_empty() {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition();
                    if let Some(&end) = remaining.get(&p) {
                        if m.offset() < end {
                            merge.push(
                                p,
                                Fetched {
                                    offset: m.offset(),
                                    timestamp: m.timestamp().to_millis().unwrap_or(0).saturating_mul(1_000_000),
                                    key: None,
                                    payload: m.payload().map(<[u8]>::to_vec),
                                },
                            );
                        }
                        if m.offset() + 1 >= end {
                            remaining.remove(&p);
                            merge.end_of_partition(p, Nanos::MAX);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The end offset was computed at start; the log cannot be shorter, but be safe.
                    remaining.remove(&p);
                    merge.end_of_partition(p, Nanos::MAX);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka consumer error during replay"),
                None => {}
            }
        }
        while let Some((p, m)) = merge.next(Instant::now()) {
            done += 1;
            report.messages += 1;
            let Some(batch) = m.payload.as_deref().and_then(|b| decode_bytes(b).ok()).filter(|b| !b.agent.is_empty())
            else {
                report.undecodable += 1;
                continue;
            };
            sink.begin(m.timestamp, &batch.agent, batch.sequence, batch.raw.clone());
            let input = format!("{topic}/{p}");
            engine.process_decoded(&input, &batch.batch(), &batch.defects, m.timestamp, &mut sink);
            let mut collected = sink.take();
            keep_inside(&mut collected, range);
            pending.append(&mut collected);
            if pending.len() >= WRITE_EVERY {
                write(store, producer, &mut pending, &mut report)?;
            }
        }
        if last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            draw(progress, done, total, &report, false);
        }
    }
    write(store, producer, &mut pending, &mut report)?;
    if let Some(p) = producer {
        p.flush(Duration::from_secs(60))?;
    }
    draw(progress, done, total, &report, true);
    Ok(report)
}

/// The longest span of event time one window covers (a session's gap stands for it).
pub fn window_span(spec: WindowSpec) -> Nanos {
    match spec {
        WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => size,
        WindowSpec::Session { gap } => gap,
    }
}

/// Per partition, the first offset whose timestamp is at or after `ms` (the end of the log if none).
fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        query.add_partition_offset(topic, p, Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => consumer.fetch_watermarks(topic, e.partition(), REQUEST_TIMEOUT)?.1,
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

/// Drops everything not wholly inside `range`.
fn keep_inside(batch: &mut WriteBatch, range: &ReplayRange) {
    let inside = |t: Nanos| t >= range.from && t < range.to;
    batch.aggregates.retain(|c| match c {
        AggregateChange::Upsert { window, .. } => window.start >= range.from && window.end <= range.to,
        AggregateChange::Retract { window_start, .. } => inside(*window_start),
    });
    batch.raw.retain(|r| inside(r.record.time));
    batch.dead_letters.retain(|d| inside(d.record.time));
}

fn write(
    store: &EmbeddedStore,
    producer: Option<&Arc<OutputProducer>>,
    pending: &mut WriteBatch,
    report: &mut ReplayReport,
) -> Result<(), ReplayError> {
    if pending.is_empty() {
        return Ok(());
    }
    store.write(pending)?;
    if let Some(p) = producer {
        p.send_aggregates(&pending.aggregates)?;
    }
    report.aggregates += pending.aggregates.len() as u64;
    report.raw += pending.raw.len() as u64;
    report.dead_letters += pending.dead_letters.len() as u64;
    *pending = WriteBatch::default();
    Ok(())
}

/// `[#########...........]  45%  1234/2740 messages, 120 aggregates, 5000 raw`
fn draw(enabled: bool, done: u64, total: u64, report: &ReplayReport, last: bool) {
    if !enabled {
        return;
    }
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).map_or(WIDTH, |f| f.min(WIDTH));
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '.' }).collect();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{bar}] {percent:>3}%  {done}/{total} messages, {} aggregates, {} raw records{}",
        report.aggregates,
        report.raw,
        if last { "\n" } else { "" }
    );
    let _ = err.flush();
}

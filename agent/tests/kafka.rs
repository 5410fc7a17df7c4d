//! The Kafka output against a real Kafka-protocol broker (tansu, sqlite storage).
//!
//! Role: runs agents in-process with `output_kind = "kafka"` and reads the topic back with an
//! rdkafka consumer: every record exactly once, key = agent id, value = a `RecordBatch` with
//! increasing sequences; a broker outage (tansu killed, restarted on the same port and data)
//! spools batches to disk and delivers them afterwards, in order; a restart with a non-empty
//! spool (including a torn tail) delivers the spooled batches before new ones; a full spool
//! drops the oldest or the newest batches as configured, counted; every compression codec is
//! accepted by the broker. Waits poll with deadlines (`meshmon_tests::wait_for`), never sleep.
//! Needs `tansu` (see `tests/src/tansu.rs`). Touches loopback sockets, temporary directories
//! and tansu child processes only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::test_config;
use meshmon_agent::config::{Compression, WhenFull};
use meshmon_agent::record::{double_record, now_timestamp};
use meshmon_agent::{Agent, AgentHandle, Config, MetricsSnapshot, OutputKind};
use meshmon_proto::v1::RecordBatch;
use meshmon_tests::{Tansu, wait_for};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "kafka-test-agent";

/// One message read back from the topic.
#[derive(Debug, Clone)]
struct Msg {
    key: String,
    batch: RecordBatch,
}

fn start_tansu(dir: &Path, topic: &str) -> Tansu {
    block_in_place(|| {
        let t = Tansu::start(dir).unwrap_or_else(|e| panic!("starting tansu: {e}"));
        t.create_topic(topic, 1).unwrap_or_else(|e| panic!("creating topic {topic}: {e}"));
        t
    })
}

/// An agent configuration producing to `topic` on `bootstrap`: batches of `batch` records,
/// 1 s delivery timeout, a state directory in `dir`.
fn kafka_config(bootstrap: &str, topic: &str, dir: &Path, batch: usize) -> Config {
    let mut c = test_config("http://127.0.0.1:1", dir);
    c.agent_id = AGENT.into();
    c.output_kind = OutputKind::Kafka;
    c.kafka.brokers = vec![bootstrap.to_owned()];
    c.kafka.topic = topic.to_owned();
    c.kafka.delivery_timeout = Duration::from_secs(1);
    c.batch_max_records = batch;
    c.batch_max_delay = Duration::from_secs(3600);
    c.max_in_flight = 8;
    c.queue_capacity = 16;
    c.spool.fsync_interval = Duration::from_millis(20);
    c
}

/// `n` records named `m{first}`, `m{first+1}`, ...
fn records(first: usize, n: usize) -> Vec<meshmon_proto::v1::Record> {
    let now = now_timestamp();
    (first..first + n).map(|i| double_record(format!("m{i}"), i as f64, now)).collect()
}

/// Pushes `batches` batches of `size` records (each closes one batch), numbered from `first`.
async fn push_batches(agent: &AgentHandle, first: usize, batches: usize, size: usize) {
    for b in 0..batches {
        let s = agent.push(records(first + b * size, size)).await.unwrap();
        assert_eq!(s.accepted, size);
    }
}

async fn eventually_metrics(
    agent: &AgentHandle,
    what: &str,
    check: impl Fn(&MetricsSnapshot) -> bool,
) -> MetricsSnapshot {
    common::eventually(what, WAIT, || {
        let m = agent.metrics();
        check(&m).then_some(m)
    })
    .await
}

/// Reads the whole topic (partition 0) until `done` says so.
fn consume(bootstrap: &str, topic: &str, what: &str, done: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{topic}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let mut last_error = None;
    block_in_place(|| {
        wait_for(what, WAIT, || {
            while let Some(m) = consumer.poll(Duration::from_millis(100)) {
                // Transient client errors (a broker connection dropped) are retried by polling.
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        last_error = Some(e.to_string());
                        break;
                    }
                };
                let key = String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap();
                let batch = RecordBatch::decode(m.payload().unwrap_or_default()).unwrap();
                got.push(Msg { key, batch });
            }
            done(&got).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}; read {} messages; last consumer error: {last_error:?}", got.len()));
    });
    got
}

fn record_count(msgs: &[Msg]) -> usize {
    msgs.iter().map(|m| m.batch.records.len()).sum()
}

/// Distinct sequences seen.
fn sequences(msgs: &[Msg]) -> BTreeSet<u64> {
    msgs.iter().map(|m| m.batch.sequence).collect()
}

/// Checks what the aggregator's deduplication relies on: each message is one batch of this
/// agent, re-deliveries repeat a batch exactly, first deliveries come in sequence order.
/// Returns the records after deduplication by (agent, sequence), and how many messages were
/// re-deliveries.
fn dedup(msgs: &[Msg]) -> (Vec<String>, usize) {
    let mut first: BTreeMap<u64, &RecordBatch> = BTreeMap::new();
    let mut order = Vec::new();
    let mut duplicates = 0;
    for m in msgs {
        assert_eq!(m.key, AGENT, "message key is the agent id");
        assert_eq!(m.batch.agent_id, AGENT);
        assert!(m.batch.sent_at.is_some());
        match first.get(&m.batch.sequence) {
            Some(b) => {
                assert_eq!(b.records, m.batch.records, "a re-delivery repeats its batch exactly");
                duplicates += 1;
            }
            None => {
                first.insert(m.batch.sequence, &m.batch);
                order.push(m.batch.sequence);
            }
        }
    }
    assert!(order.windows(2).all(|w| w[0] < w[1]), "first deliveries in sequence order: {order:?}");
    let names = order.iter().flat_map(|s| first[s].records.iter().map(|r| r.metric.clone())).collect();
    (names, duplicates)
}

fn expected(first: usize, n: usize) -> Vec<String> {
    (first..first + n).map(|i| format!("m{i}")).collect()
}

fn segment_files(state_dir: &Path) -> Vec<PathBuf> {
    let dir = state_dir.join("spool");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "seg")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_topic_exactly_once_with_lz4_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "records-once";
    let tansu = start_tansu(dir.path(), topic);
    let state = dir.path().join("agent");
    let mut config = kafka_config(&tansu.bootstrap(), topic, &state, 500);
    // A healthy broker on a busy machine can take over 1 s to acknowledge: this test is about
    // the path without spooling, so give it time (the outage tests keep 1 s).
    config.kafka.delivery_timeout = Duration::from_secs(30);
    assert_eq!(config.kafka.compression, Compression::Lz4, "the default codec is the one tested here");
    let agent = Agent::start(config).await.unwrap();
    const N: usize = 10_000;
    push_batches(&agent, 0, N / 500, 500).await;
    let m = eventually_metrics(&agent, "all records produced", |m| m.kafka_produced_records == N as u64).await;
    assert_eq!((m.kafka_produced_batches, m.sent, m.batches_acked), (20, N as u64, 20));
    assert_eq!((m.spooled_batches, m.spool_batches, m.kafka_delivery_failures, m.rejected), (0, 0, 0, 0));
    assert_eq!(m.kafka_produce_latency_count, 20);
    let text = agent.prometheus_text();
    assert!(text.contains(&format!("meshmon_agent_kafka_produced_records_total {N}")), "{text}");
    assert!(text.contains("meshmon_agent_kafka_produce_latency_seconds_count 20"), "{text}");

    let msgs = consume(&tansu.bootstrap(), topic, "10 000 records", |m| record_count(m) >= N);
    assert_eq!(msgs.len(), 20, "one message per batch, none twice");
    let (names, duplicates) = dedup(&msgs);
    assert_eq!(duplicates, 0);
    assert_eq!(names, expected(0, N), "every record exactly once, in order");
    assert_eq!(sequences(&msgs), (1..=20).collect());
    let r = &msgs[3].batch.records[7];
    assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c-default", "n-default"), "stamped like the gRPC path");
    assert_eq!(r.tags.get("env").map(String::as_str), Some("test"));

    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.spooled_batches, 0);
    assert!(segment_files(&state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_spools_to_disk_then_delivers_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "records-outage";
    let mut tansu = start_tansu(dir.path(), topic);
    let state = dir.path().join("agent");
    let agent = Agent::start(kafka_config(&tansu.bootstrap(), topic, &state, 100)).await.unwrap();

    push_batches(&agent, 0, 5, 100).await;
    eventually_metrics(&agent, "first batches produced", |m| m.kafka_produced_batches == 5).await;

    block_in_place(|| tansu.stop()).unwrap();
    push_batches(&agent, 500, 20, 100).await;
    let m = eventually_metrics(&agent, "batches spooled during the outage", |m| m.spool_batches > 0).await;
    assert!(m.kafka_outages >= 1 && m.kafka_delivery_failures >= 1, "{m:?}");
    // While the broker stays away, new batches go straight to disk.
    push_batches(&agent, 2500, 10, 100).await;
    let m = eventually_metrics(&agent, "every outage batch in the spool", |m| {
        m.spool_batches + m.kafka_produced_batches >= 35 && m.queue_depth == 0
    })
    .await;
    assert!(m.spooled_batches > 0 && m.spool_bytes > 0 && m.spool_segments > 0, "{m:?}");
    assert!(!segment_files(&state).is_empty());
    let text = agent.prometheus_text();
    assert!(!text.contains("meshmon_agent_spool_batches 0\n"), "{text}");

    block_in_place(|| tansu.resume()).unwrap();
    let m = eventually_metrics(&agent, "spool drained after the broker came back", |m| {
        m.kafka_produced_records == 3500 && m.spool_batches == 0
    })
    .await;
    assert_eq!((m.dropped(), m.spool_dropped_batches), (0, 0));
    assert!(segment_files(&state).is_empty(), "segments deleted once every batch in them was acked");

    let msgs = consume(&tansu.bootstrap(), topic, "all 35 batches", |m| sequences(m).len() >= 35);
    let (names, duplicates) = dedup(&msgs);
    assert_eq!(sequences(&msgs), (1..=35).collect(), "the set of sequences is the set sent");
    assert_eq!(names, expected(0, 3500), "every record exactly once after (agent, sequence) dedup, in order");
    eprintln!("outage: {} messages for 35 batches ({duplicates} re-deliveries)", msgs.len());
    assert!(agent.shutdown().await.is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_spooled_at_shutdown_are_delivered_after_a_restart_before_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "records-restart";
    let mut tansu = start_tansu(dir.path(), topic);
    block_in_place(|| tansu.stop()).unwrap();
    let state = dir.path().join("agent");
    let config = kafka_config(&tansu.bootstrap(), topic, &state, 100);

    // Broker down for the whole life of the first agent.
    let agent = Agent::start(config.clone()).await.unwrap();
    push_batches(&agent, 0, 6, 100).await;
    eventually_metrics(&agent, "batches spooled", |m| m.spool_batches > 0).await;
    push_batches(&agent, 600, 4, 100).await; // in memory when the shutdown begins
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "spooled is not lost: {report:?}");
    assert_eq!((report.spooled_batches, report.spooled_records), (10, 1000), "{report:?}");
    assert_eq!(report.undelivered_batches, 0);
    let segments = segment_files(&state);
    assert!(!segments.is_empty());
    // A torn frame at the end of the last segment, as if the machine died while writing it.
    let last = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut f, &[7, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(f);

    block_in_place(|| tansu.resume()).unwrap();
    let agent = Agent::start(config).await.unwrap();
    let m = agent.metrics();
    assert_eq!((m.spool_batches, m.spool_corrupt_frames, m.spool_truncated_bytes), (10, 1, 7), "{m:?}");
    push_batches(&agent, 1000, 3, 100).await;
    eventually_metrics(&agent, "spooled and new batches produced", |m| {
        m.kafka_produced_batches == 13 && m.spool_batches == 0
    })
    .await;
    let msgs = consume(&tansu.bootstrap(), topic, "13 batches", |m| sequences(m).len() >= 13);
    let (names, _) = dedup(&msgs);
    assert_eq!(names, expected(0, 1300), "spooled batches first, then the new ones");
    let seqs: Vec<u64> = sequences(&msgs).into_iter().collect();
    assert_eq!(&seqs[..10], (1..=10).collect::<Vec<_>>(), "original sequence numbers kept");
    assert!(agent.shutdown().await.is_complete());
    assert!(segment_files(&state).is_empty());
}

/// Fills a small spool while the broker is down, then lets the broker back and returns the
/// agent's metrics and the sequences that reached the topic (30 batches were pushed).
async fn overflow(when_full: WhenFull) -> (MetricsSnapshot, BTreeSet<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("records-full-{}", when_full.as_str());
    let mut tansu = start_tansu(dir.path(), &topic);
    block_in_place(|| tansu.stop()).unwrap();
    let state = dir.path().join("agent");
    let mut config = kafka_config(&tansu.bootstrap(), &topic, &state, 100);
    // A batch of 100 records is about 7 KB: two per segment, about 8 in the spool.
    config.spool.segment_bytes = 16 * 1024;
    config.spool.max_bytes = 64 * 1024;
    config.spool.when_full = when_full;
    let agent = Agent::start(config).await.unwrap();
    push_batches(&agent, 0, 30, 100).await;
    let m = eventually_metrics(&agent, "every batch spooled or dropped", |m| {
        m.spool_batches + m.spool_dropped_batches == 30
    })
    .await;
    assert!(m.spool_dropped_batches > 0, "{m:?}");
    assert_eq!(
        (m.spool_dropped_records, m.dropped_spool_full),
        (100 * m.spool_dropped_batches, m.spool_dropped_records)
    );
    assert!(m.spool_bytes <= 64 * 1024, "{m:?}");
    let text = agent.prometheus_text();
    let line = format!("meshmon_agent_spool_dropped_batches_total {}", m.spool_dropped_batches);
    assert!(text.lines().any(|l| l == line), "{text}");

    block_in_place(|| tansu.resume()).unwrap();
    let m = eventually_metrics(&agent, "spool drained", |m| {
        m.spool_batches == 0 && m.in_flight == 0 && m.kafka_produced_batches + m.spool_dropped_batches == 30
    })
    .await;
    let delivered = 30 - m.spool_dropped_batches;
    assert_eq!(m.kafka_produced_batches, delivered);
    let msgs =
        consume(&tansu.bootstrap(), &topic, "the surviving batches", |msgs| sequences(msgs).len() as u64 >= delivered);
    dedup(&msgs);
    let seqs = sequences(&msgs);
    assert_eq!(seqs.len() as u64, delivered);
    assert!(agent.shutdown().await.is_complete());
    (m, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_the_oldest_batches_counted() {
    let (m, delivered) = overflow(WhenFull::Oldest).await;
    let missing: Vec<u64> = (1..=30).filter(|s| !delivered.contains(s)).collect();
    assert_eq!(missing.len() as u64, m.spool_dropped_batches);
    assert!(delivered.contains(&30) && delivered.contains(&29), "the newest survive: {delivered:?}");
    assert!(missing.iter().all(|s| *s < 29), "only older batches dropped: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_the_newest_batches_counted() {
    let (m, delivered) = overflow(WhenFull::Newest).await;
    let missing: Vec<u64> = (1..=30).filter(|s| !delivered.contains(s)).collect();
    assert_eq!(missing.len() as u64, m.spool_dropped_batches);
    assert!(delivered.contains(&1), "the oldest survive: {delivered:?}");
    let last_kept = delivered.iter().max().copied().unwrap_or(0);
    assert!(missing.iter().all(|s| *s > last_kept), "only the newest dropped: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_is_accepted_by_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "records-codecs";
    let tansu = start_tansu(dir.path(), topic);
    let codecs = [Compression::None, Compression::Lz4, Compression::Zstd, Compression::Gzip];
    for (i, codec) in codecs.into_iter().enumerate() {
        let mut config = kafka_config(&tansu.bootstrap(), topic, &dir.path().join(format!("agent-{i}")), 200);
        config.kafka.compression = codec;
        let agent = Agent::start(config).await.unwrap();
        push_batches(&agent, i * 200, 1, 200).await;
        let m = eventually_metrics(&agent, "batch produced", |m| m.kafka_produced_batches == 1 || m.rejected > 0).await;
        assert_eq!((m.kafka_produced_batches, m.rejected), (1, 0), "{codec:?}");
        assert!(agent.shutdown().await.is_complete());
    }
    let msgs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consume(&tansu.bootstrap(), topic, "one batch per codec", |m| m.len() >= codecs.len())
    }))
    .unwrap_or_else(|_| panic!("tansu log:\n{}", std::fs::read_to_string(tansu.log()).unwrap_or_default()));
    let names: Vec<String> = msgs.iter().flat_map(|m| m.batch.records.iter().map(|r| r.metric.clone())).collect();
    assert_eq!(names, expected(0, 200 * codecs.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_loses_nothing_and_keeps_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "records-midstream";
    let mut tansu = start_tansu(dir.path(), topic);
    let state = dir.path().join("agent");
    let agent = std::sync::Arc::new(Agent::start(kafka_config(&tansu.bootstrap(), topic, &state, 100)).await.unwrap());
    const BATCHES: usize = 200;
    let pusher = {
        let agent = agent.clone();
        tokio::spawn(async move { push_batches(&agent, 0, BATCHES, 100).await })
    };
    // Kill the broker while batches stream, let the spool take over, bring the broker back.
    eventually_metrics(&agent, "streaming started", |m| m.kafka_produced_batches >= 20).await;
    block_in_place(|| tansu.stop()).unwrap();
    eventually_metrics(&agent, "batches spooled", |m| m.spool_batches > 0).await;
    block_in_place(|| tansu.resume()).unwrap();
    pusher.await.unwrap();
    let m = eventually_metrics(&agent, "everything produced", |m| {
        m.kafka_produced_records == (BATCHES * 100) as u64 && m.spool_batches == 0 && m.in_flight == 0
    })
    .await;
    assert_eq!(m.dropped(), 0, "{m:?}");
    let msgs = consume(&tansu.bootstrap(), topic, "every batch", |m| sequences(m).len() >= BATCHES);
    let (names, duplicates) = dedup(&msgs);
    assert_eq!(sequences(&msgs), (1..=BATCHES as u64).collect());
    assert_eq!(names, expected(0, BATCHES * 100));
    eprintln!(
        "mid-stream kill: {} messages for {BATCHES} batches ({duplicates} re-deliveries), {} delivery failures",
        msgs.len(),
        m.kafka_delivery_failures
    );
    let agent = std::sync::Arc::into_inner(agent).unwrap();
    assert!(agent.shutdown().await.is_complete());
}

//! End-to-end throughput through a real Kafka-protocol broker (tansu, sqlite storage).
//!
//! `cargo run --release -p meshmon-aggregator --example kafka_throughput -- [records] [batch] [partitions]`
//! (defaults 1 000 000 records, 1 000 records per message, 3 partitions; needs `tansu`, see
//! `../shared/SERVERS.md`, and builds the release `meshmon-aggregator` if missing).
//!
//! Starts tansu in a temp dir, then measures three things and prints them:
//! 1. produce: reference-fleet `RecordBatch`es (one per message, 6 producer streams keyed by
//!    agent id, lz4, idempotent) into the input topic — records/s until every delivery is acked;
//! 2. catch-up: `meshmon-aggregator serve` in Kafka mode started on the full topic — records/s
//!    from start until every record is consumed and aggregated (lag 0), with checkpoints every
//!    10 s, the embedded store and the output topic on;
//! 3. live: a second batch of the same size produced while the aggregator runs — records/s from
//!    the first produce to the last record processed.

use std::time::{Duration, Instant};

use meshmon_aggregator::runtime::clock::now_nanos;
use meshmon_aggregator::synthetic;
use meshmon_proto::prost::Message as _;
use meshmon_tests::{KafkaAggregator, Tansu, http, prometheus_value, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const STREAMS: usize = 6;

fn produce(tansu: &Tansu, topic: &str, records: usize, batch: usize, age_secs: i64, first_sequence: u64) -> (u64, f64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap_or_else(|e| panic!("{e}"));
    let streams = synthetic::wire_batches(records, STREAMS, batch, now_nanos(), age_secs * 1_000_000_000);
    let encoded: Vec<(String, Vec<u8>)> = streams
        .into_iter()
        .flatten()
        .map(|mut b| {
            b.sequence += first_sequence;
            (b.agent_id.clone(), b.encode_to_vec())
        })
        .collect();
    let total: u64 = records as u64;
    let started = Instant::now();
    for (key, value) in &encoded {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(key.as_str()).payload(value.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(300)).unwrap_or_else(|e| panic!("flush: {e}"));
    (total, started.elapsed().as_secs_f64())
}

fn records_in(agg: &KafkaAggregator) -> f64 {
    let text = http("GET", agg.http, "/metrics", None).map(|r| r.text()).unwrap_or_default();
    prometheus_value(&text, "meshmon_kafka_records_in_total").unwrap_or(0.0)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.replace('_', "").parse().ok()).collect();
    let records = args.first().copied().unwrap_or(1_000_000);
    let batch = args.get(1).copied().unwrap_or(1_000);
    let partitions = args.get(2).copied().unwrap_or(3) as u32;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tansu = Tansu::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    for (t, p) in [("records", partitions), ("aggregates", 1), ("dead-letters", 1)] {
        tansu.create_topic(t, p).unwrap_or_else(|e| panic!("{e}"));
    }
    let (n, secs) = produce(&tansu, "records", records, batch, 3_600, 0);
    println!("produce:  {n} records in {secs:.2} s = {:.0} records/s ({batch} per message)", n as f64 / secs);

    let config = format!(
        "[engine]\nwindow = \"tumbling:10s\"\n[engine.limits]\nmax_past = \"0s\"\n[kafka]\nbrokers = \"{}\"\n\
         input_topic = \"records\"\noutput_topic = \"{}\"\ndead_letter_topic = \"dead-letters\"\n{}",
        tansu.bootstrap(),
        // NO_OUTPUT_TOPIC=1: measure without the aggregate output topic.
        if std::env::var_os("NO_OUTPUT_TOPIC").is_some() { "" } else { "aggregates" },
        std::env::var("KAFKA_PROPERTIES").map(|p| format!("properties = {{ {p} }}\n")).unwrap_or_default()
    );
    let started = Instant::now();
    let mut agg = KafkaAggregator::start(dir.path(), "aggregator", &config).unwrap_or_else(|e| panic!("{e}"));
    wait_for("the first record", Duration::from_secs(600), || (records_in(&agg) > 0.0).then_some(()))
        .unwrap_or_else(|e| panic!("{e}"));
    let first = started.elapsed().as_secs_f64();
    wait_for("catch-up", Duration::from_secs(3_600), || (records_in(&agg) >= n as f64).then_some(()))
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "catch-up: {n} records in {secs:.2} s = {:.0} records/s; {:.0} records/s after the first record ({first:.2} s: \
         process start, group join, restore)",
        n as f64 / secs,
        n as f64 / (secs - first)
    );

    let before = records_in(&agg);
    let started = Instant::now();
    let (m, _) = produce(&tansu, "records", records, batch, 1_800, 1_000_000);
    wait_for("live", Duration::from_secs(3_600), || (records_in(&agg) >= before + m as f64).then_some(()))
        .unwrap_or_else(|e| panic!("{e}"));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "live:     {m} records in {secs:.2} s = {:.0} records/s (produce + consume + aggregate + store)",
        m as f64 / secs
    );
    let text = http("GET", agg.http, "/metrics", None).map(|r| r.text()).unwrap_or_default();
    let get = |name: &str| prometheus_value(&text, name).unwrap_or(f64::NAN);
    println!(
        "checkpoints: {} written, last {:.0} ms, {:.1} MB ({} live series)",
        get("meshmon_checkpoints_total"),
        get("meshmon_checkpoint_duration_seconds") * 1e3,
        get("meshmon_checkpoint_size_bytes") / 1e6,
        text.lines()
            .filter(|l| l.starts_with("meshmon_series{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    );
    let _ = agg.terminate();
}

//! Produce rate of the agent's Kafka output into a local tansu broker.
//!
//! Role: a measurement, not a test. Starts tansu (sqlite storage, `meshmon_tests::Tansu`) in a
//! temporary directory, creates a one-partition topic, starts an in-process agent with
//! `output_kind = "kafka"` (default settings otherwise: lz4, idempotent, acks=all), pushes
//! `--records` records through the in-process push API in batches of `--batch` records, and
//! reports the rate from the first push to the broker's last acknowledgement (records/s,
//! messages/s, payload MB/s) and the mean produce latency. A warm-up of a few batches is not
//! counted. Touches a temporary directory, loopback sockets and the tansu child process.
//!
//!     cargo run --release -p meshmon-agent --example kafka_produce -- --records 1000000 --batch 1000
//!
//! Options: `--records N` (default 500000), `--batch B` (default 1000), `--compression
//! none|lz4|zstd|gzip` (default lz4), `--in-flight N` (default 64), `--linger D` (default 5ms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshmon_agent::config::Compression;
use meshmon_agent::record::{double_record, now_timestamp};
use meshmon_agent::{Agent, AgentHandle, Config, OutputKind};
use meshmon_proto::v1::{Record, RecordBatch};
use meshmon_tests::Tansu;

struct Options {
    records: usize,
    batch: usize,
    compression: Compression,
    in_flight: usize,
    linger: Duration,
}

fn options() -> Options {
    let mut o = Options {
        records: 500_000,
        batch: 1000,
        compression: Compression::Lz4,
        in_flight: 64,
        linger: Duration::from_millis(5),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--records" => o.records = value.parse().expect("--records N"),
            "--batch" => o.batch = value.parse().expect("--batch B"),
            "--in-flight" => o.in_flight = value.parse().expect("--in-flight N"),
            "--linger" => o.linger = meshmon_agent::duration::parse_duration(value).expect("--linger DURATION"),
            "--compression" => {
                o.compression = match value {
                    "none" => Compression::None,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    "gzip" => Compression::Gzip,
                    other => panic!("unknown --compression {other}"),
                }
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// Realistic records: a few metrics, cluster/node stamped by the agent, two tags.
fn batches(n: usize, size: usize) -> Vec<Vec<Record>> {
    let now = now_timestamp();
    let metrics = ["http.latency_ms", "orders.value", "cpu.user", "queue.depth"];
    let all: Vec<Record> = (0..n)
        .map(|i| {
            let mut r = double_record(metrics[i % metrics.len()], (i % 1000) as f64 * 0.5, now);
            r.tags.insert("shop".into(), format!("s{}", i % 16));
            r.tags.insert("route".into(), format!("/api/v{}", i % 4));
            r
        })
        .collect();
    all.chunks(size).map(<[Record]>::to_vec).collect()
}

async fn wait_produced(agent: &AgentHandle, records: u64) {
    while agent.metrics().kafka_produced_records < records {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path()).unwrap();
    tansu.create_topic("bench", 1).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config {
            agent_id: "bench-agent".into(),
            output_kind: OutputKind::Kafka,
            grpc_listen: any,
            http_listen: any,
            metrics_listen: any,
            batch_max_records: o.batch,
            batch_max_delay: Duration::from_secs(3600),
            max_in_flight: o.in_flight,
            state_dir: dir.path().join("agent"),
            ..Config::default()
        };
        config.plugins.system.enabled = false;
        config.kafka.brokers = vec![tansu.bootstrap()];
        config.kafka.topic = "bench".into();
        config.kafka.compression = o.compression;
        config.kafka.linger = o.linger;
        config.kafka.message_max_bytes = 64 << 20;
        let agent = Agent::start(config).await.unwrap();

        let warmup = 5 * o.batch;
        for b in batches(warmup, o.batch) {
            agent.push(b).await.unwrap();
        }
        wait_produced(&agent, warmup as u64).await;
        let before = agent.metrics();
        let work = batches(o.records, o.batch);
        let n_batches = work.len();
        let started = Instant::now();
        for b in work {
            agent.push(b).await.unwrap();
        }
        let pushed = started.elapsed();
        wait_produced(&agent, (warmup + o.records) as u64).await;
        let secs = started.elapsed().as_secs_f64();
        let after = agent.metrics();
        let latency_ms = (after.kafka_produce_latency_sum_us - before.kafka_produce_latency_sum_us) as f64
            / 1000.0
            / (after.kafka_produce_latency_count - before.kafka_produce_latency_count).max(1) as f64;
        let report = agent.shutdown().await;
        assert!(report.is_complete() && report.spooled_batches == 0, "{report:?}");
        assert_eq!(after.spooled_batches, 0, "nothing was spooled");
        // The size of one message value (uncompressed): the batch as the agent stamps it.
        let mut sample = batches(o.batch, o.batch).remove(0);
        let node = meshmon_agent::config::host_name();
        for r in &mut sample {
            r.node.clone_from(&node);
        }
        let value = RecordBatch {
            agent_id: "bench-agent".into(),
            sequence: 1,
            sent_at: Some(now_timestamp()),
            records: sample,
        };
        let approx_batch_bytes = prost::Message::encoded_len(&value);
        println!(
            "kafka produce to tansu: {} records in {} batches of {} ({:?}, max_in_flight {}, linger {:?}): {:.2} s, \
             {:.0} records/s, {:.0} messages/s, ~{:.1} MB/s uncompressed payload (~{} B/batch); \
             mean produce latency {:.1} ms; push phase {:.2} s",
            o.records,
            n_batches,
            o.batch,
            o.compression,
            o.in_flight,
            o.linger,
            secs,
            o.records as f64 / secs,
            n_batches as f64 / secs,
            (approx_batch_bytes * n_batches) as f64 / secs / 1e6,
            approx_batch_bytes,
            latency_ms,
            pushed.as_secs_f64(),
        );
    });
    drop(tansu);
}

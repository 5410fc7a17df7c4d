//! Kafka mode end to end with a real broker (tansu, sqlite storage): batches on the input
//! topic → `meshmon-aggregator serve` (Kafka source, checkpoints) → embedded store, and the
//! output and dead-letter topics.
//!
//! One input, two aggregators reading it in their own consumer groups with their own data:
//! `steady` runs untouched; `crashy` is killed with SIGKILL five times, at seeded random
//! points of its progress while the agents are producing (a feeder thread produces one round
//! of batches every 800 ms), and restarted each time. Both must end with exactly the aggregates of a brute-force
//! fold over the input (so also identical to each other), `crashy` must hold every raw record
//! once, and the records sent too late must be in neither.
//!
//! The input is built so no verdict depends on timing: records are out of order by up to 4 s
//! (twice the out-of-orderness, so some arrive after their window fired and correct it) but
//! never by the 60 s allowed lateness; values are integers or decimals, so sums are exact in
//! any order. Closing markers (metric `k.end`) are produced only after all data, and the late
//! records only once both aggregators have *checkpointed* a watermark past them, so even a
//! restart restores a watermark that makes them late. Nothing sleeps: every wait polls
//! `/metrics` or the API with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::prost::Message as _;
use meshmon_proto::v1::{self, Decimal, RecordBatch};
use meshmon_tests::oracle::{
    self, Num, OracleRecord, check_aggregates, fleet_raw_records, metric, metrics_text, points, raw_id,
};
use meshmon_tests::{KafkaAggregator, LogsOnFailure, Tansu, prometheus_value, wait_for};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const WINDOW_MS: i64 = 10_000;
const OUT_OF_ORDERNESS_MS: i64 = 2_000;
const AGENTS: usize = 6;
const BATCHES: u64 = 40;
const PER_BATCH: u32 = 100;
const LATE_RECORDS: u32 = 20;
const TIMEOUT: Duration = Duration::from_secs(120);
const METRICS: [&str; 2] = ["k.ops", "k.price"];

#[derive(Debug, Clone)]
enum Val {
    F(i64),
    Dec(i128),
}

#[derive(Debug, Clone)]
struct Rec {
    agent: String,
    sequence: u64,
    index: u32,
    metric: &'static str,
    value: Val,
    at: i64,
    cluster: String,
    node: String,
    env: &'static str,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `BATCHES` batches of `PER_BATCH` records per agent over 40 s of event time from `base`.
fn generate(seed: u64, base: i64) -> Vec<Vec<Rec>> {
    let mut rng = Rng(seed | 1);
    let mut batches = Vec::new();
    for sequence in 1..=BATCHES {
        for a in 0..AGENTS {
            let records = (0..PER_BATCH)
                .map(|index| {
                    let nominal = base + (sequence as i64 - 1) * 1_000 + i64::from(index) * 10;
                    let disorder = if rng.below(10) == 0 { rng.below(4_000) } else { rng.below(1_500) };
                    let (metric, value) = if index % 2 == 0 {
                        ("k.ops", Val::F(rng.below(1_000) as i64))
                    } else {
                        ("k.price", Val::Dec(i128::from(rng.below(100_000)) * 10_000_000))
                    };
                    Rec {
                        agent: format!("kafka-agent-{a}"),
                        sequence,
                        index,
                        metric,
                        value,
                        at: nominal - disorder as i64,
                        cluster: format!("c{}", a % 2),
                        node: format!("n{a}"),
                        env: if a % 3 == 0 { "dev" } else { "prod" },
                    }
                })
                .collect();
            batches.push(records);
        }
    }
    batches
}

/// One record of `metric` at `at` from every agent, under sequence `sequence`.
fn markers(base_at: i64, sequence: u64) -> Vec<Vec<Rec>> {
    (0..AGENTS)
        .map(|a| {
            vec![Rec {
                agent: format!("kafka-agent-{a}"),
                sequence,
                index: 0,
                metric: "k.end",
                value: Val::F(1),
                at: base_at,
                cluster: format!("c{}", a % 2),
                node: format!("n{a}"),
                env: "prod",
            }]
        })
        .collect()
}

fn encode(records: &[Rec]) -> (String, Vec<u8>) {
    let first = &records[0];
    let wire = records
        .iter()
        .map(|r| v1::Record {
            metric: r.metric.into(),
            value: Some(match r.value {
                Val::F(v) => v1::record::Value::DoubleValue(v as f64),
                Val::Dec(n) => v1::record::Value::DecimalValue(Decimal::from_nano_units(n).unwrap()),
            }),
            event_time: Some(nanos_to_timestamp(r.at * 1_000_000)),
            cluster: r.cluster.clone(),
            node: r.node.clone(),
            tags: [("env".to_string(), r.env.to_string())].into(),
            raw: None,
        })
        .collect();
    let batch = RecordBatch { agent_id: first.agent.clone(), sequence: first.sequence, sent_at: None, records: wire };
    (first.agent.clone(), batch.encode_to_vec())
}

fn producer(tansu: &Tansu) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

fn produce(p: &BaseProducer, topic: &str, batches: &[Vec<Rec>]) {
    let encoded: Vec<(String, Vec<u8>)> = batches.iter().map(|b| encode(b)).collect();
    meshmon_tests::tansu::produce_all(p, topic, encoded.iter().map(|(k, v)| (k.as_bytes(), v.clone()))).unwrap();
}

// ------------------------------------------------------------------ the oracle

impl OracleRecord for Rec {
    fn metric(&self) -> &str {
        self.metric
    }
    fn dimension_keys(&self) -> Vec<String> {
        vec![
            "fleet".into(),
            format!("cluster={}", self.cluster),
            format!("node={}", self.node),
            format!("tag:env={}", self.env),
        ]
    }
    fn at(&self) -> i64 {
        self.at
    }
    fn value(&self) -> Num {
        match self.value {
            Val::F(v) => Num::Double(v as f64),
            Val::Dec(n) => Num::Decimal(n),
        }
    }
    fn id(&self) -> (String, u64, u32) {
        (self.agent.clone(), self.sequence, self.index)
    }
}

type Expected<'a> = oracle::Expected<'a, Rec>;

fn expected_points(records: &[Rec]) -> Expected<'_> {
    oracle::expected_points(records, WINDOW_MS)
}

/// Every raw record behind every fleet point, as (agent, sequence, index); fails on a repeat.
fn raw_identities(addr: SocketAddr, expected: &Expected<'_>) -> Result<BTreeSet<(String, u64, u32)>, String> {
    let mut all = BTreeSet::new();
    for r in fleet_raw_records(addr, expected)? {
        let id = raw_id(&r);
        if !all.insert(id.clone()) {
            return Err(format!("raw record {id:?} returned twice"));
        }
    }
    Ok(all)
}

fn config(tansu: &Tansu, group: &str, topics: &Topics) -> String {
    format!(
        r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "2s"
allowed_lateness = "60s"
idle_timeout = "0s"
shards = 2

[kafka]
brokers = "{}"
input_topic = "{}"
group_id = "{group}"
output_topic = "{}"
dead_letter_topic = "{}"
merge_wait = "10s"
properties = {{ "session.timeout.ms" = "3000", "heartbeat.interval.ms" = "500" }}

[checkpoint]
every = "300ms"
"#,
        tansu.bootstrap(),
        topics.input,
        topics.output,
        topics.dead
    )
}

struct Topics {
    input: String,
    output: String,
    dead: String,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Waits until `agg` checkpointed a watermark of at least `at` (ms).
fn wait_checkpointed_watermark(agg: &KafkaAggregator, at: i64) {
    wait_for("a checkpoint past the closing markers", TIMEOUT, || {
        let wm = metric(agg.http, "meshmon_checkpoint_watermark_seconds")?;
        ((wm * 1000.0) as i64 >= at).then_some(())
    })
    .unwrap();
}

#[test]
fn crashes_and_restarts_give_the_same_exact_aggregates_as_an_uncrashed_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    let topics = Topics { input: "records".into(), output: "aggregates".into(), dead: "dead-letters".into() };
    tansu.create_topic(&topics.input, 3).unwrap();
    tansu.create_topic(&topics.output, 1).unwrap();
    tansu.create_topic(&topics.dead, 1).unwrap();

    let mut steady = KafkaAggregator::start(dir.path(), "steady", &config(&tansu, "steady", &topics)).unwrap();
    logs.0.push(("steady".into(), steady.log()));
    let mut crashy = KafkaAggregator::start(dir.path(), "crashy", &config(&tansu, "crashy", &topics)).unwrap();
    logs.0.push(("crashy".into(), crashy.log()));

    // An hour ago, on a window boundary.
    let base = (now_ms() - 3_600_000).div_euclid(WINDOW_MS) * WINDOW_MS;
    let seed = 0x5eed_0004;
    let batches = generate(seed, base);
    let p = producer(&tansu);
    // The agents produce live: one sequence (AGENTS batches) every 800 ms, about 32 s in all,
    // while `crashy` is killed and restarted; each restart then also catches up a backlog.
    let feeder = {
        let (p, topic, batches) = (producer(&tansu), topics.input.clone(), batches.clone());
        std::thread::spawn(move || {
            for round in batches.chunks(AGENTS) {
                produce(&p, &topic, round);
                std::thread::sleep(Duration::from_millis(800));
            }
        })
    };

    // Kill `crashy` at seeded random points of its progress, restarting it each time: after a
    // random number of messages since its start, every other time only once it has also
    // written a checkpoint (so it moves on), otherwise possibly before (a replay of the same
    // stretch).
    let mut rng = Rng(seed ^ 0xdead_beef);
    let mut kills = Vec::new();
    while kills.len() < 5 {
        let target = 3.0 + rng.below(25) as f64;
        let need_checkpoint = kills.len() % 2 == 0;
        let at = wait_for("crashy progressing", TIMEOUT, || {
            let text = metrics_text(crashy.http);
            let messages = prometheus_value(&text, "meshmon_kafka_messages_in_total")?;
            let checkpoints = prometheus_value(&text, "meshmon_checkpoints_total")?;
            (messages >= target && (!need_checkpoint || checkpoints >= 1.0)).then_some((messages, checkpoints))
        })
        .unwrap();
        crashy.kill9().unwrap();
        kills.push((at, !feeder.is_finished()));
        crashy.restart().unwrap();
    }
    eprintln!("crashy killed after ((messages, checkpoints) since each start, agents still producing): {kills:?}");
    feeder.join().unwrap();
    // Closing markers only after every data batch is in the log.
    let close_at = base + 1_000_000;
    produce(&p, &topics.input, &markers(close_at, BATCHES + 1));

    // Late records: only once both have checkpointed a watermark past them.
    wait_checkpointed_watermark(&steady, close_at - OUT_OF_ORDERNESS_MS);
    wait_checkpointed_watermark(&crashy, close_at - OUT_OF_ORDERNESS_MS);
    let late: Vec<Rec> = (0..LATE_RECORDS)
        .map(|index| Rec {
            agent: "kafka-late".into(),
            sequence: 1,
            index,
            metric: "k.ops",
            value: Val::F(1_000_000),
            at: base + 5_000 + i64::from(index),
            cluster: "c0".into(),
            node: "n0".into(),
            env: "prod",
        })
        .collect();
    produce(&p, &topics.input, &[late]);
    produce(&p, &topics.input, &markers(close_at + 1_000_000, BATCHES + 2));
    // One more crash after the late records.
    crashy.kill9().unwrap();
    crashy.restart().unwrap();

    let records: Vec<Rec> = batches.into_iter().flatten().collect();
    let expected = expected_points(&records);
    let (from, to) = (base - 60_000, base + 120_000);
    for agg in [&steady, &crashy] {
        let mut last = String::new();
        let ok = wait_for("aggregates equal to the oracle", TIMEOUT, || {
            match check_aggregates(agg.http, &expected, from, to) {
                Ok(()) => Some(()),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        if ok.is_err() {
            let text = metrics_text(agg.http);
            let counters: Vec<&str> =
                text.lines().filter(|l| l.starts_with("meshmon_") && !l.contains("_bucket")).collect();
            panic!(
                "{}: aggregates never matched the oracle; last difference: {last}\nmetrics:\n{}",
                agg.log().display(),
                counters.join("\n")
            );
        }
        wait_for("the late records counted", TIMEOUT, || {
            (metric(agg.http, "meshmon_records_late_total")? >= f64::from(LATE_RECORDS)).then_some(())
        })
        .unwrap();
        assert_eq!(metric(agg.http, "meshmon_records_late_total"), Some(f64::from(LATE_RECORDS)));
    }
    // Every raw record once in the crashed run's store.
    let want: BTreeSet<(String, u64, u32)> = records.iter().map(|r| (r.agent.clone(), r.sequence, r.index)).collect();
    let got = raw_identities(crashy.http, &expected).unwrap();
    assert_eq!(got.len(), want.len(), "raw records: {} stored, {} sent", got.len(), want.len());
    assert_eq!(got, want);

    // The output topic holds every aggregate point (latest revision per key = the oracle's).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topics.output.as_str()]).unwrap();
    let mut latest: BTreeMap<Vec<u8>, (u32, u64)> = BTreeMap::new();
    let points: usize = expected.values().map(BTreeMap::len).sum();
    wait_for("the output topic", TIMEOUT, || {
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = m.key().unwrap_or_default().to_vec();
            if let Some(v) = m.payload() {
                let u = v1::AggregateUpdate::decode(v).unwrap();
                if METRICS.contains(&u.metric.as_str()) {
                    let point = u.point.unwrap();
                    let count = point.stats.map_or(0, |s| s.count);
                    let e = latest.entry(key).or_insert((point.revision, count));
                    if point.revision >= e.0 {
                        *e = (point.revision, count);
                    }
                }
            }
        }
        (latest.len() >= points).then_some(())
    })
    .unwrap();
    let total: u64 = latest.values().map(|(_, c)| c).sum();
    let expected_total: usize = expected.values().flat_map(|p| p.values()).map(Vec::len).sum();
    assert_eq!(latest.len(), points, "one key per aggregate point");
    assert_eq!(total, expected_total as u64, "latest revisions sum to the oracle's counts");

    for agg in [&mut steady, &mut crashy] {
        let status = agg.terminate().unwrap();
        assert!(status.success(), "clean stop: {status}");
    }
}

#[test]
fn garbage_goes_to_the_dead_letter_topic_and_the_pipeline_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    let topics = Topics { input: "in".into(), output: "out".into(), dead: "dead".into() };
    tansu.create_topic(&topics.input, 1).unwrap();
    tansu.create_topic(&topics.output, 1).unwrap();
    tansu.create_topic(&topics.dead, 1).unwrap();
    let mut agg = KafkaAggregator::start(dir.path(), "agg", &config(&tansu, "g", &topics)).unwrap();
    logs.0.push(("agg".into(), agg.log()));

    let base = (now_ms() - 600_000).div_euclid(WINDOW_MS) * WINDOW_MS;
    let p = producer(&tansu);
    let rec = |sequence: u64, at: i64| Rec {
        agent: "g-agent".into(),
        sequence,
        index: 0,
        metric: "k.ops",
        value: Val::F(7),
        at,
        cluster: "c".into(),
        node: "n".into(),
        env: "prod",
    };
    produce(&p, &topics.input, &[vec![rec(1, base + 1_000)]]);
    // Not protobuf (wire type 7), a RecordBatch without agent id, a message without a value.
    let garbage: [(&[u8], Option<&[u8]>); 3] = [
        (b"junk-key", Some(b"\xff\xff\xff\xff not a RecordBatch")),
        (
            b"anon",
            Some(&RecordBatch { agent_id: String::new(), sequence: 1, sent_at: None, records: vec![] }.encode_to_vec()),
        ),
        (b"empty", None),
    ];
    for (key, value) in &garbage {
        let mut r = BaseRecord::<[u8], [u8]>::to(&topics.input).key(*key);
        if let Some(v) = value {
            r = r.payload(*v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    // The pipeline goes on: later batches are aggregated and close the first window.
    produce(&p, &topics.input, &[vec![rec(2, base + 2_000)], vec![rec(3, base + 30_000)]]);

    wait_for("the dead-letter counter", TIMEOUT, || {
        (metric(agg.http, "meshmon_kafka_dead_lettered_total")? >= 3.0).then_some(())
    })
    .unwrap();
    wait_for("the first window aggregated", TIMEOUT, || {
        let points = points(agg.http, "k.ops", "fleet", base - 10_000, base + 20_000).ok()?;
        (points.first()?["count"].as_u64()? == 2).then_some(())
    })
    .unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("group.id", "dead-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topics.dead.as_str()]).unwrap();
    /// (key, value, source header, reason header)
    type DeadLetter = (Vec<u8>, Option<Vec<u8>>, String, String);
    let mut dead: Vec<DeadLetter> = Vec::new();
    wait_for("three dead letters", TIMEOUT, || {
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default()
            };
            dead.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
                header("meshmon.source"),
                header("meshmon.reason"),
            ));
        }
        (dead.len() >= 3).then_some(())
    })
    .unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for ((key, value), (dkey, dvalue, source, reason)) in garbage.iter().zip(&dead) {
        assert_eq!(dkey.as_slice(), *key, "key kept");
        assert_eq!(dvalue.as_deref(), *value, "value kept unchanged");
        assert!(source.starts_with("in/0/"), "source header: {source}");
        assert!(!reason.is_empty(), "reason header");
    }
    assert!(dead[0].3.contains("protobuf"), "{}", dead[0].3);
    assert!(dead[1].3.contains("agent_id"), "{}", dead[1].3);
    assert_eq!(metric(agg.http, "meshmon_kafka_dead_lettered_total"), Some(3.0));
    assert!(agg.terminate().unwrap().success());
}

#[test]
fn a_rebalance_checkpoints_before_revocation_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    let topics = Topics { input: "rb-in".into(), output: "rb-out".into(), dead: "rb-dead".into() };
    tansu.create_topic(&topics.input, 3).unwrap();
    tansu.create_topic(&topics.output, 1).unwrap();
    tansu.create_topic(&topics.dead, 1).unwrap();
    let agg = KafkaAggregator::start(dir.path(), "member", &config(&tansu, "rb-group", &topics)).unwrap();
    logs.0.push(("member".into(), agg.log()));
    let log_count = |what: &str| std::fs::read_to_string(agg.log()).unwrap_or_default().matches(what).count();

    let base = (now_ms() - 3_600_000).div_euclid(WINDOW_MS) * WINDOW_MS;
    let batches = generate(0x5eed_0005, base);
    let (first, second) = batches.split_at(batches.len() / 2);
    let p = producer(&tansu);
    produce(&p, &topics.input, first);
    let half: usize = first.iter().map(Vec::len).sum();
    wait_for("the first half consumed", TIMEOUT, || {
        (metric(agg.http, "meshmon_kafka_records_in_total")? >= half as f64).then_some(())
    })
    .unwrap();

    // A second member joins the group: the aggregator must checkpoint before giving partitions up.
    let checkpoints_before = log_count("kafka partitions revoked: checkpointing first");
    let intruder: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("group.id", "rb-group")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("partition.assignment.strategy", "range")
        .create()
        .unwrap();
    intruder.subscribe(&[topics.input.as_str()]).unwrap();
    wait_for("a rebalance that takes partitions from the aggregator", TIMEOUT, || {
        let _ = intruder.poll(Duration::from_millis(100));
        let mine = intruder.assignment().ok()?.count();
        (mine > 0 && log_count("kafka partitions revoked: checkpointing first") > checkpoints_before).then_some(())
    })
    .unwrap();
    // While the intruder holds some partitions, the rest of the data arrives.
    produce(&p, &topics.input, second);
    // It leaves without committing anything; the aggregator gets everything back and resumes
    // every partition from its own checkpointed offsets.
    let assigned_before = log_count("kafka partitions assigned");
    drop(intruder);
    wait_for("the partitions back", TIMEOUT, || {
        (log_count("kafka partitions assigned") > assigned_before).then_some(())
    })
    .unwrap();
    let close_at = base + 1_000_000;
    produce(&p, &topics.input, &markers(close_at, BATCHES + 1));
    produce(&p, &topics.input, &markers(close_at + 1_000_000, BATCHES + 2));

    let records: Vec<Rec> = batches.into_iter().flatten().collect();
    let expected = expected_points(&records);
    let mut last = String::new();
    let ok = wait_for("aggregates equal to the oracle", TIMEOUT, || {
        match check_aggregates(agg.http, &expected, base - 60_000, base + 120_000) {
            Ok(()) => Some(()),
            Err(e) => {
                last = e;
                None
            }
        }
    });
    assert!(ok.is_ok(), "after the rebalance the aggregates never matched the oracle: {last}");
    let want: BTreeSet<(String, u64, u32)> = records.iter().map(|r| (r.agent.clone(), r.sequence, r.index)).collect();
    assert_eq!(raw_identities(agg.http, &expected).unwrap(), want, "every raw record exactly once");
    assert_eq!(metric(agg.http, "meshmon_duplicate_batches_total"), Some(0.0));
}

//! Agents → Kafka → aggregator, through the real binaries and a real broker (tansu), with a
//! broker outage in the middle.
//!
//! Three `meshmon-agent`s with the Kafka output take records over their HTTP push API;
//! `meshmon-aggregator serve` consumes the topic. Halfway, tansu is stopped (SIGKILL) for more
//! than 20 s while the agents keep taking records — they spool them to disk — and then
//! restarted on the same data. Every record must land exactly once: the aggregates equal a
//! brute-force fold over everything pushed (out of order, with corrections), every raw record
//! is stored once, and the records sent too late (after the aggregator checkpointed a
//! watermark past them) are in no aggregate and counted as late.
//!
//! Event times are unique, values are integers or decimals (exact sums in any order). Nothing
//! sleeps to synchronise: waits poll `/metrics` and the API with deadlines; the only timed part
//! is the outage itself, during which the test pushes a chunk per agent every 250 ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshmon_proto::v1::Decimal;
use meshmon_tests::oracle::{self, Num, OracleRecord, check_aggregates, fleet_raw_records, metric, raw_id};
use meshmon_tests::{KafkaAggregator, LogsOnFailure, Proc, Tansu, binary, http, path_str, wait_for};
use serde_json::{Value as Json, json};

const WINDOW_MS: i64 = 10_000;
const OUT_OF_ORDERNESS_MS: i64 = 2_000;
const AGENTS: usize = 3;
const OUTAGE: Duration = Duration::from_secs(21);
const TIMEOUT: Duration = Duration::from_secs(180);
const METRICS: [&str; 2] = ["a.ops", "a.price"];

#[derive(Debug, Clone)]
struct Rec {
    agent: usize,
    metric: &'static str,
    /// Integer double, or decimal nano-units.
    value: Result<i64, i128>,
    at: i64,
}

fn node(agent: usize) -> String {
    format!("host-{agent}")
}

fn json_line(r: &Rec) -> String {
    let value = match r.value {
        Ok(v) => json!(v as f64),
        Err(n) => json!(Decimal::from_nano_units(n).unwrap().to_string()),
    };
    json!({"metric": r.metric, "value": value, "time": r.at, "cluster": "kc", "node": node(r.agent),
           "tags": {"env": "prod"}})
    .to_string()
}

struct Agent {
    proc: Proc,
    http: SocketAddr,
    metrics: SocketAddr,
}

fn start_agent(dir: &Path, i: usize, brokers: &str) -> Agent {
    let config = dir.join(format!("agent-{i}.toml"));
    let state = dir.join(format!("agent-{i}-state"));
    std::fs::write(
        &config,
        format!(
            r#"agent_id = "kafka-e2e-{i}"
cluster = "kc"
node = "{}"
output_kind = "kafka"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
batch_max_records = 50
batch_max_delay = "20ms"
state_dir = "{}"
shutdown_timeout = "20s"

[kafka]
brokers = ["{brokers}"]
topic = "records"
delivery_timeout = "3s"

[plugins.system]
enabled = false
"#,
            node(i),
            state.display()
        ),
    )
    .unwrap();
    let bin = binary("meshmon-agent", "meshmon-agent").unwrap();
    let args = ["--config", path_str(&config).unwrap(), "--print-addresses"];
    let mut proc = Proc::start(&format!("agent-{i}"), &bin, &args, &[("MESHMON_AGENT_LOG", "info")], dir).unwrap();
    let (http, metrics) = proc
        .wait_for_log_line("the agent's addresses", TIMEOUT, |line| {
            let v: Json = serde_json::from_str(line).ok()?;
            Some((v["http"].as_str()?.parse().ok()?, v["metrics"].as_str()?.parse().ok()?))
        })
        .unwrap();
    Agent { proc, http, metrics }
}

fn push(agent: &Agent, records: &[Rec]) {
    let body: String = records.iter().map(|r| json_line(r) + "\n").collect();
    let resp = http("POST", agent.http, "/v1/records", Some(("application/x-ndjson", body.as_bytes()))).unwrap();
    assert_eq!(resp.status, 200, "agent push: {}", resp.text());
}

/// Generates the records of chunk `chunk` for every agent: 20 records each, event times unique
/// (agent in the last digit), shuffled by up to 3 s within the chunk.
fn chunk(base: i64, chunk: i64) -> Vec<Vec<Rec>> {
    (0..AGENTS)
        .map(|agent| {
            let mut recs: Vec<Rec> = (0..20i64)
                .map(|j| {
                    let g = chunk * 20 + j;
                    let at = base + g * 30 + agent as i64;
                    let (metric, value) = if j % 2 == 0 {
                        ("a.ops", Ok((g * 7 + agent as i64) % 500))
                    } else {
                        ("a.price", Err(i128::from((g * 13 + agent as i64) % 10_000) * 10_000_000))
                    };
                    Rec { agent, metric, value, at }
                })
                .collect();
            // Disorder: every third chunk arrives newest first (20 × 30 ms < 2 s of out-of-orderness),
            // and every fifth chunk's first record is 3 s older than its neighbours.
            if chunk % 3 == 0 {
                recs.reverse();
            }
            if chunk % 5 == 0 {
                recs[0].at -= 3_010;
            }
            recs
        })
        .collect()
}

impl OracleRecord for Rec {
    fn metric(&self) -> &str {
        self.metric
    }
    fn dimension_keys(&self) -> Vec<String> {
        vec!["fleet".into(), "cluster=kc".into(), format!("node={}", node(self.agent)), "tag:env=prod".into()]
    }
    fn at(&self) -> i64 {
        self.at
    }
    fn value(&self) -> Num {
        match self.value {
            Ok(v) => Num::Double(v as f64),
            Err(n) => Num::Decimal(n),
        }
    }
}

/// (time, value) of every raw record behind the fleet points, sorted; fails on an identity
/// seen twice.
fn raw_rows(addr: SocketAddr, expected: &oracle::Expected<'_, Rec>) -> Result<Vec<(i64, String)>, String> {
    let mut ids = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for r in fleet_raw_records(addr, expected)? {
        let id = raw_id(&r);
        if !ids.insert(id.clone()) {
            return Err(format!("raw record {id:?} twice"));
        }
        rows.push((r["time"].as_i64().unwrap_or_default(), r["value"].to_string()));
    }
    rows.sort();
    Ok(rows)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn agents_through_kafka_with_a_broker_outage_land_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let mut tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    for (t, p) in [("records", 3), ("aggregates", 1), ("dead-letters", 1)] {
        tansu.create_topic(t, p).unwrap();
    }
    let agg_config = format!(
        r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "2s"
allowed_lateness = "10m"
idle_timeout = "0s"

[kafka]
brokers = "{}"
input_topic = "records"
output_topic = "aggregates"
dead_letter_topic = "dead-letters"
merge_wait = "10s"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }}

[checkpoint]
every = "500ms"
"#,
        tansu.bootstrap()
    );
    let agg = KafkaAggregator::start(dir.path(), "aggregator", &agg_config).unwrap();
    logs.0.push(("aggregator".into(), agg.log()));
    let agents: Vec<Agent> = (0..AGENTS).map(|i| start_agent(dir.path(), i, &tansu.bootstrap())).collect();
    for a in &agents {
        logs.add(&a.proc);
    }

    let base = (now_ms() - 3_600_000).div_euclid(WINDOW_MS) * WINDOW_MS;
    let mut sent: Vec<Rec> = Vec::new();
    let mut next = 0i64;
    let mut push_chunk = |sent: &mut Vec<Rec>| {
        for (agent, recs) in agents.iter().zip(chunk(base, next)) {
            push(agent, &recs);
            sent.extend(recs);
        }
        next += 1;
    };
    for _ in 0..10 {
        push_chunk(&mut sent);
    }
    wait_for("the first records aggregated", TIMEOUT, || {
        (metric(agg.http, "meshmon_kafka_records_in_total")? >= sent.len() as f64).then_some(())
    })
    .unwrap();

    // The outage: the broker is gone for more than 20 s while the agents keep taking records.
    tansu.stop().unwrap();
    let down = Instant::now();
    while down.elapsed() < OUTAGE {
        push_chunk(&mut sent);
        std::thread::sleep(Duration::from_millis(250));
    }
    let spooled: f64 =
        agents.iter().map(|a| metric(a.metrics, "meshmon_agent_spooled_records_total").unwrap_or(0.0)).sum();
    assert!(spooled > 0.0, "the agents spooled nothing during the outage");
    tansu.resume().unwrap();
    for _ in 0..10 {
        push_chunk(&mut sent);
    }
    let total = sent.len();
    wait_for("every record consumed", TIMEOUT, || {
        (metric(agg.http, "meshmon_kafka_records_in_total")? >= total as f64).then_some(())
    })
    .unwrap();

    // Close every window, then — once a checkpoint holds a watermark past them — send late records.
    let close_at = base + 1_000_000;
    let marker = |agent: usize, at: i64| Rec { agent, metric: "a.end", value: Ok(1), at };
    for (i, a) in agents.iter().enumerate() {
        push(a, &[marker(i, close_at + i as i64)]);
    }
    wait_for("a checkpointed watermark past the data", TIMEOUT, || {
        let wm = metric(agg.http, "meshmon_checkpoint_watermark_seconds")?;
        ((wm * 1000.0) as i64 >= close_at - OUT_OF_ORDERNESS_MS).then_some(())
    })
    .unwrap();
    let late: Vec<Rec> =
        (0..10).map(|j| Rec { agent: 0, metric: "a.ops", value: Ok(100_000), at: base + 1_000 + j }).collect();
    push(&agents[0], &late);
    for (i, a) in agents.iter().enumerate() {
        push(a, &[marker(i, close_at + 1_000_000 + i as i64)]);
    }

    let expected = oracle::expected_points(&sent, WINDOW_MS);
    let (from, to) = (base - 60_000, close_at);
    let mut last = String::new();
    let matched =
        wait_for("aggregates equal to the oracle", TIMEOUT, || match check_aggregates(agg.http, &expected, from, to) {
            Ok(()) => Some(()),
            Err(e) => {
                last = e;
                None
            }
        });
    assert!(matched.is_ok(), "aggregates never matched the oracle; last difference: {last}");
    wait_for("the late records counted", TIMEOUT, || {
        (metric(agg.http, "meshmon_records_late_total")? >= 10.0).then_some(())
    })
    .unwrap();
    assert_eq!(metric(agg.http, "meshmon_records_late_total"), Some(10.0));

    let mut want: Vec<(i64, String)> = sent
        .iter()
        .filter(|r| METRICS.contains(&r.metric))
        .map(|r| {
            let v = match r.value {
                Ok(v) => json!(v as f64).to_string(),
                Err(n) => oracle::decimal_text(n).to_string(),
            };
            (r.at, v)
        })
        .collect();
    want.sort();
    let got = raw_rows(agg.http, &expected).unwrap();
    assert_eq!(got.len(), want.len(), "raw records stored vs pushed");
    assert_eq!(got, want);
    eprintln!("{total} records pushed by {AGENTS} agents, {spooled} spooled during a {OUTAGE:?} outage");
}

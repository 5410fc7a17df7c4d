//! `meshmon-aggregator replay` against a real broker (tansu): rebuilding a time range from the
//! input topic into an empty store gives exactly the live aggregator's points inside the range,
//! and replaying twice changes nothing (every write is keyed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::prost::Message as _;
use meshmon_proto::v1::{self, RecordBatch};
use meshmon_tests::{Aggregator, KafkaAggregator, LogsOnFailure, Tansu, binary, get_json, oracle, path_str, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(120);

fn rfc3339(ms: i64) -> String {
    // Days → civil date (Howard Hinnant's algorithm), written independently of the product's parser.
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

fn points(addr: std::net::SocketAddr, metric: &str, key: &str, from: i64, to: i64) -> Vec<Json> {
    oracle::points(addr, metric, key, from, to).unwrap()
}

#[test]
fn replay_rebuilds_a_time_range_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    for (t, p) in [("records", 2), ("aggregates", 1), ("dead-letters", 1)] {
        tansu.create_topic(t, p).unwrap();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let base = (now - 1_800_000).div_euclid(10_000) * 10_000;
    // Two agents, 120 s of event time, one record per 100 ms each, values = index.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", tansu.bootstrap()).create().unwrap();
    for seq in 1..=12u64 {
        for agent in ["r-a", "r-b"] {
            let records = (0..100)
                .map(|i| {
                    let at = base + (seq as i64 - 1) * 10_000 + i * 100 + i64::from(agent == "r-b");
                    v1::Record {
                        metric: "r.val".into(),
                        value: Some(v1::record::Value::DoubleValue((i % 17) as f64)),
                        event_time: Some(nanos_to_timestamp(at * 1_000_000)),
                        cluster: "rc".into(),
                        node: agent.into(),
                        ..Default::default()
                    }
                })
                .collect();
            let b = RecordBatch { agent_id: agent.into(), sequence: seq, sent_at: None, records };
            producer
                .send(BaseRecord::to("records").key(agent).payload(&b.encode_to_vec()))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let config = format!(
        "[engine]\nwindow = \"tumbling:10s\"\nout_of_orderness = \"1s\"\nallowed_lateness = \"5s\"\nidle_timeout = \"0s\"\n\
         [kafka]\nbrokers = \"{}\"\ninput_topic = \"records\"\noutput_topic = \"aggregates\"\n\
         dead_letter_topic = \"dead-letters\"\nmerge_wait = \"10s\"\n[checkpoint]\nevery = \"500ms\"\n",
        tansu.bootstrap()
    );
    // The live run: every window but the last fires.
    let mut live = KafkaAggregator::start(dir.path(), "live", &config).unwrap();
    logs.0.push(("live".into(), live.log()));
    let last_full = base + 100_000;
    wait_for("the live windows", TIMEOUT, || {
        (points(live.http, "r.val", "fleet", base, base + 200_000)
            .iter()
            .any(|p| p["start"].as_i64() == Some(last_full)))
        .then_some(())
    })
    .unwrap();
    let keys = ["fleet", "cluster=rc", "node=r-a", "node=r-b"];
    // The range: windows 20 s … 90 s (whole windows only).
    let (from, to) = (base + 20_000, base + 90_000);
    let live_points: Vec<Vec<Json>> = keys.iter().map(|k| points(live.http, "r.val", k, from, to)).collect();
    assert!(live_points.iter().all(|p| p.len() == 7), "{live_points:?}");
    assert!(live.terminate().unwrap().success());

    // Replay into an empty store, twice.
    let replay_dir = dir.path().join("replayed");
    std::fs::create_dir_all(&replay_dir).unwrap();
    let config_path = dir.path().join("live.toml");
    let bin = binary("meshmon-aggregator", "meshmon-aggregator").unwrap();
    let data = replay_dir.join("aggregator-data");
    for round in 0..2 {
        let out = Command::new(&bin)
            .args(["replay", "--config", path_str(&config_path).unwrap(), "--data-dir", path_str(&data).unwrap()])
            .args(["--from", &rfc3339(from), "--to", &rfc3339(to)])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "replay round {round}: {stdout}\n{stderr}");
        assert!(stderr.contains("100%"), "progress bar: {stderr}");
        assert!(stdout.contains("replayed"), "{stdout}");
    }
    let replayed = Aggregator::start(&replay_dir, "").unwrap();
    for (key, want) in keys.iter().zip(&live_points) {
        let got = points(replayed.http, "r.val", key, base - 100_000, base + 300_000);
        let strip = |ps: &[Json]| -> Vec<Json> {
            ps.iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.as_object_mut().unwrap().remove("revision");
                    p
                })
                .collect()
        };
        assert_eq!(strip(&got), strip(want), "{key}: only whole windows inside the range, equal to the live run");
    }
    // Raw records inside the range only: the window at `from` has its 200 records.
    let raw =
        get_json(replayed.http, &format!("/api/raw?metric=r.val&dimension=fleet&start={from}&page_size=1000")).unwrap();
    assert_eq!(raw["records"].as_array().map(Vec::len), Some(200));
}

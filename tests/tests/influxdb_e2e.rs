//! End to end with `[influxdb]` pointing at a real InfluxDB 1.6 (Debian `influxdb`): InfluxQL
//! must return exactly what a brute-force fold of the sent records says (`meshmon_tests::oracle`,
//! its double view `fold_doubles`).
//!
//! - **agent → aggregator → InfluxDB**: records pushed as JSON lines to the real
//!   `meshmon-agent`, out of order, which streams them to `meshmon-aggregator serve`
//!   (embedded mode). A late record corrects a fired window while InfluxDB is up (same point,
//!   new values, higher revision); then InfluxDB is killed (SIGKILL), another correction and
//!   newer windows arrive while it is down (a 3-point queue, so the pipeline really waits), and
//!   after the restart every point is there: nothing lost.
//! - **session retractions**: with session windows, a late record merges two fired sessions;
//!   the retracted session's point is deleted (InfluxQL `DELETE`), and a session extended past
//!   the watermark is deleted and re-created — tag values with quotes and backslashes.
//! - **Kafka mode, stopped while InfluxDB is down**: SIGTERM ends the process within
//!   `influxdb.shutdown_timeout` and non-zero, without committing the final checkpoint; the
//!   restart replays and InfluxDB gets every point.
//! - a 4xx (a database that does not exist) dead-letters the batch without retrying; the v2
//!   write path (`/api/v2/write`, token from a file) against VictoriaMetrics.
//!
//! Lateness does not depend on timing: a tumbling window `[s, s + 10 s)` fires when the
//! watermark (newest event time − 2 s) reaches `s + 10 s` and takes corrections until it
//! reaches `s + 40 s`; each phase sends its records and waits for their effect. Nothing sleeps:
//! every wait polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::prost::Message as _;
use meshmon_proto::v1::{self, AckStatus, Decimal, RecordBatch};
use meshmon_tests::influxdb::{InfluxDb, VictoriaMetrics};
use meshmon_tests::oracle::{self, Num, OracleRecord};
use meshmon_tests::{Aggregator, KafkaAggregator, LogsOnFailure, Tansu, grpc_push, http, prometheus_value, wait_for};
use rdkafka::producer::BaseProducer;
use serde_json::{Value as Json, json};

const PRICE: &str = "inf.price";
const TEMP: &str = "inf.temp";
const WINDOW_MS: i64 = 10_000;
const OUT_OF_ORDERNESS_MS: i64 = 2_000;
const TIMEOUT: Duration = Duration::from_secs(60);
const AGENT: &str = "inf-direct";
const TEAM: &str = r#""q" a\b ü€"#;

#[derive(Debug, Clone, Copy)]
enum Val {
    /// Nano-units (value × 10⁹).
    Dec(i128),
    F(f64),
}

/// A record as sent; `at` is relative to the test's base time.
#[derive(Debug, Clone)]
struct Rec {
    at: i64,
    metric: &'static str,
    value: Val,
    cluster: &'static str,
    node: &'static str,
    tags: Vec<(&'static str, &'static str)>,
}

fn r(
    at: i64,
    metric: &'static str,
    value: Val,
    cluster: &'static str,
    node: &'static str,
    tags: &[(&'static str, &'static str)],
) -> Rec {
    Rec { at, metric, value, cluster, node, tags: tags.to_vec() }
}

fn d(units: i128, nanos: i128) -> Val {
    Val::Dec(units * 1_000_000_000 + nanos)
}

/// Known records, all in [0, 30 s).
fn known() -> Vec<Rec> {
    let prod = [("env", "prod")];
    let team = [("team", TEAM)];
    vec![
        r(1_100, PRICE, d(0, 100_000_000), "c1", "n1", &prod),
        r(3_300, TEMP, Val::F(21.5), "c1", "n1", &prod),
        r(7_700, PRICE, d(1_000_000, 123_456_789), "c 2,x=y", "n2", &team),
        r(9_999, TEMP, Val::F(-1.25), "c 2,x=y", "n2", &[]),
        r(11_000, TEMP, Val::F(22.75), "c1", "n2", &prod),
        r(13_400, PRICE, d(-3, -500_000_000), "c1", "n1", &team),
        r(16_600, PRICE, d(2, 500_000_000), "c1", "n1", &prod),
        r(21_250, PRICE, d(0, 1), "c1", "n1", &[]),
        r(25_300, PRICE, d(19, 990_000_000), "c 2,x=y", "n2", &prod),
        r(27_000, TEMP, Val::F(0.5), "c1", "n1", &team),
    ]
}

/// [`known`] out of order, in three pushes. Each record still arrives before the watermark
/// (newest event time so far − 2 s) passes its window's end, so the first firings are exact.
fn known_disordered() -> [Vec<Rec>; 3] {
    let k = known();
    let pick = |idx: &[usize]| idx.iter().map(|&i| k[i].clone()).collect::<Vec<_>>();
    // 3.3, 1.1, 9.999, 11 | 7.7 (watermark 9), 16.6, 13.4 | 21.25, 27, 25.3 (watermark 25)
    [pick(&[1, 0, 3, 4]), pick(&[2, 6, 5]), pick(&[7, 9, 8])]
}

fn closers(at: i64) -> Vec<Rec> {
    vec![r(at, PRICE, d(1, 0), "c0", "closer", &[]), r(at + 1, TEMP, Val::F(1.0), "c0", "closer", &[])]
}

fn wire(base: i64, r: &Rec) -> v1::Record {
    v1::Record {
        metric: r.metric.into(),
        value: Some(match r.value {
            Val::Dec(n) => v1::record::Value::DecimalValue(Decimal::from_nano_units(n).unwrap()),
            Val::F(f) => v1::record::Value::DoubleValue(f),
        }),
        event_time: Some(nanos_to_timestamp((base + r.at) * 1_000_000)),
        cluster: r.cluster.into(),
        node: r.node.into(),
        tags: r.tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        raw: None,
    }
}

fn batch(base: i64, sequence: u64, records: &[Rec]) -> RecordBatch {
    RecordBatch {
        agent_id: AGENT.into(),
        sequence,
        sent_at: None,
        records: records.iter().map(|r| wire(base, r)).collect(),
    }
}

/// One batch straight to the aggregator's gRPC ingest (as an agent would send it).
fn push(rt: &tokio::runtime::Runtime, addr: SocketAddr, b: RecordBatch) {
    let n = b.records.len() as u32;
    let acks = grpc_push(rt, addr, vec![b], TIMEOUT).unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].status, acks[0].accepted), (AckStatus::Accepted as i32, n), "{acks:?}");
}

// ------------------------------------------------------------------ the agent

/// A JSON line of the agent's `POST /v1/records`.
fn json_line(base: i64, r: &Rec) -> String {
    let value = match r.value {
        Val::Dec(n) => json!(Decimal::from_nano_units(n).unwrap().to_string()),
        Val::F(f) => json!(f),
    };
    let tags: serde_json::Map<String, Json> = r.tags.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
    json!({"metric": r.metric, "value": value, "time": base + r.at, "cluster": r.cluster, "node": r.node,
           "tags": tags})
    .to_string()
}

/// Pushes `records` to the agent's HTTP API; all must be accepted.
fn agent_post(addr: SocketAddr, base: i64, records: &[Rec]) {
    let body: String = records.iter().map(|r| json_line(base, r) + "\n").collect();
    let resp = http("POST", addr, "/v1/records", Some(("application/x-ndjson", body.as_bytes()))).unwrap();
    assert_eq!(resp.status, 200, "agent push: {}", resp.text());
    let answer = resp.json().unwrap();
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(records.len() as u64), Some(0)));
}

// ------------------------------------------------------------------ the oracle (brute force)

fn esc(s: &str) -> String {
    s.replace('%', "%25").replace(',', "%2C").replace('=', "%3D")
}

impl OracleRecord for Rec {
    fn metric(&self) -> &str {
        self.metric
    }
    fn dimension_keys(&self) -> Vec<String> {
        let mut k = vec!["fleet".to_string(), format!("cluster={}", esc(self.cluster))];
        k.push(format!("node={}", esc(self.node)));
        k.extend(self.tags.iter().map(|(tk, tv)| format!("tag:{}={}", esc(tk), esc(tv))));
        k
    }
    fn at(&self) -> i64 {
        self.at
    }
    fn value(&self) -> Num {
        match self.value {
            Val::Dec(n) => Num::Decimal(n),
            Val::F(f) => Num::Double(f),
        }
    }
}

/// The `kind` tag of a dimension key.
fn kind_of(key: &str) -> &'static str {
    match key.split(['=', ':']).next() {
        Some("fleet") => "fleet",
        Some("cluster") => "cluster",
        Some("node") => "node",
        Some("tag") => "tag",
        _ => "set",
    }
}

/// (metric, dimension key, window start ms) → expected row fields (floats as InfluxDB holds them).
type Expected = BTreeMap<(String, String, i64), BTreeMap<&'static str, Json>>;

/// The rows of `points` (window start → records, relative ms) whose window ends (at
/// `end(start, records)`) at or before the watermark `watermark` (relative ms).
fn rows(
    base: i64,
    points: &oracle::Expected<'_, Rec>,
    window: &str,
    watermark: i64,
    end: impl Fn(i64, &[&Rec]) -> i64,
) -> Expected {
    let mut out = Expected::new();
    for ((metric, key), windows) in points {
        for (start, recs) in windows {
            let end = end(*start, recs);
            if end > watermark {
                continue;
            }
            let mut row = oracle::fold_doubles(recs);
            row.remove("last_time");
            row.insert("end_ms", json!(base + end));
            row.insert("kind", json!(kind_of(key)));
            row.insert("window", json!(window));
            out.insert((metric.clone(), key.clone(), base + start), row);
        }
    }
    out
}

/// The fired tumbling windows of `records` at `watermark` (both relative ms).
fn expected(base: i64, records: &[Rec], watermark: i64) -> Expected {
    rows(base, &oracle::expected_points(records, WINDOW_MS), "tumbling:10s", watermark, |s, _| s + WINDOW_MS)
}

/// InfluxDB rows keyed like [`Expected`].
type Rows = BTreeMap<(String, String, i64), serde_json::Map<String, Json>>;

/// Every `meshmon_aggregate` row of `metrics`, keyed like [`Expected`].
fn influx_points(db: &InfluxDb, database: &str, metrics: &[&str]) -> Result<Rows, String> {
    let literal = |m: &str| format!("'{}'", m.replace('\\', "\\\\").replace('\'', "\\'"));
    let filter: Vec<String> = metrics.iter().map(|m| format!("metric = {}", literal(m))).collect();
    let q = format!("SELECT * FROM meshmon_aggregate WHERE {}", filter.join(" OR "));
    let answer = db.query(Some(database), &q)?;
    Ok(InfluxDb::rows(&answer)
        .into_iter()
        .map(|row| {
            let key = (
                row["metric"].as_str().unwrap_or_default().to_owned(),
                row["dimension"].as_str().unwrap_or_default().to_owned(),
                row["time"].as_i64().unwrap_or_default(),
            );
            (key, row)
        })
        .collect())
}

/// The first difference between InfluxDB and the oracle, as `Err`: exactly the expected
/// points (none missing, none extra), every field equal.
fn compare(db: &InfluxDb, database: &str, metrics: &[&str], want: &Expected) -> Result<(), String> {
    let got = influx_points(db, database, metrics)?;
    let got_keys: Vec<_> = got.keys().collect();
    let want_keys: Vec<_> = want.keys().collect();
    if got_keys != want_keys {
        return Err(format!("points {got_keys:?}\nexpected {want_keys:?}"));
    }
    for (k, fields) in want {
        let row = &got[k];
        for (f, v) in fields {
            if !oracle::same(v, &row[*f]) {
                return Err(format!("{k:?}: {f} = {}, expected {v}; row {row:?}", row[*f]));
            }
        }
    }
    Ok(())
}

fn poll_ok(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    if wait_for(what, TIMEOUT, || check().ok()).is_err() {
        panic!("timed out after {TIMEOUT:?} waiting for {what}; last difference: {}", check().unwrap_err());
    }
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = http("GET", addr, "/metrics", None).map(|r| r.text()).unwrap_or_default();
    prometheus_value(&text, name).unwrap_or(-1.0)
}

fn wait_metric(addr: SocketAddr, name: &str, at_least: f64) {
    wait_for(&format!("{name} >= {at_least}"), TIMEOUT, || (metric(addr, name) >= at_least).then_some(())).unwrap();
}

fn base_ms() -> i64 {
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    (now_ms / 60_000 - 30) * 60_000
}

fn engine(window: &str, allowed_lateness: &str) -> String {
    format!(
        r#"
[engine]
window = "{window}"
out_of_orderness = "2s"
allowed_lateness = "{allowed_lateness}"
idle_timeout = "0"
shards = 2

[engine.limits]
max_future = "0"
max_past = "0"
"#
    )
}

fn config(influx: &str) -> String {
    format!(
        "{}\n[influxdb]\n{influx}\nflush_every = \"50ms\"\ninstance = \"e2e\"\nself_every = \"200ms\"\n",
        engine("tumbling:10s", "30s")
    )
}

#[test]
fn agent_to_aggregator_to_influxdb_equals_the_oracle_through_corrections_and_an_influxdb_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let mut db = InfluxDb::start(dir.path()).unwrap();
    logs.add(db.proc.as_ref().unwrap());
    db.create_database("meshmon").unwrap();
    // A tiny queue: while InfluxDB is down the store actor soon waits (backpressure).
    let influx = format!("url = \"{}\"\ndatabase = \"meshmon\"\nbatch_max_points = 3\nqueue_max_points = 3", db.url());
    let aggregator = Aggregator::start(dir.path(), &config(&influx)).unwrap();
    logs.add(&aggregator.proc);
    let api = aggregator.http;
    let (mut agent, agent_http) = meshmon_tests::start_agent(dir.path(), "inf-agent", aggregator.grpc).unwrap();
    logs.add(&agent);
    let base = base_ms();
    let ours = [PRICE, TEMP];
    let records_in = |n: usize| {
        wait_for(&format!("{n} records at the aggregator"), TIMEOUT, || {
            (metric(api, "meshmon_records_in_total") == n as f64).then_some(())
        })
        .unwrap();
    };

    // 1. Known records, out of order, through the agent; once all are in, closers at 45 s:
    //    windows 0, 10, 20 s fire (watermark 43.001 s).
    let mut sent = Vec::new();
    for part in known_disordered() {
        agent_post(agent_http, base, &part);
        sent.extend(part);
    }
    records_in(sent.len());
    let close_a = closers(45_000);
    agent_post(agent_http, base, &close_a);
    sent.extend(close_a);
    let want = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    assert_eq!(want.len(), 32, "{:#?}", want.keys());
    poll_ok("InfluxDB to hold the first firings", || compare(&db, "meshmon", &ours, &want));
    let first = influx_points(&db, "meshmon", &ours).unwrap();
    assert!(first.values().all(|r| r["revision"] == 0), "{first:?}");
    let fleet_10 = (PRICE.to_string(), "fleet".to_string(), base + 10_000);
    assert_eq!((first[&fleet_10]["count"].as_i64(), first[&fleet_10]["max"].as_f64()), (Some(2), Some(2.5)));

    // 2. A late record corrects window 10 s (watermark 43.001 s < 10 + 10 + 30): the same
    //    point gets the new values and revision 1; no point is added.
    let late = r(15_500, PRICE, d(7, 250_000_000), "c1", "n1", &[("env", "prod")]);
    agent_post(agent_http, base, std::slice::from_ref(&late));
    sent.push(late);
    let want = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    assert_eq!(want.len(), 32);
    poll_ok("InfluxDB to hold the correction", || compare(&db, "meshmon", &ours, &want));
    let corrected = influx_points(&db, "meshmon", &ours).unwrap();
    let p = &corrected[&fleet_10];
    assert_eq!((p["count"].as_i64(), p["max"].as_f64(), p["revision"].as_i64()), (Some(3), Some(7.25), Some(1)));
    assert_eq!(metric(api, "meshmon_corrections_total"), 4.0, "fleet, cluster, node and tag points corrected");

    // 3. InfluxDB crashes. Another late record corrects window 20 s; closers at 200 s fire
    //    window 40 s — all while InfluxDB is down, so the tiny queue fills and the pipeline
    //    (and behind it the agent) waits.
    db.stop().unwrap();
    let late_b = r(24_000, TEMP, Val::F(-8.5), "c1", "n1", &[("team", TEAM)]);
    agent_post(agent_http, base, std::slice::from_ref(&late_b));
    sent.push(late_b);
    wait_metric(api, "meshmon_corrections_total", 8.0);
    wait_metric(api, "meshmon_influxdb_retries_total", 2.0);
    let close_b = closers(200_000);
    agent_post(agent_http, base, &close_b);
    sent.extend(close_b);
    wait_metric(api, "meshmon_influxdb_queued_points", 3.0);
    let written_while_down = metric(api, "meshmon_influxdb_points_written_total");

    // 4. InfluxDB comes back: every point arrives, both corrections overwrote their points.
    db.resume().unwrap();
    let want = expected(base, &sent, 200_001 - OUT_OF_ORDERNESS_MS);
    assert_eq!(want.len(), 38);
    poll_ok("InfluxDB to hold every point after the restart", || compare(&db, "meshmon", &ours, &want));
    let after = influx_points(&db, "meshmon", &ours).unwrap();
    let temp_20 = (TEMP.to_string(), "fleet".to_string(), base + 20_000);
    assert_eq!((after[&temp_20]["count"].as_i64(), after[&temp_20]["revision"].as_i64()), (Some(2), Some(1)));
    assert_eq!(after[&fleet_10]["revision"].as_i64(), Some(1));
    assert!(metric(api, "meshmon_influxdb_points_written_total") > written_while_down);
    assert_eq!(metric(api, "meshmon_influxdb_dead_lettered_points_total"), 0.0);
    // Field types are stable: floats stay floats even when whole (1.0).
    let keys = db.query(Some("meshmon"), "SHOW FIELD KEYS FROM meshmon_aggregate").unwrap();
    let types: BTreeMap<String, String> = InfluxDb::rows(&keys)
        .iter()
        .map(|r| (r["fieldKey"].as_str().unwrap().into(), r["fieldType"].as_str().unwrap().into()))
        .collect();
    let want_types = [
        ("avg", "float"),
        ("count", "integer"),
        ("end_ms", "integer"),
        ("last", "float"),
        ("max", "float"),
        ("min", "float"),
        ("revision", "integer"),
        ("sum", "float"),
    ];
    assert_eq!(types, want_types.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect());
    // Self-monitoring points.
    let selfm = db
        .query(Some("meshmon"), "SELECT last(records_in), last(results) FROM meshmon_self WHERE instance = 'e2e'")
        .unwrap();
    let rows = InfluxDb::rows(&selfm);
    assert_eq!(rows.len(), 1, "{selfm}");
    assert!(rows[0]["last"].as_i64().unwrap() > 0, "{selfm}");
    // The agent exits 0 only when the aggregator acknowledged every batch.
    let status = agent.terminate(TIMEOUT).unwrap();
    assert!(status.success(), "agent exit status {status:?}");
}

// ------------------------------------------------------------------ session retractions

const SESSION: &str = r"inf.sess'ion\x";
const SESSION_CLOSE: &str = "inf.sess_close";
const SESSION_GAP_MS: i64 = 10_000;

fn s(at: i64, units: i128) -> Rec {
    r(at, SESSION, d(units, 0), r"c'1\a", "n1", &[("team", r#"it's "q" a\b ü€"#)])
}

fn session_closer(at: i64) -> Rec {
    r(at, SESSION_CLOSE, d(1, 0), "c0", "closer", &[])
}

/// The sessions of [`SESSION`] that ended at or before `watermark` (relative ms).
fn expected_sessions(base: i64, records: &[Rec], watermark: i64) -> Expected {
    let ours: Vec<Rec> = records.iter().filter(|r| r.metric == SESSION).cloned().collect();
    let points = oracle::session_points(&ours, SESSION_GAP_MS);
    let end = |_: i64, recs: &[&Rec]| recs.iter().map(|r| r.at).max().unwrap_or_default() + SESSION_GAP_MS;
    rows(base, &points, "session:10s", watermark, end)
}

#[test]
fn session_merges_delete_the_retracted_point_in_influxdb() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let db = InfluxDb::start(dir.path()).unwrap();
    logs.add(db.proc.as_ref().unwrap());
    db.create_database("meshmon").unwrap();
    let influx = format!(
        "[influxdb]\nurl = \"{}\"\ndatabase = \"meshmon\"\nflush_every = \"50ms\"\nself_every = \"0\"\n",
        db.url()
    );
    let aggregator = Aggregator::start(dir.path(), &format!("{}{influx}", engine("session:10s", "60s"))).unwrap();
    logs.add(&aggregator.proc);
    let (api, grpc) = (aggregator.http, aggregator.grpc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = base_ms();
    let ours = [SESSION];
    let mut sent: Vec<Rec> = Vec::new();
    let mut seq = 0;
    let mut send = |records: Vec<Rec>, sent: &mut Vec<Rec>| {
        seq += 1;
        push(&rt, grpc, batch(base, seq, &records));
        sent.extend(records);
    };
    // The writer counts a deletion once InfluxDB answered: poll, then require the exact count.
    let deleted = |n: f64| {
        wait_metric(api, "meshmon_influxdb_retractions_deleted_total", n);
        assert_eq!(metric(api, "meshmon_influxdb_retractions_deleted_total"), n);
    };

    // 1. Two sessions, [0, 15 s) and [20, 35 s); a closer at 40 s fires both (watermark 38 s).
    send(vec![s(0, 1), s(5_000, 2), s(20_000, 4), s(25_000, 8)], &mut sent);
    send(vec![session_closer(40_000)], &mut sent);
    let want = expected_sessions(base, &sent, 38_000);
    assert_eq!(want.len(), 8, "two sessions × four dimensions: {:#?}", want.keys());
    poll_ok("InfluxDB to hold both sessions", || compare(&db, "meshmon", &ours, &want));

    // 2. A late record at 12 s bridges them: one session [0, 35 s) under the first one's key;
    //    the second one's point is retracted — deleted from InfluxDB, in every dimension.
    send(vec![s(12_000, 16)], &mut sent);
    let want = expected_sessions(base, &sent, 38_000);
    assert_eq!(want.len(), 4, "{:#?}", want.keys());
    assert!(want.values().all(|row| row["count"] == 5 && row["end_ms"] == base + 35_000));
    poll_ok("InfluxDB to hold the merged session only", || compare(&db, "meshmon", &ours, &want));
    deleted(4.0);
    assert_eq!(metric(api, "meshmon_influxdb_retractions_skipped_total"), 0.0);

    // 3. A third session [50, 65 s) fires (closer at 70 s: watermark 68 s); a late record at
    //    62 s extends it past the watermark: its point is deleted until the session ends…
    send(vec![s(50_000, 32), s(55_000, 64)], &mut sent);
    send(vec![session_closer(70_000)], &mut sent);
    let want = expected_sessions(base, &sent, 68_000);
    assert_eq!(want.len(), 8);
    poll_ok("InfluxDB to hold the third session", || compare(&db, "meshmon", &ours, &want));
    send(vec![s(62_000, 128)], &mut sent);
    let want = expected_sessions(base, &sent, 68_000);
    assert_eq!(want.len(), 4, "the extended session is not complete yet");
    poll_ok("the extended session's point deleted", || compare(&db, "meshmon", &ours, &want));
    deleted(8.0);

    // 4. …and re-created under the same key, with its new values, once it has ended.
    send(vec![session_closer(80_000)], &mut sent);
    let want = expected_sessions(base, &sent, 78_000);
    assert_eq!(want.len(), 8);
    let third = (SESSION.to_string(), "fleet".to_string(), base + 50_000);
    assert_eq!((&want[&third]["count"], &want[&third]["end_ms"]), (&json!(3), &json!(base + 72_000)));
    poll_ok("the extended session re-created", || compare(&db, "meshmon", &ours, &want));
    assert_eq!(metric(api, "meshmon_influxdb_dead_lettered_points_total"), 0.0);
}

// ------------------------------------------------------------------ Kafka mode: stop while down

fn producer(tansu: &Tansu) -> BaseProducer {
    meshmon_tests::tansu::idempotent_producer(tansu).unwrap()
}

fn produce(p: &BaseProducer, b: &RecordBatch) {
    meshmon_tests::tansu::produce_all(p, "records", [(b.agent_id.as_bytes(), b.encode_to_vec())]).unwrap();
}

#[test]
fn stopping_in_kafka_mode_while_influxdb_is_down_is_bounded_and_the_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    for (t, p) in [("records", 1), ("aggregates", 1), ("dead-letters", 1)] {
        tansu.create_topic(t, p).unwrap();
    }
    let mut db = InfluxDb::start(dir.path()).unwrap();
    logs.add(db.proc.as_ref().unwrap());
    db.create_database("meshmon").unwrap();
    let config = format!(
        r#"{}
[kafka]
brokers = "{}"
input_topic = "records"
output_topic = "aggregates"
dead_letter_topic = "dead-letters"
merge_wait = "10s"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }}

[checkpoint]
every = "300ms"

[influxdb]
url = "{}"
database = "meshmon"
flush_every = "50ms"
self_every = "0"
shutdown_timeout = "2s"
"#,
        engine("tumbling:10s", "30s"),
        tansu.bootstrap(),
        db.url()
    );
    let mut agg = KafkaAggregator::start(dir.path(), "aggregator", &config).unwrap();
    logs.0.push(("aggregator".into(), agg.log()));
    let p = producer(&tansu);
    let base = base_ms();
    let ours = [PRICE, TEMP];

    // 1. Known records and closers at 45 s: the first firings reach InfluxDB and a checkpoint
    //    covers them.
    let mut sent = known();
    produce(&p, &batch(base, 1, &sent));
    let close_a = closers(45_000);
    produce(&p, &batch(base, 2, &close_a));
    sent.extend(close_a);
    let want = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    poll_ok("InfluxDB to hold the first firings", || compare(&db, "meshmon", &ours, &want));
    wait_for("a checkpoint past the closers", TIMEOUT, || {
        // A gauge in seconds: compare in whole milliseconds, a millisecond short of the
        // closers' watermark (nothing before them moved it past 25 s).
        let wm = metric(agg.http, "meshmon_checkpoint_watermark_seconds");
        ((wm * 1000.0).round() as i64 >= base + 45_000 - OUT_OF_ORDERNESS_MS).then_some(())
    })
    .unwrap();

    // 2. InfluxDB dies; a correction and newer windows arrive: the writer retries, and the
    //    next checkpoint waits for it.
    db.stop().unwrap();
    let late = vec![r(15_500, PRICE, d(7, 250_000_000), "c1", "n1", &[("env", "prod")])];
    produce(&p, &batch(base, 3, &late));
    sent.extend(late);
    let close_b = closers(200_000);
    produce(&p, &batch(base, 4, &close_b));
    sent.extend(close_b);
    wait_metric(agg.http, "meshmon_corrections_total", 4.0);
    wait_metric(agg.http, "meshmon_influxdb_retries_total", 1.0);

    // 3. SIGTERM: the stop gives InfluxDB shutdown_timeout (2 s), then exits non-zero without
    //    committing the final checkpoint (generous bound: the process must not hang).
    let status = agg.terminate().unwrap();
    assert!(!status.success(), "stopping with unwritten points must fail: {status}");
    let log = std::fs::read_to_string(agg.log()).unwrap();
    assert!(log.contains("shutdown_timeout"), "the log names the expired shutdown_timeout:\n{log}");
    assert!(log.contains("not committed"), "the log says the checkpoint was not committed:\n{log}");

    // 4. InfluxDB and the aggregator come back: the replay from the last committed checkpoint
    //    rewrites what InfluxDB missed — the correction and window 40 s.
    db.resume().unwrap();
    agg.restart().unwrap();
    let want = expected(base, &sent, 200_001 - OUT_OF_ORDERNESS_MS);
    poll_ok("InfluxDB to hold every point after the restart", || compare(&db, "meshmon", &ours, &want));
    let fleet_10 = (PRICE.to_string(), "fleet".to_string(), base + 10_000);
    assert_eq!(influx_points(&db, "meshmon", &ours).unwrap()[&fleet_10]["revision"].as_i64(), Some(1));
    // With InfluxDB up, the stop is clean.
    assert!(agg.terminate().unwrap().success());
}

// ------------------------------------------------------------------ refusals, v2

#[test]
fn refused_batches_are_dead_lettered_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let db = InfluxDb::start(dir.path()).unwrap();
    logs.add(db.proc.as_ref().unwrap());
    // The database does not exist yet: InfluxDB answers 404.
    let influx = format!("url = \"{}\"\ndatabase = \"later\"\nself_every = \"0\"", db.url());
    let aggregator = Aggregator::start(dir.path(), &config(&influx).replace("self_every = \"200ms\"\n", "")).unwrap();
    logs.add(&aggregator.proc);
    let (api, grpc) = (aggregator.http, aggregator.grpc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = base_ms();
    let ours = [PRICE, TEMP];
    let mut sent = known();
    push(&rt, grpc, batch(base, 1, &sent));
    let close_a = closers(45_000);
    push(&rt, grpc, batch(base, 2, &close_a));
    sent.extend(close_a);
    let first = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    wait_for("dead-lettered points", TIMEOUT, || {
        (metric(api, "meshmon_influxdb_dead_lettered_points_total") == first.len() as f64).then_some(())
    })
    .unwrap();
    assert_eq!(metric(api, "meshmon_influxdb_retries_total"), 0.0, "a 4xx is never retried");
    let rejected = std::fs::read_to_string(dir.path().join("aggregator-data/influxdb-rejected.lp")).unwrap();
    assert!(rejected.starts_with("# ") && rejected.contains("HTTP 404"), "{rejected}");
    assert_eq!(rejected.lines().filter(|l| l.starts_with("meshmon_aggregate,")).count(), first.len(), "{rejected}");

    // The database appears; the next firings are written.
    db.create_database("later").unwrap();
    let close_b = closers(200_000);
    push(&rt, grpc, batch(base, 3, &close_b));
    sent.extend(close_b);
    let all = expected(base, &sent, 200_001 - OUT_OF_ORDERNESS_MS);
    let later: Expected = all.into_iter().filter(|(k, _)| !first.contains_key(k)).collect();
    assert_eq!(later.len(), 6);
    poll_ok("the points after the database was created", || compare(&db, "later", &ours, &later));
}

#[test]
fn the_v2_write_path_reaches_victoria_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let vm = VictoriaMetrics::start(dir.path()).unwrap();
    logs.add(&vm.proc);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let influx = format!(
        "url = \"http://{}\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{}\"",
        vm.http,
        token.display()
    );
    let aggregator = Aggregator::start(dir.path(), &config(&influx)).unwrap();
    logs.add(&aggregator.proc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = base_ms();
    let mut sent = known();
    push(&rt, aggregator.grpc, batch(base, 1, &sent));
    let close_a = closers(45_000);
    push(&rt, aggregator.grpc, batch(base, 2, &close_a));
    sent.extend(close_a);
    let want = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    let check = || -> Result<(), String> {
        for field in ["count", "sum", "max"] {
            let series = vm.export(&format!("{{__name__=\"meshmon_aggregate_{field}\"}}"))?;
            let mut got = BTreeMap::new();
            for s in &series {
                let (m, k) = (
                    s["metric"]["metric"].as_str().unwrap_or_default(),
                    s["metric"]["dimension"].as_str().unwrap_or_default(),
                );
                for (t, v) in
                    s["timestamps"].as_array().into_iter().flatten().zip(s["values"].as_array().into_iter().flatten())
                {
                    got.insert(
                        (m.to_owned(), k.to_owned(), t.as_i64().unwrap_or_default()),
                        v.as_f64().unwrap_or(f64::NAN),
                    );
                }
            }
            let want_f: BTreeMap<_, _> =
                want.iter().map(|(k, row)| (k.clone(), row[field].as_f64().unwrap())).collect();
            // VictoriaMetrics stores values as decimals of about 12 significant digits.
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-11 * a.abs().max(b.abs());
            let same = got.len() == want_f.len()
                && got.iter().zip(&want_f).all(|((gk, gv), (wk, wv))| gk == wk && close(*gv, *wv));
            if !same {
                return Err(format!("{field}: got {got:?}\nexpected {want_f:?}"));
            }
        }
        Ok(())
    };
    poll_ok("VictoriaMetrics to hold the points", check);
    assert!(metric(aggregator.http, "meshmon_influxdb_batches_total") >= 1.0);
}

//! End to end: records pushed over gRPC to the real aggregator binary (embedded mode) with
//! `[influxdb]` pointing at a real InfluxDB 1.6 (Debian `influxdb`) — InfluxQL returns exactly
//! what a brute-force fold of the pushed records says, including a late-record correction
//! (same point, new values, higher revision) written while InfluxDB was killed (SIGKILL) and
//! restarted: the writer retried, the pipeline waited, no point was lost. A 4xx (a database
//! that does not exist) dead-letters the batch to the counter and `influxdb-rejected.lp`
//! without retrying, and the writer carries on. The v2 write path (`/api/v2/write`, token
//! from a file) against VictoriaMetrics.
//!
//! Lateness does not depend on timing: a window `[s, s + 10 s)` fires when the watermark
//! (newest event time − 2 s) reaches `s + 10 s` and takes corrections until it reaches
//! `s + 40 s`; each phase pushes its own batch and waits for its effect. Nothing sleeps:
//! every wait polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::{self, AckStatus, RecordBatch};
use meshmon_tests::influxdb::{InfluxDb, VictoriaMetrics};
use meshmon_tests::{Aggregator, LogsOnFailure, grpc_push, http, prometheus_value, wait_for};
use serde_json::Value as Json;

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

fn closers(at: i64) -> Vec<Rec> {
    vec![r(at, PRICE, d(1, 0), "c0", "closer", &[]), r(at + 1, TEMP, Val::F(1.0), "c0", "closer", &[])]
}

fn batch(base: i64, sequence: u64, records: &[Rec]) -> RecordBatch {
    RecordBatch {
        agent_id: AGENT.into(),
        sequence,
        sent_at: None,
        records: records
            .iter()
            .map(|r| v1::Record {
                metric: r.metric.into(),
                value: Some(match r.value {
                    Val::Dec(n) => v1::record::Value::DecimalValue(v1::Decimal::from_nano_units(n).unwrap()),
                    Val::F(f) => v1::record::Value::DoubleValue(f),
                }),
                event_time: Some(nanos_to_timestamp((base + r.at) * 1_000_000)),
                cluster: r.cluster.into(),
                node: r.node.into(),
                tags: r.tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                raw: None,
            })
            .collect(),
    }
}

fn push(rt: &tokio::runtime::Runtime, addr: SocketAddr, b: RecordBatch) {
    let n = b.records.len() as u32;
    let acks = grpc_push(rt, addr, vec![b], TIMEOUT).unwrap();
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].status, acks[0].accepted), (AckStatus::Accepted as i32, n), "{acks:?}");
}

// ------------------------------------------------------------------ the oracle (brute force)

fn esc(s: &str) -> String {
    s.replace('%', "%25").replace(',', "%2C").replace('=', "%3D")
}

fn keys(r: &Rec) -> Vec<(String, &'static str)> {
    let mut k = vec![("fleet".to_string(), "fleet"), (format!("cluster={}", esc(r.cluster)), "cluster")];
    k.push((format!("node={}", esc(r.node)), "node"));
    k.extend(r.tags.iter().map(|(tk, tv)| (format!("tag:{}={}", esc(tk), esc(tv)), "tag")));
    k
}

/// (metric, dimension key, window start ms) → expected row fields (floats as InfluxDB shows them).
type Expected = BTreeMap<(String, String, i64), BTreeMap<&'static str, Json>>;

fn expected(base: i64, records: &[Rec], watermark: i64) -> Expected {
    let mut groups: BTreeMap<(String, String, i64), (&'static str, Vec<&Rec>)> = BTreeMap::new();
    for rec in records {
        let start = rec.at.div_euclid(WINDOW_MS) * WINDOW_MS;
        if start + WINDOW_MS > watermark {
            continue;
        }
        for (key, kind) in keys(rec) {
            groups.entry((rec.metric.into(), key, base + start)).or_insert((kind, vec![])).1.push(rec);
        }
    }
    groups
        .into_iter()
        .map(|((m, k, start), (kind, recs))| {
            let count = recs.len();
            let last = recs.iter().max_by_key(|r| r.at).unwrap().value;
            let (sum, min, max, avg, last) = match recs[0].value {
                Val::Dec(_) => {
                    let n: Vec<i128> =
                        recs.iter().map(|r| if let Val::Dec(n) = r.value { n } else { panic!() }).collect();
                    let sum: i128 = n.iter().sum();
                    let c = count as i128;
                    let (q, rem) = (sum / c, sum % c);
                    let avg = if 2 * rem.abs() >= c { q + sum.signum() } else { q };
                    let f = |n: i128| n as f64 / 1e9;
                    let Val::Dec(last) = last else { panic!() };
                    (f(sum), f(*n.iter().min().unwrap()), f(*n.iter().max().unwrap()), f(avg), f(last))
                }
                Val::F(_) => {
                    let v: Vec<f64> = recs.iter().map(|r| if let Val::F(f) = r.value { f } else { panic!() }).collect();
                    let sum: f64 = v.iter().sum();
                    let Val::F(last) = last else { panic!() };
                    (
                        sum,
                        v.iter().copied().fold(f64::INFINITY, f64::min),
                        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        sum / count as f64,
                        last,
                    )
                }
            };
            let mut row = BTreeMap::new();
            row.insert("count", Json::from(count));
            row.insert("sum", Json::from(sum));
            row.insert("min", Json::from(min));
            row.insert("max", Json::from(max));
            row.insert("avg", Json::from(avg));
            row.insert("last", Json::from(last));
            row.insert("end_ms", Json::from(start + WINDOW_MS));
            row.insert("kind", Json::from(kind));
            row.insert("window", Json::from("tumbling:10s"));
            ((m, k, start), row)
        })
        .collect()
}

/// InfluxDB rows keyed like [`Expected`].
type Rows = BTreeMap<(String, String, i64), serde_json::Map<String, Json>>;

/// Every `meshmon_aggregate` row of our metrics, keyed like [`Expected`].
fn influx_points(db: &InfluxDb, database: &str) -> Result<Rows, String> {
    let q = format!("SELECT * FROM meshmon_aggregate WHERE metric = '{PRICE}' OR metric = '{TEMP}'");
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

/// The first difference between InfluxDB and the oracle, as `Err`.
fn compare(db: &InfluxDb, database: &str, want: &Expected) -> Result<(), String> {
    let got = influx_points(db, database)?;
    let got_keys: Vec<_> = got.keys().collect();
    let want_keys: Vec<_> = want.keys().collect();
    if got_keys != want_keys {
        return Err(format!("points {got_keys:?}\nexpected {want_keys:?}"));
    }
    for (k, fields) in want {
        let row = &got[k];
        for (f, v) in fields {
            let same = match (v, &row[*f]) {
                (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
                (a, b) => a == b,
            };
            if !same {
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

fn base_ms() -> i64 {
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    (now_ms / 60_000 - 30) * 60_000
}

fn config(influx: &str) -> String {
    format!(
        r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "2s"
allowed_lateness = "30s"
idle_timeout = "0"
shards = 2

[engine.limits]
max_future = "0"
max_past = "0"

[influxdb]
{influx}
flush_every = "50ms"
instance = "e2e"
self_every = "200ms"
"#
    )
}

#[test]
fn influxql_returns_the_oracle_aggregates_through_a_correction_and_an_influxdb_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let mut db = InfluxDb::start(dir.path()).unwrap();
    logs.add(db.proc.as_ref().unwrap());
    db.create_database("meshmon").unwrap();
    // A tiny queue: while InfluxDB is down the store actor soon waits (backpressure).
    let influx = format!("url = \"{}\"\ndatabase = \"meshmon\"\nbatch_max_points = 3\nqueue_max_points = 3", db.url());
    let aggregator = Aggregator::start(dir.path(), &config(&influx)).unwrap();
    logs.add(&aggregator.proc);
    let (api, grpc) = (aggregator.http, aggregator.grpc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = base_ms();

    // 1. Known records, then closers at 45 s: windows 0, 10, 20 s fire (watermark 43.001 s).
    let mut sent = known();
    push(&rt, grpc, batch(base, 1, &sent));
    let close_a = closers(45_000);
    push(&rt, grpc, batch(base, 2, &close_a));
    sent.extend(close_a);
    let want = expected(base, &sent, 45_001 - OUT_OF_ORDERNESS_MS);
    assert_eq!(want.len(), 32, "{:#?}", want.keys());
    poll_ok("InfluxDB to hold the first firings", || compare(&db, "meshmon", &want));
    let first = influx_points(&db, "meshmon").unwrap();
    assert!(first.values().all(|r| r["revision"] == 0), "{first:?}");
    let fleet_10 = (PRICE.to_string(), "fleet".to_string(), base + 10_000);
    assert_eq!(first[&fleet_10]["count"], 2);

    // 2. InfluxDB crashes. A late record corrects window 10 s (watermark 44 s < 10 + 10 + 30).
    db.stop().unwrap();
    let late = vec![
        r(15_500, PRICE, d(7, 250_000_000), "c1", "n1", &[("env", "prod")]),
        r(46_000, TEMP, Val::F(4.0), "c0", "closer", &[]),
    ];
    push(&rt, grpc, batch(base, 3, &late));
    sent.extend(late);
    wait_for("the correction", TIMEOUT, || (metric(api, "meshmon_corrections_total") >= 4.0).then_some(())).unwrap();
    wait_for("failed InfluxDB writes", TIMEOUT, || {
        (metric(api, "meshmon_influxdb_retries_total") >= 2.0).then_some(())
    })
    .unwrap();
    // 3. Closers at 200 s fire window 40 s, pushed while InfluxDB is still down (the ack may
    //    wait for the store actor, which waits for room in the InfluxDB queue).
    let close_b = closers(200_000);
    let pusher = {
        let b = batch(base, 4, &close_b);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            grpc_push(&rt, grpc, vec![b], Duration::from_secs(120))
        })
    };
    sent.extend(close_b);
    wait_for("the queue to fill", TIMEOUT, || (metric(api, "meshmon_influxdb_queued_points") >= 3.0).then_some(()))
        .unwrap();
    let written_while_down = metric(api, "meshmon_influxdb_points_written_total");

    // 4. InfluxDB comes back: every point arrives, the correction overwrote its point.
    db.resume().unwrap();
    let acks = pusher.join().unwrap().unwrap();
    assert_eq!(acks.len(), 1);
    let want = expected(base, &sent, 200_001 - OUT_OF_ORDERNESS_MS);
    poll_ok("InfluxDB to hold every point after the restart", || compare(&db, "meshmon", &want));
    let after = influx_points(&db, "meshmon").unwrap();
    assert_eq!(after[&fleet_10]["count"], 3);
    assert_eq!(after[&fleet_10]["revision"], 1, "{:?}", after[&fleet_10]);
    assert_eq!(after[&fleet_10]["max"].as_f64(), Some(7.25));
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
}

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
    poll_ok("the points after the database was created", || compare(&db, "later", &later));
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

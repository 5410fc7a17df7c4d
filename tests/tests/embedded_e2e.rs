//! End to end through the real binaries: `meshmon-agent` (HTTP JSON lines) and a second,
//! direct gRPC "agent" push into `meshmon-aggregator serve`; the API must then hold exactly
//! what a brute-force fold over the pushed records says.
//!
//! The data is built so that lateness does not depend on batching or arrival interleaving:
//! every known record lies in `[base, base + 30 s)`, so no watermark derived from them
//! (≤ base + 28 s) can reach a known window's `end + allowed_lateness` (≥ base + 40 s).
//! Only after every known record is acknowledged do both inputs (`agent:e2e-agent`,
//! `agent:e2e-direct`) send a record at base + 100 s, which closes every known window; then
//! one record at base + 6 s is too late for good (10 s + 30 s ≤ 98 s), and closing records at
//! base + 200 s follow it on the same input, so once their window shows up in the store the
//! late record has certainly been handled. Event times are unique (to the millisecond), so
//! `last` needs no tie-break and record identities (which depend on the agent's batching) do
//! not matter. The agent's records are all in before the direct ones are sent, so the direct
//! ones correct windows that already fired (revision ≥ 1).
//!
//! Nothing sleeps: every wait polls the API (`/healthz`, `/metrics`, `/api/aggregates`) with a
//! deadline. A failing test prints both processes' logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use Val::{Dec, F};
use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::{self, AckStatus, Decimal, RecordBatch};
use meshmon_tests::{Aggregator, LogsOnFailure, get_json, grpc_push, http, prometheus_value, query_value, wait_for};
use serde_json::{Value as Json, json};

const AGENT_ID: &str = "e2e-agent";
const DIRECT_ID: &str = "e2e-direct";
const PRICE: &str = "e2e.price";
const TEMP: &str = "e2e.temp";
const WINDOW_MS: i64 = 10_000;
const OUT_OF_ORDERNESS_MS: i64 = 2_000;
const ALLOWED_LATENESS_MS: i64 = 30_000;
const TIMEOUT: Duration = Duration::from_secs(60);

const NONE: &[(&str, &str)] = &[];
const PROD: &[(&str, &str)] = &[("env", "prod")];
const DEV: &[(&str, &str)] = &[("env", "dev")];
/// A tag value holding the three characters the dimension key escapes.
const TEAM: &[(&str, &str)] = &[("team", "a=b,c%")];
const PROD_TEAM: &[(&str, &str)] = &[("env", "prod"), ("team", "a=b,c%")];

#[derive(Debug, Clone, Copy)]
enum Val {
    /// Exact decimal text, canonical (as the API prints it).
    Dec(&'static str),
    /// A double; all used here are dyadic, so sums do not depend on the order of addition.
    F(f64),
}

/// One record, its time in ms after `base`.
#[derive(Debug, Clone)]
struct Rec {
    at: i64,
    metric: &'static str,
    value: Val,
    cluster: &'static str,
    node: &'static str,
    tags: &'static [(&'static str, &'static str)],
}

fn r(
    at: i64,
    metric: &'static str,
    value: Val,
    cluster: &'static str,
    node: &'static str,
    tags: &'static [(&'static str, &'static str)],
) -> Rec {
    Rec { at, metric, value, cluster, node, tags }
}

/// Pushed through the real agent, out of order, in two requests (agent id `e2e-agent`).
fn agent_known() -> Vec<Rec> {
    vec![
        r(25_300, PRICE, Dec("19.99"), "c1", "n2", PROD),
        r(1_100, PRICE, Dec("0.1"), "c1", "n1", PROD),
        r(13_400, PRICE, Dec("-3.5"), "c2", "n3", DEV),
        r(27_000, TEMP, F(0.5), "c1", "n1", PROD),
        r(7_700, PRICE, Dec("1000000.123456789"), "c1", "n2", PROD_TEAM),
        r(3_300, TEMP, F(21.5), "c1", "n1", PROD),
        r(21_250, PRICE, Dec("0.000000001"), "c1", "n1", NONE),
        r(9_999, TEMP, F(-1.25), "c2", "n3", DEV),
        r(16_600, PRICE, Dec("2.5"), "c1", "n1", PROD),
        r(11_000, TEMP, F(22.75), "c1", "n2", PROD),
        r(19_999, TEMP, F(1024.0), "c1", "n2", NONE),
    ]
}

/// Pushed directly over gRPC as two batches (agent id `e2e-direct`, sequences 1 and 2).
fn direct_known() -> [Vec<Rec>; 2] {
    [
        vec![
            r(27_900, PRICE, Dec("5"), "c2", "n3", DEV),
            r(2_200, PRICE, Dec("0.2"), "c1", "n1", PROD),
            r(12_125, TEMP, F(-7.5), "c2", "n3", DEV),
            r(8_800, PRICE, Dec("0.3"), "c2", "n3", DEV),
            r(14_500, PRICE, Dec("0.1"), "c1", "n2", PROD_TEAM),
        ],
        vec![
            r(23_456, TEMP, F(3.0), "c1", "n1", TEAM),
            r(4_400, PRICE, Dec("33.333333333"), "c1", "n2", NONE),
            r(18_100, PRICE, Dec("0.2"), "c1", "n1", PROD),
            r(10_000, TEMP, F(0.25), "c1", "n1", PROD),
            r(5_500, TEMP, F(20.0), "c1", "n2", PROD),
        ],
    ]
}

/// Closing records for both metrics at `at` (agent) and `at + 1` (direct).
fn closing(at: i64, n: &'static str) -> (Vec<Rec>, Vec<Rec>) {
    (
        vec![r(at, PRICE, Dec(n), "c0", "closer", NONE), r(at + 2, TEMP, F(1.0), "c0", "closer", NONE)],
        vec![r(at + 1, PRICE, Dec(n), "c0", "closer", NONE), r(at + 3, TEMP, F(2.0), "c0", "closer", NONE)],
    )
}

/// A record as sent, with what identifies it in the API.
#[derive(Debug, Clone)]
struct Sent {
    rec: Rec,
    agent: &'static str,
    raw: Option<String>,
}

fn decimal(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("bad decimal {text:?}: {e:?}"))
}

fn json_line(base: i64, s: &Sent) -> String {
    let r = &s.rec;
    let value = match r.value {
        Dec(t) => json!(t),
        F(f) => json!(f),
    };
    let tags: serde_json::Map<String, Json> = r.tags.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
    let mut line = json!({
        "metric": r.metric, "value": value, "time": base + r.at,
        "cluster": r.cluster, "node": r.node, "tags": tags,
    });
    if let Some(raw) = &s.raw {
        line["raw"] = json!(raw);
    }
    line.to_string()
}

fn wire(base: i64, s: &Sent) -> v1::Record {
    let r = &s.rec;
    v1::Record {
        metric: r.metric.into(),
        value: Some(match r.value {
            Dec(t) => v1::record::Value::DecimalValue(decimal(t)),
            F(f) => v1::record::Value::DoubleValue(f),
        }),
        event_time: Some(nanos_to_timestamp((base + r.at) * 1_000_000)),
        cluster: r.cluster.into(),
        node: r.node.into(),
        tags: r.tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        raw: s.raw.as_ref().map(|t| t.clone().into_bytes()),
    }
}

fn batch(base: i64, sequence: u64, records: &[Sent]) -> RecordBatch {
    RecordBatch {
        agent_id: DIRECT_ID.into(),
        sequence,
        sent_at: None,
        records: records.iter().map(|s| wire(base, s)).collect(),
    }
}

fn agent_post(addr: SocketAddr, base: i64, records: &[Sent]) {
    let body: String = records.iter().map(|s| json_line(base, s) + "\n").collect();
    let resp = http("POST", addr, "/v1/records", Some(("application/x-ndjson", body.as_bytes()))).unwrap();
    assert_eq!(resp.status, 200, "agent push: {}", resp.text());
    let answer = resp.json().unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(records.len() as u64), Some(0)),
        "{answer}"
    );
}

// ---------------------------------------------------------------- the oracle (brute force)

/// The dimension key text, written independently of the product (`%`, `,`, `=` escaped).
fn key_escape(s: &str) -> String {
    s.replace('%', "%25").replace(',', "%2C").replace('=', "%3D")
}

fn dimension_keys(r: &Rec) -> Vec<String> {
    let mut keys = vec!["fleet".to_string()];
    if !r.cluster.is_empty() {
        keys.push(format!("cluster={}", key_escape(r.cluster)));
    }
    if !r.node.is_empty() {
        keys.push(format!("node={}", key_escape(r.node)));
    }
    keys.extend(r.tags.iter().map(|(k, v)| format!("tag:{}={}", key_escape(k), key_escape(v))));
    keys
}

type SeriesPoints<'a> = BTreeMap<(String, String), BTreeMap<i64, Vec<&'a Sent>>>;

/// The records behind every point whose window ended at or before `watermark` (ms after base),
/// per (metric, dimension key) and window start (ms after base).
fn expected_points(records: &[Sent], watermark: i64) -> SeriesPoints<'_> {
    let mut out: SeriesPoints<'_> = BTreeMap::new();
    for s in records {
        let start = s.rec.at.div_euclid(WINDOW_MS) * WINDOW_MS;
        if start + WINDOW_MS > watermark {
            continue;
        }
        for key in dimension_keys(&s.rec) {
            out.entry((s.rec.metric.to_string(), key)).or_default().entry(start).or_default().push(s);
        }
    }
    out
}

/// count, sum, avg, min, max, last, last_time (absolute ms) as the API shows them.
fn fold(base: i64, records: &[&Sent]) -> BTreeMap<&'static str, Json> {
    let count = records.len();
    assert!(count > 0);
    let last = (0..count).max_by_key(|&i| records[i].rec.at).unwrap();
    let mut out = BTreeMap::new();
    out.insert("count", json!(count));
    out.insert("last_time", json!(base + records[last].rec.at));
    let decimals: Option<Vec<i128>> = records
        .iter()
        .map(|s| match s.rec.value {
            Dec(t) => Some(decimal(t).to_nano_units().unwrap()),
            F(_) => None,
        })
        .collect();
    if let Some(nanos) = decimals {
        let text = |n: i128| json!(Decimal::from_nano_units(n).unwrap().to_string());
        let sum: i128 = nanos.iter().sum();
        let n = count as i128;
        // Exact mean rounded half away from zero to the nano-unit.
        let (q, rem) = (sum / n, sum % n);
        let avg = if 2 * rem.abs() >= n { q + sum.signum() } else { q };
        out.insert("sum", text(sum));
        out.insert("avg", text(avg));
        out.insert("min", text(*nanos.iter().min().unwrap()));
        out.insert("max", text(*nanos.iter().max().unwrap()));
        out.insert("last", text(nanos[last]));
    } else {
        let floats: Vec<f64> = records
            .iter()
            .map(|s| match s.rec.value {
                F(f) => f,
                Dec(_) => panic!("a metric of mixed kinds in the test data"),
            })
            .collect();
        let sum: f64 = floats.iter().sum();
        out.insert("sum", json!(sum));
        out.insert("avg", json!(sum / count as f64));
        out.insert("min", json!(floats.iter().copied().fold(f64::INFINITY, f64::min)));
        out.insert("max", json!(floats.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        out.insert("last", json!(floats[last]));
    }
    out
}

/// Equal JSON, numbers compared as doubles (`1024` and `1024.0` are the same value).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A raw record as (time, value, agent, cluster, node, tags, raw), for multiset comparison.
type RawRow = (i64, String, String, String, String, Vec<(String, String)>, Option<String>);

fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => format!("decimal {s}"),
        Json::Number(n) => format!("double {}", n.as_f64().unwrap()),
        other => format!("unexpected {other}"),
    }
}

fn expected_raw(base: i64, records: &[&Sent]) -> Vec<RawRow> {
    let mut rows: Vec<RawRow> = records
        .iter()
        .map(|s| {
            let value = match s.rec.value {
                Dec(t) => json!(t),
                F(f) => json!(f),
            };
            let mut tags: Vec<(String, String)> = s.rec.tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
            tags.sort();
            (
                base + s.rec.at,
                value_text(&value),
                s.agent.into(),
                s.rec.cluster.into(),
                s.rec.node.into(),
                tags,
                s.raw.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn api_raw_rows(records: &[Json]) -> Vec<RawRow> {
    let mut rows: Vec<RawRow> = records
        .iter()
        .map(|r| {
            let mut tags: Vec<(String, String)> = r["tags"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            tags.sort();
            (
                r["time"].as_i64().unwrap(),
                value_text(&r["value"]),
                r["agent"].as_str().unwrap().into(),
                r["cluster"].as_str().unwrap().into(),
                r["node"].as_str().unwrap().into(),
                tags,
                r["raw"].as_str().map(String::from),
            )
        })
        .collect();
    rows.sort();
    rows
}

// ---------------------------------------------------------------- API reads

fn watermark_ms(addr: SocketAddr) -> Option<i64> {
    get_json(addr, "/healthz").ok()?["watermark_ms"].as_i64()
}

fn prometheus(addr: SocketAddr) -> String {
    http("GET", addr, "/metrics", None).map(|r| r.text()).unwrap_or_default()
}

fn counter(addr: SocketAddr, name: &str) -> f64 {
    let text = prometheus(addr);
    prometheus_value(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn aggregates(addr: SocketAddr, base: i64, metric: &str, key: &str) -> Result<Vec<Json>, String> {
    let path = format!(
        "/api/aggregates?metric={}&dimension={}&from={base}&to={}",
        query_value(metric),
        query_value(key),
        base + 1_000_000
    );
    let body = get_json(addr, &path)?;
    body["points"].as_array().cloned().ok_or_else(|| format!("no points array in {body}"))
}

/// Compares every series of `expected` with `/api/aggregates`; the first difference as `Err`.
fn check_aggregates(addr: SocketAddr, base: i64, expected: &SeriesPoints<'_>) -> Result<(), String> {
    for ((metric, key), points) in expected {
        let got = aggregates(addr, base, metric, key)?;
        let got_starts: Vec<i64> = got.iter().filter_map(|p| p["start"].as_i64()).collect();
        let want_starts: Vec<i64> = points.keys().map(|s| base + s).collect();
        if got_starts != want_starts {
            return Err(format!("{metric} {{{key}}}: point starts {got_starts:?}, expected {want_starts:?}"));
        }
        for (p, (start, records)) in got.iter().zip(points) {
            if p["end"].as_i64() != Some(base + start + WINDOW_MS) {
                return Err(format!("{metric} {{{key}}} @{start}: end {}", p["end"]));
            }
            for (field, want) in fold(base, records) {
                if !same(&p[field], &want) {
                    return Err(format!(
                        "{metric} {{{key}}} @+{start}ms: {field} = {}, expected {want}; point {p}",
                        p[field]
                    ));
                }
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

#[test]
fn agent_and_direct_pushes_give_exact_aggregates_and_drill_downs() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let config = r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "2s"
allowed_lateness = "30s"
idle_timeout = "0"
shards = 2

[engine.limits]
max_future = "0"
max_past = "0"
"#;
    let mut aggregator = Aggregator::start(dir.path(), config).unwrap();
    logs.add(&aggregator.proc);
    let api = aggregator.http;
    let (mut agent, agent_http) = meshmon_tests::start_agent(dir.path(), AGENT_ID, aggregator.grpc).unwrap();
    logs.add(&agent);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // Half an hour ago, minute-aligned (so window-aligned); inside retention and the limits.
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let base = (now_ms / 60_000 - 30) * 60_000;

    let sent = |recs: Vec<Rec>, agent: &'static str, tag: &str| -> Vec<Sent> {
        recs.into_iter().enumerate().map(|(i, rec)| Sent { rec, agent, raw: Some(format!("{tag} #{i}")) }).collect()
    };
    let agent_records = sent(agent_known(), AGENT_ID, "agent line");
    let [d1, d2] = direct_known();
    let (direct1, direct2) = (sent(d1, DIRECT_ID, "direct batch 1"), sent(d2, DIRECT_ID, "direct batch 2"));
    let unraw = |v: Vec<Rec>, agent| v.into_iter().map(|rec| Sent { rec, agent, raw: None }).collect::<Vec<_>>();
    let (c1_agent, c1_direct) = closing(100_000, "1");
    let (c2_agent, c2_direct) = closing(200_000, "2");
    let (close1_agent, close1_direct) = (unraw(c1_agent, AGENT_ID), unraw(c1_direct, DIRECT_ID));
    let (close2_agent, close2_direct) = (unraw(c2_agent, AGENT_ID), unraw(c2_direct, DIRECT_ID));
    let late =
        Sent { rec: r(6_060, PRICE, Dec("777"), "c1", "n1", PROD), agent: AGENT_ID, raw: Some("too late".into()) };

    // Everything that must be counted (the late record is not).
    let counted: Vec<Sent> =
        [&agent_records, &direct1, &direct2, &close1_agent, &close1_direct, &close2_agent, &close2_direct]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
    let times: BTreeSet<i64> = counted.iter().chain([&late]).map(|s| s.rec.at).collect();
    assert_eq!(times.len(), counted.len() + 1, "event times must be unique (no `last` tie-breaks)");
    // The design: no watermark from known records (≤ newest − 2 s) reaches the first window's
    // end + lateness (40 s), so none of them can be late; the late one is late for good at 98 s.
    let known_max = counted.iter().map(|s| s.rec.at).filter(|&t| t < 100_000).max().unwrap();
    assert!(known_max - OUT_OF_ORDERNESS_MS < WINDOW_MS + ALLOWED_LATENESS_MS);
    assert!(WINDOW_MS + ALLOWED_LATENESS_MS <= 100_000 - OUT_OF_ORDERNESS_MS && late.rec.at < WINDOW_MS);

    // 1. The agent's records, out of order, in two requests; wait until the aggregator has all.
    agent_post(agent_http, base, &agent_records[..6]);
    agent_post(agent_http, base, &agent_records[6..]);
    let n_agent = agent_records.len() as f64;
    wait_for("the agent's records at the aggregator", TIMEOUT, || {
        (prometheus_value(&prometheus(api), "meshmon_records_in_total")? == n_agent).then_some(())
    })
    .unwrap();
    // Only the agent's input is known: its watermark (newest event time − 2 s) is the global one.
    let agent_max = agent_records.iter().map(|s| s.rec.at).max().unwrap();
    assert_eq!(watermark_ms(api), Some(base + agent_max - OUT_OF_ORDERNESS_MS));

    // 2. The direct "agent": two batches, then the second again on a new connection (a retry).
    let acks =
        grpc_push(&rt, aggregator.grpc, vec![batch(base, 1, &direct1), batch(base, 2, &direct2)], TIMEOUT).unwrap();
    let summary: Vec<_> = acks.iter().map(|a| (a.sequence, a.status, a.accepted, a.invalid)).collect();
    let accepted = AckStatus::Accepted as i32;
    assert_eq!(summary, [(1, accepted, 5, 0), (2, accepted, 5, 0)], "{acks:?}");
    let retry = grpc_push(&rt, aggregator.grpc, vec![batch(base, 2, &direct2)], TIMEOUT).unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!((retry[0].agent_id.as_str(), retry[0].sequence), (DIRECT_ID, 2));
    assert_eq!(retry[0].status, AckStatus::Duplicate as i32, "a re-sent batch is a duplicate: {retry:?}");
    // The watermark never goes back, and the direct input (at 25.9 s) does not move it yet.
    assert_eq!(watermark_ms(api), Some(base + agent_max - OUT_OF_ORDERNESS_MS));

    // 3. Both inputs jump to base + 100 s: every known window closes.
    agent_post(agent_http, base, &close1_agent);
    let acks = grpc_push(&rt, aggregator.grpc, vec![batch(base, 3, &close1_direct)], TIMEOUT).unwrap();
    assert_eq!(acks.iter().map(|a| a.status).collect::<Vec<_>>(), [accepted]);
    let wm1 = 100_002 - OUT_OF_ORDERNESS_MS;
    wait_for("the watermark at base + 98 s", TIMEOUT, || (watermark_ms(api)? == base + wm1).then_some(())).unwrap();
    let expected1 = expected_points(&counted, wm1);
    assert!(expected1.len() > 15, "{} series", expected1.len());
    poll_ok("every known window in /api/aggregates", || check_aggregates(api, base, &expected1));

    // 4. One record too late for good, then closing records behind it on the same input.
    agent_post(agent_http, base, std::slice::from_ref(&late));
    agent_post(agent_http, base, &close2_agent);
    let acks = grpc_push(&rt, aggregator.grpc, vec![batch(base, 4, &close2_direct)], TIMEOUT).unwrap();
    assert_eq!(acks.iter().map(|a| a.status).collect::<Vec<_>>(), [accepted]);
    let wm2 = 200_002 - OUT_OF_ORDERNESS_MS;
    wait_for("the watermark at base + 198 s", TIMEOUT, || (watermark_ms(api)? == base + wm2).then_some(())).unwrap();
    // The [100 s, 110 s) windows of both metrics fire only after the late record was placed
    // (same input, earlier batch; each shard takes its batches in order).
    let expected = expected_points(&counted, wm2);
    assert!(expected1.keys().all(|k| expected.contains_key(k)) && expected.len() > expected1.len());
    poll_ok("the closing windows in /api/aggregates", || check_aggregates(api, base, &expected));

    // Dimensions: exactly those of the counted records, keys escaped.
    for metric in [PRICE, TEMP] {
        let body = get_json(api, &format!("/api/dimensions?metric={metric}")).unwrap();
        let got: BTreeSet<String> =
            body["dimensions"].as_array().unwrap().iter().map(|d| d["key"].as_str().unwrap().to_string()).collect();
        let want: BTreeSet<String> = expected.keys().filter(|(m, _)| m == metric).map(|(_, k)| k.clone()).collect();
        assert_eq!(got, want, "dimensions of {metric}");
        let team = body["dimensions"].as_array().unwrap().iter().find(|d| d["kind"] == "tag" && d["name"] == "team");
        assert_eq!(
            team,
            Some(&json!({"kind": "tag", "name": "team", "value": "a=b,c%", "key": "tag:team=a%3Db%2Cc%25"}))
        );
    }

    // A few values spelled out, independent of the fold above.
    let point = |metric: &str, key: &str, at: i64| -> Json {
        let points = aggregates(api, base, metric, key).unwrap();
        points.into_iter().find(|p| p["start"] == json!(base + at)).unwrap_or_else(|| panic!("no {metric} {key} @{at}"))
    };
    let n1 = point(PRICE, "node=n1", 0);
    assert_eq!(
        [&n1["count"], &n1["sum"], &n1["avg"], &n1["min"], &n1["max"], &n1["last"], &n1["last_time"]],
        [&json!(2), &json!("0.3"), &json!("0.15"), &json!("0.1"), &json!("0.2"), &json!("0.2"), &json!(base + 2_200)],
        "0.1 (agent) + 0.2 (direct), exactly; the late 777 is not in it: {n1}"
    );
    let c1 = point(PRICE, "cluster=c1", 0);
    assert_eq!((&c1["count"], &c1["sum"]), (&json!(4), &json!("1000033.756790122")), "{c1}");
    assert_eq!(c1["avg"], json!("250008.439197531"), "exact mean rounded half away from zero: {c1}");
    let fleet = point(PRICE, "fleet", 0);
    assert!(fleet["revision"].as_u64().unwrap() >= 1, "direct records corrected a fired window: {fleet}");
    let temp = point(TEMP, "tag:team=a%3Db%2Cc%25", 20_000);
    assert_eq!((&temp["count"], &temp["sum"]), (&json!(1), &json!(3.0)), "{temp}");

    // Drill-down: every point's raw records are exactly the records folded into it.
    let mut drilled = 0;
    for ((metric, key), points) in &expected {
        for (start, records) in points {
            let path = format!(
                "/api/raw?metric={}&dimension={}&start={}&page_size=10000",
                query_value(metric),
                query_value(key),
                base + start
            );
            let body = get_json(api, &path).unwrap();
            assert_eq!(body["count_in_point"], json!(records.len()), "{path}: {body}");
            assert_eq!(body["next_page_token"], Json::Null, "{path}");
            assert_eq!(body["end"], json!(base + start + WINDOW_MS), "{path}");
            let got = api_raw_rows(body["records"].as_array().unwrap());
            assert_eq!(got, expected_raw(base, records), "raw records of {metric} {{{key}}} @+{start}ms");
            drilled += 1;
        }
    }
    assert!(drilled > 40, "{drilled} points drilled into");

    // The late record: counted as late, kept as a dead letter, in no point (checked above).
    assert_eq!(counter(api, "meshmon_records_late_total"), 1.0);
    let letters = get_json(api, "/api/dead_letters").unwrap();
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((&letters[0]["value"], &letters[0]["agent"]), (&json!("777"), &json!(AGENT_ID)));
    assert!(letters[0]["reason"].as_str().unwrap().starts_with("late"), "{}", letters[0]);

    // Every first-delivered record is exactly one of accepted, late, invalid; the retry was skipped.
    let metrics = prometheus(api);
    let value = |name: &str| prometheus_value(&metrics, name).unwrap_or_else(|| panic!("no {name}:\n{metrics}"));
    assert_eq!(value("meshmon_records_accepted_total"), counted.len() as f64, "{metrics}");
    assert_eq!(value("meshmon_records_in_total"), counted.len() as f64 + 1.0, "{metrics}");
    assert!(value("meshmon_duplicate_batches_total") >= 1.0, "{metrics}");
    assert!(value("meshmon_duplicate_records_total") >= direct2.len() as f64, "{metrics}");
    assert!(value("meshmon_corrections_total") >= 1.0, "{metrics}");
    let invalid: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("meshmon_records_invalid_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(invalid, 0.0, "{metrics}");

    // Both stop cleanly: the agent only exits 0 when every batch was acknowledged. The
    // direct client's connections close with their runtime (the aggregator's graceful
    // shutdown waits for open gRPC connections).
    drop(rt);
    let status = agent.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "agent exit status {status:?}");
    let status = aggregator.proc.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "aggregator exit status {status:?}");
}

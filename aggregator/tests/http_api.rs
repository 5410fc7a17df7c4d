//! Tests of the aggregator's HTTP layer (`http/`): the JSON API, `/healthz`, `/metrics` and the
//! built-in page, served by `actix_web::test` over an `EmbeddedStore` in a temp dir that a
//! `WindowEngine` filled through a `WriteBatchSink`.
//!
//! Role: checks that listings, aggregates (incl. exact decimals as strings) and drill-downs
//! (paged, exact, no repeats) equal what the engine computed; that data with markup comes back
//! verbatim as JSON data; that every bad parameter is a 400 with a JSON error; the Prometheus
//! content type; that the page and its assets are served offline-clean; and, with proptest,
//! that the dimension key text round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::test as atest;
use actix_web::{App, web};
use meshmon_aggregator::engine::{
    AcceptedRecord, Batch, Dimension, DimensionField, DimensionSpec, EngineConfig, EngineCounters, EngineOutput,
    InvalidRecord, LateRecord, LatestResults, Limits, Nanos, Record, SeriesKey, TagDimensions, Value, WindowEngine,
    WindowResult, WindowSpec,
};
use meshmon_aggregator::http::{HttpState, MAX_POINTS, configure, dimension_key};
use meshmon_aggregator::runtime::metrics::{RuntimeMetrics, ShardGauges};
use meshmon_aggregator::store::{EmbeddedStore, StoreConfig, WriteBatchSink};
use proptest::prelude::*;
use serde_json::Value as Json;

const MS: Nanos = 1_000_000;
const SEC: Nanos = 1_000_000_000;
const T0_MS: i64 = 1_700_000_000_000;
const T0: Nanos = T0_MS * MS;
const SCRIPT: &str = "<script>alert(1)</script>";
const ODD_CLUSTER: &str = "c=1,x%";

// ---------------------------------------------------------------- fixture

/// Feeds the store sink and keeps the engine's latest results for comparison.
#[derive(Debug)]
struct Tee {
    sink: WriteBatchSink,
    reference: LatestResults,
}

impl EngineOutput for Tee {
    fn accepted(&mut self, a: AcceptedRecord<'_>) {
        self.sink.accepted(a);
        self.reference.accepted(a);
    }
    fn result(&mut self, r: WindowResult<'_>) {
        self.sink.result(r.clone());
        self.reference.result(r);
    }
    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.sink.retract(series, window_start);
        self.reference.retract(series, window_start);
    }
    fn late(&mut self, l: LateRecord<'_>) {
        self.sink.late(l);
        self.reference.late(l);
    }
    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.sink.invalid(i);
        self.reference.invalid(i);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: HttpState,
    reference: LatestResults,
    counters: EngineCounters,
}

fn engine_config(window: WindowSpec, dimensions: DimensionSpec) -> EngineConfig {
    EngineConfig {
        window,
        out_of_orderness: SEC,
        allowed_lateness: 60 * SEC,
        idle_timeout: None,
        dimensions,
        limits: Limits { max_future: None, max_past: None, ..Limits::default() },
        ..EngineConfig::default()
    }
}

fn rec(metric: &str, t: Nanos, value: Value, cluster: &str, node: &str, tags: &[(&str, &str)]) -> Record {
    Record {
        metric: metric.into(),
        value,
        time: t,
        cluster: cluster.into(),
        node: node.into(),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// Runs `batches` (records with optional payloads) through an engine into a fresh store.
fn build(config: EngineConfig, batches: Vec<Vec<(Record, Option<Vec<u8>>)>>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb"), StoreConfig::default()).unwrap();
    let mut engine = WindowEngine::new(config.clone()).unwrap();
    let mut tee = Tee { sink: WriteBatchSink::new(config.window), reference: LatestResults::default() };
    let arrival = T0 + 30 * SEC;
    for (i, batch) in batches.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let (records, payloads): (Vec<Record>, Vec<Option<Vec<u8>>>) = batch.into_iter().unzip();
        tee.sink.begin(arrival, "agent-1", seq, payloads);
        engine.process_batch("in-1", &Batch { agent: "agent-1", sequence: seq, records: &records }, arrival, &mut tee);
        store.write(&tee.sink.take()).unwrap();
    }
    tee.sink.begin(arrival, "", 0, Vec::new());
    engine.finish(&mut tee);
    store.write(&tee.sink.take()).unwrap();
    let metrics = Arc::new(RuntimeMetrics::new(1));
    let state = HttpState::new(Arc::new(store), metrics, config);
    Fixture { _dir: dir, state, reference: tee.reference, counters: engine.counters() }
}

/// cpu: 26 records in window 0 (one in an odd cluster with a `<script>` tag value), 3 in
/// window 1, one NaN (invalid); money: decimals 0.1 and 0.2 in window 0.
fn fixture() -> Fixture {
    let dims = DimensionSpec {
        fleet: true,
        cluster: true,
        node: true,
        tags: TagDimensions::All,
        sets: vec![vec![DimensionField::Cluster, DimensionField::Tag("region".into())]],
    };
    let tags = [("env", "prod"), ("region", "eu")];
    let mut b1 = Vec::new();
    for i in 0..25i64 {
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        let payload = match i {
            3 => Some(vec![0xff, 0xfe, 0x00]),
            i if i % 5 == 0 => Some(format!("line {i} <b>bold</b>").into_bytes()),
            _ => None,
        };
        b1.push((rec("cpu", T0 + i * 300 * MS, Value::Float(i as f64 * 0.5), "c1", node, &tags), payload));
    }
    b1.push((rec("cpu", T0 + 5 * SEC, Value::Float(7.0), ODD_CLUSTER, "n3", &[("note", SCRIPT)]), None));
    let b2 = vec![
        (rec("money", T0 + SEC, Value::Decimal(100_000_000), "c1", "n1", &[]), None),
        (rec("money", T0 + 2 * SEC, Value::Decimal(200_000_000), "c1", "n1", &[]), None),
        (rec("cpu", T0 + 3 * SEC, Value::Float(f64::NAN), "c1", "n1", &[]), Some(b"nan line".to_vec())),
    ];
    let b3 =
        (1..=3).map(|v| (rec("cpu", T0 + (10 + v) * SEC, Value::Float(v as f64), "c1", "n1", &tags), None)).collect();
    let config = engine_config(WindowSpec::Tumbling { size: 10 * SEC, offset: 0 }, dims);
    build(config, vec![b1, b2, b3])
}

/// Percent-encodes a query parameter value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

macro_rules! app {
    ($state:expr) => {
        atest::init_service(App::new().app_data(web::Data::new($state.clone())).configure(configure)).await
    };
}

/// GET → (status, content type, body bytes).
macro_rules! get {
    ($app:expr, $uri:expr) => {{
        let resp = atest::call_service(&$app, atest::TestRequest::get().uri(&$uri).to_request()).await;
        let status = resp.status();
        let ct = resp.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = atest::read_body(resp).await;
        (status, ct, body)
    }};
}

/// GET that must answer 200 JSON.
macro_rules! get_json {
    ($app:expr, $uri:expr) => {{
        let uri: String = $uri;
        let (status, ct, body) = get!($app, uri);
        assert_eq!(status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&body));
        assert!(ct.starts_with("application/json"), "{uri}: content type {ct}");
        serde_json::from_slice::<Json>(&body).unwrap()
    }};
}

fn check_value(json: &Json, v: Value, what: &str) {
    match v {
        Value::Float(f) => assert_eq!(json.as_f64(), Some(f), "{what}: a double is a JSON number"),
        Value::Decimal(_) => {
            assert_eq!(json.as_str(), Some(v.to_string().as_str()), "{what}: a decimal is its exact text")
        }
    }
}

// ---------------------------------------------------------------- listings and aggregates

#[actix_web::test]
async fn metrics_and_dimensions_are_listed() {
    let f = fixture();
    let app = app!(f.state);
    let m = get_json!(app, "/api/metrics".to_string());
    assert_eq!(m, serde_json::json!({ "metrics": ["cpu", "money"] }));

    let d = get_json!(app, "/api/dimensions?metric=cpu".to_string());
    let dims = d["dimensions"].as_array().unwrap();
    let keys: Vec<&str> = dims.iter().map(|d| d["key"].as_str().unwrap()).collect();
    for want in [
        "fleet",
        "cluster=c1",
        "cluster=c%3D1%2Cx%25",
        "node=n1",
        "node=n3",
        "tag:env=prod",
        "set:cluster=c1,region=eu",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
    assert!(dims.contains(&serde_json::json!({ "kind": "fleet", "key": "fleet" })));
    assert!(dims.contains(&serde_json::json!({ "kind": "cluster", "value": "c1", "key": "cluster=c1" })));
    assert!(
        dims.contains(&serde_json::json!({ "kind": "cluster", "value": ODD_CLUSTER, "key": "cluster=c%3D1%2Cx%25" }))
    );
    assert!(
        dims.contains(&serde_json::json!({ "kind": "tag", "name": "env", "value": "prod", "key": "tag:env=prod" }))
    );
    let set = serde_json::json!({
        "kind": "set",
        "pairs": [["cluster", "c1"], ["region", "eu"]],
        "key": "set:cluster=c1,region=eu",
    });
    assert!(dims.contains(&set));
    // A tag value with markup is data: returned verbatim, in the value and in the key.
    let script = format!("tag:note={SCRIPT}");
    assert!(dims.contains(&serde_json::json!({ "kind": "tag", "name": "note", "value": SCRIPT, "key": script })));
    // Every key parses back to the dimension it names.
    for d in dims {
        dimension_key::parse(d["key"].as_str().unwrap()).unwrap();
    }
}

#[actix_web::test]
async fn aggregates_equal_the_engine_results() {
    let f = fixture();
    let app = app!(f.state);
    let (from, to) = (T0_MS - 60_000, T0_MS + 60_000);
    let mut compared = 0;
    for metric in ["cpu", "money"] {
        let dims = get_json!(app, format!("/api/dimensions?metric={metric}"));
        for d in dims["dimensions"].as_array().unwrap() {
            let key = d["key"].as_str().unwrap();
            let body =
                get_json!(app, format!("/api/aggregates?metric={metric}&dimension={}&from={from}&to={to}", enc(key)));
            assert_eq!(body["metric"], metric);
            assert_eq!(body["dimension"], key);
            assert_eq!(body["window"], "tumbling:10s");
            let dimension = dimension_key::parse(key).unwrap();
            let expected: Vec<_> = f
                .reference
                .results
                .iter()
                .filter(|((s, _), _)| &*s.metric == metric && s.dimension == dimension)
                .map(|(_, r)| r)
                .collect();
            let points = body["points"].as_array().unwrap();
            assert_eq!(points.len(), expected.len(), "{metric} {key}");
            for (p, r) in points.iter().zip(expected) {
                assert_eq!(p["start"], r.window.start / MS);
                assert_eq!(p["end"], r.window.end / MS);
                assert_eq!(p["revision"], r.revision);
                assert_eq!(p["count"], r.stats.count());
                assert_eq!(p["last_time"], r.stats.last_time / MS);
                check_value(&p["sum"], r.stats.sum(), "sum");
                check_value(&p["avg"], r.stats.avg(), "avg");
                check_value(&p["min"], r.stats.totals.min, "min");
                check_value(&p["max"], r.stats.totals.max, "max");
                check_value(&p["last"], r.stats.last, "last");
                compared += 1;
            }
        }
    }
    assert!(compared >= 12, "compared {compared} points");

    // Exact decimals stay exact text: 0.1 + 0.2 is "0.3", not 0.30000000000000004.
    let money = get_json!(app, format!("/api/aggregates?metric=money&dimension=fleet&from={from}&to={to}"));
    let p = &money["points"][0];
    assert_eq!((p["sum"].as_str(), p["avg"].as_str()), (Some("0.3"), Some("0.15")));
    assert_eq!((p["min"].as_str(), p["max"].as_str(), p["last"].as_str()), (Some("0.1"), Some("0.2"), Some("0.2")));
    // Doubles are numbers.
    let cpu = get_json!(app, format!("/api/aggregates?metric=cpu&from={from}&to={to}"));
    assert_eq!(cpu["dimension"], "fleet", "the dimension defaults to the fleet");
    assert_eq!(cpu["points"][0]["count"], 26);
    assert_eq!(cpu["points"][0]["max"], 12.0);
    assert_eq!(cpu["points"][1]["sum"], 6.0);
    // `to` is exclusive on window starts.
    let one = get_json!(app, format!("/api/aggregates?metric=cpu&from={T0_MS}&to={}", T0_MS + 10_000));
    assert_eq!(one["points"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn default_range_ends_at_the_watermark() {
    let f = fixture();
    f.state.metrics.publish_gate(&f.counters, T0 + 25 * SEC, T0 + 26 * SEC);
    let app = app!(f.state);
    let body = get_json!(app, "/api/aggregates?metric=cpu".to_string());
    assert_eq!((body["from"].as_i64(), body["to"].as_i64()), (Some(T0_MS + 25_001 - 3_600_000), Some(T0_MS + 25_001)));
    assert_eq!(body["points"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------- drill-down

/// Pages through `/api/raw` for one point; returns the records and the point count.
macro_rules! drill_all {
    ($app:expr, $query:expr, $page:expr) => {{
        let mut token: Option<String> = None;
        let mut records: Vec<Json> = Vec::new();
        let mut count: Option<u64>;
        let mut pages = 0;
        loop {
            let mut uri = format!("/api/raw?{}&page_size={}", $query, $page);
            if let Some(t) = &token {
                uri.push_str(&format!("&page_token={}", enc(t)));
            }
            let body = get_json!($app, uri);
            pages += 1;
            let page = body["records"].as_array().unwrap();
            assert!(page.len() <= $page);
            records.extend(page.iter().cloned());
            count = body["count_in_point"].as_u64();
            match body["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => {
                    assert!(body["next_page_token"].is_null());
                    break;
                }
            }
            assert!(pages < 1_000);
        }
        (records, count.unwrap(), pages)
    }};
}

#[actix_web::test]
async fn raw_drill_down_pages_through_exactly_the_point() {
    let f = fixture();
    let app = app!(f.state);
    let (records, count, pages) = drill_all!(app, format!("metric=cpu&dimension=fleet&start={T0_MS}"), 7);
    assert_eq!(count, 26);
    assert_eq!(records.len(), 26, "exactly count records");
    assert_eq!(pages, 4, "26 records in pages of 7");
    let ids: BTreeSet<(String, u64, u64)> = records
        .iter()
        .map(|r| {
            (r["agent"].as_str().unwrap().to_owned(), r["sequence"].as_u64().unwrap(), r["index"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(ids.len(), 26, "no record twice");
    for r in &records {
        let t = r["time"].as_i64().unwrap();
        assert!((T0_MS..T0_MS + 10_000).contains(&t));
        assert_eq!(r["metric"], "cpu");
    }
    // Payloads: UTF-8 text verbatim, other bytes as a base64 marker, none as null.
    let by_index = |i: u64| records.iter().find(|r| r["sequence"] == 1 && r["index"] == i).unwrap();
    assert_eq!(by_index(5)["raw"], "line 5 <b>bold</b>");
    assert_eq!(by_index(3)["raw"], serde_json::json!({ "base64": "//4A" }));
    assert!(by_index(1)["raw"].is_null());
    assert_eq!(by_index(2)["value"], 1.0);
    assert_eq!(by_index(2)["tags"], serde_json::json!({ "env": "prod", "region": "eu" }));

    // The same set whatever the page size.
    let (all, _, pages) = drill_all!(app, format!("metric=cpu&dimension=fleet&start={T0_MS}"), 500);
    assert_eq!(pages, 1);
    assert_eq!(all, records);

    // Another dimension: the odd cluster, named by its escaped key; its tag value is data.
    let key = enc("cluster=c%3D1%2Cx%25");
    let (odd, count, _) = drill_all!(app, format!("metric=cpu&dimension={key}&start={T0_MS}"), 2);
    assert_eq!((odd.len(), count), (1, 1));
    assert_eq!(odd[0]["cluster"], ODD_CLUSTER);
    assert_eq!(odd[0]["tags"]["note"], SCRIPT, "markup in data comes back verbatim");
    let body = get_json!(app, format!("/api/raw?metric=cpu&dimension={key}&start={T0_MS}"));
    assert_eq!((body["start"].as_i64(), body["end"].as_i64()), (Some(T0_MS), Some(T0_MS + 10_000)));

    // Decimals in raw records are exact text too.
    let (money, count, _) = drill_all!(app, format!("metric=money&dimension=node%3Dn1&start={T0_MS}"), 1);
    assert_eq!(count, 2);
    let values: Vec<&Json> = money.iter().map(|r| &r["value"]).collect();
    assert_eq!(values, [&Json::from("0.1"), &Json::from("0.2")]);
}

#[actix_web::test]
async fn dead_letters_are_listed_with_reasons() {
    let f = fixture();
    let app = app!(f.state);
    let body = get_json!(app, format!("/api/dead_letters?from={T0_MS}&to={}", T0_MS + 60_000));
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert!(d["reason"].as_str().unwrap().contains("non_finite_value"), "{d}");
    assert_eq!((d["value"].as_str(), d["raw"].as_str()), (Some("NaN"), Some("nan line")));
    assert_eq!((d["arrival"].as_i64(), d["time"].as_i64()), (Some(T0_MS + 30_000), Some(T0_MS + 3_000)));
    assert_eq!(body["truncated"], false);
    let none = get_json!(app, format!("/api/dead_letters?from={}&to={}", T0_MS + 31_000, T0_MS + 60_000));
    assert_eq!(none["dead_letters"].as_array().unwrap().len(), 0);
}

// ---------------------------------------------------------------- errors

#[actix_web::test]
async fn bad_parameters_are_400_with_a_json_error() {
    let f = fixture();
    let app = app!(f.state);
    let token = {
        let body = get_json!(app, format!("/api/raw?metric=cpu&start={T0_MS}&page_size=3"));
        body["next_page_token"].as_str().unwrap().to_owned()
    };
    let w1 = T0_MS + 10_000;
    let bad = [
        "/api/aggregates?metric=cpu&dimension=bogus".to_string(),
        format!("/api/aggregates?metric=cpu&dimension={}", enc("cluster=a=b")),
        format!("/api/aggregates?metric=cpu&dimension={}", enc("cluster=%41")),
        format!("/api/aggregates?metric=cpu&dimension={}", enc("set:")),
        "/api/aggregates?metric=cpu&from=2000&to=1000".to_string(),
        "/api/aggregates?dimension=fleet".to_string(),
        "/api/aggregates?metric=&dimension=fleet".to_string(),
        "/api/aggregates?metric=cpu&from=abc".to_string(),
        "/api/aggregates?metric=cpu&to=1.5".to_string(),
        "/api/aggregates?metric=cpu&metric=money".to_string(),
        "/api/aggregates?metric=cpu&from=99999999999999999".to_string(),
        "/api/dimensions".to_string(),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_size=0"),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_size=1e9"),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_size=1000000000"),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_size=-1"),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_size=10001"),
        "/api/raw?metric=cpu".to_string(),
        format!("/api/raw?start={T0_MS}"),
        format!("/api/raw?metric=cpu&start={}", T0_MS + 1),
        "/api/raw?metric=cpu&start=-9223372036854".to_string(),
        "/api/raw?metric=cpu&start=9223372036854775807".to_string(),
        format!("/api/raw?metric=cpu&start={T0_MS}&page_token=zz"),
        format!("/api/raw?metric=cpu&start={w1}&page_token={}", enc(&token)),
        "/api/dead_letters?limit=0".to_string(),
        "/api/dead_letters?from=5&to=1".to_string(),
    ];
    for uri in bad {
        let (status, ct, body) = get!(app, uri);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {}", String::from_utf8_lossy(&body));
        assert!(ct.starts_with("application/json"), "{uri}: {ct}");
        let json: Json = serde_json::from_slice(&body).unwrap();
        let msg = json["error"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "{uri}: {json}");
    }
    // Messages say what is wrong.
    let (_, _, body) = get!(app, "/api/aggregates?dimension=fleet");
    assert!(String::from_utf8_lossy(&body).contains("metric"));
    let (_, _, body) = get!(app, format!("/api/raw?metric=cpu&start={T0_MS}&page_size=0"));
    assert!(String::from_utf8_lossy(&body).contains("page_size"));
    // Unknown API routes are a JSON 404.
    let (status, ct, body) = get!(app, "/api/nope");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(ct.starts_with("application/json"));
    assert!(serde_json::from_slice::<Json>(&body).unwrap()["error"].is_string());
    // A page size at the limit is fine; an empty range is an empty answer.
    get_json!(app, format!("/api/raw?metric=cpu&start={T0_MS}&page_size=10000"));
    let empty = get_json!(app, format!("/api/aggregates?metric=cpu&from={T0_MS}&to={T0_MS}"));
    assert_eq!(empty["points"].as_array().unwrap().len(), 0);
}

#[actix_web::test]
async fn too_many_points_is_a_clear_error() {
    let n = MAX_POINTS as i64 + 1;
    let fleet_only =
        DimensionSpec { fleet: true, cluster: false, node: false, tags: TagDimensions::None, sets: Vec::new() };
    let records = (0..n).map(|i| (rec("x", T0 + i * SEC, Value::Float(1.0), "", "", &[]), None)).collect();
    let f = build(engine_config(WindowSpec::Tumbling { size: SEC, offset: 0 }, fleet_only), vec![records]);
    let app = app!(f.state);
    let (status, _, body) = get!(app, format!("/api/aggregates?metric=x&from={T0_MS}&to={}", T0_MS + n * 1_000));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = serde_json::from_slice::<Json>(&body).unwrap()["error"].as_str().unwrap().to_owned();
    assert!(msg.contains("10000") && msg.contains("narrow"), "{msg}");
    let ok = get_json!(app, format!("/api/aggregates?metric=x&from={T0_MS}&to={}", T0_MS + (n - 1) * 1_000));
    assert_eq!(ok["points"].as_array().unwrap().len(), MAX_POINTS);
}

// ---------------------------------------------------------------- health, metrics, config

#[actix_web::test]
async fn health_metrics_and_config() {
    let f = fixture();
    let app = app!(f.state);
    let h = get_json!(app, "/healthz".to_string());
    assert_eq!(h, serde_json::json!({ "status": "ok", "watermark_ms": null, "series": 0 }));

    f.state.metrics.publish_gate(&f.counters, T0 + 25 * SEC, T0 + 26 * SEC);
    f.state.metrics.publish_shard(0, &EngineCounters::default(), ShardGauges { series: 11, state_size: 4 });
    let h = get_json!(app, "/healthz".to_string());
    assert_eq!(h, serde_json::json!({ "status": "ok", "watermark_ms": T0_MS + 25_000, "series": 11 }));

    let (status, ct, body) = get!(app, "/metrics");
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(f.counters.records_in > 0);
    assert!(text.contains(&format!("meshmon_records_in_total {}\n", f.counters.records_in)), "{text}");
    assert!(text.contains(&format!("meshmon_records_accepted_total {}\n", f.counters.accepted)));
    assert!(text.contains("meshmon_records_invalid_total{reason=\"non_finite_value\"} 1\n"));
    assert!(text.contains("# TYPE meshmon_records_in_total counter"));

    let c = get_json!(app, "/api/config".to_string());
    assert_eq!(c["window"], "tumbling:10s");
    assert_eq!(c["window_size_ms"], 10_000);
    assert_eq!(c["allowed_lateness_ms"], 60_000);
    assert_eq!(c["out_of_orderness_ms"], 1_000);
}

// ---------------------------------------------------------------- the page

#[actix_web::test]
async fn page_and_assets_are_served_offline_clean() {
    let f = fixture();
    let app = app!(f.state);
    let mut texts = Vec::new();
    for (uri, want) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let (status, ct, body) = get!(app, uri);
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(ct, want, "{uri}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lower = text.to_ascii_lowercase();
        assert!(!lower.contains("http://") && !lower.contains("https://"), "{uri} references an external host");
        assert!(!lower.contains("src=\"//") && !lower.contains("href=\"//") && !lower.contains("url(//"), "{uri}");
        assert!(!lower.contains("@import"), "{uri}");
        texts.push(text);
    }
    let (html, js) = (&texts[0], &texts[1]);
    for hook in [
        "id=\"metric\"",
        "id=\"dimension\"",
        "id=\"raw-table\"",
        "id=\"raw-summary\"",
        "id=\"auto-refresh\"",
        "<tbody>",
        "src=\"app.js\"",
        "href=\"style.css\"",
    ] {
        assert!(html.contains(hook), "page lacks {hook}");
    }
    for stat in ["max", "min", "avg", "last", "sum", "count"] {
        assert!(html.contains(&format!("class=\"chart\" data-stat=\"{stat}\"")), "no chart for {stat}");
    }
    // Data is never parsed as markup by the script.
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!js.contains(sink), "app.js uses {sink}");
    }
    for hook in ["\"data-start\"", "\"point\"", "/api/raw", "point count: "] {
        assert!(js.contains(hook), "app.js lacks {hook}");
    }
    let resp = atest::call_service(&app, atest::TestRequest::get().uri("/").to_request()).await;
    let csp = resp.headers().get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
}

// ---------------------------------------------------------------- the dimension key text

#[test]
fn dimension_keys_escape_structure_characters() {
    let c = Dimension::Cluster("a=b,c%".into());
    assert_eq!(dimension_key::encode(&c), "cluster=a%3Db%2Cc%25");
    assert_eq!(dimension_key::parse("cluster=a%3db%2cc%25").unwrap(), c);
    let t = Dimension::Tag { key: "k:=".into(), value: SCRIPT.into() };
    assert_eq!(dimension_key::encode(&t), format!("tag:k:%3D={SCRIPT}"));
    let s = Dimension::Set(vec![("cluster".into(), "c,1".into()), ("tag:node".into(), "=".into())].into());
    assert_eq!(dimension_key::encode(&s), "set:cluster=c%2C1,tag:node=%3D");
    assert_eq!(dimension_key::parse("fleet").unwrap(), Dimension::Fleet);
    assert_eq!(dimension_key::parse("node=").unwrap(), Dimension::Node("".into()));
    for bad in [
        "",
        "Fleet",
        "fleet=",
        "cluster",
        "cluster=a=b",
        "cluster=a,b",
        "node=%",
        "node=%4",
        "node=%41",
        "tag:k",
        "set:",
        "set:a=1,",
        "set:a",
    ] {
        let err = dimension_key::parse(bad).unwrap_err().to_string();
        assert!(err.contains("invalid dimension key"), "{bad:?}: {err}");
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z=,%:]{0,8}", "\\PC{0,8}", any::<String>()]
}

fn dimension() -> impl Strategy<Value = Dimension> {
    prop_oneof![
        Just(Dimension::Fleet),
        text().prop_map(|c| Dimension::Cluster(c.into())),
        text().prop_map(|n| Dimension::Node(n.into())),
        (text(), text()).prop_map(|(k, v)| Dimension::Tag { key: k.into(), value: v.into() }),
        prop::collection::vec((text(), text()), 1..5)
            .prop_map(|pairs| Dimension::Set(pairs.into_iter().map(|(f, v)| (f.into(), v.into())).collect())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn dimension_key_round_trips(d in dimension()) {
        let key = dimension_key::encode(&d);
        prop_assert_eq!(dimension_key::parse(&key).unwrap(), d.clone());
        // One key text per dimension: re-encoding the parsed key gives the same text.
        prop_assert_eq!(dimension_key::encode(&dimension_key::parse(&key).unwrap()), key);
    }

    #[test]
    fn dimension_key_parser_never_panics(s in "\\PC{0,24}|[a-z:=,%0-9A-F]{0,24}") {
        if let Ok(d) = dimension_key::parse(&s) {
            prop_assert_eq!(dimension_key::parse(&dimension_key::encode(&d)).unwrap(), d);
        }
    }
}

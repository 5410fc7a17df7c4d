//! The HBase raw store end to end, through the real `meshmon-aggregator` binary and the Thrift1
//! protocol-test server (`meshmon_tests::hbase_thrift`: hbase-thrift's generated processor over
//! an in-memory sorted map — **not HBase**; no HBase server can be installed here).
//!
//! 1. Two aggregators in embedded (gRPC push) mode, one keeping raw records in the embedded
//!    store and one with `store.kind = "hbase"` pointed at the Thrift server, get the same
//!    batches: out of order, with corrections of fired windows (records arriving after their
//!    window fired, and one explicit late-but-allowed record) and one record too late for good.
//!    For **every** aggregate point (each metric, dimension and window), the drill-down through
//!    HTTP `/api/raw` and through gRPC `meshmon.v1.Query/RawRecords` returns the same pages from
//!    both — records, order and page tokens — and their records are exactly the oracle's
//!    (`meshmon_tests::oracle`) for that point. The HBase table holds exactly the counted records.
//!    With the Thrift server stopped, drill-downs are HTTP 503 / gRPC `UNAVAILABLE`.
//! 2. A permanent HBase write failure stops `serve` with a non-zero exit (fail-stop), and a
//!    missing table with `create_table = false` refuses to start, with clear messages.
//! 3. Kafka mode (a real tansu broker) with the HBase store: while HBase is away, no checkpoint
//!    moves past the records whose raw rows it has not acknowledged; the aggregator is killed
//!    (SIGKILL) in that state, HBase comes back, and after the restart every raw record is in
//!    HBase and every point drills down to exactly the oracle's records.
//!
//! Nothing sleeps to synchronise: every wait polls the API or `/metrics` with a deadline
//! (`wait_for`). A failing test prints the processes' logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::prost::Message as _;
use meshmon_proto::v1::query_client::QueryClient;
use meshmon_proto::v1::{self, Decimal, DimensionKind, RecordBatch};
use meshmon_proto::{nanos_to_duration, nanos_to_timestamp, timestamp_to_nanos};
use meshmon_tests::hbase_thrift::ThriftServer;
use meshmon_tests::oracle::{self, Num, OracleRecord, check_aggregates, metric, metrics_text, raw_id};
use meshmon_tests::{
    Aggregator, KafkaAggregator, LogsOnFailure, Tansu, get_json, grpc_push, http, query_value, wait_for,
};
use rdkafka::producer::BaseProducer;
use serde_json::{Value as Json, json};
use tonic::transport::Channel;

const WINDOW_MS: i64 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(90);
const MS: i64 = 1_000_000;
const TABLE: &str = "meshmon_raw_e2e";
const AGENTS: [&str; 2] = ["hb-agent-a", "hb-agent-b"];
const HTTP_PAGE: usize = 7;
const GRPC_PAGE: u32 = 5;

// ---------------------------------------------------------------- records and the oracle

#[derive(Debug, Clone)]
enum Val {
    /// An integer-valued double (sums exact in any order).
    F(i64),
    /// Decimal nano-units.
    Dec(i128),
}

#[derive(Debug, Clone)]
struct Rec {
    agent: &'static str,
    sequence: u64,
    index: u32,
    metric: &'static str,
    value: Val,
    /// Absolute event time, ms.
    at: i64,
    cluster: String,
    node: String,
    tags: Vec<(&'static str, &'static str)>,
    raw: Option<String>,
}

impl OracleRecord for Rec {
    fn metric(&self) -> &str {
        self.metric
    }
    fn dimension_keys(&self) -> Vec<String> {
        let mut keys = vec!["fleet".to_string(), format!("cluster={}", self.cluster), format!("node={}", self.node)];
        keys.extend(self.tags.iter().map(|(k, v)| format!("tag:{k}={v}")));
        keys
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
        (self.agent.to_string(), self.sequence, self.index)
    }
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `batches` batches of `per_batch` records per agent with event times in `[from, to)` (ms
/// after `base`), in random order; sequences from `first_sequence`.
fn generate(
    rng: &mut Rng,
    base: i64,
    (from, to): (i64, i64),
    first_sequence: u64,
    batches: u64,
    per_batch: u32,
) -> Vec<Vec<Rec>> {
    let mut out = Vec::new();
    for sequence in first_sequence..first_sequence + batches {
        for agent in AGENTS {
            let records = (0..per_batch)
                .map(|index| {
                    let cluster = rng.below(3);
                    let node = cluster * 10 + rng.below(2);
                    let (metric, value) = if rng.below(2) == 0 {
                        ("hb.ops", Val::F(rng.below(1_000) as i64 - 300))
                    } else {
                        ("hb.price", Val::Dec(i128::from(rng.below(10_000_000)) * 1_000 - 2_000_000_000))
                    };
                    let mut tags = vec![("env", if node.is_multiple_of(2) { "prod" } else { "dev" })];
                    if rng.below(3) == 0 {
                        tags.push(("team", "checkout"));
                    }
                    Rec {
                        agent,
                        sequence,
                        index,
                        metric,
                        value,
                        at: base + from + rng.below((to - from) as u64) as i64,
                        cluster: format!("c{cluster}"),
                        node: format!("n{node}"),
                        tags,
                        raw: (rng.below(2) == 0).then(|| format!("{agent}/{sequence}/{index}")),
                    }
                })
                .collect();
            out.push(records);
        }
    }
    out
}

/// One record per agent at `at` ms after `base` (moves every input's watermark there).
fn closing(base: i64, at: i64, sequence: u64) -> Vec<Vec<Rec>> {
    AGENTS
        .iter()
        .enumerate()
        .map(|(i, &agent)| {
            vec![Rec {
                agent,
                sequence,
                index: 0,
                metric: "hb.ops",
                value: Val::F(1),
                at: base + at + i as i64,
                cluster: "c9".into(),
                node: "closer".into(),
                tags: vec![("env", "prod")],
                raw: None,
            }]
        })
        .collect()
}

fn wire(records: &[Rec]) -> RecordBatch {
    let first = &records[0];
    RecordBatch {
        agent_id: first.agent.into(),
        sequence: first.sequence,
        sent_at: None,
        records: records
            .iter()
            .map(|r| v1::Record {
                metric: r.metric.into(),
                value: Some(match r.value {
                    Val::F(v) => v1::record::Value::DoubleValue(v as f64),
                    Val::Dec(n) => v1::record::Value::DecimalValue(Decimal::from_nano_units(n).unwrap()),
                }),
                event_time: Some(nanos_to_timestamp(r.at * MS)),
                cluster: r.cluster.clone(),
                node: r.node.clone(),
                tags: r.tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
                raw: r.raw.clone().map(String::into_bytes),
            })
            .collect(),
    }
}

/// A record as the HTTP API shows it (the fields both stores must return identically).
fn oracle_json(r: &Rec) -> Json {
    let value = match r.value {
        Val::F(v) => json!(v as f64),
        Val::Dec(n) => oracle::decimal_text(n),
    };
    let tags: serde_json::Map<String, Json> = r.tags.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
    json!({
        "agent": r.agent, "sequence": r.sequence, "index": r.index, "metric": r.metric, "time": r.at,
        "value": value, "cluster": r.cluster, "node": r.node, "tags": tags,
        "raw": r.raw.as_ref().map_or(Json::Null, |t| json!(t)),
    })
}

/// An `/api/raw` record reduced to the fields of [`oracle_json`].
fn api_json(r: &Json) -> Json {
    let keys = ["agent", "sequence", "index", "metric", "time", "value", "cluster", "node", "tags", "raw"];
    Json::Object(keys.iter().map(|k| ((*k).to_string(), r[*k].clone())).collect())
}

/// A gRPC raw record in the shape of [`oracle_json`].
fn grpc_json(r: &v1::RawRecord) -> Json {
    let rec = r.record.as_ref().unwrap();
    let value = match rec.value.as_ref().unwrap() {
        v1::record::Value::DoubleValue(f) => json!(f),
        v1::record::Value::DecimalValue(d) => json!(d.to_string()),
    };
    let tags: serde_json::Map<String, Json> = rec.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "agent": r.agent_id, "sequence": r.sequence, "index": r.index, "metric": rec.metric,
        "time": timestamp_to_nanos(rec.event_time.as_ref().unwrap()).unwrap() / MS, "value": value,
        "cluster": rec.cluster, "node": rec.node, "tags": tags,
        "raw": rec.raw.as_ref().map_or(Json::Null, |b| json!(String::from_utf8(b.clone()).unwrap())),
    })
}

/// Numbers compared as doubles, so `5` and `5.0` are the same record.
fn normalise(v: &Json) -> Json {
    match v {
        Json::Number(n) => json!(n.as_f64()),
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), normalise(v))).collect()),
        Json::Array(a) => Json::Array(a.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

/// The records in a stable order for multiset comparison.
fn sorted(mut records: Vec<Json>) -> Vec<Json> {
    records.sort_by_key(|r| (raw_id(r), r.to_string()));
    records.into_iter().map(|r| normalise(&r)).collect()
}

// ---------------------------------------------------------------- drill-down reads

fn dimension_proto(key: &str) -> v1::Dimension {
    let (kind, names, values) = match key.split_once('=') {
        None => (DimensionKind::Fleet, vec![], vec![]),
        Some(("cluster", v)) => (DimensionKind::Cluster, vec![], vec![v.to_string()]),
        Some(("node", v)) => (DimensionKind::Node, vec![], vec![v.to_string()]),
        Some((tag, v)) => {
            (DimensionKind::Tag, vec![tag.strip_prefix("tag:").unwrap().to_string()], vec![v.to_string()])
        }
    };
    v1::Dimension { kind: kind as i32, names, values }
}

fn tumbling_10s() -> v1::WindowSpec {
    v1::WindowSpec {
        kind: Some(v1::window_spec::Kind::Tumbling(v1::Tumbling {
            size: Some(nanos_to_duration(WINDOW_MS * MS)),
            offset: None,
        })),
    }
}

fn raw_path(metric: &str, key: &str, start: i64, token: Option<&str>) -> String {
    let mut path = format!(
        "/api/raw?metric={}&dimension={}&start={start}&page_size={HTTP_PAGE}",
        query_value(metric),
        query_value(key)
    );
    if let Some(t) = token {
        path.push_str(&format!("&page_token={}", query_value(t)));
    }
    path
}

/// Every `/api/raw` page of a point from both aggregators, asserted equal page by page
/// (records and tokens); returns the records and the point's count.
fn http_pages_equal(embedded: SocketAddr, hbase: SocketAddr, metric: &str, key: &str, start: i64) -> (Vec<Json>, u64) {
    let (mut records, mut token, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let path = raw_path(metric, key, start, token.as_deref());
        let e = get_json(embedded, &path).unwrap();
        let h = get_json(hbase, &path).unwrap();
        assert_eq!(h, e, "HTTP page {pages} of {metric} {{{key}}} @{start}: hbase vs embedded");
        let page = e["records"].as_array().unwrap();
        assert!(page.len() <= HTTP_PAGE);
        records.extend(page.iter().cloned());
        pages += 1;
        match e["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return (records, e["count_in_point"].as_u64().unwrap()),
        }
    }
}

/// Every `RawRecords` page of a point from both aggregators, asserted equal page by page.
async fn grpc_pages_equal(
    embedded: &mut QueryClient<Channel>,
    hbase: &mut QueryClient<Channel>,
    metric: &str,
    key: &str,
    start: i64,
) -> Vec<v1::RawRecord> {
    let (mut records, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let request = v1::RawRecordsRequest {
            metric: metric.into(),
            dimension: Some(dimension_proto(key)),
            window: Some(tumbling_10s()),
            window_start: Some(nanos_to_timestamp(start * MS)),
            page_size: GRPC_PAGE,
            page_token: token,
        };
        let e = embedded.raw_records(request.clone()).await.unwrap().into_inner();
        let h = hbase.raw_records(request).await.unwrap().into_inner();
        assert_eq!(h, e, "gRPC page {pages} of {metric} {{{key}}} @{start}: hbase vs embedded");
        pages += 1;
        records.extend(e.records);
        if e.next_page_token.is_empty() {
            return records;
        }
        token = e.next_page_token;
    }
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn poll_aggregates(addr: SocketAddr, expected: &oracle::Expected<'_, Rec>, from: i64, to: i64, what: &str) {
    let mut last = String::new();
    let ok = wait_for(what, TIMEOUT, || match check_aggregates(addr, expected, from, to) {
        Ok(()) => Some(()),
        Err(e) => {
            last = e;
            None
        }
    });
    if ok.is_err() {
        panic!("timed out waiting for {what} at {addr}; last difference: {last}");
    }
}

const ENGINE: &str = r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "2s"
allowed_lateness = "60s"
idle_timeout = "0"
shards = 2

[engine.limits]
max_future = "0"
max_past = "0"
"#;

fn hbase_section(server: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[store]
kind = "hbase"

[store.hbase]
thrift_address = "{server}"
table = "{TABLE}"
connections = 2
write_batch_rows = 7
scan_batch_rows = 5
{extra}
"#
    )
}

fn sub(dir: &Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------- 1. embedded vs HBase

#[test]
fn hbase_and_embedded_raw_stores_serve_identical_drill_downs_equal_to_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let mut thrift = ThriftServer::start().unwrap();
    let embedded = Aggregator::start(&sub(dir.path(), "embedded"), ENGINE).unwrap();
    logs.add(&embedded.proc);
    let hbase_config = format!("{ENGINE}{}", hbase_section(thrift.addr(), ""));
    let mut hbase = Aggregator::start(&sub(dir.path(), "hbase"), &hbase_config).unwrap();
    logs.add(&hbase.proc);
    let both = [embedded.grpc, hbase.grpc];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let push = |batches: &[Vec<Rec>]| {
        for addr in both {
            let acks = grpc_push(&rt, addr, batches.iter().map(|b| wire(b)).collect(), TIMEOUT).unwrap();
            let statuses: Vec<i32> = acks.iter().map(|a| a.status).collect();
            assert_eq!(statuses, vec![v1::AckStatus::Accepted as i32; batches.len()], "{acks:?}");
        }
    };

    // Half an hour ago, on a window boundary.
    let base = (now_ms() - 1_800_000).div_euclid(60_000) * 60_000;
    let mut rng = Rng(0x4862_6173_6521);
    // 1. 10 batches per agent in [0 s, 40 s), batches shuffled (sequences out of order too):
    //    with 2 s out-of-orderness many records arrive after their window fired (corrections);
    //    none is late (every watermark from them < 40 s < 10 s + 60 s).
    let mut known = generate(&mut rng, base, (0, 40_000), 1, 10, 12);
    for i in (1..known.len()).rev() {
        known.swap(i, rng.below(i as u64 + 1) as usize);
    }
    push(&known);
    // 2. Every input to +50 s: the windows of [0 s, 40 s) fire.
    push(&closing(base, 50_000, 11));
    for addr in [embedded.http, hbase.http] {
        wait_for("the first windows fired", TIMEOUT, || {
            let points = oracle::points(addr, "hb.price", "fleet", base, base + 40_000).ok()?;
            (points.len() == 4).then_some(())
        })
        .unwrap();
    }
    // 3. A late record still within the allowed lateness: corrects the fired [0 s, 10 s).
    let correction = Rec {
        agent: AGENTS[0],
        sequence: 12,
        index: 0,
        metric: "hb.price",
        value: Val::Dec(123_456_789_000),
        at: base + 5_000,
        cluster: "c1".into(),
        node: "n10".into(),
        tags: vec![("env", "prod"), ("team", "checkout")],
        raw: Some("correction".into()),
    };
    push(&[vec![correction.clone()]]);
    // 4. Every input to +200 s, then a record too late for good, then to +300 s (its window
    //    fires only after the late record was handled on the same input).
    push(&closing(base, 200_000, 13));
    let too_late = Rec { sequence: 14, at: base + 3_000, raw: Some("too late".into()), ..correction.clone() };
    push(&[vec![too_late]]);
    push(&closing(base, 300_000, 15));

    let counted: Vec<Rec> = known
        .iter()
        .flatten()
        .cloned()
        .chain(closing(base, 50_000, 11).into_iter().flatten())
        .chain([correction])
        .chain(closing(base, 200_000, 13).into_iter().flatten())
        .collect();
    let expected = oracle::expected_points(&counted, WINDOW_MS);
    let (from, to) = (base - 60_000, base + 290_000);
    for addr in [embedded.http, hbase.http] {
        poll_aggregates(addr, &expected, from, to, "aggregates equal to the oracle");
        wait_for("the late record counted", TIMEOUT, || {
            (metric(addr, "meshmon_records_late_total")? == 1.0).then_some(())
        })
        .unwrap();
    }
    let first = &oracle::points(hbase.http, "hb.price", "fleet", base, base + 10_000).unwrap()[0];
    assert!(first["revision"].as_u64().unwrap() >= 1, "the [0 s, 10 s) point was corrected: {first}");

    // The HBase table holds exactly the accepted records (the closing ones at +300 s too),
    // and the HBase aggregator wrote them (its embedded store has none to serve).
    let accepted = counted.len() + closing(base, 300_000, 15).len();
    let rows = thrift.state().rows(TABLE);
    assert_eq!(rows.keys().filter(|k| k.first() != Some(&0xFF)).count(), accepted);
    let text = metrics_text(hbase.http);
    assert_eq!(meshmon_tests::prometheus_value(&text, "meshmon_hbase_rows_written_total"), Some(accepted as f64));
    assert_eq!(meshmon_tests::prometheus_value(&text, "meshmon_hbase_write_failures_total"), Some(0.0));
    assert!(
        meshmon_tests::prometheus_value(&metrics_text(embedded.http), "meshmon_hbase_rows_written_total").is_none()
    );

    // Every point: HTTP and gRPC drill-downs equal between the stores, page by page, and equal
    // to the oracle's records.
    let (mut points, mut multi_page) = (0, 0);
    rt.block_on(async {
        let mut e_client = QueryClient::connect(format!("http://{}", embedded.grpc)).await.unwrap();
        let mut h_client = QueryClient::connect(format!("http://{}", hbase.grpc)).await.unwrap();
        for ((metric, key), windows) in &expected {
            for (start, records) in windows {
                let (http_records, count) = http_pages_equal(embedded.http, hbase.http, metric, key, *start);
                let grpc_records = grpc_pages_equal(&mut e_client, &mut h_client, metric, key, *start).await;
                let http: Vec<Json> = http_records.iter().map(api_json).collect();
                let grpc: Vec<Json> = grpc_records.iter().map(grpc_json).collect();
                assert_eq!(
                    grpc.iter().map(normalise).collect::<Vec<_>>(),
                    http.iter().map(normalise).collect::<Vec<_>>(),
                    "gRPC vs HTTP, {metric} {{{key}}} @{start}"
                );
                assert_eq!(count, records.len() as u64, "count_in_point of {metric} {{{key}}} @{start}");
                let want = sorted(records.iter().map(|r| oracle_json(r)).collect());
                assert_eq!(sorted(http), want, "records of {metric} {{{key}}} @{start} vs the oracle");
                points += 1;
                multi_page += usize::from(records.len() > HTTP_PAGE);
            }
        }
    });
    assert!(points > 60 && multi_page > 20, "{points} points, {multi_page} with several pages");
    eprintln!(
        "{points} points drilled into through HTTP and gRPC on both stores ({multi_page} of several pages); \
         {accepted} raw rows in HBase"
    );

    // A page token of one store continues the same drill-down on the other.
    let path = raw_path("hb.ops", "fleet", base + 10_000, None);
    let page1 = get_json(embedded.http, &path).unwrap();
    let token = page1["next_page_token"].as_str().unwrap();
    let next = raw_path("hb.ops", "fleet", base + 10_000, Some(token));
    assert_eq!(get_json(hbase.http, &next).unwrap(), get_json(embedded.http, &next).unwrap());
    assert_eq!(thrift.state().open_scanners(), 0, "every scanner closed");

    // HBase unreachable: the drill-down is "unavailable" (HTTP 503, gRPC UNAVAILABLE), not a
    // wrong answer; the embedded aggregator does not care.
    thrift.stop();
    let down = http("GET", hbase.http, &path, None).unwrap();
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.text().contains("HBase"), "{}", down.text());
    assert_eq!(http("GET", embedded.http, &path, None).unwrap().status, 200);
    rt.block_on(async {
        let mut client = QueryClient::connect(format!("http://{}", hbase.grpc)).await.unwrap();
        let request = v1::RawRecordsRequest {
            metric: "hb.ops".into(),
            dimension: Some(dimension_proto("fleet")),
            window: Some(tumbling_10s()),
            window_start: Some(nanos_to_timestamp((base + 10_000) * MS)),
            page_size: GRPC_PAGE,
            page_token: String::new(),
        };
        let status = client.raw_records(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    });
    assert!(metric(hbase.http, "meshmon_hbase_drill_down_errors_total").unwrap_or(0.0) >= 2.0);

    drop(rt);
    let status = hbase.proc.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "hbase aggregator exit status {status:?}");
}

// ---------------------------------------------------------------- 2. fail-stop and start checks

#[test]
fn a_permanent_hbase_write_failure_stops_serve_and_a_missing_table_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let thrift = ThriftServer::start().unwrap();

    // create_table = false and no table: refused at start, saying what to do.
    let strict = format!("{ENGINE}{}", hbase_section(thrift.addr(), "create_table = false"));
    let err = Aggregator::start(&sub(dir.path(), "strict"), &strict).unwrap_err();
    assert!(err.contains(TABLE) && err.contains("does not exist") && err.contains("create_table"), "{err}");

    let config = format!("{ENGINE}{}", hbase_section(thrift.addr(), "retries = 2\nretry_backoff = \"10ms\""));
    let mut aggregator = Aggregator::start(&sub(dir.path(), "failing"), &config).unwrap();
    logs.add(&aggregator.proc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base = (now_ms() - 1_800_000).div_euclid(60_000) * 60_000;
    // Every write of raw rows from now on is refused as not retryable.
    for _ in 0..8 {
        thrift.state().fail_next("mutateRows", "org.apache.hadoop.hbase.security.AccessDeniedException: no", false);
    }
    let mut rng = Rng(7);
    let batches = generate(&mut rng, base, (0, 20_000), 1, 1, 5);
    for b in batches.iter().chain(&closing(base, 60_000, 2)) {
        // The push may be refused once the pipeline has failed; the exit is what counts.
        let _ = grpc_push(&rt, aggregator.grpc, vec![wire(b)], TIMEOUT);
    }
    let line = aggregator
        .proc
        .wait_for_log_line("the fail-stop message", TIMEOUT, |l| l.contains("pipeline failed").then(|| l.to_string()))
        .unwrap();
    assert!(line.contains("HBase") && line.contains("AccessDeniedException"), "{line}");
    let status = aggregator.proc.terminate(Duration::from_secs(30)).unwrap();
    assert!(!status.success(), "fail-stop exits non-zero: {status:?}");
    assert!(thrift.state().rows(TABLE).keys().all(|k| k.first() == Some(&0xFF)), "no raw row was written");
}

// ---------------------------------------------------------------- 3. Kafka mode

fn producer(tansu: &Tansu) -> BaseProducer {
    meshmon_tests::tansu::idempotent_producer(tansu).unwrap()
}

fn produce(p: &BaseProducer, topic: &str, batches: &[Vec<Rec>]) {
    let messages = batches.iter().map(|b| (b[0].agent.as_bytes(), wire(b).encode_to_vec()));
    meshmon_tests::tansu::produce_all(p, topic, messages).unwrap();
}

#[test]
fn kafka_mode_checkpoints_wait_for_hbase_and_a_crash_during_an_outage_loses_no_raw_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let tansu = Tansu::start(dir.path()).unwrap();
    logs.0.push(("tansu".into(), tansu.log()));
    for (topic, partitions) in [("records", 2), ("aggregates", 1), ("dead-letters", 1)] {
        tansu.create_topic(topic, partitions).unwrap();
    }
    let mut thrift = ThriftServer::start().unwrap();
    let thrift_addr = thrift.addr();
    let state = thrift.state().clone();
    let config = format!(
        r#"{ENGINE}
[kafka]
brokers = "{}"
input_topic = "records"
group_id = "hbase-e2e"
output_topic = "aggregates"
dead_letter_topic = "dead-letters"
merge_wait = "5s"
properties = {{ "session.timeout.ms" = "3000", "heartbeat.interval.ms" = "500" }}

[checkpoint]
every = "300ms"
{}"#,
        tansu.bootstrap(),
        // Ride out the outage: retry (almost) forever, quickly.
        hbase_section(thrift_addr, "retries = 100000\nretry_backoff = \"20ms\"\nretry_backoff_max = \"100ms\"")
    );
    let mut aggregator = KafkaAggregator::start(dir.path(), "kafka-hbase", &config).unwrap();
    logs.0.push(("kafka-hbase".into(), aggregator.log()));
    let p = producer(&tansu);
    let base = (now_ms() - 3_600_000).div_euclid(60_000) * 60_000;
    let mut rng = Rng(0x006b_6166_6b61);

    // A: [0 s, 30 s), then every input to +40 s; checkpointed past it with HBase up.
    let part_a = generate(&mut rng, base, (0, 30_000), 1, 6, 10);
    produce(&p, "records", &part_a);
    produce(&p, "records", &closing(base, 40_000, 7));
    wait_for("a checkpoint past part A", TIMEOUT, || {
        let wm = metric(aggregator.http, "meshmon_checkpoint_watermark_seconds")?;
        ((wm * 1000.0) as i64 >= base + 38_000).then_some(())
    })
    .unwrap();

    // HBase goes away. B: [40 s, 70 s) and every input to +100 s.
    thrift.stop();
    let checkpointed = metric(aggregator.http, "meshmon_checkpoint_watermark_seconds").unwrap();
    let part_b = generate(&mut rng, base, (40_000, 70_000), 8, 6, 10);
    produce(&p, "records", &part_b);
    produce(&p, "records", &closing(base, 100_000, 14));
    // B's raw rows are being written and retried; no checkpoint may move past them.
    wait_for("raw-row writes failing while HBase is away", TIMEOUT, || {
        (metric(aggregator.http, "meshmon_hbase_write_retries_total")? >= 3.0).then_some(())
    })
    .unwrap();
    let wm = metric(aggregator.http, "meshmon_checkpoint_watermark_seconds").unwrap();
    assert!(
        (wm * 1000.0) as i64 <= base + 40_000,
        "a checkpoint moved to {wm} (from {checkpointed}) while HBase had not acknowledged the raw rows"
    );
    // A crash in that state; HBase comes back; the aggregator restarts from its checkpoint.
    aggregator.kill9().unwrap();
    thrift = ThriftServer::start_on(state, thrift_addr).unwrap();
    aggregator.restart().unwrap();

    let counted: Vec<Rec> = part_a
        .iter()
        .flatten()
        .cloned()
        .chain(closing(base, 40_000, 7).into_iter().flatten())
        .chain(part_b.iter().flatten().cloned())
        .collect();
    let expected = oracle::expected_points(&counted, WINDOW_MS);
    poll_aggregates(aggregator.http, &expected, base - 60_000, base + 90_000, "aggregates equal to the oracle");
    // Every raw record is in HBase, and every point drills down to exactly its records.
    let rows = thrift.state().rows(TABLE);
    let all = counted.len() + closing(base, 100_000, 14).len();
    assert_eq!(rows.keys().filter(|k| k.first() != Some(&0xFF)).count(), all, "raw rows in HBase");
    let mut points = 0;
    for ((metric, key), windows) in &expected {
        for (start, records) in windows {
            let mut got = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let body = get_json(aggregator.http, &raw_path(metric, key, *start, token.as_deref())).unwrap();
                got.extend(body["records"].as_array().unwrap().iter().map(api_json));
                match body["next_page_token"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            let want = sorted(records.iter().map(|r| oracle_json(r)).collect());
            assert_eq!(sorted(got), want, "records of {metric} {{{key}}} @{start}");
            points += 1;
        }
    }
    assert!(points > 40, "{points}");
    eprintln!("after the crash: {all} raw rows in HBase, {points} points equal to the oracle");
    let counts: BTreeMap<&str, f64> = ["meshmon_hbase_rows_written_total", "meshmon_hbase_write_failures_total"]
        .into_iter()
        .map(|n| (n, metric(aggregator.http, n).unwrap_or(-1.0)))
        .collect();
    assert_eq!(counts["meshmon_hbase_write_failures_total"], 0.0, "{counts:?}");
    assert!(counts["meshmon_hbase_rows_written_total"] > 0.0, "{counts:?}");
    let status = aggregator.terminate().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

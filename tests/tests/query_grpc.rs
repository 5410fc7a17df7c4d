//! The gRPC `meshmon.v1.Query` service of `meshmon-aggregator serve` (embedded mode) answers
//! exactly what the HTTP API answers: `ListMetrics` lists the metric, `Aggregates` equals
//! `/api/aggregates` (fleet and a cluster), `RawRecords` paged by 3 concatenates to the
//! `/api/raw` records of the same point (as many as the point's count), and malformed requests
//! are `INVALID_ARGUMENT`.
//!
//! Records are pushed over gRPC `Ingest` in one batch inside `[base, base + 14 s)`; a second
//! batch at base + 100 s closes their windows (no out-of-orderness, no lateness). Nothing
//! sleeps: waits poll `/api/aggregates` with a deadline. A failing test prints the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::v1::query_client::QueryClient;
use meshmon_proto::v1::{self, DimensionKind, RecordBatch};
use meshmon_proto::{nanos_to_duration, nanos_to_timestamp, timestamp_to_nanos};
use meshmon_tests::{Aggregator, LogsOnFailure, get_json, grpc_push, query_value, wait_for};
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::transport::Channel;

const METRIC: &str = "q.val";
const TIMEOUT: Duration = Duration::from_secs(60);
const MS: i64 = 1_000_000;
/// Records in the first window `[base, base + 10 s)`: at base + i·700 ms for i in 0..15.
const FIRST_WINDOW: usize = 15;

fn record(base_ms: i64, at_ms: i64, value: f64, cluster: &str, node: &str, raw: Option<String>) -> v1::Record {
    v1::Record {
        metric: METRIC.into(),
        value: Some(v1::record::Value::DoubleValue(value)),
        event_time: Some(nanos_to_timestamp((base_ms + at_ms) * MS)),
        cluster: cluster.into(),
        node: node.into(),
        tags: [("env".to_string(), "prod".to_string())].into_iter().collect(),
        raw: raw.map(String::into_bytes),
    }
}

fn dimension(kind: DimensionKind, values: &[&str]) -> Option<v1::Dimension> {
    Some(v1::Dimension { kind: kind as i32, names: vec![], values: values.iter().map(|v| (*v).into()).collect() })
}

fn tumbling_10s() -> Option<v1::WindowSpec> {
    Some(v1::WindowSpec {
        kind: Some(v1::window_spec::Kind::Tumbling(v1::Tumbling {
            size: Some(nanos_to_duration(10_000 * MS)),
            offset: None,
        })),
    })
}

fn number(n: Option<&v1::Number>) -> Json {
    match n.and_then(|n| n.kind.as_ref()) {
        Some(v1::number::Kind::DoubleValue(f)) => json!(f),
        other => panic!("expected a double, got {other:?}"),
    }
}

/// A gRPC point in the shape of an `/api/aggregates` point (the fields both carry).
fn point_json(p: &v1::AggregatePoint) -> Json {
    let s = p.stats.as_ref().unwrap();
    let ms = |t: Option<&meshmon_proto::Timestamp>| timestamp_to_nanos(t.unwrap()).unwrap() / MS;
    json!({
        "start": ms(p.window_start.as_ref()), "end": ms(p.window_end.as_ref()), "revision": p.revision,
        "count": s.count, "sum": number(s.sum.as_ref()), "avg": number(s.avg.as_ref()),
        "min": number(s.min.as_ref()), "max": number(s.max.as_ref()), "last": number(s.last.as_ref()),
    })
}

fn http_point_json(p: &Json) -> Json {
    let keys = ["start", "end", "revision", "count", "sum", "avg", "min", "max", "last"];
    Json::Object(keys.iter().map(|k| ((*k).to_string(), p[*k].clone())).collect())
}

/// A gRPC raw record in the shape of an `/api/raw` record.
fn raw_json(r: &v1::RawRecord) -> Json {
    let rec = r.record.as_ref().unwrap();
    let value = match rec.value.as_ref().unwrap() {
        v1::record::Value::DoubleValue(f) => json!(f),
        other => panic!("expected a double, got {other:?}"),
    };
    let tags: serde_json::Map<String, Json> = rec.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "agent": r.agent_id, "sequence": r.sequence, "index": r.index, "metric": rec.metric,
        "time": timestamp_to_nanos(rec.event_time.as_ref().unwrap()).unwrap() / MS, "value": value,
        "cluster": rec.cluster, "node": rec.node, "tags": tags,
        "raw": rec.raw.as_ref().map(|b| json!(String::from_utf8(b.clone()).unwrap())).unwrap_or(Json::Null),
    })
}

/// Every `RawRecords` page of the point at `start_ms` (page size 3), concatenated.
async fn all_raw(
    client: &mut QueryClient<Channel>,
    dim: Option<v1::Dimension>,
    start_ms: i64,
) -> Result<Vec<v1::RawRecord>, tonic::Status> {
    let (mut out, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let request = v1::RawRecordsRequest {
            metric: METRIC.into(),
            dimension: dim.clone(),
            window: tumbling_10s(),
            window_start: Some(nanos_to_timestamp(start_ms * MS)),
            page_size: 3,
            page_token: token,
        };
        let page = client.raw_records(request).await?.into_inner();
        assert!(page.records.len() <= 3, "page larger than asked: {}", page.records.len());
        out.extend(page.records);
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

#[test]
fn grpc_query_answers_what_the_http_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let config = r#"
[engine]
window = "tumbling:10s"
out_of_orderness = "0"
allowed_lateness = "0"
idle_timeout = "0"
shards = 2

[engine.limits]
max_future = "0"
max_past = "0"
"#;
    let aggregator = Aggregator::start(dir.path(), config).unwrap();
    logs.add(&aggregator.proc);
    let (api, grpc) = (aggregator.http, aggregator.grpc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // Half an hour ago, minute-aligned (so window-aligned); inside retention and the limits.
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let base = (now_ms / 60_000 - 30) * 60_000;
    let known: Vec<v1::Record> = (0..20)
        .map(|i| {
            let cluster = if i % 3 == 0 { "c2" } else { "c1" };
            let raw = (i % 4 != 0).then(|| format!("line {i}"));
            record(base, i * 700, (i as f64) * 0.5 - 3.0, cluster, &format!("n{}", i % 5), raw)
        })
        .collect();
    let batch = |sequence, records| RecordBatch { agent_id: "q-agent".into(), sequence, sent_at: None, records };
    let acks = grpc_push(&rt, grpc, vec![batch(1, known)], TIMEOUT).unwrap();
    assert_eq!(acks.len(), 1);
    let acks =
        grpc_push(&rt, grpc, vec![batch(2, vec![record(base, 100_000, 1.0, "c0", "closer", None)])], TIMEOUT).unwrap();
    assert_eq!(acks.len(), 1);

    let aggregates_path = |dim: &str| {
        format!("/api/aggregates?metric={METRIC}&dimension={}&from={base}&to={}", query_value(dim), base + 20_000)
    };
    let http_points = |dim: &str| -> Vec<Json> {
        let body = get_json(api, &aggregates_path(dim)).unwrap();
        body["points"].as_array().unwrap().clone()
    };
    wait_for("both windows of the fleet in /api/aggregates", TIMEOUT, || {
        let body = get_json(api, &aggregates_path("fleet")).ok()?;
        let points = body["points"].as_array()?;
        let counts: Vec<u64> = points.iter().filter_map(|p| p["count"].as_u64()).collect();
        (counts == [FIRST_WINDOW as u64, 20 - FIRST_WINDOW as u64]).then_some(())
    })
    .unwrap();

    rt.block_on(async {
        let mut client = QueryClient::connect(format!("http://{grpc}")).await.unwrap();

        let metrics = client.list_metrics(v1::ListMetricsRequest {}).await.unwrap().into_inner().metrics;
        assert!(metrics.iter().any(|m| m == METRIC), "{metrics:?}");

        for (dim_key, dim) in [
            ("fleet", dimension(DimensionKind::Fleet, &[])),
            ("cluster=c1", dimension(DimensionKind::Cluster, &["c1"])),
        ] {
            let request = v1::AggregatesRequest {
                metric: METRIC.into(),
                dimension: dim.clone(),
                window: tumbling_10s(),
                from: Some(nanos_to_timestamp(base * MS)),
                to: Some(nanos_to_timestamp((base + 20_000) * MS)),
            };
            let points = client.aggregates(request).await.unwrap().into_inner().points;
            let got: Vec<Json> = points.iter().map(point_json).collect();
            let want: Vec<Json> = http_points(dim_key).iter().map(http_point_json).collect();
            assert_eq!(got, want, "Aggregates of {dim_key}");
            assert_eq!(got.len(), 2, "{dim_key}: {got:?}");

            for point in &want {
                let start = point["start"].as_i64().unwrap();
                let records = all_raw(&mut client, dim.clone(), start).await.unwrap();
                assert_eq!(records.len() as u64, point["count"].as_u64().unwrap(), "{dim_key} at {start}");
                let raw = get_json(
                    api,
                    &format!(
                        "/api/raw?metric={METRIC}&dimension={}&start={start}&page_size=10000",
                        query_value(dim_key)
                    ),
                )
                .unwrap();
                let got: Vec<Json> = records.iter().map(raw_json).collect();
                assert_eq!(&Json::Array(got), &raw["records"], "RawRecords of {dim_key} at {start}");
            }
        }

        // Malformed requests.
        let unknown_kind = v1::AggregatesRequest {
            metric: METRIC.into(),
            dimension: Some(v1::Dimension { kind: 42, names: vec![], values: vec![] }),
            window: tumbling_10s(),
            from: None,
            to: None,
        };
        let e = client.aggregates(unknown_kind).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("dimension.kind"), "{e:?}");
        let no_window = v1::AggregatesRequest {
            metric: METRIC.into(),
            dimension: dimension(DimensionKind::Fleet, &[]),
            window: None,
            from: None,
            to: None,
        };
        let e = client.aggregates(no_window).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("window"), "{e:?}");
        let raw_no_window = v1::RawRecordsRequest {
            metric: METRIC.into(),
            dimension: dimension(DimensionKind::Fleet, &[]),
            window: None,
            window_start: Some(nanos_to_timestamp(base * MS)),
            page_size: 3,
            page_token: String::new(),
        };
        let e = client.raw_records(raw_no_window).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let bad_token = v1::RawRecordsRequest {
            metric: METRIC.into(),
            dimension: dimension(DimensionKind::Fleet, &[]),
            window: tumbling_10s(),
            window_start: Some(nanos_to_timestamp(base * MS)),
            page_size: 3,
            page_token: "zz".into(),
        };
        let e = client.raw_records(bad_token).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("page_token"), "{e:?}");
    });
    drop(logs);
}

//! End-to-end tests of the agent pipeline in-process, against a fake aggregator.
//!
//! Role: push over HTTP and gRPC and in-process, and check what the (fake) aggregator receives:
//! exact records with defaults stamped, consecutive sequence numbers, re-sends after failures
//! with unchanged sequence numbers and no loss, duplicate/rejected acks, backpressure (HTTP 503,
//! gRPC waiting), and the shutdown flush and its timeout. Touches loopback sockets and temporary
//! directories only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{AckMode, FakeAggregator, eventually, http, test_config};
use meshmon_agent::Agent;
use meshmon_agent::record::{decimal_record, double_record};
use meshmon_proto::v1::ingest_client::IngestClient;
use meshmon_proto::v1::{AckStatus, Decimal, Record, RecordBatch, record};
use meshmon_proto::{Timestamp, nanos_to_timestamp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const WAIT: Duration = Duration::from_secs(10);

fn tags(r: &Record) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    t.sort();
    t
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    t.sort();
    t
}

fn ms(t: i64) -> Timestamp {
    nanos_to_timestamp(t * 1_000_000)
}

#[tokio::test]
async fn http_push_reaches_aggregator_exactly_with_defaults() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(test_config(&fake.url(), dir.path())).await.unwrap();
    let body = concat!(
        r#"{"metric":"orders.value","value":12.5,"time":1767225600000,"tags":{"shop":"eu"}}"#,
        "\n",
        r#"{"metric":"orders.price","value":"19.99","time":1767225600001,"tags":{"env":"prod"}}"#,
        "\n",
        r#"{"metric":"broken","value":"nineteen"}"#,
        "\n",
        r#"{"metric":"orders.count","value":3,"time":1767225600002,"cluster":"c-own","node":"n-own","raw":"line"}"#,
        "\n\n",
        "{not json\n",
        r#"{"metric":"orders.total","value":"-0.000000001","time":1767225600003}"#,
        "\n",
        r#"{"metric":"orders.tiny","value":1e-300,"time":1767225600004}"#,
        "\n",
    );
    let resp = http(agent.http_addr(), "POST", "/v1/records", body.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let json = resp.json();
    assert_eq!(json["accepted"], 5);
    assert_eq!(json["rejected"], 2);
    let lines: Vec<u64> = json["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 6]);
    assert!(json["errors"][0]["error"].as_str().unwrap().contains("not exact decimal text"), "{json}");
    assert!(json["errors"][1]["error"].as_str().unwrap().contains("invalid JSON"), "{json}");

    let records = fake.wait_for_records(5, WAIT).await;
    assert_eq!(records.len(), 5);
    let batches = fake.unique_batches();
    assert_eq!(batches.iter().map(|b| b.sequence).collect::<Vec<_>>(), [1, 2], "3 + 2 records, max 3 per batch");
    assert!(batches.iter().all(|b| b.agent_id == "test-agent" && b.sent_at.is_some()));
    assert_eq!(fake.batches().len(), 2, "nothing re-sent");

    let r = &records[0];
    assert_eq!(r.metric, "orders.value");
    assert_eq!(r.value, Some(record::Value::DoubleValue(12.5)));
    assert_eq!(r.event_time, Some(ms(1_767_225_600_000)));
    assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c-default", "n-default"));
    assert_eq!(tags(r), kv(&[("shop", "eu"), ("env", "test"), ("team", "core")]));
    assert_eq!(r.raw, None);

    let r = &records[1];
    assert_eq!(r.value, Some(record::Value::DecimalValue(Decimal { units: 19, nanos: 990_000_000 })));
    assert_eq!(tags(r), kv(&[("env", "prod"), ("team", "core")]), "pushed tag overrides the global one");

    let r = &records[2];
    assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c-own", "n-own"));
    assert_eq!(r.value, Some(record::Value::DoubleValue(3.0)));
    assert_eq!(r.raw.as_deref(), Some(b"line".as_slice()));

    assert_eq!(records[3].value, Some(record::Value::DecimalValue(Decimal { units: 0, nanos: -1 })));
    assert_eq!(records[4].value, Some(record::Value::DoubleValue(1e-300)));
    assert_eq!(records[4].event_time, Some(ms(1_767_225_600_004)));

    let m = eventually("sent to reach 5", WAIT, || Some(agent.metrics()).filter(|m| m.sent == 5)).await;
    assert_eq!((m.pushed_http, m.dropped_invalid, m.in_flight, m.queue_depth), (5, 2, 0, 0));

    let metrics = http(agent.http_addr(), "GET", "/metrics", b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("meshmon_agent_pushed_total{api=\"http\"} 5"), "{}", metrics.body);
    assert!(metrics.body.contains("meshmon_agent_sent_total 5"), "{}", metrics.body);
    assert!(metrics.body.contains("meshmon_agent_dropped_total{reason=\"invalid\"} 2"), "{}", metrics.body);
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
}

#[tokio::test]
async fn http_errors_404_405_413() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.max_body_bytes = 1024;
    let agent = Agent::start(config).await.unwrap();
    let addr = agent.http_addr();
    assert_eq!(http(addr, "GET", "/nope", b"").await.status, 404);
    let resp = http(addr, "GET", "/v1/records", b"").await;
    assert_eq!((resp.status, resp.header("allow")), (405, Some("POST")));
    let big = format!("{}\n", r#"{"metric":"m","value":1}"#).repeat(100);
    let resp = http(addr, "POST", "/v1/records", big.as_bytes()).await;
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert!(resp.json()["error"].as_str().unwrap().contains("1024 bytes"));
    assert_eq!(agent.metrics().pushed_http, 0, "nothing of a too-large body is accepted");
    assert_eq!(http(addr, "GET", "/healthz", b"").await.body, "ok\n");
    agent.shutdown().await;
}

fn app_batch(sequence: u64, records: Vec<Record>) -> RecordBatch {
    RecordBatch { agent_id: "app-1".into(), sequence, sent_at: None, records }
}

#[tokio::test]
async fn grpc_push_is_acked_per_batch_and_rebatched_under_the_agent_id() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(test_config(&fake.url(), dir.path())).await.unwrap();
    let mut client = IngestClient::connect(format!("http://{}", agent.grpc_addr())).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut acks = client.push(ReceiverStream::new(rx)).await.unwrap().into_inner();

    let t = ms(1_767_225_600_000);
    let mut own = double_record("app.latency", 0.25, t);
    own.cluster = "c-app".into();
    own.tags.insert("team".into(), "app-team".into());
    let batches = [
        app_batch(
            1,
            vec![
                double_record("app.requests", 1.0, t),
                decimal_record("app.revenue", Decimal { units: 7, nanos: 50_000_000 }, t),
            ],
        ),
        app_batch(2, vec![own, double_record("", 1.0, t), double_record("app.nan", f64::NAN, t)]),
        app_batch(3, vec![double_record("app.requests", 2.0, t)]),
    ];
    let mut got = Vec::new();
    for b in batches.iter().cloned() {
        tx.send(b).await.unwrap();
        got.push(acks.message().await.unwrap().unwrap());
    }
    let summary: Vec<(u64, i32, u32, u32)> =
        got.iter().map(|a| (a.sequence, a.status, a.accepted, a.invalid)).collect();
    let accepted = AckStatus::Accepted as i32;
    assert_eq!(summary, [(1, accepted, 2, 0), (2, accepted, 1, 2), (3, accepted, 1, 0)]);
    assert!(got.iter().all(|a| a.agent_id == "app-1"));
    assert!(got[1].message.contains("record 1: metric must not be empty"), "{}", got[1].message);

    // A re-sent batch (lost ack) is recognised and not enqueued twice.
    tx.send(batches[1].clone()).await.unwrap();
    let dup = acks.message().await.unwrap().unwrap();
    assert_eq!((dup.sequence, dup.status), (2, AckStatus::Duplicate as i32));

    let records = fake.wait_for_records(4, WAIT).await;
    let names: Vec<&str> = records.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(names, ["app.requests", "app.revenue", "app.latency", "app.requests"]);
    assert_eq!(records[1].value, Some(record::Value::DecimalValue(Decimal { units: 7, nanos: 50_000_000 })));
    assert_eq!(records[2].cluster, "c-app");
    assert_eq!(records[2].node, "n-default");
    assert_eq!(tags(&records[2]), kv(&[("env", "test"), ("team", "app-team")]));
    let unique = fake.unique_batches();
    assert!(unique.iter().all(|b| b.agent_id == "test-agent"), "re-batched under the agent's own id");
    assert_eq!(unique.iter().map(|b| b.sequence).collect::<Vec<_>>(), [1, 2]);
    let m = agent.metrics();
    assert_eq!((m.pushed_grpc, m.dropped_invalid), (4, 2));
    drop(tx);
    assert!(acks.message().await.unwrap().is_none(), "stream ends when the pusher ends it");
    assert!(agent.shutdown().await.is_complete());
}

#[tokio::test]
async fn failed_streams_are_retried_with_the_same_sequences_and_nothing_is_lost() {
    let fake = FakeAggregator::start().await;
    fake.fail_next(3);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.batch_max_records = 2;
    let agent = Agent::start(config).await.unwrap();
    let t = ms(1_767_225_600_000);
    for chunk in 0..5 {
        let records: Vec<Record> = (0..4).map(|i| double_record(format!("m{}", chunk * 4 + i), 1.0, t)).collect();
        let summary = agent.push(records).await.unwrap();
        assert_eq!(summary.accepted, 4);
    }
    let records = fake.wait_for_records(20, WAIT).await;
    let mut names: Vec<String> = records.iter().map(|r| r.metric.clone()).collect();
    assert_eq!(names.len(), 20, "exactly the pushed records, each once");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20);
    let unique = fake.unique_batches();
    assert_eq!(unique.iter().map(|b| b.sequence).collect::<Vec<_>>(), (1..=10).collect::<Vec<u64>>());
    let arrivals = fake.arrivals();
    assert!(arrivals.len() >= 13, "3 failed arrivals were re-sent: {arrivals:?}");
    for failed in &arrivals[..3] {
        assert!(
            arrivals[3..].contains(failed),
            "failed batch {failed} was re-sent under the same sequence: {arrivals:?}"
        );
    }
    let m = eventually("all acked", WAIT, || Some(agent.metrics()).filter(|m| m.sent == 20)).await;
    assert!(m.reconnects >= 3, "{m:?}");
    assert!(fake.connections() >= 4);
    assert_eq!((m.in_flight, m.queue_depth, m.dropped()), (0, 0, 0));
    assert!(agent.shutdown().await.is_complete());
}

#[tokio::test]
async fn duplicate_acks_count_as_delivered_and_rejections_are_not_retried() {
    let fake = FakeAggregator::start().await;
    fake.set_mode(AckMode::Duplicate);
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(test_config(&fake.url(), dir.path())).await.unwrap();
    let t = ms(0);
    agent.push((0..3).map(|i| double_record(format!("d{i}"), 1.0, t)).collect()).await.unwrap();
    let m = eventually("duplicate acks", WAIT, || Some(agent.metrics()).filter(|m| m.sent == 3)).await;
    assert_eq!((m.duplicate, m.rejected, m.in_flight), (3, 0, 0));

    fake.set_mode(AckMode::Reject);
    agent.push((0..3).map(|i| double_record(format!("r{i}"), 1.0, t)).collect()).await.unwrap();
    let m = eventually("rejection", WAIT, || Some(agent.metrics()).filter(|m| m.rejected == 3)).await;
    assert_eq!((m.sent, m.in_flight), (3, 0));
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(fake.arrivals(), [1, 2], "the rejected batch was not re-sent");
}

#[tokio::test]
async fn full_queue_gives_http_503_and_grpc_waits_without_losing_anything() {
    let fake = FakeAggregator::start().await;
    fake.set_mode(AckMode::Never);
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.batch_max_records = 1;
    config.queue_capacity = 2;
    config.max_in_flight = 2;
    config.shutdown_timeout = Duration::from_millis(500);
    let agent = Agent::start(config).await.unwrap();
    // Fill the in-flight window first, so the queue state below is deterministic.
    for i in 0..2 {
        let line = format!("{{\"metric\":\"q{i}\",\"value\":{i}}}\n");
        assert_eq!(http(agent.http_addr(), "POST", "/v1/records", line.as_bytes()).await.status, 200);
    }
    fake.wait_for_arrivals(2, WAIT).await;
    let mut accepted = 2;
    let mut refused = None;
    for i in 2..10 {
        let line = format!("{{\"metric\":\"q{i}\",\"value\":{i}}}\n{{\"metric\":\"q{i}b\",\"value\":{i}}}\n");
        let resp = http(agent.http_addr(), "POST", "/v1/records", line.as_bytes()).await;
        if resp.status == 503 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status, 200, "{}", resp.body);
        accepted += 2;
    }
    let resp = refused.expect("a full queue must answer 503");
    assert_eq!(accepted, 4, "2 in flight + 2 queued (one request of 2 records fills both slots)");
    assert_eq!(resp.header("retry-after"), Some("1"));
    let error = resp.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("queue is full") && error.contains("nothing of this request was accepted"), "{error}");

    // gRPC pushes wait instead: no ack while the queue is full.
    let mut client = IngestClient::connect(format!("http://{}", agent.grpc_addr())).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut acks = client.push(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(app_batch(1, vec![double_record("g", 1.0, ms(0))])).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), acks.message()).await.is_err(),
        "a gRPC push must wait for queue room, not be acked"
    );

    let m = agent.metrics();
    assert_eq!((m.pushed_http, m.refused, m.in_flight, m.queue_depth), (4, 2, 2, 2));
    assert_eq!(m.in_flight_records + m.queue_records, m.pushed_http, "every accepted record is queued or in flight");

    // Shutdown cannot flush (the fake never acks): the report accounts for every record.
    let report = agent.shutdown().await;
    assert!(report.timed_out && !report.is_complete(), "{report:?}");
    assert_eq!((report.undelivered_batches, report.undelivered_records), (4, 4));
    let status = acks.message().await;
    assert!(
        matches!(&status, Err(s) if s.code() == tonic::Code::Unavailable),
        "the waiting gRPC push is told the agent is going away: {status:?}"
    );
}

#[tokio::test]
async fn shutdown_flushes_the_open_batch_and_restart_continues_the_sequence() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.batch_max_records = 1000;
    config.batch_max_delay = Duration::from_secs(3600);
    let agent = Agent::start(config.clone()).await.unwrap();
    let t = ms(1_767_225_600_000);
    agent.push((0..7).map(|i| double_record(format!("s{i}"), f64::from(i), t)).collect()).await.unwrap();
    assert!(fake.batches().is_empty(), "the batch is still open (max delay 1 h)");
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.flushed_batches, report.flushed_records), (1, 7));
    let batches = fake.batches();
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].sequence, batches[0].records.len()), (1, 7));

    // Restart with the same state directory: the sequence continues, nothing is reused.
    let agent = Agent::start(config).await.unwrap();
    agent.push(vec![double_record("after-restart", 1.0, t)]).await.unwrap();
    assert!(agent.shutdown().await.is_complete());
    let seqs: Vec<u64> = fake.batches().iter().map(|b| b.sequence).collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn separate_metrics_listener_serves_only_metrics() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.metrics_listen = "127.0.0.2:0".parse().unwrap();
    let agent = Agent::start(config).await.unwrap();
    assert_ne!(agent.metrics_addr(), agent.http_addr());
    agent.push(vec![double_record("x", 1.0, ms(0))]).await.unwrap();
    let resp = http(agent.metrics_addr(), "GET", "/metrics", b"").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(resp.body.contains("meshmon_agent_pushed_total{api=\"local\"} 1"), "{}", resp.body);
    assert!(resp.body.contains("# TYPE meshmon_agent_queue_depth gauge"), "{}", resp.body);
    let resp = http(agent.metrics_addr(), "POST", "/v1/records", b"{\"metric\":\"m\",\"value\":1}\n").await;
    assert_eq!(resp.status, 404, "no pushes on the metrics listener");
    assert!(agent.shutdown().await.is_complete());
}

#[tokio::test]
async fn start_fails_clearly_on_bad_state_or_busy_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sequence"), "garbage").unwrap();
    let e = Agent::start(test_config("http://127.0.0.1:1", dir.path())).await.unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config("http://127.0.0.1:1", dir.path());
    config.http_listen = busy.local_addr().unwrap();
    let e = Agent::start(config).await.unwrap_err().to_string();
    assert!(e.contains("http_listen"), "{e}");

    let mut config = test_config("http://127.0.0.1:1", dir.path());
    config.queue_capacity = 0;
    let e = Agent::start(config).await.unwrap_err().to_string();
    assert!(e.contains("`queue_capacity`"), "{e}");
}

#[tokio::test]
async fn records_without_time_get_now_and_local_push_reports_invalid() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(test_config(&fake.url(), dir.path())).await.unwrap();
    let before = meshmon_agent::record::now_timestamp();
    let mut no_time = double_record("no.time", 1.0, ms(0));
    no_time.event_time = None;
    let summary = agent.push(vec![no_time, Record { metric: "no.value".into(), ..Record::default() }]).await.unwrap();
    assert_eq!(summary.accepted, 1);
    assert_eq!(summary.invalid.len(), 1);
    assert_eq!(summary.invalid[0].0, 1);
    let records = fake.wait_for_records(1, WAIT).await;
    let t = records[0].event_time.unwrap();
    assert!((t.seconds, t.nanos) >= (before.seconds, before.nanos), "stamped with the push time");
    assert_eq!(agent.metrics().dropped_invalid, 1);
    assert!(agent.shutdown().await.is_complete());
}

//! The actor pipeline in-process: a real gRPC ingest on loopback, router, shards and the
//! embedded store. What it stores must equal what the single-threaded engine computes for the
//! same batches — with disorder, a late record and an agent re-sending a batch — and every
//! stored point's drill-down must return exactly `count` raw records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshmon_aggregator::engine::{
    Batch, DimensionSpec, EngineConfig, LatestResults, Nanos, Record, Value, WindowEngine, WindowSpec,
    time::NANOS_PER_SEC,
};
use meshmon_aggregator::runtime::clock::now_nanos;
use meshmon_aggregator::runtime::{Pipeline, PipelineConfig};
use meshmon_aggregator::store::{DrillDown, StoreConfig};
use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::ingest_client::IngestClient;
use meshmon_proto::v1::ingest_server::IngestServer;
use meshmon_proto::v1::{self, AckStatus, RecordBatch};

const SEC: Nanos = NANOS_PER_SEC;

fn engine_config() -> EngineConfig {
    EngineConfig {
        window: WindowSpec::Tumbling { size: 10 * SEC, offset: 0 },
        out_of_orderness: 2 * SEC,
        allowed_lateness: 5 * SEC,
        idle_timeout: None, // no wall-clock dependence: the pipeline must equal the engine exactly
        dimensions: DimensionSpec::default(),
        ..EngineConfig::default()
    }
}

/// Batches from three agents: in order, out of order within the bound, one record late enough
/// to correct a fired window, one too late, and a final batch that closes every window.
fn batches(base: Nanos) -> Vec<(String, u64, Vec<Record>)> {
    let rec = |node: &str, metric: &str, t: Nanos, v: f64| Record {
        metric: metric.into(),
        value: Value::Float(v),
        time: base + t,
        cluster: if node == "n3" { "c2".into() } else { "c1".into() },
        node: node.into(),
        tags: vec![("env".into(), "prod".into())],
    };
    let mut out = Vec::new();
    for (i, node) in ["n1", "n2", "n3"].iter().enumerate() {
        let agent = format!("agent-{node}");
        let mut seq = 0;
        let mut push = |records: Vec<Record>| {
            seq += 1;
            out.push((agent.clone(), seq, records));
        };
        let off = i as Nanos * 100_000_000;
        push(vec![
            rec(node, "cpu", off + SEC, 1.0),
            rec(node, "mem", off + 2 * SEC, 10.0),
            rec(node, "cpu", off + 3 * SEC, 3.0),
        ]);
        push(vec![rec(node, "cpu", off + 12 * SEC, 5.0), rec(node, "cpu", off + 9 * SEC, 2.0)]);
        push(vec![rec(node, "cpu", off + 15 * SEC, 4.0), rec(node, "mem", off + 16 * SEC, 11.0)]);
    }
    // Interleave the agents: round robin over their batches.
    let mut interleaved = Vec::new();
    for round in 0..3 {
        for agent in 0..3 {
            interleaved.push(out[agent * 3 + round].clone());
        }
    }
    // n1 moves far ahead; a correction within lateness and a record too late, then everyone closes.
    interleaved.push(("agent-n1".into(), 4, vec![rec("n1", "cpu", 24 * SEC, 7.0)]));
    interleaved.push(("agent-n2".into(), 4, vec![rec("n2", "cpu", 25 * SEC, 6.0)]));
    interleaved.push(("agent-n3".into(), 4, vec![rec("n3", "cpu", 26 * SEC, 6.0), rec("n3", "cpu", 19 * SEC, 100.0)]));
    // The watermark is now 22 s: [10,20) fired but is within lateness (a correction); [0,10) is
    // past it (10 + 5 ≤ 22: too late).
    interleaved.push((
        "agent-n1".into(),
        5,
        vec![rec("n1", "cpu", 15 * SEC, 1000.0), rec("n1", "cpu", 4 * SEC, 1000.0)],
    ));
    interleaved.push(("agent-n2".into(), 2, out[4].2.clone())); // re-sent: a duplicate
    for (agent, seq) in [("agent-n1", 6), ("agent-n2", 5), ("agent-n3", 5)] {
        interleaved.push((agent.into(), seq, vec![rec(&agent[6..], "cpu", 60 * SEC, 0.0)]));
    }
    interleaved
}

fn to_wire(agent: &str, seq: u64, records: &[Record]) -> RecordBatch {
    RecordBatch {
        agent_id: agent.into(),
        sequence: seq,
        sent_at: None,
        records: records
            .iter()
            .map(|r| v1::Record {
                metric: r.metric.clone(),
                value: match r.value {
                    Value::Float(v) => Some(v1::record::Value::DoubleValue(v)),
                    Value::Decimal(_) => None,
                },
                event_time: Some(nanos_to_timestamp(r.time)),
                cluster: r.cluster.clone(),
                node: r.node.clone(),
                tags: r.tags.iter().cloned().collect(),
                raw: Some(format!("{}={:?}", r.metric, r.value).into_bytes()),
            })
            .collect(),
    }
}

#[test]
fn pipeline_stores_what_the_engine_computes() {
    let dir = tempfile::tempdir().unwrap();
    let base = (now_nanos() / (60 * SEC) - 10) * 60 * SEC; // ten minutes ago, minute-aligned
    let input = batches(base);

    // What the single-threaded engine computes for the same batches (inputs = agent connections).
    let mut engine = WindowEngine::new(engine_config()).unwrap();
    let mut expected = LatestResults::default();
    for (agent, seq, records) in &input {
        let batch = Batch { agent, sequence: *seq, records };
        engine.process_batch(&format!("agent:{agent}"), &batch, now_nanos(), &mut expected);
    }
    assert!(expected.results.len() > 10 && expected.results.values().any(|r| r.revision > 0));
    assert_eq!(expected.late.len(), 1);

    let config = PipelineConfig {
        engine: engine_config(),
        shards: 2,
        store_path: dir.path().join("store.redb"),
        store: StoreConfig::default(),
        tick_every: Duration::from_millis(100),
        flush_every: Duration::from_millis(50),
        retention_every: Duration::from_secs(3600),
    };
    let system = actix_rt::System::new();
    let wire: Vec<RecordBatch> = input.iter().map(|(a, s, r)| to_wire(a, *s, r)).collect();
    let (acks, pipeline) = system.block_on(async move {
        let pipeline = Pipeline::start(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = IngestServer::new(pipeline.ingest_service());
        actix_rt::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
        let n = wire.len();
        let mut acks = client.push(tokio_stream::iter(wire)).await.unwrap().into_inner();
        let mut statuses = Vec::new();
        while let Some(ack) = acks.message().await.unwrap() {
            statuses.push((ack.agent_id, ack.sequence, ack.status));
            if statuses.len() == n {
                break;
            }
        }
        (statuses, pipeline)
    });
    assert_eq!(acks.len(), input.len(), "one ack per batch");
    let duplicates: Vec<_> = acks.iter().filter(|a| a.2 == AckStatus::Duplicate as i32).collect();
    assert_eq!(duplicates, [&("agent-n2".to_string(), 2, AckStatus::Duplicate as i32)]);

    // Wait (polling, with a deadline) until the store holds every expected point. The system
    // keeps running meanwhile: the router's ticks drive the shards' timed flushes.
    let spec = engine_config().window;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = system.block_on(async {
        loop {
            let mut stored = BTreeMap::new();
            for (series, start) in expected.results.keys() {
                let points =
                    pipeline.store.query_points(&series.metric, &series.dimension, &spec, *start, start + 1).unwrap();
                if let Some(p) = points.into_iter().next() {
                    stored.insert((series.clone(), *start), p);
                }
            }
            let done = stored.len() == expected.results.len()
                && stored.iter().all(|(k, p)| p.stats == expected.results[k].stats);
            if done || Instant::now() > deadline {
                break stored;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    });
    for (key, want) in &expected.results {
        let got = stored.get(key).unwrap_or_else(|| panic!("missing point {key:?}"));
        assert_eq!(got.stats, want.stats, "stats of {key:?}");
        assert_eq!(got.window, want.window);
        let query = DrillDown {
            metric: key.0.metric.to_string(),
            dimension: key.0.dimension.clone(),
            window_spec: spec,
            window: want.window,
            allowed_lateness: engine_config().allowed_lateness,
        };
        let page = pipeline.store.drill_down(&query, 10_000, None).unwrap();
        assert_eq!(page.records.len() as u64, want.stats.count(), "drill-down of {key:?}");
    }
    let metrics = pipeline.metrics.render();
    assert!(metrics.contains("meshmon_duplicate_batches_total 1"), "{metrics}");
    assert!(metrics.contains("meshmon_records_late_total 1"), "{metrics}");
    system.block_on(async { actix_rt::System::current().stop() });
}

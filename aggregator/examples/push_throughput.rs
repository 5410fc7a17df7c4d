//! Push throughput over gRPC, in batches of 1 000 reference-fleet records.
//!
//! `cargo run --release -p meshmon-aggregator --example push_throughput -- agent [records] [streams]`
//!   measures the agent's push API alone: apps → in-process agent → a sink that acks at once.
//! `cargo run --release -p meshmon-aggregator --example push_throughput -- aggregator [records] [streams]`
//!   measures the aggregator's ingest: apps → gRPC → router → shards → embedded store (temp dir).
//! Prints records/s from the first push until every record is acknowledged (agent mode: until
//! the sink has received every record).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::Stream;
use meshmon_aggregator::config::AggregatorConfig;
use meshmon_aggregator::server;
use meshmon_aggregator::synthetic;
use meshmon_proto::v1::ingest_client::IngestClient;
use meshmon_proto::v1::ingest_server::{Ingest, IngestServer};
use meshmon_proto::v1::{AckStatus, BatchAck, RecordBatch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Acks every batch at once and counts records: a stand-in for an infinitely fast aggregator.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl Ingest for Sink {
    type PushStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send>>;

    async fn push(&self, req: Request<Streaming<RecordBatch>>) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let count = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(b)) = inbound.message().await {
                count.fetch_add(b.records.len() as u64, Ordering::Relaxed);
                let ack = BatchAck {
                    agent_id: b.agent_id,
                    sequence: b.sequence,
                    status: AckStatus::Accepted as i32,
                    accepted: b.records.len() as u32,
                    invalid: 0,
                    message: String::new(),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reference-fleet records as wire batches of 1 000, one sequence of batches per stream.
fn wire_batches(records: usize, streams: usize) -> Vec<Vec<RecordBatch>> {
    let now = meshmon_aggregator::runtime::clock::now_nanos();
    synthetic::wire_batches(records, streams, 1_000, now, 600_000_000_000)
}

/// Pushes every stream concurrently to `addr`; returns (records acked, seconds).
async fn push_all(addr: SocketAddr, streams: Vec<Vec<RecordBatch>>) -> (u64, f64) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for batches in streams {
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::connect(format!("http://{addr}"))
                .await
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let n = batches.len();
            let mut acks =
                client.push(tokio_stream::iter(batches)).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
            let mut acked = 0u64;
            for _ in 0..n {
                match acks.message().await {
                    Ok(Some(a)) => acked += u64::from(a.accepted),
                    other => panic!("stream ended early: {other:?}"),
                }
            }
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    (total, started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("agent");
    let records: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let streams: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    let batches = wire_batches(records, streams);
    let n: usize = batches.iter().flatten().map(|b| b.records.len()).sum();
    match mode {
        "agent" => bench_agent(batches, n),
        "aggregator" => bench_aggregator(batches, n),
        other => eprintln!("unknown mode {other}: use agent or aggregator"),
    }
}

fn bench_agent(batches: Vec<Vec<RecordBatch>>, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async move {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let sink_addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let svc = IngestServer::new(sink.clone()).max_decoding_message_size(64 << 20);
        tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(TcpListenerStream::new(listener)));
        let dir = std::env::temp_dir().join(format!("meshmon-push-bench-{}", std::process::id()));
        let mut config = meshmon_agent::Config {
            agent_id: "bench-agent".into(),
            output: format!("http://{sink_addr}"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.clone(),
            ..meshmon_agent::Config::default()
        };
        config.metrics_listen = config.http_listen;
        config.plugins.system.enabled = false;
        let agent = meshmon_agent::Agent::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let (acked, push_secs) = push_all(agent.grpc_addr(), batches).await;
        let started = Instant::now();
        while sink.0.load(Ordering::Relaxed) < n as u64 && started.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delivered_secs = push_secs + started.elapsed().as_secs_f64();
        println!(
            "agent push API: {acked} records acked by the agent in {push_secs:.2} s ({:.0} records/s); {} delivered to the sink in {delivered_secs:.2} s ({:.0} records/s end to end)",
            acked as f64 / push_secs,
            sink.0.load(Ordering::Relaxed),
            n as f64 / delivered_secs
        );
        let _ = agent.shutdown().await;
        let _ = std::fs::remove_dir_all(dir);
    });
}

fn bench_aggregator(batches: Vec<Vec<RecordBatch>>, n: usize) {
    let dir = std::env::temp_dir().join(format!("meshmon-ingest-bench-{}", std::process::id()));
    let mut config = AggregatorConfig::default();
    config.listen.grpc = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.http = SocketAddr::from(([127, 0, 0, 1], 0));
    config.store.data_dir = dir.clone();
    config.engine.limits.max_past = 0;
    let system = actix_rt::System::new();
    let running = system.block_on(server::start(&config)).unwrap_or_else(|e| panic!("{e}"));
    let addr = running.grpc_addr.unwrap_or_else(|| panic!("embedded mode serves gRPC"));
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(push_all(addr, batches))
    });
    let (acked, secs) = system.block_on(async move {
        loop {
            if client.is_finished() {
                break client.join().unwrap_or((0, 0.0));
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    });
    println!(
        "aggregator ingest: {acked}/{n} records acked in {secs:.2} s ({:.0} records/s) incl. engine and embedded store",
        acked as f64 / secs
    );
    system.block_on(running.stop());
    let _ = std::fs::remove_dir_all(dir);
}

//! Test support shared by the agent's integration tests.
//!
//! Role: a **fake aggregator** (a tonic `meshmon.v1.Ingest` server on `127.0.0.1:0` that records
//! every batch it receives and acks it — or fails the stream for the next K batches, answers
//! DUPLICATE or REJECTED, or never acks), a minimal HTTP/1.1 client, a polling helper with a
//! deadline, and a test configuration on ephemeral ports. Touches only loopback sockets.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshmon_agent::Config;
use meshmon_proto::v1::ingest_server::{Ingest, IngestServer};
use meshmon_proto::v1::{AckStatus, BatchAck, Record, RecordBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// How the fake answers batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// ACCEPTED.
    Accept,
    /// DUPLICATE.
    Duplicate,
    /// REJECTED.
    Reject,
    /// Record the batch, never answer.
    Never,
}

#[derive(Debug)]
struct Inner {
    /// Batches received and handled (acked, or held in `Never` mode), in arrival order.
    batches: Vec<RecordBatch>,
    /// Sequence of every arrival, including the ones failed on purpose.
    arrivals: Vec<u64>,
    fail_next: usize,
    mode: AckMode,
    connections: usize,
}

#[derive(Debug, Clone)]
struct FakeService {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

#[tonic::async_trait]
impl Ingest for FakeService {
    type PushStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn push(&self, request: Request<Streaming<RecordBatch>>) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        this.inner.lock().unwrap().connections += 1;
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let reply = {
                    let mut inner = this.inner.lock().unwrap();
                    inner.arrivals.push(batch.sequence);
                    if inner.fail_next > 0 {
                        inner.fail_next -= 1;
                        Some(Err(Status::unavailable("fake aggregator: failing this stream on purpose")))
                    } else {
                        let n = u32::try_from(batch.records.len()).unwrap();
                        let ack = |status: AckStatus, accepted: u32| BatchAck {
                            agent_id: batch.agent_id.clone(),
                            sequence: batch.sequence,
                            status: status as i32,
                            accepted,
                            invalid: 0,
                            message: String::new(),
                        };
                        let reply = match inner.mode {
                            AckMode::Accept => Some(Ok(ack(AckStatus::Accepted, n))),
                            AckMode::Duplicate => Some(Ok(ack(AckStatus::Duplicate, 0))),
                            AckMode::Reject => Some(Ok(ack(AckStatus::Rejected, 0))),
                            AckMode::Never => None,
                        };
                        inner.batches.push(batch);
                        reply
                    }
                };
                this.changed.send_modify(|v| *v += 1);
                let keep_going = match reply {
                    Some(Ok(ack)) => tx.send(Ok(ack)).await.is_ok(),
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        false
                    }
                    None => true,
                };
                if !keep_going {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A fake aggregator listening on `127.0.0.1:<ephemeral>`.
#[derive(Debug)]
pub struct FakeAggregator {
    pub addr: SocketAddr,
    service: FakeService,
    changed: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
}

impl FakeAggregator {
    pub async fn start() -> FakeAggregator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed_tx, changed) = watch::channel(0);
        let service = FakeService {
            inner: Arc::new(Mutex::new(Inner {
                batches: Vec::new(),
                arrivals: Vec::new(),
                fail_next: 0,
                mode: AckMode::Accept,
                connections: 0,
            })),
            changed: Arc::new(changed_tx),
        };
        let (stop, mut stop_rx) = watch::channel(false);
        let svc = IngestServer::new(service.clone());
        tokio::spawn(async move {
            let _ = Server::builder()
                .serve_with_incoming_shutdown(svc, TcpIncoming::from(listener), async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        FakeAggregator { addr, service, changed, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails the stream (without ack) on each of the next `k` batches.
    pub fn fail_next(&self, k: usize) {
        self.service.inner.lock().unwrap().fail_next = k;
    }

    pub fn set_mode(&self, mode: AckMode) {
        self.service.inner.lock().unwrap().mode = mode;
    }

    /// Every batch handled (not failed on purpose), in arrival order; may contain re-sends.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.service.inner.lock().unwrap().batches.clone()
    }

    /// The sequence of every arrival, including failed ones.
    pub fn arrivals(&self) -> Vec<u64> {
        self.service.inner.lock().unwrap().arrivals.clone()
    }

    pub fn connections(&self) -> usize {
        self.service.inner.lock().unwrap().connections
    }

    /// Handled batches deduplicated by (agent, sequence), sorted by sequence. Panics if two
    /// copies of one (agent, sequence) differ in their records (a re-send must be identical).
    pub fn unique_batches(&self) -> Vec<RecordBatch> {
        let mut by_key: BTreeMap<(String, u64), RecordBatch> = BTreeMap::new();
        for b in self.batches() {
            let key = (b.agent_id.clone(), b.sequence);
            if let Some(prev) = by_key.get(&key) {
                assert_eq!(prev.records, b.records, "re-sent batch {key:?} has different records");
            } else {
                by_key.insert(key, b);
            }
        }
        by_key.into_values().collect()
    }

    /// Records of the unique batches, in sequence order.
    pub fn unique_records(&self) -> Vec<Record> {
        self.unique_batches().into_iter().flat_map(|b| b.records).collect()
    }

    /// Waits (at most `timeout`) until the unique batches hold at least `n` records.
    pub async fn wait_for_records(&self, n: usize, timeout: Duration) -> Vec<Record> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let records = self.unique_records();
            if records.len() >= n {
                return records;
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                panic!("fake aggregator got {} of {n} records within {timeout:?}", records.len());
            }
        }
    }

    /// Waits until at least `n` batches arrived (acked or not).
    pub async fn wait_for_arrivals(&self, n: usize, timeout: Duration) {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.arrivals().len() < n {
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                panic!("fake aggregator saw {} of {n} batches within {timeout:?}", self.arrivals().len());
            }
        }
    }
}

impl Drop for FakeAggregator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `check` every 10 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    HttpResponse { status, headers, body: body.to_owned() }
}

/// Agent configuration for tests: ephemeral loopback ports (metrics shared with HTTP), small
/// batches, no plugins, global tags env=test and team=core, cluster c-default, node n-default.
pub fn test_config(output: &str, state_dir: &Path) -> Config {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut c = Config {
        agent_id: "test-agent".into(),
        cluster: "c-default".into(),
        node: "n-default".into(),
        tags: [("env".to_owned(), "test".to_owned()), ("team".to_owned(), "core".to_owned())].into(),
        output: output.to_owned(),
        grpc_listen: any,
        http_listen: any,
        metrics_listen: any,
        batch_max_records: 3,
        batch_max_delay: Duration::from_millis(50),
        queue_capacity: 64,
        max_in_flight: 8,
        state_dir: state_dir.to_owned(),
        shutdown_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    c.plugins.system.enabled = false;
    c
}

/// A free port cannot be guaranteed; this is an address where nothing listens (bound, then
/// released), for "aggregator unreachable" tests.
pub async fn dead_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A plugin context for tests: state in a fresh temp dir, and the sender that stops the plugins'
/// background tasks.
pub struct PluginCtx {
    /// The context to build plugins with.
    pub ctx: meshmon_agent::plugins::PluginContext,
    /// Sends the shutdown (`true`); dropping it stops background tasks too.
    pub stop: watch::Sender<bool>,
    /// The state directory (removed on drop).
    pub dir: tempfile::TempDir,
}

/// A fresh [`PluginCtx`].
pub fn plugin_ctx() -> PluginCtx {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, stop) = meshmon_agent::plugins::PluginContext::standalone(dir.path());
    PluginCtx { ctx, stop, dir }
}

//! Drill-down latency through gRPC `meshmon.v1.Query/RawRecords`: the embedded raw store
//! against the HBase raw store (over Thrift1, served by the in-memory protocol-test server —
//! not HBase).
//!
//! `cargo run --release -p meshmon-aggregator --example hbase_drilldown [SAMPLES [BUCKET_SECONDS [SCAN_PARALLELISM]]]`
//!
//! Builds the data of `benches/drilldown.rs` — 1 000 nodes in 10 clusters, 3 metrics, one
//! record per node, metric and second for 70 s: 210 000 raw rows, default layout (60 s buckets,
//! 16 salts; `BUCKET_SECONDS` sets `store.bucket_size`) — once into an embedded store file and once through `HbaseRawStore::write_raw`
//! into the protocol-test Thrift server (`meshmon_tests::hbase_thrift`, in this process, on
//! loopback), with their listings in the HBase server's embedded store as the pipeline writes
//! them. Then starts two real servers (`server::start`, each in its own actix system):
//! one on the embedded store, one with `store.kind = "hbase"` pointed at the Thrift server, and
//! times `RawRecords` from a gRPC client on its own thread: the fleet point of `cpu` over
//! `[30 s, 40 s)` — 10 000 records in one page of 10 000 (the bucket scanned holds 60 000 `cpu`
//! rows) — a cluster point (1 000 records) and a node point (10 records). Prints p50 / p95 /
//! max per case, after checking that both stores return identical pages; first the same for
//! the stores called directly (no gRPC), to show what the store itself costs (the direct HBase
//! node point scans every salt: the narrowing by the node's clusters happens in the server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshmon_aggregator::config::{AggregatorConfig, StoreKind};
use meshmon_aggregator::engine::{Dimension, Nanos, Window, WindowSpec};
use meshmon_aggregator::server;
use meshmon_aggregator::store::hbase::{HbaseConfig, HbaseRawStore};
use meshmon_aggregator::store::{DrillDown, EmbeddedStore, RawPage, RawWrite, StoreConfig, WriteBatch};
use meshmon_proto::v1::query_client::QueryClient;
use meshmon_proto::v1::{self, DimensionKind};
use meshmon_proto::{nanos_to_duration, nanos_to_timestamp};
use meshmon_tests::hbase_thrift::ThriftServer;

#[path = "../benches/support/drilldown_data.rs"]
mod data;
use data::{SEC, raw_rows};

const TABLE: &str = "meshmon_raw_bench";

/// Every row from `t0`, in event-time order, in batches of 1 000.
fn batches(t0: Nanos) -> Vec<Vec<RawWrite>> {
    let mut out = Vec::new();
    let mut rows = raw_rows(t0).peekable();
    while rows.peek().is_some() {
        out.push(rows.by_ref().take(1_000).collect());
    }
    out
}

/// Runs `serve` for `config` on a thread of its own; returns its gRPC address and a stopper.
fn start_server(config: AggregatorConfig) -> (SocketAddr, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let running = server::start(&config).await.unwrap_or_else(|e| panic!("server: {e}"));
            addr_tx.send(running.query_addr.unwrap()).unwrap();
            // Wait for the stop signal without blocking the server's thread.
            let stop = tokio::task::spawn_blocking(move || stop_rx.recv());
            let _ = stop.await;
            running.stop().await;
        });
    });
    (addr_rx.recv().unwrap(), stop_tx, handle)
}

fn config(dir: &Path, kind: StoreKind, thrift: SocketAddr, bucket_size: Nanos, scan: usize) -> AggregatorConfig {
    let mut c = AggregatorConfig::default();
    c.store.hbase.scan_parallelism = scan;
    c.store.bucket_size = bucket_size;
    c.listen.grpc = SocketAddr::from(([127, 0, 0, 1], 0));
    c.listen.http = SocketAddr::from(([127, 0, 0, 1], 0));
    c.store.data_dir = dir.to_path_buf();
    c.store.kind = kind;
    c.store.hbase.thrift_address = thrift.to_string();
    c.store.hbase.table = TABLE.into();
    c.engine.allowed_lateness = 60 * SEC;
    c.engine.shards = 1;
    c
}

fn request(t0: Nanos, kind: DimensionKind, value: &str) -> v1::RawRecordsRequest {
    v1::RawRecordsRequest {
        metric: "cpu".into(),
        dimension: Some(v1::Dimension {
            kind: kind as i32,
            names: vec![],
            values: if value.is_empty() { vec![] } else { vec![value.into()] },
        }),
        window: Some(v1::WindowSpec {
            kind: Some(v1::window_spec::Kind::Tumbling(v1::Tumbling {
                size: Some(nanos_to_duration(10 * SEC)),
                offset: None,
            })),
        }),
        window_start: Some(nanos_to_timestamp(t0 + 30 * SEC)),
        page_size: 10_000,
        page_token: String::new(),
    }
}

/// p50, p95 and max (ms) of `samples` timed runs of `f` after 5 warm-up runs.
fn percentiles(samples: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..5 {
        f();
    }
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.95), at(1.0))
}

fn point(t0: Nanos, dimension: Dimension) -> DrillDown {
    DrillDown {
        metric: "cpu".into(),
        dimension,
        window_spec: WindowSpec::Tumbling { size: 10 * SEC, offset: 0 },
        window: Window { start: t0 + 30 * SEC, end: t0 + 40 * SEC },
        allowed_lateness: 60 * SEC,
    }
}

fn main() {
    let samples: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let bucket_seconds: i64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let store_config = StoreConfig { bucket_size: bucket_seconds * SEC, ..StoreConfig::default() };
    let scan_parallelism: usize = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    println!(
        "layout: {bucket_seconds} s buckets, {} salts; HBase drill-downs over {scan_parallelism} connections",
        store_config.salt_buckets
    );
    // An hour ago, on a bucket boundary: inside retention.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let t0 = (now - 3_600) / 60 * 60 * SEC;
    let all = batches(t0);
    let rows: usize = all.iter().map(Vec::len).sum();

    let dir = tempfile::tempdir().unwrap();
    let (embedded_dir, hbase_dir) = (dir.path().join("embedded"), dir.path().join("hbase"));
    std::fs::create_dir_all(&embedded_dir).unwrap();
    std::fs::create_dir_all(&hbase_dir).unwrap();
    let embedded_store = EmbeddedStore::open(embedded_dir.join("store.redb"), store_config).unwrap();
    let started = Instant::now();
    for b in &all {
        embedded_store.write(&WriteBatch { raw: b.clone(), ..WriteBatch::default() }).unwrap();
    }
    println!("embedded: {rows} raw rows loaded in {:.2} s", started.elapsed().as_secs_f64());
    let thrift = ThriftServer::start().unwrap();
    let layout = store_config.layout().unwrap();
    let hbase_config = HbaseConfig { table: TABLE.into(), layout, scan_parallelism, ..HbaseConfig::default() };
    let mut hbase_store = HbaseRawStore::connect(thrift.addr().to_string(), hbase_config).unwrap();
    hbase_store.open_table(true).unwrap();
    // What the pipeline writes in HBase mode: the rows to HBase, their listings (metrics,
    // clusters per node) to the HBase server's embedded store.
    let listings = EmbeddedStore::open(hbase_dir.join("store.redb"), store_config).unwrap();
    for b in &all {
        listings.write_raw_elsewhere(&WriteBatch { raw: b.clone(), ..WriteBatch::default() }).unwrap();
    }
    drop(listings);
    let started = Instant::now();
    for b in &all {
        hbase_store.write_raw(b).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hbase (Thrift protocol-test server): {rows} raw rows written in {secs:.2} s ({:.0} rows/s, mutateRows of 1 000)",
        rows as f64 / secs
    );
    drop(all);

    // The stores called directly: what the drill-down itself costs.
    let direct = [
        ("fleet_10k", point(t0, Dimension::Fleet), 10_000),
        ("cluster_1k", point(t0, Dimension::Cluster("cluster-03".into())), 1_000),
        ("node_10", point(t0, Dimension::Node("node-00042".into())), 10),
    ];
    for (name, q, want) in &direct {
        let e: RawPage = embedded_store.drill_down(q, 10_000, None).unwrap();
        assert_eq!(e.records.len(), *want, "{name}");
        assert_eq!(hbase_store.drill_down(q, 10_000, None).unwrap(), e, "{name}: the stores differ");
        let (p50, p95, max) = percentiles(samples, || {
            embedded_store.drill_down(q, 10_000, None).unwrap();
        });
        println!(
            "direct   embedded {name:<10}: {want:>6} records, {samples} runs: p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms"
        );
        let (p50, p95, max) = percentiles(samples, || {
            hbase_store.drill_down(q, 10_000, None).unwrap();
        });
        println!(
            "direct      hbase {name:<10}: {want:>6} records, {samples} runs: p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms"
        );
    }
    drop(embedded_store);
    drop(hbase_store);

    let (embedded_addr, stop_embedded, embedded) = start_server(config(
        &embedded_dir,
        StoreKind::Embedded,
        thrift.addr(),
        store_config.bucket_size,
        scan_parallelism,
    ));
    let (hbase_addr, stop_hbase, hbase) =
        start_server(config(&hbase_dir, StoreKind::Hbase, thrift.addr(), store_config.bucket_size, scan_parallelism));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A client expecting 1–2 MB answers: HTTP/2 windows of 8 / 16 MiB instead of 64 KiB,
        // so the server is not held up waiting for window updates.
        let connect = |addr: SocketAddr| async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .initial_stream_window_size(8 << 20)
                .initial_connection_window_size(16 << 20)
                .tcp_nodelay(true)
                .connect()
                .await
                .unwrap();
            QueryClient::new(channel).max_decoding_message_size(64 << 20)
        };
        let mut e = connect(embedded_addr).await;
        let mut h = connect(hbase_addr).await;
        let cases = [
            ("fleet_10k", request(t0, DimensionKind::Fleet, ""), 10_000),
            ("cluster_1k", request(t0, DimensionKind::Cluster, "cluster-03"), 1_000),
            ("node_10", request(t0, DimensionKind::Node, "node-00042"), 10),
        ];
        for (name, req, want) in &cases {
            let pe = e.raw_records(req.clone()).await.unwrap().into_inner();
            let ph = h.raw_records(req.clone()).await.unwrap().into_inner();
            assert_eq!(pe.records.len(), *want, "{name}: records behind the point");
            assert!(pe == ph, "{name}: the stores return different pages");
            assert!(pe.next_page_token.is_empty());
        }
        for (store, client) in [("embedded", &mut e), ("hbase", &mut h)] {
            for (name, req, want) in &cases {
                for _ in 0..5 {
                    client.raw_records(req.clone()).await.unwrap();
                }
                let mut times = Vec::with_capacity(samples);
                for _ in 0..samples {
                    let started = Instant::now();
                    let page = client.raw_records(req.clone()).await.unwrap().into_inner();
                    times.push(started.elapsed());
                    assert_eq!(page.records.len(), *want);
                }
                times.sort();
                let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
                println!(
                    "grpc RawRecords {store:>8} {name:<10}: {want:>6} records, {samples} runs: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
                    at(0.50),
                    at(0.95),
                    at(1.0)
                );
            }
        }
    });
    let calls = thrift.state().calls("scannerGetList");
    println!("thrift: {calls} scannerGetList calls served in all");
    stop_embedded.send(()).unwrap();
    stop_hbase.send(()).unwrap();
    embedded.join().unwrap();
    hbase.join().unwrap();
}

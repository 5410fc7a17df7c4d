//! Protocol tests of the HBase raw store (`store::hbase`) over Thrift1.
//!
//! Role: there is no HBase here. `meshmon_tests::hbase_thrift::ThriftServer` serves HBase's
//! Thrift1 `Hbase` service — the `hbase-thrift` crate's generated `HbaseSyncProcessor`, binary
//! protocol, buffered transport (HBase's defaults) on 127.0.0.1 — over an in-memory sorted
//! map, implementing just what the store calls (everything else answers an `IOError`). These
//! are **protocol tests**: they check our use of the Thrift1 API and that the HBase drill-down
//! pages equal the embedded store's, not HBase itself (region splits, timestamps, versions and
//! server-side limits are not modelled).
//!
//! The main test drives a `WindowEngine` over a generated stream (3 metrics, 3 clusters, 6
//! nodes, tags, 3 agents — one with a NUL byte in its id — disorder, late, partially late and
//! invalid records, re-sent batches, times spanning many buckets, 16 salts) for tumbling,
//! sliding and session windows, writes its output to an `EmbeddedStore` and, through the
//! Thrift server, to the HBase store; then for **every** stored point the drill-down through
//! the Thrift path equals the embedded path page by page (page sizes 1, 2, 5 and 1 000), with
//! `count` records. Plus: opening the table (create, family and layout checks), server errors
//! reported with the server's message, transient failures retried with backoff (retryable
//! `IOError`s, a stalled server, a server stopped and started again) and permanent ones not,
//! corrupt rows and bad tokens as errors (no panic), rows in every salt, the `SyncArbiter`
//! actor and the runtime's connection pools (`HbaseRaw`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meshmon_aggregator::engine::{
    Batch, Dimension, DimensionField, DimensionSpec, EngineConfig, Limits, Nanos, Record, RecordId, TagDimensions,
    Value, WindowEngine, WindowSpec,
};
use meshmon_aggregator::store::hbase::{
    DrillDownQuery, HbaseActor, HbaseConfig, HbaseError, HbaseMetrics, HbaseRaw, HbaseRawStore, HbaseSetup,
    TableReport, WriteRaw, WriteRawRange,
};
use meshmon_aggregator::store::{
    DrillDown, EmbeddedStore, RawWrite, RowKeyLayout, StoreConfig, StoreError, WriteBatch, WriteBatchSink,
};
use meshmon_tests::hbase_thrift::{Fault, IMPLEMENTED_CALLS, ThriftServer};

// ---------------------------------------------------------------- the protocol test server

/// Starts the protocol test server (`meshmon_tests::hbase_thrift`) on a free loopback port;
/// it stops when the returned server is dropped.
fn start_protocol_test_server() -> (String, ThriftServer) {
    let server = ThriftServer::start().expect("the protocol test server starts");
    (server.addr().to_string(), server)
}

// ---------------------------------------------------------------- generated workload

const SEC: Nanos = 1_000_000_000;
const T0: Nanos = 1_764_000_000 * SEC;
const AGENTS: [&str; 3] = ["agent-a", "agent\0nul", "agent-c"];
const METRICS: [&str; 3] = ["cpu", "mem", "checkout_latency"];
const CLUSTERS: [&str; 3] = ["eu", "us", ""];

/// A small deterministic generator (xorshift64*).
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + i64::try_from(self.below(u64::try_from(hi - lo).unwrap())).unwrap()
    }
}

fn record(rng: &mut Rng, now: Nanos) -> Record {
    let cluster = rng.below(3) as usize;
    let node = rng.below(6);
    let value = match rng.below(20) {
        0 => Value::Float(f64::NAN), // invalid: a dead letter
        1..=9 => Value::Float(rng.range(-400, 400) as f64 * 0.25),
        _ => Value::Decimal(i128::from(rng.range(-3_000_000_000, 3_000_000_000))),
    };
    // Mostly a little behind `now`, sometimes far behind (late for some or all windows).
    let offset = if rng.below(8) == 0 { rng.range(-40 * SEC, -12 * SEC) } else { rng.range(-12 * SEC, 2 * SEC) };
    let mut tags = Vec::new();
    if rng.below(2) == 0 {
        tags.push(("env".to_owned(), if node.is_multiple_of(2) { "prod" } else { "dev" }.to_owned()));
    }
    if rng.below(2) == 0 {
        tags.push(("region".to_owned(), format!("r{}", cluster % 2)));
    }
    Record {
        metric: METRICS[rng.below(3) as usize].to_owned(),
        value,
        time: now + offset,
        cluster: CLUSTERS[cluster].to_owned(),
        node: format!("node-{node}"),
        tags,
    }
}

fn engine_config(window: WindowSpec) -> EngineConfig {
    EngineConfig {
        window,
        out_of_orderness: 2 * SEC,
        allowed_lateness: 5 * SEC,
        idle_timeout: Some(15 * SEC),
        series_ttl: 0,
        dimensions: DimensionSpec {
            fleet: true,
            cluster: true,
            node: true,
            tags: TagDimensions::All,
            sets: vec![
                vec![DimensionField::Cluster, DimensionField::Tag("region".into())],
                vec![DimensionField::Node, DimensionField::Tag("env".into())],
            ],
        },
        limits: Limits { max_future: Some(30 * SEC), max_past: None, ..Limits::default() },
    }
}

/// A batch as sent: agent number, sequence, records, raw payloads.
type Sent = (usize, u64, Vec<Record>, Vec<Option<Vec<u8>>>);

/// Runs the engine over a generated stream; returns the store batches it produced, in order.
fn generate(window: WindowSpec, seed: u64, steps: usize) -> Vec<WriteBatch> {
    let mut rng = Rng(seed);
    let mut engine = WindowEngine::new(engine_config(window)).unwrap();
    let mut sink = WriteBatchSink::new(window);
    let mut out = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut seqs = [0u64; 3];
    let mut now = T0;
    for _ in 0..steps {
        now += rng.range(0, 2 * SEC);
        match rng.below(10) {
            0 => {
                // A re-sent batch: recognised, counted once.
                if let Some((a, seq, recs, pl)) =
                    sent.get(sent.len().saturating_sub(1 + rng.below(3) as usize)).cloned()
                {
                    sink.begin(now, AGENTS[a], seq, pl);
                    engine.process_batch(
                        &format!("p{a}"),
                        &Batch { agent: AGENTS[a], sequence: seq, records: &recs },
                        now,
                        &mut sink,
                    );
                }
            }
            1 => {
                sink.begin(now, "", 0, Vec::new());
                engine.handle_tick(now, &mut sink);
            }
            _ => {
                let a = rng.below(3) as usize;
                seqs[a] += 1;
                let n = rng.below(9) as usize;
                let recs: Vec<Record> = (0..n).map(|_| record(&mut rng, now)).collect();
                let pl: Vec<Option<Vec<u8>>> = (0..n)
                    .map(|i| (rng.below(2) == 0).then(|| format!("{{\"raw\":\"{a}/{}/{i}\"}}", seqs[a]).into_bytes()))
                    .collect();
                sink.begin(now, AGENTS[a], seqs[a], pl.clone());
                let batch = Batch { agent: AGENTS[a], sequence: seqs[a], records: &recs };
                engine.process_batch(&format!("p{a}"), &batch, now, &mut sink);
                sent.push((a, seqs[a], recs, pl));
            }
        }
        if rng.below(4) == 0 {
            out.push(sink.take());
        }
    }
    engine.finish(&mut sink);
    out.push(sink.take());
    out
}

fn hbase_config(table: &str, layout: RowKeyLayout) -> HbaseConfig {
    HbaseConfig {
        table: table.to_owned(),
        dead_letter_table: format!("{table}_dead"),
        layout,
        write_batch_rows: 37,
        scan_batch_rows: 64,
        timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(40),
        ..HbaseConfig::default()
    }
}

/// Writes `batches` to a fresh embedded store and to the HBase store (drilling down over
/// `scan_parallelism` connections); returns both.
fn load(
    addr: &str,
    table: &str,
    store_config: StoreConfig,
    batches: &[WriteBatch],
    scan_parallelism: usize,
) -> (tempfile::TempDir, EmbeddedStore, HbaseRawStore) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("store.redb"), store_config).unwrap();
    let config = HbaseConfig { scan_parallelism, ..hbase_config(table, store_config.layout().unwrap()) };
    let mut hbase = HbaseRawStore::connect(addr, config).unwrap();
    assert_eq!(hbase.create_table_if_missing().unwrap(), vec![table.to_owned(), format!("{table}_dead")]);
    assert!(hbase.create_table_if_missing().unwrap().is_empty(), "tables exist now");
    // The layout row is recorded in the raw table; drill-down scans must never return it.
    assert_eq!(hbase.open_table(false).unwrap(), TableReport { created: false, layout_recorded: true });
    for b in batches {
        embedded.write(b).unwrap();
        hbase.write_raw(&b.raw).unwrap();
        hbase.write_dead_letters(&b.dead_letters).unwrap();
    }
    (dir, embedded, hbase)
}

/// The node of a dimension that names a node but not its cluster.
fn node_only(d: &Dimension) -> Option<String> {
    match d {
        Dimension::Node(n) => Some(n.to_string()),
        Dimension::Set(pairs) if !pairs.iter().any(|(f, _)| &**f == "cluster") => {
            pairs.iter().find(|(f, _)| &**f == "node").map(|(_, n)| n.to_string())
        }
        _ => None,
    }
}

/// Every page of a drill-down through both stores; asserts they are equal page by page and
/// returns the number of records. A node-only point is also drilled into with the node's
/// clusters from the embedded store's listing (the runtime's narrowed scan).
fn compare_drill_down(embedded: &EmbeddedStore, hbase: &mut HbaseRawStore, q: &DrillDown, page: usize) -> usize {
    let clusters = node_only(&q.dimension).map(|n| embedded.node_clusters(&q.metric, &n).unwrap());
    let mut token: Option<String> = None;
    let mut total = 0;
    let mut pages = 0;
    loop {
        let e = embedded.drill_down(q, page, token.as_deref()).unwrap();
        let h = hbase.drill_down(q, page, token.as_deref()).unwrap();
        assert_eq!(h, e, "page {pages} (size {page}) of {q:?}");
        if let Some(clusters) = &clusters {
            let narrowed = hbase.drill_down_in(q, page, token.as_deref(), Some(clusters)).unwrap();
            assert_eq!(narrowed, e, "page {pages} (size {page}) of {q:?} over clusters {clusters:?}");
        }
        pages += 1;
        total += e.records.len();
        match e.next_page_token {
            Some(t) => token = Some(t),
            None => return total,
        }
    }
}

/// Raw rows of `table` (the layout row not counted).
fn row_count(server: &ThriftServer, table: &str) -> usize {
    server.state().rows(table).keys().filter(|k| k.first() != Some(&0xFF)).count()
}

#[test]
fn protocol_test_hbase_drill_down_equals_embedded_for_every_point() {
    let (addr, server) = start_protocol_test_server();
    let kinds = [
        ("tumbling", WindowSpec::Tumbling { size: 10 * SEC, offset: 0 }),
        ("sliding", WindowSpec::Sliding { size: 12 * SEC, slide: 4 * SEC, offset: 0 }),
        ("session", WindowSpec::Session { gap: 3 * SEC }),
    ];
    for (i, (kind, window)) in kinds.into_iter().enumerate() {
        let batches = generate(window, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1), 160);
        // 7 s buckets: every window spans two or three buckets; 16 salts.
        let store_config = StoreConfig { bucket_size: 7 * SEC, salt_buckets: 16, retention: 365 * 86_400 * SEC };
        let table = format!("meshmon_raw_{kind}");
        // Sequential scans for one kind, 4 and 3 parallel connections for the others.
        let (_dir, embedded, mut hbase) = load(&addr, &table, store_config, &batches, [1, 4, 3][i]);

        let counts = embedded.counts().unwrap();
        assert!(counts.raw_rows > 300, "{kind}: a realistic amount of raw rows ({})", counts.raw_rows);
        assert_eq!(row_count(&server, &table) as u64, counts.raw_rows, "{kind}: one HBase row per raw row");
        assert_eq!(row_count(&server, &format!("{table}_dead")) as u64, counts.dead_letters, "{kind}: dead letters");

        let mut points = 0;
        let mut records = 0;
        let mut multi_page = 0;
        let mut dims = BTreeSet::new();
        for metric in embedded.list_metrics().unwrap() {
            for dimension in embedded.list_dimensions(&metric).unwrap() {
                for p in embedded.query_points(&metric, &dimension, &window, Nanos::MIN, Nanos::MAX).unwrap() {
                    let q = DrillDown {
                        metric: metric.clone(),
                        dimension: dimension.clone(),
                        window_spec: window,
                        window: p.window,
                        allowed_lateness: 5 * SEC,
                    };
                    let page = [1000, 5, 2, 1][points % 4];
                    let n = compare_drill_down(&embedded, &mut hbase, &q, page);
                    assert_eq!(n as u64, p.stats.count(), "{kind}: count of {metric}{{{dimension}}} {:?}", p.window);
                    multi_page += usize::from(n > page);
                    records += n;
                    points += 1;
                    dims.insert(format!("{dimension}").chars().take(4).collect::<String>());
                }
            }
        }
        assert!(points > 200, "{kind}: many points ({points})");
        assert!(multi_page > 50, "{kind}: many multi-page drill-downs ({multi_page})");
        eprintln!(
            "{kind}: {} raw rows, {points} points, {records} records drilled, dimensions {dims:?}",
            counts.raw_rows
        );
    }
    // Each scanner was closed.
    assert_eq!(server.state().open_scanners(), 0, "no scanner left open");
}

#[test]
fn protocol_test_rows_spread_over_every_salt_in_key_order() {
    let (addr, server) = start_protocol_test_server();
    let window = WindowSpec::Tumbling { size: 10 * SEC, offset: 0 };
    let batches = generate(window, 42, 80);
    let store_config = StoreConfig::default();
    let (_dir, embedded, mut hbase) = load(&addr, "spread", store_config, &batches, 4);
    let all_rows = server.state().rows("spread");
    let rows: BTreeMap<_, _> = all_rows.iter().filter(|(k, _)| k.first() != Some(&0xFF)).collect();
    let salts: BTreeMap<u8, usize> = rows.keys().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(k[0]).or_default() += 1;
        m
    });
    assert_eq!(salts.len(), 16, "rows in every salt: {salts:?}");
    assert_eq!(rows.len() as u64, embedded.counts().unwrap().raw_rows);
    // Each row is exactly the embedded store's key and value: decode both back.
    let all: Vec<RawWrite> = batches.iter().flat_map(|b| b.raw.iter().cloned()).collect();
    for w in &all {
        let (key, value) = meshmon_aggregator::store::hbase::schema::raw_row(&store_config.layout().unwrap(), w);
        assert_eq!(rows.get(&key).and_then(|r| r.get(b"r:v".as_slice())), Some(&value));
        assert!(rows.get(&key).is_some_and(|r| r.len() == 1), "one column per row");
    }
    // The mutations were batched: 37 rows per mutateRows call (plus the layout row's).
    let chunks = |n: usize| n.div_ceil(37) as u64;
    let want: u64 = batches.iter().map(|b| chunks(b.raw.len()) + chunks(b.dead_letters.len())).sum();
    let before = server.state().calls("mutateRows");
    assert_eq!(before, want + 1);
    let n = rows.len();
    // Re-writing everything in one call: ⌈n / 37⌉ mutateRows, nothing changes (idempotent).
    hbase.write_raw(&all).unwrap();
    assert_eq!(server.state().calls("mutateRows") - before, chunks(all.len()));
    assert_eq!(server.state().rows("spread").len(), n + 1);
    let dead: usize = batches.iter().map(|b| b.dead_letters.len()).sum();
    let written = hbase.metrics().rows_written.load(Ordering::Relaxed) as usize;
    assert_eq!(written, 2 * all.len() + dead + 1, "raw rows twice, dead letters, the layout row");
}

fn some_rows() -> (StoreConfig, Vec<RawWrite>) {
    let window = WindowSpec::Tumbling { size: 10 * SEC, offset: 0 };
    let batches = generate(window, 7, 40);
    let raw = batches.into_iter().flat_map(|b| b.raw).collect();
    (StoreConfig { bucket_size: 7 * SEC, salt_buckets: 4, retention: 365 * 86_400 * SEC }, raw)
}

fn fleet_query(metric: &str) -> DrillDown {
    DrillDown {
        metric: metric.to_owned(),
        dimension: Dimension::Fleet,
        window_spec: WindowSpec::Tumbling { size: 1 << 50, offset: 0 },
        window: meshmon_aggregator::engine::Window { start: T0 - 100 * SEC, end: T0 + 1000 * SEC },
        allowed_lateness: 1 << 50,
    }
}

#[test]
fn protocol_test_server_errors_are_reported_with_the_servers_message() {
    let (addr, server) = start_protocol_test_server();
    let (store_config, rows) = some_rows();
    let mut hbase = HbaseRawStore::connect(&addr, hbase_config("errors", store_config.layout().unwrap())).unwrap();

    // No table yet: the scan fails with HBase's exception text.
    let err = hbase.drill_down(&fleet_query("cpu"), 10, None).unwrap_err();
    assert!(
        matches!(&err, HbaseError::Server { op: "scannerOpenWithStop", kind: "IOError", message, .. } if message.contains("TableNotFoundException")),
        "{err:?}"
    );
    assert!(err.to_string().contains("TableNotFoundException: errors"), "{err}");

    // A failing mutateRows is an error naming the call; the connection stays usable.
    hbase.create_table_if_missing().unwrap();
    server.state().fail_next("mutateRows", "RegionTooBusyException: too busy", false);
    let err = hbase.write_raw(&rows).unwrap_err();
    assert!(matches!(&err, HbaseError::Server { op: "mutateRows", .. }), "{err:?}");
    assert!(err.to_string().contains("RegionTooBusyException: too busy"), "{err}");
    hbase.write_raw(&rows).unwrap();
    let page = hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap();
    assert!(!page.records.is_empty());

    // A failing scannerGetList: an error, and the scanners are still closed.
    server.state().fail_next("scannerGetList", "OutOfOrderScannerNextException", false);
    let err = hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap_err();
    assert!(matches!(&err, HbaseError::Server { op: "scannerGetList", .. }), "{err:?}");
    assert_eq!(server.state().open_scanners(), 0, "scanners closed after the error");
    assert_eq!(hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap(), page, "works again");

    // A corrupt stored value is an error, not a panic.
    {
        let mut tables = server.state().tables_mut();
        let table = tables.get_mut(b"errors".as_slice()).unwrap();
        let (_, row) = table.rows.iter_mut().find(|(k, _)| k.get(1..4) == Some(b"cpu".as_slice())).unwrap();
        row.insert(b"r:v".to_vec(), vec![1, 2]);
    }
    let err = hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap_err();
    assert!(matches!(err, HbaseError::Store(StoreError::CorruptValue { .. })), "{err:?}");

    // A token from another drill-down is refused like the embedded store refuses it.
    let other = hbase.drill_down(&fleet_query("mem"), 1, None).unwrap();
    let err = hbase.drill_down(&fleet_query("cpu"), 1, other.next_page_token.as_deref()).unwrap_err();
    assert!(matches!(err, HbaseError::Store(StoreError::InvalidPageToken(_))), "{err:?}");
    let err = hbase.drill_down(&fleet_query("mem"), 1, Some("zz")).unwrap_err();
    assert!(matches!(err, HbaseError::Store(StoreError::InvalidPageToken(_))), "{err:?}");

    // The client makes only the calls the protocol test server implements.
    assert!(server.state().called().iter().all(|c| IMPLEMENTED_CALLS.contains(c)));
}

#[test]
fn protocol_test_connection_and_config_errors() {
    // Nothing listens on a just-freed port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = HbaseRawStore::connect(format!("127.0.0.1:{port}"), HbaseConfig::default()).unwrap_err();
    assert!(matches!(err, HbaseError::Connect { .. }), "{err:?}");
    let bad = HbaseConfig { write_batch_rows: 0, ..HbaseConfig::default() };
    assert!(matches!(HbaseRawStore::lazy("127.0.0.1:9090", bad), Err(HbaseError::Config(_))));
    // A lazy store dials on first use and reports the failure then.
    let mut lazy = HbaseRawStore::lazy(format!("127.0.0.1:{port}"), HbaseConfig::default()).unwrap();
    assert!(matches!(lazy.drill_down(&fleet_query("cpu"), 1, None), Err(HbaseError::Connect { .. })));
}

#[test]
fn protocol_test_actor_on_a_sync_arbiter() {
    let (addr, _server) = start_protocol_test_server();
    let (store_config, rows) = some_rows();
    let config = hbase_config("actor", store_config.layout().unwrap());
    HbaseRawStore::connect(&addr, config.clone()).unwrap().create_table_if_missing().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("s.redb"), store_config).unwrap();
    embedded.write(&WriteBatch { raw: rows.clone(), ..WriteBatch::default() }).unwrap();

    let system = actix::System::new();
    system.block_on(async move {
        let actor = {
            let (addr, config) = (addr.clone(), config.clone());
            actix::SyncArbiter::start(2, move || HbaseActor::new(addr.clone(), config.clone()))
        };
        for chunk in rows.chunks(50) {
            actor.send(WriteRaw(chunk.to_vec())).await.unwrap().unwrap();
        }
        let mut token = None;
        let mut got: Vec<RecordId> = Vec::new();
        let q = fleet_query("mem");
        loop {
            let page = actor
                .send(DrillDownQuery { query: q.clone(), page_size: 7, page_token: token.clone(), node_clusters: None })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(page, embedded.drill_down(&q, 7, token.as_deref()).unwrap());
            got.extend(page.records.into_iter().map(|r| r.id));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let want = rows.iter().filter(|w| w.record.metric == "mem").count();
        assert_eq!(got.len(), want);
        assert!(want > 10);

        // An invalid configuration fails every message with a configuration error.
        let broken = actix::SyncArbiter::start(1, move || {
            HbaseActor::new(addr.clone(), HbaseConfig { scan_batch_rows: 0, ..config.clone() })
        });
        let err = broken.send(WriteRaw(Vec::new())).await.unwrap().unwrap_err();
        assert!(matches!(err, HbaseError::Config(_)), "{err:?}");
    });
}

#[test]
fn protocol_test_open_table_creates_and_checks_family_and_layout() {
    let (addr, server) = start_protocol_test_server();
    let layout = RowKeyLayout::new(7 * SEC, 4).unwrap();
    let config = HbaseConfig { ttl: Some(Duration::from_secs(3 * 86_400)), ..hbase_config("opened", layout) };
    let mut hbase = HbaseRawStore::connect(&addr, config.clone()).unwrap();

    // Missing, and not to be created: a clear error saying what to do.
    let err = hbase.open_table(false).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, HbaseError::Table { .. }), "{err:?}");
    assert!(text.contains("opened") && text.contains("does not exist") && text.contains("create_table"), "{text}");
    assert!(server.state().tables().is_empty(), "nothing created");

    // Created with the family (1 version, TTL = the configured one) and the layout row.
    assert_eq!(hbase.open_table(true).unwrap(), TableReport { created: true, layout_recorded: true });
    {
        let tables = server.state().tables();
        let family = &tables[b"opened".as_slice()].families[b"r".as_slice()];
        assert_eq!((family.max_versions, family.time_to_live), (Some(1), Some(3 * 86_400)));
    }
    // Opening again (another aggregator, a restart) finds everything in place.
    let mut again = HbaseRawStore::connect(&addr, config.clone()).unwrap();
    assert_eq!(again.open_table(false).unwrap(), TableReport { created: false, layout_recorded: false });

    // Another layout: refused, naming both.
    let other = HbaseConfig { layout: RowKeyLayout::new(7 * SEC, 16).unwrap(), ..config.clone() };
    let err = HbaseRawStore::connect(&addr, other).unwrap().open_table(true).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("salt_buckets=4") && text.contains("salt_buckets=16") && text.contains("cannot change"),
        "{text}"
    );

    // A table without the family: refused, naming what it has.
    let wrong_family = HbaseConfig { family: "x".into(), ..config.clone() };
    let err = HbaseRawStore::connect(&addr, wrong_family).unwrap().open_table(true).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no column family 'x'") && text.contains("\"r\""), "{text}");

    // A configurable family is used for every column (and the store reads back what it wrote).
    let (store_config, rows) = some_rows();
    let custom = HbaseConfig { family: "raw".into(), ..hbase_config("custom", store_config.layout().unwrap()) };
    let mut hbase = HbaseRawStore::connect(&addr, custom).unwrap();
    hbase.open_table(true).unwrap();
    hbase.write_raw(&rows).unwrap();
    let stored = server.state().rows("custom");
    assert!(stored.values().all(|r| r.keys().all(|c| c.starts_with(b"raw:"))), "every column in family raw");
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("s.redb"), store_config).unwrap();
    embedded.write(&WriteBatch { raw: rows, ..WriteBatch::default() }).unwrap();
    let n = compare_drill_down(&embedded, &mut hbase, &fleet_query("cpu"), 7);
    assert!(n > 10, "{n}");
}

#[test]
fn protocol_test_transient_failures_are_retried_with_backoff_and_permanent_ones_are_not() {
    let (addr, server) = start_protocol_test_server();
    let (store_config, rows) = some_rows();
    let config = HbaseConfig { retries: 3, ..hbase_config("retry", store_config.layout().unwrap()) };
    let metrics = Arc::new(HbaseMetrics::default());
    let mut hbase = HbaseRawStore::connect(&addr, config.clone()).unwrap().with_metrics(metrics.clone());
    hbase.open_table(true).unwrap();
    let layout_writes = metrics.write_batches.load(Ordering::Relaxed);
    let chunk = &rows[..30];

    // Three retryable failures, then success: written, counted as retries.
    for _ in 0..3 {
        server.state().fail_next("mutateRows", "org.apache.hadoop.hbase.RegionTooBusyException: busy", true);
    }
    let calls = server.state().calls("mutateRows");
    hbase.write_raw(chunk).unwrap();
    assert_eq!(server.state().calls("mutateRows") - calls, 4);
    assert_eq!(row_count(&server, "retry"), 30);
    assert_eq!(metrics.write_retries.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.write_errors.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.write_batches.load(Ordering::Relaxed) - layout_writes, 1);
    assert_eq!(metrics.write_failures.load(Ordering::Relaxed), 0);

    // More retryable failures than retries: given up after 1 + 3 attempts.
    for _ in 0..4 {
        server.state().fail_next("mutateRows", "NotServingRegionException", true);
    }
    let err = hbase.write_raw(&rows[30..40]).unwrap_err();
    assert!(matches!(err, HbaseError::Exhausted { op: "mutateRows", attempts: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("NotServingRegionException"), "{err}");
    assert_eq!(metrics.write_failures.load(Ordering::Relaxed), 1);

    // A permanent error (not retryable) is not retried.
    server.state().fail_next("mutateRows", "NoSuchColumnFamilyException", false);
    let calls = server.state().calls("mutateRows");
    let err = hbase.write_raw(&rows[30..40]).unwrap_err();
    assert!(matches!(err, HbaseError::Server { can_retry: false, .. }), "{err:?}");
    assert_eq!(server.state().calls("mutateRows") - calls, 1);

    // A call that outlives the timeout breaks the connection; the retry dials again.
    let quick = HbaseConfig { timeout: Duration::from_millis(150), ..config.clone() };
    let mut quick = HbaseRawStore::connect(&addr, quick).unwrap();
    server.state().inject("mutateRows", Fault::Stall(Duration::from_millis(600)));
    quick.write_raw(&rows[40..50]).unwrap();
    assert_eq!(quick.metrics().write_retries.load(Ordering::Relaxed), 1);
    assert_eq!(quick.metrics().rows_written.load(Ordering::Relaxed), 10);

    // Drill-downs ride out a stalled call too (at most two retries).
    server.state().inject("scannerOpenWithStop", Fault::Stall(Duration::from_millis(600)));
    let page = quick.drill_down(&fleet_query("cpu"), 1_000, None).unwrap();
    assert!(!page.records.is_empty());
    assert_eq!(quick.metrics().drill_down_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn protocol_test_a_write_rides_out_a_server_restart() {
    let (addr, mut server) = start_protocol_test_server();
    let (store_config, rows) = some_rows();
    let config = HbaseConfig {
        retries: 100,
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(20),
        ..hbase_config("restart", store_config.layout().unwrap())
    };
    let mut hbase = HbaseRawStore::connect(&addr, config).unwrap();
    hbase.open_table(true).unwrap();
    hbase.write_raw(&rows[..10]).unwrap();
    let metrics = hbase.metrics().clone();

    // The server goes away: the open connection breaks, new ones are refused.
    let state = server.state().clone();
    let socket = server.addr();
    server.stop();
    let writer = std::thread::spawn(move || {
        let result = hbase.write_raw(&rows[10..]);
        (result, hbase, rows)
    });
    // Once the writer has failed (and is retrying), the server comes back on the same port.
    meshmon_tests::wait_for("the writer retrying", Duration::from_secs(30), || {
        (metrics.write_retries.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .unwrap();
    let _server = ThriftServer::start_on(state.clone(), socket).unwrap();
    let (result, mut hbase, rows) = writer.join().unwrap();
    result.unwrap();
    assert_eq!(state.rows("restart").keys().filter(|k| k.first() != Some(&0xFF)).count(), rows.len());
    assert!(metrics.write_errors.load(Ordering::Relaxed) >= 2);
    // The reader side reconnects by itself as well.
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("s.redb"), store_config).unwrap();
    embedded.write(&WriteBatch { raw: rows, ..WriteBatch::default() }).unwrap();
    compare_drill_down(&embedded, &mut hbase, &fleet_query("mem"), 1_000);
}

#[test]
fn protocol_test_runtime_pools_write_in_parallel_parts_and_drill_down() {
    let (addr, server) = start_protocol_test_server();
    let (store_config, rows) = some_rows();
    let setup = HbaseSetup {
        address: addr.clone(),
        config: HbaseConfig { write_batch_rows: 10, ..hbase_config("pools", store_config.layout().unwrap()) },
        connections: 3,
        create_table: true,
    };
    assert_eq!(setup.open_table().unwrap(), TableReport { created: true, layout_recorded: true });
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("s.redb"), store_config).unwrap();
    embedded.write(&WriteBatch { raw: rows.clone(), ..WriteBatch::default() }).unwrap();
    assert!(rows.len() > 60, "{}", rows.len());

    actix::System::new().block_on(async move {
        let hbase = HbaseRaw::start(&setup).unwrap();
        let calls = server.state().calls("mutateRows");
        hbase.write(Arc::new(rows.clone())).await.unwrap();
        // Three parts of ⌈n / 3⌉ rows, each in mutateRows calls of 10.
        let part = rows.len().div_ceil(3);
        let want: usize = (0..rows.len()).step_by(part).map(|s| (rows.len().min(s + part) - s).div_ceil(10)).sum();
        assert_eq!((server.state().calls("mutateRows") - calls) as usize, want);
        assert_eq!(hbase.metrics().rows_written.load(Ordering::Relaxed) as usize, rows.len());
        assert_eq!(row_count(&server, "pools"), rows.len());
        let q = fleet_query("cpu");
        let mut token = None;
        loop {
            let page = hbase.drill_down(q.clone(), 4, token.clone(), None).await.unwrap();
            assert_eq!(page, embedded.drill_down(&q, 4, token.as_deref()).unwrap());
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert!(hbase.metrics().drill_downs.load(Ordering::Relaxed) > 3);

        // A part failing for good fails the write.
        server.state().fail_next("mutateRows", "IllegalArgument", false);
        let err = hbase.write(Arc::new(rows.clone())).await.unwrap_err();
        assert!(matches!(err, HbaseError::Server { .. }), "{err:?}");

        // WriteRawRange clamps its range to the rows.
        let actor = {
            let (addr, config) = (addr.clone(), setup.config.clone());
            actix::SyncArbiter::start(1, move || HbaseActor::new(addr.clone(), config.clone()))
        };
        let shared = Arc::new(rows.clone());
        actor.send(WriteRawRange { rows: shared.clone(), range: 5..100_000 }).await.unwrap().unwrap();
        actor.send(WriteRawRange { rows: shared, range: 100_000..100_001 }).await.unwrap().unwrap();
    });
}

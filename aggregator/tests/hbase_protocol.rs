//! Protocol tests of the HBase raw store (`store::hbase`) over Thrift1.
//!
//! Role: there is no HBase here. [`start_protocol_test_server`] serves HBase's Thrift1 `Hbase`
//! service — the `hbase-thrift` crate's generated `HbaseSyncProcessor` in thrift's `TServer`,
//! binary protocol, buffered transport (HBase's defaults) on 127.0.0.1 — over an in-memory
//! sorted map, implementing just what the store calls (getTableNames, createTable, mutateRows,
//! scannerOpenWithStop, scannerGetList, scannerClose; everything else answers an `IOError`).
//! These are **protocol tests**: they check our use of the Thrift1 API and that the HBase
//! drill-down pages equal the embedded store's, not HBase itself (region splits, timestamps,
//! versions and server-side limits are not modelled).
//!
//! The main test drives a `WindowEngine` over a generated stream (3 metrics, 3 clusters, 6
//! nodes, tags, 3 agents — one with a NUL byte in its id — disorder, late, partially late and
//! invalid records, re-sent batches, times spanning many buckets, 16 salts) for tumbling,
//! sliding and session windows, writes its output to an `EmbeddedStore` and, through the
//! Thrift server, to the HBase store; then for **every** stored point the drill-down through
//! the Thrift path equals the embedded path page by page (page sizes 1, 2, 5 and 1 000), with
//! `count` records. Plus: server errors are reported with the server's message, corrupt rows
//! and bad tokens are errors (no panic), rows cover every salt, and the `SyncArbiter` actor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hbase_thrift::hbase::{
    BatchMutation, Bytes, ColumnDescriptor, HbaseSyncHandler, HbaseSyncProcessor, IOError, Mutation, ScannerID,
    TAccessControlEntity, TAppend, TCell, TIncrement, TRegionInfo, TRowResult, TScan, TThriftServerType, Text,
};
use meshmon_aggregator::engine::{
    Batch, DimensionField, DimensionSpec, EngineConfig, Limits, Nanos, Record, RecordId, TagDimensions, Value,
    WindowEngine, WindowSpec,
};
use meshmon_aggregator::store::hbase::{DrillDownQuery, HbaseActor, HbaseConfig, HbaseError, HbaseRawStore, WriteRaw};
use meshmon_aggregator::store::{
    DrillDown, EmbeddedStore, RawWrite, RowKeyLayout, StoreConfig, StoreError, WriteBatch, WriteBatchSink,
};
use thrift::protocol::{TBinaryInputProtocolFactory, TBinaryOutputProtocolFactory};
use thrift::server::TServer;
use thrift::transport::{TBufferedReadTransportFactory, TBufferedWriteTransportFactory};

// ---------------------------------------------------------------- the protocol test server

type Row = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
struct Table {
    families: BTreeSet<Vec<u8>>,
    rows: BTreeMap<Vec<u8>, Row>,
}

#[derive(Debug)]
struct Scanner {
    table: Vec<u8>,
    next: Vec<u8>,
    stop: Vec<u8>,
    columns: Vec<Vec<u8>>,
}

/// The server's state, shared with the test (to inspect rows and inject faults).
#[derive(Debug, Default)]
struct MemState {
    tables: BTreeMap<Vec<u8>, Table>,
    scanners: HashMap<ScannerID, Scanner>,
    next_scanner: ScannerID,
    /// One-shot faults: Thrift1 call name → the `IOError` message to answer with.
    faults: HashMap<&'static str, String>,
    /// Calls served, by name.
    calls: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Default)]
struct MemHbase(Arc<Mutex<MemState>>);

fn io_error<T>(message: impl Into<String>) -> thrift::Result<T> {
    Err(IOError::new(message.into(), false).into())
}

fn unsupported<T>(op: &str) -> thrift::Result<T> {
    io_error(format!("{op} is not implemented by the protocol test server"))
}

fn family_of(column: &[u8]) -> &[u8] {
    column.split(|&b| b == b':').next().unwrap_or_default()
}

impl MemHbase {
    /// Locks the state, counts the call and answers an injected fault.
    fn enter(&self, op: &'static str) -> thrift::Result<std::sync::MutexGuard<'_, MemState>> {
        let mut s = self.0.lock().unwrap();
        *s.calls.entry(op).or_default() += 1;
        if let Some(message) = s.faults.remove(op) {
            return io_error(message);
        }
        Ok(s)
    }
}

fn missing_table(name: &[u8]) -> String {
    format!("org.apache.hadoop.hbase.TableNotFoundException: {}", String::from_utf8_lossy(name))
}

impl HbaseSyncHandler for MemHbase {
    fn handle_get_table_names(&self) -> thrift::Result<Vec<Text>> {
        Ok(self.enter("getTableNames")?.tables.keys().cloned().collect())
    }
    fn handle_create_table(&self, table_name: Text, column_families: Vec<ColumnDescriptor>) -> thrift::Result<()> {
        let mut s = self.enter("createTable")?;
        if s.tables.contains_key(&table_name) {
            return Err(
                hbase_thrift::hbase::AlreadyExists::new(String::from_utf8_lossy(&table_name).into_owned()).into()
            );
        }
        let families = column_families.iter().map(|c| family_of(c.name.as_deref().unwrap_or_default()).to_vec());
        s.tables.insert(table_name, Table { families: families.collect(), rows: BTreeMap::new() });
        Ok(())
    }
    fn handle_mutate_rows(
        &self,
        table_name: Text,
        row_batches: Vec<BatchMutation>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        let mut s = self.enter("mutateRows")?;
        let Some(table) = s.tables.get_mut(&table_name) else {
            return io_error(missing_table(&table_name));
        };
        // Check everything first: the call applies all or nothing here (HBase gives no such
        // promise across rows; the store's writes are idempotent, so a retry is safe).
        for b in &row_batches {
            for m in b.mutations.iter().flatten() {
                let column = m.column.as_deref().unwrap_or_default();
                if !table.families.contains(family_of(column)) {
                    return io_error(format!(
                        "org.apache.hadoop.hbase.regionserver.NoSuchColumnFamilyException: {}",
                        String::from_utf8_lossy(column)
                    ));
                }
            }
        }
        for b in row_batches {
            let key = b.row.unwrap_or_default();
            for m in b.mutations.unwrap_or_default() {
                let column = m.column.unwrap_or_default();
                let row = table.rows.entry(key.clone()).or_default();
                if m.is_delete.unwrap_or(false) {
                    row.remove(&column);
                } else {
                    row.insert(column, m.value.unwrap_or_default());
                }
            }
            if table.rows.get(&key).is_some_and(BTreeMap::is_empty) {
                table.rows.remove(&key);
            }
        }
        Ok(())
    }
    fn handle_scanner_open_with_stop(
        &self,
        table_name: Text,
        start_row: Text,
        stop_row: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        let mut s = self.enter("scannerOpenWithStop")?;
        if !s.tables.contains_key(&table_name) {
            return io_error(missing_table(&table_name));
        }
        s.next_scanner += 1;
        let id = s.next_scanner;
        s.scanners.insert(id, Scanner { table: table_name, next: start_row, stop: stop_row, columns });
        Ok(id)
    }
    fn handle_scanner_get_list(&self, id: ScannerID, nb_rows: i32) -> thrift::Result<Vec<TRowResult>> {
        let mut s = self.enter("scannerGetList")?;
        let s = &mut *s;
        let Some(sc) = s.scanners.get_mut(&id) else {
            return Err(hbase_thrift::hbase::IllegalArgument::new(format!("no scanner {id}")).into());
        };
        let Some(table) = s.tables.get(&sc.table) else {
            return io_error(missing_table(&sc.table));
        };
        let wanted = |column: &[u8]| {
            sc.columns.is_empty()
                || sc.columns.iter().any(|c| {
                    c.as_slice() == column
                        || (!c.contains(&b':') || c.ends_with(b":")) && family_of(c) == family_of(column)
                })
        };
        let mut out = Vec::new();
        let mut last = None;
        for (key, row) in table.rows.range(sc.next.clone()..) {
            if out.len() >= usize::try_from(nb_rows).unwrap_or(0) || (!sc.stop.is_empty() && *key >= sc.stop) {
                break;
            }
            last = Some(key.clone());
            let cells: BTreeMap<Text, TCell> =
                row.iter().filter(|(c, _)| wanted(c)).map(|(c, v)| (c.clone(), TCell::new(v.clone(), 1))).collect();
            if !cells.is_empty() {
                out.push(TRowResult::new(key.clone(), cells, None));
            }
        }
        if let Some(mut last) = last {
            last.push(0);
            sc.next = last;
        }
        Ok(out)
    }
    fn handle_scanner_close(&self, id: ScannerID) -> thrift::Result<()> {
        let mut s = self.enter("scannerClose")?;
        match s.scanners.remove(&id) {
            Some(_) => Ok(()),
            None => Err(hbase_thrift::hbase::IllegalArgument::new(format!("no scanner {id}")).into()),
        }
    }

    // ---- not used by the store: an IOError each.
    fn handle_enable_table(&self, _: Bytes) -> thrift::Result<()> {
        unsupported("enableTable")
    }
    fn handle_disable_table(&self, _: Bytes) -> thrift::Result<()> {
        unsupported("disableTable")
    }
    fn handle_is_table_enabled(&self, _: Bytes) -> thrift::Result<bool> {
        unsupported("isTableEnabled")
    }
    fn handle_compact(&self, _: Bytes) -> thrift::Result<()> {
        unsupported("compact")
    }
    fn handle_major_compact(&self, _: Bytes) -> thrift::Result<()> {
        unsupported("majorCompact")
    }
    fn handle_get_table_names_with_is_table_enabled(&self) -> thrift::Result<BTreeMap<Text, bool>> {
        unsupported("getTableNamesWithIsTableEnabled")
    }
    fn handle_get_column_descriptors(&self, _: Text) -> thrift::Result<BTreeMap<Text, ColumnDescriptor>> {
        unsupported("getColumnDescriptors")
    }
    fn handle_get_table_regions(&self, _: Text) -> thrift::Result<Vec<TRegionInfo>> {
        unsupported("getTableRegions")
    }
    fn handle_delete_table(&self, _: Text) -> thrift::Result<()> {
        unsupported("deleteTable")
    }
    fn handle_get(&self, _: Text, _: Text, _: Text, _: BTreeMap<Text, Text>) -> thrift::Result<Vec<TCell>> {
        unsupported("get")
    }
    fn handle_get_ver(&self, _: Text, _: Text, _: Text, _: i32, _: BTreeMap<Text, Text>) -> thrift::Result<Vec<TCell>> {
        unsupported("getVer")
    }
    fn handle_get_ver_ts(
        &self,
        _: Text,
        _: Text,
        _: Text,
        _: i64,
        _: i32,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TCell>> {
        unsupported("getVerTs")
    }
    fn handle_get_row(&self, _: Text, _: Text, _: BTreeMap<Text, Text>) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRow")
    }
    fn handle_get_row_with_columns(
        &self,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowWithColumns")
    }
    fn handle_get_row_ts(&self, _: Text, _: Text, _: i64, _: BTreeMap<Text, Text>) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowTs")
    }
    fn handle_get_row_with_columns_ts(
        &self,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowWithColumnsTs")
    }
    fn handle_get_rows(&self, _: Text, _: Vec<Text>, _: BTreeMap<Text, Text>) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRows")
    }
    fn handle_get_rows_with_columns(
        &self,
        _: Text,
        _: Vec<Text>,
        _: Vec<Text>,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowsWithColumns")
    }
    fn handle_get_rows_ts(
        &self,
        _: Text,
        _: Vec<Text>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowsTs")
    }
    fn handle_get_rows_with_columns_ts(
        &self,
        _: Text,
        _: Vec<Text>,
        _: Vec<Text>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        unsupported("getRowsWithColumnsTs")
    }
    fn handle_mutate_row(&self, _: Text, _: Text, _: Vec<Mutation>, _: BTreeMap<Text, Text>) -> thrift::Result<()> {
        unsupported("mutateRow")
    }
    fn handle_mutate_row_ts(
        &self,
        _: Text,
        _: Text,
        _: Vec<Mutation>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        unsupported("mutateRowTs")
    }
    fn handle_mutate_rows_ts(
        &self,
        _: Text,
        _: Vec<BatchMutation>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        unsupported("mutateRowsTs")
    }
    fn handle_atomic_increment(&self, _: Text, _: Text, _: Text, _: i64) -> thrift::Result<i64> {
        unsupported("atomicIncrement")
    }
    fn handle_delete_all(&self, _: Text, _: Text, _: Text, _: BTreeMap<Text, Text>) -> thrift::Result<()> {
        unsupported("deleteAll")
    }
    fn handle_delete_all_ts(&self, _: Text, _: Text, _: Text, _: i64, _: BTreeMap<Text, Text>) -> thrift::Result<()> {
        unsupported("deleteAllTs")
    }
    fn handle_delete_all_row(&self, _: Text, _: Text, _: BTreeMap<Text, Text>) -> thrift::Result<()> {
        unsupported("deleteAllRow")
    }
    fn handle_increment(&self, _: TIncrement) -> thrift::Result<()> {
        unsupported("increment")
    }
    fn handle_increment_rows(&self, _: Vec<TIncrement>) -> thrift::Result<()> {
        unsupported("incrementRows")
    }
    fn handle_delete_all_row_ts(&self, _: Text, _: Text, _: i64, _: BTreeMap<Text, Text>) -> thrift::Result<()> {
        unsupported("deleteAllRowTs")
    }
    fn handle_scanner_open_with_scan(&self, _: Text, _: TScan, _: BTreeMap<Text, Text>) -> thrift::Result<ScannerID> {
        unsupported("scannerOpenWithScan")
    }
    fn handle_scanner_open(
        &self,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        unsupported("scannerOpen")
    }
    fn handle_scanner_open_with_prefix(
        &self,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        unsupported("scannerOpenWithPrefix")
    }
    fn handle_scanner_open_ts(
        &self,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        unsupported("scannerOpenTs")
    }
    fn handle_scanner_open_with_stop_ts(
        &self,
        _: Text,
        _: Text,
        _: Text,
        _: Vec<Text>,
        _: i64,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<ScannerID> {
        unsupported("scannerOpenWithStopTs")
    }
    fn handle_scanner_get(&self, _: ScannerID) -> thrift::Result<Vec<TRowResult>> {
        unsupported("scannerGet")
    }
    fn handle_get_region_info(&self, _: Text) -> thrift::Result<TRegionInfo> {
        unsupported("getRegionInfo")
    }
    fn handle_append(&self, _: TAppend) -> thrift::Result<Vec<TCell>> {
        unsupported("append")
    }
    fn handle_check_and_put(
        &self,
        _: Text,
        _: Text,
        _: Text,
        _: Text,
        _: Mutation,
        _: BTreeMap<Text, Text>,
    ) -> thrift::Result<bool> {
        unsupported("checkAndPut")
    }
    fn handle_get_thrift_server_type(&self) -> thrift::Result<TThriftServerType> {
        unsupported("getThriftServerType")
    }
    fn handle_get_cluster_id(&self) -> thrift::Result<String> {
        unsupported("getClusterId")
    }
    fn handle_grant(&self, _: TAccessControlEntity) -> thrift::Result<bool> {
        unsupported("grant")
    }
    fn handle_revoke(&self, _: TAccessControlEntity) -> thrift::Result<bool> {
        unsupported("revoke")
    }
}

/// Starts the protocol test server on a free loopback port in a background thread (it lives
/// as long as the test process) and returns its address and state.
fn start_protocol_test_server() -> (String, MemHbase) {
    let state = MemHbase::default();
    for _ in 0..20 {
        // TServer binds by address: find a free port, then let it bind; retry if it was taken.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let handler = state.clone();
        let server = std::thread::spawn(move || {
            let mut server = TServer::new(
                TBufferedReadTransportFactory::new(),
                TBinaryInputProtocolFactory::new(),
                TBufferedWriteTransportFactory::new(),
                TBinaryOutputProtocolFactory::new(),
                HbaseSyncProcessor::new(handler),
                8,
            );
            server.listen(("127.0.0.1", port))
        });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.is_finished() && Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return (addr.to_string(), state);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("the protocol test server did not start");
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
    }
}

/// Writes `batches` to a fresh embedded store and to the HBase store; returns both.
fn load(
    addr: &str,
    table: &str,
    store_config: StoreConfig,
    batches: &[WriteBatch],
) -> (tempfile::TempDir, EmbeddedStore, HbaseRawStore) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path().join("store.redb"), store_config).unwrap();
    let mut hbase = HbaseRawStore::connect(addr, hbase_config(table, store_config.layout().unwrap())).unwrap();
    assert_eq!(hbase.create_table_if_missing().unwrap(), vec![table.to_owned(), format!("{table}_dead")]);
    assert!(hbase.create_table_if_missing().unwrap().is_empty(), "tables exist now");
    for b in batches {
        embedded.write(b).unwrap();
        hbase.write_raw(&b.raw).unwrap();
        hbase.write_dead_letters(&b.dead_letters).unwrap();
    }
    (dir, embedded, hbase)
}

/// Every page of a drill-down through both stores; asserts they are equal page by page and
/// returns the records.
fn compare_drill_down(embedded: &EmbeddedStore, hbase: &mut HbaseRawStore, q: &DrillDown, page: usize) -> usize {
    let mut token: Option<String> = None;
    let mut total = 0;
    let mut pages = 0;
    loop {
        let e = embedded.drill_down(q, page, token.as_deref()).unwrap();
        let h = hbase.drill_down(q, page, token.as_deref()).unwrap();
        assert_eq!(h, e, "page {pages} (size {page}) of {q:?}");
        pages += 1;
        total += e.records.len();
        match e.next_page_token {
            Some(t) => token = Some(t),
            None => return total,
        }
    }
}

fn row_count(server: &MemHbase, table: &str) -> usize {
    server.0.lock().unwrap().tables.get(table.as_bytes()).map_or(0, |t| t.rows.len())
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
        let (_dir, embedded, mut hbase) = load(&addr, &table, store_config, &batches);

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
    assert!(server.0.lock().unwrap().scanners.is_empty(), "no scanner left open");
}

#[test]
fn protocol_test_rows_spread_over_every_salt_in_key_order() {
    let (addr, server) = start_protocol_test_server();
    let window = WindowSpec::Tumbling { size: 10 * SEC, offset: 0 };
    let batches = generate(window, 42, 80);
    let store_config = StoreConfig::default();
    let (_dir, embedded, mut hbase) = load(&addr, "spread", store_config, &batches);
    let s = server.0.lock().unwrap();
    let rows = &s.tables[b"spread".as_slice()].rows;
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
    }
    // The mutations were batched: 37 rows per mutateRows call.
    let chunks = |n: usize| n.div_ceil(37) as u64;
    let want: u64 = batches.iter().map(|b| chunks(b.raw.len()) + chunks(b.dead_letters.len())).sum();
    assert_eq!(s.calls["mutateRows"], want);
    let (before, n) = (s.calls["mutateRows"], rows.len());
    drop(s);
    // Re-writing everything in one call: ⌈n / 37⌉ mutateRows, nothing changes (idempotent).
    hbase.write_raw(&all).unwrap();
    let s = server.0.lock().unwrap();
    assert_eq!(s.calls["mutateRows"] - before, chunks(all.len()));
    assert_eq!(s.tables[b"spread".as_slice()].rows.len(), n);
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
        dimension: meshmon_aggregator::engine::Dimension::Fleet,
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
    server.0.lock().unwrap().faults.insert("mutateRows", "RegionTooBusyException: too busy".to_owned());
    let err = hbase.write_raw(&rows).unwrap_err();
    assert!(matches!(&err, HbaseError::Server { op: "mutateRows", .. }), "{err:?}");
    assert!(err.to_string().contains("RegionTooBusyException: too busy"), "{err}");
    hbase.write_raw(&rows).unwrap();
    let page = hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap();
    assert!(!page.records.is_empty());

    // A failing scannerGetList: an error, and the scanners are still closed.
    server.0.lock().unwrap().faults.insert("scannerGetList", "OutOfOrderScannerNextException".to_owned());
    let err = hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap_err();
    assert!(matches!(&err, HbaseError::Server { op: "scannerGetList", .. }), "{err:?}");
    assert!(server.0.lock().unwrap().scanners.is_empty(), "scanners closed after the error");
    assert_eq!(hbase.drill_down(&fleet_query("cpu"), 100_000, None).unwrap(), page, "works again");

    // A corrupt stored value is an error, not a panic.
    {
        let mut s = server.0.lock().unwrap();
        let table = s.tables.get_mut(b"errors".as_slice()).unwrap();
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
    assert!(server.0.lock().unwrap().calls.keys().all(|c| {
        ["getTableNames", "createTable", "mutateRows", "scannerOpenWithStop", "scannerGetList", "scannerClose"]
            .contains(c)
    }));
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
                .send(DrillDownQuery { query: q.clone(), page_size: 7, page_token: token.clone() })
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

//! A Thrift1 protocol-test server for the HBase raw store: HBase's Thrift1 `Hbase` service,
//! built from the `hbase-thrift` crate's generated `HbaseSyncProcessor`, over an in-memory
//! sorted map. **It is not HBase** and tests using it are protocol tests, never HBase tests.
//!
//! Role: [`ThriftServer::start`] serves the Thrift1 binary protocol with buffered transport
//! (the HBase Thrift server's defaults) on 127.0.0.1, a port chosen by the OS, one thread per
//! connection; [`ThriftServer::stop`] (or dropping it) closes the listener and every
//! connection, and [`ThriftServer::start_on`] starts it again on the same address over the
//! same state — an outage a client must ride out. [`MemHbase`] is the state the test
//! inspects and into which it injects one-shot faults ([`Fault`]): a table is a
//! `BTreeMap` of rows, a row a `BTreeMap` of columns; scans share a read lock, so parallel
//! scanners are served in parallel. It implements what the store calls —
//! `getTableNames`, `createTable`, `getColumnDescriptors`, `getRowWithColumns`, `mutateRows`,
//! `scannerOpenWithStop`, `scannerGetList`, `scannerClose` — and answers every other call with
//! an `IOError`. Not modelled: regions and splits, cell timestamps and versions, TTLs, server
//! limits, and the failure modes of a real cluster. Used by
//! `aggregator/tests/hbase_protocol.rs`, `tests/tests/hbase_e2e.rs` and the drill-down
//! benchmark `aggregator/examples/hbase_drilldown.rs`. Touches loopback sockets and threads
//! only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hbase_thrift::hbase::{
    AlreadyExists, BatchMutation, Bytes, ColumnDescriptor, HbaseSyncHandler, HbaseSyncProcessor, IOError,
    IllegalArgument, Mutation, ScannerID, TAccessControlEntity, TAppend, TCell, TIncrement, TRegionInfo, TRowResult,
    TScan, TThriftServerType, Text,
};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel};

/// One row: column (`family:qualifier`) → value.
pub type Row = BTreeMap<Vec<u8>, Vec<u8>>;

/// One table: its column families (name without `:` → descriptor as created) and its rows in
/// key order.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Column families by name.
    pub families: BTreeMap<Vec<u8>, ColumnDescriptor>,
    /// Rows by key.
    pub rows: BTreeMap<Vec<u8>, Row>,
}

/// An open scanner.
#[derive(Debug, Clone)]
pub struct Scanner {
    table: Vec<u8>,
    next: Vec<u8>,
    stop: Vec<u8>,
    columns: Vec<Vec<u8>>,
}

/// A fault injected into the next call(s) of one Thrift1 function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with an HBase `IOError` carrying this message and retry hint.
    IoError {
        /// The message (HBase puts the Java exception text here).
        message: String,
        /// `IOError.canRetry`.
        can_retry: bool,
    },
    /// Wait this long before serving the call (a client with a shorter timeout gives up).
    Stall(Duration),
}

/// The tables: name → table. Readers (scans) share the lock; writers take it alone.
pub type Tables = BTreeMap<Vec<u8>, Table>;

/// Bookkeeping besides the tables: scanners, faults, call counts.
#[derive(Debug, Default)]
struct Meta {
    scanners: HashMap<ScannerID, Scanner>,
    next_scanner: ScannerID,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    calls: BTreeMap<&'static str, u64>,
}

/// The in-memory "HBase" behind the server, shared with the test (to inspect rows and inject
/// faults). Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct MemHbase {
    tables: Arc<RwLock<Tables>>,
    meta: Arc<Mutex<Meta>>,
}

fn io_error<T>(message: impl Into<String>) -> thrift::Result<T> {
    Err(IOError::new(message.into(), false).into())
}

fn unsupported<T>(op: &str) -> thrift::Result<T> {
    io_error(format!("{op} is not implemented by the protocol test server"))
}

fn family_of(column: &[u8]) -> &[u8] {
    column.split(|&b| b == b':').next().unwrap_or_default()
}

fn missing_table(name: &[u8]) -> String {
    format!("org.apache.hadoop.hbase.TableNotFoundException: {}", String::from_utf8_lossy(name))
}

impl MemHbase {
    /// The tables, for reading (a poisoned lock is taken over: a panicking test thread must
    /// not hide the state from the others).
    pub fn tables(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tables, for changing (e.g. to corrupt a stored value).
    pub fn tables_mut(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next call of `op` (e.g. `"mutateRows"`) meet `fault`; several injections for
    /// the same call are used one per call, in order.
    pub fn inject(&self, op: &'static str, fault: Fault) {
        self.meta().faults.entry(op).or_default().push_back(fault);
    }

    /// Makes the next call of `op` fail with an `IOError`.
    pub fn fail_next(&self, op: &'static str, message: impl Into<String>, can_retry: bool) {
        self.inject(op, Fault::IoError { message: message.into(), can_retry });
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &str) -> u64 {
        self.meta().calls.get(op).copied().unwrap_or(0)
    }

    /// Every call name served so far.
    pub fn called(&self) -> Vec<&'static str> {
        self.meta().calls.keys().copied().collect()
    }

    /// Scanners opened and not closed.
    pub fn open_scanners(&self) -> usize {
        self.meta().scanners.len()
    }

    /// The rows of `table` (a copy), empty when there is no such table.
    pub fn rows(&self, table: &str) -> BTreeMap<Vec<u8>, Row> {
        self.tables().get(table.as_bytes()).map(|t| t.rows.clone()).unwrap_or_default()
    }

    /// Counts the call and applies an injected fault.
    fn enter(&self, op: &'static str) -> thrift::Result<()> {
        let fault = {
            let mut m = self.meta();
            *m.calls.entry(op).or_default() += 1;
            m.faults.get_mut(op).and_then(VecDeque::pop_front)
        };
        match fault {
            Some(Fault::IoError { message, can_retry }) => Err(IOError::new(message, can_retry).into()),
            // Stalled holding no lock: other connections go on.
            Some(Fault::Stall(d)) => {
                std::thread::sleep(d);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl HbaseSyncHandler for MemHbase {
    fn handle_get_table_names(&self) -> thrift::Result<Vec<Text>> {
        self.enter("getTableNames")?;
        Ok(self.tables().keys().cloned().collect())
    }
    fn handle_create_table(&self, table_name: Text, column_families: Vec<ColumnDescriptor>) -> thrift::Result<()> {
        self.enter("createTable")?;
        let mut tables = self.tables_mut();
        if tables.contains_key(&table_name) {
            return Err(AlreadyExists::new(String::from_utf8_lossy(&table_name).into_owned()).into());
        }
        let families = column_families
            .into_iter()
            .map(|c| (family_of(c.name.as_deref().unwrap_or_default()).to_vec(), c))
            .collect();
        tables.insert(table_name, Table { families, rows: BTreeMap::new() });
        Ok(())
    }
    fn handle_get_column_descriptors(&self, table_name: Text) -> thrift::Result<BTreeMap<Text, ColumnDescriptor>> {
        self.enter("getColumnDescriptors")?;
        let tables = self.tables();
        let Some(table) = tables.get(&table_name) else {
            return io_error(missing_table(&table_name));
        };
        Ok(table
            .families
            .iter()
            .map(|(name, c)| {
                let mut key = name.clone();
                key.push(b':');
                (key.clone(), ColumnDescriptor { name: Some(key), ..c.clone() })
            })
            .collect())
    }
    fn handle_get_row_with_columns(
        &self,
        table_name: Text,
        row: Text,
        columns: Vec<Text>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<Vec<TRowResult>> {
        self.enter("getRowWithColumns")?;
        let tables = self.tables();
        let Some(table) = tables.get(&table_name) else {
            return io_error(missing_table(&table_name));
        };
        let Some(cells) = table.rows.get(&row) else {
            return Ok(Vec::new());
        };
        let cells: BTreeMap<Text, TCell> = cells
            .iter()
            .filter(|(c, _)| columns.is_empty() || columns.contains(c))
            .map(|(c, v)| (c.clone(), TCell::new(v.clone(), 1)))
            .collect();
        Ok(if cells.is_empty() { Vec::new() } else { vec![TRowResult::new(row, cells, None)] })
    }
    fn handle_mutate_rows(
        &self,
        table_name: Text,
        row_batches: Vec<BatchMutation>,
        _attributes: BTreeMap<Text, Text>,
    ) -> thrift::Result<()> {
        self.enter("mutateRows")?;
        let mut tables = self.tables_mut();
        let Some(table) = tables.get_mut(&table_name) else {
            return io_error(missing_table(&table_name));
        };
        // Check everything first: the call applies all or nothing here (HBase gives no such
        // promise across rows; the store's writes are idempotent, so a retry is safe).
        for b in &row_batches {
            for m in b.mutations.iter().flatten() {
                let column = m.column.as_deref().unwrap_or_default();
                if !table.families.contains_key(family_of(column)) {
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
        self.enter("scannerOpenWithStop")?;
        if !self.tables().contains_key(&table_name) {
            return io_error(missing_table(&table_name));
        }
        let mut m = self.meta();
        m.next_scanner += 1;
        let id = m.next_scanner;
        m.scanners.insert(id, Scanner { table: table_name, next: start_row, stop: stop_row, columns });
        Ok(id)
    }
    fn handle_scanner_get_list(&self, id: ScannerID, nb_rows: i32) -> thrift::Result<Vec<TRowResult>> {
        self.enter("scannerGetList")?;
        let Some(sc) = self.meta().scanners.get(&id).cloned() else {
            return Err(IllegalArgument::new(format!("no scanner {id}")).into());
        };
        let wanted = |column: &[u8]| {
            sc.columns.is_empty()
                || sc.columns.iter().any(|c| {
                    c.as_slice() == column
                        || (!c.contains(&b':') || c.ends_with(b":")) && family_of(c) == family_of(column)
                })
        };
        let exact = !sc.columns.is_empty() && sc.columns.iter().all(|c| c.contains(&b':') && !c.ends_with(b":"));
        let limit = usize::try_from(nb_rows).unwrap_or(0);
        let mut out = Vec::new();
        let last: Option<Vec<u8>>;
        {
            let tables = self.tables();
            let Some(table) = tables.get(&sc.table) else {
                return io_error(missing_table(&sc.table));
            };
            let mut last_key = None;
            for (key, row) in table.rows.range(sc.next.clone()..) {
                if out.len() >= limit || (!sc.stop.is_empty() && *key >= sc.stop) {
                    break;
                }
                last_key = Some(key);
                let cell = |(c, v): (&Vec<u8>, &Vec<u8>)| (c.clone(), TCell::new(v.clone(), 1));
                let cells: BTreeMap<Text, TCell> = if exact {
                    // Only whole column names asked for: look each up.
                    sc.columns.iter().filter_map(|c| row.get_key_value(c)).map(cell).collect()
                } else {
                    row.iter().filter(|(c, _)| wanted(c)).map(cell).collect()
                };
                if !cells.is_empty() {
                    out.push(TRowResult::new(key.clone(), cells, None));
                }
            }
            last = last_key.cloned();
        }
        if let Some(mut last) = last
            && let Some(scanner) = self.meta().scanners.get_mut(&id)
        {
            last.push(0);
            scanner.next = last;
        }
        Ok(out)
    }
    fn handle_scanner_close(&self, id: ScannerID) -> thrift::Result<()> {
        self.enter("scannerClose")?;
        match self.meta().scanners.remove(&id) {
            Some(_) => Ok(()),
            None => Err(IllegalArgument::new(format!("no scanner {id}")).into()),
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

/// The Thrift1 calls [`MemHbase`] implements; every other call answers an `IOError`.
pub const IMPLEMENTED_CALLS: [&str; 8] = [
    "getTableNames",
    "createTable",
    "getColumnDescriptors",
    "getRowWithColumns",
    "mutateRows",
    "scannerOpenWithStop",
    "scannerGetList",
    "scannerClose",
];

/// A running protocol-test server (see the module documentation). Stops when dropped.
#[derive(Debug)]
pub struct ThriftServer {
    addr: SocketAddr,
    state: MemHbase,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl ThriftServer {
    /// Starts a server over an empty state on 127.0.0.1, on a port chosen by the OS.
    pub fn start() -> io::Result<ThriftServer> {
        ThriftServer::start_on(MemHbase::default(), SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a server over `state` on `addr` (port 0: any free port) — e.g. the address and
    /// state of a stopped server, to bring it back.
    pub fn start_on(state: MemHbase, addr: SocketAddr) -> io::Result<ThriftServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let processor = Arc::new(HbaseSyncProcessor::new(state.clone()));
        let acceptor = {
            let (stopping, connections) = (stopping.clone(), connections.clone());
            std::thread::Builder::new().name(format!("thrift-accept-{}", addr.port())).spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_nodelay(true);
                    if let Ok(clone) = stream.try_clone() {
                        connections.lock().unwrap_or_else(PoisonError::into_inner).push(clone);
                    }
                    let processor = processor.clone();
                    let _ = std::thread::Builder::new()
                        .name("thrift-connection".into())
                        .spawn(move || serve_connection(&*processor, stream));
                }
            })?
        };
        Ok(ThriftServer { addr, state, stopping, connections, acceptor: Some(acceptor) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its state.
    pub fn state(&self) -> &MemHbase {
        &self.state
    }

    /// Stops listening and closes every connection (clients see their connection drop and
    /// new ones refused). The state stays; [`start_on`](Self::start_on) serves it again.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else { return };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept; it sees the flag and returns, closing the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        for c in self.connections.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for ThriftServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection until the client closes it or the server stops.
fn serve_connection(processor: &dyn TProcessor, stream: TcpStream) {
    let Ok((read, write)) = TTcpChannel::with_stream(stream).split() else { return };
    let mut input = TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true);
    let mut output = TBinaryOutputProtocol::new(TBufferedWriteTransport::new(write), true);
    while processor.process(&mut input, &mut output).is_ok() {}
}

//! `HbaseRawStore`: the synchronous Thrift1 client of the HBase raw store.
//!
//! Role: one TCP connection to an HBase Thrift server (Thrift1 `Hbase` service, binary
//! protocol, buffered transport — the server's defaults), used to open the raw-record table
//! (create it if allowed, check its column family and the row-key layout recorded in it),
//! write raw records and dead letters with batched `mutateRows` (each call retried with
//! exponential backoff after transient failures), and serve drill-downs with
//! `scannerOpenWithStop` / `scannerGetList` / `scannerClose`: per bucket of the window, one scan
//! per salt (narrowed to the cluster/node slice when the dimension fixes them), the salts
//! scanned in parallel over up to `scan_parallelism` connections (scoped threads), each scan
//! filtered by `store/drilldown.rs`'s filter and stopped once it holds as many matches as the
//! page can take, then merged by the unsalted key with a heap and paged with the same tokens —
//! so a page equals the embedded store's page for the same point. `scannerGetList` replies are
//! decoded by `wire.rs` without allocating per row; every other call is the generated client's.
//! Blocking: run it on a thread of its own (see [`super::HbaseActor`]). Touches only its
//! connections and its [`HbaseMetrics`].
//!
//! A transport or protocol failure drops the connection; the next call dials again. Server
//! data is never trusted: malformed rows are errors, not panics.

use std::collections::BinaryHeap;
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hbase_thrift::hbase::{BatchMutation, ScannerID, THbaseSyncClient};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel};

use super::error::HbaseError;
use super::metrics::HbaseMetrics;
use super::schema::{
    DEAD_FAMILY, HbaseConfig, LAYOUT_ROW, dead_letter_mutation, family_descriptor, layout_mutation, raw_mutation,
};
use super::wire::Client;
use crate::store::drilldown::{Filter, Pending, decode_token, encode_token};
use crate::store::embedded::{describe_layout, encode_layout};
use crate::store::keybytes::{prefix_end, put_str};
use crate::store::{DeadLetter, DrillDown, MAX_PAGE_SIZE, RawPage, RawWrite};

/// The matching rows of the slices one scan thread read: (slice index, rows in key order).
type Scanned = Vec<(usize, Vec<Pending>)>;

/// Most times a drill-down is repeated after a transient failure (it holds up a reader).
const READ_RETRIES: u32 = 2;

/// The HBase raw store. See the module documentation.
pub struct HbaseRawStore {
    addr: String,
    config: HbaseConfig,
    /// The connection of every call.
    conn: Conn,
    /// More connections, dialled as drill-downs scan in parallel (`scan_parallelism - 1`).
    scan_conns: Vec<Conn>,
    metrics: Arc<HbaseMetrics>,
    /// `config.value_column()`, kept to compare scanned cells without allocating.
    value_column: Vec<u8>,
}

/// What [`HbaseRawStore::open_table`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableReport {
    /// The table did not exist and was created.
    pub created: bool,
    /// The table had no layout row; it was written now.
    pub layout_recorded: bool,
}

impl fmt::Debug for HbaseRawStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HbaseRawStore")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .field("connected", &self.conn.client.is_some())
            .field("scan_connections", &self.scan_conns.iter().filter(|c| c.client.is_some()).count())
            .finish()
    }
}

/// One salt's key range of one bucket.
#[derive(Debug)]
struct Slice {
    start: Vec<u8>,
    /// Exclusive; empty = to the end of the table (HBase's convention).
    stop: Vec<u8>,
}

fn dial(addr: &str, config: &HbaseConfig) -> Result<Client, HbaseError> {
    let fail = |source| HbaseError::Connect { addr: addr.to_owned(), source };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
    let mut stream = None;
    for sa in addr.to_socket_addrs().map_err(fail)? {
        match TcpStream::connect_timeout(&sa, config.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or_else(|| fail(last))?;
    stream.set_read_timeout(Some(config.timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(config.timeout)).map_err(fail)?;
    stream.set_nodelay(true).map_err(fail)?;
    let (read, write) = TTcpChannel::with_stream(stream).split().map_err(|e| HbaseError::call("connect", e))?;
    Ok(Client::new(
        TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(write), true),
    ))
}

impl HbaseRawStore {
    /// Connects to the Thrift1 server at `addr` (`host:port`; HBase's default port is 9090).
    pub fn connect(addr: impl Into<String>, config: HbaseConfig) -> Result<HbaseRawStore, HbaseError> {
        let mut store = HbaseRawStore::lazy(addr, config)?;
        store.conn.client = Some(dial(&store.addr, &store.config)?);
        Ok(store)
    }

    /// A store that dials on its first call (and again after a broken connection).
    pub fn lazy(addr: impl Into<String>, config: HbaseConfig) -> Result<HbaseRawStore, HbaseError> {
        config.validate()?;
        let value_column = config.value_column();
        Ok(HbaseRawStore {
            addr: addr.into(),
            config,
            conn: Conn::default(),
            scan_conns: Vec::new(),
            metrics: Arc::default(),
            value_column,
        })
    }

    /// This store counting into `metrics` (shared by the connections of one aggregator).
    pub fn with_metrics(mut self, metrics: Arc<HbaseMetrics>) -> HbaseRawStore {
        self.metrics = metrics;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &HbaseConfig {
        &self.config
    }

    /// The metrics it counts into.
    pub fn metrics(&self) -> &Arc<HbaseMetrics> {
        &self.metrics
    }

    /// Runs one Thrift call on the main connection (see [`Conn::call`]).
    fn call<T>(&mut self, op: &'static str, f: impl FnOnce(&mut Client) -> thrift::Result<T>) -> Result<T, HbaseError> {
        self.conn.call(&self.addr, &self.config, op, f)
    }

    /// Opens the raw-record table for use: creates it when missing (only if `create`), checks
    /// that it has the column family, and checks the row-key layout recorded in its layout row
    /// against the configured one — recording it when the table has none yet. Every problem is
    /// an [`HbaseError::Table`] saying what to do.
    pub fn open_table(&mut self, create: bool) -> Result<TableReport, HbaseError> {
        let table = self.config.table.clone();
        let family = self.config.family.clone();
        let table_error = |why: String| HbaseError::Table { table: table.clone(), why };
        let existing = self.call("getTableNames", |c| c.get_table_names())?;
        let mut report = TableReport { created: false, layout_recorded: false };
        if !existing.iter().any(|t| t.as_slice() == table.as_bytes()) {
            if !create {
                return Err(table_error(format!(
                    "does not exist on the Thrift server at {}; create it (HBase shell: create '{table}', \
                     {{NAME => '{family}', VERSIONS => 1}}) or set store.hbase.create_table = true",
                    self.addr
                )));
            }
            report.created = self.create_one(&table, family.as_bytes())?;
        }
        let families = self.call("getColumnDescriptors", |c| c.get_column_descriptors(table.as_bytes().to_vec()))?;
        let names: Vec<String> = families
            .keys()
            .map(|k| String::from_utf8_lossy(k.split(|&b| b == b':').next().unwrap_or_default()).into_owned())
            .collect();
        if !names.contains(&family) {
            return Err(table_error(format!(
                "has no column family '{family}' (it has {names:?}); add it (HBase shell: alter '{table}', \
                 {{NAME => '{family}', VERSIONS => 1}}) or set store.hbase.column_family"
            )));
        }
        let column = self.config.layout_column();
        let rows = self.call("getRowWithColumns", |c| {
            c.get_row_with_columns(
                table.as_bytes().to_vec(),
                LAYOUT_ROW.to_vec(),
                vec![column.clone()],
                Default::default(),
            )
        })?;
        let stored = rows
            .into_iter()
            .filter(|r| r.row.as_deref() == Some(LAYOUT_ROW))
            .find_map(|r| r.columns.and_then(|mut cols| cols.remove(&column)).and_then(|cell| cell.value));
        let want = encode_layout(&self.config.layout);
        match stored {
            None => {
                let put = layout_mutation(&column, want);
                self.mutate_with_retry(1, || vec![put.clone()], table.as_bytes())?;
                report.layout_recorded = true;
            }
            Some(s) if s == want => {}
            Some(s) => {
                return Err(table_error(format!(
                    "was written with {}, but is opened with {}; the row-key layout (store.bucket_size, \
                     store.salt_buckets) cannot change for a table holding data",
                    describe_layout(&s),
                    describe_layout(&want)
                )));
            }
        }
        Ok(report)
    }

    /// Creates `table` with `family`; false when someone else created it in between.
    fn create_one(&mut self, table: &str, family: &[u8]) -> Result<bool, HbaseError> {
        let name = table.as_bytes().to_vec();
        let ttl = if family == DEAD_FAMILY { None } else { self.config.ttl };
        match self.call("createTable", |c| c.create_table(name, vec![family_descriptor(family, ttl)])) {
            Ok(()) => {
                tracing::info!(table, family = %String::from_utf8_lossy(family), "created HBase table");
                Ok(true)
            }
            // Someone else created it in between.
            Err(e @ HbaseError::Server { .. }) => {
                let now = self.call("getTableNames", |c| c.get_table_names())?;
                if now.iter().any(|t| t.as_slice() == table.as_bytes()) { Ok(false) } else { Err(e) }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the raw-record and dead-letter tables unless they exist (no checks beyond
    /// existence; [`open_table`](Self::open_table) checks). Returns the tables it created.
    pub fn create_table_if_missing(&mut self) -> Result<Vec<String>, HbaseError> {
        let existing = self.call("getTableNames", |c| c.get_table_names())?;
        let mut created = Vec::new();
        let wanted = [
            (self.config.table.clone(), self.config.family.as_bytes().to_vec()),
            (self.config.dead_letter_table.clone(), DEAD_FAMILY.to_vec()),
        ];
        for (table, family) in wanted {
            if existing.iter().any(|t| t.as_slice() == table.as_bytes()) {
                continue;
            }
            if self.create_one(&table, &family)? {
                created.push(table);
            }
        }
        Ok(created)
    }

    /// One `mutateRows` call of `rows` rows (built by `build`, again for each attempt), retried
    /// with exponential backoff while it fails transiently, at most `config.retries` times.
    fn mutate_with_retry(
        &mut self,
        rows: usize,
        build: impl Fn() -> Vec<BatchMutation>,
        table: &[u8],
    ) -> Result<(), HbaseError> {
        let mut attempt: u32 = 0;
        let mut backoff = self.config.retry_backoff;
        loop {
            let (batch, table) = (build(), table.to_vec());
            let started = Instant::now();
            match self.call("mutateRows", |c| c.mutate_rows(table, batch, Default::default())) {
                Ok(()) => {
                    self.metrics.record_write(rows, started.elapsed());
                    if attempt > 0 {
                        tracing::info!(attempts = attempt + 1, rows, "HBase write succeeded after retries");
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                    if !e.is_transient() {
                        self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    if attempt >= self.config.retries {
                        self.metrics.write_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(HbaseError::Exhausted {
                            op: "mutateRows",
                            attempts: attempt + 1,
                            last: Box::new(e),
                        });
                    }
                    attempt += 1;
                    self.metrics.write_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, retry_in = ?backoff, rows, "HBase write failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2).min(self.config.retry_backoff_max);
                }
            }
        }
    }

    /// Writes raw records under their row keys, `write_batch_rows` per `mutateRows` call, each
    /// call retried after transient failures. Idempotent: a record written again gets the same
    /// key and bytes, so a retried call that had partly succeeded changes nothing.
    pub fn write_raw(&mut self, rows: &[RawWrite]) -> Result<(), HbaseError> {
        let table = self.config.table.as_bytes().to_vec();
        let (layout, column) = (self.config.layout, self.value_column.clone());
        for chunk in rows.chunks(self.config.write_batch_rows) {
            let build = || chunk.iter().map(|w| raw_mutation(&layout, &column, w)).collect();
            self.mutate_with_retry(chunk.len(), build, &table)?;
        }
        Ok(())
    }

    /// Writes dead letters to the dead-letter table, `write_batch_rows` per `mutateRows` call.
    pub fn write_dead_letters(&mut self, dead: &[DeadLetter]) -> Result<(), HbaseError> {
        let table = self.config.dead_letter_table.as_bytes().to_vec();
        for chunk in dead.chunks(self.config.write_batch_rows) {
            self.mutate_with_retry(chunk.len(), || chunk.iter().map(dead_letter_mutation).collect(), &table)?;
        }
        Ok(())
    }

    /// One page (at most `page_size` records, at most [`MAX_PAGE_SIZE`]) of exactly the raw
    /// records behind an aggregate point; pass the previous page's `next_page_token` to
    /// continue. Same records, order and tokens as [`crate::store::EmbeddedStore::drill_down`].
    /// A transient failure (connection lost or refused, timeout) repeats the page at most
    /// twice before it is returned.
    pub fn drill_down(
        &mut self,
        query: &DrillDown,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<RawPage, HbaseError> {
        self.drill_down_in(query, page_size, page_token, None)
    }

    /// [`drill_down`](Self::drill_down) for a point whose dimension names a node but not its
    /// cluster, given every cluster the node reported the metric under (the embedded store's
    /// `node_clusters` listing): only those (cluster, node) key ranges are scanned instead of
    /// every salt's whole bucket. `None` (or a dimension that fixes the cluster, or none)
    /// scans as `drill_down` does. Same answer either way, when the list is complete.
    pub fn drill_down_in(
        &mut self,
        query: &DrillDown,
        page_size: usize,
        page_token: Option<&str>,
        node_clusters: Option<&[String]>,
    ) -> Result<RawPage, HbaseError> {
        let started = Instant::now();
        let (mut attempt, mut backoff) = (0, self.config.retry_backoff);
        let result = loop {
            match self.drill_down_once(query, page_size, page_token, node_clusters) {
                Err(e) if e.is_transient() && attempt < self.config.retries.min(READ_RETRIES) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "HBase drill-down failed; retrying");
                    std::thread::sleep(backoff.min(Duration::from_secs(1)));
                    backoff = backoff.saturating_mul(2);
                }
                result => break result,
            }
        };
        self.metrics.record_drill_down(result.is_ok(), started.elapsed());
        result
    }

    fn drill_down_once(
        &mut self,
        query: &DrillDown,
        page_size: usize,
        page_token: Option<&str>,
        node_clusters: Option<&[String]>,
    ) -> Result<RawPage, HbaseError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let resume = page_token.map(|t| decode_token(t, query)).transpose()?;
        let filter = Filter::new(query);
        if filter.matches_nothing() {
            return Ok(RawPage { records: Vec::new(), next_page_token: None });
        }
        let layout = self.config.layout;
        let (cluster, node) = filter.cluster_node();
        // The (salt, bytes after the bucket) every matching row starts with. A node without
        // its cluster cannot name a salt (the salt hashes both): with the node's clusters
        // known, one slice per cluster; else every salt, and the filter picks the node's rows
        // — the result and order are the same.
        let one = |c: &str, n: &str| {
            let mut after_bucket = Vec::new();
            put_str(&mut after_bucket, c);
            put_str(&mut after_bucket, n);
            (layout.salt(&query.metric, c, n), after_bucket)
        };
        let every_salt = |after_bucket: Vec<u8>| -> Vec<(u8, Vec<u8>)> {
            (0..layout.salt_buckets()).map(|salt| (salt, after_bucket.clone())).collect()
        };
        let sources: Vec<(u8, Vec<u8>)> = match (cluster, node, node_clusters) {
            (Some(c), Some(n), _) => vec![one(c, n)],
            (Some(c), None, _) => {
                let mut after_bucket = Vec::new();
                put_str(&mut after_bucket, c);
                every_salt(after_bucket)
            }
            (None, Some(n), Some(clusters)) => clusters.iter().map(|c| one(c, n)).collect(),
            _ => every_salt(Vec::new()),
        };
        let mut out: Vec<Pending> = Vec::new();
        for bucket in layout.buckets(query.window.start, query.window.end) {
            if resume.as_ref().is_some_and(|(_, b)| bucket < *b) {
                continue;
            }
            let after = resume.as_ref().filter(|(_, b)| *b == bucket).map(|(k, _)| k.as_slice());
            let slices = sources.iter().filter_map(|(salt, after_bucket)| {
                let salt = *salt;
                let mut start = layout.bucket_prefix(salt, &query.metric, bucket);
                start.extend_from_slice(after_bucket);
                let stop = prefix_end(&start).unwrap_or_default();
                if let Some(after) = after {
                    let mut resume_key = Vec::with_capacity(after.len() + 2);
                    resume_key.push(salt);
                    resume_key.extend_from_slice(after);
                    if !stop.is_empty() && resume_key >= stop {
                        return None;
                    }
                    if resume_key >= start {
                        // Strictly after the resume key: its smallest successor.
                        resume_key.push(0);
                        start = resume_key;
                    }
                }
                Some(Slice { start, stop })
            });
            let slices: Vec<Slice> = slices.collect();
            let first_fetch = (page_size + 1).min(self.config.scan_batch_rows);
            if self.merge_bucket(slices, first_fetch, &filter, page_size, &mut out)? {
                break;
            }
        }
        let next_page_token = if out.len() > page_size {
            out.truncate(page_size);
            out.last().map(|p| encode_token(&p.unsalted))
        } else {
            None
        };
        Ok(RawPage { records: out.into_iter().map(|p| p.view).collect(), next_page_token })
    }

    /// Scans the slices of one bucket — in parallel over up to `scan_parallelism` connections —
    /// and merges their matching rows into `out` in unsalted-key order until `out` holds more
    /// than `page_size`; true when it does. Every scanner opened is closed, also on error.
    fn merge_bucket(
        &mut self,
        slices: Vec<Slice>,
        first_fetch: usize,
        filter: &Filter,
        page_size: usize,
        out: &mut Vec<Pending>,
    ) -> Result<bool, HbaseError> {
        let need = page_size + 1 - out.len().min(page_size);
        let workers = self.config.scan_parallelism.clamp(1, slices.len().max(1));
        while self.scan_conns.len() + 1 < workers {
            self.scan_conns.push(Conn::default());
        }
        let ctx = ScanCtx {
            addr: &self.addr,
            config: &self.config,
            table: self.config.table.as_bytes(),
            column: &self.value_column,
            filter,
            need,
            first_fetch,
        };
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let work = |conn: &mut Conn| -> Result<Scanned, HbaseError> {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slice) = slices.get(i) else { break };
                match scan_slice(conn, &ctx, slice, i) {
                    Ok(rows) => done.push((i, rows)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(done)
        };
        let (first, rest) = (&mut self.conn, &mut self.scan_conns[..workers - 1]);
        let results: Vec<Result<Scanned, HbaseError>> = if workers == 1 {
            vec![work(first)]
        } else {
            std::thread::scope(|scope| {
                let helpers: Vec<_> = rest.iter_mut().map(|conn| scope.spawn(|| work(conn))).collect();
                let mut results = vec![work(first)];
                for h in helpers {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(HbaseError::Malformed { op: "scan", why: "a scan thread panicked".to_owned() })
                    }));
                }
                results
            })
        };
        let mut per_slice: Vec<std::vec::IntoIter<Pending>> = Vec::new();
        for r in results {
            for (_, rows) in r? {
                per_slice.push(rows.into_iter());
            }
        }
        // k-way merge by unsalted key (the heap pops the smallest).
        let mut heap = BinaryHeap::with_capacity(per_slice.len());
        for (i, it) in per_slice.iter_mut().enumerate() {
            if let Some(mut p) = it.next() {
                p.source = i;
                heap.push(p);
            }
        }
        while let Some(p) = heap.pop() {
            let i = p.source;
            out.push(p);
            if out.len() > page_size {
                return Ok(true);
            }
            if let Some(mut next) = per_slice.get_mut(i).and_then(Iterator::next) {
                next.source = i;
                heap.push(next);
            }
        }
        Ok(false)
    }
}

/// One Thrift connection, dialled on first use and dropped when a call leaves it unusable.
#[derive(Default)]
struct Conn {
    client: Option<Client>,
}

impl Conn {
    /// Runs one Thrift call, dialling first if needed; drops the connection when the call
    /// leaves it unusable.
    fn call<T>(
        &mut self,
        addr: &str,
        config: &HbaseConfig,
        op: &'static str,
        f: impl FnOnce(&mut Client) -> thrift::Result<T>,
    ) -> Result<T, HbaseError> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self.client.insert(dial(addr, config)?),
        };
        f(client).map_err(|e| {
            let e = HbaseError::call(op, e);
            if e.breaks_connection() {
                self.client = None;
            }
            e
        })
    }
}

/// What every slice scan of one bucket shares.
struct ScanCtx<'a> {
    addr: &'a str,
    config: &'a HbaseConfig,
    table: &'a [u8],
    column: &'a [u8],
    filter: &'a Filter,
    /// Most matching rows any one slice can contribute to the page.
    need: usize,
    first_fetch: usize,
}

/// The matching rows of one slice in key order, at most `ctx.need`: opens a scanner, fetches
/// (`first_fetch` rows, doubling up to `scan_batch_rows`), closes it — also after an error,
/// unless the connection broke (the server drops its scanners with it).
fn scan_slice(conn: &mut Conn, ctx: &ScanCtx<'_>, slice: &Slice, source: usize) -> Result<Vec<Pending>, HbaseError> {
    let (table, start, stop) = (ctx.table.to_vec(), slice.start.clone(), slice.stop.clone());
    let column = ctx.column.to_vec();
    let id = conn.call(ctx.addr, ctx.config, "scannerOpenWithStop", |c| {
        c.scanner_open_with_stop(table, start, stop, vec![column], Default::default())
    })?;
    let result = fetch_slice(conn, ctx, slice, id, source);
    if conn.client.is_none() {
        return result;
    }
    let closed = conn.call(ctx.addr, ctx.config, "scannerClose", |c| c.scanner_close(id));
    match (result, closed) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(rows), Ok(())) => Ok(rows),
    }
}

fn fetch_slice(
    conn: &mut Conn,
    ctx: &ScanCtx<'_>,
    slice: &Slice,
    id: ScannerID,
    source: usize,
) -> Result<Vec<Pending>, HbaseError> {
    let mut out = Vec::new();
    let mut fetch = ctx.first_fetch;
    let mut last_row: Vec<u8> = Vec::new();
    let mut first_row = true;
    loop {
        let n = i32::try_from(fetch).unwrap_or(i32::MAX);
        // Rows are checked and filtered as they are decoded; after a problem, or once the slice
        // holds enough matches, the rest of the reply is read and ignored.
        let mut problem: Option<HbaseError> = None;
        let mut full = false;
        let mut each = |key: Option<&[u8]>, value: Option<&[u8]>| {
            if problem.is_some() || full {
                return;
            }
            let checked = check_row(slice, &last_row, first_row, key, value, ctx.column);
            let (key, value) = match checked {
                Ok(kv) => kv,
                Err(e) => {
                    problem = Some(e);
                    return;
                }
            };
            last_row.clear();
            last_row.extend_from_slice(key);
            first_row = false;
            match ctx.filter.accept(key, value) {
                Ok(Some((unsalted, view))) => {
                    out.push(Pending { unsalted, source, view });
                    full = out.len() >= ctx.need;
                }
                Ok(None) => {}
                Err(e) => problem = Some(e.into()),
            }
        };
        let rows = conn
            .call(ctx.addr, ctx.config, "scannerGetList", |c| c.scanner_get_list_each(id, n, ctx.column, &mut each))?;
        if let Some(e) = problem {
            if e.breaks_connection() {
                conn.client = None;
            }
            return Err(e);
        }
        if rows > fetch {
            conn.client = None;
            return Err(malformed(format!("asked for {fetch} rows, got {rows}")));
        }
        if rows == 0 || full {
            return Ok(out);
        }
        fetch = fetch.saturating_mul(2).min(ctx.config.scan_batch_rows);
    }
}

fn malformed(why: String) -> HbaseError {
    HbaseError::Malformed { op: "scannerGetList", why }
}

/// The key and value-column (`<family>:v`) bytes of a scanned row, checked against the scan:
/// a key inside the slice, strictly ascending after `last_row` (unless it is the first), and a
/// value.
fn check_row<'r>(
    slice: &Slice,
    last_row: &[u8],
    first_row: bool,
    key: Option<&'r [u8]>,
    value: Option<&'r [u8]>,
    column: &[u8],
) -> Result<(&'r [u8], &'r [u8]), HbaseError> {
    let key = key.ok_or_else(|| malformed("a row without a key".to_owned()))?;
    let in_slice = key >= slice.start.as_slice() && (slice.stop.is_empty() || key < slice.stop.as_slice());
    if !in_slice || (!first_row && key <= last_row) {
        return Err(malformed(format!("row {key:02x?} is out of order or outside the scanned range")));
    }
    let value =
        value.ok_or_else(|| malformed(format!("row {key:02x?} has no {} cell", String::from_utf8_lossy(column))))?;
    Ok((key, value))
}

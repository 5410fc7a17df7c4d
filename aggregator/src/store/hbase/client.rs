//! `HbaseRawStore`: the synchronous Thrift1 client of the HBase raw store.
//!
//! Role: one TCP connection to an HBase Thrift server (Thrift1 `Hbase` service, binary
//! protocol, buffered transport — the server's defaults), used to create the tables, write raw
//! records and dead letters with batched `mutateRows`, and serve drill-downs with
//! `scannerOpenWithStop` / `scannerGetList` / `scannerClose`: per bucket of the window, one scan
//! per salt (narrowed to the cluster/node slice when the dimension fixes them), merged by the
//! unsalted key with a heap, filtered by `store/drilldown.rs`'s filter, paged with its tokens —
//! so a page equals the embedded store's page for the same point. Blocking: run it on a
//! thread of its own (see [`super::HbaseActor`]). Touches only its connection.
//!
//! A transport or protocol failure drops the connection; the next call dials again. Server
//! data is never trusted: malformed rows are errors, not panics.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};

use hbase_thrift::hbase::{HbaseSyncClient, ScannerID, THbaseSyncClient, TRowResult};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    ReadHalf, TBufferedReadTransport, TBufferedWriteTransport, TIoChannel, TTcpChannel, WriteHalf,
};

use super::error::HbaseError;
use super::schema::{
    DEAD_FAMILY, HbaseConfig, RAW_COLUMN, RAW_FAMILY, dead_letter_mutation, family_descriptor, raw_mutation,
};
use crate::store::drilldown::{Filter, Pending, decode_token, encode_token};
use crate::store::keybytes::{prefix_end, put_str};
use crate::store::{DeadLetter, DrillDown, MAX_PAGE_SIZE, RawPage, RawWrite};

type Input = TBinaryInputProtocol<TBufferedReadTransport<ReadHalf<TTcpChannel>>>;
type Output = TBinaryOutputProtocol<TBufferedWriteTransport<WriteHalf<TTcpChannel>>>;
type Client = HbaseSyncClient<Input, Output>;

/// The HBase raw store. See the module documentation.
pub struct HbaseRawStore {
    addr: String,
    config: HbaseConfig,
    client: Option<Client>,
}

impl fmt::Debug for HbaseRawStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HbaseRawStore")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .field("connected", &self.client.is_some())
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

/// An open scanner and the rows it returned but the merge has not consumed.
#[derive(Debug)]
struct Cursor {
    id: ScannerID,
    slice: Slice,
    buffered: VecDeque<TRowResult>,
    last_row: Option<Vec<u8>>,
    exhausted: bool,
    fetch: usize,
}

fn dial(addr: &str, config: &HbaseConfig) -> Result<Client, HbaseError> {
    let fail = |source| HbaseError::Connect { addr: addr.to_owned(), source };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
    let mut stream = None;
    for sa in addr.to_socket_addrs().map_err(fail)? {
        match TcpStream::connect_timeout(&sa, config.timeout) {
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
    Ok(HbaseSyncClient::new(
        TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true),
        TBinaryOutputProtocol::new(TBufferedWriteTransport::new(write), true),
    ))
}

impl HbaseRawStore {
    /// Connects to the Thrift1 server at `addr` (`host:port`; HBase's default port is 9090).
    pub fn connect(addr: impl Into<String>, config: HbaseConfig) -> Result<HbaseRawStore, HbaseError> {
        let mut store = HbaseRawStore::lazy(addr, config)?;
        store.client = Some(dial(&store.addr, &store.config)?);
        Ok(store)
    }

    /// A store that dials on its first call (and again after a broken connection).
    pub fn lazy(addr: impl Into<String>, config: HbaseConfig) -> Result<HbaseRawStore, HbaseError> {
        config.validate()?;
        Ok(HbaseRawStore { addr: addr.into(), config, client: None })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HbaseConfig {
        &self.config
    }

    /// Runs one Thrift call, dialling first if needed; drops the connection when the call
    /// leaves it unusable.
    fn call<T>(&mut self, op: &'static str, f: impl FnOnce(&mut Client) -> thrift::Result<T>) -> Result<T, HbaseError> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self.client.insert(dial(&self.addr, &self.config)?),
        };
        f(client).map_err(|e| {
            let e = HbaseError::call(op, e);
            if e.breaks_connection() {
                self.client = None;
            }
            e
        })
    }

    /// Creates the raw-record and dead-letter tables unless they exist. Returns the tables it
    /// created.
    pub fn create_table_if_missing(&mut self) -> Result<Vec<String>, HbaseError> {
        let existing = self.call("getTableNames", |c| c.get_table_names())?;
        let mut created = Vec::new();
        let wanted = [(self.config.table.clone(), RAW_FAMILY), (self.config.dead_letter_table.clone(), DEAD_FAMILY)];
        for (table, family) in wanted {
            if existing.iter().any(|t| t.as_slice() == table.as_bytes()) {
                continue;
            }
            let name = table.as_bytes().to_vec();
            match self.call("createTable", |c| c.create_table(name, vec![family_descriptor(family)])) {
                Ok(()) => created.push(table),
                // Someone else created it in between.
                Err(e @ HbaseError::Server { .. }) => {
                    let now = self.call("getTableNames", |c| c.get_table_names())?;
                    if !now.iter().any(|t| t.as_slice() == table.as_bytes()) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    /// Writes raw records under their row keys, `write_batch_rows` per `mutateRows` call.
    /// Idempotent: a record written again gets the same key and bytes.
    pub fn write_raw(&mut self, rows: &[RawWrite]) -> Result<(), HbaseError> {
        let table = self.config.table.as_bytes().to_vec();
        let layout = self.config.layout;
        for chunk in rows.chunks(self.config.write_batch_rows) {
            let batch = chunk.iter().map(|w| raw_mutation(&layout, w)).collect();
            let table = table.clone();
            self.call("mutateRows", |c| c.mutate_rows(table, batch, Default::default()))?;
        }
        Ok(())
    }

    /// Writes dead letters to the dead-letter table, `write_batch_rows` per `mutateRows` call.
    pub fn write_dead_letters(&mut self, dead: &[DeadLetter]) -> Result<(), HbaseError> {
        let table = self.config.dead_letter_table.as_bytes().to_vec();
        for chunk in dead.chunks(self.config.write_batch_rows) {
            let batch = chunk.iter().map(dead_letter_mutation).collect();
            let table = table.clone();
            self.call("mutateRows", |c| c.mutate_rows(table, batch, Default::default()))?;
        }
        Ok(())
    }

    /// One page (at most `page_size` records, at most [`MAX_PAGE_SIZE`]) of exactly the raw
    /// records behind an aggregate point; pass the previous page's `next_page_token` to
    /// continue. Same records, order and tokens as [`crate::store::EmbeddedStore::drill_down`].
    pub fn drill_down(
        &mut self,
        query: &DrillDown,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<RawPage, HbaseError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let resume = page_token.map(|t| decode_token(t, query)).transpose()?;
        let filter = Filter::new(query);
        if filter.matches_nothing() {
            return Ok(RawPage { records: Vec::new(), next_page_token: None });
        }
        let layout = self.config.layout;
        let (cluster, node) = filter.cluster_node();
        // The bytes after the bucket every matching row starts with, and the salts to scan. A
        // node without its cluster cannot name a salt (the salt hashes both): scan every salt
        // and let the filter pick the node's rows — the result and order are the same.
        let mut after_bucket = Vec::new();
        let salts: Vec<u8> = match (cluster, node) {
            (Some(c), Some(n)) => {
                put_str(&mut after_bucket, c);
                put_str(&mut after_bucket, n);
                vec![layout.salt(&query.metric, c, n)]
            }
            (Some(c), None) => {
                put_str(&mut after_bucket, c);
                (0..layout.salt_buckets()).collect()
            }
            _ => (0..layout.salt_buckets()).collect(),
        };
        let mut out: Vec<Pending> = Vec::new();
        for bucket in layout.buckets(query.window.start, query.window.end) {
            if resume.as_ref().is_some_and(|(_, b)| bucket < *b) {
                continue;
            }
            let after = resume.as_ref().filter(|(_, b)| *b == bucket).map(|(k, _)| k.as_slice());
            let slices = salts.iter().filter_map(|&salt| {
                let mut start = layout.bucket_prefix(salt, &query.metric, bucket);
                start.extend_from_slice(&after_bucket);
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

    /// Scans the slices of one bucket, merging their matching rows into `out` in unsalted-key
    /// order until `out` holds more than `page_size`; true when it does. Closes every scanner
    /// it opened, also on error.
    fn merge_bucket(
        &mut self,
        slices: Vec<Slice>,
        first_fetch: usize,
        filter: &Filter,
        page_size: usize,
        out: &mut Vec<Pending>,
    ) -> Result<bool, HbaseError> {
        let mut cursors: Vec<Cursor> = Vec::with_capacity(slices.len());
        let result = self.merge_into(slices, &mut cursors, first_fetch, filter, page_size, out);
        let mut close_error = None;
        for c in cursors {
            // After a broken connection the server drops its scanners with the connection.
            if self.client.is_none() {
                break;
            }
            if let Err(e) = self.call("scannerClose", |cl| cl.scanner_close(c.id)) {
                close_error.get_or_insert(e);
            }
        }
        match (result, close_error) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(e)) => Err(e),
            (Ok(full), None) => Ok(full),
        }
    }

    fn merge_into(
        &mut self,
        slices: Vec<Slice>,
        cursors: &mut Vec<Cursor>,
        first_fetch: usize,
        filter: &Filter,
        page_size: usize,
        out: &mut Vec<Pending>,
    ) -> Result<bool, HbaseError> {
        let table = self.config.table.as_bytes().to_vec();
        for slice in slices {
            let (t, start, stop) = (table.clone(), slice.start.clone(), slice.stop.clone());
            let id = self.call("scannerOpenWithStop", |c| {
                c.scanner_open_with_stop(t, start, stop, vec![RAW_COLUMN.to_vec()], Default::default())
            })?;
            cursors.push(Cursor {
                id,
                slice,
                buffered: VecDeque::new(),
                last_row: None,
                exhausted: false,
                fetch: first_fetch,
            });
        }
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for i in 0..cursors.len() {
            if let Some(p) = self.next_match(cursors, i, filter)? {
                heap.push(p);
            }
        }
        while let Some(p) = heap.pop() {
            let i = p.source;
            out.push(p);
            if out.len() > page_size {
                return Ok(true);
            }
            if let Some(next) = self.next_match(cursors, i, filter)? {
                heap.push(next);
            }
        }
        Ok(false)
    }

    /// The next row of cursor `i` that passes the filter, fetching more rows as needed.
    fn next_match(&mut self, cursors: &mut [Cursor], i: usize, filter: &Filter) -> Result<Option<Pending>, HbaseError> {
        let max_fetch = self.config.scan_batch_rows;
        let Some(cursor) = cursors.get_mut(i) else {
            return Ok(None);
        };
        loop {
            let row = match cursor.buffered.pop_front() {
                Some(row) => row,
                None if cursor.exhausted => return Ok(None),
                None => {
                    let (id, n) = (cursor.id, i32::try_from(cursor.fetch).unwrap_or(i32::MAX));
                    let rows = self.call("scannerGetList", |c| c.scanner_get_list(id, n))?;
                    if rows.len() > cursor.fetch {
                        self.client = None;
                        return Err(malformed(format!("asked for {} rows, got {}", cursor.fetch, rows.len())));
                    }
                    cursor.exhausted = rows.is_empty();
                    cursor.fetch = cursor.fetch.saturating_mul(2).min(max_fetch);
                    cursor.buffered.extend(rows);
                    continue;
                }
            };
            let (key, value) = match check_row(cursor, row) {
                Ok(kv) => kv,
                Err(e) => {
                    self.client = None;
                    return Err(e);
                }
            };
            if let Some((unsalted, view)) = filter.accept(&key, &value)? {
                return Ok(Some(Pending { unsalted, source: i, view }));
            }
        }
    }
}

fn malformed(why: String) -> HbaseError {
    HbaseError::Malformed { op: "scannerGetList", why }
}

/// The key and `r:v` value of a scanned row, checked against the scan: inside the slice,
/// strictly ascending.
fn check_row(cursor: &mut Cursor, row: TRowResult) -> Result<(Vec<u8>, Vec<u8>), HbaseError> {
    let key = row.row.ok_or_else(|| malformed("a row without a key".to_owned()))?;
    let in_slice = key >= cursor.slice.start && (cursor.slice.stop.is_empty() || key < cursor.slice.stop);
    if !in_slice || cursor.last_row.as_ref().is_some_and(|last| key <= *last) {
        return Err(malformed(format!("row {key:02x?} is out of order or outside the scanned range")));
    }
    let from_map = row.columns.and_then(|mut cols| cols.remove(RAW_COLUMN)).and_then(|cell| cell.value);
    let value = match from_map {
        Some(v) => v,
        None => row
            .sorted_columns
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.column_name.as_deref() == Some(RAW_COLUMN))
            .and_then(|c| c.cell)
            .and_then(|cell| cell.value)
            .ok_or_else(|| malformed(format!("row {key:02x?} has no r:v cell")))?,
    };
    cursor.last_row = Some(key.clone());
    Ok((key, value))
}

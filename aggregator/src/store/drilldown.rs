//! Drill-down: exactly the raw records behind one aggregate point, one page at a time.
//!
//! Role: given a point (metric, dimension, window, allowed lateness) it scans only the buckets
//! overlapping the window, in every salt that can hold a matching row (one salt per cluster
//! when the node is known, the cluster's slice of each salt when only the cluster is), merges
//! the salts by the unsalted key so the order is deterministic, and keeps a row when
//! - its event time lies in `[window.start, window.end)`,
//! - it matches the dimension (fleet: all; cluster/node: equal; tag `k=v`: has the tag; set:
//!   every field matches), and
//! - it was not late for this window: its arrival watermark `W` satisfies
//!   `window.end + allowed_lateness > W` (the engine's rule; a sliding-window record can be
//!   late for its oldest windows only, and then it is not behind those points).
//!
//! The page token is the hex of a version byte and the unsalted key of the last record
//! returned; the next page resumes strictly after it in every salt, so pages never skip or
//! repeat a record. Reads only the `raw` and `node_clusters` tables, in the read transaction
//! it is given.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::str::FromStr;

use redb::{ReadOnlyTable, ReadTransaction};

use super::codec::{RawRecordView, RawRowValue};
use super::error::{StoreError, corrupt_key, corrupt_value};
use super::keybytes::{prefix_end, put_str};
use super::keys::{decode_node_cluster_key, node_cluster_key};
use super::row_key::{RawRowKey, RowKeyLayout};
use super::tables::{NODE_CLUSTERS, RAW};
use crate::engine::{Dimension, DimensionField, Nanos, Window, WindowSpec};

/// The largest page a drill-down returns; larger requests are served this many records.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// Format version inside page tokens.
const TOKEN_V1: u8 = 1;

/// The aggregate point whose raw records are wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillDown {
    /// The metric.
    pub metric: String,
    /// The dimension value of the point's series.
    pub dimension: Dimension,
    /// The window spec the point was computed with (names the point; the filter needs only the
    /// window and the lateness).
    pub window_spec: WindowSpec,
    /// The point's window.
    pub window: Window,
    /// The engine's allowed lateness when the point was computed.
    pub allowed_lateness: Nanos,
}

/// One page of a drill-down.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPage {
    /// The records, in unsalted row-key order (bucket, cluster, node, time, agent, sequence, index).
    pub records: Vec<RawRecordView>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// What a record must carry to count under a dimension.
#[derive(Debug, Default)]
struct Matcher {
    cluster: Option<String>,
    node: Option<String>,
    tags: Vec<(String, String)>,
    /// The dimension can hold no record (conflicting or empty set fields).
    never: bool,
}

impl Matcher {
    fn new(d: &Dimension) -> Matcher {
        let mut m = Matcher::default();
        match d {
            Dimension::Fleet => {}
            Dimension::Cluster(c) => m.set_cluster(c),
            Dimension::Node(n) => m.set_node(n),
            Dimension::Tag { key, value } => m.tags.push((key.to_string(), value.to_string())),
            Dimension::Set(pairs) => {
                for (field, value) in pairs.iter() {
                    if value.is_empty() {
                        m.never = true;
                    }
                    match DimensionField::from_str(field) {
                        Ok(DimensionField::Cluster) => m.set_cluster(value),
                        Ok(DimensionField::Node) => m.set_node(value),
                        Ok(DimensionField::Tag(k)) => m.tags.push((k, value.to_string())),
                        Err(_) => m.never = true,
                    }
                }
            }
        }
        m
    }

    fn set_cluster(&mut self, c: &str) {
        self.never |= c.is_empty() || self.cluster.as_deref().is_some_and(|x| x != c);
        self.cluster = Some(c.to_owned());
    }

    fn set_node(&mut self, n: &str) {
        self.never |= n.is_empty() || self.node.as_deref().is_some_and(|x| x != n);
        self.node = Some(n.to_owned());
    }

    fn matches(&self, key: &RawRowKey, tags: &[(String, String)]) -> bool {
        self.cluster.as_deref().is_none_or(|c| c == key.cluster)
            && self.node.as_deref().is_none_or(|n| n == key.node)
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// One key slice to scan per bucket: a salt and the bytes after the bucket that every
/// matching row starts with (escaped cluster, then node, when known).
#[derive(Debug)]
struct Source {
    salt: u8,
    after_bucket: Vec<u8>,
}

fn sources(txn: &ReadTransaction, layout: &RowKeyLayout, metric: &str, m: &Matcher) -> Result<Vec<Source>, StoreError> {
    let all_salts = |after_bucket: Vec<u8>| -> Vec<Source> {
        (0..layout.salt_buckets()).map(|salt| Source { salt, after_bucket: after_bucket.clone() }).collect()
    };
    let one = |cluster: &str, node: &str| {
        let mut after_bucket = Vec::new();
        put_str(&mut after_bucket, cluster);
        put_str(&mut after_bucket, node);
        Source { salt: layout.salt(metric, cluster, node), after_bucket }
    };
    Ok(match (m.cluster.as_deref(), m.node.as_deref()) {
        (Some(c), Some(n)) => vec![one(c, n)],
        (Some(c), None) => {
            let mut after_bucket = Vec::new();
            put_str(&mut after_bucket, c);
            all_salts(after_bucket)
        }
        (None, Some(n)) => {
            // Every cluster this node ever reported the metric under (written with the rows).
            let table = txn.open_table(NODE_CLUSTERS)?;
            let prefix = node_cluster_key(metric, n, None);
            let mut out = Vec::new();
            for item in scan_prefix(&table, &prefix)? {
                let (k, _) = item?;
                let cluster = decode_node_cluster_key(k.value()).map_err(corrupt_key("node_clusters"))?;
                out.push(one(&cluster, n));
            }
            out
        }
        (None, None) => all_salts(Vec::new()),
    })
}

type Rows<'t> = redb::Range<'t, &'static [u8], &'static [u8]>;
type Units<'t> = redb::Range<'t, &'static [u8], ()>;

fn scan_prefix<'t>(table: &'t ReadOnlyTable<&'static [u8], ()>, prefix: &[u8]) -> Result<Units<'t>, StoreError> {
    let end = prefix_end(prefix);
    let range = match &end {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    Ok(range)
}

/// A matching row waiting in the merge of per-salt sources; ordered by unsalted key, smallest
/// first out of the heap. Shared with the HBase store's merge of per-salt scanners.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The row key without its salt: the merge order.
    pub(crate) unsalted: Vec<u8>,
    /// Which source (salt range or scanner) the row came from.
    pub(crate) source: usize,
    /// The decoded record.
    pub(crate) view: RawRecordView,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.unsalted == other.unsalted
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        other.unsalted.cmp(&self.unsalted)
    }
}

/// The filter of one drill-down. Pure (no redb): the HBase store (`store/hbase/`) applies the
/// same filter to the rows its Thrift scans return.
#[derive(Debug)]
pub(crate) struct Filter {
    window: Window,
    /// A row counts iff its arrival watermark is below this (`window.end + lateness`).
    late_at: Nanos,
    matcher: Matcher,
}

impl Filter {
    /// The filter of drill-down `q`.
    pub(crate) fn new(q: &DrillDown) -> Filter {
        Filter {
            window: q.window,
            late_at: q.window.end.saturating_add(q.allowed_lateness),
            matcher: Matcher::new(&q.dimension),
        }
    }

    /// True when no record can match (conflicting or empty dimension fields, empty window).
    pub(crate) fn matches_nothing(&self) -> bool {
        self.matcher.never || self.window.start >= self.window.end
    }

    /// The cluster and the node every matching record has, when the dimension fixes them.
    pub(crate) fn cluster_node(&self) -> (Option<&str>, Option<&str>) {
        (self.matcher.cluster.as_deref(), self.matcher.node.as_deref())
    }

    /// The unsalted key and the record of one stored raw row, if it passes the filter.
    pub(crate) fn accept(
        &self,
        key_bytes: &[u8],
        value_bytes: &[u8],
    ) -> Result<Option<(Vec<u8>, RawRecordView)>, StoreError> {
        let time = RawRowKey::decode_time(key_bytes).map_err(corrupt_key("raw"))?;
        if time < self.window.start || time >= self.window.end {
            return Ok(None);
        }
        if RawRowValue::decode_watermark(value_bytes).map_err(corrupt_value("raw"))? >= self.late_at {
            return Ok(None);
        }
        let key = RawRowKey::decode(key_bytes).map_err(corrupt_key("raw"))?;
        let value = RawRowValue::decode(value_bytes).map_err(corrupt_value("raw"))?;
        if !self.matcher.matches(&key, &value.tags) {
            return Ok(None);
        }
        Ok(Some((RawRowKey::unsalted(key_bytes).to_vec(), value.into_view(key))))
    }

    /// The next row of `rows` that passes the filter.
    fn next(&self, rows: &mut Rows<'_>, source: usize) -> Result<Option<Pending>, StoreError> {
        for item in rows {
            let (k, v) = item?;
            if let Some((unsalted, view)) = self.accept(k.value(), v.value())? {
                return Ok(Some(Pending { unsalted, source, view }));
            }
        }
        Ok(None)
    }
}

/// The page token resuming after the record with this unsalted key.
pub(crate) fn encode_token(unsalted: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * unsalted.len());
    for &b in std::iter::once(&TOKEN_V1).chain(unsalted) {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    s
}

/// The unsalted key and the bucket a token resumes after, checked against the query.
pub(crate) fn decode_token(token: &str, q: &DrillDown) -> Result<(Vec<u8>, Nanos), StoreError> {
    let bad = |why: &str| StoreError::InvalidPageToken(why.to_owned());
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8).ok_or_else(|| bad("not hex"));
    let hex = token.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err(bad("odd length"));
    }
    let bytes =
        hex.chunks_exact(2).map(|p| Ok((digit(p[0])? << 4) | digit(p[1])?)).collect::<Result<Vec<u8>, StoreError>>()?;
    let Some((&TOKEN_V1, unsalted)) = bytes.split_first() else {
        return Err(bad("unknown version"));
    };
    let mut salted = Vec::with_capacity(unsalted.len() + 1);
    salted.push(0);
    salted.extend_from_slice(unsalted);
    let key = RawRowKey::decode(&salted).map_err(|e| StoreError::InvalidPageToken(e.to_string()))?;
    if key.metric != q.metric || key.time < q.window.start || key.time >= q.window.end {
        return Err(bad("issued for another drill-down"));
    }
    Ok((unsalted.to_vec(), key.bucket))
}

/// One page of the raw records behind `q`, read in `txn`.
pub(crate) fn drill_down(
    txn: &ReadTransaction,
    layout: &RowKeyLayout,
    q: &DrillDown,
    page_size: usize,
    page_token: Option<&str>,
) -> Result<RawPage, StoreError> {
    let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
    let resume = page_token.map(|t| decode_token(t, q)).transpose()?;
    let filter = Filter::new(q);
    let mut out: Vec<Pending> = Vec::new();
    if filter.matches_nothing() {
        return Ok(RawPage { records: Vec::new(), next_page_token: None });
    }
    let sources = sources(txn, layout, &q.metric, &filter.matcher)?;
    let raw = txn.open_table(RAW)?;
    'buckets: for bucket in layout.buckets(q.window.start, q.window.end) {
        let after = resume.as_ref().filter(|(_, b)| *b == bucket).map(|(k, _)| k.as_slice());
        if resume.as_ref().is_some_and(|(_, b)| bucket < *b) {
            continue;
        }
        let mut rows: Vec<Rows<'_>> = Vec::with_capacity(sources.len());
        for s in &sources {
            let mut start = layout.bucket_prefix(s.salt, &q.metric, bucket);
            start.extend_from_slice(&s.after_bucket);
            let end = prefix_end(&start);
            let mut lower = Bound::Included(start);
            if let Some(after) = after {
                let mut resume_key = Vec::with_capacity(after.len() + 1);
                resume_key.push(s.salt);
                resume_key.extend_from_slice(after);
                if end.as_ref().is_some_and(|e| resume_key >= *e) {
                    continue;
                }
                if matches!(&lower, Bound::Included(st) if resume_key >= *st) {
                    lower = Bound::Excluded(resume_key);
                }
            }
            let lower = match &lower {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            rows.push(raw.range::<&[u8]>((lower, upper))?);
        }
        let mut heap = BinaryHeap::with_capacity(rows.len());
        for (i, r) in rows.iter_mut().enumerate() {
            if let Some(p) = filter.next(r, i)? {
                heap.push(p);
            }
        }
        while let Some(p) = heap.pop() {
            let source = p.source;
            out.push(p);
            if out.len() > page_size {
                break 'buckets;
            }
            if let Some(r) = rows.get_mut(source)
                && let Some(next) = filter.next(r, source)?
            {
                heap.push(next);
            }
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

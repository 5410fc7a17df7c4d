//! Dimensions and the `SeriesRegistry`: which series a record counts under.
//!
//! Role: expands a record into its series — fleet, cluster, node, each custom tag `k=v`
//! (flat-mapped) and each configured dimension set — and maps every (metric, dimension
//! value) to a dense `SeriesId` for the window state. Enforces the live-series limit all or
//! nothing: a record that would create too many series creates none. Series whose window
//! state is gone are released and their ids reused. Touches nothing else.

use std::fmt;
use std::sync::Arc;

use hashbrown::HashMap;

use super::config::{DimensionField, DimensionSpec, TagDimensions};
use super::record::Record;

/// Dense id of a live series, valid for the `SeriesRegistry` that issued it.
pub type SeriesId = u32;

/// The kind of a dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DimensionKind {
    /// All records of the metric.
    Fleet,
    /// Records of one cluster.
    Cluster,
    /// Records of one node.
    Node,
    /// Records carrying one tag `k=v`.
    Tag,
    /// Records with one value tuple of a configured dimension set.
    Set,
}

impl DimensionKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DimensionKind::Fleet => "fleet",
            DimensionKind::Cluster => "cluster",
            DimensionKind::Node => "node",
            DimensionKind::Tag => "tag",
            DimensionKind::Set => "set",
        }
    }
}

/// One dimension value a series is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The whole fleet.
    Fleet,
    /// One cluster.
    Cluster(Arc<str>),
    /// One node.
    Node(Arc<str>),
    /// One custom tag.
    Tag {
        /// Tag key.
        key: Arc<str>,
        /// Tag value.
        value: Arc<str>,
    },
    /// One tuple of a configured set: (field name, value) pairs in configured order.
    Set(Arc<[(Arc<str>, Arc<str>)]>),
}

impl Dimension {
    /// The kind of this dimension.
    pub fn kind(&self) -> DimensionKind {
        match self {
            Dimension::Fleet => DimensionKind::Fleet,
            Dimension::Cluster(_) => DimensionKind::Cluster,
            Dimension::Node(_) => DimensionKind::Node,
            Dimension::Tag { .. } => DimensionKind::Tag,
            Dimension::Set(_) => DimensionKind::Set,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dimension::Fleet => f.write_str("fleet"),
            Dimension::Cluster(c) => write!(f, "cluster={c}"),
            Dimension::Node(n) => write!(f, "node={n}"),
            Dimension::Tag { key, value } => write!(f, "tag:{key}={value}"),
            Dimension::Set(pairs) => {
                f.write_str("set:")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

/// A series: one metric under one dimension value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The metric name.
    pub metric: Arc<str>,
    /// The dimension value.
    pub dimension: Dimension,
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{{}}}", self.metric, self.dimension)
    }
}

/// The live-series limit would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityExceeded;

const ID_BITS: u32 = 30;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
/// Interned strings and set tuples are numbered below this.
const MAX_IDS: usize = 1 << ID_BITS;

const KIND_FLEET: u64 = 0;
const KIND_CLUSTER: u64 = 1;
const KIND_NODE: u64 = 2;
const KIND_TAG: u64 = 3;
const KIND_SET: u64 = 4;

/// `kind << 60 | a << 30 | b`: a dimension value (without its metric) as one integer.
type DimCode = u64;
/// `metric id << 64 | DimCode`: a series as one integer.
type SeriesCode = u128;

#[inline]
fn dim_code(kind: u64, a: u32, b: u32) -> DimCode {
    (kind << 60) | (u64::from(a) << ID_BITS) | u64::from(b)
}

#[inline]
fn code(metric: u32, dim: DimCode) -> SeriesCode {
    (u128::from(metric) << 64) | u128::from(dim)
}

/// Interned strings: text ↔ dense id.
#[derive(Debug, Default)]
struct StrInterner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl StrInterner {
    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        if self.names.len() >= MAX_IDS {
            return None;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(s);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        Some(id)
    }
}

/// Interned value tuples of dimension sets.
#[derive(Debug, Default)]
struct TupleInterner {
    ids: HashMap<Box<[u32]>, u32>,
    tuples: Vec<Box<[u32]>>,
}

impl TupleInterner {
    fn intern(&mut self, t: &[u32]) -> Option<u32> {
        if let Some(&id) = self.ids.get(t) {
            return Some(id);
        }
        if self.tuples.len() >= MAX_IDS {
            return None;
        }
        let id = self.tuples.len() as u32;
        self.tuples.push(t.into());
        self.ids.insert(t.into(), id);
        Some(id)
    }
}

/// Where string and tuple ids come from: a read-only lookup (first pass, creates nothing)
/// or interning (second pass, only once the record is known to fit the series limit).
trait IdSource {
    fn str_id(&mut self, s: &str) -> Option<u32>;
    fn tuple_id(&mut self, t: &[u32]) -> Option<u32>;
}

struct Lookup<'a>(&'a StrInterner, &'a TupleInterner);

impl IdSource for Lookup<'_> {
    #[inline]
    fn str_id(&mut self, s: &str) -> Option<u32> {
        self.0.ids.get(s).copied()
    }
    #[inline]
    fn tuple_id(&mut self, t: &[u32]) -> Option<u32> {
        self.1.ids.get(t).copied()
    }
}

struct Intern<'a>(&'a mut StrInterner, &'a mut TupleInterner);

impl IdSource for Intern<'_> {
    #[inline]
    fn str_id(&mut self, s: &str) -> Option<u32> {
        self.0.intern(s)
    }
    #[inline]
    fn tuple_id(&mut self, t: &[u32]) -> Option<u32> {
        self.1.intern(t)
    }
}

/// The configured dimensions, compiled for the hot path.
#[derive(Debug)]
struct CompiledSpec {
    fleet: bool,
    cluster: bool,
    node: bool,
    tags: TagDimensions,
    sets: Vec<Vec<DimensionField>>,
    set_names: Vec<Vec<Arc<str>>>,
}

impl CompiledSpec {
    /// Writes the dimension values of `rec` — everything but the metric, so the same for all
    /// records of one context — to `out`; `None` marks a value whose strings are not all
    /// known to `ids` (only possible for a [`Lookup`]), i.e. one whose series is new.
    fn dimensions<I: IdSource>(&self, ids: &mut I, rec: &Record, out: &mut Vec<Option<DimCode>>) {
        out.clear();
        if self.fleet {
            out.push(Some(dim_code(KIND_FLEET, 0, 0)));
        }
        if self.cluster && !rec.cluster.is_empty() {
            out.push(ids.str_id(&rec.cluster).map(|c| dim_code(KIND_CLUSTER, c, 0)));
        }
        if self.node && !rec.node.is_empty() {
            out.push(ids.str_id(&rec.node).map(|n| dim_code(KIND_NODE, n, 0)));
        }
        for (k, v) in &rec.tags {
            let wanted = match &self.tags {
                TagDimensions::All => true,
                TagDimensions::None => false,
                TagDimensions::Only(keys) => keys.iter().any(|key| key == k),
            };
            if wanted {
                let pair = ids.str_id(k).zip(ids.str_id(v));
                out.push(pair.map(|(k, v)| dim_code(KIND_TAG, k, v)));
            }
        }
        let mut tuple: Vec<u32> = Vec::new();
        'sets: for (set_idx, fields) in self.sets.iter().enumerate() {
            tuple.clear();
            let mut known = true;
            for field in fields {
                let value = match field {
                    DimensionField::Cluster => rec.cluster.as_str(),
                    DimensionField::Node => rec.node.as_str(),
                    DimensionField::Tag(key) => match rec.tags.iter().find(|(k, _)| k == key) {
                        Some((_, v)) => v.as_str(),
                        None => continue 'sets,
                    },
                };
                if value.is_empty() {
                    continue 'sets;
                }
                match ids.str_id(value) {
                    Some(id) => tuple.push(id),
                    None => known = false,
                }
            }
            let id = if known { ids.tuple_id(&tuple) } else { None };
            out.push(id.map(|t| dim_code(KIND_SET, set_idx as u32, t)));
        }
    }
}

#[derive(Debug)]
struct SeriesEntry {
    key: SeriesKey,
    code: SeriesCode,
}

/// Maps records to the dense ids of the series they count under.
#[derive(Debug)]
pub struct SeriesRegistry {
    spec: CompiledSpec,
    strings: StrInterner,
    tuples: TupleInterner,
    by_code: HashMap<SeriesCode, SeriesId>,
    entries: Vec<Option<SeriesEntry>>,
    /// Per id: how many times it was released, so a stale reference to an earlier series under
    /// a reused id can be told apart (see [`generation`](Self::generation)).
    generations: Vec<u32>,
    free: Vec<SeriesId>,
    max_series: usize,
    /// Dimension values of the current record context (valid while `context_dims_valid`).
    context_dims: Vec<Option<DimCode>>,
    context_dims_valid: bool,
    /// (metric id, range in `context_ids`) for the current record context.
    context_cache: Vec<(u32, u32, u32)>,
    context_ids: Vec<SeriesId>,
}

/// Metrics remembered per record context by [`SeriesRegistry::resolve`].
const CONTEXT_CACHE_METRICS: usize = 64;

impl SeriesRegistry {
    /// A registry for `spec`, holding at most `max_series` live series.
    pub fn new(spec: &DimensionSpec, max_series: usize) -> SeriesRegistry {
        let set_names =
            spec.sets.iter().map(|fields| fields.iter().map(|f| Arc::from(f.to_string())).collect()).collect();
        SeriesRegistry {
            spec: CompiledSpec {
                fleet: spec.fleet,
                cluster: spec.cluster,
                node: spec.node,
                tags: spec.tags.clone(),
                sets: spec.sets.clone(),
                set_names,
            },
            strings: StrInterner::default(),
            tuples: TupleInterner::default(),
            by_code: HashMap::new(),
            entries: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            max_series,
            context_dims: Vec::new(),
            context_dims_valid: false,
            context_cache: Vec::new(),
            context_ids: Vec::new(),
        }
    }

    /// Fills `out` with the series `rec` counts under, creating missing ones — all of them,
    /// or none if that would pass the live-series limit.
    ///
    /// `same_context` is a promise from the caller: `rec` has the cluster, node and tags of
    /// the record of the previous successful call, and no series was released since. Then
    /// only the metric is looked up and the series come from a small per-context cache.
    pub fn resolve(
        &mut self,
        rec: &Record,
        same_context: bool,
        out: &mut Vec<SeriesId>,
    ) -> Result<(), CardinalityExceeded> {
        if !same_context {
            self.context_cache.clear();
            self.context_ids.clear();
            self.context_dims_valid = false;
        }
        let metric = self.strings.ids.get(rec.metric.as_str()).copied();
        if let Some(m) = metric
            && let Some(&(_, from, to)) = self.context_cache.iter().find(|(id, _, _)| *id == m)
        {
            out.clear();
            out.extend_from_slice(&self.context_ids[from as usize..to as usize]);
            return Ok(());
        }
        if !self.context_dims_valid {
            self.spec.dimensions(&mut Lookup(&self.strings, &self.tuples), rec, &mut self.context_dims);
            self.context_dims_valid = true;
        }
        out.clear();
        let mut missing = 0usize;
        for dim in &self.context_dims {
            match metric.zip(*dim).and_then(|(m, d)| self.by_code.get(&code(m, d))) {
                Some(&id) => out.push(id),
                None => missing += 1,
            }
        }
        let m = match metric {
            Some(m) if missing == 0 => m,
            _ => {
                out.clear();
                self.create(rec, missing.max(1), out)?
            }
        };
        if self.context_cache.len() < CONTEXT_CACHE_METRICS {
            let from = self.context_ids.len() as u32;
            self.context_ids.extend_from_slice(out);
            self.context_cache.push((m, from, self.context_ids.len() as u32));
        }
        Ok(())
    }

    /// Creates the missing series of `rec` (all or none) and fills `out`; returns the metric id.
    #[cold]
    fn create(&mut self, rec: &Record, missing: usize, out: &mut Vec<SeriesId>) -> Result<u32, CardinalityExceeded> {
        let new_strings = 3 + 2 * rec.tags.len();
        if self.len() + missing > self.max_series
            || self.strings.names.len() + new_strings > MAX_IDS
            || self.tuples.tuples.len() + self.spec.sets.len() > MAX_IDS
        {
            return Err(CardinalityExceeded);
        }
        // Interning changes what is known: recompute the context's values from here on.
        self.context_dims_valid = false;
        let metric = self.strings.intern(&rec.metric).ok_or(CardinalityExceeded)?;
        self.spec.dimensions(&mut Intern(&mut self.strings, &mut self.tuples), rec, &mut self.context_dims);
        let dims = std::mem::take(&mut self.context_dims);
        let mut result = Ok(metric);
        for dim in &dims {
            let Some(d) = *dim else {
                result = Err(CardinalityExceeded); // unreachable: capacity checked above
                break;
            };
            let c = code(metric, d);
            let id = match self.by_code.get(&c) {
                Some(&id) => id,
                None => self.insert(c),
            };
            out.push(id);
        }
        self.context_dims = dims;
        self.context_dims_valid = result.is_ok();
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn insert(&mut self, code: SeriesCode) -> SeriesId {
        let entry = SeriesEntry { key: self.decode(code), code };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                self.generations.push(0);
                (self.entries.len() - 1) as SeriesId
            }
        };
        self.by_code.insert(code, id);
        id
    }

    fn decode(&self, code: SeriesCode) -> SeriesKey {
        let s = |id: u64| self.strings.names[id as usize].clone();
        let metric = s((code >> 64) as u64);
        let dim = code as u64;
        let (kind, a, b) = (dim >> 60, (dim >> ID_BITS) & ID_MASK, dim & ID_MASK);
        let dimension = match kind {
            KIND_CLUSTER => Dimension::Cluster(s(a)),
            KIND_NODE => Dimension::Node(s(a)),
            KIND_TAG => Dimension::Tag { key: s(a), value: s(b) },
            KIND_SET => {
                let names = &self.spec.set_names[a as usize];
                let values = &self.tuples.tuples[b as usize];
                Dimension::Set(names.iter().zip(values.iter()).map(|(n, &v)| (n.clone(), s(u64::from(v)))).collect())
            }
            _ => Dimension::Fleet,
        };
        SeriesKey { metric, dimension }
    }

    /// Forgets a series whose window state is gone; its id may be reused.
    pub fn release(&mut self, id: SeriesId) {
        self.context_cache.clear();
        self.context_ids.clear();
        if let Some(entry) = self.entries.get_mut(id as usize).and_then(Option::take) {
            self.by_code.remove(&entry.code);
            self.free.push(id);
            if let Some(g) = self.generations.get_mut(id as usize) {
                *g = g.wrapping_add(1);
            }
        }
    }

    /// The incarnation of `id`: it changes each time the id is released, so `(id, generation)`
    /// names one series even after the id is reused.
    pub(crate) fn generation(&self, id: SeriesId) -> u32 {
        self.generations.get(id as usize).copied().unwrap_or_default()
    }

    /// Makes room for `additional` more series (restoring a snapshot).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.by_code.reserve(additional);
        self.entries.reserve(additional);
        self.generations.reserve(additional);
    }

    /// Live series `(id, key)`, ascending by id.
    pub(crate) fn live(&self) -> impl Iterator<Item = (SeriesId, &SeriesKey)> {
        self.entries.iter().enumerate().filter_map(|(id, e)| e.as_ref().map(|e| (id as SeriesId, &e.key)))
    }

    /// Registers `key` as a live series (restoring a snapshot) and returns its id. Ignores the
    /// live-series limit (the caller checks it); refuses a key registered already, a dimension
    /// set the configuration does not have, and strings past the interning capacity.
    pub(crate) fn restore_series(&mut self, key: &SeriesKey) -> Result<SeriesId, String> {
        let full = || "too many distinct names to intern".to_owned();
        let metric = self.strings.intern(&key.metric).ok_or_else(full)?;
        let mut candidates: Vec<DimCode> = Vec::with_capacity(1);
        match &key.dimension {
            Dimension::Fleet => candidates.push(dim_code(KIND_FLEET, 0, 0)),
            Dimension::Cluster(c) => {
                candidates.push(dim_code(KIND_CLUSTER, self.strings.intern(c).ok_or_else(full)?, 0))
            }
            Dimension::Node(n) => candidates.push(dim_code(KIND_NODE, self.strings.intern(n).ok_or_else(full)?, 0)),
            Dimension::Tag { key, value } => {
                let k = self.strings.intern(key).ok_or_else(full)?;
                let v = self.strings.intern(value).ok_or_else(full)?;
                candidates.push(dim_code(KIND_TAG, k, v));
            }
            Dimension::Set(pairs) => {
                let mut tuple = Vec::with_capacity(pairs.len());
                for (_, v) in pairs.iter() {
                    tuple.push(self.strings.intern(v).ok_or_else(full)?);
                }
                // A configuration may list the same field set twice: each is its own series
                // under an equal key, so take the first set of that shape not restored yet.
                for (set_idx, names) in self.spec.set_names.iter().enumerate() {
                    if names.len() == pairs.len() && names.iter().zip(pairs.iter()).all(|(n, (k, _))| n == k) {
                        let t = self.tuples.intern(&tuple).ok_or_else(full)?;
                        candidates.push(dim_code(KIND_SET, set_idx as u32, t));
                    }
                }
                if candidates.is_empty() {
                    return Err("its dimension set is not configured".to_owned());
                }
            }
        }
        let code = candidates
            .into_iter()
            .map(|d| code(metric, d))
            .find(|c| !self.by_code.contains_key(c))
            .ok_or_else(|| "listed twice".to_owned())?;
        self.context_cache.clear();
        self.context_ids.clear();
        self.context_dims_valid = false;
        Ok(self.insert(code))
    }

    /// The key of a live series.
    pub fn key(&self, id: SeriesId) -> Option<&SeriesKey> {
        self.entries.get(id as usize).and_then(|e| e.as_ref()).map(|e| &e.key)
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// True when no series is live.
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }

    /// One past the largest series id ever issued (sizes per-series tables).
    pub fn id_bound(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::Value;

    fn rec(cluster: &str, node: &str, tags: &[(&str, &str)]) -> Record {
        Record {
            metric: "m".into(),
            value: Value::Float(1.0),
            time: 0,
            cluster: cluster.into(),
            node: node.into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn keys(reg: &mut SeriesRegistry, r: &Record) -> Vec<String> {
        let mut ids = Vec::new();
        reg.resolve(r, false, &mut ids).unwrap_or_else(|_| panic!("limit"));
        ids.iter().filter_map(|&i| reg.key(i)).map(ToString::to_string).collect()
    }

    #[test]
    fn expands_every_dimension_kind() {
        let spec = DimensionSpec {
            sets: vec![vec![DimensionField::Cluster, DimensionField::Tag("region".into())]],
            ..DimensionSpec::default()
        };
        let mut reg = SeriesRegistry::new(&spec, 100);
        let got = keys(&mut reg, &rec("c1", "n1", &[("region", "eu"), ("env", "prod")]));
        assert_eq!(
            got,
            [
                "m{fleet}",
                "m{cluster=c1}",
                "m{node=n1}",
                "m{tag:region=eu}",
                "m{tag:env=prod}",
                "m{set:cluster=c1,region=eu}"
            ]
        );
        // No region tag: the set is skipped; empty cluster: no cluster series.
        let got = keys(&mut reg, &rec("", "n1", &[("env", "prod")]));
        assert_eq!(got, ["m{fleet}", "m{node=n1}", "m{tag:env=prod}"]);
    }

    #[test]
    fn limit_is_all_or_nothing_and_released_ids_are_reused() {
        let mut reg = SeriesRegistry::new(&DimensionSpec::default(), 4);
        let mut ids = Vec::new();
        assert!(reg.resolve(&rec("c", "n", &[]), false, &mut ids).is_ok()); // 3 series
        assert_eq!(reg.len(), 3);
        assert_eq!(reg.resolve(&rec("c", "n2", &[("k", "v")]), false, &mut ids), Err(CardinalityExceeded));
        assert_eq!(reg.len(), 3, "a refused record creates nothing");
        assert!(reg.resolve(&rec("c", "n", &[]), false, &mut ids).is_ok(), "known series still resolve");
        let node_series = ids[2];
        reg.release(node_series);
        assert_eq!(reg.len(), 2);
        assert!(reg.resolve(&rec("c", "n3", &[]), false, &mut ids).is_ok());
        assert_eq!(ids[2], node_series, "freed id reused");
        assert_eq!(reg.key(ids[2]).map(ToString::to_string).as_deref(), Some("m{node=n3}"));
    }
}

//! Tests of the embedded store (`store::EmbeddedStore`) against the window engine.
//!
//! Role: the key property — a `WindowEngine` driven over generated streams (several agents,
//! one with a NUL byte in its id, disorder, late and partially late records, invalid records,
//! re-sent batches, ticks; tumbling, sliding and session windows) writes through a
//! `WriteBatchSink` into a store, in randomly grouped transactions; then every stored point
//! equals the engine's latest result, and a paged drill-down of **every** point returns
//! exactly `count` records — exactly the set a brute-force filter over the accepted records
//! gives, with the point's exact decimal sum — in the same order whatever the page size.
//! Re-writing every batch changes nothing. Plus: corrections overwrite, retractions delete,
//! listings, retention, reopening, the layout guard and bad page tokens.
//! Case count: `MESHMON_STORE_CASES` per window kind (default 24; deterministic seed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use meshmon_aggregator::engine::{
    AcceptedRecord, Batch, Dimension, DimensionField, DimensionSpec, EngineConfig, EngineOutput, InvalidRecord,
    LateRecord, LatestResults, Limits, Nanos, Record, RecordId, SeriesKey, TagDimensions, Value, Window, WindowEngine,
    WindowResult, WindowSpec,
};
use meshmon_aggregator::store::{
    AggregateChange, DrillDown, EmbeddedStore, RawRecordView, StoreConfig, StoreError, WriteBatch, WriteBatchSink,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const T0: Nanos = 1_000;
const MAX_FUTURE: Nanos = 30;
const AGENTS: [&str; 3] = ["a0", "a\0nul", "a2"];

// ---------------------------------------------------------------- generated streams

#[derive(Debug, Clone)]
struct GenRecord {
    metric: u8,
    cluster: u8,
    node: u8,
    tags: u8,
    value: GenValue,
    offset: i64,
    payload: bool,
}

#[derive(Debug, Clone)]
enum GenValue {
    Float(i32),
    Decimal(i64),
    Nan,
}

#[derive(Debug, Clone)]
enum Step {
    Batch { agent: u8, advance: u8, records: Vec<GenRecord>, flush: bool },
    Resend { back: u8, flush: bool },
    Tick { advance: u8, flush: bool },
}

#[derive(Debug, Clone)]
struct Scenario {
    window: WindowSpec,
    ooo: Nanos,
    lateness: Nanos,
    bucket: Nanos,
    salts: u8,
    page: usize,
    steps: Vec<Step>,
}

fn record_strategy() -> impl Strategy<Value = GenRecord> {
    let value = prop_oneof![
        5 => (-40i32..40).prop_map(GenValue::Float),
        4 => (-3_000_000_000i64..3_000_000_000).prop_map(GenValue::Decimal),
        1 => Just(GenValue::Nan),
    ];
    let offset = prop_oneof![10 => -12i64..=2, 3 => -40i64..-12];
    (0u8..2, 0u8..3, 0u8..4, 0u8..4, value, offset, any::<bool>()).prop_map(
        |(metric, cluster, node, tags, value, offset, payload)| GenRecord {
            metric,
            cluster,
            node,
            tags,
            value,
            offset,
            payload,
        },
    )
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let flush = prop::bool::weighted(0.4);
    prop_oneof![
        8 => (0u8..3, 0u8..4, prop::collection::vec(record_strategy(), 0..8), flush)
            .prop_map(|(agent, advance, records, flush)| Step::Batch { agent, advance, records, flush }),
        1 => (0u8..4, flush).prop_map(|(back, flush)| Step::Resend { back, flush }),
        2 => (0u8..10, flush).prop_map(|(advance, flush)| Step::Tick { advance, flush }),
    ]
}

fn scenario_strategy(kind: &'static str) -> impl Strategy<Value = Scenario> {
    let window = match kind {
        "tumbling" => {
            (5i64..12, 0i64..12).prop_map(|(size, off)| WindowSpec::Tumbling { size, offset: off % size }).boxed()
        }
        "sliding" => (2i64..5, 2i64..4, 0i64..5)
            .prop_map(|(slide, k, off)| WindowSpec::Sliding { size: slide * k, slide, offset: off % slide })
            .boxed(),
        _ => (2i64..6).prop_map(|gap| WindowSpec::Session { gap }).boxed(),
    };
    (window, 0i64..4, 0i64..8, 3i64..15, 1u8..6, 1usize..6, prop::collection::vec(step_strategy(), 5..40)).prop_map(
        |(window, ooo, lateness, bucket, salts, page, steps)| Scenario {
            window,
            ooo,
            lateness,
            bucket,
            salts,
            page,
            steps,
        },
    )
}

fn make_record(g: &GenRecord, now: Nanos) -> Record {
    let value = match g.value {
        GenValue::Float(v) => Value::Float(f64::from(v) * 0.25),
        GenValue::Decimal(n) => Value::Decimal(i128::from(n)),
        GenValue::Nan => Value::Float(f64::NAN),
    };
    let mut tags = Vec::new();
    if g.tags & 1 != 0 {
        tags.push(("env".to_string(), if g.node.is_multiple_of(2) { "prod" } else { "dev" }.to_string()));
    }
    if g.tags & 2 != 0 {
        tags.push(("region".to_string(), format!("r{}", g.cluster % 2)));
    }
    Record {
        metric: format!("m{}", g.metric),
        value,
        time: now + g.offset,
        cluster: ["c0", "c1", ""][g.cluster as usize].to_string(),
        node: format!("n{}", g.node),
        tags,
    }
}

fn engine_config(sc: &Scenario) -> EngineConfig {
    EngineConfig {
        window: sc.window,
        out_of_orderness: sc.ooo,
        allowed_lateness: sc.lateness,
        idle_timeout: Some(15),
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
        limits: Limits { max_future: Some(MAX_FUTURE), max_past: None, ..Limits::default() },
    }
}

// ---------------------------------------------------------------- the engine-to-store tee

/// Feeds the store sink and keeps an independent reference of what the engine emitted.
#[derive(Debug)]
struct Tee {
    sink: WriteBatchSink,
    reference: LatestResults,
    accepted: BTreeMap<RecordId, (Record, Nanos)>,
    corrections: u64,
    partial: u64,
    dead: u64,
}

impl EngineOutput for Tee {
    fn accepted(&mut self, a: AcceptedRecord<'_>) {
        self.sink.accepted(a);
        self.reference.accepted(a);
        let prev = self.accepted.insert(a.id.to_owned(), (a.record.clone(), a.watermark));
        assert!(prev.is_none(), "a record is accepted once");
    }
    fn result(&mut self, r: WindowResult<'_>) {
        self.corrections += u64::from(r.revision > 0);
        self.sink.result(r.clone());
        self.reference.result(r);
    }
    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.sink.retract(series, window_start);
        self.reference.retract(series, window_start);
    }
    fn late(&mut self, l: LateRecord<'_>) {
        self.partial += u64::from(!l.dropped());
        self.dead += u64::from(l.dropped());
        self.sink.late(l);
        self.reference.late(l);
    }
    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.dead += 1;
        self.sink.invalid(i);
        self.reference.invalid(i);
    }
}

// ---------------------------------------------------------------- brute force

fn brute_force_matches(d: &Dimension, r: &Record) -> bool {
    let field = |name: &str| -> Option<&str> {
        match name {
            "cluster" => Some(r.cluster.as_str()),
            "node" => Some(r.node.as_str()),
            other => {
                let key = other.strip_prefix("tag:").unwrap_or(other);
                r.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
            }
        }
    };
    match d {
        Dimension::Fleet => true,
        Dimension::Cluster(c) => r.cluster == **c,
        Dimension::Node(n) => r.node == **n,
        Dimension::Tag { key, value } => r.tags.iter().any(|(k, v)| k == &**key && v == &**value),
        Dimension::Set(pairs) => pairs.iter().all(|(f, v)| field(f) == Some(&**v)),
    }
}

/// The accepted records behind a point, by brute force over everything accepted.
fn brute_force(tee: &Tee, series: &SeriesKey, w: Window, lateness: Nanos) -> BTreeSet<RecordId> {
    tee.accepted
        .iter()
        .filter(|(_, (r, wm))| {
            r.metric == *series.metric
                && w.start <= r.time
                && r.time < w.end
                && brute_force_matches(&series.dimension, r)
                && *wm < w.end + lateness // not late for this window: !(end + L <= W)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Every record behind a point, page by page; checks the paging contract on the way.
fn drill_all(store: &EmbeddedStore, q: &DrillDown, page: usize) -> (Vec<RawRecordView>, usize) {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let p = store.drill_down(q, page, token.as_deref()).unwrap();
        pages += 1;
        assert!(p.records.len() <= page, "a page holds at most page_size records");
        let last = p.next_page_token.is_none();
        assert!(last || p.records.len() == page, "only the last page is short");
        assert!(!p.records.is_empty() || (last && pages == 1), "no empty page after the first");
        out.extend(p.records);
        match p.next_page_token {
            Some(t) => token = Some(t),
            None => return (out, pages),
        }
        assert!(pages <= 100_000, "paging terminates");
    }
}

#[derive(Debug, Default)]
struct Coverage {
    points: u64,
    multi_page: u64,
    partial: u64,
    dead: u64,
    retractions: u64,
    corrections: u64,
    kinds: BTreeSet<&'static str>,
    multi_bucket: u64,
}

/// Everything observable through the public API, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    counts: (u64, u64, u64),
    metrics: Vec<String>,
    dimensions: Vec<Vec<Dimension>>,
    points: Vec<String>,
    dead_letters: Vec<String>,
}

fn snapshot(store: &EmbeddedStore, spec: &WindowSpec) -> Snapshot {
    let c = store.counts().unwrap();
    let metrics = store.list_metrics().unwrap();
    let dimensions: Vec<Vec<Dimension>> = metrics.iter().map(|m| store.list_dimensions(m).unwrap()).collect();
    let mut points = Vec::new();
    for (m, dims) in metrics.iter().zip(&dimensions) {
        for d in dims {
            for p in store.query_points(m, d, spec, Nanos::MIN, Nanos::MAX).unwrap() {
                points.push(format!("{m}{{{d}}} {p:?}"));
            }
        }
    }
    let dead_letters =
        store.dead_letters(Nanos::MIN, Nanos::MAX, usize::MAX).unwrap().iter().map(|d| format!("{d:?}")).collect();
    Snapshot { counts: (c.aggregate_points, c.raw_rows, c.dead_letters), metrics, dimensions, points, dead_letters }
}

fn open(path: &Path, sc: &Scenario) -> EmbeddedStore {
    let cfg = StoreConfig { bucket_size: sc.bucket, salt_buckets: sc.salts, retention: 1 << 40 };
    EmbeddedStore::open(path, cfg).unwrap()
}

/// A batch as sent: agent number, sequence, records, raw payloads.
type Sent = (usize, u64, Vec<Record>, Vec<Option<Vec<u8>>>);

/// Runs one scenario through engine and store and checks the whole contract.
fn run(sc: &Scenario, cov: &mut Coverage) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = open(&path, sc);
    let config = engine_config(sc);
    let mut engine = WindowEngine::new(config.clone()).unwrap();
    let mut tee = Tee {
        sink: WriteBatchSink::new(sc.window),
        reference: LatestResults::default(),
        accepted: BTreeMap::new(),
        corrections: 0,
        partial: 0,
        dead: 0,
    };
    let mut written: Vec<WriteBatch> = Vec::new();
    let mut payloads: HashMap<RecordId, Vec<u8>> = HashMap::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut seqs = [0u64; 3];
    let mut now = T0;
    let flush = |tee: &mut Tee, written: &mut Vec<WriteBatch>| {
        let batch = tee.sink.take();
        store.write(&batch).unwrap();
        written.push(batch);
    };
    for step in &sc.steps {
        let flush_now = match step {
            Step::Batch { agent, advance, records, flush } => {
                now += i64::from(*advance);
                let a = *agent as usize;
                seqs[a] += 1;
                let recs: Vec<Record> = records.iter().map(|g| make_record(g, now)).collect();
                let pl: Vec<Option<Vec<u8>>> = records
                    .iter()
                    .enumerate()
                    .map(|(i, g)| g.payload.then(|| format!("raw {a}/{}/{i}", seqs[a]).into_bytes()))
                    .collect();
                for (i, p) in pl.iter().enumerate() {
                    if let Some(p) = p {
                        payloads.insert(
                            RecordId { agent: AGENTS[a].into(), sequence: seqs[a], index: i as u32 },
                            p.clone(),
                        );
                    }
                }
                tee.sink.begin(now, AGENTS[a], seqs[a], pl.clone());
                let batch = Batch { agent: AGENTS[a], sequence: seqs[a], records: &recs };
                engine.process_batch(&format!("p{a}"), &batch, now, &mut tee);
                sent.push((a, seqs[a], recs, pl));
                *flush
            }
            Step::Resend { back, flush } => {
                if let Some((a, seq, recs, pl)) = sent.iter().rev().nth(*back as usize).cloned() {
                    tee.sink.begin(now, AGENTS[a], seq, pl);
                    let batch = Batch { agent: AGENTS[a], sequence: seq, records: &recs };
                    assert!(engine.process_batch(&format!("p{a}"), &batch, now, &mut tee).duplicate);
                }
                *flush
            }
            Step::Tick { advance, flush } => {
                now += i64::from(*advance);
                tee.sink.begin(now, "", 0, Vec::new());
                engine.handle_tick(now, &mut tee);
                *flush
            }
        };
        if flush_now {
            flush(&mut tee, &mut written);
        }
    }
    engine.finish(&mut tee);
    flush(&mut tee, &mut written);

    // Stored points are the engine's latest results: one per key, nothing retracted left.
    let counts = store.counts().unwrap();
    assert_eq!(counts.aggregate_points, tee.reference.results.len() as u64, "one point per key");
    assert_eq!(counts.raw_rows, tee.accepted.len() as u64, "one raw row per accepted record");
    assert_eq!(counts.dead_letters, tee.dead, "one dead letter per invalid or dropped record");
    let mut dims: BTreeMap<String, BTreeSet<Dimension>> = BTreeMap::new();
    for ((series, start), want) in &tee.reference.results {
        dims.entry(series.metric.to_string()).or_default().insert(series.dimension.clone());
        let got = store.query_points(&series.metric, &series.dimension, &sc.window, *start, start + 1).unwrap();
        assert_eq!(got, std::slice::from_ref(want), "stored point of {series} at {start}");
    }
    for (metric, want) in &dims {
        let got: BTreeSet<Dimension> = store.list_dimensions(metric).unwrap().into_iter().collect();
        assert_eq!(&got, want, "dimensions of {metric}");
    }

    // Drill-down of every point: exactly its records.
    for ((series, _), point) in &tee.reference.results {
        let q = DrillDown {
            metric: series.metric.to_string(),
            dimension: series.dimension.clone(),
            window_spec: sc.window,
            window: point.window,
            allowed_lateness: sc.lateness,
        };
        let (records, pages) = drill_all(&store, &q, sc.page);
        let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
        let set: BTreeSet<RecordId> = ids.iter().cloned().collect();
        assert_eq!(set.len(), ids.len(), "no record twice in {series} {:?}", point.window);
        assert_eq!(ids.len() as u64, point.stats.count(), "count of {series} {:?}", point.window);
        assert_eq!(set, brute_force(&tee, series, point.window, sc.lateness), "records of {series} {:?}", point.window);
        let decimals: i128 =
            records.iter().filter_map(|r| if let Value::Decimal(n) = r.record.value { Some(n) } else { None }).sum();
        assert_eq!(decimals, point.stats.totals.decimal_sum, "exact decimal sum of {series}");
        let floats: Vec<f64> =
            records.iter().filter_map(|r| if let Value::Float(v) = r.record.value { Some(v) } else { None }).collect();
        assert_eq!(floats.len() as u64, point.stats.totals.float_count);
        let fsum: f64 = floats.iter().sum();
        let scale = floats.iter().map(|v| v.abs()).sum::<f64>() + 1.0;
        assert!((fsum - point.stats.totals.float_sum).abs() <= 1e-12 * scale, "float sum of {series}");
        for r in &records {
            let (rec, wm) = &tee.accepted[&r.id];
            assert_eq!((&r.record, r.watermark), (rec, *wm), "stored record {:?}", r.id);
            assert_eq!(r.raw.as_ref(), payloads.get(&r.id), "raw payload of {:?}", r.id);
        }
        // Same records in the same order in one page.
        let (whole, _) = drill_all(&store, &q, 10_000);
        assert_eq!(whole, records, "page order does not depend on the page size");
        cov.points += 1;
        cov.multi_page += u64::from(pages > 1);
        cov.multi_bucket += u64::from(point.window.end - point.window.start > sc.bucket);
    }

    // Dead letters are readable with their reason.
    for d in store.dead_letters(Nanos::MIN, Nanos::MAX, usize::MAX).unwrap() {
        assert!(d.reason.starts_with("invalid: ") || d.reason.starts_with("late: "), "{}", d.reason);
        assert_eq!(d.raw.as_ref(), payloads.get(&d.id));
    }

    // Re-writing every batch (a replay) changes nothing; so does reopening the file.
    let before = snapshot(&store, &sc.window);
    for b in &written {
        store.write(b).unwrap();
    }
    assert_eq!(snapshot(&store, &sc.window), before, "idempotent re-write");
    drop(store);
    let reopened = open(&path, sc);
    assert_eq!(snapshot(&reopened, &sc.window), before, "reopened store sees the data");

    cov.partial += tee.partial;
    cov.dead += tee.dead;
    cov.retractions += tee.reference.retractions;
    cov.corrections += tee.corrections;
    cov.kinds.insert(sc.window.kind_name());
}

#[test]
fn drill_down_returns_exactly_the_records_behind_every_point() {
    let cases: u32 = std::env::var("MESHMON_STORE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let cov = RefCell::new(Coverage::default());
    for kind in ["tumbling", "sliding", "session"] {
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        runner
            .run(&scenario_strategy(kind), |sc| {
                run(&sc, &mut cov.borrow_mut());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    let cov = cov.into_inner();
    println!("store property: {cases} cases per window kind, {cov:?}");
    assert_eq!(cov.kinds.len(), 3, "every window kind ran");
    assert!(cov.points > 1_000, "drilled into many points");
    assert!(cov.multi_page > 100, "paging exercised");
    assert!(cov.multi_bucket > 100, "windows spanning buckets exercised");
    assert!(cov.partial > 0, "partially late sliding records exercised");
    assert!(cov.dead > 0 && cov.retractions > 0 && cov.corrections > 0, "dead letters, retractions, corrections");
}

// ---------------------------------------------------------------- focused tests

fn rec(metric: &str, value: Value, time: Nanos, cluster: &str, node: &str, tags: &[(&str, &str)]) -> Record {
    Record {
        metric: metric.into(),
        value,
        time,
        cluster: cluster.into(),
        node: node.into(),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn series(metric: &str, dimension: Dimension) -> SeriesKey {
    SeriesKey { metric: metric.into(), dimension }
}

fn stats_of(values: &[(Value, Nanos)]) -> meshmon_aggregator::engine::Stats {
    let id = |i: usize| RecordId { agent: "a".into(), sequence: 1, index: i as u32 };
    let mut s = meshmon_aggregator::engine::Stats::of(values[0].0, values[0].1, id(0));
    for (i, &(v, t)) in values.iter().enumerate().skip(1) {
        s.merge(&meshmon_aggregator::engine::Stats::of(v, t, id(i)));
    }
    s
}

const SPEC: WindowSpec = WindowSpec::Tumbling { size: 10, offset: 0 };

fn upsert(s: &SeriesKey, start: Nanos, values: &[(Value, Nanos)], revision: u32) -> AggregateChange {
    AggregateChange::Upsert {
        series: s.clone(),
        window_spec: SPEC,
        window: Window { start, end: start + 10 },
        stats: stats_of(values),
        revision,
    }
}

fn small_store(dir: &Path, retention: Nanos) -> EmbeddedStore {
    EmbeddedStore::open(dir.join("s.redb"), StoreConfig { bucket_size: 10, salt_buckets: 4, retention }).unwrap()
}

#[test]
fn corrections_overwrite_and_retractions_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), 1 << 40);
    let fleet = series("m", Dimension::Fleet);
    let one = [(Value::Decimal(1), 3)];
    let two = [(Value::Decimal(1), 3), (Value::Decimal(2), 4)];
    store.write(&WriteBatch { aggregates: vec![upsert(&fleet, 0, &one, 0)], ..WriteBatch::default() }).unwrap();
    store.write(&WriteBatch { aggregates: vec![upsert(&fleet, 0, &two, 1)], ..WriteBatch::default() }).unwrap();
    let got = store.query_points("m", &Dimension::Fleet, &SPEC, 0, 100).unwrap();
    assert_eq!(got.len(), 1, "a correction overwrites");
    assert_eq!((got[0].revision, got[0].stats.count(), got[0].stats.sum()), (1, 2, Value::Decimal(3)));

    // In one batch: retract then re-emit the same key (a session completing again), and
    // emit then retract another.
    let aggregates = vec![
        AggregateChange::Retract { series: fleet.clone(), window_spec: SPEC, window_start: 0 },
        upsert(&fleet, 0, &one, 2),
        upsert(&fleet, 20, &one, 0),
        AggregateChange::Retract { series: fleet.clone(), window_spec: SPEC, window_start: 20 },
    ];
    store.write(&WriteBatch { aggregates, ..WriteBatch::default() }).unwrap();
    let got = store.query_points("m", &Dimension::Fleet, &SPEC, 0, 100).unwrap();
    assert_eq!(got.iter().map(|p| (p.window.start, p.revision)).collect::<Vec<_>>(), [(0, 2)], "applied in order");
    assert_eq!(store.counts().unwrap().aggregate_points, 1);
    let other_spec = WindowSpec::Tumbling { size: 20, offset: 0 };
    assert!(store.query_points("m", &Dimension::Fleet, &other_spec, 0, 100).unwrap().is_empty(), "specs are apart");
}

#[test]
fn lists_metrics_and_dimension_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), 1 << 40);
    let v = [(Value::Float(1.0), 1)];
    let set = Dimension::Set(vec![("cluster".into(), "c\0".into()), ("region".into(), "eu".into())].into());
    let dims = [
        Dimension::Fleet,
        Dimension::Cluster("c\0".into()),
        Dimension::Node("n1".into()),
        Dimension::Tag { key: "env".into(), value: "prod".into() },
        set,
    ];
    let aggregates = dims.iter().map(|d| upsert(&series("cpu", d.clone()), 0, &v, 0)).collect();
    store.write(&WriteBatch { aggregates, ..WriteBatch::default() }).unwrap();
    store
        .write(&WriteBatch {
            aggregates: vec![upsert(&series("mem", Dimension::Fleet), 0, &v, 0)],
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(store.list_metrics().unwrap(), ["cpu", "mem"]);
    assert_eq!(store.list_dimensions("cpu").unwrap(), dims);
    assert_eq!(store.list_dimensions("mem").unwrap(), [Dimension::Fleet]);
    assert!(store.list_dimensions("cp").unwrap().is_empty(), "a prefix of a metric is another metric");
}

/// A store holding one old and one new window of raw rows, points and dead letters.
fn aged_batch(store: &EmbeddedStore) -> WriteBatch {
    let mut sink = WriteBatchSink::new(SPEC);
    let mut engine = WindowEngine::new(EngineConfig {
        window: SPEC,
        out_of_orderness: 0,
        allowed_lateness: 0,
        idle_timeout: None,
        series_ttl: 0,
        limits: Limits { max_future: None, max_past: None, ..Limits::default() },
        ..EngineConfig::default()
    })
    .unwrap();
    let recs = [
        rec("m", Value::Decimal(5), 100, "c", "n", &[]),
        rec("m", Value::Float(f64::NAN), 101, "c", "n", &[]),
        rec("m", Value::Decimal(7), 1_000, "c", "n", &[]),
        rec("m", Value::Decimal(9), 105, "c", "n", &[]), // late: window [100, 110) fired
    ];
    for (i, r) in recs.iter().enumerate() {
        let now = r.time.max(100) + 1;
        sink.begin(now, "a", i as u64 + 1, vec![Some(b"p".to_vec())]);
        engine.process_batch(
            "p",
            &Batch { agent: "a", sequence: i as u64 + 1, records: std::slice::from_ref(r) },
            now,
            &mut sink,
        );
    }
    engine.finish(&mut sink);
    let batch = sink.take();
    store.write(&batch).unwrap();
    batch
}

#[test]
fn retention_removes_old_data_and_keeps_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), 500);
    aged_batch(&store);
    let before = store.counts().unwrap();
    assert_eq!((before.raw_rows, before.dead_letters), (2, 2));
    assert_eq!(before.aggregate_points, 2 * 3, "fleet, cluster and node × two windows");
    // now = 1 005: cutoff 505 — the window at 100 and its rows go, the one at 1 000 stays.
    let report = store.enforce_retention(1_005).unwrap();
    assert_eq!((report.cutoff, report.raw_rows, report.aggregate_points), (505, 1, 3));
    assert_eq!((report.dead_letters, report.dimensions), (2, 0), "dead letters arrived at 102 and 106");
    let after = store.counts().unwrap();
    assert_eq!((after.raw_rows, after.aggregate_points, after.dead_letters), (1, 3, 0));
    let kept = store.query_points("m", &Dimension::Node("n".into()), &SPEC, 0, 10_000).unwrap();
    assert_eq!(kept.iter().map(|p| p.window.start).collect::<Vec<_>>(), [1_000]);
    let q = DrillDown {
        metric: "m".into(),
        dimension: Dimension::Fleet,
        window_spec: SPEC,
        window: Window { start: 1_000, end: 1_010 },
        allowed_lateness: 0,
    };
    let page = store.drill_down(&q, 10, None).unwrap();
    assert_eq!(page.records.iter().map(|r| r.record.value).collect::<Vec<_>>(), [Value::Decimal(7)]);
    assert_eq!(page.records[0].raw.as_deref(), Some(b"p".as_slice()));
    // A second pass finds nothing more; much later everything goes, dimensions too.
    assert_eq!(store.enforce_retention(1_005).unwrap().raw_rows, 0);
    let all = store.enforce_retention(10_000).unwrap();
    assert_eq!((all.raw_rows, all.aggregate_points, all.dimensions), (1, 3, 3));
    assert!(store.list_dimensions("m").unwrap().is_empty());
}

#[test]
fn dead_letters_keep_reason_record_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), 1 << 40);
    aged_batch(&store);
    let dead = store.dead_letters(Nanos::MIN, Nanos::MAX, 10).unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0], "invalid: non_finite_value");
    assert!(reasons[1].starts_with("late: missed 1 of 1 windows"), "{}", reasons[1]);
    assert_eq!(
        (dead[1].record.value, dead[1].arrival, dead[1].raw.as_deref()),
        (Value::Decimal(9), 106, Some(b"p".as_slice()))
    );
    assert_eq!(store.dead_letters(102, 103, 10).unwrap().len(), 1, "by arrival time");
}

#[test]
fn reopening_sees_the_data_and_guards_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let cfg = StoreConfig { bucket_size: 10, salt_buckets: 4, retention: 1 << 40 };
    {
        let store = EmbeddedStore::open(&path, cfg).unwrap();
        aged_batch(&store);
    }
    let store = EmbeddedStore::open(&path, StoreConfig { retention: 5, ..cfg }).unwrap();
    assert_eq!(store.counts().unwrap().raw_rows, 2, "retention may change; data is there");
    assert_eq!(store.list_metrics().unwrap(), ["m"]);
    drop(store);
    for bad in [StoreConfig { bucket_size: 20, ..cfg }, StoreConfig { salt_buckets: 8, ..cfg }] {
        match EmbeddedStore::open(&path, bad) {
            Err(StoreError::LayoutMismatch { stored, configured }) => {
                assert!(stored.contains("bucket_size=10ns salt_buckets=4"), "{stored}");
                assert_ne!(stored, configured);
            }
            other => panic!("layout change must be refused, got {other:?}"),
        }
    }
    assert!(matches!(
        EmbeddedStore::open(dir.path().join("t.redb"), StoreConfig { salt_buckets: 0, ..cfg }),
        Err(StoreError::Config(_))
    ));
}

#[test]
fn drill_down_filters_dimensions_lateness_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path(), 1 << 40);
    let mut raw = Vec::new();
    let add = |raw: &mut Vec<_>, i: u32, r: Record, watermark: Nanos| {
        raw.push(meshmon_aggregator::store::RawWrite {
            id: RecordId { agent: "ag\0ent".into(), sequence: 1, index: i },
            record: r,
            raw: None,
            watermark,
        })
    };
    add(&mut raw, 0, rec("m", Value::Decimal(1), 10, "c1", "n1", &[("env", "prod")]), 0);
    add(&mut raw, 1, rec("m", Value::Decimal(2), 15, "c1", "n2", &[("env", "dev")]), 0);
    add(&mut raw, 2, rec("m", Value::Decimal(4), 19, "c2", "n1", &[("env", "prod")]), 0);
    add(&mut raw, 3, rec("m", Value::Decimal(8), 12, "c2", "n3", &[]), 25); // late for [10, 20) with lateness 5
    add(&mut raw, 4, rec("m", Value::Decimal(16), 20, "c1", "n1", &[]), 0); // next window
    add(&mut raw, 5, rec("x", Value::Decimal(32), 11, "c1", "n1", &[]), 0); // other metric
    store.write(&WriteBatch { raw, ..WriteBatch::default() }).unwrap();
    let sum = |d: Dimension| -> i128 {
        let q = DrillDown {
            metric: "m".into(),
            dimension: d,
            window_spec: SPEC,
            window: Window { start: 10, end: 20 },
            allowed_lateness: 5,
        };
        let (records, _) = drill_all(&store, &q, 1);
        records.iter().map(|r| if let Value::Decimal(n) = r.record.value { n } else { 0 }).sum()
    };
    assert_eq!(sum(Dimension::Fleet), 1 + 2 + 4);
    assert_eq!(sum(Dimension::Cluster("c1".into())), 1 + 2);
    assert_eq!(sum(Dimension::Node("n1".into())), 1 + 4, "a node in two clusters");
    assert_eq!(sum(Dimension::Node("n3".into())), 0, "its only record was late");
    assert_eq!(sum(Dimension::Tag { key: "env".into(), value: "prod".into() }), 1 + 4);
    let set = |pairs: &[(&str, &str)]| Dimension::Set(pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
    assert_eq!(sum(set(&[("cluster", "c2"), ("env", "prod")])), 4);
    assert_eq!(sum(set(&[("node", "n1"), ("cluster", "c1")])), 1);
    assert_eq!(sum(set(&[("cluster", "c1"), ("cluster", "c2")])), 0, "contradictory set");

    let q = DrillDown {
        metric: "m".into(),
        dimension: Dimension::Fleet,
        window_spec: SPEC,
        window: Window { start: 10, end: 20 },
        allowed_lateness: 100,
    };
    let first = store.drill_down(&q, 2, None).unwrap();
    assert_eq!(first.records.len(), 2);
    let token = first.next_page_token.unwrap();
    let second = store.drill_down(&q, 2, Some(&token)).unwrap();
    assert_eq!((second.records.len(), second.next_page_token.as_deref()), (2, None), "the late row counts with L=100");
    for bad in ["zz", "0", "02", &token[..token.len() - 2]] {
        assert!(matches!(store.drill_down(&q, 2, Some(bad)), Err(StoreError::InvalidPageToken(_))), "{bad}");
    }
    let other = DrillDown { metric: "x".into(), ..q.clone() };
    assert!(matches!(store.drill_down(&other, 2, Some(&token)), Err(StoreError::InvalidPageToken(_))));
    let empty = DrillDown { window: Window { start: 20, end: 20 }, ..q };
    assert!(store.drill_down(&empty, 2, None).unwrap().records.is_empty());
}

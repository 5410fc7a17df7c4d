//! Oracle property test of the window engine.
//!
//! For arbitrary streams — several inputs and agents, random disorder, records beyond the
//! allowed lateness, idle inputs, re-sent (duplicate) batches, invalid records — a small,
//! obviously-correct reference model replays the same steps (run through a single-shard
//! engine and a sharded one alike): it recomputes the watermark from
//! scratch, judges lateness by enumerating windows, and recomputes every window (or session)
//! by brute force over the accepted records. After **every** step the engine's keyed results
//! (latest per series and window start, retractions applied) must equal that recomputation
//! for all windows the watermark has passed, and every record must be accounted for exactly
//! once (accepted ∪ late ∪ invalid). Case count: `MESHMON_ORACLE_CASES` (default 2 000); the
//! test prints how many streams passed and what they exercised, and fails if the generator
//! stops reaching late, partially late, invalid, corrected, retracted, duplicate or idle paths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshmon_aggregator::engine::{
    Batch, Dimension, DimensionField, DimensionSpec, EngineConfig, InvalidReason, LatestResults, Limits, Nanos, Record,
    RecordId, SeriesKey, TagDimensions, Value, WindowEngine, WindowSpec,
};
use proptest::prelude::*;

mod common;

use common::stream::{MAX_FUTURE, Step, T0, make_record, step_strategy, window_strategy};

#[derive(Debug, Clone)]
struct Scenario {
    window: WindowSpec,
    ooo: Nanos,
    lateness: Nanos,
    idle: Option<Nanos>,
    series_ttl: Nanos,
    shards: usize,
    tags: TagDimensions,
    sets: Vec<Vec<DimensionField>>,
    steps: Vec<Step>,
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    let tags = prop_oneof![
        Just(TagDimensions::All),
        Just(TagDimensions::None),
        Just(TagDimensions::Only(vec!["env".into()])),
    ];
    let sets = prop_oneof![
        Just(vec![]),
        Just(vec![vec![DimensionField::Cluster, DimensionField::Tag("region".into())]]),
        Just(vec![vec![DimensionField::Node], vec![DimensionField::Tag("env".into()), DimensionField::Cluster]]),
    ];
    (
        window_strategy(),
        0i64..6,
        0i64..10,
        (prop::option::of(3i64..20), prop_oneof![Just(0i64), 1i64..30], 2usize..5),
        tags,
        sets,
        prop::collection::vec(step_strategy(), 1..50),
    )
        .prop_map(|(window, ooo, lateness, (idle, series_ttl, shards), tags, sets, steps)| Scenario {
            window,
            ooo,
            lateness,
            idle,
            series_ttl,
            shards,
            tags,
            sets,
            steps,
        })
}

// ---------------------------------------------------------------- the reference model

/// An accepted record, with the windows it missed (window starts), as the model judged it.
#[derive(Debug, Clone)]
struct Accepted {
    id: RecordId,
    record: Record,
    missed: BTreeSet<Nanos>,
    /// The watermark the record was judged against.
    watermark: Nanos,
}

#[derive(Debug)]
struct Model {
    sc: Scenario,
    now: Nanos,
    wm: Nanos,
    inputs: BTreeMap<String, (Option<Nanos>, Nanos)>,
    delivered: BTreeSet<(String, u64)>,
    accepted: Vec<Accepted>,
    late: BTreeSet<RecordId>,
    partial: BTreeSet<RecordId>,
    invalid: BTreeMap<RecordId, InvalidReason>,
    /// Watermark recomputations where an idle input was left out and that mattered.
    idle_releases: u64,
}

impl Model {
    fn model_invalid(&self, r: &Record) -> Option<InvalidReason> {
        if r.tags.iter().any(|(k, v)| k.contains('\n') || v.contains('\n')) {
            return Some(InvalidReason::ControlCharacter);
        }
        if let Value::Float(v) = r.value
            && v.is_nan()
        {
            return Some(InvalidReason::NonFiniteValue);
        }
        if r.metric.is_empty() {
            return Some(InvalidReason::EmptyMetric);
        }
        if r.time > (1 << 62) {
            return Some(InvalidReason::AbsurdTime);
        }
        if r.time > self.now + MAX_FUTURE {
            return Some(InvalidReason::FutureTime);
        }
        None
    }

    /// All windows (start, end) holding t, by enumeration.
    fn windows_of(&self, t: Nanos) -> Vec<(Nanos, Nanos)> {
        let (size, slide, offset) = match self.sc.window {
            WindowSpec::Tumbling { size, offset } => (size, size, offset),
            WindowSpec::Sliding { size, slide, offset } => (size, slide, offset),
            WindowSpec::Session { .. } => unreachable!(),
        };
        let k0 = (t - offset).div_euclid(slide);
        (k0 - size / slide - 2..=k0 + 1)
            .map(|k| (offset + k * slide, offset + k * slide + size))
            .filter(|&(s, e)| s <= t && t < e)
            .collect()
    }

    fn recompute_watermark(&mut self) {
        let wms: Vec<(Nanos, bool)> = self
            .inputs
            .values()
            .filter_map(|&(max, last)| {
                let idle = self.sc.idle.is_some_and(|i| self.now - last > i);
                max.map(|m| (m - self.sc.ooo, idle))
            })
            .collect();
        let active = wms.iter().filter(|(_, idle)| !idle).map(|(w, _)| *w).min();
        let all = wms.iter().map(|(w, _)| *w).max();
        let held = wms.iter().map(|(w, _)| *w).min();
        if active.or(all) > held && active.or(all) > Some(self.wm) {
            self.idle_releases += 1;
        }
        if let Some(c) = active.or(all) {
            self.wm = self.wm.max(c);
        }
    }

    fn batch(&mut self, input: &str, agent: &str, seq: u64, records: &[Record], now: Nanos) {
        self.now = self.now.max(now);
        if !self.delivered.insert((agent.to_string(), seq)) {
            return;
        }
        let mut max_event: Option<Nanos> = None;
        for (i, r) in records.iter().enumerate() {
            let id = RecordId { agent: agent.into(), sequence: seq, index: i as u32 };
            if let Some(reason) = self.model_invalid(r) {
                self.invalid.insert(id, reason);
                continue;
            }
            max_event = Some(max_event.map_or(r.time, |m: Nanos| m.max(r.time)));
            let (missed, total): (BTreeSet<Nanos>, usize) = match self.sc.window {
                WindowSpec::Session { gap } => {
                    let late = r.time + gap + self.sc.lateness <= self.wm;
                    (if late { BTreeSet::from([r.time]) } else { BTreeSet::new() }, 1)
                }
                _ => {
                    let ws = self.windows_of(r.time);
                    let missed = ws.iter().filter(|(_, e)| e + self.sc.lateness <= self.wm).map(|(s, _)| *s).collect();
                    (missed, ws.len())
                }
            };
            if missed.len() == total {
                self.late.insert(id);
                continue;
            }
            if !missed.is_empty() {
                self.partial.insert(id.clone());
            }
            self.accepted.push(Accepted { id, record: r.clone(), missed, watermark: self.wm });
        }
        let entry = self.inputs.entry(input.to_string()).or_insert((None, now));
        entry.1 = entry.1.max(self.now);
        if let Some(m) = max_event {
            entry.0 = Some(entry.0.map_or(m, |x| x.max(m)));
        }
        self.recompute_watermark();
    }

    fn tick(&mut self, now: Nanos) {
        self.now = self.now.max(now);
        self.recompute_watermark();
    }

    fn series_of(&self, r: &Record) -> Vec<SeriesKey> {
        let metric: Arc<str> = r.metric.as_str().into();
        let mut dims = vec![Dimension::Fleet];
        if !r.cluster.is_empty() {
            dims.push(Dimension::Cluster(r.cluster.as_str().into()));
        }
        dims.push(Dimension::Node(r.node.as_str().into()));
        for (k, v) in &r.tags {
            let on = match &self.sc.tags {
                TagDimensions::All => true,
                TagDimensions::None => false,
                TagDimensions::Only(keys) => keys.contains(k),
            };
            if on {
                dims.push(Dimension::Tag { key: k.as_str().into(), value: v.as_str().into() });
            }
        }
        'sets: for set in &self.sc.sets {
            let mut pairs: Vec<(Arc<str>, Arc<str>)> = Vec::new();
            for f in set {
                let v = match f {
                    DimensionField::Cluster => r.cluster.clone(),
                    DimensionField::Node => r.node.clone(),
                    DimensionField::Tag(k) => match r.tags.iter().find(|(tk, _)| tk == k) {
                        Some((_, v)) => v.clone(),
                        None => continue 'sets,
                    },
                };
                if v.is_empty() {
                    continue 'sets;
                }
                pairs.push((f.to_string().into(), v.into()));
            }
            dims.push(Dimension::Set(pairs.into()));
        }
        dims.into_iter().map(|dimension| SeriesKey { metric: metric.clone(), dimension }).collect()
    }

    /// Every window the watermark has passed, recomputed from the accepted records.
    fn expected(&self) -> BTreeMap<(SeriesKey, Nanos), (Nanos, Vec<&Accepted>)> {
        let mut groups: BTreeMap<(SeriesKey, Nanos), (Nanos, Vec<&Accepted>)> = BTreeMap::new();
        match self.sc.window {
            WindowSpec::Session { gap } => {
                let mut by_series: BTreeMap<SeriesKey, Vec<&Accepted>> = BTreeMap::new();
                for a in &self.accepted {
                    for k in self.series_of(&a.record) {
                        by_series.entry(k).or_default().push(a);
                    }
                }
                for (k, mut recs) in by_series {
                    recs.sort_by_key(|a| a.record.time);
                    let mut session: Vec<&Accepted> = Vec::new();
                    for a in recs {
                        if let Some(prev) = session.last()
                            && a.record.time - prev.record.time >= gap
                        {
                            let (start, end) = (session[0].record.time, prev.record.time + gap);
                            groups.insert((k.clone(), start), (end, std::mem::take(&mut session)));
                        }
                        session.push(a);
                    }
                    if let Some(last) = session.last() {
                        let (start, end) = (session[0].record.time, last.record.time + gap);
                        groups.insert((k.clone(), start), (end, session));
                    }
                }
            }
            _ => {
                for a in &self.accepted {
                    for (start, end) in self.windows_of(a.record.time) {
                        if a.missed.contains(&start) {
                            continue;
                        }
                        for k in self.series_of(&a.record) {
                            groups.entry((k, start)).or_insert_with(|| (end, Vec::new())).1.push(a);
                        }
                    }
                }
            }
        }
        groups.retain(|_, (end, _)| *end <= self.wm);
        groups
    }
}

fn check_stats(key: &(SeriesKey, Nanos), got: &meshmon_aggregator::engine::Stats, recs: &[&Accepted]) {
    assert_eq!(got.totals.count, recs.len() as u64, "count of {key:?}");
    let floats: Vec<f64> =
        recs.iter().filter_map(|a| if let Value::Float(v) = a.record.value { Some(v) } else { None }).collect();
    let decimals: i128 =
        recs.iter().filter_map(|a| if let Value::Decimal(n) = a.record.value { Some(n) } else { None }).sum();
    assert_eq!(got.totals.float_count, floats.len() as u64, "float count of {key:?}");
    assert_eq!(got.totals.decimal_sum, decimals, "exact decimal sum of {key:?}");
    let fsum: f64 = floats.iter().sum();
    let scale: f64 = floats.iter().map(|v| v.abs()).sum::<f64>() + 1.0;
    assert!(
        (got.totals.float_sum - fsum).abs() <= 1e-12 * scale,
        "float sum of {key:?}: {} vs {fsum}",
        got.totals.float_sum
    );
    let min = recs.iter().map(|a| a.record.value).min_by(|a, b| a.total_cmp(*b)).unwrap();
    let max = recs.iter().map(|a| a.record.value).max_by(|a, b| a.total_cmp(*b)).unwrap();
    assert!(got.totals.min.total_cmp(min).is_eq(), "min of {key:?}: {:?} vs {min:?}", got.totals.min);
    assert!(got.totals.max.total_cmp(max).is_eq(), "max of {key:?}: {:?} vs {max:?}", got.totals.max);
    let last = recs.iter().max_by(|a, b| (a.record.time, &a.id).cmp(&(b.record.time, &b.id))).unwrap();
    assert_eq!((got.last_time, &got.last_id), (last.record.time, &last.id), "last of {key:?}");
    assert!(got.last.total_cmp(last.record.value).is_eq(), "last value of {key:?}");
}

/// Runs one scenario through engine and model, checking after every step; returns the
/// engine's counters and how often an idle input stopped holding the watermark back.
fn run(sc: Scenario) -> (meshmon_aggregator::engine::EngineCounters, u64) {
    let config = EngineConfig {
        window: sc.window,
        out_of_orderness: sc.ooo,
        allowed_lateness: sc.lateness,
        idle_timeout: sc.idle,
        series_ttl: sc.series_ttl,
        dimensions: DimensionSpec {
            fleet: true,
            cluster: true,
            node: true,
            tags: sc.tags.clone(),
            sets: sc.sets.clone(),
        },
        limits: Limits { max_future: Some(MAX_FUTURE), max_past: None, ..Limits::default() },
    };
    // The single-shard engine and a sharded one (series spread by metric) see the same calls;
    // both must match the model at every step.
    let mut engines = [
        (WindowEngine::new(config.clone()).unwrap(), LatestResults::default()),
        (WindowEngine::with_shards(config, sc.shards).unwrap(), LatestResults::default()),
    ];
    let mut model = Model {
        sc: sc.clone(),
        now: T0,
        wm: Nanos::MIN,
        inputs: BTreeMap::new(),
        delivered: BTreeSet::new(),
        accepted: Vec::new(),
        late: BTreeSet::new(),
        partial: BTreeSet::new(),
        invalid: BTreeMap::new(),
        idle_releases: 0,
    };
    let mut now = T0;
    let mut seqs = [0u64; 3];
    let mut sent: Vec<(String, String, u64, Vec<Record>)> = Vec::new();
    let mut records_in = 0u64;
    for (n, step) in sc.steps.iter().enumerate() {
        match step {
            Step::Batch { input, agent, advance, records } => {
                now += i64::from(*advance);
                seqs[*agent as usize] += 1;
                let mut recs: Vec<Record> = Vec::new();
                for g in records {
                    let mut r = make_record(g, now, 2);
                    if let Some(prev) = recs.last().filter(|_| g.same_context) {
                        (r.cluster, r.node, r.tags) = (prev.cluster.clone(), prev.node.clone(), prev.tags.clone());
                    }
                    recs.push(r);
                }
                let (input, agent) = (format!("p{input}"), format!("a{agent}"));
                let seq = seqs[agent.as_bytes()[1] as usize - b'0' as usize];
                for (engine, out) in &mut engines {
                    engine.process_batch(&input, &Batch { agent: &agent, sequence: seq, records: &recs }, now, out);
                }
                model.batch(&input, &agent, seq, &recs, now);
                records_in += recs.len() as u64;
                sent.push((input, agent, seq, recs));
            }
            Step::Resend { back, advance } => {
                now += i64::from(*advance);
                if let Some((input, agent, seq, recs)) = sent.iter().rev().nth(*back as usize).cloned() {
                    for (engine, out) in &mut engines {
                        let batch = Batch { agent: &agent, sequence: seq, records: &recs };
                        assert!(engine.process_batch(&input, &batch, now, out).duplicate, "re-sent batch recognised");
                    }
                    model.batch(&input, &agent, seq, &recs, now);
                }
            }
            Step::Tick { advance } => {
                now += i64::from(*advance);
                for (engine, out) in &mut engines {
                    engine.handle_tick(now, out);
                }
                model.tick(now);
            }
        }
        for (engine, out) in &engines {
            assert_eq!(engine.watermark(), model.wm, "watermark after step {n}");
            compare(&model, out, n);
        }
    }
    model.wm = Nanos::MAX;
    for (engine, out) in &mut engines {
        engine.finish(out);
        compare(&model, out, usize::MAX);
        check_accounting(&model, engine, out, records_in);
    }
    (engines[0].0.counters(), model.idle_releases)
}

/// Every record of a first delivery is accepted, late or invalid — once — and all state is
/// freed after `finish`.
fn check_accounting(model: &Model, engine: &WindowEngine, out: &LatestResults, records_in: u64) {
    let accepted: BTreeMap<RecordId, Nanos> = out.accepted.iter().cloned().collect();
    let want: BTreeMap<RecordId, Nanos> = model.accepted.iter().map(|a| (a.id.clone(), a.watermark)).collect();
    assert_eq!(out.accepted.len(), accepted.len(), "each record accepted once");
    assert_eq!(accepted, want, "accepted records and their arrival watermarks");
    let c = engine.counters();
    assert_eq!(c.records_in, records_in);
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.accepted as usize, model.accepted.len());
    let late: BTreeSet<RecordId> = out.late.iter().filter(|l| l.2 == l.3).map(|l| l.0.clone()).collect();
    let partial: BTreeSet<RecordId> = out.late.iter().filter(|l| l.2 < l.3).map(|l| l.0.clone()).collect();
    assert_eq!(late, model.late, "late output");
    assert_eq!(partial, model.partial, "partially late output");
    let invalid: BTreeMap<RecordId, InvalidReason> = out.invalid.iter().map(|i| (i.0.clone(), i.2)).collect();
    assert_eq!(invalid, model.invalid, "invalid output");
    assert_eq!(engine.state_size(), 0, "all state freed after finish");
    assert_eq!(engine.series_count(), 0, "all series released after finish");
}

fn compare(model: &Model, out: &LatestResults, step: usize) {
    let expected = model.expected();
    let got: Vec<_> = out.results.keys().collect();
    let want: Vec<_> = expected.keys().collect();
    assert_eq!(got, want, "result keys after step {step} (watermark {})", model.wm);
    for (key, (end, recs)) in &expected {
        let stored = &out.results[key];
        assert_eq!(stored.window.end, *end, "window end of {key:?}");
        check_stats(key, &stored.stats, recs);
    }
}

fn cases() -> u32 {
    std::env::var("MESHMON_ORACLE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// What the generated streams exercised, summed over all cases.
#[derive(Debug, Default)]
struct Coverage {
    cases: u64,
    records: u64,
    late_dropped: u64,
    late_partial: u64,
    invalid: u64,
    corrections: u64,
    retractions: u64,
    duplicate_batches: u64,
    idle_releases: u64,
}

#[test]
fn engine_equals_batch_recomputation() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = cases();
    let mut runner =
        TestRunner::new(Config { cases, max_shrink_iters: 20_000, source_file: Some(file!()), ..Config::default() });
    let coverage = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&scenario_strategy(), |sc| {
        let (counters, idle_releases) = run(sc);
        let mut c = coverage.borrow_mut();
        c.cases += 1;
        c.records += counters.records_in;
        c.late_dropped += counters.late_dropped;
        c.late_partial += counters.late_partial;
        c.invalid += counters.invalid_total();
        c.corrections += counters.corrections;
        c.retractions += counters.retractions;
        c.duplicate_batches += counters.duplicate_batches;
        c.idle_releases += idle_releases;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    eprintln!("oracle: {} generated streams passed (>= {cases} cases): {c:?}", c.cases);
    assert!(c.cases >= u64::from(cases));
    // The generator must keep reaching every path the oracle is meant to check.
    for (what, n) in [
        ("late records", c.late_dropped),
        ("partially late records", c.late_partial),
        ("invalid records", c.invalid),
        ("corrections", c.corrections),
        ("session retractions", c.retractions),
        ("duplicate batches", c.duplicate_batches),
        ("idle inputs released", c.idle_releases),
    ] {
        assert!(cases < 200 || n > 0, "no {what} in {} cases: the generator lost coverage", c.cases);
    }
}

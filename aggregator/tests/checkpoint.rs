//! Checkpoint property test: snapshot → encode → decode → restore is invisible in the results.
//!
//! For arbitrary streams (several inputs and agents, disorder, records past the allowed
//! lateness, re-sent batches, invalid records, ticks, idle inputs, sometimes a tight live-series
//! limit) and every window kind, engine A runs uninterrupted while engine B, fed the same calls,
//! is cut at a random step: snapshot, encode, decode, restore — with a shard count that may
//! differ (1..=4 before, 1..=4 after) — and continues. At the end, B must equal A: the latest
//! result per (series, window start) with retractions applied, the multisets of accepted, late
//! and invalid records, every counter, and, per (series, window), the sequence of results
//! (revision and statistics) and retractions emitted after the cut.
//!
//! A restore counts as activity on every watermark input (`docs/SEMANTICS.md`, "Checkpoints
//! and restore"); A models that by a batch without records on each known input at the cut
//! (so A's `batches` counter is higher by that many). Also checked: decoded snapshots equal the
//! encoded ones, a restored engine's snapshot holds the same series and state, corrupt or
//! truncated bytes are errors, a configuration mismatch is refused, and an empty engine
//! round-trips. Cases: `MESHMON_CHECKPOINT_CASES` (default 2 000) for the main property.
//!
//! The 1 M-series size and speed measurement is `aggregator/examples/snapshot_profile.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use meshmon_aggregator::engine::{
    Batch, DimensionField, DimensionSpec, EngineConfig, EngineCounters, EngineOutput, EngineSnapshot, GateSnapshot,
    IngestGate, InvalidReason, InvalidRecord, LateRecord, LatestResults, Limits, Nanos, Record, RecordId, RestoreError,
    SeriesKey, SeriesSnapshot, ShardEngine, SnapshotError, Stats, TagDimensions, Value, WindowEngine, WindowResult,
    WindowSpec, shard_of, split_shards,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

mod common;

use common::stream::{MAX_FUTURE, Step, T0, make_record, step_strategy, window_strategy};

// ---------------------------------------------------------------- generated streams

#[derive(Debug, Clone)]
struct Scenario {
    window: WindowSpec,
    ooo: Nanos,
    lateness: Nanos,
    idle: Option<Nanos>,
    series_ttl: Nanos,
    tags: TagDimensions,
    sets: Vec<Vec<DimensionField>>,
    /// A tight live-series limit (then the shard count stays: per-shard limits would differ).
    max_series: Option<usize>,
    shards_before: usize,
    shards_after: usize,
    steps: Vec<Step>,
    cut: prop::sample::Index,
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
        (0i64..6, 0i64..10, prop::option::of(3i64..20), prop_oneof![Just(0i64), 1i64..30]),
        tags,
        sets,
        prop::option::weighted(0.2, 6usize..40),
        (1usize..=4, 1usize..=4),
        prop::collection::vec(step_strategy(), 1..40),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(window, (ooo, lateness, idle, series_ttl), tags, sets, max_series, (before, after), steps, cut)| {
                Scenario {
                    window,
                    ooo,
                    lateness,
                    idle,
                    series_ttl,
                    tags,
                    sets,
                    max_series,
                    shards_before: before,
                    shards_after: if max_series.is_some() { before } else { after },
                    steps,
                    cut,
                }
            },
        )
}

fn config_of(sc: &Scenario) -> EngineConfig {
    EngineConfig {
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
        limits: Limits {
            max_future: Some(MAX_FUTURE),
            max_past: None,
            max_series: sc.max_series.unwrap_or(Limits::default().max_series),
            ..Limits::default()
        },
    }
}

// ---------------------------------------------------------------- recording output

/// What one (series, window start) key received.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Result { end: Nanos, revision: u32, stats: Box<Stats> },
    Retract,
}

/// A keyed store ([`LatestResults`]) plus, from `recording` on, every event per key.
#[derive(Debug, Default)]
struct Recorder {
    latest: LatestResults,
    recording: bool,
    events: BTreeMap<(SeriesKey, Nanos), Vec<Event>>,
}

impl EngineOutput for Recorder {
    fn accepted(&mut self, a: meshmon_aggregator::engine::AcceptedRecord<'_>) {
        self.latest.accepted(a);
    }
    fn result(&mut self, r: WindowResult<'_>) {
        if self.recording {
            let event = Event::Result { end: r.window.end, revision: r.revision, stats: Box::new(r.stats.clone()) };
            self.events.entry((r.series.clone(), r.window.start)).or_default().push(event);
        }
        self.latest.result(r);
    }
    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        if self.recording {
            self.events.entry((series.clone(), window_start)).or_default().push(Event::Retract);
        }
        self.latest.retract(series, window_start);
    }
    fn late(&mut self, l: LateRecord<'_>) {
        self.latest.late(l);
    }
    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.latest.invalid(i);
    }
}

// ---------------------------------------------------------------- the property

/// What the generated streams exercised, summed over all cases.
#[derive(Debug, Default)]
struct Coverage {
    cases: u64,
    resharded: u64,
    series_at_cut: u64,
    state_at_cut: u64,
    reaper_entries_at_cut: u64,
    events_after_cut: u64,
    corrections_after_cut: u64,
    retractions_after_cut: u64,
    late: u64,
    invalid: u64,
    cardinality_refused: u64,
    idle_inputs_refreshed: u64,
}

/// Series of all shards, sorted by key (a layout-independent view of a snapshot).
fn all_series(s: &EngineSnapshot) -> Vec<SeriesSnapshot> {
    let mut v: Vec<SeriesSnapshot> = s.shards.iter().flat_map(|p| p.series.iter().cloned()).collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn shard_counters(s: &EngineSnapshot) -> EngineCounters {
    let mut total = EngineCounters::default();
    for p in &s.shards {
        total += &p.counters;
    }
    total
}

/// The cut: snapshot B, encode, decode, restore with `shards` shards at `now`; A gets one
/// empty batch per known input (restore counts as activity). Returns how many.
fn cut(
    config: &EngineConfig,
    a: &mut (WindowEngine, Recorder),
    b: &mut (WindowEngine, Recorder),
    shards: usize,
    now: Nanos,
    coverage: &mut Coverage,
) -> u64 {
    for (engine, out) in [&mut *a, &mut *b] {
        engine.handle_tick(now, out);
        out.recording = true;
    }
    let snapshot = b.0.snapshot();
    let bytes = snapshot.encode();
    let decoded = EngineSnapshot::decode(&bytes).unwrap();
    assert_eq!(decoded, snapshot, "decode(encode(s)) == s");
    let restored = WindowEngine::restore(config.clone(), shards, decoded, now).unwrap();

    // The restored engine holds the same logical state, whatever its shard count.
    let again = restored.snapshot();
    assert_eq!(again.shards.len(), shards);
    assert_eq!(all_series(&again), all_series(&snapshot), "series and window state survive a restore");
    assert_eq!(shard_counters(&again), shard_counters(&snapshot));
    let (mut g0, mut g1) = (snapshot.gate.clone(), again.gate.clone());
    for i in g1.inputs.iter_mut() {
        assert_eq!(i.last_active, now, "restore resets last_active to the restore time");
    }
    for i in g0.inputs.iter_mut().chain(g1.inputs.iter_mut()) {
        i.last_active = 0;
    }
    assert_eq!(g0, g1, "gate state survives a restore");
    assert_eq!(restored.counters(), b.0.counters());
    assert_eq!(restored.series_count(), b.0.series_count());
    assert_eq!(restored.state_size(), b.0.state_size());
    assert_eq!(restored.watermark(), b.0.watermark());

    coverage.resharded += u64::from(shards != b.0.shards().len());
    coverage.series_at_cut += snapshot.series_count() as u64;
    coverage.state_at_cut += b.0.state_size() as u64;
    coverage.reaper_entries_at_cut += all_series(&snapshot).iter().map(|s| s.reap_since.len() as u64).sum::<u64>();
    b.0 = restored;

    let mut refreshed = 0;
    if config.idle_timeout.is_some() {
        let inputs = a.0.tracker().inputs(now);
        coverage.idle_inputs_refreshed += inputs.iter().filter(|i| i.idle).count() as u64;
        for input in inputs {
            a.0.process_batch(&input.input, &Batch { agent: "restart", sequence: 0, records: &[] }, now, &mut a.1);
            refreshed += 1;
        }
    }
    refreshed
}

fn run(sc: &Scenario, coverage: &mut Coverage) {
    let config = config_of(sc);
    let mut a = (WindowEngine::with_shards(config.clone(), sc.shards_before).unwrap(), Recorder::default());
    let mut b = (WindowEngine::with_shards(config.clone(), sc.shards_before).unwrap(), Recorder::default());
    let cut_at = sc.cut.index(sc.steps.len() + 1);
    let mut now = T0;
    let mut seqs = [0u64; 3];
    let mut sent: Vec<(String, String, u64, Vec<Record>)> = Vec::new();
    let mut extra_batches = 0;
    for (n, step) in sc.steps.iter().enumerate() {
        if n == cut_at {
            extra_batches = cut(&config, &mut a, &mut b, sc.shards_after, now, coverage);
        }
        match step {
            Step::Batch { input, agent, advance, records } => {
                now += i64::from(*advance);
                seqs[*agent as usize] += 1;
                let mut recs: Vec<Record> = Vec::new();
                for g in records {
                    let mut r = make_record(g, now, 5);
                    if let Some(prev) = recs.last().filter(|_| g.same_context) {
                        (r.cluster, r.node, r.tags) = (prev.cluster.clone(), prev.node.clone(), prev.tags.clone());
                    }
                    recs.push(r);
                }
                let (input, agent, seq) = (format!("p{input}"), format!("a{agent}"), seqs[*agent as usize]);
                for (engine, out) in [&mut a, &mut b] {
                    engine.process_batch(&input, &Batch { agent: &agent, sequence: seq, records: &recs }, now, out);
                }
                sent.push((input, agent, seq, recs));
            }
            Step::Resend { back, advance } => {
                now += i64::from(*advance);
                if let Some((input, agent, seq, recs)) = sent.iter().rev().nth(*back as usize) {
                    for (engine, out) in [&mut a, &mut b] {
                        let batch = Batch { agent, sequence: *seq, records: recs };
                        assert!(engine.process_batch(input, &batch, now, out).duplicate);
                    }
                }
            }
            Step::Tick { advance } => {
                now += i64::from(*advance);
                for (engine, out) in [&mut a, &mut b] {
                    engine.handle_tick(now, out);
                }
            }
        }
        assert_eq!(a.0.watermark(), b.0.watermark(), "watermark after step {n}");
    }
    if cut_at == sc.steps.len() {
        extra_batches = cut(&config, &mut a, &mut b, sc.shards_after, now, coverage);
    }
    assert_eq!(a.0.series_count(), b.0.series_count(), "live series before finish");
    assert_eq!(a.0.state_size(), b.0.state_size(), "state size before finish");
    assert_eq!(a.1.latest.results, b.1.latest.results, "stored results before finish");
    for (engine, out) in [&mut a, &mut b] {
        engine.finish(out);
    }
    compare(&a, &b, extra_batches);

    let c = b.0.counters();
    coverage.cases += 1;
    coverage.late += c.late_dropped + c.late_partial;
    coverage.invalid += c.invalid_total();
    coverage.cardinality_refused += c.invalid[InvalidReason::CardinalityLimit.index()];
    for events in b.1.events.values() {
        coverage.events_after_cut += events.len() as u64;
        coverage.retractions_after_cut += events.iter().filter(|e| **e == Event::Retract).count() as u64;
        coverage.corrections_after_cut +=
            events.iter().filter(|e| matches!(e, Event::Result { revision, .. } if *revision > 0)).count() as u64;
    }
}

fn compare(a: &(WindowEngine, Recorder), b: &(WindowEngine, Recorder), extra_batches: u64) {
    let (ra, rb) = (&a.1.latest, &b.1.latest);
    assert_eq!(ra.results, rb.results, "latest result per (series, window start)");
    assert_eq!(a.1.events, b.1.events, "per (series, window): results and retractions after the cut");
    let sorted = |mut v: Vec<(RecordId, Nanos)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(ra.accepted.clone()), sorted(rb.accepted.clone()), "accepted records and their watermarks");
    let late = |r: &LatestResults| {
        let mut v: Vec<(RecordId, u32, u32)> = r.late.iter().map(|l| (l.0.clone(), l.2, l.3)).collect();
        v.sort();
        v
    };
    assert_eq!(late(ra), late(rb), "late records");
    let invalid = |r: &LatestResults| {
        let mut v: Vec<(RecordId, &'static str)> = r.invalid.iter().map(|i| (i.0.clone(), i.2.as_str())).collect();
        v.sort();
        v
    };
    assert_eq!(invalid(ra), invalid(rb), "invalid records");
    assert_eq!((ra.emissions, ra.retractions), (rb.emissions, rb.retractions), "emission totals");
    let mut ca = a.0.counters();
    ca.batches -= extra_batches;
    assert_eq!(ca, b.0.counters(), "counters");
    assert_eq!(a.0.dedup_gaps_abandoned(), b.0.dedup_gaps_abandoned());
    assert_eq!((b.0.series_count(), b.0.state_size()), (0, 0), "all state freed after finish");
}

fn cases() -> u32 {
    std::env::var("MESHMON_CHECKPOINT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

#[test]
fn restore_at_any_cut_with_any_shard_count_changes_no_result() {
    let cases = cases();
    let mut runner = TestRunner::new(Config { cases, source_file: Some(file!()), ..Config::default() });
    let coverage = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&scenario_strategy(), |sc| {
        run(&sc, &mut coverage.borrow_mut());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let c = coverage.into_inner();
    eprintln!("checkpoint: {} generated streams passed: {c:?}", c.cases);
    for (what, n) in [
        ("re-sharded restores", c.resharded),
        ("series at the cut", c.series_at_cut),
        ("window state at the cut", c.state_at_cut),
        ("reaper entries at the cut", c.reaper_entries_at_cut),
        ("emissions after the cut", c.events_after_cut),
        ("corrections after the cut", c.corrections_after_cut),
        ("retractions after the cut", c.retractions_after_cut),
        ("late records", c.late),
        ("invalid records", c.invalid),
        ("cardinality refusals", c.cardinality_refused),
        ("idle inputs refreshed by a restore", c.idle_inputs_refreshed),
    ] {
        assert!(cases < 200 || n > 0, "no {what} in {} cases: the generator lost coverage", c.cases);
    }
}

// ---------------------------------------------------------------- encoding and refusals

/// An engine with some state of every kind: windows fired and pending, a late record, a
/// duplicate, an invalid record, two inputs.
fn busy_engine(window: WindowSpec, shards: usize) -> (EngineConfig, WindowEngine) {
    let config = EngineConfig {
        window,
        out_of_orderness: 2,
        allowed_lateness: 5,
        idle_timeout: Some(50),
        series_ttl: 20,
        limits: Limits { max_future: Some(MAX_FUTURE), max_past: None, ..Limits::default() },
        ..EngineConfig::default()
    };
    let mut e = WindowEngine::with_shards(config.clone(), shards).unwrap();
    let mut out = LatestResults::default();
    let rec = |metric: &str, node: &str, value: Value, time: Nanos| Record {
        metric: metric.into(),
        value,
        time,
        cluster: "c".into(),
        node: node.into(),
        tags: vec![("env".into(), "prod".into())],
    };
    for (i, t) in [100, 103, 101, 110, 95, 130, 131, 104].into_iter().enumerate() {
        let records = [
            rec("cpu", "n1", Value::Float(t as f64 * 0.25), t),
            rec("mem", &format!("n{}", i % 3), Value::Decimal(-(t as i128) * 1_000_000_007), t - 1),
            rec("disk", "n2", Value::Float(f64::NAN), t),
        ];
        let input = if i % 2 == 0 { "p0" } else { "p1" };
        let batch = Batch { agent: "agent-é", sequence: i as u64 + 1, records: &records };
        e.process_batch(input, &batch, 140, &mut out);
        if i == 3 {
            e.process_batch(input, &batch, 140, &mut out);
        }
    }
    (config, e)
}

#[test]
fn corrupt_or_truncated_bytes_are_errors() {
    let (_, e) = busy_engine(WindowSpec::Session { gap: 4 }, 2);
    let bytes = e.snapshot().encode();
    assert!(EngineSnapshot::decode(&bytes).is_ok());
    for len in 0..bytes.len() {
        let err = EngineSnapshot::decode(&bytes[..len]).unwrap_err();
        assert!(matches!(err, SnapshotError::Truncated { .. }), "prefix of {len} bytes: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(EngineSnapshot::decode(&longer), Err(SnapshotError::TrailingBytes { extra: 1 })));
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let err = EngineSnapshot::decode(&flipped).unwrap_err();
        let expected = match bit / 8 {
            0..8 => matches!(err, SnapshotError::BadMagic),
            8..12 => matches!(err, SnapshotError::UnsupportedVersion { .. }),
            12..20 => matches!(err, SnapshotError::Truncated { .. } | SnapshotError::TrailingBytes { .. }),
            _ => matches!(err, SnapshotError::Checksum { .. }),
        };
        assert!(expected, "bit {bit}: {err}");
    }
    assert_eq!(EngineSnapshot::decode(b"not a snapshot at all, really").unwrap_err(), SnapshotError::BadMagic);
    let msg = EngineSnapshot::decode(&bytes[..bytes.len() - 1]).unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");
}

/// Rewrites the payload of an encoded snapshot and fixes its header (length, CRC).
fn reframe(bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = bytes[..24].to_vec();
    out[12..20].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[20..24].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(Config { cases: 200, ..Config::default() })]

    /// Bytes with a valid frame but a tampered payload never panic the decoder or the restore:
    /// each is a clean error or a consistent engine.
    #[test]
    fn tampered_payloads_never_panic(
        kind in 0usize..3,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let window = [
            WindowSpec::Tumbling { size: 10, offset: 0 },
            WindowSpec::Sliding { size: 10, slide: 5, offset: 0 },
            WindowSpec::Session { gap: 4 },
        ][kind];
        let (config, e) = busy_engine(window, 2);
        let bytes = e.snapshot().encode();
        let mut payload = bytes[24..].to_vec();
        for (at, byte) in edits {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        if let Some(c) = cut {
            payload.truncate(c.index(payload.len()));
        }
        if let Ok(snapshot) = EngineSnapshot::decode(&reframe(&bytes, &payload))
            && let Ok(mut restored) = WindowEngine::restore(config, 3, snapshot, 200)
        {
            let _ = restored.snapshot().encode();
            let mut out = LatestResults::default();
            let records = [Record {
                metric: "cpu".into(),
                value: Value::Float(1.0),
                time: 150,
                cluster: "c".into(),
                node: "n1".into(),
                tags: vec![],
            }];
            restored.process_batch("p0", &Batch { agent: "agent-é", sequence: 3, records: &records }, 200, &mut out);
            restored.finish(&mut out);
        }
    }
}

#[test]
fn empty_engine_round_trips() {
    for window in [
        WindowSpec::Tumbling { size: 10, offset: 3 },
        WindowSpec::Sliding { size: 10, slide: 2, offset: 0 },
        WindowSpec::Session { gap: 7 },
    ] {
        let config = EngineConfig { window, ..EngineConfig::default() };
        let e = WindowEngine::with_shards(config.clone(), 3).unwrap();
        let snapshot = e.snapshot();
        let bytes = snapshot.encode();
        assert!(bytes.len() < 400, "{} bytes for an empty engine", bytes.len());
        let decoded = EngineSnapshot::decode(&bytes).unwrap();
        assert_eq!(decoded, snapshot);
        let mut restored = WindowEngine::restore(config, 1, decoded, 0).unwrap();
        assert_eq!((restored.series_count(), restored.state_size()), (0, 0));
        assert_eq!(restored.counters(), EngineCounters::default());
        assert_eq!(restored.watermark(), e.watermark());
        let again = restored.snapshot();
        assert_eq!(again.gate, GateSnapshot { now: 0, ..snapshot.gate.clone() }, "restored at processing time 0");
        assert!(again.shards.iter().all(|s| s.series.is_empty()));
        let mut out = LatestResults::default();
        restored.finish(&mut out);
        assert_eq!(out.emissions, 0);
    }
}

#[test]
fn exact_values_round_trip() {
    let (config, e) = busy_engine(WindowSpec::Tumbling { size: 1_000, offset: 0 }, 1);
    let mut snapshot = e.snapshot();
    // Extreme values must come back bit for bit.
    let extremes = [
        Value::Decimal(i128::MAX),
        Value::Decimal(i128::MIN),
        Value::Float(f64::MIN_POSITIVE),
        Value::Float(-0.0),
        Value::Float(0.1 + 0.2),
        Value::Float(f64::MAX),
    ];
    let meshmon_aggregator::engine::SeriesState::Panes { panes, .. } = &mut snapshot.shards[0].series[0].state else {
        panic!("pane state expected");
    };
    for (i, v) in extremes.iter().enumerate() {
        let mut pane = panes[0].clone();
        pane.start += 1_000 * (i as i64 + 1);
        pane.acc.last = *v;
        pane.acc.totals.min = *v;
        pane.acc.totals.decimal_sum = i128::MIN + i as i128;
        panes.push(pane);
    }
    let decoded = EngineSnapshot::decode(&snapshot.encode()).unwrap();
    let bits = |s: &EngineSnapshot| format!("{:?}", s.shards[0].series[0]);
    assert_eq!(bits(&decoded), bits(&snapshot));
    let meshmon_aggregator::engine::SeriesState::Panes { panes: got, .. } = &decoded.shards[0].series[0].state else {
        panic!("pane state expected");
    };
    let meshmon_aggregator::engine::SeriesState::Panes { panes: want, .. } = &snapshot.shards[0].series[0].state else {
        panic!("pane state expected");
    };
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want.iter()) {
        match (g.acc.last, w.acc.last) {
            (Value::Float(x), Value::Float(y)) => assert_eq!(x.to_bits(), y.to_bits()),
            (x, y) => assert_eq!(x, y),
        }
    }
    assert!(WindowEngine::restore(config, 2, decoded, 0).is_ok());
}

#[test]
fn configuration_mismatch_is_refused() {
    let (config, e) = busy_engine(WindowSpec::Tumbling { size: 10, offset: 0 }, 2);
    let snapshot = e.snapshot();
    let restore = |c: EngineConfig| WindowEngine::restore(c, 2, snapshot.clone(), 200).map(|_| ());
    assert!(restore(config.clone()).is_ok());

    let err =
        restore(EngineConfig { window: WindowSpec::Tumbling { size: 20, offset: 0 }, ..config.clone() }).unwrap_err();
    assert!(matches!(err, RestoreError::ConfigMismatch { setting: "window", .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("tumbling:10ns") && msg.contains("tumbling:20ns"), "{msg}");

    let err = restore(EngineConfig { allowed_lateness: 6, ..config.clone() }).unwrap_err();
    assert!(matches!(err, RestoreError::ConfigMismatch { setting: "allowed lateness", .. }), "{err}");

    let dims = DimensionSpec { tags: TagDimensions::None, ..config.dimensions.clone() };
    let err = restore(EngineConfig { dimensions: dims, ..config.clone() }).unwrap_err();
    assert!(matches!(err, RestoreError::ConfigMismatch { setting: "dimensions", .. }), "{err}");

    // Settings that only shape future decisions may change.
    assert!(restore(EngineConfig { out_of_orderness: 9, idle_timeout: None, series_ttl: 1, ..config.clone() }).is_ok());

    let limits = Limits { max_series: 3, ..config.limits.clone() };
    let err = restore(EngineConfig { limits, ..config.clone() }).unwrap_err();
    assert!(matches!(err, RestoreError::SeriesLimit { .. }), "{err}");

    let mut old = snapshot.clone();
    old.version = 99;
    let err = WindowEngine::restore(config.clone(), 1, old, 0).unwrap_err();
    assert!(matches!(err, RestoreError::Version { found: 99, .. }), "{err}");

    // Parts of different cuts cannot be merged into one shard.
    let mut torn = snapshot.clone();
    torn.shards[1].watermark += 1;
    assert!(matches!(WindowEngine::restore(config.clone(), 1, torn, 0), Err(RestoreError::WatermarkMismatch { .. })));
    let mut none = snapshot;
    none.shards.clear();
    assert!(matches!(WindowEngine::restore(config, 1, none, 0), Err(RestoreError::NoShards)));
}

#[test]
fn parts_restore_like_the_whole_engine() {
    // The actor topology restores the gate and each shard separately from split parts.
    let (config, e) = busy_engine(WindowSpec::Sliding { size: 10, slide: 5, offset: 0 }, 3);
    let snapshot = e.snapshot();
    let gate = IngestGate::restore(&config, snapshot.gate.clone(), 200).unwrap();
    assert_eq!((gate.watermark(), gate.now()), (e.watermark(), 200));
    assert_eq!(gate.counters(), &snapshot.gate.counters);
    let parts = split_shards(snapshot.shards.clone(), 2);
    assert_eq!(parts.len(), 2);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part.len(), 3, "one sub-part per original shard");
        assert!(part.iter().flat_map(|p| &p.series).all(|s| shard_of(&s.key.metric, 2) == i));
    }
    let total: usize = parts.iter().flatten().map(|p| p.series.len()).sum();
    assert_eq!(total, snapshot.series_count());
    let strict = parts[0].iter().map(|p| p.series.len()).sum::<usize>() - 1;
    let err = ShardEngine::restore(&config, strict, parts[0].clone()).unwrap_err();
    assert!(matches!(err, RestoreError::SeriesLimit { .. }), "{err}");
    let shards: Vec<ShardEngine> =
        parts.into_iter().map(|p| ShardEngine::restore(&config, 1_000, p).unwrap()).collect();
    let whole = WindowEngine::restore(config, 2, snapshot, 200).unwrap();
    for (a, b) in shards.iter().zip(whole.shards()) {
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(a.watermark(), e.watermark());
    }
}

#[test]
fn restore_counts_as_activity_of_every_input() {
    // p1 lags; after a long outage a restore must not declare it idle and jump the watermark.
    let config = EngineConfig {
        window: WindowSpec::Tumbling { size: 10, offset: 0 },
        out_of_orderness: 0,
        allowed_lateness: 0,
        idle_timeout: Some(100),
        limits: Limits { max_future: None, max_past: None, ..Limits::default() },
        ..EngineConfig::default()
    };
    let mut e = WindowEngine::new(config.clone()).unwrap();
    let mut out = LatestResults::default();
    let rec = |time| Record {
        metric: "m".into(),
        value: Value::Float(1.0),
        time,
        cluster: String::new(),
        node: "n".into(),
        tags: vec![],
    };
    e.process_batch("p1", &Batch { agent: "b", sequence: 1, records: &[rec(100)] }, 1_000, &mut out);
    e.process_batch("p0", &Batch { agent: "a", sequence: 1, records: &[rec(500)] }, 1_000, &mut out);
    assert_eq!(e.watermark(), 100);
    let snapshot = e.snapshot();
    // Restored an hour (of processing time) later.
    let mut restored = WindowEngine::restore(config, 1, snapshot, 1_000_000).unwrap();
    restored.handle_tick(1_000_050, &mut out);
    assert_eq!(restored.watermark(), 100, "no input is idle right after a restore");
    restored.process_batch("p1", &Batch { agent: "b", sequence: 2, records: &[rec(150)] }, 1_000_060, &mut out);
    assert_eq!(restored.watermark(), 150);
    assert!(out.late.is_empty());
    restored.handle_tick(1_000_200, &mut out);
    assert_eq!(restored.watermark(), 500, "silent inputs go idle a timeout after the restore");
}

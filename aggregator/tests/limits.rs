//! Engine behaviour at its limits: the live-series (cardinality) limit, the series
//! time-to-live that frees it, and an externally driven watermark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use meshmon_aggregator::engine::{
    Batch, DimensionSpec, EngineConfig, InvalidReason, LatestResults, Limits, Nanos, Record, TagDimensions, Value,
    WindowEngine, WindowSpec,
};

const NOW: Nanos = 1_000;

fn record(node: &str, time: Nanos) -> Record {
    Record {
        metric: "m".into(),
        value: Value::Float(1.0),
        time,
        cluster: String::new(),
        node: node.into(),
        tags: Vec::new(),
    }
}

/// Fleet + node: every node adds one series next to the shared fleet series.
fn engine(max_series: usize, series_ttl: Nanos) -> WindowEngine {
    WindowEngine::new(EngineConfig {
        window: WindowSpec::Tumbling { size: 10, offset: 0 },
        out_of_orderness: 0,
        allowed_lateness: 0,
        idle_timeout: None,
        series_ttl,
        dimensions: DimensionSpec { fleet: true, cluster: false, node: true, tags: TagDimensions::None, sets: vec![] },
        limits: Limits { max_series, max_past: None, max_future: None, ..Limits::default() },
    })
    .unwrap()
}

fn push(e: &mut WindowEngine, out: &mut LatestResults, seq: u64, records: &[Record]) {
    e.process_batch("p0", &Batch { agent: "a", sequence: seq, records }, NOW, out);
}

#[test]
fn cardinality_limit_refuses_whole_records_and_counts_them() {
    let mut e = engine(3, 0);
    let mut out = LatestResults::default();
    push(&mut e, &mut out, 1, &[record("n1", 0), record("n2", 1), record("n3", 2)]);
    assert_eq!(e.series_count(), 3, "fleet + n1 + n2");
    assert_eq!(out.invalid.len(), 1);
    assert_eq!(out.invalid[0].2, InvalidReason::CardinalityLimit);
    assert_eq!(out.invalid[0].1.node, "n3");
    assert_eq!(e.counters().invalid[InvalidReason::CardinalityLimit.index()], 1);
    assert!(e.counters().balanced());
    e.finish(&mut out);
    let fleet_count: u64 = out.results.values().filter(|r| r.window.start == 0).map(|r| r.stats.count()).max().unwrap();
    assert_eq!(fleet_count, 2, "the refused record is in no series, not even the fleet");
}

#[test]
fn freed_series_stop_counting_after_their_ttl() {
    let mut e = engine(3, 25);
    let mut out = LatestResults::default();
    push(&mut e, &mut out, 1, &[record("n1", 0), record("n2", 1)]);
    // Window [0,10) fires and is freed at watermark 12; its series are empty from then on.
    push(&mut e, &mut out, 2, &[record("n1", 12)]);
    assert_eq!(e.state_size(), 2, "fleet and n1 hold [10,20)");
    assert_eq!(e.series_count(), 3, "n2 is empty but within its ttl");
    push(&mut e, &mut out, 3, &[record("n1", 30), record("n3", 30)]);
    assert_eq!(out.invalid.len(), 1, "n3 refused while n2 is still registered");
    // Watermark 12 + ttl 25 = 37: the batch that moves the watermark to 38 releases n2 at
    // its end, so n3 fits from the next batch on.
    push(&mut e, &mut out, 4, &[record("n1", 38)]);
    assert_eq!(e.series_count(), 2, "n2 released");
    push(&mut e, &mut out, 5, &[record("n3", 39)]);
    assert_eq!(out.invalid.len(), 1, "n3 accepted once n2 was released");
    assert_eq!(e.series_count(), 3, "fleet, n1, n3");
    e.finish(&mut out);
    assert_eq!(e.series_count(), 0);
    assert!(e.counters().balanced());
}

#[test]
fn external_watermark_fires_and_never_goes_back() {
    let mut e = engine(100, 0);
    let mut out = LatestResults::default();
    push(&mut e, &mut out, 1, &[record("n1", 3), record("n1", 15)]);
    // The batch moves the watermark to 15 (no out-of-orderness): [0,10) fired, [10,20) not.
    assert_eq!(e.watermark(), 15);
    assert!(out.results.keys().all(|(_, start)| *start == 0));
    e.handle_watermark(5, &mut out);
    assert_eq!(e.watermark(), 15, "an upstream watermark never moves it back");
    e.handle_watermark(20, &mut out);
    assert_eq!(e.watermark(), 20);
    assert!(out.results.keys().any(|(_, start)| *start == 10), "[10,20) fired at watermark 20");
}

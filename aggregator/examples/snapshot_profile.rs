//! Size and speed of engine snapshots at 1 M series (the checkpoint cost in Kafka mode).
//!
//! `cargo run --release -p meshmon-aggregator --example snapshot_profile`
//!
//! Builds the 1 M-series state of `benches/engine.rs` (50 metrics × 20 000 nodes + fleet,
//! cluster and tag series, tumbling 10 s, 2.5 M records), then best of three: `snapshot()`,
//! `encode`, `decode`, restore into 1 and into 4 shards. Figures in docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use meshmon_aggregator::engine::{
    Batch, DimensionSpec, EngineConfig, EngineOutput, EngineSnapshot, InvalidRecord, LateRecord, Limits, Nanos,
    SeriesKey, TagDimensions, WindowEngine, WindowResult, WindowSpec,
};

fn main() {
    use meshmon_aggregator::synthetic::{FleetShape, generate};
    use std::time::Instant;
    const SEC: Nanos = 1_000_000_000;
    // The 1 M-series shape of `benches/engine.rs`: 50 metrics × 20 000 nodes (+ fleet, cluster,
    // tag series), one point per series every 10 s.
    let shape =
        FleetShape { metrics: 50, nodes: 20_000, points_per_batch: 1, interval: 10 * SEC, ..FleetShape::reference() };
    let config = EngineConfig {
        window: WindowSpec::Tumbling { size: 10 * SEC, offset: 0 },
        out_of_orderness: 5 * SEC,
        allowed_lateness: 0,
        idle_timeout: Some(30 * SEC),
        series_ttl: 600 * SEC,
        dimensions: DimensionSpec { fleet: true, cluster: true, node: true, tags: TagDimensions::All, sets: vec![] },
        limits: Limits { max_series: 4_000_000, max_past: None, ..Limits::default() },
    };
    let batches = generate(&shape, 2_500_000, 7);
    let mut engine = WindowEngine::new(config.clone()).unwrap();
    #[derive(Default)]
    struct Nothing;
    impl EngineOutput for Nothing {
        fn result(&mut self, _: WindowResult<'_>) {}
        fn retract(&mut self, _: &SeriesKey, _: Nanos) {}
        fn late(&mut self, _: LateRecord<'_>) {}
        fn invalid(&mut self, _: InvalidRecord<'_>) {}
    }
    let mut last_now = 0;
    for b in &batches {
        let batch = Batch { agent: &b.agent, sequence: b.sequence, records: &b.records };
        engine.process_batch(&b.input, &batch, b.now, &mut Nothing);
        last_now = b.now;
    }
    println!("state: {} series, {} pane accumulators", engine.series_count(), engine.state_size());
    assert!(engine.series_count() >= 1_000_000);
    // Best of three; results are dropped outside the timed sections.
    let (mut t_snap, mut t_enc, mut t_dec, mut t_res, mut t_res4) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let (mut snapshot, mut bytes, mut restored) = (None, Vec::new(), None);
    for _ in 0..3 {
        drop(snapshot.take());
        let t = Instant::now();
        let s = engine.snapshot();
        t_snap = t_snap.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        bytes = s.encode();
        t_enc = t_enc.min(t.elapsed().as_secs_f64());
        snapshot = Some(s);
        let t = Instant::now();
        let decoded = EngineSnapshot::decode(&bytes).unwrap();
        t_dec = t_dec.min(t.elapsed().as_secs_f64());
        drop(restored.take());
        let t = Instant::now();
        let one = WindowEngine::restore(config.clone(), 1, decoded, last_now).unwrap();
        t_res = t_res.min(t.elapsed().as_secs_f64());
        assert_eq!(one.series_count(), engine.series_count());
        drop(one);
        let decoded = EngineSnapshot::decode(&bytes).unwrap();
        let t = Instant::now();
        let four = WindowEngine::restore(config.clone(), 4, decoded, last_now).unwrap();
        t_res4 = t_res4.min(t.elapsed().as_secs_f64());
        restored = Some(four);
    }
    let snapshot = snapshot.unwrap();
    let restored = restored.unwrap();
    assert_eq!(restored.series_count(), engine.series_count());
    let n = snapshot.series_count() as f64;
    println!(
        "1M-series snapshot: {} series, {} accumulators, {} bytes ({:.1} B/series); snapshot() {:.0} ms, \
         encode {:.0} ms ({:.0} MB/s), decode {:.0} ms ({:.0} MB/s), restore (1 shard) {:.0} ms, restore (4 shards) \
         {:.0} ms",
        snapshot.series_count(),
        engine.state_size(),
        bytes.len(),
        bytes.len() as f64 / n,
        t_snap * 1e3,
        t_enc * 1e3,
        bytes.len() as f64 / t_enc / 1e6,
        t_dec * 1e3,
        bytes.len() as f64 / t_dec / 1e6,
        t_res * 1e3,
        t_res4 * 1e3,
    );
}

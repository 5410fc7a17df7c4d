//! Window engine throughput on one core (criterion).
//!
//! Each case replays a pre-generated synthetic fleet through a fresh `WindowEngine` (every
//! batch, then `finish`, so every window fires) and reports records/s. Shapes and figures are
//! documented in `docs/BENCHMARKS.md`; run with `cargo bench -p meshmon-aggregator`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshmon_aggregator::engine::{
    Batch, DimensionSpec, EngineConfig, EngineOutput, InvalidRecord, LateRecord, Limits, Nanos, SeriesKey,
    TagDimensions, WindowEngine, WindowResult, WindowSpec,
};
use meshmon_aggregator::synthetic::{FleetShape, SynthBatch, generate};

const SEC: Nanos = 1_000_000_000;

/// Counts what the engine emits, as cheaply as a sink could.
#[derive(Default)]
struct Counting {
    results: u64,
    checksum: u64,
    other: u64,
}

impl EngineOutput for Counting {
    fn result(&mut self, r: WindowResult<'_>) {
        self.results += 1;
        self.checksum = self.checksum.wrapping_add(r.stats.count());
    }
    fn retract(&mut self, _: &SeriesKey, _: Nanos) {
        self.other += 1;
    }
    fn late(&mut self, _: LateRecord<'_>) {
        self.other += 1;
    }
    fn invalid(&mut self, _: InvalidRecord<'_>) {
        self.other += 1;
    }
}

fn config(window: WindowSpec) -> EngineConfig {
    EngineConfig {
        window,
        out_of_orderness: 5 * SEC,
        allowed_lateness: 0,
        idle_timeout: Some(30 * SEC),
        series_ttl: 600 * SEC,
        dimensions: DimensionSpec {
            fleet: true,
            cluster: true,
            node: true,
            tags: TagDimensions::All,
            sets: Vec::new(),
        },
        limits: Limits { max_series: 4_000_000, max_past: None, ..Limits::default() },
    }
}

fn run(engine_config: &EngineConfig, batches: &[SynthBatch]) -> u64 {
    let mut engine = WindowEngine::new(engine_config.clone()).unwrap_or_else(|e| panic!("config: {e}"));
    let mut out = Counting::default();
    for b in batches {
        let batch = Batch { agent: &b.agent, sequence: b.sequence, records: &b.records };
        engine.process_batch(&b.input, &batch, b.now, &mut out);
    }
    engine.finish(&mut out);
    out.results + out.checksum + out.other
}

fn bench_case(c: &mut Criterion, name: &str, window: WindowSpec, shape: &FleetShape, records: usize) {
    let batches = generate(shape, records, 7);
    let n: usize = batches.iter().map(|b| b.records.len()).sum();
    let cfg = config(window);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function(name, |b| b.iter_batched(|| (), |()| black_box(run(&cfg, &batches)), BatchSize::PerIteration));
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    let reference = FleetShape::reference();
    let tumbling = WindowSpec::Tumbling { size: 10 * SEC, offset: 0 };
    bench_case(c, "reference_tumbling_10s", tumbling, &reference, 2_000_000);
    bench_case(
        c,
        "reference_sliding_60s_10s",
        WindowSpec::Sliding { size: 60 * SEC, slide: 10 * SEC, offset: 0 },
        &reference,
        2_000_000,
    );
    bench_case(c, "reference_session_30s", WindowSpec::Session { gap: 30 * SEC }, &reference, 2_000_000);
    // 1 M series: 50 metrics × 20 000 nodes (plus fleet, cluster and tag series), one point per
    // series every 10 s — every window holds one record of every series.
    let wide =
        FleetShape { metrics: 50, nodes: 20_000, points_per_batch: 1, interval: 10 * SEC, ..FleetShape::reference() };
    assert!(wide.series() >= 1_000_000, "{} series", wide.series());
    bench_case(c, "million_series_tumbling_10s", tumbling, &wide, 5_000_000);
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);

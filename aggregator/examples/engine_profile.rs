//! Profiling aid: replays the reference fleet through the engine N times, printing records/s
//! per pass: `cargo run --release -p meshmon-aggregator --example engine_profile -- [passes] [wide]`
//! (`wide`: the 1 M-series shape of the benchmark).

use std::time::Instant;

use meshmon_aggregator::engine::{
    Batch, EngineConfig, EngineOutput, InvalidRecord, LateRecord, Limits, Nanos, SeriesKey, WindowEngine, WindowResult,
    WindowSpec,
};

/// Counts results, as cheaply as a sink could.
#[derive(Default)]
struct Counting(usize);

impl EngineOutput for Counting {
    fn result(&mut self, _: WindowResult<'_>) {
        self.0 += 1;
    }
    fn retract(&mut self, _: &SeriesKey, _: Nanos) {}
    fn late(&mut self, _: LateRecord<'_>) {}
    fn invalid(&mut self, _: InvalidRecord<'_>) {}
}
use meshmon_aggregator::synthetic::{FleetShape, generate};

fn main() {
    let passes: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let wide = std::env::args().nth(2).as_deref() == Some("wide");
    let sec: Nanos = 1_000_000_000;
    let batches = if wide {
        let shape = FleetShape {
            metrics: 50,
            nodes: 20_000,
            points_per_batch: 1,
            interval: 10 * sec,
            ..FleetShape::reference()
        };
        generate(&shape, 5_000_000, 7)
    } else {
        generate(&FleetShape::reference(), 2_000_000, 7)
    };
    let n: usize = batches.iter().map(|b| b.records.len()).sum();
    let config = EngineConfig {
        window: WindowSpec::Tumbling { size: 10 * sec, offset: 0 },
        allowed_lateness: 0,
        limits: Limits { max_past: None, ..Limits::default() },
        ..EngineConfig::default()
    };
    for _ in 0..passes {
        let started = Instant::now();
        let mut engine = match WindowEngine::new(config.clone()) {
            Ok(e) => e,
            Err(e) => return eprintln!("{e}"),
        };
        let mut out = Counting::default();
        for b in &batches {
            engine.process_batch(
                &b.input,
                &Batch { agent: &b.agent, sequence: b.sequence, records: &b.records },
                b.now,
                &mut out,
            );
        }
        engine.finish(&mut out);
        let secs = started.elapsed().as_secs_f64();
        println!("{n} records in {secs:.3} s: {:.2} M records/s, {} results", n as f64 / secs / 1e6, out.0);
    }
}

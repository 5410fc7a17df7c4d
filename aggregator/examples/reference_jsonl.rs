//! Writes the synthetic reference fleet (`FleetShape::reference()`, seed 7) as JSON lines for
//! batch mode: `cargo run --release -p meshmon-aggregator --example reference_jsonl -- N > f.jsonl`.

use std::io::{BufWriter, Write};

use meshmon_aggregator::engine::{Value, time::NANOS_PER_MILLI};
use meshmon_aggregator::synthetic::{FleetShape, generate};

fn main() -> std::io::Result<()> {
    let records: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for batch in generate(&FleetShape::reference(), records, 7) {
        for r in &batch.records {
            let value = match r.value {
                Value::Float(v) => serde_json::json!(v),
                Value::Decimal(_) => serde_json::json!(r.value.to_string()),
            };
            let tags: serde_json::Map<String, serde_json::Value> =
                r.tags.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let line = serde_json::json!({"metric": r.metric, "value": value, "time": r.time / NANOS_PER_MILLI,
                "cluster": r.cluster, "node": r.node, "tags": tags});
            writeln!(out, "{line}")?;
        }
    }
    out.flush()
}

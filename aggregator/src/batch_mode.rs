//! Batch mode: the window engine over a JSON-lines file, final aggregates out as CSV.
//!
//! Role: the recompute-from-history path and the way to compare meshmon against other
//! engines. Lines are read in chunks that become engine batches (agent `file`, sequence =
//! chunk number, index = record in chunk), processing time follows the greatest event time
//! read (history has no wall clock), and at end of input every window fires. Malformed,
//! invalid and late lines are counted and, if asked, written with their line number and
//! reason to a rejects file. Touches only the given reader and writers.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use crate::engine::{
    Batch, EngineConfig, EngineCounters, EngineOutput, InvalidRecord, LateRecord, Nanos, SeriesKey, Stats, Window,
    WindowEngine, WindowResult, time::NANOS_PER_MILLI,
};
use crate::source::jsonl::parse_line;

/// How to run batch mode.
#[derive(Debug, Clone)]
pub struct AggregateOptions {
    /// Engine configuration (bounds on future/past times are usually off for history).
    pub config: EngineConfig,
    /// Shards to spread series over (results are the same for any count).
    pub shards: usize,
    /// Lines per engine batch.
    pub batch_lines: usize,
}

/// What batch mode did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AggregateSummary {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Lines that were not a record (blank or malformed).
    pub malformed: u64,
    /// Engine counters: records in, accepted, late, invalid per reason, results.
    pub counters: EngineCounters,
    /// Rows written to the CSV (final aggregates).
    pub rows: u64,
}

/// Batch mode failed on I/O or configuration.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Reading the input or writing an output failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The engine configuration is not usable.
    #[error("configuration: {0}")]
    Config(#[from] crate::engine::ConfigError),
}

/// Keeps the latest result per key and reports rejected lines.
struct Collector<'w> {
    results: BTreeMap<(SeriesKey, Nanos), (Window, Stats)>,
    /// (line number, text) of each record of the current chunk, by record index.
    lines: Vec<(u64, String)>,
    rejects: Option<&'w mut dyn Write>,
    error: Option<std::io::Error>,
}

impl Collector<'_> {
    fn reject(&mut self, index: u32, reason: &str) {
        let Some(w) = self.rejects.as_mut() else { return };
        let Some((line, text)) = self.lines.get(index as usize) else { return };
        let row = serde_json::json!({ "line": line, "reason": reason, "text": text });
        if let Err(e) = writeln!(w, "{row}")
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }
}

impl EngineOutput for Collector<'_> {
    fn result(&mut self, r: WindowResult<'_>) {
        self.results.insert((r.series.clone(), r.window.start), (r.window, r.stats));
    }

    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.results.remove(&(series.clone(), window_start));
    }

    fn late(&mut self, l: LateRecord<'_>) {
        if l.dropped() {
            self.reject(l.id.index, "late");
        }
    }

    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.reject(i.id.index, &format!("invalid: {}", i.reason));
    }
}

/// Runs the engine over JSON lines from `input` and writes the final aggregates to `output`
/// as CSV; rejected lines go to `rejects` as JSON lines when given.
pub fn aggregate(
    input: impl BufRead,
    output: &mut dyn Write,
    rejects: Option<&mut dyn Write>,
    options: &AggregateOptions,
) -> Result<AggregateSummary, BatchError> {
    let mut engine = WindowEngine::with_shards(options.config.clone(), options.shards)?;
    let mut out = Collector { results: BTreeMap::new(), lines: Vec::new(), rejects, error: None };
    let mut summary = AggregateSummary::default();
    let mut records = Vec::with_capacity(options.batch_lines);
    let mut now = Nanos::MIN;
    let mut sequence = 0u64;
    let mut lines = input.lines();
    loop {
        records.clear();
        out.lines.clear();
        for line in lines.by_ref() {
            let text = line?;
            summary.lines += 1;
            match parse_line(&text) {
                Ok(record) => {
                    now = now.max(record.time);
                    records.push(record);
                    out.lines.push((summary.lines, text));
                }
                Err(e) => {
                    summary.malformed += 1;
                    if let Some(w) = out.rejects.as_mut() {
                        let row = serde_json::json!({ "line": summary.lines, "reason": format!("malformed: {e}"), "text": text });
                        writeln!(w, "{row}")?;
                    }
                }
            }
            if records.len() >= options.batch_lines.max(1) {
                break;
            }
        }
        if records.is_empty() {
            break;
        }
        sequence += 1;
        engine.process_batch("file", &Batch { agent: "file", sequence, records: &records }, now, &mut out);
        if let Some(e) = out.error.take() {
            return Err(e.into());
        }
    }
    engine.finish(&mut out);
    summary.counters = engine.counters();
    summary.rows = write_csv(output, &out.results)?;
    Ok(summary)
}

/// The CSV header of batch mode's output.
pub const CSV_HEADER: &str = "dimension_kind,metric,dimension,window_start_ms,window_end_ms,max,min,avg,last,sum,count";

fn write_csv(output: &mut dyn Write, results: &BTreeMap<(SeriesKey, Nanos), (Window, Stats)>) -> std::io::Result<u64> {
    let mut rows: Vec<_> = results.iter().collect();
    rows.sort_by(|((a, sa), _), ((b, sb), _)| {
        (a.dimension.kind(), &a.metric, a.dimension.to_string(), sa).cmp(&(
            b.dimension.kind(),
            &b.metric,
            b.dimension.to_string(),
            sb,
        ))
    });
    writeln!(output, "{CSV_HEADER}")?;
    for ((series, _), (window, stats)) in &rows {
        let t = &stats.totals;
        writeln!(
            output,
            "{},{},{},{},{},{},{},{},{},{},{}",
            series.dimension.kind().as_str(),
            csv_field(&series.metric),
            csv_field(&dimension_value(series)),
            millis(window.start),
            millis(window.end),
            t.max,
            t.min,
            t.avg(),
            stats.last,
            t.sum(),
            t.count
        )?;
    }
    output.flush()?;
    Ok(rows.len() as u64)
}

/// The dimension's value as one text: `` for the fleet, the cluster or node name, `k=v` for a
/// tag, `f1=v1,f2=v2` for a set.
pub fn dimension_value(series: &SeriesKey) -> String {
    use crate::engine::Dimension;
    match &series.dimension {
        Dimension::Fleet => String::new(),
        Dimension::Cluster(v) | Dimension::Node(v) => v.to_string(),
        Dimension::Tag { key, value } => format!("{key}={value}"),
        Dimension::Set(pairs) => pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    }
}

/// Nanoseconds as epoch milliseconds, with a fraction only when not whole.
fn millis(n: Nanos) -> String {
    let (ms, rest) = (n.div_euclid(NANOS_PER_MILLI), n.rem_euclid(NANOS_PER_MILLI));
    if rest == 0 { ms.to_string() } else { format!("{ms}.{}", format!("{rest:06}").trim_end_matches('0')) }
}

/// Quotes a CSV field when it holds a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::{Limits, WindowSpec, time::NANOS_PER_SEC};

    fn options(shards: usize) -> AggregateOptions {
        AggregateOptions {
            config: EngineConfig {
                window: WindowSpec::Tumbling { size: 10 * NANOS_PER_SEC, offset: 0 },
                out_of_orderness: NANOS_PER_SEC,
                allowed_lateness: 0,
                idle_timeout: None,
                limits: Limits { max_future: None, max_past: None, ..Limits::default() },
                ..EngineConfig::default()
            },
            shards,
            batch_lines: 2,
        }
    }

    #[test]
    fn aggregates_a_file_and_reports_rejects_with_line_numbers() {
        let input = [
            r#"{"metric":"cpu","value":1,"time":1000,"cluster":"c,1","node":"n1","tags":{"env":"p\"q"}}"#,
            r#"{"metric":"cpu","value":3,"time":9000,"cluster":"c,1","node":"n2"}"#,
            "not json",
            r#"{"metric":"cpu","value":2,"time":12000,"cluster":"c,1","node":"n1"}"#,
            r#"{"metric":"cpu","value":5,"time":25000,"cluster":"c,1","node":"n1"}"#,
            r#"{"metric":"cpu","value":9,"time":2000,"cluster":"c,1","node":"n1"}"#,
            r#"{"metric":"","value":1,"time":26000}"#,
            r#"{"metric":"pay","value":"0.1","time":26000}"#,
            r#"{"metric":"pay","value":"0.2","time":27000}"#,
        ]
        .join("\n");
        let (mut csv, mut rejects) = (Vec::new(), Vec::new());
        let summary = aggregate(input.as_bytes(), &mut csv, Some(&mut rejects), &options(1)).unwrap();
        assert_eq!((summary.lines, summary.malformed), (9, 1));
        assert_eq!(
            (summary.counters.accepted, summary.counters.late_dropped, summary.counters.invalid_total()),
            (6, 1, 1)
        );
        let csv = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert!(lines.contains(&"fleet,cpu,,0,10000,3,1,2,3,4,2"), "{csv}");
        assert!(lines.contains(&"fleet,pay,,20000,30000,0.2,0.1,0.15,0.2,0.3,2"), "exact decimals: {csv}");
        assert!(lines.contains(&"cluster,cpu,\"c,1\",0,10000,3,1,2,3,4,2"), "quoted: {csv}");
        assert!(lines.contains(&"tag,cpu,\"env=p\"\"q\",0,10000,1,1,1,1,1,1"), "escaped quote: {csv}");
        let rejects = String::from_utf8(rejects).unwrap();
        // Within a chunk the gate reports invalid lines before the shards report late ones.
        let mut reasons: Vec<(u64, String)> = rejects
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["line"].as_u64().unwrap(), v["reason"].as_str().unwrap().to_string())
            })
            .collect();
        reasons.sort();
        assert_eq!(reasons.len(), 3);
        assert_eq!(reasons[0].0, 3);
        assert!(reasons[0].1.starts_with("malformed"));
        assert_eq!(reasons[1], (6, "late".to_string()), "t=2s arrives after the watermark passed 10s");
        assert_eq!(reasons[2], (7, "invalid: empty_metric".to_string()));
    }

    #[test]
    fn shard_count_does_not_change_results() {
        let batches =
            crate::synthetic::generate(&crate::synthetic::FleetShape { nodes: 20, ..Default::default() }, 20_000, 3);
        let mut input = String::new();
        for b in &batches {
            for r in &b.records {
                let tags: serde_json::Map<_, _> = r.tags.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                let value = match r.value {
                    crate::engine::Value::Float(v) => serde_json::json!(v),
                    crate::engine::Value::Decimal(_) => serde_json::json!(r.value.to_string()),
                };
                let line = serde_json::json!({"metric": r.metric, "value": value, "time": r.time / NANOS_PER_MILLI,
                    "cluster": r.cluster, "node": r.node, "tags": tags});
                input.push_str(&line.to_string());
                input.push('\n');
            }
        }
        let run = |shards| {
            let mut csv = Vec::new();
            let mut o = options(shards);
            o.batch_lines = 500;
            let s = aggregate(input.as_bytes(), &mut csv, None, &o).unwrap();
            (s.rows, String::from_utf8(csv).unwrap())
        };
        let (rows, one) = run(1);
        assert!(rows > 100);
        assert_eq!(run(3), (rows, one));
    }
}

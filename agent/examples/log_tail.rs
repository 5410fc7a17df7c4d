//! Read-and-match rate of the `log` plugin, and its cost per collection.
//!
//! Role: a measurement, not a test. Writes a log file of `--lines` lines (about 100 bytes each;
//! 10 % contain `ERROR`, 5 % `WARN`) in a temporary directory, builds the plugin through its
//! public API (rules `error`, kept as raw records, and `warn`, counted only; `start_at =
//! "beginning"`) and collects until every line is read, committing after each collection as
//! the runner does. Reports lines/s and MB/s over the whole backlog, then the mean wall time of
//! one collection over `--rounds` collections with nothing new (an idle file) and with
//! `--append` lines appended before each. `--multiline` groups lines into events (every 10th
//! line starts one). Touches a temporary directory only.
//!
//!     cargo run --release -p meshmon-agent --example log_tail -- --lines 2000000

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::metrics::Metrics;
use meshmon_agent::plugins::log::{LogRule, LogSettings, MultilineSettings, StartAt};
use meshmon_agent::plugins::{BuildPlugin, PluginContext};
use meshmon_agent::record::double_value;

struct Options {
    lines: u64,
    rounds: u32,
    append: u64,
    multiline: bool,
}

fn options() -> Options {
    let mut o = Options { lines: 1_000_000, rounds: 100, append: 1000, multiline: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value").parse::<u64>().expect("a number");
        match a.as_str() {
            "--lines" => o.lines = value(),
            "--rounds" => o.rounds = u32::try_from(value()).expect("fits"),
            "--append" => o.append = value(),
            "--multiline" => o.multiline = true,
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn line(i: u64) -> String {
    let level = match i % 20 {
        0 | 10 => "ERROR",
        5 => "WARN ",
        _ => "INFO ",
    };
    let start = if i.is_multiple_of(10) { "2026-01-01T10:00:00.000Z" } else { "  continuation......... " };
    format!(
        "{start} {level} [worker-{:02}] request {i:>10} handled in {:>4} ms user=u{:06}\n",
        i % 16,
        i % 997,
        i % 100_000
    )
}

fn write_lines(path: &std::path::Path, from: u64, n: u64) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap());
    let mut bytes = 0;
    for i in from..from + n {
        let l = line(i);
        bytes += l.len() as u64;
        f.write_all(l.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    bytes
}

fn value(records: &[meshmon_proto::v1::Record], metric: &str) -> f64 {
    records.iter().find(|r| r.metric == metric).and_then(double_value).unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let bytes = write_lines(&log, 0, o.lines);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ctx = PluginContext { state_dir: dir.path().join("state"), shutdown: rx, metrics: Arc::new(Metrics::new()) };
    let settings = LogSettings {
        paths: vec![log.to_str().unwrap().to_owned()],
        start_at: StartAt::Beginning,
        rules: vec![
            LogRule { name: "error".into(), pattern: "ERROR".into(), keep_line: true },
            LogRule { name: "warn".into(), pattern: r"WARN +\[worker-0[0-3]\]".into(), keep_line: false },
        ],
        multiline: o.multiline.then(|| MultilineSettings {
            start_pattern: r"^\d{4}-\d{2}-\d{2}T".into(),
            ..MultilineSettings::default()
        }),
        max_read_bytes_per_collection: 64 << 20,
        max_match_records_per_collection: 1_000_000,
        ..LogSettings::default()
    };
    let mut plugin = settings.build("bench", &ctx).unwrap();

    let started = Instant::now();
    let (mut lines, mut matched, mut collections) = (0.0, 0usize, 0u32);
    let mut at = SystemTime::now();
    while lines < o.lines as f64 - if o.multiline { 10.0 } else { 0.0 } {
        let records = plugin.collect(at).await.unwrap();
        lines += value(&records, "log.lines");
        matched += records.iter().filter(|r| r.metric == "log.match").count();
        plugin.enqueued();
        collections += 1;
        at += Duration::from_secs(1);
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "backlog: {lines} lines ({:.1} MB) in {took:.3} s over {collections} collections: {:.0} lines/s, {:.1} MB/s, {matched} log.match records{}",
        bytes as f64 / 1e6,
        lines / took,
        bytes as f64 / 1e6 / took,
        if o.multiline { " (multi-line events)" } else { "" },
    );

    let mut idle = Duration::ZERO;
    for _ in 0..o.rounds {
        let t = Instant::now();
        let records = plugin.collect(at).await.unwrap();
        idle += t.elapsed();
        assert_eq!(value(&records, "log.lines"), 0.0);
        plugin.enqueued();
        at += Duration::from_millis(10);
    }
    println!(
        "idle collection (1 file, nothing new): {:.1} µs mean over {}",
        idle.as_secs_f64() * 1e6 / f64::from(o.rounds),
        o.rounds
    );

    let mut busy = Duration::ZERO;
    let mut next = o.lines;
    for _ in 0..o.rounds {
        write_lines(&log, next, o.append);
        next += o.append;
        let t = Instant::now();
        let _records = plugin.collect(at).await.unwrap();
        busy += t.elapsed();
        plugin.enqueued();
        at += Duration::from_millis(10);
    }
    println!(
        "collection with {} new lines: {:.1} µs mean over {} (positions saved after each)",
        o.append,
        busy.as_secs_f64() * 1e6 / f64::from(o.rounds),
        o.rounds
    );
}

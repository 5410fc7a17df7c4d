//! Write throughput of the InfluxDB writer into a real InfluxDB 1.6 on loopback.
//!
//! `POINTS=200000 cargo run --release -p meshmon-aggregator --example influxdb_throughput`
//! (needs `influxd`: Debian `influxdb`, which `.ci/run` installs). Prints points per second for
//! `meshmon_aggregate`-shaped points, batches of 5 000, gzip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use meshmon_aggregator::sinks::influxdb::line_protocol::LineBuilder;
use meshmon_aggregator::sinks::influxdb::{InfluxDbSection, InfluxWriter};
use meshmon_tests::influxdb::InfluxDb;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = InfluxDb::start(dir.path()).unwrap();
    db.create_database("bench").unwrap();
    let config = InfluxDbSection {
        url: db.url(),
        database: "bench".into(),
        self_every: Duration::ZERO,
        ..InfluxDbSection::default()
    };
    let writer = InfluxWriter::start(&config, dir.path()).unwrap();
    let n: i64 = std::env::var("POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let base = 1_795_000_000_000i64;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let series = i % 1000;
            LineBuilder::new("meshmon_aggregate")
                .and_then(|b| b.tag("dimension", &format!("node=n{series}")))
                .and_then(|b| b.tag("kind", "node"))
                .and_then(|b| b.tag("metric", "bench.cpu"))
                .and_then(|b| b.tag("window", "tumbling:10s"))
                .and_then(|b| b.float("avg", i as f64 * 0.5))
                .and_then(|b| b.int("count", 12))
                .and_then(|b| b.int("end_ms", base + (i / 1000) * 10_000 + 10_000))
                .and_then(|b| b.float("last", 1.25))
                .and_then(|b| b.float("max", 99.5))
                .and_then(|b| b.float("min", 0.5))
                .and_then(|b| b.int("revision", 0))
                .and_then(|b| b.float("sum", 600.0))
                .and_then(|b| b.finish(base + (i / 1000) * 10_000))
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    for chunk in lines.chunks(1000) {
        writer.send_lines(chunk.to_vec());
    }
    writer.flush(None).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let m = writer.metrics();
    let written = m.points_written.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written, n as u64);
    let count = db.query(Some("bench"), "SELECT count(\"count\") FROM meshmon_aggregate").unwrap();
    assert_eq!(InfluxDb::rows(&count)[0]["count"], n, "{count}");
    println!("{n} points in {secs:.2} s: {:.0} points/s", n as f64 / secs);
    writer.close(Duration::from_secs(5)).unwrap();
}

//! `HbaseMetrics`: self-monitoring of the HBase raw store, rendered as Prometheus text.
//!
//! Role: counters and latency histograms the Thrift client updates on every `mutateRows` call
//! and every drill-down — rows written, successful write calls (batches), failed calls,
//! retries, writes given up (the pipeline then stops), and drill-downs with their errors —
//! and [`HbaseMetrics::render`] appending them to `/metrics`. Lock-free atomics; touches
//! nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Shared self-metrics of the HBase raw store (all connections of one aggregator).
#[derive(Debug, Default)]
pub struct HbaseMetrics {
    /// Raw rows acknowledged by the server.
    pub rows_written: AtomicU64,
    /// `mutateRows` calls that succeeded.
    pub write_batches: AtomicU64,
    /// `mutateRows` calls that failed (each attempt, retried or not).
    pub write_errors: AtomicU64,
    /// `mutateRows` calls repeated after a transient failure.
    pub write_retries: AtomicU64,
    /// Writes given up (non-transient failure, or retries exhausted): the pipeline stops.
    pub write_failures: AtomicU64,
    /// Drill-down pages served.
    pub drill_downs: AtomicU64,
    /// Drill-down pages that failed.
    pub drill_down_errors: AtomicU64,
    write_seconds: Histogram,
    drill_down_seconds: Histogram,
}

impl HbaseMetrics {
    /// A `mutateRows` call of `rows` rows succeeded after `took`.
    pub fn record_write(&self, rows: usize, took: Duration) {
        self.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
        self.write_batches.fetch_add(1, Ordering::Relaxed);
        self.write_seconds.observe(took);
    }

    /// A drill-down page was served (or failed) after `took`.
    pub fn record_drill_down(&self, ok: bool, took: Duration) {
        self.drill_downs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.drill_down_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.drill_down_seconds.observe(took);
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP meshmon_hbase_{name} {help}\n# TYPE meshmon_hbase_{name} counter\nmeshmon_hbase_{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter("rows_written_total", "Raw rows acknowledged by the HBase Thrift server.", &self.rows_written);
        counter("write_batches_total", "mutateRows calls that succeeded.", &self.write_batches);
        counter("write_errors_total", "mutateRows calls that failed (every attempt).", &self.write_errors);
        counter("write_retries_total", "mutateRows calls retried after a transient failure.", &self.write_retries);
        counter(
            "write_failures_total",
            "Raw-row writes given up after retries or on a permanent error (fail-stop).",
            &self.write_failures,
        );
        counter("drill_downs_total", "Drill-down pages read from HBase.", &self.drill_downs);
        counter("drill_down_errors_total", "Drill-down pages that failed.", &self.drill_down_errors);
        self.write_seconds.render(out, "meshmon_hbase_write_seconds", "Latency of one mutateRows call.");
        self.drill_down_seconds.render(out, "meshmon_hbase_drill_down_seconds", "Latency of one drill-down page.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = HbaseMetrics::default();
        m.record_write(1000, Duration::from_millis(3));
        m.record_write(500, Duration::from_millis(30));
        m.write_retries.fetch_add(2, Ordering::Relaxed);
        m.record_drill_down(false, Duration::from_secs(20));
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "meshmon_hbase_rows_written_total 1500",
            "meshmon_hbase_write_batches_total 2",
            "meshmon_hbase_write_retries_total 2",
            "meshmon_hbase_write_seconds_bucket{le=\"0.005\"} 1",
            "meshmon_hbase_write_seconds_bucket{le=\"0.05\"} 2",
            "meshmon_hbase_write_seconds_count 2",
            "meshmon_hbase_drill_down_errors_total 1",
            "meshmon_hbase_drill_down_seconds_bucket{le=\"10\"} 0",
            "meshmon_hbase_drill_down_seconds_bucket{le=\"+Inf\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}

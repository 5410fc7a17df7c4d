//! `InfluxMetrics`: self-monitoring of the InfluxDB writer.
//!
//! Role: counters and gauges the writer thread updates, rendered as Prometheus text on the
//! aggregator's `/metrics` after the pipeline's own (`RuntimeMetrics.influxdb`): points
//! written, write requests, retries, failed attempts, dead-lettered points, points not
//! encodable, retracted points deleted, retractions not written, points given up at
//! shutdown, points queued, last write latency. Touches nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// InfluxDB writer metrics.
#[derive(Debug, Default)]
pub struct InfluxMetrics {
    /// Points InfluxDB accepted (2xx).
    pub points_written: AtomicU64,
    /// Write requests that succeeded.
    pub batches: AtomicU64,
    /// Write attempts repeated after a 5xx, 408, 429, timeout or connection error.
    pub retries: AtomicU64,
    /// Write attempts that failed (any cause; each is retried or dead-lettered).
    pub failures: AtomicU64,
    /// Points InfluxDB refused with a 4xx, or that cannot be encoded: logged, counted,
    /// appended to `influxdb-rejected.lp`, never retried.
    pub dead_lettered_points: AtomicU64,
    /// Retracted session points deleted (v1: InfluxQL `DELETE` answered without error).
    pub retractions_deleted: AtomicU64,
    /// Session retractions not written (v2 API or `delete_retractions = false`: InfluxDB keeps
    /// the retracted point).
    pub retractions_skipped: AtomicU64,
    /// Points (and deletions) given up because `shutdown_timeout` expired while stopping.
    pub given_up_points: AtomicU64,
    /// Points (and deletions) queued and not yet written.
    pub queued_points: AtomicI64,
    /// Duration of the last successful write request, microseconds.
    pub last_write_micros: AtomicU64,
}

impl InfluxMetrics {
    /// Appends the Prometheus text to `out`.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP meshmon_influxdb_{name} {help}\n# TYPE meshmon_influxdb_{name} counter\nmeshmon_influxdb_{name} {v}"
            );
        };
        counter("points_written_total", "Points InfluxDB accepted.", load(&self.points_written));
        counter("batches_total", "Write requests InfluxDB accepted.", load(&self.batches));
        counter(
            "retries_total",
            "Write requests repeated after 5xx, timeouts, connection errors.",
            load(&self.retries),
        );
        counter("failures_total", "Write attempts that failed.", load(&self.failures));
        counter(
            "dead_lettered_points_total",
            "Points refused (4xx) or not encodable, written to influxdb-rejected.lp.",
            load(&self.dead_lettered_points),
        );
        counter(
            "retractions_deleted_total",
            "Retracted session points deleted (InfluxQL DELETE).",
            load(&self.retractions_deleted),
        );
        counter("retractions_skipped_total", "Session retractions not written.", load(&self.retractions_skipped));
        counter(
            "given_up_points_total",
            "Points and deletions given up when shutdown_timeout expired while stopping.",
            load(&self.given_up_points),
        );
        let _ = writeln!(
            out,
            "# HELP meshmon_influxdb_queued_points Points and deletions queued for InfluxDB.\n# TYPE meshmon_influxdb_queued_points gauge\nmeshmon_influxdb_queued_points {}",
            self.queued_points.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP meshmon_influxdb_last_write_latency_seconds Duration of the last successful write.\n# TYPE meshmon_influxdb_last_write_latency_seconds gauge\nmeshmon_influxdb_last_write_latency_seconds {}",
            load(&self.last_write_micros) as f64 / 1e6
        );
    }
}

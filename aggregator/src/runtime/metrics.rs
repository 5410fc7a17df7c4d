//! `RuntimeMetrics`: the pipeline's self-monitoring, rendered as Prometheus text.
//!
//! Role: every actor publishes its engine counters and gauges here after each message (a
//! short lock per message, never per record); `/metrics` renders the sum. Covers records in
//! and out, duplicates, late, invalid per reason, results and corrections, watermark and its
//! lag behind processing time, live series and state size, mailbox depths (messages sent and
//! not yet handled) and store write latency. Touches nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::{EngineCounters, InvalidReason, Nanos};
use crate::kafka::KafkaMetrics;
use crate::sinks::influxdb::InfluxMetrics;

/// Upper bounds (seconds) of the store write latency histogram.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Gauges of one shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardGauges {
    /// Live series.
    pub series: u64,
    /// Live accumulators.
    pub state_size: u64,
}

/// Shared self-metrics of a running pipeline.
#[derive(Debug)]
pub struct RuntimeMetrics {
    gate: Mutex<EngineCounters>,
    shards: Vec<Mutex<(EngineCounters, ShardGauges)>>,
    /// Messages sent to each shard and not yet handled.
    pub shard_mailbox: Vec<AtomicI64>,
    /// Batches sent to the router and not yet answered.
    pub router_mailbox: AtomicI64,
    /// Store transactions queued and not yet applied.
    pub store_mailbox: AtomicI64,
    watermark: AtomicI64,
    now: AtomicI64,
    store_writes: AtomicU64,
    store_items: AtomicU64,
    store_errors: AtomicU64,
    store_latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    store_latency_sum_micros: AtomicU64,
    /// Kafka source, output and checkpoint metrics (Kafka mode only).
    pub kafka: OnceLock<Arc<KafkaMetrics>>,
    /// InfluxDB writer metrics (when `[influxdb]` is on).
    pub influxdb: OnceLock<Arc<InfluxMetrics>>,
}

impl RuntimeMetrics {
    /// Metrics for a pipeline with `shards` shards.
    pub fn new(shards: usize) -> RuntimeMetrics {
        RuntimeMetrics {
            gate: Mutex::new(EngineCounters::default()),
            shards: (0..shards).map(|_| Mutex::new(Default::default())).collect(),
            shard_mailbox: (0..shards).map(|_| AtomicI64::new(0)).collect(),
            router_mailbox: AtomicI64::new(0),
            store_mailbox: AtomicI64::new(0),
            watermark: AtomicI64::new(Nanos::MIN),
            now: AtomicI64::new(0),
            store_writes: AtomicU64::new(0),
            store_items: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            store_latency_buckets: Default::default(),
            store_latency_sum_micros: AtomicU64::new(0),
            kafka: OnceLock::new(),
            influxdb: OnceLock::new(),
        }
    }

    /// The router publishes its gate counters, watermark and processing time.
    pub fn publish_gate(&self, counters: &EngineCounters, watermark: Nanos, now: Nanos) {
        if let Ok(mut g) = self.gate.lock() {
            g.clone_from(counters);
        }
        self.watermark.store(watermark, Ordering::Relaxed);
        self.now.store(now, Ordering::Relaxed);
    }

    /// Shard `i` publishes its counters and gauges.
    pub fn publish_shard(&self, i: usize, counters: &EngineCounters, gauges: ShardGauges) {
        if let Some(Ok(mut s)) = self.shards.get(i).map(Mutex::lock) {
            s.0.clone_from(counters);
            s.1 = gauges;
        }
    }

    /// A store transaction of `items` items took `seconds` (or failed).
    pub fn record_store_write(&self, items: usize, seconds: f64, ok: bool) {
        self.store_writes.fetch_add(1, Ordering::Relaxed);
        self.store_items.fetch_add(items as u64, Ordering::Relaxed);
        if !ok {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        for (bucket, bound) in self.store_latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.store_latency_sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Gate and shard counters summed.
    pub fn totals(&self) -> EngineCounters {
        let mut total = self.gate.lock().map(|g| g.clone()).unwrap_or_default();
        for s in &self.shards {
            if let Ok(s) = s.lock() {
                total += &s.0;
            }
        }
        total
    }

    /// Live series summed over the shards.
    pub fn series(&self) -> u64 {
        self.shards.iter().filter_map(|s| s.lock().ok()).map(|s| s.1.series).sum()
    }

    /// The current global watermark.
    pub fn watermark(&self) -> Nanos {
        self.watermark.load(Ordering::Relaxed)
    }

    /// Store transactions that failed.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    /// Processing time minus the watermark, once there is a watermark.
    pub fn watermark_lag_seconds(&self) -> Option<f64> {
        let wm = self.watermark();
        (wm > Nanos::MIN).then(|| self.now.load(Ordering::Relaxed).saturating_sub(wm) as f64 / 1e9)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let c = self.totals();
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP meshmon_{name} {help}\n# TYPE meshmon_{name} counter\nmeshmon_{name} {v}");
        };
        counter("batches_total", "Batches received, duplicates included.", c.batches);
        counter("duplicate_batches_total", "Re-sent batches recognised and skipped.", c.duplicate_batches);
        counter("duplicate_records_total", "Records inside skipped duplicate batches.", c.duplicate_records);
        counter("records_in_total", "Records of first-delivered batches.", c.records_in);
        counter("records_accepted_total", "Records counted in at least one window.", c.accepted);
        counter(
            "records_late_total",
            "Records past the allowed lateness of every window (late output).",
            c.late_dropped,
        );
        counter("records_late_partial_total", "Records that missed some of their sliding windows.", c.late_partial);
        counter("results_total", "Window results emitted (first firings and corrections).", c.results);
        counter("corrections_total", "Corrections re-fired for late records.", c.corrections);
        counter("retractions_total", "Stored session results retracted.", c.retractions);
        counter("store_writes_total", "Store transactions applied.", self.store_writes.load(Ordering::Relaxed));
        counter("store_items_total", "Items written to the store.", self.store_items.load(Ordering::Relaxed));
        counter("store_errors_total", "Store transactions that failed.", self.store_errors.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP meshmon_records_invalid_total Invalid records, by reason.");
        let _ = writeln!(out, "# TYPE meshmon_records_invalid_total counter");
        for r in InvalidReason::ALL {
            let _ = writeln!(out, "meshmon_records_invalid_total{{reason=\"{r}\"}} {}", c.invalid[r.index()]);
        }
        let wm = self.watermark();
        let now = self.now.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP meshmon_watermark_seconds Global event-time watermark (Unix seconds).");
        let _ = writeln!(out, "# TYPE meshmon_watermark_seconds gauge");
        if wm > Nanos::MIN {
            let _ = writeln!(out, "meshmon_watermark_seconds {}", wm as f64 / 1e9);
            let _ = writeln!(out, "# HELP meshmon_watermark_lag_seconds Processing time minus watermark.");
            let _ = writeln!(out, "# TYPE meshmon_watermark_lag_seconds gauge");
            let _ = writeln!(out, "meshmon_watermark_lag_seconds {}", now.saturating_sub(wm) as f64 / 1e9);
        }
        let gauge_header = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP meshmon_{name} {help}\n# TYPE meshmon_{name} gauge");
        };
        gauge_header(&mut out, "series", "Live series per shard.");
        for (i, s) in self.shards.iter().enumerate() {
            if let Ok(s) = s.lock() {
                let _ = writeln!(out, "meshmon_series{{shard=\"{i}\"}} {}", s.1.series);
            }
        }
        gauge_header(&mut out, "state_size", "Live window accumulators per shard.");
        for (i, s) in self.shards.iter().enumerate() {
            if let Ok(s) = s.lock() {
                let _ = writeln!(out, "meshmon_state_size{{shard=\"{i}\"}} {}", s.1.state_size);
            }
        }
        gauge_header(&mut out, "mailbox_depth", "Messages queued to an actor and not yet handled.");
        let _ =
            writeln!(out, "meshmon_mailbox_depth{{actor=\"router\"}} {}", self.router_mailbox.load(Ordering::Relaxed));
        let _ =
            writeln!(out, "meshmon_mailbox_depth{{actor=\"store\"}} {}", self.store_mailbox.load(Ordering::Relaxed));
        for (i, m) in self.shard_mailbox.iter().enumerate() {
            let _ =
                writeln!(out, "meshmon_mailbox_depth{{actor=\"shard\",shard=\"{i}\"}} {}", m.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP meshmon_store_write_seconds Store transaction latency.");
        let _ = writeln!(out, "# TYPE meshmon_store_write_seconds histogram");
        for (bucket, bound) in self.store_latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "meshmon_store_write_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let writes = self.store_writes.load(Ordering::Relaxed);
        let _ = writeln!(out, "meshmon_store_write_seconds_bucket{{le=\"+Inf\"}} {writes}");
        let sum = self.store_latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "meshmon_store_write_seconds_sum {sum}\nmeshmon_store_write_seconds_count {writes}");
        if let Some(kafka) = self.kafka.get() {
            kafka.render(&mut out);
        }
        if let Some(influxdb) = self.influxdb.get() {
            influxdb.render(&mut out);
        }
        out
    }
}

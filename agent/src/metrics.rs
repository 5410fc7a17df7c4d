//! The agent's self-metrics and their Prometheus text exposition.
//!
//! Role: lock-free counters and gauges that every part of the agent updates ([`Metrics`]), a
//! plain snapshot of them ([`MetricsSnapshot`]), the Prometheus text format served on
//! `GET /metrics` ([`Metrics::render_prometheus`]), and the rule that nothing is dropped
//! silently: [`Metrics::drop_records`] counts every drop by reason and logs it at warn, rate
//! limited per reason ([`RateLimiter`]). Touches nothing else.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::plugins::PluginRegistry;

/// Why records were dropped (label `reason` of `meshmon_agent_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A pushed record (HTTP line or gRPC record) was malformed; the pusher was told.
    Invalid,
    /// A plugin sample found the batch queue full.
    QueueFull,
    /// The shutdown timeout expired before the records were acknowledged.
    ShutdownTimeout,
    /// An internal invariant failed (should never happen; logged at error).
    Internal,
    /// The Kafka output's disk spool was full (`spool.when_full` chose these; logged at error).
    SpoolFull,
    /// The disk spool could not be written or read back (I/O error, corruption; logged at error).
    SpoolError,
}

impl DropReason {
    /// Every reason, in exposition order.
    pub const ALL: [DropReason; 6] = [
        DropReason::Invalid,
        DropReason::QueueFull,
        DropReason::ShutdownTimeout,
        DropReason::Internal,
        DropReason::SpoolFull,
        DropReason::SpoolError,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Invalid => "invalid",
            DropReason::QueueFull => "queue_full",
            DropReason::ShutdownTimeout => "shutdown_timeout",
            DropReason::Internal => "internal",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolError => "spool_error",
        }
    }

    fn index(self) -> usize {
        match self {
            DropReason::Invalid => 0,
            DropReason::QueueFull => 1,
            DropReason::ShutdownTimeout => 2,
            DropReason::Internal => 3,
            DropReason::SpoolFull => 4,
            DropReason::SpoolError => 5,
        }
    }
}

/// Which push API records came through (label `api` of `meshmon_agent_pushed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushApi {
    /// `POST /v1/records`.
    Http,
    /// `meshmon.v1.Ingest/Push` served by the agent.
    Grpc,
    /// [`crate::AgentHandle::push`] (in-process).
    Local,
}

impl PushApi {
    const ALL: [PushApi; 3] = [PushApi::Http, PushApi::Grpc, PushApi::Local];

    fn as_str(self) -> &'static str {
        match self {
            PushApi::Http => "http",
            PushApi::Grpc => "grpc",
            PushApi::Local => "local",
        }
    }

    fn index(self) -> usize {
        match self {
            PushApi::Http => 0,
            PushApi::Grpc => 1,
            PushApi::Local => 2,
        }
    }
}

/// Counters (monotonic) and gauges of one agent.
#[derive(Debug, Default)]
pub struct Metrics {
    collected: AtomicU64,
    pushed: [AtomicU64; 3],
    refused: AtomicU64,
    sent: AtomicU64,
    duplicate: AtomicU64,
    rejected: AtomicU64,
    aggregator_invalid: AtomicU64,
    dropped: [AtomicU64; 6],
    batches_acked: AtomicU64,
    reconnects: AtomicU64,
    queue_depth: AtomicI64,
    queue_records: AtomicI64,
    in_flight: AtomicI64,
    in_flight_records: AtomicI64,
    kafka: KafkaMetrics,
    limiter: RateLimiter,
    plugins: PluginRegistry,
}

/// Upper bounds (seconds) of the produce latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// The Kafka output's and its spool's counters and gauges.
#[derive(Debug, Default)]
struct KafkaMetrics {
    produced_batches: AtomicU64,
    produced_records: AtomicU64,
    delivery_failures: AtomicU64,
    outages: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    spooled_batches: AtomicU64,
    spooled_records: AtomicU64,
    spool_bytes: AtomicU64,
    spool_segments: AtomicU64,
    spool_batches: AtomicU64,
    spool_records: AtomicU64,
    spool_dropped_batches: AtomicU64,
    spool_dropped_records: AtomicU64,
    spool_corrupt_frames: AtomicU64,
    spool_truncated_bytes: AtomicU64,
}

/// The spool's size right now (gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolGauges {
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Spooled batches not yet acknowledged by the broker.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
}

/// A point-in-time copy of every metric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Records produced by plugins and enqueued.
    pub collected: u64,
    /// Records received through the HTTP push API and enqueued.
    pub pushed_http: u64,
    /// Records received through the gRPC push API and enqueued.
    pub pushed_grpc: u64,
    /// Records pushed in-process ([`crate::AgentHandle::push`]) and enqueued.
    pub pushed_local: u64,
    /// Records refused with backpressure (HTTP 503); the pusher has to retry them.
    pub refused: u64,
    /// Records in batches the aggregator acknowledged as ACCEPTED or DUPLICATE (delivered).
    pub sent: u64,
    /// Of `sent`: records in batches acknowledged as DUPLICATE (already stored).
    pub duplicate: u64,
    /// Records in batches the aggregator REJECTED (not retried).
    pub rejected: u64,
    /// Records of accepted batches that the aggregator counted as invalid.
    pub aggregator_invalid: u64,
    /// Dropped records per reason.
    pub dropped_invalid: u64,
    /// Plugin records dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records not delivered before the shutdown timeout.
    pub dropped_shutdown_timeout: u64,
    /// Records lost to an internal error (should stay 0).
    pub dropped_internal: u64,
    /// Batches acknowledged by the aggregator (any status).
    pub batches_acked: u64,
    /// Connections to the aggregator that failed or ended and were retried.
    pub reconnects: u64,
    /// Closed batches waiting in the queue.
    pub queue_depth: u64,
    /// Records in those batches.
    pub queue_records: u64,
    /// Batches sent and not yet acknowledged.
    pub in_flight: u64,
    /// Records in those batches.
    pub in_flight_records: u64,
    /// Records dropped because the disk spool was full.
    pub dropped_spool_full: u64,
    /// Records dropped because the disk spool failed (I/O error, corruption found while reading).
    pub dropped_spool_error: u64,
    /// Kafka output: batches the broker acknowledged.
    pub kafka_produced_batches: u64,
    /// Kafka output: records in those batches.
    pub kafka_produced_records: u64,
    /// Kafka output: delivery attempts of a batch that failed or timed out (the batch was
    /// spooled and is retried).
    pub kafka_delivery_failures: u64,
    /// Kafka output: times the broker was declared unreachable (output switched to the spool).
    pub kafka_outages: u64,
    /// Kafka output: acknowledged produce calls measured for latency.
    pub kafka_produce_latency_count: u64,
    /// Kafka output: their total latency, in microseconds.
    pub kafka_produce_latency_sum_us: u64,
    /// Batches written to the disk spool (each write counted once).
    pub spooled_batches: u64,
    /// Records in those batches.
    pub spooled_records: u64,
    /// Gauge: bytes of the spool's segment files.
    pub spool_bytes: u64,
    /// Gauge: spool segment files.
    pub spool_segments: u64,
    /// Gauge: spooled batches not yet acknowledged by the broker.
    pub spool_batches: u64,
    /// Gauge: records in those batches.
    pub spool_records: u64,
    /// Spooled (or about to be spooled) batches dropped because the spool was full.
    pub spool_dropped_batches: u64,
    /// Records in those batches.
    pub spool_dropped_records: u64,
    /// Torn or corrupt spool frames found (and cut off) when the spool was opened or read.
    pub spool_corrupt_frames: u64,
    /// Bytes cut off the spool with them.
    pub spool_truncated_bytes: u64,
}

impl MetricsSnapshot {
    /// Records received through any push API.
    pub fn pushed(&self) -> u64 {
        self.pushed_http + self.pushed_grpc + self.pushed_local
    }

    /// Dropped records, all reasons.
    pub fn dropped(&self) -> u64 {
        self.dropped_invalid
            + self.dropped_queue_full
            + self.dropped_shutdown_timeout
            + self.dropped_internal
            + self.dropped_spool_full
            + self.dropped_spool_error
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn gauge(a: &AtomicI64) -> u64 {
    u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0)
}

fn add(a: &AtomicU64, n: usize) {
    a.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

fn set(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}

fn shift(a: &AtomicI64, n: usize, up: bool) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    a.fetch_add(if up { n } else { -n }, Ordering::Relaxed);
}

impl Metrics {
    /// Fresh, all-zero metrics.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Every plugin instance's health (`meshmon_agent_plugin_*`, `GET /v1/plugins`).
    pub fn plugins(&self) -> &PluginRegistry {
        &self.plugins
    }

    /// `n` plugin records were enqueued.
    pub fn collected(&self, n: usize) {
        add(&self.collected, n);
    }

    /// `n` pushed records were enqueued.
    pub fn pushed(&self, api: PushApi, n: usize) {
        add(&self.pushed[api.index()], n);
    }

    /// `n` pushed records were refused with backpressure (the pusher was told to retry).
    pub fn refused(&self, n: usize) {
        add(&self.refused, n);
    }

    /// A batch of `records` was acknowledged ACCEPTED (`invalid` of them invalid) or DUPLICATE.
    pub fn delivered(&self, records: usize, invalid: u32, duplicate: bool) {
        add(&self.sent, records);
        add(&self.aggregator_invalid, usize::try_from(invalid).unwrap_or(usize::MAX));
        if duplicate {
            add(&self.duplicate, records);
        }
        add(&self.batches_acked, 1);
    }

    /// A batch of `records` was REJECTED by the aggregator.
    pub fn rejected(&self, records: usize) {
        add(&self.rejected, records);
        add(&self.batches_acked, 1);
    }

    /// The connection to the aggregator failed or ended and will be retried.
    pub fn reconnect(&self) {
        add(&self.reconnects, 1);
    }

    /// A closed batch of `records` entered (`up`) or left the queue.
    pub fn queue(&self, records: usize, up: bool) {
        shift(&self.queue_depth, 1, up);
        shift(&self.queue_records, records, up);
    }

    /// A batch of `records` was sent (`up`) or acknowledged.
    pub fn in_flight(&self, records: usize, up: bool) {
        shift(&self.in_flight, 1, up);
        shift(&self.in_flight_records, records, up);
    }

    /// Counts `n` dropped records and logs `detail` at warn (at most every 10 s per reason, with
    /// the number of suppressed messages); internal drops log at error (also rate limited).
    pub fn drop_records(&self, reason: DropReason, n: usize, detail: &str) {
        if n == 0 {
            return;
        }
        add(&self.dropped[reason.index()], n);
        let Some(suppressed) = self.limiter.allow(reason.as_str()) else { return };
        if matches!(reason, DropReason::Internal | DropReason::SpoolFull | DropReason::SpoolError) {
            tracing::error!(reason = reason.as_str(), records = n, suppressed, "dropped records: {detail}");
        } else {
            tracing::warn!(reason = reason.as_str(), records = n, suppressed, "dropped records: {detail}");
        }
    }

    /// Kafka output: the broker acknowledged a batch of `records`, `latency` after it was
    /// handed to the producer.
    pub fn kafka_produced(&self, records: usize, latency: Duration) {
        let k = &self.kafka;
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            add(&k.latency_buckets[i], 1);
        }
        add(&k.latency_count, 1);
        k.latency_sum_us.fetch_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        add(&k.produced_batches, 1);
        add(&k.produced_records, records);
    }

    /// Kafka output: `batches` delivery attempts failed or timed out.
    pub fn kafka_delivery_failures(&self, batches: usize) {
        add(&self.kafka.delivery_failures, batches);
    }

    /// Kafka output: the broker was declared unreachable.
    pub fn kafka_outage(&self) {
        add(&self.kafka.outages, 1);
    }

    /// A batch of `records` was written to the spool.
    pub fn spooled(&self, records: usize) {
        add(&self.kafka.spooled_batches, 1);
        add(&self.kafka.spooled_records, records);
    }

    /// The spool's current size.
    pub fn spool_gauges(&self, g: SpoolGauges) {
        let k = &self.kafka;
        set(&k.spool_bytes, g.bytes);
        set(&k.spool_segments, g.segments);
        set(&k.spool_batches, g.batches);
        set(&k.spool_records, g.records);
    }

    /// `batches` batches of `records` records were dropped because the spool was full; counts
    /// them (also as `dropped{reason="spool_full"}`) and logs `detail` at error (rate limited).
    pub fn spool_dropped(&self, batches: usize, records: usize, detail: &str) {
        add(&self.kafka.spool_dropped_batches, batches);
        add(&self.kafka.spool_dropped_records, records);
        self.drop_records(DropReason::SpoolFull, records, detail);
    }

    /// `frames` torn or corrupt spool frames spanning `bytes` bytes were cut off.
    pub fn spool_corrupt(&self, frames: u64, bytes: u64) {
        self.kafka.spool_corrupt_frames.fetch_add(frames, Ordering::Relaxed);
        self.kafka.spool_truncated_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Whether a rate-limited message under `key` may be logged now (at most every 10 s).
    pub fn log_allowed(&self, key: &'static str) -> bool {
        self.limiter.allow(key).is_some()
    }

    /// Rate-limited warn logging for problems that are not drops (retries, rejections).
    pub fn warn_limited(&self, key: &'static str, message: &str) {
        if let Some(suppressed) = self.limiter.allow(key) {
            tracing::warn!(suppressed, "{message}");
        }
    }

    /// A consistent-enough copy of every value (each read atomically).
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            collected: load(&self.collected),
            pushed_http: load(&self.pushed[PushApi::Http.index()]),
            pushed_grpc: load(&self.pushed[PushApi::Grpc.index()]),
            pushed_local: load(&self.pushed[PushApi::Local.index()]),
            refused: load(&self.refused),
            sent: load(&self.sent),
            duplicate: load(&self.duplicate),
            rejected: load(&self.rejected),
            aggregator_invalid: load(&self.aggregator_invalid),
            dropped_invalid: load(&self.dropped[DropReason::Invalid.index()]),
            dropped_queue_full: load(&self.dropped[DropReason::QueueFull.index()]),
            dropped_shutdown_timeout: load(&self.dropped[DropReason::ShutdownTimeout.index()]),
            dropped_internal: load(&self.dropped[DropReason::Internal.index()]),
            batches_acked: load(&self.batches_acked),
            reconnects: load(&self.reconnects),
            queue_depth: gauge(&self.queue_depth),
            queue_records: gauge(&self.queue_records),
            in_flight: gauge(&self.in_flight),
            in_flight_records: gauge(&self.in_flight_records),
            dropped_spool_full: load(&self.dropped[DropReason::SpoolFull.index()]),
            dropped_spool_error: load(&self.dropped[DropReason::SpoolError.index()]),
            kafka_produced_batches: load(&self.kafka.produced_batches),
            kafka_produced_records: load(&self.kafka.produced_records),
            kafka_delivery_failures: load(&self.kafka.delivery_failures),
            kafka_outages: load(&self.kafka.outages),
            kafka_produce_latency_count: load(&self.kafka.latency_count),
            kafka_produce_latency_sum_us: load(&self.kafka.latency_sum_us),
            spooled_batches: load(&self.kafka.spooled_batches),
            spooled_records: load(&self.kafka.spooled_records),
            spool_bytes: load(&self.kafka.spool_bytes),
            spool_segments: load(&self.kafka.spool_segments),
            spool_batches: load(&self.kafka.spool_batches),
            spool_records: load(&self.kafka.spool_records),
            spool_dropped_batches: load(&self.kafka.spool_dropped_batches),
            spool_dropped_records: load(&self.kafka.spool_dropped_records),
            spool_corrupt_frames: load(&self.kafka.spool_corrupt_frames),
            spool_truncated_bytes: load(&self.kafka.spool_truncated_bytes),
        }
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP meshmon_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE meshmon_agent_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "meshmon_agent_{name}{labels} {value}");
            }
        };
        let s = self.snapshot();
        metric("collected_total", "counter", "Records produced by plugins and enqueued.", &[("", s.collected)]);
        let pushed: Vec<(String, u64)> = PushApi::ALL
            .iter()
            .map(|api| (format!("{{api=\"{}\"}}", api.as_str()), load(&self.pushed[api.index()])))
            .collect();
        let pushed: Vec<(&str, u64)> = pushed.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("pushed_total", "counter", "Records received through a push API and enqueued.", &pushed);
        metric(
            "refused_total",
            "counter",
            "Pushed records refused with backpressure (HTTP 503); the pusher must retry them.",
            &[("", s.refused)],
        );
        metric(
            "sent_total",
            "counter",
            "Records in batches acknowledged by the output: the aggregator (ACCEPTED or DUPLICATE), or Kafka.",
            &[("", s.sent)],
        );
        metric(
            "duplicate_total",
            "counter",
            "Records in batches acknowledged as DUPLICATE (already stored).",
            &[("", s.duplicate)],
        );
        metric(
            "rejected_total",
            "counter",
            "Records in batches REJECTED by the aggregator, or refused for good by Kafka (e.g. too large).",
            &[("", s.rejected)],
        );
        metric(
            "aggregator_invalid_total",
            "counter",
            "Records of accepted batches that the aggregator counted as invalid.",
            &[("", s.aggregator_invalid)],
        );
        let dropped: Vec<(String, u64)> = DropReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.as_str()), load(&self.dropped[r.index()])))
            .collect();
        let dropped: Vec<(&str, u64)> = dropped.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("dropped_total", "counter", "Records dropped by the agent, by reason.", &dropped);
        metric(
            "batches_acked_total",
            "counter",
            "Batches acknowledged by the output (aggregator or Kafka broker).",
            &[("", s.batches_acked)],
        );
        metric(
            "reconnects_total",
            "counter",
            "Aggregator connections that failed or ended and were retried.",
            &[("", s.reconnects)],
        );
        metric("queue_depth", "gauge", "Closed batches waiting to be sent.", &[("", s.queue_depth)]);
        metric("queue_records", "gauge", "Records in the batches waiting to be sent.", &[("", s.queue_records)]);
        metric("in_flight", "gauge", "Batches sent and not yet acknowledged.", &[("", s.in_flight)]);
        metric("in_flight_records", "gauge", "Records in unacknowledged batches.", &[("", s.in_flight_records)]);
        metric(
            "kafka_produced_batches_total",
            "counter",
            "Kafka output: batches acknowledged by the broker.",
            &[("", s.kafka_produced_batches)],
        );
        metric(
            "kafka_produced_records_total",
            "counter",
            "Kafka output: records in batches acknowledged by the broker.",
            &[("", s.kafka_produced_records)],
        );
        metric(
            "kafka_delivery_failures_total",
            "counter",
            "Kafka output: batch deliveries that failed or timed out (the batches were spooled for a retry).",
            &[("", s.kafka_delivery_failures)],
        );
        metric(
            "kafka_outages_total",
            "counter",
            "Kafka output: times the broker was declared unreachable and batches went to the disk spool.",
            &[("", s.kafka_outages)],
        );
        metric("spooled_batches_total", "counter", "Batches written to the disk spool.", &[("", s.spooled_batches)]);
        metric(
            "spooled_records_total",
            "counter",
            "Records in batches written to the disk spool.",
            &[("", s.spooled_records)],
        );
        metric("spool_bytes", "gauge", "Bytes of the disk spool's segment files.", &[("", s.spool_bytes)]);
        metric("spool_segments", "gauge", "Segment files of the disk spool.", &[("", s.spool_segments)]);
        metric(
            "spool_batches",
            "gauge",
            "Spooled batches not yet acknowledged by the broker.",
            &[("", s.spool_batches)],
        );
        metric("spool_records", "gauge", "Records in spooled, unacknowledged batches.", &[("", s.spool_records)]);
        metric(
            "spool_dropped_batches_total",
            "counter",
            "Batches dropped because the disk spool was full (spool.when_full).",
            &[("", s.spool_dropped_batches)],
        );
        metric(
            "spool_dropped_records_total",
            "counter",
            "Records in batches dropped because the disk spool was full.",
            &[("", s.spool_dropped_records)],
        );
        metric(
            "spool_corrupt_frames_total",
            "counter",
            "Torn or corrupt spool frames found and cut off (recovery after a crash or disk damage).",
            &[("", s.spool_corrupt_frames)],
        );
        metric(
            "spool_truncated_bytes_total",
            "counter",
            "Bytes cut off the disk spool with torn or corrupt frames.",
            &[("", s.spool_truncated_bytes)],
        );
        let name = "meshmon_agent_kafka_produce_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Kafka output: time from handing a batch to the producer to the broker's acknowledgement."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&self.kafka.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.kafka_produce_latency_count);
        let sum = s.kafka_produce_latency_sum_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", s.kafka_produce_latency_count);
        self.plugins.render_prometheus(&mut out);
        out
    }
}

/// Allows one event per key per period, remembering how many were suppressed in between.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(Duration::from_secs(10))
    }
}

impl RateLimiter {
    /// A limiter allowing one event per key per `period`.
    pub fn new(period: Duration) -> RateLimiter {
        RateLimiter { period, last: Mutex::new(HashMap::new()) }
    }

    /// `Some(suppressed)` if an event for `key` may be logged now (with the number of events
    /// suppressed since the last allowed one), `None` if it is to be suppressed.
    pub fn allow(&self, key: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.period => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_exposition() {
        let m = Metrics::new();
        m.collected(3);
        m.pushed(PushApi::Http, 5);
        m.pushed(PushApi::Grpc, 2);
        m.delivered(4, 1, false);
        m.delivered(2, 0, true);
        m.rejected(7);
        m.drop_records(DropReason::QueueFull, 9, "test");
        m.queue(10, true);
        m.queue(10, true);
        m.queue(10, false);
        m.in_flight(6, true);
        let s = m.snapshot();
        assert_eq!((s.collected, s.pushed(), s.sent, s.duplicate, s.rejected), (3, 7, 6, 2, 7));
        assert_eq!((s.aggregator_invalid, s.dropped_queue_full, s.dropped()), (1, 9, 9));
        assert_eq!((s.queue_depth, s.queue_records, s.in_flight, s.in_flight_records), (1, 10, 1, 6));
        let text = m.render_prometheus();
        for line in [
            "meshmon_agent_collected_total 3",
            "meshmon_agent_pushed_total{api=\"http\"} 5",
            "meshmon_agent_pushed_total{api=\"grpc\"} 2",
            "meshmon_agent_sent_total 6",
            "meshmon_agent_rejected_total 7",
            "meshmon_agent_dropped_total{reason=\"queue_full\"} 9",
            "meshmon_agent_dropped_total{reason=\"invalid\"} 0",
            "meshmon_agent_queue_depth 1",
            "meshmon_agent_in_flight 1",
            "# TYPE meshmon_agent_in_flight gauge",
            "# TYPE meshmon_agent_sent_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn kafka_and_spool_metrics_and_latency_histogram() {
        let m = Metrics::new();
        m.kafka_produced(500, Duration::from_millis(3));
        m.kafka_produced(500, Duration::from_secs(60));
        m.kafka_delivery_failures(2);
        m.kafka_outage();
        m.spooled(500);
        m.spool_gauges(SpoolGauges { bytes: 4096, segments: 1, batches: 1, records: 500 });
        m.spool_dropped(1, 500, "test");
        m.spool_corrupt(1, 17);
        let s = m.snapshot();
        assert_eq!((s.kafka_produced_batches, s.kafka_produced_records, s.kafka_produce_latency_count), (2, 1000, 2));
        assert_eq!(s.kafka_produce_latency_sum_us, 60_003_000);
        assert_eq!(
            (s.spool_bytes, s.spool_batches, s.spool_dropped_records, s.dropped_spool_full),
            (4096, 1, 500, 500)
        );
        assert_eq!(s.dropped(), 500);
        let text = m.render_prometheus();
        for line in [
            "meshmon_agent_kafka_produced_records_total 1000",
            "meshmon_agent_kafka_delivery_failures_total 2",
            "meshmon_agent_spool_bytes 4096",
            "meshmon_agent_spool_dropped_batches_total 1",
            "meshmon_agent_spool_corrupt_frames_total 1",
            "meshmon_agent_dropped_total{reason=\"spool_full\"} 500",
            "meshmon_agent_kafka_produce_latency_seconds_bucket{le=\"0.0025\"} 0",
            "meshmon_agent_kafka_produce_latency_seconds_bucket{le=\"0.005\"} 1",
            "meshmon_agent_kafka_produce_latency_seconds_bucket{le=\"30\"} 1",
            "meshmon_agent_kafka_produce_latency_seconds_bucket{le=\"+Inf\"} 2",
            "meshmon_agent_kafka_produce_latency_seconds_count 2",
            "meshmon_agent_kafka_produce_latency_seconds_sum 60.003",
            "# TYPE meshmon_agent_kafka_produce_latency_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn gauges_never_show_negative() {
        let m = Metrics::new();
        m.queue(5, false);
        assert_eq!(m.snapshot().queue_depth, 0);
    }

    #[test]
    fn rate_limiter_suppresses_and_reports_count() {
        let r = RateLimiter::new(Duration::from_secs(3600));
        assert_eq!(r.allow("a"), Some(0));
        assert_eq!(r.allow("a"), None);
        assert_eq!(r.allow("a"), None);
        assert_eq!(r.allow("b"), Some(0), "keys are independent");
        let r = RateLimiter::new(Duration::ZERO);
        assert_eq!(r.allow("a"), Some(0));
        assert_eq!(r.allow("a"), Some(0));
    }
}

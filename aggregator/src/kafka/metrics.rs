//! `KafkaMetrics`: self-monitoring of the Kafka source, outputs and checkpoints.
//!
//! Role: counters and gauges the source, the output producer and the checkpoint path update,
//! rendered as Prometheus text after the pipeline's own metrics: consumer lag per partition,
//! messages and records in, event-time delay (processing time − event time) as a sum and
//! count (mean = sum / count), dead-lettered messages, aggregate updates out and their
//! deliveries, checkpoint count, failures, duration and size, paused partitions. Touches
//! nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Kafka-mode self-metrics.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    /// Messages consumed from the input topic (undecodable ones included).
    pub messages_in: AtomicU64,
    /// Records in decoded input messages.
    pub records_in: AtomicU64,
    /// Input messages sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Aggregate updates (and tombstones) queued for the output topic.
    pub aggregates_out: AtomicU64,
    /// Output messages the broker acknowledged.
    pub output_delivered: AtomicU64,
    /// Output messages that failed delivery.
    pub output_failed: AtomicU64,
    /// Sum over records of (processing time − event time), in microseconds.
    pub event_delay_micros_sum: AtomicU64,
    /// Records in that sum.
    pub event_delay_count: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed.
    pub checkpoint_failures: AtomicU64,
    /// Duration of the last checkpoint, microseconds.
    pub checkpoint_micros: AtomicU64,
    /// Size of the last checkpoint, bytes.
    pub checkpoint_bytes: AtomicU64,
    /// Unix time of the last checkpoint, seconds.
    pub checkpoint_time: AtomicI64,
    /// The watermark saved in the last checkpoint (ns; 0 before the first).
    pub checkpoint_watermark: AtomicI64,
    /// Partitions paused for backpressure.
    pub paused_partitions: AtomicU64,
    /// Times the merge stopped waiting for a lagging partition.
    pub merge_waits_expired: AtomicU64,
    /// Consumer errors reported by librdkafka.
    pub consumer_errors: AtomicU64,
    /// Per partition: (next offset to process, high watermark).
    partitions: Mutex<BTreeMap<i32, (i64, i64)>>,
}

impl KafkaMetrics {
    /// Notes partition `p`'s position and high watermark (lag = high − position).
    pub fn set_partition(&self, p: i32, position: i64, high: i64) {
        if let Ok(mut m) = self.partitions.lock() {
            m.insert(p, (position, high));
        }
    }

    /// Forgets a revoked partition.
    pub fn remove_partition(&self, p: i32) {
        if let Ok(mut m) = self.partitions.lock() {
            m.remove(&p);
        }
    }

    /// Lag per partition (messages not yet processed).
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.partitions
            .lock()
            .map(|m| m.iter().map(|(&p, &(pos, high))| (p, (high - pos).max(0))).collect())
            .unwrap_or_default()
    }

    /// Appends the Prometheus text to `out`.
    pub fn render(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP meshmon_{name} {help}\n# TYPE meshmon_{name} counter\nmeshmon_{name} {v}");
        };
        counter("kafka_messages_in_total", "Messages consumed from the input topic.", get(&self.messages_in));
        counter("kafka_records_in_total", "Records in decoded input messages.", get(&self.records_in));
        counter(
            "kafka_dead_lettered_total",
            "Input messages that are not a RecordBatch, sent to the dead-letter topic.",
            get(&self.dead_lettered),
        );
        counter(
            "kafka_aggregates_out_total",
            "Aggregate updates queued for the output topic.",
            get(&self.aggregates_out),
        );
        counter(
            "kafka_output_delivered_total",
            "Output messages acknowledged by the broker.",
            get(&self.output_delivered),
        );
        counter("kafka_output_failed_total", "Output messages that failed delivery.", get(&self.output_failed));
        counter("checkpoints_total", "Checkpoints written.", get(&self.checkpoints));
        counter("checkpoint_failures_total", "Checkpoints that failed.", get(&self.checkpoint_failures));
        counter(
            "kafka_merge_waits_expired_total",
            "Times the source stopped waiting for a lagging partition.",
            get(&self.merge_waits_expired),
        );
        counter("kafka_consumer_errors_total", "Consumer errors reported by librdkafka.", get(&self.consumer_errors));
        let _ = writeln!(
            out,
            "# HELP meshmon_kafka_event_delay_seconds Processing time minus event time of consumed records.\n\
             # TYPE meshmon_kafka_event_delay_seconds summary\n\
             meshmon_kafka_event_delay_seconds_sum {}\nmeshmon_kafka_event_delay_seconds_count {}",
            get(&self.event_delay_micros_sum) as f64 / 1e6,
            get(&self.event_delay_count)
        );
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP meshmon_{name} {help}\n# TYPE meshmon_{name} gauge\nmeshmon_{name} {v}");
        };
        gauge(
            "checkpoint_duration_seconds",
            "Duration of the last checkpoint.",
            get(&self.checkpoint_micros) as f64 / 1e6,
        );
        gauge("checkpoint_size_bytes", "Size of the last checkpoint.", get(&self.checkpoint_bytes) as f64);
        gauge(
            "checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint.",
            self.checkpoint_time.load(Ordering::Relaxed) as f64,
        );
        let wm = self.checkpoint_watermark.load(Ordering::Relaxed);
        if wm > 0 {
            gauge(
                "checkpoint_watermark_seconds",
                "The watermark saved in the last checkpoint (a restart resumes from it).",
                wm as f64 / 1e9,
            );
        }
        gauge(
            "kafka_paused_partitions",
            "Input partitions paused for backpressure.",
            get(&self.paused_partitions) as f64,
        );
        let _ = writeln!(out, "# HELP meshmon_kafka_lag_messages Messages not yet processed, per input partition.");
        let _ = writeln!(out, "# TYPE meshmon_kafka_lag_messages gauge");
        for (p, lag) in self.lag() {
            let _ = writeln!(out, "meshmon_kafka_lag_messages{{partition=\"{p}\"}} {lag}");
        }
    }
}

//! The InfluxDB schema meshmon writes (documented in `docs/INFLUXDB.md`).
//!
//! Role: turns an aggregate change into one `meshmon_aggregate` line — tags `metric`, `kind`
//! (fleet|cluster|node|tag|set), `dimension` (the HTTP API's dimension key text), `window` (the
//! window spec text); float fields `max`, `min`, `avg`, `last`, `sum` (decimals converted to
//! the nearest double), integer fields `count`, `revision`, `end_ms`; timestamp = window start
//! in milliseconds — so a correction is the same series and timestamp and overwrites the point.
//! A retraction (a session merged away) is the InfluxQL `DELETE` of exactly that point. Also
//! the `meshmon_self` line of the pipeline's self-metrics. Pure: reads the metrics it is given,
//! touches nothing else.

use super::influxql::delete_point;
use super::line_protocol::{LineBuilder, LineError};
use super::metrics::InfluxMetrics;
use crate::engine::{Dimension, Nanos, Stats};
use crate::http::dimension_key;
use crate::runtime::metrics::RuntimeMetrics;
use crate::store::AggregateChange;

/// The measurement of window aggregates.
pub const AGGREGATE_MEASUREMENT: &str = "meshmon_aggregate";
/// The measurement of the aggregator's self-metrics.
pub const SELF_MEASUREMENT: &str = "meshmon_self";

/// Nanoseconds → milliseconds (floor).
pub fn ms(nanos: Nanos) -> i64 {
    nanos.div_euclid(1_000_000)
}

/// The `kind` tag of a dimension.
pub fn kind(d: &Dimension) -> &'static str {
    match d {
        Dimension::Fleet => "fleet",
        Dimension::Cluster(_) => "cluster",
        Dimension::Node(_) => "node",
        Dimension::Tag { .. } => "tag",
        Dimension::Set(_) => "set",
    }
}

/// The line of an upsert; `None` for a retraction (see `docs/INFLUXDB.md`).
pub fn aggregate_line(change: &AggregateChange) -> Option<Result<String, LineError>> {
    match change {
        AggregateChange::Upsert { series, window_spec, window, stats, revision } => Some(upsert_line(
            &series.metric,
            &series.dimension,
            &window_spec.to_string(),
            window.start,
            window.end,
            stats,
            *revision,
        )),
        AggregateChange::Retract { .. } => None,
    }
}

/// The InfluxQL `DELETE` of the point a retraction removes (same tags and timestamp as its
/// upsert line); `None` for an upsert.
pub fn retraction_delete(change: &AggregateChange) -> Option<String> {
    match change {
        AggregateChange::Upsert { .. } => None,
        AggregateChange::Retract { series, window_spec, window_start } => {
            let dimension = dimension_key::encode(&series.dimension);
            let window = window_spec.to_string();
            let tags = [
                ("dimension", dimension.as_str()),
                ("kind", kind(&series.dimension)),
                ("metric", &*series.metric),
                ("window", window.as_str()),
            ];
            Some(delete_point(AGGREGATE_MEASUREMENT, &tags, ms(*window_start)))
        }
    }
}

fn upsert_line(
    metric: &str,
    dimension: &Dimension,
    window: &str,
    start: Nanos,
    end: Nanos,
    stats: &Stats,
    revision: u32,
) -> Result<String, LineError> {
    // Tags sorted by key, as InfluxDB prefers.
    LineBuilder::new(AGGREGATE_MEASUREMENT)?
        .tag("dimension", &dimension_key::encode(dimension))?
        .tag("kind", kind(dimension))?
        .tag("metric", metric)?
        .tag("window", window)?
        .float("avg", stats.avg().as_f64())?
        .int("count", i64::try_from(stats.count()).unwrap_or(i64::MAX))?
        .int("end_ms", ms(end))?
        .float("last", stats.last.as_f64())?
        .float("max", stats.totals.max.as_f64())?
        .float("min", stats.totals.min.as_f64())?
        .int("revision", i64::from(revision))?
        .float("sum", stats.sum().as_f64())?
        .finish(ms(start))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `meshmon_self` line at `now_ms` for `instance`.
pub fn self_line(
    instance: &str,
    runtime: &RuntimeMetrics,
    influx: &InfluxMetrics,
    now_ms: i64,
) -> Result<String, LineError> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = runtime.totals();
    let mut b = LineBuilder::new(SELF_MEASUREMENT)?
        .tag("instance", instance)?
        .int("records_in", int(c.records_in))?
        .int("records_accepted", int(c.accepted))?
        .int("records_late", int(c.late_dropped))?
        .int("records_invalid", int(c.invalid_total()))?
        .int("duplicate_batches", int(c.duplicate_batches))?
        .int("results", int(c.results))?
        .int("corrections", int(c.corrections))?
        .int("store_errors", int(runtime.store_errors()))?
        .int("influxdb_points_written", int(influx.points_written.load(Relaxed)))?
        .int("influxdb_dead_lettered_points", int(influx.dead_lettered_points.load(Relaxed)))?;
    if let Some(lag) = runtime.watermark_lag_seconds() {
        b = b.float("watermark_lag_seconds", lag)?;
    }
    if let Some(k) = runtime.kafka.get() {
        b = b
            .int("kafka_lag", k.lag().values().sum())?
            .int("kafka_dead_lettered", int(k.dead_lettered.load(Relaxed)))?
            .int("kafka_records_in", int(k.records_in.load(Relaxed)))?
            .float("checkpoint_duration_seconds", k.checkpoint_micros.load(Relaxed) as f64 / 1e6)?;
    }
    b.finish(now_ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::engine::{RecordId, SeriesKey, Value, Window, WindowSpec};

    #[test]
    fn an_upsert_is_one_line_with_stable_types() {
        let id = RecordId { agent: Arc::from("a"), sequence: 1, index: 0 };
        let mut stats = Stats::of(Value::Decimal(1_000_000_000), 1_500_000_000, id.clone());
        stats.merge(&Stats::of(Value::Decimal(2_500_000_000), 1_700_000_000, id));
        let change = AggregateChange::Upsert {
            series: SeriesKey {
                metric: Arc::from("shop.price"),
                dimension: Dimension::Tag { key: Arc::from("team"), value: Arc::from("a b,c=d") },
            },
            window_spec: WindowSpec::Tumbling { size: 10_000_000_000, offset: 0 },
            window: Window { start: 0, end: 10_000_000_000 },
            stats,
            revision: 2,
        };
        let line = aggregate_line(&change).unwrap().unwrap();
        assert_eq!(
            line,
            "meshmon_aggregate,dimension=tag:team\\=a\\ b%2Cc%3Dd,kind=tag,metric=shop.price,window=tumbling:10s \
             avg=1.75,count=2i,end_ms=10000i,last=2.5,max=2.5,min=1.0,revision=2i,sum=3.5 0"
        );
        assert_eq!(retraction_delete(&change), None);
    }

    #[test]
    fn a_retraction_deletes_the_point_its_upsert_wrote() {
        let change = AggregateChange::Retract {
            series: SeriesKey {
                metric: Arc::from("m'q\\x"),
                dimension: Dimension::Tag { key: Arc::from("team"), value: Arc::from("it's a,b") },
            },
            window_spec: WindowSpec::Session { gap: 10_000_000_000 },
            window_start: 20_000_999_999,
        };
        assert_eq!(aggregate_line(&change), None);
        assert_eq!(
            retraction_delete(&change).unwrap(),
            "DELETE FROM \"meshmon_aggregate\" WHERE \"dimension\" = 'tag:team=it\\'s a%2Cb' AND \"kind\" = 'tag' \
             AND \"metric\" = 'm\\'q\\\\x' AND \"window\" = 'session:10s' AND time = 20000ms"
        );
    }
}

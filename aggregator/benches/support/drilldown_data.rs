//! The drill-down benchmark data set, shared by `benches/drilldown.rs` (embedded store) and
//! `examples/hbase_drilldown.rs` (embedded vs HBase through gRPC) so both measure the same rows.
//!
//! Role: 1 000 nodes in 10 clusters, 3 metrics, one record per node, metric and second for 70 s:
//! 210 000 raw rows, generated in event-time order. Pure: builds values, touches nothing.

#![allow(dead_code)] // each includer uses its own part

use meshmon_aggregator::engine::{Nanos, Record, RecordId, Value};
use meshmon_aggregator::store::RawWrite;

pub const SEC: Nanos = 1_000_000_000;
pub const NODES: usize = 1_000;
pub const CLUSTERS: usize = 10;
pub const SECONDS: i64 = 70;
pub const METRICS: [&str; 3] = ["cpu", "disk", "mem"];

/// The record of `metric` on `node` at `t`.
pub fn record(metric: &str, node: usize, t: Nanos) -> Record {
    Record {
        metric: metric.to_owned(),
        value: Value::Decimal(i128::from((node as i64 * 7 + t / SEC) % 10_000) * 1_000_000),
        time: t,
        cluster: format!("cluster-{:02}", node % CLUSTERS),
        node: format!("node-{node:05}"),
        tags: vec![("env".into(), format!("env-{}", node % 3)), ("region".into(), format!("r{}", node % 5))],
    }
}

/// Every raw row from `t0`, in event-time order (second, node, metric).
pub fn raw_rows(t0: Nanos) -> impl Iterator<Item = RawWrite> {
    (0..SECONDS).flat_map(move |s| {
        (0..NODES).flat_map(move |node| {
            let agent: std::sync::Arc<str> = format!("agent-{node:05}").into();
            METRICS.iter().enumerate().map(move |(i, m)| {
                let t = t0 + s * SEC + (node as i64 % 1_000) * 1_000_000;
                RawWrite {
                    id: RecordId { agent: agent.clone(), sequence: s as u64 + 1, index: i as u32 },
                    record: record(m, node, t),
                    raw: Some(format!("{m} node-{node:05} {t}").into_bytes()),
                    watermark: t - 5 * SEC,
                }
            })
        })
    })
}

//! Tests of the system plugin: documented metric names, plausible values, and the plugin
//! running inside an agent.
//!
//! Role: samples this host with `SystemSampler`, checks every produced name is listed in
//! `docs/METRICS.md` (and every listed name is known to the plugin), checks values for
//! plausibility, and runs an agent with the plugin enabled against the fake aggregator.
//! Touches the host's /proc and /sys views (read only), loopback sockets and a temporary dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use common::{FakeAggregator, test_config};
use meshmon_agent::Agent;
use meshmon_agent::plugins::system::{METRIC_NAMES, SystemSampler, tag_keys};
use meshmon_agent::record::timestamp_of;
use meshmon_proto::v1::{Record, record};

fn value(r: &Record) -> f64 {
    match r.value {
        Some(record::Value::DoubleValue(v)) => v,
        ref other => panic!("{} has a non-double value {other:?}", r.metric),
    }
}

/// Metric names in the first column of the table in METRICS.md.
fn documented() -> BTreeSet<String> {
    include_str!("../../docs/METRICS.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("system."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn documentation_lists_exactly_the_plugin_metrics() {
    let code: BTreeSet<String> = METRIC_NAMES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(documented(), code, "docs/METRICS.md and METRIC_NAMES differ");
}

#[test]
fn samples_have_documented_names_and_plausible_values() {
    let mut sampler = SystemSampler::new();
    // The measurement window for CPU usage and rates (not synchronisation): sysinfo needs two
    // readings at least MINIMUM_CPU_UPDATE_INTERVAL apart.
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL + Duration::from_millis(50));
    let at = SystemTime::now();
    let records = sampler.sample(at);
    let known: BTreeSet<&str> = METRIC_NAMES.into_iter().collect();
    let keys = tag_keys();
    let mut by_name: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in &records {
        assert!(known.contains(r.metric.as_str()), "undocumented metric {}", r.metric);
        assert_eq!(r.event_time, Some(timestamp_of(at)), "event time = sample time");
        let mut tag_names: Vec<&str> = r.tags.keys().map(String::as_str).collect();
        tag_names.sort_unstable();
        let mut want: Vec<&str> = keys[r.metric.as_str()].to_vec();
        want.sort_unstable();
        assert_eq!(tag_names, want, "tags of {}", r.metric);
        assert!(value(r).is_finite());
        by_name.entry(r.metric.as_str()).or_default().push(r);
    }
    let one = |name: &str| -> f64 {
        let v = by_name.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(v.len(), 1, "{name} once per sample");
        value(v[0])
    };
    let cores = one("system.cpu.cores");
    assert!(cores >= 1.0);
    let cpu = one("system.cpu.usage_percent");
    assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
    let per_core = &by_name["system.cpu.core_usage_percent"];
    assert_eq!(per_core.len() as f64, cores);
    assert!(per_core.iter().all(|r| (0.0..=100.0).contains(&value(r))));
    let total = one("system.memory.total_bytes");
    assert!(total > 0.0);
    assert!(one("system.memory.used_bytes") <= total);
    assert!(one("system.memory.available_bytes") <= total);
    assert!(one("system.swap.used_bytes") <= one("system.swap.total_bytes"));
    for load in ["system.load.1m", "system.load.5m", "system.load.15m"] {
        assert!(one(load) >= 0.0);
    }
    assert!(one("system.processes.count") >= 1.0);
    assert!(one("system.uptime_seconds") > 0.0);
    assert!(one("system.boot_time_seconds") > 1e9);
    for r in by_name.get("system.disk.used_percent").into_iter().flatten() {
        assert!((0.0..=100.0).contains(&value(r)), "{r:?}");
    }
    for name in ["system.net.rx_bytes_per_sec", "system.disk.read_bytes_per_sec", "system.net.tx_errors_per_sec"] {
        for r in by_name.get(name).into_iter().flatten() {
            assert!(value(r) >= 0.0, "{r:?}");
        }
    }
    if by_name.contains_key("system.net.rx_bytes_total") {
        assert!(by_name.contains_key("system.net.rx_bytes_per_sec"), "rates are present from the second reading");
    }
}

#[tokio::test]
async fn the_enabled_plugin_sends_samples_through_the_agent() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.plugins.system.enabled = true;
    config.plugins.system.interval = Duration::from_millis(200);
    config.batch_max_records = 1000;
    let agent = Agent::start(config).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut changed = 0;
    let records = loop {
        let records = fake.wait_for_records(changed + 1, Duration::from_secs(15)).await;
        if records.iter().any(|r| r.metric == "system.cpu.usage_percent") {
            break records;
        }
        assert!(tokio::time::Instant::now() < deadline, "no CPU sample arrived");
        changed = records.len();
    };
    let mem = records.iter().find(|r| r.metric == "system.memory.total_bytes").unwrap();
    assert!(value(mem) > 0.0);
    assert_eq!((mem.cluster.as_str(), mem.node.as_str()), ("c-default", "n-default"));
    assert_eq!(mem.tags.get("env").map(String::as_str), Some("test"));
    assert!(agent.metrics().collected >= records.len() as u64 - 1);
    assert!(agent.shutdown().await.is_complete());
}

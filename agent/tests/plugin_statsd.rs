//! The statsd plugin with a real UDP sender.
//!
//! Role: builds the plugin through `BuildPlugin::build` on a free loopback port, sends StatsD
//! datagrams (counters with sample rates, gauges with deltas, timers, sets, DogStatsD tags,
//! malformed lines) and checks what `collect` reports; checks the `max_names` bound, that a
//! busy address fails the build naming it, that the listener lets go of its port on shutdown,
//! and that the plugin's records reach the (fake) aggregator through an agent. Waits are
//! bounded polls, never fixed sleeps. Touches loopback sockets and a temporary directory only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::plugin_ctx as ctx;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use common::{FakeAggregator, test_config};
use meshmon_agent::Agent;
use meshmon_agent::plugins::statsd::{METRIC_NAMES, StatsdSettings};
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, Instance, Plugin, PluginSettings};
use meshmon_agent::record::double_value;
use meshmon_proto::v1::Record;

/// A UDP port free right now on 127.0.0.1.
fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

fn key(r: &Record) -> String {
    let mut tags: Vec<String> =
        r.tags.iter().filter(|(k, _)| *k != "plugin").map(|(k, v)| format!("{k}={v}")).collect();
    tags.sort();
    if tags.is_empty() { r.metric.clone() } else { format!("{}{{{}}}", r.metric, tags.join(",")) }
}

/// Collects until `statsd.packets` adds up to `packets` (bounded), merging the intervals:
/// counts are summed, other values keep the last interval's.
async fn collect_packets(plugin: &mut Box<dyn Plugin>, packets: f64) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    loop {
        for r in plugin.collect(SystemTime::now()).await.expect("collects") {
            let v = double_value(&r).expect("double");
            let k = key(&r);
            if METRIC_NAMES.contains(&r.metric.as_str()) {
                *got.entry(k).or_insert(0.0) += v;
            } else {
                got.insert(k, v);
            }
        }
        if got.get("statsd.packets").copied().unwrap_or(0.0) >= packets {
            return got;
        }
        assert!(Instant::now() < deadline, "only {:?} of {packets} packets arrived", got.get("statsd.packets"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn aggregates_counters_gauges_timers_sets_and_tags() {
    let c = ctx();
    let addr = free_udp();
    let settings = StatsdSettings { listen: addr.to_string(), ..StatsdSettings::default() };
    settings.validate("plugins.statsd[0]").expect("valid");
    let mut plugin = settings.build("sd", &c.ctx).expect("builds");
    assert!(plugin.lossless(), "UDP data cannot be read again");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let timings: String = (1..=100).map(|i| format!("checkout.latency:{i}|ms|#shop:eu\n")).collect();
    let datagrams: Vec<String> = vec![
        "orders:1|c\norders:2|c\norders:1|c|@0.25".into(),
        "orders:5|c|#shop:eu,tier:gold\norders:5|c|#tier:gold,shop:eu".into(),
        "queue.depth:10|g\nqueue.depth:+5|g\nqueue.depth:-3|g".into(),
        timings,
        "visitors:alice|s\nvisitors:bob|s\nvisitors:alice|s".into(),
        "garbage\norders:x|c\nfine:1|c|@7\n".into(),
        "multi:1:2:3|h".into(),
    ];
    for d in &datagrams {
        sender.send_to(d.as_bytes(), addr).expect("send");
    }
    let got = collect_packets(&mut plugin, datagrams.len() as f64).await;
    assert_eq!(got["stats.orders"], 7.0, "1 + 2 + 1/0.25");
    assert_eq!(got["stats.orders{shop=eu,tier=gold}"], 10.0, "tag order does not split a series");
    assert_eq!(got["stats.queue.depth"], 12.0);
    assert_eq!(got["stats.checkout.latency.count{shop=eu}"], 100.0);
    assert_eq!(got["stats.checkout.latency.sum{shop=eu}"], 5050.0);
    assert_eq!(got["stats.checkout.latency.min{shop=eu}"], 1.0);
    assert_eq!(got["stats.checkout.latency.max{shop=eu}"], 100.0);
    assert_eq!(got["stats.checkout.latency.mean{shop=eu}"], 50.5);
    assert_eq!(got["stats.checkout.latency.p50{shop=eu}"], 50.0);
    assert_eq!(got["stats.checkout.latency.p95{shop=eu}"], 95.0);
    assert_eq!(got["stats.checkout.latency.p99{shop=eu}"], 99.0);
    assert_eq!(got["stats.visitors.unique"], 2.0);
    assert_eq!(got["stats.multi.count"], 3.0);
    assert_eq!(got["statsd.lines"], 3.0 + 2.0 + 3.0 + 100.0 + 3.0 + 3.0 + 1.0);
    assert_eq!(got["statsd.invalid_lines"], 3.0);
    assert_eq!(got["statsd.dropped_names"], 0.0);

    // The next interval starts empty; a gauge delta continues from the last value.
    sender.send_to(b"queue.depth:+1|g", addr).expect("send");
    let got = collect_packets(&mut plugin, 1.0).await;
    assert_eq!(got["stats.queue.depth"], 13.0);
    assert!(!got.contains_key("stats.orders"));
}

#[tokio::test]
async fn max_names_drops_are_counted_and_a_busy_port_fails_the_build() {
    let c = ctx();
    let addr = free_udp();
    let settings =
        StatsdSettings { listen: addr.to_string(), max_names: 3, prefix: String::new(), ..StatsdSettings::default() };
    let mut plugin = settings.build("sd", &c.ctx).expect("builds");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender.send_to(b"a:1|c\nb:1|c\nc:1|c\nd:1|c\ne:1|c\na:1|c", addr).expect("send");
    let got = collect_packets(&mut plugin, 1.0).await;
    assert_eq!(got["statsd.dropped_names"], 2.0);
    assert_eq!(got["a"], 2.0, "no prefix; known series keep counting");
    assert!(!got.contains_key("d") && !got.contains_key("e"));

    // The port is taken by the running instance: a second one cannot start.
    let Err(e) = settings.build("sd2", &c.ctx) else { panic!("two listeners on one port") };
    assert_eq!(e.reason, ErrorReason::Io);
    assert!(e.message.contains(&addr.to_string()), "{}", e.message);

    // On shutdown and drop the listener lets go of the port (bounded wait for the task to end).
    c.stop.send(true).expect("stop");
    drop(plugin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "the listener kept {addr} after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn records_reach_the_aggregator_through_an_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aggregator = FakeAggregator::start().await;
    let mut config = test_config(&aggregator.url(), dir.path());
    let addr = free_udp();
    let mut instance =
        Instance::new("app-statsd", StatsdSettings { listen: addr.to_string(), ..StatsdSettings::default() });
    instance.interval = Duration::from_millis(100);
    config.plugins.statsd = vec![instance];
    config.plugins.normalize().expect("valid plugin config");
    let agent = Agent::start(config).await.expect("agent starts");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender.send_to(b"signups:3|c|#plan:pro", addr).expect("send");
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        if let Some(r) = aggregator.unique_records().into_iter().find(|r| r.metric == "stats.signups") {
            break r;
        }
        assert!(Instant::now() < deadline, "stats.signups never reached the aggregator");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(double_value(&record), Some(3.0));
    assert_eq!(record.tags.get("plan").map(String::as_str), Some("pro"));
    assert_eq!(record.tags.get("env").map(String::as_str), Some("test"), "global tags");
    assert_eq!(record.node, "n-default");
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
}

#[tokio::test]
async fn what_arrived_before_shutdown_is_delivered_by_the_last_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aggregator = FakeAggregator::start().await;
    let mut config = test_config(&aggregator.url(), dir.path());
    let addr = free_udp();
    let mut instance =
        Instance::new("late-statsd", StatsdSettings { listen: addr.to_string(), ..StatsdSettings::default() });
    // One collection at start, the next an hour later: only the last collection at shutdown
    // can deliver what is sent now.
    instance.interval = Duration::from_secs(3600);
    config.plugins.statsd = vec![instance];
    config.plugins.normalize().expect("valid plugin config");
    let agent = Agent::start(config).await.expect("agent starts");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..50 {
        sender.send_to(b"orders:2|c", addr).expect("send");
    }
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
    let records = aggregator.unique_records();
    let total: f64 = records.iter().filter(|r| r.metric == "stats.orders").filter_map(double_value).sum();
    assert_eq!(total, 100.0, "every counter increment sent before shutdown is delivered");
}

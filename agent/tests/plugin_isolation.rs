//! One slow or dead plugin never delays the others (issue 6 acceptance).
//!
//! Role: starts an agent in-process against a fake aggregator with three plugin instances: a
//! `redis` pointed at a server that accepts connections and never answers (timeout 500 ms,
//! interval 1 s, the client's own read timeout far longer, so the runner's timeout is what
//! ends each collection), a `redis` pointed at a closed port, and a healthy `tcp` probe every
//! 100 ms of a live listener. Everything is judged from what the agent delivered and reports,
//! never from sleeping: the hanging instance's `agent.plugin.up = 0` records and its
//! `collect_seconds` give the span of one stuck collection; the healthy instance's records
//! whose event times fall inside that span show it kept its cadence (≥ 3 of the ~5 due);
//! `GET /v1/plugins` and `GET /metrics` show the hanging one unhealthy by timeout, the dead one
//! unhealthy by unreachable, and the healthy one with no overrun. Touches loopback sockets and
//! a temporary directory only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{FakeAggregator, eventually, http, test_config};
use meshmon_agent::Agent;
use meshmon_agent::plugins::Instance;
use meshmon_agent::plugins::redis::RedisSettings;
use meshmon_agent::plugins::tcp::TcpSettings;
use meshmon_agent::record::double_value;
use meshmon_proto::timestamp_to_nanos;
use meshmon_proto::v1::Record;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(30);

/// Records of `metric` from instance `plugin`, as (event time ns, value), in time order.
fn series(records: &[Record], metric: &str, plugin: &str) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = records
        .iter()
        .filter(|r| r.metric == metric && r.tags.get("plugin").map(String::as_str) == Some(plugin))
        .map(|r| (timestamp_to_nanos(r.event_time.as_ref().unwrap()).unwrap(), double_value(r).unwrap()))
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out.dedup();
    out
}

/// The span (start, end) in ns of the second collection of the hanging instance that timed out
/// (the first one may overlap the agent's start), once the healthy instance has delivered
/// records past its end.
fn stuck_span(records: &[Record]) -> Option<(i64, i64)> {
    let down = series(records, "agent.plugin.up", "hang");
    let took = series(records, "agent.plugin.collect_seconds", "hang");
    let &(start, up) = down.get(1)?;
    assert_eq!(up, 0.0, "a collection of a server that never answers cannot succeed");
    let secs = took.iter().find(|(t, _)| *t == start)?.1;
    #[allow(clippy::cast_possible_truncation)]
    let end = start + (secs * 1e9) as i64;
    let healthy = series(records, "agent.plugin.up", "healthy");
    healthy.iter().any(|(t, _)| *t > end).then_some((start, end))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_and_a_dead_plugin_do_not_delay_a_healthy_one() {
    // A server that accepts and never answers, holding every connection.
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hanging.accept().await {
            held.push(s);
        }
    });
    // A live port for the healthy probe (connections accepted and closed).
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap().to_string();
    let serve = tokio::spawn(async move { while live.accept().await.is_ok() {} });
    let dead_addr = common::dead_address().await.to_string();

    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&fake.url(), dir.path());
    config.batch_max_records = 50;
    let mut hang = Instance::new(
        "hang",
        RedisSettings { address: hanging_addr, read_timeout: Duration::from_secs(600), ..RedisSettings::default() },
    );
    hang.interval = Duration::from_secs(1);
    hang.timeout = Duration::from_millis(500);
    let mut dead = Instance::new("dead", RedisSettings { address: dead_addr, ..RedisSettings::default() });
    dead.interval = Duration::from_secs(1);
    dead.timeout = Duration::from_millis(500);
    let mut healthy = Instance::new(
        "healthy",
        TcpSettings { targets: vec![live_addr.clone()], connect_timeout: Duration::from_secs(1) },
    );
    healthy.interval = Duration::from_millis(100);
    healthy.timeout = Duration::from_secs(1);
    config.plugins.redis = vec![hang, dead];
    config.plugins.tcp = vec![healthy];
    let agent = Agent::start(config).await.unwrap();

    let (start, end) =
        eventually("a stuck collection and the healthy records after it", WAIT, || stuck_span(&fake.unique_records()))
            .await;
    let records = fake.unique_records();
    assert!(end - start >= 400_000_000, "the stuck collection lasted until the 500 ms timeout: {}ns", end - start);
    let healthy_up = series(&records, "agent.plugin.up", "healthy");
    let inside = healthy_up.iter().filter(|(t, v)| (start..=end).contains(t) && *v == 1.0).count();
    eprintln!("healthy probes inside the stuck collection's {}ms: {inside}", (end - start) / 1_000_000);
    assert!(
        inside >= 3,
        "the healthy probe ran {inside} times while the hanging one was stuck (~5 due): {healthy_up:?}"
    );
    let probes = records
        .iter()
        .filter(|r| r.metric == "tcp.up" && r.tags.get("target") == Some(&live_addr))
        .filter_map(double_value)
        .collect::<Vec<_>>();
    assert!(!probes.is_empty() && probes.iter().all(|v| *v == 1.0), "{probes:?}");
    let dead_up = series(&records, "agent.plugin.up", "dead");
    assert!(!dead_up.is_empty() && dead_up.iter().all(|(_, v)| *v == 0.0), "{dead_up:?}");

    // The same story in the agent's own reports.
    let plugins = http(agent.http_addr(), "GET", "/v1/plugins", b"").await.json();
    let by_name = |name: &str| plugins.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    let hang = by_name("hang");
    assert_eq!(hang["healthy"], false, "{hang}");
    assert!(hang["errors"]["timeout"].as_u64().unwrap() >= 1, "{hang}");
    assert_eq!(hang["last_error_reason"], "timeout", "{hang}");
    let dead = by_name("dead");
    assert_eq!(dead["healthy"], false, "{dead}");
    assert!(dead["errors"]["unreachable"].as_u64().unwrap() >= 1, "{dead}");
    assert_eq!(dead["errors"]["timeout"], 0, "{dead}");
    let healthy = by_name("healthy");
    assert_eq!(healthy["healthy"], true, "{healthy}");
    assert_eq!(healthy["overruns"], 0, "{healthy}");
    let metrics = http(agent.http_addr(), "GET", "/metrics", b"").await.body;
    assert!(metrics.contains("meshmon_agent_plugin_overruns_total{plugin=\"healthy\",kind=\"tcp\"} 0\n"), "{metrics}");
    assert!(metrics.contains("meshmon_agent_plugin_up{plugin=\"hang\",kind=\"redis\"} 0\n"), "{metrics}");
    assert!(
        metrics.contains("meshmon_agent_plugin_errors_total{plugin=\"dead\",kind=\"redis\",reason=\"unreachable\"}"),
        "{metrics}"
    );

    agent.shutdown().await;
    hold.abort();
    serve.abort();
}

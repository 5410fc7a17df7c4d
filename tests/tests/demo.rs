//! The README's first command: `meshmon-aggregator demo` serves the page with live data — host
//! metrics from the in-process agent and the synthetic shop app's business metrics — within a
//! minute, and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use meshmon_tests::{LogsOnFailure, Proc, binary, get_json, http, path_str, query_value, wait_for};

#[test]
fn demo_serves_live_aggregates_and_drill_down_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let bin = binary("meshmon-aggregator", "meshmon-aggregator").unwrap();
    let data = dir.path().join("demo-data");
    let args =
        ["demo", "--http-listen", "127.0.0.1:0", "--system-interval", "1s", "--data-dir", path_str(&data).unwrap()];
    let mut demo = Proc::start("demo", &bin, &args, &[], dir.path()).unwrap();
    let mut logs = LogsOnFailure::default();
    logs.add(&demo);
    // "meshmon demo is running: open http://127.0.0.1:P/"
    let addr: SocketAddr = demo
        .wait_for_log_line("the demo's URL", Duration::from_secs(60), |line| {
            line.strip_prefix("meshmon demo is running: open http://")?.trim_end_matches('/').parse().ok()
        })
        .unwrap();
    assert_eq!(http("GET", addr, "/", None).unwrap().status, 200, "the page is served");

    // Live data: a closed window of the shop app's order values, and host metrics from the agent.
    let point = wait_for("a closed window of shop.order_value", Duration::from_secs(60), || {
        let body = get_json(addr, "/api/aggregates?metric=shop.order_value&dimension=fleet").ok()?;
        body["points"].as_array()?.iter().find(|p| p["count"].as_u64() > Some(5)).cloned()
    })
    .unwrap();
    wait_for("system metrics from the agent", Duration::from_secs(60), || {
        let metrics = get_json(addr, "/api/metrics").ok()?;
        metrics["metrics"].as_array()?.iter().any(|m| m == "system.memory.used_bytes").then_some(())
    })
    .unwrap();

    // Drill-down behind that point returns exactly its records.
    let start = point["start"].as_i64().unwrap();
    let raw = get_json(
        addr,
        &format!("/api/raw?metric=shop.order_value&dimension={}&start={start}&page_size=10000", query_value("fleet")),
    )
    .unwrap();
    assert_eq!(raw["records"].as_array().unwrap().len() as u64, point["count"].as_u64().unwrap());

    let status = demo.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "demo exit status {status}");
    let log = demo.log_text();
    assert!(log.contains("agent flushed") && log.contains("pipeline flushed"), "graceful stop:\n{log}");
}

//! The prometheus plugin against real exporters: the agent's own `GET /metrics` (an agent
//! started in-process) and a scripted HTTP server (`meshmon_tests::http_stub`).
//!
//! Role: builds the plugin through `BuildPlugin::build`, calls `collect` and checks the records
//! against what the exporter serves — counters the test pushed, histogram buckets, escaped
//! label values, NaN/±Inf skipped and counted, exporter timestamps as event time, the
//! `max_series` cap, allow/deny lists — and the failures: closed port (unreachable), refused
//! credentials (auth), an HTML page or an oversized body (protocol). Then runs the plugin inside
//! an agent and finds its records at the (fake) aggregator. Servers stop when dropped, also on
//! failure. Touches loopback sockets and temporary directories only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PluginCtx as Ctx, plugin_ctx as ctx};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use common::{FakeAggregator, test_config};
use meshmon_agent::Agent;
use meshmon_agent::plugins::http::HttpAuth;
use meshmon_agent::plugins::prometheus::PrometheusSettings;
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, Instance, PluginSettings, SecretRef};
use meshmon_agent::record::{double_record, double_value, now_timestamp, timestamp_of};
use meshmon_proto::v1::Record;
use meshmon_tests::http_stub::{HttpStub, StubRequest, StubResponse};

fn scrape_settings(url: String) -> PrometheusSettings {
    PrometheusSettings { url, ..PrometheusSettings::default() }
}

async fn scrape(c: &Ctx, settings: PrometheusSettings) -> Result<Vec<Record>, meshmon_agent::plugins::PluginError> {
    settings.validate("plugins.prometheus[0]").expect("valid settings");
    let mut plugin = settings.build("scrape", &c.ctx).expect("builds");
    plugin.collect(SystemTime::now()).await
}

fn find<'a>(records: &'a [Record], metric: &str, tags: &[(&str, &str)]) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.metric == metric && tags.iter().all(|(k, v)| r.tags.get(*k).map(String::as_str) == Some(*v)))
}

fn value(records: &[Record], metric: &str, tags: &[(&str, &str)]) -> f64 {
    find(records, metric, tags).and_then(double_value).unwrap_or_else(|| panic!("{metric} {tags:?} missing"))
}

/// Sample lines of an exposition text.
fn sample_lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count()
}

#[tokio::test]
async fn scrapes_the_agents_own_metrics_endpoint() {
    let c = ctx();
    let aggregator = FakeAggregator::start().await;
    let agent = Agent::start(test_config(&aggregator.url(), c.dir.path())).await.expect("agent starts");
    let records: Vec<Record> = (0..5).map(|i| double_record("app.value", f64::from(i), now_timestamp())).collect();
    let summary = agent.push(records).await.expect("pushed");
    assert_eq!(summary.accepted, 5);

    let settings = PrometheusSettings {
        prefix: "self".into(),
        ..scrape_settings(format!("http://{}/metrics", agent.http_addr()))
    };
    let records = scrape(&c, settings).await.expect("scrapes");
    let text = agent.prometheus_text();
    assert_eq!(value(&records, "self.meshmon_agent_pushed_total", &[("api", "local")]), 5.0);
    assert_eq!(value(&records, "self.meshmon_agent_pushed_total", &[("api", "http")]), 0.0);
    assert_eq!(value(&records, "prometheus.samples", &[("plugin", "scrape")]), sample_lines(&text) as f64);
    assert_eq!(value(&records, "prometheus.invalid_lines", &[]), 0.0);
    assert_eq!(value(&records, "prometheus.dropped_series", &[]), 0.0);
    // The histogram: every bucket with its `le`, then _sum and _count.
    let name = "self.meshmon_agent_kafka_produce_latency_seconds";
    assert_eq!(value(&records, &format!("{name}_bucket"), &[("le", "+Inf")]), 0.0);
    let buckets = records.iter().filter(|r| r.metric == format!("{name}_bucket")).count();
    assert_eq!(
        buckets,
        text.lines().filter(|l| l.starts_with("meshmon_agent_kafka_produce_latency_seconds_bucket")).count()
    );
    assert_eq!(value(&records, &format!("{name}_count"), &[]), 0.0);
    assert!(value(&records, "prometheus.scrape_seconds", &[]) > 0.0);
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
}

const EXPOSITION: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
not_a_number NaN
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5",service="a"} 4773
rpc_duration_seconds{quantile="0.99",service="a"} 76656
rpc_duration_seconds_sum{service="a"} 1.7560473e+07
rpc_duration_seconds_count{service="a"} 2693
this line is not exposition text
"#;

fn exporter(req: &StubRequest) -> StubResponse {
    match req.path.as_str() {
        "/metrics" => StubResponse::new(200, EXPOSITION).header("Content-Type", "text/plain; version=0.0.4"),
        "/secured" if req.header("authorization") == Some("Bearer t0ken") => StubResponse::new(200, "up 1\n"),
        "/secured" => StubResponse::new(401, "unauthorized"),
        "/html" => StubResponse::new(200, "<html>\n<body>hello</body>\n</html>\n").header("Content-Type", "text/html"),
        "/huge" => StubResponse::new(200, "x 1\n".repeat(10_000)),
        _ => StubResponse::new(404, "not found"),
    }
}

#[tokio::test]
async fn scrapes_a_test_exporter_with_escapes_timestamps_histograms_and_bounds() {
    let c = ctx();
    let stub = HttpStub::start(exporter).await.expect("stub");
    let records = scrape(&c, scrape_settings(stub.url("/metrics"))).await.expect("scrapes");
    assert_eq!(stub.requests()[0].header("accept").map(|a| a.starts_with("text/plain;version=0.0.4")), Some(true));

    let r = find(&records, "prom.http_requests_total", &[("code", "200"), ("method", "post")]).expect("counter");
    assert_eq!(double_value(r), Some(1027.0));
    assert_eq!(r.event_time, Some(meshmon_proto::nanos_to_timestamp(1_395_066_363_000 * 1_000_000)), "exporter time");
    let r = find(&records, "prom.msdos_file_access_time_seconds", &[("path", "C:\\DIR\\FILE.TXT")]).expect("escapes");
    assert_eq!(r.tags["error"], "Cannot find file: \"FILE.TXT\"", "newline replaced by a blank");
    assert_eq!(double_value(r), Some(1.458_255_915e9));
    assert_eq!(value(&records, "prom.http_request_duration_seconds_bucket", &[("le", "0.1")]), 33444.0);
    assert_eq!(value(&records, "prom.http_request_duration_seconds_bucket", &[("le", "+Inf")]), 144_320.0);
    assert_eq!(value(&records, "prom.http_request_duration_seconds_sum", &[]), 53423.0);
    assert_eq!(value(&records, "prom.rpc_duration_seconds", &[("quantile", "0.99"), ("service", "a")]), 76656.0);
    assert_eq!(value(&records, "prom.rpc_duration_seconds_count", &[("service", "a")]), 2693.0);
    assert!(find(&records, "prom.not_a_number", &[]).is_none());
    assert!(find(&records, "prom.something_weird", &[]).is_none());
    assert_eq!(value(&records, "prometheus.samples", &[("plugin", "scrape")]), 13.0);
    assert_eq!(value(&records, "prometheus.non_finite_samples", &[]), 2.0);
    assert_eq!(value(&records, "prometheus.invalid_lines", &[]), 1.0);
    assert_eq!(value(&records, "prometheus.dropped_series", &[]), 0.0);

    // Exporter timestamps ignored; a cap; label lists; static tags.
    let at = SystemTime::now();
    let settings = PrometheusSettings {
        honor_timestamps: false,
        max_series: 5,
        label_denylist: vec!["method".into()],
        tags: [("job".to_owned(), "web".to_owned())].into(),
        ..scrape_settings(stub.url("/metrics"))
    };
    settings.validate("p").expect("valid");
    let mut plugin = settings.build("capped", &c.ctx).expect("builds");
    let records = plugin.collect(at).await.expect("scrapes");
    let scraped: Vec<&Record> = records.iter().filter(|r| r.metric.starts_with("prom.")).collect();
    assert_eq!(scraped.len(), 5);
    assert!(scraped.iter().all(|r| r.event_time == Some(timestamp_of(at))));
    assert!(
        scraped.iter().all(|r| r.tags.get("job").map(String::as_str) == Some("web") && !r.tags.contains_key("method"))
    );
    assert_eq!(value(&records, "prometheus.dropped_series", &[("plugin", "capped")]), 8.0);
    assert_eq!(value(&records, "prometheus.samples", &[]), 5.0);
}

#[tokio::test]
async fn unreachable_refused_and_garbage_endpoints_fail_the_collection() {
    let c = ctx();
    let stub = HttpStub::start(exporter).await.expect("stub");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let e = scrape(&c, scrape_settings(format!("http://{closed}/metrics"))).await.expect_err("closed port");
    assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");

    let e = scrape(&c, scrape_settings(stub.url("/secured"))).await.expect_err("no token");
    assert_eq!(e.reason, ErrorReason::Auth, "{e}");
    let token = c.dir.path().join("token");
    std::fs::write(&token, "t0ken\n").expect("write");
    let auth = HttpAuth { bearer_token: SecretRef { env: None, file: Some(token) }, ..HttpAuth::default() };
    let records =
        scrape(&c, PrometheusSettings { auth, ..scrape_settings(stub.url("/secured")) }).await.expect("token");
    assert_eq!(value(&records, "prom.up", &[]), 1.0);

    let e = scrape(&c, scrape_settings(stub.url("/html"))).await.expect_err("html");
    assert_eq!(e.reason, ErrorReason::Protocol, "{e}");
    let e = scrape(&c, scrape_settings(stub.url("/missing"))).await.expect_err("404");
    assert_eq!(e.reason, ErrorReason::Protocol, "{e}");
    let e = scrape(&c, PrometheusSettings { max_body_bytes: 4096, ..scrape_settings(stub.url("/huge")) })
        .await
        .expect_err("too big");
    assert_eq!(e.reason, ErrorReason::Protocol, "{e}");
    assert!(e.message.contains("max_body_bytes"), "{e}");
}

#[tokio::test]
async fn runs_inside_an_agent_and_its_records_reach_the_aggregator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = HttpStub::start(exporter).await.expect("stub");
    let aggregator = FakeAggregator::start().await;
    let mut config = test_config(&aggregator.url(), dir.path());
    let settings = PrometheusSettings { metric_pattern: Some("^rpc_".into()), ..scrape_settings(stub.url("/metrics")) };
    let mut instance = Instance::new("exporter", settings);
    instance.interval = Duration::from_secs(3600);
    config.plugins.prometheus = vec![instance];
    config.plugins.normalize().expect("valid plugin config");
    let agent = Agent::start(config).await.expect("agent starts");
    // 4 rpc samples + 5 scrape records + 3 health records.
    let got = aggregator.wait_for_records(12, Duration::from_secs(30)).await;
    let by_name: BTreeMap<&str, &Record> = got.iter().map(|r| (r.metric.as_str(), r)).collect();
    let r = by_name["prom.rpc_duration_seconds_sum"];
    assert_eq!(double_value(r), Some(1.756_047_3e7));
    assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c-default", "n-default"), "the agent stamps its context");
    assert_eq!(r.tags.get("env").map(String::as_str), Some("test"), "global tags");
    assert_eq!(double_value(by_name["agent.plugin.up"]), Some(1.0));
    assert_eq!(double_value(by_name["prometheus.samples"]), Some(4.0));
    let report = agent.shutdown().await;
    assert!(report.is_complete(), "{report:?}");
}

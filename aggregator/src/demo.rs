//! `meshmon-aggregator demo`: the whole pipeline on one machine with no external server.
//!
//! Role: starts the aggregator on embedded defaults (store in a temp dir), an in-process agent
//! with the system plugin (on its own runtime thread, as a separate process would be) pushing
//! to it over gRPC, and a synthetic shop app pushing business metrics to that agent with
//! realistic disorder and a few records too late to count; prints the page's URL; stops
//! gracefully on Ctrl-C/SIGTERM (the agent flushes, then the aggregator). Touches a temp dir
//! and loopback sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use meshmon_aggregator::config::AggregatorConfig;
use meshmon_aggregator::engine::time::NANOS_PER_MILLI;
use meshmon_aggregator::runtime::clock::now_nanos;
use meshmon_aggregator::server;
use meshmon_aggregator::synthetic::XorShift;
use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::{self, Decimal};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// HTTP address of the page and API.
    pub http: SocketAddr,
    /// Where the store lives (default: a new temp dir).
    pub data_dir: Option<PathBuf>,
    /// How often the system plugin samples.
    pub system_interval: Duration,
}

/// Runs the demo until Ctrl-C/SIGTERM.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let data_dir = match &options.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("meshmon-demo-{}-{}", std::process::id(), now_nanos())),
    };
    let mut config = AggregatorConfig::default();
    config.listen.grpc = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.http = options.http;
    config.store.data_dir = data_dir.join("aggregator");
    config.store.retention = 3_600 * 1_000 * NANOS_PER_MILLI;
    let running = server::start(&config).await.context("starting the aggregator")?;
    let http = running.http_addr;
    let grpc = running.grpc_addr.context("the demo runs the embedded (gRPC) mode")?;

    let mut agent_config = meshmon_agent::Config {
        agent_id: format!("demo-{}", meshmon_agent::config::host_name()),
        cluster: "demo".into(),
        output: format!("http://{grpc}"),
        grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: data_dir.join("agent"),
        ..meshmon_agent::Config::default()
    };
    agent_config.metrics_listen = agent_config.http_listen;
    agent_config.plugins.system.interval = options.system_interval;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent_thread = std::thread::Builder::new()
        .name("demo-agent".into())
        .spawn(move || run_agent(agent_config, stop_rx))
        .context("starting the agent thread")?;

    println!("meshmon demo is running: open http://{http}/");
    println!("  aggregator: gRPC ingest {grpc}, HTTP {http} (JSON API under /api, Prometheus /metrics)");
    println!(
        "  agent: system plugin every {:?}, plus a synthetic shop app (orders, checkout latency)",
        options.system_interval
    );
    println!("  data: {}", data_dir.display());
    println!("Press Ctrl-C to stop.");
    server::shutdown_signal().await;
    println!("stopping: flushing the agent, then the aggregator…");
    let _ = stop_tx.send(true);
    let agent_result = tokio::task::spawn_blocking(move || agent_thread.join()).await;
    running.stop().await;
    match agent_result {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e),
        _ => Err(anyhow::anyhow!("the agent thread panicked")),
    }
}

/// The agent and the synthetic app, on their own runtime until `stop` turns true.
fn run_agent(config: meshmon_agent::Config, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().context("agent runtime")?;
    runtime.block_on(async move {
        let agent = meshmon_agent::Agent::start(config).await.context("starting the agent")?;
        let mut rng = XorShift::new(now_nanos() as u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let records = (0..12).map(|_| {
                n += 1;
                shop_record(&mut rng, n)
            });
            if let Err(e) = agent.push(records.collect()).await {
                tracing::warn!(error = %e, "synthetic app push failed");
            }
        }
        let report = agent.shutdown().await;
        println!("agent flushed: {report:?}");
        Ok(())
    })
}

/// One business record of a synthetic shop: order values as exact decimals, checkout latency
/// as doubles; event times up to 3 s in the past, and one record in 60 three minutes late.
fn shop_record(rng: &mut XorShift, n: u64) -> v1::Record {
    const SHOPS: [(&str, &str); 4] =
        [("eu", "shop-eu-1"), ("eu", "shop-eu-2"), ("us", "shop-us-1"), ("asia", "shop-asia-1")];
    let (region, node) = SHOPS[rng.below(SHOPS.len() as u64) as usize];
    let late = n.is_multiple_of(60);
    let back = if late { 180_000 } else { rng.below(3_000) as i64 };
    let time = now_nanos() - back * NANOS_PER_MILLI;
    let (metric, value) = if n.is_multiple_of(3) {
        let cents = 500 + rng.below(20_000) as i64;
        (
            "shop.order_value",
            v1::record::Value::DecimalValue(Decimal { units: cents / 100, nanos: ((cents % 100) * 10_000_000) as i32 }),
        )
    } else {
        let ms = 20.0 + rng.below(3_000) as f64 / 10.0 + if region == "asia" { 80.0 } else { 0.0 };
        ("shop.checkout_latency_ms", v1::record::Value::DoubleValue(ms))
    };
    v1::Record {
        metric: metric.into(),
        value: Some(value),
        event_time: Some(nanos_to_timestamp(time)),
        cluster: "shop".into(),
        node: node.into(),
        tags: [("region".to_string(), region.to_string()), ("app".to_string(), "checkout".to_string())].into(),
        raw: Some(format!("order #{n} region={region} node={node}").into_bytes()),
    }
}

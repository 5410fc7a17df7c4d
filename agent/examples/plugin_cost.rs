//! Each plugin's own cost: CPU time and wall time of one collection, and the share of one core
//! that costs at the plugin's default interval.
//!
//! Role: starts the real servers the middleware plugins watch (redis-server, PostgreSQL,
//! MariaDB, RabbitMQ with its management plugin, tansu) through the `meshmon-tests` helpers,
//! configures one instance of every plugin kind from TOML against them (plus a local HTTP stub, a
//! log file and a StatsD port), then runs `collect` N times per instance and reads this
//! process's CPU time (`/proc/self/stat`, user + system) before and after. Between collections
//! the log file gets 100 new lines (10 matching) and the StatsD port 100 lines — that writing is
//! done by this process and is included in those two rows (it is small next to the reading).
//! Touches loopback sockets, child processes and temporary directories only.
//!
//! Usage: `cargo run --release -p meshmon-agent --example plugin_cost -- [collections=200]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::metrics::Metrics;
use meshmon_agent::plugins::{self, PluginContext, PluginsConfig};
use meshmon_tests::http_stub::{HttpStub, StubResponse};
use meshmon_tests::{mariadb::MariaDb, postgres, rabbitmq::RabbitMq, redis::Redis, tansu::Tansu};

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0 // USER_HZ
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("starting servers ...");
    let redis = Redis::start(dir.path(), &[]).expect("redis");
    let pg = postgres::Postgres::start().expect("postgres");
    let maria = MariaDb::start().expect("mariadb");
    maria
        .sql("CREATE USER 'meshmon'@'127.0.0.1' IDENTIFIED BY 'cost'; GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'meshmon'@'127.0.0.1';")
        .expect("mysql user");
    let rabbit = RabbitMq::start(&dir.path().join("rabbit")).expect("rabbitmq");
    for q in 0..10 {
        rabbit.declare_queue("%2F", &format!("q{q}")).expect("queue");
    }
    let tansu = Tansu::start(&dir.path().join("tansu")).expect("tansu");
    tansu.create_topic("cost", 3).expect("topic");
    let exposition = Metrics::new().render_prometheus();
    let lines = exposition.lines().filter(|l| !l.starts_with('#')).count();
    let stub = HttpStub::start(move |_| StubResponse::new(200, exposition.clone())).await.expect("stub");
    let log_path = dir.path().join("app.log");
    std::fs::write(&log_path, "").expect("log");
    let pw = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("secret");
        p.display().to_string()
    };
    let (pg_pw, my_pw, rb_pw) = (pw("pg", postgres::SUPERUSER_PASSWORD), pw("my", "cost"), pw("rb", "guest"));
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp").local_addr().expect("addr");
    let toml = format!(
        r#"
        [[process]]
        matches = [{{ label = "self", pattern = "plugin_cost" }}, {{ label = "redis", name = "redis-server" }}]
        [[tcp]]
        targets = ["{redis}", "127.0.0.1:{pg_port}", "127.0.0.1:{my_port}"]
        [[http]]
        url = "{http}"
        body_match = "meshmon_agent_sent_total"
        [[log]]
        paths = ["{log}"]
        rules = [{{ name = "error", pattern = "ERROR" }}, {{ name = "slow", pattern = "slow", keep_line = false }}]
        [[kafka]]
        brokers = ["{kafka}"]
        [[redis]]
        address = "{redis}"
        [[rabbitmq]]
        url = "{rabbit}"
        username = "guest"
        password = {{ file = "{rb_pw}" }}
        [[postgresql]]
        port = {pg_port}
        user = "postgres"
        password = {{ file = "{pg_pw}" }}
        [[mysql]]
        port = {my_port}
        user = "meshmon"
        password = {{ file = "{my_pw}" }}
        [[prometheus]]
        url = "{http}"
        [[statsd]]
        listen = "{statsd}"
        "#,
        redis = redis.address(),
        pg_port = pg.port,
        my_port = maria.port,
        http = stub.url("/metrics"),
        log = log_path.display(),
        kafka = tansu.bootstrap(),
        rabbit = rabbit.url(),
    );
    let mut config: PluginsConfig = toml::from_str(&toml).expect("plugin config");
    config.normalize().expect("valid");
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let ctx = PluginContext { state_dir: dir.path().join("state"), shutdown, metrics: Arc::new(Metrics::new()) };
    let built = plugins::build_all(&config, &ctx).expect("plugins build");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut log = std::fs::OpenOptions::new().append(true).open(&log_path).expect("log");

    println!("collections per plugin: {n}; prometheus/http body: {lines} samples");
    println!(
        "| plugin | records/collection | wall ms/collection | CPU ms/collection | default interval | share of one core |"
    );
    println!("|---|---|---|---|---|---|");
    for mut s in built {
        // Warm up (connections, baselines), then measure.
        let _ = s.plugin.collect(SystemTime::now()).await;
        s.plugin.enqueued();
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let mut records = 0usize;
        let mut failures = 0usize;
        for i in 0..n {
            if s.kind == "log" {
                for j in 0..100 {
                    let level = if j % 10 == 0 { "ERROR" } else { "INFO" };
                    writeln!(log, "2026-11-21T12:00:00Z {level} request {i}-{j} served in 12 ms").expect("append");
                }
            }
            if s.kind == "statsd" {
                for j in 0..100 {
                    sender.send_to(format!("api.requests.{}:1|c", j % 10).as_bytes(), statsd).expect("send");
                }
            }
            match tokio::time::timeout(s.timeout, s.plugin.collect(SystemTime::now())).await {
                Ok(Ok(r)) => records += r.len(),
                _ => failures += 1,
            }
            s.plugin.enqueued();
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed());
        #[allow(clippy::cast_precision_loss)]
        let per = |x: f64| x * 1e3 / n as f64;
        let interval = s.interval.as_secs_f64();
        let share = per(cpu) / 1e3 / interval * 100.0;
        println!(
            "| {} | {} | {:.2} | {:.2} | {} s | {:.4} % |{}",
            s.kind,
            records / n.max(1),
            per(wall.as_secs_f64()),
            per(cpu),
            interval,
            share,
            if failures > 0 { format!(" ({failures} failed)") } else { String::new() }
        );
    }
    // The system plugin has its own loop; measure its sampler the same way.
    let mut sampler = plugins::system::SystemSampler::new();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    let mut records = 0;
    for _ in 0..n {
        records += sampler.sample(SystemTime::now()).len();
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed());
    #[allow(clippy::cast_precision_loss)]
    let per = |x: f64| x * 1e3 / n as f64;
    println!(
        "| system | {} | {:.2} | {:.2} | 10 s | {:.4} % |",
        records / n.max(1),
        per(wall.as_secs_f64()),
        per(cpu),
        per(cpu) / 1e3 / 10.0 * 100.0
    );
    drop(rabbit);
}

//! Tests of the `meshmon-agent` binary as a process: SIGTERM flush, exit statuses, `--help`,
//! and the file < environment < flag precedence of the configuration.
//!
//! Role: spawns the real binary (`CARGO_BIN_EXE_meshmon-agent`) with temporary configuration
//! files, learns its ephemeral ports from `--print-addresses`, pushes over HTTP, signals it with
//! `kill -TERM`, and checks what the fake aggregator received. Touches loopback sockets,
//! temporary files and the child processes it starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{FakeAggregator, dead_address, http};
use meshmon_proto::v1::{Decimal, record};

const BIN: &str = env!("CARGO_BIN_EXE_meshmon-agent");

fn write_config(dir: &Path, output: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    let state = dir.join("state");
    let text = format!(
        r#"
agent_id = "bin-agent"
cluster = "c1"
node = "n1"
output = "{output}"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
batch_max_records = 1000
batch_max_delay = "1h"
state_dir = "{}"
{extra}
[tags]
role = "web"
[plugins.system]
enabled = false
"#,
        state.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Running {
    child: Child,
    http: SocketAddr,
    stderr_path: std::path::PathBuf,
}

impl Running {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn sigterm(&self) {
        let ok = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill -TERM failed");
    }

    /// Waits for the exit, polling with a deadline.
    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not exit within {timeout:?}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary and reads the address line it prints once listening.
async fn spawn_agent(dir: &Path, config: &Path) -> Running {
    let stderr_path = dir.join("stderr.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("--print-addresses")
        .env("MESHMON_AGENT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let mut running = Running { child, http: "127.0.0.1:1".parse().unwrap(), stderr_path };
    assert!(!line.is_empty(), "agent printed no addresses; stderr:\n{}", running.stderr());
    let addrs: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(addrs["metrics"], addrs["http"], "metrics shares the HTTP server when the addresses are equal");
    running.http = addrs["http"].as_str().unwrap().parse().unwrap();
    running
}

#[tokio::test]
async fn sigterm_flushes_every_pushed_record_and_exits_zero() {
    let fake = FakeAggregator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake.url(), "shutdown_timeout = \"20s\"");
    let mut agent = spawn_agent(dir.path(), &config).await;
    let mut expected = Vec::new();
    for request in 0..3 {
        let mut body = String::new();
        for i in 0..8 {
            let n = request * 8 + i;
            body.push_str(&format!(
                "{{\"metric\":\"bin.m{n}\",\"value\":\"{n}.25\",\"time\":{}}}\n",
                1_767_225_600_000u64 + n
            ));
            expected.push(n);
        }
        let resp = http(agent.http, "POST", "/v1/records", body.as_bytes()).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert_eq!(resp.json()["accepted"], 8);
    }
    assert!(fake.batches().is_empty(), "records wait in the open batch (max delay 1 h)");
    agent.sigterm();
    let status = agent.wait(Duration::from_secs(30)).await;
    let stderr = agent.stderr();
    assert!(status.success(), "exit status {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    let records = fake.unique_records();
    assert_eq!(records.len(), expected.len(), "every pushed record reached the aggregator");
    for (r, n) in records.iter().zip(&expected) {
        assert_eq!(r.metric, format!("bin.m{n}"));
        let want = Decimal { units: i64::try_from(*n).unwrap(), nanos: 250_000_000 };
        assert_eq!(r.value, Some(record::Value::DecimalValue(want)));
        assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c1", "n1"));
        assert_eq!(r.tags.get("role").map(String::as_str), Some("web"));
    }
    assert!(fake.unique_batches().iter().all(|b| b.agent_id == "bin-agent"));
    let state = std::fs::read_to_string(dir.path().join("state").join("sequence")).unwrap();
    assert_eq!(state.trim(), "2", "one batch sent; the exact next sequence is stored");
}

#[tokio::test]
async fn sigterm_with_unreachable_aggregator_reports_undelivered_and_exits_3() {
    let dead = dead_address().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://{dead}"), "shutdown_timeout = \"300ms\"");
    let mut agent = spawn_agent(dir.path(), &config).await;
    let body = "{\"metric\":\"a\",\"value\":1}\n{\"metric\":\"b\",\"value\":2}\n{\"metric\":\"c\",\"value\":3}\n";
    assert_eq!(http(agent.http, "POST", "/v1/records", body.as_bytes()).await.status, 200);
    agent.sigterm();
    let status = agent.wait(Duration::from_secs(30)).await;
    let stderr = agent.stderr();
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    assert!(stderr.contains("shutdown incomplete") && stderr.contains("timed_out=true"), "{stderr}");
    assert!(stderr.contains("undelivered_records=3"), "{stderr}");
    assert!(stderr.contains("undelivered_batches=1"), "{stderr}");
}

#[tokio::test]
async fn sigterm_with_kafka_unreachable_spools_and_exits_zero() {
    let dead = dead_address().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "output_kind = \"kafka\"\nshutdown_timeout = \"3s\"\n[kafka]\nbrokers = [\"{dead}\"]\ndelivery_timeout = \"10s\"\n"
    );
    let config = write_config(dir.path(), "http://127.0.0.1:1", &extra);
    let mut agent = spawn_agent(dir.path(), &config).await;
    let body = "{\"metric\":\"a\",\"value\":1}\n{\"metric\":\"b\",\"value\":2}\n{\"metric\":\"c\",\"value\":3}\n";
    assert_eq!(http(agent.http, "POST", "/v1/records", body.as_bytes()).await.status, 200);
    agent.sigterm();
    let status = agent.wait(Duration::from_secs(30)).await;
    let stderr = agent.stderr();
    assert!(status.success(), "spooled is not undelivered: {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("spooled_batches=1") && stderr.contains("spooled_records=3"), "{stderr}");
    assert!(stderr.contains("shutdown deadline reached"), "in flight at the deadline, then spooled: {stderr}");
    let spool = dir.path().join("state").join("spool");
    let segments = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"));
    assert_eq!(segments.count(), 1, "the batch waits in {}", spool.display());
}

#[test]
fn kafka_secrets_come_from_the_environment_or_a_file_never_from_flags_or_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--output-kind", "kafka", "--print-config"])
        .env("MESHMON_AGENT_KAFKA_SASL_PASSWORD", "hunter2")
        .env("MESHMON_AGENT_KAFKA_PROPERTIES", "security.protocol=sasl_plaintext,sasl.mechanism=PLAIN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("output_kind = \"kafka\"") && printed.contains("sasl_plaintext"), "{printed}");
    let out = Command::new(BIN).args(["--kafka-property", "sasl.password=hunter2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kafka.properties") && !stderr.contains("hunter2"), "{stderr}");
    let missing = dir.path().join("no-such-password-file");
    let out = Command::new(BIN)
        .args(["--output-kind", "kafka", "--state-dir", dir.path().join("s").to_str().unwrap()])
        .args(["--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--kafka-sasl-password-file")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kafka.sasl_password_file"), "{stderr}");
}

#[test]
fn help_explains_every_flag_and_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // One block per option: from an option line ("  -c, --config", "      --node") to the next.
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if (2..=6).contains(&indent) && line.trim_start().starts_with('-') {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    for flag in [
        "--config",
        "--agent-id",
        "--cluster",
        "--node",
        "--tag",
        "--output",
        "--grpc-listen",
        "--http-listen",
        "--metrics-listen",
        "--batch-max-records",
        "--batch-max-delay",
        "--queue-capacity",
        "--max-in-flight",
        "--max-body-bytes",
        "--state-dir",
        "--shutdown-timeout",
        "--system-enabled",
        "--system-interval",
        "--log",
        "--output-kind",
        "--kafka-brokers",
        "--kafka-topic",
        "--kafka-compression",
        "--kafka-linger",
        "--kafka-delivery-timeout",
        "--kafka-message-max-bytes",
        "--kafka-property",
        "--kafka-sasl-password-file",
        "--spool-max-bytes",
        "--spool-segment-bytes",
        "--spool-when-full",
        "--spool-fsync-interval",
    ] {
        let block = blocks
            .iter()
            .find(|b| b.lines().next().is_some_and(|l| l.contains(&format!("{flag} "))))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        assert!(block.contains("[default:"), "{flag} does not state its default:\n{block}");
        assert!(block.contains("[env: MESHMON_AGENT_"), "{flag} does not name its environment variable:\n{block}");
    }
    for text in [
        "[default: 1000]",
        "[default: http://127.0.0.1:7700]",
        "[default: 10s]",
        "Exit status:",
        "[default: meshmon.records]",
        "[default: lz4]",
        "MESHMON_AGENT_KAFKA_SASL_PASSWORD",
    ] {
        assert!(help.contains(text), "{text} missing from --help");
    }
}

#[test]
fn environment_beats_file_and_flags_beat_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.toml");
    std::fs::write(
        &path,
        "cluster = \"from-file\"\nnode = \"file-node\"\nbatch_max_records = 7\nagent_id = \"file-id\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "--node", "flag-node", "--print-config"])
        .env("MESHMON_AGENT_CLUSTER", "env-cluster")
        .env("MESHMON_AGENT_NODE", "env-node")
        .env("MESHMON_AGENT_BATCH_MAX_DELAY", "250ms")
        .env("MESHMON_AGENT_TAGS", "a=1,b=2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed =
        meshmon_agent::Config::from_toml(&String::from_utf8(out.stdout).unwrap(), Path::new("stdout")).unwrap();
    assert_eq!(printed.agent_id, "file-id");
    assert_eq!(printed.cluster, "env-cluster");
    assert_eq!(printed.node, "flag-node");
    assert_eq!(printed.batch_max_records, 7);
    assert_eq!(printed.batch_max_delay, Duration::from_millis(250));
    assert_eq!(printed.tags.len(), 2);
}

#[test]
fn invalid_configuration_exits_1_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "queue_capacity = 0\n").unwrap();
    let out = Command::new(BIN).args(["--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`queue_capacity`") && stderr.contains("between 1 and"), "{stderr}");

    std::fs::write(&path, "queue_capacity = \"many\"\n").unwrap();
    let out = Command::new(BIN).args(["--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queue_capacity") && stderr.contains("bad.toml"), "{stderr}");

    let out = Command::new(BIN).args(["--batch-max-delay", "later"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

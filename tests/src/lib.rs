//! End-to-end test support: real binaries and servers on loopback.
//!
//! Role: finds (building if needed) the workspace's binaries, starts them as child processes
//! on free ports with their output in a log file, and stops them when dropped; a minimal
//! HTTP/1.1 client; polling with a deadline (tests wait for conditions, never for fixed
//! times). Touches child processes, temp dirs and loopback sockets only.

pub mod hbase_thrift;
pub mod http_stub;
pub mod influxdb;
pub mod mariadb;
pub mod oracle;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod tansu;

pub use tansu::Tansu;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The path of workspace binary `name` of package `package`, built with cargo if missing.
pub fn binary(package: &str, name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "-p", package, "--bin", name]);
        if profile_release {
            cargo.arg("--release");
        }
        let status = cargo.status().map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() || !path.exists() {
            return Err(format!("could not build {name} ({status})"));
        }
    }
    Ok(path)
}

/// A child process that is killed when dropped; its stdout and stderr go to `log`.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    /// Where its output goes.
    pub log: PathBuf,
    name: String,
}

impl Proc {
    /// Starts `program` with `args` (and `env`), output to `log_dir/<name>.log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Proc, String> {
        Proc::start_in(name, program, args, env, log_dir, None)
    }

    /// [`start`](Self::start) in working directory `cwd` (when given); the log is appended to,
    /// so a restarted server keeps one log.
    pub fn start_in(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_dir: &Path,
        cwd: Option<&Path>,
    ) -> Result<Proc, String> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", program.display()))?;
        eprintln!("started {name} (pid {}), log: {}", child.id(), log.display());
        Ok(Proc { child: Some(child), log, name: name.into() })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (a crash: no shutdown code runs) and reaps it.
    pub fn kill9(&mut self) -> Result<(), String> {
        let mut child = self.child.take().ok_or("already stopped")?;
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sends SIGTERM (via `kill`) and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let pid = self.pid().ok_or("already stopped")?;
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().map_err(|e| e.to_string())?;
        let child = self.child.as_mut().ok_or("already stopped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not exit within {timeout:?}; log: {}", self.name, self.log.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for a log line for which `pick` returns `Some`, and returns that;
    /// fails at once (with the log) if the process exits first.
    pub fn wait_for_log_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let mut exited = None;
        let found = wait_for(what, timeout, || {
            if let Some(found) = self.log_text().lines().find_map(&mut pick) {
                return Some(Some(found));
            }
            exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some().then_some(None)
        });
        match found {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(format!("{} exited ({exited:?}) before {what}; log:\n{}", self.name, self.log_text())),
            Err(e) => Err(format!("{e}; {} log:\n{}", self.name, self.log_text())),
        }
    }
}

/// Prints the named logs to stderr when dropped during a panic (a failing test), so the
/// processes' side of the story is in the test output.
#[derive(Debug, Default)]
pub struct LogsOnFailure(pub Vec<(String, PathBuf)>);

impl LogsOnFailure {
    /// Also print `proc`'s log on failure.
    pub fn add(&mut self, proc: &Proc) {
        self.0.push((proc.name.clone(), proc.log.clone()));
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, path) in &self.0 {
                let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
                eprintln!("----- log of {name} ({}) -----\n{text}----- end of {name} log -----", path.display());
            }
        }
    }
}

/// A running `meshmon-aggregator serve` on loopback ports chosen by the OS.
#[derive(Debug)]
pub struct Aggregator {
    /// The process.
    pub proc: Proc,
    /// gRPC `Ingest` address.
    pub grpc: SocketAddr,
    /// HTTP address (API, `/metrics`, the page).
    pub http: SocketAddr,
}

impl Aggregator {
    /// Writes `config_toml` to `dir/aggregator.toml` and starts `meshmon-aggregator serve` with
    /// it, a data directory in `dir` and port 0 for both listeners; returns once it printed
    /// the addresses it bound.
    pub fn start(dir: &Path, config_toml: &str) -> Result<Aggregator, String> {
        let bin = binary("meshmon-aggregator", "meshmon-aggregator")?;
        let config = dir.join("aggregator.toml");
        std::fs::write(&config, config_toml).map_err(|e| e.to_string())?;
        let data = dir.join("aggregator-data");
        let args = [
            "serve",
            "--config",
            path_str(&config)?,
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&data)?,
        ];
        let mut proc = Proc::start("aggregator", &bin, &args, &[], dir)?;
        // "meshmon aggregator: gRPC ingest 127.0.0.1:P, HTTP http://127.0.0.1:Q/"
        let (grpc, http) = proc.wait_for_log_line("the aggregator's addresses", Duration::from_secs(60), |line| {
            let rest = line.strip_prefix("meshmon aggregator: gRPC ingest ")?;
            let (grpc, http) = rest.split_once(", HTTP http://")?;
            Some((grpc.parse().ok()?, http.trim_end_matches('/').parse().ok()?))
        })?;
        Ok(Aggregator { proc, grpc, http })
    }
}

/// A `meshmon-aggregator serve` in Kafka mode (no gRPC ingest), restartable on the same
/// configuration and data directory — for crash tests.
#[derive(Debug)]
pub struct KafkaAggregator {
    /// The process (`None` while stopped or killed).
    pub proc: Option<Proc>,
    /// HTTP address of the current process.
    pub http: SocketAddr,
    name: String,
    dir: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

impl KafkaAggregator {
    /// Writes `config_toml` to `dir/<name>.toml` and starts the aggregator with data in
    /// `dir/<name>-data` and its log in `dir/<name>.log`; returns once it printed its address.
    pub fn start(dir: &Path, name: &str, config_toml: &str) -> Result<KafkaAggregator, String> {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_toml).map_err(|e| e.to_string())?;
        let mut a = KafkaAggregator {
            proc: None,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: name.into(),
            dir: dir.to_path_buf(),
            config,
            data: dir.join(format!("{name}-data")),
        };
        a.restart()?;
        Ok(a)
    }

    /// Starts the process again (after [`kill9`](Self::kill9) or a stop).
    pub fn restart(&mut self) -> Result<(), String> {
        let bin = binary("meshmon-aggregator", "meshmon-aggregator")?;
        let args = [
            "serve",
            "--config",
            path_str(&self.config)?,
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&self.data)?,
        ];
        let log = self.dir.join(format!("{}.log", self.name));
        let parse = |text: &str| -> Vec<SocketAddr> {
            // "meshmon aggregator: Kafka input B (topic T), HTTP http://127.0.0.1:Q/"
            text.lines()
                .filter_map(|l| l.strip_prefix("meshmon aggregator: Kafka input "))
                .filter_map(|rest| rest.split_once(", HTTP http://")?.1.trim_end_matches('/').parse().ok())
                .collect()
        };
        let before = parse(&std::fs::read_to_string(&log).unwrap_or_default()).len();
        let mut proc = Proc::start_in(&self.name, &bin, &args, &[], &self.dir, None)?;
        let http = wait_for("the aggregator's address", Duration::from_secs(60), || {
            let text = proc.log_text();
            if let Some(addr) = parse(&text).get(before) {
                return Some(Ok(*addr));
            }
            match proc.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                Some(status) => Some(Err(format!("{} exited ({status}) before serving; log:\n{text}", self.name))),
                None => None,
            }
        })??;
        self.http = http;
        self.proc = Some(proc);
        Ok(())
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill9(&mut self) -> Result<(), String> {
        match self.proc.take() {
            Some(mut p) => p.kill9(),
            None => Err("not running".into()),
        }
    }

    /// Stops the process with SIGTERM (final checkpoint) and returns its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus, String> {
        match self.proc.take() {
            Some(mut p) => p.terminate(Duration::from_secs(60)),
            None => Err("not running".into()),
        }
    }

    /// The log file (all runs).
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }
}

/// Starts the `meshmon-agent` binary with `agent_id`, node `agent-host`, no plugins, small
/// batches (3 records or 20 ms), streaming to the aggregator's gRPC ingest at `grpc`; its state
/// and configuration go under `dir`. Returns the process and its HTTP push address.
///
/// # Errors
/// What failed: writing the configuration, finding the binary, starting it, or its addresses
/// not appearing within 60 s.
pub fn start_agent(dir: &Path, agent_id: &str, grpc: SocketAddr) -> Result<(Proc, SocketAddr), String> {
    let config = dir.join("agent.toml");
    let state = dir.join("agent-state");
    let text = format!(
        r#"agent_id = "{agent_id}"
cluster = ""
node = "agent-host"
output = "http://{grpc}"
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
batch_max_records = 3
batch_max_delay = "20ms"
state_dir = "{}"
shutdown_timeout = "20s"

[plugins.system]
enabled = false
"#,
        state.display()
    );
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    let bin = binary("meshmon-agent", "meshmon-agent")?;
    let args = ["--config", path_str(&config)?, "--print-addresses"];
    let mut proc = Proc::start("agent", &bin, &args, &[("MESHMON_AGENT_LOG", "info")], dir)?;
    let http = proc.wait_for_log_line("the agent's addresses", Duration::from_secs(60), |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["http"].as_str()?.parse::<SocketAddr>().ok()
    })?;
    Ok((proc, http))
}

/// A path as UTF-8 text (for command-line arguments).
pub fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("path is not UTF-8: {}", path.display()))
}

/// The value of an unlabelled sample `name` in Prometheus text.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 25 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP response: status, headers (lower-case names) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request (`Connection: close`), e.g. `http("GET", addr, "/healthz", None)`.
pub fn http(method: &str, addr: SocketAddr, path: &str, body: Option<(&str, &[u8])>) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((content_type, bytes)) = body {
        req.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", bytes.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes).map_err(|e| e.to_string())?;
    }
    // Read to the end of the body: to EOF, or as far as Content-Length says when the server
    // keeps the connection open despite `Connection: close` (Chromium's DevTools server does).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|len| raw.len() >= split + 4 + len) {
                break;
            }
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|e| e.to_string())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

/// GET and parse JSON, requiring status 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let r = http("GET", addr, path, None)?;
    if r.status != 200 {
        return Err(format!("GET {path}: {} {}", r.status, r.text()));
    }
    r.json()
}

/// Percent-encodes a query parameter value.
pub fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Pushes `batches` to a `meshmon.v1.Ingest` server at `addr` on one new gRPC connection,
/// within `timeout`, and returns one ack per batch (fewer if the server ended the stream).
pub fn grpc_push(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    batches: Vec<meshmon_proto::v1::RecordBatch>,
    timeout: Duration,
) -> Result<Vec<meshmon_proto::v1::BatchAck>, String> {
    use meshmon_proto::v1::ingest_client::IngestClient;
    let n = batches.len();
    let run = async {
        let mut client = IngestClient::connect(format!("http://{addr}")).await.map_err(|e| e.to_string())?;
        let mut stream = client.push(tokio_stream::iter(batches)).await.map_err(|e| e.to_string())?.into_inner();
        let mut acks = Vec::new();
        while acks.len() < n {
            match stream.message().await.map_err(|e| e.to_string())? {
                Some(ack) => acks.push(ack),
                None => break,
            }
        }
        Ok(acks)
    };
    rt.block_on(async {
        tokio::time::timeout(timeout, run).await.map_err(|_| format!("gRPC push to {addr} timed out"))?
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        assert_eq!(query_value("tag:env=a b"), "tag%3Aenv%3Da%20b");
    }

    #[test]
    fn reads_unlabelled_prometheus_samples() {
        let text = "# HELP a_total x\na_total 3\na_total_more 5\nb{shard=\"0\"} 1\nc 2.5\n";
        assert_eq!(prometheus_value(text, "a_total"), Some(3.0));
        assert_eq!(prometheus_value(text, "c"), Some(2.5));
        assert_eq!(prometheus_value(text, "b"), None);
    }
}

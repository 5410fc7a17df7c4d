//! `Tansu`: a real Kafka-protocol broker (tansu, sqlite storage) for tests.
//!
//! Role: starts `tansu broker` on a free loopback port in its own data directory, creates
//! topics explicitly (tansu has no auto-creation), and stops it — also mid-test, to simulate
//! a broker outage, and restarts it on the same port and data so offsets and data survive.
//! Touches a child process, its data dir and one loopback port only. Needs `tansu` on `PATH`
//! or in `~/.cargo/bin` (`.ci/run` installs it).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, wait_for};

/// A running (or stopped, for an outage) tansu broker.
#[derive(Debug)]
pub struct Tansu {
    proc: Option<Proc>,
    program: PathBuf,
    dir: PathBuf,
    log_dir: PathBuf,
    port: u16,
}

/// The tansu executable: `$TANSU`, then `PATH`, then `~/.cargo/bin/tansu`.
pub fn tansu_program() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TANSU") {
        return Ok(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("tansu")).find(|p| p.is_file()))
        .unwrap_or_default();
    if let Some(p) = on_path {
        return Ok(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo_bin = home.join(".cargo/bin/tansu");
    if cargo_bin.is_file() {
        return Ok(cargo_bin);
    }
    Err("tansu not found: install it with `cargo install tansu --version 0.6.0 --locked --features \
         libsql,dynostore` (.ci/run does this)"
        .into())
}

impl Tansu {
    /// Starts a broker with sqlite storage in `dir/tansu` (its log in `dir`) on a free port.
    pub fn start(dir: &Path) -> Result<Tansu, String> {
        let data = dir.join("tansu");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let mut t = Tansu {
            proc: None,
            program: tansu_program()?,
            dir: data,
            log_dir: dir.to_path_buf(),
            port: free_port().map_err(|e| e.to_string())?,
        };
        t.resume()?;
        Ok(t)
    }

    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Whether the broker process is running.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Creates topic `name` with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), String> {
        let out = Command::new(&self.program)
            .current_dir(&self.dir)
            .args(["topic", "create", "--broker", &self.url(), "--partitions", &partitions.to_string(), name])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "tansu topic create {name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Stops the broker (SIGKILL: an outage, not a clean shutdown); data stays for [`resume`](Self::resume).
    pub fn stop(&mut self) -> Result<(), String> {
        match self.proc.take() {
            Some(mut p) => p.kill9(),
            None => Ok(()),
        }
    }

    /// (Re)starts the broker on the same port and data, and waits until it accepts connections.
    pub fn resume(&mut self) -> Result<(), String> {
        if self.proc.is_some() {
            return Ok(());
        }
        let url = self.url();
        // Relative to the working directory (tansu prefixes it even to absolute paths).
        let storage = "sqlite://tansu.db";
        let proc = Proc::start_in(
            "tansu",
            &self.program,
            &["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage],
            &[],
            &self.log_dir,
            Some(&self.dir),
        )?;
        self.proc = Some(proc);
        let addr = self.bootstrap();
        wait_for("tansu accepting connections", Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()
        })?;
        Ok(())
    }

    /// The broker's log file.
    pub fn log(&self) -> PathBuf {
        self.log_dir.join("tansu.log")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// An idempotent producer to `tansu`.
///
/// # Errors
/// librdkafka's message when the producer cannot be created.
pub fn idempotent_producer(tansu: &Tansu) -> Result<rdkafka::producer::BaseProducer, String> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| e.to_string())
}

/// Produces every `(key, value)` message to `topic` in order (waiting for queue room when
/// librdkafka's queue is full), then flushes.
///
/// # Errors
/// librdkafka's message when the flush does not complete within 30 s.
pub fn produce_all<'a>(
    p: &rdkafka::producer::BaseProducer,
    topic: &str,
    messages: impl IntoIterator<Item = (&'a [u8], Vec<u8>)>,
) -> Result<(), String> {
    use rdkafka::producer::{BaseRecord, Producer as _};
    for (key, value) in messages {
        let mut record = BaseRecord::to(topic).key(key).payload(value.as_slice());
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).map_err(|e| e.to_string())
}

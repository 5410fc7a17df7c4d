//! `InfluxWriter`: writes line-protocol points to InfluxDB from its own thread.
//!
//! Role: the store actor hands it the aggregate changes of each store write
//! ([`send_aggregates`](InfluxWriter::send_aggregates)); they are encoded (`schema.rs`) and
//! queued. A bounded queue gives backpressure: when `queue_max_points` are waiting, the caller
//! blocks until the writer made room — nothing is dropped while InfluxDB is away. The writer
//! thread sends batches of up to `batch_max_points` / `batch_max_bytes` (or what is there
//! after `flush_every`), gzip-compressed, and retries with exponential backoff (100 ms … 10 s)
//! on 5xx, 408, 429, timeouts and connection errors, forever. Any other 4xx is final: the
//! batch is logged at error, counted in `meshmon_influxdb_dead_lettered_points_total` and
//! appended to `data_dir/influxdb-rejected.lp` (bounded, rotated once) — never retried.
//! [`flush`](InfluxWriter::flush) waits until everything queued before it was written (or
//! dead-lettered): Kafka checkpoints call it, so a crash never loses a point (the replay
//! writes identical points again). Every `self_every` it also writes a `meshmon_self` point.
//! Touches the network (InfluxDB), the rejected-points file and the token file.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{InfluxConfigError, InfluxDbSection};
use super::metrics::InfluxMetrics;
use super::schema::{aggregate_line, self_line};
use crate::runtime::metrics::RuntimeMetrics;
use crate::store::AggregateChange;

/// Name of the rejected-points file inside the data directory.
pub const REJECTED_FILE: &str = "influxdb-rejected.lp";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The writer could not start or a flush did not finish.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] InfluxConfigError),
    /// The HTTP client could not be built.
    #[error("influxdb http client: {0}")]
    Client(#[from] reqwest::Error),
    /// The writer's thread or runtime could not start.
    #[error("influxdb writer thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A flush gave up waiting.
    #[error("influxdb: {pending} point(s) still unwritten after {waited:?}")]
    FlushTimeout {
        /// Points queued before the flush and not yet written.
        pending: u64,
        /// How long it waited.
        waited: Duration,
    },
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<String>,
    queued_bytes: usize,
    /// Since when the oldest queued line waits.
    oldest: Option<Instant>,
    /// Lines ever enqueued / ever finished (written or dead-lettered).
    enqueued: u64,
    done: u64,
    /// A flush wants everything up to here written now.
    flush_target: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when lines finished (room in the queue, flushes progress).
    progress: Condvar,
    /// Signalled when lines were queued, a flush asked or the writer closes.
    work: Condvar,
    /// Stop retrying (shutdown gave up on an unreachable InfluxDB).
    abandon: AtomicBool,
    runtime_metrics: OnceLock<Arc<RuntimeMetrics>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The bounded file of points InfluxDB refused (line protocol, `#` comment lines say why).
#[derive(Debug)]
struct RejectedFile {
    path: PathBuf,
    max_bytes: u64,
    lock: Mutex<()>,
}

impl RejectedFile {
    fn append(&self, why: &str, lines: &[String]) {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes) {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            if let Err(e) = std::fs::rename(&self.path, &old) {
                tracing::error!(error = %e, path = %self.path.display(), "rotating the influxdb rejected file");
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut text = format!("# {now} {}\n", why.replace(['\n', '\r'], " "));
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "writing the influxdb rejected file");
        }
    }
}

/// Writes points to InfluxDB (see the module documentation).
#[derive(Debug)]
pub struct InfluxWriter {
    shared: Arc<Shared>,
    metrics: Arc<InfluxMetrics>,
    rejected: Arc<RejectedFile>,
    queue_max_points: usize,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writer thread needs.
struct Sender {
    shared: Arc<Shared>,
    metrics: Arc<InfluxMetrics>,
    rejected: Arc<RejectedFile>,
    config: InfluxDbSection,
    url: String,
    token: Option<String>,
    instance: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl InfluxWriter {
    /// Starts the writer thread for `config` (token from `MESHMON_INFLUXDB_TOKEN` or the token
    /// file); refused points go to `data_dir/influxdb-rejected.lp`.
    pub fn start(config: &InfluxDbSection, data_dir: &Path) -> Result<Arc<InfluxWriter>, InfluxError> {
        config.validate()?;
        let token = config.token(|k| std::env::var(k).ok())?;
        let client = reqwest::Client::builder().timeout(config.timeout).connect_timeout(config.timeout).build()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            progress: Condvar::new(),
            work: Condvar::new(),
            abandon: AtomicBool::new(false),
            runtime_metrics: OnceLock::new(),
        });
        let metrics = Arc::new(InfluxMetrics::default());
        let rejected = Arc::new(RejectedFile {
            path: data_dir.join(REJECTED_FILE),
            max_bytes: config.rejected_file_max_bytes,
            lock: Mutex::new(()),
        });
        let sender = Sender {
            shared: shared.clone(),
            metrics: metrics.clone(),
            rejected: rejected.clone(),
            url: config.write_url(),
            config: config.clone(),
            token,
            instance: config.instance_name(),
            client,
            rt,
        };
        let thread = std::thread::Builder::new().name("influxdb-writer".into()).spawn(move || sender.run())?;
        tracing::info!(url = %config.write_url(), "influxdb writer started");
        Ok(Arc::new(InfluxWriter {
            shared,
            metrics,
            rejected,
            queue_max_points: config.queue_max_points,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The writer's metrics (render them with the pipeline's).
    pub fn metrics(&self) -> Arc<InfluxMetrics> {
        self.metrics.clone()
    }

    /// Lets the writer read the pipeline's metrics for `meshmon_self` points.
    pub fn attach_runtime_metrics(&self, metrics: Arc<RuntimeMetrics>) {
        let _ = self.shared.runtime_metrics.set(metrics);
    }

    /// Encodes and queues the upserts of `changes`; blocks while the queue is full.
    /// Retractions are not written (counted); points that cannot be encoded are dead-lettered.
    pub fn send_aggregates(&self, changes: &[AggregateChange]) {
        let mut lines = Vec::with_capacity(changes.len());
        for change in changes {
            match aggregate_line(change) {
                Some(Ok(line)) => lines.push(line),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "aggregate point cannot be written to influxdb: dead-lettered");
                    self.metrics.dead_lettered_points.fetch_add(1, Ordering::Relaxed);
                    self.rejected.append(&format!("not encodable: {e}; {change:?}"), &[]);
                }
                None => {
                    self.metrics.retractions_skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.send_lines(lines);
    }

    /// Queues ready-made lines; blocks while the queue is full (backpressure).
    pub fn send_lines(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let cap = self.queue_max_points;
        let mut s = self.shared.lock();
        for line in lines {
            while s.queue.len() >= cap && !s.closed {
                self.shared.work.notify_one();
                s = self.shared.progress.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            s.queued_bytes += line.len() + 1;
            s.queue.push_back(line);
            s.enqueued += 1;
            s.oldest.get_or_insert_with(Instant::now);
            self.metrics.queued_points.fetch_add(1, Ordering::Relaxed);
        }
        drop(s);
        self.shared.work.notify_one();
    }

    /// Waits until every point queued before this call is written or dead-lettered, at most
    /// `timeout` (`None`: as long as it takes).
    pub fn flush(&self, timeout: Option<Duration>) -> Result<(), InfluxError> {
        let started = Instant::now();
        let mut s = self.shared.lock();
        let target = s.enqueued;
        s.flush_target = s.flush_target.max(target);
        self.shared.work.notify_one();
        let mut warned = Instant::now();
        while s.done < target {
            let wait = match timeout {
                Some(t) => match t.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => left.min(Duration::from_secs(10)),
                    _ => {
                        return Err(InfluxError::FlushTimeout { pending: target - s.done, waited: started.elapsed() });
                    }
                },
                None => Duration::from_secs(10),
            };
            s = self.shared.progress.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            if warned.elapsed() >= Duration::from_secs(30) {
                tracing::warn!(pending = target - s.done, waited = ?started.elapsed(), "still waiting for influxdb");
                warned = Instant::now();
            }
        }
        Ok(())
    }

    /// Flushes (at most `timeout`), then stops the thread; points still unwritten are logged.
    pub fn close(&self, timeout: Duration) {
        if let Err(e) = self.flush(Some(timeout)) {
            tracing::error!(error = %e, "influxdb writer closing with points unwritten");
            self.shared.abandon.store(true, Ordering::Relaxed);
        }
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        self.shared.progress.notify_all();
        let thread = self.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(t) = thread
            && !self.shared.abandon.load(Ordering::Relaxed)
        {
            let _ = t.join();
        }
    }
}

/// How one write attempt ended.
enum Attempt {
    Written,
    /// Final refusal: status and the server's message.
    Refused(u16, String),
    /// Try again: why.
    Retry(String),
}

impl Sender {
    fn run(self) {
        let self_every = self.config.self_every;
        let mut next_self = (!self_every.is_zero()).then(|| Instant::now() + self_every);
        loop {
            let Some(batch) = self.next_batch(next_self) else { return };
            let mut lines = batch;
            let from_queue = lines.len();
            if let Some(at) = next_self
                && Instant::now() >= at
            {
                next_self = Some(Instant::now() + self_every);
                if let Some(line) = self.self_point() {
                    lines.push(line);
                }
            }
            if !lines.is_empty() {
                self.write(&lines);
            }
            if from_queue > 0 {
                let mut s = self.shared.lock();
                s.done += from_queue as u64;
                drop(s);
                self.metrics.queued_points.fetch_sub(from_queue as i64, Ordering::Relaxed);
                self.shared.progress.notify_all();
            }
        }
    }

    /// Waits until a batch is due and takes it (maybe empty when only `meshmon_self` is due);
    /// `None` when closed and drained.
    fn next_batch(&self, next_self: Option<Instant>) -> Option<Vec<String>> {
        let mut s = self.shared.lock();
        loop {
            if s.closed && (s.queue.is_empty() || self.shared.abandon.load(Ordering::Relaxed)) {
                return None;
            }
            let now = Instant::now();
            let full = s.queue.len() >= self.config.batch_max_points || s.queued_bytes >= self.config.batch_max_bytes;
            let flushing = s.flush_target > s.done && !s.queue.is_empty();
            let batch_due = s.oldest.map(|t| t + self.config.flush_every);
            if full || flushing || s.closed || batch_due.is_some_and(|d| d <= now) {
                break;
            }
            if next_self.is_some_and(|d| d <= now) {
                return Some(vec![]);
            }
            let wake = [batch_due, next_self].into_iter().flatten().min();
            let wait = wake.map_or(Duration::from_secs(3600), |w| w.saturating_duration_since(now));
            s = self.shared.work.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while batch.len() < self.config.batch_max_points
            && let Some(line) = s.queue.front()
        {
            if !batch.is_empty() && bytes + line.len() + 1 > self.config.batch_max_bytes {
                break;
            }
            bytes += line.len() + 1;
            if let Some(line) = s.queue.pop_front() {
                batch.push(line);
            }
        }
        s.queued_bytes -= bytes.min(s.queued_bytes);
        s.oldest = (!s.queue.is_empty()).then(Instant::now);
        Some(batch)
    }

    fn self_point(&self) -> Option<String> {
        let runtime = self.shared.runtime_metrics.get()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        match self_line(&self.instance, runtime, &self.metrics, now) {
            Ok(line) => Some(line),
            Err(e) => {
                tracing::error!(error = %e, "meshmon_self point cannot be encoded");
                None
            }
        }
    }

    /// Writes `lines` until InfluxDB accepted or finally refused them.
    fn write(&self, lines: &[String]) {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
            body.push(b'\n');
        }
        let gz = gzip(&body);
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u64;
        loop {
            let started = Instant::now();
            match self.attempt(&gz) {
                Attempt::Written => {
                    self.metrics.last_write_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    self.metrics.points_written.fetch_add(lines.len() as u64, Ordering::Relaxed);
                    self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(failures, points = lines.len(), "influxdb write succeeded after retries");
                    }
                    return;
                }
                Attempt::Refused(status, message) => {
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    // InfluxDB 1.x writes the good points of a batch and says how many it dropped.
                    let dropped = partial_dropped(&message).map_or(lines.len(), |n| n.min(lines.len()));
                    self.metrics.dead_lettered_points.fetch_add(dropped as u64, Ordering::Relaxed);
                    self.metrics.points_written.fetch_add((lines.len() - dropped) as u64, Ordering::Relaxed);
                    tracing::error!(status, %message, points = lines.len(), dropped,
                        file = %self.rejected.path.display(), "influxdb refused a batch: dead-lettered, not retried");
                    self.rejected.append(
                        &format!("HTTP {status}: {message} ({dropped} of {} points refused)", lines.len()),
                        lines,
                    );
                    return;
                }
                Attempt::Retry(why) => {
                    failures += 1;
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    if self.shared.abandon.load(Ordering::Relaxed) {
                        tracing::error!(points = lines.len(), %why, "influxdb unreachable at shutdown: points not written");
                        return;
                    }
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%why, failures, retry_in = ?backoff, points = lines.len(),
                            "influxdb write failed; retrying (the pipeline waits)");
                    }
                    std::thread::sleep(backoff);
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn attempt(&self, gz: &[u8]) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Encoding", "gzip")
            .body(gz.to_vec());
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Token {token}"));
        }
        let result = self.rt.block_on(async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = if resp.status().is_success() { String::new() } else { resp.text().await.unwrap_or_default() };
            Ok::<_, reqwest::Error>((status, text))
        });
        match result {
            Ok((status, _)) if (200..300).contains(&status) => Attempt::Written,
            Ok((status, text)) if (400..500).contains(&status) && status != 408 && status != 429 => {
                Attempt::Refused(status, text.trim().to_owned())
            }
            Ok((status, text)) => Attempt::Retry(format!("HTTP {status}: {}", text.trim())),
            Err(e) => Attempt::Retry(error_chain(&e)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `dropped=N` of an InfluxDB 1.x partial-write message.
fn partial_dropped(message: &str) -> Option<usize> {
    let rest = &message[message.find("dropped=")? + "dropped=".len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_write_messages_say_how_many_were_dropped() {
        let m = r#"{"error":"partial write: field type conflict: input field \"count\" on measurement \"x\" is type float, already exists as type integer dropped=3"}"#;
        assert_eq!(partial_dropped(m), Some(3));
        assert_eq!(partial_dropped("database not found"), None);
    }
}

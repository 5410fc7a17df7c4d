//! `InfluxWriter`: writes line-protocol points to InfluxDB from its own thread.
//!
//! Role: the store actor hands it the aggregate changes of each store write
//! ([`send_aggregates`](InfluxWriter::send_aggregates)); upserts are encoded (`schema.rs`) as
//! lines, retractions (v1 API) as InfluxQL `DELETE`s of their point, and queued — in one
//! queue, so a deletion happens after every write queued before it and before every write
//! queued after it (the batch in front of a deletion is sent first). A bounded queue gives
//! backpressure: when `queue_max_points` are waiting, the caller blocks until the writer made
//! room — nothing is dropped while InfluxDB is away. The writer thread sends batches of up to
//! `batch_max_points` / `batch_max_bytes` (or what is there after `flush_every`),
//! gzip-compressed, each deletion as its own `POST /query`, and retries with exponential
//! backoff (100 ms … 10 s) on 5xx, 408, 429, timeouts and connection errors, forever. Any
//! other 4xx (and, for a deletion, an error in InfluxDB's answer) is final: logged at error,
//! counted in `meshmon_influxdb_dead_lettered_points_total` and appended to
//! `data_dir/influxdb-rejected.lp` (bounded, rotated once) — never retried.
//! [`flush`](InfluxWriter::flush) waits until everything queued before it was written (or
//! dead-lettered): Kafka checkpoints call it, so a crash never loses a point (the replay
//! writes identical points again). Stopping is bounded: after
//! [`begin_shutdown`](InfluxWriter::begin_shutdown) every wait (a flush, a full queue, the
//! final drain) ends by `shutdown_timeout`; then nothing more is retried and every later flush
//! fails, so a Kafka-mode final checkpoint is not committed. Every `self_every` it also writes
//! a `meshmon_self` point. Touches the network (InfluxDB), the rejected-points file and the
//! token file.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::config::{InfluxConfigError, InfluxDbSection, query};
use super::metrics::InfluxMetrics;
use super::schema::{aggregate_line, retraction_delete, self_line};
use crate::runtime::metrics::RuntimeMetrics;
use crate::store::AggregateChange;

/// Name of the rejected-points file inside the data directory.
pub const REJECTED_FILE: &str = "influxdb-rejected.lp";
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The longest single condition-variable wait (waits re-check their state after it).
const WAIT_SLICE: Duration = Duration::from_secs(10);

/// The writer could not start, or a flush or the stop did not finish.
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
    /// Stopping: `shutdown_timeout` expired before InfluxDB took everything; nothing more is
    /// retried and every later flush fails.
    #[error(
        "influxdb: {unwritten} point(s)/deletion(s) not written: influxdb.shutdown_timeout ({timeout:?}) \
         expired while stopping (InfluxDB unreachable?)"
    )]
    ShutdownTimeout {
        /// Points and deletions queued and not written, or given up.
        unwritten: u64,
        /// The `shutdown_timeout`.
        timeout: Duration,
    },
}

/// One queued change.
#[derive(Debug)]
enum Item {
    /// A line-protocol point.
    Line(String),
    /// An InfluxQL `DELETE` (a retraction): sent alone, after the lines queued before it.
    Delete(String),
}

/// What the writer thread takes from the queue at once.
#[derive(Debug)]
enum Batch {
    /// Lines for one write request (empty when only `meshmon_self` is due).
    Lines(Vec<String>),
    /// One deletion.
    Delete(String),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    /// Bytes of the queued lines (deletions are not counted).
    queued_bytes: usize,
    /// Since when the oldest queued item waits.
    oldest: Option<Instant>,
    /// Items ever enqueued / ever finished (written, dead-lettered or given up).
    enqueued: u64,
    done: u64,
    /// Items given up while stopping (`shutdown_timeout` expired); any makes flushes fail.
    given_up: u64,
    /// A flush wants everything up to here written now.
    flush_target: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when items finished (room in the queue, flushes progress) or stopping began.
    progress: Condvar,
    /// Signalled when items were queued, a flush asked or the writer closes.
    work: Condvar,
    /// Stop retrying (the stop gave up on an unreachable InfluxDB).
    abandon: AtomicBool,
    /// When stopping must be over (set by `begin_shutdown`).
    shutdown_deadline: OnceLock<Instant>,
    shutdown_timeout: Duration,
    runtime_metrics: OnceLock<Arc<RuntimeMetrics>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the writer gave up: told so, or the shutdown deadline passed (logged once).
    fn abandoned(&self) -> bool {
        if self.abandon.load(Ordering::Relaxed) {
            return true;
        }
        if self.shutdown_deadline.get().is_some_and(|d| Instant::now() >= *d) {
            if !self.abandon.swap(true, Ordering::Relaxed) {
                tracing::error!(shutdown_timeout = ?self.shutdown_timeout,
                    "influxdb.shutdown_timeout expired while stopping: InfluxDB did not take everything queued; \
                     giving up (nothing more is retried)");
            }
            return true;
        }
        false
    }

    /// How long a wait may last: `limit`, cut at the shutdown deadline.
    fn wait_bound(&self, limit: Duration) -> Duration {
        match self.shutdown_deadline.get() {
            Some(d) => limit.min(d.saturating_duration_since(Instant::now())),
            None => limit,
        }
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
    /// Retractions become deletions (v1 with `delete_retractions`); else they are skipped.
    deletes: bool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writer thread needs.
struct Sender {
    shared: Arc<Shared>,
    metrics: Arc<InfluxMetrics>,
    rejected: Arc<RejectedFile>,
    config: InfluxDbSection,
    url: String,
    delete_url: Option<String>,
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
            shutdown_deadline: OnceLock::new(),
            shutdown_timeout: config.shutdown_timeout,
            runtime_metrics: OnceLock::new(),
        });
        let metrics = Arc::new(InfluxMetrics::default());
        let rejected = Arc::new(RejectedFile {
            path: data_dir.join(REJECTED_FILE),
            max_bytes: config.rejected_file_max_bytes,
            lock: Mutex::new(()),
        });
        let delete_url = config.delete_url();
        let deletes = delete_url.is_some();
        let sender = Sender {
            shared: shared.clone(),
            metrics: metrics.clone(),
            rejected: rejected.clone(),
            url: config.write_url(),
            delete_url,
            config: config.clone(),
            token,
            instance: config.instance_name(),
            client,
            rt,
        };
        let thread = std::thread::Builder::new().name("influxdb-writer".into()).spawn(move || sender.run())?;
        tracing::info!(url = %config.write_url(), delete_retractions = deletes, "influxdb writer started");
        Ok(Arc::new(InfluxWriter {
            shared,
            metrics,
            rejected,
            queue_max_points: config.queue_max_points,
            deletes,
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

    /// The configured `shutdown_timeout`.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shared.shutdown_timeout
    }

    /// The process is stopping: from now on every wait — a flush (even one asked to wait as
    /// long as it takes), room in a full queue, [`close`](Self::close) — ends at most
    /// `shutdown_timeout` from this call. Then the writer gives up: nothing more is retried,
    /// changes still arriving are not queued, and every flush fails. Idempotent.
    pub fn begin_shutdown(&self) {
        let deadline = Instant::now() + self.shared.shutdown_timeout;
        if self.shared.shutdown_deadline.set(deadline).is_ok() {
            tracing::info!(shutdown_timeout = ?self.shared.shutdown_timeout,
                "stopping: influxdb gets up to shutdown_timeout to take what is queued");
        }
        // Under the lock, so no waiter misses the new bound.
        let _s = self.shared.lock();
        self.shared.progress.notify_all();
        self.shared.work.notify_all();
    }

    /// Encodes and queues `changes` in order — upserts as lines, retractions as deletions (v1;
    /// else counted as skipped); blocks while the queue is full. Points that cannot be
    /// encoded are dead-lettered.
    pub fn send_aggregates(&self, changes: &[AggregateChange]) {
        let mut items = Vec::with_capacity(changes.len());
        for change in changes {
            if let Some(delete) = retraction_delete(change) {
                if self.deletes {
                    items.push(Item::Delete(delete));
                } else {
                    self.metrics.retractions_skipped.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            match aggregate_line(change) {
                Some(Ok(line)) => items.push(Item::Line(line)),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "aggregate point cannot be written to influxdb: dead-lettered");
                    self.metrics.dead_lettered_points.fetch_add(1, Ordering::Relaxed);
                    self.rejected.append(&format!("not encodable: {e}; {change:?}"), &[]);
                }
                None => {}
            }
        }
        self.enqueue(items);
    }

    /// Queues ready-made lines; blocks while the queue is full (backpressure).
    pub fn send_lines(&self, lines: Vec<String>) {
        self.enqueue(lines.into_iter().map(Item::Line).collect());
    }

    /// Queues `items`, waiting for room while the queue is full — until the shutdown deadline:
    /// after it, what does not fit is given up (counted; flushes then fail).
    fn enqueue(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let cap = self.queue_max_points;
        let mut given_up = 0u64;
        let mut s = self.shared.lock();
        for item in items {
            while s.queue.len() >= cap && !s.closed && !self.shared.abandoned() {
                self.shared.work.notify_one();
                let wait = self.shared.wait_bound(WAIT_SLICE);
                s = self.shared.progress.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if s.queue.len() >= cap && !s.closed {
                given_up += 1;
                continue;
            }
            if let Item::Line(line) = &item {
                s.queued_bytes += line.len() + 1;
            }
            s.queue.push_back(item);
            s.enqueued += 1;
            s.oldest.get_or_insert_with(Instant::now);
            self.metrics.queued_points.fetch_add(1, Ordering::Relaxed);
        }
        if given_up > 0 {
            s.given_up += given_up;
            self.metrics.given_up_points.fetch_add(given_up, Ordering::Relaxed);
            tracing::error!(points = given_up, "stopping with influxdb unreachable: changes not queued (given up)");
        }
        drop(s);
        self.shared.work.notify_one();
    }

    /// Waits until every point and deletion queued before this call is written or
    /// dead-lettered, at most `timeout` (`None`: as long as it takes — until
    /// [`begin_shutdown`](Self::begin_shutdown), whose deadline bounds every flush). Fails if
    /// anything was given up while stopping: a checkpoint must then not be committed.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<(), InfluxError> {
        let started = Instant::now();
        let mut s = self.shared.lock();
        let target = s.enqueued;
        s.flush_target = s.flush_target.max(target);
        self.shared.work.notify_one();
        let mut warned = Instant::now();
        while s.done < target {
            if self.shared.abandoned() {
                let unwritten = target - s.done + s.given_up;
                return Err(InfluxError::ShutdownTimeout { unwritten, timeout: self.shared.shutdown_timeout });
            }
            let mut wait = WAIT_SLICE;
            if let Some(t) = timeout {
                match t.checked_sub(started.elapsed()) {
                    Some(left) if !left.is_zero() => wait = wait.min(left),
                    _ => {
                        return Err(InfluxError::FlushTimeout { pending: target - s.done, waited: started.elapsed() });
                    }
                }
            }
            let wait = self.shared.wait_bound(wait);
            if !wait.is_zero() {
                s = self.shared.progress.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if warned.elapsed() >= Duration::from_secs(30) {
                tracing::warn!(pending = target - s.done, waited = ?started.elapsed(), "still waiting for influxdb");
                warned = Instant::now();
            }
        }
        if s.given_up > 0 {
            return Err(InfluxError::ShutdownTimeout { unwritten: s.given_up, timeout: self.shared.shutdown_timeout });
        }
        Ok(())
    }

    /// Flushes (at most `timeout`, and never past the deadline of
    /// [`begin_shutdown`](Self::begin_shutdown)), then stops the thread. An error says what
    /// was left unwritten (also logged); the thread is then not waited for.
    pub fn close(&self, timeout: Duration) -> Result<(), InfluxError> {
        let flushed = self.flush(Some(timeout));
        if let Err(e) = &flushed {
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
        flushed
    }
}

/// How one request ended.
enum Attempt {
    Written,
    /// Final refusal: status and the server's message.
    Refused(u16, String),
    /// Try again: why.
    Retry(String),
}

/// How delivering one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Written, or finally refused (dead-lettered).
    Finished,
    /// Given up: the writer was abandoned while stopping.
    GivenUp,
}

/// One request's content.
enum Payload<'a> {
    /// Lines for `/write`, with their gzip-compressed body.
    Write { lines: &'a [String], gz: Vec<u8> },
    /// A deletion for `/query`.
    Delete(&'a str),
}

impl Payload<'_> {
    fn points(&self) -> usize {
        match self {
            Payload::Write { lines, .. } => lines.len(),
            Payload::Delete(_) => 1,
        }
    }
}

impl Sender {
    fn run(self) {
        let self_every = self.config.self_every;
        let mut next_self = (!self_every.is_zero()).then(|| Instant::now() + self_every);
        loop {
            let Some(batch) = self.next_batch(next_self) else { return };
            let mut self_point = None;
            if let Some(at) = next_self
                && Instant::now() >= at
            {
                next_self = Some(Instant::now() + self_every);
                self_point = self.self_point();
            }
            let (taken, delivery) = match batch {
                Batch::Delete(query) => {
                    let delivery = self.deliver(Payload::Delete(&query));
                    if let Some(line) = self_point {
                        self.write_lines(&[line]);
                    }
                    (1, delivery)
                }
                Batch::Lines(mut lines) => {
                    let taken = lines.len();
                    lines.extend(self_point);
                    let delivery = if lines.is_empty() { Delivery::Finished } else { self.write_lines(&lines) };
                    (taken, delivery)
                }
            };
            if taken > 0 {
                let mut s = self.shared.lock();
                s.done += taken as u64;
                if delivery == Delivery::GivenUp {
                    s.given_up += taken as u64;
                    self.metrics.given_up_points.fetch_add(taken as u64, Ordering::Relaxed);
                }
                drop(s);
                self.metrics.queued_points.fetch_sub(taken as i64, Ordering::Relaxed);
                self.shared.progress.notify_all();
            }
        }
    }

    /// Waits until a batch is due and takes it: lines up to the next deletion, or the
    /// deletion at the front (an empty line batch when only `meshmon_self` is due); `None`
    /// when closed and drained.
    fn next_batch(&self, next_self: Option<Instant>) -> Option<Batch> {
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
                return Some(Batch::Lines(vec![]));
            }
            let wake = [batch_due, next_self].into_iter().flatten().min();
            let wait = wake.map_or(Duration::from_secs(3600), |w| w.saturating_duration_since(now));
            s = self.shared.work.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        // Taking makes room in the queue: senders waiting for it may go on.
        self.shared.progress.notify_all();
        if matches!(s.queue.front(), Some(Item::Delete(_))) {
            let Some(Item::Delete(query)) = s.queue.pop_front() else { return Some(Batch::Lines(vec![])) };
            s.oldest = (!s.queue.is_empty()).then(Instant::now);
            return Some(Batch::Delete(query));
        }
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while batch.len() < self.config.batch_max_points
            && let Some(Item::Line(line)) = s.queue.front()
        {
            if !batch.is_empty() && bytes + line.len() + 1 > self.config.batch_max_bytes {
                break;
            }
            bytes += line.len() + 1;
            if let Some(Item::Line(line)) = s.queue.pop_front() {
                batch.push(line);
            }
        }
        s.queued_bytes -= bytes.min(s.queued_bytes);
        s.oldest = (!s.queue.is_empty()).then(Instant::now);
        Some(Batch::Lines(batch))
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

    fn write_lines(&self, lines: &[String]) -> Delivery {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
            body.push(b'\n');
        }
        self.deliver(Payload::Write { lines, gz: gzip(&body) })
    }

    /// Sends `payload` until InfluxDB accepted or finally refused it, or the writer was
    /// abandoned while stopping.
    fn deliver(&self, payload: Payload<'_>) -> Delivery {
        let points = payload.points();
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u64;
        loop {
            let started = Instant::now();
            match self.attempt(&payload) {
                Attempt::Written => {
                    self.metrics.last_write_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    match payload {
                        Payload::Write { .. } => {
                            self.metrics.points_written.fetch_add(points as u64, Ordering::Relaxed);
                            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                        }
                        Payload::Delete(_) => {
                            self.metrics.retractions_deleted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if failures > 0 {
                        tracing::info!(failures, points, "influxdb write succeeded after retries");
                    }
                    return Delivery::Finished;
                }
                Attempt::Refused(status, message) => {
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    self.refused(&payload, status, &message);
                    return Delivery::Finished;
                }
                Attempt::Retry(why) => {
                    failures += 1;
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    if self.shared.abandoned() {
                        tracing::error!(points, %why, "influxdb unreachable while stopping: not written (given up)");
                        return Delivery::GivenUp;
                    }
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%why, failures, retry_in = ?backoff, points,
                            "influxdb request failed; retrying (the pipeline waits)");
                    }
                    std::thread::sleep(self.shared.wait_bound(backoff).max(Duration::from_millis(1)));
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Dead-letters a finally refused request: counted, logged, appended to the rejected file.
    fn refused(&self, payload: &Payload<'_>, status: u16, message: &str) {
        match payload {
            Payload::Write { lines, .. } => {
                // InfluxDB 1.x writes the good points of a batch and says how many it dropped.
                let dropped = partial_dropped(message).map_or(lines.len(), |n| n.min(lines.len()));
                self.metrics.dead_lettered_points.fetch_add(dropped as u64, Ordering::Relaxed);
                self.metrics.points_written.fetch_add((lines.len() - dropped) as u64, Ordering::Relaxed);
                tracing::error!(status, %message, points = lines.len(), dropped,
                    file = %self.rejected.path.display(), "influxdb refused a batch: dead-lettered, not retried");
                self.rejected
                    .append(&format!("HTTP {status}: {message} ({dropped} of {} points refused)", lines.len()), lines);
            }
            Payload::Delete(query) => {
                self.metrics.dead_lettered_points.fetch_add(1, Ordering::Relaxed);
                tracing::error!(status, %message, %query, file = %self.rejected.path.display(),
                    "influxdb refused to delete a retracted point: dead-lettered, not retried (the point stays)");
                self.rejected.append(&format!("HTTP {status}: {message}; not applied: {query}"), &[]);
            }
        }
    }

    fn attempt(&self, payload: &Payload<'_>) -> Attempt {
        let req = match payload {
            Payload::Write { gz, .. } => self
                .client
                .post(&self.url)
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("Content-Encoding", "gzip")
                .body(gz.clone()),
            Payload::Delete(q) => {
                let Some(url) = &self.delete_url else {
                    return Attempt::Refused(0, "deletions are off for this endpoint".into());
                };
                self.client
                    .post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(format!("q={}", query(q)))
            }
        };
        let req = match &self.token {
            Some(token) => req.header("Authorization", format!("Token {token}")),
            None => req,
        };
        let is_delete = matches!(payload, Payload::Delete(_));
        let result = self.rt.block_on(async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = if resp.status().is_success() && !is_delete { String::new() } else { resp.text().await? };
            Ok::<_, reqwest::Error>((status, text))
        });
        match result {
            Ok((status, text)) if (200..300).contains(&status) => match is_delete.then(|| query_error(&text)).flatten()
            {
                Some(error) => Attempt::Refused(status, error),
                None => Attempt::Written,
            },
            Ok((status, text)) if (400..500).contains(&status) && status != 408 && status != 429 => {
                Attempt::Refused(status, text.trim().to_owned())
            }
            Ok((status, text)) => Attempt::Retry(format!("HTTP {status}: {}", text.trim())),
            Err(e) => Attempt::Retry(error_chain(&e)),
        }
    }
}

/// The error of an InfluxDB 1.x `/query` answer (`{"error":…}` or a statement's
/// `{"results":[{"error":…}]}`); `None` when every statement succeeded.
fn query_error(body: &str) -> Option<String> {
    if body.trim().is_empty() {
        return None;
    }
    let json: serde_json::Value = match serde_json::from_str(body) {
        Ok(j) => j,
        Err(e) => return Some(format!("unreadable answer ({e}): {}", body.trim())),
    };
    if let Some(e) = json["error"].as_str() {
        return Some(e.to_owned());
    }
    json["results"].as_array().into_iter().flatten().find_map(|r| r["error"].as_str()).map(str::to_owned)
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::{BufRead, BufReader, Read};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;

    use super::*;
    use crate::engine::{Dimension, RecordId, SeriesKey, Stats, Value, Window, WindowSpec};
    use crate::sinks::influxdb::InfluxApi;

    #[test]
    fn partial_write_messages_say_how_many_were_dropped() {
        let m = r#"{"error":"partial write: field type conflict: input field \"count\" on measurement \"x\" is type float, already exists as type integer dropped=3"}"#;
        assert_eq!(partial_dropped(m), Some(3));
        assert_eq!(partial_dropped("database not found"), None);
    }

    #[test]
    fn query_answers_are_read_for_errors() {
        assert_eq!(query_error(r#"{"results":[{"statement_id":0}]}"#), None);
        assert_eq!(query_error(""), None);
        assert_eq!(
            query_error(r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#).as_deref(),
            Some("database not found: x")
        );
        assert_eq!(query_error(r#"{"error":"error parsing query: x"}"#).as_deref(), Some("error parsing query: x"));
        assert!(query_error("<html>").is_some());
    }

    /// One request the fake server received: method, path and body (gunzipped; for a form,
    /// the decoded `q`).
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        path: String,
        body: String,
    }

    type Answer = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

    /// A fake InfluxDB: records every request and answers with `answer(request, index)`.
    fn fake_influxdb(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (log, answer) = (log.clone(), answer.clone());
                std::thread::spawn(move || serve(conn, &log, &*answer));
            }
        });
        (addr, seen)
    }

    fn serve(conn: TcpStream, log: &Mutex<Vec<Seen>>, answer: &(dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync)) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let (mut length, mut gzipped) = (0usize, false);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                gzipped |= line == "content-encoding: gzip";
            }
            let mut raw = vec![0; length];
            reader.read_exact(&mut raw).unwrap();
            let body = if gzipped {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap();
                text
            } else {
                form_q(&String::from_utf8(raw).unwrap())
            };
            let seen = Seen { path, body };
            let index = {
                let mut l = log.lock().unwrap();
                l.push(seen.clone());
                l.len() - 1
            };
            let (status, text) = answer(&seen, index);
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{text}",
                text.len()
            );
            if conn.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// The decoded `q` of a form body `q=…`.
    fn form_q(body: &str) -> String {
        let enc = body.strip_prefix("q=").unwrap_or(body).as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < enc.len() {
            if enc[i] == b'%' {
                out.push(u8::from_str_radix(std::str::from_utf8(&enc[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            } else {
                out.push(if enc[i] == b'+' { b' ' } else { enc[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn ok_answers() -> Answer {
        Arc::new(|seen: &Seen, _| match seen.path.starts_with("/query") {
            true => (200, r#"{"results":[{"statement_id":0}]}"#.into()),
            false => (204, String::new()),
        })
    }

    fn config(addr: SocketAddr) -> InfluxDbSection {
        InfluxDbSection {
            url: format!("http://{addr}"),
            database: "db".into(),
            flush_every: Duration::from_secs(3600),
            self_every: Duration::ZERO,
            ..InfluxDbSection::default()
        }
    }

    fn series(node: &str) -> SeriesKey {
        SeriesKey { metric: Arc::from("m"), dimension: Dimension::Node(Arc::from(node)) }
    }

    const GAP: WindowSpec = WindowSpec::Session { gap: 10_000_000_000 };

    fn upsert(node: &str, start_s: i64, value: i128) -> AggregateChange {
        let id = RecordId { agent: Arc::from("a"), sequence: 1, index: 0 };
        let start = start_s * 1_000_000_000;
        AggregateChange::Upsert {
            series: series(node),
            window_spec: GAP,
            window: Window { start, end: start + 10_000_000_000 },
            stats: Stats::of(Value::Decimal(value * 1_000_000_000), start, id),
            revision: 0,
        }
    }

    fn retract(node: &str, start_s: i64) -> AggregateChange {
        AggregateChange::Retract { series: series(node), window_spec: GAP, window_start: start_s * 1_000_000_000 }
    }

    /// A short description of each request: `write <timestamps>` or `delete <node>@<ms>`.
    fn story(seen: &[Seen]) -> Vec<String> {
        seen.iter()
            .map(|s| match s.path.starts_with("/query") {
                true => {
                    let node = s.body.split("'node=").nth(1).and_then(|r| r.split('\'').next()).unwrap_or("?");
                    let time = s.body.rsplit("time = ").next().unwrap_or("?");
                    format!("delete {node}@{time}")
                }
                false => {
                    let points: Vec<String> = s
                        .body
                        .lines()
                        .map(|l| {
                            let node = l.split("dimension=node\\=").nth(1).and_then(|r| r.split(',').next());
                            format!("{}@{}", node.unwrap_or("?"), l.rsplit(' ').next().unwrap_or("?"))
                        })
                        .collect();
                    format!("write {}", points.join(" "))
                }
            })
            .collect()
    }

    #[test]
    fn deletions_are_ordered_with_the_writes_around_them() {
        let (addr, seen) = fake_influxdb(ok_answers());
        let dir = tempfile::tempdir().unwrap();
        let w = InfluxWriter::start(&config(addr), dir.path()).unwrap();
        // An upsert then its retraction; a retraction then the same point again; a point
        // that merely passes by.
        w.send_aggregates(&[upsert("a", 0, 1), upsert("b", 0, 2), retract("a", 0), retract("b", 0), upsert("b", 0, 3)]);
        w.send_aggregates(&[upsert("c", 20, 4)]);
        w.flush(None).unwrap();
        let requests = seen.lock().unwrap().clone();
        assert_eq!(
            story(&requests),
            ["write a@0 b@0", "delete a@0ms", "delete b@0ms", "write b@0 c@20000"],
            "{requests:#?}"
        );
        assert_eq!(
            requests[1],
            Seen {
                path: "/query?db=db".into(),
                body: r#"DELETE FROM "meshmon_aggregate" WHERE "dimension" = 'node=a' AND "kind" = 'node' AND "metric" = 'm' AND "window" = 'session:10s' AND time = 0ms"#.into(),
            }
        );
        assert!(requests[3].body.contains("max=3.0"), "the re-created point has its new value: {requests:#?}");
        let m = w.metrics();
        assert_eq!(m.retractions_deleted.load(Ordering::Relaxed), 2);
        assert_eq!(m.retractions_skipped.load(Ordering::Relaxed), 0);
        assert_eq!(m.points_written.load(Ordering::Relaxed), 4);
        w.close(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn deletions_are_retried_on_5xx_and_dead_lettered_on_an_error_answer() {
        // The first deletion fails twice with 503, then works; the second is refused.
        let answer: Answer = Arc::new(|seen: &Seen, index| {
            if !seen.path.starts_with("/query") {
                return (204, String::new());
            }
            match (seen.body.contains("'node=a'"), index) {
                (true, 0 | 1) => (503, "busy".into()),
                (true, _) => (200, r#"{"results":[{"statement_id":0}]}"#.into()),
                (false, _) => (200, r#"{"results":[{"statement_id":0,"error":"database not found: db"}]}"#.into()),
            }
        });
        let (addr, seen) = fake_influxdb(answer);
        let dir = tempfile::tempdir().unwrap();
        let w = InfluxWriter::start(&config(addr), dir.path()).unwrap();
        w.send_aggregates(&[retract("a", 0), retract("b", 10), upsert("c", 0, 1)]);
        w.flush(None).unwrap();
        assert_eq!(
            story(&seen.lock().unwrap()),
            ["delete a@0ms", "delete a@0ms", "delete a@0ms", "delete b@10000ms", "write c@0"]
        );
        let m = w.metrics();
        assert_eq!(m.retractions_deleted.load(Ordering::Relaxed), 1);
        assert_eq!(m.retries.load(Ordering::Relaxed), 2);
        assert_eq!(m.dead_lettered_points.load(Ordering::Relaxed), 1);
        let rejected = std::fs::read_to_string(dir.path().join(REJECTED_FILE)).unwrap();
        assert!(rejected.contains("database not found: db") && rejected.contains("'node=b'"), "{rejected}");
        w.close(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn the_v2_api_and_switched_off_deletions_skip_retractions() {
        let (addr, seen) = fake_influxdb(ok_answers());
        let dir = tempfile::tempdir().unwrap();
        let v2 = InfluxDbSection { api: InfluxApi::V2, org: "o".into(), bucket: "b".into(), ..config(addr) };
        let off = InfluxDbSection { delete_retractions: false, ..config(addr) };
        for c in [v2, off] {
            let w = InfluxWriter::start(&c, dir.path()).unwrap();
            w.send_aggregates(&[upsert("a", 0, 1), retract("a", 0)]);
            w.flush(None).unwrap();
            assert_eq!(w.metrics().retractions_skipped.load(Ordering::Relaxed), 1);
            assert_eq!(w.metrics().retractions_deleted.load(Ordering::Relaxed), 0);
            w.close(Duration::from_secs(5)).unwrap();
        }
        assert!(seen.lock().unwrap().iter().all(|s| !s.path.starts_with("/query")));
    }

    /// Accepts connections and never answers (an InfluxDB that hangs).
    fn silent_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        addr
    }

    #[test]
    fn a_flush_waits_until_stopping_begins_then_at_most_shutdown_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let c = InfluxDbSection {
            timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(300),
            ..config(silent_server())
        };
        let w = InfluxWriter::start(&c, dir.path()).unwrap();
        w.send_aggregates(&[upsert("a", 0, 1), retract("a", 0)]);
        // A checkpoint's flush: as long as it takes — until the stop begins.
        let (tx, rx) = mpsc::channel();
        let flusher = w.clone();
        std::thread::spawn(move || tx.send(flusher.flush(None)));
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "no bound before the stop");
        w.begin_shutdown();
        let flushed = rx.recv_timeout(Duration::from_secs(60)).expect("the flush ends after shutdown_timeout");
        match flushed {
            Err(InfluxError::ShutdownTimeout { unwritten, timeout }) => {
                assert_eq!((unwritten, timeout), (2, Duration::from_millis(300)));
            }
            other => panic!("expected ShutdownTimeout, got {other:?}"),
        }
        // Changes arriving now are not waited for either, and every later flush fails.
        w.send_aggregates(&[upsert("b", 0, 1)]);
        assert!(matches!(w.flush(None), Err(InfluxError::ShutdownTimeout { .. })));
        assert!(matches!(w.close(Duration::from_secs(600)), Err(InfluxError::ShutdownTimeout { .. })));
    }

    #[test]
    fn a_full_queue_blocks_until_the_shutdown_deadline_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let c = InfluxDbSection {
            timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(300),
            batch_max_points: 1,
            queue_max_points: 1,
            ..config(silent_server())
        };
        let w = InfluxWriter::start(&c, dir.path()).unwrap();
        // The writer takes the first point (and hangs on it), the second fills the queue, the
        // third waits for room: backpressure.
        let (tx, rx) = mpsc::channel();
        let sender = w.clone();
        std::thread::spawn(move || {
            sender.send_aggregates(&[upsert("a", 0, 1), upsert("b", 0, 1), upsert("c", 0, 1)]);
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "backpressure before the stop");
        w.begin_shutdown();
        rx.recv_timeout(Duration::from_secs(60)).expect("the sender is released after shutdown_timeout");
        assert_eq!(w.metrics().given_up_points.load(Ordering::Relaxed), 1);
        assert!(matches!(w.flush(None), Err(InfluxError::ShutdownTimeout { .. })));
    }
}

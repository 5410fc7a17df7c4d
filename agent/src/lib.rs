//! meshmon host agent.
//!
//! Role: collects metric records on one host — pushed by applications over gRPC
//! (`meshmon.v1.Ingest/Push`) or HTTP (`POST /v1/records`, JSON lines), or read by plugins — and
//! delivers them as sequenced `meshmon.v1.RecordBatch`es to its output: streamed to the
//! aggregator over gRPC, re-sending until each batch is acknowledged, or produced to a Kafka
//! topic with a disk spool while the brokers are away (`output_kind`). This file wires the parts
//! into [`Agent`] / [`AgentHandle`], usable in-process (tests, the aggregator's demo) as well as
//! by the `meshmon-agent` binary. It touches what its parts touch: its listening sockets, the
//! connection to the aggregator or the Kafka brokers, the sequence file and the spool in
//! `state_dir`, and the host views read by the system plugin.
//!
//! Data path: push API / plugin → `ingress.rs` (check, stamp cluster/node/tags, count; records
//! travel in their protobuf encoding from here on, `wire.rs`) →
//! `batcher.rs` (batches of `batch_max_records` or `batch_max_delay`, numbered by
//! `sequence.rs`, into a bounded queue) → `sender.rs` (in-flight window, acks, reconnect and
//! re-send) → aggregator; or → `kafka/producer.rs` (idempotent producer, delivery reports,
//! `spool/` on disk while the broker is unreachable) → Kafka topic. Self-metrics: `metrics.rs`.
//! Configuration: `config.rs`, `kafka/config.rs`, `cli.rs`.

pub mod backoff;
pub mod batcher;
pub mod cli;
pub mod config;
pub mod connector;
pub mod duration;
pub mod ingress;
pub mod kafka;
pub mod metrics;
pub mod plugins;
pub mod push;
pub mod record;
pub mod sender;
pub mod sequence;
pub mod spool;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshmon_proto::v1::Record;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use crate::batcher::SubmitError;
pub use crate::config::{Config, ConfigError, OutputKind};
pub use crate::metrics::MetricsSnapshot;
pub use crate::record::InvalidRecord;

use crate::backoff::Backoff;
use crate::batcher::{BatchLimits, Batcher};
use crate::ingress::Ingress;
use crate::kafka::producer::{KafkaSender, KafkaSettings, ProducerError};
use crate::metrics::{DropReason, Metrics, PushApi};
use crate::push::http::HttpState;
use crate::record::RecordDefaults;
use crate::sender::{Sender, SenderConfig, SenderError};
use crate::sequence::{SequenceAllocator, SequenceError};
use crate::spool::{Spool, SpoolError};

/// The wire-schema package this agent speaks.
pub const WIRE_PACKAGE: &str = meshmon_proto::PACKAGE;

/// How long the push servers get to stop during shutdown before they are cut off.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sequence state cannot be used.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A listening address cannot be bound.
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        /// Which listener (`grpc_listen`, `http_listen`, `metrics_listen`).
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The aggregator URL cannot be used.
    #[error(transparent)]
    Sender(#[from] SenderError),
    /// The Kafka output's disk spool cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The Kafka producer cannot be created.
    #[error(transparent)]
    Kafka(#[from] ProducerError),
    /// A plugin instance cannot start.
    #[error(transparent)]
    Plugin(#[from] plugins::PluginError),
}

/// The addresses the agent actually listens on (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddresses {
    /// gRPC push API.
    pub grpc: SocketAddr,
    /// HTTP push API (also `/metrics`).
    pub http: SocketAddr,
    /// Prometheus `/metrics` (equal to `http` when shared).
    pub metrics: SocketAddr,
}

/// Outcome of an in-process push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSummary {
    /// Records enqueued.
    pub accepted: usize,
    /// Records refused: index in the pushed vector and reason.
    pub invalid: Vec<(usize, InvalidRecord)>,
}

/// What a shutdown achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Batches acknowledged by the aggregator during the shutdown.
    pub flushed_batches: u64,
    /// Records in those batches.
    pub flushed_records: u64,
    /// Batches still queued, in flight or open at the end (0 after a complete flush).
    pub undelivered_batches: u64,
    /// Records in those batches.
    pub undelivered_records: u64,
    /// Kafka output: batches left in the disk spool (not lost: delivered after the next start).
    pub spooled_batches: u64,
    /// Records in those batches.
    pub spooled_records: u64,
    /// Whether `shutdown_timeout` expired before everything was acknowledged.
    pub timed_out: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Whether every batch was acknowledged — or, with the Kafka output, acknowledged or kept in
    /// the disk spool for the next start.
    pub fn is_complete(&self) -> bool {
        !self.timed_out && self.undelivered_batches == 0 && self.undelivered_records == 0
    }
}

/// The agent: [`Agent::start`] runs one and returns its [`AgentHandle`].
#[derive(Debug)]
pub struct Agent;

struct Tasks {
    servers: Vec<JoinHandle<()>>,
    plugins: Vec<JoinHandle<()>>,
    timer: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl Tasks {
    fn abort_all(&self) {
        for h in self.servers.iter().chain(&self.plugins).chain([&self.timer, &self.sender]) {
            h.abort();
        }
    }
}

/// A running agent. Dropping it without [`AgentHandle::shutdown`] stops everything at once
/// (nothing is flushed).
pub struct AgentHandle {
    config: Arc<Config>,
    addresses: BoundAddresses,
    batcher: Arc<Batcher>,
    ingress: Arc<Ingress>,
    metrics: Arc<Metrics>,
    shutdown_tx: watch::Sender<bool>,
    stop_by_tx: watch::Sender<Option<tokio::time::Instant>>,
    tasks: Option<Tasks>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("agent_id", &self.config.agent_id)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr).await.map_err(|source| AgentError::Bind { what, addr, source })
}

fn local(what: &'static str, addr: SocketAddr, l: &TcpListener) -> Result<SocketAddr, AgentError> {
    l.local_addr().map_err(|source| AgentError::Bind { what, addr, source })
}

impl Agent {
    /// Validates `config`, opens the sequence state (and, for the Kafka output, the disk spool
    /// and the producer), binds the listeners and starts every task.
    /// Must be called inside a tokio runtime (with the time, net and signal drivers enabled).
    ///
    /// # Errors
    /// [`AgentError`] if the configuration is invalid, the state directory or the spool
    /// unusable, a listener cannot be bound, the aggregator URL is unusable or librdkafka refuses
    /// the Kafka settings. Nothing keeps running then.
    pub async fn start(config: Config) -> Result<AgentHandle, AgentError> {
        config.validate()?;
        let config = Arc::new(config);
        let sequences = SequenceAllocator::open(&config.state_dir)?;
        if sequences.was_fresh() {
            info!(state_dir = %config.state_dir.display(), "no sequence state yet: first run, batches start at 1");
        }
        let first_sequence = sequences.peek();
        let metrics = Arc::new(Metrics::new());
        let spool = match config.output_kind {
            OutputKind::Grpc => {
                warn_about_left_spool(&config);
                None
            }
            OutputKind::Kafka => Some(open_spool(&config, &metrics)?),
        };

        let grpc_listener = bind("grpc_listen", config.grpc_listen).await?;
        let http_listener = bind("http_listen", config.http_listen).await?;
        let metrics_listener = if config.metrics_shares_http() {
            None
        } else {
            Some(bind("metrics_listen", config.metrics_listen).await?)
        };
        let grpc = local("grpc_listen", config.grpc_listen, &grpc_listener)?;
        let http = local("http_listen", config.http_listen, &http_listener)?;
        let metrics_addr = match &metrics_listener {
            Some(l) => local("metrics_listen", config.metrics_listen, l)?,
            None => http,
        };
        let addresses = BoundAddresses { grpc, http, metrics: metrics_addr };

        let limits = BatchLimits { max_records: config.batch_max_records, max_delay: config.batch_max_delay };
        let (batcher, queue_rx) =
            Batcher::new(config.agent_id.clone(), limits, config.queue_capacity, sequences, metrics.clone());
        let batcher = Arc::new(batcher);
        let (stop_by_tx, stop_by_rx) = watch::channel(None);
        let sender: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match spool {
            None => Box::pin(
                Sender::new(
                    SenderConfig {
                        output: config.output.clone(),
                        max_in_flight: config.max_in_flight,
                        backoff: Backoff::agent_default(),
                    },
                    queue_rx,
                    metrics.clone(),
                )?
                .run(),
            ),
            Some(spool) => {
                let settings = KafkaSettings {
                    agent_id: config.agent_id.clone(),
                    topic: config.kafka.topic.clone(),
                    describe: config.kafka.describe(),
                    client: config.kafka.client_config(&config.agent_id)?,
                    delivery_timeout: config.kafka.delivery_timeout,
                    max_in_flight: config.max_in_flight,
                    backoff: Backoff::agent_default(),
                    tick: (config.spool.fsync_interval / 2)
                        .clamp(Duration::from_millis(10), Duration::from_millis(500)),
                };
                Box::pin(KafkaSender::new(settings, queue_rx, spool, stop_by_rx, metrics.clone())?.run())
            }
        };
        let defaults =
            RecordDefaults { cluster: config.cluster.clone(), node: config.node.clone(), tags: config.tags.clone() };
        let ingress = Arc::new(Ingress::new(batcher.clone(), defaults, metrics.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut plugin_config = config.plugins.clone();
        plugin_config.normalize()?;
        let context = plugins::PluginContext {
            state_dir: config.state_dir.clone(),
            shutdown: shutdown_rx.clone(),
            metrics: metrics.clone(),
        };
        let scheduled = plugins::build_all(&plugin_config, &context)?;

        let sender = tokio::spawn(sender);
        let timer = tokio::spawn(batcher.clone().run_timer());
        let mut servers = Vec::new();
        let service = push::grpc::IngestService::new(ingress.clone(), shutdown_rx.clone());
        let grpc_shutdown = shutdown_rx.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = push::grpc::serve(grpc_listener, service, grpc_shutdown).await {
                error!("gRPC push server failed: {e}");
            }
        }));
        let http_state = Arc::new(HttpState::new(ingress.clone(), config.max_body_bytes, true, shutdown_rx.clone()));
        servers.push(tokio::spawn(push::http::serve(http_listener, http_state)));
        if let Some(listener) = metrics_listener {
            let state = Arc::new(HttpState::new(ingress.clone(), config.max_body_bytes, false, shutdown_rx.clone()));
            servers.push(tokio::spawn(push::http::serve(listener, state)));
        }
        let mut plugins = Vec::new();
        if config.plugins.system.enabled {
            plugins.push(tokio::spawn(plugins::system::run(
                config.plugins.system.interval,
                ingress.clone(),
                shutdown_rx.clone(),
            )));
        }
        for s in scheduled {
            let health = metrics.plugins().register(&s.name, s.kind);
            plugins.push(tokio::spawn(plugins::runner::run(s, ingress.clone(), health, shutdown_rx.clone())));
        }
        info!(
            agent_id = %config.agent_id,
            output = %config.describe_output(),
            grpc = %addresses.grpc,
            http = %addresses.http,
            metrics = %addresses.metrics,
            next_sequence = first_sequence,
            "meshmon-agent started"
        );
        Ok(AgentHandle {
            config,
            addresses,
            batcher,
            ingress,
            metrics,
            shutdown_tx,
            stop_by_tx,
            tasks: Some(Tasks { servers, plugins, timer, sender }),
        })
    }
}

impl AgentHandle {
    /// The addresses the agent listens on.
    pub fn addresses(&self) -> BoundAddresses {
        self.addresses
    }

    /// The gRPC push API address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    /// The HTTP push API address.
    pub fn http_addr(&self) -> SocketAddr {
        self.addresses.http
    }

    /// The Prometheus `/metrics` address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addresses.metrics
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The agent id stamped on every batch.
    pub fn agent_id(&self) -> &str {
        &self.config.agent_id
    }

    /// Pushes records in-process, waiting while the queue is full. Records without cluster,
    /// node or some global tag get the configured ones; without event time, now.
    ///
    /// # Errors
    /// [`SubmitError::Closed`] after shutdown began, [`SubmitError::Sequence`] if the state
    /// directory fails.
    pub async fn push(&self, records: Vec<Record>) -> Result<PushSummary, SubmitError> {
        let (valid, invalid) = self.ingress.prepare(records);
        let accepted = self.ingress.enqueue(PushApi::Local, valid).await?;
        Ok(PushSummary { accepted, invalid })
    }

    /// Like [`AgentHandle::push`] but never waits: all or nothing.
    ///
    /// # Errors
    /// [`SubmitError::QueueFull`] or [`SubmitError::TooLarge`] when the queue has no room (nothing
    /// was enqueued), and the errors of [`AgentHandle::push`].
    pub fn try_push(&self, records: Vec<Record>) -> Result<PushSummary, SubmitError> {
        let (valid, invalid) = self.ingress.prepare(records);
        let accepted = self.ingress.try_enqueue(PushApi::Local, valid)?;
        Ok(PushSummary { accepted, invalid })
    }

    /// A copy of the self-metrics.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The self-metrics in Prometheus text format (what `GET /metrics` serves).
    pub fn prometheus_text(&self) -> String {
        self.metrics.render_prometheus()
    }

    /// Graceful stop: stops accepting pushes and sampling, closes the open batch, and waits until
    /// every queued and in-flight batch is acknowledged — at most `shutdown_timeout`. The report
    /// says what was flushed and, on timeout, what was not delivered (counted as
    /// `dropped{reason="shutdown_timeout"}`).
    pub async fn shutdown(mut self) -> ShutdownReport {
        let start = tokio::time::Instant::now();
        let deadline = start + self.config.shutdown_timeout;
        let before = self.metrics.snapshot();
        let Some(mut tasks) = self.tasks.take() else {
            return ShutdownReport {
                flushed_batches: 0,
                flushed_records: 0,
                undelivered_batches: 0,
                undelivered_records: 0,
                spooled_batches: 0,
                spooled_records: 0,
                timed_out: false,
                elapsed: Duration::ZERO,
            };
        };
        info!(
            queued_batches = before.queue_depth,
            in_flight_batches = before.in_flight,
            open_records = self.batcher.open_records(),
            timeout_ms = u64::try_from(self.config.shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
            "shutting down: pushes refused from now on; flushing queued and in-flight batches"
        );
        self.shutdown_tx.send_replace(true);
        // The Kafka sender must be done (what is left spooled) before the deadline cuts it off.
        let margin = (self.config.shutdown_timeout / 4).min(Duration::from_secs(5));
        self.stop_by_tx.send_replace(Some(deadline - margin));
        let batcher = self.batcher.clone();
        let flush = async {
            let servers = futures_join(&mut tasks.servers);
            if tokio::time::timeout(SERVER_STOP_GRACE, servers).await.is_err() {
                warn!("push servers did not stop within {SERVER_STOP_GRACE:?}; cutting them off");
                for h in &tasks.servers {
                    h.abort();
                }
            }
            futures_join(&mut tasks.plugins).await;
            if let Err(e) = batcher.close().await {
                error!("closing the last batch: {e}");
            }
            let _ = (&mut tasks.timer).await;
            let _ = (&mut tasks.sender).await;
        };
        let timed_out = tokio::time::timeout_at(deadline, flush).await.is_err();
        tasks.abort_all();
        // Whatever is still queued, in flight or open now was not delivered: normally nothing;
        // on timeout, or if the last batch could not be numbered.
        let after = self.metrics.snapshot();
        let open = u64::try_from(self.batcher.open_records()).unwrap_or(u64::MAX);
        let undelivered_batches = after.queue_depth + after.in_flight + u64::from(open > 0);
        let undelivered_records = after.queue_records + after.in_flight_records + open;
        if undelivered_records > 0 {
            let reason = if timed_out { DropReason::ShutdownTimeout } else { DropReason::Internal };
            self.metrics.drop_records(
                reason,
                usize::try_from(undelivered_records).unwrap_or(usize::MAX),
                "shutdown ended before the aggregator acknowledged them",
            );
        }
        let report = ShutdownReport {
            flushed_batches: after.batches_acked - before.batches_acked,
            flushed_records: (after.sent + after.rejected) - (before.sent + before.rejected),
            undelivered_batches,
            undelivered_records,
            spooled_batches: after.spool_batches,
            spooled_records: after.spool_records,
            timed_out,
            elapsed: start.elapsed(),
        };
        if !report.is_complete() {
            error!(
                flushed_batches = report.flushed_batches,
                flushed_records = report.flushed_records,
                undelivered_batches = report.undelivered_batches,
                undelivered_records = report.undelivered_records,
                timed_out = report.timed_out,
                "shutdown incomplete: some batches were not acknowledged by the output"
            );
        } else if report.spooled_batches > 0 {
            warn!(
                flushed_batches = report.flushed_batches,
                flushed_records = report.flushed_records,
                spooled_batches = report.spooled_batches,
                spooled_records = report.spooled_records,
                elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
                "shutdown complete: the Kafka broker did not take every batch; the rest is in the disk spool and is \
                 delivered after the next start"
            );
        } else {
            info!(
                flushed_batches = report.flushed_batches,
                flushed_records = report.flushed_records,
                elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
                "shutdown complete: every batch acknowledged"
            );
        }
        report
    }
}

/// With the gRPC output, batches a Kafka output left in `state_dir/spool` are not delivered:
/// say so.
fn warn_about_left_spool(config: &Config) {
    let dir = config.state_dir.join(spool::DIR_NAME);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let segments = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().and_then(spool::format::parse_segment_file_name).is_some())
        .count();
    if segments > 0 {
        warn!(
            spool = %dir.display(),
            segments,
            "the disk spool holds batches of the Kafka output, which the gRPC output does not deliver; run with \
             output_kind = \"kafka\" to deliver them"
        );
    }
}

/// Opens the Kafka output's spool in `state_dir/spool` and reports what it recovered.
fn open_spool(config: &Config, metrics: &Arc<Metrics>) -> Result<Spool, AgentError> {
    let dir = config.state_dir.join(spool::DIR_NAME);
    let (spool, found) = Spool::open(&dir, config.spool, metrics.clone())?;
    if found.batches > 0 || found.corrupt_frames > 0 {
        info!(
            spool = %dir.display(),
            batches = found.batches,
            records = found.records,
            segments = found.segments,
            bytes = found.bytes,
            first_sequence = found.first_sequence.unwrap_or(0),
            last_sequence = found.last_sequence.unwrap_or(0),
            corrupt_frames = found.corrupt_frames,
            truncated_bytes = found.truncated_bytes,
            "disk spool recovered: these batches are delivered first"
        );
    }
    Ok(spool)
}

/// Awaits every handle in turn (their panics are logged, not propagated).
async fn futures_join(handles: &mut [JoinHandle<()>]) {
    for h in handles {
        if let Err(e) = h.await
            && e.is_panic()
        {
            error!("agent task panicked: {e}");
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            self.shutdown_tx.send_replace(true);
            tasks.abort_all();
        }
    }
}

//! `meshmon-aggregator serve`: the pipeline behind its input and an HTTP server.
//!
//! Role: binds the listening sockets (so port 0 works and the bound addresses are known),
//! opens the HBase raw-record table when `store.kind = "hbase"` (created or checked, before
//! anything is consumed), starts the [`Pipeline`] and its input — in embedded mode
//! `meshmon.v1.Ingest` on the gRPC address; in Kafka mode (`kafka.brokers` set) the Kafka
//! source, restored from the last checkpoint, with no gRPC ingest (a batch acked over gRPC
//! would not be in any checkpoint) — the `meshmon.v1.Query` drill-down service on the gRPC
//! address (both modes), and the JSON API, `/metrics` and the built-in page on the HTTP
//! address; drill-downs read the configured raw store. Stops gracefully: no new batches;
//! embedded mode makes every shard write what it collected, Kafka mode takes a final
//! checkpoint; then the InfluxDB writer (when `[influxdb]` is on) writes what is queued, and
//! the servers close. Every wait for InfluxDB during the stop ends by
//! `influxdb.shutdown_timeout` ([`RunningServer::stop_checked`] reports what was left).
//! [`RunningServer::failed`] resolves when the Kafka source or a durable output (HBase) fails
//! for good. Must run inside an actix system.
//! Touches the sockets, the store and checkpoint files and the Kafka, InfluxDB and HBase
//! connections (through its parts).

use std::net::SocketAddr;

use actix_web::{App, HttpServer, web};
use meshmon_proto::v1::ingest_server::IngestServer;
use meshmon_proto::v1::query_server::QueryServer;
use tokio::sync::oneshot;

use std::sync::Arc;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{AggregatorConfig, ConfigFileError};
use crate::engine::snapshot::{EngineSnapshot, SnapshotError};
use crate::http::{HttpState, configure};
use crate::kafka::source::{self, SourceOptions};
use crate::kafka::{KafkaMetrics, OutputError, OutputProducer, SourceError, SourceHandle};
use crate::runtime::messages::Flush;
use crate::runtime::query::QueryService;
use crate::runtime::{DurableOutputs, Pipeline, StartError, StartOptions};
use crate::sinks::influxdb::{InfluxError, InfluxWriter};
use crate::store::hbase::{HbaseError, HbaseRaw, HbaseSetup};

/// How long a stopping server lets open ingest streams finish.
pub const GRPC_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where agents push (gRPC); `None` in Kafka mode.
    pub grpc_addr: Option<SocketAddr>,
    /// Where `meshmon.v1.Query` is served (the gRPC address; in Kafka mode `None` if it could
    /// not be bound).
    pub query_addr: Option<SocketAddr>,
    /// Where the API, `/metrics` and the page are served.
    pub http_addr: SocketAddr,
    /// The pipeline.
    pub pipeline: Pipeline,
    grpc: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    source: Option<SourceHandle>,
    http: actix_web::dev::ServerHandle,
    influxdb: Option<Arc<InfluxWriter>>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The pipeline could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The checkpoint file could not be used.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint's engine state is unreadable.
    #[error("checkpoint engine state: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The Kafka output producer could not be created.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The Kafka source could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The InfluxDB writer could not start.
    #[error(transparent)]
    Influx(#[from] InfluxError),
    /// The HBase raw store could not be opened (unreachable, table missing or laid out
    /// differently).
    #[error("store.kind = \"hbase\": {0}")]
    Hbase(#[from] HbaseError),
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The stop did not end cleanly (`serve` then exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The Kafka source stopped with an error: its final checkpoint was not committed.
    #[error("kafka source: {0} (the final checkpoint was not committed: a restart replays from the last one)")]
    Source(SourceError),
    /// InfluxDB did not take everything queued.
    #[error(transparent)]
    Influx(#[from] InfluxError),
}

/// Starts everything `config` describes.
pub async fn start(config: &AggregatorConfig) -> Result<RunningServer, ServeError> {
    std::fs::create_dir_all(&config.store.data_dir)
        .map_err(|source| ServeError::Config(ConfigFileError::Read { path: config.store.data_dir.clone(), source }))?;
    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let hbase = match config.hbase_setup()? {
        Some(setup) => Some(open_hbase(setup).await?),
        None => None,
    };
    let influxdb = match config.influxdb.enabled() {
        true => Some(InfluxWriter::start(&config.influxdb, &config.store.data_dir)?),
        false => None,
    };
    let (pipeline, grpc_addr, query_addr, grpc, source) = if config.kafka.enabled() {
        // Bound first: an unusable address fails the start before anything is consumed.
        let listener = bind(config.listen.grpc)?;
        let (pipeline, source) = start_kafka(config, influxdb.clone(), hbase)?;
        let (addr, grpc) = start_grpc(config, &pipeline, listener, false)?;
        tracing::info!(%addr, "meshmon aggregator: gRPC query service (meshmon.v1.Query)");
        let (query_addr, grpc) = (Some(addr), Some(grpc));
        (pipeline, None, query_addr, grpc, Some(source))
    } else {
        let outputs = DurableOutputs { influxdb: influxdb.clone(), ..DurableOutputs::default() };
        let options = StartOptions { outputs, hbase, ..Default::default() };
        let pipeline = Pipeline::start_with(config.pipeline_config()?, options)?;
        attach_influxdb(&pipeline, influxdb.as_ref());
        let (addr, grpc) = start_grpc(config, &pipeline, bind(config.listen.grpc)?, true)?;
        (pipeline, Some(addr), Some(addr), Some(grpc), None)
    };

    let http_std = bind(config.listen.http)?;
    let http_addr = http_std.local_addr().map_err(|source| ServeError::Bind { addr: config.listen.http, source })?;
    let state = web::Data::new(HttpState::from_pipeline(&pipeline));
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
        .workers(2)
        .disable_signals()
        .listen(http_std)
        .map_err(|source| ServeError::Bind { addr: config.listen.http, source })?
        .run();
    let http = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(grpc_addr = ?grpc_addr, %http_addr, store = %config.store.data_dir.display(),
        raw_store = pipeline.raw.kind(), kafka = config.kafka.enabled(), "meshmon aggregator serving");
    Ok(RunningServer { grpc_addr, query_addr, http_addr, pipeline, grpc, source, http, influxdb })
}

/// Opens (creates or checks) the HBase raw-record table, then starts the connection pools.
async fn open_hbase(setup: HbaseSetup) -> Result<HbaseRaw, ServeError> {
    let opened = {
        let setup = setup.clone();
        tokio::task::spawn_blocking(move || setup.open_table())
            .await
            .map_err(|e| HbaseError::Stopped(format!("opening the table: {e}")))??
    };
    tracing::info!(address = %setup.address, table = %setup.config.table, family = %setup.config.family,
        created = opened.created, layout_recorded = opened.layout_recorded, "HBase raw store ready");
    Ok(HbaseRaw::start(&setup)?)
}

/// Renders the writer's metrics on `/metrics` and lets it write `meshmon_self` points.
fn attach_influxdb(pipeline: &Pipeline, influxdb: Option<&Arc<InfluxWriter>>) {
    if let Some(w) = influxdb {
        let _ = pipeline.metrics.influxdb.set(w.metrics());
        w.attach_runtime_metrics(pipeline.metrics.clone());
    }
}

/// Kafka mode: the pipeline restored from the last checkpoint, outputs, and the source.
fn start_kafka(
    config: &AggregatorConfig,
    influxdb: Option<Arc<InfluxWriter>>,
    hbase: Option<HbaseRaw>,
) -> Result<(Pipeline, SourceHandle), ServeError> {
    config.kafka.validate().map_err(|e| ServeError::Config(ConfigFileError::Invalid(e.to_string())))?;
    let kafka_metrics = Arc::new(KafkaMetrics::default());
    let producer = Arc::new(OutputProducer::new(&config.kafka, kafka_metrics.clone())?);
    let checkpoints = CheckpointStore::open(&config.checkpoint_path())?;
    let loaded = checkpoints.load()?;
    let (restore, meta) = match loaded {
        Some(c) => {
            tracing::info!(id = c.meta.id, bytes = c.engine.len(), offsets = ?c.meta.offsets,
                "restoring from checkpoint");
            (Some(EngineSnapshot::decode(&c.engine)?), Some(c.meta))
        }
        None => (None, None),
    };
    let outputs = DurableOutputs {
        producer: Some(producer.clone()),
        checkpoints: Some(checkpoints),
        last_checkpoint_id: meta.as_ref().map_or(0, |m| m.id),
        influxdb: influxdb.clone(),
    };
    let pipeline_config = config.pipeline_config()?;
    let tick_every = pipeline_config.tick_every;
    let pipeline =
        Pipeline::start_with(pipeline_config, StartOptions { restore, outputs, external_ticks: true, hbase })?;
    let _ = pipeline.metrics.kafka.set(kafka_metrics.clone());
    attach_influxdb(&pipeline, influxdb.as_ref());
    let options = SourceOptions { kafka: config.kafka.clone(), checkpoint_every: config.checkpoint.every, tick_every };
    let source = source::start(
        options,
        pipeline.router.clone(),
        producer,
        pipeline.metrics.clone(),
        kafka_metrics,
        meta.as_ref(),
    )?;
    Ok((pipeline, source))
}

type GrpcServer = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

/// `meshmon.v1.Query` on `grpc_std`, and `meshmon.v1.Ingest` when `ingest` (embedded mode).
fn start_grpc(
    config: &AggregatorConfig,
    pipeline: &Pipeline,
    grpc_std: std::net::TcpListener,
    ingest: bool,
) -> Result<(SocketAddr, GrpcServer), ServeError> {
    let grpc_addr = grpc_std.local_addr().map_err(|source| ServeError::Bind { addr: config.listen.grpc, source })?;
    let grpc_listener = tokio::net::TcpListener::from_std(grpc_std)
        .map_err(|source| ServeError::Bind { addr: config.listen.grpc, source })?;
    let (grpc_stop, stopped) = oneshot::channel::<()>();
    let ingest = ingest.then(|| IngestServer::new(pipeline.ingest_service()).max_decoding_message_size(64 << 20));
    let engine = &pipeline.config.engine;
    let query = QueryService::new(pipeline.store.clone(), engine.window, engine.allowed_lateness)
        .with_raw_store(pipeline.raw.clone());
    let query = QueryServer::new(query);
    let grpc_done = actix_rt::spawn(async move {
        // TCP_NODELAY: acks and HTTP/2 window updates are small writes; with Nagle on they wait
        // for the peer's delayed ACK (40 ms) and throttle every stream (docs/BENCHMARKS.md).
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_optional_service(ingest)
            .add_service(query)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok((grpc_addr, (grpc_stop, grpc_done)))
}

impl RunningServer {
    /// Stops taking batches, makes every shard write what it collected, closes the servers.
    ///
    /// Agents keep their ingest streams open, so the gRPC server gets [`GRPC_DRAIN`] to finish
    /// the batches in hand; then it is cut off. A batch cut off is not acknowledged, so its agent
    /// sends it again (to this aggregator after a restart, or another): nothing is lost.
    ///
    /// In Kafka mode the source stops and takes a final checkpoint (which writes everything
    /// collected); a restart resumes exactly there. Errors are logged;
    /// [`stop_checked`](Self::stop_checked) also returns them.
    pub async fn stop(self) {
        let _ = self.stop_checked().await;
    }

    /// [`stop`](Self::stop), telling whether it ended cleanly. From its start, every wait for
    /// InfluxDB (the final checkpoint's, the writer's drain) ends by `influxdb.shutdown_timeout`.
    /// `Err` when the Kafka source stopped with an error — its final checkpoint was not
    /// committed, so a restart replays from the last one — or InfluxDB did not take everything.
    pub async fn stop_checked(mut self) -> Result<(), StopError> {
        if let Some(w) = &self.influxdb {
            w.begin_shutdown();
        }
        if let Some(source) = self.source.take() {
            let stopped = source.stop().await;
            match &stopped {
                Ok(()) => tracing::info!("kafka source stopped after a final checkpoint"),
                Err(e) => tracing::error!(error = %e,
                    "kafka source stopped with an error: the final checkpoint was not committed; \
                     a restart replays from the last committed checkpoint"),
            }
            self.stop_grpc().await;
            let influx = self.close_influxdb().await;
            self.http.stop(true).await;
            stopped.map_err(StopError::Source)?;
            return influx;
        }
        self.stop_grpc().await;
        match self.pipeline.router.send(Flush).await {
            Ok(Ok(())) => tracing::info!("pipeline flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "flush failed"),
            Err(e) => tracing::error!(error = %e, "router gone before flush"),
        }
        let influx = self.close_influxdb().await;
        self.http.stop(true).await;
        influx
    }

    /// Stops the gRPC server, giving open streams up to [`GRPC_DRAIN`].
    async fn stop_grpc(&mut self) {
        if let Some((stop, mut done)) = self.grpc.take() {
            let _ = stop.send(());
            if tokio::time::timeout(GRPC_DRAIN, &mut done).await.is_err() {
                tracing::warn!(drain = ?GRPC_DRAIN, "gRPC clients still connected: closing their streams");
                done.abort();
            }
        }
    }

    /// Gives the InfluxDB writer what is left of its `shutdown_timeout` to write what is queued.
    async fn close_influxdb(&mut self) -> Result<(), StopError> {
        if let Some(w) = self.influxdb.take() {
            let timeout = w.shutdown_timeout();
            match tokio::task::spawn_blocking(move || w.close(timeout)).await {
                Ok(closed) => closed?,
                Err(e) => tracing::error!(error = %e, "closing the influxdb writer"),
            }
        }
        Ok(())
    }
}

/// Why a running server must stop (fail-stop).
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// The Kafka source stopped by itself.
    #[error("kafka source failed: {0}")]
    Source(SourceError),
    /// A durable output failed for good (an HBase raw-row write after its retries).
    #[error("pipeline failed: {0}")]
    Pipeline(String),
}

impl RunningServer {
    /// Resolves if the Kafka source stops by itself, or a durable output of the pipeline
    /// (the HBase raw store) fails for good: the process should exit and be restarted (in
    /// Kafka mode resuming from the last checkpoint). Never resolves otherwise.
    pub async fn failed(&mut self) -> Failed {
        let failure = self.pipeline.failure.clone();
        let source = async {
            match &mut self.source {
                Some(source) => match source.failed().await {
                    Err(e) => e,
                    Ok(()) => SourceError::Failed("kafka source stopped".into()),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = source => Failed::Source(e),
            why = failure.wait() => Failed::Pipeline(why),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

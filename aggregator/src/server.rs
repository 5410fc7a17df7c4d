//! `meshmon-aggregator serve`: the pipeline behind a gRPC ingest and an HTTP server.
//!
//! Role: binds the listening sockets (so port 0 works and the bound addresses are known),
//! starts the [`Pipeline`], serves `meshmon.v1.Ingest` on the gRPC address and the JSON API,
//! `/metrics` and the built-in page on the HTTP address, and stops gracefully: no new batches,
//! every shard writes what it collected, then the servers close. Must run inside an actix
//! system. Touches the sockets, the store file (through the pipeline) and nothing else.

use std::net::SocketAddr;

use actix_web::{App, HttpServer, web};
use meshmon_proto::v1::ingest_server::IngestServer;
use tokio::sync::oneshot;

use crate::config::{AggregatorConfig, ConfigFileError};
use crate::http::{HttpState, configure};
use crate::runtime::messages::Flush;
use crate::runtime::{Pipeline, StartError};

/// How long a stopping server lets open ingest streams finish.
pub const GRPC_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where agents push (gRPC).
    pub grpc_addr: SocketAddr,
    /// Where the API, `/metrics` and the page are served.
    pub http_addr: SocketAddr,
    /// The pipeline.
    pub pipeline: Pipeline,
    grpc_stop: oneshot::Sender<()>,
    grpc_done: tokio::task::JoinHandle<()>,
    http: actix_web::dev::ServerHandle,
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
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts everything `config` describes.
pub async fn start(config: &AggregatorConfig) -> Result<RunningServer, ServeError> {
    std::fs::create_dir_all(&config.store.data_dir)
        .map_err(|source| ServeError::Config(ConfigFileError::Read { path: config.store.data_dir.clone(), source }))?;
    let pipeline = Pipeline::start(config.pipeline_config()?)?;

    let bind = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let grpc_std = bind(config.listen.grpc)?;
    let grpc_addr = grpc_std.local_addr().map_err(|source| ServeError::Bind { addr: config.listen.grpc, source })?;
    let grpc_listener = tokio::net::TcpListener::from_std(grpc_std)
        .map_err(|source| ServeError::Bind { addr: config.listen.grpc, source })?;
    let (grpc_stop, stopped) = oneshot::channel::<()>();
    let ingest = IngestServer::new(pipeline.ingest_service()).max_decoding_message_size(64 << 20);
    let grpc_done = actix_rt::spawn(async move {
        // TCP_NODELAY: acks and HTTP/2 window updates are small writes; with Nagle on they wait
        // for the peer's delayed ACK (40 ms) and throttle every stream (docs/BENCHMARKS.md).
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_service(ingest)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });

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
    tracing::info!(%grpc_addr, %http_addr, store = %config.store.data_dir.display(), "meshmon aggregator serving");
    Ok(RunningServer { grpc_addr, http_addr, pipeline, grpc_stop, grpc_done, http })
}

impl RunningServer {
    /// Stops taking batches, makes every shard write what it collected, closes the servers.
    ///
    /// Agents keep their ingest streams open, so the gRPC server gets [`GRPC_DRAIN`] to finish
    /// the batches in hand; then it is cut off. A batch cut off is not acknowledged, so its agent
    /// sends it again (to this aggregator after a restart, or another): nothing is lost.
    pub async fn stop(mut self) {
        let _ = self.grpc_stop.send(());
        if tokio::time::timeout(GRPC_DRAIN, &mut self.grpc_done).await.is_err() {
            tracing::warn!(drain = ?GRPC_DRAIN, "gRPC clients still connected: closing their streams");
            self.grpc_done.abort();
        }
        match self.pipeline.router.send(Flush).await {
            Ok(Ok(())) => tracing::info!("pipeline flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "flush failed"),
            Err(e) => tracing::error!(error = %e, "router gone before flush"),
        }
        self.http.stop(true).await;
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

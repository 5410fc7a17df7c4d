//! The sender: streams queued batches to the aggregator until each one is acknowledged.
//!
//! Role: a tonic client of `meshmon.v1.Ingest/Push`. [`Sender::run`] takes batches from the
//! batcher's queue into a bounded in-flight window (`max_in_flight`) and sends them on one
//! bidirectional stream; every `BatchAck` settles its batch: ACCEPTED or DUPLICATE = delivered
//! (`sent`), REJECTED = counted as `rejected` and not retried. When the connection fails or the
//! stream ends, it reconnects with exponential backoff (`backoff.rs`) and re-sends **every
//! unacknowledged batch with the same sequence number** (the aggregator deduplicates). While no
//! connection is up it takes nothing from the queue, so a full queue pushes back on producers.
//! It finishes when the batcher has released the queue, the queue is drained and nothing is in
//! flight. Batches are shared, not copied, between the window and the stream, and their records
//! are written as the encoded bytes they already are (`wire.rs`). Touches only the network
//! connection to the aggregator.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use meshmon_proto::v1::{AckStatus, BatchAck};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::GrpcMethod;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;
use tracing::{debug, info};

use crate::backoff::Backoff;
use crate::connector::QuickAckConnector;
use crate::metrics::Metrics;
use crate::record::now_timestamp;
use crate::wire::{BatchCodec, OutgoingBatch, WireBatch};

/// The aggregator's `Ingest` service and its `Push` method.
pub const SERVICE: &str = "meshmon.v1.Ingest";
/// Path of `meshmon.v1.Ingest/Push`.
pub const PUSH_PATH: &str = "/meshmon.v1.Ingest/Push";

/// How long opening the `Push` call may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Aggregator URL (`http://host:port`).
    pub output: String,
    /// Unacknowledged batches at most.
    pub max_in_flight: usize,
    /// Reconnection delays.
    pub backoff: Backoff,
}

/// Why the sender could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The output URL is not usable.
    #[error("invalid aggregator URL {url:?}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Why one connection ended (the sender then reconnects).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("Push call failed: {0}")]
    Call(tonic::Status),
    #[error("Push call not answered within {0:?}")]
    CallTimeout(Duration),
    #[error("stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the aggregator ended the stream")]
    Ended,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Streams batches from the queue to the aggregator. Create with [`Sender::new`], then spawn
/// [`Sender::run`].
#[derive(Debug)]
pub struct Sender {
    endpoint: Endpoint,
    output: String,
    max_in_flight: usize,
    backoff: Backoff,
    rx: mpsc::Receiver<WireBatch>,
    in_flight: VecDeque<Arc<WireBatch>>,
    input_done: bool,
    metrics: Arc<Metrics>,
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

impl Sender {
    /// A sender draining `rx`.
    ///
    /// # Errors
    /// [`SenderError::BadUrl`] if `config.output` is not a valid URL.
    pub fn new(
        config: SenderConfig,
        rx: mpsc::Receiver<WireBatch>,
        metrics: Arc<Metrics>,
    ) -> Result<Sender, SenderError> {
        let endpoint = Endpoint::from_shared(config.output.clone())
            .map_err(|source| SenderError::BadUrl { url: config.output.clone(), source })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        Ok(Sender {
            endpoint,
            output: config.output,
            max_in_flight: config.max_in_flight.max(1),
            backoff: config.backoff,
            rx,
            in_flight: VecDeque::new(),
            input_done: false,
            metrics,
        })
    }

    fn finished(&self) -> bool {
        self.input_done && self.in_flight.is_empty()
    }

    /// Runs until the queue is released and drained and every batch is acknowledged.
    pub async fn run(mut self) {
        while !self.finished() {
            if let Err(e) = self.session().await {
                self.metrics.reconnect();
                let delay = self.backoff.next_delay();
                self.metrics.warn_limited(
                    "aggregator_connection",
                    &format!(
                        "aggregator {}: {e}; {} batches unacknowledged, retrying in {} ms",
                        self.output,
                        self.in_flight.len(),
                        delay.as_millis()
                    ),
                );
                tokio::time::sleep(delay).await;
            }
        }
        info!(output = %self.output, "sender finished: queue drained and every batch acknowledged");
    }

    /// One connection: re-send what is unacknowledged, then stream new batches and settle acks.
    /// Returns `Ok` only when the sender is finished.
    async fn session(&mut self) -> Result<(), SessionError> {
        let channel = self
            .endpoint
            .connect_with_connector(QuickAckConnector)
            .await
            .map_err(|e| SessionError::Connect(error_chain(&e)))?;
        let mut client = tonic::client::Grpc::new(channel);
        let (out_tx, out_rx) = mpsc::channel::<OutgoingBatch>(self.max_in_flight);
        let now = now_timestamp();
        for batch in &self.in_flight {
            out_tx
                .try_send(OutgoingBatch { batch: batch.clone(), sent_at: now })
                .map_err(|_| SessionError::Protocol("re-send buffer smaller than the in-flight window".into()))?;
        }
        if !self.in_flight.is_empty() {
            info!(batches = self.in_flight.len(), "re-sending unacknowledged batches with their sequence numbers");
        }
        // What the generated `IngestClient::push` does, with a codec that writes the records'
        // encoding as it is (`wire.rs`) instead of encoding `Record` structs.
        let call = async move {
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {}", error_chain(&e))))?;
            let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
            request.extensions_mut().insert(GrpcMethod::new(SERVICE, "Push"));
            client.streaming(request, PathAndQuery::from_static(PUSH_PATH), BatchCodec).await
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| SessionError::CallTimeout(CALL_TIMEOUT))?
            .map_err(SessionError::Call)?;
        let mut acks = response.into_inner();
        debug!(output = %self.output, "connected to the aggregator");
        loop {
            if self.finished() {
                return Ok(());
            }
            let can_take = !self.input_done && self.in_flight.len() < self.max_in_flight;
            tokio::select! {
                biased;
                msg = acks.message() => match msg {
                    Ok(Some(ack)) => self.on_ack(ack)?,
                    Ok(None) => return Err(SessionError::Ended),
                    Err(status) => return Err(SessionError::Stream(status)),
                },
                next = self.rx.recv(), if can_take => match next {
                    Some(batch) => {
                        let n = batch.records.len();
                        self.metrics.queue(n, false);
                        self.metrics.in_flight(n, true);
                        let batch = Arc::new(batch);
                        self.in_flight.push_back(batch.clone());
                        // The window bounds the channel, so only a finished call refuses.
                        out_tx
                            .try_send(OutgoingBatch { batch, sent_at: now_timestamp() })
                            .map_err(|_| SessionError::Ended)?;
                    }
                    None => self.input_done = true,
                },
            }
        }
    }

    fn on_ack(&mut self, ack: BatchAck) -> Result<(), SessionError> {
        let Some(pos) = self.in_flight.iter().position(|b| b.sequence == ack.sequence) else {
            self.metrics.warn_limited(
                "unknown_ack",
                &format!("ignoring an ack for batch {} that is not in flight", ack.sequence),
            );
            return Ok(());
        };
        let status = AckStatus::try_from(ack.status).unwrap_or(AckStatus::Unspecified);
        if status == AckStatus::Unspecified {
            return Err(SessionError::Protocol(format!(
                "ack for batch {} has no valid status ({})",
                ack.sequence, ack.status
            )));
        }
        let Some(batch) = self.in_flight.remove(pos) else { return Ok(()) };
        let n = batch.records.len();
        self.metrics.in_flight(n, false);
        match status {
            AckStatus::Duplicate => {
                debug!(sequence = batch.sequence, "batch acknowledged as duplicate (already stored)");
                self.metrics.delivered(n, 0, true);
            }
            AckStatus::Rejected => {
                self.metrics.rejected(n);
                self.metrics.warn_limited(
                    "rejected",
                    &format!(
                        "aggregator rejected batch {} ({n} records), not retrying: {}",
                        batch.sequence, ack.message
                    ),
                );
            }
            _ => {
                if ack.invalid > 0 {
                    self.metrics.warn_limited(
                        "aggregator_invalid",
                        &format!(
                            "aggregator counted {} of {n} records of batch {} invalid: {}",
                            ack.invalid, batch.sequence, ack.message
                        ),
                    );
                }
                self.metrics.delivered(n, ack.invalid, false);
            }
        }
        self.backoff.reset();
        Ok(())
    }
}

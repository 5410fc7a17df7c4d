//! gRPC push API: the agent serves `meshmon.v1.Ingest/Push` to applications.
//!
//! Role: an application pushes `RecordBatch`es to the agent exactly as the agent pushes to the
//! aggregator. For each received batch the agent checks the records, re-batches them under its
//! own agent id and sequence numbers (through `ingress.rs`, **waiting** while the queue is full —
//! that is the backpressure: the ack comes late and HTTP/2 flow control slows the pusher), and
//! then answers one `BatchAck`: ACCEPTED with the counts of accepted and invalid records (the
//! first invalid one explained in `message`), or DUPLICATE when the pusher re-sends a
//! (agent id, sequence) already enqueued (`dedup.rs`). On shutdown open streams end with
//! `UNAVAILABLE`. Touches only its listening socket.

use std::sync::{Arc, Mutex, PoisonError};

use meshmon_proto::v1::ingest_server::{Ingest, IngestServer};
use meshmon_proto::v1::{AckStatus, BatchAck, RecordBatch};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::dedup::PushDeduper;
use super::shutting_down;
use crate::batcher::SubmitError;
use crate::ingress::Ingress;
use crate::metrics::PushApi;

/// Largest batch message accepted from a pusher.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The `Ingest` service the agent serves.
#[derive(Debug, Clone)]
pub struct IngestService {
    ingress: Arc<Ingress>,
    dedup: Arc<Mutex<PushDeduper>>,
    shutdown: watch::Receiver<bool>,
}

impl IngestService {
    /// A service feeding `ingress`; streams end when `shutdown` turns true.
    pub fn new(ingress: Arc<Ingress>, shutdown: watch::Receiver<bool>) -> IngestService {
        IngestService { ingress, dedup: Arc::new(Mutex::new(PushDeduper::default())), shutdown }
    }

    fn unavailable() -> Status {
        Status::unavailable("meshmon-agent is shutting down; re-send unacknowledged batches to another agent or later")
    }

    async fn serve_stream(self, mut inbound: Streaming<RecordBatch>, tx: mpsc::Sender<Result<BatchAck, Status>>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let next = tokio::select! {
                m = inbound.message() => m,
                () = shutting_down(&mut shutdown) => {
                    let _ = tx.send(Err(Self::unavailable())).await;
                    return;
                }
            };
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(status) => {
                    debug!(%status, "push stream from application failed");
                    return;
                }
            };
            let ack = tokio::select! {
                a = self.handle(batch) => a,
                () = shutting_down(&mut shutdown) => Err(Self::unavailable()),
            };
            let end = ack.is_err();
            if tx.send(ack).await.is_err() || end {
                return;
            }
        }
    }

    async fn handle(&self, batch: RecordBatch) -> Result<BatchAck, Status> {
        let RecordBatch { agent_id, sequence, records, .. } = batch;
        let ack = |status: AckStatus, accepted: usize, invalid: usize, message: String| BatchAck {
            agent_id: agent_id.clone(),
            sequence,
            status: status as i32,
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            invalid: u32::try_from(invalid).unwrap_or(u32::MAX),
            message,
        };
        if self.dedup.lock().unwrap_or_else(PoisonError::into_inner).seen(&agent_id, sequence) {
            return Ok(ack(AckStatus::Duplicate, 0, 0, "batch already received by this agent".into()));
        }
        let (valid, invalid) = self.ingress.prepare(records);
        let accepted = valid.len();
        match self.ingress.enqueue(PushApi::Grpc, valid).await {
            Ok(_) => {}
            Err(SubmitError::Closed) => return Err(Self::unavailable()),
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        self.dedup.lock().unwrap_or_else(PoisonError::into_inner).mark(&agent_id, sequence);
        let message = invalid.first().map(|(i, e)| format!("record {i}: {e}")).unwrap_or_default();
        Ok(ack(AckStatus::Accepted, accepted, invalid.len(), message))
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type PushStream = ReceiverStream<Result<BatchAck, Status>>;

    async fn push(&self, request: Request<Streaming<RecordBatch>>) -> Result<Response<Self::PushStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(Self::unavailable());
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.clone().serve_stream(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves `service` on `listener` until `shutdown` turns true.
///
/// # Errors
/// A transport error of the server.
pub async fn serve(
    listener: TcpListener,
    service: IngestService,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let svc = IngestServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        .serve_with_incoming_shutdown(
            svc,
            TcpIncoming::from(listener),
            async move { shutting_down(&mut shutdown).await },
        )
        .await
}

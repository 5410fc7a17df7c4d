//! gRPC push API: the agent serves `meshmon.v1.Ingest/Push` to applications.
//!
//! Role: an application pushes `RecordBatch`es to the agent exactly as the agent pushes to the
//! aggregator. For each received batch the agent checks the records, re-batches them under its
//! own agent id and sequence numbers (through `ingress.rs`, **waiting** while the queue is full —
//! that is the backpressure: the ack comes late and HTTP/2 flow control slows the pusher), and
//! then answers one `BatchAck`: ACCEPTED with the counts of accepted and invalid records (the
//! first invalid one explained in `message`), or DUPLICATE when the pusher re-sends a
//! (agent id, sequence) already enqueued (`dedup.rs`). On shutdown open streams end with
//! `UNAVAILABLE`.
//!
//! The service is the generated `IngestServer` written out by hand with one difference: its
//! codec (`wire.rs`) reads each batch's records without decoding them into `Record` structs —
//! they stay slices of the received message, are checked and stamped on their encoding, and are
//! forwarded as they are. Touches only its listening socket.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use meshmon_proto::v1::{AckStatus, BatchAck};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{NamedService, StreamingService};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::dedup::PushDeduper;
use super::shutting_down;
use crate::batcher::SubmitError;
use crate::ingress::Ingress;
use crate::metrics::PushApi;
use crate::sender::{PUSH_PATH, SERVICE};
use crate::wire::{self, PushCodec, PushedBatch};

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

    async fn serve_stream(self, mut inbound: Streaming<PushedBatch>, tx: mpsc::Sender<Result<BatchAck, Status>>) {
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

    async fn handle(&self, batch: PushedBatch) -> Result<BatchAck, Status> {
        let PushedBatch { agent_id, sequence, records, wire_len } = batch;
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
        let (mut valid, invalid) = self.ingress.prepare_pushed(records);
        wire::compact(&mut valid, wire_len);
        let accepted = valid.len();
        match self.ingress.enqueue_wire(PushApi::Grpc, valid).await {
            Ok(_) => {}
            Err(SubmitError::Closed) => return Err(Self::unavailable()),
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        self.dedup.lock().unwrap_or_else(PoisonError::into_inner).mark(&agent_id, sequence);
        let message = invalid.first().map(|(i, e)| format!("record {i}: {e}")).unwrap_or_default();
        Ok(ack(AckStatus::Accepted, accepted, invalid.len(), message))
    }
}

impl IngestService {
    /// Opens one push stream (the `Ingest/Push` handler).
    fn open(
        &self,
        request: Request<Streaming<PushedBatch>>,
    ) -> Result<Response<ReceiverStream<Result<BatchAck, Status>>>, Status> {
        if *self.shutdown.borrow() {
            return Err(Self::unavailable());
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.clone().serve_stream(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl StreamingService<PushedBatch> for IngestService {
    type Response = BatchAck;
    type ResponseStream = ReceiverStream<Result<BatchAck, Status>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<PushedBatch>>) -> Self::Future {
        std::future::ready(self.open(request))
    }
}

/// The `meshmon.v1.Ingest` gRPC service around an [`IngestService`] (what the generated
/// `IngestServer` does, with [`PushCodec`]).
#[derive(Debug, Clone)]
pub struct IngestServer {
    service: IngestService,
    max_decoding_message_size: usize,
}

impl IngestServer {
    /// Serves `service`, accepting messages up to `max_decoding_message_size` bytes.
    pub fn new(service: IngestService, max_decoding_message_size: usize) -> IngestServer {
        IngestServer { service, max_decoding_message_size }
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for IngestServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PUSH_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            });
        }
        let service = self.service.clone();
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PushCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.streaming(service, req).await)
        })
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
    let svc = IngestServer::new(service, MAX_MESSAGE_BYTES);
    Server::builder()
        .serve_with_incoming_shutdown(svc, TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutting_down(&mut shutdown).await
        })
        .await
}

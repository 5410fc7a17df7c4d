//! The gRPC `meshmon.v1.Ingest` service: agents push batches, each is acknowledged.
//!
//! Role: decodes every `RecordBatch` of a client stream, stamps its processing time, hands it
//! to the router and answers one `BatchAck` per batch, in order — `ACCEPTED` (with admitted and
//! invalid counts), `DUPLICATE` for a re-sent batch, or `REJECTED` when the pipeline is
//! stopping (the agent keeps and re-sends it). The router's reply is awaited before the next
//! batch is read, so a busy pipeline slows its clients down. The connection is the watermark
//! input: an agent that stops sending goes idle. Touches the router's mailbox only.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::Addr;
use futures_util::Stream;
use meshmon_proto::v1::ingest_server::Ingest;
use meshmon_proto::v1::{AckStatus, BatchAck, RecordBatch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::clock::now_nanos;
use super::messages::IngestBatch;
use super::metrics::RuntimeMetrics;
use super::router::RouterActor;
use crate::wire::decode_batch;

/// The ingest service.
#[derive(Debug, Clone)]
pub struct IngestService {
    router: Addr<RouterActor>,
    metrics: Arc<RuntimeMetrics>,
}

impl IngestService {
    /// A service feeding `router`.
    pub fn new(router: Addr<RouterActor>, metrics: Arc<RuntimeMetrics>) -> IngestService {
        IngestService { router, metrics }
    }

    /// Handles one batch and says how it went.
    pub async fn ingest(&self, batch: RecordBatch) -> BatchAck {
        let decoded = Arc::new(decode_batch(batch));
        let (agent_id, sequence) = (decoded.agent.clone(), decoded.sequence);
        let msg = IngestBatch { input: format!("agent:{agent_id}"), batch: decoded, now: now_nanos() };
        self.metrics.router_mailbox.fetch_add(1, Ordering::Relaxed);
        let (status, accepted, invalid, message) = match self.router.send(msg).await {
            Ok(Ok(o)) if o.duplicate => (AckStatus::Duplicate, 0, 0, String::new()),
            Ok(Ok(o)) => (AckStatus::Accepted, o.admitted, o.invalid, String::new()),
            Ok(Err(e)) => (AckStatus::Rejected, 0, 0, e.to_string()),
            Err(e) => (AckStatus::Rejected, 0, 0, format!("pipeline stopping: {e}")),
        };
        BatchAck { agent_id, sequence, status: status as i32, accepted, invalid, message }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type PushStream = Pin<Box<dyn Stream<Item = Result<BatchAck, Status>> + Send + 'static>>;

    async fn push(&self, request: Request<Streaming<RecordBatch>>) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "ingest stream ended with an error");
                        break;
                    }
                };
                let ack = service.ingest(batch).await;
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

//! Push APIs through which applications hand records to the agent.
//!
//! Role: groups the two servers — gRPC `meshmon.v1.Ingest/Push` (`grpc.rs`, with per-pusher
//! batch deduplication in `dedup.rs`) and HTTP `POST /v1/records` with JSON lines (`http.rs`,
//! parsing in `jsonl.rs`; the same server answers `GET /metrics`) — and the shutdown signal they
//! share. Both listen on loopback by default. Touches only their sockets.

pub mod dedup;
pub mod grpc;
pub mod http;
pub mod jsonl;

use tokio::sync::watch;

/// Resolves once shutdown has been requested (or the agent handle that could request it is gone).
pub async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

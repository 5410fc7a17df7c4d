//! `StoreActor`: applies store transactions on its own thread.
//!
//! Role: the only writer of the embedded store. Runs on a dedicated arbiter, so blocking redb
//! commits never stall the shards' threads; shards await each `Persist`, which is how a slow
//! store slows ingest down instead of losing data. Also enforces retention periodically.
//! Touches the store and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler};

use super::clock::now_nanos;
use super::messages::Persist;
use super::metrics::RuntimeMetrics;
use crate::store::{EmbeddedStore, StoreError};

/// Writes to the embedded store.
#[derive(Debug)]
pub struct StoreActor {
    store: Arc<EmbeddedStore>,
    metrics: Arc<RuntimeMetrics>,
    retention_every: Duration,
}

impl StoreActor {
    /// An actor writing to `store`, enforcing retention every `retention_every`.
    pub fn new(store: Arc<EmbeddedStore>, metrics: Arc<RuntimeMetrics>, retention_every: Duration) -> StoreActor {
        StoreActor { store, metrics, retention_every }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(self.retention_every, |actor, _| match actor.store.enforce_retention(now_nanos()) {
            Ok(report) => tracing::debug!(?report, "retention enforced"),
            Err(e) => tracing::error!(error = %e, "retention failed"),
        });
    }
}

impl Handler<Persist> for StoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, Persist(batch): Persist, _: &mut Context<Self>) -> Self::Result {
        self.metrics.store_mailbox.fetch_sub(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.store.write(&batch);
        self.metrics.record_store_write(batch.len(), started.elapsed().as_secs_f64(), result.is_ok());
        if let Err(e) = &result {
            tracing::error!(error = %e, items = batch.len(), "store write failed");
        }
        result
    }
}

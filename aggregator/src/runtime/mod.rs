//! The serving runtime: the actor graph that drives the window engine.
//!
//! Role: `Pipeline::start` builds, inside a running actix system, gRPC ingest → `RouterActor`
//! (gate, dedup, watermark) → N `ShardActor`s (one per core by default, each on its own
//! thread, series sharded by metric) → `StoreActor` (embedded store, its own thread; raw
//! records to the HBase raw store instead when one is given, `store.kind = "hbase"`).
//! Watermarks and ticks travel the same mailboxes as data. Mailboxes are bounded and every hop
//! awaits the next, so a slow store slows ingest rather than losing data. A durable output
//! that fails for good raises the pipeline's [`Failure`], which stops `serve` (fail-stop).
//! Touches the store file, the listening socket and the wall clock (here only).

pub mod clock;
pub mod ingest;
pub mod messages;
pub mod metrics;
pub mod query;
pub mod router;
pub mod shard;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};

use crate::engine::snapshot::{EngineSnapshot, RestoreError, split_shards};
use crate::engine::{ConfigError, EngineConfig, IngestGate, Nanos, ShardEngine};
use crate::store::hbase::HbaseRaw;
use crate::store::{EmbeddedStore, RawStore, StoreConfig, StoreError};
use metrics::RuntimeMetrics;
use router::RouterActor;
use shard::ShardActor;
pub use store::DurableOutputs;
use store::StoreActor;

/// How to run the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The window engine.
    pub engine: EngineConfig,
    /// Window shards (threads); 0 means one per core.
    pub shards: usize,
    /// The embedded store file.
    pub store_path: PathBuf,
    /// The embedded store layout and retention.
    pub store: StoreConfig,
    /// How often idle inputs are re-checked (processing time).
    pub tick_every: Duration,
    /// A shard writes what it collected at least this often.
    pub flush_every: Duration,
    /// How often retention is enforced.
    pub retention_every: Duration,
}

/// The pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine configuration is not usable.
    #[error("engine configuration: {0}")]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The checkpointed state does not fit this configuration.
    #[error("restoring the checkpoint: {0}")]
    Restore(#[from] RestoreError),
}

/// How a pipeline starts beyond its configuration (Kafka mode).
#[derive(Debug, Default)]
pub struct StartOptions {
    /// Engine state to start from (a checkpoint) instead of an empty engine.
    pub restore: Option<EngineSnapshot>,
    /// Kafka output and the checkpoint file.
    pub outputs: DurableOutputs,
    /// Processing time comes from the source (ticks sent by it), not the router's wall clock.
    pub external_ticks: bool,
    /// Keep raw records in HBase instead of the embedded store (`store.kind = "hbase"`).
    pub hbase: Option<HbaseRaw>,
}

/// Why the pipeline can no longer go on, once something failed for good (an HBase raw-row
/// write after its retries). Cheap to clone; every clone sees the first failure.
#[derive(Debug, Clone)]
pub struct Failure(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for Failure {
    fn default() -> Self {
        Failure(Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl Failure {
    /// Records the failure (the first one wins) and wakes every [`wait`](Self::wait).
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        self.0.send_if_modified(|v| {
            if v.is_some() {
                return false;
            }
            *v = Some(why);
            true
        });
    }

    /// The failure, if one happened.
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Resolves with the failure once one happens.
    pub async fn wait(&self) -> String {
        let mut rx = self.0.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_default(),
            // The sender lives in `self`: it cannot be dropped while we wait.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A running pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The router (send it `IngestBatch`es).
    pub router: Addr<RouterActor>,
    /// The store, for queries (reads run concurrently with the store actor's writes).
    pub store: Arc<EmbeddedStore>,
    /// Where raw records are kept and drilled down into (the embedded store, or HBase).
    pub raw: RawStore,
    /// Raised when a durable output failed for good; `serve` then stops.
    pub failure: Failure,
    /// Self-metrics.
    pub metrics: Arc<RuntimeMetrics>,
    /// The configuration it runs with.
    pub config: Arc<PipelineConfig>,
}

impl Pipeline {
    /// Opens the store and starts the actors with an empty engine. Must run inside an actix system.
    pub fn start(config: PipelineConfig) -> Result<Pipeline, StartError> {
        Pipeline::start_with(config, StartOptions::default())
    }

    /// [`start`](Self::start) with a restored engine, Kafka outputs and checkpoints as `options` say.
    pub fn start_with(config: PipelineConfig, options: StartOptions) -> Result<Pipeline, StartError> {
        config.engine.validate()?;
        let n = if config.shards == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.shards
        };
        let store = Arc::new(EmbeddedStore::open(&config.store_path, config.store)?);
        let metrics = Arc::new(RuntimeMetrics::new(n));
        let per_shard = config.engine.limits.max_series.div_ceil(n);
        let (gate, engines) = match options.restore {
            None => {
                (IngestGate::new(&config.engine), (0..n).map(|_| ShardEngine::new(&config.engine, per_shard)).collect())
            }
            Some(snapshot) => {
                let gate = IngestGate::restore(&config.engine, snapshot.gate, clock::now_nanos())?;
                // The limit is per shard; re-sharding may spread metrics unevenly, so a shard
                // may restore more than its share (new series are still refused beyond it).
                let engines = split_shards(snapshot.shards, n)
                    .into_iter()
                    .map(|parts| {
                        let held: usize = parts.iter().map(|p| p.series.len()).sum();
                        ShardEngine::restore(&config.engine, per_shard.max(held), parts)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (gate, engines)
            }
        };
        let failure = Failure::default();
        let raw = match &options.hbase {
            Some(hbase) => RawStore::Hbase { hbase: hbase.clone(), listings: store.clone() },
            None => RawStore::Embedded(store.clone()),
        };
        let store_actor = {
            let (store, metrics, every, outputs) =
                (store.clone(), metrics.clone(), config.retention_every, options.outputs);
            let (hbase, failure) = (options.hbase, failure.clone());
            StoreActor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                StoreActor::new(store, metrics, every, outputs).with_hbase(hbase, failure)
            })
        };
        let flush_every = Nanos::try_from(config.flush_every.as_nanos()).unwrap_or(Nanos::MAX);
        let shards = engines
            .into_iter()
            .enumerate()
            .map(|(i, engine)| {
                let (spec, store, metrics) = (config.engine.clone(), store_actor.clone(), metrics.clone());
                ShardActor::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                    ShardActor::new(i, &spec, engine, store, metrics, flush_every)
                })
            })
            .collect();
        let ticks = (!options.external_ticks).then_some(config.tick_every);
        let router = RouterActor::new(&config.engine, gate, shards, store_actor, metrics.clone(), ticks).start();
        Ok(Pipeline { router, store, raw, failure, metrics, config: Arc::new(config) })
    }

    /// The gRPC ingest service of this pipeline.
    pub fn ingest_service(&self) -> ingest::IngestService {
        ingest::IngestService::new(self.router.clone(), self.metrics.clone())
    }
}

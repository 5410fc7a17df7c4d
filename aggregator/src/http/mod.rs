//! The aggregator's HTTP layer: the JSON query API, `/healthz`, `/metrics` and the built-in page.
//!
//! Role: [`configure`] registers every route on an actix-web `ServiceConfig`; the handlers read
//! the shared [`HttpState`] (the embedded store, the configured raw-record store — the
//! embedded one or HBase — the runtime's self-metrics and the engine configuration), which the
//! caller registers as `web::Data<HttpState>`:
//!
//! ```no_run
//! # use actix_web::{App, web};
//! # use meshmon_aggregator::http::{HttpState, configure};
//! # fn app(state: HttpState) {
//! let app = App::new().app_data(web::Data::new(state)).configure(configure);
//! # }
//! ```
//!
//! Routes (all times are integer epoch milliseconds, in and out):
//!
//! | route | what |
//! |---|---|
//! | `GET /` , `/app.js`, `/style.css` | the built-in page (`page.rs`), works offline |
//! | `GET /healthz` | `{"status":"ok","watermark_ms":…,"series":…}` |
//! | `GET /metrics` | Prometheus text ([`RuntimeMetrics::render`], plus the HBase store's metrics when it is the raw store) |
//! | `GET /api/config` | window spec, lateness, out-of-orderness |
//! | `GET /api/metrics` | metric names |
//! | `GET /api/dimensions?metric=` | dimension values of a metric, with their key text |
//! | `GET /api/aggregates?metric=&dimension=&from=&to=` | stored points of one series |
//! | `GET /api/raw?metric=&dimension=&start=[&end=][&page_size=][&page_token=]` | raw records behind a point (from the configured raw store) |
//! | `GET /api/dead_letters?from=&to=&limit=` | invalid and late records, with reasons |
//!
//! Dimensions are named by the key text of [`dimension_key`]. Every bad request is answered
//! with a 4xx status and `{"error": "…"}` (`error.rs`); nothing a request carries can panic.
//! Embedded-store reads run on actix's blocking pool, HBase reads on the HBase store's reader
//! connections. Touches the stores (reads only), the metrics (reads only) and the wall clock
//! (default time ranges); nothing else.

mod api;
pub mod dimension_key;
mod error;
mod json;
mod page;
pub mod params;

use std::sync::Arc;

use actix_web::web;

use crate::engine::EngineConfig;
use crate::runtime::Pipeline;
use crate::runtime::metrics::RuntimeMetrics;
use crate::store::{EmbeddedStore, RawStore};

pub use error::ApiError;

/// Most aggregate points one `/api/aggregates` answer holds; larger ranges are refused.
pub const MAX_POINTS: usize = 10_000;
/// Default page size of `/api/raw`.
pub const DEFAULT_RAW_PAGE_SIZE: usize = 500;
/// Largest page size `/api/raw` accepts.
pub const MAX_RAW_PAGE_SIZE: usize = 10_000;
/// Default `limit` of `/api/dead_letters`.
pub const DEFAULT_DEAD_LETTER_LIMIT: usize = 100;
/// Largest `limit` `/api/dead_letters` accepts.
pub const MAX_DEAD_LETTER_LIMIT: usize = 10_000;
/// Default span of a time range (one hour, in milliseconds).
pub const DEFAULT_SPAN_MS: i64 = 3_600_000;

/// What the handlers share. Register it with `web::Data::new(state)`.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The store queried by the API (points, listings, dead letters).
    pub store: Arc<EmbeddedStore>,
    /// Where raw records are drilled down into (`/api/raw`).
    pub raw: RawStore,
    /// Self-metrics (for `/metrics` and `/healthz`).
    pub metrics: Arc<RuntimeMetrics>,
    /// The engine configuration the stored points were computed with (window spec, lateness).
    pub engine: EngineConfig,
}

impl HttpState {
    /// State over an explicit store (also for raw records), metrics and engine configuration.
    pub fn new(store: Arc<EmbeddedStore>, metrics: Arc<RuntimeMetrics>, engine: EngineConfig) -> HttpState {
        let raw = RawStore::Embedded(store.clone());
        HttpState { store, raw, metrics, engine }
    }

    /// This state reading raw records from `raw`.
    pub fn with_raw_store(mut self, raw: RawStore) -> HttpState {
        self.raw = raw;
        self
    }

    /// The state of a running pipeline (its configured raw store included).
    pub fn from_pipeline(pipeline: &Pipeline) -> HttpState {
        HttpState::new(pipeline.store.clone(), pipeline.metrics.clone(), pipeline.config.engine.clone())
            .with_raw_store(pipeline.raw.clone())
    }
}

/// Registers every route of the HTTP layer (see the module documentation).
pub fn configure(cfg: &mut web::ServiceConfig) {
    page::configure(cfg);
    api::configure(cfg);
}

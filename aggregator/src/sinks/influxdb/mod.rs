//! InfluxDB output of window aggregates and self-metrics.
//!
//! Role: [`line_protocol`] (escaping, one line), [`influxql`] (string literals, the `DELETE`
//! of a retracted point), [`schema`] (the `meshmon_aggregate` and `meshmon_self`
//! measurements, documented in `docs/INFLUXDB.md`), [`writer`] (batching, gzip, deletions in
//! order with the writes, retries, dead letters, backpressure and a bounded stop on its own
//! thread), [`config`] (the `[influxdb]` section) and [`metrics`]. The store actor feeds the
//! writer after each store write; Kafka checkpoints flush it; a stopping server bounds it.
//! Touches InfluxDB over HTTP and `data_dir/influxdb-rejected.lp`.

pub mod config;
pub mod influxql;
pub mod line_protocol;
pub mod metrics;
pub mod schema;
pub mod writer;

pub use config::{InfluxApi, InfluxDbSection};
pub use metrics::InfluxMetrics;
pub use writer::{InfluxError, InfluxWriter};

//! InfluxDB output of window aggregates and self-metrics.
//!
//! Role: [`line_protocol`] (escaping, one line), [`schema`] (the `meshmon_aggregate` and
//! `meshmon_self` measurements, documented in `docs/INFLUXDB.md`), [`writer`] (batching,
//! gzip, retries, dead letters, backpressure on its own thread), [`config`] (the `[influxdb]`
//! section) and [`metrics`]. The store actor feeds the writer after each store write; Kafka
//! checkpoints flush it. Touches InfluxDB over HTTP and `data_dir/influxdb-rejected.lp`.

pub mod config;
pub mod line_protocol;
pub mod metrics;
pub mod schema;
pub mod writer;

pub use config::{InfluxApi, InfluxDbSection};
pub use metrics::InfluxMetrics;
pub use writer::{InfluxError, InfluxWriter};

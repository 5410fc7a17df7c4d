//! Sinks: where window aggregates go besides the embedded store.
//!
//! Role: groups the external writers the store actor hands aggregate changes to after each
//! store write. [`influxdb`] writes them (and the pipeline's self-metrics) to InfluxDB over
//! HTTP. Touches only what each sink says.

pub mod influxdb;

//! meshmon wire schema and its exact conversions.
//!
//! This crate is the single source of truth for what travels between meshmon
//! agents, the aggregator and query clients:
//!
//! * [`v1`] holds the prost messages and tonic client/server stubs generated
//!   at build time from `proto/meshmon/v1/meshmon.proto` (package
//!   [`PACKAGE`]) — compiled by the pure-Rust `protox`, so no `protoc` is
//!   needed;
//! * [`convert`] holds the exact, checked conversions between wire types and
//!   plain integers: timestamps and durations to/from `i64` nanoseconds,
//!   [`v1::Decimal`] to/from `i128` nano units and decimal text.
//!
//! It performs no I/O and keeps no state; every conversion of untrusted input
//! returns a `Result` instead of panicking.

pub mod convert;

/// Protobuf package of the schema (`package meshmon.v1;`).
pub const PACKAGE: &str = "meshmon.v1";

/// Generated code for protobuf package `meshmon.v1`: messages, enums, and the
/// `ingest_client`, `ingest_server`, `query_client`, `query_server` modules.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    missing_docs,
    unreachable_pub
)]
pub mod v1 {
    tonic::include_proto!("meshmon.v1");
}

pub use convert::{
    DecimalError, TimeError, duration_to_nanos, nanos_to_duration, nanos_to_timestamp, timestamp_to_nanos,
};
/// The protobuf runtime the generated code uses (so dependents encode/decode with the same one).
pub use prost;
pub use prost_types::{Duration, Timestamp};

//! meshmon aggregator library.
//!
//! Role: turns metric records into exact per-window statistics. [`engine`] is the pure
//! event-time core (no I/O, no actors, no wall clock); the actor topology, sources and
//! sinks that drive it are built on top of it in later modules.

pub mod batch_mode;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod http;
pub mod kafka;
pub mod rfc3339;
pub mod runtime;
pub mod server;
pub mod sinks;
pub mod source;
pub mod store;
pub mod synthetic;
pub mod wire;

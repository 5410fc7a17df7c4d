//! meshmon host agent.
//!
//! Role: collects metric records on one host (push API, plugins) and sends them as
//! `meshmon.v1.RecordBatch`es. The collection pipeline is built in issue 3; for now
//! the crate holds only what the workspace layout needs and links the wire schema.

/// The wire-schema package this agent speaks.
pub const WIRE_PACKAGE: &str = meshmon_proto::PACKAGE;

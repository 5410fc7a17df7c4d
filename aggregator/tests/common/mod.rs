//! Test support shared by the aggregator's integration tests. Touches nothing.

pub mod stream;

//! The Kafka output: batches produced to a Kafka topic, with a disk spool while the brokers are
//! away.
//!
//! `config.rs`: the `[kafka]` settings and the librdkafka producer configuration built from
//! them. `producer.rs`: the sender that takes batches from the batcher's queue and produces
//! them (key = agent id, value = the encoded `meshmon.v1.RecordBatch`), settles them on the
//! broker's delivery reports and moves them through the disk spool (`crate::spool`) while the
//! broker is unreachable.

pub mod config;
pub mod producer;

//! `OutputProducer`: everything the aggregator writes to Kafka — aggregate updates and
//! dead-lettered input messages.
//!
//! Role: one idempotent librdkafka producer (its own poll thread) shared by the store actor
//! (aggregate updates after each store write) and the source (input messages that are not a
//! `RecordBatch`, with headers saying where they came from and why). Sends never drop: a full
//! local queue is waited out. Delivery reports are counted; [`flush`](OutputProducer::flush),
//! called by every checkpoint, waits for all outstanding deliveries and fails if any delivery
//! failed since the last flush — so a checkpoint (and the offsets in it) never gets ahead of
//! output that did not reach the broker. Touches the Kafka connection only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::aggregate_update::output_message;
use super::config::{KafkaConfigError, KafkaSection};
use super::metrics::KafkaMetrics;
use crate::store::AggregateChange;

/// Output could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The producer could not be created.
    #[error(transparent)]
    Config(#[from] KafkaConfigError),
    /// librdkafka refused a message or the flush timed out.
    #[error("kafka output: {0}")]
    Kafka(#[from] KafkaError),
    /// Deliveries failed since the last flush (the broker never acknowledged them).
    #[error("{0} output message(s) were not delivered (see the log); the checkpoint is not written")]
    Undelivered(u64),
}

/// Counts delivery reports.
#[derive(Debug)]
pub struct DeliveryCounter {
    metrics: Arc<KafkaMetrics>,
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.metrics.output_delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.output_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "kafka output message not delivered");
            }
        }
    }
}

/// Where a dead-lettered input message came from.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterOrigin<'a> {
    /// Input topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it was dead-lettered.
    pub reason: &'a str,
}

/// The aggregator's Kafka producer.
pub struct OutputProducer {
    producer: ThreadedProducer<DeliveryCounter>,
    output_topic: Option<String>,
    dead_letter_topic: String,
    metrics: Arc<KafkaMetrics>,
    failed_seen: AtomicU64,
}

impl std::fmt::Debug for OutputProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputProducer")
            .field("output_topic", &self.output_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl OutputProducer {
    /// A producer for the topics of `config`.
    pub fn new(config: &KafkaSection, metrics: Arc<KafkaMetrics>) -> Result<OutputProducer, OutputError> {
        let context = DeliveryCounter { metrics: metrics.clone(), failed: AtomicU64::new(0) };
        let producer = config.producer_config()?.create_with_context(context)?;
        Ok(OutputProducer {
            producer,
            output_topic: (!config.output_topic.is_empty()).then(|| config.output_topic.clone()),
            dead_letter_topic: config.dead_letter_topic.clone(),
            metrics,
            failed_seen: AtomicU64::new(0),
        })
    }

    /// Whether aggregate updates are produced.
    pub fn has_output_topic(&self) -> bool {
        self.output_topic.is_some()
    }

    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], ()>) -> Result<(), OutputError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue drains as the broker acknowledges; the poll thread serves
                    // delivery reports meanwhile. Waiting here is the backpressure.
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Queues the updates of `changes` for the output topic (no-op without one).
    pub fn send_aggregates(&self, changes: &[AggregateChange]) -> Result<(), OutputError> {
        let Some(topic) = &self.output_topic else { return Ok(()) };
        for change in changes {
            let m = output_message(change);
            let mut record = BaseRecord::to(topic.as_str()).key(m.key.as_slice());
            if let Some(v) = &m.value {
                record = record.payload(v.as_slice());
            }
            self.send(record)?;
            self.metrics.aggregates_out.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queues an undecodable input message for the dead-letter topic, unchanged, with headers
    /// `meshmon.source` (`topic/partition/offset`) and `meshmon.reason`.
    pub fn send_dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        origin: DeadLetterOrigin<'_>,
    ) -> Result<(), OutputError> {
        let source = format!("{}/{}/{}", origin.topic, origin.partition, origin.offset);
        let headers = OwnedHeaders::new()
            .insert(Header { key: "meshmon.source", value: Some(source.as_bytes()) })
            .insert(Header { key: "meshmon.reason", value: Some(origin.reason.as_bytes()) });
        let mut record = BaseRecord::to(self.dead_letter_topic.as_str()).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.send(record)?;
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits up to `timeout` until every queued message is delivered; fails if any delivery
    /// failed since the previous flush.
    pub fn flush(&self, timeout: Duration) -> Result<(), OutputError> {
        self.producer.flush(timeout)?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        let seen = self.failed_seen.swap(failed, Ordering::Relaxed);
        if failed > seen {
            return Err(OutputError::Undelivered(failed - seen));
        }
        Ok(())
    }
}

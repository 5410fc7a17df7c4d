//! `SourceContext`: the Kafka consumer's callbacks — rebalances and statistics.
//!
//! Role: on assignment, starts each partition at its checkpointed offset (or per
//! `start_from`) and tells the merge; before partitions are revoked, takes a checkpoint (so the
//! offsets committed match the state that counted them) and drops their buffers; from
//! librdkafka's periodic statistics, notes each partition's high watermark for the lag metric.
//! Callbacks run on the source thread inside `poll`, so they share the source's state through
//! [`SourceCore`]. Touches the consumer's assignment and the source state.

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::config::StartFrom;
use super::source::SourceCore;

/// The consumer context of the Kafka source.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub(crate) core: Arc<SourceCore>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.core.topic) else { return };
        for (&p, stats) in &topic.partitions {
            if p >= 0 && stats.hi_offset >= 0 {
                self.core.note_high_watermark(p, stats.hi_offset);
            }
        }
    }
}

impl SourceContext {
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) -> KafkaResult<()> {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for &p in &parts {
            let offset = match self.core.checkpointed_offset(p) {
                Some(o) => Offset::Offset(o),
                None => match self.core.start_from {
                    StartFrom::Earliest => Offset::Beginning,
                    StartFrom::Latest => Offset::End,
                },
            };
            tpl.set_partition_offset(&self.core.topic, p, offset)?;
            self.core.assigned(p);
        }
        tracing::info!(partitions = ?parts, "kafka partitions assigned");
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> KafkaResult<()> {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(partitions = ?parts, "kafka partitions revoked: checkpointing first");
        self.core.checkpoint_now(Some(consumer));
        for &p in &parts {
            self.core.revoked(p);
        }
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        }
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "kafka rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            self.core.fail(format!("kafka rebalance: {e}"));
        }
    }
}

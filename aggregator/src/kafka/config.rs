//! The `[kafka]` and `[checkpoint]` sections of the aggregator's configuration.
//!
//! Role: where the Kafka source reads (brokers, input topic, consumer group), where outputs go
//! (aggregate topic, dead-letter topic), how the source merges and throttles partitions, and
//! where and how often checkpoints are written; plus the librdkafka client properties built
//! from them. Secrets (SASL password) come from the environment or a file, never the command
//! line. Touches nothing but the password file it may be told to read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Deserializer};

use crate::engine::time::parse_duration;

/// Environment variable holding the SASL password (`sasl.password`).
pub const PASSWORD_ENV: &str = "MESHMON_KAFKA_SASL_PASSWORD";

/// Where partitions without a checkpointed offset start.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained message (default: nothing an agent produced is skipped).
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// The `[kafka]` section. The Kafka mode is on when `brokers` is not empty.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, `host:port[,host:port…]`; empty: Kafka mode off (gRPC ingest).
    pub brokers: String,
    /// The topic agents produce `RecordBatch`es to.
    pub input_topic: String,
    /// Consumer group (offsets are also committed there after each checkpoint, for lag tools).
    pub group_id: String,
    /// Topic for aggregate updates (key: series + window; compaction keeps the latest); empty: off.
    pub output_topic: String,
    /// Topic for input messages that are not a `RecordBatch`.
    pub dead_letter_topic: String,
    /// Where partitions with no checkpointed offset start.
    pub start_from: StartFrom,
    /// Messages buffered per partition before it is paused (backpressure; nothing is dropped).
    pub max_buffered_messages: usize,
    /// How long the source waits for a partition that has unread messages but none fetched yet
    /// before it goes on with the others (the merge is in event-time order otherwise).
    #[serde(deserialize_with = "duration")]
    pub merge_wait: Duration,
    /// File holding the SASL password (alternative to `MESHMON_KAFKA_SASL_PASSWORD`).
    pub sasl_password_file: Option<PathBuf>,
    /// Extra librdkafka properties for every client, e.g. `{ "security.protocol" = "sasl_ssl" }`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: String::new(),
            input_topic: "meshmon.records".into(),
            group_id: "meshmon-aggregator".into(),
            output_topic: "meshmon.aggregates".into(),
            dead_letter_topic: "meshmon.dead-letters".into(),
            start_from: StartFrom::Earliest,
            max_buffered_messages: 256,
            merge_wait: Duration::from_millis(500),
            sasl_password_file: None,
            properties: BTreeMap::new(),
        }
    }
}

/// The `[checkpoint]` section (Kafka mode).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSection {
    /// The checkpoint file; relative paths are inside `store.data_dir`.
    pub path: PathBuf,
    /// How often window state and offsets are checkpointed (also on shutdown and rebalance).
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { path: PathBuf::from("checkpoint.redb"), every: Duration::from_secs(10) }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let nanos = parse_duration(&text).map_err(serde::de::Error::custom)?;
    Ok(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

/// A Kafka client setting is not usable.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// The password file could not be read.
    #[error("reading kafka.sasl_password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is missing or contradictory.
    #[error("kafka: {0}")]
    Invalid(String),
}

impl KafkaSection {
    /// Whether the Kafka mode is configured.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        if self.input_topic.is_empty() {
            return Err(KafkaConfigError::Invalid("input_topic is empty".into()));
        }
        if self.dead_letter_topic.is_empty() {
            return Err(KafkaConfigError::Invalid(
                "dead_letter_topic is empty (undecodable input must go somewhere)".into(),
            ));
        }
        if self.dead_letter_topic == self.input_topic || self.output_topic == self.input_topic {
            return Err(KafkaConfigError::Invalid("output and dead-letter topics must differ from input_topic".into()));
        }
        if self.max_buffered_messages == 0 {
            return Err(KafkaConfigError::Invalid("max_buffered_messages must be at least 1".into()));
        }
        if self.properties.contains_key("sasl.password") {
            return Err(KafkaConfigError::Invalid(format!(
                "put the SASL password in {PASSWORD_ENV} or sasl_password_file, not in properties"
            )));
        }
        Ok(())
    }

    /// Properties shared by every client: brokers, extra properties and the password.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        self.client_config_for(Role::Any)
    }

    fn client_config_for(&self, role: Role) -> Result<ClientConfig, KafkaConfigError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // One `properties` table serves every client; settings of the other role are left out
        // (librdkafka would warn about each).
        for (k, v) in self.properties.iter().filter(|(k, _)| role.takes(k)) {
            c.set(k, v);
        }
        let password = match (&self.sasl_password_file, std::env::var(PASSWORD_ENV)) {
            (_, Ok(p)) => Some(p),
            (Some(path), Err(_)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| KafkaConfigError::PasswordFile { path: path.clone(), source })?
                    .trim_end()
                    .to_string(),
            ),
            (None, Err(_)) => None,
        };
        if let Some(p) = password {
            c.set("sasl.password", p);
        }
        Ok(c)
    }

    /// The consumer's properties: the group, no auto-commit (offsets live in checkpoints),
    /// no auto offset store, and end-of-partition events (the merge needs to know caught-up).
    pub fn consumer_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        let mut c = self.client_config_for(Role::Consumer)?;
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set(
                "auto.offset.reset",
                match self.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set("partition.assignment.strategy", "range")
            // A crashed member holds its partitions until its session times out; a restarted
            // aggregator waits that long to be assigned. 10 s instead of librdkafka's 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000");
        for (k, v) in &self.properties {
            if k.starts_with("session.") || k.starts_with("heartbeat.") {
                c.set(k, v);
            }
        }
        Ok(c)
    }

    /// The output producer's properties: idempotent, acks from all replicas, lz4.
    pub fn producer_config(&self) -> Result<ClientConfig, KafkaConfigError> {
        let mut c = self.client_config_for(Role::Producer)?;
        for (k, v) in [("compression.type", "lz4"), ("linger.ms", "20")] {
            if !self.properties.contains_key(k) {
                c.set(k, v);
            }
        }
        // Not overridable: the exactly-once argument needs every output acknowledged by all
        // in-sync replicas, without duplicates from retries.
        c.set("enable.idempotence", "true").set("acks", "all");
        Ok(c)
    }
}

/// Which client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Any,
    Consumer,
    Producer,
}

/// Property prefixes only consumers understand.
const CONSUMER_ONLY: [&str; 12] = [
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "max.poll.interval.ms",
    "auto.",
    "enable.auto.",
    "enable.partition.eof",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
];

/// Property prefixes only producers understand.
const PRODUCER_ONLY: [&str; 11] = [
    "acks",
    "request.required.acks",
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "compression.",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "retries",
    "max.in.flight",
];

impl Role {
    fn takes(self, key: &str) -> bool {
        match self {
            Role::Any => true,
            Role::Consumer => !PRODUCER_ONLY.iter().any(|p| key.starts_with(p)),
            Role::Producer => !CONSUMER_ONLY.iter().any(|p| key.starts_with(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_go_to_the_clients_that_understand_them() {
        let mut k = KafkaSection { brokers: "b:9092".into(), ..KafkaSection::default() };
        k.properties.insert("session.timeout.ms".into(), "6000".into());
        k.properties.insert("linger.ms".into(), "50".into());
        k.properties.insert("socket.timeout.ms".into(), "9000".into());
        let consumer = k.consumer_config().map_err(|e| e.to_string());
        let producer = k.producer_config().map_err(|e| e.to_string());
        let (Ok(consumer), Ok(producer)) = (consumer, producer) else { panic!("configs") };
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("50"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("socket.timeout.ms"), Some("9000"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"), "not overridable");
    }
}

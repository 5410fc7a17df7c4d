//! Settings of the Kafka output and the librdkafka producer configuration built from them.
//!
//! Role: [`KafkaConfig`] is the `[kafka]` table of the agent's configuration (brokers, topic,
//! compression, linger, delivery timeout, message size, extra librdkafka properties, the SASL
//! password's file). [`KafkaConfig::validate`] names the field of every mistake;
//! [`KafkaConfig::client_config`] turns the settings into the producer's `ClientConfig`, with
//! the properties the agent's delivery guarantees depend on (`enable.idempotence=true`,
//! `acks=all`) fixed: they cannot be overridden. Secrets never travel through argv or
//! `--print-config`: the SASL password comes from `MESHMON_AGENT_KAFKA_SASL_PASSWORD` or from
//! `sasl_password_file`, and `properties` refuses keys that look like secrets. Touches the
//! password file only (read when the producer is built).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;

/// Default topic batches are produced to.
pub const DEFAULT_TOPIC: &str = "meshmon.records";

/// librdkafka properties the agent sets itself: the delivery guarantees, or a setting with its
/// own field. `properties` may not name them.
const RESERVED: [(&str, &str); 14] = [
    ("bootstrap.servers", "use `kafka.brokers`"),
    ("metadata.broker.list", "use `kafka.brokers`"),
    ("enable.idempotence", "the agent always produces idempotently"),
    ("acks", "the agent always waits for all in-sync replicas (acks=all)"),
    ("request.required.acks", "the agent always waits for all in-sync replicas (acks=all)"),
    ("compression.type", "use `kafka.compression`"),
    ("compression.codec", "use `kafka.compression`"),
    ("linger.ms", "use `kafka.linger`"),
    ("queue.buffering.max.ms", "use `kafka.linger`"),
    ("message.timeout.ms", "use `kafka.delivery_timeout`"),
    ("delivery.timeout.ms", "use `kafka.delivery_timeout`"),
    ("message.max.bytes", "use `kafka.message_max_bytes`"),
    ("transactional.id", "the agent does not use Kafka transactions"),
    ("sasl.password", "use `kafka.sasl_password_file` or MESHMON_AGENT_KAFKA_SASL_PASSWORD"),
];

/// Compression of produced message batches (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, the default.
    #[default]
    Lz4,
    /// Zstandard: smaller, more CPU.
    Zstd,
    /// gzip. (Snappy is not offered: tansu 0.6 stores snappy batches but cannot serve them back.)
    Gzip,
}

impl Compression {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        }
    }
}

/// A secret text: never printed, never serialized.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself (for the client configuration only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The `[kafka]` table: where and how the Kafka output produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// Topic every batch is produced to (it must exist: the agent does not create topics).
    pub topic: String,
    /// Compression of produced message batches.
    pub compression: Compression,
    /// How long the producer waits to group messages into one request (`linger.ms`).
    #[serde(with = "serde_text")]
    pub linger: Duration,
    /// A batch not acknowledged by the broker within this time counts as failed: the broker is
    /// considered unreachable and batches go to the disk spool until it answers again.
    #[serde(with = "serde_text")]
    pub delivery_timeout: Duration,
    /// Largest Kafka message (one encoded batch) the producer sends (`message.max.bytes`); a
    /// larger batch is refused and counted as rejected. Keep it at most the broker's limit.
    pub message_max_bytes: usize,
    /// File holding the SASL password (trailing newline ignored). The environment variable
    /// `MESHMON_AGENT_KAFKA_SASL_PASSWORD` wins over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password_file: Option<PathBuf>,
    /// Extra librdkafka producer properties (e.g. `security.protocol`, `sasl.mechanism`,
    /// `sasl.username`). Secrets are refused here.
    pub properties: BTreeMap<String, String>,
    /// The SASL password given by the environment (never read from a file of settings, never
    /// printed).
    #[serde(skip)]
    pub sasl_password: Option<Secret>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            topic: DEFAULT_TOPIC.to_owned(),
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(30),
            message_max_bytes: 1_000_000,
            sasl_password_file: None,
            properties: BTreeMap::new(),
            sasl_password: None,
        }
    }
}

/// Whether a librdkafka property name looks like it holds a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k == "sasl.jaas.config" || k.ends_with(".key.pem")
}

impl KafkaConfig {
    /// Checks every Kafka setting; the first problem found is returned.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field (`kafka.…`) and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "must list at least one broker (host:port)"));
        }
        for b in &self.brokers {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
                && !b.contains([',', ' ', '\t', '/']);
            if !ok {
                return Err(ConfigError::invalid(
                    "kafka.brokers",
                    format!("entry {b:?} is not host:port (e.g. \"kafka-1:9092\"); list brokers separately"),
                ));
            }
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || self.topic == "."
            || self.topic == ".."
            || !self.topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::invalid(
                "kafka.topic",
                format!("{:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)", self.topic),
            ));
        }
        if self.linger > Duration::from_secs(60) {
            return Err(ConfigError::invalid("kafka.linger", "must be at most 1m"));
        }
        if self.delivery_timeout < Duration::from_millis(100) || self.delivery_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::invalid("kafka.delivery_timeout", "must be between 100ms and 1h"));
        }
        if self.delivery_timeout <= self.linger {
            return Err(ConfigError::invalid("kafka.delivery_timeout", "must be longer than `kafka.linger`"));
        }
        if !(1000..=1_000_000_000).contains(&self.message_max_bytes) {
            return Err(ConfigError::invalid(
                "kafka.message_max_bytes",
                format!("is {}; it must be between 1000 and 1000000000", self.message_max_bytes),
            ));
        }
        if self.sasl_password_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(ConfigError::invalid("kafka.sasl_password_file", "must not be empty"));
        }
        for key in self.properties.keys() {
            let field = format!("kafka.properties.{key:?}");
            if key.trim().is_empty() || key.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(field, "is not a librdkafka property name"));
            }
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
                return Err(ConfigError::invalid(field, format!("cannot be set here: {why}")));
            }
            if is_secret_key(key) {
                return Err(ConfigError::invalid(
                    field,
                    "looks like a secret; secrets are not accepted in the configuration or on the command line \
                     (the SASL password comes from MESHMON_AGENT_KAFKA_SASL_PASSWORD or `kafka.sasl_password_file`)",
                ));
            }
        }
        Ok(())
    }

    /// `kafka://broker,broker/topic`, for logs.
    pub fn describe(&self) -> String {
        format!("kafka://{}/{}", self.brokers.join(","), self.topic)
    }

    /// The SASL password: the environment's, else the file's, else none.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the password file cannot be read.
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(p) = &self.sasl_password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.sasl_password_file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid("kafka.sasl_password_file", format!("cannot read {}: {e}", path.display()))
        })?;
        Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
    }

    /// The librdkafka producer configuration for agent `agent_id`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if the password file cannot be read.
    pub fn client_config(&self, agent_id: &str) -> Result<ClientConfig, ConfigError> {
        let mut c = ClientConfig::new();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        // Defaults the properties may override: quick reconnection so that a returning broker
        // is noticed within about a second.
        c.set("client.id", format!("meshmon-agent-{agent_id}"))
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // librdkafka gives up on a message a little after the agent's own deadline, so the
        // agent (which then re-creates the producer and spools) always acts first.
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", ms(self.linger))
            .set("message.timeout.ms", ms(self.delivery_timeout + Duration::from_secs(1)))
            .set("message.max.bytes", self.message_max_bytes.to_string());
        if let Some(p) = self.password()? {
            c.set("sasl.password", p.expose());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn defaults_validate_and_fix_delivery_guarantees() {
        let k = KafkaConfig::default();
        k.validate().unwrap();
        let c = k.client_config("a1").unwrap();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(c.get("message.timeout.ms"), Some("31000"));
        assert_eq!(c.get("client.id"), Some("meshmon-agent-a1"));
    }

    #[test]
    fn properties_pass_through_but_not_reserved_or_secret_keys() {
        let mut k = KafkaConfig::default();
        k.properties.insert("security.protocol".into(), "sasl_plaintext".into());
        k.properties.insert("reconnect.backoff.max.ms".into(), "5000".into());
        k.validate().unwrap();
        let c = k.client_config("a").unwrap();
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("reconnect.backoff.max.ms"), Some("5000"));
        for key in ["acks", "enable.idempotence", "sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"]
        {
            let mut k = KafkaConfig::default();
            k.properties.insert(key.into(), "x".into());
            let e = k.validate().unwrap_err().to_string();
            assert!(e.contains("kafka.properties"), "{key}: {e}");
        }
    }

    #[test]
    fn password_from_env_value_or_file_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut k = KafkaConfig { sasl_password_file: Some(file), ..KafkaConfig::default() };
        assert_eq!(k.password().unwrap().unwrap().expose(), "from-file");
        k.sasl_password = Some(Secret::new("from-env"));
        assert_eq!(k.client_config("a").unwrap().get("sasl.password"), Some("from-env"));
        assert!(!format!("{k:?}").contains("from-env"));
        assert!(!toml::to_string(&k).unwrap().contains("from-env"));
        k.sasl_password = None;
        k.sasl_password_file = Some(dir.path().join("missing"));
        let e = k.client_config("a").unwrap_err().to_string();
        assert!(e.contains("kafka.sasl_password_file"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        type Mutation = fn(&mut KafkaConfig);
        let cases: Vec<(&str, Mutation)> = vec![
            ("kafka.brokers", |k| k.brokers.clear()),
            ("kafka.brokers", |k| k.brokers = vec!["a:1,b:2".into()]),
            ("kafka.brokers", |k| k.brokers = vec!["nohost".into()]),
            ("kafka.topic", |k| k.topic = "bad topic".into()),
            ("kafka.topic", |k| k.topic = String::new()),
            ("kafka.delivery_timeout", |k| k.delivery_timeout = Duration::from_millis(1)),
            ("kafka.message_max_bytes", |k| k.message_max_bytes = 10),
        ];
        for (field, mutate) in cases {
            let mut k = KafkaConfig::default();
            mutate(&mut k);
            let e = k.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "expected {field} in {e}");
        }
    }
}

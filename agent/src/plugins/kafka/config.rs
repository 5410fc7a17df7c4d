//! Settings of a `[[plugins.kafka]]` instance and the librdkafka client configuration built
//! from them. Pure (the SASL password is read by the plugin when it is built).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::kafka::config::Secret;
use crate::plugins::{PluginSettings, SecretRef};

/// Largest `max_topics` / `max_groups` accepted.
pub const MAX_LIMIT: usize = 10_000;

/// librdkafka properties the plugin sets itself.
const RESERVED: [(&str, &str); 7] = [
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("group.id", "the plugin reads the groups listed in `groups` without joining them"),
    ("enable.auto.commit", "the plugin never commits"),
    ("enable.auto.offset.store", "the plugin never commits"),
    ("client.id", "the plugin names its clients after the instance"),
    ("sasl.password", "use `sasl_password` (an `env` or `file`)"),
];

/// `[[plugins.kafka]]`: the cluster, the topics and the consumer groups to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// Topics to report, by exact name. With `topic_pattern` too, a topic is reported when
    /// either selects it; with neither, every topic except internal ones (`__…`).
    pub topics: Vec<String>,
    /// Topics to report, by regular expression (unanchored). Internal topics (`__…`) never match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_pattern: Option<String>,
    /// At most this many selected topics (in name order) are reported; the others are counted in
    /// `kafka.topics_skipped`.
    pub max_topics: usize,
    /// Consumer groups whose lag is reported. Empty: every group the brokers list (ListGroups),
    /// at most `max_groups` of them (in name order), the others counted in `kafka.groups_skipped`.
    pub groups: Vec<String>,
    /// At most this many groups when `groups` is empty.
    pub max_groups: usize,
    /// Also report the lag of every partition (`kafka.group.partition_lag`).
    pub per_partition: bool,
    /// The SASL password, from an environment variable or a file (`sasl.username`,
    /// `sasl.mechanism` and `security.protocol` go in `properties`).
    pub sasl_password: SecretRef,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`, …). Secrets are refused here.
    pub properties: BTreeMap<String, String>,
    /// Longest one request to the cluster may take (metadata, group list, offsets).
    #[serde(with = "serde_text")]
    pub request_timeout: Duration,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: vec!["127.0.0.1:9092".to_owned()],
            topics: Vec::new(),
            topic_pattern: None,
            max_topics: 100,
            groups: Vec::new(),
            max_groups: 20,
            per_partition: false,
            sasl_password: SecretRef::default(),
            properties: BTreeMap::new(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a librdkafka property name looks like it holds a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k == "sasl.jaas.config" || k.ends_with(".key.pem")
}

impl KafkaSettings {
    /// The client configuration shared by every client of instance `name` (no `group.id`).
    pub(super) fn client_config(&self, name: &str, password: Option<&Secret>) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("bootstrap.servers", self.brokers.join(","));
        c.set("client.id", format!("meshmon-agent-plugin-{name}"));
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("socket.timeout.ms", self.request_timeout.as_millis().max(10).to_string());
        // Reconnect attempts to a dead broker stay cheap between collections.
        c.set("reconnect.backoff.max.ms", "5000");
        if let Some(p) = password {
            c.set("sasl.password", p.expose());
        }
        c
    }
}

impl PluginSettings for KafkaSettings {
    const KIND: &'static str = "kafka";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.brokers.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.brokers"), "must list at least one host:port"));
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
                && !b.contains([',', ' ', '\t', '/']);
            if !ok {
                return Err(ConfigError::invalid(format!("{field}.brokers[{i}]"), format!("{b:?} is not host:port")));
            }
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.is_empty() || t.len() > 249 {
                return Err(ConfigError::invalid(format!("{field}.topics[{i}]"), "is not a topic name"));
            }
        }
        if let Some(p) = &self.topic_pattern
            && let Err(e) = regex::Regex::new(p)
        {
            return Err(ConfigError::invalid(format!("{field}.topic_pattern"), e.to_string()));
        }
        if self.groups.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(format!("{field}.groups"), "must not contain an empty name"));
        }
        if self.groups.len() > MAX_LIMIT {
            return Err(ConfigError::invalid(format!("{field}.groups"), format!("lists more than {MAX_LIMIT} groups")));
        }
        for (name, v) in [("max_topics", self.max_topics), ("max_groups", self.max_groups)] {
            if v > MAX_LIMIT {
                return Err(ConfigError::invalid(format!("{field}.{name}"), format!("must be at most {MAX_LIMIT}")));
            }
        }
        for key in self.properties.keys() {
            let f = format!("{field}.properties.{key:?}");
            if key.trim().is_empty() || key.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(f, "is not a librdkafka property name"));
            }
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
                return Err(ConfigError::invalid(f, format!("cannot be set here: {why}")));
            }
            if is_secret_key(key) {
                return Err(ConfigError::invalid(
                    f,
                    "looks like a secret; secrets are not accepted in the configuration (use `sasl_password`)",
                ));
            }
        }
        if self.request_timeout < Duration::from_millis(10) {
            return Err(ConfigError::invalid(format!("{field}.request_timeout"), "must be at least 10ms"));
        }
        Ok(())
    }
}

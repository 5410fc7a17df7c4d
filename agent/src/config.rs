//! Agent configuration: the settings, their defaults, TOML loading and validation.
//!
//! Role: defines [`Config`] (one field per setting, documented in `agent/agent.example.toml`),
//! reads it from a TOML file, and checks it ([`Config::validate`]) so that every mistake is
//! reported with the field it concerns and why. The environment/flag layers on top of the file
//! live in `cli.rs`. Touches only the configuration file it is asked to read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_text;
pub use crate::kafka::config::{Compression, KafkaConfig, Secret};
pub use crate::plugins::config::{PluginsConfig, SystemPluginConfig};

/// Largest number of global tags (the aggregator refuses records with more than 32 tags).
pub const MAX_TAGS: usize = 32;
/// Largest length, in bytes, of a name or tag (the aggregator's default limit).
pub const MAX_NAME_LEN: usize = 256;

/// Why a configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        source: Box<toml::de::Error>,
    },
    /// A setting has a value the agent cannot run with.
    #[error("invalid configuration: `{field}` {reason}")]
    Invalid {
        /// The setting, as spelled in the TOML file.
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Complete agent configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Stable identifier of this agent, sent with every batch. Default: the host name.
    pub agent_id: String,
    /// Cluster stamped on records that do not name one. Default: empty (no cluster).
    pub cluster: String,
    /// Node stamped on records that do not name one. Default: the host name.
    pub node: String,
    /// Global custom tags added to every record (a pushed record's own tags win key by key).
    pub tags: BTreeMap<String, String>,
    /// Where batches go: [`OutputKind::Grpc`] (the aggregator at `output`, the default) or
    /// [`OutputKind::Kafka`] (the `[kafka]` settings, with the disk `[spool]`).
    pub output_kind: OutputKind,
    /// gRPC URL of the aggregator's `meshmon.v1.Ingest` service (used by `output_kind = "grpc"`).
    pub output: String,
    /// Address of the gRPC push API (`meshmon.v1.Ingest/Push`) for applications.
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP push API (`POST /v1/records`, also serves `GET /metrics`).
    pub http_listen: SocketAddr,
    /// Address serving Prometheus `GET /metrics`; equal to `http_listen` to share that server.
    pub metrics_listen: SocketAddr,
    /// A batch closes when it holds this many records...
    pub batch_max_records: usize,
    /// ... or when its first record is this old, whichever comes first.
    #[serde(with = "serde_text")]
    pub batch_max_delay: Duration,
    /// Closed batches waiting to be sent, kept in memory; when full, pushes get backpressure.
    pub queue_capacity: usize,
    /// Batches sent to the aggregator and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Largest accepted HTTP push body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Directory for the agent's durable state (the batch sequence reservation).
    pub state_dir: PathBuf,
    /// On SIGTERM/Ctrl-C, how long to wait for queued and in-flight batches to be acknowledged.
    #[serde(with = "serde_text")]
    pub shutdown_timeout: Duration,
    /// Built-in collectors.
    pub plugins: PluginsConfig,
    /// The Kafka output (used by `output_kind = "kafka"`).
    pub kafka: KafkaConfig,
    /// The Kafka output's disk spool in `state_dir/spool`.
    pub spool: SpoolConfig,
}

/// Which output the agent delivers batches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Stream to the aggregator over gRPC (`meshmon.v1.Ingest/Push`), re-sending until acked.
    #[default]
    Grpc,
    /// Produce to a Kafka topic; while the brokers are unreachable, spool to disk.
    Kafka,
}

impl OutputKind {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Grpc => "grpc",
            OutputKind::Kafka => "kafka",
        }
    }
}

/// What a full spool gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Delete the oldest spooled batches (whole segments, never one being sent) to make room:
    /// the newest data survives.
    #[default]
    Oldest,
    /// Refuse the batch being spooled: the oldest data survives.
    Newest,
}

impl WhenFull {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Oldest => "oldest",
            WhenFull::Newest => "newest",
        }
    }
}

/// The `[spool]` table: the Kafka output's disk spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Largest size of the spool on disk, in bytes (all segment files together).
    pub max_bytes: u64,
    /// A segment file is closed (fsynced) and a new one started when the next batch would make
    /// it larger than this many bytes.
    pub segment_bytes: u64,
    /// What to drop when the spool is full.
    pub when_full: WhenFull,
    /// Spooled batches are fsynced at most this long after they were written (0s: each batch
    /// at once).
    #[serde(with = "serde_text")]
    pub fsync_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            when_full: WhenFull::Oldest,
            fsync_interval: Duration::from_secs(1),
        }
    }
}

/// The host name, or `"localhost"` when the system does not tell.
pub fn host_name() -> String {
    sysinfo::System::host_name().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "localhost".to_owned())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for Config {
    fn default() -> Self {
        let host = host_name();
        Config {
            agent_id: host.clone(),
            cluster: String::new(),
            node: host,
            tags: BTreeMap::new(),
            output: "http://127.0.0.1:7700".to_owned(),
            grpc_listen: loopback(7701),
            http_listen: loopback(7702),
            metrics_listen: loopback(7703),
            batch_max_records: 1000,
            batch_max_delay: Duration::from_secs(1),
            queue_capacity: 1024,
            max_in_flight: 64,
            max_body_bytes: 8 * 1024 * 1024,
            state_dir: PathBuf::from("./meshmon-agent-state"),
            shutdown_timeout: Duration::from_secs(30),
            plugins: PluginsConfig::default(),
            output_kind: OutputKind::Grpc,
            kafka: KafkaConfig::default(),
            spool: SpoolConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text (`origin` names it in errors). Missing fields take their defaults.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for invalid TOML, unknown keys or wrong types.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_owned(), source: Box::new(e) })
    }

    /// Reads and parses a TOML file (not validated yet: see [`Config::validate`]).
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text, path)
    }

    /// The configuration as TOML text (what `--print-config` shows).
    ///
    /// # Errors
    /// Never in practice (every field is representable); reported rather than hidden.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Checks every setting; the first problem found is returned.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("agent_id", &self.agent_id, false)?;
        check_name("cluster", &self.cluster, true)?;
        check_name("node", &self.node, true)?;
        if self.tags.len() > MAX_TAGS {
            return Err(ConfigError::invalid(
                "tags",
                format!("has {} entries; at most {MAX_TAGS} are allowed", self.tags.len()),
            ));
        }
        for (k, v) in &self.tags {
            check_name("tags", k, false).map_err(|_| {
                ConfigError::invalid(
                    format!("tags.{k:?}"),
                    format!("key must be non-empty, at most {MAX_NAME_LEN} bytes, without control characters"),
                )
            })?;
            check_name(&format!("tags.{k}"), v, true)?;
        }
        check_output(&self.output)?;
        check_range("batch_max_records", self.batch_max_records, 1, 1_000_000)?;
        check_range("queue_capacity", self.queue_capacity, 1, 1_000_000)?;
        check_range("max_in_flight", self.max_in_flight, 1, 100_000)?;
        check_range("max_body_bytes", self.max_body_bytes, 1024, 1 << 30)?;
        check_duration("batch_max_delay", self.batch_max_delay, Duration::from_millis(1), Duration::from_secs(3600))?;
        check_duration(
            "shutdown_timeout",
            self.shutdown_timeout,
            Duration::from_millis(1),
            Duration::from_secs(24 * 3600),
        )?;
        check_duration(
            "plugins.system.interval",
            self.plugins.system.interval,
            sysinfo::MINIMUM_CPU_UPDATE_INTERVAL,
            Duration::from_secs(24 * 3600),
        )?;
        self.plugins.clone().normalize()?;
        self.kafka.validate()?;
        check_spool(&self.spool)?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("state_dir", "must not be empty"));
        }
        if self.grpc_listen == self.http_listen && self.grpc_listen.port() != 0 {
            return Err(ConfigError::invalid(
                "http_listen",
                format!("is the same address as `grpc_listen` ({}); they need separate ports", self.grpc_listen),
            ));
        }
        if self.metrics_listen == self.grpc_listen && self.grpc_listen.port() != 0 {
            return Err(ConfigError::invalid(
                "metrics_listen",
                format!(
                    "is the same address as `grpc_listen` ({}); use its own port or the `http_listen` address",
                    self.grpc_listen
                ),
            ));
        }
        Ok(())
    }

    /// The output, for logs: the aggregator URL or `kafka://brokers/topic`.
    pub fn describe_output(&self) -> String {
        match self.output_kind {
            OutputKind::Grpc => self.output.clone(),
            OutputKind::Kafka => self.kafka.describe(),
        }
    }

    /// Whether `/metrics` is served only by the HTTP push server (no separate listener).
    pub fn metrics_shares_http(&self) -> bool {
        self.metrics_listen == self.http_listen
    }
}

fn check_name(field: &str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if !may_be_empty && value.trim().is_empty() {
        return Err(ConfigError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ConfigError::invalid(field, format!("is {} bytes long; at most {MAX_NAME_LEN}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(field, "contains a control character (newline, tab, NUL, ...)"));
    }
    Ok(())
}

fn check_output(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Err(ConfigError::invalid(
            "output",
            format!("{url:?} uses https, but this build has no TLS support; use http:// (or a TLS-terminating proxy)"),
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(ConfigError::invalid(
            "output",
            format!("{url:?} is not an http:// URL (expected e.g. \"http://127.0.0.1:7700\")"),
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConfigError::invalid("output", format!("{url:?} has no host")));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::invalid("output", format!("{url:?} is not a valid URL: {e}")))?;
    Ok(())
}

fn check_spool(s: &SpoolConfig) -> Result<(), ConfigError> {
    const MIN_SEGMENT: u64 = 1024;
    const MAX_SEGMENT: u64 = 1 << 30;
    if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&s.segment_bytes) {
        return Err(ConfigError::invalid(
            "spool.segment_bytes",
            format!("is {}; it must be between {MIN_SEGMENT} and {MAX_SEGMENT}", s.segment_bytes),
        ));
    }
    if s.max_bytes < 2 * s.segment_bytes {
        return Err(ConfigError::invalid(
            "spool.max_bytes",
            format!("is {}; it must be at least twice `spool.segment_bytes` ({})", s.max_bytes, 2 * s.segment_bytes),
        ));
    }
    check_duration("spool.fsync_interval", s.fsync_interval, Duration::ZERO, Duration::from_secs(3600))
}

fn check_range(field: &str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(field, format!("is {value}; it must be between {min} and {max}")));
    }
    Ok(())
}

fn check_duration(field: &str, value: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
    use crate::duration::format_duration as f;
    if value < min || value > max {
        return Err(ConfigError::invalid(
            field,
            format!("is {}; it must be between {} and {}", f(value), f(min), f(max)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(!c.agent_id.is_empty());
        assert_eq!(c.node, c.agent_id);
        assert_eq!(c.cluster, "");
        assert_eq!(c.output, "http://127.0.0.1:7700");
        assert_eq!(c.grpc_listen.to_string(), "127.0.0.1:7701");
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:7702");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:7703");
        assert_eq!(c.batch_max_records, 1000);
        assert_eq!(c.batch_max_delay, Duration::from_secs(1));
        assert_eq!(c.queue_capacity, 1024);
        assert_eq!(c.state_dir, PathBuf::from("./meshmon-agent-state"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert!(c.plugins.system.enabled);
        assert_eq!(c.plugins.system.interval, Duration::from_secs(10));
        assert_eq!(c.output_kind, OutputKind::Grpc);
        assert_eq!(c.kafka.topic, "meshmon.records");
        assert_eq!(c.kafka.compression, Compression::Lz4);
        assert_eq!(c.spool.when_full, WhenFull::Oldest);
        assert_eq!(c.spool.max_bytes, 1 << 30);
        c.validate().unwrap();
    }

    #[test]
    fn example_file_parses_and_matches_defaults_where_it_says_so() {
        let text = include_str!("../agent.example.toml");
        let c = parse(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.cluster, "eu-west");
        assert_eq!(c.tags.get("team").map(String::as_str), Some("payments"));
        let d = Config::default();
        assert_eq!(c.batch_max_records, d.batch_max_records);
        assert_eq!(c.queue_capacity, d.queue_capacity);
        assert_eq!(c.plugins, d.plugins);
        assert_eq!(c.output, d.output);
        assert_eq!(c.output_kind, d.output_kind);
        assert_eq!(c.spool, d.spool);
        let k = KafkaConfig { properties: d.kafka.properties.clone(), ..c.kafka.clone() };
        assert_eq!(k, d.kafka, "the example's [kafka] values are the defaults (plus example properties)");
    }

    #[test]
    fn plugins_example_file_parses_validates_and_uses_the_documented_defaults() {
        let c = parse(include_str!("../plugins.example.toml")).unwrap();
        c.validate().unwrap();
        let p = &c.plugins;
        let kinds = [
            p.process.len(),
            p.tcp.len(),
            p.http.len(),
            p.log.len(),
            p.kafka.len(),
            p.redis.len(),
            p.rabbitmq.len(),
            p.postgresql.len(),
            p.mysql.len(),
            p.prometheus.len(),
            p.statsd.len(),
        ];
        assert!(kinds.iter().all(|n| *n == 1), "one instance of every kind: {kinds:?}");
        // Where the example states the kind's default interval and timeout, they are the defaults.
        use crate::plugins::PluginSettings;
        assert_eq!(p.tcp[0].interval, crate::plugins::tcp::TcpSettings::DEFAULT_INTERVAL);
        assert_eq!(p.redis[0].timeout, crate::plugins::redis::RedisSettings::DEFAULT_TIMEOUT);
        assert_eq!(p.log[0].interval, crate::plugins::log::LogSettings::DEFAULT_INTERVAL);
        assert_eq!(p.statsd[0].interval, crate::plugins::statsd::StatsdSettings::DEFAULT_INTERVAL);
    }

    #[test]
    fn kafka_output_and_spool_parse() {
        let c = parse(
            r#"
            output_kind = "kafka"
            [kafka]
            brokers = ["k1:9092", "k2:9092"]
            topic = "metrics.raw"
            compression = "zstd"
            linger = "20ms"
            delivery_timeout = "10s"
            [kafka.properties]
            "security.protocol" = "sasl_plaintext"
            [spool]
            max_bytes = 1048576
            segment_bytes = 65536
            when_full = "newest"
            fsync_interval = "0s"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.output_kind, OutputKind::Kafka);
        assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!(c.kafka.compression, Compression::Zstd);
        assert_eq!(c.kafka.linger, Duration::from_millis(20));
        assert_eq!(c.spool.when_full, WhenFull::Newest);
        assert_eq!(c.spool.fsync_interval, Duration::ZERO);
        assert_eq!(c.describe_output(), "kafka://k1:9092,k2:9092/metrics.raw");
        assert_eq!(parse(&c.to_toml().unwrap()).unwrap(), c);
        let e = parse("output_kind = \"carrier-pigeon\"").unwrap_err().to_string();
        assert!(e.contains("output_kind"), "{e}");
        let e = parse("[kafka]\ncompression = \"brotli\"").unwrap_err().to_string();
        assert!(e.contains("compression"), "{e}");
    }

    #[test]
    fn values_and_durations_parse() {
        let c = parse(
            r#"
            agent_id = "a1"
            batch_max_delay = "250ms"
            shutdown_timeout = "2m"
            [tags]
            region = "eu"
            [plugins.system]
            enabled = false
            interval = "1m"
            "#,
        )
        .unwrap();
        assert_eq!(c.agent_id, "a1");
        assert_eq!(c.batch_max_delay, Duration::from_millis(250));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(120));
        assert!(!c.plugins.system.enabled);
        assert_eq!(c.plugins.system.interval, Duration::from_secs(60));
        // Round trip through --print-config output.
        assert_eq!(parse(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn parse_errors_name_the_key() {
        let e = parse("batch_max_delay = \"10 parsecs\"").unwrap_err().to_string();
        assert!(e.contains("batch_max_delay") && e.contains("unit"), "{e}");
        let e = parse("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("grpc_listen = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("grpc_listen"), "{e}");
        let e = parse("batch_max_records = -3").unwrap_err().to_string();
        assert!(e.contains("batch_max_records"), "{e}");
    }

    #[test]
    fn validation_names_field_and_reason() {
        type Mutation = fn(&mut Config);
        let cases: Vec<(&str, Mutation)> = vec![
            ("agent_id", |c| c.agent_id = " ".into()),
            ("node", |c| c.node = "a\nb".into()),
            ("output", |c| c.output = "127.0.0.1:7700".into()),
            ("output", |c| c.output = "https://agg:7700".into()),
            ("batch_max_records", |c| c.batch_max_records = 0),
            ("queue_capacity", |c| c.queue_capacity = 0),
            ("max_in_flight", |c| c.max_in_flight = 0),
            ("batch_max_delay", |c| c.batch_max_delay = Duration::ZERO),
            ("plugins.system.interval", |c| c.plugins.system.interval = Duration::from_millis(10)),
            ("http_listen", |c| c.http_listen = c.grpc_listen),
            ("metrics_listen", |c| c.metrics_listen = c.grpc_listen),
            ("tags", |c| c.tags = (0..40).map(|i| (format!("k{i}"), "v".to_owned())).collect()),
            ("spool.segment_bytes", |c| c.spool.segment_bytes = 10),
            ("spool.max_bytes", |c| c.spool.max_bytes = c.spool.segment_bytes),
            ("kafka.topic", |c| c.kafka.topic = "a/b".into()),
            ("tags.\"\"", |c| {
                c.tags.insert(String::new(), "v".into());
            }),
        ];
        for (field, mutate) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "expected field {field} in: {e}");
        }
        let mut c = Config::default();
        c.metrics_listen = c.http_listen;
        c.validate().unwrap();
        assert!(c.metrics_shares_http());
    }
}

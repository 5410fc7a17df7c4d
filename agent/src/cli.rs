//! Command line and environment layer of the configuration.
//!
//! Role: defines the `meshmon-agent` flags ([`Cli`], clap derive). Each setting can come from the
//! TOML file (`--config`), from a `MESHMON_AGENT_<FIELD>` environment variable, or from a flag;
//! a flag beats its environment variable, which beats the file, which beats the default
//! ([`Cli::load_config`]). Touches only the configuration file named by `--config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{Compression, Config, ConfigError, OutputKind, Secret, WhenFull};
use crate::duration::parse_duration;

/// The environment variable holding the Kafka SASL password (there is no flag: a command line
/// is visible to every user of the host).
pub const SASL_PASSWORD_ENV: &str = "MESHMON_AGENT_KAFKA_SASL_PASSWORD";

/// meshmon host agent: collects metric records (pushed by applications over gRPC or HTTP, or
/// read by its plugins), batches them and delivers the batches to the meshmon aggregator over
/// gRPC, or to a Kafka topic (--output-kind kafka) with a disk spool while Kafka is unreachable.
///
/// Settings are read from the TOML file given by --config (see agent.example.toml), then from
/// MESHMON_AGENT_* environment variables, then from these flags: a flag beats its environment
/// variable, which beats the file. Durations are written like 500ms, 10s, 2m, 1h.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "meshmon-agent",
    version,
    about,
    long_about,
    after_help = "Kafka SASL password: set MESHMON_AGENT_KAFKA_SASL_PASSWORD, or point --kafka-sasl-password-file \
                  at a file holding it; it is never accepted as a flag or in kafka.properties.\n\n\
                  Exit status: 0 after a complete flush on SIGTERM/Ctrl-C (with --output-kind kafka: what Kafka did \
                  not take is in the disk spool, delivered after the next start); 1 on a start-up error \
                  (configuration, state directory, spool, busy port); 2 on a command-line error; 3 when the shutdown \
                  timeout (or a second signal) left batches undelivered."
)]
pub struct Cli {
    /// TOML configuration file [default: none; built-in defaults]
    #[arg(long, short = 'c', value_name = "PATH", env = "MESHMON_AGENT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Stable identifier of this agent, sent with every batch [default: the host name]
    #[arg(long, value_name = "ID", env = "MESHMON_AGENT_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Cluster stamped on records that name none [default: empty, no cluster]
    #[arg(long, value_name = "NAME", env = "MESHMON_AGENT_CLUSTER")]
    pub cluster: Option<String>,

    /// Node stamped on records that name none [default: the host name]
    #[arg(long, value_name = "NAME", env = "MESHMON_AGENT_NODE")]
    pub node: Option<String>,

    /// Global tag added to every record, KEY=VALUE; repeat the flag or separate with commas.
    /// Adds to (and overrides key by key) the file's [tags]; a record's own tags win [default: none]
    #[arg(long = "tag", value_name = "KEY=VALUE", env = "MESHMON_AGENT_TAGS", value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,

    /// Where batches go: grpc (stream to the aggregator at --output) or kafka (produce to
    /// --kafka-topic on --kafka-brokers, spooling to disk while Kafka is unreachable)
    /// [default: grpc]
    #[arg(long, value_name = "KIND", env = "MESHMON_AGENT_OUTPUT_KIND")]
    pub output_kind: Option<OutputKind>,

    /// gRPC URL of the aggregator to send batches to (with --output-kind grpc)
    /// [default: http://127.0.0.1:7700]
    #[arg(long, value_name = "URL", env = "MESHMON_AGENT_OUTPUT")]
    pub output: Option<String>,

    /// Kafka bootstrap brokers, HOST:PORT; repeat the flag or separate with commas. Replaces the
    /// file's list [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT", env = "MESHMON_AGENT_KAFKA_BROKERS", value_delimiter = ',')]
    pub kafka_brokers: Vec<String>,

    /// Kafka topic batches are produced to; it must exist (the agent does not create topics)
    /// [default: meshmon.records]
    #[arg(long, value_name = "TOPIC", env = "MESHMON_AGENT_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,

    /// Compression of Kafka message batches [default: lz4]
    #[arg(long, value_name = "CODEC", env = "MESHMON_AGENT_KAFKA_COMPRESSION")]
    pub kafka_compression: Option<Compression>,

    /// How long the Kafka producer waits to group messages into one request [default: 5ms]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_KAFKA_LINGER", value_parser = parse_duration)]
    pub kafka_linger: Option<Duration>,

    /// A batch Kafka has not acknowledged within this time counts as failed: the broker is
    /// considered unreachable and batches go to the disk spool until it answers [default: 30s]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_KAFKA_DELIVERY_TIMEOUT", value_parser = parse_duration)]
    pub kafka_delivery_timeout: Option<Duration>,

    /// Largest Kafka message (one batch) in bytes; a larger batch is refused and counted as
    /// rejected. At most the topic's max.message.bytes [default: 1000000]
    #[arg(long, value_name = "BYTES", env = "MESHMON_AGENT_KAFKA_MESSAGE_MAX_BYTES")]
    pub kafka_message_max_bytes: Option<usize>,

    /// Extra librdkafka producer property, KEY=VALUE (e.g. security.protocol=sasl_plaintext);
    /// repeat the flag or separate with commas. Adds to the file's [kafka.properties]. Secrets
    /// are refused here [default: none]
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", env = "MESHMON_AGENT_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_tag)]
    pub kafka_properties: Vec<(String, String)>,

    /// File holding the Kafka SASL password (MESHMON_AGENT_KAFKA_SASL_PASSWORD wins over it)
    /// [default: none]
    #[arg(long, value_name = "PATH", env = "MESHMON_AGENT_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,

    /// Largest size of the Kafka output's disk spool (state_dir/spool) in bytes
    /// [default: 1073741824 (1 GiB)]
    #[arg(long, value_name = "BYTES", env = "MESHMON_AGENT_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: Option<u64>,

    /// Size in bytes at which a spool segment file is closed and a new one started
    /// [default: 67108864 (64 MiB)]
    #[arg(long, value_name = "BYTES", env = "MESHMON_AGENT_SPOOL_SEGMENT_BYTES")]
    pub spool_segment_bytes: Option<u64>,

    /// When the spool is full: drop the oldest spooled batches (whole segments) or the newest
    /// batch; either way counted and logged [default: oldest]
    #[arg(long, value_name = "WHICH", env = "MESHMON_AGENT_SPOOL_WHEN_FULL")]
    pub spool_when_full: Option<WhenFull>,

    /// Spooled batches are fsynced at most this long after being written (0s: each one at
    /// once); a power loss can lose what was written in this last interval [default: 1s]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_SPOOL_FSYNC_INTERVAL", value_parser = parse_duration)]
    pub spool_fsync_interval: Option<Duration>,

    /// Address for the gRPC push API, meshmon.v1.Ingest/Push (port 0 picks a free port)
    /// [default: 127.0.0.1:7701]
    #[arg(long, value_name = "ADDR", env = "MESHMON_AGENT_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,

    /// Address for the HTTP push API, POST /v1/records with JSON lines (also serves GET /metrics)
    /// [default: 127.0.0.1:7702]
    #[arg(long, value_name = "ADDR", env = "MESHMON_AGENT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Address for Prometheus GET /metrics; give the --http-listen address to share that server
    /// [default: 127.0.0.1:7703]
    #[arg(long, value_name = "ADDR", env = "MESHMON_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A batch closes when it holds this many records [default: 1000]
    #[arg(long, value_name = "N", env = "MESHMON_AGENT_BATCH_MAX_RECORDS")]
    pub batch_max_records: Option<usize>,

    /// A batch also closes when its first record has waited this long (whichever limit comes
    /// first) [default: 1s]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_BATCH_MAX_DELAY", value_parser = parse_duration)]
    pub batch_max_delay: Option<Duration>,

    /// Closed batches kept in memory waiting to be sent; when full, pushes get backpressure
    /// (gRPC waits, HTTP answers 503) and plugin samples are dropped and counted [default: 1024]
    #[arg(long, value_name = "N", env = "MESHMON_AGENT_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,

    /// Batches sent to the aggregator and not yet acknowledged, at most [default: 64]
    #[arg(long, value_name = "N", env = "MESHMON_AGENT_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,

    /// Largest HTTP push body in bytes; larger bodies are answered 413 [default: 8388608 (8 MiB)]
    #[arg(long, value_name = "BYTES", env = "MESHMON_AGENT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Directory for durable state (the batch sequence reservation) [default: ./meshmon-agent-state]
    #[arg(long, value_name = "DIR", env = "MESHMON_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// On SIGTERM or Ctrl-C, how long to wait for queued and in-flight batches to be acknowledged
    /// before giving up (exit status 3) [default: 30s]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// Whether the system plugin collects host metrics (true or false) [default: true]
    #[arg(long, value_name = "BOOL", env = "MESHMON_AGENT_PLUGINS_SYSTEM_ENABLED")]
    pub system_enabled: Option<bool>,

    /// Time between two samples of the system plugin [default: 10s]
    #[arg(long, value_name = "DURATION", env = "MESHMON_AGENT_PLUGINS_SYSTEM_INTERVAL", value_parser = parse_duration)]
    pub system_interval: Option<Duration>,

    /// Log filter, in tracing's env-filter syntax (e.g. info, meshmon_agent=debug) [default: info]
    #[arg(long, value_name = "FILTER", env = "MESHMON_AGENT_LOG")]
    pub log: Option<String>,

    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,

    /// Once listening, print the bound addresses as one JSON line on stdout
    /// ({"grpc":..,"http":..,"metrics":..}); useful with port 0
    #[arg(long)]
    pub print_addresses: bool,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("tag {text:?} is not KEY=VALUE")),
    }
}

impl Cli {
    /// The effective configuration: file (if any), then environment and flags (and the SASL
    /// password from `MESHMON_AGENT_KAFKA_SASL_PASSWORD`), validated.
    ///
    /// # Errors
    /// [`ConfigError`] if the file cannot be read or parsed, or a setting is invalid.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        if let Some(p) = std::env::var_os(SASL_PASSWORD_ENV) {
            let p = p.into_string().map_err(|_| ConfigError::invalid(SASL_PASSWORD_ENV, "is not valid UTF-8"))?;
            config.kafka.sasl_password = Some(Secret::new(p));
        }
        config.validate()?;
        Ok(config)
    }

    /// Overrides `config` with every setting given by an environment variable or flag.
    pub fn apply(&self, config: &mut Config) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut config.agent_id, &self.agent_id);
        set(&mut config.cluster, &self.cluster);
        set(&mut config.node, &self.node);
        for (k, v) in &self.tags {
            config.tags.insert(k.clone(), v.clone());
        }
        set(&mut config.output_kind, &self.output_kind);
        set(&mut config.output, &self.output);
        if !self.kafka_brokers.is_empty() {
            config.kafka.brokers = self.kafka_brokers.iter().map(|b| b.trim().to_owned()).collect();
        }
        set(&mut config.kafka.topic, &self.kafka_topic);
        set(&mut config.kafka.compression, &self.kafka_compression);
        set(&mut config.kafka.linger, &self.kafka_linger);
        set(&mut config.kafka.delivery_timeout, &self.kafka_delivery_timeout);
        set(&mut config.kafka.message_max_bytes, &self.kafka_message_max_bytes);
        for (k, v) in &self.kafka_properties {
            config.kafka.properties.insert(k.clone(), v.clone());
        }
        if let Some(p) = &self.kafka_sasl_password_file {
            config.kafka.sasl_password_file = Some(p.clone());
        }
        set(&mut config.spool.max_bytes, &self.spool_max_bytes);
        set(&mut config.spool.segment_bytes, &self.spool_segment_bytes);
        set(&mut config.spool.when_full, &self.spool_when_full);
        set(&mut config.spool.fsync_interval, &self.spool_fsync_interval);
        set(&mut config.grpc_listen, &self.grpc_listen);
        set(&mut config.http_listen, &self.http_listen);
        set(&mut config.metrics_listen, &self.metrics_listen);
        set(&mut config.batch_max_records, &self.batch_max_records);
        set(&mut config.batch_max_delay, &self.batch_max_delay);
        set(&mut config.queue_capacity, &self.queue_capacity);
        set(&mut config.max_in_flight, &self.max_in_flight);
        set(&mut config.max_body_bytes, &self.max_body_bytes);
        set(&mut config.state_dir, &self.state_dir);
        set(&mut config.shutdown_timeout, &self.shutdown_timeout);
        set(&mut config.plugins.system.enabled, &self.system_enabled);
        set(&mut config.plugins.system.interval, &self.system_interval);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_file_and_tags_merge() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            "cluster = \"from-file\"\nnode = \"n-file\"\nbatch_max_records = 5\n[tags]\na = \"1\"\nb = \"2\"\n"
        )
        .unwrap();
        let path = file.path().to_str().unwrap().to_owned();
        let cli = Cli::try_parse_from([
            "meshmon-agent",
            "--config",
            &path,
            "--cluster",
            "from-flag",
            "--tag",
            "b=20,c=30",
            "--tag",
            "d=4",
            "--batch-max-delay",
            "250ms",
            "--system-enabled",
            "false",
        ])
        .unwrap();
        let c = cli.load_config().unwrap();
        assert_eq!(c.cluster, "from-flag");
        assert_eq!(c.node, "n-file");
        assert_eq!(c.batch_max_records, 5);
        assert_eq!(c.batch_max_delay, Duration::from_millis(250));
        assert!(!c.plugins.system.enabled);
        let tags: Vec<(&str, &str)> = c.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(tags, vec![("a", "1"), ("b", "20"), ("c", "30"), ("d", "4")]);
    }

    #[test]
    fn kafka_and_spool_flags() {
        let cli = Cli::try_parse_from([
            "meshmon-agent",
            "--output-kind",
            "kafka",
            "--kafka-brokers",
            "k1:9092,k2:9092",
            "--kafka-topic",
            "t1",
            "--kafka-compression",
            "zstd",
            "--kafka-delivery-timeout",
            "5s",
            "--kafka-property",
            "security.protocol=sasl_plaintext",
            "--spool-max-bytes",
            "1000000",
            "--spool-segment-bytes",
            "100000",
            "--spool-when-full",
            "newest",
            "--spool-fsync-interval",
            "0s",
        ])
        .unwrap();
        let c = cli.load_config().unwrap();
        assert_eq!(c.output_kind, OutputKind::Kafka);
        assert_eq!(c.kafka.brokers, ["k1:9092", "k2:9092"]);
        assert_eq!((c.kafka.topic.as_str(), c.kafka.compression), ("t1", Compression::Zstd));
        assert_eq!(c.kafka.delivery_timeout, Duration::from_secs(5));
        assert_eq!(c.kafka.properties.get("security.protocol").map(String::as_str), Some("sasl_plaintext"));
        assert_eq!(
            (c.spool.max_bytes, c.spool.segment_bytes, c.spool.when_full),
            (1_000_000, 100_000, WhenFull::Newest)
        );
        assert_eq!(c.spool.fsync_interval, Duration::ZERO);
        let cli = Cli::try_parse_from(["meshmon-agent", "--kafka-property", "sasl.password=hunter2"]).unwrap();
        let e = cli.load_config().unwrap_err().to_string();
        assert!(e.contains("kafka.properties") && !e.contains("hunter2"), "{e}");
        let e = Cli::try_parse_from(["meshmon-agent", "--output-kind", "pigeon"]).unwrap_err().to_string();
        assert!(e.contains("--output-kind"), "{e}");
    }

    #[test]
    fn bad_flag_values_are_refused_with_the_flag_name() {
        let e = Cli::try_parse_from(["meshmon-agent", "--batch-max-delay", "soon"]).unwrap_err().to_string();
        assert!(e.contains("--batch-max-delay"), "{e}");
        let e = Cli::try_parse_from(["meshmon-agent", "--tag", "novalue"]).unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let cli = Cli::try_parse_from(["meshmon-agent", "--batch-max-records", "0"]).unwrap();
        let e = cli.load_config().unwrap_err().to_string();
        assert!(e.contains("`batch_max_records`"), "{e}");
    }
}

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

use crate::config::{Config, ConfigError};
use crate::duration::parse_duration;

/// meshmon host agent: collects metric records (pushed by applications over gRPC or HTTP, or
/// read by its plugins), batches them and streams the batches to the meshmon aggregator.
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
    after_help = "Exit status: 0 after a complete flush on SIGTERM/Ctrl-C; 1 on a start-up error (configuration, \
                  state directory, busy port); 2 on a command-line error; 3 when the shutdown timeout (or a second \
                  signal) left batches undelivered."
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

    /// gRPC URL of the aggregator to send batches to [default: http://127.0.0.1:7700]
    #[arg(long, value_name = "URL", env = "MESHMON_AGENT_OUTPUT")]
    pub output: Option<String>,

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
    /// The effective configuration: file (if any), then environment and flags, validated.
    ///
    /// # Errors
    /// [`ConfigError`] if the file cannot be read or parsed, or a setting is invalid.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
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
        set(&mut config.output, &self.output);
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

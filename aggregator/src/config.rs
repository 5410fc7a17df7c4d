//! The aggregator's configuration: TOML file, then `MESHMON_*` environment overrides, then
//! command-line flags (applied by the binary).
//!
//! Role: one serde struct with defaults for every field, durations as text (`"10s"`), its
//! validation, and its translation to [`PipelineConfig`]. `aggregator/meshmon.example.toml`
//! documents every field. Touches only the file it is given and the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::engine::time::parse_duration;
use crate::engine::{DimensionField, DimensionSpec, EngineConfig, Limits, Nanos, TagDimensions, WindowSpec};
use crate::kafka::{CheckpointSection, KafkaSection};
use crate::runtime::PipelineConfig;
use crate::sinks::influxdb::InfluxDbSection;
use crate::store::StoreConfig;

/// Everything `meshmon-aggregator serve` needs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Listening addresses.
    pub listen: ListenConfig,
    /// The window engine.
    pub engine: EngineSection,
    /// The embedded store.
    pub store: StoreSection,
    /// Kafka mode (on when `kafka.brokers` is set): input topic, outputs, consumer group.
    pub kafka: KafkaSection,
    /// Checkpoints of window state and offsets (Kafka mode).
    pub checkpoint: CheckpointSection,
    /// InfluxDB output of aggregates and self-metrics (on when `influxdb.url` is set).
    pub influxdb: InfluxDbSection,
}

/// Listening addresses (loopback by default).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// gRPC `Ingest` for agents.
    pub grpc: SocketAddr,
    /// HTTP: JSON API, `/metrics`, the built-in page.
    pub http: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig { grpc: SocketAddr::from(([127, 0, 0, 1], 7700)), http: SocketAddr::from(([127, 0, 0, 1], 7780)) }
    }
}

/// The `[engine]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// `tumbling:SIZE[+OFFSET]`, `sliding:SIZE/SLIDE[+OFFSET]` or `session:GAP`.
    #[serde(deserialize_with = "window_spec")]
    pub window: WindowSpec,
    /// Bounded out-of-orderness.
    #[serde(deserialize_with = "duration")]
    pub out_of_orderness: Nanos,
    /// Allowed lateness after firing.
    #[serde(deserialize_with = "duration")]
    pub allowed_lateness: Nanos,
    /// Inputs silent this long stop holding the watermark back (`"0"`: never idle).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Nanos,
    /// How long a series without window state stays registered.
    #[serde(deserialize_with = "duration")]
    pub series_ttl: Nanos,
    /// Window shards (threads); 0 = one per core.
    pub shards: usize,
    /// Dimensions.
    pub dimensions: DimensionsSection,
    /// Input limits.
    pub limits: LimitsSection,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        EngineSection {
            window: e.window,
            out_of_orderness: e.out_of_orderness,
            allowed_lateness: e.allowed_lateness,
            idle_timeout: e.idle_timeout.unwrap_or(0),
            series_ttl: e.series_ttl,
            shards: 0,
            dimensions: DimensionsSection::default(),
            limits: LimitsSection::default(),
        }
    }
}

/// The `[engine.dimensions]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DimensionsSection {
    /// One series per metric for the whole fleet.
    pub fleet: bool,
    /// One series per (metric, cluster).
    pub cluster: bool,
    /// One series per (metric, node).
    pub node: bool,
    /// `"all"`, `"none"`, or a list of tag keys.
    pub tags: TagsSetting,
    /// Dimension sets, e.g. `[["cluster", "region"]]`.
    pub sets: Vec<Vec<String>>,
}

impl Default for DimensionsSection {
    fn default() -> Self {
        DimensionsSection {
            fleet: true,
            cluster: true,
            node: true,
            tags: TagsSetting::Word("all".into()),
            sets: vec![],
        }
    }
}

/// `tags = "all" | "none" | ["k1", "k2"]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TagsSetting {
    /// `"all"` or `"none"`.
    Word(String),
    /// Only these keys.
    Keys(Vec<String>),
}

/// The `[engine.limits]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Longest metric, cluster or node name (bytes).
    pub max_name_len: usize,
    /// Most tags per record.
    pub max_tags: usize,
    /// Longest tag key or value (bytes).
    pub max_tag_len: usize,
    /// Most live series.
    pub max_series: usize,
    /// Event times further ahead of now are invalid (`"0"`: no bound).
    #[serde(deserialize_with = "duration")]
    pub max_future: Nanos,
    /// Event times further behind now are invalid (`"0"`: no bound).
    #[serde(deserialize_with = "duration")]
    pub max_past: Nanos,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = Limits::default();
        LimitsSection {
            max_name_len: l.max_name_len,
            max_tags: l.max_tags,
            max_tag_len: l.max_tag_len,
            max_series: l.max_series,
            max_future: l.max_future.unwrap_or(0),
            max_past: l.max_past.unwrap_or(0),
        }
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Directory of the embedded store (`store.redb` inside).
    pub data_dir: PathBuf,
    /// Raw rows are grouped by event time aligned to this (fixed when the store is created).
    #[serde(deserialize_with = "duration")]
    pub bucket_size: Nanos,
    /// Raw rows are spread over this many salts (fixed when the store is created).
    pub salt_buckets: u8,
    /// Data older than this is deleted.
    #[serde(deserialize_with = "duration")]
    pub retention: Nanos,
}

impl Default for StoreSection {
    fn default() -> Self {
        let s = StoreConfig::default();
        StoreSection {
            data_dir: PathBuf::from("meshmon-data"),
            bucket_size: s.bucket_size,
            salt_buckets: s.salt_buckets,
            retention: s.retention,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn window_spec<'de, D: Deserializer<'de>>(d: D) -> Result<WindowSpec, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The configuration could not be read or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// An environment variable holds an unusable value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The settings do not fit together.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Environment variables read by [`AggregatorConfig::apply_env`], with what they set.
pub const ENV_VARS: [(&str, &str); 9] = [
    ("MESHMON_GRPC_LISTEN", "listen.grpc"),
    ("MESHMON_HTTP_LISTEN", "listen.http"),
    ("MESHMON_DATA_DIR", "store.data_dir"),
    ("MESHMON_WINDOW", "engine.window"),
    ("MESHMON_SHARDS", "engine.shards"),
    ("MESHMON_RETENTION", "store.retention"),
    ("MESHMON_KAFKA_BROKERS", "kafka.brokers"),
    ("MESHMON_KAFKA_INPUT_TOPIC", "kafka.input_topic"),
    ("MESHMON_KAFKA_GROUP_ID", "kafka.group_id"),
];

impl AggregatorConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<AggregatorConfig, ConfigFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses TOML text (`origin` names it in errors).
    pub fn from_toml(text: &str, origin: &Path) -> Result<AggregatorConfig, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::Parse { path: origin.to_owned(), message: e.to_string() })
    }

    /// Applies `MESHMON_*` overrides read through `var` (e.g. `|k| std::env::var(k).ok()`).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigFileError> {
        fn parse<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigFileError>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e: T::Err| ConfigFileError::Env { name, message: e.to_string() })
        }
        if let Some(v) = var("MESHMON_GRPC_LISTEN") {
            self.listen.grpc = parse("MESHMON_GRPC_LISTEN", &v)?;
        }
        if let Some(v) = var("MESHMON_HTTP_LISTEN") {
            self.listen.http = parse("MESHMON_HTTP_LISTEN", &v)?;
        }
        if let Some(v) = var("MESHMON_DATA_DIR") {
            self.store.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("MESHMON_WINDOW") {
            self.engine.window = parse("MESHMON_WINDOW", &v)?;
        }
        if let Some(v) = var("MESHMON_SHARDS") {
            self.engine.shards = parse("MESHMON_SHARDS", &v)?;
        }
        if let Some(v) = var("MESHMON_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = var("MESHMON_KAFKA_INPUT_TOPIC") {
            self.kafka.input_topic = v;
        }
        if let Some(v) = var("MESHMON_KAFKA_GROUP_ID") {
            self.kafka.group_id = v;
        }
        if let Some(v) = var("MESHMON_RETENTION") {
            self.store.retention = parse_duration(&v)
                .map_err(|e| ConfigFileError::Env { name: "MESHMON_RETENTION", message: e.to_string() })?;
        }
        Ok(())
    }

    /// The engine configuration these settings describe.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigFileError> {
        let e = &self.engine;
        let tags = match &e.dimensions.tags {
            TagsSetting::Word(w) if w == "all" => TagDimensions::All,
            TagsSetting::Word(w) if w == "none" => TagDimensions::None,
            TagsSetting::Word(w) => {
                return Err(ConfigFileError::Invalid(format!(
                    "engine.dimensions.tags must be \"all\", \"none\" or a list of keys, not {w:?}"
                )));
            }
            TagsSetting::Keys(keys) => TagDimensions::Only(keys.clone()),
        };
        let sets = e
            .dimensions
            .sets
            .iter()
            .map(|set| set.iter().map(|f| f.parse::<DimensionField>()).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ConfigFileError::Invalid(err.to_string()))?;
        let bound = |v: Nanos| (v > 0).then_some(v);
        let config = EngineConfig {
            window: e.window,
            out_of_orderness: e.out_of_orderness,
            allowed_lateness: e.allowed_lateness,
            idle_timeout: bound(e.idle_timeout),
            series_ttl: e.series_ttl,
            dimensions: DimensionSpec {
                fleet: e.dimensions.fleet,
                cluster: e.dimensions.cluster,
                node: e.dimensions.node,
                tags,
                sets,
            },
            limits: Limits {
                max_name_len: e.limits.max_name_len,
                max_tags: e.limits.max_tags,
                max_tag_len: e.limits.max_tag_len,
                max_series: e.limits.max_series,
                max_future: bound(e.limits.max_future),
                max_past: bound(e.limits.max_past),
            },
        };
        config.validate().map_err(|err| ConfigFileError::Invalid(err.to_string()))?;
        Ok(config)
    }

    /// The checkpoint file: `checkpoint.path`, relative to `store.data_dir` unless absolute.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.store.data_dir.join(&self.checkpoint.path)
    }

    /// The pipeline configuration these settings describe.
    pub fn pipeline_config(&self) -> Result<PipelineConfig, ConfigFileError> {
        let store = StoreConfig {
            bucket_size: self.store.bucket_size,
            salt_buckets: self.store.salt_buckets,
            retention: self.store.retention,
        };
        store.layout().map_err(|e| ConfigFileError::Invalid(e.to_string()))?;
        Ok(PipelineConfig {
            engine: self.engine_config()?,
            shards: self.engine.shards,
            store_path: self.store.data_dir.join("store.redb"),
            store,
            tick_every: Duration::from_millis(500),
            flush_every: Duration::from_secs(1),
            retention_every: Duration::from_secs(60),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn example_file_parses_to_the_defaults_it_documents() {
        let text = include_str!("../meshmon.example.toml");
        let parsed = AggregatorConfig::from_toml(text, Path::new("meshmon.example.toml")).unwrap();
        assert_eq!(parsed, AggregatorConfig::default());
        assert!(parsed.pipeline_config().is_ok());
    }

    #[test]
    fn env_overrides_and_errors_name_the_setting() {
        let mut c = AggregatorConfig::default();
        c.apply_env(|k| match k {
            "MESHMON_WINDOW" => Some("sliding:1m/10s".into()),
            "MESHMON_SHARDS" => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.engine.window.to_string(), "sliding:1m/10s");
        assert_eq!(c.engine.shards, 3);
        let err = c.apply_env(|k| (k == "MESHMON_GRPC_LISTEN").then(|| "nowhere".into())).unwrap_err();
        assert!(err.to_string().contains("MESHMON_GRPC_LISTEN"), "{err}");
    }

    #[test]
    fn bad_files_say_where_and_why() {
        let err = AggregatorConfig::from_toml("[engine]\nwindow = \"tumbling:0s\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("window size"), "{err}");
        let err = AggregatorConfig::from_toml("[engine]\nwindw = \"tumbling:1s\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("windw"), "{err}");
        let c = AggregatorConfig::from_toml("[engine.dimensions]\ntags = \"some\"\n", Path::new("x.toml")).unwrap();
        assert!(c.engine_config().is_err());
        let c = AggregatorConfig::from_toml(
            "[engine.dimensions]\ntags = [\"env\"]\nsets = [[\"cluster\", \"region\"]]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let e = c.engine_config().unwrap();
        assert_eq!(e.dimensions.tags, TagDimensions::Only(vec!["env".into()]));
        assert_eq!(e.dimensions.sets.len(), 1);
    }
}

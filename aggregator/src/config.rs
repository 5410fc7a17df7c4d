//! The aggregator's configuration: TOML file, then `MESHMON_*` environment overrides, then
//! command-line flags (applied by the binary).
//!
//! Role: one serde struct with defaults for every field, durations as text (`"10s"`), its
//! validation, and its translation to [`PipelineConfig`] and, with `store.kind = "hbase"`, to
//! the HBase raw store's [`HbaseSetup`]. `aggregator/meshmon.example.toml` documents every
//! field. Touches only the file it is given and the environment.

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
use crate::store::hbase::{HbaseConfig, HbaseSetup};

/// Everything `meshmon-aggregator serve` needs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Listening addresses.
    pub listen: ListenConfig,
    /// The window engine.
    pub engine: EngineSection,
    /// The embedded store, and where raw records are kept (`kind`, `[store.hbase]`).
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

/// Where raw records are kept (`store.kind`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store's `raw` table (the default).
    #[default]
    Embedded,
    /// An HBase table over Thrift1 (`[store.hbase]`).
    Hbase,
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreKind, String> {
        match s {
            "embedded" => Ok(StoreKind::Embedded),
            "hbase" => Ok(StoreKind::Hbase),
            other => Err(format!("unknown store kind {other:?}: expected \"embedded\" or \"hbase\"")),
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Hbase => "hbase",
        })
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Where raw records are kept: `"embedded"` (default) or `"hbase"`. Aggregates, listings
    /// and dead letters are always in the embedded store.
    pub kind: StoreKind,
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
    /// The HBase raw store (used when `kind = "hbase"`).
    pub hbase: HbaseSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        let s = StoreConfig::default();
        StoreSection {
            kind: StoreKind::Embedded,
            data_dir: PathBuf::from("meshmon-data"),
            bucket_size: s.bucket_size,
            salt_buckets: s.salt_buckets,
            retention: s.retention,
            hbase: HbaseSection::default(),
        }
    }
}

/// The `[store.hbase]` section: the HBase Thrift1 server keeping raw records. The row-key
/// layout is `store.bucket_size` and `store.salt_buckets`, the same design as the embedded
/// store's.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HbaseSection {
    /// The HBase Thrift1 server (`hbase thrift start`), `host:port`.
    pub thrift_address: String,
    /// The raw-record table (`[namespace:]name`).
    pub table: String,
    /// Its column family.
    pub column_family: String,
    /// Create the table when missing; when false a missing table stops the start. An existing
    /// table is always checked: the family must exist and the recorded row-key layout match.
    pub create_table: bool,
    /// Thrift connections (threads) for writes, and as many for drill-downs.
    pub connections: usize,
    /// Rows per `mutateRows` call.
    pub write_batch_rows: usize,
    /// Most rows per `scannerGetList` call.
    pub scan_batch_rows: usize,
    /// Connections one drill-down scans its salts over in parallel.
    pub scan_parallelism: usize,
    /// TCP connect timeout.
    #[serde(deserialize_with = "std_duration")]
    pub connect_timeout: Duration,
    /// Read/write timeout of one Thrift call.
    #[serde(deserialize_with = "std_duration")]
    pub timeout: Duration,
    /// Retries of a write after transient failures; then the aggregator stops (fail-stop).
    pub retries: u32,
    /// First pause between retries (doubling).
    #[serde(deserialize_with = "std_duration")]
    pub retry_backoff: Duration,
    /// Longest pause between retries.
    #[serde(deserialize_with = "std_duration")]
    pub retry_backoff_max: Duration,
}

impl Default for HbaseSection {
    fn default() -> Self {
        let c = HbaseConfig::default();
        HbaseSection {
            thrift_address: "127.0.0.1:9090".into(),
            table: c.table,
            column_family: c.family,
            create_table: true,
            connections: 4,
            write_batch_rows: c.write_batch_rows,
            scan_batch_rows: c.scan_batch_rows,
            scan_parallelism: c.scan_parallelism,
            connect_timeout: c.connect_timeout,
            timeout: c.timeout,
            retries: c.retries,
            retry_backoff: c.retry_backoff,
            retry_backoff_max: c.retry_backoff_max,
        }
    }
}

/// Why `addr` is not `host:port`.
fn host_port_problem(addr: &str) -> Option<String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Some(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() || host.trim() != host {
        return Some(format!("{addr:?}: missing host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{addr:?}: port must be 1..=65535")),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn std_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let nanos = duration(d)?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| serde::de::Error::custom("negative duration"))
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
pub const ENV_VARS: [(&str, &str); 12] = [
    ("MESHMON_GRPC_LISTEN", "listen.grpc"),
    ("MESHMON_HTTP_LISTEN", "listen.http"),
    ("MESHMON_DATA_DIR", "store.data_dir"),
    ("MESHMON_STORE_KIND", "store.kind"),
    ("MESHMON_HBASE_THRIFT_ADDRESS", "store.hbase.thrift_address"),
    ("MESHMON_HBASE_TABLE", "store.hbase.table"),
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
        if let Some(v) = var("MESHMON_STORE_KIND") {
            self.store.kind = parse("MESHMON_STORE_KIND", &v)?;
        }
        if let Some(v) = var("MESHMON_HBASE_THRIFT_ADDRESS") {
            self.store.hbase.thrift_address = v;
        }
        if let Some(v) = var("MESHMON_HBASE_TABLE") {
            self.store.hbase.table = v;
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

    /// The HBase raw store these settings describe: `None` with `store.kind = "embedded"`;
    /// every `[store.hbase]` setting checked with `store.kind = "hbase"`.
    pub fn hbase_setup(&self) -> Result<Option<HbaseSetup>, ConfigFileError> {
        if self.store.kind != StoreKind::Hbase {
            return Ok(None);
        }
        let h = &self.store.hbase;
        let invalid = |key: &str, why: String| ConfigFileError::Invalid(format!("store.hbase.{key}: {why}"));
        if let Some(why) = host_port_problem(&h.thrift_address) {
            return Err(invalid("thrift_address", why));
        }
        if !(1..=64).contains(&h.connections) {
            return Err(invalid("connections", format!("must be 1..=64, not {}", h.connections)));
        }
        let layout = self.store_config().layout().map_err(|e| ConfigFileError::Invalid(e.to_string()))?;
        let retention = u64::try_from(self.store.retention).unwrap_or(0);
        let config = HbaseConfig {
            table: h.table.clone(),
            family: h.column_family.clone(),
            layout,
            write_batch_rows: h.write_batch_rows,
            scan_batch_rows: h.scan_batch_rows,
            scan_parallelism: h.scan_parallelism,
            connect_timeout: h.connect_timeout,
            timeout: h.timeout,
            retries: h.retries,
            retry_backoff: h.retry_backoff,
            retry_backoff_max: h.retry_backoff_max,
            // A table created by the aggregator expires cells after the retention (HBase
            // counts from the write time; the embedded store from the event time).
            ttl: (retention >= 1_000_000_000).then(|| Duration::from_nanos(retention)),
            ..HbaseConfig::default()
        };
        // The dead-letter table is not used by the running aggregator; keep it distinct.
        let config = HbaseConfig { dead_letter_table: format!("{}_dead_letters", config.table), ..config };
        config.validate().map_err(|e| match e {
            crate::store::hbase::HbaseError::Config(why) => ConfigFileError::Invalid(format!("store.hbase: {why}")),
            other => ConfigFileError::Invalid(other.to_string()),
        })?;
        Ok(Some(HbaseSetup {
            address: h.thrift_address.clone(),
            config,
            connections: h.connections,
            create_table: h.create_table,
        }))
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            bucket_size: self.store.bucket_size,
            salt_buckets: self.store.salt_buckets,
            retention: self.store.retention,
        }
    }

    /// The pipeline configuration these settings describe (and, with `store.kind = "hbase"`,
    /// a check of the `[store.hbase]` settings).
    pub fn pipeline_config(&self) -> Result<PipelineConfig, ConfigFileError> {
        let store = self.store_config();
        store.layout().map_err(|e| ConfigFileError::Invalid(e.to_string()))?;
        self.hbase_setup()?;
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
    fn store_kind_selects_the_raw_store_and_hbase_settings_are_checked() {
        let c = AggregatorConfig::default();
        assert_eq!(c.store.kind, StoreKind::Embedded);
        assert!(c.hbase_setup().unwrap().is_none(), "embedded by default");

        let text = r#"
[store]
kind = "hbase"
salt_buckets = 8
retention = "2d"

[store.hbase]
thrift_address = "hbase-thrift.internal:9090"
table = "monitoring:raw"
column_family = "rr"
create_table = false
connections = 3
write_batch_rows = 500
scan_batch_rows = 2000
scan_parallelism = 2
connect_timeout = "2s"
timeout = "15s"
retries = 4
retry_backoff = "50ms"
retry_backoff_max = "2s"
"#;
        let c = AggregatorConfig::from_toml(text, Path::new("h.toml")).unwrap();
        let setup = c.hbase_setup().unwrap().unwrap();
        assert_eq!(setup.address, "hbase-thrift.internal:9090");
        assert_eq!((setup.connections, setup.create_table), (3, false));
        let h = &setup.config;
        assert_eq!((h.table.as_str(), h.family.as_str()), ("monitoring:raw", "rr"));
        assert_eq!((h.write_batch_rows, h.scan_batch_rows, h.retries, h.scan_parallelism), (500, 2000, 4, 2));
        assert_eq!((h.connect_timeout, h.timeout), (Duration::from_secs(2), Duration::from_secs(15)));
        assert_eq!((h.retry_backoff, h.retry_backoff_max), (Duration::from_millis(50), Duration::from_secs(2)));
        assert_eq!(h.layout.salt_buckets(), 8, "the layout is the [store] one");
        assert_eq!(h.ttl, Some(Duration::from_secs(2 * 86_400)), "created tables expire after the retention");
        assert!(c.pipeline_config().is_ok());

        // Unknown kinds and keys are refused with what is allowed.
        let err = AggregatorConfig::from_toml("[store]\nkind = \"cassandra\"\n", Path::new("x.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cassandra") && text.contains("embedded") && text.contains("hbase"), "{text}");
        let err =
            AggregatorConfig::from_toml("[store.hbase]\nthrift_adress = \"h:1\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("thrift_adress"), "{err}");
        let err = AggregatorConfig::from_toml("[store.hbase]\ntimeout = \"soon\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");

        // Invalid values name the setting, only when HBase is selected.
        for (toml_line, key) in [
            ("thrift_address = \"nohost\"", "store.hbase.thrift_address"),
            ("thrift_address = \"h:0\"", "store.hbase.thrift_address"),
            ("thrift_address = \":9090\"", "store.hbase.thrift_address"),
            ("connections = 0", "store.hbase.connections"),
            ("table = \"bad table\"", "table"),
            ("column_family = \"r:v\"", "column family"),
            ("write_batch_rows = 0", "batch sizes"),
            ("scan_parallelism = 65", "scan_parallelism"),
            ("retry_backoff = \"1m\"", "retry_backoff"),
            ("timeout = \"0s\"", "timeouts"),
        ] {
            let text = format!("[store.hbase]\n{toml_line}\n");
            let c = AggregatorConfig::from_toml(&text, Path::new("x.toml")).unwrap();
            assert!(c.pipeline_config().is_ok(), "{toml_line}: ignored with the embedded store");
            let c = AggregatorConfig::from_toml(&format!("[store]\nkind = \"hbase\"\n{text}"), Path::new("x.toml"))
                .unwrap();
            let err = c.pipeline_config().unwrap_err().to_string();
            assert!(err.contains(key), "{toml_line}: {err:?} should name {key:?}");
        }

        // The environment selects the store and the server.
        let mut c = AggregatorConfig::default();
        c.apply_env(|k| match k {
            "MESHMON_STORE_KIND" => Some("hbase".into()),
            "MESHMON_HBASE_THRIFT_ADDRESS" => Some("10.0.0.7:9090".into()),
            "MESHMON_HBASE_TABLE" => Some("raw2".into()),
            _ => None,
        })
        .unwrap();
        let setup = c.hbase_setup().unwrap().unwrap();
        assert_eq!((setup.address.as_str(), setup.config.table.as_str()), ("10.0.0.7:9090", "raw2"));
        let err = c.apply_env(|k| (k == "MESHMON_STORE_KIND").then(|| "redis".into())).unwrap_err();
        assert!(err.to_string().contains("MESHMON_STORE_KIND") && err.to_string().contains("redis"), "{err}");
        assert!(ENV_VARS.iter().any(|(v, k)| *v == "MESHMON_STORE_KIND" && *k == "store.kind"));
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

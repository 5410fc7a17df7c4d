//! Plugin configuration: the `[plugins]` table and the fields every plugin instance shares.
//!
//! Role: [`PluginsConfig`] lists the configured instances of each plugin kind
//! (`[plugins.system]` is one table; every other kind is an array of tables, e.g.
//! `[[plugins.tcp]]`, so one agent can watch several servers of a kind). [`Instance`] holds what
//! every instance has — `name`, `enabled`, `interval`, `timeout` — next to its kind's own
//! [`PluginSettings`], and refuses unknown keys in either. Secrets (database and broker passwords)
//! are never values in this file: [`SecretRef`] names an environment variable or a file. Pure:
//! touches nothing but the secret files it is asked to read.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{ConfigError, MAX_NAME_LEN};
use crate::duration::{format_duration, parse_duration, serde_text};
use crate::plugins::{
    ErrorReason, PluginError, http, kafka, log, mysql, postgresql, process, prometheus, rabbitmq, redis, statsd, tcp,
};

/// What each plugin kind's own settings provide to the shared instance handling.
pub trait PluginSettings: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Default {
    /// The kind, as spelled in `[[plugins.<kind>]]` and in the `kind` tag of health records.
    const KIND: &'static str;
    /// Time between two collections unless the instance sets `interval`.
    const DEFAULT_INTERVAL: Duration;
    /// Longest a collection may take unless the instance sets `timeout`.
    const DEFAULT_TIMEOUT: Duration;

    /// Checks the settings; `field` is the instance's path (`plugins.tcp[0]`) for messages.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    fn validate(&self, field: &str) -> Result<(), ConfigError>;
}

/// One configured plugin instance: the shared fields and the kind's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance<T> {
    /// Instance name, unique among all plugins (tag `plugin` of its health records and
    /// self-metrics). Default: the kind, or `<kind>-<n>` when the kind has several instances.
    pub name: String,
    /// Whether the instance runs.
    pub enabled: bool,
    /// Time between two collections.
    #[serde(with = "serde_text")]
    pub interval: Duration,
    /// Longest one collection may take; a slower one is abandoned, counted as a timeout and
    /// makes the instance unhealthy.
    #[serde(with = "serde_text")]
    pub timeout: Duration,
    /// The kind's own settings.
    #[serde(flatten)]
    pub settings: T,
}

impl<T: PluginSettings> Default for Instance<T> {
    fn default() -> Self {
        Instance {
            name: String::new(),
            enabled: true,
            interval: T::DEFAULT_INTERVAL,
            timeout: T::DEFAULT_TIMEOUT,
            settings: T::default(),
        }
    }
}

impl<T: PluginSettings> Instance<T> {
    /// An enabled instance with the kind's default interval and timeout.
    pub fn new(name: impl Into<String>, settings: T) -> Instance<T> {
        Instance { name: name.into(), settings, ..Instance::default() }
    }
}

fn take_duration(table: &mut toml::Table, key: &str, default: Duration) -> Result<Duration, String> {
    match table.remove(key) {
        None => Ok(default),
        Some(toml::Value::String(s)) => parse_duration(&s).map_err(|e| format!("`{key}`: {e}")),
        Some(other) => Err(format!("`{key}` must be a duration string such as \"10s\", not {}", other.type_str())),
    }
}

impl<'de, T: PluginSettings> Deserialize<'de> for Instance<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let name = match table.remove("name") {
            None => String::new(),
            Some(toml::Value::String(s)) => s,
            Some(other) => return Err(D::Error::custom(format!("`name` must be a string, not {}", other.type_str()))),
        };
        let enabled = match table.remove("enabled") {
            None => true,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                return Err(D::Error::custom(format!("`enabled` must be true or false, not {}", other.type_str())));
            }
        };
        let interval = take_duration(&mut table, "interval", T::DEFAULT_INTERVAL).map_err(D::Error::custom)?;
        let timeout = take_duration(&mut table, "timeout", T::DEFAULT_TIMEOUT).map_err(D::Error::custom)?;
        let settings = T::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(Instance { name, enabled, interval, timeout, settings })
    }
}

/// A secret (password, token) read from an environment variable or a file — never written in
/// the configuration file or passed on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretRef {
    /// Environment variable holding the secret (wins over `file`).
    pub env: Option<String>,
    /// File holding the secret (trailing newline removed).
    pub file: Option<PathBuf>,
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The named environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl SecretRef {
    /// Whether a secret is configured at all.
    pub fn is_set(&self) -> bool {
        self.env.is_some() || self.file.is_some()
    }

    /// The secret, `None` when none is configured.
    ///
    /// # Errors
    /// [`SecretError`] when the variable is unset or the file unreadable.
    pub fn read(&self) -> Result<Option<String>, SecretError> {
        if let Some(var) = &self.env {
            return std::env::var(var).map(Some).map_err(|_| SecretError::MissingEnv(var.clone()));
        }
        if let Some(path) = &self.file {
            let text =
                std::fs::read_to_string(path).map_err(|source| SecretError::File { path: path.clone(), source })?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        Ok(None)
    }

    /// [`SecretRef::read`] for a plugin: a failure becomes a [`PluginError`] naming `what`
    /// (`io` for an unreadable file, `other` for an unset variable).
    ///
    /// # Errors
    /// [`PluginError`] when the variable is unset or the file unreadable.
    pub fn read_for(&self, what: &str) -> Result<Option<String>, PluginError> {
        self.read().map_err(|e| {
            let reason = match e {
                SecretError::File { .. } => ErrorReason::Io,
                SecretError::MissingEnv(_) => ErrorReason::Other,
            };
            PluginError::new(reason, format!("cannot read the {what}: {e}"))
        })
    }
}

/// Checks the connection settings the database plugins share (`host`, `port`, `user`,
/// `connect_timeout`) of the instance at `field`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the setting.
pub fn check_server(
    field: &str,
    host: &str,
    port: u16,
    user: &str,
    connect_timeout: Duration,
) -> Result<(), ConfigError> {
    if host.trim().is_empty() {
        return Err(ConfigError::invalid(format!("{field}.host"), "must not be empty"));
    }
    if port == 0 {
        return Err(ConfigError::invalid(format!("{field}.port"), "must be 1..65535"));
    }
    if user.is_empty() {
        return Err(ConfigError::invalid(format!("{field}.user"), "must not be empty"));
    }
    if connect_timeout.is_zero() {
        return Err(ConfigError::invalid(format!("{field}.connect_timeout"), "must be positive"));
    }
    Ok(())
}

/// Checks a metric-name prefix (`prefix` of the prometheus and statsd plugins): empty, or at
/// most `max_len` bytes without blanks or control characters, not starting or ending with `.`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_prefix(field: &str, prefix: &str, max_len: usize) -> Result<(), ConfigError> {
    let ok = prefix.is_empty()
        || (prefix.len() <= max_len
            && !prefix.starts_with('.')
            && !prefix.ends_with('.')
            && !prefix.chars().any(|c| c.is_control() || c.is_whitespace()));
    if ok {
        return Ok(());
    }
    Err(ConfigError::invalid(
        field,
        format!(
            "must be at most {max_len} bytes without blanks or control characters, not starting or ending with '.'"
        ),
    ))
}

/// The `[plugins]` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Host metrics (CPU, memory, disks, network, ...).
    pub system: SystemPluginConfig,
    /// Matched processes: CPU, RSS, threads, open fds, up/down.
    pub process: Vec<Instance<process::ProcessSettings>>,
    /// TCP connect latency and up/down per `host:port`.
    pub tcp: Vec<Instance<tcp::TcpSettings>>,
    /// HTTP probes: status, latency, optional body match.
    pub http: Vec<Instance<http::HttpSettings>>,
    /// Log files: rule match counts and the matched lines as raw records.
    pub log: Vec<Instance<log::LogSettings>>,
    /// Kafka: partition high watermarks and consumer-group lag.
    pub kafka: Vec<Instance<kafka::KafkaSettings>>,
    /// Redis `INFO`.
    pub redis: Vec<Instance<redis::RedisSettings>>,
    /// RabbitMQ management API.
    pub rabbitmq: Vec<Instance<rabbitmq::RabbitmqSettings>>,
    /// PostgreSQL statistics views.
    pub postgresql: Vec<Instance<postgresql::PostgresqlSettings>>,
    /// MySQL / MariaDB status variables.
    pub mysql: Vec<Instance<mysql::MysqlSettings>>,
    /// Prometheus text-format scrapes.
    pub prometheus: Vec<Instance<prometheus::PrometheusSettings>>,
    /// StatsD UDP listener.
    pub statsd: Vec<Instance<statsd::StatsdSettings>>,
}

/// The system metrics plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemPluginConfig {
    /// Whether to collect host metrics.
    pub enabled: bool,
    /// Time between two samples.
    #[serde(with = "serde_text")]
    pub interval: Duration,
}

impl Default for SystemPluginConfig {
    fn default() -> Self {
        SystemPluginConfig { enabled: true, interval: Duration::from_secs(10) }
    }
}

/// Fills default names and checks one kind's instances; `names` collects every name seen so
/// far (names must be unique across kinds).
fn check_kind<T: PluginSettings>(
    instances: &mut [Instance<T>],
    names: &mut std::collections::BTreeSet<String>,
) -> Result<(), ConfigError> {
    let several = instances.len() > 1;
    for (i, inst) in instances.iter_mut().enumerate() {
        let field = format!("plugins.{}[{i}]", T::KIND);
        if inst.name.is_empty() {
            inst.name = if several { format!("{}-{i}", T::KIND) } else { T::KIND.to_owned() };
        }
        if inst.name.len() > MAX_NAME_LEN || inst.name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                format!("must be at most {MAX_NAME_LEN} bytes without control characters"),
            ));
        }
        if !names.insert(inst.name.clone()) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                format!("{:?} is already the name of another plugin instance; names must be unique", inst.name),
            ));
        }
        let day = Duration::from_secs(24 * 3600);
        if inst.interval < Duration::from_millis(10) || inst.interval > day {
            return Err(ConfigError::invalid(
                format!("{field}.interval"),
                format!("{} is outside 10ms..24h", format_duration(inst.interval)),
            ));
        }
        if inst.timeout < Duration::from_millis(1) || inst.timeout > day {
            return Err(ConfigError::invalid(
                format!("{field}.timeout"),
                format!("{} is outside 1ms..24h", format_duration(inst.timeout)),
            ));
        }
        inst.settings.validate(&field)?;
    }
    Ok(())
}

impl PluginsConfig {
    /// Fills default instance names and checks every instance.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first wrong setting.
    pub fn normalize(&mut self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::from(["system".to_owned()]);
        check_kind(&mut self.process, &mut names)?;
        check_kind(&mut self.tcp, &mut names)?;
        check_kind(&mut self.http, &mut names)?;
        check_kind(&mut self.log, &mut names)?;
        check_kind(&mut self.kafka, &mut names)?;
        check_kind(&mut self.redis, &mut names)?;
        check_kind(&mut self.rabbitmq, &mut names)?;
        check_kind(&mut self.postgresql, &mut names)?;
        check_kind(&mut self.mysql, &mut names)?;
        check_kind(&mut self.prometheus, &mut names)?;
        check_kind(&mut self.statsd, &mut names)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn shared_fields_and_settings_parse_and_unknown_keys_are_refused() {
        let mut c: PluginsConfig = toml::from_str(
            r#"
            [[tcp]]
            interval = "5s"
            timeout = "250ms"
            targets = ["127.0.0.1:1"]
            [[tcp]]
            name = "db"
            enabled = false
            targets = ["127.0.0.1:2"]
            "#,
        )
        .expect("valid");
        c.normalize().expect("valid");
        assert_eq!(c.tcp[0].name, "tcp-0");
        assert_eq!(c.tcp[0].interval, Duration::from_secs(5));
        assert_eq!(c.tcp[0].timeout, Duration::from_millis(250));
        assert_eq!(c.tcp[1].name, "db");
        assert!(!c.tcp[1].enabled);
        assert_eq!(c.tcp[1].interval, tcp::TcpSettings::DEFAULT_INTERVAL);

        let e = toml::from_str::<PluginsConfig>("[[tcp]]\ntargets = []\ntargest = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("targest"), "{e}");
        let e = toml::from_str::<PluginsConfig>("[[tcp]]\ninterval = 5\n").expect_err("bad type");
        assert!(e.to_string().contains("interval"), "{e}");
    }

    #[test]
    fn names_must_be_unique_and_limits_hold() {
        let mut c: PluginsConfig =
            toml::from_str("[[tcp]]\nname = \"x\"\ntargets = [\"a:1\"]\n[[tcp]]\nname = \"x\"\ntargets = [\"a:2\"]\n")
                .expect("parses");
        let e = c.normalize().expect_err("duplicate");
        assert!(e.to_string().contains("plugins.tcp[1].name"), "{e}");
        let mut c: PluginsConfig = toml::from_str("[[tcp]]\nname = \"system\"\ntargets = [\"a:1\"]\n").expect("parses");
        assert!(c.normalize().is_err(), "system is taken by the system plugin");
        let mut c: PluginsConfig =
            toml::from_str("[[tcp]]\ninterval = \"1ms\"\ntargets = [\"a:1\"]\n").expect("parses");
        let e = c.normalize().expect_err("too short");
        assert!(e.to_string().contains("plugins.tcp[0].interval"), "{e}");
    }

    #[test]
    fn secrets_come_from_env_or_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").expect("write");
        let s = SecretRef { env: None, file: Some(path) };
        assert_eq!(s.read().expect("reads").as_deref(), Some("s3cret"));
        let s = SecretRef { env: Some("MESHMON_TEST_SURELY_UNSET_VARIABLE".into()), file: None };
        assert!(matches!(s.read(), Err(SecretError::MissingEnv(_))));
        assert_eq!(SecretRef::default().read().expect("none").as_deref(), None);
    }
}

//! Settings of a `[[plugins.redis]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::{PluginSettings, SecretRef};

use super::METRIC_NAMES;

/// Largest `max_dbs` accepted (Redis itself defaults to 16 databases).
pub const MAX_DBS_LIMIT: usize = 10_000;

/// `[[plugins.redis]]`: one Redis server and how to read its `INFO`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// The server, `host:port` (resolved at every connection).
    pub address: String,
    /// ACL user name (Redis 6+); sent as `AUTH <username> <password>`. Needs `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (`AUTH <password>`, or with `username`), from an environment variable or a
    /// file; no `AUTH` when unset.
    pub password: SecretRef,
    /// Which metrics to produce: metric names or name prefixes ending at a dot boundary
    /// (`"redis.memory"` selects every `redis.memory.*`). Empty: all.
    pub select: Vec<String>,
    /// At most this many databases of the keyspace section are reported per collection (the
    /// lowest numbers); the others are counted in `redis.keyspace.dbs_skipped`.
    pub max_dbs: usize,
    /// Longest a connection attempt may take.
    #[serde(with = "serde_text")]
    pub connect_timeout: Duration,
    /// Longest the server may take to answer one command (the client's own bound, below the
    /// instance's `timeout`).
    #[serde(with = "serde_text")]
    pub read_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            address: "127.0.0.1:6379".to_owned(),
            username: None,
            password: SecretRef::default(),
            select: Vec::new(),
            max_dbs: 64,
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(3),
        }
    }
}

/// Whether `select` entry `entry` selects metric `metric`.
pub(super) fn selects(entry: &str, metric: &str) -> bool {
    metric == entry || metric.strip_prefix(entry).is_some_and(|rest| rest.starts_with('.'))
}

impl PluginSettings for RedisSettings {
    const KIND: &'static str = "redis";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let ok = self
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(ConfigError::invalid(
                format!("{field}.address"),
                format!("{:?} is not host:port", self.address),
            ));
        }
        if self.username.is_some() && !self.password.is_set() {
            return Err(ConfigError::invalid(
                format!("{field}.username"),
                "needs `password` (an `env` or `file` holding the user's password)",
            ));
        }
        if self.username.as_ref().is_some_and(|u| u.is_empty() || u.chars().any(char::is_whitespace)) {
            return Err(ConfigError::invalid(format!("{field}.username"), "must be a non-empty name without spaces"));
        }
        for (i, entry) in self.select.iter().enumerate() {
            if !METRIC_NAMES.iter().any(|m| selects(entry, m)) {
                return Err(ConfigError::invalid(
                    format!("{field}.select[{i}]"),
                    format!("{entry:?} is neither a redis metric name nor a prefix of one (e.g. \"redis.memory\")"),
                ));
            }
        }
        if self.max_dbs > MAX_DBS_LIMIT {
            return Err(ConfigError::invalid(format!("{field}.max_dbs"), format!("must be at most {MAX_DBS_LIMIT}")));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{field}.connect_timeout"), "must be positive"));
        }
        if self.read_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{field}.read_timeout"), "must be positive"));
        }
        Ok(())
    }
}

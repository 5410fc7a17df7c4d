//! Settings of a `[[plugins.rabbitmq]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::{PluginSettings, SecretRef};

/// Largest `max_queues` accepted.
pub const MAX_QUEUES_LIMIT: usize = 10_000;

/// `[[plugins.rabbitmq]]`: one RabbitMQ management API and what to read from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitmqSettings {
    /// Base URL of the management HTTP API (`http://host:15672`, or `https://…`).
    pub url: String,
    /// User for HTTP basic authentication (needs the `monitoring` or `management` tag).
    pub username: String,
    /// The user's password, from an environment variable or a file (empty when unset).
    pub password: SecretRef,
    /// Only the queues of this virtual host (e.g. `"/"`); all virtual hosts when unset.
    /// Overview totals stay cluster-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// Only the queues whose name matches this regular expression (unanchored; evaluated by
    /// RabbitMQ, so keep to the syntax PCRE and Rust's `regex` share). All queues when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_pattern: Option<String>,
    /// At most this many queues (in name order) are reported per collection; the other matching
    /// ones are counted in `rabbitmq.queues_skipped`. 0: no per-queue metrics.
    pub max_queues: usize,
    /// Whether to report the cluster nodes (`/api/nodes`).
    pub nodes: bool,
    /// Longest a connection attempt may take.
    #[serde(with = "serde_text")]
    pub connect_timeout: Duration,
}

impl Default for RabbitmqSettings {
    fn default() -> Self {
        RabbitmqSettings {
            url: "http://127.0.0.1:15672".to_owned(),
            username: "guest".to_owned(),
            password: SecretRef::default(),
            vhost: None,
            queue_pattern: None,
            max_queues: 100,
            nodes: true,
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl PluginSettings for RabbitmqSettings {
    const KIND: &'static str = "rabbitmq";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        match reqwest::Url::parse(&self.url) {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                return Err(ConfigError::invalid(
                    format!("{field}.url"),
                    "must not contain credentials (use `username` and `password`, a secret from `env` or `file`)",
                ));
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none() => {}
            Ok(_) => {
                return Err(ConfigError::invalid(
                    format!("{field}.url"),
                    format!("{:?} must be an http:// or https:// URL with a host and no query", self.url),
                ));
            }
            Err(e) => return Err(ConfigError::invalid(format!("{field}.url"), format!("{:?}: {e}", self.url))),
        }
        if self.username.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.username"), "must not be empty"));
        }
        if self.vhost.as_ref().is_some_and(String::is_empty) {
            return Err(ConfigError::invalid(
                format!("{field}.vhost"),
                "must not be empty (the default vhost is \"/\")",
            ));
        }
        if let Some(p) = &self.queue_pattern
            && let Err(e) = regex::Regex::new(p)
        {
            return Err(ConfigError::invalid(format!("{field}.queue_pattern"), e.to_string()));
        }
        if self.max_queues > MAX_QUEUES_LIMIT {
            return Err(ConfigError::invalid(
                format!("{field}.max_queues"),
                format!("must be at most {MAX_QUEUES_LIMIT}"),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{field}.connect_timeout"), "must be positive"));
        }
        Ok(())
    }
}

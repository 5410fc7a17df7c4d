//! Settings of a `[[plugins.mysql]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::{PluginSettings, SecretRef};

/// `[[plugins.mysql]]`: which MySQL or MariaDB server to watch and as whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlSettings {
    /// Server host name or IP address (TCP).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// User to log in as (give it `PROCESS` and, for replication metrics, `REPLICATION CLIENT`
    /// on MySQL or `SLAVE MONITOR` on MariaDB).
    pub user: String,
    /// The user's password, from an environment variable or a file (none: no password).
    pub password: SecretRef,
    /// Longest connecting and logging in may take.
    #[serde(with = "serde_text")]
    pub connect_timeout: Duration,
}

impl Default for MysqlSettings {
    fn default() -> Self {
        MysqlSettings {
            host: "127.0.0.1".to_owned(),
            port: 3306,
            user: "meshmon".to_owned(),
            password: SecretRef::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PluginSettings for MysqlSettings {
    const KIND: &'static str = "mysql";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        crate::plugins::config::check_server(field, &self.host, self.port, &self.user, self.connect_timeout)
    }
}

//! Settings of a `[[plugins.postgresql]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::{PluginSettings, SecretRef};

/// Longest accepted database name pattern (PostgreSQL names are at most 63 bytes; patterns
/// may hold wildcards).
const MAX_PATTERN_LEN: usize = 256;

/// `[[plugins.postgresql]]`: which server to watch and as whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresqlSettings {
    /// Server host name or IP address; a value starting with `/` is the directory of the
    /// server's Unix socket.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Role to log in as (give it `pg_monitor` to see every session and replica).
    pub user: String,
    /// The role's password, from an environment variable or a file (none: no password).
    pub password: SecretRef,
    /// Database the plugin connects to (the statistics of every database are read from it).
    pub dbname: String,
    /// Databases reported per database (tag `db`): names where `*` matches any run of
    /// characters and `?` one character. Empty: every database except `template0` and
    /// `template1`.
    pub databases: Vec<String>,
    /// Most databases reported per collection (in name order); the rest are counted in
    /// `postgresql.databases_over_limit`.
    pub max_databases: u32,
    /// Longest connecting and logging in may take.
    #[serde(with = "serde_text")]
    pub connect_timeout: Duration,
}

impl Default for PostgresqlSettings {
    fn default() -> Self {
        PostgresqlSettings {
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "meshmon".to_owned(),
            password: SecretRef::default(),
            dbname: "postgres".to_owned(),
            databases: Vec::new(),
            max_databases: 100,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl PostgresqlSettings {
    /// The `databases` patterns as SQL `LIKE` patterns (`*` → `%`, `?` → `_`, the rest literal
    /// with `\` as the escape character).
    pub(crate) fn like_patterns(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|p| {
                let mut out = String::with_capacity(p.len() + 4);
                for c in p.chars() {
                    match c {
                        '*' => out.push('%'),
                        '?' => out.push('_'),
                        '%' | '_' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        c => out.push(c),
                    }
                }
                out
            })
            .collect()
    }
}

impl PluginSettings for PostgresqlSettings {
    const KIND: &'static str = "postgresql";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        crate::plugins::config::check_server(field, &self.host, self.port, &self.user, self.connect_timeout)?;
        if self.dbname.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.dbname"), "must not be empty"));
        }
        for (i, p) in self.databases.iter().enumerate() {
            if p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{field}.databases[{i}]"),
                    format!("must be 1..{MAX_PATTERN_LEN} bytes without control characters"),
                ));
            }
        }
        if self.max_databases == 0 {
            return Err(ConfigError::invalid(format!("{field}.max_databases"), "must be at least 1"));
        }
        Ok(())
    }
}

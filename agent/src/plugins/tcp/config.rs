//! Settings of a `[[plugins.tcp]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::PluginSettings;

/// `[[plugins.tcp]]`: the targets to probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpSettings {
    /// `host:port` targets (names are resolved at every probe).
    pub targets: Vec<String>,
    /// Longest one connection attempt may take; a slower target counts as down.
    #[serde(with = "serde_text")]
    pub connect_timeout: Duration,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings { targets: Vec::new(), connect_timeout: Duration::from_secs(3) }
    }
}

impl PluginSettings for TcpSettings {
    const KIND: &'static str = "tcp";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.targets"), "must list at least one host:port"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            let ok = t.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::invalid(format!("{field}.targets[{i}]"), format!("{t:?} is not host:port")));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{field}.connect_timeout"), "must be positive"));
        }
        Ok(())
    }
}

//! Settings of a `[[plugins.statsd]]` instance. Pure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::plugins::PluginSettings;

/// `[[plugins.statsd]]`: the UDP listener and its bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdSettings {
    /// UDP address to listen on (`127.0.0.1:8125`; `0.0.0.0:8125` to accept other hosts).
    pub listen: String,
    /// Record names are `<prefix>.<name>` (just the name when empty).
    pub prefix: String,
    /// Most distinct series (name × type × tags) per interval; lines of further series are
    /// dropped and counted in `statsd.dropped_names`.
    pub max_names: usize,
    /// Most values kept per timer (a uniform sample beyond: count, sum, min, max stay exact)
    /// and most members counted per set, per interval.
    pub max_values: usize,
    /// Most DogStatsD tags on one line (a line with more is invalid).
    pub max_tags: usize,
    /// Socket receive buffer asked of the kernel (capped by `net.core.rmem_max`).
    pub receive_buffer_bytes: usize,
}

impl Default for StatsdSettings {
    fn default() -> Self {
        StatsdSettings {
            listen: "127.0.0.1:8125".to_owned(),
            prefix: "stats".to_owned(),
            max_names: 10_000,
            max_values: 1_000,
            max_tags: 10,
            receive_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl PluginSettings for StatsdSettings {
    const KIND: &'static str = "statsd";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(format!("{field}.listen"), format!("{:?} is not ip:port", self.listen)));
        }
        crate::plugins::config::check_prefix(&format!("{field}.prefix"), &self.prefix, 48)?;
        if self.max_names == 0 || self.max_names > 1_000_000 {
            return Err(ConfigError::invalid(format!("{field}.max_names"), "must be within 1..=1000000"));
        }
        if self.max_values == 0 || self.max_values > 100_000 {
            return Err(ConfigError::invalid(format!("{field}.max_values"), "must be within 1..=100000"));
        }
        if self.max_tags > 16 {
            return Err(ConfigError::invalid(format!("{field}.max_tags"), "must be at most 16"));
        }
        Ok(())
    }
}

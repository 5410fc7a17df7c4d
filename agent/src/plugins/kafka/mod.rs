//! `kafka` plugin — placeholder being replaced (issue 6): its settings type exists so the
//! configuration schema compiles; building an instance fails with a clear error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::plugins::{BuildPlugin, ErrorReason, Plugin, PluginContext, PluginError, PluginSettings};

/// Every fixed metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[];

/// `[[plugins.kafka]]` settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {}

impl PluginSettings for KafkaSettings {
    const KIND: &'static str = "kafka";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, _field: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl BuildPlugin for KafkaSettings {
    fn build(&self, _name: &str, _ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        Err(PluginError::new(ErrorReason::Other, "the kafka plugin is not available in this build"))
    }
}

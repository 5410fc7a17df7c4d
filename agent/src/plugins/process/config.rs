//! Settings of a `[[plugins.process]]` instance. Pure.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, MAX_NAME_LEN};
use crate::plugins::PluginSettings;

/// Most `matches` entries one instance may list.
pub const MAX_MATCHES: usize = 256;

/// `[[plugins.process]]`: which processes to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSettings {
    /// The process groups to watch, one `process` tag value (`label`) each.
    pub matches: Vec<ProcessMatch>,
    /// Also report every matched process on its own (tag `pid`), up to `max_pids` per label.
    pub per_pid: bool,
    /// Most processes per label reported on their own when `per_pid` is set; the others are
    /// counted in `process.per_pid_dropped` (the label's sums always cover every process).
    pub max_pids: usize,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings { matches: Vec::new(), per_pid: false, max_pids: 20 }
    }
}

/// One `[[plugins.process.matches]]` entry: a label and the conditions a process must meet
/// (every condition given must hold; at least one must be given).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessMatch {
    /// The value of tag `process` on this group's records.
    pub label: String,
    /// Exact executable name (`comm` in `/proc/<pid>/stat`, or the file name of the
    /// executable or of `argv[0]` when `comm` is cut at 15 bytes).
    pub name: Option<String>,
    /// Regular expression searched in the command line (arguments joined by spaces); kernel
    /// threads (empty command line) never match.
    pub pattern: Option<String>,
    /// File holding the process id (e.g. `/run/nginx.pid`); a missing file means no process.
    pub pid_file: Option<PathBuf>,
}

impl PluginSettings for ProcessSettings {
    const KIND: &'static str = "process";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.matches.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.matches"), "must list at least one process to match"));
        }
        if self.matches.len() > MAX_MATCHES {
            return Err(ConfigError::invalid(format!("{field}.matches"), format!("lists more than {MAX_MATCHES}")));
        }
        let mut labels = std::collections::BTreeSet::new();
        for (i, m) in self.matches.iter().enumerate() {
            let f = format!("{field}.matches[{i}]");
            if m.label.is_empty() || m.label.len() > MAX_NAME_LEN || m.label.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{f}.label"),
                    format!("must be non-empty, at most {MAX_NAME_LEN} bytes, without control characters"),
                ));
            }
            if !labels.insert(m.label.as_str()) {
                return Err(ConfigError::invalid(format!("{f}.label"), format!("{:?} is used twice", m.label)));
            }
            if m.name.is_none() && m.pattern.is_none() && m.pid_file.is_none() {
                return Err(ConfigError::invalid(f, "needs at least one of `name`, `pattern`, `pid_file`"));
            }
            if m.name.as_deref().is_some_and(|n| n.is_empty() || n.contains('/')) {
                return Err(ConfigError::invalid(format!("{f}.name"), "must be a non-empty file name without '/'"));
            }
            if let Some(p) = &m.pattern {
                regex::Regex::new(p).map_err(|e| ConfigError::invalid(format!("{f}.pattern"), e.to_string()))?;
            }
        }
        if self.max_pids == 0 || self.max_pids > 10_000 {
            return Err(ConfigError::invalid(format!("{field}.max_pids"), "must be within 1..=10000"));
        }
        Ok(())
    }
}

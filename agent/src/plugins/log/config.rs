//! Settings of a `[[plugins.log]]` instance, and their compiled form (globs and regexes). Pure.

use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, MAX_NAME_LEN};
use crate::duration::serde_text;
use crate::plugins::PluginSettings;

/// Largest `max_line_bytes` and `multiline.max_bytes` (a raw record is one batch entry; batches
/// are bounded by the aggregator's 64 MiB message size and by Kafka message sizes).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Files not read unless `exclude` says otherwise: compressed rotations.
pub const DEFAULT_EXCLUDE: &[&str] = &["*.gz", "*.bz2", "*.xz", "*.zst", "*.zip", "*.lz4"];

/// Compiled size limit of one regex (rule or start pattern).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where a file seen for the first time at the first collection starts being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// At its current end (the start of its last complete line), like `tail -F`.
    #[default]
    End,
    /// At its first byte.
    Beginning,
}

/// One rule: lines (or multi-line events) matching `pattern` are counted under `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogRule {
    /// The rule's name (tag `rule`).
    pub name: String,
    /// Regular expression (Rust `regex` syntax) searched in each line or event.
    pub pattern: String,
    /// Whether each matching line/event is also sent as a `log.match` record carrying it in `raw`.
    pub keep_line: bool,
}

impl Default for LogRule {
    fn default() -> Self {
        LogRule { name: String::new(), pattern: String::new(), keep_line: true }
    }
}

/// Multi-line mode: lines are grouped into events (stack traces).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultilineSettings {
    /// A line matching this regex begins a new event; other lines continue the current one.
    pub start_pattern: String,
    /// Most lines kept in one event; further continuation lines are left out (and counted).
    pub max_lines: usize,
    /// Most bytes kept in one event (lines joined by `\n`); further lines are left out.
    pub max_bytes: usize,
    /// An event (or a last line without newline) with no continuation for this long is complete.
    #[serde(with = "serde_text")]
    pub flush_after: Duration,
}

impl Default for MultilineSettings {
    fn default() -> Self {
        MultilineSettings {
            start_pattern: String::new(),
            max_lines: 500,
            max_bytes: 64 * 1024,
            flush_after: Duration::from_secs(5),
        }
    }
}

/// `[[plugins.log]]`: the files to tail and the rules to count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Absolute file globs (`/var/log/app/*.log`), expanded again at every collection.
    pub paths: Vec<String>,
    /// Globs of files not to read: a pattern with a `/` is matched against the whole path,
    /// otherwise against the file name. Default: compressed files ([`DEFAULT_EXCLUDE`]).
    pub exclude: Vec<String>,
    /// Where files present at the very first collection start (`end` or `beginning`); files
    /// that appear later are always read from their beginning.
    pub start_at: StartAt,
    /// The rules.
    pub rules: Vec<LogRule>,
    /// Multi-line mode (absent: every line is an event).
    pub multiline: Option<MultilineSettings>,
    /// Longer lines are cut to this many bytes (counted in `log.lines_truncated`).
    pub max_line_bytes: usize,
    /// Most bytes read per collection over all files; the rest is read at the next one.
    pub max_read_bytes_per_collection: u64,
    /// Most `log.match` records per collection; reading stops there and goes on at the next one.
    pub max_match_records_per_collection: usize,
    /// Most files followed at once (each holds an open descriptor); further files wait.
    pub max_files: usize,
    /// How long a file that left every matched path (renamed away or deleted) is still read
    /// after it last grew, for writers that still write to it.
    #[serde(with = "serde_text")]
    pub rotate_wait: Duration,
    /// Text encoding of the files: `utf-8` (invalid sequences are replaced by U+FFFD).
    pub encoding: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            paths: Vec::new(),
            exclude: DEFAULT_EXCLUDE.iter().map(|s| (*s).to_owned()).collect(),
            start_at: StartAt::End,
            rules: Vec::new(),
            multiline: None,
            max_line_bytes: 16 * 1024,
            max_read_bytes_per_collection: 8 << 20,
            max_match_records_per_collection: 10_000,
            max_files: 256,
            rotate_wait: Duration::from_secs(5),
            encoding: "utf-8".to_owned(),
        }
    }
}

/// A rule ready to match.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub name: String,
    pub regex: Regex,
    pub keep_line: bool,
}

/// Multi-line settings ready to use.
#[derive(Debug, Clone)]
pub(crate) struct CompiledMultiline {
    pub start: Regex,
    pub max_lines: usize,
    pub max_bytes: usize,
    pub flush_after: Duration,
}

/// An exclusion glob and what it is matched against.
#[derive(Debug, Clone)]
pub(crate) struct Exclude {
    pub pattern: glob::Pattern,
    /// Matched against the whole path (the pattern has a `/`), else against the file name.
    pub whole_path: bool,
}

/// Everything a collection needs from the settings, checked and compiled.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub paths: Vec<String>,
    pub exclude: Vec<Exclude>,
    pub start_at: StartAt,
    pub rules: Vec<CompiledRule>,
    pub multiline: Option<CompiledMultiline>,
    pub max_line_bytes: usize,
    pub max_read_bytes: u64,
    pub max_match_records: usize,
    pub max_files: usize,
    pub rotate_wait: Duration,
}

fn regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()
}

impl LogSettings {
    /// Checks and compiles the settings; errors name the field under `field`.
    pub(crate) fn compile(&self, field: &str) -> Result<Compiled, ConfigError> {
        if self.paths.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.paths"), "must list at least one file glob"));
        }
        for (i, p) in self.paths.iter().enumerate() {
            let f = format!("{field}.paths[{i}]");
            if !std::path::Path::new(p).is_absolute() {
                return Err(ConfigError::invalid(f, format!("{p:?} must be an absolute path")));
            }
            glob::Pattern::new(p).map_err(|e| ConfigError::invalid(f, format!("{p:?} is not a valid glob: {e}")))?;
        }
        let mut exclude = Vec::with_capacity(self.exclude.len());
        for (i, p) in self.exclude.iter().enumerate() {
            let pattern = glob::Pattern::new(p).map_err(|e| {
                ConfigError::invalid(format!("{field}.exclude[{i}]"), format!("{p:?} is not a valid glob: {e}"))
            })?;
            exclude.push(Exclude { pattern, whole_path: p.contains('/') });
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let f = format!("{field}.rules[{i}]");
            if r.name.is_empty() || r.name.len() > MAX_NAME_LEN || r.name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{f}.name"),
                    format!("must be non-empty, at most {MAX_NAME_LEN} bytes, without control characters"),
                ));
            }
            if self.rules[..i].iter().any(|o| o.name == r.name) {
                return Err(ConfigError::invalid(format!("{f}.name"), format!("{:?} is used by another rule", r.name)));
            }
            if r.pattern.is_empty() {
                return Err(ConfigError::invalid(format!("{f}.pattern"), "must not be empty"));
            }
            let re = regex(&r.pattern).map_err(|e| ConfigError::invalid(format!("{f}.pattern"), e.to_string()))?;
            rules.push(CompiledRule { name: r.name.clone(), regex: re, keep_line: r.keep_line });
        }
        if self.max_line_bytes < 16 || self.max_line_bytes > MAX_EVENT_BYTES {
            return Err(ConfigError::invalid(
                format!("{field}.max_line_bytes"),
                format!("{} is outside 16..={MAX_EVENT_BYTES}", self.max_line_bytes),
            ));
        }
        let multiline = match &self.multiline {
            None => None,
            Some(m) => {
                let f = format!("{field}.multiline");
                if m.start_pattern.is_empty() {
                    return Err(ConfigError::invalid(format!("{f}.start_pattern"), "must not be empty"));
                }
                let start = regex(&m.start_pattern)
                    .map_err(|e| ConfigError::invalid(format!("{f}.start_pattern"), e.to_string()))?;
                if m.max_lines == 0 || m.max_lines > 100_000 {
                    return Err(ConfigError::invalid(
                        format!("{f}.max_lines"),
                        format!("{} is outside 1..=100000", m.max_lines),
                    ));
                }
                if m.max_bytes < self.max_line_bytes || m.max_bytes > MAX_EVENT_BYTES {
                    return Err(ConfigError::invalid(
                        format!("{f}.max_bytes"),
                        format!(
                            "{} is outside max_line_bytes ({})..={MAX_EVENT_BYTES}",
                            m.max_bytes, self.max_line_bytes
                        ),
                    ));
                }
                if m.flush_after.is_zero() {
                    return Err(ConfigError::invalid(format!("{f}.flush_after"), "must be positive"));
                }
                Some(CompiledMultiline {
                    start,
                    max_lines: m.max_lines,
                    max_bytes: m.max_bytes,
                    flush_after: m.flush_after,
                })
            }
        };
        if self.max_read_bytes_per_collection < 4096 {
            return Err(ConfigError::invalid(
                format!("{field}.max_read_bytes_per_collection"),
                format!("{} is below 4096", self.max_read_bytes_per_collection),
            ));
        }
        if self.max_match_records_per_collection == 0 || self.max_match_records_per_collection > 1_000_000 {
            return Err(ConfigError::invalid(
                format!("{field}.max_match_records_per_collection"),
                format!("{} is outside 1..=1000000", self.max_match_records_per_collection),
            ));
        }
        if self.max_files == 0 || self.max_files > 65_536 {
            return Err(ConfigError::invalid(
                format!("{field}.max_files"),
                format!("{} is outside 1..=65536", self.max_files),
            ));
        }
        if !matches!(self.encoding.to_ascii_lowercase().as_str(), "utf-8" | "utf8") {
            return Err(ConfigError::invalid(
                format!("{field}.encoding"),
                format!("{:?} is not supported; only \"utf-8\" (invalid sequences replaced)", self.encoding),
            ));
        }
        Ok(Compiled {
            paths: self.paths.clone(),
            exclude,
            start_at: self.start_at,
            rules,
            multiline,
            max_line_bytes: self.max_line_bytes,
            max_read_bytes: self.max_read_bytes_per_collection,
            max_match_records: self.max_match_records_per_collection,
            max_files: self.max_files,
            rotate_wait: self.rotate_wait,
        })
    }
}

impl PluginSettings for LogSettings {
    const KIND: &'static str = "log";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        self.compile(field).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::PluginsConfig;

    #[test]
    fn parses_rules_and_multiline_and_refuses_mistakes() {
        let mut c: PluginsConfig = toml::from_str(
            r#"
            [[log]]
            paths = ["/var/log/app/*.log"]
            exclude = ["*.gz"]
            start_at = "beginning"
            [[log.rules]]
            name = "error"
            pattern = "ERROR"
            [[log.rules]]
            name = "warn"
            pattern = "WARN"
            keep_line = false
            [log.multiline]
            start_pattern = '^\d{4}-'
            flush_after = "2s"
            "#,
        )
        .expect("parses");
        c.normalize().expect("valid");
        let s = &c.log[0].settings;
        assert_eq!(s.start_at, StartAt::Beginning);
        assert_eq!(s.rules.len(), 2);
        assert!(s.rules[0].keep_line);
        assert!(!s.rules[1].keep_line);
        let m = s.multiline.as_ref().expect("multiline");
        assert_eq!(m.flush_after, Duration::from_secs(2));
        assert_eq!(m.max_lines, 500);
        let compiled = s.compile("x").expect("compiles");
        assert!(!compiled.exclude[0].whole_path);

        let bad = |toml_text: &str, field: &str| {
            let mut c: PluginsConfig = toml::from_str(toml_text).expect("parses");
            let e = c.normalize().expect_err("invalid").to_string();
            assert!(e.contains(field), "{e} should name {field}");
        };
        bad("[[log]]\n", "plugins.log[0].paths");
        bad("[[log]]\npaths = [\"rel/*.log\"]\n", "plugins.log[0].paths[0]");
        bad("[[log]]\npaths = [\"/a\"]\n[[log.rules]]\nname = \"e\"\npattern = \"(\"\n", "rules[0].pattern");
        bad(
            "[[log]]\npaths = [\"/a\"]\n[[log.rules]]\nname = \"e\"\npattern = \"a\"\n[[log.rules]]\nname = \"e\"\npattern = \"b\"\n",
            "rules[1].name",
        );
        bad("[[log]]\npaths = [\"/a\"]\nencoding = \"latin1\"\n", "encoding");
        bad("[[log]]\npaths = [\"/a\"]\nmax_line_bytes = 1\n", "max_line_bytes");
        bad("[[log]]\npaths = [\"/a\"]\n[log.multiline]\nstart_pattern = \"\"\n", "multiline.start_pattern");
        let e =
            toml::from_str::<PluginsConfig>("[[log]]\npaths = [\"/a\"]\nstart_at = \"middle\"\n").expect_err("enum");
        assert!(e.to_string().contains("middle"), "{e}");
        let e =
            toml::from_str::<PluginsConfig>("[[log]]\npaths = [\"/a\"]\n[[log.rules]]\nname = \"e\"\npatern = \"x\"\n")
                .expect_err("unknown key");
        assert!(e.to_string().contains("patern"), "{e}");
    }
}

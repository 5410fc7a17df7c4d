//! Engine configuration: window kind, out-of-orderness, lateness, idleness, dimensions and
//! input limits — and its validation.
//!
//! Role: plain data plus `validate()`, which rejects every setting the engine could not
//! honour (zero sizes, durations past [`MAX_DURATION`], sliding steps that would need too many
//! panes). Window specs parse from text such as `tumbling:10s`, `sliding:60s/10s`,
//! `session:30s`. Touches nothing else.

use std::fmt;
use std::str::FromStr;

use super::time::{DurationText, MAX_DURATION, NANOS_PER_SEC, Nanos, parse_duration};

/// Most panes one sliding window may span (`size / gcd(size, slide)`).
pub const MAX_PANES_PER_WINDOW: i64 = 4_096;

/// How event time is cut into windows. All windows are half-open `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Back-to-back windows `[offset + k·size, offset + (k+1)·size)`.
    Tumbling {
        /// Window length.
        size: Nanos,
        /// Shift of the window grid from the epoch (`0 ≤ offset < size`).
        offset: Nanos,
    },
    /// Overlapping windows of length `size` starting every `slide` (`slide ≤ size`),
    /// computed from panes of `gcd(size, slide)` so a record is stored once.
    Sliding {
        /// Window length.
        size: Nanos,
        /// Distance between window starts.
        slide: Nanos,
        /// Shift of the window grid from the epoch (`0 ≤ offset < slide`).
        offset: Nanos,
    },
    /// Per-series activity sessions: records closer than `gap` share a session, which is
    /// `[first record, last record + gap)`.
    Session {
        /// Inactivity that closes a session.
        gap: Nanos,
    },
}

impl WindowSpec {
    /// Short name of the kind: `tumbling`, `sliding` or `session`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            WindowSpec::Tumbling { .. } => "tumbling",
            WindowSpec::Sliding { .. } => "sliding",
            WindowSpec::Session { .. } => "session",
        }
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WindowSpec::Tumbling { size, offset: 0 } => write!(f, "tumbling:{}", DurationText(size)),
            WindowSpec::Tumbling { size, offset } => {
                write!(f, "tumbling:{}+{}", DurationText(size), DurationText(offset))
            }
            WindowSpec::Sliding { size, slide, offset: 0 } => {
                write!(f, "sliding:{}/{}", DurationText(size), DurationText(slide))
            }
            WindowSpec::Sliding { size, slide, offset } => {
                write!(f, "sliding:{}/{}+{}", DurationText(size), DurationText(slide), DurationText(offset))
            }
            WindowSpec::Session { gap } => write!(f, "session:{}", DurationText(gap)),
        }
    }
}

impl FromStr for WindowSpec {
    type Err = ConfigError;

    /// `tumbling:SIZE[+OFFSET]`, `sliding:SIZE/SLIDE[+OFFSET]`, `session:GAP`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::WindowSpec { text: s.to_owned(), why };
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("missing ':'".into()))?;
        let dur = |t: &str| parse_duration(t).map_err(|e| bad(e.to_string()));
        let (body, offset) = match rest.split_once('+') {
            Some((body, off)) => (body, dur(off)?),
            None => (rest, 0),
        };
        let spec = match kind {
            "tumbling" => WindowSpec::Tumbling { size: dur(body)?, offset },
            "sliding" => {
                let (size, slide) = body.split_once('/').ok_or_else(|| bad("sliding needs SIZE/SLIDE".into()))?;
                WindowSpec::Sliding { size: dur(size)?, slide: dur(slide)?, offset }
            }
            "session" if offset == 0 => WindowSpec::Session { gap: dur(body)? },
            "session" => return Err(bad("sessions take no offset".into())),
            other => return Err(bad(format!("unknown window kind {other:?}"))),
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl WindowSpec {
    /// Checks sizes, steps and offsets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |name: &'static str, v: Nanos| {
            if v <= 0 || v > MAX_DURATION { Err(ConfigError::OutOfRange { name, value: v }) } else { Ok(()) }
        };
        match *self {
            WindowSpec::Tumbling { size, offset } => {
                positive("window size", size)?;
                if !(0..size).contains(&offset) {
                    return Err(ConfigError::Invalid("tumbling offset must be in [0, size)".into()));
                }
            }
            WindowSpec::Sliding { size, slide, offset } => {
                positive("window size", size)?;
                positive("window slide", slide)?;
                if slide > size {
                    return Err(ConfigError::Invalid(
                        "sliding window: slide must not exceed size (records between windows would belong to none)"
                            .into(),
                    ));
                }
                if !(0..slide).contains(&offset) {
                    return Err(ConfigError::Invalid("sliding offset must be in [0, slide)".into()));
                }
                let panes = size / gcd(size, slide);
                if panes > MAX_PANES_PER_WINDOW {
                    return Err(ConfigError::Invalid(format!(
                        "sliding window {}/{} needs {panes} panes per window (max {MAX_PANES_PER_WINDOW}); \
                         choose a slide that divides the size",
                        DurationText(size),
                        DurationText(slide)
                    )));
                }
            }
            WindowSpec::Session { gap } => positive("session gap", gap)?,
        }
        Ok(())
    }
}

/// Greatest common divisor of two positive numbers.
pub(crate) fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A field a configured dimension set is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DimensionField {
    /// The record's cluster.
    Cluster,
    /// The record's node.
    Node,
    /// The value of the record's tag with this key.
    Tag(String),
}

impl FromStr for DimensionField {
    type Err = ConfigError;

    /// `cluster`, `node`, or a tag key (`region`, or explicitly `tag:cluster`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "" => Err(ConfigError::Invalid("empty dimension field".into())),
            "cluster" => Ok(DimensionField::Cluster),
            "node" => Ok(DimensionField::Node),
            other => Ok(DimensionField::Tag(other.strip_prefix("tag:").unwrap_or(other).to_owned())),
        }
    }
}

impl fmt::Display for DimensionField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimensionField::Cluster => f.write_str("cluster"),
            DimensionField::Node => f.write_str("node"),
            DimensionField::Tag(k) if k == "cluster" || k == "node" => write!(f, "tag:{k}"),
            DimensionField::Tag(k) => f.write_str(k),
        }
    }
}

/// Which custom tags become `k=v` dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDimensions {
    /// Every tag of every record (flat-mapped).
    All,
    /// Only tags with these keys.
    Only(Vec<String>),
    /// No tag dimensions.
    None,
}

/// The dimensions every record is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionSpec {
    /// The whole fleet: one series per metric.
    pub fleet: bool,
    /// One series per (metric, cluster).
    pub cluster: bool,
    /// One series per (metric, node).
    pub node: bool,
    /// One series per (metric, tag key, tag value).
    pub tags: TagDimensions,
    /// Combinations, e.g. `[cluster, region]`: one series per (metric, value tuple). A record
    /// lacking any field of a set is not counted under that set.
    pub sets: Vec<Vec<DimensionField>>,
}

impl Default for DimensionSpec {
    fn default() -> Self {
        DimensionSpec { fleet: true, cluster: true, node: true, tags: TagDimensions::All, sets: Vec::new() }
    }
}

/// Bounds that protect the engine from bad or hostile input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest metric, cluster or node name, in bytes.
    pub max_name_len: usize,
    /// Most tags on one record.
    pub max_tags: usize,
    /// Longest tag key or value, in bytes.
    pub max_tag_len: usize,
    /// Most live series (metric × dimension value) held at once; records that would create
    /// more are rejected as a cardinality blow-up.
    pub max_series: usize,
    /// Records more than this ahead of processing time are rejected (`None`: no bound).
    pub max_future: Option<Nanos>,
    /// Records more than this behind processing time are rejected (`None`: no bound).
    pub max_past: Option<Nanos>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 256,
            max_tags: 32,
            max_tag_len: 256,
            max_series: 2_000_000,
            max_future: Some(600 * NANOS_PER_SEC),
            max_past: Some(7 * 86_400 * NANOS_PER_SEC),
        }
    }
}

/// Everything the window engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The window kind and size.
    pub window: WindowSpec,
    /// Bounded out-of-orderness: an input's watermark trails its greatest event time by this.
    pub out_of_orderness: Nanos,
    /// How long after firing a window still accepts records (each re-fires a correction).
    pub allowed_lateness: Nanos,
    /// An input silent for longer than this (processing time) stops holding the watermark
    /// back (`None`: inputs never go idle).
    pub idle_timeout: Option<Nanos>,
    /// A series whose window state is all freed stays registered this long (event time)
    /// before it is released, so series that report less often than windows close are not
    /// re-created every window. Released series no longer count against `max_series`.
    pub series_ttl: Nanos,
    /// The dimensions every record counts under.
    pub dimensions: DimensionSpec,
    /// Input bounds.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            window: WindowSpec::Tumbling { size: 10 * NANOS_PER_SEC, offset: 0 },
            out_of_orderness: 5 * NANOS_PER_SEC,
            allowed_lateness: 60 * NANOS_PER_SEC,
            idle_timeout: Some(30 * NANOS_PER_SEC),
            series_ttl: 600 * NANOS_PER_SEC,
            dimensions: DimensionSpec::default(),
            limits: Limits::default(),
        }
    }
}

impl EngineConfig {
    /// Rejects settings the engine cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.window.validate()?;
        let non_negative = |name: &'static str, v: Nanos| {
            if (0..=MAX_DURATION).contains(&v) { Ok(()) } else { Err(ConfigError::OutOfRange { name, value: v }) }
        };
        non_negative("out-of-orderness", self.out_of_orderness)?;
        non_negative("allowed lateness", self.allowed_lateness)?;
        non_negative("series ttl", self.series_ttl)?;
        if let Some(t) = self.idle_timeout {
            non_negative("idle timeout", t)?;
        }
        if let Some(t) = self.limits.max_future {
            non_negative("max future", t)?;
        }
        if let Some(t) = self.limits.max_past {
            non_negative("max past", t)?;
        }
        if self.limits.max_series == 0 || self.limits.max_name_len == 0 || self.limits.max_tag_len == 0 {
            return Err(ConfigError::Invalid(
                "limits max_series, max_name_len and max_tag_len must be positive".into(),
            ));
        }
        for set in &self.dimensions.sets {
            if set.is_empty() {
                return Err(ConfigError::Invalid("a dimension set needs at least one field".into()));
            }
            let mut seen = std::collections::HashSet::new();
            if !set.iter().all(|f| seen.insert(f)) {
                return Err(ConfigError::Invalid(format!(
                    "dimension set [{}] repeats a field",
                    set.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// A configuration the engine cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A window spec did not parse.
    #[error("invalid window spec {text:?}: {why} (examples: tumbling:10s, sliding:60s/10s, session:30s)")]
    WindowSpec {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A duration is zero, negative or too long.
    #[error("{name} out of range: {value} ns (must be positive and at most ~9 years)")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// Its value in nanoseconds.
        value: Nanos,
    },
    /// Any other inconsistency.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_specs_parse_and_print() {
        for text in ["tumbling:10s", "tumbling:1m+15s", "sliding:1m/10s", "sliding:1h/5m+1m", "session:30s"] {
            let spec: WindowSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!("sliding:60s/10s".parse::<WindowSpec>(), "sliding:1m/10s".parse::<WindowSpec>());
    }

    #[test]
    fn bad_window_specs_are_refused() {
        for text in [
            "tumbling",
            "tumbling:0s",
            "tumbling:10s+10s",
            "sliding:10s/20s",
            "sliding:10s",
            "sliding:10s/7ms",
            "session:0s",
            "session:5s+1s",
            "hopping:10s",
        ] {
            assert!(text.parse::<WindowSpec>().is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn dimension_fields_parse() {
        assert_eq!("cluster".parse::<DimensionField>(), Ok(DimensionField::Cluster));
        assert_eq!("region".parse::<DimensionField>(), Ok(DimensionField::Tag("region".into())));
        assert_eq!("tag:node".parse::<DimensionField>(), Ok(DimensionField::Tag("node".into())));
        let cfg = EngineConfig {
            dimensions: DimensionSpec {
                sets: vec![vec![DimensionField::Cluster, DimensionField::Cluster]],
                ..DimensionSpec::default()
            },
            ..EngineConfig::default()
        };
        assert!(cfg.validate().is_err());
        assert!(EngineConfig::default().validate().is_ok());
    }
}

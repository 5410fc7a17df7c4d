//! The `[influxdb]` configuration section.
//!
//! Role: where and how the InfluxDB writer writes — URL (empty = off), API (`v1`: `/write`
//! for InfluxDB 1.x, 2.x's compatibility API and 3.x; `v2`: `/api/v2/write`), database and
//! retention policy or org and bucket, the token (environment `MESHMON_INFLUXDB_TOKEN` or a
//! file, never the command line), batching, timeout, whether session retractions are deleted
//! (v1), how long a stopping aggregator waits for InfluxDB, the `instance` tag of
//! self-metrics. Validation, the write URL and the v1 query URL (for `DELETE`). Touches the
//! token file and the environment when asked.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::engine::time::parse_duration;

/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "MESHMON_INFLUXDB_TOKEN";

/// Which write API.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/write?db=&rp=&precision=ms`.
    #[default]
    V1,
    /// `/api/v2/write?org=&bucket=&precision=ms`.
    V2,
}

/// The `[influxdb]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxDbSection {
    /// Base URL, e.g. `http://influxdb:8086`; empty = no InfluxDB output.
    pub url: String,
    /// `v1` or `v2`.
    pub api: InfluxApi,
    /// v1: the database.
    pub database: String,
    /// v1: the retention policy ("" = the database's default).
    pub retention_policy: String,
    /// v2: the organisation.
    pub org: String,
    /// v2: the bucket.
    pub bucket: String,
    /// A file holding the token (else `MESHMON_INFLUXDB_TOKEN`; none = no `Authorization`).
    pub token_file: Option<PathBuf>,
    /// Most points per write request.
    pub batch_max_points: usize,
    /// Most bytes (uncompressed) per write request.
    pub batch_max_bytes: usize,
    /// A partial batch is written after this long.
    #[serde(deserialize_with = "duration")]
    pub flush_every: Duration,
    /// Per request.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Points queued before the store actor waits (backpressure).
    pub queue_max_points: usize,
    /// The `instance` tag of `meshmon_self` ("" = the host name).
    pub instance: String,
    /// How often `meshmon_self` is written ("0" = never).
    #[serde(deserialize_with = "duration")]
    pub self_every: Duration,
    /// Size at which `influxdb-rejected.lp` is rotated (to `.1`, replacing the older one).
    pub rejected_file_max_bytes: u64,
    /// v1: delete the point of a retracted session (InfluxQL `DELETE` on `/query`); `false`
    /// for servers whose v1 API does not run `DELETE` (InfluxDB 2.x/3.x compatibility APIs):
    /// retractions are then counted as skipped. The v2 API never deletes.
    pub delete_retractions: bool,
    /// How long a stopping aggregator waits for InfluxDB to take what is queued (the final
    /// checkpoint in Kafka mode, then the writer's drain). On expiry nothing more is retried;
    /// a Kafka-mode final checkpoint is not committed and the process exits non-zero.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for InfluxDbSection {
    fn default() -> Self {
        InfluxDbSection {
            url: String::new(),
            api: InfluxApi::V1,
            database: "meshmon".into(),
            retention_policy: String::new(),
            org: String::new(),
            bucket: String::new(),
            token_file: None,
            batch_max_points: 5000,
            batch_max_bytes: 4 << 20,
            flush_every: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            queue_max_points: 100_000,
            instance: String::new(),
            self_every: Duration::from_secs(10),
            rejected_file_max_bytes: 64 << 20,
            delete_retractions: true,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let nanos = parse_duration(&text).map_err(serde::de::Error::custom)?;
    Ok(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

/// The section is not usable.
#[derive(Debug, thiserror::Error)]
pub enum InfluxConfigError {
    /// A setting is wrong.
    #[error("influxdb.{0}")]
    Invalid(String),
    /// The token file could not be read.
    #[error("influxdb.token_file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl InfluxDbSection {
    /// Whether InfluxDB output is on.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), InfluxConfigError> {
        let bad = |m: &str| Err(InfluxConfigError::Invalid(m.to_owned()));
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad("url must start with http:// or https://");
        }
        match self.api {
            InfluxApi::V1 if self.database.is_empty() => return bad("database is required with api = \"v1\""),
            InfluxApi::V2 if self.org.is_empty() || self.bucket.is_empty() => {
                return bad("org and bucket are required with api = \"v2\"");
            }
            _ => {}
        }
        if self.batch_max_points == 0 || self.batch_max_bytes == 0 {
            return bad("batch_max_points and batch_max_bytes must be > 0");
        }
        if self.queue_max_points < self.batch_max_points {
            return bad("queue_max_points must be >= batch_max_points");
        }
        if self.flush_every.is_zero() || self.timeout.is_zero() || self.shutdown_timeout.is_zero() {
            return bad("flush_every, timeout and shutdown_timeout must be > 0");
        }
        Ok(())
    }

    /// The write URL (with the query string; `precision=ms`).
    pub fn write_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match self.api {
            InfluxApi::V1 => {
                let mut u = format!("{base}/write?db={}&precision=ms", query(&self.database));
                if !self.retention_policy.is_empty() {
                    u.push_str(&format!("&rp={}", query(&self.retention_policy)));
                }
                u
            }
            InfluxApi::V2 => {
                format!("{base}/api/v2/write?org={}&bucket={}&precision=ms", query(&self.org), query(&self.bucket))
            }
        }
    }

    /// Where retracted points are deleted: the v1 `/query?db=` URL; `None` with the v2 API or
    /// `delete_retractions = false`.
    pub fn delete_url(&self) -> Option<String> {
        let base = self.url.trim_end_matches('/');
        match self.api {
            InfluxApi::V1 if self.delete_retractions => Some(format!("{base}/query?db={}", query(&self.database))),
            _ => None,
        }
    }

    /// The token: `token_file` if set, else `MESHMON_INFLUXDB_TOKEN` read through `var`.
    pub fn token(&self, var: impl Fn(&str) -> Option<String>) -> Result<Option<String>, InfluxConfigError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| InfluxConfigError::TokenFile { path: path.clone(), source })?;
            return Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()));
        }
        Ok(var(TOKEN_ENV).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
    }

    /// The `instance` tag: the setting, else the host name, else `meshmon`.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "meshmon".into())
    }
}

/// Percent-encodes a query parameter (or form field) value.
pub(super) fn query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_and_validation() {
        let mut c = InfluxDbSection { url: "http://h:8086/".into(), database: "my db".into(), ..Default::default() };
        c.validate().unwrap();
        assert_eq!(c.write_url(), "http://h:8086/write?db=my%20db&precision=ms");
        c.retention_policy = "autogen".into();
        assert_eq!(c.write_url(), "http://h:8086/write?db=my%20db&precision=ms&rp=autogen");
        assert_eq!(c.delete_url().as_deref(), Some("http://h:8086/query?db=my%20db"));
        c.delete_retractions = false;
        assert_eq!(c.delete_url(), None);
        c.delete_retractions = true;
        c.shutdown_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        c.shutdown_timeout = Duration::from_secs(1);
        c.api = InfluxApi::V2;
        assert!(c.validate().is_err());
        c.org = "o".into();
        c.bucket = "b&c".into();
        assert_eq!(c.write_url(), "http://h:8086/api/v2/write?org=o&bucket=b%26c&precision=ms");
        assert_eq!(c.delete_url(), None, "the v2 API has no DELETE");
        assert_eq!(c.token(|_| Some(" t \n".into())).unwrap().as_deref(), Some("t"));
        assert!(!InfluxDbSection::default().enabled());
    }

    #[test]
    fn stop_and_retraction_settings_parse() {
        let c: InfluxDbSection = toml::from_str("shutdown_timeout = \"2500ms\"\ndelete_retractions = false").unwrap();
        assert_eq!((c.shutdown_timeout, c.delete_retractions), (Duration::from_millis(2500), false));
        let d = InfluxDbSection::default();
        assert_eq!((d.shutdown_timeout, d.delete_retractions), (Duration::from_secs(30), true));
    }
}

//! Settings of a `[[plugins.prometheus]]` instance. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, MAX_NAME_LEN, MAX_TAGS};
use crate::plugins::PluginSettings;
use crate::plugins::http::{HttpAuth, validate_url};

/// `[[plugins.prometheus]]`: one text-format endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusSettings {
    /// The `/metrics` URL (`http://` or `https://`).
    pub url: String,
    /// Record names are `<prefix>.<metric name>` (just the metric name when empty).
    pub prefix: String,
    /// Only metrics whose name matches this regular expression are kept (all when unset).
    pub metric_pattern: Option<String>,
    /// Labels kept as tags (all when empty); `le` and `quantile` are always kept.
    pub label_allowlist: Vec<String>,
    /// Labels never kept as tags (applied after the allowlist; not `le`/`quantile`).
    pub label_denylist: Vec<String>,
    /// Most samples turned into records per scrape; the rest is dropped and counted in
    /// `prometheus.dropped_series`.
    pub max_series: usize,
    /// Largest response body accepted (a larger one fails the scrape).
    pub max_body_bytes: usize,
    /// Use the timestamps the exporter writes as event time (else the scrape time).
    pub honor_timestamps: bool,
    /// Tags added to every scraped record (they win over a scraped label of the same name).
    pub tags: BTreeMap<String, String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Accept any TLS certificate. Off by default.
    pub tls_insecure: bool,
    /// Authentication.
    pub auth: HttpAuth,
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        PrometheusSettings {
            url: String::new(),
            prefix: "prom".to_owned(),
            metric_pattern: None,
            label_allowlist: Vec::new(),
            label_denylist: Vec::new(),
            max_series: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
            honor_timestamps: true,
            tags: BTreeMap::new(),
            headers: BTreeMap::new(),
            tls_insecure: false,
            auth: HttpAuth::default(),
        }
    }
}

impl PluginSettings for PrometheusSettings {
    const KIND: &'static str = "prometheus";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        validate_url(&self.url, &format!("{field}.url"))?;
        crate::plugins::config::check_prefix(&format!("{field}.prefix"), &self.prefix, 64)?;
        if let Some(p) = &self.metric_pattern {
            regex::Regex::new(p).map_err(|e| ConfigError::invalid(format!("{field}.metric_pattern"), e.to_string()))?;
        }
        if self.max_series == 0 || self.max_series > 1_000_000 {
            return Err(ConfigError::invalid(format!("{field}.max_series"), "must be within 1..=1000000"));
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 256 * 1024 * 1024 {
            return Err(ConfigError::invalid(format!("{field}.max_body_bytes"), "must be within 1 KiB..=256 MiB"));
        }
        if self.tags.len() > MAX_TAGS / 2 {
            return Err(ConfigError::invalid(format!("{field}.tags"), format!("more than {}", MAX_TAGS / 2)));
        }
        for (k, v) in &self.tags {
            let bad = |s: &str| s.len() > MAX_NAME_LEN || s.chars().any(char::is_control);
            if k.is_empty() || bad(k) || bad(v) {
                return Err(ConfigError::invalid(
                    format!("{field}.tags.{k}"),
                    format!("keys and values must be at most {MAX_NAME_LEN} bytes without control characters"),
                ));
            }
        }
        for (name, value) in &self.headers {
            if ::http::HeaderName::from_bytes(name.as_bytes()).is_err() || ::http::HeaderValue::from_str(value).is_err()
            {
                return Err(ConfigError::invalid(format!("{field}.headers.{name}"), "is not a valid HTTP header"));
            }
        }
        self.auth.validate(&format!("{field}.auth"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn validation_names_the_field() {
        let ok = PrometheusSettings { url: "http://127.0.0.1:9100/metrics".into(), ..PrometheusSettings::default() };
        ok.validate("plugins.prometheus[0]").expect("valid");
        let bad = |s: PrometheusSettings| s.validate("plugins.prometheus[0]").expect_err("invalid").to_string();
        assert!(bad(PrometheusSettings::default()).contains("plugins.prometheus[0].url"));
        assert!(bad(PrometheusSettings { prefix: "a.".into(), ..ok.clone() }).contains(".prefix"));
        assert!(bad(PrometheusSettings { max_series: 0, ..ok.clone() }).contains(".max_series"));
        assert!(bad(PrometheusSettings { metric_pattern: Some("(".into()), ..ok.clone() }).contains(".metric_pattern"));
        let c: crate::plugins::PluginsConfig = toml::from_str(
            "[[prometheus]]\nurl = \"http://x:1/metrics\"\nprefix = \"node\"\nlabel_denylist = [\"instance\"]\n\
             [prometheus.tags]\njob = \"node\"\n",
        )
        .expect("parses");
        assert_eq!(c.prometheus[0].settings.tags.get("job").map(String::as_str), Some("node"));
        c.prometheus[0].settings.validate("p").expect("valid");
    }
}

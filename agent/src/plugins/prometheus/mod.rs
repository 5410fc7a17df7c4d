//! Prometheus plugin: scrapes one text-format `/metrics` endpoint into records.
//!
//! Role: every collection GETs the URL (at most `max_body_bytes`), parses it line by line
//! (`parse.rs`: HELP/TYPE, escaped label values, NaN/±Inf, timestamps, histogram and summary
//! series) and turns each finite sample into a record `<prefix>.<name>` with its labels as tags
//! (allow/deny lists; `le` and `quantile` always kept; label values with control characters
//! have them replaced by blanks and are cut at 256 bytes), stamped with the exporter's
//! timestamp when it writes one (`honor_timestamps`), else the scrape time. At most
//! `max_series` records per scrape; what is dropped, skipped (non-finite) or unparsable is
//! counted in the scrape's own records (`prometheus.*`, tag `plugin`). An endpoint that cannot be
//! reached, refuses the credentials or answers no exposition text fails the collection.
//! Touches only the connections it opens.

mod config;
pub mod parse;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshmon_proto::v1::Record;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

pub use config::PrometheusSettings;
pub use parse::{Line, MetricType, ParseError, Sample, parse_line, render_sample};

use crate::config::{MAX_NAME_LEN, MAX_TAGS};
use crate::metrics::Metrics;
use crate::plugins::http::{USER_AGENT, classify, request_headers};
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every fixed metric name this plugin produces (rows of `docs/METRICS.md`); scraped samples
/// become `<prefix>.<name>`.
pub const METRIC_NAMES: &[&str] = &[
    "prometheus.scrape_seconds",
    "prometheus.samples",
    "prometheus.dropped_series",
    "prometheus.non_finite_samples",
    "prometheus.invalid_lines",
];

/// What one scrape counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Samples turned into records.
    pub samples: u64,
    /// Samples dropped over `max_series`.
    pub dropped_series: u64,
    /// Samples skipped for a NaN or infinite value.
    pub non_finite: u64,
    /// Lines that are not valid exposition text, and samples whose name or tags cannot be
    /// records (too long, too many tags).
    pub invalid_lines: u64,
}

/// How samples become records (the pure part of the plugin).
#[derive(Debug, Clone)]
pub struct Converter {
    /// Record name prefix (without the dot; empty for none).
    pub prefix: String,
    /// Only matching metric names are kept.
    pub metric_pattern: Option<regex::Regex>,
    /// Labels kept (all when empty).
    pub allow: HashSet<String>,
    /// Labels dropped.
    pub deny: HashSet<String>,
    /// Most records per scrape.
    pub max_series: usize,
    /// Use exporter timestamps.
    pub honor_timestamps: bool,
    /// Static tags.
    pub tags: Vec<(String, String)>,
}

fn is_structural(label: &str) -> bool {
    label == "le" || label == "quantile"
}

/// A tag value the aggregator accepts: control characters → blanks, at most 256 bytes.
fn clean_value(v: &str) -> String {
    let mut s: String = v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.len() > MAX_NAME_LEN {
        let mut cut = MAX_NAME_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Converter {
    fn keep_label(&self, name: &str) -> bool {
        if is_structural(name) {
            return true;
        }
        (self.allow.is_empty() || self.allow.contains(name)) && !self.deny.contains(name)
    }

    /// The record of `s`, `None` (counted invalid) when its name or tags cannot be a record.
    fn record(&self, s: &Sample, at: SystemTime) -> Option<Record> {
        let metric = if self.prefix.is_empty() { s.name.clone() } else { format!("{}.{}", self.prefix, s.name) };
        if metric.len() > MAX_NAME_LEN {
            return None;
        }
        let ts = match s.timestamp_ms {
            Some(ms) if self.honor_timestamps => meshmon_proto::nanos_to_timestamp(ms.checked_mul(1_000_000)?),
            _ => timestamp_of(at),
        };
        let mut r = double_record(metric, s.value, ts);
        for (k, v) in &self.tags {
            r.tags.insert(k.clone(), v.clone());
        }
        for (k, v) in &s.labels {
            if v.is_empty() || !self.keep_label(k) || r.tags.contains_key(k) {
                continue;
            }
            r.tags.insert(k.clone(), clean_value(v));
        }
        (r.tags.len() <= MAX_TAGS).then_some(r)
    }

    /// The records of one exposition text and what was counted.
    pub fn convert(&self, text: &str, seconds_timestamps: bool, at: SystemTime) -> (Vec<Record>, ScrapeStats) {
        let mut stats = ScrapeStats::default();
        let mut out = Vec::new();
        let mut first_error: Option<(usize, ParseError)> = None;
        for (n, line) in text.split('\n').enumerate() {
            let sample = match parse_line(line, seconds_timestamps) {
                Ok(Line::Sample(s)) => s,
                Ok(Line::Eof) => break,
                Ok(_) => continue,
                Err(e) => {
                    stats.invalid_lines += 1;
                    first_error.get_or_insert((n + 1, e));
                    continue;
                }
            };
            if self.metric_pattern.as_ref().is_some_and(|re| !re.is_match(&sample.name)) {
                continue;
            }
            if !sample.value.is_finite() {
                stats.non_finite += 1;
                continue;
            }
            if out.len() >= self.max_series {
                stats.dropped_series += 1;
                continue;
            }
            match self.record(&sample, at) {
                Some(r) => out.push(r),
                None => stats.invalid_lines += 1,
            }
        }
        if let Some((line, e)) = first_error {
            tracing::debug!(line, "prometheus scrape: {} invalid lines, the first: {e}", stats.invalid_lines);
        }
        stats.samples = out.len() as u64;
        (out, stats)
    }
}

/// The collector of one `[[plugins.prometheus]]` instance.
#[derive(Debug)]
pub struct PrometheusPlugin {
    name: String,
    client: reqwest::Client,
    url: String,
    max_body_bytes: usize,
    converter: Converter,
    metrics: Arc<Metrics>,
}

impl PrometheusPlugin {
    /// Fetches the body; `true` when it is OpenMetrics text (timestamps in seconds).
    async fn fetch(&self) -> Result<(String, bool), PluginError> {
        let resp = self.client.get(&self.url).send().await.map_err(|e| match classify(&e) {
            "connect" => PluginError::unreachable(format!("{}: {e}", self.url)),
            "timeout" => PluginError::new(ErrorReason::Timeout, format!("{}: {e}", self.url)),
            _ => PluginError::protocol(format!("{}: {e}", self.url)),
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(PluginError::new(ErrorReason::Auth, format!("{} answered {status}", self.url)));
        }
        if !status.is_success() {
            return Err(PluginError::protocol(format!("{} answered {status}", self.url)));
        }
        let content_type =
            resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if content_type.contains("protobuf") {
            return Err(PluginError::protocol(format!("{} answered {content_type}, not text", self.url)));
        }
        let openmetrics = content_type.contains("openmetrics");
        if resp.content_length().is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(PluginError::protocol(format!("{}: body larger than max_body_bytes", self.url)));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| PluginError::protocol(format!("{}: reading the body: {e}", self.url)))?
        {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(PluginError::protocol(format!(
                    "{}: body larger than max_body_bytes ({})",
                    self.url, self.max_body_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = match String::from_utf8(body) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok((text, openmetrics))
    }

    /// The scrape's own records.
    fn stats_records(&self, stats: ScrapeStats, took: f64, at: SystemTime) -> Vec<Record> {
        let ts = timestamp_of(at);
        #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
        let values = [
            took,
            stats.samples as f64,
            stats.dropped_series as f64,
            stats.non_finite as f64,
            stats.invalid_lines as f64,
        ];
        METRIC_NAMES
            .iter()
            .zip(values)
            .map(|(m, v)| {
                let mut r = double_record(*m, v, ts);
                r.tags.insert("plugin".to_owned(), self.name.clone());
                r
            })
            .collect()
    }
}

impl Plugin for PrometheusPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let (text, openmetrics) = self.fetch().await?;
            let took = started.elapsed().as_secs_f64();
            let (mut records, stats) = self.converter.convert(&text, openmetrics, at);
            if stats.samples == 0 && stats.non_finite == 0 && stats.invalid_lines > 0 {
                return Err(PluginError::protocol(format!(
                    "{} did not answer Prometheus text ({} invalid lines, no sample)",
                    self.url, stats.invalid_lines
                )));
            }
            if stats.dropped_series > 0 || stats.invalid_lines > 0 {
                self.metrics.warn_limited(
                    "prometheus_dropped",
                    &format!(
                        "prometheus plugin {:?}: {} samples over max_series dropped, {} invalid lines in the scrape of {}",
                        self.name, stats.dropped_series, stats.invalid_lines, self.url
                    ),
                );
            }
            records.extend(self.stats_records(stats, took, at));
            Ok(records)
        })
    }
}

impl PrometheusSettings {
    /// The conversion settings.
    ///
    /// # Errors
    /// [`PluginError`] when `metric_pattern` does not compile.
    pub fn converter(&self) -> Result<Converter, PluginError> {
        let metric_pattern = match &self.metric_pattern {
            Some(p) => Some(
                regex::Regex::new(p)
                    .map_err(|e| PluginError::new(ErrorReason::Other, format!("metric_pattern: {e}")))?,
            ),
            None => None,
        };
        Ok(Converter {
            prefix: self.prefix.clone(),
            metric_pattern,
            allow: self.label_allowlist.iter().cloned().collect(),
            deny: self.label_denylist.iter().cloned().collect(),
            max_series: self.max_series.max(1),
            honor_timestamps: self.honor_timestamps,
            tags: self.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }
}

impl BuildPlugin for PrometheusSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let mut headers = request_headers(&self.headers, &self.auth)?;
        headers.insert(ACCEPT, reqwest::header::HeaderValue::from_static("text/plain;version=0.0.4;q=1,*/*;q=0.1"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(USER_AGENT)
            .danger_accept_invalid_certs(self.tls_insecure)
            .build()
            .map_err(|e| PluginError::new(ErrorReason::Other, format!("cannot build the HTTP client: {e}")))?;
        Ok(Box::new(PrometheusPlugin {
            name: name.to_owned(),
            client,
            url: self.url.clone(),
            max_body_bytes: self.max_body_bytes.max(1),
            converter: self.converter()?,
            metrics: Arc::clone(&ctx.metrics),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::double_value;

    fn converter(f: impl FnOnce(&mut PrometheusSettings)) -> Converter {
        let mut s = PrometheusSettings { url: "http://x/".into(), ..PrometheusSettings::default() };
        f(&mut s);
        s.converter().expect("converter")
    }

    const TEXT: &str = "# HELP up x\n# TYPE up gauge\nup{instance=\"a\",job=\"j\"} 1\n\
        lat_bucket{le=\"0.1\",instance=\"a\"} 3\nlat_bucket{le=\"+Inf\",instance=\"a\"} 5\nlat_sum 0.7\nlat_count 5\n\
        q{quantile=\"0.5\"} 0.01\nbad line here\nnan_metric NaN\ninf_metric +Inf\nts 7 1700000000123\n\
        multi{v=\"x\\ny\"} 2\n";

    #[test]
    fn samples_become_records_with_tags_and_counts() {
        let c = converter(|_| {});
        let at = SystemTime::now();
        let (records, stats) = c.convert(TEXT, false, at);
        assert_eq!(stats, ScrapeStats { samples: 8, dropped_series: 0, non_finite: 2, invalid_lines: 1 });
        let find = |m: &str, tag: Option<(&str, &str)>| {
            records
                .iter()
                .find(|r| r.metric == m && tag.is_none_or(|(k, v)| r.tags.get(k).map(String::as_str) == Some(v)))
                .unwrap_or_else(|| panic!("{m} {tag:?}"))
        };
        let up = find("prom.up", None);
        assert_eq!(up.tags.len(), 2);
        assert_eq!(up.event_time, Some(timestamp_of(at)));
        assert_eq!(double_value(find("prom.lat_bucket", Some(("le", "+Inf")))), Some(5.0));
        assert_eq!(double_value(find("prom.lat_count", None)), Some(5.0));
        assert_eq!(double_value(find("prom.q", Some(("quantile", "0.5")))), Some(0.01));
        let ts = find("prom.ts", None);
        assert_eq!(ts.event_time, Some(meshmon_proto::nanos_to_timestamp(1_700_000_000_123_000_000)));
        assert_eq!(find("prom.multi", None).tags.get("v").map(String::as_str), Some("x y"), "newline → blank");
    }

    #[test]
    fn allow_and_deny_lists_max_series_and_static_tags() {
        let c = converter(|s| {
            s.label_allowlist = vec!["job".into()];
            s.prefix = String::new();
            s.tags = [("job".to_owned(), "static".to_owned())].into();
            s.honor_timestamps = false;
        });
        let at = SystemTime::now();
        let (records, _) = c.convert(TEXT, false, at);
        let up = records.iter().find(|r| r.metric == "up").expect("up");
        assert_eq!(up.tags.get("job").map(String::as_str), Some("static"), "static tags win");
        assert!(!up.tags.contains_key("instance"));
        let bucket = records.iter().find(|r| r.metric == "lat_bucket").expect("bucket");
        assert!(bucket.tags.contains_key("le"), "le is always kept");
        assert!(records.iter().all(|r| r.event_time == Some(timestamp_of(at))));

        let c = converter(|s| s.label_denylist = vec!["instance".into(), "le".into()]);
        let (records, _) = c.convert(TEXT, false, at);
        assert!(records.iter().all(|r| !r.tags.contains_key("instance")));
        assert!(records.iter().any(|r| r.tags.contains_key("le")));

        let c = converter(|s| s.max_series = 3);
        let (records, stats) = c.convert(TEXT, false, at);
        assert_eq!(records.len(), 3);
        assert_eq!((stats.samples, stats.dropped_series), (3, 5));

        let c = converter(|s| s.metric_pattern = Some("^lat_".into()));
        let (records, stats) = c.convert(TEXT, false, at);
        assert_eq!(records.len(), 4);
        assert_eq!(stats.dropped_series, 0);
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let v = "é".repeat(200);
        let cleaned = clean_value(&v);
        assert!(cleaned.len() <= MAX_NAME_LEN);
        assert!(cleaned.chars().all(|c| c == 'é'));
    }
}

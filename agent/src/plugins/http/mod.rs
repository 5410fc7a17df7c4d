//! HTTP plugin: probes one URL — up/down, status, latency, body match, size.
//!
//! Role: every collection sends one request (`GET`, `HEAD` or `POST`, configured headers and
//! authentication) on a fresh connection, reads at most `max_body_bytes` of the body and
//! records `http.up` (1 when the status is expected and, if `body_match` is set, the body
//! matches), `http.status_code`, `http.response_seconds` (request sent → body read),
//! `http.body_match` and `http.content_length_bytes`, tagged `url`. A target that is down is a
//! value (`http.up = 0` with a bounded `error` tag: `connect`, `timeout`, `tls`, `redirect`,
//! `body`, `request`, `status`, `body_match`), not a plugin failure. Secrets are read once, at
//! build. Touches only the connections it opens.

mod config;

use std::time::{Duration, Instant, SystemTime};

use meshmon_proto::v1::Record;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};

pub use config::{HttpAuth, HttpSettings, Method, base64, parse_status_range, validate_url};

use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] =
    &["http.up", "http.status_code", "http.response_seconds", "http.body_match", "http.content_length_bytes"];

/// Every value of the `error` tag of `http.up = 0`.
pub const ERROR_CLASSES: &[&str] =
    &["connect", "timeout", "tls", "redirect", "body", "request", "status", "body_match"];

/// The collector of one `[[plugins.http]]` instance.
#[derive(Debug)]
pub struct HttpPlugin {
    client: reqwest::Client,
    url: String,
    method: reqwest::Method,
    body: Option<String>,
    body_match: Option<regex::bytes::Regex>,
    expected: Vec<(u16, u16)>,
    max_body_bytes: usize,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The status code, when a response came.
    pub status: Option<u16>,
    /// Request sent → body read (or failure).
    pub took: Duration,
    /// Whether the body matched `body_match` (`None` when not configured or not read).
    pub body_match: Option<bool>,
    /// Content-Length header, else the bytes of a body read to its end.
    pub content_length: Option<u64>,
    /// Why the target is down (one of [`ERROR_CLASSES`]), `None` when up.
    pub error: Option<&'static str>,
}

/// The class of a request error (bounded: a value of [`ERROR_CLASSES`]).
pub fn classify(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    if e.is_redirect() {
        return "redirect";
    }
    // The causes only: reqwest's own message holds the URL, which may contain "tls".
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(&s.to_string().to_ascii_lowercase());
        chain.push(' ');
        source = s.source();
    }
    if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake") {
        return "tls";
    }
    if e.is_connect() {
        return "connect";
    }
    if e.is_body() || e.is_decode() {
        return "body";
    }
    "request"
}

impl HttpPlugin {
    /// One probe.
    pub async fn probe(&self) -> Probe {
        let started = Instant::now();
        let mut req = self.client.request(self.method.clone(), &self.url);
        if let Some(body) = &self.body {
            req = req.body(body.clone());
        }
        let mut resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(url = %self.url, "http probe failed: {e}");
                let error = Some(classify(&e));
                return Probe { status: None, took: started.elapsed(), body_match: None, content_length: None, error };
            }
        };
        let status = resp.status().as_u16();
        let header_length =
            resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
        let keep = self.body_match.is_some();
        let mut body = Vec::new();
        let mut read: usize = 0;
        let mut complete = self.method == reqwest::Method::HEAD;
        let mut body_error = None;
        if !complete {
            loop {
                let room = self.max_body_bytes.saturating_sub(read);
                if room == 0 {
                    break; // the rest is not read (bounded)
                }
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let take = chunk.len().min(room);
                        read += take;
                        if keep {
                            body.extend_from_slice(&chunk[..take]);
                        }
                        if take < chunk.len() {
                            break;
                        }
                    }
                    Ok(None) => {
                        complete = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(url = %self.url, "http probe: reading the body failed: {e}");
                        body_error = Some(classify(&e));
                        break;
                    }
                }
            }
        }
        let took = started.elapsed();
        let body_length = (complete && self.method != reqwest::Method::HEAD).then_some(read as u64);
        let content_length = header_length.or(body_length);
        let body_match = match &self.body_match {
            Some(re) if body_error.is_none() => Some(re.is_match(&body)),
            _ => None,
        };
        let error = if let Some(e) = body_error {
            Some(if e == "timeout" { "timeout" } else { "body" })
        } else if !self.expected.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
            Some("status")
        } else if body_match == Some(false) {
            Some("body_match")
        } else {
            None
        };
        Probe { status: Some(status), took, body_match, content_length, error }
    }

    /// The records of one probe.
    pub fn records(&self, probe: &Probe, at: SystemTime) -> Vec<Record> {
        let ts = timestamp_of(at);
        let tagged = |metric: &str, v: f64| -> Record {
            let mut r = double_record(metric, v, ts);
            r.tags.insert("url".to_owned(), self.url.clone());
            r
        };
        let mut up = tagged("http.up", if probe.error.is_none() { 1.0 } else { 0.0 });
        if let Some(e) = probe.error {
            up.tags.insert("error".to_owned(), e.to_owned());
        }
        let mut out = vec![up];
        if let Some(status) = probe.status {
            out.push(tagged("http.status_code", f64::from(status)));
            out.push(tagged("http.response_seconds", probe.took.as_secs_f64()));
        }
        if let Some(m) = probe.body_match {
            out.push(tagged("http.body_match", if m { 1.0 } else { 0.0 }));
        }
        if let Some(n) = probe.content_length {
            #[allow(clippy::cast_precision_loss)] // sizes are far below 2^53
            out.push(tagged("http.content_length_bytes", n as f64));
        }
        out
    }
}

impl Plugin for HttpPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let probe = self.probe().await;
            Ok::<_, PluginError>(self.records(&probe, at))
        })
    }
}

/// The request headers of `headers` plus `Authorization` from `auth`.
///
/// # Errors
/// [`PluginError`] (`other`) on an invalid header or unreadable secret.
pub fn request_headers(
    headers: &std::collections::BTreeMap<String, String>,
    auth: &HttpAuth,
) -> Result<HeaderMap, PluginError> {
    let invalid = |name: &str| PluginError::new(ErrorReason::Other, format!("header {name:?} is not valid"));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(name))?;
        let v = HeaderValue::from_str(value).map_err(|_| invalid(name))?;
        map.insert(n, v);
    }
    if let Some(value) = auth.header()? {
        let mut v = HeaderValue::from_str(&value).map_err(|_| invalid("authorization"))?;
        v.set_sensitive(true);
        map.insert(AUTHORIZATION, v);
    }
    Ok(map)
}

/// The user agent of the agent's HTTP requests.
pub const USER_AGENT: &str = concat!("meshmon-agent/", env!("CARGO_PKG_VERSION"));

impl BuildPlugin for HttpSettings {
    fn build(&self, _name: &str, _ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let other = |m: String| PluginError::new(ErrorReason::Other, m);
        let redirect = if self.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        };
        let client = reqwest::Client::builder()
            .default_headers(request_headers(&self.headers, &self.auth)?)
            .user_agent(USER_AGENT)
            .timeout(self.request_timeout)
            .redirect(redirect)
            .danger_accept_invalid_certs(self.tls_insecure)
            // Every probe opens its own connection: the latency is what a new client sees.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| other(format!("cannot build the HTTP client: {e}")))?;
        let body_match = match &self.body_match {
            Some(re) => Some(regex::bytes::Regex::new(re).map_err(|e| other(format!("body_match: {e}")))?),
            None => None,
        };
        let mut expected: Vec<(u16, u16)> = self.expected_status.iter().filter_map(|s| parse_status_range(s)).collect();
        if expected.is_empty() {
            expected.push((200, 399));
        }
        let method = match self.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
        };
        Ok(Box::new(HttpPlugin {
            client,
            url: self.url.clone(),
            method,
            body: self.body.clone(),
            body_match,
            expected,
            max_body_bytes: self.max_body_bytes.max(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn plugin(expected: Vec<(u16, u16)>, body_match: Option<&str>) -> HttpPlugin {
        HttpPlugin {
            client: reqwest::Client::new(),
            url: "http://x/".into(),
            method: reqwest::Method::GET,
            body: None,
            body_match: body_match.map(|r| regex::bytes::Regex::new(r).unwrap()),
            expected,
            max_body_bytes: 10,
        }
    }

    #[test]
    fn records_carry_url_and_a_bounded_error_tag() {
        let p = plugin(vec![(200, 399)], Some("ok"));
        let down = Probe {
            status: None,
            took: Duration::ZERO,
            body_match: None,
            content_length: None,
            error: Some("connect"),
        };
        let r = p.records(&down, SystemTime::now());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].metric, "http.up");
        assert_eq!(r[0].tags.get("error").map(String::as_str), Some("connect"));
        assert_eq!(r[0].tags.get("url").map(String::as_str), Some("http://x/"));
        let up = Probe {
            status: Some(200),
            took: Duration::from_millis(5),
            body_match: Some(true),
            content_length: Some(2),
            error: None,
        };
        let r = p.records(&up, SystemTime::now());
        let names: Vec<&str> = r.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names, METRIC_NAMES);
        assert!(!r[0].tags.contains_key("error"));
    }
}

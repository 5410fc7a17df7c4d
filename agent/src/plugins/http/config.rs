//! Settings of a `[[plugins.http]]` instance (also the authentication settings the prometheus
//! plugin shares). Pure, except [`HttpAuth::header`], which reads the secret.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::duration::serde_text;
use crate::plugins::{PluginError, PluginSettings, SecretRef};

/// Request methods a probe may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET` (the default).
    #[default]
    Get,
    /// `HEAD` (no body is read; `body_match` is not allowed).
    Head,
    /// `POST` with `body`.
    Post,
}

/// Authentication of a request: HTTP basic or a bearer token, secrets from env or a file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpAuth {
    /// User name for HTTP basic authentication (with `password`).
    pub username: Option<String>,
    /// Password for HTTP basic authentication.
    pub password: SecretRef,
    /// Bearer token (`Authorization: Bearer …`); exclusive with `username`.
    pub bearer_token: SecretRef,
}

impl HttpAuth {
    /// Checks that at most one scheme is configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.username.is_some() && self.bearer_token.is_set() {
            return Err(ConfigError::invalid(
                format!("{field}.bearer_token"),
                "cannot be combined with `username` (basic authentication)",
            ));
        }
        if self.username.is_none() && self.password.is_set() {
            return Err(ConfigError::invalid(format!("{field}.password"), "needs `username`"));
        }
        Ok(())
    }

    /// The `Authorization` header value, `None` without authentication.
    ///
    /// # Errors
    /// [`PluginError`] (`other`) when the secret cannot be read.
    pub fn header(&self) -> Result<Option<String>, PluginError> {
        if let Some(user) = &self.username {
            let password = self.password.read_for("HTTP password")?.unwrap_or_default();
            return Ok(Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))));
        }
        Ok(self.bearer_token.read_for("bearer token")?.map(|t| format!("Bearer {t}")))
    }
}

/// Standard base64 with padding (RFC 4648), for basic authentication.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `[[plugins.http]]`: one URL to probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// The URL (`http://` or `https://`); tag `url` of the records.
    pub url: String,
    /// `GET`, `HEAD` or `POST`.
    pub method: Method,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body (for `POST`).
    pub body: Option<String>,
    /// Regular expression the response body must contain for `http.up = 1`.
    pub body_match: Option<String>,
    /// Status codes counted as up: codes (`"200"`), ranges (`"200-299"`) or classes (`"2xx"`).
    pub expected_status: Vec<String>,
    /// Follow redirects (at most 10); when false a redirect is the answer.
    pub follow_redirects: bool,
    /// Accept any TLS certificate (self-signed, expired, wrong host). Off by default.
    pub tls_insecure: bool,
    /// Longest one request may take, body included; a slower target is down (`error = timeout`).
    /// Keep it below the instance `timeout`.
    #[serde(with = "serde_text")]
    pub request_timeout: Duration,
    /// Most body bytes read (the rest is not read; `body_match` sees only this prefix).
    pub max_body_bytes: usize,
    /// Authentication.
    pub auth: HttpAuth,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            url: String::new(),
            method: Method::Get,
            headers: BTreeMap::new(),
            body: None,
            body_match: None,
            expected_status: Vec::new(),
            follow_redirects: true,
            tls_insecure: false,
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            auth: HttpAuth::default(),
        }
    }
}

/// Parses one `expected_status` entry into an inclusive range.
pub fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let t = text.trim();
    let valid = |c: u16| (100..=599).contains(&c);
    if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
        let d: u16 = class.parse().ok()?;
        return (1..=5).contains(&d).then_some((d * 100, d * 100 + 99));
    }
    if let Some((a, b)) = t.split_once('-') {
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (valid(a) && valid(b) && a <= b).then_some((a, b));
    }
    let c: u16 = t.parse().ok()?;
    valid(c).then_some((c, c))
}

impl PluginSettings for HttpSettings {
    const KIND: &'static str = "http";
    const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        validate_url(&self.url, &format!("{field}.url"))?;
        if self.method == Method::Head && self.body_match.is_some() {
            return Err(ConfigError::invalid(format!("{field}.body_match"), "needs a body: not with method HEAD"));
        }
        if self.method != Method::Post && self.body.is_some() {
            return Err(ConfigError::invalid(format!("{field}.body"), "is sent only with method POST"));
        }
        if let Some(re) = &self.body_match {
            regex::bytes::Regex::new(re)
                .map_err(|e| ConfigError::invalid(format!("{field}.body_match"), e.to_string()))?;
        }
        for (i, s) in self.expected_status.iter().enumerate() {
            if parse_status_range(s).is_none() {
                return Err(ConfigError::invalid(
                    format!("{field}.expected_status[{i}]"),
                    format!("{s:?} is not a status code (200), a range (200-299) or a class (2xx)"),
                ));
            }
        }
        for (name, value) in &self.headers {
            if ::http::HeaderName::from_bytes(name.as_bytes()).is_err() || ::http::HeaderValue::from_str(value).is_err()
            {
                return Err(ConfigError::invalid(format!("{field}.headers.{name}"), "is not a valid HTTP header"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::invalid(format!("{field}.request_timeout"), "must be positive"));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::invalid(format!("{field}.max_body_bytes"), "must be within 1..=64 MiB"));
        }
        self.auth.validate(&format!("{field}.auth"))
    }
}

/// Checks that `url` is an absolute `http`/`https` URL.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn validate_url(url: &str, field: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            Err(ConfigError::invalid(field, "must not hold credentials: use the `auth` settings"))
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(field, format!("{url:?} must be an http:// or https:// URL"))),
        Err(e) => Err(ConfigError::invalid(field, format!("{url:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(parse_status_range("200"), Some((200, 200)));
        assert_eq!(parse_status_range("2xx"), Some((200, 299)));
        assert_eq!(parse_status_range("200-204"), Some((200, 204)));
        assert_eq!(parse_status_range("6xx"), None);
        assert_eq!(parse_status_range("204-200"), None);
        assert_eq!(parse_status_range("abc"), None);
        assert_eq!(parse_status_range("99"), None);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn validation_names_the_field() {
        let ok = HttpSettings { url: "http://127.0.0.1:1/health".into(), ..HttpSettings::default() };
        ok.validate("plugins.http[0]").expect("valid");
        let bad = |s: HttpSettings| s.validate("plugins.http[0]").expect_err("invalid").to_string();
        assert!(bad(HttpSettings::default()).contains("plugins.http[0].url"));
        assert!(bad(HttpSettings { url: "ftp://x/".into(), ..ok.clone() }).contains(".url"));
        assert!(bad(HttpSettings { expected_status: vec!["2yy".into()], ..ok.clone() }).contains("expected_status[0]"));
        assert!(bad(HttpSettings { body_match: Some("(".into()), ..ok.clone() }).contains("body_match"));
        assert!(
            bad(HttpSettings { method: Method::Head, body_match: Some("x".into()), ..ok.clone() })
                .contains("body_match")
        );
        let both = HttpAuth {
            username: Some("u".into()),
            bearer_token: SecretRef { env: Some("X".into()), file: None },
            ..HttpAuth::default()
        };
        assert!(bad(HttpSettings { auth: both, ..ok }).contains("auth.bearer_token"));
        let c: crate::plugins::PluginsConfig = toml::from_str(
            "[[http]]\nurl = \"https://x/\"\nmethod = \"HEAD\"\nexpected_status = [\"200\", \"3xx\"]\n\
             request_timeout = \"2s\"\n[http.auth]\nusername = \"u\"\npassword = { env = \"PW\" }\n",
        )
        .expect("parses");
        assert_eq!(c.http[0].settings.method, Method::Head);
        assert_eq!(c.http[0].settings.request_timeout, Duration::from_secs(2));
        c.http[0].settings.validate("p").expect("valid");
    }
}

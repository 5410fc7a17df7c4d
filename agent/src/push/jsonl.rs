//! Parsing the HTTP push body: one JSON record per line.
//!
//! Role: turns a `POST /v1/records` body into records, line by line. Each non-blank line is
//! `{"metric":"orders.value","value":12.5,"time":1767225600000,"tags":{"shop":"eu"}}` with
//! `value` a JSON number (stored as a double) or a string of exact decimal text (`"19.99"`,
//! stored as a `Decimal`), `time` optional epoch milliseconds (default: now), and optional
//! `cluster`, `node`, `tags`, `raw`. A malformed line is reported with its 1-based line number
//! and skipped; nothing here panics, whatever the bytes. Pure: touches nothing.

use std::collections::HashMap;

use meshmon_proto::v1::{Decimal, Record, record};
use meshmon_proto::{Timestamp, nanos_to_timestamp};
use serde::Deserialize;

use crate::record::check;

/// At most this many line errors are listed in a response (all are counted).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// One refused line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    /// What is wrong with it.
    pub error: String,
}

/// The outcome of parsing a body.
#[derive(Debug, Default)]
pub struct ParsedBody {
    /// Records of the valid lines, in body order.
    pub records: Vec<Record>,
    /// The first [`MAX_REPORTED_ERRORS`] refused lines.
    pub errors: Vec<LineError>,
    /// Number of refused lines (may exceed `errors.len()`).
    pub rejected: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    metric: String,
    value: serde_json::Value,
    #[serde(default)]
    time: Option<serde_json::Value>,
    #[serde(default)]
    tags: HashMap<String, String>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    raw: Option<String>,
}

/// Parses a whole body; `now` is the event time of lines without `time`.
pub fn parse_body(body: &[u8], now: Timestamp) -> ParsedBody {
    let mut out = ParsedBody::default();
    let body = body.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(body);
    for (i, raw_line) in body.split(|b| *b == b'\n').enumerate() {
        let line = raw_line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, now) {
            Ok(r) => out.records.push(r),
            Err(error) => {
                out.rejected += 1;
                if out.errors.len() < MAX_REPORTED_ERRORS {
                    out.errors.push(LineError { line: i + 1, error });
                }
            }
        }
    }
    out
}

/// Parses one line into a checked record (no defaults applied yet).
///
/// # Errors
/// A message saying what is wrong with the line.
pub fn parse_line(line: &[u8], now: Timestamp) -> Result<Record, String> {
    let parsed: Line = serde_json::from_slice(line).map_err(|e| json_error(&e))?;
    let value = match parsed.value {
        serde_json::Value::Number(n) => {
            record::Value::DoubleValue(n.as_f64().ok_or_else(|| format!("value {n} is not representable"))?)
        }
        serde_json::Value::String(s) => record::Value::DecimalValue(
            s.parse::<Decimal>().map_err(|e| format!("value {s:?} is not exact decimal text: {e}"))?,
        ),
        other => {
            return Err(format!(
                "value must be a JSON number or a string of exact decimal text (e.g. \"19.99\"), got {}",
                kind(&other)
            ));
        }
    };
    let event_time = match parsed.time {
        None | Some(serde_json::Value::Null) => now,
        Some(serde_json::Value::Number(n)) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("time {n} is not a whole number of milliseconds since the Unix epoch"))?;
            let ns = ms.checked_mul(1_000_000).ok_or_else(|| format!("time {ms} ms is out of range"))?;
            nanos_to_timestamp(ns)
        }
        Some(other) => {
            return Err(format!("time must be epoch milliseconds (a JSON integer), got {}", kind(&other)));
        }
    };
    let mut r = Record {
        metric: parsed.metric,
        value: Some(value),
        event_time: Some(event_time),
        cluster: parsed.cluster.unwrap_or_default(),
        node: parsed.node.unwrap_or_default(),
        tags: parsed.tags,
        raw: parsed.raw.map(String::into_bytes),
    };
    check(&mut r, now).map_err(|e| e.to_string())?;
    Ok(r)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// serde_json's message without its "at line 1 column N" suffix (always line 1 here), with the
/// column kept for syntax errors.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("invalid JSON: {message} (column {})", e.column())
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn now() -> Timestamp {
        nanos_to_timestamp(1_767_225_600_123_000_000)
    }

    #[test]
    fn parses_the_documented_line() {
        let r =
            parse_line(br#"{"metric":"orders.value","value":12.5,"time":1767225600000,"tags":{"shop":"eu"}}"#, now())
                .unwrap();
        assert_eq!(r.metric, "orders.value");
        assert_eq!(r.value, Some(record::Value::DoubleValue(12.5)));
        assert_eq!(r.event_time, Some(Timestamp { seconds: 1_767_225_600, nanos: 0 }));
        assert_eq!(r.tags.get("shop").map(String::as_str), Some("eu"));
        assert!(r.cluster.is_empty() && r.node.is_empty() && r.raw.is_none());
    }

    #[test]
    fn decimal_text_is_exact_and_optional_fields_work() {
        let r = parse_line(
            br#"{"metric":"price","value":"19.99","cluster":"c1","node":"n1","raw":"GET /buy 19.99"}"#,
            now(),
        )
        .unwrap();
        assert_eq!(r.value, Some(record::Value::DecimalValue(Decimal { units: 19, nanos: 990_000_000 })));
        assert_eq!(r.event_time, Some(now()), "time defaults to now");
        assert_eq!((r.cluster.as_str(), r.node.as_str()), ("c1", "n1"));
        assert_eq!(r.raw.as_deref(), Some(b"GET /buy 19.99".as_slice()));
        let r = parse_line(br#"{"metric":"t","value":-1,"time":-1500}"#, now()).unwrap();
        assert_eq!(r.value, Some(record::Value::DoubleValue(-1.0)));
        assert_eq!(r.event_time, Some(Timestamp { seconds: -2, nanos: 500_000_000 }));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: [(&[u8], &str); 13] = [
            (b"{", "invalid JSON"),
            (b"not json", "invalid JSON"),
            (br#"{"value":1}"#, "missing field `metric`"),
            (br#"{"metric":"m"}"#, "missing field `value`"),
            (br#"{"metric":"","value":1}"#, "metric must not be empty"),
            (br#"{"metric":"m","value":"abc"}"#, "not exact decimal text"),
            (br#"{"metric":"m","value":"1.0000000001"}"#, "more than 9 fractional digits"),
            (br#"{"metric":"m","value":true}"#, "got a boolean"),
            (br#"{"metric":"m","value":null}"#, "got null"),
            (br#"{"metric":"m","value":1,"time":1.5}"#, "whole number of milliseconds"),
            (br#"{"metric":"m","value":1,"time":"2026-01-01"}"#, "got a string"),
            (br#"{"metric":"m","value":1,"time":9223372036854775807}"#, "out of range"),
            (br#"{"metric":"m","value":1,"colour":"red"}"#, "unknown field `colour`"),
        ];
        for (line, want) in cases {
            let e = parse_line(line, now()).unwrap_err();
            assert!(e.contains(want), "{:?}: {e:?} lacks {want:?}", String::from_utf8_lossy(line));
            assert!(!e.contains("at line 1"), "{e}");
        }
        let e = parse_line(br#"{"metric":"m","value":1,"tags":{"k":1}}"#, now()).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        assert!(parse_line(b"\xff\xfe", now()).is_err());
    }

    #[test]
    fn body_reports_line_numbers_and_skips_blank_lines() {
        let body = b"\xEF\xBB\xBF{\"metric\":\"a\",\"value\":1}\r\n\n  \n{\"metric\":\"b\"}\n{\"metric\":\"c\",\"value\":\"2.5\"}\n[1,2]";
        let p = parse_body(body, now());
        assert_eq!(p.records.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(p.rejected, 2);
        assert_eq!(p.errors.iter().map(|e| e.line).collect::<Vec<_>>(), [4, 6]);
        let many: Vec<u8> = b"x\n".repeat(MAX_REPORTED_ERRORS + 5);
        let p = parse_body(&many, now());
        assert_eq!((p.rejected, p.errors.len()), (MAX_REPORTED_ERRORS + 5, MAX_REPORTED_ERRORS));
    }
}

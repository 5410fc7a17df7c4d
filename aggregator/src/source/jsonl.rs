//! JSON-lines records: the file format of batch mode and of simple pushes.
//!
//! Role: parses one line `{"metric":…,"value":…,"time":<epoch ms>,"cluster":…,"node":…,
//! "tags":{…}}` into an engine [`Record`]. `value` is a JSON number (a double) or a string
//! holding exact decimal text (`"19.99"`, at most 9 fractional digits); `cluster`, `node`,
//! `tags` are optional; unknown fields are ignored. Every malformed line yields an error that
//! says what is wrong — never a panic. Touches nothing else.

use std::collections::BTreeMap;

use meshmon_proto::v1::Decimal;
use serde::Deserialize;

use crate::engine::time::NANOS_PER_MILLI;
use crate::engine::{Record, Value};

#[derive(Deserialize)]
struct Line {
    metric: String,
    value: serde_json::Value,
    time: serde_json::Value,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON, or not an object with the required fields of the right types.
    #[error("not a record: {0}")]
    Json(String),
    /// `value` is neither a number nor a decimal string.
    #[error("value must be a number or a decimal string, got {0}")]
    Value(String),
    /// `value` is a string that is not exact decimal text.
    #[error("value {0:?} is not decimal text (digits, optional '.' and up to 9 decimals)")]
    Decimal(String),
    /// `time` is not an integer count of milliseconds in range.
    #[error("time must be integer epoch milliseconds within ±292 years of 1970, got {0}")]
    Time(String),
}

/// Parses one JSON line into a record (tags sorted by key).
pub fn parse_line(line: &str) -> Result<Record, LineError> {
    let l: Line = serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    let value = match l.value {
        serde_json::Value::Number(n) => Value::Float(n.as_f64().ok_or_else(|| LineError::Value(n.to_string()))?),
        serde_json::Value::String(s) => {
            let d: Decimal = s.parse().map_err(|_| LineError::Decimal(s.clone()))?;
            Value::Decimal(d.to_nano_units().map_err(|_| LineError::Decimal(s))?)
        }
        other => return Err(LineError::Value(other.to_string())),
    };
    let time = l
        .time
        .as_i64()
        .and_then(|ms| ms.checked_mul(NANOS_PER_MILLI))
        .ok_or_else(|| LineError::Time(l.time.to_string()))?;
    Ok(Record { metric: l.metric, value, time, cluster: l.cluster, node: l.node, tags: l.tags.into_iter().collect() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_doubles_decimals_and_optional_fields() {
        let r = parse_line(r#"{"metric":"cpu","value":0.5,"time":1767225600000,"node":"n1","tags":{"z":"1","a":"2"}}"#)
            .unwrap();
        assert_eq!(r.value, Value::Float(0.5));
        assert_eq!(r.time, 1_767_225_600_000 * NANOS_PER_MILLI);
        assert_eq!((r.cluster.as_str(), r.node.as_str()), ("", "n1"));
        assert_eq!(r.tags, [("a".to_string(), "2".to_string()), ("z".to_string(), "1".to_string())]);
        let r = parse_line(r#"{"metric":"orders","value":"19.99","time":0,"extra":true}"#).unwrap();
        assert_eq!(r.value, Value::Decimal(19_990_000_000));
    }

    #[test]
    fn malformed_lines_say_why() {
        let cases = [
            ("", "not a record"),
            ("{", "not a record"),
            (r#"{"value":1,"time":0}"#, "missing field `metric`"),
            (r#"{"metric":"m","value":true,"time":0}"#, "value must be"),
            (r#"{"metric":"m","value":"1e5","time":0}"#, "not decimal text"),
            (r#"{"metric":"m","value":"0.0000000001","time":0}"#, "not decimal text"),
            (r#"{"metric":"m","value":1,"time":1.5}"#, "time must be"),
            (r#"{"metric":"m","value":1,"time":9223372036854775807}"#, "time must be"),
            (r#"{"metric":"m","value":1,"time":0,"tags":{"k":1}}"#, "not a record"),
        ];
        for (line, want) in cases {
            let err = parse_line(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }
}

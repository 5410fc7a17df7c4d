//! Parser of the Prometheus text exposition format (version 0.0.4), tolerant of OpenMetrics
//! text. Pure.
//!
//! Role: [`parse_line`] reads one line: a sample `name{label="value",…} value [timestamp]`
//! (label values with the escapes `\\`, `\"`, `\n`; values as Go's `ParseFloat` writes them,
//! `NaN`, `+Inf`, `-Inf` included; timestamps in milliseconds, or seconds with a fraction for
//! OpenMetrics), a `# HELP` / `# TYPE` line, another comment, an empty line, or `# EOF`.
//! OpenMetrics exemplars (`… # {…} v`) are ignored. Errors say what is wrong; they never panic
//! on any input. [`render_sample`] writes a sample back (tests and tools).

use std::fmt::Write as _;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels in the order written (`le` for buckets, `quantile` for summaries included).
    pub labels: Vec<(String, String)>,
    /// The value (may be NaN or infinite: the caller decides).
    pub value: f64,
    /// Optional timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

/// The metric types of `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram` (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
    /// `summary` (`{quantile}`, `_sum`, `_count`).
    Summary,
    /// `untyped`, `unknown` and the other OpenMetrics types.
    Untyped,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A sample.
    Sample(Sample),
    /// `# HELP name text` (text unescaped).
    Help {
        /// Metric name.
        name: String,
        /// Docstring.
        text: String,
    },
    /// `# TYPE name type`.
    Type {
        /// Metric name.
        name: String,
        /// Its type.
        kind: MetricType,
    },
    /// Another comment, or an empty line.
    Skip,
    /// `# EOF` (OpenMetrics end marker).
    Eof,
}

/// Why a line is not valid exposition text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line does not start with a valid metric name.
    #[error("invalid metric name")]
    Name,
    /// The label set is malformed.
    #[error("malformed labels")]
    Labels,
    /// Two labels share a name.
    #[error("duplicate label name")]
    DuplicateLabel,
    /// The value is missing or not a number.
    #[error("invalid value")]
    Value,
    /// The timestamp is not an integer (milliseconds).
    #[error("invalid timestamp")]
    Timestamp,
    /// Something follows the timestamp.
    #[error("unexpected text after the sample")]
    Trailing,
    /// A `# HELP` or `# TYPE` line without a valid name or type.
    #[error("malformed HELP or TYPE line")]
    Meta,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether `name` is a valid metric name.
pub fn valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && is_name_start(b[0]) && b.iter().all(|c| is_name_char(*c))
}

/// Whether `name` is a valid label name.
pub fn valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && is_label_start(b[0]) && b.iter().all(|c| is_label_char(*c))
}

/// A value as Go's `strconv.ParseFloat` accepts it (decimal forms and `NaN`/`Inf`).
pub fn parse_value(text: &str) -> Option<f64> {
    // Rust's parser accepts the same decimal forms plus "inf"/"infinity"/"nan" in any case,
    // with an optional sign; refuse what Go would not ("infinity" is fine in Go too).
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    text.parse::<f64>().ok()
}

fn parse_timestamp(text: &str, seconds: bool) -> Option<i64> {
    if seconds {
        let s: f64 = text.parse().ok()?;
        let ms = (s * 1000.0).round();
        return (ms.is_finite() && ms.abs() < 9.0e15).then_some(ms as i64);
    }
    text.parse::<i64>().ok()
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_comment(body: &str) -> Result<Line, ParseError> {
    let body = body.trim_start_matches([' ', '\t']);
    let (keyword, rest) = match body.find([' ', '\t']) {
        Some(i) => (&body[..i], body[i..].trim_start_matches([' ', '\t'])),
        None => (body, ""),
    };
    match keyword {
        "HELP" | "TYPE" => {
            let (name, tail) = match rest.find([' ', '\t']) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            if !valid_metric_name(name) {
                return Err(ParseError::Meta);
            }
            if keyword == "HELP" {
                return Ok(Line::Help { name: name.to_owned(), text: unescape_help(tail) });
            }
            let kind = match tail.trim() {
                "counter" => MetricType::Counter,
                "gauge" => MetricType::Gauge,
                "histogram" => MetricType::Histogram,
                "summary" => MetricType::Summary,
                "untyped" | "unknown" | "info" | "stateset" | "gaugehistogram" => MetricType::Untyped,
                _ => return Err(ParseError::Meta),
            };
            Ok(Line::Type { name: name.to_owned(), kind })
        }
        "EOF" if rest.trim().is_empty() => Ok(Line::Eof),
        _ => Ok(Line::Skip),
    }
}

/// Parses the label set starting after `{` at `i`; returns the labels and the index after `}`.
fn parse_labels(line: &str, mut i: usize) -> Result<(Vec<(String, String)>, usize), ParseError> {
    let b = line.as_bytes();
    let mut labels: Vec<(String, String)> = Vec::new();
    loop {
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        match b.get(i) {
            Some(b'}') => return Ok((labels, i + 1)),
            Some(c) if is_label_start(*c) => {}
            _ => return Err(ParseError::Labels),
        }
        let start = i;
        while i < b.len() && is_label_char(b[i]) {
            i += 1;
        }
        let name = &line[start..i];
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return Err(ParseError::Labels);
        }
        i += 1;
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'"') {
            return Err(ParseError::Labels);
        }
        i += 1;
        // The value: bytes up to the closing quote; escapes only at ASCII bytes, so cutting
        // the text there keeps it valid UTF-8.
        let mut value: Vec<u8> = Vec::new();
        loop {
            match b.get(i) {
                None => return Err(ParseError::Labels),
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    match b.get(i + 1) {
                        Some(b'\\') => value.push(b'\\'),
                        Some(b'"') => value.push(b'"'),
                        Some(b'n') => value.push(b'\n'),
                        Some(_) => value.push(b'\\'), // kept as written; the next byte follows
                        None => return Err(ParseError::Labels),
                    }
                    i += if matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')) { 2 } else { 1 };
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value).map_err(|_| ParseError::Labels)?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(ParseError::DuplicateLabel);
        }
        labels.push((name.to_owned(), value));
        while i < b.len() && is_blank(b[i]) {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok((labels, i + 1)),
            _ => return Err(ParseError::Labels),
        }
    }
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored). `seconds_timestamps`:
/// timestamps are OpenMetrics seconds rather than milliseconds.
///
/// # Errors
/// [`ParseError`] saying what is wrong.
pub fn parse_line(line: &str, seconds_timestamps: bool) -> Result<Line, ParseError> {
    let line = line.strip_suffix('\r').unwrap_or(line).trim_start_matches([' ', '\t']);
    if line.is_empty() {
        return Ok(Line::Skip);
    }
    if let Some(comment) = line.strip_prefix('#') {
        return parse_comment(comment);
    }
    let b = line.as_bytes();
    if !is_name_start(b[0]) {
        return Err(ParseError::Name);
    }
    let mut i = 1;
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    let name = &line[..i];
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    let mut labels = Vec::new();
    if b.get(i) == Some(&b'{') {
        let (l, next) = parse_labels(line, i + 1)?;
        labels = l;
        i = next;
    } else if i == name.len() && i < b.len() {
        return Err(ParseError::Name); // a name character that is not allowed
    }
    let mut tokens = line[i..].split([' ', '\t']).filter(|t| !t.is_empty());
    let value = tokens.next().and_then(parse_value).ok_or(ParseError::Value)?;
    let timestamp_ms = match tokens.next() {
        None | Some("#") => None,
        Some(t) => Some(parse_timestamp(t, seconds_timestamps).ok_or(ParseError::Timestamp)?),
    };
    if timestamp_ms.is_some() {
        match tokens.next() {
            None | Some("#") => {}
            Some(_) => return Err(ParseError::Trailing),
        }
    }
    Ok(Line::Sample(Sample { name: name.to_owned(), labels, value, timestamp_ms }))
}

/// Escapes a label value for the text format.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `s` as one exposition line (with its `\n`).
pub fn render_sample(s: &Sample, out: &mut String) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    if s.value.is_nan() {
        out.push_str("NaN");
    } else if s.value.is_infinite() {
        out.push_str(if s.value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{:?}", s.value);
    }
    if let Some(ts) = s.timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    fn sample(line: &str) -> Sample {
        match parse_line(line, false) {
            Ok(Line::Sample(s)) => s,
            other => panic!("{line:?} → {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
"#;
        let lines: Vec<Line> = text.lines().map(|l| parse_line(l, false).expect(l)).collect();
        assert_eq!(
            lines[0],
            Line::Help { name: "http_requests_total".into(), text: "The total number of HTTP requests.".into() }
        );
        assert_eq!(lines[1], Line::Type { name: "http_requests_total".into(), kind: MetricType::Counter });
        let s = sample(text.lines().nth(2).unwrap());
        assert_eq!(s.labels, vec![("method".into(), "post".into()), ("code".into(), "200".into())]);
        assert_eq!((s.value, s.timestamp_ms), (1027.0, Some(1_395_066_363_000)));
        assert_eq!(sample(text.lines().nth(3).unwrap()).value, 3.0);
        let s = sample(text.lines().nth(6).unwrap());
        assert_eq!(s.labels[0].1, r"C:\DIR\FILE.TXT");
        assert_eq!(s.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(s.value, 1.458_255_915e9);
        let s = sample("something_weird{problem=\"division by zero\"} +Inf -3982045");
        assert_eq!((s.value, s.timestamp_ms), (f64::INFINITY, Some(-3_982_045)));
        assert_eq!(sample("x_bucket{le=\"+Inf\"} 144320").labels[0].1, "+Inf");
        assert!(sample("x NaN").value.is_nan());
        assert_eq!(sample("x -Inf").value, f64::NEG_INFINITY);
        assert_eq!(sample("rpc_duration_seconds_sum 1.7560473e+07").value, 1.756_047_3e7);
        assert!(lines.iter().filter(|l| matches!(l, Line::Sample(_))).count() == 11);
    }

    #[test]
    fn tolerates_what_real_exporters_write_and_refuses_garbage() {
        assert_eq!(sample("a{b=\"c\",} 1").labels, vec![("b".into(), "c".into())], "trailing comma");
        assert_eq!(sample("a { b = \"c\" } 1").labels.len(), 1, "blanks");
        assert_eq!(sample("a{} 1").labels.len(), 0);
        assert_eq!(sample("a\t1\t5").timestamp_ms, Some(5));
        assert_eq!(sample("a 1\r").value, 1.0);
        assert_eq!(sample("a{b=\"\\x\"} 1").labels[0].1, "\\x", "unknown escape kept");
        assert_eq!(sample("a{b=\"ünï\"} 1").labels[0].1, "ünï");
        // OpenMetrics: exemplar, seconds timestamps, EOF.
        assert_eq!(sample("a_total 3 # {trace_id=\"x\"} 1.0").value, 3.0);
        match parse_line("a 1 1.5", true) {
            Ok(Line::Sample(s)) => assert_eq!(s.timestamp_ms, Some(1500)),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_line("# EOF", false), Ok(Line::Eof));
        assert_eq!(parse_line("# just a comment", false), Ok(Line::Skip));
        assert_eq!(parse_line("#", false), Ok(Line::Skip));
        assert_eq!(parse_line("", false), Ok(Line::Skip));
        for (bad, why) in [
            ("<html>", ParseError::Name),
            ("1abc 2", ParseError::Name),
            ("a-b 1", ParseError::Name),
            ("a", ParseError::Value),
            ("a x", ParseError::Value),
            ("a{b=c} 1", ParseError::Labels),
            ("a{b=\"c} 1", ParseError::Labels),
            ("a{b=\"c\" d=\"e\"} 1", ParseError::Labels),
            ("a{b=\"c\",b=\"d\"} 1", ParseError::DuplicateLabel),
            ("a 1 1.5", ParseError::Timestamp),
            ("a 1 2 3", ParseError::Trailing),
            ("# TYPE a nonsense", ParseError::Meta),
            ("# HELP 1a x", ParseError::Meta),
        ] {
            assert_eq!(parse_line(bad, false), Err(why), "{bad:?}");
        }
    }

    fn label_value() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('\\'),
                Just('"'),
                Just('\n'),
                Just(' '),
                Just(','),
                Just('}'),
                Just('='),
                Just('#'),
                any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            ],
            0..12,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
            prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", label_value(), 0..5),
            prop_oneof![any::<f64>().prop_filter("finite", |v| v.is_finite()), Just(0.0), Just(-1.5e300), Just(1e-300)],
            prop::option::of(any::<i64>()),
        )
            .prop_map(|(name, labels, value, timestamp_ms)| Sample {
                name,
                labels: labels.into_iter().collect(),
                value,
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn rendered_samples_parse_back_exactly(samples in prop::collection::vec(any_sample(), 1..8)) {
            let mut text = String::new();
            for s in &samples {
                render_sample(s, &mut text);
            }
            let parsed: Vec<Sample> = text
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(|l| match parse_line(l, false) {
                    Ok(Line::Sample(s)) => s,
                    other => panic!("{l:?} → {other:?}"),
                })
                .collect();
            prop_assert_eq!(parsed, samples);
        }

        #[test]
        fn non_finite_values_render_and_parse(v in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]) {
            let mut text = String::new();
            render_sample(&Sample { name: "x".into(), labels: vec![], value: v, timestamp_ms: None }, &mut text);
            let s = sample(text.trim_end());
            prop_assert!(s.value.is_nan() == v.is_nan() && (v.is_nan() || s.value == v));
        }

        #[test]
        fn any_line_parses_or_fails_without_panicking(line in "\\PC{0,60}", bytes in prop::collection::vec(prop_oneof![Just(b'{'), Just(b'"'), Just(b'\\'), Just(b'='), Just(b','), Just(b'}'), Just(b' '), Just(b'a'), Just(b'1'), Just(b'#')], 0..30)) {
            let _ = parse_line(&line, false);
            let _ = parse_line(&line, true);
            let text = String::from_utf8(bytes).expect("ascii");
            let _ = parse_line(&text, false);
            let _ = parse_line(&format!("m{text} 1"), false);
        }
    }
}

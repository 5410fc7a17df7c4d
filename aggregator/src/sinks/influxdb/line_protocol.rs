//! InfluxDB line protocol: escaping and the encoding of one point.
//!
//! Role: [`LineBuilder`] writes `measurement,tag=v,… field=v,… timestamp` with the escaping the
//! protocol needs — measurement: `,` and space; tag keys, tag values and field keys: `,`, `=`
//! and space; string field values: `"` and `\` — and refuses what cannot be written: control
//! characters (a newline would end the line), empty names, non-finite floats, and a backslash
//! right before a character that needs escaping or at the end of a name (InfluxDB 1.x keeps
//! `\\` as two characters, so such a text has no exact encoding there). Floats are always
//! written with a `.` or an exponent (`1.0`, never `1`) so the field type never flips;
//! integers get the `i` suffix. Pure: touches nothing else.

use std::fmt::Write as _;

/// A point that cannot be written as line protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    /// A control character (a newline, carriage return, tab, …) would break or alter the line.
    #[error("{what} {text:?} contains the control character {ch:?}, which line protocol cannot carry")]
    ControlChar {
        /// Which part: measurement, tag key, …
        what: &'static str,
        /// The text.
        text: String,
        /// The character.
        ch: char,
    },
    /// An empty measurement, tag key or field key.
    #[error("empty {what}")]
    Empty {
        /// Which part.
        what: &'static str,
    },
    /// A backslash before a character that must be escaped, or at the end.
    #[error("{what} {text:?} has a backslash before {next}, which InfluxDB 1.x cannot read back exactly")]
    Backslash {
        /// Which part.
        what: &'static str,
        /// The text.
        text: String,
        /// What follows the backslash.
        next: String,
    },
    /// NaN or an infinity.
    #[error("field {field:?} is not finite ({value})")]
    NonFinite {
        /// The field key.
        field: String,
        /// The value.
        value: f64,
    },
}

/// Which characters a part escapes.
#[derive(Debug, Clone, Copy)]
enum Part {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Measurement => "measurement",
            Part::TagKey => "tag key",
            Part::TagValue => "tag value",
            Part::FieldKey => "field key",
        }
    }

    fn special(self, c: char) -> bool {
        match self {
            Part::Measurement => c == ',' || c == ' ',
            Part::TagKey | Part::TagValue | Part::FieldKey => c == ',' || c == ' ' || c == '=',
        }
    }
}

/// Appends `text` escaped for `part`.
fn escape_into(out: &mut String, text: &str, part: Part) -> Result<(), LineError> {
    if text.is_empty() {
        return Err(LineError::Empty { what: part.name() });
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_control() {
            return Err(LineError::ControlChar { what: part.name(), text: text.to_owned(), ch: c });
        }
        if c == '\\' {
            match chars.peek() {
                None => {
                    return Err(LineError::Backslash {
                        what: part.name(),
                        text: text.to_owned(),
                        next: "the end".into(),
                    });
                }
                Some(&n) if part.special(n) => {
                    return Err(LineError::Backslash {
                        what: part.name(),
                        text: text.to_owned(),
                        next: format!("{n:?}"),
                    });
                }
                Some(_) => {}
            }
        }
        if part.special(c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(())
}

/// Appends a string field value, quoted, with `"` and `\` escaped.
fn quote_into(out: &mut String, field: &str, text: &str) -> Result<(), LineError> {
    out.push('"');
    for c in text.chars() {
        if c == '\n' || c == '\r' {
            return Err(LineError::ControlChar { what: "string field", text: format!("{field}={text}"), ch: c });
        }
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

/// Builds one line: [`new`](Self::new), tags, fields, then [`finish`](Self::finish).
#[derive(Debug)]
pub struct LineBuilder {
    line: String,
    fields: usize,
}

impl LineBuilder {
    /// Starts a line for `measurement`.
    pub fn new(measurement: &str) -> Result<LineBuilder, LineError> {
        let mut line = String::with_capacity(256);
        escape_into(&mut line, measurement, Part::Measurement)?;
        Ok(LineBuilder { line, fields: 0 })
    }

    /// Adds a tag (call before any field; InfluxDB prefers tags sorted by key). An empty value
    /// is left out: InfluxDB treats a missing tag and an empty one alike.
    pub fn tag(mut self, key: &str, value: &str) -> Result<LineBuilder, LineError> {
        if value.is_empty() {
            return Ok(self);
        }
        self.line.push(',');
        escape_into(&mut self.line, key, Part::TagKey)?;
        self.line.push('=');
        escape_into(&mut self.line, value, Part::TagValue)?;
        Ok(self)
    }

    fn field_key(&mut self, key: &str) -> Result<(), LineError> {
        self.line.push(if self.fields == 0 { ' ' } else { ',' });
        self.fields += 1;
        escape_into(&mut self.line, key, Part::FieldKey)?;
        self.line.push('=');
        Ok(())
    }

    /// Adds a float field, always written as a float (`1.0`, `2.5e-7`).
    pub fn float(mut self, key: &str, value: f64) -> Result<LineBuilder, LineError> {
        if !value.is_finite() {
            return Err(LineError::NonFinite { field: key.to_owned(), value });
        }
        self.field_key(key)?;
        // `{:?}` is the shortest text that reads back as the same double, and always has a
        // `.` or an exponent; `{}` would write 1.0 as `1`.
        let _ = write!(self.line, "{value:?}");
        Ok(self)
    }

    /// Adds an integer field (`12i`).
    pub fn int(mut self, key: &str, value: i64) -> Result<LineBuilder, LineError> {
        self.field_key(key)?;
        let _ = write!(self.line, "{value}i");
        Ok(self)
    }

    /// Adds a string field.
    pub fn string(mut self, key: &str, value: &str) -> Result<LineBuilder, LineError> {
        self.field_key(key)?;
        quote_into(&mut self.line, key, value)?;
        Ok(self)
    }

    /// Ends the line with `timestamp` (in the precision the write request names), no newline.
    pub fn finish(mut self, timestamp: i64) -> Result<String, LineError> {
        if self.fields == 0 {
            return Err(LineError::Empty { what: "field set" });
        }
        let _ = write!(self.line, " {timestamp}");
        Ok(self.line)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    /// A reference reader of one line, written from InfluxDB 1.x's parser: a backslash makes
    /// the scanner skip the next byte; tag parts are then unescaped by replacing `\,`, `\ `,
    /// `\=` (measurement: `\,`, `\ `); string fields by `\"` and `\\`.
    fn split_unescaped(s: &str, seps: &[u8]) -> Vec<String> {
        let b = s.as_bytes();
        let (mut parts, mut start, mut i) = (vec![], 0, 0);
        while i < b.len() {
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            if seps.contains(&b[i]) {
                parts.push(s[start..i].to_owned());
                start = i + 1;
            }
            i += 1;
        }
        parts.push(s[start.min(s.len())..].to_owned());
        parts
    }

    fn unescape(s: &str, measurement: bool) -> String {
        let mut out = s.replace("\\,", ",").replace("\\ ", " ");
        if !measurement {
            out = out.replace("\\=", "=");
        }
        out
    }

    type Parsed = (String, Vec<(String, String)>, Vec<(String, String)>, String);

    fn parse(line: &str) -> Parsed {
        // The series key ends at the first unescaped space; the field set at the next space
        // outside a quoted string.
        let key = split_unescaped(line, b" ").remove(0);
        let rest = &line[key.len() + 1..];
        let (b, mut i, mut quoted) = (rest.as_bytes(), 0, false);
        while i < b.len() && (quoted || b[i] != b' ') {
            match b[i] {
                b'\\' => i += 1,
                b'"' => quoted = !quoted,
                _ => {}
            }
            i += 1;
        }
        let sections = [key.clone(), rest[..i].to_owned(), rest[(i + 1).min(rest.len())..].to_owned()];
        let series = split_unescaped(&sections[0], b",");
        let measurement = unescape(&series[0], true);
        let tags = series[1..]
            .iter()
            .map(|t| {
                let kv = split_unescaped(t, b"=");
                assert_eq!(kv.len(), 2, "{t:?}");
                (unescape(&kv[0], false), unescape(&kv[1], false))
            })
            .collect();
        // Fields: only numeric and simple string fields in these tests; split on unescaped
        // commas outside quotes.
        let mut fields = vec![];
        let (b, mut start, mut i, mut quoted) = (sections[1].as_bytes(), 0, 0, false);
        while i <= b.len() {
            if i < b.len() && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if i == b.len() || (b[i] == b',' && !quoted) {
                let f = &sections[1][start..i];
                let kv = split_unescaped(f, b"=");
                let key = unescape(&kv[0], false);
                let value = kv[1..].join("=");
                let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(v) => v.replace("\\\"", "\"").replace("\\\\", "\\"),
                    None => value,
                };
                fields.push((key, value));
                start = i + 1;
            } else if b[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        (measurement, tags, fields, sections[2].clone())
    }

    #[test]
    fn escapes_each_part_as_the_protocol_says() {
        let line = LineBuilder::new("m a,b=c")
            .unwrap()
            .tag("k,1 =", "v=1, 2")
            .unwrap()
            .float("f", 1.0)
            .unwrap()
            .int("n", 12)
            .unwrap()
            .string("s", r#"a "q" \ b"#)
            .unwrap()
            .finish(5)
            .unwrap();
        assert_eq!(line, r#"m\ a\,b=c,k\,1\ \==v\=1\,\ 2 f=1.0,n=12i,s="a \"q\" \\ b" 5"#);
        let (m, tags, fields, ts) = parse(&line);
        assert_eq!(m, "m a,b=c");
        assert_eq!(tags, vec![("k,1 =".to_owned(), "v=1, 2".to_owned())]);
        assert_eq!(fields[2], ("s".to_owned(), r#"a "q" \ b"#.to_owned()));
        assert_eq!(ts, "5");
    }

    #[test]
    fn floats_keep_their_type() {
        for (v, text) in [(1.0, "1.0"), (-0.5, "-0.5"), (1e21, "1e21"), (0.1 + 0.2, "0.30000000000000004")] {
            let line = LineBuilder::new("m").unwrap().float("f", v).unwrap().finish(0).unwrap();
            assert_eq!(line, format!("m f={text} 0"));
            assert_eq!(text.parse::<f64>().unwrap(), v);
        }
        assert!(matches!(LineBuilder::new("m").unwrap().float("f", f64::NAN), Err(LineError::NonFinite { .. })));
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        let err = LineBuilder::new("m").unwrap().tag("k", "a\nb").unwrap_err();
        assert!(err.to_string().contains("control character '\\n'"), "{err}");
        assert!(matches!(LineBuilder::new("m\r"), Err(LineError::ControlChar { ch: '\r', .. })));
        assert!(matches!(LineBuilder::new(""), Err(LineError::Empty { .. })));
        assert!(matches!(LineBuilder::new("m").unwrap().tag("k", "a\\"), Err(LineError::Backslash { .. })));
        assert!(matches!(LineBuilder::new("m").unwrap().tag("k", "a\\,b"), Err(LineError::Backslash { .. })));
        assert!(matches!(LineBuilder::new("m").unwrap().string("s", "x\ny"), Err(LineError::ControlChar { .. })));
        assert!(matches!(LineBuilder::new("m").unwrap().finish(1), Err(LineError::Empty { .. })));
        // A backslash before anything else is kept as it is.
        let line =
            LineBuilder::new("m").unwrap().tag("k", "a\\b\\\\c").unwrap().int("n", 1).unwrap().finish(1).unwrap();
        assert_eq!(line, "m,k=a\\b\\\\c n=1i 1");
    }

    fn text() -> impl Strategy<Value = String> {
        // Mostly the characters that matter, plus any unicode scalar.
        let special = prop::sample::select(vec![',', ' ', '=', '"', '\\', 'a', 'é', '€', '𝄞', '\n', '\t', '#']);
        prop::collection::vec(prop_oneof![3 => special, 1 => any::<char>()], 1..12)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn written_lines_read_back_exactly(m in text(), k in text(), v in text(), s in text(), x in any::<f64>()) {
            let built = LineBuilder::new(&m)
                .and_then(|b| b.tag(&k, &v))
                .and_then(|b| b.string("s", &s))
                .and_then(|b| b.float("x", x))
                .and_then(|b| b.finish(-7));
            let has_control = [&m, &k, &v].iter().any(|t| t.chars().any(char::is_control))
                || s.contains(['\n', '\r']);
            let has_backslash = [&m, &k, &v].iter().any(|t| t.contains('\\'));
            match built {
                Ok(line) => {
                    prop_assert!(!line.contains(['\n', '\r']));
                    let (pm, tags, fields, ts) = parse(&line);
                    prop_assert_eq!(pm, m);
                    prop_assert_eq!(tags, vec![(k, v)]);
                    prop_assert_eq!(&fields[0], &("s".to_owned(), s));
                    prop_assert_eq!(fields[1].1.parse::<f64>().ok(), Some(x));
                    prop_assert_eq!(ts, "-7");
                }
                Err(LineError::ControlChar { .. }) => prop_assert!(has_control),
                Err(LineError::Backslash { .. }) => prop_assert!(has_backslash),
                Err(LineError::NonFinite { .. }) => prop_assert!(!x.is_finite()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}

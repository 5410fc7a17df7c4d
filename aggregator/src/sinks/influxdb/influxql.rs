//! InfluxQL text the writer sends: string literals and the `DELETE` of a retracted point.
//!
//! Role: [`string_literal`] quotes a text as an InfluxQL string literal — `'…'` with `\` and
//! `'` escaped by a backslash and a newline written `\n`, the only escapes InfluxQL's scanner
//! (`ScanString` of InfluxDB 1.x) reads; every other character, unicode included, stands for
//! itself. [`delete_point`] builds `DELETE FROM <measurement> WHERE "tag" = '…' AND … AND
//! time = <ms>ms`, which InfluxDB 1.x (tested against 1.6.7) applies to exactly the points
//! with those tag values at that timestamp, in every retention policy of the database. Pure:
//! touches nothing else.

/// `text` as an InfluxQL string literal, quotes included: `it's a\b` → `'it\'s a\\b'`.
pub fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An InfluxQL identifier in double quotes (`"` and `\` escaped), for names that may be
/// keywords (`window`, `time`, …).
pub fn identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `DELETE FROM "<measurement>" WHERE "<k>" = '<v>' AND … AND time = <time_ms>ms`: deletes the
/// point of the series with exactly these tag values at `time_ms`.
pub fn delete_point(measurement: &str, tags: &[(&str, &str)], time_ms: i64) -> String {
    let mut q = format!("DELETE FROM {} WHERE ", identifier(measurement));
    for (k, v) in tags {
        q.push_str(&identifier(k));
        q.push_str(" = ");
        q.push_str(&string_literal(v));
        q.push_str(" AND ");
    }
    q.push_str(&format!("time = {time_ms}ms"));
    q
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    /// A reference reader of one quoted string, written from InfluxQL's `ScanString`
    /// (influxql/scanner.go): the literal ends at the first unescaped quote; `\n`, `\\`, `\"`
    /// and `\'` are the only escapes (any other is an error); a raw newline is an error.
    /// Returns the text and what follows the literal.
    fn scan_string(s: &str) -> Result<(String, &str), String> {
        let mut chars = s.char_indices();
        let ending = match chars.next() {
            Some((_, c @ ('\'' | '"'))) => c,
            other => return Err(format!("not a string literal: {other:?}")),
        };
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            if c == ending {
                return Ok((out, &s[i + c.len_utf8()..]));
            }
            match c {
                '\n' => return Err("newline in string".into()),
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, e @ ('\\' | '"' | '\''))) => out.push(e),
                    other => return Err(format!("bad escape {other:?}")),
                },
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    #[test]
    fn literals_escape_quotes_backslashes_and_newlines() {
        assert_eq!(string_literal("plain"), "'plain'");
        assert_eq!(string_literal(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(string_literal("a\nb"), r"'a\nb'");
        assert_eq!(string_literal(r#""q" ü€"#), r#"'"q" ü€'"#);
        assert_eq!(string_literal(""), "''");
        assert_eq!(identifier(r#"win"dow"#), r#""win\"dow""#);
    }

    #[test]
    fn a_delete_names_every_tag_and_the_time() {
        let q = delete_point("meshmon_aggregate", &[("metric", "m'1"), ("window", "session:10s")], -1_500);
        assert_eq!(
            q,
            r#"DELETE FROM "meshmon_aggregate" WHERE "metric" = 'm\'1' AND "window" = 'session:10s' AND time = -1500ms"#
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any text — quotes, backslashes, newlines, unicode — reads back exactly, and the
        /// literal ends where it should (nothing after it is swallowed).
        #[test]
        fn literals_read_back_exactly(text in "(?s)[a-z'\"\\\\\n\r\t ü€,=%]{0,24}|\\PC{0,12}") {
            let lit = string_literal(&text);
            prop_assert!(!lit.contains('\n'));
            let rest_marker = " AND x";
            let joined = format!("{lit}{rest_marker}");
            let (read, rest) = scan_string(&joined).map_err(TestCaseError::fail)?;
            prop_assert_eq!(read, text);
            prop_assert_eq!(rest, rest_marker);
        }

        #[test]
        fn identifiers_read_back_exactly(name in "(?s)[a-z'\"\\\\\n ü]{0,16}") {
            let quoted = identifier(&name);
            let (read, rest) = scan_string(&quoted).map_err(TestCaseError::fail)?;
            prop_assert_eq!(read, name);
            prop_assert_eq!(rest, "");
        }
    }
}

//! The dimension key text: how the HTTP API names one dimension value.
//!
//! Role: [`encode`] and [`parse`], exact inverses, used by every route that takes or returns a
//! dimension. Pure: touches nothing else.
//!
//! # Format
//!
//! | dimension | key text |
//! |---|---|
//! | the fleet | `fleet` |
//! | a cluster | `cluster=<value>` |
//! | a node | `node=<value>` |
//! | a tag | `tag:<key>=<value>` |
//! | a dimension set | `set:<field1>=<value1>,<field2>=<value2>,…` (fields in configured order) |
//!
//! Inside every name and value the three characters that structure the text are
//! percent-encoded: `%` as `%25`, `,` as `%2C`, `=` as `%3D`. Nothing else is encoded (a `:`
//! inside a tag key is fine: only the leading `tag:` / `set:` is a prefix). So a cluster named
//! `a=b,c` has the key `cluster=a%3Db%2Cc`, and the tag `note` = `50%` has `tag:note=50%25`.
//! Every dimension has exactly one key text; the parser accepts only those three escapes
//! (hex digits in either case) and refuses a bare `=` or `,` where a name or value stands.
//! This is the engine's `Dimension` display text with those escapes added. In a URL the key
//! is a query parameter value and is URL-encoded on top (`encodeURIComponent`).

use std::sync::Arc;

use crate::engine::Dimension;

/// A dimension key text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid dimension key {text:?}: {why} (expected fleet, cluster=<v>, node=<v>, tag:<k>=<v> or \
     set:<f1>=<v1>,<f2>=<v2>, with %, ',' and '=' inside names and values written %25, %2C, %3D)"
)]
pub struct DimensionKeyError {
    text: String,
    why: String,
}

/// Appends `s` with `%`, `,` and `=` percent-encoded.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

/// The key text of a dimension value.
pub fn encode(d: &Dimension) -> String {
    let mut out = String::new();
    match d {
        Dimension::Fleet => out.push_str("fleet"),
        Dimension::Cluster(c) => {
            out.push_str("cluster=");
            escape_into(&mut out, c);
        }
        Dimension::Node(n) => {
            out.push_str("node=");
            escape_into(&mut out, n);
        }
        Dimension::Tag { key, value } => {
            out.push_str("tag:");
            escape_into(&mut out, key);
            out.push('=');
            escape_into(&mut out, value);
        }
        Dimension::Set(pairs) => {
            out.push_str("set:");
            for (i, (field, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                escape_into(&mut out, field);
                out.push('=');
                escape_into(&mut out, value);
            }
        }
    }
    out
}

/// Undoes [`escape_into`]; `what` names the part for error messages.
fn unescape(s: &str, what: &str) -> Result<Arc<str>, String> {
    if !s.contains(['%', ',', '=']) {
        return Ok(Arc::from(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['%', ',', '=']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.as_bytes().first() {
            Some(b'=') => return Err(format!("unescaped '=' in {what} (write it as %3D)")),
            Some(b',') => return Err(format!("unescaped ',' in {what} (write it as %2C)")),
            _ => {}
        }
        let code =
            tail.get(1..3).ok_or_else(|| format!("incomplete escape in {what} (a % must start %25, %2C or %3D)"))?;
        match code.to_ascii_uppercase().as_str() {
            "25" => out.push('%'),
            "2C" => out.push(','),
            "3D" => out.push('='),
            _ => return Err(format!("unknown escape %{code} in {what} (only %25, %2C and %3D are used)")),
        }
        rest = tail.get(3..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(Arc::from(out))
}

/// Splits `name=value` at its only bare `=` and unescapes both sides.
fn pair(s: &str, name: &str) -> Result<(Arc<str>, Arc<str>), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("missing '=' after the {name}"))?;
    Ok((unescape(k, name)?, unescape(v, "value")?))
}

/// Parses a dimension key text (see the module documentation).
pub fn parse(text: &str) -> Result<Dimension, DimensionKeyError> {
    let parsed = if text == "fleet" {
        Ok(Dimension::Fleet)
    } else if let Some(v) = text.strip_prefix("cluster=") {
        unescape(v, "cluster").map(Dimension::Cluster)
    } else if let Some(v) = text.strip_prefix("node=") {
        unescape(v, "node").map(Dimension::Node)
    } else if let Some(rest) = text.strip_prefix("tag:") {
        pair(rest, "tag key").map(|(key, value)| Dimension::Tag { key, value })
    } else if let Some(rest) = text.strip_prefix("set:") {
        if rest.is_empty() {
            Err("a set needs at least one field=value pair".to_owned())
        } else {
            rest.split(',')
                .map(|p| pair(p, "set field"))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Dimension::Set(v.into()))
        }
    } else {
        Err("unknown kind".to_owned())
    };
    parsed.map_err(|why| DimensionKeyError { text: text.to_owned(), why })
}

//! Parser of one StatsD line (Etsy StatsD with the DogStatsD extensions). Pure.
//!
//! Role: [`parse_line`] splits `name:value[:value…]|type[|@rate][|#tag:value,tag…][|…]` into
//! borrowed parts without allocating (except the tag list when there are tags): types `c`,
//! `g` (a leading `+`/`-` makes a gauge value a delta), `ms`, `h`, `d` (timers), `s` (sets);
//! unknown `|…` sections (DogStatsD container ids, timestamps) are ignored. Errors say what is
//! wrong; no input makes it panic.

/// The kinds of StatsD metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `c`: summed over the interval.
    Counter,
    /// `g`: last value (or deltas applied to it).
    Gauge,
    /// `ms`, `h`, `d`: distribution of values.
    Timer,
    /// `s`: distinct values.
    Set,
}

impl Kind {
    /// One byte standing for the kind in aggregation keys.
    pub fn code(self) -> char {
        match self {
            Kind::Counter => 'c',
            Kind::Gauge => 'g',
            Kind::Timer => 't',
            Kind::Set => 's',
        }
    }
}

/// One parsed line; `values` holds one or more values separated by `:`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdLine<'a> {
    /// Metric name as sent.
    pub name: &'a str,
    /// The value text (several separated by `:`).
    pub values: &'a str,
    /// The kind.
    pub kind: Kind,
    /// Sample rate in (0, 1] (1 when not given).
    pub rate: f64,
    /// DogStatsD tags (`key:value`; a bare `key` gets the value `true`).
    pub tags: Vec<(&'a str, &'a str)>,
}

/// Why a line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No `:` after the name, or an empty or invalid name.
    #[error("invalid name")]
    Name,
    /// No `|type`, or an unknown type.
    #[error("invalid type")]
    Type,
    /// A value is not a finite number.
    #[error("invalid value")]
    Value,
    /// `@rate` outside (0, 1].
    #[error("invalid sample rate")]
    Rate,
    /// A tag is empty, too long, repeated, or there are too many.
    #[error("invalid tags")]
    Tags,
}

/// Longest name or tag key/value accepted, in bytes.
pub const MAX_PART_LEN: usize = 200;

fn valid_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_PART_LEN && s.bytes().all(|b| b > b' ' && b != 0x7f)
}

/// Parses a finite number as StatsD senders write it.
pub fn parse_number(text: &str) -> Option<f64> {
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Parses one line (without its `\n`); at most `max_tags` tags.
///
/// # Errors
/// [`LineError`] saying what is wrong.
pub fn parse_line(line: &str, max_tags: usize) -> Result<StatsdLine<'_>, LineError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (name, rest) = line.split_once(':').ok_or(LineError::Name)?;
    if !valid_part(name) || name.contains(['|', '@', '#', ',']) {
        return Err(LineError::Name);
    }
    let mut sections = rest.split('|');
    let values = sections.next().unwrap_or_default();
    if values.is_empty() {
        return Err(LineError::Value);
    }
    let kind = match sections.next() {
        Some("c") => Kind::Counter,
        Some("g") => Kind::Gauge,
        Some("ms" | "h" | "d") => Kind::Timer,
        Some("s") => Kind::Set,
        _ => return Err(LineError::Type),
    };
    let mut rate = 1.0;
    let mut tags = Vec::new();
    for section in sections {
        if let Some(r) = section.strip_prefix('@') {
            rate = parse_number(r).filter(|r| *r > 0.0 && *r <= 1.0).ok_or(LineError::Rate)?;
        } else if let Some(list) = section.strip_prefix('#') {
            for tag in list.split(',') {
                let (k, v) = tag.split_once(':').unwrap_or((tag, "true"));
                if !valid_part(k) || !valid_part(v) || tags.len() >= max_tags || tags.iter().any(|(o, _)| *o == k) {
                    return Err(LineError::Tags);
                }
                tags.push((k, v));
            }
        }
        // Other sections (DogStatsD `c:` container id, `T` timestamp, ...) are ignored.
    }
    if kind != Kind::Set && !values.split(':').all(|v| parse_number(v).is_some()) {
        return Err(LineError::Value);
    }
    if kind == Kind::Set && values.len() > MAX_PART_LEN {
        return Err(LineError::Value);
    }
    Ok(StatsdLine { name, values, kind, rate, tags })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_every_kind_rates_and_tags() {
        let l = parse_line("page.views:3|c|@0.5", 8).expect("counter");
        assert_eq!((l.name, l.values, l.kind, l.rate), ("page.views", "3", Kind::Counter, 0.5));
        let l = parse_line("q:-2|g", 8).expect("gauge");
        assert_eq!((l.kind, l.values), (Kind::Gauge, "-2"));
        assert_eq!(parse_line("t:1.5|ms", 8).expect("ms").kind, Kind::Timer);
        assert_eq!(parse_line("t:1:2:3|h", 8).expect("h").values, "1:2:3");
        assert_eq!(parse_line("t:1|d", 8).expect("d").kind, Kind::Timer);
        let l = parse_line("users:alice|s|#env:prod,canary", 8).expect("set");
        assert_eq!(l.kind, Kind::Set);
        assert_eq!(l.tags, vec![("env", "prod"), ("canary", "true")]);
        let l = parse_line("a:1|c|#k:v|c:abc|T1700000000\r", 8).expect("dogstatsd extras");
        assert_eq!(l.tags, vec![("k", "v")]);
        for (bad, why) in [
            ("", LineError::Name),
            ("nocolon", LineError::Name),
            (":1|c", LineError::Name),
            ("a b:1|c", LineError::Name),
            ("a:1", LineError::Type),
            ("a:1|x", LineError::Type),
            ("a:|c", LineError::Value),
            ("a:x|c", LineError::Value),
            ("a:NaN|g", LineError::Value),
            ("a:inf|ms", LineError::Value),
            ("a:1|c|@0", LineError::Rate),
            ("a:1|c|@2", LineError::Rate),
            ("a:1|c|#", LineError::Tags),
            ("a:1|c|#k:v,k:w", LineError::Tags),
            ("a:1|c|#a,b,c", LineError::Tags),
        ] {
            assert_eq!(parse_line(bad, 2), Err(why), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_line_parses_or_fails_without_panicking(line in "\\PC{0,80}", bytes in prop::collection::vec(prop_oneof![Just(b':'), Just(b'|'), Just(b'@'), Just(b'#'), Just(b','), Just(b'c'), Just(b'g'), Just(b's'), Just(b'1'), Just(b'.'), Just(b'-')], 0..30)) {
            let _ = parse_line(&line, 4);
            let _ = parse_line(&String::from_utf8(bytes).expect("ascii"), 4);
        }

        #[test]
        fn rendered_lines_parse_back(
            name in "[a-zA-Z][a-zA-Z0-9._-]{0,30}",
            value in -1e9f64..1e9,
            rate in prop::option::of(0.01f64..=1.0),
            tags in prop::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{1,8}", 0..4),
        ) {
            let mut line = format!("{name}:{value}|ms");
            if let Some(r) = rate {
                line.push_str(&format!("|@{r}"));
            }
            if !tags.is_empty() {
                let list: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                line.push_str(&format!("|#{}", list.join(",")));
            }
            let l = parse_line(&line, 8).expect("valid");
            prop_assert_eq!(l.name, name.as_str());
            prop_assert_eq!(parse_number(l.values), Some(value));
            prop_assert_eq!(l.rate, rate.unwrap_or(1.0));
            let want: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(l.tags, want);
        }
    }
}

//! `docs/METRICS.md` lists exactly the metric names each plugin's code can produce.
//!
//! Each `## … (`[[plugins.<kind>]]`)` section's table is compared with that plugin's
//! `METRIC_NAMES`; the "Plugin health" section with the runner's `HEALTH_METRICS`. Rows whose
//! name contains `<` are patterns (names from the source) and are skipped. Reads only the file.

use std::collections::{BTreeMap, BTreeSet};

use meshmon_agent::plugins::{
    http, kafka, log, mysql, postgresql, process, prometheus, rabbitmq, redis, runner, statsd, system, tcp,
};

/// Section key → documented fixed names. The key is the plugin kind, or `health`.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in include_str!("../../docs/METRICS.md").lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = if title.starts_with("Plugin health") {
                Some("health".to_owned())
            } else if let Some((_, rest)) = title.split_once("plugins.") {
                Some(rest.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default().to_owned())
            } else {
                None
            };
            if let Some(s) = &section {
                out.entry(s.clone()).or_default();
            }
            continue;
        }
        let Some(s) = &section else { continue };
        if let Some(name) = line.strip_prefix("| `").and_then(|l| l.split('`').next())
            && !name.contains('<')
        {
            out.entry(s.clone()).or_default().insert(name.to_owned());
        }
    }
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_plugin_section_lists_exactly_its_metric_names() {
    let code: BTreeMap<String, BTreeSet<String>> = [
        ("health", set(&runner::HEALTH_METRICS)),
        ("system", set(&system::METRIC_NAMES)),
        ("process", set(process::METRIC_NAMES)),
        ("tcp", set(tcp::METRIC_NAMES)),
        ("http", set(http::METRIC_NAMES)),
        ("log", set(log::METRIC_NAMES)),
        ("kafka", set(kafka::METRIC_NAMES)),
        ("redis", set(redis::METRIC_NAMES)),
        ("rabbitmq", set(rabbitmq::METRIC_NAMES)),
        ("postgresql", set(postgresql::METRIC_NAMES)),
        ("mysql", set(mysql::METRIC_NAMES)),
        ("prometheus", set(prometheus::METRIC_NAMES)),
        ("statsd", set(statsd::METRIC_NAMES)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let doc = documented();
    for (kind, names) in &code {
        assert_eq!(doc.get(kind), Some(names), "docs/METRICS.md section for {kind} differs from the code");
    }
    let extra: Vec<&String> = doc.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(extra.is_empty(), "docs/METRICS.md documents unknown plugin kinds {extra:?}");
}

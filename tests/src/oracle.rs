//! A brute-force oracle for end-to-end tests, and the API reads to compare with it.
//!
//! Role: tests describe the records they sent through [`OracleRecord`]; [`expected_points`]
//! groups them per (metric, dimension key) and tumbling window ([`session_points`]: session
//! windows), [`fold`] computes the six statistics as the aggregator's API shows them (decimals
//! exactly, as text; doubles as numbers; `last` by event time, then agent, sequence and
//! index) and [`fold_doubles`] the same fold as InfluxDB holds it (every statistic a double,
//! decimals converted as the aggregator converts them), and [`check_aggregates`]
//! compares every expected point with `/api/aggregates`. [`fleet_raw_records`] pages through the
//! drill-down of every fleet point. Independent of the product's code on purpose. Touches only
//! the HTTP API it is pointed at.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meshmon_proto::v1::Decimal;
use serde_json::{Value as Json, json};

use crate::{get_json, http, prometheus_value, query_value};

/// A value as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// A double.
    Double(f64),
    /// An exact decimal in nano-units (value × 10⁹).
    Decimal(i128),
}

/// What the oracle needs to know of a sent record.
pub trait OracleRecord {
    /// Its metric.
    fn metric(&self) -> &str;
    /// The dimension keys it counts under, as the API names them (`fleet`, `cluster=c1`, …).
    fn dimension_keys(&self) -> Vec<String>;
    /// Event time, ms.
    fn at(&self) -> i64;
    /// Its value.
    fn value(&self) -> Num;
    /// (agent, sequence, index): the tie-break of `last` among equal event times. Tests whose
    /// event times are unique need not know it.
    fn id(&self) -> (String, u64, u32) {
        (String::new(), 0, 0)
    }
}

/// Records per (metric, dimension key) and window start (ms).
pub type Expected<'a, R> = BTreeMap<(String, String), BTreeMap<i64, Vec<&'a R>>>;

/// Groups `records` into tumbling windows of `window_ms`.
pub fn expected_points<R: OracleRecord>(records: &[R], window_ms: i64) -> Expected<'_, R> {
    let mut out: Expected<'_, R> = BTreeMap::new();
    for r in records {
        let start = r.at().div_euclid(window_ms) * window_ms;
        for key in r.dimension_keys() {
            out.entry((r.metric().to_string(), key)).or_default().entry(start).or_default().push(r);
        }
    }
    out
}

/// Groups `records` into session windows of `gap_ms` per (metric, dimension key): records
/// closer than the gap (strictly) share a session, keyed by its first event time; the session
/// ends at its last event time + `gap_ms`.
pub fn session_points<R: OracleRecord>(records: &[R], gap_ms: i64) -> Expected<'_, R> {
    let mut series: BTreeMap<(String, String), Vec<&R>> = BTreeMap::new();
    for r in records {
        for key in r.dimension_keys() {
            series.entry((r.metric().to_string(), key)).or_default().push(r);
        }
    }
    let mut out: Expected<'_, R> = BTreeMap::new();
    for (key, mut recs) in series {
        recs.sort_by_key(|r| r.at());
        let sessions = out.entry(key).or_default();
        let mut current: Option<(i64, i64)> = None; // (start, last event time)
        for r in recs {
            let start = match current {
                Some((start, last)) if r.at() - last < gap_ms => start,
                _ => r.at(),
            };
            current = Some((start, r.at()));
            sessions.entry(start).or_default().push(r);
        }
    }
    out
}

/// The text of a decimal in nano-units.
pub fn decimal_text(n: i128) -> Json {
    Decimal::from_nano_units(n).map_or(Json::Null, |d| json!(d.to_string()))
}

/// count, sum, avg, min, max, last and last_time, as the API shows them. Panics on an empty
/// set or one mixing doubles and decimals (a test-data mistake).
pub fn fold<R: OracleRecord>(records: &[&R]) -> BTreeMap<&'static str, Json> {
    let count = records.len();
    let Some(last) = records.iter().max_by_key(|r| (r.at(), r.id())) else { panic!("no records to fold") };
    let mut out = BTreeMap::new();
    out.insert("count", json!(count));
    out.insert("last_time", json!(last.at()));
    let decimals: Option<Vec<i128>> =
        records.iter().map(|r| if let Num::Decimal(n) = r.value() { Some(n) } else { None }).collect();
    if let Some(v) = decimals {
        let sum: i128 = v.iter().sum();
        let n = count as i128;
        // Exact mean rounded half away from zero to the nano-unit.
        let (q, rem) = (sum / n, sum % n);
        out.insert("sum", decimal_text(sum));
        out.insert("avg", decimal_text(if 2 * rem.abs() >= n { q + sum.signum() } else { q }));
        out.insert("min", decimal_text(v.iter().copied().min().unwrap_or_default()));
        out.insert("max", decimal_text(v.iter().copied().max().unwrap_or_default()));
        if let Num::Decimal(l) = last.value() {
            out.insert("last", decimal_text(l));
        }
    } else {
        let v: Vec<f64> = records
            .iter()
            .map(|r| match r.value() {
                Num::Double(f) => f,
                Num::Decimal(_) => panic!("a metric with doubles and decimals in the test data"),
            })
            .collect();
        let sum: f64 = v.iter().sum();
        out.insert("sum", json!(sum));
        out.insert("avg", json!(sum / count as f64));
        out.insert("min", json!(v.iter().copied().fold(f64::INFINITY, f64::min)));
        out.insert("max", json!(v.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        if let Num::Double(l) = last.value() {
            out.insert("last", json!(l));
        }
    }
    out
}

/// [`fold`] as InfluxDB holds it (`docs/INFLUXDB.md`): `sum`, `avg`, `min`, `max` and `last`
/// as doubles — a decimal's nano-units divided by 10⁹ in double arithmetic, as the aggregator
/// converts them — `count` and `last_time` as integers.
pub fn fold_doubles<R: OracleRecord>(records: &[&R]) -> BTreeMap<&'static str, Json> {
    fold(records)
        .into_iter()
        .map(|(field, v)| {
            let v = match v {
                Json::String(text) => {
                    let nanos = text
                        .parse::<Decimal>()
                        .ok()
                        .and_then(|d| d.to_nano_units().ok())
                        .unwrap_or_else(|| panic!("fold gave a bad decimal {text:?}"));
                    json!(nanos as f64 / 1e9)
                }
                other => other,
            };
            (field, v)
        })
        .collect()
}

/// Equal JSON, numbers compared as doubles (`1024` and `1024.0` are the same value).
pub fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `/api/aggregates` of one series in `[from, to)` (ms).
pub fn points(addr: SocketAddr, metric: &str, key: &str, from: i64, to: i64) -> Result<Vec<Json>, String> {
    let path =
        format!("/api/aggregates?metric={}&dimension={}&from={from}&to={to}", query_value(metric), query_value(key));
    let body = get_json(addr, &path)?;
    body["points"].as_array().cloned().ok_or_else(|| format!("no points array in {body}"))
}

/// Compares every expected point in `[from, to)` with the API; the first difference as `Err`.
pub fn check_aggregates<R: OracleRecord>(
    addr: SocketAddr,
    expected: &Expected<'_, R>,
    from: i64,
    to: i64,
) -> Result<(), String> {
    for ((metric, key), want) in expected {
        let got = points(addr, metric, key, from, to)?;
        let got_starts: Vec<i64> = got.iter().filter_map(|p| p["start"].as_i64()).collect();
        let want_starts: Vec<i64> = want.keys().copied().collect();
        if got_starts != want_starts {
            return Err(format!("{metric} {{{key}}}: point starts {got_starts:?}, expected {want_starts:?}"));
        }
        for (p, (start, records)) in got.iter().zip(want) {
            for (field, w) in fold(records) {
                if !same(&p[field], &w) {
                    return Err(format!(
                        "{metric} {{{key}}} @{start}: {field} = {}, expected {w}; point {p}",
                        p[field]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every raw record behind every expected fleet point (all drill-down pages), in API form.
pub fn fleet_raw_records<R>(addr: SocketAddr, expected: &Expected<'_, R>) -> Result<Vec<Json>, String> {
    let mut all = Vec::new();
    for ((metric, key), points) in expected {
        if key != "fleet" {
            continue;
        }
        for start in points.keys() {
            let mut token = String::new();
            loop {
                let mut path =
                    format!("/api/raw?metric={}&dimension=fleet&start={start}&page_size=1000", query_value(metric));
                if !token.is_empty() {
                    path.push_str(&format!("&page_token={}", query_value(&token)));
                }
                let body = get_json(addr, &path)?;
                all.extend(body["records"].as_array().ok_or_else(|| format!("no records in {body}"))?.iter().cloned());
                match body["next_page_token"].as_str() {
                    Some(t) if !t.is_empty() => token = t.to_string(),
                    _ => break,
                }
            }
        }
    }
    Ok(all)
}

/// The (agent, sequence, index) of an API raw record.
pub fn raw_id(r: &Json) -> (String, u64, u32) {
    (
        r["agent"].as_str().unwrap_or_default().to_string(),
        r["sequence"].as_u64().unwrap_or_default(),
        u32::try_from(r["index"].as_u64().unwrap_or_default()).unwrap_or(u32::MAX),
    )
}

/// `/metrics` text (empty if unreachable).
pub fn metrics_text(addr: SocketAddr) -> String {
    http("GET", addr, "/metrics", None).map(|r| r.text()).unwrap_or_default()
}

/// One unlabelled sample of `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    prometheus_value(&metrics_text(addr), name)
}

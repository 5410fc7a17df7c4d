//! The StatsD aggregation of one interval. Pure (no I/O).
//!
//! Role: [`Aggregator::ingest`] takes one datagram, parses its lines (`parse.rs`) and folds
//! each into the series it belongs to — counters summed (divided by the sample rate), gauges
//! set or moved by a delta (from the last value, remembered across intervals), timers keeping
//! count/sum/min/max exactly and a uniform sample of at most `max_values` values for the
//! percentiles, sets counting distinct members (at most `max_values`). At most `max_names`
//! series per interval: lines of further series are counted as dropped. [`Aggregator::take`]
//! hands over the interval and starts the next; [`Interval::records`] turns it into records.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use meshmon_proto::v1::Record;

use super::parse::{Kind, parse_line, parse_number};
use crate::record::double_record;

/// Bounds of the aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most series per interval.
    pub max_names: usize,
    /// Most timer values / set members per series per interval.
    pub max_values: usize,
    /// Most tags per line.
    pub max_tags: usize,
}

/// Distribution of a timer's values in one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerState {
    /// Events, corrected by the sample rates (Σ 1/rate).
    pub count: f64,
    /// Values received.
    pub seen: u64,
    /// Σ value (unweighted, for the mean).
    pub sum_raw: f64,
    /// Σ value/rate (the estimated total).
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// A uniform sample of the values (all of them up to `max_values`).
    pub values: Vec<f64>,
}

/// What one series accumulated.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Σ value/rate.
    Counter(f64),
    /// Last value.
    Gauge(f64),
    /// Distribution.
    Timer(TimerState),
    /// Distinct member hashes; `true` when `max_values` was reached.
    Set(std::collections::HashSet<u64>, bool),
}

/// One series of the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name as sent.
    pub name: String,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// Accumulated value.
    pub value: Value,
}

/// Everything one interval received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interval {
    /// Series by aggregation key.
    pub series: HashMap<String, Series>,
    /// Datagrams received.
    pub packets: u64,
    /// Non-empty lines received.
    pub lines: u64,
    /// Lines refused by the parser.
    pub invalid_lines: u64,
    /// Lines dropped because `max_names` series were already held.
    pub dropped_names: u64,
}

/// The aggregation state shared by the listener and `collect`.
#[derive(Debug)]
pub struct Aggregator {
    bounds: Bounds,
    current: Interval,
    /// Last value of every gauge (for deltas), across intervals; at most `max_names`.
    gauges: HashMap<String, f64>,
    key: String,
}

/// Nearest-rank percentile `p` (0–100) of sorted `v` (not empty).
fn percentile(v: &[f64], p: f64) -> f64 {
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl Aggregator {
    /// An empty aggregation.
    pub fn new(bounds: Bounds) -> Aggregator {
        Aggregator { bounds, current: Interval::default(), gauges: HashMap::new(), key: String::with_capacity(256) }
    }

    /// Folds in one datagram.
    pub fn ingest(&mut self, datagram: &[u8]) {
        self.current.packets += 1;
        for raw in datagram.split(|b| *b == b'\n') {
            if raw.is_empty() || raw == b"\r" {
                continue;
            }
            self.current.lines += 1;
            let ok = std::str::from_utf8(raw).ok().is_some_and(|line| self.ingest_line(line));
            if !ok {
                self.current.invalid_lines += 1;
            }
        }
    }

    /// Folds in one line; false when it is invalid.
    fn ingest_line(&mut self, line: &str) -> bool {
        let Ok(mut l) = parse_line(line, self.bounds.max_tags) else { return false };
        if l.tags.len() > 1 {
            l.tags.sort_unstable();
        }
        self.key.clear();
        self.key.push_str(l.name);
        self.key.push('\x1f');
        self.key.push(l.kind.code());
        for (k, v) in &l.tags {
            self.key.push('\x1f');
            self.key.push_str(k);
            self.key.push('=');
            self.key.push_str(v);
        }
        if !self.current.series.contains_key(self.key.as_str()) {
            if self.current.series.len() >= self.bounds.max_names {
                self.current.dropped_names += 1;
                return true;
            }
            let value = match l.kind {
                Kind::Counter => Value::Counter(0.0),
                Kind::Gauge => Value::Gauge(self.gauges.get(self.key.as_str()).copied().unwrap_or(0.0)),
                Kind::Timer => Value::Timer(TimerState {
                    count: 0.0,
                    seen: 0,
                    sum_raw: 0.0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    values: Vec::new(),
                }),
                Kind::Set => Value::Set(std::collections::HashSet::new(), false),
            };
            let series = Series {
                name: l.name.to_owned(),
                tags: l.tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                value,
            };
            self.current.series.insert(self.key.clone(), series);
        }
        let Some(series) = self.current.series.get_mut(self.key.as_str()) else { return true };
        let max_values = self.bounds.max_values;
        match &mut series.value {
            Value::Counter(sum) => {
                for v in l.values.split(':').filter_map(parse_number) {
                    *sum += v / l.rate;
                }
            }
            Value::Gauge(g) => {
                for text in l.values.split(':') {
                    let Some(v) = parse_number(text) else { continue };
                    if text.starts_with(['+', '-']) {
                        *g += v;
                    } else {
                        *g = v;
                    }
                }
                let g = *g;
                if let Some(last) = self.gauges.get_mut(self.key.as_str()) {
                    *last = g;
                } else if self.gauges.len() < self.bounds.max_names {
                    self.gauges.insert(self.key.clone(), g);
                }
            }
            Value::Timer(t) => {
                for v in l.values.split(':').filter_map(parse_number) {
                    t.count += 1.0 / l.rate;
                    t.seen += 1;
                    t.sum_raw += v;
                    t.sum += v / l.rate;
                    t.min = t.min.min(v);
                    t.max = t.max.max(v);
                    if t.values.len() < max_values {
                        t.values.push(v);
                    } else {
                        // Reservoir sampling (algorithm R): every value kept with equal chance.
                        let j = fastrand::u64(0..t.seen);
                        if let Ok(j) = usize::try_from(j)
                            && j < max_values
                        {
                            t.values[j] = v;
                        }
                    }
                }
            }
            Value::Set(members, full) => {
                let mut h = DefaultHasher::new();
                l.values.hash(&mut h);
                let hash = h.finish();
                if members.len() < max_values {
                    members.insert(hash);
                } else if !members.contains(&hash) {
                    *full = true;
                }
            }
        }
        true
    }

    /// Hands over the interval so far and starts the next.
    pub fn take(&mut self) -> Interval {
        std::mem::take(&mut self.current)
    }
}

impl Interval {
    /// The records of this interval: `<prefix>.<name>[.<stat>]` for every series, stamped `ts`.
    pub fn records(&self, prefix: &str, ts: meshmon_proto::Timestamp) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.series.len() * 2);
        for s in self.series.values() {
            let base = if prefix.is_empty() { s.name.clone() } else { format!("{prefix}.{}", s.name) };
            let mut push = |suffix: &str, v: f64| {
                let name = if suffix.is_empty() { base.clone() } else { format!("{base}.{suffix}") };
                let mut r = double_record(name, v, ts);
                for (k, v) in &s.tags {
                    r.tags.insert(k.clone(), v.clone());
                }
                out.push(r);
            };
            match &s.value {
                Value::Counter(sum) | Value::Gauge(sum) => push("", *sum),
                Value::Timer(t) => {
                    if t.seen == 0 {
                        continue;
                    }
                    let mut sorted = t.values.clone();
                    sorted.sort_unstable_by(f64::total_cmp);
                    push("count", t.count);
                    push("sum", t.sum);
                    push("min", t.min);
                    push("max", t.max);
                    #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
                    push("mean", t.sum_raw / t.seen as f64);
                    if !sorted.is_empty() {
                        push("p50", percentile(&sorted, 50.0));
                        push("p95", percentile(&sorted, 95.0));
                        push("p99", percentile(&sorted, 99.0));
                    }
                }
                #[allow(clippy::cast_precision_loss)] // bounded by max_values
                Value::Set(members, _) => push("unique", members.len() as f64),
            }
        }
        out.retain(|r| crate::record::double_value(r).is_some_and(f64::is_finite));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::double_value;

    fn bounds() -> Bounds {
        Bounds { max_names: 100, max_values: 1000, max_tags: 4 }
    }

    fn values(records: &[Record]) -> std::collections::BTreeMap<String, f64> {
        records
            .iter()
            .map(|r| {
                let mut tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                tags.sort();
                let key =
                    if tags.is_empty() { r.metric.clone() } else { format!("{}{{{}}}", r.metric, tags.join(",")) };
                (key, double_value(r).expect("double"))
            })
            .collect()
    }

    #[test]
    fn counters_gauges_timers_sets_and_tags() {
        let mut a = Aggregator::new(bounds());
        a.ingest(b"hits:1|c\nhits:2|c|@0.5\nhits:1|c|#b:2,a:1\nhits:1|c|#a:1,b:2\n");
        a.ingest(b"temp:20|g\ntemp:+5|g\ntemp:-3|g\n");
        let lat: String = (1..=100).map(|i| format!("lat:{i}|ms\n")).collect();
        a.ingest(lat.as_bytes());
        a.ingest(b"users:alice|s\nusers:bob|s\nusers:alice|s\nbad line\nx:1|zz\n\n");
        let i = a.take();
        assert_eq!((i.packets, i.lines, i.invalid_lines, i.dropped_names), (4, 112, 2, 0));
        let v = values(&i.records("p", meshmon_proto::nanos_to_timestamp(0)));
        assert_eq!(v["p.hits"], 5.0, "1 + 2/0.5");
        assert_eq!(v["p.hits{a=1,b=2}"], 2.0, "tag order does not matter");
        assert_eq!(v["p.temp"], 22.0);
        assert_eq!(v["p.lat.count"], 100.0);
        assert_eq!(v["p.lat.sum"], 5050.0);
        assert_eq!((v["p.lat.min"], v["p.lat.max"], v["p.lat.mean"]), (1.0, 100.0, 50.5));
        assert_eq!((v["p.lat.p50"], v["p.lat.p95"], v["p.lat.p99"]), (50.0, 95.0, 99.0));
        assert_eq!(v["p.users.unique"], 2.0);
        // The gauge's last value carries over for deltas; the next interval starts empty.
        a.ingest(b"temp:+1|g");
        let i = a.take();
        assert_eq!(values(&i.records("", meshmon_proto::nanos_to_timestamp(0)))["temp"], 23.0);
        assert!(a.take().series.is_empty());
    }

    #[test]
    fn bounds_hold_and_are_counted() {
        let mut a = Aggregator::new(Bounds { max_names: 2, max_values: 10, max_tags: 1 });
        a.ingest(b"a:1|c\nb:1|c\nc:1|c\na:1|c\nd:1|c|#x:1,y:2\n");
        let many: String = (0..1000).map(|i| format!("t:{i}|ms\n")).collect();
        let mut b = Aggregator::new(Bounds { max_names: 10, max_values: 10, max_tags: 1 });
        b.ingest(many.as_bytes());
        let sets: String = (0..50).map(|i| format!("s:{i}|s\n")).collect();
        b.ingest(sets.as_bytes());
        let i = a.take();
        assert_eq!((i.series.len(), i.dropped_names, i.invalid_lines), (2, 1, 1));
        let i = b.take();
        let v = values(&i.records("", meshmon_proto::nanos_to_timestamp(0)));
        assert_eq!(v["t.count"], 1000.0, "count stays exact");
        assert_eq!((v["t.min"], v["t.max"]), (0.0, 999.0));
        assert!((0.0..=999.0).contains(&v["t.p50"]));
        assert_eq!(v["s.unique"], 10.0, "capped at max_values");
        match &i.series.values().find(|s| s.name == "t").expect("t").value {
            Value::Timer(t) => assert_eq!(t.values.len(), 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut a = Aggregator::new(bounds());
        for _ in 0..200 {
            let n = fastrand::usize(0..200);
            let bytes: Vec<u8> = (0..n).map(|_| *fastrand::choice(b":|@#,\n\xff.c1gs-+m".iter()).unwrap()).collect();
            a.ingest(&bytes);
        }
        let i = a.take();
        assert_eq!(i.packets, 200);
        let _ = i.records("p", meshmon_proto::nanos_to_timestamp(0));
    }
}

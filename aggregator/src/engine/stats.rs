//! Per-(window, series) statistics: max, min, avg, last, sum, count.
//!
//! Role: `Acc` is the compact accumulator the window state updates per record (its agent
//! interned); `Stats` is the self-contained, mergeable form handed to outputs and later
//! stages. Decimal sums are exact (`i128` nano-units, saturating at ±1.7·10²⁹ units);
//! double sums are IEEE sums, exact up to rounding order. Touches only `AgentTable`.

use std::cmp::Ordering;

use super::agents::{AgentIdx, AgentTable};
use super::record::{NANO_UNITS, RecordId, Value};
use super::snapshot::AccSnapshot;
use super::time::Nanos;

/// What orders records for `last`: the greatest event time wins; ties are broken by
/// agent id text, then batch sequence, then index — all deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastKey {
    pub time: Nanos,
    pub agent: AgentIdx,
    pub sequence: u64,
    pub index: u32,
}

impl LastKey {
    #[inline]
    fn cmp(&self, other: &LastKey, agents: &AgentTable) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| agents.cmp(self.agent, other.agent))
            .then_with(|| self.sequence.cmp(&other.sequence))
            .then_with(|| self.index.cmp(&other.index))
    }
}

/// Count, sums and extremes of a set of values — the part of the statistics that both the
/// hot accumulator and the self-contained form share, merged by one piece of code.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Number of records.
    pub count: u64,
    /// How many of them carried a double (the rest carried decimals).
    pub float_count: u64,
    /// Sum of the double values.
    pub float_sum: f64,
    /// Exact sum of the decimal values, in nano-units.
    pub decimal_sum: i128,
    /// Smallest value under [`Value::total_cmp`].
    pub min: Value,
    /// Largest value under [`Value::total_cmp`].
    pub max: Value,
}

impl Totals {
    /// The totals of one value.
    #[inline]
    pub fn of(value: Value) -> Totals {
        let (float_count, float_sum, decimal_sum) = match value {
            Value::Float(v) => (1, v, 0),
            Value::Decimal(n) => (0, 0.0, n),
        };
        Totals { count: 1, float_count, float_sum, decimal_sum, min: value, max: value }
    }

    /// Adds one value.
    #[inline]
    pub fn add(&mut self, value: Value) {
        self.count += 1;
        match value {
            Value::Float(v) => {
                self.float_count += 1;
                self.float_sum += v;
            }
            Value::Decimal(n) => self.decimal_sum = self.decimal_sum.saturating_add(n),
        }
        self.widen(value, value);
    }

    /// Folds in the totals of another set of values.
    pub fn merge(&mut self, other: &Totals) {
        self.count += other.count;
        self.float_count += other.float_count;
        self.float_sum += other.float_sum;
        self.decimal_sum = self.decimal_sum.saturating_add(other.decimal_sum);
        self.widen(other.min, other.max);
    }

    #[inline]
    fn widen(&mut self, min: Value, max: Value) {
        if min.total_cmp(self.min) == Ordering::Less {
            self.min = min;
        }
        if max.total_cmp(self.max) == Ordering::Greater {
            self.max = max;
        }
    }

    /// Sum of all values: an exact decimal when every value was a decimal, else a double.
    pub fn sum(&self) -> Value {
        if self.float_count == 0 {
            Value::Decimal(self.decimal_sum)
        } else if self.float_count == self.count {
            Value::Float(self.float_sum)
        } else {
            Value::Float(self.float_sum + self.decimal_sum as f64 / NANO_UNITS as f64)
        }
    }

    /// Mean: for all-decimal input the exact sum divided by the count, rounded half away
    /// from zero to the nano-unit; otherwise a double.
    pub fn avg(&self) -> Value {
        match self.sum() {
            Value::Decimal(sum) => Value::Decimal(div_round_half_away(sum, self.count)),
            Value::Float(sum) => Value::Float(sum / self.count as f64),
        }
    }
}

/// The hot accumulator for one (window or pane, series).
#[derive(Debug, Clone)]
pub(crate) struct Acc {
    totals: Totals,
    last: Value,
    last_key: LastKey,
}

impl Acc {
    /// An accumulator holding one record.
    #[inline]
    pub fn new(value: Value, key: LastKey) -> Acc {
        Acc { totals: Totals::of(value), last: value, last_key: key }
    }

    /// Adds one record.
    #[inline]
    pub fn add(&mut self, value: Value, key: LastKey, agents: &AgentTable) {
        self.totals.add(value);
        if key.cmp(&self.last_key, agents) == Ordering::Greater {
            self.last = value;
            self.last_key = key;
        }
    }

    /// Folds another accumulator of the same series into this one.
    pub fn merge(&mut self, other: &Acc, agents: &AgentTable) {
        self.totals.merge(&other.totals);
        if other.last_key.cmp(&self.last_key, agents) == Ordering::Greater {
            self.last = other.last;
            self.last_key = other.last_key;
        }
    }

    /// The logical form for a snapshot (agent as text).
    pub fn to_snapshot(&self, agents: &AgentTable) -> AccSnapshot {
        AccSnapshot {
            totals: self.totals.clone(),
            last: self.last,
            last_time: self.last_key.time,
            last_agent: agents.name(self.last_key.agent).clone(),
            last_sequence: self.last_key.sequence,
            last_index: self.last_key.index,
        }
    }

    /// An accumulator from its snapshot form, interning its agent.
    pub fn from_snapshot(snapshot: AccSnapshot, agents: &mut AgentTable) -> Acc {
        let key = LastKey {
            time: snapshot.last_time,
            agent: agents.intern(&snapshot.last_agent),
            sequence: snapshot.last_sequence,
            index: snapshot.last_index,
        };
        Acc { totals: snapshot.totals, last: snapshot.last, last_key: key }
    }

    /// The self-contained form.
    pub fn to_stats(&self, agents: &AgentTable) -> Stats {
        Stats {
            totals: self.totals.clone(),
            last: self.last,
            last_time: self.last_key.time,
            last_id: RecordId {
                agent: agents.name(self.last_key.agent).clone(),
                sequence: self.last_key.sequence,
                index: self.last_key.index,
            },
        }
    }
}

/// Final or partial statistics of one (window, series). Mergeable: `a.merge(&b)` equals the
/// statistics of the union of both record sets (up to double rounding order in sums).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Count, sums, min and max.
    pub totals: Totals,
    /// Value of the record with the greatest (event time, agent, sequence, index).
    pub last: Value,
    /// Event time of that record.
    pub last_time: Nanos,
    /// Identity of that record.
    pub last_id: RecordId,
}

impl Stats {
    /// The statistics of one record.
    pub fn of(value: Value, time: Nanos, id: RecordId) -> Stats {
        Stats { totals: Totals::of(value), last: value, last_time: time, last_id: id }
    }

    /// Number of records.
    pub fn count(&self) -> u64 {
        self.totals.count
    }

    /// See [`Totals::sum`].
    pub fn sum(&self) -> Value {
        self.totals.sum()
    }

    /// See [`Totals::avg`].
    pub fn avg(&self) -> Value {
        self.totals.avg()
    }

    /// Folds `other` (statistics of the same series and window) into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.totals.merge(&other.totals);
        if (other.last_time, &other.last_id) > (self.last_time, &self.last_id) {
            self.last = other.last;
            self.last_time = other.last_time;
            self.last_id = other.last_id.clone();
        }
    }
}

/// `n / d` rounded half away from zero (`d > 0`).
fn div_round_half_away(n: i128, d: u64) -> i128 {
    let d = i128::from(d.max(1));
    let q = n / d;
    let r = n % d;
    if r.unsigned_abs() * 2 >= d.unsigned_abs() { q + n.signum() } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(time: Nanos, agent: AgentIdx) -> LastKey {
        LastKey { time, agent, sequence: 1, index: 0 }
    }

    #[test]
    fn decimal_sums_are_exact_and_avg_rounds_half_away() {
        let mut agents = AgentTable::default();
        let a = agents.intern("a");
        // 0.1 + 0.2 + 0.2 = 0.5 exactly; avg 0.1666…667 rounds to nano-units.
        let mut acc = Acc::new(Value::Decimal(100_000_000), key(1, a));
        acc.add(Value::Decimal(200_000_000), key(2, a), &agents);
        acc.add(Value::Decimal(200_000_000), key(3, a), &agents);
        let s = acc.to_stats(&agents);
        assert_eq!(s.sum(), Value::Decimal(500_000_000));
        assert_eq!(s.avg(), Value::Decimal(166_666_667));
        assert_eq!(div_round_half_away(-5, 2), -3);
        assert_eq!(div_round_half_away(5, 2), 3);
        assert_eq!(div_round_half_away(-4, 3), -1);
    }

    #[test]
    fn last_ties_break_by_agent_text_not_arrival() {
        let mut agents = AgentTable::default();
        let zed = agents.intern("zed");
        let amy = agents.intern("amy");
        let mut acc = Acc::new(Value::Float(1.0), key(10, zed));
        acc.add(Value::Float(2.0), key(10, amy), &agents);
        assert_eq!(acc.to_stats(&agents).last, Value::Float(1.0));
        let mut acc = Acc::new(Value::Float(2.0), key(10, amy));
        acc.add(Value::Float(1.0), key(10, zed), &agents);
        assert_eq!(acc.to_stats(&agents).last, Value::Float(1.0));
    }

    #[test]
    fn mixed_kinds_sum_as_double_and_order_totally() {
        let mut agents = AgentTable::default();
        let a = agents.intern("a");
        let mut acc = Acc::new(Value::Float(1.0), key(1, a));
        acc.add(Value::Decimal(NANO_UNITS), key(2, a), &agents);
        acc.add(Value::Float(-0.5), key(3, a), &agents);
        let s = acc.to_stats(&agents);
        assert_eq!(s.sum(), Value::Float(1.5));
        assert_eq!(s.totals.min, Value::Float(-0.5));
        assert_eq!(s.totals.max, Value::Decimal(NANO_UNITS), "decimal 1 sorts after double 1.0");
    }

    #[test]
    fn stats_merge_equals_acc_merge() {
        let mut agents = AgentTable::default();
        let a = agents.intern("a");
        let b = agents.intern("b");
        let mut x = Acc::new(Value::Float(3.0), key(5, a));
        x.add(Value::Float(7.0), key(9, a), &agents);
        let y = Acc::new(Value::Float(-1.0), key(9, b));
        let mut xs = x.to_stats(&agents);
        xs.merge(&y.to_stats(&agents));
        x.merge(&y, &agents);
        assert_eq!(xs, x.to_stats(&agents));
        assert_eq!(xs.last, Value::Float(-1.0));
    }

    mod merge_property {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                (-1e6f64..1e6).prop_map(Value::Float),
                (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|n| Value::Decimal(i128::from(n))),
            ]
        }

        proptest! {
            /// Folding records one by one (`Acc`, interned agents) equals merging single-record
            /// `Stats` in any split and order (agent text): the property later stages rely on.
            #[test]
            fn any_split_and_order_merges_to_the_same_stats(
                records in prop::collection::vec((value(), 0i64..20, 0usize..3, 0u64..3, 0u32..3), 1..40),
                split in any::<prop::sample::Index>(),
                reverse in any::<bool>(),
            ) {
                let names = ["b", "a", "c"];
                let mut agents = AgentTable::default();
                let keys: Vec<LastKey> = records
                    .iter()
                    .map(|&(_, time, a, sequence, index)| LastKey { time, agent: agents.intern(names[a]), sequence, index })
                    .collect();
                let mut acc = Acc::new(records[0].0, keys[0]);
                for (r, k) in records.iter().zip(&keys).skip(1) {
                    acc.add(r.0, *k, &agents);
                }
                let single = |i: usize| {
                    let (v, t, a, sequence, index) = records[i];
                    Stats::of(v, t, RecordId { agent: names[a].into(), sequence, index })
                };
                let fold = |range: std::ops::Range<usize>| {
                    let mut order: Vec<usize> = range.collect();
                    if reverse {
                        order.reverse();
                    }
                    let mut it = order.into_iter();
                    let first = it.next().map(single);
                    it.fold(first, |s, i| s.map(|mut s| { s.merge(&single(i)); s }))
                };
                let cut = split.index(records.len());
                let merged = match (fold(0..cut), fold(cut..records.len())) {
                    (Some(mut a), Some(b)) => { a.merge(&b); a }
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => unreachable!(),
                };
                let want = acc.to_stats(&agents);
                prop_assert_eq!(merged.totals.count, want.totals.count);
                prop_assert_eq!(merged.totals.decimal_sum, want.totals.decimal_sum);
                prop_assert!(merged.totals.min.total_cmp(want.totals.min).is_eq());
                prop_assert!(merged.totals.max.total_cmp(want.totals.max).is_eq());
                prop_assert_eq!((merged.last_time, &merged.last_id), (want.last_time, &want.last_id));
                let scale = records.iter().map(|r| r.0.as_f64().abs()).sum::<f64>() + 1.0;
                prop_assert!((merged.totals.float_sum - want.totals.float_sum).abs() <= 1e-12 * scale);
            }
        }
    }
}

//! Per-(window, series) statistics: max, min, avg, last, sum, count.
//!
//! Role: `Acc` is the compact accumulator the window state updates per record (its agent
//! interned); `Stats` is the self-contained, mergeable form handed to outputs and later
//! stages. Decimal sums are exact (`i128` nano-units, saturating at ±1.7·10²⁹ units);
//! double sums are IEEE sums, exact up to rounding order. Touches only `AgentTable`.

use std::cmp::Ordering;

use super::agents::{AgentIdx, AgentTable};
use super::record::{NANO_UNITS, RecordId, Value};
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

/// The hot accumulator for one (window or pane, series).
#[derive(Debug, Clone)]
pub(crate) struct Acc {
    count: u64,
    float_count: u64,
    float_sum: f64,
    decimal_sum: i128,
    min: Value,
    max: Value,
    last: Value,
    last_key: LastKey,
}

impl Acc {
    /// An accumulator holding one record.
    #[inline]
    pub fn new(value: Value, key: LastKey) -> Acc {
        let mut acc = Acc {
            count: 0,
            float_count: 0,
            float_sum: 0.0,
            decimal_sum: 0,
            min: value,
            max: value,
            last: value,
            last_key: key,
        };
        acc.add_sum(value);
        acc
    }

    #[inline]
    fn add_sum(&mut self, value: Value) {
        self.count += 1;
        match value {
            Value::Float(v) => {
                self.float_count += 1;
                self.float_sum += v;
            }
            Value::Decimal(n) => self.decimal_sum = self.decimal_sum.saturating_add(n),
        }
    }

    /// Adds one record.
    #[inline]
    pub fn add(&mut self, value: Value, key: LastKey, agents: &AgentTable) {
        self.add_sum(value);
        if value.total_cmp(self.min) == Ordering::Less {
            self.min = value;
        }
        if value.total_cmp(self.max) == Ordering::Greater {
            self.max = value;
        }
        if key.cmp(&self.last_key, agents) == Ordering::Greater {
            self.last = value;
            self.last_key = key;
        }
    }

    /// Folds another accumulator of the same series into this one.
    pub fn merge(&mut self, other: &Acc, agents: &AgentTable) {
        self.count += other.count;
        self.float_count += other.float_count;
        self.float_sum += other.float_sum;
        self.decimal_sum = self.decimal_sum.saturating_add(other.decimal_sum);
        if other.min.total_cmp(self.min) == Ordering::Less {
            self.min = other.min;
        }
        if other.max.total_cmp(self.max) == Ordering::Greater {
            self.max = other.max;
        }
        if other.last_key.cmp(&self.last_key, agents) == Ordering::Greater {
            self.last = other.last;
            self.last_key = other.last_key;
        }
    }

    /// The self-contained form.
    pub fn to_stats(&self, agents: &AgentTable) -> Stats {
        Stats {
            count: self.count,
            float_count: self.float_count,
            float_sum: self.float_sum,
            decimal_sum: self.decimal_sum,
            min: self.min,
            max: self.max,
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
    /// Value of the record with the greatest (event time, agent, sequence, index).
    pub last: Value,
    /// Event time of that record.
    pub last_time: Nanos,
    /// Identity of that record.
    pub last_id: RecordId,
}

impl Stats {
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

    /// Folds `other` (statistics of the same series and window) into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.float_count += other.float_count;
        self.float_sum += other.float_sum;
        self.decimal_sum = self.decimal_sum.saturating_add(other.decimal_sum);
        if other.min.total_cmp(self.min) == Ordering::Less {
            self.min = other.min;
        }
        if other.max.total_cmp(self.max) == Ordering::Greater {
            self.max = other.max;
        }
        let other_later = (other.last_time, &other.last_id) > (self.last_time, &self.last_id);
        if other_later {
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
        assert_eq!(s.min, Value::Float(-0.5));
        assert_eq!(s.max, Value::Decimal(NANO_UNITS), "decimal 1 sorts after double 1.0");
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
}

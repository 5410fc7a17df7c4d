//! The engine's input: a metric record, its value and its identity.
//!
//! Role: plain data types shared by every engine stage. A record is identified by
//! (agent, batch sequence, index in batch); that identity breaks ties for `last`, drives
//! dedup and names the raw record in the stores. Touches nothing else.

use std::cmp::Ordering;
use std::sync::Arc;

use super::time::Nanos;

/// Nano-units per unit of an exact decimal (`value = nano_units · 10⁻⁹`).
pub const NANO_UNITS: i128 = 1_000_000_000;

/// A metric value: an IEEE double, or an exact decimal held as `i128` nano-units
/// (the wire `Decimal { units, nanos }` converts to `units·10⁹ + nanos` exactly).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// A double; the engine accepts only finite ones.
    Float(f64),
    /// An exact decimal in nano-units (value × 10⁹).
    Decimal(i128),
}

impl Value {
    /// The value as a double (decimals rounded to the nearest double).
    #[inline]
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Float(v) => v,
            Value::Decimal(n) => n as f64 / NANO_UNITS as f64,
        }
    }

    /// The engine's total order on values, used by `min` and `max`: by numeric value
    /// (decimals compared as doubles against doubles, exactly against decimals), and on a
    /// numeric tie a double sorts before a decimal. It does not depend on arrival order.
    #[inline]
    pub fn total_cmp(self, other: Value) -> Ordering {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.total_cmp(&b),
            (Value::Decimal(a), Value::Decimal(b)) => a.cmp(&b),
            (a, b) => a.as_f64().total_cmp(&b.as_f64()).then_with(|| a.kind_rank().cmp(&b.kind_rank())),
        }
    }

    fn kind_rank(self) -> u8 {
        match self {
            Value::Float(_) => 0,
            Value::Decimal(_) => 1,
        }
    }
}

impl std::fmt::Display for Value {
    /// Doubles in Rust's shortest round-trip form; decimals as exact text with trailing zeros
    /// trimmed (`-1.5`, `0.000000001`, `42`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Decimal(n) => {
                let sign = if n < 0 { "-" } else { "" };
                let abs = n.unsigned_abs();
                let (units, nanos) = (abs / NANO_UNITS as u128, abs % NANO_UNITS as u128);
                if nanos == 0 {
                    write!(f, "{sign}{units}")
                } else {
                    let frac = format!("{nanos:09}");
                    write!(f, "{sign}{units}.{}", frac.trim_end_matches('0'))
                }
            }
        }
    }
}

/// One metric record as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Metric name, e.g. `cpu.usage`.
    pub metric: String,
    /// The measured value.
    pub value: Value,
    /// Event time: when the value was measured, not when it arrived.
    pub time: Nanos,
    /// Cluster the node belongs to; empty means "none" (no cluster dimension).
    pub cluster: String,
    /// Node (host) that produced the record; empty means "none" (no node dimension).
    pub node: String,
    /// Custom tags `key=value`; keys must be unique.
    pub tags: Vec<(String, String)>,
}

/// A batch of records from one agent, as sent on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The sending agent's id.
    pub agent: &'a str,
    /// The agent's batch sequence number (from 1; 0 means unsequenced: never deduplicated).
    pub sequence: u64,
    /// The records; a record's index here is part of its identity.
    pub records: &'a [Record],
}

/// The identity of a record: (agent, batch sequence, index in batch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The agent that sent the record.
    pub agent: Arc<str>,
    /// The batch sequence number.
    pub sequence: u64,
    /// The index within the batch.
    pub index: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_exactly() {
        assert_eq!(Value::Decimal(-1_500_000_000).to_string(), "-1.5");
        assert_eq!(Value::Decimal(1).to_string(), "0.000000001");
        assert_eq!(Value::Decimal(-1).to_string(), "-0.000000001");
        assert_eq!(Value::Decimal(42 * NANO_UNITS).to_string(), "42");
        assert_eq!(Value::Decimal(i128::MIN).to_string().len(), 41);
        assert_eq!(Value::Float(0.1).to_string(), "0.1");
        assert_eq!(Value::Float(-2.0).to_string(), "-2");
    }
}

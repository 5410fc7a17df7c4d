//! What one store write carries.
//!
//! Role: [`WriteBatch`] — plain owned data the caller fills (usually through
//! [`crate::store::WriteBatchSink`]) and `EmbeddedStore::write` applies in one transaction:
//! aggregate changes in emission order (upserts and retractions interleaved, because a session
//! can be retracted and re-emitted under the same key), raw rows and dead letters. Touches
//! nothing else.

use crate::engine::{Nanos, Record, RecordId, SeriesKey, Stats, Window, WindowSpec};

/// A change to the aggregate points, in the order the engine emitted it.
// Nearly every change is an upsert: boxing it would add an allocation per result for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateChange {
    /// Store (or overwrite: a correction) the point under (series, window spec, window start).
    Upsert {
        /// The series.
        series: SeriesKey,
        /// The window spec the engine ran with.
        window_spec: WindowSpec,
        /// The window.
        window: Window,
        /// Its statistics.
        stats: Stats,
        /// 0 for a first firing, higher for corrections.
        revision: u32,
    },
    /// Delete the point under (series, window spec, window start).
    Retract {
        /// The series.
        series: SeriesKey,
        /// The window spec the engine ran with.
        window_spec: WindowSpec,
        /// The start of the retracted window.
        window_start: Nanos,
    },
}

/// One accepted record to keep for drill-down.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWrite {
    /// Its identity.
    pub id: RecordId,
    /// The record.
    pub record: Record,
    /// The original payload, if the agent kept it.
    pub raw: Option<Vec<u8>>,
    /// The watermark it was judged against on arrival (`AcceptedRecord::watermark`).
    pub watermark: Nanos,
}

/// One record that was not counted: invalid, or late for every window.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Processing time of its arrival.
    pub arrival: Nanos,
    /// Its identity.
    pub id: RecordId,
    /// Why it was not counted, e.g. `invalid: non_finite_value`.
    pub reason: String,
    /// The record.
    pub record: Record,
    /// The original payload, if the agent kept it.
    pub raw: Option<Vec<u8>>,
}

/// Everything one store transaction applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Aggregate upserts and retractions, applied in order.
    pub aggregates: Vec<AggregateChange>,
    /// Raw rows (writing the same record again changes nothing).
    pub raw: Vec<RawWrite>,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

impl WriteBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.aggregates.is_empty() && self.raw.is_empty() && self.dead_letters.is_empty()
    }

    /// Number of items (aggregate changes, raw rows and dead letters).
    pub fn len(&self) -> usize {
        self.aggregates.len() + self.raw.len() + self.dead_letters.len()
    }

    /// Moves every item of `other` to the end of this batch (to write several engine steps in
    /// one transaction).
    pub fn append(&mut self, other: &mut WriteBatch) {
        self.aggregates.append(&mut other.aggregates);
        self.raw.append(&mut other.raw);
        self.dead_letters.append(&mut other.dead_letters);
    }
}

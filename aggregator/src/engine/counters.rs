//! `EngineCounters`: what the engine has seen and done, for self-monitoring.
//!
//! Role: plain monotonically increasing counters (and the accounting identity they obey:
//! every record of a first-delivered batch is accepted, dropped as late, or invalid).
//! Exported by later layers as Prometheus metrics. Touches nothing else.

use super::validate::InvalidReason;

/// Counters of one engine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineCounters {
    /// Batches received, duplicates included.
    pub batches: u64,
    /// Batches recognised as re-sent and skipped.
    pub duplicate_batches: u64,
    /// Records inside skipped duplicate batches.
    pub duplicate_records: u64,
    /// Records of first-delivered batches.
    pub records_in: u64,
    /// Records counted in at least one window.
    pub accepted: u64,
    /// Records past the allowed lateness of every window they belong to (late output).
    pub late_dropped: u64,
    /// Accepted records that still missed some of their (sliding) windows.
    pub late_partial: u64,
    /// Invalid records, by [`InvalidReason::index`].
    pub invalid: [u64; InvalidReason::ALL.len()],
    /// Window results emitted (first firings and corrections).
    pub results: u64,
    /// Of those, corrections (revision > 0).
    pub corrections: u64,
    /// Stored session results retracted.
    pub retractions: u64,
}

impl EngineCounters {
    /// Invalid records of all reasons.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().sum()
    }

    /// True when every record in is accounted for exactly once.
    pub fn balanced(&self) -> bool {
        self.records_in == self.accepted + self.late_dropped + self.invalid_total()
    }
}

impl std::ops::AddAssign<&EngineCounters> for EngineCounters {
    /// Sums counters of parts (the gate and every shard) into the whole.
    fn add_assign(&mut self, other: &EngineCounters) {
        self.batches += other.batches;
        self.duplicate_batches += other.duplicate_batches;
        self.duplicate_records += other.duplicate_records;
        self.records_in += other.records_in;
        self.accepted += other.accepted;
        self.late_dropped += other.late_dropped;
        self.late_partial += other.late_partial;
        for (mine, theirs) in self.invalid.iter_mut().zip(other.invalid) {
            *mine += theirs;
        }
        self.results += other.results;
        self.corrections += other.corrections;
        self.retractions += other.retractions;
    }
}

//! What the engine emits: window results (first firings and corrections), retractions of
//! superseded session keys, late records and invalid records.
//!
//! Role: the `EngineOutput` trait the caller implements (a store writer, an actor mailbox,
//! a test collector) and `LatestResults`, a reference store that keeps the latest result per
//! (series, window start) exactly as a keyed sink would. Touches nothing else.

use std::collections::BTreeMap;

use super::dimension::SeriesKey;
use super::record::{Record, RecordId};
use super::stats::Stats;
use super::time::Nanos;
use super::validate::InvalidReason;

/// A half-open event-time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First instant inside the window.
    pub start: Nanos,
    /// First instant after the window.
    pub end: Nanos,
}

/// One result for (series, window). Results are keyed by (series, window start): a later
/// result for the same key (a correction) replaces the earlier one.
#[derive(Debug, Clone)]
pub struct WindowResult<'a> {
    /// The series.
    pub series: &'a SeriesKey,
    /// The window.
    pub window: Window,
    /// Statistics over every accepted record of the series in the window.
    pub stats: Stats,
    /// 0 for the first emission of this key, increasing with each correction.
    pub revision: u32,
}

/// A record that arrived after the allowed lateness of some or all of its windows.
#[derive(Debug, Clone, Copy)]
pub struct LateRecord<'a> {
    /// Its identity.
    pub id: RecordIdRef<'a>,
    /// The record.
    pub record: &'a Record,
    /// The watermark it was judged against.
    pub watermark: Nanos,
    /// How many of its windows it missed.
    pub missed_windows: u32,
    /// How many windows it belongs to (1 for tumbling and session windows).
    pub windows: u32,
}

impl LateRecord<'_> {
    /// True when it missed every window: it is counted nowhere.
    pub fn dropped(&self) -> bool {
        self.missed_windows == self.windows
    }
}

/// A record refused by validation or by the series limit; it touched no window.
#[derive(Debug, Clone, Copy)]
pub struct InvalidRecord<'a> {
    /// Its identity.
    pub id: RecordIdRef<'a>,
    /// The record.
    pub record: &'a Record,
    /// Why it was refused.
    pub reason: InvalidReason,
}

/// A borrowed record identity (the agent id is not copied on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIdRef<'a> {
    /// The agent that sent the record.
    pub agent: &'a str,
    /// The batch sequence number.
    pub sequence: u64,
    /// The index within the batch.
    pub index: u32,
}

impl RecordIdRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> RecordId {
        RecordId { agent: self.agent.into(), sequence: self.sequence, index: self.index }
    }
}

/// A record counted in at least one window, with the watermark it was judged against (its
/// windows are those holding its event time minus the ones with `end + lateness ≤ watermark`).
/// Raw stores keep it so a drill-down returns exactly the records behind an aggregate point.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedRecord<'a> {
    /// Its identity.
    pub id: RecordIdRef<'a>,
    /// The record.
    pub record: &'a Record,
    /// The watermark at its arrival.
    pub watermark: Nanos,
}

/// Receives everything the engine emits.
pub trait EngineOutput {
    /// A record was counted (called before any result that includes it). Default: ignored.
    fn accepted(&mut self, _accepted: AcceptedRecord<'_>) {}
    /// A first result or a correction for (series, window).
    fn result(&mut self, result: WindowResult<'_>);
    /// The result stored under (series, window start) is superseded and must be deleted
    /// (a session merged into another or grew past the watermark).
    fn retract(&mut self, series: &SeriesKey, window_start: Nanos);
    /// A late record.
    fn late(&mut self, late: LateRecord<'_>);
    /// An invalid record.
    fn invalid(&mut self, invalid: InvalidRecord<'_>);
}

/// The latest stored result of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// The window.
    pub window: Window,
    /// Its statistics.
    pub stats: Stats,
    /// Its revision.
    pub revision: u32,
}

/// A reference keyed store: latest result per (series, window start), plus the late and
/// invalid side outputs in full. Used by tests, golden files and batch mode.
#[derive(Debug, Default, Clone)]
pub struct LatestResults {
    /// Latest result per key.
    pub results: BTreeMap<(SeriesKey, Nanos), StoredResult>,
    /// Accepted records with the watermark at their arrival.
    pub accepted: Vec<(RecordId, Nanos)>,
    /// Late records (owned), with the missed/total window counts.
    pub late: Vec<(RecordId, Record, u32, u32)>,
    /// Invalid records (owned) with their reasons.
    pub invalid: Vec<(RecordId, Record, InvalidReason)>,
    /// Number of results received (first firings and corrections).
    pub emissions: u64,
    /// Number of retractions received.
    pub retractions: u64,
}

impl EngineOutput for LatestResults {
    fn accepted(&mut self, a: AcceptedRecord<'_>) {
        self.accepted.push((a.id.to_owned(), a.watermark));
    }

    fn result(&mut self, r: WindowResult<'_>) {
        self.emissions += 1;
        self.results.insert(
            (r.series.clone(), r.window.start),
            StoredResult { window: r.window, stats: r.stats, revision: r.revision },
        );
    }

    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.retractions += 1;
        self.results.remove(&(series.clone(), window_start));
    }

    fn late(&mut self, l: LateRecord<'_>) {
        self.late.push((l.id.to_owned(), l.record.clone(), l.missed_windows, l.windows));
    }

    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.invalid.push((i.id.to_owned(), i.record.clone(), i.reason));
    }
}

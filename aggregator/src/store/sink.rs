//! The engine-to-store adapter.
//!
//! Role: [`WriteBatchSink`] is an [`EngineOutput`] that turns everything the engine emits into
//! a [`WriteBatch`]: accepted records → raw rows with their arrival watermark, results →
//! upserts, retractions → retractions (in emission order), records late for every window and
//! invalid records → dead letters. Records late for only some of their (sliding) windows were
//! counted, so they are raw rows, not dead letters. Raw payloads of the batch being processed
//! are attached by index. Touches only the engine's output types and `batch.rs`.

use std::sync::Arc;

use super::batch::{AggregateChange, DeadLetter, RawWrite, WriteBatch};
use crate::engine::{
    AcceptedRecord, EngineOutput, InvalidRecord, LateRecord, Nanos, Record, RecordIdRef, SeriesKey, WindowResult,
    WindowSpec,
};

/// Collects engine output into a [`WriteBatch`].
#[derive(Debug)]
pub struct WriteBatchSink {
    window_spec: WindowSpec,
    arrival: Nanos,
    agent: String,
    sequence: u64,
    payloads: Arc<[Option<Vec<u8>>]>,
    batch: WriteBatch,
}

impl WriteBatchSink {
    /// A sink for an engine running `window_spec`.
    pub fn new(window_spec: WindowSpec) -> WriteBatchSink {
        WriteBatchSink {
            window_spec,
            arrival: 0,
            agent: String::new(),
            sequence: 0,
            payloads: Arc::from([]),
            batch: WriteBatch::default(),
        }
    }

    /// Call before handing the engine a batch (or a tick) that arrives at processing time
    /// `arrival`: dead letters are stamped with it, and records of (`agent`, `sequence`) get
    /// the raw payload at their index in `payloads`.
    /// `payloads` is shared, not copied: pass the batch's `Arc` (a `Vec` converts too).
    pub fn begin(&mut self, arrival: Nanos, agent: &str, sequence: u64, payloads: impl Into<Arc<[Option<Vec<u8>>]>>) {
        self.arrival = arrival;
        self.agent.clear();
        self.agent.push_str(agent);
        self.sequence = sequence;
        self.payloads = payloads.into();
    }

    /// The batch collected so far.
    pub fn batch(&self) -> &WriteBatch {
        &self.batch
    }

    /// Takes the collected batch, leaving an empty one.
    pub fn take(&mut self) -> WriteBatch {
        std::mem::take(&mut self.batch)
    }

    fn payload(&self, id: RecordIdRef<'_>) -> Option<Vec<u8>> {
        if id.agent != self.agent || id.sequence != self.sequence {
            return None;
        }
        self.payloads.get(id.index as usize).cloned().flatten()
    }

    fn dead_letter(&mut self, id: RecordIdRef<'_>, record: &Record, reason: String) {
        let raw = self.payload(id);
        self.batch.dead_letters.push(DeadLetter {
            arrival: self.arrival,
            id: id.to_owned(),
            reason,
            record: record.clone(),
            raw,
        });
    }
}

impl EngineOutput for WriteBatchSink {
    fn accepted(&mut self, a: AcceptedRecord<'_>) {
        let raw = self.payload(a.id);
        self.batch.raw.push(RawWrite { id: a.id.to_owned(), record: a.record.clone(), raw, watermark: a.watermark });
    }

    fn result(&mut self, r: WindowResult<'_>) {
        self.batch.aggregates.push(AggregateChange::Upsert {
            series: r.series.clone(),
            window_spec: self.window_spec,
            window: r.window,
            stats: r.stats,
            revision: r.revision,
        });
    }

    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.batch.aggregates.push(AggregateChange::Retract {
            series: series.clone(),
            window_spec: self.window_spec,
            window_start,
        });
    }

    fn late(&mut self, l: LateRecord<'_>) {
        if l.dropped() {
            let reason =
                format!("late: missed {} of {} windows (watermark {})", l.missed_windows, l.windows, l.watermark);
            self.dead_letter(l.id, l.record, reason);
        }
    }

    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.dead_letter(i.id, i.record, format!("invalid: {}", i.reason));
    }
}

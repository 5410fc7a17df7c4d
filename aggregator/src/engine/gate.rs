//! `IngestGate`: what happens to a batch before any window state — dedup, validation and
//! watermark tracking.
//!
//! Role: in a sharded topology the gate runs once, at ingest (the router); the shards only
//! see admitted records and the watermark the gate computes. It emits invalid records itself
//! and counts batches, duplicates, records in and invalid records. Touches the deduper, the
//! validator and the watermark tracker; no window state.

use super::config::{EngineConfig, Limits};
use super::counters::EngineCounters;
use super::dedup::BatchDeduper;
use super::output::{EngineOutput, InvalidRecord, RecordIdRef};
use super::record::{Batch, Record};
use super::snapshot::{GateSnapshot, RestoreError, check_counters};
use super::time::{Nanos, WATERMARK_NONE};
use super::validate::{self, InvalidReason};
use super::watermark::WatermarkTracker;

/// Most out-of-order batch sequences remembered per agent by the deduper.
pub const DEDUP_MAX_PENDING: usize = 4_096;

/// What the gate decided about one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// The batch was a re-delivery and was skipped whole.
    pub duplicate: bool,
    /// Records refused as invalid (sent to the invalid output).
    pub invalid: u32,
}

/// Dedup, validation and watermark tracking for one ingest point.
#[derive(Debug, Clone)]
pub struct IngestGate {
    limits: Limits,
    dedup: BatchDeduper,
    tracker: WatermarkTracker,
    counters: EngineCounters,
    now: Nanos,
}

/// The identity of record `index` of `batch`.
pub(crate) fn record_id<'a>(batch: &Batch<'a>, index: u32) -> RecordIdRef<'a> {
    RecordIdRef { agent: batch.agent, sequence: batch.sequence, index }
}

/// Emits an invalid record and counts it.
pub(crate) fn reject(
    counters: &mut EngineCounters,
    out: &mut dyn EngineOutput,
    id: RecordIdRef<'_>,
    record: &Record,
    reason: InvalidReason,
) {
    counters.invalid[reason.index()] += 1;
    out.invalid(InvalidRecord { id, record, reason });
}

impl IngestGate {
    /// A gate for `config` (assumed validated).
    pub fn new(config: &EngineConfig) -> IngestGate {
        IngestGate {
            limits: config.limits.clone(),
            dedup: BatchDeduper::new(DEDUP_MAX_PENDING),
            tracker: WatermarkTracker::new(config.out_of_orderness, config.idle_timeout),
            counters: EngineCounters::default(),
            now: WATERMARK_NONE,
        }
    }

    /// Dedups and validates `batch`, which arrived from `input` at processing time `now`:
    /// pushes the indices of valid records to `admitted` (cleared first), emits invalid ones,
    /// and notes the batch's event-time progress for `input`. The watermark moves only on
    /// [`advance`](Self::advance), after the admitted records were placed.
    ///
    /// `defects` (ascending by index) are records the wire decoder could not convert: they are
    /// refused with the given reason whatever the placeholder record at that index holds.
    pub fn admit(
        &mut self,
        input: &str,
        batch: &Batch<'_>,
        defects: &[(u32, InvalidReason)],
        now: Nanos,
        out: &mut dyn EngineOutput,
        admitted: &mut Vec<u32>,
    ) -> Admission {
        admitted.clear();
        self.now = self.now.max(now);
        let now = self.now;
        self.counters.batches += 1;
        if !self.dedup.first_delivery(batch.agent, batch.sequence) {
            self.counters.duplicate_batches += 1;
            self.counters.duplicate_records += batch.records.len() as u64;
            return Admission { duplicate: true, invalid: 0 };
        }
        let mut admission = Admission::default();
        let mut max_event: Option<Nanos> = None;
        // Records of one agent batch mostly share cluster, node and tags: check that context
        // once while it stays the same from one record to the next.
        let mut prev: Option<&Record> = None;
        let mut prev_context_valid = false;
        let mut defects = defects.iter().peekable();
        for (i, record) in batch.records.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.counters.records_in += 1;
            while defects.next_if(|(at, _)| *at < index).is_some() {}
            if let Some((_, reason)) = defects.next_if(|(at, _)| *at == index) {
                reject(&mut self.counters, out, record_id(batch, index), record, *reason);
                admission.invalid += 1;
                prev = None;
                continue;
            }
            let same = prev.is_some_and(|p| validate::same_context(p, record));
            prev = Some(record);
            let context =
                if same && prev_context_valid { Ok(()) } else { validate::validate_context(record, &self.limits) };
            prev_context_valid = context.is_ok();
            match context.and_then(|()| validate::validate_point(record, &self.limits, now)) {
                Ok(()) => {
                    max_event = Some(max_event.map_or(record.time, |m| m.max(record.time)));
                    admitted.push(index);
                }
                Err(reason) => {
                    reject(&mut self.counters, out, record_id(batch, index), record, reason);
                    admission.invalid += 1;
                }
            }
        }
        self.tracker.observe(input, max_event, now);
        admission
    }

    /// Recomputes the watermark at processing time `now` (idle inputs may release it).
    pub fn advance(&mut self, now: Nanos) -> Nanos {
        self.now = self.now.max(now);
        self.tracker.advance(self.now)
    }

    /// Moves the watermark to at least `watermark` and returns it.
    pub fn force(&mut self, watermark: Nanos) -> Nanos {
        self.tracker.force(watermark);
        self.tracker.current()
    }

    /// The current watermark.
    pub fn watermark(&self) -> Nanos {
        self.tracker.current()
    }

    /// The latest processing time seen.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Per-input watermark state.
    pub fn tracker(&self) -> &WatermarkTracker {
        &self.tracker
    }

    /// Batches, duplicates, records in and invalid records.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Sequence gaps the deduper gave up on (agents that skipped many batches).
    pub fn dedup_gaps_abandoned(&self) -> u64 {
        self.dedup.gaps_abandoned()
    }

    /// The gate's state (deduper, watermark tracker, counters, processing time).
    pub fn snapshot(&self) -> GateSnapshot {
        GateSnapshot {
            now: self.now,
            agents: self.dedup.snapshot(),
            gaps_abandoned: self.dedup.gaps_abandoned(),
            inputs: self.tracker.snapshot(),
            watermark: self.tracker.current(),
            counters: self.counters.clone(),
        }
    }

    /// A gate for `config` (assumed validated) in the state of `snapshot`, restored at
    /// processing time `now`. Processing time never goes back: the gate's time is the later of
    /// `now` and the snapshot's; every watermark input counts as active at that time (a restart
    /// is activity: no input is declared idle for the time the engine was down).
    pub fn restore(config: &EngineConfig, snapshot: GateSnapshot, now: Nanos) -> Result<IngestGate, RestoreError> {
        let now = now.max(snapshot.now);
        check_counters(&snapshot.counters)?;
        Ok(IngestGate {
            limits: config.limits.clone(),
            dedup: BatchDeduper::restore(DEDUP_MAX_PENDING, snapshot.agents, snapshot.gaps_abandoned)?,
            tracker: WatermarkTracker::restore(
                config.out_of_orderness,
                config.idle_timeout,
                snapshot.inputs,
                snapshot.watermark,
                now,
            )?,
            counters: snapshot.counters,
            now,
        })
    }
}

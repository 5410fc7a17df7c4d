//! The event-time window engine: pure, deterministic, no I/O, no wall clock.
//!
//! Role: `WindowEngine` runs the whole core for one input stream — dedup of re-sent batches,
//! validation, dimension expansion, lateness, window state, watermark tracking, firing and
//! corrections — and reports through an [`EngineOutput`]. Its parts are usable alone: an
//! actor topology runs the `WatermarkTracker` at ingest and one `WindowShard` per core.
//! Processing time is always an argument, so the same calls give the same outputs.
//!
//! Data flow of one batch: `BatchDeduper` → `validate` → `WindowShard::placement` (late?) →
//! `SeriesRegistry::resolve` (series limit) → `WindowShard::add` per series → at the end
//! `WatermarkTracker::advance` → `WindowShard::advance` (corrections, firings, freeing).

pub mod agents;
pub mod config;
pub mod counters;
pub mod dedup;
pub mod dimension;
pub mod output;
mod pane_windows;
pub mod record;
mod session_windows;
mod shard;
pub mod stats;
pub mod time;
pub mod validate;
pub mod watermark;

pub use agents::AgentTable;
pub use config::{ConfigError, DimensionField, DimensionSpec, EngineConfig, Limits, TagDimensions, WindowSpec};
pub use counters::EngineCounters;
pub use dedup::BatchDeduper;
pub use dimension::{Dimension, DimensionKind, SeriesKey, SeriesRegistry};
pub use output::{
    EngineOutput, InvalidRecord, LateRecord, LatestResults, RecordIdRef, StoredResult, Window, WindowResult,
};
pub use record::{Batch, NANO_UNITS, Record, RecordId, Value};
pub use shard::Placement;
pub use stats::Stats;
pub use time::{Nanos, WATERMARK_END, WATERMARK_NONE};
pub use validate::{InvalidReason, validate};
pub use watermark::{InputStatus, WatermarkTracker};

use dimension::SeriesId;
use shard::{EmitCtx, WindowShard};
use stats::LastKey;

/// Most out-of-order batch sequences remembered per agent by the deduper.
pub const DEDUP_MAX_PENDING: usize = 4_096;

/// What happened to one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The batch was a re-delivery and was skipped whole.
    pub duplicate: bool,
    /// Records counted in at least one window.
    pub accepted: u32,
    /// Records dropped as late (sent to the late output).
    pub late: u32,
    /// Records refused as invalid (sent to the invalid output).
    pub invalid: u32,
}

/// The single-stream window engine.
#[derive(Debug)]
pub struct WindowEngine {
    config: EngineConfig,
    tracker: WatermarkTracker,
    dedup: BatchDeduper,
    registry: SeriesRegistry,
    agents: AgentTable,
    shard: WindowShard,
    counters: EngineCounters,
    now: Nanos,
    scratch: Vec<SeriesId>,
}

impl WindowEngine {
    /// An engine for `config`, or why the configuration cannot be honoured.
    pub fn new(config: EngineConfig) -> Result<WindowEngine, ConfigError> {
        config.validate()?;
        Ok(WindowEngine {
            tracker: WatermarkTracker::new(config.out_of_orderness, config.idle_timeout),
            dedup: BatchDeduper::new(DEDUP_MAX_PENDING),
            registry: SeriesRegistry::new(&config.dimensions, config.limits.max_series),
            agents: AgentTable::default(),
            shard: WindowShard::new(config.window, config.allowed_lateness, config.series_ttl),
            counters: EngineCounters::default(),
            now: WATERMARK_NONE,
            scratch: Vec::new(),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Processes one batch that arrived from `input` (a partition or an agent connection) at
    /// processing time `now`, then advances the watermark and emits what it decides.
    pub fn process_batch(
        &mut self,
        input: &str,
        batch: &Batch<'_>,
        now: Nanos,
        out: &mut dyn EngineOutput,
    ) -> BatchOutcome {
        self.now = self.now.max(now);
        let now = self.now;
        self.counters.batches += 1;
        if !self.dedup.first_delivery(batch.agent, batch.sequence) {
            self.counters.duplicate_batches += 1;
            self.counters.duplicate_records += batch.records.len() as u64;
            return BatchOutcome { duplicate: true, ..BatchOutcome::default() };
        }
        let agent = self.agents.intern(batch.agent);
        let watermark = self.shard.watermark();
        let mut outcome = BatchOutcome::default();
        let mut max_event: Option<Nanos> = None;
        let mut series = std::mem::take(&mut self.scratch);
        // Records of one agent batch mostly share cluster, node and tags: check and resolve
        // that context once while it stays the same from one record to the next.
        let mut prev: Option<&Record> = None;
        let mut prev_context_valid = false;
        let mut cache_matches_prev = false;
        for (i, record) in batch.records.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let id = RecordIdRef { agent: batch.agent, sequence: batch.sequence, index };
            self.counters.records_in += 1;
            let same = prev.is_some_and(|p| validate::same_context(p, record));
            prev = Some(record);
            let cache_ok = same && cache_matches_prev;
            cache_matches_prev = cache_ok;
            let context = if same && prev_context_valid {
                Ok(())
            } else {
                validate::validate_context(record, &self.config.limits)
            };
            prev_context_valid = context.is_ok();
            if let Err(reason) = context.and_then(|()| validate::validate_point(record, &self.config.limits, now)) {
                self.reject(id, record, reason, out, &mut outcome);
                continue;
            }
            max_event = Some(max_event.map_or(record.time, |m| m.max(record.time)));
            let placement = self.shard.placement(record.time);
            let late =
                LateRecord { id, record, watermark, missed_windows: placement.missed, windows: placement.windows };
            if late.dropped() {
                self.counters.late_dropped += 1;
                outcome.late += 1;
                out.late(late);
                continue;
            }
            let resolved = self.registry.resolve(record, cache_ok, &mut series);
            cache_matches_prev = resolved.is_ok();
            if resolved.is_err() {
                self.reject(id, record, InvalidReason::CardinalityLimit, out, &mut outcome);
                continue;
            }
            let key = LastKey { time: record.time, agent, sequence: batch.sequence, index };
            for &s in &series {
                self.shard.add(s, record.time, record.value, key, &self.agents);
            }
            self.counters.accepted += 1;
            outcome.accepted += 1;
            if late.missed_windows > 0 {
                self.counters.late_partial += 1;
                out.late(late);
            }
        }
        self.scratch = series;
        self.tracker.observe(input, max_event, now);
        let wm = self.tracker.advance(now);
        self.advance_to(wm, out);
        outcome
    }

    fn reject(
        &mut self,
        id: RecordIdRef<'_>,
        record: &Record,
        reason: InvalidReason,
        out: &mut dyn EngineOutput,
        outcome: &mut BatchOutcome,
    ) {
        self.counters.invalid[reason.index()] += 1;
        outcome.invalid += 1;
        out.invalid(InvalidRecord { id, record, reason });
    }

    fn advance_to(&mut self, wm: Nanos, out: &mut dyn EngineOutput) {
        let mut ctx = EmitCtx { registry: &mut self.registry, agents: &self.agents, out, counters: &mut self.counters };
        self.shard.advance(wm, &mut ctx);
    }

    /// Lets processing time pass with no data: idle inputs may release the watermark.
    pub fn handle_tick(&mut self, now: Nanos, out: &mut dyn EngineOutput) {
        self.now = self.now.max(now);
        let wm = self.tracker.advance(self.now);
        self.advance_to(wm, out);
    }

    /// Moves the watermark to at least `watermark` (from an upstream that tracks inputs).
    pub fn handle_watermark(&mut self, watermark: Nanos, out: &mut dyn EngineOutput) {
        self.tracker.force(watermark);
        let wm = self.tracker.current();
        self.advance_to(wm, out);
    }

    /// End of input: fires every remaining window. Later records are late.
    pub fn finish(&mut self, out: &mut dyn EngineOutput) {
        self.handle_watermark(WATERMARK_END, out);
    }

    /// The current global watermark.
    pub fn watermark(&self) -> Nanos {
        self.shard.watermark()
    }

    /// The watermark tracker (per-input state for self-monitoring).
    pub fn tracker(&self) -> &WatermarkTracker {
        &self.tracker
    }

    /// Counters since start.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Live series.
    pub fn series_count(&self) -> usize {
        self.registry.len()
    }

    /// Live accumulators (series × panes or sessions): the engine's state size.
    pub fn state_size(&self) -> usize {
        self.shard.state_size()
    }

    /// Sequence gaps the deduper gave up on (agents that skipped many batches).
    pub fn dedup_gaps_abandoned(&self) -> u64 {
        self.dedup.gaps_abandoned()
    }
}

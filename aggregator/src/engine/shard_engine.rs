//! `ShardEngine`: window state for the series one shard owns, fed with admitted records.
//!
//! Role: judges lateness against the shard's watermark (the one the gate last gave it),
//! expands records into series (with the shard's own live-series limit), accumulates, and on
//! each new watermark emits corrections, firings and frees state. It never deduplicates or
//! validates (the gate did) and never tracks inputs. Touches the series registry, the agent
//! table and the window state it owns.

use super::agents::AgentTable;
use super::config::EngineConfig;
use super::counters::EngineCounters;
use super::dimension::{SeriesId, SeriesRegistry};
use super::gate::{record_id, reject};
use super::output::{AcceptedRecord, EngineOutput, LateRecord};
use super::record::{Batch, Record};
use super::shard::{EmitCtx, WindowShard};
use super::stats::LastKey;
use super::time::Nanos;
use super::validate::{self, InvalidReason};

/// What a shard did with the records it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardOutcome {
    /// Records counted in at least one window.
    pub accepted: u32,
    /// Records dropped as late (sent to the late output).
    pub late: u32,
    /// Records refused because they would pass the shard's live-series limit.
    pub invalid: u32,
}

/// Window state and series of one shard.
#[derive(Debug)]
pub struct ShardEngine {
    registry: SeriesRegistry,
    agents: AgentTable,
    shard: WindowShard,
    counters: EngineCounters,
    scratch: Vec<SeriesId>,
}

impl ShardEngine {
    /// A shard for `config` (assumed validated) holding at most `max_series` live series.
    pub fn new(config: &EngineConfig, max_series: usize) -> ShardEngine {
        ShardEngine {
            registry: SeriesRegistry::new(&config.dimensions, max_series),
            agents: AgentTable::default(),
            shard: WindowShard::new(config.window, config.allowed_lateness, config.series_ttl),
            counters: EngineCounters::default(),
            scratch: Vec::new(),
        }
    }

    /// Adds records `indices` of `batch` (admitted by the gate, in ascending order).
    pub fn add(&mut self, batch: &Batch<'_>, indices: &[u32], out: &mut dyn EngineOutput) -> ShardOutcome {
        let mut outcome = ShardOutcome::default();
        if indices.is_empty() {
            return outcome;
        }
        let agent = self.agents.intern(batch.agent);
        let watermark = self.shard.watermark();
        let mut series = std::mem::take(&mut self.scratch);
        // The registry caches a context's series while consecutive records share it.
        let mut prev: Option<&Record> = None;
        let mut cache_matches_prev = false;
        for &index in indices {
            let Some(record) = batch.records.get(index as usize) else { continue };
            let id = record_id(batch, index);
            let same = prev.is_some_and(|p| validate::same_context(p, record));
            prev = Some(record);
            let cache_ok = same && cache_matches_prev;
            cache_matches_prev = cache_ok;
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
                reject(&mut self.counters, out, id, record, InvalidReason::CardinalityLimit);
                outcome.invalid += 1;
                continue;
            }
            let key = LastKey { time: record.time, agent, sequence: batch.sequence, index };
            for &s in &series {
                self.shard.add(s, record.time, record.value, key, &self.agents);
            }
            self.counters.accepted += 1;
            outcome.accepted += 1;
            out.accepted(AcceptedRecord { id, record, watermark });
            if late.missed_windows > 0 {
                self.counters.late_partial += 1;
                out.late(late);
            }
        }
        self.scratch = series;
        outcome
    }

    /// Ends a batch and moves to watermark `wm`: corrections, firings, freeing state.
    pub fn advance(&mut self, wm: Nanos, out: &mut dyn EngineOutput) {
        let mut ctx = EmitCtx { registry: &mut self.registry, agents: &self.agents, out, counters: &mut self.counters };
        self.shard.advance(wm, &mut ctx);
    }

    /// The watermark this shard last advanced to.
    pub fn watermark(&self) -> Nanos {
        self.shard.watermark()
    }

    /// Accepted, late, cardinality-refused records and emissions of this shard.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Live series.
    pub fn series_count(&self) -> usize {
        self.registry.len()
    }

    /// Live accumulators (series × panes or sessions).
    pub fn state_size(&self) -> usize {
        self.shard.state_size()
    }
}

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
use super::snapshot::{
    ConfigFingerprint, RestoreError, SeriesSnapshot, ShardSnapshot, add_counters, check_counters, invalid,
};
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
    /// What its window state means (checked when a snapshot is restored).
    fingerprint: ConfigFingerprint,
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
            fingerprint: ConfigFingerprint::of(config),
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

    /// The shard's state: every live series by key with its window state and reaper entries,
    /// the watermark and the counters. Meant to be taken between batches (after
    /// [`advance`](Self::advance)), when no correction or retraction is pending; taken between
    /// `add` and `advance` it records those pending ones too, and a restore replays them.
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut states = self.shard.snapshot_states(&self.agents).into_iter().peekable();
        let mut reap: Vec<(SeriesId, Nanos)> =
            self.shard.reaper().live_entries(&self.registry).map(|(since, s)| (s, since)).collect();
        reap.sort_unstable();
        let mut reap = reap.into_iter().peekable();
        let mut series = Vec::with_capacity(self.registry.len());
        for (id, key) in self.registry.live() {
            while states.next_if(|(s, _)| *s < id).is_some() {}
            let state = match states.next_if(|(s, _)| *s == id) {
                Some((_, state)) => state,
                None => self.shard.empty_state(),
            };
            let mut reap_since = Vec::new();
            while let Some((_, since)) = reap.next_if(|(s, _)| *s == id) {
                reap_since.push(since);
            }
            series.push(SeriesSnapshot { key: key.clone(), state, reap_since });
        }
        ShardSnapshot {
            fingerprint: self.fingerprint.clone(),
            watermark: self.shard.watermark(),
            counters: self.counters.clone(),
            series,
        }
    }

    /// A shard for `config` (assumed validated) holding at most `max_series` live series, in
    /// the state of `parts` — snapshots of one consistent cut (same configuration and
    /// watermark), already filtered to the series this shard owns (see
    /// [`split_shards`](super::snapshot::split_shards)). Series get fresh ids; counters are
    /// summed.
    pub fn restore(
        config: &EngineConfig,
        max_series: usize,
        parts: Vec<ShardSnapshot>,
    ) -> Result<ShardEngine, RestoreError> {
        let mut engine = ShardEngine::new(config, max_series);
        let first = parts.first().ok_or(RestoreError::NoShards)?;
        let watermark = first.watermark;
        let series: usize = parts.iter().map(|p| p.series.len()).sum();
        if series > max_series {
            return Err(RestoreError::SeriesLimit { series, limit: max_series });
        }
        for part in &parts {
            part.fingerprint.check(&engine.fingerprint)?;
            check_counters(&part.counters)?;
            if part.watermark != watermark {
                return Err(RestoreError::WatermarkMismatch { first: watermark, other: part.watermark });
            }
        }
        engine.shard.restore_watermark(watermark);
        engine.registry.reserve(series);
        let mut reap: Vec<(Nanos, SeriesId)> = Vec::new();
        for part in parts {
            add_counters(&mut engine.counters, &part.counters);
            for s in part.series {
                let id = engine.registry.restore_series(&s.key).map_err(|why| invalid(&s.key, why))?;
                engine.shard.restore_series(id, &s.key, s.state, &mut engine.agents)?;
                reap.extend(s.reap_since.into_iter().map(|since| (since, id)));
            }
        }
        engine.shard.restore_reaper(reap, &engine.registry);
        check_counters(&engine.counters)?;
        Ok(engine)
    }
}

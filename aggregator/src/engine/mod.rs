//! The event-time window engine: pure, deterministic, no I/O, no wall clock.
//!
//! Role: `WindowEngine` runs the whole core for one input stream — dedup of re-sent batches,
//! validation, dimension expansion, lateness, window state, watermark tracking, firing and
//! corrections — and reports through an [`EngineOutput`]. It is an [`IngestGate`] (dedup,
//! validation, watermarks) in front of one or more [`ShardEngine`]s (series and windows),
//! with records routed to shards by a stable hash of their metric, so every series lives in
//! exactly one shard. An actor topology runs the same two parts in separate actors.
//! Processing time is always an argument, so the same calls give the same outputs.
//!
//! Data flow of one batch: `IngestGate::admit` (`BatchDeduper`, `validate`) →
//! [`shard_of`] → `ShardEngine::add` (`Placement`: late? → `SeriesRegistry::resolve`: series
//! limit → `WindowShard::add` per series) → `IngestGate::advance` (`WatermarkTracker`) →
//! `ShardEngine::advance` (corrections, firings, freeing).

pub mod agents;
pub mod config;
pub mod counters;
pub mod dedup;
pub mod dimension;
pub mod gate;
pub mod output;
mod pane_windows;
pub mod record;
mod session_windows;
mod shard;
pub mod shard_engine;
pub mod snapshot;
pub mod stats;
pub mod time;
pub mod validate;
pub mod watermark;

pub use agents::AgentTable;
pub use config::{ConfigError, DimensionField, DimensionSpec, EngineConfig, Limits, TagDimensions, WindowSpec};
pub use counters::EngineCounters;
pub use dedup::BatchDeduper;
pub use dimension::{Dimension, DimensionKind, SeriesKey, SeriesRegistry};
pub use gate::{Admission, DEDUP_MAX_PENDING, IngestGate};
pub use output::{
    AcceptedRecord, EngineOutput, InvalidRecord, LateRecord, LatestResults, RecordIdRef, StoredResult, Window,
    WindowResult,
};
pub use record::{Batch, NANO_UNITS, Record, RecordId, Value};
pub use shard::Placement;
pub use shard_engine::{ShardEngine, ShardOutcome};
pub use snapshot::{
    AccSnapshot, AgentSequences, ConfigFingerprint, EngineSnapshot, FiredWindow, GateSnapshot, InputSnapshot,
    PaneSnapshot, RestoreError, SNAPSHOT_VERSION, SeriesSnapshot, SeriesState, SessionSnapshot, ShardSnapshot,
    SnapshotError, split_shards,
};
pub use stats::Stats;
pub use time::{Nanos, WATERMARK_END, WATERMARK_NONE};
pub use validate::{InvalidReason, validate};
pub use watermark::{InputStatus, WatermarkTracker};

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

/// The shard that owns every series of `metric`, out of `shards`: FNV-1a of the metric name,
/// stable across processes and versions (checkpoints and replays route alike).
pub fn shard_of(metric: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let hash = metric.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % shards as u64) as usize
}

/// The window engine: an ingest gate in front of one or more shards.
#[derive(Debug)]
pub struct WindowEngine {
    config: EngineConfig,
    gate: IngestGate,
    shards: Vec<ShardEngine>,
    admitted: Vec<u32>,
    routed: Vec<Vec<u32>>,
}

impl WindowEngine {
    /// A single-shard engine for `config`, or why the configuration cannot be honoured.
    pub fn new(config: EngineConfig) -> Result<WindowEngine, ConfigError> {
        WindowEngine::with_shards(config, 1)
    }

    /// An engine whose series are spread over `shards` shards by metric (at least one). The
    /// live-series limit is split evenly between them. Results equal the single-shard ones.
    pub fn with_shards(config: EngineConfig, shards: usize) -> Result<WindowEngine, ConfigError> {
        config.validate()?;
        let n = shards.max(1);
        let per_shard = config.limits.max_series.div_ceil(n);
        Ok(WindowEngine {
            gate: IngestGate::new(&config),
            shards: (0..n).map(|_| ShardEngine::new(&config, per_shard)).collect(),
            admitted: Vec::new(),
            routed: vec![Vec::new(); n],
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
        self.process_decoded(input, batch, &[], now, out)
    }

    /// [`process_batch`](Self::process_batch) for a batch decoded from the wire, where
    /// `defects` (ascending by index) name records that could not be converted and why.
    pub fn process_decoded(
        &mut self,
        input: &str,
        batch: &Batch<'_>,
        defects: &[(u32, InvalidReason)],
        now: Nanos,
        out: &mut dyn EngineOutput,
    ) -> BatchOutcome {
        let mut admitted = std::mem::take(&mut self.admitted);
        let admission = self.gate.admit(input, batch, defects, now, out, &mut admitted);
        let mut outcome =
            BatchOutcome { duplicate: admission.duplicate, invalid: admission.invalid, ..BatchOutcome::default() };
        let mut tally = |o: ShardOutcome| {
            outcome.accepted += o.accepted;
            outcome.late += o.late;
            outcome.invalid += o.invalid;
        };
        if let [only] = self.shards.as_mut_slice() {
            tally(only.add(batch, &admitted, out));
        } else {
            let n = self.shards.len();
            for &i in &admitted {
                if let Some(r) = batch.records.get(i as usize) {
                    self.routed[shard_of(&r.metric, n)].push(i);
                }
            }
            for (shard, indices) in self.shards.iter_mut().zip(&mut self.routed) {
                tally(shard.add(batch, indices, out));
                indices.clear();
            }
        }
        self.admitted = admitted;
        if !admission.duplicate {
            let wm = self.gate.advance(now);
            self.advance_shards(wm, out);
        }
        outcome
    }

    fn advance_shards(&mut self, wm: Nanos, out: &mut dyn EngineOutput) {
        for shard in &mut self.shards {
            shard.advance(wm, out);
        }
    }

    /// Lets processing time pass with no data: idle inputs may release the watermark.
    pub fn handle_tick(&mut self, now: Nanos, out: &mut dyn EngineOutput) {
        let wm = self.gate.advance(now);
        self.advance_shards(wm, out);
    }

    /// Moves the watermark to at least `watermark` (from an upstream that tracks inputs).
    pub fn handle_watermark(&mut self, watermark: Nanos, out: &mut dyn EngineOutput) {
        let wm = self.gate.force(watermark);
        self.advance_shards(wm, out);
    }

    /// End of input: fires every remaining window. Later records are late.
    pub fn finish(&mut self, out: &mut dyn EngineOutput) {
        self.handle_watermark(WATERMARK_END, out);
    }

    /// The current global watermark.
    pub fn watermark(&self) -> Nanos {
        self.gate.watermark()
    }

    /// The watermark tracker (per-input state for self-monitoring).
    pub fn tracker(&self) -> &WatermarkTracker {
        self.gate.tracker()
    }

    /// Counters since start, summed over the gate and every shard.
    pub fn counters(&self) -> EngineCounters {
        let mut total = self.gate.counters().clone();
        for shard in &self.shards {
            total += shard.counters();
        }
        total
    }

    /// Live series over all shards.
    pub fn series_count(&self) -> usize {
        self.shards.iter().map(ShardEngine::series_count).sum()
    }

    /// Live accumulators (series × panes or sessions) over all shards: the state size.
    pub fn state_size(&self) -> usize {
        self.shards.iter().map(ShardEngine::state_size).sum()
    }

    /// The shards, e.g. for per-shard self-monitoring.
    pub fn shards(&self) -> &[ShardEngine] {
        &self.shards
    }

    /// Sequence gaps the deduper gave up on (agents that skipped many batches).
    pub fn dedup_gaps_abandoned(&self) -> u64 {
        self.gate.dedup_gaps_abandoned()
    }

    /// A consistent snapshot of the whole engine. Every call of the engine completes a batch,
    /// tick or watermark, so any moment between calls is a consistent cut.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            version: SNAPSHOT_VERSION,
            gate: self.gate.snapshot(),
            shards: self.shards.iter().map(ShardEngine::snapshot).collect(),
        }
    }

    /// An engine for `config` with `shards` shards (any number, whatever the snapshot was taken
    /// with) in the state of `snapshot`, restored at processing time `now` (every watermark input
    /// counts as active at `now`). Fed the calls that followed the snapshot, it emits what the
    /// engine that took it would have emitted — per (series, window), the same results in the
    /// same order. Refuses a snapshot taken under another window spec, allowed lateness or
    /// dimensions, and one with more live series than `shards` shards may hold.
    pub fn restore(
        config: EngineConfig,
        shards: usize,
        snapshot: EngineSnapshot,
        now: Nanos,
    ) -> Result<WindowEngine, RestoreError> {
        config.validate()?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version { found: snapshot.version, supported: SNAPSHOT_VERSION });
        }
        let n = shards.max(1);
        let per_shard = config.limits.max_series.div_ceil(n);
        let capacity = per_shard.saturating_mul(n);
        let series = snapshot.series_count();
        if series > capacity {
            return Err(RestoreError::SeriesLimit { series, limit: capacity });
        }
        // Re-routing may give a shard more than its even share; it then holds them all (no
        // restored state is dropped) and creates no new series until it is below its share.
        let shards = split_shards(snapshot.shards, n)
            .into_iter()
            .map(|parts| {
                let limit = per_shard.max(parts.iter().map(|p| p.series.len()).sum());
                ShardEngine::restore(&config, limit, parts)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WindowEngine {
            gate: IngestGate::restore(&config, snapshot.gate, now)?,
            admitted: Vec::new(),
            routed: vec![Vec::new(); n],
            shards,
            config,
        })
    }
}

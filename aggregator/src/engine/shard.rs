//! `WindowShard`: the window state of one shard, whatever the window kind.
//!
//! Role: dispatches to pane-based (tumbling, sliding) or session state, and defines the
//! small context (`EmitCtx`) through which state emits results and releases series. A
//! shard is driven by records of the series it owns and by the watermark it is given; it
//! never tracks inputs itself, so an actor topology can run one per core. Touches the series
//! registry, the agent table, the output and the counters only through `EmitCtx`.

use super::agents::AgentTable;
use super::config::WindowSpec;
use super::counters::EngineCounters;
use super::dimension::{SeriesId, SeriesKey, SeriesRegistry};
use super::output::{EngineOutput, Window, WindowResult};
use super::pane_windows::PaneWindows;
use super::record::Value;
use super::session_windows::SessionWindows;
use super::snapshot::{RestoreError, SeriesState, invalid};
use super::stats::{LastKey, Stats};
use super::time::Nanos;

/// Where a record falls: how many windows hold it, and how many of those are past their
/// allowed lateness (missed). `missed == windows` means the record is dropped as late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Windows that contain the record's event time.
    pub windows: u32,
    /// Of those, windows already freed (watermark ≥ end + allowed lateness).
    pub missed: u32,
}

/// What window state needs to emit and to release series.
pub(crate) struct EmitCtx<'a> {
    pub registry: &'a mut SeriesRegistry,
    pub agents: &'a AgentTable,
    pub out: &'a mut dyn EngineOutput,
    pub counters: &'a mut EngineCounters,
}

impl EmitCtx<'_> {
    pub fn emit(&mut self, s: SeriesId, window: Window, stats: Stats, revision: u32) {
        if let Some(series) = self.registry.key(s) {
            self.counters.results += 1;
            if revision > 0 {
                self.counters.corrections += 1;
            }
            self.out.result(WindowResult { series, window, stats, revision });
        }
    }

    pub fn retract(&mut self, s: SeriesId, window_start: Nanos) {
        if let Some(series) = self.registry.key(s) {
            self.counters.retractions += 1;
            self.out.retract(series, window_start);
        }
    }

    pub fn release(&mut self, s: SeriesId) {
        self.registry.release(s);
    }
}

/// Releases series whose window state has been empty for a time-to-live of event time.
///
/// Window state reports a series as empty when its last pane or session is freed; the series
/// is released once the watermark has moved `ttl` past that moment and it is still empty.
/// Entries are not de-duplicated: releasing an empty series early is always safe (it is
/// re-created on its next record), releasing one with state never happens. An entry names the
/// series by id *and* generation, so an entry left over from a series already released never
/// acts on a later series that reuses the id: when a series is released depends only on its
/// own history, never on id assignment (which a restored snapshot does not reproduce).
#[derive(Debug, Clone)]
pub(crate) struct SeriesReaper {
    ttl: Nanos,
    /// (watermark when found empty, series, its generation); `since` is non-decreasing.
    queue: std::collections::VecDeque<(Nanos, SeriesId, u32)>,
}

impl SeriesReaper {
    pub fn new(ttl: Nanos) -> SeriesReaper {
        SeriesReaper { ttl, queue: std::collections::VecDeque::new() }
    }

    /// Series `s` has no state left at watermark `wm`.
    pub fn emptied(&mut self, s: SeriesId, wm: Nanos, registry: &SeriesRegistry) {
        self.queue.push_back((wm, s, registry.generation(s)));
    }

    /// Releases series that stayed empty for the time-to-live; `is_empty` asks the state.
    pub fn reap(&mut self, wm: Nanos, ctx: &mut EmitCtx<'_>, is_empty: impl Fn(SeriesId) -> bool) {
        while let Some(&(since, s, generation)) = self.queue.front() {
            if since.saturating_add(self.ttl) > wm {
                break;
            }
            self.queue.pop_front();
            if ctx.registry.generation(s) == generation && is_empty(s) {
                ctx.release(s);
            }
        }
    }

    /// Entries `(since, series)` that still name a live series (in queue order), for a snapshot.
    pub fn live_entries<'a>(&'a self, registry: &'a SeriesRegistry) -> impl Iterator<Item = (Nanos, SeriesId)> + 'a {
        self.queue
            .iter()
            .filter(|&&(_, s, g)| registry.key(s).is_some() && registry.generation(s) == g)
            .map(|&(since, s, _)| (since, s))
    }

    /// Restores the queue from `(since, series)` entries of live series, in any order.
    pub fn restore(&mut self, mut entries: Vec<(Nanos, SeriesId)>, registry: &SeriesRegistry) {
        // Entries with equal `since` are released in one `reap`: their order does not matter.
        entries.sort_unstable();
        self.queue = entries.into_iter().map(|(since, s)| (since, s, registry.generation(s))).collect();
    }
}

/// Window state for the series of one shard.
#[derive(Debug, Clone)]
pub(crate) enum WindowShard {
    Panes(PaneWindows),
    Sessions(SessionWindows),
}

impl WindowShard {
    pub fn new(spec: WindowSpec, lateness: Nanos, series_ttl: Nanos) -> WindowShard {
        let reaper = SeriesReaper::new(series_ttl);
        match spec {
            WindowSpec::Tumbling { size, offset } => {
                WindowShard::Panes(PaneWindows::new(size, size, offset, lateness, reaper))
            }
            WindowSpec::Sliding { size, slide, offset } => {
                WindowShard::Panes(PaneWindows::new(size, slide, offset, lateness, reaper))
            }
            WindowSpec::Session { gap } => WindowShard::Sessions(SessionWindows::new(gap, lateness, reaper)),
        }
    }

    /// The watermark this shard last advanced to.
    pub fn watermark(&self) -> Nanos {
        match self {
            WindowShard::Panes(p) => p.watermark(),
            WindowShard::Sessions(s) => s.watermark(),
        }
    }

    /// Live accumulators (panes or sessions across all series).
    pub fn state_size(&self) -> usize {
        match self {
            WindowShard::Panes(p) => p.state_size(),
            WindowShard::Sessions(s) => s.state_size(),
        }
    }

    /// Where event time `t` falls relative to the current watermark.
    #[inline]
    pub fn placement(&self, t: Nanos) -> Placement {
        match self {
            WindowShard::Panes(p) => p.placement(t),
            WindowShard::Sessions(s) => s.placement(t),
        }
    }

    /// Adds an accepted record to series `s`.
    #[inline]
    pub fn add(&mut self, s: SeriesId, t: Nanos, value: Value, key: LastKey, agents: &AgentTable) {
        match self {
            WindowShard::Panes(p) => p.add(s, t, value, key, agents),
            WindowShard::Sessions(x) => x.add(s, t, value, key, agents),
        }
    }

    /// Ends a batch: corrections, then firing and freeing up to watermark `wm`.
    pub fn advance(&mut self, wm: Nanos, ctx: &mut EmitCtx<'_>) {
        match self {
            WindowShard::Panes(p) => p.advance(wm, ctx),
            WindowShard::Sessions(s) => s.advance(wm, ctx),
        }
    }

    /// The series reaper.
    pub fn reaper(&self) -> &SeriesReaper {
        match self {
            WindowShard::Panes(p) => &p.reaper,
            WindowShard::Sessions(s) => &s.reaper,
        }
    }

    /// Sets the watermark of a freshly created shard being restored.
    pub fn restore_watermark(&mut self, wm: Nanos) {
        match self {
            WindowShard::Panes(p) => p.watermark = wm,
            WindowShard::Sessions(s) => s.watermark = wm,
        }
    }

    /// Restores the reaper's queue (see [`SeriesReaper::restore`]).
    pub fn restore_reaper(&mut self, entries: Vec<(Nanos, SeriesId)>, registry: &SeriesRegistry) {
        match self {
            WindowShard::Panes(p) => p.reaper.restore(entries, registry),
            WindowShard::Sessions(s) => s.reaper.restore(entries, registry),
        }
    }

    /// `(id, state)` of every series id holding any window state (records, fired windows,
    /// pending corrections, retractions or timers), ascending by id — for a snapshot, paired by
    /// the caller with the registry's live series (ids not listed have empty state).
    pub fn snapshot_states(&self, agents: &AgentTable) -> Vec<(SeriesId, SeriesState)> {
        match self {
            WindowShard::Panes(p) => p.snapshot_states(agents),
            WindowShard::Sessions(s) => s.snapshot_states(agents),
        }
    }

    /// The state of a series without records (registered, awaiting release).
    pub fn empty_state(&self) -> SeriesState {
        match self {
            WindowShard::Panes(_) => {
                SeriesState::Panes { panes: Vec::new(), fired: Vec::new(), pending_corrections: Vec::new() }
            }
            WindowShard::Sessions(_) => SeriesState::Sessions {
                sessions: Vec::new(),
                pending_retractions: Vec::new(),
                next_timer: None,
                dirty: false,
            },
        }
    }

    /// Restores the window state of series `s` (fresh id) from its snapshot.
    pub fn restore_series(
        &mut self,
        s: SeriesId,
        key: &SeriesKey,
        state: SeriesState,
        agents: &mut AgentTable,
    ) -> Result<(), RestoreError> {
        match (self, state) {
            (WindowShard::Panes(p), SeriesState::Panes { panes, fired, pending_corrections }) => {
                p.restore_series(s, key, panes, fired, pending_corrections, agents)
            }
            (WindowShard::Sessions(x), SeriesState::Sessions { sessions, pending_retractions, next_timer, dirty }) => {
                x.restore_series(s, key, sessions, pending_retractions, next_timer, dirty, agents)
            }
            _ => Err(invalid(key, "window state of another window kind")),
        }
    }
}

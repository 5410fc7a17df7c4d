//! `SessionWindows`: per-series activity sessions with merging.
//!
//! Role: records of a series closer than `gap` share a session `[first, last + gap)`. A
//! record may bridge sessions, which merge; a merged or backwards-grown session that was
//! already emitted under another start is retracted there. A session fires when the
//! watermark passes its end. A record is late when its own gap window `[t, t + gap)` is past
//! the allowed lateness (`t + gap + lateness ≤ watermark`); session state is kept until
//! `end + gap + lateness`, one gap longer than a window, so no accepted record can touch a
//! session that was already freed. Per-series timers live in one heap with lazy deletion.
//! Touches the series registry and the output only through `EmitCtx`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::agents::AgentTable;
use super::dimension::{SeriesId, SeriesKey};
use super::output::Window;
use super::record::Value;
use super::shard::{EmitCtx, Placement, SeriesReaper};
use super::snapshot::{RestoreError, SeriesState, SessionSnapshot, check_revision, check_time, invalid};
use super::stats::{Acc, LastKey};
use super::time::{Nanos, WATERMARK_NONE};

#[derive(Debug, Clone)]
struct Session {
    start: Nanos,
    end: Nanos,
    acc: Acc,
    /// The start under which this session's result is currently stored, if any.
    emitted: Option<Nanos>,
    /// Revision of the next emission.
    revision: u32,
    /// Received records since its last emission.
    changed: bool,
}

#[derive(Debug, Clone)]
struct SeriesSessions {
    /// Sorted by start; pairwise disjoint.
    sessions: Vec<Session>,
    /// Stored keys superseded by merges, to retract at the end of the batch.
    retract: Vec<Nanos>,
    /// Time of this series' live timer in the heap (`Nanos::MAX`: none).
    next_timer: Nanos,
    dirty: bool,
}

impl Default for SeriesSessions {
    fn default() -> Self {
        SeriesSessions { sessions: Vec::new(), retract: Vec::new(), next_timer: Nanos::MAX, dirty: false }
    }
}

/// Session window state for many series.
#[derive(Debug, Clone)]
pub(crate) struct SessionWindows {
    gap: Nanos,
    lateness: Nanos,
    series: Vec<SeriesSessions>,
    timers: BinaryHeap<Reverse<(Nanos, SeriesId)>>,
    dirty: Vec<SeriesId>,
    pub(super) watermark: Nanos,
    live_sessions: usize,
    pub(super) reaper: SeriesReaper,
}

impl SessionWindows {
    pub fn new(gap: Nanos, lateness: Nanos, reaper: SeriesReaper) -> SessionWindows {
        SessionWindows {
            gap,
            lateness,
            series: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            watermark: WATERMARK_NONE,
            live_sessions: 0,
            reaper,
        }
    }

    pub fn watermark(&self) -> Nanos {
        self.watermark
    }

    /// Live (series, session) accumulators.
    pub fn state_size(&self) -> usize {
        self.live_sessions
    }

    #[inline]
    pub fn placement(&self, t: Nanos) -> Placement {
        let late = t + self.gap + self.lateness <= self.watermark;
        Placement { windows: 1, missed: u32::from(late) }
    }

    fn schedule(&mut self, s: SeriesId, at: Nanos) {
        let ss = &mut self.series[s as usize];
        if at < ss.next_timer {
            ss.next_timer = at;
            self.timers.push(Reverse((at, s)));
        }
    }

    /// Adds an accepted record to series `s`.
    pub fn add(&mut self, s: SeriesId, t: Nanos, value: Value, key: LastKey, agents: &AgentTable) {
        let idx = s as usize;
        if idx >= self.series.len() {
            self.series.resize_with(idx + 1, SeriesSessions::default);
        }
        let (lo, hi) = (t, t + self.gap);
        let ss = &mut self.series[idx];
        // Sessions are disjoint and sorted, so their ends are sorted too.
        let first = ss.sessions.partition_point(|x| x.end <= lo);
        let last = first + ss.sessions[first..].iter().take_while(|x| x.start < hi).count();
        let end = if first == last {
            let session =
                Session { start: lo, end: hi, acc: Acc::new(value, key), emitted: None, revision: 0, changed: true };
            ss.sessions.insert(first, session);
            self.live_sessions += 1;
            hi
        } else {
            let merged_away: Vec<Session> = ss.sessions.drain(first + 1..last).collect();
            self.live_sessions -= merged_away.len();
            let target = &mut ss.sessions[first];
            target.acc.add(value, key, agents);
            target.start = target.start.min(lo);
            target.end = target.end.max(hi);
            target.changed = true;
            let mut stored_keys: Vec<Nanos> = target.emitted.take().into_iter().collect();
            for other in &merged_away {
                target.acc.merge(&other.acc, agents);
                target.end = target.end.max(other.end);
                target.revision = target.revision.max(other.revision);
                stored_keys.extend(other.emitted);
            }
            // The merged session keeps the stored key that still names it; others go.
            for stored in stored_keys {
                if stored == target.start {
                    target.emitted = Some(stored);
                } else {
                    ss.retract.push(stored);
                }
            }
            target.end
        };
        if !ss.dirty {
            ss.dirty = true;
            self.dirty.push(s);
        }
        self.schedule(s, end);
    }

    /// Emits, retracts and frees what the current watermark decides for series `s`, then
    /// schedules its next timer.
    fn reconcile(&mut self, s: SeriesId, ctx: &mut EmitCtx<'_>) {
        let wm = self.watermark;
        let (gap, lateness) = (self.gap, self.lateness);
        let Some(ss) = self.series.get_mut(s as usize) else { return };
        ss.dirty = false;
        for stored in ss.retract.drain(..) {
            ctx.retract(s, stored);
        }
        for x in &mut ss.sessions {
            if let Some(stored) = x.emitted
                && (stored != x.start || x.end > wm)
            {
                ctx.retract(s, stored);
                x.emitted = None;
                x.changed = true;
            }
            if x.end <= wm && (x.changed || x.emitted.is_none()) {
                ctx.emit(s, Window { start: x.start, end: x.end }, x.acc.to_stats(ctx.agents), x.revision);
                x.revision += 1;
                x.emitted = Some(x.start);
                x.changed = false;
            }
        }
        let before = ss.sessions.len();
        ss.sessions.retain(|x| x.end + gap + lateness > wm);
        self.live_sessions -= before - ss.sessions.len();
        let next = ss.sessions.iter().map(|x| if x.end > wm { x.end } else { x.end + gap + lateness }).min();
        ss.next_timer = Nanos::MAX;
        match next {
            Some(at) => self.schedule(s, at),
            None => self.reaper.emptied(s, wm, ctx.registry),
        }
    }

    /// Ends a batch and moves to watermark `wm`.
    pub fn advance(&mut self, wm: Nanos, ctx: &mut EmitCtx<'_>) {
        let dirty = std::mem::take(&mut self.dirty);
        for &s in &dirty {
            self.reconcile(s, ctx);
        }
        self.dirty = dirty;
        self.dirty.clear();
        self.watermark = self.watermark.max(wm);
        while let Some(&Reverse((at, s))) = self.timers.peek() {
            if at > self.watermark {
                break;
            }
            self.timers.pop();
            if self.series.get(s as usize).is_some_and(|ss| ss.next_timer == at) {
                self.reconcile(s, ctx);
            }
        }
        let series = &self.series;
        self.reaper.reap(self.watermark, ctx, |s| series.get(s as usize).is_none_or(|ss| ss.sessions.is_empty()));
    }

    /// See [`WindowShard::snapshot_states`](super::shard::WindowShard::snapshot_states).
    pub fn snapshot_states(&self, agents: &AgentTable) -> Vec<(SeriesId, SeriesState)> {
        let mut out = Vec::new();
        for (id, ss) in self.series.iter().enumerate() {
            if ss.sessions.is_empty() && ss.retract.is_empty() && ss.next_timer == Nanos::MAX && !ss.dirty {
                continue;
            }
            let sessions = ss
                .sessions
                .iter()
                .map(|x| SessionSnapshot {
                    start: x.start,
                    end: x.end,
                    acc: x.acc.to_snapshot(agents),
                    emitted: x.emitted,
                    revision: x.revision,
                    changed: x.changed,
                })
                .collect();
            let state = SeriesState::Sessions {
                sessions,
                pending_retractions: ss.retract.clone(),
                next_timer: (ss.next_timer != Nanos::MAX).then_some(ss.next_timer),
                dirty: ss.dirty,
            };
            out.push((id as SeriesId, state));
        }
        out
    }

    /// Restores series `s` (a fresh id) from its snapshot, checking what the state relies on:
    /// sessions non-empty, ascending and disjoint, times in range.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_series(
        &mut self,
        s: SeriesId,
        key: &SeriesKey,
        sessions: Vec<SessionSnapshot>,
        pending_retractions: Vec<Nanos>,
        next_timer: Option<Nanos>,
        dirty: bool,
        agents: &mut AgentTable,
    ) -> Result<(), RestoreError> {
        for x in &sessions {
            check_time(x.start, "session start")?;
            check_time(x.end, "session end")?;
            x.acc.check(key)?;
            check_revision(key, x.revision)?;
            if let Some(stored) = x.emitted {
                check_time(stored, "stored session start")?;
            }
            if x.start >= x.end {
                return Err(invalid(key, format_args!("empty session [{}, {})", x.start, x.end)));
            }
        }
        if !sessions.windows(2).all(|w| w[0].end <= w[1].start) {
            return Err(invalid(key, "sessions overlap or are out of order"));
        }
        for &stored in &pending_retractions {
            check_time(stored, "retracted session start")?;
        }
        let idx = s as usize;
        if idx >= self.series.len() {
            self.series.resize_with(idx + 1, SeriesSessions::default);
        }
        self.live_sessions += sessions.len();
        let ss = &mut self.series[idx];
        ss.sessions = sessions
            .into_iter()
            .map(|x| Session {
                start: x.start,
                end: x.end,
                acc: Acc::from_snapshot(x.acc, agents),
                emitted: x.emitted,
                revision: x.revision,
                changed: x.changed,
            })
            .collect();
        ss.retract = pending_retractions;
        if dirty {
            ss.dirty = true;
            self.dirty.push(s);
        }
        if let Some(at) = next_timer {
            self.schedule(s, at);
        }
        Ok(())
    }
}

//! `PaneWindows`: state of tumbling and sliding windows, built from panes.
//!
//! Role: every series keeps one accumulator per pane of `gcd(size, slide)`; a window is the
//! merge of its `size / pane` panes, so a record is stored once however many windows overlap
//! it (tumbling is the case pane = slide = size). Windows share boundaries across series, so
//! firing walks an ordered pane index instead of per-series timers. Per record the window
//! set and the missed (past-lateness) windows follow from arithmetic alone. Touches the
//! series registry (keys, release) and the output only through `EmitCtx`.

use std::collections::BTreeMap;

use super::agents::AgentTable;
use super::config::gcd;
use super::dimension::{SeriesId, SeriesKey};
use super::output::Window;
use super::record::Value;
use super::shard::{EmitCtx, Placement, SeriesReaper};
use super::snapshot::{FiredWindow, PaneSnapshot, RestoreError, SeriesState, check_revision, check_time, invalid};
use super::stats::{Acc, LastKey, Stats};
use super::time::{Nanos, WATERMARK_NONE, align_down};

#[derive(Debug, Default, Clone)]
struct SeriesPanes {
    /// (pane start, accumulator), sorted by pane start.
    panes: Vec<(Nanos, Acc)>,
    /// (window start, next revision) of windows fired and not yet purged.
    fired: Vec<(Nanos, u32)>,
}

/// Tumbling/sliding window state for many series.
#[derive(Debug, Clone)]
pub(crate) struct PaneWindows {
    size: Nanos,
    slide: Nanos,
    offset: Nanos,
    pane: Nanos,
    lateness: Nanos,
    series: Vec<SeriesPanes>,
    /// Pane start → series holding that pane.
    index: BTreeMap<Nanos, Vec<SeriesId>>,
    /// (series, window start) of fired windows that received records this batch.
    dirty: Vec<(SeriesId, Nanos)>,
    pub(super) watermark: Nanos,
    live_panes: usize,
    pub(super) reaper: SeriesReaper,
    /// Reused buffer of (window start, series) due to fire.
    due: Vec<(Nanos, SeriesId)>,
}

impl PaneWindows {
    pub fn new(size: Nanos, slide: Nanos, offset: Nanos, lateness: Nanos, reaper: SeriesReaper) -> PaneWindows {
        PaneWindows {
            size,
            slide,
            offset,
            pane: gcd(size, slide),
            lateness,
            series: Vec::new(),
            index: BTreeMap::new(),
            dirty: Vec::new(),
            watermark: WATERMARK_NONE,
            live_panes: 0,
            reaper,
            due: Vec::new(),
        }
    }

    pub fn watermark(&self) -> Nanos {
        self.watermark
    }

    /// Live (series, pane) accumulators.
    pub fn state_size(&self) -> usize {
        self.live_panes
    }

    /// Start of the latest window containing `t`; earlier windows start `slide` apart.
    #[inline]
    fn last_window_start(&self, t: Nanos) -> Nanos {
        align_down(t, self.offset, self.slide)
    }

    /// Starts of the windows holding instant `t`, newest first.
    #[inline]
    fn window_starts(&self, t: Nanos) -> impl Iterator<Item = Nanos> + use<> {
        let (size, slide, last) = (self.size, self.slide, self.last_window_start(t));
        (0..).map(move |k| last - k * slide).take_while(move |start| start + size > t)
    }

    /// How many windows contain `t`, and how many of them are past their allowed lateness.
    #[inline]
    pub fn placement(&self, t: Nanos) -> Placement {
        let last = self.last_window_start(t);
        // Windows start at last, last - slide, … while start + size > t.
        let windows = ((last + self.size - t + self.slide - 1) / self.slide) as u32;
        if t + self.lateness >= self.watermark {
            return Placement { windows, missed: 0 };
        }
        let missed =
            self.window_starts(t).filter(|start| start + self.size + self.lateness <= self.watermark).count() as u32;
        Placement { windows, missed }
    }

    /// Adds an accepted record to series `s`.
    #[inline]
    pub fn add(&mut self, s: SeriesId, t: Nanos, value: Value, key: LastKey, agents: &AgentTable) {
        let idx = s as usize;
        if idx >= self.series.len() {
            self.series.resize_with(idx + 1, SeriesPanes::default);
        }
        let pane_start = align_down(t, self.offset, self.pane);
        let panes = &mut self.series[idx].panes;
        match panes.iter().rposition(|(start, _)| *start <= pane_start) {
            Some(pos) if panes[pos].0 == pane_start => panes[pos].1.add(value, key, agents),
            found => {
                let at = found.map_or(0, |p| p + 1);
                panes.insert(at, (pane_start, Acc::new(value, key)));
                self.index.entry(pane_start).or_default().push(s);
                self.live_panes += 1;
            }
        }
        if t < self.watermark {
            // Some window holding t may have fired already: re-fire it as a correction.
            let (size, lateness, wm) = (self.size, self.lateness, self.watermark);
            for start in self.window_starts(t) {
                if start + size <= wm && start + size + lateness > wm {
                    self.dirty.push((s, start));
                }
            }
        }
    }

    fn window_stats(&self, s: SeriesId, start: Nanos, agents: &AgentTable) -> Option<Stats> {
        let panes = &self.series.get(s as usize)?.panes;
        let end = start + self.size;
        let from = panes.partition_point(|(p, _)| *p < start);
        let mut inside = panes[from..].iter().take_while(|(p, _)| *p < end).map(|(_, acc)| acc);
        let first = inside.next()?;
        match inside.next() {
            None => Some(first.to_stats(agents)),
            Some(second) => {
                let mut acc = first.clone();
                acc.merge(second, agents);
                inside.for_each(|a| acc.merge(a, agents));
                Some(acc.to_stats(agents))
            }
        }
    }

    /// Emits (series, window) with its next revision.
    fn fire(&mut self, s: SeriesId, start: Nanos, ctx: &mut EmitCtx<'_>) {
        let Some(stats) = self.window_stats(s, start, ctx.agents) else { return };
        let fired = &mut self.series[s as usize].fired;
        let revision = match fired.iter_mut().find(|(w, _)| *w == start) {
            Some((_, next)) => {
                let r = *next;
                *next += 1;
                r
            }
            None => {
                fired.push((start, 1));
                0
            }
        };
        ctx.emit(s, Window { start, end: start + self.size }, stats, revision);
    }

    /// Ends a batch and moves to watermark `wm`: emits corrections for fired windows that
    /// received records, fires windows whose end the watermark passed, and frees state past
    /// the allowed lateness.
    pub fn advance(&mut self, wm: Nanos, ctx: &mut EmitCtx<'_>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &(s, start) in &dirty {
            self.fire(s, start, ctx);
        }
        dirty.clear();
        self.dirty = dirty;

        let old = self.watermark;
        if wm <= old {
            return;
        }
        self.watermark = wm;

        // Windows ending in (old, wm] cover panes starting in (old - size, wm).
        let mut due = std::mem::take(&mut self.due);
        let lo = old.saturating_sub(self.size).saturating_add(1);
        for (&pane_start, holders) in self.index.range(lo..wm) {
            // A pane lies inside exactly the windows that hold its first instant.
            for start in self.window_starts(pane_start) {
                let end = start + self.size;
                if end > old && end <= wm {
                    due.extend(holders.iter().map(|&s| (start, s)));
                }
            }
        }
        if self.slide != self.size {
            // Overlapping windows: a series holding several panes of a window is due once.
            due.sort_unstable();
            due.dedup();
        }
        for &(start, s) in &due {
            self.fire(s, start, ctx);
        }
        due.clear();
        self.due = due;
        self.purge(wm, ctx);
    }

    /// Frees panes whose every window is past its allowed lateness.
    fn purge(&mut self, wm: Nanos, ctx: &mut EmitCtx<'_>) {
        let mut touched: Vec<SeriesId> = Vec::new();
        while let Some((&pane_start, _)) = self.index.first_key_value() {
            let last_end = self.last_window_start(pane_start) + self.size;
            if last_end + self.lateness > wm {
                break;
            }
            for s in self.index.pop_first().map(|(_, v)| v).unwrap_or_default() {
                let sp = &mut self.series[s as usize];
                if let Some(pos) = sp.panes.iter().position(|(p, _)| *p == pane_start) {
                    sp.panes.remove(pos);
                    self.live_panes -= 1;
                }
                touched.push(s);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for s in touched {
            let sp = &mut self.series[s as usize];
            let (size, lateness) = (self.size, self.lateness);
            sp.fired.retain(|(start, _)| start + size + lateness > wm);
            if sp.panes.is_empty() {
                sp.fired.clear();
                self.reaper.emptied(s, wm, ctx.registry);
            }
        }
        let series = &self.series;
        self.reaper.reap(wm, ctx, |s| series.get(s as usize).is_none_or(|sp| sp.panes.is_empty()));
    }

    /// See [`WindowShard::snapshot_states`](super::shard::WindowShard::snapshot_states).
    pub fn snapshot_states(&self, agents: &AgentTable) -> Vec<(SeriesId, SeriesState)> {
        let mut pending = self.dirty.clone();
        pending.sort_unstable();
        pending.dedup();
        let mut pending = pending.into_iter().peekable();
        let mut out = Vec::new();
        for (id, sp) in self.series.iter().enumerate() {
            let id = id as SeriesId;
            let mut corrections = Vec::new();
            while let Some((_, start)) = pending.next_if(|(s, _)| *s == id) {
                corrections.push(start);
            }
            if sp.panes.is_empty() && sp.fired.is_empty() && corrections.is_empty() {
                continue;
            }
            let panes = sp
                .panes
                .iter()
                .map(|(start, acc)| PaneSnapshot { start: *start, acc: acc.to_snapshot(agents) })
                .collect();
            let fired = sp.fired.iter().map(|&(start, next_revision)| FiredWindow { start, next_revision }).collect();
            out.push((id, SeriesState::Panes { panes, fired, pending_corrections: corrections }));
        }
        out
    }

    /// Restores series `s` (a fresh id) from its snapshot, checking what the state relies on:
    /// panes ascending and on the pane grid, windows on the window grid, times in range.
    pub fn restore_series(
        &mut self,
        s: SeriesId,
        key: &SeriesKey,
        panes: Vec<PaneSnapshot>,
        fired: Vec<FiredWindow>,
        pending_corrections: Vec<Nanos>,
        agents: &mut AgentTable,
    ) -> Result<(), RestoreError> {
        for p in &panes {
            check_time(p.start, "pane start")?;
            p.acc.check(key)?;
            if align_down(p.start, self.offset, self.pane) != p.start {
                return Err(invalid(key, format_args!("pane start {} off the pane grid", p.start)));
            }
        }
        if !panes.is_sorted_by(|a, b| a.start < b.start) {
            return Err(invalid(key, "panes not in ascending order"));
        }
        for f in &fired {
            check_revision(key, f.next_revision)?;
        }
        for &start in fired.iter().map(|f| &f.start).chain(&pending_corrections) {
            check_time(start, "window start")?;
            if self.last_window_start(start) != start {
                return Err(invalid(key, format_args!("window start {start} off the window grid")));
            }
        }
        let idx = s as usize;
        if idx >= self.series.len() {
            self.series.resize_with(idx + 1, SeriesPanes::default);
        }
        let sp = &mut self.series[idx];
        sp.panes = panes.into_iter().map(|p| (p.start, Acc::from_snapshot(p.acc, agents))).collect();
        sp.fired = fired.into_iter().map(|f| (f.start, f.next_revision)).collect();
        for &(start, _) in &sp.panes {
            self.index.entry(start).or_default().push(s);
        }
        self.live_panes += sp.panes.len();
        self.dirty.extend(pending_corrections.into_iter().map(|start| (s, start)));
        Ok(())
    }
}

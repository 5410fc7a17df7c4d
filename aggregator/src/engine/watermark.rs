//! `WatermarkTracker`: event-time progress from many inputs (Kafka partitions or agents).
//!
//! Role: each input's watermark is its greatest valid event time minus the bounded
//! out-of-orderness. The global watermark is the minimum over active inputs; an input silent
//! (in processing time) for longer than the idle timeout stops holding it back, and when every
//! input is idle the watermark moves to the greatest input watermark (all they sent is in).
//! An input that speaks again rejoins and holds the watermark until it catches up. The global
//! watermark never goes backwards. Pure: processing time is passed in. Touches nothing else.

use hashbrown::HashMap;

use super::snapshot::{InputSnapshot, RestoreError};
use super::time::{MAX_EVENT_TIME, MIN_EVENT_TIME, Nanos, WATERMARK_NONE};

#[derive(Debug, Clone)]
struct InputState {
    /// Greatest valid event time seen; `WATERMARK_NONE` before the first.
    max_event: Nanos,
    /// Processing time of the input's latest batch.
    last_active: Nanos,
}

/// The state of one input, as reported by [`WatermarkTracker::inputs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputStatus {
    /// The input's name.
    pub input: String,
    /// Its own watermark (`None` before its first valid record).
    pub watermark: Option<Nanos>,
    /// Whether it is currently idle.
    pub idle: bool,
}

/// Tracks the global event-time watermark over many inputs.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    out_of_orderness: Nanos,
    idle_timeout: Option<Nanos>,
    inputs: HashMap<Box<str>, InputState>,
    current: Nanos,
}

impl WatermarkTracker {
    /// A tracker with no inputs and no watermark yet.
    pub fn new(out_of_orderness: Nanos, idle_timeout: Option<Nanos>) -> WatermarkTracker {
        WatermarkTracker { out_of_orderness, idle_timeout, inputs: HashMap::new(), current: WATERMARK_NONE }
    }

    /// Records that `input` delivered a batch at processing time `now` whose greatest valid
    /// event time is `max_event` (`None`: no valid record in it — still counts as activity).
    pub fn observe(&mut self, input: &str, max_event: Option<Nanos>, now: Nanos) {
        let state = match self.inputs.get_mut(input) {
            Some(s) => s,
            None => {
                self.inputs.entry(input.into()).or_insert(InputState { max_event: WATERMARK_NONE, last_active: now })
            }
        };
        state.last_active = state.last_active.max(now);
        if let Some(t) = max_event {
            state.max_event = state.max_event.max(t);
        }
    }

    fn is_idle(&self, state: &InputState, now: Nanos) -> bool {
        self.idle_timeout.is_some_and(|timeout| now.saturating_sub(state.last_active) > timeout)
    }

    fn input_watermark(&self, state: &InputState) -> Option<Nanos> {
        (state.max_event != WATERMARK_NONE).then(|| state.max_event - self.out_of_orderness)
    }

    /// Recomputes the global watermark at processing time `now` and returns it.
    pub fn advance(&mut self, now: Nanos) -> Nanos {
        let mut active_min: Option<Nanos> = None;
        let mut all_max: Option<Nanos> = None;
        for state in self.inputs.values() {
            let Some(wm) = self.input_watermark(state) else { continue };
            all_max = Some(all_max.map_or(wm, |m| m.max(wm)));
            if !self.is_idle(state, now) {
                active_min = Some(active_min.map_or(wm, |m| m.min(wm)));
            }
        }
        if let Some(candidate) = active_min.or(all_max) {
            self.current = self.current.max(candidate);
        }
        self.current
    }

    /// The global watermark as of the last [`advance`](Self::advance).
    pub fn current(&self) -> Nanos {
        self.current
    }

    /// Forces the watermark forward (never backward), e.g. at end of input.
    pub fn force(&mut self, watermark: Nanos) {
        self.current = self.current.max(watermark);
    }

    /// Every input's state (sorted by name) for a snapshot.
    pub fn snapshot(&self) -> Vec<InputSnapshot> {
        let mut v: Vec<InputSnapshot> = self
            .inputs
            .iter()
            .map(|(name, s)| InputSnapshot {
                input: name.to_string(),
                max_event: s.max_event,
                last_active: s.last_active,
            })
            .collect();
        v.sort_unstable_by(|a, b| a.input.cmp(&b.input));
        v
    }

    /// A tracker holding `inputs` (from [`snapshot`](Self::snapshot)) and watermark `current`,
    /// restored at processing time `now`: every input's last activity becomes `now` — a
    /// restart counts as activity, so no input is declared idle for the time the engine was
    /// down (its data may still be on its way).
    pub fn restore(
        out_of_orderness: Nanos,
        idle_timeout: Option<Nanos>,
        inputs: Vec<InputSnapshot>,
        current: Nanos,
        now: Nanos,
    ) -> Result<WatermarkTracker, RestoreError> {
        let mut t = WatermarkTracker::new(out_of_orderness, idle_timeout);
        t.current = current;
        for i in inputs {
            if i.max_event != WATERMARK_NONE && !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&i.max_event) {
                return Err(RestoreError::Invalid(format!(
                    "input {:?}: event time {} out of range",
                    i.input, i.max_event
                )));
            }
            let state = InputState { max_event: i.max_event, last_active: now };
            if t.inputs.insert(i.input.as_str().into(), state).is_some() {
                return Err(RestoreError::Invalid(format!("input {:?} listed twice", i.input)));
            }
        }
        Ok(t)
    }

    /// Every input's state at processing time `now`, sorted by name.
    pub fn inputs(&self, now: Nanos) -> Vec<InputStatus> {
        let mut v: Vec<_> = self
            .inputs
            .iter()
            .map(|(name, s)| InputStatus {
                input: name.to_string(),
                watermark: self.input_watermark(s),
                idle: self.is_idle(s, now),
            })
            .collect();
        v.sort_by(|a, b| a.input.cmp(&b.input));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_inputs() {
        let mut t = WatermarkTracker::new(5, Some(100));
        assert_eq!(t.advance(0), WATERMARK_NONE);
        t.observe("a", Some(50), 0);
        t.observe("b", Some(30), 0);
        assert_eq!(t.advance(0), 25);
        t.observe("b", Some(80), 1);
        assert_eq!(t.advance(1), 45);
    }

    #[test]
    fn idle_input_stops_holding_and_rejoins_without_regress() {
        let mut t = WatermarkTracker::new(0, Some(10));
        t.observe("fast", Some(100), 0);
        t.observe("slow", Some(20), 0);
        assert_eq!(t.advance(0), 20);
        t.observe("fast", Some(200), 11);
        assert_eq!(t.advance(11), 200, "slow idle for 11 > 10");
        t.observe("slow", Some(150), 12);
        assert_eq!(t.advance(12), 200, "rejoining input never pulls the watermark back");
        t.observe("fast", Some(300), 13);
        assert_eq!(t.advance(13), 200, "…but holds it until it catches up");
        t.observe("slow", Some(250), 14);
        assert_eq!(t.advance(14), 250);
    }

    #[test]
    fn all_idle_moves_to_greatest_input_watermark() {
        let mut t = WatermarkTracker::new(0, Some(10));
        t.observe("a", Some(100), 0);
        t.observe("b", Some(40), 0);
        assert_eq!(t.advance(5), 40);
        assert_eq!(t.advance(11), 100);
    }

    #[test]
    fn inputs_without_valid_records_do_not_hold() {
        let mut t = WatermarkTracker::new(0, None);
        t.observe("a", Some(100), 0);
        t.observe("silent", None, 0);
        assert_eq!(t.advance(0), 100);
        let status = t.inputs(0);
        assert_eq!(status[1], InputStatus { input: "silent".into(), watermark: None, idle: false });
    }
}

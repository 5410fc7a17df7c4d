//! `BatchDeduper`: recognises re-sent batches by (agent id, sequence number).
//!
//! Role: an agent that retries a batch must never be counted twice. Per agent it keeps the
//! highest sequence below which every batch was seen plus the set of sequences seen above
//! it, so batches may arrive out of order. Sequence 0 means "unsequenced" and is never
//! treated as a duplicate. If an agent leaves more than `max_pending` gaps open, the oldest
//! gaps are given up on (counted), which bounds memory. Touches nothing else.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use super::snapshot::{AgentSequences, RestoreError};

#[derive(Debug, Clone, Default)]
struct SeqWindow {
    /// Every sequence in 1..=contiguous was seen.
    contiguous: u64,
    /// Sequences seen above `contiguous + 1`.
    above: BTreeSet<u64>,
}

/// Remembers which batches each agent already delivered.
#[derive(Debug, Clone)]
pub struct BatchDeduper {
    agents: HashMap<Box<str>, SeqWindow>,
    max_pending: usize,
    gaps_abandoned: u64,
}

impl BatchDeduper {
    /// A deduper keeping at most `max_pending` out-of-order sequences per agent.
    pub fn new(max_pending: usize) -> BatchDeduper {
        BatchDeduper { agents: HashMap::new(), max_pending: max_pending.max(1), gaps_abandoned: 0 }
    }

    /// Marks (agent, sequence) as delivered; `true` the first time, `false` for a duplicate.
    pub fn first_delivery(&mut self, agent: &str, sequence: u64) -> bool {
        if sequence == 0 {
            return true;
        }
        let w = match self.agents.get_mut(agent) {
            Some(w) => w,
            None => self.agents.entry(agent.into()).or_default(),
        };
        if sequence <= w.contiguous || !w.above.insert(sequence) {
            return false;
        }
        while w.above.first() == Some(&(w.contiguous + 1)) {
            w.above.pop_first();
            w.contiguous += 1;
        }
        while w.above.len() > self.max_pending {
            if let Some(lowest) = w.above.pop_first() {
                self.gaps_abandoned += lowest - w.contiguous - 1;
                w.contiguous = lowest;
            }
            while w.above.first() == Some(&(w.contiguous + 1)) {
                w.above.pop_first();
                w.contiguous += 1;
            }
        }
        true
    }

    /// Sequence numbers given up on because an agent left too many gaps open.
    pub fn gaps_abandoned(&self) -> u64 {
        self.gaps_abandoned
    }

    /// The remembered sequences per agent (sorted by agent) for a snapshot.
    pub fn snapshot(&self) -> Vec<AgentSequences> {
        let mut agents: Vec<AgentSequences> = self
            .agents
            .iter()
            .map(|(agent, w)| AgentSequences {
                agent: agent.to_string(),
                contiguous: w.contiguous,
                above: w.above.iter().copied().collect(),
            })
            .collect();
        agents.sort_unstable_by(|a, b| a.agent.cmp(&b.agent));
        agents
    }

    /// A deduper keeping at most `max_pending` out-of-order sequences per agent, remembering
    /// `agents` (from [`snapshot`](Self::snapshot)).
    pub fn restore(
        max_pending: usize,
        agents: Vec<AgentSequences>,
        gaps_abandoned: u64,
    ) -> Result<BatchDeduper, RestoreError> {
        let mut d = BatchDeduper::new(max_pending);
        d.gaps_abandoned = gaps_abandoned;
        for a in agents {
            let bad = |why: &str| RestoreError::Invalid(format!("deduper state of agent {:?}: {why}", a.agent));
            // `above` holds sequences past a gap: each > contiguous + 1, ascending, bounded.
            let past_gap = a.above.first().is_none_or(|&first| first > a.contiguous.saturating_add(1))
                && a.above.is_sorted_by(|x, y| x < y);
            if !past_gap || a.above.len() > d.max_pending {
                return Err(bad("sequences out of order or beyond the bound"));
            }
            let window = SeqWindow { contiguous: a.contiguous, above: a.above.iter().copied().collect() };
            if d.agents.insert(a.agent.as_str().into(), window).is_some() {
                return Err(bad("listed twice"));
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_out_of_order_batches() {
        let mut d = BatchDeduper::new(16);
        assert!(d.first_delivery("a", 1));
        assert!(d.first_delivery("a", 3));
        assert!(!d.first_delivery("a", 1));
        assert!(!d.first_delivery("a", 3));
        assert!(d.first_delivery("a", 2));
        assert!(!d.first_delivery("a", 2));
        assert!(d.first_delivery("b", 2), "agents are independent");
        assert!(d.first_delivery("a", 0) && d.first_delivery("a", 0), "unsequenced batches always pass");
    }

    #[test]
    fn bounded_gaps() {
        let mut d = BatchDeduper::new(2);
        for s in [5, 6, 7] {
            assert!(d.first_delivery("a", s));
        }
        assert_eq!(d.gaps_abandoned(), 4, "1..=4 given up on");
        assert!(!d.first_delivery("a", 3));
        assert!(d.first_delivery("a", 8));
    }
}

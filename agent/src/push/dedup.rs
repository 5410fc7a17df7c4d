//! Recognises batches an application re-sends to the agent's gRPC push API.
//!
//! Role: an application that lost an ack re-sends the batch with the same (agent id, sequence);
//! the agent must not enqueue its records twice. [`PushDeduper`] remembers, per pusher id, the
//! highest sequence below which all were seen plus the out-of-order ones above it (bounded, like
//! the aggregator's deduper), for at most `max_pushers` ids (the least recently used is
//! forgotten beyond that). Sequence 0 means "unsequenced" and is never deduplicated. Memory only:
//! an agent restart forgets. Touches nothing.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
struct Window {
    contiguous: u64,
    above: BTreeSet<u64>,
    last_used: u64,
}

/// Seen (pusher id, sequence) pairs.
#[derive(Debug)]
pub struct PushDeduper {
    pushers: HashMap<String, Window>,
    max_pushers: usize,
    max_pending: usize,
    clock: u64,
}

impl Default for PushDeduper {
    fn default() -> Self {
        PushDeduper::new(4096, 4096)
    }
}

impl PushDeduper {
    /// A deduper for at most `max_pushers` ids, each with at most `max_pending` out-of-order
    /// sequences remembered.
    pub fn new(max_pushers: usize, max_pending: usize) -> PushDeduper {
        PushDeduper {
            pushers: HashMap::new(),
            max_pushers: max_pushers.max(1),
            max_pending: max_pending.max(1),
            clock: 0,
        }
    }

    /// Whether (pusher, sequence) was already marked.
    pub fn seen(&self, pusher: &str, sequence: u64) -> bool {
        if sequence == 0 {
            return false;
        }
        self.pushers.get(pusher).is_some_and(|w| sequence <= w.contiguous || w.above.contains(&sequence))
    }

    /// Marks (pusher, sequence) as enqueued.
    pub fn mark(&mut self, pusher: &str, sequence: u64) {
        if sequence == 0 {
            return;
        }
        self.clock += 1;
        if !self.pushers.contains_key(pusher) && self.pushers.len() >= self.max_pushers {
            let oldest = self.pushers.iter().min_by_key(|(_, w)| w.last_used).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.pushers.remove(&k);
            }
        }
        let w = self.pushers.entry(pusher.to_owned()).or_default();
        w.last_used = self.clock;
        if sequence <= w.contiguous || !w.above.insert(sequence) {
            return;
        }
        let advance = |w: &mut Window| {
            while w.above.first() == Some(&(w.contiguous + 1)) {
                w.above.pop_first();
                w.contiguous += 1;
            }
        };
        advance(w);
        while w.above.len() > self.max_pending {
            if let Some(lowest) = w.above.pop_first() {
                w.contiguous = lowest;
            }
            advance(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_in_and_out_of_order_sequences() {
        let mut d = PushDeduper::new(10, 10);
        assert!(!d.seen("app", 1));
        d.mark("app", 1);
        d.mark("app", 3);
        assert!(d.seen("app", 1) && d.seen("app", 3));
        assert!(!d.seen("app", 2) && !d.seen("other", 1));
        d.mark("app", 2);
        assert!(d.seen("app", 2));
        d.mark("app", 0);
        assert!(!d.seen("app", 0), "unsequenced batches are never duplicates");
    }

    #[test]
    fn bounded_memory() {
        let mut d = PushDeduper::new(2, 3);
        for s in [10, 20, 30, 40] {
            d.mark("a", s);
        }
        assert!(d.seen("a", 10), "gap below the oldest pending is given up");
        d.mark("b", 1);
        d.mark("a", 41);
        d.mark("c", 1); // evicts b, the least recently used
        assert!(!d.seen("b", 1));
        assert!(d.seen("a", 41) && d.seen("c", 1));
    }
}

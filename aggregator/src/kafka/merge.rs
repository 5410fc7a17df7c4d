//! `PartitionMerge`: the order in which the Kafka source hands messages to the engine.
//!
//! Role: keeps the messages fetched from each assigned partition in a per-partition buffer and
//! releases them one at a time in (message timestamp, partition) order — a k-way merge — so a
//! replay of the same log after a crash interleaves partitions the same way, whatever order the
//! fetches arrived in, and the engine (whose processing time is the message timestamp) decides
//! the same. A message with timestamp `t` leaves only when every other partition either has
//! something buffered or is known to have had nothing more at some time `≥ t` (its
//! end-of-partition event or a high-watermark check, stamped with the wall clock): a partition
//! that was caught up a while ago may have received older messages since, not fetched yet.
//! A partition that holds the merge does so for at most `merge_wait` per episode. Buffers
//! beyond `max_buffered` ask for the partition to be paused (nothing fetched is ever dropped)
//! and resumed once half drained. Pure, apart from the times it is given.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::engine::Nanos;

/// A message fetched from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (producer create time or broker append time), in ns since the epoch.
    pub timestamp: Nanos,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct PartitionBuffer {
    queue: VecDeque<Fetched>,
    /// The partition was known to have nothing beyond the last fetched message at this wall
    /// time (ns); `None` since the last fetch.
    caught_up_at: Option<Nanos>,
    paused: bool,
}

/// Per-partition buffers merged in timestamp order.
#[derive(Debug)]
pub struct PartitionMerge {
    partitions: BTreeMap<i32, PartitionBuffer>,
    max_buffered: usize,
    merge_wait: Duration,
    blocked_since: Option<Instant>,
    /// The current wait episode expired: release without the lagging partitions.
    expired: bool,
    waits_expired: u64,
}

impl PartitionMerge {
    /// A merge pausing partitions beyond `max_buffered` messages and waiting at most
    /// `merge_wait` for a partition that is behind but has nothing buffered.
    pub fn new(max_buffered: usize, merge_wait: Duration) -> PartitionMerge {
        PartitionMerge {
            partitions: BTreeMap::new(),
            max_buffered: max_buffered.max(1),
            merge_wait,
            blocked_since: None,
            expired: false,
            waits_expired: 0,
        }
    }

    /// Starts tracking `partition` (assigned): it holds the merge until its first fetch or
    /// end-of-partition event.
    pub fn assign(&mut self, partition: i32) {
        self.partitions.entry(partition).or_default();
    }

    /// Stops tracking `partition` (revoked), dropping what was buffered: those messages were
    /// not processed, so the next owner reads them again from the checkpointed offset.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The partitions tracked.
    pub fn assigned(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// Adds a fetched message of `partition`.
    pub fn push(&mut self, partition: i32, message: Fetched) {
        let p = self.partitions.entry(partition).or_default();
        p.queue.push_back(message);
        p.caught_up_at = None;
    }

    /// `partition` had nothing beyond its last fetched message at wall time `at` (ns): with
    /// nothing buffered it does not hold back messages with timestamps up to `at`.
    pub fn end_of_partition(&mut self, partition: i32, at: Nanos) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.caught_up_at = Some(p.caught_up_at.map_or(at, |t| t.max(at)));
        }
    }

    /// True when partitions are assigned, every one is caught up and nothing is buffered (the
    /// source is at the head of the log: processing time may follow the wall clock).
    pub fn all_caught_up(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.values().all(|p| p.caught_up_at.is_some() && p.queue.is_empty())
    }

    /// Messages buffered over all partitions.
    pub fn buffered(&self) -> usize {
        self.partitions.values().map(|p| p.queue.len()).sum()
    }

    /// How many times the merge stopped waiting for a lagging partition.
    pub fn waits_expired(&self) -> u64 {
        self.waits_expired
    }

    /// The next message to process at `now`, if the merge may release one.
    ///
    /// Once the wait for the lagging partitions has expired, the merge goes on without them
    /// (one expiry per episode) until they deliver or catch up.
    pub fn next(&mut self, now: Instant) -> Option<(i32, Fetched)> {
        let mut best: Option<(Nanos, i32)> = None;
        for (&partition, p) in &self.partitions {
            if let Some(head) = p.queue.front()
                && best.is_none_or(|(ts, _)| head.timestamp < ts)
            {
                best = Some((head.timestamp, partition));
            }
        }
        let Some((t, partition)) = best else {
            self.blocked_since = None;
            self.expired = false;
            return None;
        };
        let blocked = self.partitions.values().any(|p| p.queue.is_empty() && p.caught_up_at.is_none_or(|at| at < t));
        if !blocked {
            self.blocked_since = None;
            self.expired = false;
        } else if !self.expired {
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) < self.merge_wait {
                return None;
            }
            self.expired = true;
            self.waits_expired += 1;
        }
        let message = self.partitions.get_mut(&partition)?.queue.pop_front()?;
        Some((partition, message))
    }

    /// Partitions with nothing buffered (their caught-up time may need refreshing).
    pub fn idle(&self) -> Vec<i32> {
        self.partitions.iter().filter(|(_, p)| p.queue.is_empty()).map(|(&k, _)| k).collect()
    }

    /// Partitions with nothing buffered and not known to be caught up since their last fetch.
    pub fn lagging(&self) -> Vec<i32> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.queue.is_empty() && p.caught_up_at.is_none())
            .map(|(&k, _)| k)
            .collect()
    }

    /// Partitions to pause now (buffers full), marking them paused.
    pub fn to_pause(&mut self) -> Vec<i32> {
        let max = self.max_buffered;
        self.partitions
            .iter_mut()
            .filter(|(_, p)| !p.paused && p.queue.len() >= max)
            .map(|(&k, p)| {
                p.paused = true;
                k
            })
            .collect()
    }

    /// Partitions to resume now (buffers half drained), marking them running.
    pub fn to_resume(&mut self) -> Vec<i32> {
        let low = self.max_buffered / 2;
        self.partitions
            .iter_mut()
            .filter(|(_, p)| p.paused && p.queue.len() <= low)
            .map(|(&k, p)| {
                p.paused = false;
                k
            })
            .collect()
    }

    /// Partitions currently paused.
    pub fn paused(&self) -> usize {
        self.partitions.values().filter(|p| p.paused).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64, timestamp: Nanos) -> Fetched {
        Fetched { offset, timestamp, key: None, payload: None }
    }

    #[test]
    fn releases_in_timestamp_order_whatever_the_fetch_order() {
        let t = Instant::now();
        let mut a = PartitionMerge::new(100, Duration::from_secs(1));
        let mut b = PartitionMerge::new(100, Duration::from_secs(1));
        for m in [&mut a, &mut b] {
            m.assign(0);
            m.assign(1);
        }
        // a: partition 0 fetched first; b: partition 1 first.
        for (p, o, ts) in [(0, 0, 10), (0, 1, 30), (1, 0, 20), (1, 1, 25)] {
            a.push(p, msg(o, ts));
        }
        for (p, o, ts) in [(1, 0, 20), (1, 1, 25), (0, 0, 10), (0, 1, 30)] {
            b.push(p, msg(o, ts));
        }
        for m in [&mut a, &mut b] {
            m.end_of_partition(0, 100);
            m.end_of_partition(1, 100);
        }
        let order =
            |m: &mut PartitionMerge| std::iter::from_fn(|| m.next(t)).map(|(p, f)| (p, f.offset)).collect::<Vec<_>>();
        let expected = vec![(0, 0), (1, 0), (1, 1), (0, 1)];
        assert_eq!(order(&mut a), expected);
        assert_eq!(order(&mut b), expected);
        assert!(a.all_caught_up());
    }

    #[test]
    fn a_lagging_partition_holds_the_merge_for_merge_wait_only() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut m = PartitionMerge::new(100, ms(500));
        m.assign(0);
        m.assign(1);
        m.push(0, msg(0, 10));
        assert_eq!(m.next(t), None, "partition 1 not fetched yet");
        assert_eq!(m.next(t + ms(499)), None);
        assert_eq!(m.next(t + ms(500)).map(|(p, _)| p), Some(0));
        assert_eq!(m.waits_expired(), 1);
        assert_eq!(m.lagging(), vec![0, 1], "0 drained, 1 never fetched");
        m.push(0, msg(1, 11));
        m.push(0, msg(2, 12));
        let next = m.next(t + ms(500)).map(|(_, f)| f.offset);
        assert_eq!(next, Some(1), "once expired, the merge goes on without waiting again");
        assert_eq!(m.waits_expired(), 1);
        m.end_of_partition(1, 50);
        assert_eq!(m.next(t + ms(501)).map(|(p, f)| (p, f.offset)), Some((0, 2)), "caught up: no wait");
        m.end_of_partition(0, 50);
        // A new episode: partition 1 delivers, drains and has not reported its end yet.
        m.push(1, msg(0, 13));
        assert_eq!(m.next(t + ms(502)).map(|(p, _)| p), Some(1));
        m.push(0, msg(3, 14));
        m.end_of_partition(0, 50);
        assert_eq!(m.next(t + ms(502)), None, "a new episode waits again");
        assert_eq!(m.next(t + ms(1002)).map(|(_, f)| f.offset), Some(3));
        assert_eq!(m.waits_expired(), 2);
    }

    #[test]
    fn a_partition_caught_up_before_a_message_was_produced_holds_it() {
        let t = Instant::now();
        let mut m = PartitionMerge::new(100, Duration::from_secs(10));
        m.assign(0);
        m.assign(1);
        // Both empty at wall time 100; then a burst: partition 0 fetched first.
        m.end_of_partition(0, 100);
        m.end_of_partition(1, 100);
        m.push(0, msg(0, 150));
        assert_eq!(m.next(t), None, "1 may hold messages produced after 100, not fetched yet");
        m.push(1, msg(0, 140));
        assert_eq!(m.next(t).map(|(p, _)| p), Some(1), "older message first");
        m.end_of_partition(1, 200);
        assert_eq!(m.next(t).map(|(p, _)| p), Some(0), "1 known empty at 200 ≥ 150");
        // Backlog: messages older than the last caught-up time pass at once.
        m.push(0, msg(1, 120));
        assert_eq!(m.next(t).map(|(p, f)| (p, f.offset)), Some((0, 1)));
    }

    #[test]
    fn pauses_full_buffers_and_resumes_half_drained() {
        let t = Instant::now();
        let mut m = PartitionMerge::new(4, Duration::ZERO);
        m.assign(0);
        for o in 0..4 {
            m.push(0, msg(o, o));
        }
        assert_eq!(m.to_pause(), vec![0]);
        assert_eq!(m.to_pause(), Vec::<i32>::new(), "paused once");
        assert_eq!(m.paused(), 1);
        m.next(t);
        assert_eq!(m.to_resume(), Vec::<i32>::new(), "3 left > 2");
        m.next(t);
        assert_eq!(m.to_resume(), vec![0]);
        assert_eq!(m.buffered(), 2, "nothing fetched was dropped");
    }

    #[test]
    fn revoking_drops_the_buffer_and_stops_holding() {
        let t = Instant::now();
        let mut m = PartitionMerge::new(10, Duration::from_secs(60));
        m.assign(0);
        m.assign(1);
        m.push(0, msg(0, 5));
        assert_eq!(m.next(t), None);
        m.revoke(1);
        assert_eq!(m.next(t).map(|(p, _)| p), Some(0));
        assert_eq!(m.assigned().collect::<Vec<_>>(), vec![0]);
    }
}

//! Batching: records in, numbered `WireBatch`es out into a bounded queue.
//!
//! Role: [`Batcher`] collects records (encoded, `wire.rs`) into the open batch and closes it when it holds
//! `batch_max_records` records or when its first record is `batch_max_delay` old
//! ([`Batcher::run_timer`]), whichever comes first. A closed batch gets the agent id and the next
//! sequence number (`sequence.rs`) and goes into the **bounded queue** that the sender drains.
//!
//! Backpressure: queue slots are reserved *before* records are added, so a submission is all or
//! nothing. [`Batcher::try_submit`] fails at once with [`SubmitError::QueueFull`] (HTTP answers
//! 503, plugins drop and count their sample); [`Batcher::submit`] waits for room (gRPC pushes,
//! in-process pushes). Batches enter the queue in sequence order. [`Batcher::close`] (shutdown)
//! refuses further records, closes the open batch, stores the exact next sequence number and
//! releases the queue so the sender can finish. Touches the sequence state file only.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::metrics::{DropReason, Metrics};
use crate::sequence::{SequenceAllocator, SequenceError};
use crate::wire::{WireBatch, WireRecord};

/// Capacity a fresh open batch starts with (less when batches are smaller).
const OPEN_CAPACITY: usize = 4096;

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Close at this many records (at least 1).
    pub max_records: usize,
    /// Close when the first record is this old.
    pub max_delay: Duration,
}

/// Why records were not accepted. Nothing of the submission was enqueued in any case.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue has no room for the batches these records would close.
    #[error(
        "the agent's batch queue is full ({needed} batch slots needed, capacity {capacity}): \
         the aggregator is not keeping up or unreachable; retry later"
    )]
    QueueFull {
        /// Queue slots the submission needed.
        needed: usize,
        /// Queue capacity in batches.
        capacity: usize,
    },
    /// More records at once than the whole queue could hold.
    #[error(
        "{records} records at once would fill {needed} batches, more than the whole queue holds \
         ({capacity}); send them in smaller parts"
    )]
    TooLarge {
        /// Records submitted.
        records: usize,
        /// Batches they would close.
        needed: usize,
        /// Queue capacity in batches.
        capacity: usize,
    },
    /// The agent is shutting down.
    #[error("the agent is shutting down and accepts no more records")]
    Closed,
    /// Sequence numbers could not be reserved (state directory problem).
    #[error("cannot reserve batch sequence numbers: {0}")]
    Sequence(#[from] SequenceError),
}

struct State {
    open: Vec<WireRecord>,
    deadline: Option<Instant>,
    sequences: SequenceAllocator,
    queue: Option<mpsc::Sender<WireBatch>>,
}

/// Turns records into sequenced batches in a bounded queue. Shared by all producers.
pub struct Batcher {
    agent_id: String,
    limits: BatchLimits,
    capacity: usize,
    state: Mutex<State>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("agent_id", &self.agent_id).field("limits", &self.limits).finish()
    }
}

type Permits<'a> = mpsc::PermitIterator<'a, WireBatch>;

impl Batcher {
    /// A batcher feeding a new queue of `capacity` batches; returns the queue's receiving end.
    pub fn new(
        agent_id: String,
        limits: BatchLimits,
        capacity: usize,
        sequences: SequenceAllocator,
        metrics: Arc<Metrics>,
    ) -> (Batcher, mpsc::Receiver<WireBatch>) {
        let limits = BatchLimits { max_records: limits.max_records.max(1), max_delay: limits.max_delay };
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let state = State { open: Vec::new(), deadline: None, sequences, queue: Some(tx) };
        (Batcher { agent_id, limits, capacity, state: Mutex::new(state), wake: Notify::new(), metrics }, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue slots needed to add `n` records to an open batch of `open` records.
    fn closes(&self, open: usize, n: usize) -> usize {
        (open + n) / self.limits.max_records
    }

    /// Records in the open (not yet closed) batch.
    pub fn open_records(&self) -> usize {
        self.lock().open.len()
    }

    /// Adds `records` if the queue has room for every batch they close; never waits.
    ///
    /// # Errors
    /// [`SubmitError::QueueFull`], [`SubmitError::TooLarge`], [`SubmitError::Closed`] or
    /// [`SubmitError::Sequence`]; nothing was added then.
    pub fn try_submit(&self, records: Vec<WireRecord>) -> Result<(), SubmitError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let tx = st.queue.clone().ok_or(SubmitError::Closed)?;
        let needed = self.closes(st.open.len(), records.len());
        if needed > self.capacity {
            return Err(SubmitError::TooLarge { records: records.len(), needed, capacity: self.capacity });
        }
        let permits = if needed == 0 {
            None
        } else {
            Some(tx.try_reserve_many(needed).map_err(|e| match e {
                mpsc::error::TrySendError::Full(()) => SubmitError::QueueFull { needed, capacity: self.capacity },
                mpsc::error::TrySendError::Closed(()) => SubmitError::Closed,
            })?)
        };
        self.fill(&mut st, records, permits)
    }

    /// Adds `records`, waiting for queue room as long as needed. A submission larger than the
    /// whole queue is added in parts, each waiting for room (so if the agent shuts down in the
    /// middle, the first parts are in and the error says so).
    ///
    /// # Errors
    /// [`SubmitError::Closed`] or [`SubmitError::Sequence`].
    pub async fn submit(&self, mut records: Vec<WireRecord>) -> Result<(), SubmitError> {
        let part = self.limits.max_records.saturating_mul(self.capacity);
        while records.len() > part {
            let rest = records.split_off(part);
            self.submit_part(records).await?;
            records = rest;
        }
        self.submit_part(records).await
    }

    async fn submit_part(&self, records: Vec<WireRecord>) -> Result<(), SubmitError> {
        if records.is_empty() {
            return Ok(());
        }
        loop {
            let (tx, needed) = {
                let mut st = self.lock();
                let tx = st.queue.clone().ok_or(SubmitError::Closed)?;
                let needed = self.closes(st.open.len(), records.len());
                if needed == 0 {
                    return self.fill(&mut st, records, None);
                }
                match tx.try_reserve_many(needed) {
                    Ok(permits) => return self.fill(&mut st, records, Some(permits)),
                    Err(mpsc::error::TrySendError::Closed(())) => return Err(SubmitError::Closed),
                    Err(mpsc::error::TrySendError::Full(())) => {}
                }
                (tx, needed)
            };
            // Wait for room without holding the lock, then re-check with the slots in hand:
            // another producer may have grown the open batch meanwhile.
            let permits = tx.reserve_many(needed).await.map_err(|_| SubmitError::Closed)?;
            let mut st = self.lock();
            if st.queue.is_none() {
                return Err(SubmitError::Closed);
            }
            if self.closes(st.open.len(), records.len()) <= needed {
                return self.fill(&mut st, records, Some(permits));
            }
        }
    }

    /// Appends `records` to the open batch, closing full batches into the reserved slots.
    /// `permits` must hold at least `closes(open, records.len())` slots.
    fn fill(
        &self,
        st: &mut State,
        records: Vec<WireRecord>,
        mut permits: Option<Permits<'_>>,
    ) -> Result<(), SubmitError> {
        let n = records.len();
        let needed = self.closes(st.open.len(), n);
        let mut sequence = if needed > 0 { st.sequences.allocate(needed as u64)? } else { 0 };
        let max = self.limits.max_records;
        let mut rest = records.into_iter();
        loop {
            let room = max - st.open.len();
            st.open.extend(rest.by_ref().take(room));
            if st.open.len() < max {
                break;
            }
            let batch = self.take_open(st, sequence);
            sequence += 1;
            match permits.as_mut().and_then(Iterator::next) {
                Some(permit) => {
                    self.metrics.queue(batch.records.len(), true);
                    permit.send(batch);
                }
                None => self.metrics.drop_records(
                    DropReason::Internal,
                    batch.records.len(),
                    "batcher closed a batch without a reserved queue slot",
                ),
            }
        }
        if !st.open.is_empty() && st.deadline.is_none() {
            st.deadline = Some(Instant::now() + self.limits.max_delay);
            self.wake.notify_one();
        }
        Ok(())
    }

    fn take_open(&self, st: &mut State, sequence: u64) -> WireBatch {
        st.deadline = None;
        let records = std::mem::replace(&mut st.open, Vec::with_capacity(self.limits.max_records.min(OPEN_CAPACITY)));
        WireBatch { agent_id: self.agent_id.clone(), sequence, records }
    }

    /// Closes the open batch into `permit` (allocating its sequence number).
    fn close_into(&self, st: &mut State, permit: mpsc::Permit<'_, WireBatch>) -> Result<(), SequenceError> {
        let sequence = st.sequences.allocate(1)?;
        let batch = self.take_open(st, sequence);
        self.metrics.queue(batch.records.len(), true);
        permit.send(batch);
        Ok(())
    }

    /// Closes batches whose delay expired. Runs until [`Batcher::close`]; spawn it once.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            let deadline = {
                let st = self.lock();
                if st.queue.is_none() {
                    return;
                }
                st.deadline
            };
            match deadline {
                None => self.wake.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => self.close_expired().await,
                        () = self.wake.notified() => {}
                    }
                }
            }
        }
    }

    async fn close_expired(&self) {
        let tx = {
            let mut st = self.lock();
            let Some(tx) = st.queue.clone() else { return };
            if st.open.is_empty() || st.deadline.is_some_and(|d| d > Instant::now()) {
                return;
            }
            match tx.try_reserve() {
                Ok(permit) => {
                    self.close_or_retry(&mut st, permit);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(())) => return,
                Err(mpsc::error::TrySendError::Full(())) => {}
            }
            tx
        };
        // Queue full: the open batch keeps growing (up to max_records) while we wait for a slot.
        let Ok(permit) = tx.reserve().await else { return };
        let mut st = self.lock();
        if st.queue.is_some() && !st.open.is_empty() {
            self.close_or_retry(&mut st, permit);
        }
    }

    fn close_or_retry(&self, st: &mut State, permit: mpsc::Permit<'_, WireBatch>) {
        if let Err(e) = self.close_into(st, permit) {
            self.metrics.warn_limited("sequence", &format!("cannot close batch, will retry: {e}"));
            st.deadline = Some(Instant::now() + self.limits.max_delay);
        }
    }

    /// Shutdown: refuses further records, closes the open batch (waiting for a queue slot if
    /// needed), stores the exact next sequence number and releases the queue, so the sender
    /// stops once it has drained it. Idempotent.
    ///
    /// # Errors
    /// [`SequenceError`] if the open batch could not be numbered (its records stay counted in
    /// [`Batcher::open_records`]).
    pub async fn close(&self) -> Result<(), SequenceError> {
        let tx = {
            let mut st = self.lock();
            let Some(tx) = st.queue.take() else { return Ok(()) };
            tx
        };
        self.wake.notify_one();
        let permit = if self.open_records() > 0 { tx.reserve().await.ok() } else { None };
        let mut st = self.lock();
        let closed = match permit {
            Some(permit) if !st.open.is_empty() => self.close_into(&mut st, permit),
            _ => Ok(()),
        };
        let released = st.sequences.release();
        closed.and(released)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::double_record;
    use meshmon_proto::v1::Record;

    fn batcher(max: usize, delay_ms: u64, cap: usize) -> (Arc<Batcher>, mpsc::Receiver<WireBatch>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let seq = SequenceAllocator::open(dir.path()).unwrap();
        let limits = BatchLimits { max_records: max, max_delay: Duration::from_millis(delay_ms) };
        let (b, rx) = Batcher::new("agent-1".into(), limits, cap, seq, Arc::new(Metrics::new()));
        (Arc::new(b), rx, dir)
    }

    fn recs(range: std::ops::Range<u32>) -> Vec<WireRecord> {
        range
            .map(|i| double_record(format!("m{i}"), f64::from(i), meshmon_proto::nanos_to_timestamp(0)))
            .map(|r: Record| WireRecord::encode(&r))
            .collect()
    }

    fn names(b: &WireBatch) -> Vec<String> {
        b.records.iter().map(|r| r.decode().unwrap().metric).collect()
    }

    #[tokio::test]
    async fn closes_at_max_records_in_sequence_order() {
        let (b, mut rx, _dir) = batcher(3, 3_600_000, 10);
        b.try_submit(recs(0..2)).unwrap();
        assert!(rx.try_recv().is_err(), "2 of 3 records: still open");
        b.try_submit(recs(2..9)).unwrap();
        let got: Vec<WireBatch> = (0..3).map(|_| rx.try_recv().unwrap()).collect();
        assert_eq!(got.iter().map(|b| b.sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(names(&got[0]), vec!["m0", "m1", "m2"]);
        assert_eq!(names(&got[2]), vec!["m6", "m7", "m8"]);
        assert!(got.iter().all(|b| b.agent_id == "agent-1"));
        assert_eq!(b.open_records(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_max_delay() {
        let (b, mut rx, _dir) = batcher(1000, 500, 10);
        tokio::spawn(b.clone().run_timer());
        b.try_submit(recs(0..4)).unwrap();
        let start = Instant::now();
        let got = rx.recv().await.unwrap();
        assert_eq!(got.records.len(), 4);
        assert_eq!(got.sequence, 1);
        assert!(start.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", start.elapsed());
        // A later record opens a new batch with a fresh deadline.
        b.try_submit(recs(4..5)).unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!((got.sequence, names(&got)), (2, vec!["m4".to_owned()]));
    }

    #[tokio::test]
    async fn full_queue_refuses_whole_submission() {
        let (b, mut rx, _dir) = batcher(2, 3_600_000, 2);
        b.try_submit(recs(0..4)).unwrap(); // fills both slots
        b.try_submit(recs(4..5)).unwrap(); // open batch, no slot needed
        let e = b.try_submit(recs(5..8)).unwrap_err();
        assert!(matches!(e, SubmitError::QueueFull { needed: 2, capacity: 2 }), "{e}");
        assert_eq!(b.open_records(), 1, "nothing of the refused submission was added");
        let e = b.try_submit(recs(0..100)).unwrap_err();
        assert!(matches!(e, SubmitError::TooLarge { .. }), "{e}");
        rx.recv().await.unwrap();
        b.try_submit(recs(5..6)).unwrap(); // closes the open batch into the freed slot
        assert_eq!(names(&rx.recv().await.unwrap()), vec!["m2", "m3"]);
        let third = rx.recv().await.unwrap();
        assert_eq!((third.sequence, names(&third)), (3, vec!["m4".to_owned(), "m5".to_owned()]));
    }

    #[tokio::test]
    async fn submit_waits_for_room_and_splits_large_submissions() {
        let (b, mut rx, _dir) = batcher(2, 3_600_000, 2);
        let producer = {
            let b = b.clone();
            tokio::spawn(async move { b.submit(recs(0..11)).await })
        };
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let batch = rx.recv().await.unwrap();
            seen.push((batch.sequence, names(&batch)));
        }
        producer.await.unwrap().unwrap();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=5).collect::<Vec<u64>>());
        let all: Vec<String> = seen.iter().flat_map(|s| s.1.clone()).collect();
        assert_eq!(all, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
        assert_eq!(b.open_records(), 1);
    }

    #[tokio::test]
    async fn close_flushes_open_batch_and_refuses_more() {
        let (b, mut rx, dir) = batcher(10, 3_600_000, 4);
        b.try_submit(recs(0..3)).unwrap();
        b.close().await.unwrap();
        let last = rx.recv().await.unwrap();
        assert_eq!((last.sequence, last.records.len()), (1, 3));
        assert!(rx.recv().await.is_none(), "queue released: the sender sees the end");
        assert!(matches!(b.try_submit(recs(0..1)), Err(SubmitError::Closed)));
        assert!(matches!(b.submit(recs(0..1)).await, Err(SubmitError::Closed)));
        let stored = std::fs::read_to_string(dir.path().join(crate::sequence::FILE_NAME)).unwrap();
        assert_eq!(stored.trim(), "2", "exact next sequence stored on clean close");
    }
}

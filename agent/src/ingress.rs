//! The single entry point for records from any source (push APIs, plugins, in-process pushes).
//!
//! Role: [`Ingress`] checks records (`record.rs`), stamps the configured cluster, node and global
//! tags on them, hands them to the batcher in their protobuf encoding (`wire.rs`), and keeps the
//! `pushed` / `collected` / `refused` / `dropped` counters right whatever the outcome, so that no
//! path forgets to count. Plugins use [`Ingress::collect`] (a full queue drops and counts the
//! sample); pushers use [`Ingress::enqueue`] (waits) or [`Ingress::try_enqueue`] (refuses at
//! once). The gRPC push API never decodes records: [`Ingress::prepare_pushed`] checks and stamps
//! them on their encoding and [`Ingress::enqueue_wire`] enqueues them. Touches nothing but the
//! batcher and the metrics.

use std::sync::Arc;

use meshmon_proto::v1::Record;

use crate::batcher::{Batcher, SubmitError};
use crate::metrics::{DropReason, Metrics, PushApi};
use crate::record::{InvalidRecord, RecordDefaults, check, check_facts, now_timestamp};
use crate::wire::{PushedRecord, WireRecord, WireStamp};

/// Records that passed [`Ingress::prepare`], and the positions and reasons of those that did not.
pub type Prepared = (Vec<Record>, Vec<(usize, InvalidRecord)>);

/// Records that passed [`Ingress::prepare_pushed`] (stamped, ready to enqueue), and the positions
/// and reasons of those that did not.
pub type PreparedWire = (Vec<WireRecord>, Vec<(usize, InvalidRecord)>);

/// Checks, stamps, enqueues and counts records.
#[derive(Debug)]
pub struct Ingress {
    batcher: Arc<Batcher>,
    defaults: RecordDefaults,
    stamp: WireStamp,
    metrics: Arc<Metrics>,
}

impl Ingress {
    /// An ingress feeding `batcher`.
    pub fn new(batcher: Arc<Batcher>, defaults: RecordDefaults, metrics: Arc<Metrics>) -> Ingress {
        let stamp = WireStamp::new(&defaults);
        Ingress { batcher, defaults, stamp, metrics }
    }

    /// The metrics this ingress counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Splits `records` into countable ones (missing event times set to now) and refused ones
    /// (index in the input, reason). Refused records are counted as `dropped{reason="invalid"}`.
    pub fn prepare(&self, records: Vec<Record>) -> Prepared {
        let now = now_timestamp();
        let mut ok = Vec::with_capacity(records.len());
        let mut invalid = Vec::new();
        for (i, mut r) in records.into_iter().enumerate() {
            match check(&mut r, now) {
                Ok(()) => ok.push(r),
                Err(e) => invalid.push((i, e)),
            }
        }
        if let Some((i, e)) = invalid.first() {
            self.invalid(invalid.len(), &format!("refused pushed records (first: record {i}: {e})"));
        }
        (ok, invalid)
    }

    /// [`Ingress::prepare`] for records still in their encoding (gRPC pushes): refused ones are
    /// counted as `dropped{reason="invalid"}`; countable ones come back stamped (missing event
    /// time set to now, cluster, node and global tags added where missing).
    pub fn prepare_pushed(&self, records: Vec<PushedRecord>) -> PreparedWire {
        let mut stamper = self.stamp.batch(now_timestamp());
        let mut ok = Vec::with_capacity(records.len());
        let mut invalid = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            match check_facts(&r.facts) {
                Ok(()) => ok.push(stamper.stamp(r)),
                Err(e) => invalid.push((i, e)),
            }
        }
        if let Some((i, e)) = invalid.first() {
            self.invalid(invalid.len(), &format!("refused pushed records (first: record {i}: {e})"));
        }
        (ok, invalid)
    }

    /// Counts `n` refused pushed records (the pusher was told which and why).
    pub fn invalid(&self, n: usize, detail: &str) {
        self.metrics.drop_records(DropReason::Invalid, n, detail);
    }

    /// Stamps the defaults on checked records and encodes them.
    fn stamp(&self, records: Vec<Record>) -> Vec<WireRecord> {
        records
            .into_iter()
            .map(|mut r| {
                self.defaults.apply(&mut r);
                WireRecord::encode(&r)
            })
            .collect()
    }

    /// Enqueues records from [`Ingress::prepare_pushed`] pushed through `api`, waiting for
    /// queue room.
    ///
    /// # Errors
    /// [`SubmitError::Closed`] (shutting down) or [`SubmitError::Sequence`].
    pub async fn enqueue_wire(&self, api: PushApi, records: Vec<WireRecord>) -> Result<usize, SubmitError> {
        let n = records.len();
        self.batcher.submit(records).await?;
        self.metrics.pushed(api, n);
        Ok(n)
    }

    /// Enqueues checked records pushed through `api`, waiting for queue room.
    ///
    /// # Errors
    /// [`SubmitError::Closed`] (shutting down) or [`SubmitError::Sequence`].
    pub async fn enqueue(&self, api: PushApi, records: Vec<Record>) -> Result<usize, SubmitError> {
        self.enqueue_wire(api, self.stamp(records)).await
    }

    /// Enqueues checked records pushed through `api` if the queue has room now; all or nothing.
    ///
    /// # Errors
    /// [`SubmitError::QueueFull`] / [`SubmitError::TooLarge`] (counted as `refused`: the
    /// pusher must retry), [`SubmitError::Closed`], [`SubmitError::Sequence`].
    pub fn try_enqueue(&self, api: PushApi, records: Vec<Record>) -> Result<usize, SubmitError> {
        let n = records.len();
        match self.batcher.try_submit(self.stamp(records)) {
            Ok(()) => {
                self.metrics.pushed(api, n);
                Ok(n)
            }
            Err(e) => {
                if matches!(e, SubmitError::QueueFull { .. } | SubmitError::TooLarge { .. }) {
                    self.metrics.refused(n);
                    self.metrics.warn_limited("refused", &format!("refused {n} pushed records: {e}"));
                }
                Err(e)
            }
        }
    }

    /// Enqueues a plugin sample if the queue has room; otherwise drops it and counts the drop.
    ///
    /// # Errors
    /// [`SubmitError`] when the sample was not enqueued (already counted).
    pub fn collect(&self, plugin: &str, records: Vec<Record>) -> Result<usize, SubmitError> {
        let n = records.len();
        match self.batcher.try_submit(self.stamp(records)) {
            Ok(()) => {
                self.metrics.collected(n);
                Ok(n)
            }
            Err(e) => {
                let reason = match e {
                    SubmitError::QueueFull { .. } | SubmitError::TooLarge { .. } => DropReason::QueueFull,
                    SubmitError::Closed => return Err(e),
                    SubmitError::Sequence(_) => DropReason::Internal,
                };
                self.metrics.drop_records(reason, n, &format!("{plugin} plugin sample dropped: {e}"));
                Err(e)
            }
        }
    }

    /// Enqueues plugin records that must not be dropped, waiting for queue room.
    ///
    /// # Errors
    /// [`SubmitError::Closed`] (shutting down) or [`SubmitError::Sequence`].
    pub async fn collect_wait(&self, records: Vec<Record>) -> Result<usize, SubmitError> {
        let n = records.len();
        self.batcher.submit(self.stamp(records)).await?;
        self.metrics.collected(n);
        Ok(n)
    }
}

//! Runs one plugin instance: its ticks, its timeout, its health, its records' delivery.
//!
//! Role: [`run`] is the task of one instance. Every `interval` (the first collection at once)
//! it calls [`Plugin::collect`] under the instance's `timeout`; a collection still running when
//! the next tick is due makes the runner skip that tick (counted as an overrun) — never two
//! collections of one instance at once, never a backlog. Each task is independent, so a plugin
//! pointed at a dead or hanging server delays nobody else. After every collection it appends the
//! instance's health records ([`HEALTH_METRICS`], tags `plugin` and `kind`) — also when the
//! collection failed, so a dead source shows on the dashboards — and hands everything to the
//! ingress: a full queue drops a sample (counted), except for [`Plugin::lossless`] plugins, which
//! wait for room. Touches the ingress and the instance's [`PluginHealth`].

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshmon_proto::v1::Record;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::batcher::SubmitError;
use crate::ingress::Ingress;
use crate::plugins::{ErrorReason, PluginError, PluginHealth, Scheduled};
use crate::push::shutting_down;
use crate::record::{double_record, timestamp_of};

/// Health records every instance produces after each collection (rows of `docs/METRICS.md`).
pub const HEALTH_METRICS: [&str; 3] = ["agent.plugin.up", "agent.plugin.collect_seconds", "agent.plugin.records"];

/// The health records of one collection of instance `name` of `kind`.
pub fn health_records(
    name: &str,
    kind: &str,
    at: SystemTime,
    outcome: Result<usize, ()>,
    took_secs: f64,
) -> Vec<Record> {
    let ts = timestamp_of(at);
    let (up, n) = match outcome {
        Ok(n) => (1.0, n),
        Err(()) => (0.0, 0),
    };
    #[allow(clippy::cast_precision_loss)] // record counts are far below 2^53
    let values = [up, took_secs, n as f64];
    HEALTH_METRICS
        .iter()
        .zip(values)
        .map(|(metric, v)| {
            let mut r = double_record(*metric, v, ts);
            r.tags.insert("plugin".to_owned(), name.to_owned());
            r.tags.insert("kind".to_owned(), kind.to_owned());
            r
        })
        .collect()
}

/// Runs `s` until shutdown.
pub async fn run(
    mut s: Scheduled,
    ingress: Arc<Ingress>,
    health: Arc<PluginHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(plugin = %s.name, kind = s.kind, interval = ?s.interval, timeout = ?s.timeout, "plugin started");
    let mut ticks = tokio::time::interval(s.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_tick: Option<tokio::time::Instant> = None;
    loop {
        let tick = tokio::select! {
            t = ticks.tick() => t,
            () = shutting_down(&mut shutdown) => break,
        };
        if let Some(prev) = last_tick {
            // Ticks missed while the previous collection ran (Skip behaviour) are overruns.
            let gap = tick.saturating_duration_since(prev).as_nanos() / s.interval.as_nanos().max(1);
            if gap > 1 {
                health.overrun(u64::try_from(gap - 1).unwrap_or(u64::MAX));
            }
        }
        last_tick = Some(tick);
        let at = SystemTime::now();
        let started = Instant::now();
        let result = tokio::select! {
            r = tokio::time::timeout(s.timeout, s.plugin.collect(at)) => r,
            () = shutting_down(&mut shutdown) => break,
        };
        let took = started.elapsed();
        let outcome = match result {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(PluginError::new(ErrorReason::Timeout, format!("collection did not finish within {:?}", s.timeout)))
            }
        };
        let succeeded = outcome.is_ok();
        let mut records = match outcome {
            Ok(records) => {
                health.succeeded(records.len(), took, at);
                debug!(plugin = %s.name, records = records.len(), ?took, "plugin collected");
                let mut all = records;
                let n = all.len();
                all.extend(health_records(&s.name, s.kind, at, Ok(n), took.as_secs_f64()));
                all
            }
            Err(e) => {
                let was_healthy = health.healthy() != Some(false);
                health.failed(e.reason, &e.message, took);
                if was_healthy || ingress.metrics().log_allowed("plugin_error") {
                    warn!(plugin = %s.name, kind = s.kind, reason = e.reason.as_str(), "plugin collection failed: {}", e.message);
                }
                health_records(&s.name, s.kind, at, Err(()), took.as_secs_f64())
            }
        };
        let delivered = if s.plugin.lossless() {
            tokio::select! {
                r = ingress.collect_wait(std::mem::take(&mut records)) => r,
                () = shutting_down(&mut shutdown) => break,
            }
        } else {
            ingress.collect(&s.name, std::mem::take(&mut records))
        };
        match delivered {
            Ok(_) if succeeded => s.plugin.enqueued(),
            Ok(_) => {}
            Err(SubmitError::Closed) => break,
            Err(_) => {} // counted and logged by the ingress
        }
    }
    info!(plugin = %s.name, "plugin stopped");
}

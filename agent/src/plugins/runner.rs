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
//! wait for room, are never interrupted by shutdown and collect once more before the agent
//! flushes. Touches the ingress and the instance's [`PluginHealth`].

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

/// Runs `s` until shutdown. A [`Plugin::lossless`] instance is never interrupted mid-collection
/// and, once shutdown is requested, collects one last time so that what its source handed over
/// since the previous tick (StatsD packets, log lines) is enqueued before the agent flushes.
pub async fn run(
    mut s: Scheduled,
    ingress: Arc<Ingress>,
    health: Arc<PluginHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(plugin = %s.name, kind = s.kind, interval = ?s.interval, timeout = ?s.timeout, "plugin started");
    let lossless = s.plugin.lossless();
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
        let closed = if lossless {
            collect_once(&mut s, &ingress, &health).await
        } else {
            tokio::select! {
                closed = collect_once(&mut s, &ingress, &health) => closed,
                () = shutting_down(&mut shutdown) => break,
            }
        };
        if closed {
            info!(plugin = %s.name, "plugin stopped: the agent is shutting down");
            return;
        }
    }
    if lossless {
        let _ = collect_once(&mut s, &ingress, &health).await;
    }
    info!(plugin = %s.name, "plugin stopped");
}

/// One collection under the timeout, its health records, and their delivery. True when the
/// ingress is closed (the agent is shutting down).
async fn collect_once(s: &mut Scheduled, ingress: &Ingress, health: &PluginHealth) -> bool {
    let at = SystemTime::now();
    let started = Instant::now();
    let result = tokio::time::timeout(s.timeout, s.plugin.collect(at)).await;
    let took = started.elapsed();
    let outcome = match result {
        Ok(Ok(records)) => Ok(records),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            Err(PluginError::new(ErrorReason::Timeout, format!("collection did not finish within {:?}", s.timeout)))
        }
    };
    let succeeded = outcome.is_ok();
    let records = match outcome {
        Ok(mut records) => {
            health.succeeded(records.len(), took, at);
            debug!(plugin = %s.name, records = records.len(), ?took, "plugin collected");
            let n = records.len();
            records.extend(health_records(&s.name, s.kind, at, Ok(n), took.as_secs_f64()));
            records
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
    let delivered =
        if s.plugin.lossless() { ingress.collect_wait(records).await } else { ingress.collect(&s.name, records) };
    match delivered {
        Ok(_) if succeeded => s.plugin.enqueued(),
        Ok(_) => {}
        Err(SubmitError::Closed) => return true,
        Err(_) => {} // counted and logged by the ingress
    }
    false
}

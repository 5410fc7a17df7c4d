//! Plugin health: per-instance counters and state, their Prometheus exposition and JSON view.
//!
//! Role: [`PluginHealth`] is what the runner (`runner.rs`) records about one plugin instance —
//! collections, records, errors by reason, overruns, time spent, whether the last collection
//! succeeded and why not. [`PluginRegistry`] holds every instance's health for `GET /metrics`
//! (`meshmon_agent_plugin_*`) and `GET /v1/plugins` (JSON). Touches nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::plugins::ErrorReason;

/// The state of the last collection.
#[derive(Debug, Clone, Default)]
struct LastOutcome {
    /// `None` before the first collection ended.
    healthy: Option<bool>,
    error: Option<String>,
    reason: Option<ErrorReason>,
    last_success: Option<SystemTime>,
    last_duration: Duration,
}

/// Counters and last state of one plugin instance.
#[derive(Debug)]
pub struct PluginHealth {
    name: String,
    kind: &'static str,
    collections: AtomicU64,
    records: AtomicU64,
    errors: [AtomicU64; ErrorReason::ALL.len()],
    overruns: AtomicU64,
    busy_us: AtomicU64,
    last: Mutex<LastOutcome>,
}

impl PluginHealth {
    fn new(name: String, kind: &'static str) -> PluginHealth {
        PluginHealth {
            name,
            kind,
            collections: AtomicU64::new(0),
            records: AtomicU64::new(0),
            errors: Default::default(),
            overruns: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
            last: Mutex::new(LastOutcome::default()),
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn finish(&self, took: Duration) {
        self.collections.fetch_add(1, Ordering::Relaxed);
        self.busy_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A collection that produced `records` records in `took`.
    pub fn succeeded(&self, records: usize, took: Duration, at: SystemTime) {
        self.finish(took);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last =
            LastOutcome { healthy: Some(true), error: None, reason: None, last_success: Some(at), last_duration: took };
    }

    /// A collection that failed for `reason` after `took`.
    pub fn failed(&self, reason: ErrorReason, message: &str, took: Duration) {
        self.finish(took);
        self.errors[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.healthy = Some(false);
        last.error = Some(message.to_owned());
        last.reason = Some(reason);
        last.last_duration = took;
    }

    /// `n` ticks were skipped because a collection was still running.
    pub fn overrun(&self, n: u64) {
        self.overruns.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the last collection succeeded (`None` before the first one ended).
    pub fn healthy(&self) -> Option<bool> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).healthy
    }

    /// The last error message, if the last collection failed.
    pub fn last_error(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).error.clone()
    }

    /// Collections ended so far (successful or not).
    pub fn collections(&self) -> u64 {
        self.collections.load(Ordering::Relaxed)
    }

    /// Failed collections for `reason` so far.
    pub fn errors(&self, reason: ErrorReason) -> u64 {
        self.errors[reason.index()].load(Ordering::Relaxed)
    }

    fn json(&self) -> serde_json::Value {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        let errors: serde_json::Map<String, serde_json::Value> =
            ErrorReason::ALL.iter().map(|r| (r.as_str().to_owned(), self.errors(*r).into())).collect();
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "healthy": last.healthy,
            "last_error": last.error,
            "last_error_reason": last.reason.map(ErrorReason::as_str),
            "last_success_ms": last.last_success.map(ms),
            "last_duration_ms": last.last_duration.as_secs_f64() * 1e3,
            "collections": self.collections(),
            "records": self.records.load(Ordering::Relaxed),
            "overruns": self.overruns.load(Ordering::Relaxed),
            "errors": errors,
        })
    }
}

/// Every plugin instance's health, in registration order.
#[derive(Debug, Default)]
pub struct PluginRegistry {
    plugins: Mutex<Vec<Arc<PluginHealth>>>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl PluginRegistry {
    /// Registers an instance and returns its health record.
    pub fn register(&self, name: &str, kind: &'static str) -> Arc<PluginHealth> {
        let h = Arc::new(PluginHealth::new(name.to_owned(), kind));
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner).push(h.clone());
        h
    }

    /// Every registered instance.
    pub fn all(&self) -> Vec<Arc<PluginHealth>> {
        self.plugins.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `GET /v1/plugins`: a JSON array, one object per instance.
    pub fn render_json(&self) -> String {
        let all: Vec<serde_json::Value> = self.all().iter().map(|h| h.json()).collect();
        serde_json::Value::Array(all).to_string()
    }

    /// The `meshmon_agent_plugin_*` families in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let all = self.all();
        if all.is_empty() {
            return;
        }
        let families: [(&str, &str, &str); 6] = [
            ("plugin_up", "gauge", "1 if the plugin's last collection succeeded, 0 if it failed or timed out."),
            ("plugin_collections_total", "counter", "Collections ended (successful or not)."),
            ("plugin_records_total", "counter", "Records produced by successful collections."),
            ("plugin_errors_total", "counter", "Failed collections by reason (timeout, unreachable, ...)."),
            ("plugin_overruns_total", "counter", "Ticks skipped because the previous collection was still running."),
            ("plugin_busy_seconds_total", "counter", "Wall time spent in collections."),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(out, "# HELP meshmon_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE meshmon_agent_{name} {kind}");
            for h in &all {
                let labels = format!("plugin=\"{}\",kind=\"{}\"", label(&h.name), h.kind);
                match name {
                    "plugin_up" => {
                        if let Some(up) = h.healthy() {
                            let _ = writeln!(out, "meshmon_agent_{name}{{{labels}}} {}", u8::from(up));
                        }
                    }
                    "plugin_collections_total" => {
                        let _ = writeln!(out, "meshmon_agent_{name}{{{labels}}} {}", h.collections());
                    }
                    "plugin_records_total" => {
                        let _ = writeln!(out, "meshmon_agent_{name}{{{labels}}} {}", h.records.load(Ordering::Relaxed));
                    }
                    "plugin_errors_total" => {
                        for r in ErrorReason::ALL {
                            let _ = writeln!(
                                out,
                                "meshmon_agent_{name}{{{labels},reason=\"{}\"}} {}",
                                r.as_str(),
                                h.errors(r)
                            );
                        }
                    }
                    "plugin_overruns_total" => {
                        let _ =
                            writeln!(out, "meshmon_agent_{name}{{{labels}}} {}", h.overruns.load(Ordering::Relaxed));
                    }
                    _ => {
                        #[allow(clippy::cast_precision_loss)] // microseconds, exact below 2^53
                        let secs = h.busy_us.load(Ordering::Relaxed) as f64 / 1e6;
                        let _ = writeln!(out, "meshmon_agent_{name}{{{labels}}} {secs}");
                    }
                }
            }
        }
    }
}

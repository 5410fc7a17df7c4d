//! Process plugin: CPU, resident memory, threads, open descriptors and up/down of the process
//! groups an instance names.
//!
//! Role: each `matches` entry (a `label`, matched by executable `name`, command-line `pattern`
//! and/or `pid_file`) is one group, tagged `process = <label>`. Every collection scans `/proc`
//! on a blocking thread (`procfs.rs`: only the files the matchers need, and per-process details
//! only for matched processes) and records per group `process.up` (a group with no process is
//! a value, 0, not a failure), `process.count` and the sums over its processes; CPU is the
//! share of one core used since the previous collection. With `per_pid` each process is also
//! reported with tag `pid` (at most `max_pids` per group, the rest counted). The CPU baseline is
//! replaced only when a scan completed, so an abandoned collection changes nothing. Linux only.
//! Touches `/proc` (read only) and the configured pid files.

mod config;
mod procfs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshmon_proto::v1::Record;

pub use config::{ProcessMatch, ProcessSettings};
pub use procfs::{Matcher, ProcSample, Scan, TICKS_PER_SEC, parse_stat, scan};

use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "process.up",
    "process.count",
    "process.cpu_percent",
    "process.rss_bytes",
    "process.threads",
    "process.open_fds",
    "process.open_fds_unreadable",
    "process.per_pid_dropped",
];

/// CPU ticks of every process seen by the previous completed scan.
#[derive(Debug, Clone)]
struct Baseline {
    uptime_secs: f64,
    taken: Instant,
    /// pid → (start ticks, CPU ticks).
    procs: HashMap<u32, (u64, u64)>,
}

impl Baseline {
    /// CPU ticks `p` used since this baseline (`None` when unknown: a process that already ran
    /// before the baseline but was not matched then).
    fn ticks_since(&self, p: &ProcSample) -> Option<u64> {
        match self.procs.get(&p.pid) {
            Some(&(start, ticks)) if start == p.start_ticks => Some(p.cpu_ticks.saturating_sub(ticks)),
            #[allow(clippy::cast_precision_loss)] // start ticks stay far below 2^53
            _ if p.start_ticks as f64 / TICKS_PER_SEC >= self.uptime_secs => Some(p.cpu_ticks),
            _ => None,
        }
    }
}

/// The collector of one `[[plugins.process]]` instance.
#[derive(Debug)]
pub struct ProcessPlugin {
    matchers: Arc<Vec<Matcher>>,
    proc_root: PathBuf,
    per_pid: bool,
    max_pids: usize,
    baseline: Option<Baseline>,
}

#[allow(clippy::cast_precision_loss)] // counts and bytes are far below 2^53
fn f(v: u64) -> f64 {
    v as f64
}

impl ProcessPlugin {
    /// The records of one completed scan, against the previous baseline.
    fn records(&self, scan: &Scan, at: SystemTime) -> Vec<Record> {
        let ts = timestamp_of(at);
        let elapsed = self
            .baseline
            .as_ref()
            .map(|b| (b, scan.taken.saturating_duration_since(b.taken).as_secs_f64()))
            .filter(|(_, e)| *e > 0.0);
        let cpu = |p: &ProcSample| -> Option<f64> {
            let (base, secs) = elapsed?;
            base.ticks_since(p).map(|t| f(t) / TICKS_PER_SEC / secs * 100.0)
        };
        let mut out = Vec::new();
        for (i, m) in self.matchers.iter().enumerate() {
            let procs: Vec<&ProcSample> = scan.procs.iter().filter(|p| p.labels.contains(&i)).collect();
            let tagged = |metric: &str, v: f64, pid: Option<u32>| -> Record {
                let mut r = double_record(metric, v, ts);
                r.tags.insert("process".to_owned(), m.label.clone());
                if let Some(pid) = pid {
                    r.tags.insert("pid".to_owned(), pid.to_string());
                }
                r
            };
            out.push(tagged("process.up", if procs.is_empty() { 0.0 } else { 1.0 }, None));
            out.push(tagged("process.count", f(procs.len() as u64), None));
            if procs.is_empty() {
                continue;
            }
            if elapsed.is_some() {
                let sum: f64 = procs.iter().filter_map(|p| cpu(p)).sum();
                out.push(tagged("process.cpu_percent", sum, None));
            }
            let rss: u64 = procs.iter().filter_map(|p| p.rss_bytes).sum();
            out.push(tagged("process.rss_bytes", f(rss), None));
            out.push(tagged("process.threads", f(procs.iter().map(|p| p.threads).sum()), None));
            let readable: Vec<u64> = procs.iter().filter_map(|p| p.open_fds).collect();
            if !readable.is_empty() {
                out.push(tagged("process.open_fds", f(readable.iter().sum()), None));
            }
            out.push(tagged("process.open_fds_unreadable", f((procs.len() - readable.len()) as u64), None));
            if self.per_pid {
                for p in procs.iter().take(self.max_pids) {
                    let pid = Some(p.pid);
                    if let Some(c) = cpu(p) {
                        out.push(tagged("process.cpu_percent", c, pid));
                    }
                    if let Some(rss) = p.rss_bytes {
                        out.push(tagged("process.rss_bytes", f(rss), pid));
                    }
                    out.push(tagged("process.threads", f(p.threads), pid));
                    if let Some(n) = p.open_fds {
                        out.push(tagged("process.open_fds", f(n), pid));
                    }
                }
                let dropped = procs.len().saturating_sub(self.max_pids);
                out.push(tagged("process.per_pid_dropped", f(dropped as u64), None));
            }
        }
        out
    }
}

impl Plugin for ProcessPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let matchers = Arc::clone(&self.matchers);
            let root = self.proc_root.clone();
            let scan = tokio::task::spawn_blocking(move || scan(&root, &matchers))
                .await
                .map_err(|e| PluginError::new(ErrorReason::Other, format!("process scan panicked: {e}")))?
                .map_err(|e| PluginError::io(format!("cannot read {}: {e}", self.proc_root.display())))?;
            // From here on nothing awaits: the baseline moves only with a completed scan.
            let records = self.records(&scan, at);
            self.baseline = Some(Baseline {
                uptime_secs: scan.uptime_secs,
                taken: scan.taken,
                procs: scan.procs.iter().map(|p| (p.pid, (p.start_ticks, p.cpu_ticks))).collect(),
            });
            Ok(records)
        })
    }
}

impl ProcessSettings {
    fn matchers(&self) -> Result<Vec<Matcher>, PluginError> {
        self.matches
            .iter()
            .map(|m| {
                let pattern =
                    match &m.pattern {
                        Some(p) => Some(regex::Regex::new(p).map_err(|e| {
                            PluginError::new(ErrorReason::Other, format!("pattern of {:?}: {e}", m.label))
                        })?),
                        None => None,
                    };
                Ok(Matcher { label: m.label.clone(), name: m.name.clone(), pattern, pid_file: m.pid_file.clone() })
            })
            .collect()
    }

    /// Builds the collector reading `proc_root` instead of `/proc` (tests).
    ///
    /// # Errors
    /// [`PluginError`] when a pattern does not compile or `proc_root` is not a procfs.
    pub fn build_with_root(&self, proc_root: PathBuf) -> Result<ProcessPlugin, PluginError> {
        if !proc_root.join("uptime").exists() {
            return Err(PluginError::new(
                ErrorReason::Other,
                format!("{}/uptime not found: the process plugin needs Linux procfs", proc_root.display()),
            ));
        }
        Ok(ProcessPlugin {
            matchers: Arc::new(self.matchers()?),
            proc_root,
            per_pid: self.per_pid,
            max_pids: self.max_pids.max(1),
            baseline: None,
        })
    }
}

impl BuildPlugin for ProcessSettings {
    fn build(&self, _name: &str, _ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        Ok(Box::new(self.build_with_root(PathBuf::from("/proc"))?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::PluginSettings;
    use crate::record::double_value;

    fn sample(pid: u32, start: u64, ticks: u64, labels: Vec<usize>) -> ProcSample {
        ProcSample {
            pid,
            start_ticks: start,
            cpu_ticks: ticks,
            threads: 2,
            rss_bytes: Some(1000),
            open_fds: if pid == 3 { None } else { Some(4) },
            labels,
        }
    }

    fn value(records: &[Record], metric: &str, label: &str, pid: Option<&str>) -> Option<f64> {
        records
            .iter()
            .find(|r| {
                r.metric == metric
                    && r.tags.get("process").map(String::as_str) == Some(label)
                    && r.tags.get("pid").map(String::as_str) == pid
            })
            .and_then(double_value)
    }

    #[test]
    fn sums_per_label_cpu_against_the_baseline_and_caps_pids() {
        let settings = ProcessSettings {
            matches: vec![
                ProcessMatch { label: "a".into(), name: Some("x".into()), ..ProcessMatch::default() },
                ProcessMatch { label: "gone".into(), name: Some("y".into()), ..ProcessMatch::default() },
            ],
            per_pid: true,
            max_pids: 2,
        };
        let mut p = settings.build_with_root(PathBuf::from("/proc")).expect("builds");
        let t0 = Instant::now();
        let first = Scan {
            uptime_secs: 1000.0,
            taken: t0,
            procs: vec![sample(1, 10, 100, vec![0]), sample(2, 10, 50, vec![0])],
        };
        let at = SystemTime::now();
        let r = p.records(&first, at);
        assert_eq!(value(&r, "process.up", "a", None), Some(1.0));
        assert_eq!(value(&r, "process.count", "a", None), Some(2.0));
        assert_eq!(value(&r, "process.cpu_percent", "a", None), None, "no baseline yet");
        assert_eq!(value(&r, "process.rss_bytes", "a", None), Some(2000.0));
        assert_eq!(value(&r, "process.threads", "a", None), Some(4.0));
        assert_eq!(value(&r, "process.open_fds", "a", None), Some(8.0));
        assert_eq!(value(&r, "process.up", "gone", None), Some(0.0));
        assert_eq!(value(&r, "process.count", "gone", None), Some(0.0));
        assert_eq!(value(&r, "process.rss_bytes", "gone", None), None);
        p.baseline = Some(Baseline {
            uptime_secs: first.uptime_secs,
            taken: first.taken,
            procs: first.procs.iter().map(|s| (s.pid, (s.start_ticks, s.cpu_ticks))).collect(),
        });
        // 10 s later: pid 1 used 5 s of CPU, pid 2 is a new process (re-used pid, started after
        // the baseline) that used 1 s, pid 3 started before the baseline and is unknown.
        let second = Scan {
            uptime_secs: 1010.0,
            taken: t0 + std::time::Duration::from_secs(10),
            procs: vec![sample(1, 10, 600, vec![0]), sample(2, 100_500, 100, vec![0]), sample(3, 20, 900, vec![0])],
        };
        let r = p.records(&second, at);
        let cpu = value(&r, "process.cpu_percent", "a", None).expect("cpu");
        assert!((cpu - 60.0).abs() < 1e-9, "{cpu}");
        assert!((value(&r, "process.cpu_percent", "a", Some("1")).expect("pid 1") - 50.0).abs() < 1e-9);
        assert_eq!(value(&r, "process.open_fds", "a", None), Some(8.0));
        assert_eq!(value(&r, "process.open_fds_unreadable", "a", None), Some(1.0));
        assert_eq!(value(&r, "process.threads", "a", Some("2")), Some(2.0));
        assert_eq!(value(&r, "process.threads", "a", Some("3")), None, "over max_pids");
        assert_eq!(value(&r, "process.per_pid_dropped", "a", None), Some(1.0));
        let known: std::collections::BTreeSet<&str> = METRIC_NAMES.iter().copied().collect();
        assert!(r.iter().all(|rec| known.contains(rec.metric.as_str())));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |s: ProcessSettings| s.validate("plugins.process[0]").expect_err("invalid").to_string();
        assert!(bad(ProcessSettings::default()).contains("matches"));
        let e = bad(ProcessSettings {
            matches: vec![ProcessMatch { label: "a".into(), ..ProcessMatch::default() }],
            ..ProcessSettings::default()
        });
        assert!(e.contains("matches[0]"), "{e}");
        let e = bad(ProcessSettings {
            matches: vec![ProcessMatch { label: "a".into(), pattern: Some("(".into()), ..ProcessMatch::default() }],
            ..ProcessSettings::default()
        });
        assert!(e.contains("matches[0].pattern"), "{e}");
        let two = ProcessMatch { label: "a".into(), name: Some("x".into()), ..ProcessMatch::default() };
        let e = bad(ProcessSettings { matches: vec![two.clone(), two], ..ProcessSettings::default() });
        assert!(e.contains("matches[1].label"), "{e}");
        let c: crate::plugins::PluginsConfig =
            toml::from_str("[[process]]\nper_pid = true\n[[process.matches]]\nlabel = \"web\"\nname = \"nginx\"\n")
                .expect("parses");
        assert_eq!(c.process[0].settings.matches[0].name.as_deref(), Some("nginx"));
        c.process[0].settings.validate("p").expect("valid");
    }
}

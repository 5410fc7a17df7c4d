//! System plugin: host metrics (CPU, load, memory, swap, disks, network, processes, uptime).
//!
//! Role: [`SystemSampler`] takes one sample of the host through `sysinfo`, refreshing only what
//! it reports (CPU usage, RAM and swap, disk storage and I/O, network counters) — never the
//! process table: the process count is read from `/proc` on Linux. Every record of a sample has
//! the sample time as event time. Rates (`*_per_sec`) are computed over the time since the
//! previous sample and are absent from the first one; CPU usage likewise needs a previous sample
//! at least `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` earlier. The names, units and tags are listed
//! in `docs/METRICS.md` ([`METRIC_NAMES`]). [`run`] samples every `interval`. Touches only what
//! it reads (the kernel's /proc and /sys views).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshmon_proto::v1::Record;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::batcher::SubmitError;
use crate::ingress::Ingress;
use crate::push::shutting_down;
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin can produce (the rows of `docs/METRICS.md`).
pub const METRIC_NAMES: [&str; 25] = [
    "system.cpu.usage_percent",
    "system.cpu.core_usage_percent",
    "system.cpu.cores",
    "system.load.1m",
    "system.load.5m",
    "system.load.15m",
    "system.memory.total_bytes",
    "system.memory.used_bytes",
    "system.memory.available_bytes",
    "system.swap.total_bytes",
    "system.swap.used_bytes",
    "system.disk.total_bytes",
    "system.disk.available_bytes",
    "system.disk.used_percent",
    "system.disk.read_bytes_per_sec",
    "system.disk.written_bytes_per_sec",
    "system.net.rx_bytes_per_sec",
    "system.net.tx_bytes_per_sec",
    "system.net.rx_errors_per_sec",
    "system.net.tx_errors_per_sec",
    "system.net.rx_bytes_total",
    "system.net.tx_bytes_total",
    "system.processes.count",
    "system.uptime_seconds",
    "system.boot_time_seconds",
];

/// Takes samples of the host. Keeps the previous sample's state for rates.
#[derive(Debug)]
pub struct SystemSampler {
    system: System,
    disks: Disks,
    networks: Networks,
    last: Option<Instant>,
}

impl Default for SystemSampler {
    fn default() -> Self {
        SystemSampler::new()
    }
}

fn disk_kind() -> DiskRefreshKind {
    DiskRefreshKind::nothing().with_storage().with_io_usage()
}

#[allow(clippy::cast_precision_loss)] // byte counts far below 2^53 are exact; above, ~1e-16 relative.
fn f(v: u64) -> f64 {
    v as f64
}

impl SystemSampler {
    /// A sampler with its baseline taken now (CPU times, disk and network counters).
    pub fn new() -> SystemSampler {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram().with_swap()),
        );
        SystemSampler {
            system,
            disks: Disks::new_with_refreshed_list_specifics(disk_kind()),
            networks: Networks::new_with_refreshed_list(),
            last: Some(Instant::now()),
        }
    }

    /// One sample, stamped `at`. Cluster, node and global tags are left to the ingress.
    pub fn sample(&mut self, at: SystemTime) -> Vec<Record> {
        let now = Instant::now();
        let elapsed = self.last.map(|l| now.duration_since(l));
        self.last = Some(now);
        let ts = timestamp_of(at);
        let mut out = Vec::with_capacity(64);
        let mut push = |metric: &str, value: f64, tags: &[(&str, &str)]| {
            if !value.is_finite() {
                return;
            }
            let mut r = double_record(metric, value, ts);
            for (k, v) in tags {
                r.tags.insert((*k).to_owned(), (*v).to_owned());
            }
            out.push(r);
        };

        // CPU: usage since the previous refresh, valid once enough time has passed.
        self.system.refresh_cpu_usage();
        let cpus = self.system.cpus();
        push("system.cpu.cores", f(cpus.len() as u64), &[]);
        if elapsed.is_some_and(|e| e >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL) {
            push("system.cpu.usage_percent", f64::from(self.system.global_cpu_usage()), &[]);
            for (i, cpu) in cpus.iter().enumerate() {
                push("system.cpu.core_usage_percent", f64::from(cpu.cpu_usage()), &[("core", &i.to_string())]);
            }
        }

        let load = System::load_average();
        push("system.load.1m", load.one, &[]);
        push("system.load.5m", load.five, &[]);
        push("system.load.15m", load.fifteen, &[]);

        self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        push("system.memory.total_bytes", f(self.system.total_memory()), &[]);
        push("system.memory.used_bytes", f(self.system.used_memory()), &[]);
        push("system.memory.available_bytes", f(self.system.available_memory()), &[]);
        push("system.swap.total_bytes", f(self.system.total_swap()), &[]);
        push("system.swap.used_bytes", f(self.system.used_swap()), &[]);

        let secs = elapsed.map(|e| e.as_secs_f64()).filter(|s| *s > 0.0);
        self.disks.refresh_specifics(true, disk_kind());
        for disk in self.disks.list() {
            let mount = disk.mount_point().to_string_lossy();
            let device = disk.name().to_string_lossy();
            let tags = [("mount", mount.as_ref()), ("device", device.as_ref())];
            let total = disk.total_space();
            let available = disk.available_space();
            push("system.disk.total_bytes", f(total), &tags);
            push("system.disk.available_bytes", f(available), &tags);
            if total > 0 {
                push("system.disk.used_percent", f(total.saturating_sub(available)) * 100.0 / f(total), &tags);
            }
            if let Some(s) = secs {
                let usage = disk.usage();
                push("system.disk.read_bytes_per_sec", f(usage.read_bytes) / s, &tags);
                push("system.disk.written_bytes_per_sec", f(usage.written_bytes) / s, &tags);
            }
        }

        self.networks.refresh(true);
        let mut interfaces: Vec<(&String, &sysinfo::NetworkData)> = self.networks.list().iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (name, data) in interfaces {
            let tags = [("interface", name.as_str())];
            push("system.net.rx_bytes_total", f(data.total_received()), &tags);
            push("system.net.tx_bytes_total", f(data.total_transmitted()), &tags);
            if let Some(s) = secs {
                push("system.net.rx_bytes_per_sec", f(data.received()) / s, &tags);
                push("system.net.tx_bytes_per_sec", f(data.transmitted()) / s, &tags);
                push("system.net.rx_errors_per_sec", f(data.errors_on_received()) / s, &tags);
                push("system.net.tx_errors_per_sec", f(data.errors_on_transmitted()) / s, &tags);
            }
        }

        if let Some(n) = process_count() {
            push("system.processes.count", f(n), &[]);
        }
        push("system.uptime_seconds", f(System::uptime()), &[]);
        push("system.boot_time_seconds", f(System::boot_time()), &[]);
        out
    }
}

/// Number of processes: the numeric entries of /proc (no per-process reads).
#[cfg(target_os = "linux")]
fn process_count() -> Option<u64> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())))
        .count();
    u64::try_from(n).ok()
}

#[cfg(not(target_os = "linux"))]
fn process_count() -> Option<u64> {
    let mut system = System::new();
    system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, sysinfo::ProcessRefreshKind::nothing());
    u64::try_from(system.processes().len()).ok()
}

/// Samples every `interval` (the first sample one interval after start, so that CPU usage has a
/// baseline) until shutdown. Sampling runs on the blocking pool: it reads many small files.
pub async fn run(interval: Duration, ingress: Arc<Ingress>, mut shutdown: watch::Receiver<bool>) {
    info!(interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX), "system plugin started");
    let mut sampler = match tokio::task::spawn_blocking(SystemSampler::new).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("system plugin could not start: {e}");
            return;
        }
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutting_down(&mut shutdown) => break,
        }
        let at = SystemTime::now();
        let (back, records) = match tokio::task::spawn_blocking(move || {
            let records = sampler.sample(at);
            (sampler, records)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("system plugin sample failed: {e}");
                return;
            }
        };
        sampler = back;
        let n = records.len();
        match ingress.collect("system", records) {
            Ok(_) => debug!(records = n, "system sample enqueued"),
            Err(SubmitError::Closed) => break,
            Err(_) => {} // counted and logged by the ingress
        }
    }
    info!("system plugin stopped");
}

/// Distinct tag keys each metric carries (for documentation tests).
pub fn tag_keys() -> HashMap<&'static str, &'static [&'static str]> {
    let mut m: HashMap<&'static str, &'static [&'static str]> = HashMap::new();
    for name in METRIC_NAMES {
        let keys: &'static [&'static str] = if name == "system.cpu.core_usage_percent" {
            &["core"]
        } else if name.starts_with("system.disk.") {
            &["mount", "device"]
        } else if name.starts_with("system.net.") {
            &["interface"]
        } else {
            &[]
        };
        m.insert(name, keys);
    }
    m
}

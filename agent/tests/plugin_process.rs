//! The process plugin against real processes started by the test.
//!
//! Role: starts `sleep` children (by command-line marker, under a copied executable name —
//! short and longer than the kernel's 15-byte `comm` — and through a pid file) and a busy
//! shell loop, builds the plugin through `BuildPlugin::build` and checks what `collect`
//! reports against what the test started and what `/proc` says; measures the cost of one
//! collection with about 300 processes on the host. Children are killed when a test ends, also
//! on failure (a Drop guard). Touches child processes, a temporary directory and `/proc`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::plugin_ctx as ctx;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::plugins::process::{METRIC_NAMES, ProcessMatch, ProcessSettings};
use meshmon_agent::plugins::{BuildPlugin, PluginSettings};
use meshmon_agent::record::double_value;
use meshmon_proto::v1::Record;

/// Children killed (and reaped) when dropped.
#[derive(Debug, Default)]
struct Children(Vec<Child>);

impl Children {
    fn spawn(&mut self, program: &Path, args: &[&str]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let pid = child.id();
        self.0.push(child);
        pid
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sleep_program() -> PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"].iter().map(PathBuf::from).find(|p| p.exists()).expect("sleep installed")
}

/// Waits (bounded) until `pid` runs `program` (after fork, before exec, it is still the test).
fn wait_exec(pid: u32, program: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(program) {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not exec {program}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// label → metric → value, for records without a `pid` tag.
fn by_label(records: &[Record]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.tags.contains_key("pid")) {
        let label = r.tags.get("process").expect("process tag").clone();
        out.entry(label).or_default().insert(r.metric.clone(), double_value(r).expect("double"));
    }
    out
}

fn fds_of(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir").count() as f64
}

fn matcher(label: &str) -> ProcessMatch {
    ProcessMatch { label: label.to_owned(), ..ProcessMatch::default() }
}

#[tokio::test]
async fn matches_by_pattern_name_and_pid_file_and_reports_down_groups() {
    let c = ctx();
    let mut children = Children::default();
    let marker = format!("1000.{}7", std::process::id());
    let sleep = sleep_program();
    let pattern_pids: Vec<u32> = (0..3).map(|_| children.spawn(&sleep, &[&marker])).collect();
    // The same program under a short and a long (> 15 bytes, cut in comm) name.
    let short = format!("mm{}", std::process::id() % 1_000_000);
    let long = format!("meshmon-sleeper-{}", std::process::id());
    let mut named = Vec::new();
    for name in [&short, &long] {
        let path = c.dir.path().join(name);
        std::fs::copy(&sleep, &path).expect("copy sleep");
        named.push(children.spawn(&path, &["1000"]));
    }
    let pid_file = c.dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", pattern_pids[1])).expect("pid file");
    for pid in &pattern_pids {
        wait_exec(*pid, &marker);
    }
    wait_exec(named[0], &short);
    wait_exec(named[1], &long);

    let settings = ProcessSettings {
        matches: vec![
            ProcessMatch {
                pattern: Some(format!("^{} {}$", sleep.display(), regex::escape(&marker))),
                ..matcher("sleepers")
            },
            ProcessMatch { name: Some(short.clone()), ..matcher("short") },
            ProcessMatch { name: Some(long.clone()), ..matcher("long") },
            ProcessMatch { pid_file: Some(pid_file.clone()), ..matcher("from-pid-file") },
            ProcessMatch { pid_file: Some(c.dir.path().join("missing.pid")), ..matcher("no-pid-file") },
            ProcessMatch { pattern: Some(format!("no-such-process-{marker}-x")), ..matcher("down") },
            // Both conditions must hold: the name is right, the pattern is not.
            ProcessMatch { name: Some(short.clone()), pattern: Some("nope$".into()), ..matcher("and") },
        ],
        ..ProcessSettings::default()
    };
    settings.validate("plugins.process[0]").expect("valid");
    let mut plugin = settings.build("proc", &c.ctx).expect("builds");
    let records = plugin.collect(SystemTime::now()).await.expect("collects");
    let known: std::collections::BTreeSet<&str> = METRIC_NAMES.iter().copied().collect();
    assert!(records.iter().all(|r| known.contains(r.metric.as_str())), "undocumented metric");
    let v = by_label(&records);

    let s = &v["sleepers"];
    assert_eq!(s["process.up"], 1.0);
    assert_eq!(s["process.count"], 3.0);
    assert_eq!(s["process.threads"], 3.0, "sleep has one thread");
    assert!(s["process.rss_bytes"] > 0.0);
    let fds: f64 = pattern_pids.iter().map(|p| fds_of(*p)).sum();
    assert_eq!(s["process.open_fds"], fds);
    assert!(fds >= 9.0, "stdin, stdout, stderr each");
    assert_eq!(s["process.open_fds_unreadable"], 0.0, "the tests run as root");
    assert!(!s.contains_key("process.cpu_percent"), "no CPU share on the first collection");
    for label in ["short", "long", "from-pid-file"] {
        assert_eq!(v[label]["process.count"], 1.0, "{label}");
        assert_eq!(v[label]["process.up"], 1.0, "{label}");
    }
    for label in ["no-pid-file", "down", "and"] {
        assert_eq!(v[label]["process.up"], 0.0, "{label}");
        assert_eq!(v[label]["process.count"], 0.0, "{label}");
        assert_eq!(v[label].len(), 2, "{label}: only up and count");
    }

    // The second collection has a CPU share (idle sleepers: about 0). The pause is the
    // measurement window (CPU times have a 10 ms granularity), not synchronisation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = plugin.collect(SystemTime::now()).await.expect("collects");
    let v = by_label(&records);
    let cpu = v["sleepers"]["process.cpu_percent"];
    assert!((0.0..50.0).contains(&cpu), "{cpu}");

    // One sleeper exits: the group shrinks; the pid file now names a dead process.
    children.0[1].kill().expect("kill");
    children.0[1].wait().expect("reap");
    let records = plugin.collect(SystemTime::now()).await.expect("collects");
    let v = by_label(&records);
    assert_eq!(v["sleepers"]["process.count"], 2.0);
    assert_eq!(v["from-pid-file"]["process.up"], 0.0);
}

#[tokio::test]
async fn per_pid_records_are_capped_and_a_busy_process_shows_cpu() {
    let c = ctx();
    let mut children = Children::default();
    let marker = format!("meshmon-busy-{}", std::process::id());
    // `sh -c SCRIPT NAME`: NAME ($0) is in the command line, so the pattern finds it.
    let busy = children.spawn(Path::new("/bin/sh"), &["-c", "while :; do :; done", &marker]);
    let sleep = sleep_program();
    let marker2 = format!("1000.{}3", std::process::id());
    let sleepers: Vec<u32> = (0..3).map(|_| children.spawn(&sleep, &[&marker2])).collect();
    wait_exec(busy, &marker);
    for pid in &sleepers {
        wait_exec(*pid, &marker2);
    }
    let settings = ProcessSettings {
        matches: vec![
            ProcessMatch { pattern: Some(regex::escape(&marker)), ..matcher("busy") },
            ProcessMatch { pattern: Some(format!("{}$", regex::escape(&marker2))), ..matcher("sleepers") },
        ],
        per_pid: true,
        max_pids: 2,
    };
    let mut plugin = settings.build("proc", &c.ctx).expect("builds");
    let first = plugin.collect(SystemTime::now()).await.expect("collects");
    let per_pid: Vec<&Record> =
        first.iter().filter(|r| r.metric == "process.threads" && r.tags.contains_key("pid")).collect();
    assert_eq!(per_pid.iter().filter(|r| r.tags["process"] == "sleepers").count(), 2, "max_pids");
    assert_eq!(by_label(&first)["sleepers"]["process.per_pid_dropped"], 1.0);
    let busy_rss = first
        .iter()
        .find(|r| r.metric == "process.rss_bytes" && r.tags.get("pid") == Some(&busy.to_string()))
        .expect("per-pid rss of the busy process");
    assert!(double_value(busy_rss).unwrap() > 0.0);

    // The busy loop shows a CPU share once some CPU time has passed (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let records = plugin.collect(SystemTime::now()).await.expect("collects");
        let cpu = by_label(&records)["busy"]["process.cpu_percent"];
        let per_pid_cpu = records
            .iter()
            .find(|r| r.metric == "process.cpu_percent" && r.tags.get("pid") == Some(&busy.to_string()))
            .and_then(double_value)
            .expect("per-pid cpu");
        assert!((per_pid_cpu - cpu).abs() < 1e-9, "one process: the sum is the process");
        if cpu > 10.0 {
            assert!(cpu <= 100.0 * 1.05 * 64.0, "{cpu}");
            break;
        }
        assert!(Instant::now() < deadline, "busy loop never showed CPU use (last {cpu}%)");
    }
}

/// Cost of one collection over the whole process table (about 300 processes; sleepers are
/// added when the host has fewer), for a typical instance (a few matched processes) and a heavy
/// one (two thirds of the table matched). Prints the measurements; asserts only that it works.
#[tokio::test]
async fn collection_cost_with_about_300_processes() {
    let c = ctx();
    let mut children = Children::default();
    let sleep = sleep_program();
    let count = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
            .count()
    };
    let marker = format!("1000.{}1", std::process::id());
    let few: Vec<u32> = (0..2).map(|_| children.spawn(&sleep, &[&marker])).collect();
    while count() < 300 && children.0.len() < 300 {
        children.spawn(&sleep, &["1000"]);
    }
    let pid_file = c.dir.path().join("one.pid");
    std::fs::write(&pid_file, few[0].to_string()).expect("pid file");
    let processes = count();
    let typical = ProcessSettings {
        matches: vec![
            ProcessMatch { name: Some("no-such-program".into()), ..matcher("by-name") },
            ProcessMatch { pattern: Some(format!("sleep {}$", regex::escape(&marker))), ..matcher("by-pattern") },
            ProcessMatch { pid_file: Some(pid_file), ..matcher("by-pid-file") },
        ],
        ..ProcessSettings::default()
    };
    let heavy = ProcessSettings {
        matches: vec![
            ProcessMatch { name: Some("sleep".into()), ..matcher("by-name") },
            ProcessMatch { pattern: Some("sleep 1000".into()), ..matcher("by-pattern") },
        ],
        ..ProcessSettings::default()
    };
    for (what, settings, label) in [("typical", typical, "by-pattern"), ("heavy", heavy, "by-name")] {
        let mut plugin = settings.build("proc", &c.ctx).expect("builds");
        let n = 100;
        let started = Instant::now();
        let mut matched = 0.0;
        for _ in 0..n {
            let records = plugin.collect(SystemTime::now()).await.expect("collects");
            matched = by_label(&records)[label]["process.count"];
        }
        let per = started.elapsed() / n;
        eprintln!(
            "process plugin ({what}): {processes} processes on the host, {matched} matched by {label}: one \
             collection takes {per:?} (mean of {n}; debug build: {})",
            cfg!(debug_assertions)
        );
        assert!(matched >= 2.0);
    }
}

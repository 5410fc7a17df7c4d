//! Tests of the `log` plugin against real files: appends, rotation by rename, copytruncate,
//! truncation, restarts with and without committed positions, multi-line stack traces,
//! over-long lines, new files, invalid UTF-8, bounded reading, abandoned collections, and the
//! plugin inside a running agent (restarted) delivering every line exactly once.
//!
//! Role: every test writes files in its own temporary directory, builds the plugin through its
//! public API (`BuildPlugin::build`) with a state directory of its own, calls `collect` (with
//! explicit collection times where `flush_after`/`rotate_wait` matter, so no test waits for a
//! clock) and `enqueued`, and asserts the exact lines and counters. Touches a temporary
//! directory and loopback sockets (the agent test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshmon_agent::metrics::Metrics;
use meshmon_agent::plugins::log::{LogRule, LogSettings, METRIC_NAMES, MultilineSettings, StartAt};
use meshmon_agent::plugins::{BuildPlugin, Instance, Plugin, PluginContext};
use meshmon_agent::record::{double_value, timestamp_of};
use meshmon_proto::v1::Record;
use tokio::sync::watch;

/// A temporary directory with the log files and the agent's state directory.
struct Env {
    dir: tempfile::TempDir,
    ctx: PluginContext,
    _shutdown: watch::Sender<bool>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = watch::channel(false);
        let ctx =
            PluginContext { state_dir: dir.path().join("state"), shutdown: rx, metrics: Arc::new(Metrics::new()) };
        Env { dir, ctx, _shutdown: tx }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn glob(&self, pattern: &str) -> String {
        self.path(pattern).to_str().unwrap().to_owned()
    }

    fn build(&self, settings: &LogSettings) -> Box<dyn Plugin> {
        settings.build("applog", &self.ctx).expect("builds")
    }
}

/// Settings reading `paths` from the beginning with rules `error` (kept) and `warn` (counted).
fn settings(paths: Vec<String>) -> LogSettings {
    LogSettings {
        paths,
        start_at: StartAt::Beginning,
        rules: vec![
            LogRule { name: "error".into(), pattern: "ERROR".into(), keep_line: true },
            LogRule { name: "warn".into(), pattern: "WARN".into(), keep_line: false },
        ],
        ..LogSettings::default()
    }
}

fn append(path: &Path, text: &[u8]) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text).unwrap();
}

fn lines(prefix: &str, range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{prefix} {i}\n")).collect()
}

/// One collection, which must succeed.
async fn collect(p: &mut Box<dyn Plugin>, at: SystemTime) -> Vec<Record> {
    p.collect(at).await.expect("collects")
}

/// The raw lines of the `log.match` records of `rule`, in order.
fn matched(records: &[Record], rule: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.metric == "log.match" && r.tags.get("rule").map(String::as_str) == Some(rule))
        .map(|r| String::from_utf8(r.raw.clone().expect("raw")).expect("utf-8"))
        .collect()
}

/// The value of count `metric` (with tag rule=`rule` for `log.matches`).
fn count(records: &[Record], metric: &str) -> f64 {
    let found: Vec<&Record> = records.iter().filter(|r| r.metric == metric).collect();
    assert_eq!(found.len(), 1, "{metric} once per collection");
    double_value(found[0]).expect("double")
}

fn matches(records: &[Record], rule: &str) -> f64 {
    let r = records
        .iter()
        .find(|r| r.metric == "log.matches" && r.tags.get("rule").map(String::as_str) == Some(rule))
        .unwrap_or_else(|| panic!("log.matches for {rule} is always sent"));
    double_value(r).expect("double")
}

fn expected(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test]
async fn appended_lines_are_counted_and_the_matched_ones_sent_raw() {
    let env = Env::new();
    let log = env.path("app.log");
    append(&log, b"ERROR before start\nINFO old\n");
    let mut s = settings(vec![env.glob("app.log")]);
    s.start_at = StartAt::End;
    let mut p = env.build(&s);
    assert!(p.lossless());
    let t0 = SystemTime::now();
    let r = collect(&mut p, t0).await;
    assert_eq!(count(&r, "log.lines"), 0.0, "start_at = end skips what was there");
    assert_eq!(matches(&r, "error"), 0.0);
    assert_eq!(count(&r, "log.files"), 1.0);
    p.enqueued();

    let text = "INFO a\nERROR disk full\nWARN slow\nERROR  crash: x=1\nWARN again\n";
    append(&log, text.as_bytes());
    let t1 = t0 + Duration::from_secs(1);
    let r = collect(&mut p, t1).await;
    assert_eq!(count(&r, "log.lines"), 5.0);
    assert_eq!(count(&r, "log.bytes_read"), text.len() as f64);
    assert_eq!(matches(&r, "error"), 2.0);
    assert_eq!(matches(&r, "warn"), 2.0);
    assert_eq!(matched(&r, "error"), ["ERROR disk full", "ERROR  crash: x=1"]);
    assert!(matched(&r, "warn").is_empty(), "keep_line = false sends no line");
    for m in r.iter().filter(|r| r.metric == "log.match") {
        assert_eq!(m.event_time, Some(timestamp_of(t1)), "event time = the collection time");
        assert_eq!(double_value(m), Some(1.0));
        assert_eq!(m.tags.get("plugin").map(String::as_str), Some("applog"));
    }
    for r in &r {
        assert!(METRIC_NAMES.contains(&r.metric.as_str()), "undocumented {}", r.metric);
        assert_eq!(r.tags.get("plugin").map(String::as_str), Some("applog"));
    }
    assert_eq!(count(&r, "log.lag_bytes"), 0.0);
    p.enqueued();

    let r = collect(&mut p, t1 + Duration::from_secs(1)).await;
    assert_eq!(count(&r, "log.lines"), 0.0);
    assert_eq!(matches(&r, "error"), 0.0, "the series is sent with 0");
    assert!(matched(&r, "error").is_empty());
}

#[tokio::test]
async fn a_partial_line_waits_for_its_newline() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log")]));
    append(&log, b"ERROR one\nERROR tw");
    let t0 = SystemTime::now();
    let r = collect(&mut p, t0).await;
    assert_eq!(matched(&r, "error"), ["ERROR one"]);
    p.enqueued();
    append(&log, b"o\n");
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    assert_eq!(matched(&r, "error"), ["ERROR two"]);
}

#[tokio::test]
async fn rotation_by_rename_reads_every_line_exactly_once() {
    let env = Env::new();
    let log = env.path("app.log");
    let s = settings(vec![env.glob("app.log")]);
    let mut p = env.build(&s);
    // The writer keeps its descriptor across the rename, as a logger does until it reopens.
    let mut writer = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    writer.write_all(lines("ERROR", 0..3).as_bytes()).unwrap();
    let t0 = SystemTime::now();
    let r = collect(&mut p, t0).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 0..3));
    p.enqueued();

    std::fs::rename(&log, env.path("app.log.1")).unwrap();
    writer.write_all(lines("ERROR", 3..6).as_bytes()).unwrap(); // after the rename, old file
    append(&log, lines("ERROR", 6..9).as_bytes()); // the new file at the path
    let t1 = t0 + Duration::from_secs(1);
    let r = collect(&mut p, t1).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 3..9), "old file finished first, then the new one");
    assert_eq!(count(&r, "log.rotations"), 1.0);
    assert_eq!(count(&r, "log.files"), 2.0, "the rotated file is still read");
    p.enqueued();

    // Late writes to the old file are still read until it has been idle for rotate_wait.
    writer.write_all(b"ERROR late\n").unwrap();
    append(&log, b"ERROR 9\n");
    let t2 = t1 + Duration::from_secs(1);
    let r = collect(&mut p, t2).await;
    assert_eq!(matched(&r, "error"), ["ERROR late", "ERROR 9"]);
    p.enqueued();
    let r = collect(&mut p, t2 + s.rotate_wait + Duration::from_secs(1)).await;
    assert!(matched(&r, "error").is_empty());
    assert_eq!(count(&r, "log.files"), 1.0, "the idle rotated file is closed");
    assert_eq!(count(&r, "log.rotations"), 0.0);
}

#[tokio::test]
async fn rotation_with_a_glob_matching_the_rotated_names_reads_every_line_once() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log*")]));
    append(&log, lines("ERROR", 0..2).as_bytes());
    append(&env.path("app.log.3.gz"), b"ERROR compressed rotations are excluded by default\n");
    let t0 = SystemTime::now();
    assert_eq!(matched(&collect(&mut p, t0).await, "error"), expected("ERROR", 0..2));
    p.enqueued();
    for round in 0..3u32 {
        // logrotate: app.log.1 → app.log.2, app.log → app.log.1, new app.log.
        if env.path("app.log.1").exists() {
            std::fs::rename(env.path("app.log.1"), env.path("app.log.2")).unwrap();
        }
        append(&log, format!("ERROR tail {round}\n").as_bytes());
        std::fs::rename(&log, env.path("app.log.1")).unwrap();
        append(&log, format!("ERROR head {round}\n").as_bytes());
        let r = collect(&mut p, t0 + Duration::from_secs(u64::from(round) + 1)).await;
        let mut got = matched(&r, "error");
        got.sort();
        assert_eq!(got, [format!("ERROR head {round}"), format!("ERROR tail {round}")]);
        p.enqueued();
    }
}

#[tokio::test]
async fn copytruncate_reads_the_tail_from_the_copy_and_the_new_lines() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log*")]));
    // Long enough lines for a fingerprint of the whole first 256 bytes.
    let line = |i: u32| format!("ERROR {i} {}\n", "x".repeat(100));
    let text: String = (0..3).map(line).collect();
    append(&log, text.as_bytes());
    let t0 = SystemTime::now();
    let r = collect(&mut p, t0).await;
    assert_eq!(matched(&r, "error").len(), 3);
    p.enqueued();

    append(&log, line(3).as_bytes()); // written before the rotation, not read yet
    std::fs::copy(&log, env.path("app.log.1")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, line(4).as_bytes());
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    let mut got = matched(&r, "error");
    got.sort();
    assert_eq!(got, [line(3).trim_end(), line(4).trim_end()], "each line once");
    assert_eq!(count(&r, "log.truncations"), 1.0);
    p.enqueued();
    append(&log, line(5).as_bytes());
    let r = collect(&mut p, t0 + Duration::from_secs(2)).await;
    assert_eq!(matched(&r, "error"), [line(5).trim_end()]);
}

#[tokio::test]
async fn truncation_starts_over_and_is_counted() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log")]));
    append(&log, lines("ERROR", 0..5).as_bytes());
    let t0 = SystemTime::now();
    assert_eq!(matched(&collect(&mut p, t0).await, "error").len(), 5);
    p.enqueued();
    // Truncated and rewritten to a shorter size.
    std::fs::write(&log, b"ERROR new\n").unwrap();
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    assert_eq!(matched(&r, "error"), ["ERROR new"]);
    assert_eq!(count(&r, "log.truncations"), 1.0);
    p.enqueued();
    // Truncated and rewritten past the old position: the first bytes changed.
    let long: String = (0..10).map(|i| format!("ERROR again {i}\n")).collect();
    std::fs::write(&log, long.as_bytes()).unwrap();
    let r = collect(&mut p, t0 + Duration::from_secs(2)).await;
    assert_eq!(matched(&r, "error"), expected("ERROR again", 0..10));
    assert_eq!(count(&r, "log.truncations"), 1.0);
}

#[tokio::test]
async fn a_restart_resumes_after_the_enqueued_lines() {
    let env = Env::new();
    let log = env.path("app.log");
    let s = settings(vec![env.glob("app.log")]);
    append(&log, lines("ERROR", 0..3).as_bytes());
    {
        let mut p = env.build(&s);
        let r = collect(&mut p, SystemTime::now()).await;
        assert_eq!(matched(&r, "error"), expected("ERROR", 0..3));
        p.enqueued();
    }
    let positions = env.ctx.state_dir.join("plugins/applog/positions.json");
    assert!(positions.exists(), "positions saved when the plugin is dropped at the latest");
    append(&log, lines("ERROR", 3..5).as_bytes());
    let mut p = env.build(&s);
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 3..5), "no line read twice, none skipped");
}

#[tokio::test]
async fn a_restart_before_enqueued_reads_the_lines_again() {
    let env = Env::new();
    let log = env.path("app.log");
    let s = settings(vec![env.glob("app.log")]);
    append(&log, lines("ERROR", 0..2).as_bytes());
    {
        let mut p = env.build(&s);
        assert_eq!(matched(&collect(&mut p, SystemTime::now()).await, "error").len(), 2);
        p.enqueued();
        append(&log, lines("ERROR", 2..4).as_bytes());
        let r = collect(&mut p, SystemTime::now()).await;
        assert_eq!(matched(&r, "error"), expected("ERROR", 2..4));
        // Dropped before its records were enqueued (agent killed).
    }
    let mut p = env.build(&s);
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 2..4), "not enqueued: read again, nothing lost");
}

#[tokio::test]
async fn a_collection_not_enqueued_or_abandoned_is_read_again() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log")]));
    append(&log, lines("ERROR", 0..3).as_bytes());
    let t0 = SystemTime::now();
    assert_eq!(matched(&collect(&mut p, t0).await, "error").len(), 3);
    // Not enqueued (queue refused it): the next collection covers the same lines.
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 0..3));
    // Abandoned at its first await (a timeout): nothing is committed either.
    let _abandoned = tokio::time::timeout(Duration::ZERO, p.collect(t0 + Duration::from_secs(2))).await;
    let r = collect(&mut p, t0 + Duration::from_secs(3)).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 0..3));
    p.enqueued();
    let r = collect(&mut p, t0 + Duration::from_secs(4)).await;
    assert!(matched(&r, "error").is_empty());
}

#[tokio::test]
async fn a_rotation_while_stopped_finishes_the_old_file_first() {
    let env = Env::new();
    let log = env.path("app.log");
    let s = settings(vec![env.glob("app.log*")]);
    append(&log, lines("ERROR", 0..2).as_bytes());
    {
        let mut p = env.build(&s);
        assert_eq!(matched(&collect(&mut p, SystemTime::now()).await, "error").len(), 2);
        p.enqueued();
    }
    append(&log, lines("ERROR", 2..4).as_bytes());
    std::fs::rename(&log, env.path("app.log.1")).unwrap();
    append(&log, lines("ERROR", 4..6).as_bytes());
    let mut p = env.build(&s);
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), expected("ERROR", 2..6));
    assert_eq!(count(&r, "log.rotations"), 1.0);
}

#[tokio::test]
async fn a_java_stack_trace_is_one_event() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut s = settings(vec![env.glob("app.log")]);
    s.multiline = Some(MultilineSettings {
        start_pattern: r"^\d{4}-\d{2}-\d{2} ".into(),
        flush_after: Duration::from_secs(3),
        ..MultilineSettings::default()
    });
    s.rules.push(LogRule { name: "npe".into(), pattern: "NullPointerException".into(), keep_line: true });
    let mut p = env.build(&s);
    let trace = "2026-01-01 10:00:00 ERROR request failed\n\
                 java.lang.IllegalStateException: boom\n\
                 \tat com.example.Service.handle(Service.java:42)\n\
                 \tat com.example.Server.run(Server.java:7)\n\
                 Caused by: java.lang.NullPointerException\n\
                 \tat com.example.Repo.load(Repo.java:13)\n\
                 \t... 2 more\n";
    append(&log, trace.as_bytes());
    append(&log, b"2026-01-01 10:00:01 INFO next request\n");
    let t0 = SystemTime::now();
    let r = collect(&mut p, t0).await;
    let event = trace.trim_end();
    assert_eq!(matched(&r, "error"), [event], "the whole trace in one raw record");
    assert_eq!(matched(&r, "npe"), [event], "rules match anywhere in the event");
    assert_eq!(count(&r, "log.lines"), 7.0, "the INFO event is pending");
    p.enqueued();
    // The pending INFO event completes after flush_after without continuation.
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    assert_eq!(count(&r, "log.lines"), 0.0);
    p.enqueued();
    append(&log, b"2026-01-01 10:00:02 ERROR last\n\tat x.y(Z.java:1)\n");
    let t2 = t0 + Duration::from_secs(2);
    let r = collect(&mut p, t2).await;
    assert_eq!(count(&r, "log.lines"), 1.0, "the INFO event completed by the next start line");
    assert!(matched(&r, "error").is_empty());
    p.enqueued();
    let r = collect(&mut p, t2 + Duration::from_secs(4)).await;
    assert_eq!(matched(&r, "error"), ["2026-01-01 10:00:02 ERROR last\n\tat x.y(Z.java:1)"]);
    assert_eq!(count(&r, "log.lines"), 2.0);
}

#[tokio::test]
async fn a_pending_event_survives_a_restart_without_loss_or_duplicate() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut s = settings(vec![env.glob("app.log")]);
    s.multiline = Some(MultilineSettings { start_pattern: "^START".into(), ..MultilineSettings::default() });
    append(&log, b"START ERROR a\n  more a\nSTART ERROR b\n  more b\n");
    {
        let mut p = env.build(&s);
        let r = collect(&mut p, SystemTime::now()).await;
        assert_eq!(matched(&r, "error"), ["START ERROR a\n  more a"]);
        p.enqueued();
    }
    append(&log, b"  still b\nSTART c\n");
    let mut p = env.build(&s);
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), ["START ERROR b\n  more b\n  still b"]);
}

#[tokio::test]
async fn an_over_long_line_is_cut_and_counted() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut s = settings(vec![env.glob("app.log")]);
    s.max_line_bytes = 100;
    let mut p = env.build(&s);
    let long = format!("ERROR {}", "y".repeat(1000));
    append(&log, format!("{long}\nERROR short\n").as_bytes());
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), [&long[..100], "ERROR short"]);
    assert_eq!(count(&r, "log.lines_truncated"), 1.0);
    assert_eq!(count(&r, "log.lines"), 2.0);
}

#[tokio::test]
async fn a_new_file_matching_the_glob_is_read_from_its_beginning() {
    let env = Env::new();
    append(&env.path("a.log"), lines("ERROR a", 0..3).as_bytes());
    let mut s = settings(vec![env.glob("*.log")]);
    s.start_at = StartAt::End;
    s.exclude = vec!["skip-*".into()];
    let mut p = env.build(&s);
    let t0 = SystemTime::now();
    assert!(matched(&collect(&mut p, t0).await, "error").is_empty(), "present at start: from its end");
    p.enqueued();
    append(&env.path("b.log"), lines("ERROR b", 0..3).as_bytes());
    append(&env.path("skip-me.log"), b"ERROR excluded\n");
    append(&env.path("a.log"), b"ERROR a 3\n");
    let r = collect(&mut p, t0 + Duration::from_secs(1)).await;
    let mut want = vec!["ERROR a 3".to_owned()];
    want.extend(expected("ERROR b", 0..3));
    assert_eq!(matched(&r, "error"), want);
    assert_eq!(count(&r, "log.files"), 2.0);
}

#[tokio::test]
async fn invalid_utf8_is_replaced_not_fatal() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut p = env.build(&settings(vec![env.glob("app.log")]));
    append(&log, b"ERROR \xc3\x28 bad \xff\n\xfe\xfe\nERROR fine\n");
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(matched(&r, "error"), ["ERROR \u{fffd}( bad \u{fffd}", "ERROR fine"]);
    assert_eq!(count(&r, "log.lines"), 3.0);
}

#[tokio::test]
async fn reading_is_bounded_per_collection_and_loses_nothing() {
    let env = Env::new();
    let log = env.path("app.log");
    let mut s = settings(vec![env.glob("app.log")]);
    s.max_read_bytes_per_collection = 4096;
    s.max_line_bytes = 1024;
    s.max_match_records_per_collection = 20;
    let mut p = env.build(&s);
    let pad = "p".repeat(40);
    let text: String = (0..3000)
        .map(|i| if i < 1000 || i % 10 == 0 { format!("ERROR line {i} {pad}\n") } else { format!("INFO {i} {pad}\n") })
        .collect();
    append(&log, text.as_bytes());
    let t0 = SystemTime::now();
    let (mut all, mut lines, mut rounds, mut capped, mut by_bytes) = (Vec::new(), 0.0, 0u64, 0, 0);
    loop {
        rounds += 1;
        let r = collect(&mut p, t0 + Duration::from_secs(rounds)).await;
        let got = matched(&r, "error");
        let read = count(&r, "log.bytes_read");
        assert!(got.len() <= 20, "at most max_match_records_per_collection");
        assert!(read <= 4096.0 + 1025.0, "the budget, then at most the line it ends in: {read}");
        capped += usize::from(got.len() == 20);
        by_bytes += usize::from(read >= 4096.0);
        lines += count(&r, "log.lines");
        if rounds == 1 {
            assert!(count(&r, "log.lag_bytes") > 0.0, "the backlog shows");
        }
        p.enqueued();
        if got.is_empty() && count(&r, "log.lines") == 0.0 {
            assert_eq!(count(&r, "log.lag_bytes"), 0.0);
            break;
        }
        all.extend(got);
        assert!(rounds < 10_000);
    }
    let want: Vec<String> =
        (0..3000).filter(|i| *i < 1000 || i % 10 == 0).map(|i| format!("ERROR line {i} {pad}")).collect();
    assert_eq!(all, want);
    assert_eq!(lines, 3000.0);
    assert!(capped > 0 && by_bytes > 0, "both bounds were reached ({capped} capped, {by_bytes} by bytes)");
}

#[tokio::test]
async fn no_matching_file_is_not_an_error_and_a_directory_is_skipped() {
    let env = Env::new();
    std::fs::create_dir(env.path("dir.log")).unwrap();
    let mut p = env.build(&settings(vec![env.glob("*.log")]));
    let r = collect(&mut p, SystemTime::now()).await;
    assert_eq!(count(&r, "log.files"), 0.0);
    assert_eq!(count(&r, "log.file_errors"), 0.0);
}

#[test]
fn settings_are_validated_at_build() {
    let env = Env::new();
    let s = LogSettings { paths: vec!["relative/*.log".into()], ..LogSettings::default() };
    let e = s.build("applog", &env.ctx).err().expect("refused");
    assert!(e.message.contains("absolute"), "{e}");
}

/// The plugin in a running agent: matched lines arrive at the aggregator with their raw text;
/// after a graceful restart on the same state directory every line is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_the_agent_every_line_arrives_once_across_a_restart() {
    let fake = common::FakeAggregator::start().await;
    let env = Env::new();
    let log = env.path("app.log");
    append(&log, lines("ERROR", 0..5).as_bytes());
    let mut config = common::test_config(&fake.url(), &env.ctx.state_dir);
    let mut inst = Instance::new("applog", settings(vec![env.glob("app.log")]));
    inst.interval = Duration::from_millis(50);
    config.plugins.log = vec![inst];
    let raw_lines = |records: &[Record]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in records.iter().filter(|r| r.metric == "log.match") {
            *m.entry(String::from_utf8(r.raw.clone().unwrap()).unwrap()).or_insert(0) += 1;
        }
        m
    };
    let wait_lines = |n: usize| {
        let fake = &fake;
        async move {
            common::eventually("matched lines at the aggregator", Duration::from_secs(20), || {
                let got = raw_lines(&fake.unique_records());
                (got.len() >= n).then_some(got)
            })
            .await
        }
    };

    let agent = meshmon_agent::Agent::start(config.clone()).await.unwrap();
    wait_lines(5).await;
    append(&log, lines("ERROR", 5..8).as_bytes());
    wait_lines(8).await;
    assert!(agent.shutdown().await.is_complete());

    append(&log, lines("ERROR", 8..10).as_bytes());
    let agent = meshmon_agent::Agent::start(config).await.unwrap();
    wait_lines(10).await;
    assert!(agent.shutdown().await.is_complete());
    let got = raw_lines(&fake.unique_records()).into_iter().collect::<Vec<_>>();
    let want: Vec<(String, usize)> = expected("ERROR", 0..10).into_iter().map(|l| (l, 1)).collect();
    assert_eq!(got, want, "every line exactly once");
    let m = fake.unique_records().into_iter().find(|r| r.metric == "log.match").unwrap();
    assert_eq!((m.cluster.as_str(), m.node.as_str()), ("c-default", "n-default"), "stamped by the ingress");
}

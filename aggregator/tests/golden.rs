//! Golden-output tests of the window engine: one hand-checked scenario per window kind
//! (tumbling, sliding, session).
//!
//! Role: each test drives a `WindowEngine` through a scripted scenario — two inputs `p0`/`p1`,
//! agents `a0`/`a1`, batches, ticks, a re-sent batch and `finish` — with a recording
//! [`EngineOutput`] that renders every callback as one line, in emission order, and compares
//! the rendering with `tests/golden/<kind>.txt`. Where the oracle property test checks the
//! keyed end state against a brute-force model, these files pin down the exact *sequence* of
//! emissions (first firings, corrections with their revisions, retractions, late and invalid
//! records) in a form a reviewer can read line by line. The comment block above each
//! scenario explains every emission; the golden files are what the engine *should* emit per
//! those semantics, not merely what it emitted once.
//!
//! Rendering (times are plain integer nanoseconds; small numbers keep the files readable):
//! - `-- batch p0 a0#3 now=12 wm=7: m1 c0 t=9 v=3 | …` — a batch from input `p0`, agent `a0`,
//!   sequence 3, processing time 12, judged against watermark 7; then its records.
//! - `-- tick now=26 wm=14`, `-- finish wm=30` — the other steps, with the watermark before.
//! - `   result m1{cluster=c0} [10,20) rev=1 count=… sum=… min=… max=… avg=… last=v@t(a0/3/1)`
//! - `   retract m1{cluster=c0} start=17` — the result stored under that key is deleted.
//! - `   late a1/4/0 m1 t=9 v=100 wm=22 missed=1/1` — missed of total windows of the record.
//! - `   invalid a1/2/2 m1 t=13 v=NaN reason=non_finite_value`
//! - `   => accepted=… late=… invalid=… wm=…` (or `=> duplicate wm=…`) — the batch outcome and
//!   the watermark after the step; `late` counts records dropped as late.
//!
//! Doubles print with `{}`; exact decimals print with all nine fractional digits
//! (`0.300000000`), so the two kinds are told apart at a glance. `none`/`end` are the
//! watermarks before any input and after `finish`.
//!
//! To accept a deliberate change of behaviour, run
//! `MESHMON_UPDATE_GOLDEN=1 cargo test -p meshmon-aggregator --test golden`, which rewrites
//! the golden files instead of comparing — then check every changed line by hand against the
//! scenario comments (and update those comments) before committing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use meshmon_aggregator::engine::{
    Batch, DimensionField, DimensionSpec, EngineConfig, EngineOutput, InvalidRecord, LateRecord, LatestResults, Limits,
    NANO_UNITS, Nanos, Record, SeriesKey, TagDimensions, Value, WATERMARK_END, WATERMARK_NONE, WindowEngine,
    WindowResult, WindowSpec,
};

/// Records may be at most this far ahead of processing time (`now`).
const MAX_FUTURE: Nanos = 5;

// ---------------------------------------------------------------- scenario building blocks

#[derive(Debug, Clone)]
enum Step {
    Batch {
        input: &'static str,
        agent: &'static str,
        seq: u64,
        now: Nanos,
        records: Vec<Record>,
    },
    /// Re-delivers the earlier batch (agent, seq) verbatim from `input`.
    Resend {
        input: &'static str,
        agent: &'static str,
        seq: u64,
        now: Nanos,
    },
    Tick {
        now: Nanos,
    },
    Finish,
}

#[derive(Debug, Clone)]
struct Scenario {
    config: EngineConfig,
    steps: Vec<Step>,
}

fn batch(input: &'static str, agent: &'static str, seq: u64, now: Nanos, records: Vec<Record>) -> Step {
    Step::Batch { input, agent, seq, now, records }
}

fn resend(input: &'static str, agent: &'static str, seq: u64, now: Nanos) -> Step {
    Step::Resend { input, agent, seq, now }
}

fn tick(now: Nanos) -> Step {
    Step::Tick { now }
}

fn rec(metric: &str, cluster: &str, time: Nanos, value: Value) -> Record {
    Record { metric: metric.into(), value, time, cluster: cluster.into(), node: "n0".into(), tags: Vec::new() }
}

fn tagged(mut r: Record, key: &str, value: &str) -> Record {
    r.tags.push((key.into(), value.into()));
    r
}

fn f(v: f64) -> Value {
    Value::Float(v)
}

/// An exact decimal from text such as `"0.1"` (at most nine fractional digits).
fn dec(text: &str) -> Value {
    let (neg, digits) = text.strip_prefix('-').map_or((false, text), |d| (true, d));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(frac.len() <= 9, "{text}: more than nine fractional digits");
    let units: i128 = int.parse().unwrap();
    let nanos: i128 = format!("{frac:0<9}").parse().unwrap();
    let n = units * NANO_UNITS + nanos;
    Value::Decimal(if neg { -n } else { n })
}

fn config(
    window: WindowSpec,
    out_of_orderness: Nanos,
    lateness: Nanos,
    idle: Nanos,
    dims: DimensionSpec,
) -> EngineConfig {
    EngineConfig {
        window,
        out_of_orderness,
        allowed_lateness: lateness,
        idle_timeout: Some(idle),
        series_ttl: 0,
        dimensions: dims,
        limits: Limits { max_future: Some(MAX_FUTURE), max_past: None, ..Limits::default() },
    }
}

// ---------------------------------------------------------------- rendering

fn time(t: Nanos) -> String {
    match t {
        WATERMARK_NONE => "none".into(),
        WATERMARK_END => "end".into(),
        t => t.to_string(),
    }
}

fn value(v: Value) -> String {
    match v {
        Value::Float(x) => format!("{x}"),
        Value::Decimal(n) => {
            let sign = if n < 0 { "-" } else { "" };
            let (units, nanos) = (n.unsigned_abs() / NANO_UNITS as u128, n.unsigned_abs() % NANO_UNITS as u128);
            format!("{sign}{units}.{nanos:09}")
        }
    }
}

fn record_text(r: &Record) -> String {
    let mut s = format!("{} {}", r.metric, r.cluster);
    for (k, v) in &r.tags {
        write!(s, " {k}={v}").unwrap();
    }
    write!(s, " t={} v={}", r.time, value(r.value)).unwrap();
    s
}

fn dims_text(d: &DimensionSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (on, name) in [(d.fleet, "fleet"), (d.cluster, "cluster"), (d.node, "node")] {
        if on {
            parts.push(name.into());
        }
    }
    match &d.tags {
        TagDimensions::All => parts.push("tag(*)".into()),
        TagDimensions::Only(keys) => parts.push(format!("tag({})", keys.join(","))),
        TagDimensions::None => {}
    }
    for set in &d.sets {
        parts.push(format!("set({})", set.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")));
    }
    parts.join(",")
}

/// Renders every callback as one line, in emission order, and keeps the keyed store too.
#[derive(Debug, Default)]
struct Recorder {
    lines: Vec<String>,
    store: LatestResults,
}

impl EngineOutput for Recorder {
    fn result(&mut self, r: WindowResult<'_>) {
        let s = &r.stats;
        self.lines.push(format!(
            "   result {} [{},{}) rev={} count={} sum={} min={} max={} avg={} last={}@{}({}/{}/{})",
            r.series,
            r.window.start,
            time(r.window.end),
            r.revision,
            s.count(),
            value(s.sum()),
            value(s.totals.min),
            value(s.totals.max),
            value(s.avg()),
            value(s.last),
            s.last_time,
            s.last_id.agent,
            s.last_id.sequence,
            s.last_id.index,
        ));
        self.store.result(r);
    }

    fn retract(&mut self, series: &SeriesKey, window_start: Nanos) {
        self.lines.push(format!("   retract {series} start={window_start}"));
        self.store.retract(series, window_start);
    }

    fn late(&mut self, l: LateRecord<'_>) {
        self.lines.push(format!(
            "   late {}/{}/{} {} t={} v={} wm={} missed={}/{}",
            l.id.agent,
            l.id.sequence,
            l.id.index,
            l.record.metric,
            l.record.time,
            value(l.record.value),
            time(l.watermark),
            l.missed_windows,
            l.windows,
        ));
        self.store.late(l);
    }

    fn invalid(&mut self, i: InvalidRecord<'_>) {
        self.lines.push(format!(
            "   invalid {}/{}/{} {} t={} v={} reason={}",
            i.id.agent,
            i.id.sequence,
            i.id.index,
            i.record.metric,
            i.record.time,
            value(i.record.value),
            i.reason,
        ));
        self.store.invalid(i);
    }
}

/// Runs a scenario; returns the rendering and the final keyed store.
fn run(sc: &Scenario) -> (String, LatestResults) {
    let c = &sc.config;
    let mut engine = WindowEngine::new(c.clone()).expect("valid config");
    let mut out = Recorder::default();
    out.lines.push(format!(
        "config window={} out_of_orderness={} allowed_lateness={} idle_timeout={} max_future={} dims={}",
        c.window,
        c.out_of_orderness,
        c.allowed_lateness,
        c.idle_timeout.map_or("none".into(), |t| t.to_string()),
        c.limits.max_future.map_or("none".into(), |t| t.to_string()),
        dims_text(&c.dimensions),
    ));
    let mut sent: BTreeMap<(&str, u64), &Vec<Record>> = BTreeMap::new();
    for step in &sc.steps {
        let wm = time(engine.watermark());
        let (input, agent, seq, now, records) = match step {
            Step::Batch { input, agent, seq, now, records } => {
                assert!(sent.insert((agent, *seq), records).is_none(), "scenario reuses {agent}#{seq}");
                (*input, *agent, *seq, *now, records)
            }
            Step::Resend { input, agent, seq, now } => (*input, *agent, *seq, *now, sent[&(*agent, *seq)]),
            Step::Tick { now } => {
                out.lines.push(format!("-- tick now={now} wm={wm}"));
                engine.handle_tick(*now, &mut out);
                out.lines.push(format!("   => wm={}", time(engine.watermark())));
                continue;
            }
            Step::Finish => {
                out.lines.push(format!("-- finish wm={wm}"));
                engine.finish(&mut out);
                out.lines.push(format!("   => wm={}", time(engine.watermark())));
                continue;
            }
        };
        let recs = if records.is_empty() {
            "(empty)".to_string()
        } else {
            records.iter().map(record_text).collect::<Vec<_>>().join(" | ")
        };
        out.lines.push(format!("-- batch {input} {agent}#{seq} now={now} wm={wm}: {recs}"));
        let o = engine.process_batch(input, &Batch { agent, sequence: seq, records }, now, &mut out);
        let after = time(engine.watermark());
        out.lines.push(if o.duplicate {
            assert_eq!((o.accepted, o.late, o.invalid), (0, 0, 0));
            format!("   => duplicate wm={after}")
        } else {
            format!("   => accepted={} late={} invalid={} wm={after}", o.accepted, o.late, o.invalid)
        });
    }
    let k = engine.counters();
    assert!(k.balanced(), "{k:?}");
    out.lines.push(format!(
        "-- end records_in={} accepted={} late_dropped={} late_partial={} invalid={} duplicate_batches={} \
         results={} corrections={} retractions={} state_size={} series={}",
        k.records_in,
        k.accepted,
        k.late_dropped,
        k.late_partial,
        k.invalid_total(),
        k.duplicate_batches,
        k.results,
        k.corrections,
        k.retractions,
        engine.state_size(),
        engine.series_count(),
    ));
    let mut text = out.lines.join("\n");
    text.push('\n');
    (text, out.store)
}

/// Compares `actual` with `tests/golden/<name>.txt`, or rewrites the file when
/// `MESHMON_UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden").join(format!("{name}.txt"));
    if std::env::var("MESHMON_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        eprintln!("golden: rewrote {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MESHMON_UPDATE_GOLDEN=1 creates it)", path.display()))
        .replace("\r\n", "\n");
    if expected == actual {
        return;
    }
    let (exp, act): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let line = (0..exp.len().max(act.len())).find(|&i| exp.get(i) != act.get(i)).unwrap_or(0);
    panic!(
        "golden file {} differs first at line {}:\n  expected: {}\n  actual:   {}\n\
         ---- full actual output ----\n{actual}----\n\
         If the change is intended, check it by hand and rerun with MESHMON_UPDATE_GOLDEN=1.",
        path.display(),
        line + 1,
        exp.get(line).unwrap_or(&"<end of file>"),
        act.get(line).unwrap_or(&"<end of output>"),
    );
}

// ---------------------------------------------------------------- tumbling

// Tumbling windows of 10: [0,10), [10,20), …; out-of-orderness 2, allowed lateness 5, idle
// timeout 10, records at most 5 ahead of `now`. A window w fires when wm ≥ w.end and accepts
// corrections while w.end + 5 > wm (wm at the start of the batch). Dimensions: fleet,
// cluster, the `region` tag and the set [cluster, region]; only `d1` records carry a region,
// so `m1` has 3 series (fleet, c0, c1) and `d1` 4 (fleet, c0, region=eu, c0+eu).
// Input watermark = its max valid event time − 2; global = min over non-idle inputs.
//
//  1 p0 a0#1: m1 t=1 (c0), t=3 (c1) in order. p0 → 1; wm none → 1.
//  2 p1 a1#1: m1 t=2, d1 t=4 = 0.1. p1 → 2; min(1, 2) = 1: wm stays 1.
//  3 p0 a0#2: t=9. p0 → 7; wm = min(7, 2) = 2.
//  4 p0 a0#3: t=7 — out of order (2 behind p0's max 9, within the bound): just accepted.
//  5 p1 a1#2: d1 t=8 = 0.2, m1 t=12, NaN at t=13 → invalid (and not counted in p1's max).
//    p1 → 10; wm = min(7, 10) = 7. Nothing ends by 7.
//  6 p0 a0#4: m1 c1 t=14, and t=30 > now 14 + 5 → invalid future_time (also ignored for the
//    watermark). p0 → 12; wm = min(12, 10) = 10 → [0,10) fires for all 7 series:
//    m1 fleet {1.5, 2.5, 4, 3, 0.5} sum 11.5 avg 2.3, last t=9 (a0/2/0); c0 without 2.5;
//    c1 {2.5}; d1 0.1 + 0.2 = 0.3 exactly, avg 0.15, last t=8 (a1/2/0).
//  7 p1 a1#3: m1 c1 t=5 = 6.5 — after [0,10) fired (wm 10) but 10 + 5 > 10: a correction,
//    rev=1 of m1 fleet (sum 18, avg 3) and m1 c1 ({2.5, 6.5}, last 6.5@5); also c0 t=16.
//    p1 → 14; wm = min(12, 14) = 12.
//  8 p0 a0#5: t=20. p0 → 18; p1 (last active 15, now 20) holds: wm = 14.
//  9 p0 a0#6: t=24. p0 → 22; p1 still active (24 − 15 = 9 ≤ 10): wm stays 14.
// 10 tick now=26: p1 idle (26 − 15 = 11 > 10) and stops holding: wm = 22 → [10,20) fires:
//    fleet {12:1, 14:6, 16:2}, c0 {1, 2}, c1 {6}. [0,10) is past its lateness (15 ≤ 22): its
//    state is freed and the d1 series (no other windows) are released.
// 11 p1 a1#4 rejoins: t=9 misses [0,10) (10 + 5 ≤ 22) → late missed=1/1, counted nowhere;
//    t=18 → correction rev=1 of [10,20) fleet (sum 12) and c0 (sum 6, last 3@18).
//    p1 → 16 < 22: the watermark never goes back.
// 12 p0 a0#7: t=32. p0 → 30, but p1 (active again, at 16) holds wm at 22: [20,30) waits.
// 13 a1#4 re-sent: a duplicate — no output (it would otherwise re-count t=18 and re-report
//    the late t=9), watermark unchanged.
// 14 p1 a1#5: c1 t=33. p1 → 31; wm = min(30, 31) = 30 → [20,30) fires: fleet and c0 {1, 2}.
// 15 finish: [30,40) fires: fleet {4, 5}, c0 {4}, c1 {5}. Everything is freed.
fn tumbling() -> Scenario {
    let dims = DimensionSpec {
        fleet: true,
        cluster: true,
        node: false,
        tags: TagDimensions::Only(vec!["region".into()]),
        sets: vec![vec![DimensionField::Cluster, DimensionField::Tag("region".into())]],
    };
    let eu = |r| tagged(r, "region", "eu");
    Scenario {
        config: config(WindowSpec::Tumbling { size: 10, offset: 0 }, 2, 5, 10, dims),
        steps: vec![
            batch("p0", "a0", 1, 3, vec![rec("m1", "c0", 1, f(1.5)), rec("m1", "c1", 3, f(2.5))]),
            batch("p1", "a1", 1, 4, vec![rec("m1", "c0", 2, f(4.0)), eu(rec("d1", "c0", 4, dec("0.1")))]),
            batch("p0", "a0", 2, 9, vec![rec("m1", "c0", 9, f(3.0))]),
            batch("p0", "a0", 3, 10, vec![rec("m1", "c0", 7, f(0.5))]),
            batch(
                "p1",
                "a1",
                2,
                12,
                vec![eu(rec("d1", "c0", 8, dec("0.2"))), rec("m1", "c0", 12, f(1.0)), rec("m1", "c0", 13, f(f64::NAN))],
            ),
            batch("p0", "a0", 4, 14, vec![rec("m1", "c1", 14, f(6.0)), rec("m1", "c0", 30, f(9.0))]),
            batch("p1", "a1", 3, 15, vec![rec("m1", "c1", 5, f(6.5)), rec("m1", "c0", 16, f(2.0))]),
            batch("p0", "a0", 5, 20, vec![rec("m1", "c0", 20, f(1.0))]),
            batch("p0", "a0", 6, 24, vec![rec("m1", "c0", 24, f(2.0))]),
            tick(26),
            batch("p1", "a1", 4, 27, vec![rec("m1", "c0", 9, f(100.0)), rec("m1", "c0", 18, f(3.0))]),
            batch("p0", "a0", 7, 28, vec![rec("m1", "c0", 32, f(4.0))]),
            resend("p1", "a1", 4, 29),
            batch("p1", "a1", 5, 30, vec![rec("m1", "c1", 33, f(5.0))]),
            Step::Finish,
        ],
    }
}

// ---------------------------------------------------------------- sliding

// Sliding windows of size 10 every 5: [0,10), [5,15), [10,20), …; every record lies in two
// windows. Out-of-orderness 2, allowed lateness 3, idle timeout 10. Dimension: fleet only,
// so one series per metric (`m1` doubles, `d1` decimals). A record misses window w iff
// w.end + 3 ≤ wm at the start of its batch; it is dropped only if it misses both.
//
//  1 p0 a0#1: m1 t=5, t=6, d1 t=6 = 0.1 — each in [0,10) and [5,15). p0 → 4; wm 4.
//  2 p1 a1#1: m1 t=8, d1 t=7 = 0.2. p1 → 6; wm stays min(4, 6) = 4.
//  3 p0 a0#2: t=12, NaN at t=11 → invalid. p0 → 10; wm = min(10, 6) = 6: nothing ends by 6.
//  4 p1 a1#2: t=13, then t=11 (2 behind, within the bound). p1 → 11; wm = min(10, 11) = 10
//    → [0,10) fires: m1 {1, 2, 3} (t=5, 6, 8), d1 0.1 + 0.2 = 0.3 exactly.
//  5 p0 a0#3: t=9 after [0,10) fired, 10 + 3 > 10 → correction rev=1 of m1 [0,10)
//    {1, 2, 3, 7} sum 13, last 7@9; t=9 also lands in [5,15), which has not fired. t=15.
//    p0 → 13; wm = min(13, 11) = 11.
//  6 p1 a1#3: t=16. p1 → 14; wm = min(13, 14) = 13. Nothing ends in (11, 13].
//  7 p0 a0#4: t=7 at wm 13 — partial lateness: [0,10) is past (10 + 3 ≤ 13) but [5,15) is
//    not (18 > 13) → late missed=1/2, accepted into [5,15) only, no correction of [0,10).
//    t=17. p0 → 15; wm = min(15, 14) = 14.
//  8 p1 a1#4: t=18. p1 → 16; wm = min(15, 16) = 15 → [5,15) fires: m1 t=5..13 = {1, 2, 3,
//    7, 10 (the partially late t=7), 4, 5, 6} sum 38 avg 4.75, last 5@13; d1 again 0.3.
//  9 p0 a0#5: t=22 = 10. p0 → 20; p1 (last active 19) holds: wm = 16.
// 10 tick now=30: p1 idle (30 − 19 > 10): wm = p0's 20 → [10,20) fires: m1 {4, 5, 6, 8, 9,
//    11, 13} sum 56 avg 8, last 13@18. [5,15) is past its lateness (18 ≤ 20): the panes of
//    [5,10) are freed and d1 is released.
// 11 p1 a1#5 rejoins at wm 20: t=14 misses [5,15) (18 ≤ 20) but not [10,20) (23 > 20) →
//    late missed=1/2 and counted in [10,20); t=8 misses [0,10) and [5,15) → late missed=2/2,
//    dropped; t=19 → [10,20) too. Correction rev=1 of [10,20): + {7, 9} = sum 72, avg 8,
//    last 9@19. p1 → 17 < 20: wm stays 20.
// 12 p0 a0#6: t=27. p0 → 25, but p1 (at 17) holds wm at 20: [15,25) waits.
// 13 a1#5 re-sent: duplicate, no output.
// 14 p1 a1#6: t=29. p1 → 27; wm = min(25, 27) = 25 → [15,25) fires: {8, 9, 11, 13, 9, 10}
//    (t=15, 16, 17, 18, 19, 22) sum 60 avg 10, last 10@22.
// 15 finish: [20,30) {10, 17, 18} and [25,35) {17, 18} fire; both last 18@29.
fn sliding() -> Scenario {
    let dims = DimensionSpec { fleet: true, cluster: false, node: false, tags: TagDimensions::None, sets: vec![] };
    let m = |t, v| rec("m1", "c0", t, f(v));
    Scenario {
        config: config(WindowSpec::Sliding { size: 10, slide: 5, offset: 0 }, 2, 3, 10, dims),
        steps: vec![
            batch("p0", "a0", 1, 6, vec![m(5, 1.0), m(6, 2.0), rec("d1", "c0", 6, dec("0.1"))]),
            batch("p1", "a1", 1, 8, vec![m(8, 3.0), rec("d1", "c0", 7, dec("0.2"))]),
            batch("p0", "a0", 2, 12, vec![m(12, 4.0), m(11, f64::NAN)]),
            batch("p1", "a1", 2, 13, vec![m(13, 5.0), m(11, 6.0)]),
            batch("p0", "a0", 3, 15, vec![m(9, 7.0), m(15, 8.0)]),
            batch("p1", "a1", 3, 16, vec![m(16, 9.0)]),
            batch("p0", "a0", 4, 17, vec![m(7, 10.0), m(17, 11.0)]),
            batch("p1", "a1", 4, 19, vec![m(18, 13.0)]),
            batch("p0", "a0", 5, 22, vec![m(22, 10.0)]),
            tick(30),
            batch("p1", "a1", 5, 31, vec![m(14, 7.0), m(8, 15.0), m(19, 9.0)]),
            batch("p0", "a0", 6, 32, vec![m(27, 17.0)]),
            resend("p1", "a1", 5, 33),
            batch("p1", "a1", 6, 34, vec![m(29, 18.0)]),
            Step::Finish,
        ],
    }
}

// ---------------------------------------------------------------- session

// Sessions with gap 10: records of a series closer than 10 share a session
// [first, last + 10). Out-of-orderness 2, allowed lateness 10, idle timeout 20. A session
// fires when wm ≥ its end; a record is late iff t + 10 + 10 ≤ wm (start of its batch).
// Dimension: cluster only; every record is in c0, so one series per metric.
//
//  1 p0 a0#1: m1 t=1, d1 t=2 = 0.1. p0 → 0; wm 0. Sessions m1 [1,11), d1 [2,12).
//  2 p1 a1#1: m1 t=5, d1 t=5 = 0.2. p1 → 3; wm stays 0. A = m1 [1,15), d1 [2,15).
//  3 p1 a1#2: t=3 (out of order: 2 behind p1's max 5) joins A; NaN at t=4 → invalid.
//  4 p0 a0#2: t=17 — 17 − 5 = 12 ≥ 10, a separate session B = [17,27). p0 → 15; p1 (at 3)
//    holds: wm 3.
//  5 p1 a1#3: t=18 extends B to [17,28) (not fired: no output). p1 → 16; wm = min(15, 16)
//    = 15 → A [1,15) fires {1, 2, 3} last 2@5; d1 [2,15) fires with 0.1 + 0.2 = 0.3 exactly.
//  6 p0 a0#3: t=2 at wm 15: 2 + 20 > 15, inside A → correction rev=1 of [1,15): + 6.
//  7 p0 a0#4: t=32 → session C = [32,42). p0 → 30; p1 (last active 18, now 33: not idle)
//    at 16: wm 16.
//  8 tick now=39: p1 idle (39 − 18 > 20): wm = 30 → B [17,28) fires {4, 5}.
//  9 p1 a1#4 rejoins: t=12 at wm 30 (12 + 20 > 30, not late) bridges A (12 − 5 < 10) and
//    B (17 − 12 < 10): they merge into [1,28) under A's key. B's stored key 17 is retracted
//    and the merged session re-emitted as a correction: rev=2 (A's key already had rev 0
//    and 1), count 7, sum 28, avg 4, last 5@18. p1 → 16 < 30: wm stays 30.
// 10 p0 a0#5: t=46 → session D = [46,56). p0 → 44, but p1 (at 16, active again) holds wm
//    at 30: C [32,42) waits.
// 11 a1#4 re-sent: duplicate, no output (it would otherwise add t=12 again).
// 12 p1 a1#5: t=48 extends D to [46,58). p1 → 46; wm = min(44, 46) = 44 → C [32,42) fires.
//    d1's session is past end + gap + lateness (35 ≤ 44): freed and released (no output).
// 13 p0 a0#6: t=34 extends fired C at its end to [32,44); 44 ≤ wm 44 still → correction under
//    the same key, rev=1, sum 18.
// 14 p1 a1#6: t=20 at wm 44: 20 + 20 ≤ 44 → late missed=1/1, although session [1,28) is
//    still held (28 + 20 > 44): lateness is judged on the record's own gap window.
// 15 p0 a0#7: t=35 extends fired C past the watermark, to [32,45) with 45 > 44: the result
//    stored under 32 is no longer final and is retracted until the session completes.
// 16 finish: C [32,45) is emitted again under key 32 (rev=2, sum 30) and D [46,58) first
//    (rev=0, {9, 10}).
fn session() -> Scenario {
    let dims = DimensionSpec { fleet: false, cluster: true, node: false, tags: TagDimensions::None, sets: vec![] };
    let m = |t, v| rec("m1", "c0", t, f(v));
    Scenario {
        config: config(WindowSpec::Session { gap: 10 }, 2, 10, 20, dims),
        steps: vec![
            batch("p0", "a0", 1, 2, vec![m(1, 1.0), rec("d1", "c0", 2, dec("0.1"))]),
            batch("p1", "a1", 1, 5, vec![m(5, 2.0), rec("d1", "c0", 5, dec("0.2"))]),
            batch("p1", "a1", 2, 6, vec![m(3, 3.0), m(4, f64::NAN)]),
            batch("p0", "a0", 2, 17, vec![m(17, 4.0)]),
            batch("p1", "a1", 3, 18, vec![m(18, 5.0)]),
            batch("p0", "a0", 3, 19, vec![m(2, 6.0)]),
            batch("p0", "a0", 4, 33, vec![m(32, 8.0)]),
            tick(39),
            batch("p1", "a1", 4, 40, vec![m(12, 7.0)]),
            batch("p0", "a0", 5, 47, vec![m(46, 9.0)]),
            resend("p1", "a1", 4, 48),
            batch("p1", "a1", 5, 49, vec![m(48, 10.0)]),
            batch("p0", "a0", 6, 50, vec![m(34, 10.0)]),
            batch("p1", "a1", 6, 51, vec![m(20, 100.0)]),
            batch("p0", "a0", 7, 52, vec![m(35, 12.0)]),
            Step::Finish,
        ],
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn golden_tumbling() {
    check_golden("tumbling", &run(&tumbling()).0);
}

#[test]
fn golden_sliding() {
    check_golden("sliding", &run(&sliding()).0);
}

#[test]
fn golden_session() {
    check_golden("session", &run(&session()).0);
}

/// What a keyed sink holds at the end, without the record index of `last` (reversing a
/// batch renumbers its records).
type EndState = (BTreeMap<(String, Nanos), String>, BTreeSet<String>, BTreeSet<String>);

fn end_state(store: &LatestResults) -> EndState {
    let results = store
        .results
        .iter()
        .map(|((series, start), r)| {
            let s = &r.stats;
            let text = format!(
                "end={} count={} sum={} min={} max={} last={}@{}({}/{})",
                r.window.end,
                s.count(),
                value(s.sum()),
                value(s.totals.min),
                value(s.totals.max),
                value(s.last),
                s.last_time,
                s.last_id.agent,
                s.last_id.sequence
            );
            ((series.to_string(), *start), text)
        })
        .collect();
    let late =
        store.late.iter().map(|(id, r, m, w)| format!("{}/{} t={} {m}/{w}", id.agent, id.sequence, r.time)).collect();
    let invalid =
        store.invalid.iter().map(|(id, r, why)| format!("{}/{} t={} {why}", id.agent, id.sequence, r.time)).collect();
    (results, late, invalid)
}

/// Reversing the records inside every batch (a disorder the out-of-orderness bound always
/// admits: lateness is judged against the watermark at the start of the batch) leaves the
/// keyed results, late and invalid records of every golden scenario unchanged.
#[test]
fn golden_results_survive_reordering_within_batches() {
    for (name, sc) in [("tumbling", tumbling()), ("sliding", sliding()), ("session", session())] {
        let mut reversed = sc.clone();
        for step in &mut reversed.steps {
            if let Step::Batch { records, .. } = step {
                records.reverse();
            }
        }
        assert_eq!(end_state(&run(&sc).1), end_state(&run(&reversed).1), "{name}");
    }
}

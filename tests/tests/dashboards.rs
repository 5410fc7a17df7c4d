//! The Grafana dashboards (`dashboards/`), checked without a Grafana server.
//!
//! 1. Types: `dashboards/check/check.mjs` compiles every dashboard JSON as
//!    `(<json>) satisfies Dashboard` (and each panel against its plugin's option types) from npm
//!    `@grafana/schema` with `tsc --strict`. The packages are installed with `npm ci` (versions
//!    pinned by `dashboards/check/package-lock.json`) into `<target>/dashboards-check`, reused by
//!    later runs. A deliberately broken dashboard must fail the same check.
//! 2. Queries: every variable's and every panel's InfluxQL is filled in the way Grafana fills it
//!    (`$timeFilter`, `$__interval`, single values raw, multi-value variables as escaped regex
//!    alternatives) and run against a real InfluxDB (Debian `influxdb`, started here on loopback)
//!    holding what the pipeline wrote: `meshmon-aggregator serve` (embedded mode) with an
//!    `[influxdb]` section pointing at it, fed the test's records over gRPC, including late
//!    records that correct windows which had already fired (and been written). Each query must
//!    run without error and return series, and the aggregate panels must return exactly the
//!    per-window statistics a brute-force fold of the pushed records gives (the corrected
//!    windows: final values, revision 1). The only exception: the self-monitoring panels over
//!    the Kafka-only fields of `meshmon_self` ([`KAFKA_ONLY_FIELDS`]) must run and return
//!    nothing, as nothing writes those fields in embedded mode.
//! 3. Data links: every graph panel's data link, interpolated for each returned series the way
//!    Grafana does (`${__field.labels.X:percentencode}`, `${__value.time}`), names the series'
//!    metric, dimension and window exactly.
//!
//! Node/npm and influxd are required, not optional: without them the tests fail and say how to
//! install them (`.ci/run` installs Node.js and npm). InfluxDB is started by the shared harness
//! `meshmon_tests::influxdb`, which polls it with a deadline; every wait for the pipeline
//! (points written, corrections, `meshmon_self` points) polls InfluxDB with a deadline too;
//! nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::{self, AckStatus, RecordBatch};
use meshmon_tests::influxdb::InfluxDb;
use meshmon_tests::{Aggregator, LogsOnFailure, grpc_push, query_value, wait_for};
use serde_json::Value as Json;

const DB: &str = "meshmon";
const WINDOW: &str = "tumbling:10s";
const WINDOW_MS: i64 = 10_000;
/// Windows of records per series (20 minutes: inside the `now() - 1h` time filter).
const WINDOWS: i64 = 120;
/// The window (index) corrected by a late record after it fired.
const CORRECTED: i64 = 5;
const METRICS: [&str; 2] = ["shop.order_value", "checkout.latency"];
const AGENT: &str = "dashboards-agent";
/// The `instance` tag of `meshmon_self`.
const INSTANCE: &str = "dashboards";
/// Fields of `meshmon_self` written in Kafka mode only: the panels over them are empty here.
const KAFKA_ONLY_FIELDS: [&str; 4] =
    ["kafka_lag", "kafka_dead_lettered", "kafka_records_in", "checkpoint_duration_seconds"];
const TIMEOUT: Duration = Duration::from_secs(120);
const AGGREGATOR_URL: &str = "http://127.0.0.1:7780";
/// The statistics of the `stat` variable, in the order of the fields they name.
const STATS: [&str; 6] = ["max", "min", "avg", "last", "sum", "count"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The cargo target dir (the test binary is `<target>/<profile>/deps/<name>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Every dashboard: (file name, JSON).
fn dashboards() -> Vec<(String, Json)> {
    let dir = repo().join("dashboards/json");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "expected the fleet, cluster, node and self-monitoring dashboards in {}", dir.display());
    out
}

// ------------------------------------------------------------------ 1. types (tsc)

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `<target>/dashboards-check` with `npm ci` done for the pinned package-lock.json.
fn npm_workdir() -> PathBuf {
    let missing = |what: &str| {
        panic!(
            "`{what}` is required by this test and was not found on PATH. Install Node.js and npm \
             (Debian: `apt-get install nodejs npm`; .ci/run does this on CI)."
        )
    };
    if on_path("node").is_none() {
        missing("node");
    }
    if on_path("npm").is_none() {
        missing("npm");
    }
    let src = repo().join("dashboards/check");
    let work = target_dir().join("dashboards-check");
    std::fs::create_dir_all(&work).unwrap();
    let lock = std::fs::read(src.join("package-lock.json")).unwrap();
    let installed = work.join("node_modules/.package-lock.json").exists()
        && std::fs::read(work.join("package-lock.json")).is_ok_and(|l| l == lock);
    if !installed {
        std::fs::copy(src.join("package.json"), work.join("package.json")).unwrap();
        std::fs::write(work.join("package-lock.json"), &lock).unwrap();
        let (ok, text) = run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&work));
        assert!(ok, "npm ci in {} failed (the npm registry must be reachable):\n{text}", work.display());
    }
    work
}

#[test]
fn dashboards_type_check_against_grafana_schema() {
    let work = npm_workdir();
    let check = repo().join("dashboards/check/check.mjs");
    let (ok, text) = run(Command::new("node").arg(&check).arg(&work));
    println!("{text}");
    assert!(ok, "dashboards fail the @grafana/schema type check:\n{text}");
    assert!(text.contains(&format!("ok: {} dashboards", dashboards().len())), "{text}");

    // The check is not vacuous: a misspelt key, a wrong enum value and a data link without a
    // URL each fail it.
    let (_, fleet) = dashboards().into_iter().find(|(f, _)| f == "fleet-overview.json").unwrap();
    let broken: [Breakage; 3] = [
        ("titel", |d| d["panels"][0]["titel"] = "x".into()),
        ("bottomx", |d| d["panels"][0]["options"]["legend"]["placement"] = "bottomx".into()),
        ("'url' is missing", |d| {
            d["panels"][0]["fieldConfig"]["defaults"]["links"][0].as_object_mut().unwrap().remove("url");
        }),
    ];
    for (want, breaks) in broken {
        let dir = tempfile::tempdir().unwrap();
        let mut d = fleet.clone();
        breaks(&mut d);
        std::fs::write(dir.path().join("broken.json"), serde_json::to_vec_pretty(&d).unwrap()).unwrap();
        let (ok, text) = run(Command::new("node").arg(&check).arg(&work).env("MESHMON_DASHBOARDS_JSON", dir.path()));
        assert!(!ok && text.contains(want), "a dashboard broken by {want:?} must fail the check:\n{text}");
    }
}

// ------------------------------------------------------------------ InfluxDB

/// The shared InfluxDB harness (`meshmon_tests::influxdb`) with database `meshmon`.
struct Influx {
    db: InfluxDb,
}

impl Influx {
    fn start(dir: &Path) -> Influx {
        let db = InfluxDb::start(dir).unwrap_or_else(|e| {
            panic!("{e}\nThis test needs a real InfluxDB 1.x: the Debian package `influxdb` (../shared/SERVERS.md).")
        });
        db.create_database(DB).unwrap();
        Influx { db }
    }

    /// The first result of `q` (epoch ms timestamps); an InfluxQL error fails the test.
    fn query_ok(&self, q: &str) -> Json {
        let answer = self.db.query(Some(DB), q).unwrap_or_else(|e| panic!("InfluxQL failed: {e}\n  query: {q}"));
        answer["results"][0].clone()
    }
}

// ------------------------------------------------------------------ the data

/// One written aggregate point: its statistics and revision.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    max: f64,
    min: f64,
    avg: f64,
    last: f64,
    sum: f64,
    count: i64,
    revision: i64,
}

impl Point {
    fn stat(&self, s: &str) -> f64 {
        match s {
            "max" => self.max,
            "min" => self.min,
            "avg" => self.avg,
            "last" => self.last,
            "sum" => self.sum,
            "count" => self.count as f64,
            "revision" => self.revision as f64,
            _ => panic!("unknown statistic {s}"),
        }
    }
}

/// (metric, dimension key) → window start → point, as finally stored.
type Expected = BTreeMap<(String, String), BTreeMap<i64, Point>>;
/// (metric, dimension key) → window start → its records (time, value).
type Records = BTreeMap<(String, String), BTreeMap<i64, Vec<(i64, f64)>>>;
/// One series of an InfluxQL answer: tags, columns, rows.
type Series = (BTreeMap<String, String>, Vec<String>, Vec<Vec<Json>>);
/// A way to break a dashboard, and what the type check must then say.
type Breakage = (&'static str, fn(&mut Json));

fn kind_of(dimension: &str) -> &'static str {
    match dimension.split_once(['=', ':']).map(|(k, _)| k) {
        _ if dimension == "fleet" => "fleet",
        Some("cluster") => "cluster",
        Some("node") => "node",
        Some("tag") => "tag",
        _ => "set",
    }
}

/// Folds records (time, value) of one window into a point.
fn fold(records: &[(i64, f64)], revision: i64) -> Point {
    let sum: f64 = records.iter().map(|r| r.1).sum();
    Point {
        max: records.iter().map(|r| r.1).fold(f64::MIN, f64::max),
        min: records.iter().map(|r| r.1).fold(f64::MAX, f64::min),
        avg: sum / records.len() as f64,
        last: records.iter().max_by_key(|r| r.0).unwrap().1,
        sum,
        count: records.len() as i64,
        revision,
    }
}

/// One pushed record (event time in Unix ms; a double value).
#[derive(Debug, Clone)]
struct Rec {
    metric: &'static str,
    at: i64,
    value: f64,
    node: &'static str,
    cluster: &'static str,
    env: &'static str,
}

/// The dimension keys a record counts in (the aggregator's default dimensions: fleet, cluster,
/// node, every tag), `%`, `,`, `=` escaped as in the HTTP API's dimension keys.
fn dimensions(r: &Rec) -> Vec<String> {
    let esc = |s: &str| s.replace('%', "%25").replace(',', "%2C").replace('=', "%3D");
    vec![
        "fleet".into(),
        format!("cluster={}", esc(r.cluster)),
        format!("node={}", esc(r.node)),
        format!("tag:env={}", esc(r.env)),
    ]
}

/// Synthetic records: two metrics, [`WINDOWS`] windows from `base`, nodes in clusters (one
/// cluster name needs escaping), a tag. Returns (on time, late): the late ones are the last
/// record of window 5 of node `db-1` of each metric, pushed after that window fired.
fn records(base: i64) -> (Vec<Rec>, Vec<Rec>) {
    // (node, cluster, env)
    let nodes = [("web-1", "c1", "prod"), ("web-2", "c1", "prod"), ("db-1", "c=1,x%", "dev")];
    let (mut on_time, mut late) = (Vec::new(), Vec::new());
    for (m, metric) in METRICS.iter().enumerate() {
        for w in 0..WINDOWS {
            let start = base + w * WINDOW_MS;
            for (n, (node, cluster, env)) in nodes.iter().enumerate() {
                let count = 1 + (w * 7 + n as i64 * 3 + m as i64) % 5;
                for i in 0..count {
                    let at = start + 1 + i * 1000 + n as i64 * 37;
                    let value = ((w * 13 + i * 7 + n as i64 * 5 + m as i64) % 97) as f64 * 0.25 + 1.0;
                    let rec = Rec { metric, at, value, node, cluster, env };
                    if w == CORRECTED && n == 2 && i == count - 1 {
                        late.push(rec);
                    } else {
                        on_time.push(rec);
                    }
                }
            }
        }
    }
    on_time.sort_by_key(|r| r.at);
    (on_time, late)
}

/// What InfluxDB must hold once the windows of `on_time` fired and then `late` corrected
/// them: the brute-force fold per (metric, dimension, window); revision 1 where a late record
/// joined a window that had already fired.
fn expected(base: i64, on_time: &[Rec], late: &[Rec]) -> Expected {
    let mut recs = Records::new();
    let mut fired: BTreeSet<(String, String, i64)> = BTreeSet::new();
    for (r, is_late) in on_time.iter().map(|r| (r, false)).chain(late.iter().map(|r| (r, true))) {
        let start = base + (r.at - base).div_euclid(WINDOW_MS) * WINDOW_MS;
        for dim in dimensions(r) {
            if !is_late {
                fired.insert((r.metric.to_string(), dim.clone(), start));
            }
            recs.entry((r.metric.to_string(), dim)).or_default().entry(start).or_default().push((r.at, r.value));
        }
    }
    let late_windows: BTreeSet<(String, String, i64)> = late
        .iter()
        .flat_map(|r| {
            let start = base + (r.at - base).div_euclid(WINDOW_MS) * WINDOW_MS;
            dimensions(r).into_iter().map(move |d| (r.metric.to_string(), d, start))
        })
        .collect();
    recs.into_iter()
        .map(|((metric, dim), windows)| {
            let points = windows
                .into_iter()
                .map(|(start, rs)| {
                    let key = (metric.clone(), dim.clone(), start);
                    let revision = i64::from(late_windows.contains(&key) && fired.contains(&key));
                    (start, fold(&rs, revision))
                })
                .collect();
            ((metric, dim), points)
        })
        .collect()
}

fn to_batch(sequence: u64, records: &[Rec]) -> RecordBatch {
    RecordBatch {
        agent_id: AGENT.into(),
        sequence,
        sent_at: None,
        records: records
            .iter()
            .map(|r| v1::Record {
                metric: r.metric.into(),
                value: Some(v1::record::Value::DoubleValue(r.value)),
                event_time: Some(nanos_to_timestamp(r.at * 1_000_000)),
                cluster: r.cluster.into(),
                node: r.node.into(),
                tags: [("env".to_string(), r.env.to_string())].into(),
                raw: None,
            })
            .collect(),
    }
}

/// Pushes `batches` over one gRPC connection; every record must be accepted.
fn push(rt: &tokio::runtime::Runtime, grpc: SocketAddr, batches: Vec<RecordBatch>) {
    let want: Vec<(i32, u32)> = batches.iter().map(|b| (AckStatus::Accepted as i32, b.records.len() as u32)).collect();
    let acks = grpc_push(rt, grpc, batches, TIMEOUT).unwrap();
    let got: Vec<(i32, u32)> = acks.iter().map(|a| (a.status, a.accepted)).collect();
    assert_eq!(got, want, "{acks:?}");
}

/// The first difference between InfluxDB's `meshmon_aggregate` points of [`METRICS`] and
/// `want`, as `Err`.
fn compare(influx: &Influx, want: &Expected) -> Result<(), String> {
    let q = format!("SELECT * FROM meshmon_aggregate WHERE metric = '{}' OR metric = '{}'", METRICS[0], METRICS[1]);
    let answer = influx.db.query(Some(DB), &q)?;
    let rows = InfluxDb::rows(&answer);
    let mut got: BTreeMap<(String, String, i64), serde_json::Map<String, Json>> = BTreeMap::new();
    for row in rows {
        let key = (
            row["metric"].as_str().unwrap_or_default().to_string(),
            row["dimension"].as_str().unwrap_or_default().to_string(),
            row["time"].as_i64().unwrap_or_default(),
        );
        got.insert(key, row);
    }
    let want_n: usize = want.values().map(BTreeMap::len).sum();
    if got.len() != want_n {
        return Err(format!("{} points, expected {want_n}", got.len()));
    }
    for ((metric, dim), windows) in want {
        for (start, p) in windows {
            let row =
                got.get(&(metric.clone(), dim.clone(), *start)).ok_or(format!("no point {metric} {dim} {start}"))?;
            for s in STATS.iter().chain(&["revision"]) {
                let g = row[*s].as_f64().unwrap_or(f64::NAN);
                if !close(g, p.stat(s)) {
                    return Err(format!("{metric} {dim} {start}: {s} = {g}, expected {}", p.stat(s)));
                }
            }
            if row["kind"] != kind_of(dim) || row["window"] != WINDOW || row["end_ms"] != start + WINDOW_MS {
                return Err(format!("{metric} {dim} {start}: {row:?}"));
            }
        }
    }
    Ok(())
}

fn poll_ok(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    if wait_for(what, TIMEOUT, || check().ok()).is_err() {
        panic!("timed out after {TIMEOUT:?} waiting for {what}; last difference: {}", check().unwrap_err());
    }
}

/// The pipeline: `meshmon-aggregator serve` (embedded mode) writing to `influx`; the records
/// pushed over gRPC, the windows fired (all points in InfluxDB at revision 0), then the late
/// records pushed and the corrections written. Returns the aggregator, what InfluxDB holds and
/// the number of records pushed.
fn run_pipeline(dir: &Path, influx: &Influx, base: i64, logs: &mut LogsOnFailure) -> (Aggregator, Expected, usize) {
    let config = format!(
        r#"
[engine]
window = "{WINDOW}"
out_of_orderness = "2s"
allowed_lateness = "1h"
idle_timeout = "0"
shards = 1

[engine.limits]
max_future = "0"
max_past = "0"

[influxdb]
url = "{}"
database = "{DB}"
flush_every = "50ms"
instance = "{INSTANCE}"
self_every = "1s"
"#,
        influx.db.url()
    );
    let aggregator = Aggregator::start(dir, &config).unwrap();
    logs.add(&aggregator.proc);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut on_time, late) = records(base);
    // Closers (one per metric, a window that never fires): the watermark passes every window.
    let close_at = base + WINDOWS * WINDOW_MS + 5_000;
    let closers: Vec<Rec> = METRICS
        .iter()
        .map(|metric| Rec { metric, at: close_at, value: 1.0, node: "closer", cluster: "c0", env: "none" })
        .collect();
    let first = expected(base, &on_time, &[]);
    let want = expected(base, &on_time, &late);
    let pushed = on_time.len() + closers.len() + late.len();
    on_time.extend(closers);
    let batches: Vec<RecordBatch> =
        on_time.chunks(500).enumerate().map(|(i, chunk)| to_batch(i as u64 + 1, chunk)).collect();
    let sequence = batches.len() as u64 + 1;
    push(&rt, aggregator.grpc, batches);
    poll_ok("InfluxDB to hold every window's first firing", || compare(influx, &first));
    push(&rt, aggregator.grpc, vec![to_batch(sequence, &late)]);
    let corrected = want.values().flat_map(BTreeMap::values).filter(|p| p.revision == 1).count();
    assert_eq!(corrected, 4 * METRICS.len(), "each late record corrects its fleet, cluster, node and tag window");
    poll_ok("InfluxDB to hold the corrections", || compare(influx, &want));
    (aggregator, want, pushed)
}

/// Waits until `meshmon_self` shows the whole run (records in, results, corrections) and spans
/// at least two `$__interval` buckets, so the `non_negative_derivative` panels have points.
fn wait_for_self_metrics(influx: &Influx, pushed: usize, expected: &Expected) {
    let first_firings: usize = expected.values().map(BTreeMap::len).sum();
    let corrections = expected.values().flat_map(BTreeMap::values).filter(|p| p.revision == 1).count();
    let want = (pushed as i64, (first_firings + corrections) as i64, corrections as i64);
    poll_ok("meshmon_self to cover the run in two 10 s buckets", || {
        let q = format!(
            "SELECT last(records_in), last(results), last(corrections), count(records_in) FROM meshmon_self \
             WHERE instance = '{INSTANCE}' AND time >= now() - 1h GROUP BY time(10s) fill(none)"
        );
        let rows = InfluxDb::rows(&influx.db.query(Some(DB), &q)?);
        let last = rows.last().ok_or("no meshmon_self points")?;
        let got = (last["last"].as_i64(), last["last_1"].as_i64(), last["last_2"].as_i64());
        if got != (Some(want.0), Some(want.1), Some(want.2)) {
            return Err(format!("records_in, results, corrections = {got:?}, expected {want:?}"));
        }
        if rows.len() < 2 {
            return Err(format!("{} bucket(s)", rows.len()));
        }
        Ok(())
    });
}

// ------------------------------------------------------------------ variables, as Grafana fills them

/// Grafana's `escapeRegex` (what its InfluxDB datasource applies to multi-value variables).
fn escape_regex(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\^$*+?.()|[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Debug, Clone)]
struct Var {
    name: String,
    multi: bool,
    values: Vec<String>,
}

/// Fills `$timeFilter`, `$__interval` and the variables in `q` like Grafana's InfluxDB
/// datasource: a single-value variable as is, a multi-value (or include-all) one regex-escaped,
/// several values as `(a|b)`. Also checks each variable is used where that is valid InfluxQL:
/// multi-value ones only as `/^$v$/`, single ones only inside quotes.
fn fill(q: &str, vars: &[Var]) -> String {
    let mut out = q.replace("$timeFilter", "time >= now() - 1h").replace("$__interval", "10s");
    let mut sorted: Vec<&Var> = vars.iter().collect();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.name.len()));
    for v in sorted {
        let token = format!("${}", v.name);
        if !out.contains(&token) {
            continue;
        }
        let value = if v.multi {
            assert!(
                out.matches(&token).count() == out.matches(&format!("/^{token}$/")).count(),
                "multi-value variable {token} used outside /^{token}$/ in: {q}"
            );
            match v.values.as_slice() {
                [one] => escape_regex(one),
                many => format!("({})", many.iter().map(|s| escape_regex(s)).collect::<Vec<_>>().join("|")),
            }
        } else {
            let quoted = out.matches(&format!("'{token}'")).count() + out.matches(&format!("\"{token}\"")).count();
            assert_eq!(out.matches(&token).count(), quoted, "variable {token} used unquoted in: {q}");
            let one = v.values.first().unwrap_or_else(|| panic!("variable {} has no value", v.name));
            assert!(!one.contains(['\'', '"']), "value {one:?} of {token} would need quoting");
            one.clone()
        };
        out = out.replace(&token, &value);
    }
    let rest: Vec<_> = out.match_indices('$').filter(|(i, _)| !out[i + 1..].starts_with('/')).collect();
    assert!(rest.is_empty(), "unfilled variables in {out:?} (from {q:?})");
    out
}

/// The rows of every series of a result: (tags, columns, values).
fn series(res: &Json) -> Vec<Series> {
    res["series"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|s| {
                    let tags = s["tags"]
                        .as_object()
                        .map(|t| {
                            t.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                        })
                        .unwrap_or_default();
                    let cols =
                        s["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
                    let vals = s["values"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()).collect();
                    (tags, cols, vals)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves a dashboard's variables in order (query variables run against InfluxDB), with
/// `choose` picking values by name (else: all values for multi/include-all, the first otherwise).
fn resolve_vars(influx: &Influx, dash: &Json, choose: &BTreeMap<&str, Vec<String>>, ran: &mut usize) -> Vec<Var> {
    let mut vars: Vec<Var> = Vec::new();
    for v in dash["templating"]["list"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap().to_string();
        let multi = v["multi"].as_bool().unwrap_or(false) || v["includeAll"].as_bool().unwrap_or(false);
        let query = v["query"].as_str().unwrap_or_default();
        let options: Vec<String> = match v["type"].as_str().unwrap() {
            "query" => {
                let q = fill(query, &vars);
                let res = influx.query_ok(&q);
                *ran += 1;
                let values: Vec<String> = series(&res)
                    .into_iter()
                    .flat_map(|(_, _, rows)| rows.into_iter().map(|r| r[1].as_str().unwrap().to_string()))
                    .collect();
                assert!(!values.is_empty(), "variable {name}: no values from {q}");
                values
            }
            "custom" => query.split(',').map(|s| s.trim().to_string()).collect(),
            "textbox" | "constant" => vec![query.to_string()],
            other => panic!("variable {name}: type {other} not covered by this test"),
        };
        let values = match choose.get(name.as_str()) {
            Some(want) => {
                for w in want {
                    assert!(options.contains(w), "variable {name}: {w:?} not among {options:?}");
                }
                want.clone()
            }
            None if multi => options,
            None => options[..1].to_vec(),
        };
        vars.push(Var { name, multi, values });
    }
    vars
}

// ------------------------------------------------------------------ data links, as Grafana fills them

/// `encodeURIComponent` plus `!'()*` (Grafana's `percentencode` format).
fn percent_encode(s: &str) -> String {
    query_value(s)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Interpolates a data link URL for one point of a series, as Grafana does: dashboard variables
/// (default format for links: `encodeURI`), `${__field.labels.X[:percentencode]}`,
/// `${__value.time}`. Panics on any other `${…}`.
fn link_url(url: &str, vars: &[Var], labels: &BTreeMap<String, String>, time: i64) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find("${") {
        out += &rest[..i];
        let end = rest[i..].find('}').unwrap() + i;
        let expr = &rest[i + 2..end];
        let (name, format) = expr.split_once(':').map_or((expr, None), |(n, f)| (n, Some(f)));
        let raw = if name == "__value.time" {
            time.to_string()
        } else if let Some(label) = name.strip_prefix("__field.labels.") {
            labels.get(label).unwrap_or_else(|| panic!("link uses label {label}, series has {labels:?}")).clone()
        } else {
            let v = vars.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("link uses unknown ${{{expr}}}"));
            assert!(!v.multi, "link uses multi-value variable {name}");
            v.values[0].clone()
        };
        out += &match format {
            Some("percentencode") => percent_encode(&raw),
            None => {
                assert!(raw.bytes().all(|b| b.is_ascii_graphic()), "{raw:?} would be changed by encodeURI");
                raw
            }
            Some(f) => panic!("format {f} not covered by this test"),
        };
        rest = &rest[end + 1..];
    }
    out + rest
}

fn query_params(url: &str) -> BTreeMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (percent_decode(k), percent_decode(v))).collect()
}

// ------------------------------------------------------------------ 2 + 3. queries and links

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn every_dashboard_query_runs_against_influxdb_and_returns_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let influx = Influx::start(dir.path());
    logs.add(influx.db.proc.as_ref().unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let base = (now - 30 * 60_000) / WINDOW_MS * WINDOW_MS;
    let (_aggregator, expected, pushed) = run_pipeline(dir.path(), &influx, base, &mut logs);
    let metric = METRICS[0].to_string();
    let mut kafka_only_queries = BTreeSet::new();

    let mut queries_run = 0;
    let mut links_checked = 0;
    let mut values_checked = 0;
    let mut example_link = String::new();
    for (file, dash) in dashboards() {
        if file == "self-monitoring.json" {
            wait_for_self_metrics(&influx, pushed, &expected);
        }
        let vars_of: Vec<&str> =
            dash["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        // The selections to run the dashboard with: every statistic, and (fleet overview) every kind.
        let mut scenarios: Vec<BTreeMap<&str, Vec<String>>> = Vec::new();
        let kinds: Vec<&str> =
            if vars_of.contains(&"kind") { vec!["fleet", "cluster", "node", "tag"] } else { vec![""] };
        let stats: Vec<&str> = if vars_of.contains(&"stat") { STATS.to_vec() } else { vec![""] };
        for kind in &kinds {
            for stat in &stats {
                let mut c = BTreeMap::new();
                if vars_of.contains(&"metric") {
                    c.insert("metric", vec![metric.clone()]);
                }
                if !kind.is_empty() {
                    c.insert("kind", vec![kind.to_string()]);
                }
                if !stat.is_empty() {
                    c.insert("stat", vec![stat.to_string()]);
                }
                scenarios.push(c);
            }
        }
        for choose in &scenarios {
            let vars = resolve_vars(&influx, &dash, choose, &mut queries_run);
            let value_of = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.values.clone()).unwrap_or_default();
            for panel in dash["panels"].as_array().unwrap() {
                let title = panel["title"].as_str().unwrap_or_default();
                let links = panel["fieldConfig"]["defaults"]["links"].as_array().cloned().unwrap_or_default();
                let graph = panel["type"] == "timeseries";
                let aggregates = panel["targets"].to_string().contains("meshmon_aggregate");
                if graph && aggregates {
                    assert!(!links.is_empty(), "{file}: graph panel {title:?} has no data link to the drill-down");
                }
                for target in panel["targets"].as_array().unwrap() {
                    assert_eq!(target["rawQuery"], true, "{file}: {title}: not a raw InfluxQL query");
                    let q = fill(target["query"].as_str().unwrap(), &vars);
                    let res = influx.query_ok(&q);
                    queries_run += 1;
                    let all = series(&res);
                    // Kafka-only fields: nothing writes them in embedded mode.
                    let kafka_only: Vec<&str> = KAFKA_ONLY_FIELDS.into_iter().filter(|f| q.contains(f)).collect();
                    if file == "self-monitoring.json" && !kafka_only.is_empty() {
                        assert!(all.is_empty(), "{file}: {title:?} over Kafka-only {kafka_only:?} has data:\n  {q}");
                        kafka_only_queries.insert(title.to_string());
                        continue;
                    }
                    assert!(!all.is_empty(), "{file}: panel {title:?} with {choose:?} returned no series:\n  {q}");

                    // Data links: for every series, the link names its metric, dimension, window.
                    for link in &links {
                        let url = link["url"].as_str().unwrap();
                        for (tags, cols, rows) in &all {
                            assert_eq!(cols[0], "time", "{q}");
                            let t = rows[0][0].as_i64().unwrap();
                            let href = link_url(url, &vars, tags, t);
                            assert!(href.starts_with(&format!("{AGGREGATOR_URL}/?")), "{href}");
                            let p = query_params(&href);
                            for key in ["metric", "dimension", "window"] {
                                assert_eq!(
                                    p.get(key),
                                    tags.get(key),
                                    "{file}: {title}: link {href} vs series {tags:?}"
                                );
                            }
                            assert_eq!(p["start"], t.to_string(), "{href}");
                            assert_eq!((t - base) % WINDOW_MS, 0, "{href}: start is not a window start");
                            links_checked += 1;
                            if example_link.is_empty() && tags.get("kind").is_none() && p["dimension"].contains('%') {
                                example_link = href;
                            }
                        }
                    }

                    // Values.
                    let id = panel["id"].as_i64().unwrap();
                    let stat = value_of("stat").first().cloned().unwrap_or_default();
                    if file != "self-monitoring.json" {
                        let dims: BTreeSet<String> = all.iter().map(|(t, _, _)| t["dimension"].clone()).collect();
                        let want_dims: BTreeSet<String> = expected
                            .keys()
                            .filter(|(m, d)| {
                                *m == metric
                                    && match value_of("kind").first() {
                                        Some(k) => kind_of(d) == k,
                                        None => kind_of(d) == file.trim_end_matches("-view.json"),
                                    }
                            })
                            .map(|(_, d)| d.clone())
                            .collect();
                        assert_eq!(dims, want_dims, "{file}: {title}: dimensions with {choose:?}");
                        for (tags, cols, rows) in &all {
                            let want = &expected[&(metric.clone(), tags["dimension"].clone())];
                            let check = |col: &str, f: &dyn Fn(&Point) -> f64| {
                                let c =
                                    cols.iter().position(|c| c == col).unwrap_or_else(|| panic!("{col} in {cols:?}"));
                                let got: BTreeMap<i64, f64> =
                                    rows.iter().map(|r| (r[0].as_i64().unwrap(), num(&r[c]))).collect();
                                assert_eq!(got.len(), want.len(), "{file}: {title}: {tags:?}: points");
                                for (start, p) in want {
                                    let g = got.get(start).unwrap_or_else(|| panic!("{title}: no point at {start}"));
                                    assert!(
                                        close(*g, f(p)),
                                        "{file}: {title}: {tags:?} {col} at {start}: {g} != {}",
                                        f(p)
                                    );
                                }
                            };
                            match id {
                                // The main graph: the chosen statistic of every window, as written.
                                1 => check(&stat, &|p| p.stat(&stat)),
                                // Per $__interval = one window here: sums, rollups, revisions.
                                _ if cols.contains(&"count".to_string()) && title.starts_with("records per") => {
                                    check("count", &|p| p.count as f64)
                                }
                                _ if cols.contains(&"avg".to_string()) => {
                                    check("avg", &|p| p.sum / p.count as f64);
                                    if cols.contains(&"max".to_string()) {
                                        check("max", &|p| p.max);
                                        check("min", &|p| p.min);
                                    }
                                }
                                _ if cols.contains(&"max".to_string()) => check("max", &|p| p.max),
                                _ if cols.contains(&"min".to_string()) => check("min", &|p| p.min),
                                _ if cols.contains(&"revision".to_string()) => {
                                    check("revision", &|p| p.revision as f64)
                                }
                                // Records in range: the sum of all counts.
                                _ if cols == &["time", "sum"] => {
                                    assert_eq!(rows.len(), 1);
                                    let total: i64 = want.values().map(|p| p.count).sum();
                                    assert_eq!(num(&rows[0][1]), total as f64, "{file}: {title}: {tags:?}");
                                }
                                _ => panic!("{file}: panel {id} {title:?}: no expected values for columns {cols:?}"),
                            }
                            values_checked += 1;
                        }
                    } else {
                        let instances: BTreeSet<&str> = all.iter().map(|(t, _, _)| t["instance"].as_str()).collect();
                        assert_eq!(instances, [INSTANCE].into(), "{title}");
                        // Rates and gauges: numbers, never negative (the counters never go back).
                        for (_, cols, rows) in &all {
                            for r in rows {
                                for v in &r[1..] {
                                    assert!(num(v) >= 0.0, "{title}: {cols:?} {r:?}");
                                }
                            }
                            values_checked += 1;
                        }
                    }
                }
            }
        }
    }
    // The corrected window shows its final values and revision 1 (checked above via the panels),
    // and the main panel's count per window equals what the records add up to.
    let fleet = &expected[&(metric.clone(), "fleet".to_string())];
    assert_eq!(fleet[&(base + CORRECTED * WINDOW_MS)].revision, 1);
    // Exactly the three Kafka panels were allowed to be empty.
    let kafka_panels: BTreeSet<String> =
        ["Kafka consumer lag", "Kafka dead-lettered and input", "checkpoint duration"].map(String::from).into();
    assert_eq!(kafka_only_queries, kafka_panels);
    println!(
        "{queries_run} InfluxQL queries ran, {values_checked} series checked against the written values, \
         {links_checked} data links checked; e.g. {example_link}"
    );
    assert!(queries_run > 100 && values_checked > 100 && links_checked > 100);
}

//! The built-in page in a real browser: headless Chromium, driven over the DevTools protocol,
//! against `meshmon-aggregator serve` fed by a direct gRPC push.
//!
//! The data carries markup — a tag value `<script>window.__pwned=1</script>` and a node named
//! `<img src=x onerror=window.__pwned=2>` — which the page must show as text, never run. The
//! test checks that the charts render with a time axis that spans the returned points, that
//! clicking a point opens a drill-down with exactly the point's count of raw rows (for the
//! fleet and for the hostile node's dimension, whose key goes through the page's URL
//! encoding), that a Grafana data link (the fleet overview dashboard's, `/?metric=&dimension=&
//! window=&start=`) opens the drill-down of its window, and it saves a screenshot under the cargo
//! target dir (path printed).
//!
//! Chromium is required, not optional: without it the test fails and says how to install it
//! (Debian package `chromium`; `.ci/run` installs it). Set `CHROMIUM` to use another binary.
//! Nothing sleeps: the test polls the API and the page's DOM with deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use meshmon_proto::nanos_to_timestamp;
use meshmon_proto::v1::{self, AckStatus, RecordBatch};
use meshmon_tests::{Aggregator, LogsOnFailure, Proc, get_json, grpc_push, path_str, query_value, wait_for};
use serde_json::{Value as Json, json};
use tungstenite::{Message, WebSocket};

const TIMEOUT: Duration = Duration::from_secs(60);
const METRIC: &str = "page.latency";
const SCRIPT_TAG: &str = "<script>window.__pwned=1</script>";
const HOSTILE_NODE: &str = "<img src=x onerror=window.__pwned=2>";
/// The hostile node's dimension key (`=` escaped as `%3D`).
const HOSTILE_NODE_KEY: &str = "node=<img src%3Dx onerror%3Dwindow.__pwned%3D2>";

/// The Chromium binary: `$CHROMIUM`, else `chromium` on `PATH`, else `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_default();
    let found = on_path.or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()));
    found.unwrap_or_else(|| {
        panic!(
            "headless Chromium is required by this test and was not found ($CHROMIUM, `chromium` on PATH, \
             /usr/bin/chromium). Install the Debian package: `apt-get install chromium` (.ci/run does this on CI)."
        )
    })
}

/// A DevTools protocol session with one page target, over its WebSocket.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(ws_url: &str) -> Result<Cdp, String> {
        let rest = ws_url.strip_prefix("ws://").ok_or_else(|| format!("not a ws:// URL: {ws_url}"))?;
        let host = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client(ws_url, stream).map_err(|e| format!("WebSocket handshake: {e}"))?;
        Ok(Cdp { ws, next_id: 1 })
    }

    /// Sends one command and returns its `result` (events in between are skipped).
    fn call(&mut self, method: &str, params: Json) -> Result<Json, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).map_err(|e| format!("{method}: {e}"))?;
        loop {
            let text = match self.ws.read().map_err(|e| format!("{method}: {e}"))? {
                Message::Text(t) => t.as_str().to_owned(),
                _ => continue,
            };
            let reply: Json = serde_json::from_str(&text).map_err(|e| format!("{method}: {e}: {text}"))?;
            if reply["id"] != json!(id) {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Evaluates a JavaScript expression in the page and returns its value (JSON).
    fn eval(&mut self, expression: &str) -> Result<Json, String> {
        let r = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }))?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {ex}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Json::Null))
    }

    /// Polls `expression` until `done` accepts its value; returns that value.
    fn wait(&mut self, what: &str, expression: &str, done: impl Fn(&Json) -> bool) -> Json {
        let mut last = Json::Null;
        let found = wait_for(what, TIMEOUT, || {
            last = self.eval(expression).unwrap_or_else(|e| json!({ "eval error": e }));
            done(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|e| panic!("{e}; last value: {last}"))
    }
}

fn record(base: i64, at: i64, metric: &str, value: &str, node: &str, tags: &[(&str, &str)]) -> v1::Record {
    v1::Record {
        metric: metric.into(),
        value: Some(v1::record::Value::DecimalValue(value.parse().unwrap())),
        event_time: Some(nanos_to_timestamp((base + at) * 1_000_000)),
        cluster: "c1".into(),
        node: node.into(),
        tags: tags.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        raw: Some(format!("{metric} {value} from {node}").into_bytes()),
    }
}

/// The records (ms after `base`): window [0, 10 s) holds 3 (2 on the hostile node), window
/// [10 s, 20 s) holds 2 (1 on the hostile node); a record of another metric at 60 s moves the
/// watermark past both.
fn batches(base: i64) -> Vec<RecordBatch> {
    let note = [("note", SCRIPT_TAG)];
    let records = vec![
        record(base, 7_500, METRIC, "12.5", HOSTILE_NODE, &[]),
        record(base, 1_000, METRIC, "0.1", HOSTILE_NODE, &note),
        record(base, 4_000, METRIC, "0.2", "n2", &note),
        record(base, 15_000, METRIC, "2", "n2", &[]),
        record(base, 12_000, METRIC, "1", HOSTILE_NODE, &note),
    ];
    let close = vec![record(base, 60_000, "page.close", "0", "n2", &[])];
    [records, close]
        .into_iter()
        .zip(1..)
        .map(|(records, sequence)| RecordBatch { agent_id: "page-test".into(), sequence, sent_at: None, records })
        .collect()
}

fn push(addr: SocketAddr, batches: Vec<RecordBatch>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n = batches.len();
    let acks: Vec<i32> = grpc_push(&rt, addr, batches, TIMEOUT).unwrap().into_iter().map(|a| a.status).collect();
    assert_eq!(acks, vec![AckStatus::Accepted as i32; n]);
}

/// The `count` of each stored point of `dimension`, once there are `n` points.
fn wait_for_points(api: SocketAddr, base: i64, dimension: &str, n: usize) -> Vec<u64> {
    let path = format!(
        "/api/aggregates?metric={}&dimension={}&from={base}&to={}",
        query_value(METRIC),
        query_value(dimension),
        base + 600_000
    );
    wait_for(&format!("{n} points of {dimension}"), TIMEOUT, || {
        let body = get_json(api, &path).ok()?;
        let counts: Vec<u64> = body["points"].as_array()?.iter().filter_map(|p| p["count"].as_u64()).collect();
        (counts.len() == n).then_some(counts)
    })
    .unwrap()
}

/// Starts headless Chromium on `url` with a fresh profile; returns it and its page's WebSocket URL.
fn start_chromium(dir: &Path, url: &str, logs: &mut LogsOnFailure) -> (Proc, String) {
    let profile = dir.join("chromium-profile");
    let profile_arg = format!("--user-data-dir={}", path_str(&profile).unwrap());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        &profile_arg,
        url,
    ];
    let home = path_str(dir).unwrap();
    let mut proc = Proc::start("chromium", &chromium(), &args, &[("HOME", home)], dir).unwrap();
    logs.add(&proc);
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/<id>"
    let devtools: SocketAddr = proc
        .wait_for_log_line("Chromium's DevTools address", TIMEOUT, |line| {
            let rest = line.split_once("DevTools listening on ws://")?.1;
            rest.split('/').next()?.parse().ok()
        })
        .unwrap();
    let ws_url = wait_for("the page target", TIMEOUT, || {
        let targets = get_json(devtools, "/json/list").ok()?;
        targets
            .as_array()?
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
    })
    .unwrap();
    (proc, ws_url)
}

/// Clicks the count chart's point starting at `start` and waits for the whole drill-down;
/// returns what the raw panel shows.
fn drill(cdp: &mut Cdp, start: i64) -> Json {
    let click = format!(
        "(() => {{ const c = document.querySelector('svg.chart[data-stat=\"count\"] .point[data-start=\"{start}\"]'); \
         if (!c) return null; \
         c.dispatchEvent(new MouseEvent('click', {{ bubbles: true }})); return c.getAttribute('data-count'); }})()"
    );
    let count = cdp.eval(&click).unwrap();
    assert!(count.is_string(), "no point starting at {start} to click: {count}");
    cdp.wait(
        "the drill-down to complete",
        "document.getElementById('raw-summary').getAttribute('data-complete')",
        |v| v == "true",
    );
    cdp.eval(
        "(() => { const s = document.getElementById('raw-summary'); \
         const rows = [...document.querySelectorAll('#raw-table tbody tr')]; \
         return { clicked_count: CLICKED, rows: rows.length, records: s.getAttribute('data-records'), \
           point_count: s.getAttribute('data-point-count'), status: document.getElementById('raw-status').textContent, \
           panel_hidden: document.getElementById('raw-panel').hidden, \
           values: rows.map(r => r.children[1].textContent).sort(), \
           nodes: rows.map(r => r.children[6].textContent).sort(), \
           tags: rows.flatMap(r => [...r.children[7].children].map(t => t.textContent)), \
           injected: document.querySelectorAll('#raw-panel img, #raw-panel script, #dimension img, #dimension script').length, \
           images: document.images.length, scripts: document.scripts.length, \
           pwned: typeof window.__pwned }; })()"
            .replace("CLICKED", &count.to_string())
            .as_str(),
    )
    .unwrap()
}

/// The drill-down URL of the point at `start` of `dimension`, from the data link of the fleet
/// overview dashboard's main panel (dashboards/json/fleet-overview.json), interpolated the way
/// Grafana does it for that point's series (labels metric, dimension, window).
fn deep_link(aggregator_url: &str, dimension: &str, start: i64) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/json/fleet-overview.json");
    let dash: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let template = dash["panels"][0]["fieldConfig"]["defaults"]["links"][0]["url"].as_str().unwrap();
    let url = template
        .replace("${aggregator_url}", aggregator_url)
        .replace("${__field.labels.metric:percentencode}", &query_value(METRIC))
        .replace("${__field.labels.dimension:percentencode}", &query_value(dimension))
        .replace("${__field.labels.window:percentencode}", &query_value("tumbling:10s"))
        .replace("${__value.time}", &start.to_string());
    assert!(!url.contains("${"), "data link variables this test does not fill: {url}");
    url
}

#[test]
fn page_renders_drills_down_and_shows_markup_as_text() {
    let chromium_bin = chromium(); // fail first, and clearly, without a browser
    eprintln!("using {}", chromium_bin.display());
    let dir = tempfile::tempdir().unwrap();
    let mut logs = LogsOnFailure::default();
    let config = "[engine]\nwindow = \"tumbling:10s\"\nout_of_orderness = \"2s\"\nallowed_lateness = \"30s\"\n\
                  idle_timeout = \"0\"\n";
    let mut aggregator = Aggregator::start(dir.path(), config).unwrap();
    logs.add(&aggregator.proc);
    let api = aggregator.http;

    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let base = (now_ms / 60_000 - 10) * 60_000;
    push(aggregator.grpc, batches(base));
    assert_eq!(wait_for_points(api, base, "fleet", 2), [3, 2]);
    assert_eq!(wait_for_points(api, base, HOSTILE_NODE_KEY, 2), [2, 1]);

    let url = format!("http://{api}/#metric={METRIC}&dimension=fleet");
    let (mut browser, ws_url) = start_chromium(dir.path(), &url, &mut logs);
    let mut cdp = Cdp::connect(&ws_url).unwrap();

    // The charts: two points per statistic; the x axis spans the points (first start at the
    // left edge of the plot, the second start, 10 s later, half way along the 20 s axis).
    let points = "[...document.querySelectorAll('svg.chart[data-stat=\"count\"] .point')]\
                  .map(c => [c.getAttribute('data-start'), c.getAttribute('data-count'), Number(c.getAttribute('cx'))])";
    let counts = cdp.wait("two points in the count chart", points, |v| v.as_array().is_some_and(|a| a.len() == 2));
    let starts = [base.to_string(), (base + 10_000).to_string()];
    assert_eq!((&counts[0][0], &counts[0][1]), (&json!(starts[0]), &json!("3")), "{counts}");
    assert_eq!((&counts[1][0], &counts[1][1]), (&json!(starts[1]), &json!("2")), "{counts}");
    let page = cdp
        .eval(
            "(() => { const bg = document.querySelector('svg.chart[data-stat=\"count\"] rect.plot-bg'); \
             return { metric: document.getElementById('metric').value, dimension: document.getElementById('dimension').value, \
               all_points: document.querySelectorAll('svg.chart .point').length, \
               plot_x: Number(bg.getAttribute('x')), plot_w: Number(bg.getAttribute('width')), \
               error_hidden: document.getElementById('error').hidden, \
               options: [...document.querySelectorAll('#dimension option')].map(o => o.textContent) }; })()",
        )
        .unwrap();
    assert_eq!((&page["metric"], &page["dimension"]), (&json!(METRIC), &json!("fleet")), "{page}");
    assert_eq!(page["all_points"], json!(12), "six charts of two points: {page}");
    assert_eq!(page["error_hidden"], json!(true), "{page}");
    let (plot_x, plot_w) = (page["plot_x"].as_f64().unwrap(), page["plot_w"].as_f64().unwrap());
    let (x0, x1) = (counts[0][2].as_f64().unwrap(), counts[1][2].as_f64().unwrap());
    assert!((x0 - plot_x).abs() < 0.1, "first point at the left edge: cx {x0}, plot x {plot_x}");
    assert!((x1 - (plot_x + plot_w / 2.0)).abs() < 0.1, "second point half way: cx {x1}, plot {plot_x}+{plot_w}");
    let options: Vec<&str> = page["options"].as_array().unwrap().iter().filter_map(Json::as_str).collect();
    // Options show decoded dimension values, as text (their values stay the API keys).
    assert!(options.contains(&format!("node = {HOSTILE_NODE}").as_str()), "{options:?}");
    assert!(options.contains(&format!("tag note = {SCRIPT_TAG}").as_str()), "{options:?}");

    // Drill into the fleet's first point: 3 rows, markup shown as text, nothing injected.
    let shown = drill(&mut cdp, base);
    let tag_text = format!("note={SCRIPT_TAG}");
    assert_eq!(shown["clicked_count"], json!("3"), "{shown}");
    assert_eq!(
        (&shown["rows"], &shown["records"], &shown["point_count"]),
        (&json!(3), &json!("3"), &json!("3")),
        "{shown}"
    );
    assert_eq!((&shown["status"], &shown["panel_hidden"]), (&json!(""), &json!(false)), "{shown}");
    assert_eq!(shown["values"], json!(["0.1", "0.2", "12.5"]), "{shown}");
    assert_eq!(shown["nodes"], json!([HOSTILE_NODE, HOSTILE_NODE, "n2"]), "{shown}");
    assert_eq!(shown["tags"], json!([tag_text, tag_text]), "{shown}");
    assert_eq!((&shown["injected"], &shown["images"], &shown["scripts"]), (&json!(0), &json!(0), &json!(1)), "{shown}");
    assert_eq!(shown["pwned"], json!("undefined"), "{shown}");

    // Switch to the hostile node's dimension (its key goes through the page's URL encoding).
    let select = format!(
        "(() => {{ const d = document.getElementById('dimension'); d.value = {}; \
         d.dispatchEvent(new Event('change')); return d.value; }})()",
        json!(HOSTILE_NODE_KEY)
    );
    assert_eq!(cdp.eval(&select).unwrap(), json!(HOSTILE_NODE_KEY));
    let counts = cdp.wait("the hostile node's points", points, |v| {
        v.as_array().is_some_and(|a| a.iter().map(|p| p[1].clone()).collect::<Vec<_>>() == [json!("2"), json!("1")])
    });
    assert_eq!(counts[0][0], json!(starts[0]), "{counts}");
    let shown = drill(&mut cdp, base);
    assert_eq!(
        (&shown["rows"], &shown["records"], &shown["point_count"]),
        (&json!(2), &json!("2"), &json!("2")),
        "{shown}"
    );
    assert_eq!(shown["nodes"], json!([HOSTILE_NODE, HOSTILE_NODE]), "{shown}");
    assert_eq!(shown["values"], json!(["0.1", "12.5"]), "{shown}");
    assert_eq!((&shown["injected"], &shown["pwned"]), (&json!(0), &json!("undefined")), "{shown}");

    // A Grafana data link (the fleet overview's, interpolated as Grafana does for the hostile
    // node's second point) opens the page on that metric, dimension and window's drill-down.
    let link = deep_link(&format!("http://{api}"), HOSTILE_NODE_KEY, base + 10_000);
    cdp.call("Page.navigate", json!({ "url": link })).unwrap();
    let opened = format!(
        "(() => {{ const s = document.getElementById('raw-summary'); \
         if (location.search !== '' || !location.hash.includes('start={}') || s.getAttribute('data-complete') !== 'true') return null; \
         return {{ metric: document.getElementById('metric').value, dimension: document.getElementById('dimension').value, \
           rows: document.querySelectorAll('#raw-table tbody tr').length, records: s.getAttribute('data-records'), \
           point_count: s.getAttribute('data-point-count'), panel_hidden: document.getElementById('raw-panel').hidden, \
           selected: [...document.querySelectorAll('svg .point.selected')].map(c => c.getAttribute('data-start')), \
           error_hidden: document.getElementById('error').hidden, pwned: typeof window.__pwned }}; }})()",
        base + 10_000
    );
    let shown = cdp.wait("the deep link's drill-down", &opened, |v| v.is_object());
    assert_eq!((&shown["metric"], &shown["dimension"]), (&json!(METRIC), &json!(HOSTILE_NODE_KEY)), "{link}: {shown}");
    assert_eq!(
        (&shown["rows"], &shown["records"], &shown["point_count"], &shown["panel_hidden"]),
        (&json!(1), &json!("1"), &json!("1"), &json!(false)),
        "{link}: {shown}"
    );
    assert_eq!(shown["selected"].as_array().map(Vec::len), Some(6), "the point in each chart: {shown}");
    assert_eq!((&shown["error_hidden"], &shown["pwned"]), (&json!(true), &json!("undefined")), "{shown}");

    // A screenshot of the page with the drill-down open, kept under the target dir.
    let shot = cdp.call("Page.captureScreenshot", json!({ "format": "png" })).unwrap();
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page_chromium.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    let _ = cdp.call("Browser.close", json!({}));
    drop(cdp);
    browser.terminate(Duration::from_secs(30)).unwrap();
    let status = aggregator.proc.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "aggregator exit status {status:?}");
}

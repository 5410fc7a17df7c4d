//! A real InfluxDB 1.x (Debian `influxdb`, `influxd`) for tests, and VictoriaMetrics for the
//! InfluxDB v2 write path.
//!
//! Role: [`InfluxDb::start`] writes a config (temp meta/data/wal dirs, reporting and
//! self-monitoring off, HTTP and RPC on free loopback ports), starts `influxd` and polls
//! `/ping`; [`InfluxDb::query`] runs InfluxQL and returns the JSON answer;
//! [`InfluxDb::stop`] kills it with SIGKILL (a crash) and [`InfluxDb::resume`] starts it again
//! on the same ports and data. [`VictoriaMetrics`] does the same for `victoria-metrics`
//! (`/api/v2/write` in, `/api/v1/export` out). Both stop when dropped. Touches child processes,
//! the given directory and loopback sockets only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Proc, free_port, http, path_str, query_value, wait_for};

const READY: Duration = Duration::from_secs(30);

/// A running (or stopped) `influxd`.
#[derive(Debug)]
pub struct InfluxDb {
    /// The process while running.
    pub proc: Option<Proc>,
    /// The HTTP API address.
    pub http: SocketAddr,
    dir: PathBuf,
    config: PathBuf,
}

impl InfluxDb {
    /// Starts `influxd` with its data under `dir/influxdb` on free loopback ports.
    pub fn start(dir: &Path) -> Result<InfluxDb, String> {
        let root = dir.join("influxdb");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let (http_port, rpc_port) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
        let d = root.display();
        let config = root.join("influxdb.conf");
        let text = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http_port}\"\n  log-enabled = false\n"
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let mut db = InfluxDb { proc: None, http: SocketAddr::from(([127, 0, 0, 1], http_port)), dir: root, config };
        db.resume()?;
        Ok(db)
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Starts `influxd` again on the same ports and data (after [`stop`](Self::stop)).
    pub fn resume(&mut self) -> Result<(), String> {
        let influxd = which("influxd").ok_or("influxd not found: apt-get install -y influxdb")?;
        let proc = Proc::start("influxd", &influxd, &["-config", path_str(&self.config)?], &[], &self.dir)?;
        self.proc = Some(proc);
        let addr = self.http;
        wait_for("influxd /ping", READY, || http("GET", addr, "/ping", None).ok().filter(|r| r.status == 204))
            .map_err(|e| format!("{e}; log:\n{}", self.proc.as_ref().map(Proc::log_text).unwrap_or_default()))?;
        Ok(())
    }

    /// Kills `influxd` with SIGKILL (a crash).
    pub fn stop(&mut self) -> Result<(), String> {
        self.proc.take().ok_or("influxd not running")?.kill9()
    }

    /// Runs InfluxQL `q` (in database `db` if given) and returns the JSON answer; an
    /// `error` in the answer is an `Err`.
    pub fn query(&self, db: Option<&str>, q: &str) -> Result<serde_json::Value, String> {
        let mut body = format!("q={}", query_value(q));
        if let Some(db) = db {
            body.push_str(&format!("&db={}", query_value(db)));
        }
        let resp =
            http("POST", self.http, "/query?epoch=ms", Some(("application/x-www-form-urlencoded", body.as_bytes())))?;
        let json = resp.json()?;
        let error = json["error"].as_str().or_else(|| json["results"][0]["error"].as_str());
        match error {
            Some(e) => Err(format!("InfluxQL {q:?}: {e}")),
            None if resp.status == 200 => Ok(json),
            None => Err(format!("InfluxQL {q:?}: HTTP {} {}", resp.status, resp.text())),
        }
    }

    /// `CREATE DATABASE name`.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        self.query(None, &format!("CREATE DATABASE \"{name}\"")).map(|_| ())
    }

    /// Posts line protocol to `/write?db=…&precision=ms`; returns status and body.
    pub fn write(&self, db: &str, lines: &str) -> Result<(u16, String), String> {
        let path = format!("/write?db={}&precision=ms", query_value(db));
        let resp = http("POST", self.http, &path, Some(("text/plain", lines.as_bytes())))?;
        Ok((resp.status, resp.text()))
    }

    /// The rows of the first series of a `SELECT` answer as column name → value maps
    /// (several series, e.g. from `GROUP BY`, are concatenated, their tags added to each row).
    pub fn rows(answer: &serde_json::Value) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        for series in answer["results"][0]["series"].as_array().into_iter().flatten() {
            let columns: Vec<&str> =
                series["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
            for values in series["values"].as_array().into_iter().flatten() {
                let mut row = serde_json::Map::new();
                if let Some(tags) = series["tags"].as_object() {
                    row.extend(tags.clone());
                }
                for (c, v) in columns.iter().zip(values.as_array().into_iter().flatten()) {
                    row.insert((*c).to_owned(), v.clone());
                }
                out.push(row);
            }
        }
        out
    }
}

/// A running `victoria-metrics` (accepts InfluxDB line protocol on `/write` and `/api/v2/write`).
#[derive(Debug)]
pub struct VictoriaMetrics {
    /// The process.
    pub proc: Proc,
    /// HTTP address.
    pub http: SocketAddr,
}

impl VictoriaMetrics {
    /// Starts it with its data under `dir/victoria-metrics` on a free loopback port.
    pub fn start(dir: &Path) -> Result<VictoriaMetrics, String> {
        let bin = which("victoria-metrics").ok_or("victoria-metrics not found: apt-get install -y victoria-metrics")?;
        let data = dir.join("victoria-metrics");
        let port = free_port().map_err(|e| e.to_string())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let args = [
            format!("-httpListenAddr={addr}"),
            format!("-storageDataPath={}", path_str(&data)?),
            "-retentionPeriod=100y".into(),
            "-search.latencyOffset=0s".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::start("victoria-metrics", &bin, &args, &[], dir)?;
        wait_for("victoria-metrics /health", READY, || {
            http("GET", addr, "/health", None).ok().filter(|r| r.status == 200)
        })
        .map_err(|e| format!("{e}; log:\n{}", proc.log_text()))?;
        Ok(VictoriaMetrics { proc, http: addr })
    }

    /// Flushes and exports the series matching `selector` as JSON lines
    /// (`{"metric":{…},"values":[…],"timestamps":[…]}`).
    pub fn export(&self, selector: &str) -> Result<Vec<serde_json::Value>, String> {
        http("GET", self.http, "/internal/force_flush", None)?;
        let path = format!("/api/v1/export?match[]={}", query_value(selector));
        let resp = http("GET", self.http, &path, None)?;
        if resp.status != 200 {
            return Err(format!("export: HTTP {} {}", resp.status, resp.text()));
        }
        resp.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
            .collect()
    }
}

/// `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

//! MySQL / MariaDB plugin: connections, queries and transactions per second, InnoDB buffer pool,
//! traffic and replication, read from the server's status variables.
//!
//! Role: keeps one connection (mysql_async, TCP, **no TLS**) and, every collection, reads
//! `SHOW GLOBAL STATUS` (only the variables it reports), `@@GLOBAL.max_connections` and the
//! replica status (`SHOW REPLICA STATUS`, falling back to `SHOW SLAVE STATUS` on servers that
//! do not know the first; skipped, with a rate-limited warning, when the user lacks the
//! privilege). Rates are computed from the counters of two consecutive collections; the baseline
//! only advances when a collection succeeded as a whole. The connection is taken out of the
//! plugin for the collection and put back only when it succeeded: a dropped (timed-out)
//! collection closes it with a bounded `COM_QUIT` in the background, and the next collection
//! reconnects. Touches only the server connection.

mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshmon_proto::v1::Record;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use tracing::debug;

pub use config::MysqlSettings;

use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "mysql.connections",
    "mysql.threads_running",
    "mysql.max_connections",
    "mysql.queries_per_sec",
    "mysql.transactions_per_sec",
    "mysql.com_commit_total",
    "mysql.com_rollback_total",
    "mysql.slow_queries_total",
    "mysql.aborted_connects_total",
    "mysql.innodb.buffer_pool_hit_ratio",
    "mysql.innodb.buffer_pool_bytes_data",
    "mysql.bytes_received_per_sec",
    "mysql.bytes_sent_per_sec",
    "mysql.uptime_seconds",
    "mysql.replication.seconds_behind",
    "mysql.replication.io_running",
    "mysql.replication.sql_running",
];

/// The status variables read (lower case, as they are keyed after reading).
const STATUS: [&str; 13] = [
    "threads_connected",
    "threads_running",
    "queries",
    "com_commit",
    "com_rollback",
    "slow_queries",
    "aborted_connects",
    "innodb_buffer_pool_reads",
    "innodb_buffer_pool_read_requests",
    "innodb_buffer_pool_bytes_data",
    "bytes_received",
    "bytes_sent",
    "uptime",
];

/// Status variables reported as they are: (variable, metric).
const GAUGES: [(&str, &str); 7] = [
    ("threads_connected", "mysql.connections"),
    ("threads_running", "mysql.threads_running"),
    ("com_commit", "mysql.com_commit_total"),
    ("com_rollback", "mysql.com_rollback_total"),
    ("slow_queries", "mysql.slow_queries_total"),
    ("aborted_connects", "mysql.aborted_connects_total"),
    ("innodb_buffer_pool_bytes_data", "mysql.innodb.buffer_pool_bytes_data"),
];

/// Most replication channels reported.
const MAX_CHANNELS: usize = 64;

/// How long closing an abandoned connection may take in the background.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn status_sql() -> String {
    let names: Vec<String> = STATUS.iter().map(|n| format!("'{n}'")).collect();
    format!("SHOW GLOBAL STATUS WHERE Variable_name IN ({})", names.join(", "))
}

/// A connection that is closed in the background (bounded) when dropped, so an abandoned
/// collection never leaves a task reading from a hanging server.
struct ConnGuard(Option<Conn>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // `disconnect` marks the connection closed first, so its own drop spawns nothing
            // more if the timeout cuts it short.
            handle.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.disconnect()).await;
            });
        }
    }
}

/// Which statement reads the replica status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplicaStatus {
    /// `SHOW REPLICA STATUS` (MySQL ≥ 8.0.22, MariaDB ≥ 10.5.1).
    Replica,
    /// `SHOW SLAVE STATUS` (older servers).
    Slave,
    /// The user may not read it (until the next login).
    Denied,
}

/// The counters of the previous successful collection.
#[derive(Debug, Clone)]
struct Baseline {
    at: Instant,
    status: HashMap<String, f64>,
}

/// The collector of one `[[plugins.mysql]]` instance.
pub struct MysqlPlugin {
    name: String,
    settings: MysqlSettings,
    status_sql: String,
    conn: Option<Conn>,
    replica: ReplicaStatus,
    baseline: Option<Baseline>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for MysqlPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlPlugin")
            .field("name", &self.name)
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// Classifies a mysql_async error (`what` says what was being done).
fn classify(e: &mysql_async::Error, what: &str) -> PluginError {
    use mysql_async::{DriverError, Error, IoError};
    let reason = match e {
        // 1044/1045/1698: access denied; 1130: host not allowed; 1227/1142/1143: missing
        // privilege; 1251: auth protocol not supported.
        Error::Server(s) if matches!(s.code, 1044 | 1045 | 1130 | 1142 | 1143 | 1227 | 1251 | 1698) => {
            ErrorReason::Auth
        }
        // 1040: too many connections; 1053: shutting down; 1129: host blocked; 1927: the
        // connection was killed.
        Error::Server(s) if matches!(s.code, 1040 | 1053 | 1129 | 1927) => ErrorReason::Unreachable,
        Error::Server(_) => ErrorReason::Protocol,
        Error::Io(IoError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => ErrorReason::Timeout,
        Error::Io(_) => ErrorReason::Unreachable,
        Error::Driver(
            DriverError::UnknownAuthPlugin { .. }
            | DriverError::MysqlOldPasswordDisabled
            | DriverError::CleartextPluginDisabled,
        ) => ErrorReason::Auth,
        Error::Driver(DriverError::ConnectionClosed) => ErrorReason::Unreachable,
        Error::Driver(_) => ErrorReason::Protocol,
        Error::Other(_) | Error::Url(_) => ErrorReason::Other,
    };
    PluginError::new(reason, format!("{what}: {e}"))
}

/// A value as a number (text protocol values are text); `None` for NULL, non-numbers and
/// non-finite values.
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse::<f64>().ok()?,
        #[allow(clippy::cast_precision_loss)] // counters far below 2^53 in practice
        Value::Int(i) => *i as f64,
        #[allow(clippy::cast_precision_loss)]
        Value::UInt(u) => *u as f64,
        Value::Float(f) => f64::from(*f),
        Value::Double(d) => *d,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::NULL => None,
        other => Some(other.as_sql(true)),
    }
}

/// The named column of `row` (the first of `names` present).
fn column<'r>(row: &'r Row, names: &[&str]) -> Option<&'r Value> {
    let columns = row.columns_ref();
    names.iter().find_map(|n| {
        let i = columns.iter().position(|c| c.name_str().eq_ignore_ascii_case(n))?;
        row.as_ref(i)
    })
}

/// `SHOW GLOBAL STATUS` rows (`Variable_name`, `Value`) as lower-case name → number.
fn parse_status(rows: &[Row]) -> Result<HashMap<String, f64>, PluginError> {
    let mut out = HashMap::with_capacity(STATUS.len());
    for row in rows {
        let (Some(name), Some(value)) = (row.as_ref(0), row.as_ref(1)) else {
            return Err(PluginError::protocol("SHOW GLOBAL STATUS: a row without two columns"));
        };
        let name = text(name).ok_or_else(|| PluginError::protocol("SHOW GLOBAL STATUS: NULL variable name"))?;
        if let Some(v) = number(value) {
            out.insert(name.to_ascii_lowercase(), v);
        }
    }
    Ok(out)
}

/// `(cur - prev) / secs` of counter `name`, `None` when either is missing, it went backwards
/// (a restart or `FLUSH STATUS`) or no time passed.
fn per_sec(prev: &HashMap<String, f64>, cur: &HashMap<String, f64>, name: &str, secs: f64) -> Option<f64> {
    let (p, c) = (*prev.get(name)?, *cur.get(name)?);
    (c >= p && secs > 0.0).then(|| (c - p) / secs)
}

/// The rate records computed from `prev` (`secs` before `cur`): (metric, value).
fn rates(prev: &HashMap<String, f64>, cur: &HashMap<String, f64>, secs: f64) -> Vec<(&'static str, f64)> {
    // A smaller uptime is a restart: every counter started again.
    if let (Some(p), Some(c)) = (prev.get("uptime"), cur.get("uptime"))
        && c < p
    {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(5);
    if let Some(v) = per_sec(prev, cur, "queries", secs) {
        out.push(("mysql.queries_per_sec", v));
    }
    if let (Some(c), Some(r)) = (per_sec(prev, cur, "com_commit", secs), per_sec(prev, cur, "com_rollback", secs)) {
        out.push(("mysql.transactions_per_sec", c + r));
    }
    if let Some(v) = per_sec(prev, cur, "bytes_received", secs) {
        out.push(("mysql.bytes_received_per_sec", v));
    }
    if let Some(v) = per_sec(prev, cur, "bytes_sent", secs) {
        out.push(("mysql.bytes_sent_per_sec", v));
    }
    // Hit ratio over the interval: 1 − disk reads / logical read requests.
    if let (Some(reads), Some(requests)) = (
        per_sec(prev, cur, "innodb_buffer_pool_reads", secs),
        per_sec(prev, cur, "innodb_buffer_pool_read_requests", secs),
    ) && requests > 0.0
    {
        out.push(("mysql.innodb.buffer_pool_hit_ratio", (1.0 - reads / requests).clamp(0.0, 1.0)));
    }
    out
}

/// The replication records of the replica status rows: (metric, channel, value).
fn replication(rows: &[Row]) -> Vec<(&'static str, String, f64)> {
    let mut out = Vec::new();
    for row in rows.iter().take(MAX_CHANNELS) {
        let channel = column(row, &["Channel_Name", "Connection_name"])
            .and_then(text)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let running = |names: &[&str]| -> Option<f64> {
            let v = text(column(row, names)?)?;
            Some(if v.eq_ignore_ascii_case("yes") { 1.0 } else { 0.0 })
        };
        if let Some(v) = running(&["Replica_IO_Running", "Slave_IO_Running"]) {
            out.push(("mysql.replication.io_running", channel.clone(), v));
        }
        if let Some(v) = running(&["Replica_SQL_Running", "Slave_SQL_Running"]) {
            out.push(("mysql.replication.sql_running", channel.clone(), v));
        }
        // NULL while the SQL thread is not running or not connected: absent.
        if let Some(v) = column(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"]).and_then(number) {
            out.push(("mysql.replication.seconds_behind", channel, v.max(0.0)));
        }
    }
    out
}

impl MysqlPlugin {
    async fn connect(&self) -> Result<Conn, PluginError> {
        let s = &self.settings;
        let password = s
            .password
            .read()
            .map_err(|e| PluginError::new(ErrorReason::Other, format!("reading the password: {e}")))?;
        let opts = OptsBuilder::default()
            .ip_or_hostname(s.host.clone())
            .tcp_port(s.port)
            .user(Some(s.user.clone()))
            .pass(password)
            // Stay on the configured TCP address (no switch to a local socket).
            .prefer_socket(false);
        match tokio::time::timeout(s.connect_timeout, Conn::new(opts)).await {
            Ok(r) => r.map_err(|e| classify(&e, "connecting")),
            Err(_) => Err(PluginError::new(
                ErrorReason::Timeout,
                format!("no login to {}:{} within {:?}", s.host, s.port, s.connect_timeout),
            )),
        }
    }

    /// Reads the replica status, switching statements or giving up as the server says.
    async fn replica_rows(&mut self, conn: &mut Conn) -> Result<Vec<Row>, PluginError> {
        loop {
            let sql = match self.replica {
                ReplicaStatus::Replica => "SHOW REPLICA STATUS",
                ReplicaStatus::Slave => "SHOW SLAVE STATUS",
                ReplicaStatus::Denied => return Ok(Vec::new()),
            };
            match conn.query::<Row, _>(sql).await {
                Ok(rows) => return Ok(rows),
                // 1064: syntax error — a server older than `SHOW REPLICA STATUS`.
                Err(mysql_async::Error::Server(e)) if e.code == 1064 && self.replica == ReplicaStatus::Replica => {
                    self.replica = ReplicaStatus::Slave;
                }
                Err(mysql_async::Error::Server(e)) if matches!(e.code, 1227 | 1142 | 1044) => {
                    self.metrics.warn_limited(
                        "mysql_replication_denied",
                        &format!(
                            "plugin {:?}: no replication metrics: {} (grant REPLICATION CLIENT on MySQL, \
                             SLAVE MONITOR on MariaDB)",
                            self.name, e.message
                        ),
                    );
                    self.replica = ReplicaStatus::Denied;
                }
                Err(e) => return Err(classify(&e, sql)),
            }
        }
    }

    async fn run(&mut self, conn: &mut Conn, at: SystemTime) -> Result<Vec<Record>, PluginError> {
        let ts = timestamp_of(at);
        let rows: Vec<Row> = conn.query(&self.status_sql).await.map_err(|e| classify(&e, "SHOW GLOBAL STATUS"))?;
        let now = Instant::now();
        let status = parse_status(&rows)?;
        let max: Vec<Row> =
            conn.query("SELECT @@GLOBAL.max_connections").await.map_err(|e| classify(&e, "max_connections"))?;
        let max_connections = max.first().and_then(|r| r.as_ref(0)).and_then(number);
        let replica = self.replica_rows(conn).await?;

        let record = |metric: &str, v: f64| {
            let mut r = double_record(metric, v, ts);
            r.tags.insert("plugin".to_owned(), self.name.clone());
            r
        };
        let mut out = Vec::with_capacity(GAUGES.len() + 8 + replica.len() * 3);
        for (var, metric) in GAUGES {
            if let Some(v) = status.get(var) {
                out.push(record(metric, *v));
            }
        }
        if let Some(v) = status.get("uptime") {
            out.push(record("mysql.uptime_seconds", *v));
        }
        if let Some(v) = max_connections {
            out.push(record("mysql.max_connections", v));
        }
        if let Some(prev) = &self.baseline {
            let secs = now.saturating_duration_since(prev.at).as_secs_f64();
            for (metric, v) in rates(&prev.status, &status, secs) {
                out.push(record(metric, v));
            }
        }
        for (metric, channel, v) in replication(&replica) {
            let mut r = record(metric, v);
            r.tags.insert("channel".to_owned(), channel);
            out.push(r);
        }
        // Everything is read: only now advance the baseline.
        self.baseline = Some(Baseline { at: now, status });
        Ok(out)
    }
}

impl Plugin for MysqlPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let mut reused = true;
            loop {
                let conn = match self.conn.take() {
                    Some(conn) => conn,
                    None => {
                        reused = false;
                        let conn = self.connect().await?;
                        // A new login may have other privileges.
                        if self.replica == ReplicaStatus::Denied {
                            self.replica = ReplicaStatus::Replica;
                        }
                        conn
                    }
                };
                let mut guard = ConnGuard(Some(conn));
                let Some(conn) = guard.0.as_mut() else {
                    return Err(PluginError::new(ErrorReason::Other, "no connection"));
                };
                let result = self.run(conn, at).await;
                match &result {
                    // Keep the connection while it is healthy; a refused statement (privilege)
                    // leaves it usable too.
                    Ok(_) => self.conn = guard.0.take(),
                    Err(e) if e.reason == ErrorReason::Auth => self.conn = guard.0.take(),
                    // A kept connection that broke while idle (server restart, KILL,
                    // wait_timeout): log in again once, in this collection.
                    Err(e) if reused && e.reason == ErrorReason::Unreachable => {
                        debug!(plugin = %self.name, "mysql connection lost, reconnecting: {e}");
                        continue;
                    }
                    // Anything else: close it (the guard), log in again next time.
                    Err(e) => debug!(plugin = %self.name, "mysql connection dropped: {e}"),
                }
                return result;
            }
        })
    }
}

impl BuildPlugin for MysqlSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        // Fail at start on an unreadable secret (it is read again at every login, so a
        // rotated password is picked up on the next reconnect).
        self.password.read_for("password")?;
        Ok(Box::new(MysqlPlugin {
            name: name.to_owned(),
            settings: self.clone(),
            status_sql: status_sql(),
            conn: None,
            replica: ReplicaStatus::Replica,
            baseline: None,
            metrics: ctx.metrics.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::{PluginSettings, PluginsConfig};

    fn map(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn rates_come_from_two_collections_and_stop_at_a_restart() {
        let a = map(&[
            ("uptime", 100.0),
            ("queries", 1000.0),
            ("com_commit", 10.0),
            ("com_rollback", 2.0),
            ("bytes_received", 5000.0),
            ("bytes_sent", 9000.0),
            ("innodb_buffer_pool_reads", 10.0),
            ("innodb_buffer_pool_read_requests", 1000.0),
        ]);
        let b = map(&[
            ("uptime", 102.0),
            ("queries", 1100.0),
            ("com_commit", 20.0),
            ("com_rollback", 4.0),
            ("bytes_received", 7000.0),
            ("bytes_sent", 9000.0),
            ("innodb_buffer_pool_reads", 20.0),
            ("innodb_buffer_pool_read_requests", 1100.0),
        ]);
        let r: HashMap<&str, f64> = rates(&a, &b, 2.0).into_iter().collect();
        assert_eq!(r["mysql.queries_per_sec"], 50.0);
        assert_eq!(r["mysql.transactions_per_sec"], 6.0);
        assert_eq!(r["mysql.bytes_received_per_sec"], 1000.0);
        assert_eq!(r["mysql.bytes_sent_per_sec"], 0.0);
        assert!((r["mysql.innodb.buffer_pool_hit_ratio"] - 0.9).abs() < 1e-12);
        // A restart (uptime went down): no rates at all.
        let restarted = map(&[("uptime", 1.0), ("queries", 5000.0)]);
        assert!(rates(&b, &restarted, 2.0).is_empty());
        // No read requests in the interval: no hit ratio; a counter going back: no rate.
        let c = map(&[
            ("uptime", 103.0),
            ("queries", 10.0),
            ("innodb_buffer_pool_reads", 20.0),
            ("innodb_buffer_pool_read_requests", 1100.0),
        ]);
        let r: HashMap<&str, f64> = rates(&b, &c, 1.0).into_iter().collect();
        assert!(!r.contains_key("mysql.innodb.buffer_pool_hit_ratio"));
        assert!(!r.contains_key("mysql.queries_per_sec"));
    }

    #[test]
    fn values_are_read_as_numbers() {
        assert_eq!(number(&Value::Bytes(b"42".to_vec())), Some(42.0));
        assert_eq!(number(&Value::Bytes(b"ON".to_vec())), None);
        assert_eq!(number(&Value::Bytes(b"NaN".to_vec())), None);
        assert_eq!(number(&Value::NULL), None);
        assert_eq!(number(&Value::UInt(7)), Some(7.0));
        assert!(status_sql().starts_with("SHOW GLOBAL STATUS WHERE Variable_name IN ('threads_connected', "));
    }

    #[test]
    fn settings_parse_with_defaults_and_are_checked() {
        let mut c: PluginsConfig =
            toml::from_str("[[mysql]]\nport = 3307\npassword = { file = \"/run/secrets/mysql\" }\n").expect("parses");
        c.normalize().expect("valid");
        let s = &c.mysql[0].settings;
        assert_eq!((s.host.as_str(), s.port, s.user.as_str()), ("127.0.0.1", 3307, "meshmon"));
        assert!(toml::from_str::<PluginsConfig>("[[mysql]]\npassword = \"inline\"\n").is_err());
        assert!(toml::from_str::<PluginsConfig>("[[mysql]]\ndatabase = \"x\"\n").is_err());
        assert!(MysqlSettings { host: String::new(), ..Default::default() }.validate("m").is_err());
        assert!(MysqlSettings { connect_timeout: Duration::ZERO, ..Default::default() }.validate("m").is_err());
    }

    fn ctx() -> PluginContext {
        PluginContext::standalone(std::env::temp_dir()).0
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_server_times_out() {
        let closed = crate::plugins::test_support::closed_port();
        let s = MysqlSettings { port: closed, ..Default::default() };
        let mut p = s.build("my", &ctx()).expect("builds");
        let e = p.collect(SystemTime::now()).await.expect_err("nothing listens");
        assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");

        // Accepts connections and never sends the greeting.
        let (port, keep) = crate::plugins::test_support::silent_server().await;
        let s = MysqlSettings { port, connect_timeout: Duration::from_millis(200), ..Default::default() };
        let mut p = s.build("my", &ctx()).expect("builds");
        let e = p.collect(SystemTime::now()).await.expect_err("no answer");
        assert_eq!(e.reason, ErrorReason::Timeout, "{e}");
        keep.abort();
    }
}

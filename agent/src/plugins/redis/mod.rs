//! Redis plugin: memory, clients, throughput, keyspace, replication and persistence from `INFO`.
//!
//! Role: every collection sends `INFO` (the default sections) to one Redis server over a small
//! RESP client of its own (`resp.rs`: `AUTH` with an optional ACL user and a password from
//! the environment or a file, bounded reads with the client's own `read_timeout`), parses the
//! reply (`info.rs`) and turns the fields into `redis.*` records stamped with the collection
//! time. The connection is kept between collections and re-opened once when the server closed
//! it; a collection abandoned half-way (timeout) drops it, so a reply is never read out of
//! step. The keyspace hit ratio is computed over the interval from the previous collection's
//! counters (kept only once a collection completed, reset when the server's `run_id`
//! changes). The keyspace section has one series per database: at most `max_dbs` are reported,
//! the rest counted in `redis.keyspace.dbs_skipped`. Touches one TCP connection to the server.

mod config;
mod info;
mod resp;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshmon_proto::Timestamp;
use meshmon_proto::v1::Record;
use tracing::debug;

pub use config::RedisSettings;
use info::Info;
use resp::{Conn, Reply, error_reply};

use crate::kafka::config::Secret;
use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "redis.uptime_seconds",
    "redis.clients.connected",
    "redis.clients.blocked",
    "redis.memory.used_bytes",
    "redis.memory.rss_bytes",
    "redis.memory.peak_bytes",
    "redis.memory.fragmentation_ratio",
    "redis.memory.maxmemory_bytes",
    "redis.ops_per_sec",
    "redis.commands_processed_total",
    "redis.connections_received_total",
    "redis.rejected_connections_total",
    "redis.keyspace_hits_total",
    "redis.keyspace_misses_total",
    "redis.keyspace_hit_ratio",
    "redis.evicted_keys_total",
    "redis.expired_keys_total",
    "redis.keyspace.keys",
    "redis.keyspace.expires",
    "redis.keyspace.avg_ttl_seconds",
    "redis.keyspace.dbs_skipped",
    "redis.replication.is_master",
    "redis.replication.connected_slaves",
    "redis.replication.offset_bytes",
    "redis.replication.master_link_up",
    "redis.replication.master_last_io_seconds",
    "redis.replication.replica_lag_bytes",
    "redis.replication.replica_lag_seconds",
    "redis.persistence.rdb_changes_since_last_save",
    "redis.persistence.rdb_last_save_age_seconds",
    "redis.persistence.rdb_last_bgsave_ok",
];

/// Metrics that are one `INFO` field each, as they are.
const PLAIN_FIELDS: [(&str, &str); 17] = [
    ("redis.uptime_seconds", "uptime_in_seconds"),
    ("redis.clients.connected", "connected_clients"),
    ("redis.clients.blocked", "blocked_clients"),
    ("redis.memory.used_bytes", "used_memory"),
    ("redis.memory.rss_bytes", "used_memory_rss"),
    ("redis.memory.peak_bytes", "used_memory_peak"),
    ("redis.memory.fragmentation_ratio", "mem_fragmentation_ratio"),
    ("redis.memory.maxmemory_bytes", "maxmemory"),
    ("redis.ops_per_sec", "instantaneous_ops_per_sec"),
    ("redis.commands_processed_total", "total_commands_processed"),
    ("redis.connections_received_total", "total_connections_received"),
    ("redis.rejected_connections_total", "rejected_connections"),
    ("redis.keyspace_hits_total", "keyspace_hits"),
    ("redis.keyspace_misses_total", "keyspace_misses"),
    ("redis.evicted_keys_total", "evicted_keys"),
    ("redis.expired_keys_total", "expired_keys"),
    ("redis.persistence.rdb_changes_since_last_save", "rdb_changes_since_last_save"),
];

/// Replicas reported per master at most (a master has a handful; the rest are logged).
const MAX_REPLICAS: usize = 64;

/// The counters the hit ratio is computed from, as of the last complete collection.
#[derive(Debug, Clone, PartialEq)]
struct Baseline {
    run_id: String,
    hits: f64,
    misses: f64,
}

/// The collector of one `[[plugins.redis]]` instance.
pub struct RedisPlugin {
    name: String,
    address: String,
    username: Option<String>,
    password: Option<Secret>,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_dbs: usize,
    /// The metrics `select` enables.
    enabled: BTreeSet<&'static str>,
    conn: Option<Conn>,
    baseline: Option<Baseline>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RedisPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPlugin")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisPlugin {
    async fn connect(&self) -> Result<Conn, PluginError> {
        Conn::open(
            &self.address,
            self.username.as_deref(),
            self.password.as_ref(),
            self.connect_timeout,
            self.read_timeout,
        )
        .await
    }

    /// The text of `INFO`, on the kept connection (re-opened once if the server closed it)
    /// or a new one. The connection is kept only after a complete reply.
    async fn info_text(&mut self) -> Result<String, PluginError> {
        let reused = self.conn.is_some();
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = match conn.command(&[b"INFO"]).await {
            Ok(r) => r,
            Err(e) if reused && e.reason == ErrorReason::Unreachable => {
                debug!(plugin = %self.name, "redis connection lost ({}), reconnecting", e.message);
                conn = self.connect().await?;
                conn.command(&[b"INFO"]).await?
            }
            Err(e) => return Err(e),
        };
        let text = match reply {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Reply::Error(e) => return Err(error_reply("INFO", &e)),
            other => return Err(PluginError::protocol(format!("unexpected reply to INFO: {other:?}"))),
        };
        self.conn = Some(conn);
        Ok(text)
    }

    /// The records of one `INFO` reply, and the new hit-ratio baseline.
    fn records(&self, info: &Info, at: SystemTime) -> (Vec<Record>, Option<Baseline>) {
        let ts = timestamp_of(at);
        let mut out = Records { enabled: &self.enabled, ts, out: Vec::with_capacity(64) };
        for (metric, field) in PLAIN_FIELDS {
            if let Some(v) = info.number(field) {
                out.push(metric, v, &[]);
            }
        }

        // Hit ratio over the interval since the previous complete collection.
        let run_id = info.text("run_id").unwrap_or_default().to_owned();
        let baseline = match (info.number("keyspace_hits"), info.number("keyspace_misses")) {
            (Some(hits), Some(misses)) => {
                if let Some(prev) = &self.baseline
                    && prev.run_id == run_id
                    && hits >= prev.hits
                    && misses >= prev.misses
                {
                    let (dh, dm) = (hits - prev.hits, misses - prev.misses);
                    if dh + dm > 0.0 {
                        out.push("redis.keyspace_hit_ratio", dh / (dh + dm), &[]);
                    }
                }
                Some(Baseline { run_id, hits, misses })
            }
            _ => None,
        };

        // Keyspace, per database, capped.
        for db in info.keyspace.iter().take(self.max_dbs) {
            let tag = db.db.to_string();
            let tags = [("db", tag.as_str())];
            if let Some(v) = db.keys {
                out.push("redis.keyspace.keys", v, &tags);
            }
            if let Some(v) = db.expires {
                out.push("redis.keyspace.expires", v, &tags);
            }
            if let Some(v) = db.avg_ttl_ms {
                out.push("redis.keyspace.avg_ttl_seconds", v / 1e3, &tags);
            }
        }
        let skipped = info.keyspace.len().saturating_sub(self.max_dbs);
        if skipped > 0 && out.wants("redis.keyspace.dbs_skipped") {
            self.metrics.warn_limited(
                "redis_plugin_dbs_skipped",
                &format!("redis plugin {:?}: {skipped} databases not reported (max_dbs = {})", self.name, self.max_dbs),
            );
        }
        #[allow(clippy::cast_precision_loss)] // a count of databases
        out.push("redis.keyspace.dbs_skipped", skipped as f64, &[]);

        // Replication.
        let role = info.text("role");
        if let Some(role) = role {
            out.push("redis.replication.is_master", if role == "master" { 1.0 } else { 0.0 }, &[]);
        }
        if let Some(v) = info.number("connected_slaves") {
            out.push("redis.replication.connected_slaves", v, &[]);
        }
        let master_offset = info.number("master_repl_offset");
        if role == Some("slave") {
            if let Some(v) = info.number("slave_repl_offset").or(master_offset) {
                out.push("redis.replication.offset_bytes", v, &[]);
            }
            if let Some(status) = info.text("master_link_status") {
                out.push("redis.replication.master_link_up", if status == "up" { 1.0 } else { 0.0 }, &[]);
            }
            if let Some(v) = info.number("master_last_io_seconds_ago").filter(|v| *v >= 0.0) {
                out.push("redis.replication.master_last_io_seconds", v, &[]);
            }
        } else if let Some(v) = master_offset {
            out.push("redis.replication.offset_bytes", v, &[]);
        }
        if role == Some("master") {
            for r in info.replicas.iter().take(MAX_REPLICAS) {
                let tags = [("replica", r.address.as_str())];
                if let (Some(master), Some(offset)) = (master_offset, r.offset) {
                    out.push("redis.replication.replica_lag_bytes", (master - offset).max(0.0), &tags);
                }
                if let Some(lag) = r.lag_seconds {
                    out.push("redis.replication.replica_lag_seconds", lag, &tags);
                }
            }
            if info.replicas.len() > MAX_REPLICAS {
                self.metrics.warn_limited(
                    "redis_plugin_replicas_skipped",
                    &format!(
                        "redis plugin {:?}: {} replicas not reported (at most {MAX_REPLICAS})",
                        self.name,
                        info.replicas.len() - MAX_REPLICAS
                    ),
                );
            }
        }

        // Persistence.
        if let Some(saved) = info.number("rdb_last_save_time") {
            let now = at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            out.push("redis.persistence.rdb_last_save_age_seconds", (now - saved).max(0.0), &[]);
        }
        if let Some(status) = info.text("rdb_last_bgsave_status") {
            out.push("redis.persistence.rdb_last_bgsave_ok", if status == "ok" { 1.0 } else { 0.0 }, &[]);
        }
        (out.out, baseline)
    }
}

/// Records of one collection, only for the metrics `select` enables.
struct Records<'a> {
    enabled: &'a BTreeSet<&'static str>,
    ts: Timestamp,
    out: Vec<Record>,
}

impl Records<'_> {
    fn wants(&self, metric: &str) -> bool {
        self.enabled.contains(metric)
    }

    fn push(&mut self, metric: &'static str, value: f64, tags: &[(&str, &str)]) {
        if !value.is_finite() || !self.wants(metric) {
            return;
        }
        let mut r = double_record(metric, value, self.ts);
        for (k, v) in tags {
            r.tags.insert((*k).to_owned(), (*v).to_owned());
        }
        self.out.push(r);
    }
}

impl Plugin for RedisPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let text = self.info_text().await?;
            let info = Info::parse(&text)?;
            let (records, baseline) = self.records(&info, at);
            self.baseline = baseline;
            Ok(records)
        })
    }
}

impl BuildPlugin for RedisSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let password = self.password.read_for("password")?.map(Secret::new);
        let enabled = METRIC_NAMES
            .iter()
            .copied()
            .filter(|m| self.select.is_empty() || self.select.iter().any(|s| config::selects(s, m)))
            .collect();
        Ok(Box::new(RedisPlugin {
            name: name.to_owned(),
            address: self.address.clone(),
            username: self.username.clone(),
            password,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            max_dbs: self.max_dbs,
            enabled,
            conn: None,
            baseline: None,
            metrics: ctx.metrics.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::PluginSettings;
    use crate::record::double_value;

    fn plugin(select: &[&str], max_dbs: usize) -> RedisPlugin {
        let settings = RedisSettings {
            select: select.iter().map(|s| (*s).to_owned()).collect(),
            max_dbs,
            ..RedisSettings::default()
        };
        settings.validate("plugins.redis[0]").unwrap();
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let ctx = PluginContext { state_dir: std::env::temp_dir(), shutdown, metrics: Arc::new(Metrics::default()) };
        let enabled = METRIC_NAMES
            .iter()
            .copied()
            .filter(|m| settings.select.is_empty() || settings.select.iter().any(|s| config::selects(s, m)))
            .collect();
        RedisPlugin {
            name: "r".into(),
            address: settings.address.clone(),
            username: None,
            password: None,
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.read_timeout,
            max_dbs,
            enabled,
            conn: None,
            baseline: None,
            metrics: ctx.metrics,
        }
    }

    fn value(records: &[Record], metric: &str, tag: Option<(&str, &str)>) -> Option<f64> {
        records
            .iter()
            .find(|r| r.metric == metric && tag.is_none_or(|(k, v)| r.tags.get(k).map(String::as_str) == Some(v)))
            .and_then(double_value)
    }

    fn info(hits: u32, misses: u32, run_id: &str) -> Info {
        Info::parse(&format!(
            "# Server\r\nrun_id:{run_id}\r\nuptime_in_seconds:10\r\n# Persistence\r\nrdb_last_save_time:1000\r\n\
             rdb_last_bgsave_status:err\r\n# Stats\r\nkeyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\n\
             # Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=10.0.0.2,port=6380,state=online,offset=70,lag=0\r\n\
             slave1:ip=10.0.0.3,port=6380,state=online,offset=100,lag=2\r\nmaster_repl_offset:100\r\n\
             # Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=1500\r\ndb1:keys=2,expires=0,avg_ttl=0\r\n\
             db5:keys=9,expires=0,avg_ttl=0\r\n"
        ))
        .unwrap()
    }

    #[test]
    fn hit_ratio_needs_a_baseline_of_the_same_server() {
        let mut p = plugin(&[], 64);
        let at = UNIX_EPOCH + Duration::from_secs(1060);
        let (first, b) = p.records(&info(10, 10, "a"), at);
        assert_eq!(value(&first, "redis.keyspace_hit_ratio", None), None, "no baseline yet");
        assert_eq!(value(&first, "redis.keyspace_hits_total", None), Some(10.0));
        p.baseline = b;
        let (second, b) = p.records(&info(13, 11, "a"), at);
        assert_eq!(value(&second, "redis.keyspace_hit_ratio", None), Some(0.75));
        p.baseline = b;
        let (same, _) = p.records(&info(13, 11, "a"), at);
        assert_eq!(value(&same, "redis.keyspace_hit_ratio", None), None, "no lookups in the interval");
        let (restarted, _) = p.records(&info(20, 0, "b"), at);
        assert_eq!(value(&restarted, "redis.keyspace_hit_ratio", None), None, "another run_id");

        assert_eq!(value(&first, "redis.persistence.rdb_last_save_age_seconds", None), Some(60.0));
        assert_eq!(value(&first, "redis.persistence.rdb_last_bgsave_ok", None), Some(0.0));
        assert_eq!(value(&first, "redis.replication.is_master", None), Some(1.0));
        assert_eq!(value(&first, "redis.replication.connected_slaves", None), Some(2.0));
        assert_eq!(value(&first, "redis.replication.offset_bytes", None), Some(100.0));
        assert_eq!(
            value(&first, "redis.replication.replica_lag_bytes", Some(("replica", "10.0.0.2:6380"))),
            Some(30.0)
        );
        assert_eq!(value(&first, "redis.replication.replica_lag_bytes", Some(("replica", "10.0.0.3:6380"))), Some(0.0));
        assert_eq!(
            value(&first, "redis.replication.replica_lag_seconds", Some(("replica", "10.0.0.3:6380"))),
            Some(2.0)
        );
        assert_eq!(value(&first, "redis.replication.master_link_up", None), None, "masters have no link");
        assert_eq!(value(&first, "redis.keyspace.avg_ttl_seconds", Some(("db", "0"))), Some(1.5));
        assert_eq!(value(&first, "redis.keyspace.keys", Some(("db", "5"))), Some(9.0));
        assert_eq!(value(&first, "redis.keyspace.dbs_skipped", None), Some(0.0));
        let names: BTreeSet<&str> = first.iter().map(|r| r.metric.as_str()).collect();
        assert!(names.iter().all(|n| METRIC_NAMES.contains(n)), "{names:?}");
    }

    #[test]
    fn select_and_max_dbs_bound_the_output() {
        let p = plugin(&["redis.keyspace", "redis.uptime_seconds"], 2);
        let (records, _) = p.records(&info(1, 1, "a"), UNIX_EPOCH);
        let names: BTreeSet<&str> = records.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "redis.uptime_seconds",
                "redis.keyspace.keys",
                "redis.keyspace.expires",
                "redis.keyspace.avg_ttl_seconds",
                "redis.keyspace.dbs_skipped"
            ])
        );
        assert_eq!(value(&records, "redis.keyspace.keys", Some(("db", "5"))), None, "over max_dbs");
        assert_eq!(value(&records, "redis.keyspace.dbs_skipped", None), Some(1.0));

        let bad = RedisSettings { select: vec!["redis.mem".into()], ..RedisSettings::default() };
        let e = bad.validate("plugins.redis[0]").unwrap_err();
        assert!(e.to_string().contains("plugins.redis[0].select[0]"), "{e}");
        let bad = RedisSettings { username: Some("u".into()), ..RedisSettings::default() };
        assert!(bad.validate("plugins.redis[0]").unwrap_err().to_string().contains("username"));
        let bad = RedisSettings { address: "nohost".into(), ..RedisSettings::default() };
        assert!(bad.validate("plugins.redis[0]").is_err());
    }

    #[test]
    fn toml_settings() {
        let mut c: crate::plugins::PluginsConfig = toml::from_str(
            "[[redis]]\naddress = \"cache:6380\"\nusername = \"mon\"\npassword = { env = \"REDIS_PW\" }\n\
             select = [\"redis.memory\"]\nread_timeout = \"1s\"\ninterval = \"15s\"\n",
        )
        .unwrap();
        c.normalize().unwrap();
        let r = &c.redis[0];
        assert_eq!((r.name.as_str(), r.interval), ("redis", Duration::from_secs(15)));
        assert_eq!(r.settings.password.env.as_deref(), Some("REDIS_PW"));
        assert_eq!(r.settings.read_timeout, Duration::from_secs(1));
        let e = toml::from_str::<crate::plugins::PluginsConfig>("[[redis]]\npasword = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("pasword"), "{e}");
        let e = toml::from_str::<crate::plugins::PluginsConfig>("[[redis]]\npassword = \"plain\"\n").unwrap_err();
        assert!(!e.to_string().is_empty(), "a password is a secret reference, not a value");
    }

    #[test]
    fn replica_fields() {
        let p = plugin(&[], 64);
        let info = Info::parse(
            "# Replication\r\nrole:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
             slave_repl_offset:40\r\nmaster_repl_offset:40\r\nconnected_slaves:0\r\n",
        )
        .unwrap();
        let (records, _) = p.records(&info, UNIX_EPOCH);
        assert_eq!(value(&records, "redis.replication.is_master", None), Some(0.0));
        assert_eq!(value(&records, "redis.replication.master_link_up", None), Some(0.0));
        assert_eq!(value(&records, "redis.replication.master_last_io_seconds", None), None, "-1: never");
        assert_eq!(value(&records, "redis.replication.offset_bytes", None), Some(40.0));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_hits_the_read_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut p = plugin(&[], 64);
        p.address = addr;
        p.read_timeout = Duration::from_millis(200);
        let e = p.collect(SystemTime::now()).await.unwrap_err();
        assert_eq!(e.reason, ErrorReason::Timeout, "{e}");
        assert!(p.conn.is_none(), "a connection without a complete reply is not kept");
        hold.abort();
    }
}

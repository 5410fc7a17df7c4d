//! PostgreSQL plugin: connections, transactions per second, cache hit ratio, sizes and
//! replication lag, read from the server's statistics views.
//!
//! Role: keeps one connection (tokio-postgres, plain TCP or a Unix socket, **no TLS**) to
//! `dbname` and, every collection, runs five prepared statements pipelined in one round trip:
//! sessions by state (`pg_stat_activity`), `max_connections`, per-database counters
//! (`pg_stat_database`, filtered by `databases`, at most `max_databases`), WAL senders
//! (`pg_stat_replication`) and the standby's replay delay. Rates (`*_per_sec`, the cache hit
//! ratio) are computed from the counters of two consecutive collections; the baseline only
//! advances when a collection succeeded as a whole, so an abandoned (timed-out) collection
//! leaves it as it was. The connection is taken out of the plugin for the collection and put
//! back only when the collection succeeded (or the server answered with an SQL error): a
//! dropped collection drops the connection (its task aborted), and the next one reconnects.
//! Touches only the server connection.

mod config;

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use meshmon_proto::v1::Record;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tracing::debug;

pub use config::PostgresqlSettings;

use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "postgresql.connections",
    "postgresql.max_connections",
    "postgresql.databases_over_limit",
    "postgresql.db.numbackends",
    "postgresql.db.xact_commit_total",
    "postgresql.db.xact_rollback_total",
    "postgresql.db.xact_commit_per_sec",
    "postgresql.db.xact_rollback_per_sec",
    "postgresql.db.transactions_per_sec",
    "postgresql.db.cache_hit_ratio",
    "postgresql.db.deadlocks_total",
    "postgresql.db.size_bytes",
    "postgresql.replication.lag_bytes",
    "postgresql.replication.replay_lag_seconds",
];

/// Client sessions by state (`state` is NULL for sessions of other roles without `pg_monitor`).
const SQL_CONNECTIONS: &str = "SELECT COALESCE(state, ''), count(*)::float8 FROM pg_stat_activity \
     WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1 LIMIT 64";

const SQL_MAX_CONNECTIONS: &str = "SELECT current_setting('max_connections')::float8";

/// Per-database counters: `$1` the `LIKE` patterns (empty: all but the templates), `$2` the
/// most rows; the size is computed for the returned rows only (outer query over the limited
/// subquery), and only where the role may connect (else `pg_database_size` fails).
const SQL_DATABASES: &str = "SELECT s.datname::text, s.xact_commit::float8, s.xact_rollback::float8, \
     s.blks_read::float8, s.blks_hit::float8, s.deadlocks::float8, s.numbackends::float8, \
     CASE WHEN has_database_privilege(s.datid, 'CONNECT') THEN pg_database_size(s.datid)::float8 END, \
     COALESCE(EXTRACT(EPOCH FROM s.stats_reset)::float8, 0), s.total::float8 \
     FROM (SELECT d.*, count(*) OVER () AS total FROM pg_stat_database d \
           WHERE d.datname IS NOT NULL AND CASE WHEN cardinality($1::text[]) = 0 \
                 THEN d.datname NOT IN ('template0', 'template1') \
                 ELSE d.datname LIKE ANY($1::text[]) END \
           ORDER BY d.datname LIMIT $2) s \
     ORDER BY s.datname";

/// Replicas streaming from this server (a primary, or a cascading standby): bytes of WAL
/// not yet replayed, the largest per `application_name`.
const SQL_SENDERS: &str = "SELECT COALESCE(NULLIF(application_name, ''), 'unnamed'), \
     max(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                              ELSE pg_current_wal_lsn() END, replay_lsn))::float8 \
     FROM pg_stat_replication GROUP BY 1 ORDER BY 1 LIMIT 1000";

/// On a standby: 0 when everything received is replayed, else the age of the last replayed
/// transaction; NULL on a primary.
const SQL_STANDBY: &str = "SELECT CASE WHEN NOT pg_is_in_recovery() THEN NULL \
     WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
     ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END";

/// States reported even when no session is in them (so dashboards see zeros, not gaps).
const BASE_STATES: [&str; 4] = ["active", "idle", "idle_in_transaction", "idle_in_transaction_aborted"];

/// Aborts the connection task when dropped (a dropped collection must not leave a task
/// waiting on a hanging server).
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One logged-in connection with its prepared statements.
struct Session {
    client: Client,
    connections: Statement,
    max_connections: Statement,
    databases: Statement,
    senders: Statement,
    standby: Statement,
    _task: AbortOnDrop,
}

/// The counters of one database at one collection.
#[derive(Debug, Clone, PartialEq)]
struct DbCounters {
    commit: f64,
    rollback: f64,
    blks_read: f64,
    blks_hit: f64,
    /// `stats_reset` as epoch seconds (0 when never reset): a change means the counters restarted.
    reset: f64,
}

/// One row of [`SQL_DATABASES`].
#[derive(Debug, Clone, PartialEq)]
struct DbRow {
    name: String,
    counters: DbCounters,
    deadlocks: f64,
    backends: f64,
    size: Option<f64>,
}

/// The counters of the previous successful collection.
#[derive(Debug, Default)]
struct Baseline {
    at: Option<Instant>,
    dbs: HashMap<String, DbCounters>,
}

/// The collector of one `[[plugins.postgresql]]` instance.
pub struct PostgresqlPlugin {
    name: String,
    settings: PostgresqlSettings,
    like_patterns: Vec<String>,
    session: Option<Session>,
    baseline: Baseline,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for PostgresqlPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresqlPlugin")
            .field("name", &self.name)
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// Classifies a tokio-postgres error (`what` says what was being done).
fn classify(e: &tokio_postgres::Error, what: &str) -> PluginError {
    let message = match e.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {e}"),
    };
    let reason = if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code.starts_with("28") || code == "42501" {
            // 28000 / 28P01: refused login or password; 42501: insufficient privilege.
            ErrorReason::Auth
        } else if code.starts_with("57P") || code == "53300" || code.starts_with("08") {
            // Terminated by an administrator or a shutdown, starting up, too many
            // connections, connection exceptions.
            ErrorReason::Unreachable
        } else {
            ErrorReason::Protocol
        }
    } else if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        if io.kind() == std::io::ErrorKind::TimedOut { ErrorReason::Timeout } else { ErrorReason::Unreachable }
    } else if e.is_closed() {
        ErrorReason::Unreachable
    } else {
        // Display of the error kinds without a source: "authentication error" (SASL / SCRAM
        // failures), "invalid configuration" (the server asked for a password none was given).
        let text = e.to_string();
        if text.starts_with("authentication error") || text.starts_with("invalid configuration") {
            ErrorReason::Auth
        } else if text.starts_with("timeout") {
            ErrorReason::Timeout
        } else {
            ErrorReason::Protocol
        }
    };
    PluginError::new(reason, message)
}

/// A session state as a tag value: lower case, runs of other characters as one `_`
/// (`idle in transaction (aborted)` → `idle_in_transaction_aborted`); empty → `unknown`.
fn state_tag(state: &str) -> String {
    let mut out = String::with_capacity(state.len());
    for c in state.chars().take(64) {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() { "unknown".to_owned() } else { out }
}

fn get_f64(row: &Row, i: usize, what: &str) -> Result<Option<f64>, PluginError> {
    let v: Option<f64> = row.try_get(i).map_err(|e| PluginError::protocol(format!("{what}: column {i}: {e}")))?;
    Ok(v.filter(|v| v.is_finite()))
}

fn get_text(row: &Row, i: usize, what: &str) -> Result<String, PluginError> {
    let v: Option<String> = row.try_get(i).map_err(|e| PluginError::protocol(format!("{what}: column {i}: {e}")))?;
    Ok(v.unwrap_or_default())
}

fn parse_db_row(row: &Row) -> Result<(DbRow, f64), PluginError> {
    let num = |i| get_f64(row, i, "pg_stat_database");
    let req = |i| num(i)?.ok_or_else(|| PluginError::protocol(format!("pg_stat_database: column {i} is NULL")));
    let name = get_text(row, 0, "pg_stat_database")?;
    let db = DbRow {
        name,
        counters: DbCounters {
            commit: req(1)?,
            rollback: req(2)?,
            blks_read: req(3)?,
            blks_hit: req(4)?,
            reset: num(8)?.unwrap_or(0.0),
        },
        deadlocks: req(5)?,
        backends: req(6)?,
        size: num(7)?,
    };
    Ok((db, num(9)?.unwrap_or(0.0)))
}

/// `(cur - prev) / secs`, `None` when the counter went backwards or no time passed.
fn per_sec(prev: f64, cur: f64, secs: f64) -> Option<f64> {
    (cur >= prev && secs > 0.0).then(|| (cur - prev) / secs)
}

/// The rates of one database since `prev` (`secs` earlier): commit/s, rollback/s, their sum
/// and the cache hit ratio over the interval (`None` without reads and hits). All absent after
/// a counter reset.
fn db_rates(prev: &DbCounters, cur: &DbCounters, secs: f64) -> Option<(f64, f64, f64, Option<f64>)> {
    if prev.reset != cur.reset || secs <= 0.0 {
        return None;
    }
    let commit = per_sec(prev.commit, cur.commit, secs)?;
    let rollback = per_sec(prev.rollback, cur.rollback, secs)?;
    let read = per_sec(prev.blks_read, cur.blks_read, secs)?;
    let hit = per_sec(prev.blks_hit, cur.blks_hit, secs)?;
    let ratio = (read + hit > 0.0).then(|| hit / (read + hit));
    Some((commit, rollback, commit + rollback, ratio))
}

impl PostgresqlPlugin {
    async fn connect(&self) -> Result<Session, PluginError> {
        let s = &self.settings;
        let password = s
            .password
            .read()
            .map_err(|e| PluginError::new(ErrorReason::Other, format!("reading the password: {e}")))?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&s.host)
            .port(s.port)
            .user(&s.user)
            .dbname(&s.dbname)
            .application_name("meshmon-agent")
            .connect_timeout(s.connect_timeout);
        if let Some(pw) = password {
            cfg.password(pw);
        }
        let login = async {
            let (client, connection) = cfg.connect(NoTls).await.map_err(|e| classify(&e, "connecting"))?;
            let task = AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!("postgresql connection ended: {e}");
                }
            }));
            let prepared = futures_util::future::try_join_all(
                [SQL_CONNECTIONS, SQL_MAX_CONNECTIONS, SQL_DATABASES, SQL_SENDERS, SQL_STANDBY]
                    .into_iter()
                    .map(|sql| client.prepare(sql)),
            )
            .await
            .map_err(|e| classify(&e, "preparing the statistics queries"))?;
            let [connections, max_connections, databases, senders, standby]: [Statement; 5] = prepared
                .try_into()
                .map_err(|_| PluginError::new(ErrorReason::Other, "prepared statement count mismatch"))?;
            Ok::<_, PluginError>(Session {
                client,
                connections,
                max_connections,
                databases,
                senders,
                standby,
                _task: task,
            })
        };
        match tokio::time::timeout(s.connect_timeout, login).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::new(
                ErrorReason::Timeout,
                format!("no login to {}:{} within {:?}", s.host, s.port, s.connect_timeout),
            )),
        }
    }

    async fn run(&mut self, session: &Session, at: SystemTime) -> Result<Vec<Record>, PluginError> {
        let ts = timestamp_of(at);
        let limit = i64::from(self.settings.max_databases);
        let c = &session.client;
        let db_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.like_patterns, &limit];
        let (connections, max_connections, databases, senders, standby) = futures_util::try_join!(
            c.query(&session.connections, &[]),
            c.query_opt(&session.max_connections, &[]),
            c.query(&session.databases, &db_params),
            c.query(&session.senders, &[]),
            c.query_opt(&session.standby, &[]),
        )
        .map_err(|e| classify(&e, "reading statistics"))?;
        let now = Instant::now();
        let mut out = Vec::with_capacity(16 + databases.len() * 10 + senders.len());
        let tagged = |metric: &str, v: f64, tags: &[(&str, &str)]| {
            let mut r = double_record(metric, v, ts);
            r.tags.insert("plugin".to_owned(), self.name.clone());
            for (k, val) in tags {
                r.tags.insert((*k).to_owned(), (*val).to_owned());
            }
            r
        };

        let mut states: BTreeMap<String, f64> = BASE_STATES.iter().map(|s| ((*s).to_owned(), 0.0)).collect();
        for row in &connections {
            let state = state_tag(&get_text(row, 0, "pg_stat_activity")?);
            *states.entry(state).or_insert(0.0) += get_f64(row, 1, "pg_stat_activity")?.unwrap_or(0.0);
        }
        for (state, n) in &states {
            out.push(tagged("postgresql.connections", *n, &[("state", state)]));
        }
        if let Some(v) = max_connections.as_ref().map(|r| get_f64(r, 0, "max_connections")).transpose()?.flatten() {
            out.push(tagged("postgresql.max_connections", v, &[]));
        }

        let mut total = 0.0_f64;
        let mut dbs = HashMap::with_capacity(databases.len());
        let secs = self.baseline.at.map(|t| now.saturating_duration_since(t).as_secs_f64());
        for row in &databases {
            let (db, t) = parse_db_row(row)?;
            total = total.max(t);
            let tags = [("db", db.name.as_str())];
            let c = &db.counters;
            out.push(tagged("postgresql.db.numbackends", db.backends, &tags));
            out.push(tagged("postgresql.db.xact_commit_total", c.commit, &tags));
            out.push(tagged("postgresql.db.xact_rollback_total", c.rollback, &tags));
            out.push(tagged("postgresql.db.deadlocks_total", db.deadlocks, &tags));
            if let Some(size) = db.size {
                out.push(tagged("postgresql.db.size_bytes", size, &tags));
            }
            let prev = self.baseline.dbs.get(&db.name);
            if let (Some(prev), Some(secs)) = (prev, secs)
                && let Some((commit, rollback, xacts, ratio)) = db_rates(prev, c, secs)
            {
                out.push(tagged("postgresql.db.xact_commit_per_sec", commit, &tags));
                out.push(tagged("postgresql.db.xact_rollback_per_sec", rollback, &tags));
                out.push(tagged("postgresql.db.transactions_per_sec", xacts, &tags));
                if let Some(ratio) = ratio {
                    out.push(tagged("postgresql.db.cache_hit_ratio", ratio, &tags));
                }
            }
            dbs.insert(db.name, db.counters);
        }
        #[allow(clippy::cast_precision_loss)] // at most u32::MAX rows
        let over = (total - databases.len() as f64).max(0.0);
        if over > 0.0 {
            self.metrics.warn_limited(
                "postgresql_databases_over_limit",
                &format!(
                    "plugin {:?}: {over} databases beyond max_databases = {} are not reported",
                    self.name, self.settings.max_databases
                ),
            );
        }
        out.push(tagged("postgresql.databases_over_limit", over, &[]));

        for row in &senders {
            let app = get_text(row, 0, "pg_stat_replication")?;
            if let Some(lag) = get_f64(row, 1, "pg_stat_replication")? {
                out.push(tagged("postgresql.replication.lag_bytes", lag.max(0.0), &[("application_name", &app)]));
            }
        }
        if let Some(lag) = standby.as_ref().map(|r| get_f64(r, 0, "standby replay")).transpose()?.flatten() {
            out.push(tagged("postgresql.replication.replay_lag_seconds", lag.max(0.0), &[]));
        }

        // Everything is parsed: only now advance the baseline.
        self.baseline = Baseline { at: Some(now), dbs };
        Ok(out)
    }
}

impl Plugin for PostgresqlPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let (mut session, mut reused) = match self.session.take() {
                Some(s) if !s.client.is_closed() => (s, true),
                _ => (self.connect().await?, false),
            };
            loop {
                let result = self.run(&session, at).await;
                let closed = session.client.is_closed();
                let lost = result
                    .as_ref()
                    .is_err_and(|e| closed || matches!(e.reason, ErrorReason::Unreachable | ErrorReason::Timeout));
                if lost && reused {
                    // A kept connection that broke while idle (server restart, terminated
                    // backend, idle timeout): log in again once, in this collection.
                    debug!(plugin = %self.name, "postgresql connection lost, reconnecting");
                    drop(session);
                    session = self.connect().await?;
                    reused = false;
                    continue;
                }
                // Keep the connection while it is healthy (an SQL error leaves it usable); a
                // lost one is dropped and the next collection logs in again.
                if !lost && !closed {
                    self.session = Some(session);
                }
                return result;
            }
        })
    }
}

impl BuildPlugin for PostgresqlSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        // Fail at start on an unreadable secret (it is read again at every login, so a
        // rotated password is picked up on the next reconnect).
        self.password.read_for("password")?;
        Ok(Box::new(PostgresqlPlugin {
            name: name.to_owned(),
            settings: self.clone(),
            like_patterns: self.like_patterns(),
            session: None,
            baseline: Baseline::default(),
            metrics: ctx.metrics.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::plugins::{PluginSettings, PluginsConfig};

    fn counters(commit: f64, rollback: f64, read: f64, hit: f64, reset: f64) -> DbCounters {
        DbCounters { commit, rollback, blks_read: read, blks_hit: hit, reset }
    }

    #[test]
    fn rates_come_from_two_collections_and_stop_at_a_reset() {
        let a = counters(100.0, 10.0, 50.0, 150.0, 0.0);
        let b = counters(130.0, 12.0, 60.0, 190.0, 0.0);
        let (commit, rollback, xacts, ratio) = db_rates(&a, &b, 2.0).expect("rates");
        assert_eq!((commit, rollback, xacts), (15.0, 1.0, 16.0));
        assert_eq!(ratio, Some(40.0 / 50.0));
        // No block reads or hits in the interval: no ratio (rather than 0 or NaN).
        let c = counters(131.0, 12.0, 60.0, 190.0, 0.0);
        assert_eq!(db_rates(&b, &c, 1.0).expect("rates").3, None);
        // A counter going backwards, or a new stats_reset time, is a reset: no rates.
        assert_eq!(db_rates(&b, &counters(5.0, 0.0, 1.0, 1.0, 0.0), 1.0), None);
        assert_eq!(db_rates(&a, &counters(200.0, 20.0, 60.0, 200.0, 1.7e9), 1.0), None);
        assert_eq!(db_rates(&a, &b, 0.0), None);
    }

    #[test]
    fn states_become_tag_values() {
        assert_eq!(state_tag("idle in transaction (aborted)"), "idle_in_transaction_aborted");
        assert_eq!(state_tag("idle in transaction"), "idle_in_transaction");
        assert_eq!(state_tag("Active"), "active");
        assert_eq!(state_tag(""), "unknown");
        assert_eq!(state_tag("(("), "unknown");
    }

    #[test]
    fn database_patterns_become_like_patterns() {
        let s =
            PostgresqlSettings { databases: vec!["app_*".into(), "a%b?".into(), "x\\y".into()], ..Default::default() };
        assert_eq!(s.like_patterns(), vec!["app\\_%", "a\\%b_", "x\\\\y"]);
    }

    #[test]
    fn settings_parse_with_defaults_and_are_checked() {
        let mut c: PluginsConfig = toml::from_str(
            "[[postgresql]]\nport = 5433\nuser = \"meshmon\"\npassword = { env = \"PGPW\" }\ndatabases = [\"app*\"]\n",
        )
        .expect("parses");
        c.normalize().expect("valid");
        let s = &c.postgresql[0].settings;
        assert_eq!((s.host.as_str(), s.port, s.dbname.as_str()), ("127.0.0.1", 5433, "postgres"));
        assert_eq!(s.password.env.as_deref(), Some("PGPW"));
        assert_eq!(c.postgresql[0].interval, PostgresqlSettings::DEFAULT_INTERVAL);
        assert!(toml::from_str::<PluginsConfig>("[[postgresql]]\npasword = \"x\"\n").is_err());
        assert!(toml::from_str::<PluginsConfig>("[[postgresql]]\npassword = \"inline\"\n").is_err());
        let bad = |s: PostgresqlSettings| s.validate("p").is_err();
        assert!(bad(PostgresqlSettings { port: 0, ..Default::default() }));
        assert!(bad(PostgresqlSettings { databases: vec![String::new()], ..Default::default() }));
        assert!(bad(PostgresqlSettings { max_databases: 0, ..Default::default() }));
        assert!(bad(PostgresqlSettings { connect_timeout: Duration::ZERO, ..Default::default() }));
    }

    fn ctx() -> PluginContext {
        PluginContext::standalone(std::env::temp_dir()).0
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_server_times_out() {
        let closed = crate::plugins::test_support::closed_port();
        let s = PostgresqlSettings { port: closed, ..Default::default() };
        let mut p = s.build("pg", &ctx()).expect("builds");
        let e = p.collect(SystemTime::now()).await.expect_err("nothing listens");
        assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");

        // Accepts connections and never answers.
        let (port, keep) = crate::plugins::test_support::silent_server().await;
        let s = PostgresqlSettings { port, connect_timeout: Duration::from_millis(200), ..Default::default() };
        let mut p = s.build("pg", &ctx()).expect("builds");
        let e = p.collect(SystemTime::now()).await.expect_err("no answer");
        assert_eq!(e.reason, ErrorReason::Timeout, "{e}");
        keep.abort();
    }
}

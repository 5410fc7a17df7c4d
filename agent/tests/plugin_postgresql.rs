//! The `postgresql` plugin against a real PostgreSQL (Debian `postgresql`), started by the test
//! on loopback with its own data directory (`meshmon_tests::postgres`): exact transaction
//! counts, rates, sessions by state, the database filter and its cap, replication lag on a
//! primary and a standby, wrong passwords, lost connections and closed ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use meshmon_agent::plugins::postgresql::PostgresqlSettings;
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, PluginContext, SecretRef};
use meshmon_proto::v1::Record;
use meshmon_tests::postgres::{Postgres, SUPERUSER, SUPERUSER_PASSWORD};
use meshmon_tests::wait_for;
use tokio_postgres::NoTls;

const PASSWORD: &str = "monitor-pw";

fn ctx(dir: &std::path::Path) -> PluginContext {
    PluginContext::standalone(dir).0
}

/// Settings for role `meshmon` (password in a file under `dir`) on `pg`.
fn settings(pg: &Postgres, dir: &std::path::Path) -> PostgresqlSettings {
    let file = dir.join("pg-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    PostgresqlSettings {
        port: pg.port,
        user: "meshmon".into(),
        password: SecretRef { env: None, file: Some(file) },
        ..Default::default()
    }
}

fn create_monitor_role(pg: &Postgres) {
    pg.psql("postgres", &format!("CREATE ROLE meshmon LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor")).unwrap();
}

/// The value of `metric` whose tags include all of `tags`.
use meshmon_agent::record::find_double as value;

fn tag_values(records: &[Record], metric: &str, tag: &str) -> Vec<String> {
    let mut v: Vec<String> =
        records.iter().filter(|r| r.metric == metric).filter_map(|r| r.tags.get(tag).cloned()).collect();
    v.sort();
    v
}

async fn superuser_client(pg: &Postgres, db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port)
        .user(SUPERUSER)
        .password(SUPERUSER_PASSWORD)
        .dbname(db)
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_transactions_exactly_and_reports_sessions_and_databases() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start().unwrap();
    create_monitor_role(&pg);
    for db in ["app", "app2", "other"] {
        pg.psql("postgres", &format!("CREATE DATABASE {db}")).unwrap();
    }
    let app = superuser_client(&pg, "app").await;
    // Flush this session's statistics so far (table creation, login) before the baseline.
    app.batch_execute("CREATE TABLE t (i int); SELECT pg_stat_force_next_flush()").await.unwrap();

    let s = PostgresqlSettings { databases: vec!["app*".into()], ..settings(&pg, dir.path()) };
    let mut plugin = s.build("pg", &ctx(dir.path())).unwrap();
    let first = plugin.collect(SystemTime::now()).await.unwrap();
    let c0 = value(&first, "postgresql.db.xact_commit_total", &[("db", "app")]).expect("commit counter");
    let r0 = value(&first, "postgresql.db.xact_rollback_total", &[("db", "app")]).expect("rollback counter");
    assert!(first.iter().all(|r| r.tags.get("plugin").map(String::as_str) == Some("pg")), "tagged with the instance");
    // The filter: app and app2, not other, not postgres.
    assert_eq!(tag_values(&first, "postgresql.db.xact_commit_total", "db"), ["app", "app2"]);
    assert_eq!(value(&first, "postgresql.max_connections", &[]), Some(100.0));
    assert_eq!(value(&first, "postgresql.databases_over_limit", &[]), Some(0.0));
    assert!(value(&first, "postgresql.db.size_bytes", &[("db", "app")]).is_some_and(|b| b > 1e6));
    assert_eq!(value(&first, "postgresql.db.numbackends", &[("db", "app")]), Some(1.0));
    assert_eq!(value(&first, "postgresql.db.deadlocks_total", &[("db", "app")]), Some(0.0));
    // No rates from a single collection; no replication here.
    for metric in ["postgresql.db.xact_commit_per_sec", "postgresql.db.transactions_per_sec"] {
        assert!(value(&first, metric, &[]).is_none(), "{metric} on the first collection");
    }
    assert!(first.iter().all(|r| !r.metric.starts_with("postgresql.replication.")), "no replication configured");
    // The plugin's own session is active; the base states are there even at zero.
    assert!(value(&first, "postgresql.connections", &[("state", "active")]).is_some_and(|n| n >= 1.0));
    assert_eq!(value(&first, "postgresql.connections", &[("state", "idle_in_transaction_aborted")]), Some(0.0));

    // N commits and M rollbacks in explicit transactions; the last commit forces the flush.
    const N: usize = 25;
    const M: usize = 3;
    for _ in 0..M {
        app.batch_execute("BEGIN; INSERT INTO t VALUES (1); ROLLBACK").await.unwrap();
    }
    for _ in 0..N - 1 {
        app.batch_execute("BEGIN; INSERT INTO t VALUES (1); COMMIT").await.unwrap();
    }
    app.batch_execute("BEGIN; INSERT INTO t VALUES (1); SELECT pg_stat_force_next_flush(); COMMIT").await.unwrap();
    // A session left idle in a transaction (in another database: it commits nothing in app).
    let idle = superuser_client(&pg, "postgres").await;
    idle.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let second = plugin.collect(SystemTime::now()).await.unwrap();
    let c1 = value(&second, "postgresql.db.xact_commit_total", &[("db", "app")]).unwrap();
    let r1 = value(&second, "postgresql.db.xact_rollback_total", &[("db", "app")]).unwrap();
    assert_eq!(c1 - c0, N as f64, "exactly the test's commits");
    assert_eq!(r1 - r0, M as f64, "exactly the test's rollbacks");
    let commit_rate = value(&second, "postgresql.db.xact_commit_per_sec", &[("db", "app")]).expect("commit rate");
    let rollback_rate = value(&second, "postgresql.db.xact_rollback_per_sec", &[("db", "app")]).expect("rate");
    let xacts = value(&second, "postgresql.db.transactions_per_sec", &[("db", "app")]).expect("rate");
    assert!(commit_rate > 0.0 && rollback_rate > 0.0);
    assert!((xacts - (commit_rate + rollback_rate)).abs() < 1e-9);
    // Same interval for both: the rates are in the ratio of the counts.
    assert!((commit_rate / rollback_rate - N as f64 / M as f64).abs() < 1e-6);
    if let Some(ratio) = value(&second, "postgresql.db.cache_hit_ratio", &[("db", "app")]) {
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    }
    assert!(value(&second, "postgresql.connections", &[("state", "idle_in_transaction")]).is_some_and(|n| n >= 1.0));

    // The cap: one database reported, the other counted.
    let s = PostgresqlSettings { databases: vec!["app*".into()], max_databases: 1, ..settings(&pg, dir.path()) };
    let capped = s.build("pg-capped", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap();
    assert_eq!(tag_values(&capped, "postgresql.db.xact_commit_total", "db"), ["app"]);
    assert_eq!(value(&capped, "postgresql.databases_over_limit", &[]), Some(1.0));

    // Without a filter: every database but the templates.
    let mut unfiltered = settings(&pg, dir.path()).build("pg-all", &ctx(dir.path())).unwrap();
    let all = unfiltered.collect(SystemTime::now()).await.unwrap();
    assert_eq!(tag_values(&all, "postgresql.db.numbackends", "db"), ["app", "app2", "other", "postgres"]);

    // The plugin's backend terminated by the server: the next collection logs in again.
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'meshmon-agent'",
    )
    .unwrap();
    let after = plugin.collect(SystemTime::now()).await.expect("reconnects");
    assert!(value(&after, "postgresql.db.xact_commit_total", &[("db", "app")]).is_some_and(|c| c >= c1));

    // Collections abandoned at any point (as the runner does on a timeout) leave the plugin
    // usable: the next full collection succeeds and its counters only moved forward.
    for micros in [0, 50, 200, 1000, 3000] {
        let _ = tokio::time::timeout(Duration::from_micros(micros), plugin.collect(SystemTime::now())).await;
        let records = plugin.collect(SystemTime::now()).await.expect("collects after an abandoned collection");
        assert!(value(&records, "postgresql.db.xact_commit_total", &[("db", "app")]).is_some_and(|c| c >= c1));
    }

    // Wrong password, or none where one is required: auth.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    let s = PostgresqlSettings { password: SecretRef { env: None, file: Some(wrong) }, ..settings(&pg, dir.path()) };
    let e = s.build("pg-wrong", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "{e}");
    assert!(!e.message.contains("not-it"), "the password is not in the message: {e}");
    let s = PostgresqlSettings { password: SecretRef::default(), ..settings(&pg, dir.path()) };
    let e = s.build("pg-none", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "{e}");
    drop(idle);
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lag_on_the_primary_and_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Postgres::start().unwrap();
    create_monitor_role(&primary);
    let standby = primary.start_standby("replica1").unwrap();
    // Some WAL to replay, then wait until the standby streams and has replayed it.
    primary.psql("postgres", "CREATE TABLE r (i int); INSERT INTO r SELECT generate_series(1, 100)").unwrap();
    wait_for("the standby to stream and catch up", Duration::from_secs(60), || {
        let row = primary
            .psql(
                "postgres",
                "SELECT state, replay_lsn = pg_current_wal_lsn() FROM pg_stat_replication \
                 WHERE application_name = 'replica1'",
            )
            .ok()?;
        (row == "streaming|t").then_some(())
    })
    .unwrap();

    let mut plugin = settings(&primary, dir.path()).build("pg-primary", &ctx(dir.path())).unwrap();
    let on_primary = plugin.collect(SystemTime::now()).await.unwrap();
    let lag = value(&on_primary, "postgresql.replication.lag_bytes", &[("application_name", "replica1")]);
    assert!(lag.is_some_and(|b| b >= 0.0), "lag of replica1 on the primary: {lag:?}");
    assert!(value(&on_primary, "postgresql.replication.replay_lag_seconds", &[]).is_none(), "not a standby");

    // The role was created before the base backup, so it exists on the standby too.
    let mut plugin = settings(&standby, dir.path()).build("pg-standby", &ctx(dir.path())).unwrap();
    let on_standby = plugin.collect(SystemTime::now()).await.unwrap();
    let replay = value(&on_standby, "postgresql.replication.replay_lag_seconds", &[]);
    assert!(replay.is_some_and(|s| s >= 0.0), "standby replay lag: {replay:?}");
    assert!(value(&on_standby, "postgresql.replication.lag_bytes", &[]).is_none(), "no cascading replica");
    assert!(value(&on_standby, "postgresql.max_connections", &[]).is_some());
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = PostgresqlSettings { port, ..Default::default() };
    let e = s.build("pg-closed", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");
}

//! The `mysql` plugin against a real MariaDB (Debian `mariadb-server`), started by the test on
//! loopback with its own data directory (`meshmon_tests::mariadb`): exact commit counts, rates,
//! connections, a replica's threads and delay, missing privileges, wrong passwords, lost
//! connections and closed ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use meshmon_agent::plugins::mysql::MysqlSettings;
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, PluginContext, SecretRef};
use meshmon_tests::mariadb::MariaDb;
use mysql_async::prelude::Queryable;

const PASSWORD: &str = "monitor-pw";

fn ctx(dir: &std::path::Path) -> PluginContext {
    PluginContext::standalone(dir).0
}

/// Creates `user`@127.0.0.1 (password [`PASSWORD`]) with `grants` on `db` (kept out of the
/// binary log, so a primary's users do not replicate).
fn create_user(db: &MariaDb, user: &str, grants: &str) {
    db.sql(&format!("SET sql_log_bin = 0; CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT {grants} TO '{user}'@'127.0.0.1'"))
        .unwrap();
}

/// Settings for `user` (password in a file under `dir`) on `db`.
fn settings(db: &MariaDb, user: &str, dir: &std::path::Path) -> MysqlSettings {
    let file = dir.join("mysql-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    MysqlSettings {
        port: db.port,
        user: user.into(),
        password: SecretRef { env: None, file: Some(file) },
        ..Default::default()
    }
}

/// The value of `metric` whose tags include all of `tags`.
use meshmon_agent::record::find_double as value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_commits_exactly_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = MariaDb::start().unwrap();
    create_user(&db, "meshmon", "PROCESS, SLAVE MONITOR ON *.*");
    db.sql("CREATE DATABASE app; CREATE TABLE app.t (i INT) ENGINE = InnoDB").unwrap();
    create_user(&db, "app", "ALL ON app.*");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.port)
        .user(Some("app"))
        .pass(Some(PASSWORD))
        .prefer_socket(false);
    let mut app = mysql_async::Conn::new(opts).await.unwrap();

    let mut plugin = settings(&db, "meshmon", dir.path()).build("my", &ctx(dir.path())).unwrap();
    let first = plugin.collect(SystemTime::now()).await.unwrap();
    let c0 = value(&first, "mysql.com_commit_total", &[]).expect("Com_commit");
    let r0 = value(&first, "mysql.com_rollback_total", &[]).expect("Com_rollback");
    assert!(first.iter().all(|r| r.tags.get("plugin").map(String::as_str) == Some("my")), "tagged with the instance");
    // The plugin's connection and the app's.
    assert!(value(&first, "mysql.connections", &[]).is_some_and(|n| n >= 2.0));
    assert!(value(&first, "mysql.threads_running", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(value(&first, "mysql.max_connections", &[]), Some(151.0));
    assert!(value(&first, "mysql.uptime_seconds", &[]).is_some_and(|s| s >= 0.0));
    assert!(value(&first, "mysql.innodb.buffer_pool_bytes_data", &[]).is_some_and(|b| b > 0.0));
    for metric in ["mysql.slow_queries_total", "mysql.aborted_connects_total"] {
        assert!(value(&first, metric, &[]).is_some(), "{metric}");
    }
    // No rates from a single collection; not a replica.
    assert!(value(&first, "mysql.queries_per_sec", &[]).is_none());
    assert!(value(&first, "mysql.transactions_per_sec", &[]).is_none());
    assert!(first.iter().all(|r| !r.metric.starts_with("mysql.replication.")), "not a replica");

    // N commits and M rollbacks in explicit transactions; nothing else on the server commits.
    const N: usize = 20;
    const M: usize = 2;
    for i in 0..N {
        app.query_drop("START TRANSACTION").await.unwrap();
        app.query_drop(format!("INSERT INTO app.t VALUES ({i})")).await.unwrap();
        app.query_drop("COMMIT").await.unwrap();
    }
    for i in 0..M {
        app.query_drop("START TRANSACTION").await.unwrap();
        app.query_drop(format!("INSERT INTO app.t VALUES ({i})")).await.unwrap();
        app.query_drop("ROLLBACK").await.unwrap();
    }
    let second = plugin.collect(SystemTime::now()).await.unwrap();
    let c1 = value(&second, "mysql.com_commit_total", &[]).unwrap();
    let r1 = value(&second, "mysql.com_rollback_total", &[]).unwrap();
    assert_eq!(c1 - c0, N as f64, "exactly the test's commits");
    assert_eq!(r1 - r0, M as f64, "exactly the test's rollbacks");
    let xacts = value(&second, "mysql.transactions_per_sec", &[]).expect("transaction rate");
    let queries = value(&second, "mysql.queries_per_sec", &[]).expect("query rate");
    // The same interval: at least 3 statements per transaction were counted as queries.
    assert!(xacts > 0.0 && queries >= 3.0 * xacts, "{queries} q/s, {xacts} tx/s");
    assert!(value(&second, "mysql.bytes_received_per_sec", &[]).is_some_and(|b| b > 0.0));
    assert!(value(&second, "mysql.bytes_sent_per_sec", &[]).is_some_and(|b| b > 0.0));
    if let Some(ratio) = value(&second, "mysql.innodb.buffer_pool_hit_ratio", &[]) {
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    }

    // The plugin's connection killed by the server: the next collection logs in again.
    let ids = db.sql("SELECT id FROM information_schema.PROCESSLIST WHERE user = 'meshmon'").unwrap();
    for id in ids.lines() {
        db.sql(&format!("KILL {id}")).unwrap();
    }
    let after = plugin.collect(SystemTime::now()).await.expect("reconnects");
    assert!(value(&after, "mysql.com_commit_total", &[]).is_some_and(|c| c >= c1));

    // Collections abandoned at any point (as the runner does on a timeout) leave the plugin
    // usable: the next full collection succeeds and its counters only moved forward.
    for micros in [0, 50, 200, 1000, 3000] {
        let _ = tokio::time::timeout(Duration::from_micros(micros), plugin.collect(SystemTime::now())).await;
        let records = plugin.collect(SystemTime::now()).await.expect("collects after an abandoned collection");
        assert!(value(&records, "mysql.com_commit_total", &[]).is_some_and(|c| c >= c1));
    }

    // A user without the replication privilege still gets everything else.
    create_user(&db, "limited", "PROCESS ON *.*");
    let mut limited = settings(&db, "limited", dir.path()).build("my-limited", &ctx(dir.path())).unwrap();
    for _ in 0..2 {
        let records = limited.collect(SystemTime::now()).await.expect("healthy without replication rights");
        assert!(value(&records, "mysql.connections", &[]).is_some());
    }

    // Wrong password: auth, and the password is not in the message.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    let s =
        MysqlSettings { password: SecretRef { env: None, file: Some(wrong) }, ..settings(&db, "meshmon", dir.path()) };
    let e = s.build("my-wrong", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "{e}");
    assert!(!e.message.contains("not-it"), "{e}");
    app.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reports_its_threads_and_delay() {
    let dir = tempfile::tempdir().unwrap();
    let primary = MariaDb::start().unwrap();
    let replica = primary.start_replica().unwrap();
    // Each server its own user (not replicated, see `create_user`).
    create_user(&replica, "meshmon", "PROCESS, SLAVE MONITOR ON *.*");
    create_user(&primary, "meshmon", "PROCESS, SLAVE MONITOR ON *.*");

    let mut plugin = settings(&replica, "meshmon", dir.path()).build("my-replica", &ctx(dir.path())).unwrap();
    let records = plugin.collect(SystemTime::now()).await.unwrap();
    let tags = [("channel", "default")];
    assert_eq!(value(&records, "mysql.replication.io_running", &tags), Some(1.0));
    assert_eq!(value(&records, "mysql.replication.sql_running", &tags), Some(1.0));
    assert!(value(&records, "mysql.replication.seconds_behind", &tags).is_some_and(|s| s >= 0.0));

    // The SQL thread stopped: running 0, and no delay (the server reports NULL).
    replica.sql("STOP SLAVE SQL_THREAD").unwrap();
    let records = plugin.collect(SystemTime::now()).await.unwrap();
    assert_eq!(value(&records, "mysql.replication.sql_running", &tags), Some(0.0));
    assert_eq!(value(&records, "mysql.replication.io_running", &tags), Some(1.0));
    assert!(value(&records, "mysql.replication.seconds_behind", &tags).is_none());

    // The primary is no replica.
    let mut plugin = settings(&primary, "meshmon", dir.path()).build("my-primary", &ctx(dir.path())).unwrap();
    let records = plugin.collect(SystemTime::now()).await.unwrap();
    assert!(records.iter().all(|r| !r.metric.starts_with("mysql.replication.")));
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = MysqlSettings { port, ..Default::default() };
    let e = s.build("my-closed", &ctx(dir.path())).unwrap().collect(SystemTime::now()).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");
}

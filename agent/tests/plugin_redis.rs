//! The `redis` plugin against real `redis-server` processes (Debian package) on loopback.
//!
//! Role: builds the plugin through its public API (`BuildPlugin::build`) and calls `collect`
//! directly, asserting values against what the test set up: keys per database with and
//! without expiry, hits and misses (and the hit ratio over the interval), `max_dbs` and
//! `select`; a server with `requirepass` and ACL users (wrong, missing and right credentials);
//! a replica and its master; a connection the server closed (re-opened once); a closed port
//! (unreachable) and a server that accepts and never answers (the client's read timeout, and
//! the runner's timeout dropping the collection). Prints the cost of one collection (mean of
//! 100). Touches child processes, temp dirs and loopback sockets only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::plugins::redis::{METRIC_NAMES, RedisSettings};
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, Plugin, PluginContext, PluginError, SecretRef};
use meshmon_proto::v1::Record;
use meshmon_tests::redis::Redis;
use tokio::task::block_in_place;

fn ctx(dir: &std::path::Path) -> PluginContext {
    PluginContext::standalone(dir).0
}

fn start(dir: &Path, extra: &[&str]) -> Redis {
    block_in_place(|| Redis::start(dir, extra).unwrap_or_else(|e| panic!("starting redis-server: {e}")))
}

fn build(settings: &RedisSettings, dir: &Path) -> Box<dyn Plugin> {
    settings.build("redis-test", &ctx(dir)).unwrap_or_else(|e| panic!("build: {e}"))
}

async fn collect(p: &mut Box<dyn Plugin>) -> Result<Vec<Record>, PluginError> {
    p.collect(SystemTime::now()).await
}

/// Collects every 100 ms until `done` accepts the records (at most 30 s).
async fn collect_until(p: &mut Box<dyn Plugin>, what: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = collect(p).await.unwrap();
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last records: {records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use meshmon_agent::record::find_double as value;

fn password_file(dir: &Path, name: &str, password: &str) -> SecretRef {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    SecretRef { env: None, file: Some(path) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_memory_stats_and_hit_ratio_of_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let redis = start(dir.path(), &[]);
    let mut setup: Vec<Vec<String>> = Vec::new();
    for i in 0..5 {
        let mut c = vec!["SET".to_owned(), format!("a{i}"), "v".to_owned()];
        if i < 2 {
            c.extend(["EX".to_owned(), "1000".to_owned()]);
        }
        setup.push(c);
    }
    setup.push(vec!["SELECT".into(), "1".into()]);
    for i in 0..3 {
        setup.push(vec!["SET".into(), format!("b{i}"), "v".into(), "EX".into(), "1000".into()]);
    }
    let refs: Vec<Vec<&str>> = setup.iter().map(|c| c.iter().map(String::as_str).collect()).collect();
    let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
    block_in_place(|| redis.commands(None, &refs)).unwrap();

    let settings = RedisSettings { address: redis.address(), ..RedisSettings::default() };
    let mut p = build(&settings, dir.path());
    let first = collect(&mut p).await.unwrap();
    assert_eq!(value(&first, "redis.keyspace.keys", &[("db", "0")]), Some(5.0));
    assert_eq!(value(&first, "redis.keyspace.expires", &[("db", "0")]), Some(2.0));
    assert_eq!(value(&first, "redis.keyspace.keys", &[("db", "1")]), Some(3.0));
    assert_eq!(value(&first, "redis.keyspace.expires", &[("db", "1")]), Some(3.0));
    let ttl = value(&first, "redis.keyspace.avg_ttl_seconds", &[("db", "1")]).unwrap();
    // Redis estimates avg_ttl from its expiry sampling: 0 until it sampled, then up to the TTL.
    assert!((0.0..=1000.0).contains(&ttl), "avg ttl {ttl}");
    assert_eq!(value(&first, "redis.keyspace.dbs_skipped", &[]), Some(0.0));
    assert_eq!(value(&first, "redis.persistence.rdb_changes_since_last_save", &[]), Some(8.0));
    assert_eq!(value(&first, "redis.replication.is_master", &[]), Some(1.0));
    assert_eq!(value(&first, "redis.replication.connected_slaves", &[]), Some(0.0));
    assert_eq!(value(&first, "redis.keyspace_hits_total", &[]), Some(0.0));
    assert_eq!(value(&first, "redis.keyspace_hit_ratio", &[]), None, "no baseline yet");
    assert!(value(&first, "redis.memory.used_bytes", &[]).unwrap() > 0.0);
    assert!(value(&first, "redis.memory.rss_bytes", &[]).unwrap() > 0.0);
    assert_eq!(value(&first, "redis.memory.maxmemory_bytes", &[]), Some(0.0));
    assert!(value(&first, "redis.clients.connected", &[]).unwrap() >= 1.0);
    assert!(value(&first, "redis.commands_processed_total", &[]).unwrap() >= 9.0);
    assert!(value(&first, "redis.uptime_seconds", &[]).is_some());
    assert!(value(&first, "redis.persistence.rdb_last_save_age_seconds", &[]).unwrap() >= 0.0);
    let names: BTreeSet<&str> = first.iter().map(|r| r.metric.as_str()).collect();
    assert!(names.iter().all(|n| METRIC_NAMES.contains(n)), "{names:?}");
    assert!(first.iter().all(|r| r.cluster.is_empty() && r.node.is_empty()), "cluster/node are the ingress's");

    // 3 hits and 1 miss in the interval → ratio 0.75.
    block_in_place(|| redis.commands(None, &[&["GET", "a0"], &["GET", "a1"], &["GET", "a2"], &["GET", "nope"]]))
        .unwrap();
    let second = collect(&mut p).await.unwrap();
    assert_eq!(value(&second, "redis.keyspace_hits_total", &[]), Some(3.0));
    assert_eq!(value(&second, "redis.keyspace_misses_total", &[]), Some(1.0));
    assert_eq!(value(&second, "redis.keyspace_hit_ratio", &[]), Some(0.75));

    // The server closes the plugin's connection: the next collection reconnects once.
    block_in_place(|| redis.commands(None, &[&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]])).unwrap();
    let third = collect(&mut p).await.unwrap();
    assert_eq!(value(&third, "redis.keyspace.keys", &[("db", "0")]), Some(5.0));

    // max_dbs and select bound the output.
    let capped = RedisSettings { max_dbs: 1, select: vec!["redis.keyspace".into()], ..settings.clone() };
    let records = collect(&mut build(&capped, dir.path())).await.unwrap();
    let names: BTreeSet<&str> = records.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "redis.keyspace.keys",
            "redis.keyspace.expires",
            "redis.keyspace.avg_ttl_seconds",
            "redis.keyspace.dbs_skipped"
        ])
    );
    assert_eq!(value(&records, "redis.keyspace.keys", &[("db", "1")]), None);
    assert_eq!(value(&records, "redis.keyspace.dbs_skipped", &[]), Some(1.0));

    // Cost of one collection (kept connection), mean of 100.
    let started = Instant::now();
    for _ in 0..100 {
        collect(&mut p).await.unwrap();
    }
    eprintln!("redis plugin: one collection takes {:?} (mean of 100, this build)", started.elapsed() / 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_acl_users() {
    let dir = tempfile::tempdir().unwrap();
    let redis = start(dir.path(), &["--requirepass", "s3cret"]);
    block_in_place(|| {
        redis.commands(
            Some("s3cret"),
            &[
                &["ACL", "SETUSER", "mon", "on", ">monpw", "+info"],
                &["ACL", "SETUSER", "mute", "on", ">mutepw", "-@all"],
            ],
        )
    })
    .unwrap();
    let base = RedisSettings { address: redis.address(), ..RedisSettings::default() };

    let e = collect(&mut build(&base, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "no password: {e}");
    assert!(e.message.contains("NOAUTH"), "{e}");

    let wrong = RedisSettings { password: password_file(dir.path(), "wrong", "nope"), ..base.clone() };
    let e = collect(&mut build(&wrong, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "wrong password: {e}");
    assert!(!e.message.contains("nope"), "the password never appears in messages: {e}");

    let right = RedisSettings { password: password_file(dir.path(), "right", "s3cret"), ..base.clone() };
    let records = collect(&mut build(&right, dir.path())).await.unwrap();
    assert!(value(&records, "redis.memory.used_bytes", &[]).is_some());

    let user = RedisSettings {
        username: Some("mon".into()),
        password: password_file(dir.path(), "mon", "monpw"),
        ..base.clone()
    };
    let records = collect(&mut build(&user, dir.path())).await.unwrap();
    assert!(value(&records, "redis.clients.connected", &[]).is_some(), "an ACL user allowed INFO");

    let mute = RedisSettings {
        username: Some("mute".into()),
        password: password_file(dir.path(), "mute", "mutepw"),
        ..base.clone()
    };
    let e = collect(&mut build(&mute, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "a user without the INFO permission: {e}");

    let unset = RedisSettings {
        password: SecretRef { env: Some("MESHMON_TEST_SURELY_UNSET_REDIS_PASSWORD".into()), file: None },
        ..base
    };
    let e = unset.build("redis-test", &ctx(dir.path())).err().expect("an unset variable fails the build");
    assert!(e.message.contains("MESHMON_TEST_SURELY_UNSET_REDIS_PASSWORD"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_and_its_master() {
    let dir = tempfile::tempdir().unwrap();
    let master = start(dir.path(), &["--repl-diskless-sync-delay", "0"]);
    let port = master.port.to_string();
    let replica = start(dir.path(), &["--replicaof", "127.0.0.1", &port]);
    block_in_place(|| master.commands(None, &[&["SET", "k", "v"]])).unwrap();

    let mut on_replica = build(&RedisSettings { address: replica.address(), ..RedisSettings::default() }, dir.path());
    let mut on_master = build(&RedisSettings { address: master.address(), ..RedisSettings::default() }, dir.path());
    let records = collect_until(&mut on_replica, "the replica's link to its master", |r| {
        value(r, "redis.replication.master_link_up", &[]) == Some(1.0)
            && value(r, "redis.keyspace.keys", &[("db", "0")]) == Some(1.0)
    })
    .await;
    assert_eq!(value(&records, "redis.replication.is_master", &[]), Some(0.0));
    assert!(value(&records, "redis.replication.offset_bytes", &[]).unwrap() > 0.0);
    assert!(value(&records, "redis.replication.master_last_io_seconds", &[]).unwrap() >= 0.0);

    let replica_tag = format!("127.0.0.1:{}", replica.port);
    let records = collect_until(&mut on_master, "the master's view of the replica", |r| {
        value(r, "redis.replication.replica_lag_bytes", &[("replica", &replica_tag)]).is_some()
    })
    .await;
    assert_eq!(value(&records, "redis.replication.is_master", &[]), Some(1.0));
    assert_eq!(value(&records, "redis.replication.connected_slaves", &[]), Some(1.0));
    assert!(value(&records, "redis.replication.replica_lag_seconds", &[("replica", &replica_tag)]).is_some());
    assert_eq!(value(&records, "redis.replication.master_link_up", &[]), None, "a master has no link to report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_and_hanging_server() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let settings = RedisSettings { address: closed, ..RedisSettings::default() };
    let e = collect(&mut build(&settings, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");

    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let quick = RedisSettings {
        address: hanging.clone(),
        read_timeout: Duration::from_millis(300),
        ..RedisSettings::default()
    };
    let e = collect(&mut build(&quick, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Timeout, "the client's own read timeout: {e}");

    // With a long read timeout, the runner's timeout drops the collection; the plugin stays usable.
    let slow = RedisSettings { address: hanging, read_timeout: Duration::from_secs(600), ..RedisSettings::default() };
    let mut p = build(&slow, dir.path());
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_millis(300), p.collect(SystemTime::now())).await;
        assert!(r.is_err(), "the collection is still waiting when the runner gives up");
    }
    hold.abort();
}

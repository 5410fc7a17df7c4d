//! The `rabbitmq` plugin against a real RabbitMQ 3.10 (Debian package) with its management
//! plugin, on loopback.
//!
//! Role: one broker for the whole file (it takes seconds to start), one test function running
//! the cases in order: queues declared and messages published through the management API
//! (no AMQP client), then the plugin — built through `BuildPlugin::build`, `collect` called
//! directly — must report exactly that depth (5 ready, 0 unacknowledged, 0 consumers), the
//! overview totals and the node; `queue_pattern`, `vhost` and `max_queues` (excess counted);
//! a wrong password (auth), a closed port (unreachable). Prints the cost of one collection
//! (mean of 100). Touches child processes, temp dirs and loopback sockets only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use meshmon_agent::plugins::rabbitmq::{METRIC_NAMES, RabbitmqSettings};
use meshmon_agent::plugins::{BuildPlugin, ErrorReason, Plugin, PluginContext, PluginError, SecretRef};
use meshmon_proto::v1::Record;
use meshmon_tests::rabbitmq::RabbitMq;
use tokio::task::block_in_place;

fn ctx(dir: &std::path::Path) -> PluginContext {
    PluginContext::standalone(dir).0
}

fn build(settings: &RabbitmqSettings, dir: &Path) -> Box<dyn Plugin> {
    settings.build("rabbitmq-test", &ctx(dir)).unwrap_or_else(|e| panic!("build: {e}"))
}

async fn collect(p: &mut Box<dyn Plugin>) -> Result<Vec<Record>, PluginError> {
    p.collect(SystemTime::now()).await
}

use meshmon_agent::record::find_double as value;

/// The queues a collection reported, as (vhost, queue).
fn queues(records: &[Record]) -> BTreeSet<(String, String)> {
    records
        .iter()
        .filter(|r| r.metric == "rabbitmq.queue.messages")
        .map(|r| (r.tags["vhost"].clone(), r.tags["queue"].clone()))
        .collect()
}

/// Collects every 200 ms until `done` accepts the records (at most 60 s): the management API
/// publishes queue statistics periodically, not at once.
async fn collect_until(p: &mut Box<dyn Plugin>, what: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = collect(p).await.unwrap();
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last records: {records:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn owned(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_totals_nodes_filters_and_errors_against_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = block_in_place(|| RabbitMq::start(dir.path())).unwrap_or_else(|e| panic!("starting RabbitMQ: {e}"));
    block_in_place(|| -> Result<(), String> {
        broker.declare_queue("%2F", "orders.q")?;
        broker.declare_queue("%2F", "other")?;
        broker.api_ok("PUT", "/api/vhosts/v2", None)?;
        broker.api_ok("PUT", "/api/permissions/v2/guest", Some(r#"{"configure":".*","write":".*","read":".*"}"#))?;
        broker.declare_queue("v2", "orders.v2")?;
        broker.publish("%2F", "orders.q", 5)?;
        broker.publish("v2", "orders.v2", 2)
    })
    .unwrap();
    let password = dir.path().join("rabbitmq-password");
    std::fs::write(&password, "guest\n").unwrap();
    let settings = RabbitmqSettings {
        url: broker.url(),
        username: "guest".into(),
        password: SecretRef { env: None, file: Some(password) },
        ..RabbitmqSettings::default()
    };

    let mut p = build(&settings, dir.path());
    let records = collect_until(&mut p, "queue statistics and totals", |r| {
        value(r, "rabbitmq.queue.messages", &[("vhost", "/"), ("queue", "orders.q")]) == Some(5.0)
            && value(r, "rabbitmq.queue.messages", &[("vhost", "v2"), ("queue", "orders.v2")]) == Some(2.0)
            && value(r, "rabbitmq.queue.messages", &[("vhost", "/"), ("queue", "other")]) == Some(0.0)
            && value(r, "rabbitmq.messages", &[]) == Some(7.0)
    })
    .await;
    let q = [("vhost", "/"), ("queue", "orders.q")];
    assert_eq!(value(&records, "rabbitmq.queue.messages_ready", &q), Some(5.0));
    assert_eq!(value(&records, "rabbitmq.queue.messages_unacknowledged", &q), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.queue.consumers", &q), Some(0.0));
    assert!(value(&records, "rabbitmq.queue.publish_per_sec", &q).is_some_and(|r| r >= 0.0));
    assert_eq!(value(&records, "rabbitmq.messages_ready", &[]), Some(7.0));
    assert_eq!(value(&records, "rabbitmq.messages_unacknowledged", &[]), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.queues", &[]), Some(3.0));
    assert_eq!(value(&records, "rabbitmq.consumers", &[]), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.connections", &[]), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.channels", &[]), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.queues_skipped", &[]), Some(0.0));
    let node = [("node", broker.node.as_str())];
    assert_eq!(value(&records, "rabbitmq.node.running", &node), Some(1.0));
    assert!(value(&records, "rabbitmq.node.mem_used_bytes", &node).unwrap() > 0.0);
    assert!(value(&records, "rabbitmq.node.disk_free_bytes", &node).unwrap() > 0.0);
    assert!(value(&records, "rabbitmq.node.fd_used", &node).unwrap() > 0.0);
    assert_eq!(value(&records, "rabbitmq.node.mem_alarm", &node), Some(0.0));
    assert_eq!(queues(&records), owned(&[("/", "orders.q"), ("/", "other"), ("v2", "orders.v2")]));
    let names: BTreeSet<&str> = records.iter().map(|r| r.metric.as_str()).collect();
    assert!(names.iter().all(|n| METRIC_NAMES.contains(n)), "{names:?}");

    // queue_pattern (evaluated by the broker), vhost, and the cap in name order.
    let pattern = RabbitmqSettings { queue_pattern: Some("^orders\\.".into()), nodes: false, ..settings.clone() };
    let records = collect(&mut build(&pattern, dir.path())).await.unwrap();
    assert_eq!(queues(&records), owned(&[("/", "orders.q"), ("v2", "orders.v2")]));
    assert_eq!(value(&records, "rabbitmq.queues_skipped", &[]), Some(0.0));
    assert_eq!(value(&records, "rabbitmq.node.running", &node), None, "nodes = false");

    let vhost = RabbitmqSettings { vhost: Some("/".into()), ..settings.clone() };
    let records = collect(&mut build(&vhost, dir.path())).await.unwrap();
    assert_eq!(queues(&records), owned(&[("/", "orders.q"), ("/", "other")]));

    let capped = RabbitmqSettings { max_queues: 2, ..settings.clone() };
    let records = collect(&mut build(&capped, dir.path())).await.unwrap();
    assert_eq!(queues(&records), owned(&[("/", "orders.q"), ("v2", "orders.v2")]), "the first 2 by name");
    assert_eq!(value(&records, "rabbitmq.queues_skipped", &[]), Some(1.0));
    assert_eq!(value(&records, "rabbitmq.queues", &[]), Some(3.0), "totals stay complete");

    let one_per_page = RabbitmqSettings { max_queues: 1, queue_pattern: Some("q$|v2$".into()), ..settings.clone() };
    let records = collect(&mut build(&one_per_page, dir.path())).await.unwrap();
    assert_eq!(queues(&records), owned(&[("/", "orders.q")]));
    assert_eq!(value(&records, "rabbitmq.queues_skipped", &[]), Some(1.0));

    let none = RabbitmqSettings { max_queues: 0, ..settings.clone() };
    let records = collect(&mut build(&none, dir.path())).await.unwrap();
    assert!(queues(&records).is_empty());
    assert_eq!(value(&records, "rabbitmq.messages", &[]), Some(7.0));

    // Wrong password; closed port; an unknown vhost.
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "not-the-password").unwrap();
    let wrong = RabbitmqSettings { password: SecretRef { env: None, file: Some(wrong_file) }, ..settings.clone() };
    let e = collect(&mut build(&wrong, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Auth, "{e}");
    assert!(!e.message.contains("not-the-password"), "{e}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = RabbitmqSettings { url: format!("http://{closed}"), ..settings.clone() };
    let e = collect(&mut build(&dead, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Unreachable, "{e}");

    let unknown = RabbitmqSettings { vhost: Some("no-such-vhost".into()), ..settings.clone() };
    let e = collect(&mut build(&unknown, dir.path())).await.unwrap_err();
    assert_eq!(e.reason, ErrorReason::Protocol, "{e}");
    assert!(e.message.contains("404"), "{e}");

    // Cost of one collection (overview + queues + nodes), mean of 100.
    let started = Instant::now();
    for _ in 0..100 {
        collect(&mut p).await.unwrap();
    }
    eprintln!("rabbitmq plugin: one collection takes {:?} (mean of 100, this build)", started.elapsed() / 100);
    drop(broker);
}

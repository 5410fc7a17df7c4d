//! Kafka plugin: partition watermarks, topic sizes and consumer-group lag.
//!
//! Role: every collection asks the cluster, through librdkafka (bundled, via `rdkafka`), for
//! its metadata (brokers, topics, partitions), the committed offsets of the watched consumer
//! groups, and the low and high watermarks of every partition of the watched topics (one
//! `ListOffsets` round per leader for all partitions, not one call per partition), and turns
//! them into `kafka.*` records stamped with the collection time. Committed offsets are read
//! before the watermarks, so a lag is never computed against an older high watermark.
//!
//! Groups are read **without joining them**: each watched group gets a consumer whose
//! `group.id` is the group, used only for `OffsetFetch` (never subscribed or assigned, never
//! committing), so the group's members see no rebalance. The instance keeps its clients (one
//! for metadata and watermarks, one per watched group) between collections; consumers of groups
//! that are no longer watched are closed. librdkafka's calls block, so a collection runs on
//! tokio's blocking pool; a collection abandoned by the runner's timeout keeps running there
//! with the clients, and the next collection first waits for it to hand them back (its records
//! are stale and dropped) — never two collections at once, never a pile of blocked threads.
//!
//! Caps: at most `max_topics` topics and (when groups are discovered, not listed) `max_groups`
//! groups are reported, in name order; the others are counted in `kafka.topics_skipped` /
//! `kafka.groups_skipped`. Touches network connections to the brokers only.

mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use meshmon_proto::v1::Record;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use regex::Regex;
use tracing::{debug, info};

pub use config::KafkaSettings;

use crate::kafka::config::Secret;
use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "kafka.brokers",
    "kafka.topics_skipped",
    "kafka.groups_skipped",
    "kafka.topic.partitions",
    "kafka.topic.messages",
    "kafka.partition.low_watermark",
    "kafka.partition.high_watermark",
    "kafka.group.lag",
    "kafka.group.partition_lag",
];

/// Events drained from a client's queue per collection at most.
const MAX_EVENTS: usize = 1000;

/// librdkafka's callbacks for the plugin's clients: logs to `tracing` (rate limited), and a
/// count of "broker unreachable" errors so a timed-out request can be told apart.
struct Ctx {
    metrics: Arc<Metrics>,
    transport_errors: Arc<AtomicU64>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                self.metrics
                    .warn_limited("kafka_plugin_librdkafka_log", &format!("kafka plugin client: {fac}: {message}"));
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Resolve
            )
        ) {
            self.transport_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.warn_limited("kafka_plugin_librdkafka_error", &format!("kafka plugin client: {error}: {reason}"));
    }
}

impl ConsumerContext for Ctx {}

type Client = BaseConsumer<Ctx>;

/// What every collection of one instance needs, shared with the blocking task.
struct Spec {
    name: String,
    config: ClientConfig,
    topics: BTreeSet<String>,
    pattern: Option<Regex>,
    max_topics: usize,
    groups: Vec<String>,
    max_groups: usize,
    per_partition: bool,
    timeout: Duration,
    metrics: Arc<Metrics>,
    transport_errors: Arc<AtomicU64>,
}

impl Spec {
    fn client(&self, group: Option<&str>) -> Result<Client, PluginError> {
        let mut config = self.config.clone();
        if let Some(g) = group {
            config.set("group.id", g);
        }
        let ctx = Ctx { metrics: self.metrics.clone(), transport_errors: self.transport_errors.clone() };
        config.create_with_context(ctx).map_err(|e| {
            PluginError::new(ErrorReason::Other, format!("cannot create the Kafka client: {}", redact(&e.to_string())))
        })
    }

    /// Whether topic `name` is watched (before the cap).
    fn wants_topic(&self, name: &str) -> bool {
        if name.starts_with("__") {
            return false;
        }
        if self.topics.is_empty() && self.pattern.is_none() {
            return true;
        }
        self.topics.contains(name) || self.pattern.as_ref().is_some_and(|p| p.is_match(name))
    }
}

/// Removes a `sasl.password` value from an error message, should librdkafka ever quote it.
fn redact(message: &str) -> String {
    if message.contains("sasl.password") {
        "(message withheld: it mentions sasl.password)".to_owned()
    } else {
        message.to_owned()
    }
}

/// The instance's clients, moved to the blocking task for a collection and back.
struct Clients {
    main: Client,
    groups: BTreeMap<String, Client>,
}

/// Serves the events queued on `c` (errors, statistics) so they neither pile up nor go unseen.
fn drain(c: &Client) {
    for _ in 0..MAX_EVENTS {
        match c.poll(Duration::ZERO) {
            None => break,
            Some(Ok(_)) => {} // never assigned: no messages; ignore if any
            Some(Err(e)) => debug!("kafka plugin client event: {e}"),
        }
    }
}

/// The [`PluginError`] for a failed request `what`; `transport_before` is the count of
/// transport errors when the collection started.
fn kafka_error(spec: &Spec, what: &str, e: &KafkaError, transport_before: u64) -> PluginError {
    let code = e.rdkafka_error_code();
    let transport_seen = spec.transport_errors.load(Ordering::Relaxed) > transport_before;
    let reason = match code {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::BrokerNotAvailable,
        ) => ErrorReason::Unreachable,
        Some(
            RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => ErrorReason::Auth,
        Some(
            RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::TimedOutQueue,
        ) => {
            if transport_seen {
                ErrorReason::Unreachable
            } else {
                ErrorReason::Timeout
            }
        }
        _ => ErrorReason::Protocol,
    };
    PluginError::new(reason, format!("{what}: {}", redact(&e.to_string())))
}

/// One partition's watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watermarks {
    low: i64,
    high: i64,
}

/// What one collection read, before it becomes records.
#[derive(Debug, Default)]
struct Snapshot {
    brokers: usize,
    topics_skipped: usize,
    groups_skipped: usize,
    /// Topic → its partition count (from metadata).
    partitions: BTreeMap<String, usize>,
    /// (topic, partition) → watermarks.
    watermarks: BTreeMap<(String, i32), Watermarks>,
    /// Group → (topic, partition) → committed offset (`None`: no commit).
    committed: BTreeMap<String, BTreeMap<(String, i32), Option<i64>>>,
}

/// The offsets of a `ListOffsets` answer (the request's `Offset::Beginning` / `Offset::End`
/// replaced by the partition's offset); partitions with an error are left out.
fn offsets(tpl: &TopicPartitionList) -> BTreeMap<(String, i32), i64> {
    let mut out = BTreeMap::new();
    for e in tpl.elements() {
        match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(n)) if n >= 0 => {
                out.insert((e.topic().to_owned(), e.partition()), n);
            }
            (Err(err), _) => debug!(topic = e.topic(), partition = e.partition(), "no watermark: {err}"),
            (Ok(()), other) => debug!(topic = e.topic(), partition = e.partition(), "no watermark: {other:?}"),
        }
    }
    out
}

/// One collection's reads, on a blocking thread.
fn read(spec: &Spec, clients: &mut Clients) -> Result<Snapshot, PluginError> {
    let before = spec.transport_errors.load(Ordering::Relaxed);
    let fail = |what: &str, e: &KafkaError, c: &Client| {
        drain(c); // deliver the error events that explain the failure
        kafka_error(spec, what, e, before)
    };
    drain(&clients.main);
    let metadata = clients.main.fetch_metadata(None, spec.timeout).map_err(|e| fail("metadata", &e, &clients.main))?;
    let mut snap = Snapshot { brokers: metadata.brokers().len(), ..Snapshot::default() };

    let mut selected: Vec<(&str, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && spec.wants_topic(t.name()))
        .map(|t| (t.name(), t.partitions().iter().map(|p| p.id()).collect()))
        .collect();
    selected.sort_by(|a, b| a.0.cmp(b.0));
    snap.topics_skipped = selected.len().saturating_sub(spec.max_topics);
    selected.truncate(spec.max_topics);
    let missing: Vec<&String> = spec
        .topics
        .iter()
        .filter(|t| !metadata.topics().iter().any(|m| m.name() == *t && m.error().is_none()))
        .collect();
    if !missing.is_empty() {
        spec.metrics.warn_limited(
            "kafka_plugin_missing_topics",
            &format!("kafka plugin {:?}: topics not in the cluster's metadata: {missing:?}", spec.name),
        );
    }
    if snap.topics_skipped > 0 {
        spec.metrics.warn_limited(
            "kafka_plugin_topics_skipped",
            &format!(
                "kafka plugin {:?}: {} topics not reported (max_topics = {})",
                spec.name, snap.topics_skipped, spec.max_topics
            ),
        );
    }
    let mut all = TopicPartitionList::new();
    for (topic, partitions) in &selected {
        snap.partitions.insert((*topic).to_owned(), partitions.len());
        for p in partitions {
            all.add_partition(topic, *p);
        }
    }

    // Groups: as listed, or as the brokers list them (consumer groups only), capped.
    let groups: Vec<String> = if spec.groups.is_empty() {
        let list =
            clients.main.fetch_group_list(None, spec.timeout).map_err(|e| fail("group list", &e, &clients.main))?;
        let mut names: Vec<String> = list
            .groups()
            .iter()
            .filter(|g| matches!(g.protocol_type(), "consumer" | ""))
            .map(|g| g.name().to_owned())
            .collect();
        names.sort();
        names.dedup();
        snap.groups_skipped = names.len().saturating_sub(spec.max_groups);
        names.truncate(spec.max_groups);
        names
    } else {
        spec.groups.clone()
    };
    clients.groups.retain(|g, _| groups.contains(g));

    // Committed offsets first, then watermarks (so high >= committed unless the group is ahead).
    if all.count() > 0 {
        for group in &groups {
            if !clients.groups.contains_key(group) {
                let c = spec.client(Some(group))?;
                clients.groups.insert(group.clone(), c);
            }
            let Some(c) = clients.groups.get(group) else { continue };
            drain(c);
            let tpl = c
                .committed_offsets(all.clone(), spec.timeout)
                .map_err(|e| fail(&format!("committed offsets of group {group:?}"), &e, c))?;
            let mut per = BTreeMap::new();
            for e in tpl.elements() {
                let offset = match (e.error(), e.offset()) {
                    (Ok(()), Offset::Offset(n)) if n >= 0 => Some(n),
                    _ => None,
                };
                per.insert((e.topic().to_owned(), e.partition()), offset);
            }
            snap.committed.insert(group.clone(), per);
        }

        let mut lows = TopicPartitionList::new();
        let mut highs = TopicPartitionList::new();
        for e in all.elements() {
            lows.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)
                .map_err(|e| PluginError::new(ErrorReason::Other, e.to_string()))?;
            highs
                .add_partition_offset(e.topic(), e.partition(), Offset::End)
                .map_err(|e| PluginError::new(ErrorReason::Other, e.to_string()))?;
        }
        let lows = clients
            .main
            .offsets_for_times(lows, spec.timeout)
            .map_err(|e| fail("low watermarks", &e, &clients.main))?;
        let highs = clients
            .main
            .offsets_for_times(highs, spec.timeout)
            .map_err(|e| fail("high watermarks", &e, &clients.main))?;
        let lows = offsets(&lows);
        for (key, high) in offsets(&highs) {
            if let Some(low) = lows.get(&key) {
                snap.watermarks.insert(key, Watermarks { low: *low, high });
            }
        }
    }
    Ok(snap)
}

#[allow(clippy::cast_precision_loss)] // offsets and counts far below 2^53
fn records(snap: &Snapshot, at: SystemTime, per_partition: bool) -> Vec<Record> {
    let ts = timestamp_of(at);
    let mut out = Vec::with_capacity(8 + snap.watermarks.len() * 2);
    let mut push = |metric: &str, v: f64, tags: &[(&str, &str)]| {
        let mut r = double_record(metric, v, ts);
        for (k, val) in tags {
            r.tags.insert((*k).to_owned(), (*val).to_owned());
        }
        out.push(r);
    };
    push("kafka.brokers", snap.brokers as f64, &[]);
    push("kafka.topics_skipped", snap.topics_skipped as f64, &[]);
    push("kafka.groups_skipped", snap.groups_skipped as f64, &[]);
    for (topic, n) in &snap.partitions {
        push("kafka.topic.partitions", *n as f64, &[("topic", topic)]);
        let known: Vec<&Watermarks> =
            snap.watermarks.range((topic.clone(), i32::MIN)..=(topic.clone(), i32::MAX)).map(|(_, w)| w).collect();
        // Only when every partition's watermarks are known: a partial sum would look like a drop.
        if known.len() == *n {
            let messages: i64 = known.iter().map(|w| (w.high - w.low).max(0)).sum();
            push("kafka.topic.messages", messages as f64, &[("topic", topic)]);
        }
    }
    for ((topic, partition), w) in &snap.watermarks {
        let p = partition.to_string();
        push("kafka.partition.low_watermark", w.low as f64, &[("topic", topic), ("partition", &p)]);
        push("kafka.partition.high_watermark", w.high as f64, &[("topic", topic), ("partition", &p)]);
    }
    for (group, committed) in &snap.committed {
        // Per topic: only topics the group has committed on at least once.
        let mut by_topic: BTreeMap<&str, Vec<(i32, Option<i64>)>> = BTreeMap::new();
        for ((topic, partition), offset) in committed {
            by_topic.entry(topic.as_str()).or_default().push((*partition, *offset));
        }
        for (topic, parts) in by_topic {
            if parts.iter().all(|(_, o)| o.is_none()) {
                continue;
            }
            let mut total = 0i64;
            let mut complete = true;
            for (partition, offset) in parts {
                let Some(w) = snap.watermarks.get(&(topic.to_owned(), partition)) else {
                    complete = false;
                    continue;
                };
                // No commit on this partition: everything retained is still to be consumed.
                let lag = (w.high - offset.unwrap_or(w.low)).max(0);
                total += lag;
                if per_partition {
                    let p = partition.to_string();
                    push(
                        "kafka.group.partition_lag",
                        lag as f64,
                        &[("group", group), ("topic", topic), ("partition", &p)],
                    );
                }
            }
            // A partial sum would look like the group caught up: only with every partition known.
            if complete {
                push("kafka.group.lag", total as f64, &[("group", group), ("topic", topic)]);
            }
        }
    }
    out
}

type Outcome = (Option<Clients>, Result<Vec<Record>, PluginError>);

/// The collector of one `[[plugins.kafka]]` instance.
pub struct KafkaPlugin {
    spec: Arc<Spec>,
    clients: Option<Clients>,
    /// A collection running on the blocking pool (abandoned by a timeout if still here when the
    /// next collection starts).
    pending: Option<tokio::task::JoinHandle<Outcome>>,
}

impl std::fmt::Debug for KafkaPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPlugin")
            .field("name", &self.spec.name)
            .field("topics", &self.spec.topics)
            .field("groups", &self.spec.groups)
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Plugin for KafkaPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            if let Some(h) = self.pending.as_mut() {
                // An abandoned collection: wait for it to hand the clients back; its records are stale.
                let joined = h.await;
                self.pending = None;
                if let Ok((clients, _)) = joined {
                    self.clients = clients;
                }
            }
            let clients = self.clients.take();
            let spec = self.spec.clone();
            let handle = self.pending.insert(tokio::task::spawn_blocking(move || {
                let mut clients = match clients {
                    Some(c) => c,
                    None => match spec.client(None) {
                        Ok(main) => Clients { main, groups: BTreeMap::new() },
                        Err(e) => return (None, Err(e)),
                    },
                };
                let result = read(&spec, &mut clients).map(|snap| records(&snap, at, spec.per_partition));
                (Some(clients), result)
            }));
            let joined = handle.await;
            self.pending = None;
            match joined {
                Ok((clients, result)) => {
                    self.clients = clients;
                    result
                }
                Err(e) => Err(PluginError::new(ErrorReason::Other, format!("the collection failed: {e}"))),
            }
        })
    }
}

impl BuildPlugin for KafkaSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let password = self.sasl_password.read_for("SASL password")?.map(Secret::new);
        let pattern = match &self.topic_pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| PluginError::new(ErrorReason::Other, e.to_string()))?),
            None => None,
        };
        let spec = Spec {
            name: name.to_owned(),
            config: self.client_config(name, password.as_ref()),
            topics: self.topics.iter().cloned().collect(),
            pattern,
            max_topics: self.max_topics,
            groups: self.groups.clone(),
            max_groups: self.max_groups,
            per_partition: self.per_partition,
            timeout: self.request_timeout,
            metrics: ctx.metrics.clone(),
            transport_errors: Arc::new(AtomicU64::new(0)),
        };
        // Creating the client checks the librdkafka properties at once (it connects lazily).
        let main = spec.client(None)?;
        Ok(Box::new(KafkaPlugin {
            spec: Arc::new(spec),
            clients: Some(Clients { main, groups: BTreeMap::new() }),
            pending: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::plugins::PluginSettings;
    use crate::record::double_value;

    fn value(records: &[Record], metric: &str, tags: &[(&str, &str)]) -> Option<f64> {
        records
            .iter()
            .find(|r| r.metric == metric && tags.iter().all(|(k, v)| r.tags.get(*k).map(String::as_str) == Some(*v)))
            .and_then(double_value)
    }

    #[test]
    fn lag_and_topic_sizes_from_a_snapshot() {
        let mut snap = Snapshot { brokers: 3, topics_skipped: 1, ..Snapshot::default() };
        snap.partitions.insert("t".into(), 3);
        snap.partitions.insert("u".into(), 1);
        for (p, low, high) in [(0, 0, 10), (1, 5, 20), (2, 0, 0)] {
            snap.watermarks.insert(("t".into(), p), Watermarks { low, high });
        }
        snap.watermarks.insert(("u".into(), 0), Watermarks { low: 0, high: 7 });
        let committed: BTreeMap<(String, i32), Option<i64>> =
            [(("t".into(), 0), Some(4)), (("t".into(), 1), None), (("t".into(), 2), Some(0)), (("u".into(), 0), None)]
                .into();
        snap.committed.insert("g".into(), committed);
        let r = records(&snap, SystemTime::now(), true);
        assert_eq!(value(&r, "kafka.brokers", &[]), Some(3.0));
        assert_eq!(value(&r, "kafka.topics_skipped", &[]), Some(1.0));
        assert_eq!(value(&r, "kafka.topic.messages", &[("topic", "t")]), Some(25.0));
        assert_eq!(value(&r, "kafka.topic.partitions", &[("topic", "t")]), Some(3.0));
        assert_eq!(value(&r, "kafka.partition.high_watermark", &[("topic", "t"), ("partition", "1")]), Some(20.0));
        assert_eq!(value(&r, "kafka.partition.low_watermark", &[("topic", "t"), ("partition", "1")]), Some(5.0));
        // 10-4 + (no commit: 20-5) + 0
        assert_eq!(value(&r, "kafka.group.lag", &[("group", "g"), ("topic", "t")]), Some(21.0));
        assert_eq!(
            value(&r, "kafka.group.partition_lag", &[("group", "g"), ("topic", "t"), ("partition", "1")]),
            Some(15.0)
        );
        assert_eq!(value(&r, "kafka.group.lag", &[("group", "g"), ("topic", "u")]), None, "never committed on u");
        assert!(r.iter().all(|rec| METRIC_NAMES.contains(&rec.metric.as_str())));
        let without = records(&snap, SystemTime::now(), false);
        assert_eq!(value(&without, "kafka.group.partition_lag", &[]), None);
        snap.watermarks.remove(&("t".to_owned(), 2));
        let partial = records(&snap, SystemTime::now(), false);
        assert_eq!(value(&partial, "kafka.topic.messages", &[("topic", "t")]), None, "a partition unknown");
        assert_eq!(value(&partial, "kafka.group.lag", &[("group", "g"), ("topic", "t")]), None);
        assert_eq!(
            value(&partial, "kafka.partition.high_watermark", &[("topic", "t"), ("partition", "0")]),
            Some(10.0)
        );
    }

    #[test]
    fn toml_settings() {
        let mut c: crate::plugins::PluginsConfig = toml::from_str(
            "[[kafka]]\nbrokers = [\"k1:9092\", \"k2:9092\"]\ntopics = [\"orders\"]\ngroups = [\"billing\"]\n\
             per_partition = true\nsasl_password = { env = \"KAFKA_PW\" }\n\
             properties = { \"security.protocol\" = \"sasl_plaintext\", \"sasl.username\" = \"mon\" }\n",
        )
        .unwrap();
        c.normalize().unwrap();
        let k = &c.kafka[0].settings;
        assert_eq!(k.brokers.len(), 2);
        assert!(k.per_partition);
        assert_eq!(k.sasl_password.env.as_deref(), Some("KAFKA_PW"));
        let config = k.client_config("k", Some(&Secret::new("pw")));
        assert_eq!(config.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
        assert_eq!(config.get("sasl.username"), Some("mon"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        assert_eq!(config.get("group.id"), None, "the main client belongs to no group");
        assert!(toml::from_str::<crate::plugins::PluginsConfig>("[[kafka]]\ntopic = \"x\"\n").is_err());
    }

    #[test]
    fn error_classes() {
        let spec = Spec {
            name: "k".into(),
            config: ClientConfig::new(),
            topics: BTreeSet::new(),
            pattern: None,
            max_topics: 1,
            groups: Vec::new(),
            max_groups: 1,
            per_partition: false,
            timeout: Duration::from_secs(1),
            metrics: Arc::new(Metrics::default()),
            transport_errors: Arc::new(AtomicU64::new(0)),
        };
        let reason = |code: RDKafkaErrorCode, before: u64| {
            kafka_error(&spec, "x", &KafkaError::MetadataFetch(code), before).reason
        };
        assert_eq!(reason(RDKafkaErrorCode::AllBrokersDown, 0), ErrorReason::Unreachable);
        assert_eq!(reason(RDKafkaErrorCode::SaslAuthenticationFailed, 0), ErrorReason::Auth);
        assert_eq!(reason(RDKafkaErrorCode::GroupAuthorizationFailed, 0), ErrorReason::Auth);
        assert_eq!(reason(RDKafkaErrorCode::OperationTimedOut, 0), ErrorReason::Timeout);
        spec.transport_errors.fetch_add(1, Ordering::Relaxed);
        assert_eq!(reason(RDKafkaErrorCode::OperationTimedOut, 0), ErrorReason::Unreachable, "brokers seen down");
        assert_eq!(reason(RDKafkaErrorCode::OperationTimedOut, 1), ErrorReason::Timeout, "not in this collection");
        assert_eq!(reason(RDKafkaErrorCode::UnknownTopicOrPartition, 0), ErrorReason::Protocol);
    }

    #[test]
    fn topic_selection_and_settings() {
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let ctx = PluginContext { state_dir: std::env::temp_dir(), shutdown, metrics: Arc::new(Metrics::default()) };
        let settings = KafkaSettings {
            topics: vec!["exact".into()],
            topic_pattern: Some("^orders\\.".into()),
            ..KafkaSettings::default()
        };
        settings.validate("plugins.kafka[0]").unwrap();
        let spec = Spec {
            name: "k".into(),
            config: settings.client_config("k", None),
            topics: settings.topics.iter().cloned().collect(),
            pattern: Some(Regex::new("^orders\\.").unwrap()),
            max_topics: 10,
            groups: Vec::new(),
            max_groups: 10,
            per_partition: false,
            timeout: Duration::from_secs(1),
            metrics: ctx.metrics.clone(),
            transport_errors: Arc::new(AtomicU64::new(0)),
        };
        assert!(spec.wants_topic("exact"));
        assert!(spec.wants_topic("orders.eu"));
        assert!(!spec.wants_topic("other"));
        assert!(!spec.wants_topic("__consumer_offsets"));
        let all = Spec { topics: BTreeSet::new(), pattern: None, ..spec };
        assert!(all.wants_topic("other"));
        assert!(!all.wants_topic("__transaction_state"));
        settings.build("k", &ctx).expect("builds without connecting");

        for bad in [
            KafkaSettings { brokers: vec![], ..KafkaSettings::default() },
            KafkaSettings { brokers: vec!["a:1,b:2".into()], ..KafkaSettings::default() },
            KafkaSettings { topic_pattern: Some("(".into()), ..KafkaSettings::default() },
            KafkaSettings { properties: [("group.id".into(), "x".into())].into(), ..KafkaSettings::default() },
            KafkaSettings { properties: [("ssl.key.password".into(), "x".into())].into(), ..KafkaSettings::default() },
            KafkaSettings { max_groups: 1_000_000, ..KafkaSettings::default() },
        ] {
            assert!(bad.validate("p").is_err(), "{bad:?}");
        }
        let unknown =
            KafkaSettings { properties: [("no.such.property".into(), "1".into())].into(), ..KafkaSettings::default() };
        unknown.validate("p").unwrap();
        let e = unknown.build("k", &ctx).err().expect("an unknown property is refused");
        assert!(e.message.contains("no.such.property"), "{e}");
    }
}

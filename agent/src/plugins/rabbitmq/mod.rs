//! RabbitMQ plugin: queue depth, rates and consumers, cluster totals and node state from the
//! management HTTP API.
//!
//! Role: every collection sends (one after the other, on one pooled HTTP client) `GET
//! /api/overview` (totals: messages, connections, channels, queues, consumers, publish and
//! deliver rates), `GET /api/queues[/<vhost>]` (paginated, sorted by name, filtered by
//! `queue_pattern` on the server, with `columns=` so only the fields used travel; at most
//! `max_queues` queues, the other matching ones counted in `rabbitmq.queues_skipped`) and, when
//! `nodes` is on, `GET /api/nodes` (memory, file descriptors, free disk, running). Basic
//! authentication with a password read from the environment or a file. Each answer is read up
//! to [`MAX_BODY`] bytes. Values the API does not give yet (a new queue's statistics, rates
//! without traffic) are left out, not reported as 0. Nothing is kept between collections, so an
//! abandoned collection leaves nothing to repair. Touches HTTP connections to the API.

mod config;

use std::time::{Duration, SystemTime};

use meshmon_proto::Timestamp;
use meshmon_proto::v1::Record;
use serde_json::Value;
use std::sync::Arc;

pub use config::RabbitmqSettings;

use crate::kafka::config::Secret;
use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &[
    "rabbitmq.messages",
    "rabbitmq.messages_ready",
    "rabbitmq.messages_unacknowledged",
    "rabbitmq.connections",
    "rabbitmq.channels",
    "rabbitmq.queues",
    "rabbitmq.consumers",
    "rabbitmq.exchanges",
    "rabbitmq.publish_per_sec",
    "rabbitmq.deliver_per_sec",
    "rabbitmq.queues_skipped",
    "rabbitmq.queue.messages",
    "rabbitmq.queue.messages_ready",
    "rabbitmq.queue.messages_unacknowledged",
    "rabbitmq.queue.consumers",
    "rabbitmq.queue.publish_per_sec",
    "rabbitmq.queue.deliver_per_sec",
    "rabbitmq.node.running",
    "rabbitmq.node.mem_used_bytes",
    "rabbitmq.node.mem_alarm",
    "rabbitmq.node.fd_used",
    "rabbitmq.node.disk_free_bytes",
    "rabbitmq.node.disk_free_alarm",
];

/// Largest answer read from the API (a page of 500 queues with the selected columns is about
/// 150 KB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest page the management API serves.
const MAX_PAGE_SIZE: usize = 500;
/// Nodes reported at most (a cluster has a handful).
const MAX_NODES: usize = 64;

/// Overview metric → JSON path.
const OVERVIEW: [(&str, &str); 10] = [
    ("rabbitmq.messages", "queue_totals.messages"),
    ("rabbitmq.messages_ready", "queue_totals.messages_ready"),
    ("rabbitmq.messages_unacknowledged", "queue_totals.messages_unacknowledged"),
    ("rabbitmq.connections", "object_totals.connections"),
    ("rabbitmq.channels", "object_totals.channels"),
    ("rabbitmq.queues", "object_totals.queues"),
    ("rabbitmq.consumers", "object_totals.consumers"),
    ("rabbitmq.exchanges", "object_totals.exchanges"),
    ("rabbitmq.publish_per_sec", "message_stats.publish_details.rate"),
    ("rabbitmq.deliver_per_sec", "message_stats.deliver_get_details.rate"),
];

/// Per-queue metric → JSON path (also the `columns=` of the request, with `name` and `vhost`).
const QUEUE: [(&str, &str); 6] = [
    ("rabbitmq.queue.messages", "messages"),
    ("rabbitmq.queue.messages_ready", "messages_ready"),
    ("rabbitmq.queue.messages_unacknowledged", "messages_unacknowledged"),
    ("rabbitmq.queue.consumers", "consumers"),
    ("rabbitmq.queue.publish_per_sec", "message_stats.publish_details.rate"),
    ("rabbitmq.queue.deliver_per_sec", "message_stats.deliver_get_details.rate"),
];

/// Per-node metric → JSON path (numbers; booleans become 1/0).
const NODE: [(&str, &str); 6] = [
    ("rabbitmq.node.running", "running"),
    ("rabbitmq.node.mem_used_bytes", "mem_used"),
    ("rabbitmq.node.mem_alarm", "mem_alarm"),
    ("rabbitmq.node.fd_used", "fd_used"),
    ("rabbitmq.node.disk_free_bytes", "disk_free"),
    ("rabbitmq.node.disk_free_alarm", "disk_free_alarm"),
];

/// The value at dotted `path` as a number (`true`/`false` as 1/0); `None` when absent.
fn number(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur.get(key)?;
    }
    match cur {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// Percent-encodes `s` for a URL path segment or query value (everything but unreserved).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The collector of one `[[plugins.rabbitmq]]` instance.
pub struct RabbitmqPlugin {
    name: String,
    client: reqwest::Client,
    /// The API base URL without a trailing slash.
    base: String,
    username: String,
    password: Option<Secret>,
    vhost: Option<String>,
    queue_pattern: Option<String>,
    max_queues: usize,
    nodes: bool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RabbitmqPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitmqPlugin")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("username", &self.username)
            .field("vhost", &self.vhost)
            .field("queue_pattern", &self.queue_pattern)
            .field("max_queues", &self.max_queues)
            .finish_non_exhaustive()
    }
}

/// The [`PluginError`] for a failed request.
fn request_error(path: &str, e: &reqwest::Error) -> PluginError {
    let reason = if e.is_timeout() {
        ErrorReason::Timeout
    } else if e.is_decode() {
        ErrorReason::Protocol
    } else {
        ErrorReason::Unreachable
    };
    // `{e:#}` would repeat the URL's credentials if there were any; there are none (basic
    // authentication travels in a header).
    let mut message = format!("GET {path}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    PluginError::new(reason, message)
}

impl RabbitmqPlugin {
    /// `GET <base><path_and_query>` as JSON.
    async fn get(&self, path_and_query: &str) -> Result<Value, PluginError> {
        let url = format!("{}{path_and_query}", self.base);
        let path = path_and_query.split('?').next().unwrap_or_default();
        let mut req = self.client.get(&url).header(reqwest::header::ACCEPT, "application/json");
        req = req.basic_auth(&self.username, Some(self.password.as_ref().map_or("", Secret::expose)));
        let mut resp = req.send().await.map_err(|e| request_error(path, &e))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| request_error(path, &e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(PluginError::protocol(format!("GET {path}: answer larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            let reason = match status.as_u16() {
                401 | 403 => ErrorReason::Auth,
                _ => ErrorReason::Protocol,
            };
            return Err(PluginError::new(reason, format!("GET {path}: HTTP {status}: {text}")));
        }
        serde_json::from_slice(&body).map_err(|e| PluginError::protocol(format!("GET {path}: not JSON: {e}")))
    }

    /// Up to `max_queues` queues (name order) and how many more matched.
    async fn queues(&self) -> Result<(Vec<Value>, usize), PluginError> {
        if self.max_queues == 0 {
            return Ok((Vec::new(), 0));
        }
        let page_size = self.max_queues.min(MAX_PAGE_SIZE);
        let columns: Vec<&str> = ["name", "vhost"].into_iter().chain(QUEUE.iter().map(|(_, p)| *p)).collect();
        let mut query =
            format!("pagination=true&page_size={page_size}&sort=name&columns={}", encode(&columns.join(",")));
        if let Some(p) = &self.queue_pattern {
            query.push_str(&format!("&use_regex=true&name={}", encode(p)));
        }
        let path = match &self.vhost {
            Some(v) => format!("/api/queues/{}", encode(v)),
            None => "/api/queues".to_owned(),
        };
        let mut queues = Vec::new();
        let mut page = 1usize;
        let matching = loop {
            let answer = self.get(&format!("{path}?page={page}&{query}")).await?;
            let items = answer
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| PluginError::protocol(format!("GET {path}: no `items` in the paginated answer")))?;
            let matching = number(&answer, "filtered_count").map_or(0, |n| n as usize);
            let pages = number(&answer, "page_count").map_or(1, |n| n as usize);
            let room = self.max_queues - queues.len();
            queues.extend(items.iter().take(room).cloned());
            if queues.len() >= self.max_queues || page >= pages || items.is_empty() {
                break matching;
            }
            page += 1;
        };
        let skipped = matching.saturating_sub(queues.len());
        Ok((queues, skipped))
    }

    fn records(
        &self,
        ts: Timestamp,
        overview: &Value,
        queues: &[Value],
        skipped: usize,
        nodes: Option<&Value>,
    ) -> Vec<Record> {
        let mut out = Vec::with_capacity(16 + queues.len() * QUEUE.len());
        let mut push = |metric: &str, v: f64, tags: &[(&str, &str)]| {
            let mut r = double_record(metric, v, ts);
            for (k, val) in tags {
                r.tags.insert((*k).to_owned(), (*val).to_owned());
            }
            out.push(r);
        };
        for (metric, path) in OVERVIEW {
            if let Some(v) = number(overview, path) {
                push(metric, v, &[]);
            }
        }
        #[allow(clippy::cast_precision_loss)] // a count of queues
        push("rabbitmq.queues_skipped", skipped as f64, &[]);
        for q in queues {
            let (Some(name), Some(vhost)) =
                (q.get("name").and_then(Value::as_str), q.get("vhost").and_then(Value::as_str))
            else {
                continue;
            };
            let tags = [("vhost", vhost), ("queue", name)];
            for (metric, path) in QUEUE {
                if let Some(v) = number(q, path) {
                    push(metric, v, &tags);
                }
            }
        }
        if let Some(nodes) = nodes.and_then(Value::as_array) {
            for n in nodes.iter().take(MAX_NODES) {
                let Some(name) = n.get("name").and_then(Value::as_str) else { continue };
                for (metric, path) in NODE {
                    if let Some(v) = number(n, path) {
                        push(metric, v, &[("node", name)]);
                    }
                }
            }
        }
        out
    }
}

impl Plugin for RabbitmqPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let overview = self.get("/api/overview?columns=object_totals,queue_totals,message_stats").await?;
            if !overview.is_object() {
                return Err(PluginError::protocol("GET /api/overview: not a JSON object"));
            }
            let (queues, skipped) = self.queues().await?;
            if skipped > 0 {
                self.metrics.warn_limited(
                    "rabbitmq_plugin_queues_skipped",
                    &format!(
                        "rabbitmq plugin {:?}: {skipped} matching queues not reported (max_queues = {})",
                        self.name, self.max_queues
                    ),
                );
            }
            let nodes = if self.nodes {
                let columns = ["name"].into_iter().chain(NODE.iter().map(|(_, p)| *p)).collect::<Vec<_>>().join(",");
                Some(self.get(&format!("/api/nodes?columns={}", encode(&columns))).await?)
            } else {
                None
            };
            Ok(self.records(timestamp_of(at), &overview, &queues, skipped, nodes.as_ref()))
        })
    }
}

impl BuildPlugin for RabbitmqSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        let password = self.password.read_for("password")?.map(Secret::new);
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("meshmon-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PluginError::new(ErrorReason::Other, format!("cannot create the HTTP client: {e}")))?;
        Ok(Box::new(RabbitmqPlugin {
            name: name.to_owned(),
            client,
            base: self.url.trim_end_matches('/').to_owned(),
            username: self.username.clone(),
            password,
            vhost: self.vhost.clone(),
            queue_pattern: self.queue_pattern.clone(),
            max_queues: self.max_queues,
            nodes: self.nodes,
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

    #[test]
    fn numbers_paths_and_encoding() {
        let v: Value = serde_json::json!({"a": {"b": 2.5, "t": true, "s": "x"}, "n": null});
        assert_eq!(number(&v, "a.b"), Some(2.5));
        assert_eq!(number(&v, "a.t"), Some(1.0));
        assert_eq!(number(&v, "a.s"), None);
        assert_eq!(number(&v, "n"), None);
        assert_eq!(number(&v, "a.missing"), None);
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("^q.*$"), "%5Eq.%2A%24");
    }

    #[test]
    fn records_from_api_answers() {
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let ctx = PluginContext { state_dir: std::env::temp_dir(), shutdown, metrics: Arc::new(Metrics::default()) };
        let settings = RabbitmqSettings::default();
        settings.validate("plugins.rabbitmq[0]").unwrap();
        let built = settings.build("r", &ctx).unwrap();
        drop(built);
        let p = RabbitmqPlugin {
            name: "r".into(),
            client: reqwest::Client::new(),
            base: "http://127.0.0.1:1".into(),
            username: "guest".into(),
            password: None,
            vhost: None,
            queue_pattern: None,
            max_queues: 10,
            nodes: true,
            metrics: ctx.metrics.clone(),
        };
        let overview = serde_json::json!({
            "object_totals": {"connections": 2, "channels": 3, "queues": 4, "consumers": 1, "exchanges": 7},
            "queue_totals": {"messages": 5, "messages_ready": 4, "messages_unacknowledged": 1},
            "message_stats": {"publish_details": {"rate": 1.5}}
        });
        let queues = vec![
            serde_json::json!({"name": "q", "vhost": "/", "messages": 5, "consumers": 0,
                "message_stats": {"publish_details": {"rate": 0.5}, "deliver_get_details": {"rate": 0.25}}}),
            serde_json::json!({"name": "fresh", "vhost": "v"}),
            serde_json::json!({"vhost": "v"}),
        ];
        let nodes = serde_json::json!([{"name": "rabbit@h", "running": true, "mem_used": 100, "mem_alarm": false}]);
        let records = p.records(timestamp_of(SystemTime::now()), &overview, &queues, 3, Some(&nodes));
        let value = |metric: &str, tag: Option<(&str, &str)>| {
            records
                .iter()
                .find(|r| r.metric == metric && tag.is_none_or(|(k, v)| r.tags.get(k).map(String::as_str) == Some(v)))
                .and_then(double_value)
        };
        assert_eq!(value("rabbitmq.messages", None), Some(5.0));
        assert_eq!(value("rabbitmq.publish_per_sec", None), Some(1.5));
        assert_eq!(value("rabbitmq.deliver_per_sec", None), None, "no rate given: left out");
        assert_eq!(value("rabbitmq.queues_skipped", None), Some(3.0));
        assert_eq!(value("rabbitmq.queue.messages", Some(("queue", "q"))), Some(5.0));
        assert_eq!(value("rabbitmq.queue.deliver_per_sec", Some(("queue", "q"))), Some(0.25));
        assert_eq!(value("rabbitmq.queue.messages", Some(("queue", "fresh"))), None, "no statistics yet");
        assert_eq!(value("rabbitmq.node.running", Some(("node", "rabbit@h"))), Some(1.0));
        assert_eq!(value("rabbitmq.node.mem_alarm", Some(("node", "rabbit@h"))), Some(0.0));
        assert!(records.iter().all(|r| METRIC_NAMES.contains(&r.metric.as_str())));
    }

    #[test]
    fn toml_settings() {
        let mut c: crate::plugins::PluginsConfig = toml::from_str(
            "[[rabbitmq]]\nurl = \"https://mq:15671/\"\nusername = \"mon\"\npassword = { file = \"/run/pw\" }\n\
             vhost = \"/\"\nqueue_pattern = \"^orders\"\nmax_queues = 5\nnodes = false\n",
        )
        .unwrap();
        c.normalize().unwrap();
        let r = &c.rabbitmq[0].settings;
        assert_eq!((r.max_queues, r.nodes, r.vhost.as_deref()), (5, false, Some("/")));
        assert!(toml::from_str::<crate::plugins::PluginsConfig>("[[rabbitmq]]\nqueue = \"x\"\n").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let ok = RabbitmqSettings { queue_pattern: Some("^orders\\.".into()), ..RabbitmqSettings::default() };
        ok.validate("p").unwrap();
        for bad in [
            RabbitmqSettings { url: "ftp://h".into(), ..RabbitmqSettings::default() },
            RabbitmqSettings { url: "http://h/?x=1".into(), ..RabbitmqSettings::default() },
            RabbitmqSettings { url: "http://guest:guest@h".into(), ..RabbitmqSettings::default() },
            RabbitmqSettings { queue_pattern: Some("(".into()), ..RabbitmqSettings::default() },
            RabbitmqSettings { vhost: Some(String::new()), ..RabbitmqSettings::default() },
            RabbitmqSettings { max_queues: 1_000_000, ..RabbitmqSettings::default() },
        ] {
            assert!(bad.validate("p").is_err(), "{bad:?}");
        }
    }
}

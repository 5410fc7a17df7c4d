//! TCP plugin: port connectivity — connect latency and up/down for a list of `host:port`.
//!
//! Role: every collection resolves each target and opens one TCP connection to it (all targets
//! at once, each bounded by `connect_timeout`), records `tcp.up` (1/0) and, when it connected,
//! `tcp.connect_seconds`, tagged `target` (as configured). A target that is down is a value, not
//! a plugin failure: the instance stays healthy while it can probe. Touches only the sockets it
//! opens (closed at once).

mod config;

use std::time::{Duration, Instant, SystemTime};

use meshmon_proto::v1::Record;
use tokio::net::TcpStream;

pub use config::TcpSettings;

use crate::plugins::{BuildPlugin, CollectFuture, Plugin, PluginContext, PluginError};
use crate::record::{double_record, timestamp_of};

/// Every metric name this plugin produces (rows of `docs/METRICS.md`).
pub const METRIC_NAMES: &[&str] = &["tcp.up", "tcp.connect_seconds"];

/// The collector of one `[[plugins.tcp]]` instance.
#[derive(Debug)]
pub struct TcpPlugin {
    targets: Vec<String>,
    connect_timeout: Duration,
}

/// Outcome of one probe: the connect time, or why it failed.
async fn probe(target: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => {
            let took = started.elapsed();
            drop(stream);
            Ok(took)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

impl Plugin for TcpPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        Box::pin(async move {
            let ts = timestamp_of(at);
            let probes = self.targets.iter().map(|t| probe(t, self.connect_timeout));
            let results = futures_util::future::join_all(probes).await;
            let mut out = Vec::with_capacity(self.targets.len() * 2);
            for (target, result) in self.targets.iter().zip(results) {
                let tagged = |metric: &str, v: f64| -> Record {
                    let mut r = double_record(metric, v, ts);
                    r.tags.insert("target".to_owned(), target.clone());
                    r
                };
                match result {
                    Ok(took) => {
                        out.push(tagged("tcp.up", 1.0));
                        out.push(tagged("tcp.connect_seconds", took.as_secs_f64()));
                    }
                    Err(e) => {
                        tracing::debug!(target = %target, "tcp probe failed: {e}");
                        out.push(tagged("tcp.up", 0.0));
                    }
                }
            }
            Ok::<_, PluginError>(out)
        })
    }
}

impl BuildPlugin for TcpSettings {
    fn build(&self, _name: &str, _ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        Ok(Box::new(TcpPlugin { targets: self.targets.clone(), connect_timeout: self.connect_timeout }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::double_value;

    #[tokio::test]
    async fn a_listening_port_is_up_and_a_closed_one_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let open = listener.local_addr().expect("addr").to_string();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let mut p = TcpPlugin { targets: vec![open.clone(), closed.clone()], connect_timeout: Duration::from_secs(2) };
        let records = p.collect(SystemTime::now()).await.expect("collects");
        let value = |metric: &str, target: &str| {
            records
                .iter()
                .find(|r| r.metric == metric && r.tags.get("target").map(String::as_str) == Some(target))
                .and_then(double_value)
        };
        assert_eq!(value("tcp.up", &open), Some(1.0));
        assert!(value("tcp.connect_seconds", &open).is_some_and(|s| s >= 0.0));
        assert_eq!(value("tcp.up", &closed), Some(0.0));
        assert_eq!(value("tcp.connect_seconds", &closed), None);
    }
}

//! StatsD plugin: a UDP listener for applications that already speak StatsD / DogStatsD.
//!
//! Role: at build the instance binds its UDP socket (`listen`; a busy or invalid address fails
//! the build, naming it) and spawns its listener task, which stops on agent shutdown or when the
//! plugin is dropped. The task folds every datagram into the interval's bounded aggregation
//! (`aggregate.rs`; lines parsed by `parse.rs`) under a short lock; `collect` swaps the
//! interval out and turns it into records: counters `<prefix>.<name>` (sum, rate-corrected),
//! gauges (last value), timers `.count .sum .min .max .mean .p50 .p95 .p99`, sets `.unique`,
//! tagged with the line's DogStatsD tags; plus the interval's own counts (`statsd.*`, tag
//! `plugin`). UDP data cannot be read again, so the plugin is lossless (the runner waits for
//! queue room rather than dropping). Touches its UDP socket only.

pub mod aggregate;
mod config;
pub mod parse;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use std::io::Read as _;

use meshmon_proto::v1::Record;
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use aggregate::{Aggregator, Bounds, Interval};
pub use config::StatsdSettings;

use crate::metrics::Metrics;
use crate::plugins::{BuildPlugin, CollectFuture, ErrorReason, Plugin, PluginContext, PluginError};
use crate::push::shutting_down;
use crate::record::{double_record, timestamp_of};

/// Every fixed metric name this plugin produces (rows of `docs/METRICS.md`); received metrics
/// become `<prefix>.<name>[.<stat>]`.
pub const METRIC_NAMES: &[&str] = &["statsd.packets", "statsd.lines", "statsd.invalid_lines", "statsd.dropped_names"];

/// Largest datagram read (bigger ones are cut by the kernel).
const MAX_DATAGRAM: usize = 65_536;

/// Datagrams folded in per lock when more are waiting.
const BURST: usize = 64;

/// Datagrams a collection folds in from the receive buffer at most (bounded under a flood).
const DRAIN_LIMIT: usize = 65_536;

/// The collector of one `[[plugins.statsd]]` instance.
#[derive(Debug)]
pub struct StatsdPlugin {
    name: String,
    prefix: String,
    shared: Arc<Mutex<Aggregator>>,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Drop for StatsdPlugin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Folds up to `limit` datagrams already waiting in the socket's receive buffer into `agg`.
/// Reads the socket directly (not through Tokio's readiness, which may not have seen them yet).
fn fold_waiting(socket: &UdpSocket, agg: &mut Aggregator, buf: &mut [u8], limit: usize) {
    let sock = socket2::SockRef::from(socket);
    for _ in 0..limit {
        match (&*sock).read(buf) {
            Ok(n) => agg.ingest(&buf[..n]),
            Err(_) => break,
        }
    }
}

async fn listen(
    socket: Arc<UdpSocket>,
    shared: Arc<Mutex<Aggregator>>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv(&mut buf) => r,
            () = shutting_down(&mut shutdown) => break,
        };
        match received {
            Ok(n) => {
                let mut agg = shared.lock().unwrap_or_else(PoisonError::into_inner);
                agg.ingest(&buf[..n]);
                // Fold in what is already waiting under the same lock (fast under load).
                fold_waiting(&socket, &mut agg, &mut buf, BURST);
            }
            Err(e) => metrics.warn_limited("statsd_receive", &format!("statsd: receiving a datagram failed: {e}")),
        }
    }
    tracing::debug!("statsd listener stopped");
}

impl StatsdPlugin {
    /// Binds the socket and starts the listener (needs a Tokio runtime).
    ///
    /// # Errors
    /// [`PluginError`] (`io`) naming the address when it cannot be bound.
    pub fn start(settings: &StatsdSettings, name: &str, ctx: &PluginContext) -> Result<StatsdPlugin, PluginError> {
        let addr: SocketAddr = settings
            .listen
            .parse()
            .map_err(|_| PluginError::io(format!("listen address {:?} is not ip:port", settings.listen)))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PluginError::new(ErrorReason::Other, "the statsd listener needs a Tokio runtime"))?;
        let bind_error = |e: std::io::Error| PluginError::io(format!("cannot listen on udp {addr}: {e}"));
        let socket =
            socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None).map_err(bind_error)?;
        if let Err(e) = socket.set_recv_buffer_size(settings.receive_buffer_bytes) {
            tracing::debug!("statsd: cannot set the receive buffer size: {e}");
        }
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        let std_socket: std::net::UdpSocket = socket.into();
        let socket = {
            let _guard = runtime.enter();
            UdpSocket::from_std(std_socket).map_err(bind_error)?
        };
        let local_addr = socket.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Mutex::new(Aggregator::new(Bounds {
            max_names: settings.max_names.max(1),
            max_values: settings.max_values.max(1),
            max_tags: settings.max_tags,
        })));
        let socket = Arc::new(socket);
        let task = runtime.spawn(listen(
            Arc::clone(&socket),
            Arc::clone(&shared),
            ctx.shutdown.clone(),
            Arc::clone(&ctx.metrics),
        ));
        tracing::info!(plugin = name, %local_addr, "statsd listening");
        Ok(StatsdPlugin {
            name: name.to_owned(),
            prefix: settings.prefix.clone(),
            shared,
            socket,
            local_addr,
            task,
            metrics: Arc::clone(&ctx.metrics),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The records of the interval since the previous call, including every datagram already
    /// in the socket's receive buffer (so the last collection at shutdown loses none of them).
    pub fn drain(&mut self, at: SystemTime) -> Vec<Record> {
        let interval = {
            let mut agg = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            let mut buf = vec![0u8; MAX_DATAGRAM];
            fold_waiting(&self.socket, &mut agg, &mut buf, DRAIN_LIMIT);
            agg.take()
        };
        let ts = timestamp_of(at);
        if interval.dropped_names > 0 {
            self.metrics.warn_limited(
                "statsd_dropped_names",
                &format!(
                    "statsd plugin {:?}: {} lines dropped: more than max_names series in one interval",
                    self.name, interval.dropped_names
                ),
            );
        }
        let mut out = interval.records(&self.prefix, ts);
        #[allow(clippy::cast_precision_loss)] // counts are far below 2^53
        let counts = [
            interval.packets as f64,
            interval.lines as f64,
            interval.invalid_lines as f64,
            interval.dropped_names as f64,
        ];
        for (metric, v) in METRIC_NAMES.iter().zip(counts) {
            let mut r = double_record(*metric, v, ts);
            r.tags.insert("plugin".to_owned(), self.name.clone());
            out.push(r);
        }
        out
    }
}

impl Plugin for StatsdPlugin {
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_> {
        // Nothing awaits: the interval is swapped out and returned in one step.
        let records = self.drain(at);
        Box::pin(async move { Ok::<_, PluginError>(records) })
    }

    fn lossless(&self) -> bool {
        true
    }
}

impl BuildPlugin for StatsdSettings {
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError> {
        Ok(Box::new(StatsdPlugin::start(self, name, ctx)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::record::double_value;

    #[tokio::test]
    async fn receives_datagrams_and_drains_intervals() {
        let (_stop, shutdown) = watch::channel(false);
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = PluginContext { state_dir: dir.path().to_owned(), shutdown, metrics: Arc::new(Metrics::new()) };
        let settings = StatsdSettings { listen: "127.0.0.1:0".into(), ..StatsdSettings::default() };
        let mut p = StatsdPlugin::start(&settings, "sd", &ctx).expect("starts");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender.send_to(b"a:1|c\na:2|c", p.local_addr()).expect("send");
        sender.send_to(b"nonsense", p.local_addr()).expect("send");
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..500 {
            for r in p.drain(SystemTime::now()) {
                *got.entry(r.metric.clone()).or_insert(0.0) += double_value(&r).unwrap();
            }
            if got.get("statsd.packets") == Some(&2.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(got.get("stats.a"), Some(&3.0));
        assert_eq!(got.get("statsd.lines"), Some(&3.0));
        assert_eq!(got.get("statsd.invalid_lines"), Some(&1.0));
        assert!(p.lossless());
    }
}

//! Built-in collectors that produce records on their own schedule.
//!
//! Role: defines what a plugin is ([`Plugin`]: one `collect` per tick), the errors it reports
//! ([`PluginError`] with an [`ErrorReason`]), what it is given when built ([`PluginContext`]),
//! and [`build_all`], which turns the `[plugins]` configuration into runnable instances. The
//! runner (`runner.rs`) gives every instance its own task, interval and timeout, so one slow or
//! failing plugin never delays another; `health.rs` keeps each instance's counters and state.
//! Plugins: `system.rs` (host metrics, its own loop), `process`, `tcp`, `http`, `log`, `kafka`,
//! `redis`, `rabbitmq`, `postgresql`, `mysql`, `prometheus`, `statsd` — each a folder with its
//! settings (`config.rs`) and its collector. Metric names are listed in `docs/METRICS.md`.
//! Touches what each plugin reads (files, sockets, servers it is pointed at).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshmon_proto::v1::Record;
use tokio::sync::watch;

pub mod config;
pub mod health;
pub mod runner;

pub mod http;
pub mod kafka;
pub mod log;
pub mod mysql;
pub mod postgresql;
pub mod process;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod statsd;
pub mod system;
pub mod tcp;

pub use config::{Instance, PluginSettings, PluginsConfig, SecretRef, SystemPluginConfig};
pub use health::{PluginHealth, PluginRegistry};

use crate::metrics::Metrics;

/// Why a collection failed (label `reason` of `meshmon_agent_plugin_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// The collection did not end within the instance's `timeout` (set by the runner).
    Timeout,
    /// The server could not be reached (connection refused, DNS, reset).
    Unreachable,
    /// The server refused the credentials.
    Auth,
    /// The server answered something the plugin could not understand.
    Protocol,
    /// A local I/O error (files, sockets).
    Io,
    /// Anything else (internal errors, panics in blocking work).
    Other,
}

impl ErrorReason {
    /// Every reason, in exposition order.
    pub const ALL: [ErrorReason; 6] = [
        ErrorReason::Timeout,
        ErrorReason::Unreachable,
        ErrorReason::Auth,
        ErrorReason::Protocol,
        ErrorReason::Io,
        ErrorReason::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Timeout => "timeout",
            ErrorReason::Unreachable => "unreachable",
            ErrorReason::Auth => "auth",
            ErrorReason::Protocol => "protocol",
            ErrorReason::Io => "io",
            ErrorReason::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            ErrorReason::Timeout => 0,
            ErrorReason::Unreachable => 1,
            ErrorReason::Auth => 2,
            ErrorReason::Protocol => 3,
            ErrorReason::Io => 4,
            ErrorReason::Other => 5,
        }
    }
}

/// A failed collection (or a plugin that could not be built).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason:?}: {message}", reason = .reason.as_str())]
pub struct PluginError {
    /// The class of failure.
    pub reason: ErrorReason,
    /// What went wrong, for logs and `GET /v1/plugins`.
    pub message: String,
}

impl PluginError {
    /// An error of class `reason`.
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> PluginError {
        PluginError { reason, message: message.into() }
    }

    /// The server could not be reached.
    pub fn unreachable(message: impl std::fmt::Display) -> PluginError {
        PluginError::new(ErrorReason::Unreachable, message.to_string())
    }

    /// The server answered something unexpected.
    pub fn protocol(message: impl std::fmt::Display) -> PluginError {
        PluginError::new(ErrorReason::Protocol, message.to_string())
    }

    /// A local I/O error.
    pub fn io(message: impl std::fmt::Display) -> PluginError {
        PluginError::new(ErrorReason::Io, message.to_string())
    }
}

/// The future of one collection.
pub type CollectFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Record>, PluginError>> + Send + 'a>>;

/// A collector run by `runner.rs`: one `collect` per tick, never two at once.
///
/// A collection may be abandoned at any await point (its future dropped) when it exceeds the
/// instance's timeout or the agent stops: a plugin must keep its state consistent under that —
/// advance positions, baselines and cursors only once the collection has all it returns.
pub trait Plugin: Send + 'static {
    /// One collection; records are stamped `at` unless the source gives its own event time.
    /// Cluster, node and global tags are added by the ingress.
    fn collect(&mut self, at: SystemTime) -> CollectFuture<'_>;

    /// Whether the records must not be dropped when the batch queue is full (the runner then
    /// waits for room instead): true for sources that cannot be read again (log lines, StatsD).
    fn lossless(&self) -> bool {
        false
    }

    /// Called after the records of the last successful collection were enqueued (a plugin that
    /// saves read positions saves them here).
    fn enqueued(&mut self) {}
}

/// What a plugin is given when it is built.
#[derive(Debug, Clone)]
pub struct PluginContext {
    /// The agent's state directory (plugins keep their own files under `state_dir/plugins/`).
    pub state_dir: PathBuf,
    /// Becomes true when the agent stops (for plugins with their own background tasks).
    pub shutdown: watch::Receiver<bool>,
    /// The agent's self-metrics.
    pub metrics: Arc<Metrics>,
}

impl PluginContext {
    /// A context outside a running agent (tools, tests, embedding): fresh metrics, state under
    /// `state_dir`. Plugins' background tasks stop when the returned sender sends `true` or is
    /// dropped.
    pub fn standalone(state_dir: impl Into<PathBuf>) -> (PluginContext, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        (PluginContext { state_dir: state_dir.into(), shutdown, metrics: Arc::new(Metrics::new()) }, stop)
    }

    /// The directory for the state files of plugin instance `name` (created if missing).
    ///
    /// # Errors
    /// [`PluginError`] (`io`) when it cannot be created.
    pub fn plugin_dir(&self, name: &str) -> Result<PathBuf, PluginError> {
        let safe: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let dir = self.state_dir.join("plugins").join(safe);
        std::fs::create_dir_all(&dir).map_err(|e| PluginError::io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// A built plugin instance with its schedule.
pub struct Scheduled {
    /// Instance name.
    pub name: String,
    /// Plugin kind.
    pub kind: &'static str,
    /// Time between two collections.
    pub interval: Duration,
    /// Longest one collection may take.
    pub timeout: Duration,
    /// The collector.
    pub plugin: Box<dyn Plugin>,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How a kind builds one instance from its settings.
pub trait BuildPlugin: PluginSettings {
    /// Builds the collector of instance `name`.
    ///
    /// # Errors
    /// [`PluginError`] when the instance cannot run (unreadable secret, port in use, ...).
    fn build(&self, name: &str, ctx: &PluginContext) -> Result<Box<dyn Plugin>, PluginError>;
}

fn build_kind<T: BuildPlugin>(
    instances: &[Instance<T>],
    ctx: &PluginContext,
    out: &mut Vec<Scheduled>,
) -> Result<(), PluginError> {
    for inst in instances.iter().filter(|i| i.enabled) {
        let plugin = inst.settings.build(&inst.name, ctx).map_err(|e| PluginError {
            reason: e.reason,
            message: format!("plugin {:?} ({}) cannot start: {}", inst.name, T::KIND, e.message),
        })?;
        out.push(Scheduled {
            name: inst.name.clone(),
            kind: T::KIND,
            interval: inst.interval,
            timeout: inst.timeout,
            plugin,
        });
    }
    Ok(())
}

/// Builds every enabled instance of every kind except `system` (which has its own loop).
///
/// # Errors
/// The first instance that cannot start, named.
pub fn build_all(config: &PluginsConfig, ctx: &PluginContext) -> Result<Vec<Scheduled>, PluginError> {
    let mut out = Vec::new();
    build_kind(&config.process, ctx, &mut out)?;
    build_kind(&config.tcp, ctx, &mut out)?;
    build_kind(&config.http, ctx, &mut out)?;
    build_kind(&config.log, ctx, &mut out)?;
    build_kind(&config.kafka, ctx, &mut out)?;
    build_kind(&config.redis, ctx, &mut out)?;
    build_kind(&config.rabbitmq, ctx, &mut out)?;
    build_kind(&config.postgresql, ctx, &mut out)?;
    build_kind(&config.mysql, ctx, &mut out)?;
    build_kind(&config.prometheus, ctx, &mut out)?;
    build_kind(&config.statsd, ctx, &mut out)?;
    Ok(out)
}

/// Servers that misbehave, for the plugins' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    /// A loopback port nothing listens on (bound, then released).
    pub fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A loopback server that accepts connections and never answers (stops when the handle is
    /// aborted), and its port.
    pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        (port, task)
    }
}

//! A real RabbitMQ broker (Debian `rabbitmq-server` 3.10) with its management plugin, for tests.
//!
//! Role: [`RabbitMq::start`] writes a `rabbitmq.conf` (AMQP and management listeners on free
//! loopback ports, statistics every 500 ms so queue depths show up quickly), enables
//! `rabbitmq_management`, and starts the broker script `/usr/lib/rabbitmq/bin/rabbitmq-server`
//! directly (the `/usr/sbin` wrapper only switches to the `rabbitmq` user) with every path —
//! mnesia, logs, Erlang cookie (`HOME`), feature flags — in the given temp dir, a unique node
//! name, its own distribution port and **its own epmd port** (`ERL_EPMD_PORT`), so it shares
//! nothing with other brokers on the machine. Ready when `GET /api/overview` answers (about
//! 5 s). [`RabbitMq::api`] calls the management API as `guest`. Dropping it stops the broker
//! (SIGTERM to the script, which stops the Erlang VM gracefully; SIGKILL after 60 s) and then
//! the epmd it started (`epmd -kill` on its port). Touches child processes, the temp dir and
//! loopback ports only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Proc, free_port, path_str, wait_for};

const READY: Duration = Duration::from_secs(90);
const SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running RabbitMQ node.
#[derive(Debug)]
pub struct RabbitMq {
    proc: Option<Proc>,
    /// Management API address.
    pub mgmt: SocketAddr,
    /// AMQP port.
    pub amqp_port: u16,
    /// Erlang node name.
    pub node: String,
    env: Vec<(String, String)>,
}

/// An answer of the management API.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One HTTP/1.0 request with basic authentication (HTTP/1.0: the body ends at EOF, never chunked).
pub fn http_basic(
    addr: SocketAddr,
    user: &str,
    password: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<ApiResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let auth = base64(format!("{user}:{password}").as_bytes());
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    Ok(ApiResponse { status, body: body.to_owned() })
}

impl RabbitMq {
    /// Starts a node with its files under `dir/rabbitmq-<n>`.
    pub fn start(dir: &Path) -> Result<RabbitMq, String> {
        if !Path::new(SCRIPT).is_file() {
            return Err(format!("{SCRIPT} not found: apt-get install -y rabbitmq-server"));
        }
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let root = dir.join(format!("rabbitmq-{n}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub)).map_err(|e| e.to_string())?;
        }
        let port = || free_port().map_err(|e| e.to_string());
        let (amqp, mgmt, dist, epmd) = (port()?, port()?, port()?, port()?);
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {mgmt}\ncollect_statistics_interval = 500\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(root.join("enabled_plugins"), "[rabbitmq_management].\n").map_err(|e| e.to_string())?;
        let node = format!("meshmon-test-{}-{n}@localhost", std::process::id());
        let p = |sub: &str| -> Result<String, String> { Ok(path_str(&root.join(sub))?.to_owned()) };
        let env: Vec<(String, String)> = vec![
            ("HOME".into(), p("")?),
            ("RABBITMQ_CONFIG_FILE".into(), p("rabbitmq")?),
            ("RABBITMQ_MNESIA_BASE".into(), p("mnesia")?),
            ("RABBITMQ_LOG_BASE".into(), p("log")?),
            ("RABBITMQ_NODENAME".into(), node.clone()),
            ("RABBITMQ_DIST_PORT".into(), dist.to_string()),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), p("enabled_plugins")?),
            ("RABBITMQ_FEATURE_FLAGS_FILE".into(), p("feature_flags")?),
            ("ERL_EPMD_PORT".into(), epmd.to_string()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        ];
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let proc = Proc::start(&format!("rabbitmq-{n}"), &PathBuf::from(SCRIPT), &[], &env_refs, &root)?;
        let mut r =
            RabbitMq { proc: Some(proc), mgmt: SocketAddr::from(([127, 0, 0, 1], mgmt)), amqp_port: amqp, node, env };
        let addr = r.mgmt;
        let ready = wait_for("RabbitMQ management API", READY, || {
            http_basic(addr, "guest", "guest", "GET", "/api/overview", None).ok().filter(|a| a.status == 200)
        });
        if let Err(e) = ready {
            let log = r.proc.as_ref().map(Proc::log_text).unwrap_or_default();
            r.stop();
            return Err(format!("{e}; log:\n{log}"));
        }
        Ok(r)
    }

    /// The management API base URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.mgmt)
    }

    /// Calls the management API as `guest`.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<ApiResponse, String> {
        http_basic(self.mgmt, "guest", "guest", method, path, body)
    }

    /// Calls the management API as `guest` and requires a 2xx answer.
    pub fn api_ok(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, String> {
        let a = self.api(method, path, body)?;
        if (200..300).contains(&a.status) {
            Ok(a.body)
        } else {
            Err(format!("{method} {path}: HTTP {} {}", a.status, a.body))
        }
    }

    /// Declares a non-durable classic queue `queue` in `vhost` (percent-encoded, `%2F` for `/`).
    pub fn declare_queue(&self, vhost: &str, queue: &str) -> Result<(), String> {
        self.api_ok("PUT", &format!("/api/queues/{vhost}/{queue}"), Some(r#"{"durable":false,"auto_delete":false}"#))
            .map(|_| ())
    }

    /// Publishes `n` messages to `queue` through the default exchange of `vhost`.
    pub fn publish(&self, vhost: &str, queue: &str, n: usize) -> Result<(), String> {
        let body =
            format!(r#"{{"properties":{{}},"routing_key":"{queue}","payload":"m","payload_encoding":"string"}}"#);
        for _ in 0..n {
            let answer = self.api_ok("POST", &format!("/api/exchanges/{vhost}/amq.default/publish"), Some(&body))?;
            if !answer.contains("\"routed\":true") {
                return Err(format!("message to {queue} not routed: {answer}"));
            }
        }
        Ok(())
    }

    /// Stops the node (graceful, then forced) and its epmd.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take()
            && p.terminate(Duration::from_secs(60)).is_err()
        {
            let _ = p.kill9();
        }
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = Command::new("epmd")
            .arg("-kill")
            .envs(env.iter().copied().filter(|(k, _)| k.starts_with("ERL_EPMD")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}

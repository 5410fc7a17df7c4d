//! A real Redis server (Debian `redis-server`) for tests.
//!
//! Role: [`Redis::start`] runs `redis-server` on a free loopback port with its working
//! directory in the given temp dir, no persistence (`--save ''`, `--appendonly no`) and any
//! extra arguments (`--requirepass`, `--replicaof`, …), and waits for "Ready to accept
//! connections" in its log; [`Redis::commands`] runs a few commands on one connection (a tiny
//! RESP client, enough to set up keys). The server is killed when dropped. Touches one child
//! process, its directory and one loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::{Proc, free_port, path_str};

const READY: Duration = Duration::from_secs(30);

/// A running `redis-server`.
#[derive(Debug)]
pub struct Redis {
    /// The process.
    pub proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// `redis-server`: `$REDIS_SERVER`, else `/usr/bin/redis-server`, else on `PATH`.
fn program() -> Result<std::path::PathBuf, String> {
    if let Ok(p) = std::env::var("REDIS_SERVER") {
        return Ok(p.into());
    }
    let usr = Path::new("/usr/bin/redis-server");
    if usr.is_file() {
        return Ok(usr.to_path_buf());
    }
    crate::influxdb::which("redis-server")
        .ok_or_else(|| "redis-server not found: apt-get install -y redis-server".into())
}

impl Redis {
    /// Starts `redis-server` with its files in `dir/redis-<port>` and `extra` arguments.
    pub fn start(dir: &Path, extra: &[&str]) -> Result<Redis, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let data = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            path_str(&data)?,
            "--daemonize",
            "no",
            "--logfile",
            "",
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::start(&format!("redis-{port}"), &program()?, &args, &[], dir)?;
        proc.wait_for_log_line("redis-server ready", READY, |l| {
            l.contains("Ready to accept connections").then_some(())
        })?;
        Ok(Redis { proc, port })
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs `commands` in order on one connection (after `AUTH password` when given) and returns
    /// each reply as text (`+OK` → `OK`, `:3` → `3`, bulk → its text, `-ERR …` → an `Err`).
    pub fn commands(&self, password: Option<&str>, commands: &[&[&str]]) -> Result<Vec<String>, String> {
        let mut stream = TcpStream::connect(self.address()).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut all: Vec<Vec<&str>> = Vec::new();
        if let Some(p) = password {
            all.push(vec!["AUTH", p]);
        }
        all.extend(commands.iter().map(|c| c.to_vec()));
        let mut request = Vec::new();
        for c in &all {
            request.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        stream.write_all(&request).map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut replies = Vec::new();
        for c in &all {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end_matches(['\r', '\n']);
            let reply = match line.split_at_checked(1) {
                Some(("+" | ":", rest)) => rest.to_owned(),
                Some(("-", rest)) => return Err(format!("{c:?}: {rest}")),
                Some(("$", n)) => {
                    let n: i64 = n.parse().map_err(|_| format!("bad bulk length {n:?}"))?;
                    if n < 0 {
                        String::new()
                    } else {
                        let mut buf = vec![0; usize::try_from(n).map_err(|e| e.to_string())? + 2];
                        reader.read_exact(&mut buf).map_err(|e| e.to_string())?;
                        buf.truncate(buf.len() - 2);
                        String::from_utf8_lossy(&buf).into_owned()
                    }
                }
                _ => return Err(format!("{c:?}: unexpected reply {line:?}")),
            };
            replies.push(reply);
        }
        if password.is_some() {
            replies.remove(0);
        }
        Ok(replies)
    }
}

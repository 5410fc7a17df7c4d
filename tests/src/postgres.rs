//! A real PostgreSQL (Debian `postgresql`, version 15 here) for tests: a primary, and a
//! streaming standby of it.
//!
//! Role: [`Postgres::start`] creates a cluster in its own temp dir and starts the postmaster on
//! a free loopback port; [`Postgres::start_standby`] clones a running primary with
//! `pg_basebackup` and starts it as a streaming standby; [`Postgres::psql`] runs SQL as the
//! superuser over the Unix socket. The server is stopped (immediate shutdown, then SIGKILL) and
//! its directory removed when dropped. Touches child processes, its temp dir and loopback
//! sockets only.
//!
//! The recipe (measured: initdb about 1 s, start under 0.2 s). PostgreSQL refuses to run as
//! root, and tests run as root here and in CI, so when root the server programs run as the
//! `postgres` OS user through `setpriv` (which execs: the child process *is* the postmaster,
//! so signals reach it), in a temp dir chowned to that user:
//!
//! ```text
//! chown -R postgres:postgres $D
//! setpriv --reuid=postgres --regid=postgres --init-groups -- \
//!   $BIN/initdb -D $D/data -U postgres --pwfile=$D/pw --auth-local=trust \
//!     --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync
//! setpriv ... -- $BIN/postgres -D $D/data -k $D/sock -c listen_addresses=127.0.0.1 -p $PORT \
//!   -c fsync=off -c autovacuum=off
//! psql -h $D/sock -p $PORT -U postgres -c 'SELECT 1'          # readiness (trust on the socket)
//! # standby:
//! setpriv ... -- env PGPASSWORD=... $BIN/pg_basebackup -h 127.0.0.1 -p $PORT -U postgres \
//!   -D $D2/data -R -X stream -c fast --no-sync
//! setpriv ... -- $BIN/postgres -D $D2/data ... -c cluster_name=$NAME   # application_name on the primary
//! kill -QUIT $PID                                                     # immediate shutdown
//! ```
//!
//! TCP logins (`host` lines of `pg_hba.conf`) need a password (SCRAM); the superuser's is
//! [`SUPERUSER_PASSWORD`]. `$BIN` is the newest `/usr/lib/postgresql/<version>/bin`.
//! Autovacuum is off so that the transaction counters of a test's database count only the
//! test's own transactions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, path_str, wait_for};

/// The superuser's name.
pub const SUPERUSER: &str = "postgres";
/// The superuser's password (for TCP logins).
pub const SUPERUSER_PASSWORD: &str = "meshmon-test-superuser";

const READY: Duration = Duration::from_secs(60);

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    /// The postmaster while running.
    pub proc: Option<Proc>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The directory of the Unix socket.
    pub socket_dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    // Last: removed after the server stopped.
    dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL in /usr/lib/postgresql ({e}): apt-get install -y postgresql"))?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program args` (as the `postgres` user when `as_postgres`) to completion.
fn run(as_postgres: bool, program: &Path, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Result<String, String> {
    let mut cmd = if as_postgres {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("running {}: {e}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{} {args:?} failed ({}):\n{text}", program.display(), out.status))
    }
}

impl Postgres {
    /// A new cluster (superuser [`SUPERUSER`] / [`SUPERUSER_PASSWORD`]) on a free port.
    pub fn start() -> Result<Postgres, String> {
        let (mut pg, data) = Postgres::prepare()?;
        let pw = pg.dir.path().join("pw");
        std::fs::write(&pw, format!("{SUPERUSER_PASSWORD}\n")).map_err(|e| e.to_string())?;
        pg.chown()?;
        let initdb = pg.bin.join("initdb");
        let args = [
            "-D",
            path_str(&data)?,
            "-U",
            SUPERUSER,
            &format!("--pwfile={}", path_str(&pw)?),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        run(pg.as_postgres, &initdb, &args, &[], pg.dir.path())?;
        pg.launch(&data, &[])?;
        Ok(pg)
    }

    /// A streaming standby of this (running) server, cloned with `pg_basebackup`; it connects
    /// as `application_name` = `name`.
    pub fn start_standby(&self, name: &str) -> Result<Postgres, String> {
        let (mut standby, data) = Postgres::prepare()?;
        standby.chown()?;
        let port = self.port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "-D",
            path_str(&data)?,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ];
        let basebackup = standby.bin.join("pg_basebackup");
        run(standby.as_postgres, &basebackup, &args, &[("PGPASSWORD", SUPERUSER_PASSWORD)], standby.dir.path())?;
        standby.launch(&data, &["-c", &format!("cluster_name={name}")])?;
        Ok(standby)
    }

    fn prepare() -> Result<(Postgres, PathBuf), String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("meshmon-postgres-").tempdir().map_err(|e| e.to_string())?;
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let port = free_port().map_err(|e| e.to_string())?;
        Ok((Postgres { proc: None, port, socket_dir, bin, as_postgres: is_root(), dir }, data))
    }

    fn chown(&self) -> Result<(), String> {
        if self.as_postgres {
            run(
                false,
                Path::new("chown"),
                &["-R", "postgres:postgres", path_str(self.dir.path())?],
                &[],
                self.dir.path(),
            )?;
        }
        Ok(())
    }

    fn launch(&mut self, data: &Path, extra: &[&str]) -> Result<(), String> {
        let postgres = self.bin.join("postgres");
        let port = self.port.to_string();
        let mut args: Vec<&str> = Vec::new();
        if self.as_postgres {
            args.extend(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]);
        }
        args.push(path_str(&postgres)?);
        args.extend(["-D", path_str(data)?, "-k", path_str(&self.socket_dir)?, "-p", &port]);
        args.extend(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "autovacuum=off"]);
        args.extend(extra);
        let (program, args) =
            if self.as_postgres { (PathBuf::from("setpriv"), args) } else { (postgres.clone(), args[1..].to_vec()) };
        let proc = Proc::start_in("postgres", &program, &args, &[], self.dir.path(), Some(self.dir.path()))?;
        self.proc = Some(proc);
        wait_for("postgres to accept connections", READY, || self.psql("postgres", "SELECT 1").ok())
            .map_err(|e| format!("{e}; log:\n{}", self.proc.as_ref().map(Proc::log_text).unwrap_or_default()))?;
        Ok(())
    }

    /// Runs `sql` in database `db` as the superuser over the Unix socket; returns the rows as
    /// unaligned text (`|` between columns, one row per line).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let port = self.port.to_string();
        let args = [
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            path_str(&self.socket_dir)?,
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "-d",
            db,
            "-c",
            sql,
        ];
        run(false, &psql, &args, &[], self.dir.path()).map(|s| s.trim_end().to_owned())
    }

    /// Stops the server: immediate shutdown (SIGQUIT), SIGKILL if it is still there after 10 s.
    pub fn stop(&mut self) {
        // Dropping `proc` kills and reaps it if it has not exited.
        if let Some(mut proc) = self.proc.take()
            && let Some(pid) = proc.pid()
        {
            let _ = Command::new("kill").args(["-QUIT", &pid.to_string()]).status();
            let _ = wait_for("postgres to exit", Duration::from_secs(10), || {
                proc.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
            });
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A real MariaDB (Debian `mariadb-server`, 10.11 here) for tests, and a replica of it.
//!
//! Role: [`MariaDb::start`] creates a data directory in its own temp dir and starts `mariadbd`
//! on a free loopback port and a Unix socket; [`MariaDb::start_replica`] starts a second server
//! replicating from a running one; [`MariaDb::sql`] runs SQL as `root` over the socket. The
//! server is killed and its directory removed when dropped. Touches child processes, its temp
//! dir and loopback sockets only.
//!
//! The recipe (measured: install about 3 s, start about 0.3 s). Tests run as root, and
//! `mariadbd` runs as root only when told `--user=root`; `--no-defaults` keeps the machine's
//! `/etc/mysql` configuration out:
//!
//! ```text
//! mariadb-install-db --no-defaults --datadir=$D/data --user=root \
//!   --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve
//! mariadbd --no-defaults --datadir=$D/data --socket=$D/s.sock --port=$PORT \
//!   --bind-address=127.0.0.1 --user=root --pid-file=$D/m.pid --skip-name-resolve \
//!   --innodb-buffer-pool-size=16M --innodb-log-file-size=8M [--server-id=N --log-bin=$D/bin]
//! mariadb --no-defaults -S $D/s.sock -u root -e 'SELECT 1'            # readiness
//! ```
//!
//! `root@localhost` has no password and logs in over the socket only; tests create their own
//! users (e.g. `CREATE USER 'meshmon'@'127.0.0.1' IDENTIFIED BY '…'`) for TCP logins.
//! A replica: the primary runs with `--log-bin` and a replication user; the replica with
//! another `--server-id`, then `CHANGE MASTER TO … MASTER_USE_GTID = slave_pos; START SLAVE`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, path_str, wait_for};

const READY: Duration = Duration::from_secs(60);
const REPLICATION_USER: &str = "meshmon_repl";
const REPLICATION_PASSWORD: &str = "meshmon-test-repl";

/// A running `mariadbd`.
#[derive(Debug)]
pub struct MariaDb {
    /// The server while running.
    pub proc: Option<Proc>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The Unix socket.
    pub socket: PathBuf,
    // Last: removed after the server stopped.
    dir: tempfile::TempDir,
}

fn run(program: &str, args: &[&str], cwd: &Path) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| format!("running {program}: {e} (apt-get install -y mariadb-server)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl MariaDb {
    /// A new server with binary logging (`server_id` 1), so it can be a primary.
    pub fn start() -> Result<MariaDb, String> {
        MariaDb::start_with_id(1)
    }

    fn start_with_id(server_id: u32) -> Result<MariaDb, String> {
        let dir = tempfile::Builder::new().prefix("meshmon-mariadb-").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let install_args = [
            "--no-defaults",
            &format!("--datadir={}", path_str(&data)?),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ];
        run("mariadb-install-db", &install_args, dir.path())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let socket = dir.path().join("s.sock");
        let args = [
            "--no-defaults".to_owned(),
            format!("--datadir={}", path_str(&data)?),
            format!("--socket={}", path_str(&socket)?),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--user=root".to_owned(),
            format!("--pid-file={}", path_str(&dir.path().join("mariadbd.pid"))?),
            "--skip-name-resolve".to_owned(),
            "--innodb-buffer-pool-size=16M".to_owned(),
            "--innodb-log-file-size=8M".to_owned(),
            format!("--server-id={server_id}"),
            format!("--log-bin={}", path_str(&dir.path().join("binlog"))?),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc =
            Proc::start_in("mariadbd", Path::new("/usr/sbin/mariadbd"), &args, &[], dir.path(), Some(dir.path()))?;
        let db = MariaDb { proc: Some(proc), port, socket, dir };
        wait_for("mariadbd to accept connections", READY, || db.sql("SELECT 1").ok())
            .map_err(|e| format!("{e}; log:\n{}", db.proc.as_ref().map(Proc::log_text).unwrap_or_default()))?;
        Ok(db)
    }

    /// A second server replicating from this one (GTID), its replication threads running.
    pub fn start_replica(&self) -> Result<MariaDb, String> {
        self.sql(&format!(
            "CREATE USER IF NOT EXISTS '{REPLICATION_USER}'@'127.0.0.1' IDENTIFIED BY '{REPLICATION_PASSWORD}'; \
             GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1'"
        ))?;
        let replica = MariaDb::start_with_id(2)?;
        replica.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = '{REPLICATION_USER}', \
             MASTER_PASSWORD = '{REPLICATION_PASSWORD}', MASTER_USE_GTID = slave_pos; START SLAVE",
            self.port
        ))?;
        wait_for("the replica's threads to run", READY, || {
            let status = replica.sql_vertical("SHOW SLAVE STATUS").ok()?;
            let yes = |field: &str| status.lines().any(|l| l.trim() == format!("{field}: Yes"));
            (yes("Slave_IO_Running") && yes("Slave_SQL_Running")).then_some(())
        })
        .map_err(|e| format!("{e}; status:\n{}", replica.sql_vertical("SHOW SLAVE STATUS").unwrap_or_default()))?;
        Ok(replica)
    }

    /// Runs `sql` as `root` over the socket; returns the rows as tab-separated text without
    /// column names.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let socket = path_str(&self.socket)?;
        run("mariadb", &["--no-defaults", "-S", socket, "-u", "root", "-N", "-B", "-e", sql], self.dir.path())
            .map(|s| s.trim_end().to_owned())
    }

    /// Runs `sql` as `root` over the socket; returns the rows in vertical form
    /// (`Column: value` lines).
    pub fn sql_vertical(&self, sql: &str) -> Result<String, String> {
        let socket = path_str(&self.socket)?;
        run("mariadb", &["--no-defaults", "-S", socket, "-u", "root", "-E", "-e", sql], self.dir.path())
    }

    /// Kills the server (SIGKILL; its data is thrown away with the temp dir).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.kill9();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

//! One scan of Linux `/proc` for the processes an instance watches. Blocking: run it on a
//! blocking thread.
//!
//! Role: [`scan`] lists `/proc` only when a matcher needs it (`name` or `pattern` without a
//! `pid_file`), reads `/proc/<pid>/stat` of each candidate (name, CPU ticks, start time,
//! threads), the command line only for `pattern` matchers, and for matched processes only their
//! resident memory (`/proc/<pid>/status`) and open descriptors (entries of `/proc/<pid>/fd`;
//! unreadable ones are reported, not fatal). Processes that exit during the scan are skipped.
//! Touches `/proc` (read only) and the configured pid files.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use regex::Regex;

/// Kernel clock ticks per second of the CPU times in `/proc/<pid>/stat` (`USER_HZ`, 100 on
/// every Linux architecture this agent is built for).
pub const TICKS_PER_SEC: f64 = 100.0;

/// Longest `comm` the kernel keeps (longer names are cut).
const COMM_MAX: usize = 15;

/// One compiled `matches` entry.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Tag value `process`.
    pub label: String,
    /// Exact executable name.
    pub name: Option<String>,
    /// Searched in the command line.
    pub pattern: Option<Regex>,
    /// File holding the pid.
    pub pid_file: Option<PathBuf>,
}

/// What was read about one matched process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcSample {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (tells a re-used pid from the old process).
    pub start_ticks: u64,
    /// User + system CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// Threads.
    pub threads: u64,
    /// Resident memory in bytes (`None` when unreadable, e.g. a zombie).
    pub rss_bytes: Option<u64>,
    /// Open file descriptors (`None` when `/proc/<pid>/fd` could not be read).
    pub open_fds: Option<u64>,
    /// Indexes of the matchers this process meets.
    pub labels: Vec<usize>,
}

/// The result of one scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Seconds since boot when the scan started (`/proc/uptime`, the clock of `start_ticks`).
    pub uptime_secs: f64,
    /// When the scan started (the precise clock for CPU shares).
    pub taken: Instant,
    /// The matched processes, by pid.
    pub procs: Vec<ProcSample>,
}

/// The fields of `/proc/<pid>/stat` the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `comm` (cut at 15 bytes by the kernel).
    pub comm: String,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// num_threads.
    pub threads: u64,
    /// starttime, clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`; `None` when it is not in the expected shape.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // "pid (comm) state ppid ..." — comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // rest[0] is field 3 (state): field n is rest[n - 3].
    let field = |n: usize| rest.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(Stat { comm, cpu_ticks: field(14)?.saturating_add(field(15)?), threads: field(20)?, start_ticks: field(22)? })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_ascii_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

fn file_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a process called `comm` (with `cmdline`/`exe` to look at when `comm` was cut) has
/// executable name `name`.
fn name_matches(
    name: &str,
    comm: &str,
    cmdline: impl FnOnce() -> Option<String>,
    exe: impl FnOnce() -> Option<String>,
) -> bool {
    if comm == name {
        return true;
    }
    if name.len() <= COMM_MAX || comm.len() < COMM_MAX || !name.as_bytes().starts_with(comm.as_bytes()) {
        return false;
    }
    // comm was cut: compare the full name of the executable, then of argv[0].
    if exe().is_some_and(|e| file_name_of(&e) == name) {
        return true;
    }
    cmdline().is_some_and(|c| c.split(' ').next().is_some_and(|argv0| file_name_of(argv0) == name))
}

fn read_pid_file(path: &Path) -> Option<u32> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().ok(),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), "cannot read pid file: {e}");
            }
            None
        }
    }
}

/// Reads small `/proc` files into reused buffers (no allocation per file once warm).
struct Reader<'a> {
    root: &'a str,
    path: String,
    buf: Vec<u8>,
}

impl Reader<'_> {
    fn path(&mut self, pid: u32, file: &str) -> &str {
        use std::fmt::Write as _;
        self.path.clear();
        let _ = write!(self.path, "{}/{pid}/{file}", self.root);
        &self.path
    }

    /// The content of `/proc/<pid>/<file>`, `None` when it cannot be read (the process exited).
    fn read(&mut self, pid: u32, file: &str) -> Option<&[u8]> {
        use std::io::Read as _;
        self.path(pid, file);
        self.buf.clear();
        let mut f = std::fs::File::open(&self.path).ok()?;
        f.read_to_end(&mut self.buf).ok()?;
        Some(&self.buf)
    }

    fn read_text(&mut self, pid: u32, file: &str) -> Option<String> {
        self.read(pid, file).map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn comm(&mut self, pid: u32) -> Option<String> {
        let b = self.read(pid, "comm")?;
        let b = b.strip_suffix(b"\n").unwrap_or(b);
        Some(String::from_utf8_lossy(b).into_owned())
    }

    /// The command line with arguments joined by spaces.
    fn cmdline(&mut self, pid: u32) -> Option<String> {
        let raw = self.read(pid, "cmdline")?;
        let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
        Some(String::from_utf8_lossy(trimmed).replace('\0', " "))
    }

    fn exe(&mut self, pid: u32) -> Option<String> {
        self.path(pid, "exe");
        std::fs::read_link(&self.path).ok().map(|p| p.to_string_lossy().into_owned())
    }

    fn count_fds(&mut self, pid: u32) -> Option<u64> {
        self.path(pid, "fd");
        let entries = std::fs::read_dir(&self.path).ok()?;
        Some(entries.filter(Result::is_ok).count() as u64)
    }
}

/// Scans `proc_root` (normally `/proc`) for the processes `matchers` describe: `comm` and
/// `cmdline` of every candidate only as the matchers need them, `stat`, `status` and the
/// descriptor directory of matched processes only.
///
/// # Errors
/// The `/proc` directory or `/proc/uptime` cannot be read.
pub fn scan(proc_root: &Path, matchers: &[Matcher]) -> io::Result<Scan> {
    let taken = Instant::now();
    let uptime_text = std::fs::read_to_string(proc_root.join("uptime"))?;
    let uptime_secs: f64 = uptime_text
        .split_ascii_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/uptime"))?;
    let root =
        proc_root.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the proc root is not UTF-8"))?;
    let mut reader = Reader { root, path: String::with_capacity(64), buf: Vec::with_capacity(4096) };

    // Candidates: the pids of pid files, plus every process when a matcher has no pid file.
    let pinned: Vec<Option<u32>> = matchers.iter().map(|m| m.pid_file.as_deref().and_then(read_pid_file)).collect();
    let mut candidates: Vec<u32> = pinned.iter().flatten().copied().collect();
    if matchers.iter().any(|m| m.pid_file.is_none()) {
        for entry in std::fs::read_dir(proc_root)? {
            let Ok(entry) = entry else { continue };
            if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                candidates.push(pid);
            }
        }
    }
    candidates.sort_unstable();
    candidates.dedup();

    let mut procs = Vec::new();
    for pid in candidates {
        let mut comm: Option<Option<String>> = None;
        let mut cmdline: Option<Option<String>> = None;
        let mut labels = Vec::new();
        for (i, m) in matchers.iter().enumerate() {
            if m.pid_file.is_some() && pinned[i] != Some(pid) {
                continue;
            }
            if let Some(name) = &m.name {
                let Some(c) = comm.get_or_insert_with(|| reader.comm(pid)).clone() else { break };
                let cut = name.len() > COMM_MAX && c.len() >= COMM_MAX;
                let ok = if cut {
                    let line = cmdline.get_or_insert_with(|| reader.cmdline(pid)).clone();
                    name_matches(name, &c, || line, || reader.exe(pid))
                } else {
                    c == *name
                };
                if !ok {
                    continue;
                }
            }
            if let Some(re) = &m.pattern {
                let line = cmdline.get_or_insert_with(|| reader.cmdline(pid));
                if !line.as_deref().is_some_and(|l| !l.is_empty() && re.is_match(l)) {
                    continue;
                }
            }
            labels.push(i);
        }
        if labels.is_empty() {
            continue;
        }
        let Some(stat) = reader.read_text(pid, "stat") else { continue };
        let Some(stat) = parse_stat(&stat) else {
            tracing::debug!(pid, "unexpected /proc/<pid>/stat");
            continue;
        };
        let rss_bytes = reader.read(pid, "status").and_then(|b| parse_status_rss(&String::from_utf8_lossy(b)));
        let open_fds = reader.count_fds(pid);
        procs.push(ProcSample {
            pid,
            start_ticks: stat.start_ticks,
            cpu_ticks: stat.cpu_ticks,
            threads: stat.threads,
            rss_bytes,
            open_fds,
            labels,
        });
    }
    Ok(Scan { uptime_secs, taken, procs })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn stat_with_odd_comm_parses() {
        let text = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 98765 \
                    1000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.comm, "my (odd) proc");
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_rss_parses() {
        assert_eq!(parse_status_rss("Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t1\n"), Some(1234 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }

    #[test]
    fn long_names_match_through_the_executable_or_argv0() {
        let long = "a-very-long-program-name";
        let cut = &long[..COMM_MAX];
        assert!(name_matches("sleep", "sleep", || None, || None));
        assert!(!name_matches("sleep", "sleepy", || None, || None));
        assert!(name_matches(long, cut, || None, || Some(format!("/usr/bin/{long}"))));
        assert!(name_matches(long, cut, || Some(format!("./{long} --x")), || None));
        assert!(!name_matches(long, cut, || Some("./other".into()), || Some("/bin/other".into())));
    }

    #[test]
    fn scans_this_process_by_pid_file_and_pattern() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write");
        let matchers = vec![
            Matcher { label: "self".into(), name: None, pattern: None, pid_file: Some(pid_file) },
            Matcher { label: "none".into(), name: None, pattern: None, pid_file: Some(dir.path().join("missing")) },
        ];
        let scan = scan(Path::new("/proc"), &matchers).expect("scans");
        assert!(scan.uptime_secs > 0.0);
        assert_eq!(scan.procs.len(), 1);
        let me = &scan.procs[0];
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.labels, vec![0]);
        assert!(me.threads >= 1);
        assert!(me.rss_bytes.is_some_and(|r| r > 0));
        assert!(me.open_fds.is_some_and(|n| n >= 3));
    }
}

//! Batch sequence numbers that are never reused, even across restarts.
//!
//! Role: hands out the agent's batch sequence numbers (1, 2, 3, ...). The aggregator drops a
//! batch whose (agent id, sequence) it has already seen, so a number handed out before a crash
//! must never be handed out again. [`SequenceAllocator`] persists a *reservation mark* in
//! `state_dir/sequence`: every number below the mark may have been used. Before handing out a
//! number at or above the mark it writes a new mark one block ([`BLOCK`]) further — to a
//! temporary file, fsynced, then renamed over the old one and the directory fsynced — so at most
//! one block of numbers is skipped by a crash. A clean shutdown ([`SequenceAllocator::release`])
//! stores the exact next number, so a clean restart leaves no gap.
//!
//! Start-up rules: a **missing** file is a fresh start at 1 (first run of this agent); an
//! **unreadable or corrupt** file is an error and the agent refuses to start, because guessing
//! could reuse numbers and make the aggregator drop new data as duplicates (the error says how to
//! recover). Touches only `state_dir/sequence` and `state_dir/sequence.tmp`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many numbers one reservation write covers.
pub const BLOCK: u64 = 1024;

/// Name of the reservation file inside the state directory.
pub const FILE_NAME: &str = "sequence";

/// Why sequence numbers cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    /// The state directory or the reservation file could not be read or written.
    #[error("sequence state {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The reservation file does not hold a positive decimal number.
    #[error(
        "sequence state {path} is corrupt (content {content:?}, expected one positive integer). \
         Refusing to start: guessing could reuse batch numbers the aggregator has already seen. \
         Write a number larger than any sequence this agent has sent into the file, or delete it \
         and give the agent a new agent_id"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its first bytes, for the error message.
        content: String,
    },
    /// All `u64` sequence numbers are used up.
    #[error("sequence numbers exhausted")]
    Exhausted,
}

/// Hands out consecutive sequence numbers backed by a persisted reservation mark.
#[derive(Debug)]
pub struct SequenceAllocator {
    dir: PathBuf,
    path: PathBuf,
    /// The next number to hand out.
    next: u64,
    /// The persisted mark: numbers below it are covered by what is on disk.
    reserved: u64,
    /// Whether the file existed (or has been written) — informational.
    fresh: bool,
}

impl SequenceAllocator {
    /// Opens (creating the directory if needed) the reservation in `state_dir`.
    ///
    /// # Errors
    /// [`SequenceError::Io`] if the directory or file cannot be accessed,
    /// [`SequenceError::Corrupt`] if the file does not hold a positive integer.
    pub fn open(state_dir: &Path) -> Result<SequenceAllocator, SequenceError> {
        fs::create_dir_all(state_dir).map_err(|source| SequenceError::Io { path: state_dir.to_owned(), source })?;
        let path = state_dir.join(FILE_NAME);
        let (mark, fresh) = match fs::read(&path) {
            Ok(bytes) => (parse_mark(&bytes).ok_or_else(|| corrupt(&path, &bytes))?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (1, true),
            Err(source) => return Err(SequenceError::Io { path, source }),
        };
        Ok(SequenceAllocator { dir: state_dir.to_owned(), path, next: mark, reserved: mark, fresh })
    }

    /// Whether no reservation file existed when this allocator was opened.
    pub fn was_fresh(&self) -> bool {
        self.fresh
    }

    /// The number the next call to [`SequenceAllocator::allocate`] would return first.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Reserves `count` consecutive numbers and returns the first. The reservation is on disk
    /// before this returns, so none of them can be handed out again after a restart.
    ///
    /// # Errors
    /// [`SequenceError::Io`] if the new mark cannot be persisted (nothing is handed out then),
    /// [`SequenceError::Exhausted`] on `u64` overflow.
    pub fn allocate(&mut self, count: u64) -> Result<u64, SequenceError> {
        let end = self.next.checked_add(count).ok_or(SequenceError::Exhausted)?;
        if end > self.reserved {
            let mark = end.checked_add(BLOCK).ok_or(SequenceError::Exhausted)?;
            self.persist(mark)?;
            self.reserved = mark;
        }
        let first = self.next;
        self.next = end;
        Ok(first)
    }

    /// Clean shutdown: stores the exact next number, so the next start continues without a gap.
    ///
    /// # Errors
    /// [`SequenceError::Io`] if the file cannot be written (the old, higher mark stays valid).
    pub fn release(&mut self) -> Result<(), SequenceError> {
        if self.next != self.reserved {
            self.persist(self.next)?;
            self.reserved = self.next;
        }
        Ok(())
    }

    fn persist(&mut self, mark: u64) -> Result<(), SequenceError> {
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SequenceError::Io { path, source }
        };
        let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(format!("{mark}\n").as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.fresh = false;
        Ok(())
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn parse_mark(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|&m| m >= 1)
}

fn corrupt(path: &Path, bytes: &[u8]) -> SequenceError {
    let shown = &bytes[..bytes.len().min(40)];
    SequenceError::Corrupt { path: path.to_owned(), content: String::from_utf8_lossy(shown).into_owned() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn stored(dir: &Path) -> u64 {
        parse_mark(&fs::read(dir.join(FILE_NAME)).unwrap()).unwrap()
    }

    #[test]
    fn fresh_start_begins_at_one_and_persists_before_handing_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        assert!(s.was_fresh());
        assert!(!dir.path().join(FILE_NAME).exists(), "nothing written until a number is needed");
        assert_eq!(s.allocate(1).unwrap(), 1);
        assert!(stored(dir.path()) > 1, "the mark covering 1 is on disk once 1 is handed out");
        assert_eq!(s.allocate(3).unwrap(), 2);
        assert_eq!(s.allocate(1).unwrap(), 5);
    }

    #[test]
    fn crash_restart_never_reuses_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut handed_out = Vec::new();
        // Several "crashes" (drop without release), each after a different amount of use,
        // including crossing block boundaries.
        for run in 0..5u64 {
            let mut s = SequenceAllocator::open(dir.path()).unwrap();
            for _ in 0..(run * 700 + 1) {
                let n = s.allocate(1).unwrap();
                assert!(stored(dir.path()) > n, "mark must cover {n} before it is handed out");
                handed_out.push(n);
            }
            let many = s.allocate(BLOCK + 7).unwrap();
            handed_out.extend(many..many + BLOCK + 7);
            assert!(stored(dir.path()) >= many + BLOCK + 7);
        }
        let mut sorted = handed_out.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), handed_out.len(), "a sequence number was reused");
        assert!(handed_out.windows(2).all(|w| w[0] < w[1]), "numbers only increase");
    }

    #[test]
    fn clean_release_continues_without_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        assert_eq!(s.allocate(10).unwrap(), 1);
        s.release().unwrap();
        assert_eq!(stored(dir.path()), 11);
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        assert!(!s.was_fresh());
        assert_eq!(s.allocate(1).unwrap(), 11);
        // A crash after this leaves a gap of at most one block.
        drop(s);
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        let n = s.allocate(1).unwrap();
        assert!(n > 11 && n <= 12 + BLOCK, "{n}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["", "abc", "0\n", "-5", "12 13", "99999999999999999999999"] {
            fs::write(dir.path().join(FILE_NAME), content).unwrap();
            let e = SequenceAllocator::open(dir.path()).unwrap_err();
            assert!(matches!(e, SequenceError::Corrupt { .. }), "{content:?}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("corrupt") && msg.contains(FILE_NAME) && msg.contains("agent_id"), "{msg}");
        }
        fs::write(dir.path().join(FILE_NAME), "4096\n").unwrap();
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        assert_eq!(s.allocate(1).unwrap(), 4096);
    }

    #[test]
    fn unusable_state_dir_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let e = SequenceAllocator::open(&file).unwrap_err();
        assert!(matches!(e, SequenceError::Io { .. }), "{e}");
    }

    #[test]
    fn exhaustion_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), format!("{}\n", u64::MAX - 2)).unwrap();
        let mut s = SequenceAllocator::open(dir.path()).unwrap();
        assert!(matches!(s.allocate(1), Err(SequenceError::Exhausted)));
    }
}

//! Which files are followed, from where: globs, file identity, rotation, truncation, restart.
//!
//! Role: [`collect`] is one collection (blocking: run it on the blocking pool). It expands the
//! globs again, recognises every file by its identity — (device, inode) plus a [`Fingerprint`]
//! of its first bytes — and reads each from its cursor ([`super::reader`]). A file renamed away
//! (or deleted) while open is still read through its descriptor until it has been idle for
//! `rotate_wait`, so a rotation loses no line; a file that shrank under the read position, or
//! whose first bytes changed, was truncated (copytruncate) and is read again from 0, and a new
//! file whose first bytes are those of the truncated one (the copy) continues where the
//! truncated one stopped. After a restart, saved cursors are matched by identity among the
//! glob matches (so a file rotated while the agent was down is finished first) and a file
//! created since the last save is read from its beginning. [`collect`] works on a copy of the
//! state and returns the next one: nothing is committed until the records are enqueued.
//! Touches the matched files (read-only) and their directories (listing).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::config::{Compiled, StartAt};
use super::reader::{self, Cursor, Flush, Output, ReadError};

/// Bytes of a file's beginning that identify it (with its device and inode).
pub(crate) const FP_LEN: usize = 256;

/// A new file is taken for the copy of a truncated one only if this many first bytes agree.
const MIN_COPY_FP: u32 = 64;

/// Most remembered truncated/vanished/closed files whose data may still appear.
const MAX_COPY_SOURCES: usize = 64;

/// How long a closed rotated-away file is remembered (by identity) in case it comes back.
const REMEMBER_CLOSED: Duration = Duration::from_secs(3600);

/// A file's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    fn of(m: &Metadata) -> FileId {
        FileId { dev: m.dev(), ino: m.ino() }
    }
}

/// A hash (FNV-1a 64) of a file's first `len` bytes (`len` ≤ [`FP_LEN`], less while the file
/// is shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    pub hash: u64,
    pub len: u32,
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Fingerprint {
    /// The fingerprint of a file whose first bytes are `head` (at most [`FP_LEN`] of them).
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FP_LEN)];
        Fingerprint { hash: fnv1a(head), len: u32::try_from(head.len()).unwrap_or(0) }
    }

    /// Whether a file starting with `head` has this fingerprint's first bytes.
    pub fn matches(&self, head: &[u8]) -> bool {
        head.get(..self.len as usize).is_some_and(|h| fnv1a(h) == self.hash)
    }
}

/// A followed file (its descriptor is held, so its inode cannot be reused meanwhile).
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub id: FileId,
    pub fp: Fingerprint,
    /// The path it was last seen at.
    pub path: PathBuf,
    pub file: Arc<File>,
    pub cursor: Cursor,
    /// Size and modification time at the last look.
    pub size: u64,
    pub mtime: Option<SystemTime>,
    /// Collection time at which its size or content last changed.
    pub changed_at: SystemTime,
    /// Whether a glob matched it at the last look.
    pub at_path: bool,
    /// Whether it has left the path it was first read at (counted once as a rotation).
    pub moved: bool,
}

/// A saved cursor (one entry of `positions.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedFile {
    pub dev: u64,
    pub ino: u64,
    pub fp_hash: u64,
    pub fp_len: u32,
    /// Where it was last seen (for messages and rotation counting).
    pub path: String,
    pub offset: u64,
    pub skipping: bool,
    pub moved: bool,
}

/// Where the instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No saved state: files found at the first collection start at `start_at`.
    Fresh,
    /// Restarted from saved state written for the collection at `saved_at`.
    Restored { saved_at: SystemTime },
    /// Every file found from now on is new: read from its beginning.
    Running,
}

/// A truncated (or vanished) file whose copy may appear under another name, or a closed file
/// that may come back (`id` set: only that very file matches).
#[derive(Debug, Clone)]
pub(crate) struct CopySource {
    id: Option<FileId>,
    fp: Fingerprint,
    offset: u64,
    until: SystemTime,
}

/// Everything an instance knows about its files.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub files: Vec<Tracked>,
    /// Saved cursors not matched yet (only before the first collection after a restart).
    pub restored: Vec<SavedFile>,
    pub phase: Phase,
    copy_sources: Vec<CopySource>,
}

impl State {
    /// The state of an instance without saved cursors.
    pub fn fresh() -> State {
        State { files: Vec::new(), restored: Vec::new(), phase: Phase::Fresh, copy_sources: Vec::new() }
    }

    /// The state of an instance restarted from `saved` (written for the collection at `saved_at`).
    pub fn restored(saved: Vec<SavedFile>, saved_at: SystemTime) -> State {
        State { files: Vec::new(), restored: saved, phase: Phase::Restored { saved_at }, copy_sources: Vec::new() }
    }

    /// The cursors to save: where each followed file resumes after a restart.
    pub fn saved(&self) -> Vec<SavedFile> {
        let mut out: Vec<SavedFile> = self
            .files
            .iter()
            .map(|t| {
                let (offset, skipping) = t.cursor.resume();
                SavedFile {
                    dev: t.id.dev,
                    ino: t.id.ino,
                    fp_hash: t.fp.hash,
                    fp_len: t.fp.len,
                    path: t.path.to_string_lossy().into_owned(),
                    offset,
                    skipping,
                    moved: t.moved,
                }
            })
            .collect();
        // Saved cursors never matched (the first collection after a restart was not committed)
        // are kept: they still describe unread data.
        out.extend(self.restored.iter().cloned());
        out
    }
}

/// Per-collection totals besides the [`Output`] counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    /// Files followed after the collection.
    pub files: u64,
    /// Bytes not yet read (size minus read position), over the followed files.
    pub lag_bytes: u64,
}

fn read_head(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(size).unwrap_or(FP_LEN).min(FP_LEN);
    let mut head = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Where `start_at = "end"` starts in a file of `size` bytes: after its last newline within
/// the last `max_line` bytes (so no line is read from its middle), or inside an over-long last
/// line (skipped up to its end).
fn tail_start(file: &File, size: u64, max_line: usize) -> io::Result<(u64, bool)> {
    if size == 0 {
        return Ok((0, false));
    }
    let window = u64::try_from(max_line).unwrap_or(u64::MAX).min(size);
    let mut buf = vec![0u8; usize::try_from(window).unwrap_or(0)];
    let from = size - window;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => (from + i as u64 + 1, false),
        None if from == 0 => (0, false),
        None => (size, true),
    })
}

fn excluded(cfg: &Compiled, path: &Path) -> bool {
    cfg.exclude.iter().any(|x| {
        if x.whole_path {
            x.pattern.matches_path(path)
        } else {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| x.pattern.matches(n))
        }
    })
}

/// A matched file not followed yet.
#[derive(Debug)]
struct Unknown {
    path: PathBuf,
    meta: Metadata,
}

fn cancelled(cancel: &AtomicBool) -> Result<(), ReadError> {
    if cancel.load(Ordering::Relaxed) { Err(ReadError::Cancelled) } else { Ok(()) }
}

fn elapsed(at: SystemTime, since: SystemTime) -> Duration {
    at.duration_since(since).unwrap_or(Duration::ZERO)
}

/// Reads one followed file: truncation check, then its bytes. On an error the file keeps its
/// previous state (and the output its previous content).
#[allow(clippy::too_many_arguments)]
fn process(
    cfg: &Compiled,
    out: &mut Output,
    t: &mut Tracked,
    meta: &Metadata,
    at: SystemTime,
    allowance: u64,
    copy_sources: &mut Vec<CopySource>,
    buf: &mut Vec<u8>,
    cancel: &AtomicBool,
) -> Result<(u64, bool), ReadError> {
    let size = meta.len();
    let mtime = meta.modified().ok();
    let changed = size != t.size || mtime != t.mtime;
    let mut truncated = size < t.cursor.offset;
    if changed {
        t.changed_at = at;
        if !truncated {
            let head = read_head(&t.file, size)?;
            if t.fp.matches(&head) {
                if head.len() > t.fp.len as usize {
                    t.fp = Fingerprint::of(&head);
                }
            } else {
                truncated = true;
            }
        }
    }
    if truncated {
        // What was assembled before the truncation is real: emit it, then start over.
        if let Some(p) = t.cursor.pending.take() {
            out.event(cfg, &p.text, p.lines);
        }
        if t.fp.len >= MIN_COPY_FP {
            copy_sources.push(CopySource { id: None, fp: t.fp, offset: t.cursor.offset, until: at + cfg.rotate_wait });
        }
        t.cursor = Cursor::default();
        t.fp = Fingerprint::of(&read_head(&t.file, size)?);
        t.changed_at = at;
        out.truncations += 1;
    }
    t.size = size;
    t.mtime = mtime;
    let idle_for = elapsed(at, t.changed_at);
    let flush = Flush {
        idle: cfg.multiline.as_ref().is_some_and(|m| idle_for >= m.flush_after),
        closing: !t.at_path && idle_for >= cfg.rotate_wait,
    };
    if t.cursor.offset >= size && t.cursor.pending.is_none() && !t.cursor.skipping && !flush.closing {
        return Ok((0, false)); // nothing new
    }
    let before = out.bytes_read;
    let end = reader::read(cfg, out, &t.file, size, &mut t.cursor, allowance, flush, buf, cancel)?;
    let close = flush.closing && end.drained;
    Ok((out.bytes_read - before, close))
}

/// One collection over `prev` at time `at`: the records and counters go to `out`, the next
/// state is returned (to be committed once the records are enqueued).
///
/// # Errors
/// [`ReadError::Cancelled`] when `cancel` was set; per-file problems are counted in `out`.
pub(crate) fn collect(
    cfg: &Compiled,
    prev: &State,
    at: SystemTime,
    out: &mut Output,
    cancel: &AtomicBool,
) -> Result<(State, Totals), ReadError> {
    let mut files: Vec<Tracked> = prev.files.clone();
    let mut copy_sources: Vec<CopySource> = prev.copy_sources.iter().filter(|c| c.until > at).cloned().collect();
    let index: HashMap<FileId, usize> = files.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut restored: HashMap<FileId, &SavedFile> =
        prev.restored.iter().map(|s| (FileId { dev: s.dev, ino: s.ino }, s)).collect();
    let was_at_path: Vec<bool> = files.iter().map(|t| t.at_path).collect();
    for t in &mut files {
        t.at_path = false;
    }
    let mut metas: Vec<Option<Metadata>> = vec![None; files.len()];
    let mut unknown: Vec<Unknown> = Vec::new();
    let mut found_restored: Vec<(Unknown, SavedFile)> = Vec::new();
    let mut seen: std::collections::HashSet<FileId> = std::collections::HashSet::new();
    // A listing error may hide followed files (see step 2).
    let mut listing_ok = true;
    let mut still_restored: Vec<SavedFile> = Vec::new();

    // 1. Expand the globs: which followed files are still at a matched path, which are new.
    for pattern in &cfg.paths {
        let paths = match glob::glob(pattern) {
            Ok(p) => p,
            Err(e) => {
                listing_ok = false;
                out.error(format!("glob {pattern:?}: {e}"));
                continue;
            }
        };
        for entry in paths {
            cancelled(cancel)?;
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    listing_ok = false;
                    out.error(format!("listing for {pattern:?}: {e}"));
                    continue;
                }
            };
            if excluded(cfg, &path) {
                continue;
            }
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // raced with a rename
                Err(e) => {
                    listing_ok = false;
                    out.error(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            let id = FileId::of(&meta);
            if !seen.insert(id) {
                continue; // matched twice (two globs, a symlink)
            }
            if let Some(&i) = index.get(&id) {
                let t = &mut files[i];
                t.at_path = true;
                if t.path != path {
                    if !t.moved {
                        t.moved = true;
                        out.rotations += 1;
                    }
                    t.path = path;
                }
                metas[i] = Some(meta);
            } else if let Some(saved) = restored.remove(&id) {
                found_restored.push((Unknown { path, meta }, saved.clone()));
            } else if files.len() + found_restored.len() + unknown.len() < cfg.max_files {
                unknown.push(Unknown { path, meta });
            } else {
                out.files_skipped += 1;
            }
        }
    }
    // Saved cursors whose file was not found: a copy or a moved file may carry their data on.
    // (After a listing error they are kept for the next collection instead.)
    for saved in restored.values() {
        if !listing_ok {
            still_restored.push((*saved).clone());
            continue;
        }
        if saved.fp_len >= MIN_COPY_FP {
            copy_sources.push(CopySource {
                id: None,
                fp: Fingerprint { hash: saved.fp_hash, len: saved.fp_len },
                offset: saved.offset,
                until: at + cfg.rotate_wait,
            });
        }
        tracing::info!(path = %saved.path, "log file followed before the restart is gone; its unread lines are lost");
    }

    // 2. Followed files that left every matched path were renamed away or deleted — unless a
    //    listing failed and the file still has a name: then it is presumably still there.
    for (i, t) in files.iter_mut().enumerate() {
        if t.at_path {
            continue;
        }
        match t.file.metadata() {
            Ok(m) => {
                if !listing_ok && was_at_path[i] && m.nlink() > 0 {
                    t.at_path = true;
                } else if was_at_path[i] && !t.moved {
                    t.moved = true;
                    out.rotations += 1;
                }
                metas[i] = Some(m);
            }
            Err(e) => out.error(format!("{}: {e}", t.path.display())),
        }
    }

    // 3. Files found again after a restart: verify the fingerprint, adopt the saved cursor.
    let mut adopted: Vec<(Tracked, Metadata)> = Vec::new();
    for (u, saved) in found_restored {
        cancelled(cancel)?;
        let opened = File::open(&u.path).and_then(|f| {
            let m = f.metadata()?;
            let head = read_head(&f, m.len())?;
            Ok((f, m, head))
        });
        let (f, m, head) = match opened {
            Ok(x) => x,
            Err(e) => {
                out.error(format!("{}: {e}", u.path.display()));
                still_restored.push(saved); // tried again at the next collection
                continue;
            }
        };
        let fp = Fingerprint { hash: saved.fp_hash, len: saved.fp_len };
        if FileId::of(&m) != FileId::of(&u.meta) || !fp.matches(&head) {
            // Another file under the saved identity (inode reused): a new file.
            unknown.push(u);
            continue;
        }
        let mut moved = saved.moved;
        if saved.path != u.path.to_string_lossy() && !moved {
            moved = true;
            out.rotations += 1;
        }
        adopted.push((
            Tracked {
                id: FileId::of(&m),
                fp: Fingerprint::of(&head),
                path: u.path,
                file: Arc::new(f),
                cursor: Cursor { offset: saved.offset, skipping: saved.skipping, pending: None },
                size: m.len(),
                // Unknown modification time: the first look checks the fingerprint.
                mtime: None,
                changed_at: at,
                at_path: true,
                moved,
            },
            m,
        ));
    }
    for (t, m) in adopted {
        files.push(t);
        metas.push(Some(m));
    }
    let mut followed: std::collections::HashSet<FileId> = files.iter().map(|t| t.id).collect();

    // 4. Read the followed files: rotated-away ones first and with the whole allowance (their
    //    writers are done soon), then the others in path order sharing what is left.
    let mut order: Vec<usize> = (0..files.len()).filter(|&i| metas[i].is_some()).collect();
    order.sort_by(|&a, &b| files[a].at_path.cmp(&files[b].at_path).then_with(|| files[a].path.cmp(&files[b].path)));
    let mut budget = cfg.max_read_bytes;
    let mut sharing = order.iter().filter(|&&i| files[i].at_path).count() + unknown.len();
    let mut buf = Vec::new();
    let mut close: Vec<usize> = Vec::new();
    for &i in &order {
        cancelled(cancel)?;
        let Some(meta) = metas[i].as_ref() else { continue };
        let allowance = if files[i].at_path {
            let a = budget.div_ceil(sharing.max(1) as u64);
            sharing = sharing.saturating_sub(1);
            a
        } else {
            budget
        };
        let allowance = if out.full(cfg) { 0 } else { allowance };
        let backup = files[i].clone();
        let mark = out.mark();
        let copy_len = copy_sources.len();
        match process(cfg, out, &mut files[i], meta, at, allowance, &mut copy_sources, &mut buf, cancel) {
            Ok((used, closed)) => {
                budget = budget.saturating_sub(used);
                if closed {
                    close.push(i);
                }
            }
            Err(ReadError::Cancelled) => return Err(ReadError::Cancelled),
            Err(ReadError::Io(e)) => {
                out.rollback(mark);
                copy_sources.truncate(copy_len);
                out.error(format!("{}: {e}", files[i].path.display()));
                files[i] = backup;
            }
        }
    }
    // Files that failed their look are kept as they were (metas[i] is None): retried next time.

    // 5. New files: a copy of a truncated file continues its cursor; others start at 0 (or at
    //    `start_at` at the very first collection, or when created before the last save).
    for u in unknown {
        cancelled(cancel)?;
        let opened = File::open(&u.path).and_then(|f| {
            let m = f.metadata()?;
            Ok((f, m))
        });
        let (f, m) = match opened {
            Ok(x) => x,
            Err(e) => {
                out.error(format!("{}: {e}", u.path.display()));
                sharing = sharing.saturating_sub(1);
                continue;
            }
        };
        let id = FileId::of(&m);
        if !followed.insert(id) {
            sharing = sharing.saturating_sub(1);
            continue; // replaced by a followed file between the listing and the open
        }
        let size = m.len();
        let head = match read_head(&f, size) {
            Ok(h) => h,
            Err(e) => {
                out.error(format!("{}: {e}", u.path.display()));
                sharing = sharing.saturating_sub(1);
                continue;
            }
        };
        let copy = copy_sources.iter().position(|c| c.id.is_none_or(|cid| cid == id) && c.fp.matches(&head));
        let start = if let Some(c) = copy {
            let c = copy_sources.remove(c);
            Ok((c.offset.min(size), false))
        } else {
            let from_start_at = match prev.phase {
                Phase::Fresh => true,
                Phase::Restored { saved_at } => u.meta.created().is_ok_and(|created| created <= saved_at),
                Phase::Running => false,
            };
            if from_start_at && cfg.start_at == StartAt::End {
                tail_start(&f, size, cfg.max_line_bytes)
            } else {
                Ok((0, false))
            }
        };
        let (offset, skipping) = match start {
            Ok(s) => s,
            Err(e) => {
                out.error(format!("{}: {e}", u.path.display()));
                sharing = sharing.saturating_sub(1);
                continue;
            }
        };
        let mut t = Tracked {
            id,
            fp: Fingerprint::of(&head),
            path: u.path,
            file: Arc::new(f),
            cursor: Cursor { offset, skipping, pending: None },
            size: m.len(),
            mtime: m.modified().ok(),
            changed_at: at,
            at_path: true,
            moved: false,
        };
        let allowance = budget.div_ceil(sharing.max(1) as u64);
        sharing = sharing.saturating_sub(1);
        let allowance = if out.full(cfg) { 0 } else { allowance };
        let mark = out.mark();
        let mut attempt = t.clone();
        match process(cfg, out, &mut attempt, &m, at, allowance, &mut copy_sources, &mut buf, cancel) {
            Ok((used, _)) => {
                budget = budget.saturating_sub(used);
                t = attempt;
            }
            Err(ReadError::Cancelled) => return Err(ReadError::Cancelled),
            Err(ReadError::Io(e)) => {
                out.rollback(mark);
                out.error(format!("{}: {e}", t.path.display()));
            }
        }
        files.push(t);
    }

    // 6. Close the rotated-away files that are read to their end and idle. Should one come back
    //    under a matched path (renamed back, or hidden by a listing error), it goes on from its end.
    close.sort_unstable();
    for i in close.into_iter().rev() {
        let t = files.remove(i);
        copy_sources.push(CopySource {
            id: Some(t.id),
            fp: t.fp,
            offset: t.cursor.offset,
            until: at + REMEMBER_CLOSED,
        });
    }
    if copy_sources.len() > MAX_COPY_SOURCES {
        let excess = copy_sources.len() - MAX_COPY_SOURCES;
        copy_sources.drain(..excess);
    }
    let lag_bytes = files.iter().map(|t| t.size.saturating_sub(t.cursor.offset)).sum();
    let totals = Totals { files: files.len() as u64, lag_bytes };
    Ok((State { files, restored: still_restored, phase: Phase::Running, copy_sources }, totals))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn fingerprints_match_prefixes() {
        let fp = Fingerprint::of(b"hello");
        assert_eq!(fp.len, 5);
        assert!(fp.matches(b"hello world"));
        assert!(!fp.matches(b"hell"));
        assert!(!fp.matches(b"jello world"));
        let long = vec![7u8; 1000];
        assert_eq!(Fingerprint::of(&long).len as usize, FP_LEN);
    }

    #[test]
    fn tail_start_is_after_the_last_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"one\ntwo\nthr").expect("write");
        let f = File::open(&path).expect("open");
        assert_eq!(tail_start(&f, 11, 1024).expect("reads"), (8, false));
        assert_eq!(tail_start(&f, 8, 1024).expect("reads"), (8, false));
        assert_eq!(tail_start(&f, 11, 2).expect("reads"), (11, true), "inside an over-long line");
        assert_eq!(tail_start(&f, 0, 2).expect("reads"), (0, false));
    }
}

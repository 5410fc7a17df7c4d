//! The saved read positions of one instance: `positions.json` in its state directory.
//!
//! Role: [`load`] reads the file when the instance is built; [`Saver`] writes it on its own
//! thread (off the async workers), atomically — temporary file, fsync, rename, fsync of the
//! directory — always the latest state handed to [`Saver::save`] (older ones still waiting are
//! skipped). Dropping the [`Saver`] writes what is still waiting, then stops the thread.
//! Touches `state_dir/plugins/<name>/positions.json` (and `.tmp` next to it).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::tail::SavedFile;
use crate::metrics::Metrics;

/// The file name in the instance's state directory.
pub(crate) const FILE_NAME: &str = "positions.json";

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PositionsFile {
    version: u32,
    /// Time of the collection these positions are the result of (ns since the Unix epoch).
    saved_at_ns: u64,
    files: Vec<SavedFile>,
}

/// The JSON text of `files`, the result of the collection at `at`.
pub(crate) fn encode(files: &[SavedFile], at: SystemTime) -> Vec<u8> {
    let ns = at.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0);
    let file = PositionsFile { version: VERSION, saved_at_ns: ns, files: files.to_vec() };
    serde_json::to_vec_pretty(&file).unwrap_or_default()
}

/// The saved positions at `path` and the time they were saved for; `None` without a file.
///
/// # Errors
/// A message when the file exists but cannot be read or understood.
pub(crate) fn load(path: &Path) -> Result<Option<(Vec<SavedFile>, SystemTime)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: PositionsFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a positions file: {e}", path.display()))?;
    if file.version != VERSION {
        return Err(format!("{} has version {}, expected {VERSION}", path.display(), file.version));
    }
    Ok(Some((file.files, UNIX_EPOCH + Duration::from_nanos(file.saved_at_ns))))
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Slot {
    next: Option<Vec<u8>>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    wake: Condvar,
    errors: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread of one instance's positions file.
#[derive(Debug)]
pub(crate) struct Saver {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Saver {
    /// Starts the writer of `path` for instance `name`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(path: PathBuf, name: &str, metrics: Arc<Metrics>) -> io::Result<Saver> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            let path = path.clone();
            let name = name.to_owned();
            std::thread::Builder::new().name("meshmon-log-save".into()).spawn(move || {
                loop {
                    let bytes = {
                        let mut slot = shared.lock();
                        while slot.next.is_none() && !slot.closed {
                            slot = shared.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                        }
                        match slot.next.take() {
                            Some(b) => b,
                            None => break, // closed, nothing waiting
                        }
                    };
                    if let Err(e) = write_atomic(&path, &bytes) {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if metrics.log_allowed("log_positions_save") {
                            tracing::warn!(plugin = %name, "cannot save log positions to {}: {e}", path.display());
                        }
                    }
                }
            })?
        };
        Ok(Saver { shared, thread: Some(thread), path })
    }

    /// Saves `bytes` (replacing a save still waiting).
    pub fn save(&self, bytes: Vec<u8>) {
        self.shared.lock().next = Some(bytes);
        self.shared.wake.notify_one();
    }

    /// Failed saves since the previous call.
    pub fn take_errors(&self) -> u64 {
        self.shared.errors.swap(0, Ordering::Relaxed)
    }

    /// The positions file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn saves_atomically_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        assert_eq!(load(&path).expect("no file"), None);
        let files = vec![SavedFile {
            dev: 1,
            ino: u64::MAX,
            fp_hash: u64::MAX - 1,
            fp_len: 256,
            path: "/var/log/a.log".into(),
            offset: 12345,
            skipping: false,
            moved: true,
        }];
        let at = UNIX_EPOCH + Duration::from_nanos(1_767_225_600_123_456_789);
        {
            let saver = Saver::start(path.clone(), "t", Arc::new(Metrics::new())).expect("starts");
            saver.save(encode(&[], at));
            saver.save(encode(&files, at));
        } // dropping waits for the last save
        let (loaded, saved_at) = load(&path).expect("reads").expect("present");
        assert_eq!(loaded, files);
        assert_eq!(saved_at, at);
        assert!(!dir.path().join("positions.json.tmp").exists());
        std::fs::write(&path, b"{").expect("write");
        assert!(load(&path).is_err());
    }
}

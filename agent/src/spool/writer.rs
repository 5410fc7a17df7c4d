//! Appending frames to the spool's active segment.
//!
//! Role: [`SegmentWriter`] creates a segment file (header written and fsynced, then the
//! directory fsynced so the new name survives a power loss), appends frames (`format.rs`) with
//! plain `write`s — once `append` returns, the frame is in the page cache and survives a crash of
//! the process — and fsyncs on request ([`SegmentWriter::sync`], `fdatasync`) and when the
//! segment is sealed ([`SegmentWriter::seal`], `fsync`). The policy of *when* to sync is the
//! spool's (`mod.rs`). If an append fails half way (disk full), the partial frame is cut off
//! again so the file stays a valid segment. Touches one segment file and its directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::format::{MAGIC, SEGMENT_HEADER_LEN, encode_header, frame_len, segment_file_name};

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: File,
    len: u64,
    dirty: bool,
}

/// fsyncs directory `dir` (makes created, renamed or deleted names durable).
///
/// # Errors
/// The I/O error.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` (it must not exist yet), durable before returning.
    ///
    /// # Errors
    /// The I/O error (the file may then exist with a partial header; recovery deletes it).
    pub fn create(dir: &Path, id: u64) -> io::Result<SegmentWriter> {
        let path = dir.join(segment_file_name(id));
        let mut file = OpenOptions::new().append(true).create_new(true).open(&path)?;
        file.write_all(&MAGIC)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(SegmentWriter { id, path, file, len: SEGMENT_HEADER_LEN, dirty: false })
    }

    /// The segment's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len <= SEGMENT_HEADER_LEN
    }

    /// Appends one frame; returns its offset in the file.
    ///
    /// # Errors
    /// The I/O error (nothing of the frame stays in the file then, unless cutting it off failed
    /// too, which recovery handles as a torn tail), or `InvalidInput` for a payload too large
    /// for a frame.
    pub fn append(&mut self, sequence: u64, records: u32, payload: &[u8]) -> io::Result<u64> {
        let header = encode_header(sequence, records, payload)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload too large for a spool frame"))?;
        let offset = self.len;
        let written = self.file.write_all(&header).and_then(|()| self.file.write_all(payload));
        if let Err(e) = written {
            let _ = self.file.set_len(offset);
            return Err(e);
        }
        self.len += frame_len(payload.len());
        self.dirty = true;
        Ok(offset)
    }

    /// Whether frames were appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// fdatasyncs the appended frames (no-op when nothing changed).
    ///
    /// # Errors
    /// The I/O error.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Closes the segment for appending, fsynced.
    ///
    /// # Errors
    /// The I/O error.
    pub fn seal(self) -> io::Result<()> {
        self.file.sync_all()
    }
}

//! The Kafka output's disk spool: batches the broker has not taken yet, kept in order on disk.
//!
//! Role: while the Kafka brokers are unreachable (and while a backlog drains) the Kafka sender
//! (`kafka/producer.rs`) appends batches here instead of holding them in memory, and reads them
//! back **in the order they were appended**. The spool lives in `state_dir/spool/` as
//! append-only **segment** files (`format.rs`: a header, then length-prefixed, CRC32-checksummed
//! frames, each holding one encoded `meshmon.v1.RecordBatch` — exactly the Kafka message value,
//! with the batch's original sequence number, so a re-delivery is recognised by the aggregator's
//! (agent, sequence) deduplication). `writer.rs` appends to the active segment, `reader.rs`
//! reads frames back. A segment file is deleted only once **every** frame in it was acknowledged
//! by the broker ([`Spool::ack`]); a frame read but not acknowledged is read again after
//! [`Spool::rewind`].
//!
//! **Bounds.** All segment files together stay within `spool.max_bytes`; a segment is closed
//! and a new one started when the next frame would take it over `spool.segment_bytes`. When a
//! frame does not fit, `spool.when_full` decides: `oldest` deletes the oldest segment that has
//! no frame on its way to the broker (whole segments: the unit of deletion of an append-only
//! log), `newest` refuses the frame being appended. Every dropped batch is counted
//! (`meshmon_agent_spool_dropped_{batches,records}_total`, `dropped_total{reason="spool_full"}`)
//! and logged at error.
//!
//! **fsync policy.** A new segment is fsynced with its directory when created; a segment is
//! fsynced when it is closed (rolled); the active segment is `fdatasync`ed when a frame is
//! appended and the last sync is `spool.fsync_interval` old, by [`Spool::tick`] (which the sender
//! calls every half interval) once frames wait that long — so within about 1.5 intervals, at
//! once when the interval is 0 — and on shutdown ([`Spool::sync`]). So: a **crash of the
//! process** (panic, SIGKILL, OOM kill) loses nothing that was appended — the frames are in the
//! page cache (a frame being written at that very moment is a torn tail, cut off at the next
//! start; that batch was not spooled yet and was lost with the process's memory). A **power loss
//! or kernel crash**
//! can lose the frames appended during about the last `fsync_interval` (default 1 s) before it.
//! Deleting acknowledged segments is not fsynced: after a power loss one may reappear and be
//! delivered again, which the aggregator deduplicates.
//!
//! **Recovery.** [`Spool::open`] reads every segment and checks every frame. A torn or corrupt
//! tail (incomplete frame, impossible length, CRC mismatch) is cut off (the file truncated
//! there), counted (`meshmon_agent_spool_corrupt_frames_total`, `…_truncated_bytes_total`) and
//! logged; a file that is not a segment is renamed `*.corrupt` and left alone. Never a panic.
//! A file lock (`spool/LOCK`) keeps two agents from sharing one spool.
//!
//! Touches only `state_dir/spool/`.

pub mod format;
pub mod reader;
pub mod writer;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{error, info, warn};

pub use crate::config::{SpoolConfig, WhenFull};
use crate::metrics::{DropReason, Metrics, SpoolGauges};
use format::{SEGMENT_HEADER_LEN, TailProblem, frame_len, parse_segment_file_name, scan, segment_file_name};
use reader::SegmentReader;
use writer::{SegmentWriter, sync_dir};

/// Name of the spool directory inside `state_dir`.
pub const DIR_NAME: &str = "spool";
/// Name of the lock file inside the spool directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or the directory could not be read or written.
    #[error("spool {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Another process holds the spool's lock.
    #[error("spool {path} is in use by another meshmon-agent process: every agent needs its own state_dir")]
    Locked {
        /// The spool directory.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// Where a spooled frame is: what [`Spool::ack`] and [`Spool::rewind`] need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePos {
    /// Segment id.
    pub segment: u64,
    /// Byte offset of the frame in the segment.
    pub offset: u64,
    /// Index of the frame in the segment.
    pub index: u64,
    /// Records in the batch.
    pub records: u32,
}

/// A batch read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledBatch {
    /// Where it is.
    pub pos: FramePos,
    /// Its sequence number.
    pub sequence: u64,
    /// The encoded `RecordBatch` (the Kafka message value).
    pub payload: Bytes,
}

/// What [`Spool::append`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The batch is in the spool.
    Stored,
    /// The spool was full (`when_full = "newest"`, or nothing older could be deleted) or the
    /// batch is larger than the whole spool: it was dropped (counted and logged).
    Dropped,
}

/// What [`Spool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments kept.
    pub segments: u64,
    /// Batches in them (all waiting to be delivered).
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Bytes of the kept segments.
    pub bytes: u64,
    /// Torn or corrupt frames (or files) found and cut off or set aside.
    pub corrupt_frames: u64,
    /// Bytes cut off or set aside with them.
    pub truncated_bytes: u64,
    /// Lowest sequence waiting.
    pub first_sequence: Option<u64>,
    /// Highest sequence waiting.
    pub last_sequence: Option<u64>,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    bytes: u64,
    frames: u64,
    records: u64,
    acked: u64,
    acked_records: u64,
    /// Records in the frames before the read cursor (when it is in or past this segment).
    read_records: u64,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
}

/// The next frame to read: frame `index` at `offset` of segment `segment`, or — when that
/// segment does not exist — the first frame of the first segment with a larger id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    segment: u64,
    offset: u64,
    index: u64,
}

/// The disk spool. See the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    _lock: File,
    segments: VecDeque<Segment>,
    writer: Option<SegmentWriter>,
    reader: Option<SegmentReader>,
    cursor: Cursor,
    next_id: u64,
    total_bytes: u64,
    unacked_batches: u64,
    unacked_records: u64,
    unread: u64,
    last_sync: Instant,
    metrics: Arc<Metrics>,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering what a previous run left.
    ///
    /// # Errors
    /// [`SpoolError::Locked`] if another process uses it, [`SpoolError::Io`] if the directory
    /// cannot be created, listed or locked. Damaged segments are not errors (see [`Recovery`]).
    pub fn open(dir: &Path, config: SpoolConfig, metrics: Arc<Metrics>) -> Result<(Spool, Recovery), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock =
            File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: dir.to_owned() }),
            Err(fs::TryLockError::Error(e)) => return Err(SpoolError::Io { path: lock_path, source: e }),
        }
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut changed_dir = false;
        for &id in &ids {
            let path = dir.join(segment_file_name(id));
            match recover_segment(&path, id, &mut recovery) {
                Ok(Some(seg)) => segments.push_back(seg),
                Ok(None) => changed_dir = true,
                Err(e) => {
                    // Unreadable: leave the file alone and go on without it.
                    error!(segment = %path.display(), "cannot read spool segment, skipping it: {e}");
                }
            }
        }
        if changed_dir && let Err(e) = sync_dir(dir) {
            warn!(dir = %dir.display(), "cannot fsync the spool directory: {e}");
        }
        let next_id = ids.last().map_or(1, |id| id + 1);
        for s in &segments {
            recovery.segments += 1;
            recovery.batches += s.frames;
            recovery.records += s.records;
            recovery.bytes += s.bytes;
            if recovery.first_sequence.is_none() {
                recovery.first_sequence = s.first_sequence;
            }
            recovery.last_sequence = s.last_sequence.or(recovery.last_sequence);
        }
        metrics.spool_corrupt(recovery.corrupt_frames, recovery.truncated_bytes);
        let cursor = Cursor {
            segment: segments.front().map_or(next_id, |s: &Segment| s.id),
            offset: SEGMENT_HEADER_LEN,
            index: 0,
        };
        let spool = Spool {
            dir: dir.to_owned(),
            config,
            _lock: lock,
            segments,
            writer: None,
            reader: None,
            cursor,
            next_id,
            total_bytes: recovery.bytes,
            unacked_batches: recovery.batches,
            unacked_records: recovery.records,
            unread: recovery.batches,
            last_sync: Instant::now(),
            metrics,
        };
        spool.publish();
        Ok((spool, recovery))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Batches appended and not yet read (waiting to be sent).
    pub fn unread(&self) -> u64 {
        self.unread
    }

    /// Batches not yet acknowledged, and their records.
    pub fn unacked(&self) -> (u64, u64) {
        (self.unacked_batches, self.unacked_records)
    }

    /// Whether every spooled batch was acknowledged (or dropped).
    pub fn is_empty(&self) -> bool {
        self.unacked_batches == 0
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    fn publish(&self) {
        self.metrics.spool_gauges(SpoolGauges {
            bytes: self.total_bytes,
            segments: self.segments.len() as u64,
            batches: self.unacked_batches,
            records: self.unacked_records,
        });
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&id, |s| s.id).ok()
    }

    /// Frames of `s` before the read cursor.
    fn read_count(&self, s: &Segment) -> u64 {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match s.id.cmp(&self.cursor.segment) {
            Less => s.frames,
            Equal => self.cursor.index.min(s.frames),
            Greater => 0,
        }
    }

    fn recount_unread(&mut self) {
        self.unread = self.segments.iter().map(|s| s.frames - self.read_count(s)).sum();
    }

    /// Moves the cursor off an exhausted or missing segment onto the next existing one.
    fn normalize_cursor(&mut self) {
        loop {
            let c = self.cursor;
            let next = match self.index_of(c.segment) {
                Some(i) if c.index >= self.segments[i].frames => self.segments.get(i + 1).map(|s| s.id),
                Some(_) => None,
                None => self.segments.iter().find(|s| s.id > c.segment).map(|s| s.id),
            };
            match next {
                Some(id) => self.cursor = Cursor { segment: id, offset: SEGMENT_HEADER_LEN, index: 0 },
                None => return,
            }
        }
    }

    /// Appends a batch (its encoded `RecordBatch`) with its sequence number and record count,
    /// making room per `when_full` if needed.
    ///
    /// # Errors
    /// [`SpoolError::Io`] if the segment cannot be created or written (the batch is not in the
    /// spool then; the caller counts it as dropped).
    pub fn append(&mut self, sequence: u64, records: usize, payload: &[u8]) -> Result<Appended, SpoolError> {
        let records32 = u32::try_from(records).unwrap_or(u32::MAX);
        let need = frame_len(payload.len());
        if need + SEGMENT_HEADER_LEN > self.config.max_bytes {
            self.drop_incoming(sequence, records, "it is larger than the whole spool (spool.max_bytes)");
            return Ok(Appended::Dropped);
        }
        loop {
            let new_segment =
                self.writer.as_ref().is_none_or(|w| !w.is_empty() && w.len() + need > self.config.segment_bytes);
            let extra = if new_segment { SEGMENT_HEADER_LEN } else { 0 };
            if self.total_bytes + need + extra <= self.config.max_bytes {
                break;
            }
            match self.config.when_full {
                WhenFull::Newest => {
                    self.drop_incoming(sequence, records, "the newest (spool.when_full = \"newest\")");
                    return Ok(Appended::Dropped);
                }
                WhenFull::Oldest => {
                    if !self.drop_oldest_segment() {
                        self.drop_incoming(
                            sequence,
                            records,
                            "the newest: every older segment holds batches being sent right now",
                        );
                        return Ok(Appended::Dropped);
                    }
                }
            }
        }
        if self.writer.as_ref().is_some_and(|w| !w.is_empty() && w.len() + need > self.config.segment_bytes) {
            self.seal_writer();
        }
        if self.writer.is_none() {
            self.open_writer()?;
        }
        let Some(w) = self.writer.as_mut() else { return Ok(Appended::Dropped) };
        let path = w.path().to_owned();
        w.append(sequence, records32, payload).map_err(io_err(&path))?;
        if let Some(seg) = self.segments.back_mut() {
            seg.bytes += need;
            seg.frames += 1;
            seg.records += u64::from(records32);
            seg.first_sequence.get_or_insert(sequence);
            seg.last_sequence = Some(sequence);
        }
        self.total_bytes += need;
        self.unacked_batches += 1;
        self.unacked_records += u64::from(records32);
        self.unread += 1;
        self.metrics.spooled(records);
        if self.config.fsync_interval.is_zero() || self.last_sync.elapsed() >= self.config.fsync_interval {
            self.sync_writer();
        }
        self.publish();
        Ok(Appended::Stored)
    }

    fn open_writer(&mut self) -> Result<(), SpoolError> {
        let id = self.next_id;
        self.next_id += 1;
        let w = SegmentWriter::create(&self.dir, id)
            .map_err(|source| SpoolError::Io { path: self.dir.join(segment_file_name(id)), source })?;
        self.total_bytes += w.len();
        self.segments.push_back(Segment {
            id,
            path: w.path().to_owned(),
            bytes: w.len(),
            frames: 0,
            records: 0,
            acked: 0,
            acked_records: 0,
            read_records: 0,
            first_sequence: None,
            last_sequence: None,
        });
        self.writer = Some(w);
        self.normalize_cursor();
        Ok(())
    }

    /// Closes the active segment (fsynced); the next append starts a new one.
    fn seal_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            let path = w.path().to_owned();
            if let Err(e) = w.seal() {
                error!(segment = %path.display(), "cannot fsync spool segment on close: {e}");
            }
        }
    }

    fn sync_writer(&mut self) {
        self.last_sync = Instant::now();
        if let Some(w) = self.writer.as_mut()
            && let Err(e) = w.sync()
        {
            error!(segment = %w.path().display(), "cannot fsync spool segment: {e}");
        }
    }

    /// Periodic duty: fsyncs the active segment if frames were appended and `fsync_interval`
    /// has passed since the last sync. Call at least every `fsync_interval`.
    pub fn tick(&mut self) {
        if self.writer.as_ref().is_some_and(SegmentWriter::is_dirty)
            && self.last_sync.elapsed() >= self.config.fsync_interval
        {
            self.sync_writer();
        }
    }

    /// fsyncs everything appended (shutdown).
    pub fn sync(&mut self) {
        self.sync_writer();
    }

    fn drop_incoming(&self, sequence: u64, records: usize, why: &str) {
        self.metrics.spool_dropped(
            1,
            records,
            &format!(
                "spool full ({} of {} bytes in {}): dropped batch {sequence} ({records} records), {why}",
                self.total_bytes,
                self.config.max_bytes,
                self.dir.display()
            ),
        );
    }

    /// Deletes the oldest segment without frames on their way to the broker; `false` if none.
    fn drop_oldest_segment(&mut self) -> bool {
        let Some(i) = self.segments.iter().position(|s| s.frames > s.acked && self.read_count(s) == s.acked) else {
            return false;
        };
        let batches = self.segments[i].frames - self.segments[i].acked;
        let records = self.segments[i].records - self.segments[i].acked_records;
        let (first, last) = (self.segments[i].first_sequence, self.segments[i].last_sequence);
        let name = self.segments[i].path.display().to_string();
        self.remove_segment(i);
        self.metrics.spool_dropped(
            usize::try_from(batches).unwrap_or(usize::MAX),
            usize::try_from(records).unwrap_or(usize::MAX),
            &format!(
                "spool full (spool.max_bytes = {}, spool.when_full = \"oldest\"): deleted segment {name} with \
                 {batches} undelivered batches ({records} records, sequences {}..={})",
                self.config.max_bytes,
                first.unwrap_or(0),
                last.unwrap_or(0)
            ),
        );
        true
    }

    /// Forgets segment `i` and deletes its file (its unacknowledged frames are gone).
    fn remove_segment(&mut self, i: usize) {
        let read = self.segments.get(i).map_or(0, |s| self.read_count(s));
        let Some(seg) = self.segments.remove(i) else { return };
        if self.writer.as_ref().is_some_and(|w| w.id() == seg.id) {
            self.writer = None;
        }
        if self.reader.as_ref().is_some_and(|r| r.id() == seg.id) {
            self.reader = None;
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            warn!(
                segment = %seg.path.display(),
                "cannot delete spool segment (its batches may be sent again after a restart): {e}"
            );
        }
        self.total_bytes -= seg.bytes.min(self.total_bytes);
        self.unacked_batches -= (seg.frames - seg.acked).min(self.unacked_batches);
        self.unacked_records -= (seg.records - seg.acked_records).min(self.unacked_records);
        self.unread -= (seg.frames - read).min(self.unread);
        if self.cursor.segment == seg.id {
            let next = self.segments.iter().find(|s| s.id > seg.id).map_or(self.next_id, |s| s.id);
            self.cursor = Cursor { segment: next, offset: SEGMENT_HEADER_LEN, index: 0 };
        }
        self.publish();
    }

    /// The next batch not read yet, in append order; `None` when everything was read.
    ///
    /// A frame found damaged now (the disk changed it since it was written or recovered), or a
    /// segment that cannot be read, ends its segment: the rest of it is counted as dropped
    /// (`reason="spool_error"`), logged at error, and reading goes on with the next segment.
    pub fn next_unread(&mut self) -> Option<SpooledBatch> {
        loop {
            self.normalize_cursor();
            let i = self.index_of(self.cursor.segment)?;
            let (id, frames) = (self.segments[i].id, self.segments[i].frames);
            if self.cursor.index >= frames {
                return None;
            }
            let offset = self.cursor.offset;
            let read = match self.reader.as_mut() {
                Some(r) if r.id() == id => r.seek(offset),
                _ => SegmentReader::open(&self.segments[i].path, id, offset).map(|r| {
                    self.reader = Some(r);
                }),
            };
            let frame = read.map_err(reader::ReadError::Io).and_then(|()| match self.reader.as_mut() {
                Some(r) => r.read_frame(),
                None => Err(reader::ReadError::Io(io::Error::other("no reader"))),
            });
            match frame {
                Ok(frame) => {
                    let pos = FramePos {
                        segment: id,
                        offset: frame.offset,
                        index: self.cursor.index,
                        records: frame.records,
                    };
                    self.cursor.index += 1;
                    self.cursor.offset = frame.offset + frame_len(frame.payload.len());
                    self.segments[i].read_records += u64::from(frame.records);
                    self.unread = self.unread.saturating_sub(1);
                    return Some(SpooledBatch { pos, sequence: frame.sequence, payload: Bytes::from(frame.payload) });
                }
                Err(e) => self.abandon_rest(i, &e),
            }
        }
    }

    /// Segment `i` cannot be read past the cursor: forget the rest of it (counted, logged).
    fn abandon_rest(&mut self, i: usize, why: &reader::ReadError) {
        let c = self.cursor;
        let seg = &mut self.segments[i];
        let lost = seg.frames - c.index;
        let lost_records = seg.records.saturating_sub(seg.read_records);
        let lost_bytes = seg.bytes.saturating_sub(c.offset);
        seg.frames = c.index;
        seg.records = seg.read_records;
        let (id, path) = (seg.id, seg.path.display().to_string());
        self.unacked_batches -= lost.min(self.unacked_batches);
        self.unacked_records -= lost_records.min(self.unacked_records);
        self.unread -= lost.min(self.unread);
        if self.writer.as_ref().is_some_and(|w| w.id() == id) {
            self.seal_writer();
        }
        self.reader = None;
        self.metrics.spool_corrupt(1, lost_bytes);
        self.metrics.drop_records(
            DropReason::SpoolError,
            usize::try_from(lost_records).unwrap_or(usize::MAX),
            &format!(
                "spool segment {path} became unreadable at offset {}: {why}; its last {lost} batches are lost",
                c.offset
            ),
        );
        // Move on: the segment now ends at the cursor.
        let next = self.segments.iter().find(|s| s.id > id).map_or(self.next_id, |s| s.id);
        self.cursor = Cursor { segment: next, offset: SEGMENT_HEADER_LEN, index: 0 };
        self.delete_if_done(id);
        self.publish();
    }

    /// The broker acknowledged the frame at `pos` (or refused it for good): it is settled. A
    /// segment whose frames are all settled is deleted.
    pub fn ack(&mut self, pos: FramePos) {
        let Some(i) = self.index_of(pos.segment) else { return };
        let seg = &mut self.segments[i];
        if seg.acked >= seg.frames {
            return;
        }
        seg.acked += 1;
        seg.acked_records += u64::from(pos.records);
        self.unacked_batches = self.unacked_batches.saturating_sub(1);
        self.unacked_records = self.unacked_records.saturating_sub(u64::from(pos.records));
        self.delete_if_done(pos.segment);
        self.publish();
    }

    fn delete_if_done(&mut self, id: u64) {
        let Some(i) = self.index_of(id) else { return };
        let s = &self.segments[i];
        if s.acked >= s.frames && self.read_count(s) >= s.frames {
            self.remove_segment(i);
        }
    }

    /// The frames at `positions` (read, not acknowledged: the broker did not take them) are to
    /// be read again, starting with the first. `positions` must be every frame read and not
    /// acknowledged, in read order.
    pub fn rewind(&mut self, positions: &[FramePos]) {
        let Some(first) = positions.first() else { return };
        for p in positions {
            if let Some(i) = self.index_of(p.segment) {
                let s = &mut self.segments[i];
                s.read_records = s.read_records.saturating_sub(u64::from(p.records));
            }
        }
        if self.index_of(first.segment).is_some() {
            self.cursor = Cursor { segment: first.segment, offset: first.offset, index: first.index };
        }
        self.recount_unread();
    }
}

/// Checks one segment file at start-up: keeps it (cut after its last valid frame), or removes
/// it when it holds no valid frame, or sets it aside when it is not a segment at all.
fn recover_segment(path: &Path, id: u64, r: &mut Recovery) -> io::Result<Option<Segment>> {
    let len = fs::metadata(path)?.len();
    let found = scan(BufReader::new(File::open(path)?))?;
    let name = path.display().to_string();
    match &found.problem {
        None => {}
        Some(TailProblem::ShortHeader) => {
            warn!(segment = %name, bytes = len, "removing a spool segment cut short while it was created");
            r.corrupt_frames += u64::from(len > 0);
            r.truncated_bytes += len;
            fs::remove_file(path)?;
            return Ok(None);
        }
        Some(TailProblem::BadMagic) => {
            let aside = path.with_extension("seg.corrupt");
            error!(
                segment = %name,
                moved_to = %aside.display(),
                "a file in the spool directory is not a spool segment; moving it aside untouched"
            );
            r.corrupt_frames += 1;
            r.truncated_bytes += len;
            fs::rename(path, &aside)?;
            return Ok(None);
        }
        Some(problem) => {
            let cut = len - found.valid_len.min(len);
            let message = "spool segment ends in a damaged frame; cutting it off (a frame being written when the \
                           agent or the machine stopped, or disk damage)";
            if matches!(problem, TailProblem::Torn) {
                warn!(
                    segment = %name, offset = found.valid_len, cut_bytes = cut, %problem, kept = found.frames,
                    "{message}"
                );
            } else {
                error!(
                    segment = %name, offset = found.valid_len, cut_bytes = cut, %problem, kept = found.frames,
                    "{message}"
                );
            }
            r.corrupt_frames += 1;
            r.truncated_bytes += cut;
            let f = File::options().write(true).open(path)?;
            f.set_len(found.valid_len)?;
            f.sync_all()?;
        }
    }
    if found.frames == 0 {
        fs::remove_file(path)?;
        return Ok(None);
    }
    info!(segment = %name, batches = found.frames, records = found.records, "spool segment recovered");
    Ok(Some(Segment {
        id,
        path: path.to_owned(),
        bytes: found.valid_len,
        frames: found.frames,
        records: found.records,
        acked: 0,
        acked_records: 0,
        read_records: 0,
        first_sequence: found.first_sequence,
        last_sequence: found.last_sequence,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;
    use std::time::Duration;

    use super::*;

    /// Frames of 20 + 100 bytes; segments of at most 3 such frames.
    const PAYLOAD: usize = 100;
    const SEGMENT: u64 = SEGMENT_HEADER_LEN + 3 * (20 + PAYLOAD as u64);

    fn config(max_segments: u64, when_full: WhenFull) -> SpoolConfig {
        SpoolConfig {
            max_bytes: max_segments * SEGMENT,
            segment_bytes: SEGMENT,
            when_full,
            fsync_interval: Duration::ZERO,
        }
    }

    fn payload(seq: u64) -> Vec<u8> {
        let mut p = format!("batch-{seq}-").into_bytes();
        p.resize(PAYLOAD, b'.');
        p
    }

    fn open(dir: &Path, c: SpoolConfig) -> (Spool, Recovery, Arc<Metrics>) {
        let m = Arc::new(Metrics::new());
        let (s, r) = Spool::open(dir, c, m.clone()).unwrap();
        (s, r, m)
    }

    fn append(s: &mut Spool, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            assert_eq!(s.append(seq, 10, &payload(seq)).unwrap(), Appended::Stored, "seq {seq}");
        }
    }

    fn read_all(s: &mut Spool) -> Vec<SpooledBatch> {
        std::iter::from_fn(|| s.next_unread()).collect()
    }

    fn seqs(b: &[SpooledBatch]) -> Vec<u64> {
        b.iter().map(|b| b.sequence).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reads_in_append_order_across_segments_and_deletes_only_acked_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r, m) = open(dir.path(), config(10, WhenFull::Oldest));
        assert_eq!(r, Recovery::default());
        append(&mut s, 1..=7);
        assert_eq!((s.unread(), s.unacked(), s.segments()), (7, (7, 70), 3));
        assert_eq!(segment_files(dir.path()).len(), 3);
        let got = read_all(&mut s);
        assert_eq!(seqs(&got), (1..=7).collect::<Vec<_>>());
        assert_eq!(got[3].payload, payload(4));
        assert_eq!(s.unread(), 0);
        // Acking the first two frames of segment 1 keeps it; the third deletes it.
        s.ack(got[0].pos);
        s.ack(got[1].pos);
        assert_eq!(segment_files(dir.path()).len(), 3);
        s.ack(got[2].pos);
        assert_eq!(segment_files(dir.path()).len(), 2);
        for b in &got[3..] {
            s.ack(b.pos);
        }
        assert!(s.is_empty());
        assert_eq!((s.segments(), s.bytes()), (0, 0), "even the active segment goes once all is acked");
        assert!(segment_files(dir.path()).is_empty());
        // New appends after that start a new segment and are read.
        append(&mut s, 8..=8);
        assert_eq!(seqs(&read_all(&mut s)), [8]);
        let snap = m.snapshot();
        assert_eq!((snap.spooled_batches, snap.spool_batches, snap.spool_segments), (8, 1, 1));
    }

    #[test]
    fn rewind_reads_unacknowledged_frames_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = open(dir.path(), config(10, WhenFull::Oldest));
        append(&mut s, 1..=5);
        let got = read_all(&mut s);
        s.ack(got[0].pos);
        s.ack(got[1].pos);
        let unacked: Vec<FramePos> = got[2..].iter().map(|b| b.pos).collect();
        s.rewind(&unacked);
        assert_eq!(s.unread(), 3);
        append(&mut s, 6..=6);
        let again = read_all(&mut s);
        assert_eq!(seqs(&again), [3, 4, 5, 6]);
        assert_eq!(again[0].pos, got[2].pos);
        for b in &again {
            s.ack(b.pos);
        }
        assert!(s.is_empty());
        assert!(segment_files(dir.path()).is_empty());
    }

    #[test]
    fn reopen_recovers_unacked_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _, _) = open(dir.path(), config(10, WhenFull::Oldest));
            append(&mut s, 1..=7);
            let got = read_all(&mut s);
            for b in &got[..3] {
                s.ack(b.pos); // segment 1 deleted
            }
            s.ack(got[3].pos); // segment 2 partly acked: stays, frame 4 is delivered again
        }
        let (mut s, r, m) = open(dir.path(), config(10, WhenFull::Oldest));
        assert_eq!((r.segments, r.batches, r.records, r.corrupt_frames), (2, 4, 40, 0));
        assert_eq!((r.first_sequence, r.last_sequence), (Some(4), Some(7)));
        assert_eq!(m.snapshot().spool_batches, 4);
        append(&mut s, 8..=8);
        assert_eq!(seqs(&read_all(&mut s)), [4, 5, 6, 7, 8], "old segments first, new appends after");
    }

    #[test]
    fn second_open_of_the_same_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _, _) = open(dir.path(), config(10, WhenFull::Oldest));
        let e = Spool::open(dir.path(), config(10, WhenFull::Oldest), Arc::new(Metrics::new())).unwrap_err();
        assert!(matches!(e, SpoolError::Locked { .. }), "{e}");
    }

    /// Writes frames 1..=3 into one segment and returns its path (spool closed).
    fn one_segment(dir: &Path) -> PathBuf {
        let (mut s, _, _) = open(dir, config(10, WhenFull::Oldest));
        append(&mut s, 1..=3);
        drop(s);
        let files = segment_files(dir);
        assert_eq!(files.len(), 1);
        files[0].clone()
    }

    #[test]
    fn torn_tail_is_cut_off_counted_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = one_segment(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        // A crash in the middle of writing frame 3.
        File::options().write(true).open(&path).unwrap().set_len(len - 30).unwrap();
        let (mut s, r, m) = open(dir.path(), config(10, WhenFull::Oldest));
        assert_eq!((r.batches, r.corrupt_frames, r.truncated_bytes), (2, 1, 20 + PAYLOAD as u64 - 30));
        assert_eq!(fs::metadata(&path).unwrap().len(), len - (20 + PAYLOAD as u64), "file cut at the last good frame");
        let snap = m.snapshot();
        assert_eq!((snap.spool_corrupt_frames, snap.spool_truncated_bytes), (1, r.truncated_bytes));
        append(&mut s, 4..=4);
        assert_eq!(seqs(&read_all(&mut s)), [1, 2, 4]);
    }

    #[test]
    fn corrupt_frames_garbage_and_foreign_files_are_handled_without_panic() {
        // A flipped bit in the last frame's payload: CRC mismatch, frame cut off.
        let dir = tempfile::tempdir().unwrap();
        let path = one_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let (mut s, r, _) = open(dir.path(), config(10, WhenFull::Oldest));
        assert_eq!((r.batches, r.corrupt_frames), (2, 1));
        assert_eq!(seqs(&read_all(&mut s)), [1, 2]);
        drop(s);

        // Garbage after the last frame (e.g. a length that points nowhere), a segment cut short at
        // creation, a file that is no segment, and an unrelated file.
        let dir = tempfile::tempdir().unwrap();
        let path = one_segment(dir.path());
        File::options().append(true).open(&path).unwrap().write_all(&[0xff; 13]).unwrap();
        fs::write(dir.path().join(segment_file_name(7)), b"MMSP").unwrap();
        fs::write(dir.path().join(segment_file_name(8)), b"this is not a spool segment at all").unwrap();
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        let (mut s, r, _) = open(dir.path(), config(10, WhenFull::Oldest));
        assert_eq!((r.segments, r.batches, r.corrupt_frames), (1, 3, 3));
        assert!(!dir.path().join(segment_file_name(7)).exists(), "short segment removed");
        assert!(dir.path().join(format!("{}.corrupt", segment_file_name(8))).exists(), "foreign file set aside");
        assert!(dir.path().join("notes.txt").exists());
        append(&mut s, 4..=4);
        assert_eq!(seqs(&read_all(&mut s)), [1, 2, 3, 4]);
        assert!(segment_files(dir.path()).last().unwrap().ends_with(segment_file_name(9)), "ids are never reused");
    }

    #[test]
    fn damage_found_while_reading_drops_the_rest_of_the_segment_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, m) = open(dir.path(), config(10, WhenFull::Oldest));
        append(&mut s, 1..=4); // segment 1: 1..=3, segment 2: 4
        let first = segment_files(dir.path())[0].clone();
        let mut bytes = fs::read(&first).unwrap();
        let second_frame = (SEGMENT_HEADER_LEN + 20 + PAYLOAD as u64) as usize;
        bytes[second_frame + 25] ^= 0x80;
        fs::write(&first, &bytes).unwrap();
        let got = read_all(&mut s);
        assert_eq!(seqs(&got), [1, 4]);
        let snap = m.snapshot();
        assert_eq!((snap.dropped_spool_error, snap.spool_corrupt_frames, snap.spool_batches), (20, 1, 2));
        for b in &got {
            s.ack(b.pos);
        }
        assert!(s.is_empty());
        assert!(segment_files(dir.path()).is_empty());
    }

    #[test]
    fn full_spool_drops_whole_oldest_segments_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, m) = open(dir.path(), config(3, WhenFull::Oldest));
        append(&mut s, 1..=9); // exactly full: 3 segments
        assert_eq!(s.bytes(), 3 * SEGMENT);
        append(&mut s, 10..=10); // deletes segment 1 (batches 1..=3)
        let snap = m.snapshot();
        assert_eq!((snap.spool_dropped_batches, snap.spool_dropped_records, snap.dropped_spool_full), (3, 30, 30));
        assert!(s.bytes() <= 3 * SEGMENT);
        // A segment with a batch on its way to the broker is not deleted: the next oldest is.
        let b4 = s.next_unread().unwrap();
        assert_eq!(b4.sequence, 4);
        append(&mut s, 11..=13); // needs a new segment: deletes segment 3 (7..=9), not 2
        assert_eq!(m.snapshot().spool_dropped_batches, 6);
        let rest = read_all(&mut s);
        assert_eq!(seqs(&rest), [5, 6, 10, 11, 12, 13]);
    }

    #[test]
    fn full_spool_refuses_the_newest_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, m) = open(dir.path(), config(3, WhenFull::Newest));
        append(&mut s, 1..=9);
        assert_eq!(s.append(10, 10, &payload(10)).unwrap(), Appended::Dropped);
        assert_eq!(s.append(11, 10, &payload(11)).unwrap(), Appended::Dropped);
        let snap = m.snapshot();
        assert_eq!((snap.spool_dropped_batches, snap.spool_dropped_records, snap.spooled_batches), (2, 20, 9));
        assert_eq!(seqs(&read_all(&mut s)), (1..=9).collect::<Vec<_>>());
        // A batch larger than the whole spool is refused whatever the policy.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = open(dir.path(), config(3, WhenFull::Oldest));
        assert_eq!(s.append(1, 1, &vec![0; 4 * SEGMENT as usize]).unwrap(), Appended::Dropped);
    }
}

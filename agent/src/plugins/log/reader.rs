//! Reading one file from a position: lines, over-long lines, multi-line events, rule matches.
//!
//! Role: [`read`] reads a [`Cursor`] forward by at most an allowance of bytes with positioned
//! reads (the descriptor's own offset is never used, so a snapshot of the state can be read
//! while the committed one stays untouched), splits lines at `\n` (a trailing `\r` is dropped),
//! cuts lines longer than `max_line_bytes` (the rest of such a line is skipped, also across
//! collections), groups lines into events in multi-line mode and hands every complete event to
//! [`Output::event`], which counts the rules and makes the `log.match` records. A last line
//! without newline stays unread (the cursor stays at its start) until it is completed, or until
//! it is flushed (multi-line `flush_after`, or a rotated-away file being closed). Touches only
//! the file it is given (reads).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use meshmon_proto::Timestamp;
use meshmon_proto::v1::Record;

use super::config::Compiled;
use crate::record::double_record;

/// Bytes read per positioned read.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Bytes per positioned read while finishing the line the allowance ended in.
const FINISH_CHUNK: usize = 1024;

/// Most error messages kept per collection (they are logged, rate-limited).
const MAX_ERRORS: usize = 8;

/// Why reading stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The collection was abandoned (timeout or shutdown).
    #[error("collection abandoned")]
    Cancelled,
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A multi-line event being assembled (complete lines only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingEvent {
    /// File offset of its first line (where reading resumes after a restart).
    pub start: u64,
    /// The kept lines, joined by `\n`.
    pub text: String,
    /// Lines read into it (kept or left out).
    pub lines: u64,
    /// Lines kept in `text`.
    pub kept: usize,
}

/// Where reading of one file stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cursor {
    /// The next byte to read; every byte before it is consumed (in an emitted event, in
    /// `pending`, or skipped as the rest of an over-long line).
    pub offset: u64,
    /// Inside an over-long line whose head was emitted: bytes are skipped up to the next `\n`.
    pub skipping: bool,
    /// The multi-line event being assembled.
    pub pending: Option<PendingEvent>,
}

impl Cursor {
    /// Where reading resumes after a restart (the pending event is read again: it was never
    /// emitted), and whether it resumes inside an over-long line.
    pub fn resume(&self) -> (u64, bool) {
        match &self.pending {
            Some(p) => (p.start, false),
            None => (self.offset, self.skipping),
        }
    }
}

/// What one collection produced, over all files.
#[derive(Debug)]
pub(crate) struct Output {
    /// Event time of every record of the collection.
    pub ts: Timestamp,
    /// Instance name (tag `plugin`).
    pub plugin: String,
    /// The `log.match` records.
    pub records: Vec<Record>,
    /// Matches per rule (index of `Compiled::rules`).
    pub rule_matches: Vec<u64>,
    /// Lines in the events completed.
    pub lines: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Lines cut at `max_line_bytes` or left out of a multi-line event.
    pub lines_truncated: u64,
    /// Files that left the path they were first read at.
    pub rotations: u64,
    /// Files that shrank under the read position or were rewritten.
    pub truncations: u64,
    /// Files that could not be opened, examined or read.
    pub file_errors: u64,
    /// Matched files not followed because `max_files` were followed already.
    pub files_skipped: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
}

/// A point to roll an [`Output`] back to when a file fails half-way.
#[derive(Debug)]
pub(crate) struct Mark {
    records: usize,
    rule_matches: Vec<u64>,
    lines: u64,
    lines_truncated: u64,
}

impl Output {
    /// An empty output for `rules` rules.
    pub fn new(plugin: &str, ts: Timestamp, rules: usize) -> Output {
        Output {
            ts,
            plugin: plugin.to_owned(),
            records: Vec::new(),
            rule_matches: vec![0; rules],
            lines: 0,
            bytes_read: 0,
            lines_truncated: 0,
            rotations: 0,
            truncations: 0,
            file_errors: 0,
            files_skipped: 0,
            errors: Vec::new(),
        }
    }

    /// Counts a file error, keeping its message if there is room.
    pub fn error(&mut self, message: String) {
        self.file_errors += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        }
    }

    /// Whether the `log.match` records reached the cap (reading stops).
    pub fn full(&self, cfg: &Compiled) -> bool {
        self.records.len() >= cfg.max_match_records
    }

    pub fn mark(&self) -> Mark {
        Mark {
            records: self.records.len(),
            rule_matches: self.rule_matches.clone(),
            lines: self.lines,
            lines_truncated: self.lines_truncated,
        }
    }

    pub fn rollback(&mut self, m: Mark) {
        self.records.truncate(m.records);
        self.rule_matches = m.rule_matches;
        self.lines = m.lines;
        self.lines_truncated = m.lines_truncated;
    }

    /// One complete event of `lines` lines: counts the rules it matches and keeps it.
    pub fn event(&mut self, cfg: &Compiled, text: &str, lines: u64) {
        self.lines += lines;
        for (i, rule) in cfg.rules.iter().enumerate() {
            if rule.regex.is_match(text) {
                if let Some(n) = self.rule_matches.get_mut(i) {
                    *n += 1;
                }
                if rule.keep_line {
                    let mut r = double_record("log.match", 1.0, self.ts);
                    r.tags.insert("plugin".to_owned(), self.plugin.clone());
                    r.tags.insert("rule".to_owned(), rule.name.clone());
                    r.raw = Some(text.as_bytes().to_vec());
                    self.records.push(r);
                }
            }
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate_str(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// One line read at file offset `start`: an event (single-line mode) or part of one.
/// Returns the offset to resume from when the match-record cap stops reading before it.
fn on_line(
    cfg: &Compiled,
    out: &mut Output,
    pending: &mut Option<PendingEvent>,
    line: &[u8],
    start: u64,
    cut: bool,
) -> Option<u64> {
    let line = if cut { line } else { line.strip_suffix(b"\r").unwrap_or(line) };
    let text = String::from_utf8_lossy(line);
    let Some(ml) = &cfg.multiline else {
        if out.full(cfg) {
            return Some(start);
        }
        if cut {
            out.lines_truncated += 1;
        }
        out.event(cfg, &text, 1);
        return None;
    };
    let starts = match pending {
        None => true,
        Some(_) => ml.start.is_match(&text),
    };
    if starts {
        if let Some(p) = pending.take() {
            if out.full(cfg) {
                // Neither the complete event nor this line is consumed: both are read again.
                return Some(p.start);
            }
            out.event(cfg, &p.text, p.lines);
        }
        if cut {
            out.lines_truncated += 1;
        }
        let mut text = text.into_owned();
        truncate_str(&mut text, ml.max_bytes);
        *pending = Some(PendingEvent { start, text, lines: 1, kept: 1 });
    } else if let Some(p) = pending.as_mut() {
        p.lines += 1;
        if p.kept < ml.max_lines && p.text.len() + 1 + text.len() <= ml.max_bytes {
            p.text.push('\n');
            p.text.push_str(&text);
            p.kept += 1;
            if cut {
                out.lines_truncated += 1;
            }
        } else {
            out.lines_truncated += 1;
        }
    }
    None
}

/// How a read ends for the file being read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flush {
    /// Complete a pending multi-line event and a last line without newline (multi-line
    /// `flush_after` elapsed without growth).
    pub idle: bool,
    /// The file is being closed (rotated away and idle for `rotate_wait`): flush everything.
    pub closing: bool,
}

/// What [`read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadEnd {
    /// The end of the file was reached (everything up to its size at the look was read).
    pub eof: bool,
    /// Reading stopped at the match-record cap.
    pub stopped: bool,
    /// Nothing of the file is left unconsumed (no partial line, no pending event).
    pub drained: bool,
}

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reads `file` (of `size` bytes at the last look) from `cursor` on, at most `allowance` bytes,
/// into `out`; `buf` is scratch space. The cursor is advanced to what was consumed.
///
/// # Errors
/// [`ReadError`] when the file cannot be read or the collection was abandoned; `cursor` and
/// `out` are then partly advanced (the caller rolls back).
#[allow(clippy::too_many_arguments)]
pub(crate) fn read(
    cfg: &Compiled,
    out: &mut Output,
    file: &File,
    size: u64,
    cursor: &mut Cursor,
    allowance: u64,
    flush: Flush,
    buf: &mut Vec<u8>,
    cancel: &AtomicBool,
) -> Result<ReadEnd, ReadError> {
    let max = cfg.max_line_bytes;
    buf.resize(CHUNK, 0);
    let mut pos = cursor.offset;
    let mut line_start = cursor.offset;
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping = cursor.skipping;
    let mut left = allowance;
    let eof = loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(ReadError::Cancelled);
        }
        if out.full(cfg) {
            // Nothing more may be emitted: leave the rest for the next collection.
            break pos >= size && carry.is_empty();
        }
        // The allowance spent inside a line: that line is finished (at most `max_line_bytes`
        // more), or a line longer than the allowance would never be read.
        let finishing = left == 0;
        let want = if !finishing {
            usize::try_from(left).unwrap_or(CHUNK).min(CHUNK)
        } else if !carry.is_empty() && !skipping {
            (max + 1 - carry.len().min(max)).min(FINISH_CHUNK)
        } else {
            break pos >= size;
        };
        let Some(chunk) = buf.get_mut(..want) else { break false };
        let got = read_at(file, chunk, pos)?;
        if got == 0 {
            break true;
        }
        // When finishing a line, nothing after its newline is consumed.
        let n = if finishing { chunk[..got].iter().position(|&b| b == b'\n').map_or(got, |k| k + 1) } else { got };
        out.bytes_read += n as u64;
        let data = &chunk[..n];
        left = left.saturating_sub(n as u64);
        let base = pos;
        pos += n as u64;
        let mut i = 0;
        while i < n {
            let rest = &data[i..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(k) => {
                    let end = base + (i + k + 1) as u64;
                    if skipping {
                        skipping = false;
                    } else {
                        let seg = &rest[..k];
                        let resume = if carry.is_empty() {
                            let cut = seg.len() > max;
                            on_line(cfg, out, &mut cursor.pending, &seg[..seg.len().min(max)], line_start, cut)
                        } else {
                            let room = max.saturating_sub(carry.len());
                            let cut = seg.len() > room;
                            carry.extend_from_slice(&seg[..seg.len().min(room)]);
                            on_line(cfg, out, &mut cursor.pending, &carry, line_start, cut)
                        };
                        if let Some(resume) = resume {
                            *cursor = Cursor { offset: resume, skipping: false, pending: None };
                            return Ok(ReadEnd { eof: false, stopped: true, drained: false });
                        }
                    }
                    carry.clear();
                    line_start = end;
                    i += k + 1;
                }
                None => {
                    if !skipping {
                        if carry.len() + rest.len() > max {
                            // Over-long line: emit its head now and skip the rest of it.
                            let room = max.saturating_sub(carry.len());
                            carry.extend_from_slice(&rest[..room.min(rest.len())]);
                            if let Some(resume) = on_line(cfg, out, &mut cursor.pending, &carry, line_start, true) {
                                *cursor = Cursor { offset: resume, skipping: false, pending: None };
                                return Ok(ReadEnd { eof: false, stopped: true, drained: false });
                            }
                            carry.clear();
                            skipping = true;
                        } else {
                            carry.extend_from_slice(rest);
                        }
                    }
                    i = n;
                }
            }
        }
    };
    if skipping {
        cursor.offset = pos;
    } else {
        cursor.offset = line_start;
    }
    cursor.skipping = skipping;
    let flush_now = eof && (flush.closing || (flush.idle && cfg.multiline.is_some()));
    if flush_now {
        if !carry.is_empty() {
            if let Some(resume) = on_line(cfg, out, &mut cursor.pending, &carry, line_start, false) {
                *cursor = Cursor { offset: resume, skipping: false, pending: None };
                return Ok(ReadEnd { eof: false, stopped: true, drained: false });
            }
            cursor.offset = pos;
        }
        if let Some(p) = cursor.pending.take() {
            if out.full(cfg) {
                cursor.pending = Some(p);
            } else {
                out.event(cfg, &p.text, p.lines);
            }
        }
    }
    let drained = eof && cursor.pending.is_none() && cursor.offset >= pos;
    Ok(ReadEnd { eof, stopped: out.full(cfg), drained })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;

    use super::*;
    use crate::plugins::log::config::{LogRule, LogSettings, MultilineSettings};
    use crate::record::timestamp_of;

    fn compiled(f: impl FnOnce(&mut LogSettings)) -> Compiled {
        let mut s = LogSettings {
            paths: vec!["/x".into()],
            rules: vec![LogRule { name: "error".into(), pattern: "ERROR".into(), keep_line: true }],
            ..LogSettings::default()
        };
        f(&mut s);
        s.compile("t").expect("valid")
    }

    fn file(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        f.write_all(content).expect("write");
        f.flush().expect("flush");
        let file = File::open(f.path()).expect("open");
        (f, file)
    }

    fn raws(out: &Output) -> Vec<String> {
        out.records.iter().map(|r| String::from_utf8(r.raw.clone().expect("raw")).expect("utf-8")).collect()
    }

    fn run(cfg: &Compiled, content: &[u8], cursor: &mut Cursor, allowance: u64, flush: Flush) -> (Output, ReadEnd) {
        let (_tmp, f) = file(content);
        let mut out = Output::new("p", timestamp_of(std::time::SystemTime::UNIX_EPOCH), cfg.rules.len());
        let end = read(
            cfg,
            &mut out,
            &f,
            content.len() as u64,
            cursor,
            allowance,
            flush,
            &mut Vec::new(),
            &AtomicBool::new(false),
        )
        .expect("reads");
        (out, end)
    }

    #[test]
    fn lines_partial_lines_and_crlf() {
        let cfg = compiled(|_| {});
        let content = b"ok 1\r\nERROR two\nERROR partial";
        let mut c = Cursor::default();
        let (out, end) = run(&cfg, content, &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["ERROR two"]);
        assert_eq!(out.lines, 2);
        assert_eq!(out.rule_matches, [1]);
        assert_eq!(c.offset, 16, "the partial line stays unread");
        assert!(end.eof && !end.drained);
        // Closing flushes the partial line.
        let (out, end) = run(&cfg, content, &mut c, 1 << 20, Flush { idle: false, closing: true });
        assert_eq!(raws(&out), ["ERROR partial"]);
        assert!(end.drained);
        assert_eq!(c.offset, content.len() as u64);
    }

    #[test]
    fn allowance_splits_reading_without_loss() {
        let cfg = compiled(|_| {});
        let content: String = (0..1000).map(|i| format!("ERROR line {i}\n")).collect();
        let mut c = Cursor::default();
        let mut all = Vec::new();
        for _ in 0..100 {
            let (out, _) = run(&cfg, content.as_bytes(), &mut c, 777, Flush::default());
            assert!(out.bytes_read <= 777 + 16, "the allowance, then the line it ends in");
            all.extend(raws(&out));
            if c.offset == content.len() as u64 {
                break;
            }
        }
        let want: Vec<String> = (0..1000).map(|i| format!("ERROR line {i}")).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn over_long_lines_are_cut_and_their_rest_skipped_across_reads() {
        let cfg = compiled(|s| s.max_line_bytes = 16);
        let long = format!("ERROR {}", "x".repeat(100));
        let content = format!("{long}\nERROR short\n");
        let mut c = Cursor::default();
        // Read in small pieces: the cut head is emitted once, the rest skipped.
        let mut all = Vec::new();
        let mut truncated = 0;
        for _ in 0..50 {
            let (out, _) = run(&cfg, content.as_bytes(), &mut c, 10, Flush::default());
            all.extend(raws(&out));
            truncated += out.lines_truncated;
        }
        assert_eq!(all, [&long[..16], "ERROR short"]);
        assert_eq!(truncated, 1);
    }

    #[test]
    fn multiline_events_group_lines_and_flush_when_idle() {
        let cfg = compiled(|s| {
            s.multiline = Some(MultilineSettings { start_pattern: r"^\d{4}-".into(), ..MultilineSettings::default() });
        });
        let content = b"2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n2026-01-01 INFO ok\n";
        let mut c = Cursor::default();
        let (out, _) = run(&cfg, content, &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["2026-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)"]);
        assert_eq!(out.lines, 3, "the INFO event is still pending");
        assert_eq!(c.resume(), (60, false));
        let (out, _) = run(&cfg, content, &mut c, 1 << 20, Flush { idle: true, closing: false });
        assert_eq!(out.lines, 1);
        assert!(c.pending.is_none());
    }

    #[test]
    fn multiline_limits_leave_lines_out_and_count_them() {
        let cfg = compiled(|s| {
            s.multiline = Some(MultilineSettings {
                start_pattern: "^START".into(),
                max_lines: 3,
                ..MultilineSettings::default()
            });
        });
        let content = b"START ERROR\n1\n2\n3\n4\nSTART\n";
        let mut c = Cursor::default();
        let (out, _) = run(&cfg, content, &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["START ERROR\n1\n2"]);
        assert_eq!(out.lines, 5);
        assert_eq!(out.lines_truncated, 2);
    }

    #[test]
    fn the_match_cap_stops_reading_and_resumes_at_the_next_event() {
        let cfg = compiled(|s| s.max_match_records_per_collection = 2);
        let content = b"ERROR 1\nERROR 2\nERROR 3\n";
        let mut c = Cursor::default();
        let (out, end) = run(&cfg, content, &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["ERROR 1", "ERROR 2"]);
        assert!(end.stopped);
        assert_eq!(c.offset, 16);
        let (out, _) = run(&cfg, content, &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["ERROR 3"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let cfg = compiled(|_| {});
        let mut c = Cursor::default();
        let (out, _) = run(&cfg, b"ERROR \xff\xfe bad\n", &mut c, 1 << 20, Flush::default());
        assert_eq!(raws(&out), ["ERROR \u{fffd}\u{fffd} bad"]);
    }
}

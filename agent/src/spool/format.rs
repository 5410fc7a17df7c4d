//! The spool's segment file format: a header, then length-prefixed, CRC32-checksummed frames.
//!
//! Role: the byte layout of `state_dir/spool/<id>.seg` files, shared by the writer
//! (`writer.rs`), the reader (`reader.rs`) and recovery ([`scan`]). All integers little-endian:
//!
//! ```text
//! segment  = MAGIC (8 bytes, "MMSPOOL1") frame*
//! frame    = length u32 | crc u32 | sequence u64 | records u32 | payload (length bytes)
//! crc      = CRC-32 (IEEE, crc32fast) of sequence | records | payload
//! payload  = one encoded meshmon.v1.RecordBatch, exactly the Kafka message value
//! ```
//!
//! `sequence` and `records` repeat what the payload says, so that recovery, metrics and logs
//! need not decode batches. A frame is valid only when all of it is present, `length` is at most
//! [`MAX_PAYLOAD`] and the CRC matches; the first invalid frame ends the segment ([`scan`]
//! reports where, recovery cuts the file there). Segment ids are consecutive numbers written as
//! 20 digits, so that names sort in id order. Pure, except [`scan`], which reads a file.

use std::io::{self, Read};

/// First bytes of every segment file (format version 1).
pub const MAGIC: [u8; 8] = *b"MMSPOOL1";
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length of a frame header (length, crc, sequence, records).
pub const FRAME_HEADER_LEN: usize = 20;
/// Largest payload a frame may declare (larger lengths are corruption).
pub const MAX_PAYLOAD: u32 = 1 << 30;
/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// CRC-32 of sequence, records and payload.
    pub crc: u32,
    /// The batch's sequence number.
    pub sequence: u64,
    /// Records in the batch.
    pub records: u32,
}

/// CRC-32 of a frame's checked part.
pub fn checksum(sequence: u64, records: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&sequence.to_le_bytes());
    h.update(&records.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The header of a frame holding `payload`. `None` if the payload is too large for a frame.
pub fn encode_header(sequence: u64, records: u32, payload: &[u8]) -> Option<[u8; FRAME_HEADER_LEN]> {
    let len = u32::try_from(payload.len()).ok().filter(|l| *l <= MAX_PAYLOAD)?;
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&checksum(sequence, records, payload).to_le_bytes());
    h[8..16].copy_from_slice(&sequence.to_le_bytes());
    h[16..20].copy_from_slice(&records.to_le_bytes());
    Some(h)
}

/// Reads a frame header's fields.
pub fn decode_header(h: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    FrameHeader { len: u32_at(0), crc: u32_at(4), sequence: u64::from_le_bytes(seq), records: u32_at(16) }
}

/// Total on-disk length of a frame with a payload of `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> u64 {
    (FRAME_HEADER_LEN + payload_len) as u64
}

/// The file name of segment `id`.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a segment's valid part ends before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailProblem {
    /// The file is shorter than the segment header (a crash while it was created).
    ShortHeader,
    /// The file does not start with [`MAGIC`] (not a segment of this format).
    BadMagic,
    /// The last frame is incomplete (a crash or power loss while it was written).
    Torn,
    /// A frame declares a length over [`MAX_PAYLOAD`].
    BadLength(u32),
    /// A frame's CRC does not match its content.
    BadChecksum {
        /// The sequence number the frame claims.
        sequence: u64,
    },
}

impl std::fmt::Display for TailProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TailProblem::ShortHeader => f.write_str("file shorter than the segment header"),
            TailProblem::BadMagic => f.write_str("not a meshmon spool segment (bad magic)"),
            TailProblem::Torn => f.write_str("torn frame (incomplete write)"),
            TailProblem::BadLength(n) => write!(f, "frame length {n} is impossible"),
            TailProblem::BadChecksum { sequence } => {
                write!(f, "CRC mismatch in the frame claiming batch sequence {sequence}")
            }
        }
    }
}

/// What [`scan`] found in a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Bytes from the start up to the end of the last valid frame (at least the header when
    /// the header is valid).
    pub valid_len: u64,
    /// Valid frames.
    pub frames: u64,
    /// Records in them.
    pub records: u64,
    /// Sequence of the first valid frame.
    pub first_sequence: Option<u64>,
    /// Sequence of the last valid frame.
    pub last_sequence: Option<u64>,
    /// Why the valid part ends before the end of the data, if it does.
    pub problem: Option<TailProblem>,
}

/// Reads a whole segment from its start, checking every frame, and reports its valid part.
///
/// # Errors
/// Only I/O errors; invalid content is reported in [`Scan::problem`].
pub fn scan(mut input: impl Read) -> io::Result<Scan> {
    let mut scan = Scan::default();
    let mut magic = [0u8; MAGIC.len()];
    if read_full(&mut input, &mut magic)? < magic.len() {
        scan.problem = Some(TailProblem::ShortHeader);
        return Ok(scan);
    }
    if magic != MAGIC {
        scan.problem = Some(TailProblem::BadMagic);
        return Ok(scan);
    }
    scan.valid_len = SEGMENT_HEADER_LEN;
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut input, &mut header)? {
            0 => return Ok(scan),
            n if n < FRAME_HEADER_LEN => {
                scan.problem = Some(TailProblem::Torn);
                return Ok(scan);
            }
            _ => {}
        }
        let h = decode_header(&header);
        if h.len > MAX_PAYLOAD {
            scan.problem = Some(TailProblem::BadLength(h.len));
            return Ok(scan);
        }
        payload.resize(h.len as usize, 0);
        if read_full(&mut input, &mut payload)? < payload.len() {
            scan.problem = Some(TailProblem::Torn);
            return Ok(scan);
        }
        if checksum(h.sequence, h.records, &payload) != h.crc {
            scan.problem = Some(TailProblem::BadChecksum { sequence: h.sequence });
            return Ok(scan);
        }
        scan.valid_len += frame_len(payload.len());
        scan.frames += 1;
        scan.records += u64::from(h.records);
        scan.first_sequence.get_or_insert(h.sequence);
        scan.last_sequence = Some(h.sequence);
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn segment(frames: &[(u64, u32, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (seq, records, payload) in frames {
            out.extend_from_slice(&encode_header(*seq, *records, payload).unwrap());
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn header_round_trip_and_names() {
        let h = encode_header(7, 3, b"abc").unwrap();
        let d = decode_header(&h);
        assert_eq!((d.len, d.sequence, d.records, d.crc), (3, 7, 3, checksum(7, 3, b"abc")));
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.seg.corrupt"), None);
    }

    #[test]
    fn scan_accepts_valid_segments_and_finds_every_kind_of_bad_tail() {
        let good = segment(&[(1, 2, b"one"), (2, 5, b"second")]);
        let s = scan(&good[..]).unwrap();
        assert_eq!((s.valid_len, s.frames, s.records, s.problem.clone()), (good.len() as u64, 2, 7, None));
        assert_eq!((s.first_sequence, s.last_sequence), (Some(1), Some(2)));
        let first_end = SEGMENT_HEADER_LEN + frame_len(3);

        // Torn anywhere inside the second frame: its header, or its payload.
        for cut in [first_end as usize + 1, first_end as usize + FRAME_HEADER_LEN + 2, good.len() - 1] {
            let s = scan(&good[..cut]).unwrap();
            assert_eq!((s.valid_len, s.frames, s.problem), (first_end, 1, Some(TailProblem::Torn)), "cut {cut}");
        }
        // A flipped payload byte in the second frame.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let s = scan(&bad[..]).unwrap();
        assert_eq!((s.valid_len, s.problem), (first_end, Some(TailProblem::BadChecksum { sequence: 2 })));
        // An absurd length.
        let mut bad = good.clone();
        bad[first_end as usize..first_end as usize + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&bad[..]).unwrap().problem, Some(TailProblem::BadLength(u32::MAX)));
        // Not a segment, or a header cut short.
        assert_eq!(scan(&b"NOTSPOOL...."[..]).unwrap().problem, Some(TailProblem::BadMagic));
        assert_eq!(scan(&MAGIC[..3]).unwrap().problem, Some(TailProblem::ShortHeader));
        let empty = scan(&MAGIC[..]).unwrap();
        assert_eq!((empty.valid_len, empty.frames, empty.problem), (SEGMENT_HEADER_LEN, 0, None));
    }
}

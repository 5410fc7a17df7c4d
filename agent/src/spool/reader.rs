//! Reading frames back from a spool segment, in order.
//!
//! Role: [`SegmentReader`] reads the frames of one segment sequentially from a given offset
//! (buffered), checking each frame's length and CRC (`format.rs`) again: the disk may have
//! damaged what recovery found intact. The spool (`mod.rs`) only asks for frames it knows are
//! completely written, so reading the active segment while it is appended to is safe. Touches
//! one segment file, read-only.

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::Path;

use super::format::{FRAME_HEADER_LEN, MAX_PAYLOAD, TailProblem, checksum, decode_header, frame_len, read_full};

/// Read buffer size.
const BUFFER: usize = 256 * 1024;

/// One frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame in its segment.
    pub offset: u64,
    /// The batch's sequence number.
    pub sequence: u64,
    /// Records in the batch.
    pub records: u32,
    /// The encoded `RecordBatch`.
    pub payload: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read spool segment: {0}")]
    Io(#[from] io::Error),
    /// The frame is damaged.
    #[error("damaged spool frame at offset {offset}: {problem}")]
    Corrupt {
        /// Offset of the frame.
        offset: u64,
        /// What is wrong.
        problem: TailProblem,
    },
}

/// Sequential reader of one segment.
#[derive(Debug)]
pub struct SegmentReader {
    id: u64,
    file: BufReader<File>,
    offset: u64,
}

impl SegmentReader {
    /// Opens segment `id` at `path`, positioned at `offset`.
    ///
    /// # Errors
    /// The I/O error.
    pub fn open(path: &Path, id: u64, offset: u64) -> io::Result<SegmentReader> {
        let mut file = BufReader::with_capacity(BUFFER, File::open(path)?);
        file.seek(SeekFrom::Start(offset))?;
        Ok(SegmentReader { id, file, offset })
    }

    /// The segment's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves to `offset` (a frame boundary).
    ///
    /// # Errors
    /// The I/O error.
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        if offset != self.offset {
            self.file.seek(SeekFrom::Start(offset))?;
            self.offset = offset;
        }
        Ok(())
    }

    /// Reads the frame at the current offset and moves past it.
    ///
    /// # Errors
    /// [`ReadError::Io`], or [`ReadError::Corrupt`] if it is incomplete or fails its checks (the
    /// position is then unspecified).
    pub fn read_frame(&mut self) -> Result<Frame, ReadError> {
        let offset = self.offset;
        let corrupt = |problem| ReadError::Corrupt { offset, problem };
        let mut header = [0u8; FRAME_HEADER_LEN];
        if read_full(&mut self.file, &mut header)? < FRAME_HEADER_LEN {
            return Err(corrupt(TailProblem::Torn));
        }
        let h = decode_header(&header);
        if h.len > MAX_PAYLOAD {
            return Err(corrupt(TailProblem::BadLength(h.len)));
        }
        let mut payload = vec![0u8; h.len as usize];
        if read_full(&mut self.file, &mut payload)? < payload.len() {
            return Err(corrupt(TailProblem::Torn));
        }
        if checksum(h.sequence, h.records, &payload) != h.crc {
            return Err(corrupt(TailProblem::BadChecksum { sequence: h.sequence }));
        }
        self.offset += frame_len(payload.len());
        Ok(Frame { offset, sequence: h.sequence, records: h.records, payload })
    }
}

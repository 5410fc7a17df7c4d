//! Compact value bytes: the primitives the stored value formats are written with.
//!
//! Role: [`ValueWriter`] appends LEB128 varints (zigzag for signed), fixed-width little-endian
//! doubles and times, and length-prefixed strings and byte strings; [`ValueReader`] reads them
//! back and reports truncated or malformed input as a [`CodecError`] — never a panic. Unlike
//! `keybytes.rs` these encodings are not order-preserving; they only need to be small and
//! exact. Touches nothing else.

/// Malformed stored value bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value ended inside a field.
    #[error("value truncated in {0}")]
    Truncated(&'static str),
    /// A varint is longer than its type allows.
    #[error("varint overflow in {0}")]
    VarintOverflow(&'static str),
    /// A string field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A tag byte names no known variant.
    #[error("unknown {field} tag {tag}")]
    UnknownTag {
        /// The field being read.
        field: &'static str,
        /// The tag byte found.
        tag: u8,
    },
    /// The leading format version is not one this build reads.
    #[error("unsupported {what} format version {version}")]
    Version {
        /// The kind of value.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// Bytes remain after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// A length does not fit this machine's address space.
    #[error("length of {0} too large")]
    TooLong(&'static str),
}

/// Appends compact fields to a byte vector.
#[derive(Debug, Default)]
pub struct ValueWriter {
    out: Vec<u8>,
}

impl ValueWriter {
    /// A writer whose output starts with `version`.
    pub fn versioned(version: u8) -> ValueWriter {
        ValueWriter { out: vec![version] }
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// An unsigned varint.
    pub fn var_u128(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    /// An unsigned varint.
    pub fn var_u64(&mut self, v: u64) {
        self.var_u128(u128::from(v));
    }

    /// A zigzag varint.
    pub fn var_i128(&mut self, v: i128) {
        self.var_u128(((v << 1) ^ (v >> 127)) as u128);
    }

    /// A fixed 8-byte little-endian signed value (times: `i64::MIN` is common and would make a
    /// 10-byte varint).
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// The exact bits of a double.
    pub fn f64(&mut self, v: f64) {
        self.out.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.var_u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Reads compact fields back.
#[derive(Debug, Clone)]
pub struct ValueReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ValueReader<'a> {
    /// A reader over `bytes` that first checks the leading version byte.
    pub fn versioned(bytes: &'a [u8], what: &'static str, version: u8) -> Result<ValueReader<'a>, CodecError> {
        let mut r = ValueReader { bytes, pos: 0 };
        match r.u8(what)? {
            v if v == version => Ok(r),
            v => Err(CodecError::Version { what, version: v }),
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(CodecError::Truncated(field))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.take(1, field)?[0])
    }

    /// An unsigned varint of at most 128 bits.
    pub fn var_u128(&mut self, field: &'static str) -> Result<u128, CodecError> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.u8(field)?;
            let part = u128::from(b & 0x7F);
            if shift == 126 && part > 0b11 {
                return Err(CodecError::VarintOverflow(field));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::VarintOverflow(field))
    }

    /// An unsigned varint of at most 64 bits.
    pub fn var_u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        u64::try_from(self.var_u128(field)?).map_err(|_| CodecError::VarintOverflow(field))
    }

    /// An unsigned varint of at most 32 bits.
    pub fn var_u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        u32::try_from(self.var_u128(field)?).map_err(|_| CodecError::VarintOverflow(field))
    }

    /// A zigzag varint.
    pub fn var_i128(&mut self, field: &'static str) -> Result<i128, CodecError> {
        let u = self.var_u128(field)?;
        Ok(((u >> 1) as i128) ^ -((u & 1) as i128))
    }

    /// A fixed 8-byte little-endian signed value.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(i64::from_le_bytes(b))
    }

    /// A double from its exact bits.
    pub fn f64(&mut self, field: &'static str) -> Result<f64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = usize::try_from(self.var_u64(field)?).map_err(|_| CodecError::TooLong(field))?;
        self.take(len, field)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, field: &'static str) -> Result<String, CodecError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| CodecError::NotUtf8(field))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let mut w = ValueWriter::versioned(9);
        for v in [0u128, 1, 127, 128, u128::from(u64::MAX), u128::MAX] {
            w.var_u128(v);
        }
        for v in [0i128, -1, 1, i128::MIN, i128::MAX] {
            w.var_i128(v);
        }
        let bytes = w.into_bytes();
        let mut r = ValueReader::versioned(&bytes, "t", 9).unwrap_or_else(|e| panic!("{e}"));
        for v in [0u128, 1, 127, 128, u128::from(u64::MAX), u128::MAX] {
            assert_eq!(r.var_u128("u"), Ok(v));
        }
        for v in [0i128, -1, 1, i128::MIN, i128::MAX] {
            assert_eq!(r.var_i128("i"), Ok(v));
        }
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn malformed_values_are_errors() {
        assert_eq!(ValueReader::versioned(&[2], "x", 1).err(), Some(CodecError::Version { what: "x", version: 2 }));
        assert_eq!(ValueReader::versioned(&[], "x", 1).err(), Some(CodecError::Truncated("x")));
        let too_long = [1u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        let mut r = ValueReader::versioned(&too_long, "x", 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.var_u64("n"), Err(CodecError::VarintOverflow("n")));
        let mut r = ValueReader::versioned(&[1, 5, b'a'], "x", 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.str("s"), Err(CodecError::Truncated("s")));
    }
}

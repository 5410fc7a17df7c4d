//! Order-preserving byte encodings for store keys.
//!
//! Role: the primitives every key of the store is built from, chosen so that comparing two
//! encoded keys byte by byte gives the same answer as comparing the values they encode:
//! strings with an escaped terminator (`0x00` → `0x00 0xFF`, end `0x00 0x01`), `i64` big-endian
//! with the sign bit flipped, `u64`/`u32` big-endian. [`KeyReader`] decodes them back and
//! reports malformed bytes as a [`KeyError`] — it never panics. Touches nothing else.

use crate::engine::Nanos;

/// Escape byte: starts an escape pair inside an encoded string.
const ESC: u8 = 0x00;
/// Second byte of the pair that stands for a literal `0x00` inside the string.
const ESC_NUL: u8 = 0xFF;
/// Second byte of the pair that ends the string.
const ESC_END: u8 = 0x01;

/// Malformed key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key ended inside a field.
    #[error("key truncated in {0}")]
    Truncated(&'static str),
    /// An escape byte was followed by something other than `0xFF` or `0x01`.
    #[error("bad escape 0x00 0x{byte:02x} in {field}")]
    BadEscape {
        /// The field being read.
        field: &'static str,
        /// The byte after the escape.
        byte: u8,
    },
    /// A string field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes remain after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// A tag byte names no known variant.
    #[error("unknown {field} tag {tag}")]
    UnknownTag {
        /// The field being read.
        field: &'static str,
        /// The tag byte found.
        tag: u8,
    },
}

/// Appends `s` escaped and terminated: byte order of encodings equals byte order of strings.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.contains(&ESC) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            if b == ESC {
                out.extend_from_slice(&[ESC, ESC_NUL]);
            } else {
                out.push(b);
            }
        }
    }
    out.extend_from_slice(&[ESC, ESC_END]);
}

/// Appends a signed time big-endian with the sign bit flipped (so negatives sort first).
pub fn put_i64(out: &mut Vec<u8>, v: Nanos) {
    out.extend_from_slice(&flip(v).to_be_bytes());
}

/// The order-preserving unsigned image of a signed value.
#[inline]
fn flip(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Appends a `u64` big-endian.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a `u32` big-endian.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (the prefix is empty or all `0xFF`): the exclusive end of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=last].to_vec();
    if let Some(b) = end.last_mut() {
        *b += 1;
    }
    Some(end)
}

/// Reads fields back from an encoded key.
#[derive(Debug, Clone)]
pub struct KeyReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> KeyReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> KeyReader<'a> {
        KeyReader { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], KeyError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(KeyError::Truncated(field))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, KeyError> {
        Ok(self.take(1, field)?[0])
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, KeyError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, field)?);
        Ok(u32::from_be_bytes(b))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, KeyError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(b))
    }

    /// A sign-flipped big-endian `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<Nanos, KeyError> {
        Ok((self.u64(field)? ^ (1 << 63)) as i64)
    }

    /// An escaped, terminated string.
    pub fn str(&mut self, field: &'static str) -> Result<String, KeyError> {
        let rest = &self.bytes[self.pos..];
        let mut out: Vec<u8> = Vec::new();
        let mut i = 0;
        loop {
            let Some(off) = rest[i..].iter().position(|&b| b == ESC) else {
                return Err(KeyError::Truncated(field));
            };
            out.extend_from_slice(&rest[i..i + off]);
            i += off;
            match rest.get(i + 1) {
                Some(&ESC_END) => {
                    self.pos += i + 2;
                    return String::from_utf8(out).map_err(|_| KeyError::NotUtf8(field));
                }
                Some(&ESC_NUL) => {
                    out.push(ESC);
                    i += 2;
                }
                Some(&byte) => return Err(KeyError::BadEscape { field, byte }),
                None => return Err(KeyError::Truncated(field)),
            }
        }
    }

    /// Skips an escaped, terminated string without decoding it.
    pub fn skip_str(&mut self, field: &'static str) -> Result<(), KeyError> {
        let rest = &self.bytes[self.pos..];
        let mut i = 0;
        loop {
            let Some(off) = rest[i..].iter().position(|&b| b == ESC) else {
                return Err(KeyError::Truncated(field));
            };
            i += off;
            match rest.get(i + 1) {
                Some(&ESC_END) => {
                    self.pos += i + 2;
                    return Ok(());
                }
                Some(&ESC_NUL) => i += 2,
                Some(&byte) => return Err(KeyError::BadEscape { field, byte }),
                None => return Err(KeyError::Truncated(field)),
            }
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), KeyError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(KeyError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_str(&mut v, s);
        v
    }

    #[test]
    fn strings_round_trip_and_keep_order() {
        let words = ["", "\0", "\0\0", "a", "a\0", "a\0b", "a\u{1}", "ab", "b", "\u{7f}", "é"];
        for a in words {
            let e = enc(a);
            let mut r = KeyReader::new(&e);
            assert_eq!(r.str("s").as_deref(), Ok(a));
            assert_eq!(r.finish(), Ok(()));
            for b in words {
                assert_eq!(a.cmp(b), e.as_slice().cmp(enc(b).as_slice()), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn malformed_strings_are_errors() {
        let mut r = KeyReader::new(b"ab");
        assert_eq!(r.str("s"), Err(KeyError::Truncated("s")));
        let mut r = KeyReader::new(b"a\0");
        assert_eq!(r.str("s"), Err(KeyError::Truncated("s")));
        let mut r = KeyReader::new(b"a\0\x05");
        assert_eq!(r.str("s"), Err(KeyError::BadEscape { field: "s", byte: 5 }));
        let mut r = KeyReader::new(b"\xc3\0\x01");
        assert_eq!(r.str("s"), Err(KeyError::NotUtf8("s")));
    }

    #[test]
    fn signed_times_sort_as_numbers() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for a in values {
            let mut ea = Vec::new();
            put_i64(&mut ea, a);
            assert_eq!(KeyReader::new(&ea).i64("t"), Ok(a));
            for b in values {
                let mut eb = Vec::new();
                put_i64(&mut eb, b);
                assert_eq!(a.cmp(&b), ea.cmp(&eb));
            }
        }
    }

    #[test]
    fn prefix_end_bounds_every_extension() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let end = prefix_end(b"a\0\x01").unwrap_or_default();
        assert!(b"a\0\x01\xff\xff".as_slice() < end.as_slice());
    }
}

//! Reading and writing the hand-written byte formats.
//!
//! ringkv's stored and exchanged formats (version sets, client contexts,
//! layouts) are hand-written rather than protobuf so that each state has
//! exactly one encoding and anything else is refused. They share two
//! pieces, defined once here:
//!
//! * LEB128 varints: 7 bits per byte, low bits first, high bit set on all
//!   but the last byte. A reader accepts only the minimal form, so each
//!   number has one encoding.
//! * [`ByteReader`], a bounds-checked cursor: every read returns a
//!   [`DecodeError`] (what was being read, and at which byte) instead of
//!   panicking. Each codec turns that into its own error ("corrupt data",
//!   "malformed context", ...).

use std::fmt;

/// A decoding failure: what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong, e.g. "truncated value length".
    pub message: String,
    /// Offset of the reader when it failed.
    pub pos: usize,
    /// Length of the whole input.
    pub len: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {} of {})", self.message, self.pos, self.len)
    }
}

impl std::error::Error for DecodeError {}

/// Appends `n` as a LEB128 varint. Counters and lengths are small, so most
/// take one byte.
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Bytes [`put_varint`] writes for `n`.
pub fn varint_len(n: u64) -> usize {
    let bits = 64 - n.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// A bounds-checked cursor over an input. `what` arguments name the field
/// being read, for the error.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteReader { bytes, pos: 0 }
    }

    /// The whole input, read or not.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    /// Ends the input after its first `len` bytes (before a trailing
    /// checksum, say), but never before what was already read.
    pub fn truncate(&mut self, len: usize) {
        self.bytes = &self.bytes[..len.clamp(self.pos, self.bytes.len())];
    }

    /// An error at the current position.
    pub fn error(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            message: message.into(),
            pos: self.pos,
            len: self.bytes.len(),
        }
    }

    /// The next `len` bytes.
    pub fn take(&mut self, len: u64, what: &str) -> Result<&'a [u8], DecodeError> {
        let slice = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| self.truncated(what))?;
        self.pos += slice.len();
        Ok(slice)
    }

    /// The same check and error as `take(1, what)`, without building a
    /// slice and with the error out of line, so it inlines into
    /// [`varint`](Self::varint): varints are read a byte at a time, and
    /// going through `take` made decoding a stored value a few thousand
    /// instructions (docs/benchmarks.md, "Optimisations").
    #[inline]
    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(what)),
        }
    }

    #[cold]
    fn truncated(&self, what: &str) -> DecodeError {
        self.error(format!("truncated {what}"))
    }

    /// A little-endian u64.
    pub fn u64_le(&mut self, what: &str) -> Result<u64, DecodeError> {
        let raw = self.take(8, what)?;
        let array: [u8; 8] = raw.try_into().map_err(|_| self.truncated(what))?;
        Ok(u64::from_le_bytes(array))
    }

    /// A minimal LEB128 varint: rejects values over 64 bits and redundant
    /// trailing zero groups, so each number has one encoding.
    pub fn varint(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.u8(what)?;
            if i == 9 && byte > 1 {
                return Err(self.error(format!("{what} overflows 64 bits")));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(self.error(format!("{what} is not minimally encoded")));
                }
                return Ok(value);
            }
        }
        Err(self.error(format!("{what} overflows 64 bits")))
    }

    /// Refuses bytes after the end of the encoding.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.error(format!("{n} trailing bytes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for n in [0, 1, 127, 128, 300, 1 << 35, u64::MAX - 1, u64::MAX] {
            let mut buf = vec![];
            put_varint(&mut buf, n);
            assert_eq!(buf.len(), varint_len(n), "{n}");
            let mut r = ByteReader::new(&buf);
            assert_eq!(r.varint("n").unwrap(), n);
            r.finish().unwrap();
        }
    }

    #[test]
    fn varints_reject_overlong_and_overflowing_forms() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff; 10],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80; 11],
            &[0x80],
        ] {
            assert!(ByteReader::new(bad).varint("n").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_are_bounds_checked_and_say_where() {
        let mut r = ByteReader::new(&[1, 2, 3]);
        assert_eq!(r.u8("first").unwrap(), 1);
        let err = r.u64_le("id").unwrap_err();
        assert_eq!(err.to_string(), "truncated id (at byte 1 of 3)");
        assert!(r.take(u64::MAX, "value").is_err());
        assert_eq!(r.take(1, "second").unwrap(), &[2]);
        assert_eq!(r.finish().unwrap_err().message, "1 trailing bytes");
        assert_eq!(r.take(1, "third").unwrap(), &[3]);
        r.finish().unwrap();
        assert_eq!(
            r.u8("past the end").unwrap_err().message,
            "truncated past the end"
        );
    }

    #[test]
    fn truncate_hides_a_trailer_and_rest_is_what_is_left() {
        let mut r = ByteReader::new(&[1, 2, 3, 4]);
        r.u8("first").unwrap();
        r.truncate(3);
        assert_eq!(r.rest(), &[2, 3]);
        assert_eq!(r.bytes(), &[1, 2, 3]);
        r.truncate(0);
        assert_eq!(r.bytes(), &[1], "never before what was read");
        r.finish().unwrap();
    }

    #[test]
    fn u64_is_little_endian() {
        let bytes = 0x0102_0304_0506_0708u64.to_le_bytes();
        assert_eq!(
            ByteReader::new(&bytes).u64_le("n").unwrap(),
            0x0102_0304_0506_0708
        );
    }
}

//! LEB128 varints and zigzag, the integer encoding of the columnar body (the same varints as
//! postcard's), with a bounds-checked reader for untrusted input.

#[inline]
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("truncated at byte {at} while reading {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("varint too long at byte {at} ({what})")]
    Overlong { at: usize, what: &'static str },
    #[error("{what} = {value} is out of range at byte {at}")]
    Range {
        at: usize,
        what: &'static str,
        value: u64,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A cursor over untrusted bytes: every read is bounds-checked and names what it was reading.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ReadError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ReadError::Truncated { at: self.pos, what })?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ReadError> {
        if self.remaining() < n {
            return Err(ReadError::Truncated { at: self.pos, what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn u64(&mut self, what: &'static str) -> Result<u64, ReadError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // The tenth byte may only carry the top bit.
                if shift == 63 && b > 1 {
                    return Err(ReadError::Overlong { at: start, what });
                }
                return Ok(v);
            }
        }
        Err(ReadError::Overlong { at: start, what })
    }

    /// A varint that must be at most `max`.
    #[inline]
    pub fn bounded(&mut self, max: u64, what: &'static str) -> Result<u64, ReadError> {
        let at = self.pos;
        let v = self.u64(what)?;
        if v > max {
            return Err(ReadError::Range { at, what, value: v });
        }
        Ok(v)
    }

    pub fn str(&mut self, max: usize, what: &'static str) -> Result<&'a str, ReadError> {
        let n = self.bounded(max as u64, what)? as usize;
        let at = self.pos;
        let b = self.bytes(n, what)?;
        std::str::from_utf8(b)
            .map_err(|e| ReadError::Invalid(format!("{what} at byte {at} is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(v in any::<u64>(), z in any::<i64>()) {
            let mut b = Vec::new();
            put_u64(&mut b, v);
            put_u64(&mut b, zigzag(z));
            let mut r = Reader::new(&b);
            prop_assert_eq!(r.u64("v").expect("v"), v);
            prop_assert_eq!(unzigzag(r.u64("z").expect("z")), z);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut r = Reader::new(&b);
            while r.u64("x").is_ok() {}
        }
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        let mut r = Reader::new(&[0xff; 11]);
        assert!(matches!(r.u64("x"), Err(ReadError::Overlong { .. })));
        let mut r = Reader::new(&[0x80]);
        assert!(matches!(r.u64("x"), Err(ReadError::Truncated { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert!(matches!(r.u64("x"), Err(ReadError::Overlong { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.u64("x"), Ok(u64::MAX));
    }
}

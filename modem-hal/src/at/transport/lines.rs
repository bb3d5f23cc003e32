//! Line framing of the modem's byte stream.
//!
//! Modems end lines with `\r\n`, but echo lines end with a lone `\r` and some firmware sends lone
//! `\n`; any of `\r` or `\n` ends a line and empty lines are dropped. A line longer than the
//! limit is discarded up to its terminator; bytes that are not UTF-8 and control bytes other
//! than tab are dropped. Every discarded byte is counted.

/// Splits bytes into text lines; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_len: usize,
    /// Inside an overlong line: bytes are discarded up to the next terminator.
    skipping: bool,
    garbage: u64,
    overlong: u64,
}

impl LineSplitter {
    /// A splitter that keeps lines of at most `max_len` bytes (at least 16).
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_len: max_len.max(16),
            skipping: false,
            garbage: 0,
            overlong: 0,
        }
    }

    /// Feeds bytes and calls `line` for each complete, cleaned, non-empty line.
    pub fn feed(&mut self, bytes: &[u8], mut line: impl FnMut(String)) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if self.skipping {
                    self.skipping = false;
                } else if !self.buf.is_empty() {
                    let raw = std::mem::take(&mut self.buf);
                    if let Some(text) = self.clean(&raw) {
                        line(text);
                    }
                }
            } else if self.skipping {
                self.garbage += 1;
            } else if self.buf.len() >= self.max_len {
                self.garbage += self.buf.len() as u64 + 1;
                self.overlong += 1;
                self.buf.clear();
                self.skipping = true;
            } else {
                self.buf.push(b);
            }
        }
    }

    /// Drops the partial line (after a reconnect); its bytes count as garbage.
    pub fn reset(&mut self) {
        self.garbage += self.buf.len() as u64;
        self.buf.clear();
        self.skipping = false;
    }

    /// Bytes discarded so far (not UTF-8, control bytes, overlong or cut-off lines).
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage
    }

    /// Lines discarded for exceeding the maximum length.
    pub fn overlong_lines(&self) -> u64 {
        self.overlong
    }

    fn clean(&mut self, raw: &[u8]) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        for chunk in raw.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() && c != '\t' {
                    self.garbage += c.len_utf8() as u64;
                } else {
                    out.push(c);
                }
            }
            self.garbage += chunk.invalid().len() as u64;
        }
        let t = out.trim();
        if t.is_empty() {
            None
        } else if t.len() == out.len() {
            Some(out)
        } else {
            Some(t.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8], max: usize) -> (Vec<String>, u64) {
        let mut s = LineSplitter::new(max);
        let mut v = Vec::new();
        s.feed(bytes, |l| v.push(l));
        (v, s.garbage_bytes())
    }

    #[test]
    fn terminators_and_empty_lines() {
        let (v, g) = lines(b"AT+CSQ\r\r\n+CSQ: 16,99\r\n\r\nOK\nRDY\r", 64);
        assert_eq!(v, ["AT+CSQ", "+CSQ: 16,99", "OK", "RDY"]);
        assert_eq!(g, 0);
    }

    #[test]
    fn partial_line_waits_for_terminator() {
        let mut s = LineSplitter::new(64);
        let mut v = Vec::new();
        s.feed(b"+CS", |l| v.push(l));
        assert!(v.is_empty());
        s.feed(b"Q: 1,2\r\n", |l| v.push(l));
        assert_eq!(v, ["+CSQ: 1,2"]);
        assert_eq!(s.garbage_bytes(), 0);
    }

    #[test]
    fn invalid_utf8_and_controls_are_counted_and_dropped() {
        let (v, g) = lines(b"O\xffK\x00\r\n", 64);
        assert_eq!(v, ["OK"]);
        assert_eq!(g, 2);
    }

    #[test]
    fn overlong_line_is_dropped_up_to_its_end() {
        let mut input = vec![b'x'; 40];
        input.extend_from_slice(b"\r\nOK\r\n");
        let (v, g) = lines(&input, 16);
        assert_eq!(v, ["OK"]);
        assert_eq!(g, 40);
    }
}

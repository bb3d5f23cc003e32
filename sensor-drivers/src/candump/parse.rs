//! The line parser and writer of the candump log format.
//!
//! Hand-written rather than `socketcan::dump::Reader`: that reader rejects padded interface
//! names, 9-digit fractions, `_len8_dlc` suffixes, direction flags, `DROPCOUNT:` and comment lines,
//! and allocates per line. This one borrows from the line and allocates nothing on success.

use crate::can::{CanFrame, FD_LENS, MAX_CLASSIC_LEN, MAX_FD_LEN, flags};
use std::fmt::{self, Write as _};

/// `CAN_ERR_FLAG` of `linux/can.h`: set in the 8-digit identifier of an error frame.
pub const CAN_ERR_FLAG: u32 = 0x2000_0000;
/// Mask of the 29 identifier (or error class) bits.
const ID_MASK: u32 = 0x1FFF_FFFF;
/// CAN FD flag bits in the nibble after `##` (`canfd_frame.flags`).
const CANFD_BRS: u8 = 0x01;
const CANFD_ESI: u8 = 0x02;

/// A log timestamp: seconds and nanoseconds, as written (no float on the way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds.
    pub secs: u64,
    /// 0..1_000_000_000.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp of `us` microseconds.
    pub fn from_micros(us: u64) -> Timestamp {
        Timestamp {
            secs: us / 1_000_000,
            nanos: (us % 1_000_000) as u32 * 1000,
        }
    }

    /// Microseconds, rounded down (a 9-digit fraction loses its last three digits); saturates.
    pub fn as_micros(self) -> u64 {
        self.secs
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(self.nanos / 1000))
    }
}

/// `secs.micros` (6 digits) when the time is whole microseconds, else `secs.nanos` (9 digits).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos.is_multiple_of(1000) {
            write!(f, "{}.{:06}", self.secs, self.nanos / 1000)
        } else {
            write!(f, "{}.{:09}", self.secs, self.nanos)
        }
    }
}

/// The direction flag newer `candump -L` writes after the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `T`: sent by this host.
    Tx,
    /// `R`: received.
    Rx,
}

/// One frame line of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedFrame<'a> {
    /// The recorded time, exactly as written (see [`Timestamp::as_micros`]).
    pub timestamp: Timestamp,
    /// The timestamp as written between the parentheses (e.g. `46408.584930`).
    pub timestamp_text: &'a str,
    /// The interface name, without the padding candump may add.
    pub iface: &'a str,
    pub frame: CanFrame,
    /// The trailing `T`/`R` flag, when the line has one.
    pub direction: Option<Direction>,
}

/// A `DROPCOUNT:` line: frames the kernel dropped before candump could log them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCount<'a> {
    /// Frames dropped since the previous `DROPCOUNT` line of that socket.
    pub dropped: u64,
    /// The socket's interface as candump named it, if the line says.
    pub iface: Option<&'a str>,
    /// The running total, if the line says.
    pub total: Option<u64>,
}

/// What one line of a candump log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine<'a> {
    Frame(LoggedFrame<'a>),
    DropCount(DropCount<'a>),
    /// A blank line or a comment (first non-blank character `#` or `;`).
    Comment,
}

/// Why a line is not a valid candump log line. The text quoted in a message is cut to 40
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandumpError {
    #[error(
        "not a log line: expected '(timestamp) iface frame', 'DROPCOUNT: …' or a comment, found '{0}'"
    )]
    NotALogLine(String),
    #[error("timestamp has no closing ')'")]
    UnclosedTimestamp,
    #[error("timestamp '{0}' is not seconds[.fraction] in decimal digits")]
    BadTimestamp(String),
    #[error("timestamp '{0}' is too large")]
    TimestampRange(String),
    #[error("no interface name after the timestamp")]
    MissingInterface,
    #[error("no frame after the interface name '{0}'")]
    MissingFrame(String),
    #[error("frame '{0}' has no '#' between identifier and data")]
    NoSeparator(String),
    #[error(
        "identifier '{0}' has {1} hex digits; expected 3 (standard) or 8 (extended or error frame)"
    )]
    IdDigits(String, usize),
    #[error("identifier '{0}' is not hexadecimal")]
    IdNotHex(String),
    #[error("standard identifier {0:#05X} does not fit in 11 bits")]
    StdIdRange(u32),
    #[error(
        "identifier {0:08X} has flag bits above the 29 identifier bits (only the error flag 20000000 may be set)"
    )]
    IdFlags(u32),
    #[error("data has an odd number of hex digits")]
    OddHex,
    #[error("data has a non-hex character '{0}' at byte {1} of the frame")]
    DataNotHex(char, usize),
    #[error("'.' separator inside a data byte at byte {0} of the frame")]
    MisplacedDot(usize),
    #[error("classic frame with {0} data bytes (at most 8)")]
    ClassicTooLong(usize),
    #[error("error frame with {0} data bytes (at most 8)")]
    ErrorTooLong(usize),
    #[error("data has more than 64 bytes")]
    DataTooLong,
    #[error("FD length {0} is not a valid CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)")]
    FdLen(usize),
    #[error("CAN FD frame has no flags digit after '##'")]
    FdFlagsMissing,
    #[error("CAN FD flags '{0}' is not a hex digit")]
    FdFlags(char),
    #[error("remote frame length '{0}' is not a digit 0-8")]
    RemoteLen(String),
    #[error("len8_dlc suffix '{0}' is invalid: it must be _9 to _F after exactly 8 data bytes")]
    Len8Dlc(String),
    #[error("unexpected '{0}' after the frame (only a direction flag T or R may follow)")]
    Trailing(String),
    #[error("DROPCOUNT line without a frame count: '{0}'")]
    DropCount(String),
}

/// Cuts quoted input to 40 characters for error messages.
fn quote(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

const NOT_HEX: u8 = 0xFF;
/// Hex digit values by byte (table lookup instead of branches: this is the hot loop).
static HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r' || b == b'\n'
}

fn skip_blank(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_blank(b[i]) {
        i += 1;
    }
    i
}

/// Parses one line of a `candump -l` / `candump -L` log (with or without its line break).
pub fn parse_line(line: &str) -> Result<LogLine<'_>, CandumpError> {
    let b = line.as_bytes();
    let i = skip_blank(b, 0);
    match b.get(i) {
        None | Some(b'#') | Some(b';') => Ok(LogLine::Comment),
        Some(b'(') => parse_frame_line(line, i + 1).map(LogLine::Frame),
        Some(_) if b[i..].starts_with(b"DROPCOUNT") => parse_dropcount(&line[i..]),
        Some(_) => Err(CandumpError::NotALogLine(quote(line[i..].trim_end()))),
    }
}

fn parse_frame_line(line: &str, start: usize) -> Result<LoggedFrame<'_>, CandumpError> {
    let b = line.as_bytes();
    let close = b[start..]
        .iter()
        .position(|&c| c == b')')
        .map(|p| start + p)
        .ok_or(CandumpError::UnclosedTimestamp)?;
    let timestamp_text = &line[start..close];
    let timestamp = parse_timestamp(timestamp_text)?;

    let i = skip_blank(b, close + 1);
    if i == b.len() {
        return Err(CandumpError::MissingInterface);
    }
    let e = token_end(b, i);
    let iface = &line[i..e];

    let i = skip_blank(b, e);
    if i == b.len() {
        return Err(CandumpError::MissingFrame(quote(iface)));
    }
    let e = token_end(b, i);
    let frame = parse_frame(&line[i..e])?;

    let i = skip_blank(b, e);
    let (direction, i) = match b.get(i) {
        None => (None, i),
        Some(&d @ (b'T' | b'R')) if b.get(i + 1).is_none_or(|&c| is_blank(c)) => (
            Some(if d == b'T' {
                Direction::Tx
            } else {
                Direction::Rx
            }),
            skip_blank(b, i + 1),
        ),
        Some(_) => (None, i),
    };
    if i != b.len() {
        return Err(CandumpError::Trailing(quote(line[i..].trim_end())));
    }
    Ok(LoggedFrame {
        timestamp,
        timestamp_text,
        iface,
        frame,
        direction,
    })
}

/// `secs[.fraction]`, any number of fraction digits (digits past the ninth are dropped).
pub fn parse_timestamp(text: &str) -> Result<Timestamp, CandumpError> {
    let bad = || CandumpError::BadTimestamp(quote(text));
    let b = text.as_bytes();
    let dot = b.iter().position(|&c| c == b'.').unwrap_or(b.len());
    let (int, frac) = (&b[..dot], b.get(dot + 1..).unwrap_or(&[]));
    if int.is_empty() || (dot < b.len() && frac.is_empty()) {
        return Err(bad());
    }
    let mut secs: u64 = 0;
    for &c in int {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad());
        }
        secs = secs
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or_else(|| CandumpError::TimestampRange(quote(text)))?;
    }
    let mut nanos: u32 = 0;
    for (k, &c) in frac.iter().enumerate() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad());
        }
        if k < 9 {
            nanos = nanos * 10 + u32::from(d);
        }
    }
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Ok(Timestamp { secs, nanos })
}

/// Parses the frame text of a log line: `123#data`, `12345678#data`, `123#R`, `123#R5`,
/// `123##<flags><data>`, `123#1122334455667788_C`, error frames `2xxxxxxx#data`. Data bytes may
/// be separated by `.`.
pub fn parse_frame(text: &str) -> Result<CanFrame, CandumpError> {
    let b = text.as_bytes();
    let hash = b
        .iter()
        .position(|&c| c == b'#')
        .ok_or_else(|| CandumpError::NoSeparator(quote(text)))?;
    let id_text = &b[..hash];
    let mut id: u32 = 0;
    for &c in id_text {
        let d = HEX[usize::from(c)];
        if d == NOT_HEX {
            return Err(CandumpError::IdNotHex(quote(&text[..hash])));
        }
        id = (id << 4) | u32::from(d);
    }
    let (id, mut fl) = match id_text.len() {
        1..=3 => {
            if id > 0x7FF {
                return Err(CandumpError::StdIdRange(id));
            }
            (id, 0)
        }
        8 => {
            if id & !(ID_MASK | CAN_ERR_FLAG) != 0 {
                return Err(CandumpError::IdFlags(id));
            }
            if id & CAN_ERR_FLAG != 0 {
                (id & ID_MASK, flags::ERROR)
            } else {
                (id, flags::EXTENDED)
            }
        }
        n => return Err(CandumpError::IdDigits(quote(&text[..hash]), n)),
    };

    let mut i = hash + 1;
    let mut data = [0u8; MAX_FD_LEN];
    match b.get(i) {
        Some(b'#') => {
            // CAN FD: one flags nibble, then data.
            let f = *b.get(i + 1).ok_or(CandumpError::FdFlagsMissing)?;
            let nib = HEX[usize::from(f)];
            if nib == NOT_HEX {
                return Err(CandumpError::FdFlags(char::from(f)));
            }
            if fl & flags::ERROR != 0 {
                return Err(CandumpError::IdFlags(id | CAN_ERR_FLAG));
            }
            fl |= flags::FD;
            if nib & CANFD_BRS != 0 {
                fl |= flags::BRS;
            }
            if nib & CANFD_ESI != 0 {
                fl |= flags::ESI;
            }
            i += 2;
            let (len, end) = parse_data(text, i, &mut data)?;
            if end != b.len() {
                return Err(CandumpError::Len8Dlc(quote(&text[end..])));
            }
            if !FD_LENS.contains(&len) {
                return Err(CandumpError::FdLen(usize::from(len)));
            }
            Ok(CanFrame {
                id,
                flags: fl,
                len,
                len8_dlc: 0,
                data,
            })
        }
        Some(b'R' | b'r') if fl & flags::ERROR == 0 => {
            i += 1;
            let mut len = 0u8;
            if let Some(&c) = b.get(i)
                && c != b'_'
            {
                let d = c.wrapping_sub(b'0');
                if d > 8 || b.get(i + 1).is_some_and(|&c| c != b'_') {
                    return Err(CandumpError::RemoteLen(quote(&text[i..])));
                }
                len = d;
                i += 1;
            }
            let len8_dlc = parse_len8_dlc(text, i, len)?;
            Ok(CanFrame {
                id,
                flags: fl | flags::RTR,
                len,
                len8_dlc,
                data,
            })
        }
        _ => {
            let (len, end) = parse_data(text, i, &mut data)?;
            let max = MAX_CLASSIC_LEN as u8;
            if len > max {
                return Err(if fl & flags::ERROR != 0 {
                    CandumpError::ErrorTooLong(usize::from(len))
                } else {
                    CandumpError::ClassicTooLong(usize::from(len))
                });
            }
            let len8_dlc = if fl & flags::ERROR != 0 && end != b.len() {
                return Err(CandumpError::Len8Dlc(quote(&text[end..])));
            } else {
                parse_len8_dlc(text, end, len)?
            };
            Ok(CanFrame {
                id,
                flags: fl,
                len,
                len8_dlc,
                data,
            })
        }
    }
}

/// Hex data from `i` up to the end or a `_`; returns the byte count and where it stopped.
fn parse_data(
    text: &str,
    mut i: usize,
    data: &mut [u8; MAX_FD_LEN],
) -> Result<(u8, usize), CandumpError> {
    let b = text.as_bytes();
    // The character at byte `at` (a non-ASCII one spans several bytes).
    let char_at = |at: usize| text.get(at..).and_then(|t| t.chars().next()).unwrap_or('?');
    let mut n = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'.' {
            i += 1;
            continue;
        }
        if c == b'_' {
            break;
        }
        let hi = HEX[usize::from(c)];
        if hi == NOT_HEX {
            return Err(CandumpError::DataNotHex(char_at(i), i));
        }
        let Some(&c2) = b.get(i + 1) else {
            return Err(CandumpError::OddHex);
        };
        let lo = HEX[usize::from(c2)];
        if lo == NOT_HEX {
            return Err(match c2 {
                b'_' => CandumpError::OddHex,
                b'.' => CandumpError::MisplacedDot(i + 1),
                _ => CandumpError::DataNotHex(char_at(i + 1), i + 1),
            });
        }
        if n == MAX_FD_LEN {
            return Err(CandumpError::DataTooLong);
        }
        data[n] = (hi << 4) | lo;
        n += 1;
        i += 2;
    }
    Ok((n as u8, i))
}

/// An optional `_X` suffix at `i` (the rest of the text).
fn parse_len8_dlc(text: &str, i: usize, len: u8) -> Result<u8, CandumpError> {
    let b = text.as_bytes();
    if i == b.len() {
        return Ok(0);
    }
    let bad = || CandumpError::Len8Dlc(quote(&text[i..]));
    if b[i] != b'_' || b.len() != i + 2 || len != 8 {
        return Err(bad());
    }
    let d = HEX[usize::from(b[i + 1])];
    if !(9..=15).contains(&d) {
        return Err(bad());
    }
    Ok(d)
}

/// `DROPCOUNT: dropped N CAN frame[s] on 'IFACE' socket (total drops M)`, as can-utils writes
/// it. Counts printed negative by its `%d` are taken modulo 2³².
fn parse_dropcount(line: &str) -> Result<LogLine<'_>, CandumpError> {
    let text = line.trim_end();
    let bad = || CandumpError::DropCount(quote(text));
    let after = text
        .find("dropped")
        .map_or(&text["DROPCOUNT".len()..], |p| &text[p + "dropped".len()..]);
    let (dropped, _) = first_count(after).ok_or_else(bad)?;
    let iface = text.find(" on '").and_then(|p| {
        let rest = &text[p + 5..];
        rest.find('\'').map(|q| &rest[..q])
    });
    let total = text
        .find("total drops")
        .and_then(|p| first_count(&text[p + "total drops".len()..]))
        .map(|(n, _)| n);
    Ok(LogLine::DropCount(DropCount {
        dropped,
        iface,
        total,
    }))
}

/// The first (optionally negative) decimal integer in `s`, as a 32-bit count.
fn first_count(s: &str) -> Option<(u64, usize)> {
    let b = s.as_bytes();
    let start = b.iter().position(|c| c.is_ascii_digit())?;
    let neg = start > 0 && b[start - 1] == b'-';
    let end = b[start..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(b.len(), |p| start + p);
    let n: u64 = s[start..end].parse().ok()?;
    let n = if neg { (1u64 << 32).checked_sub(n)? } else { n };
    Some((n, end))
}

/// Appends the frame text of `frame` as candump writes it (`123#11223344`, `12345678#R`,
/// `123##1AABB`, `20000004#…` for error frames, `_X` len8_dlc suffix).
pub fn write_frame(out: &mut String, frame: &CanFrame) {
    // `fmt::Write` for `String` cannot fail.
    let _ = if frame.is_error() {
        write!(out, "{:08X}#", (frame.id & ID_MASK) | CAN_ERR_FLAG)
    } else if frame.is_extended() {
        write!(out, "{:08X}#", frame.id & ID_MASK)
    } else {
        write!(out, "{:03X}#", frame.id & 0x7FF)
    };
    if frame.is_remote() {
        out.push('R');
        if frame.len > 0 {
            out.push(char::from(b'0' + frame.len.min(8)));
        }
    } else {
        if frame.is_fd() {
            let mut nib = 0u8;
            if frame.flags & flags::BRS != 0 {
                nib |= CANFD_BRS;
            }
            if frame.flags & flags::ESI != 0 {
                nib |= CANFD_ESI;
            }
            out.push('#');
            out.push(char::from(HEX_DIGITS[usize::from(nib)]));
        }
        for &byte in frame.payload() {
            out.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(HEX_DIGITS[usize::from(byte & 0xF)]));
        }
    }
    if frame.len8_dlc != 0 && !frame.is_fd() && !frame.is_error() {
        out.push('_');
        out.push(char::from(HEX_DIGITS[usize::from(frame.len8_dlc & 0xF)]));
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// One log line (without line break): `(secs.frac) iface frame[ T|R]`.
pub fn format_line(
    timestamp: Timestamp,
    iface: &str,
    frame: &CanFrame,
    direction: Option<Direction>,
) -> String {
    let mut s = String::with_capacity(48 + 2 * usize::from(frame.len));
    let _ = write!(s, "({timestamp}) {iface} ");
    write_frame(&mut s, frame);
    match direction {
        Some(Direction::Tx) => s.push_str(" T"),
        Some(Direction::Rx) => s.push_str(" R"),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests;

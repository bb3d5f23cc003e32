//! slcan: CAN adapters speaking the Lawicell ASCII protocol over a serial port (CANable, USBtin,
//! CANUSB and the many firmwares that copy them), handled in user space.
//!
//! Every message is one line ended by `\r`; an adapter answers a command with `\r` (done) or BEL
//! (0x07, refused). Received frames:
//!
//! | line | frame |
//! |---|---|
//! | `tiiildd…` / `Tiiiiiiiildd…` | classic data frame, 11 / 29-bit id, `l` = length `0`-`8` |
//! | `riiil` / `Riiiiiiiil` | remote frame requesting `l` bytes |
//! | `diiiLdd…` / `Diiiiiiiildd…` | CAN FD frame without bit rate switch, `L` = DLC `0`-`F` |
//! | `biiiLdd…` / `Biiiiiiiildd…` | CAN FD frame with bit rate switch |
//!
//! With timestamps on (`Z1`) each frame line ends in 4 more hex digits: the adapter's
//! millisecond clock, which wraps at 60 000. [`Slcan`] unwraps it (using the host clock to count
//! whole wraps across long silences) and maps it onto epoch time with a [`DeviceClock`].
//! Also decoded: the Linux slcan error (`e…`) and bus state (`s…`) messages and the Lawicell
//! status flags reply (`Fxx`), all as error frames; transmit acknowledgements (`z`, `Z`) and
//! version replies are skipped. Hex digits may be upper or lower case.
//!
//! [`Slcan`] is the sans-IO core: on every (re)open it sends `C`, `S<n>`, optionally `Y<n>`, `Z1`,
//! then `O` (or `L` for listen-only), one at a time, each waiting for its reply. A BEL after `C`
//! is fine (the channel was already closed); a BEL after `Z1` means no timestamps (counted, host
//! receive times are used); a BEL after the bit rate or open command, or no reply within the
//! reply timeout, makes the driver reopen the device after a backoff. [`run`] is the async shell.

use crate::can::{CanFrame, FD_LENS, FrameError, MAX_CLASSIC_LEN, flags};
use crate::sample::{Reading, TimedFrame};
use crate::serial::{DeviceClock, LineSplitter, Output, Piece, PortSpec, Protocol};
use crate::source::{Backoff, Outlet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// BEL: an slcan adapter's "command refused".
pub const BEL: u8 = 0x07;
/// Longest line the decoder accepts: `D` + 8 id digits + DLC + 128 data digits + 4 timestamp
/// digits is 142; the rest is slack for firmware quirks.
pub const MAX_LINE: usize = 160;
/// The adapter's timestamp counter wraps at this many milliseconds.
pub const TIMESTAMP_WRAP_MS: u16 = 60_000;

/// Classic CAN bit rates selectable with `S0`..`S8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Bitrate {
    K10,
    K20,
    K50,
    K100,
    K125,
    K250,
    K500,
    K800,
    M1,
}

impl Bitrate {
    /// All rates, in `S0`..`S8` order.
    pub const ALL: [Bitrate; 9] = [
        Bitrate::K10,
        Bitrate::K20,
        Bitrate::K50,
        Bitrate::K100,
        Bitrate::K125,
        Bitrate::K250,
        Bitrate::K500,
        Bitrate::K800,
        Bitrate::M1,
    ];

    /// Bits per second.
    pub fn bps(self) -> u32 {
        const BPS: [u32; 9] = [
            10_000, 20_000, 50_000, 100_000, 125_000, 250_000, 500_000, 800_000, 1_000_000,
        ];
        BPS[self as usize]
    }

    /// The rate of exactly `bps` bits per second, if slcan has one.
    pub fn from_bps(bps: u32) -> Option<Bitrate> {
        Bitrate::ALL.into_iter().find(|b| b.bps() == bps)
    }

    /// The digit of the `S` command (0..=8).
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A command to an slcan adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `C`: close the CAN channel.
    Close,
    /// `S<n>`: classic (arbitration) bit rate.
    Bitrate(Bitrate),
    /// `Y<n>`: CAN FD data bit rate; the meaning of `n` depends on the adapter's firmware.
    DataBitrate(u8),
    /// `O`: open the channel.
    Open,
    /// `L`: open the channel listen-only (no ACKs, no transmission).
    ListenOnly,
    /// `Z1` / `Z0`: timestamps on frames on / off.
    Timestamps(bool),
    /// `F`: read the status flags.
    Status,
    /// `V`: read the version.
    Version,
}

impl Command {
    /// Appends the command and its `\r`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Command::Close => out.push(b'C'),
            Command::Bitrate(b) => out.extend_from_slice(&[b'S', b'0' + b.code()]),
            Command::DataBitrate(n) => {
                out.push(b'Y');
                out.extend_from_slice(n.to_string().as_bytes());
            }
            Command::Open => out.push(b'O'),
            Command::ListenOnly => out.push(b'L'),
            Command::Timestamps(on) => out.extend_from_slice(if on { b"Z1" } else { b"Z0" }),
            Command::Status => out.push(b'F'),
            Command::Version => out.push(b'V'),
        }
        out.push(b'\r');
    }

    /// The command as text without its `\r`, for messages.
    pub fn text(&self) -> String {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.pop();
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Parses a command line (without `\r`) as an adapter receives it.
    pub fn parse(line: &[u8]) -> Option<Command> {
        match line {
            b"C" => Some(Command::Close),
            b"O" => Some(Command::Open),
            b"L" => Some(Command::ListenOnly),
            b"Z0" => Some(Command::Timestamps(false)),
            b"Z1" => Some(Command::Timestamps(true)),
            b"F" => Some(Command::Status),
            b"V" => Some(Command::Version),
            [b'S', d @ b'0'..=b'8'] => Some(Command::Bitrate(Bitrate::ALL[usize::from(d - b'0')])),
            [b'Y', rest @ ..] => std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Command::DataBitrate),
            _ => None,
        }
    }
}

/// One decoded line from an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A received frame and, when timestamps are on, the adapter's clock (ms, 0..60000).
    Frame {
        frame: CanFrame,
        timestamp_ms: Option<u16>,
    },
    /// A bus error or bus state change (Linux slcan `e`/`s` messages) as an error frame.
    Error(CanFrame),
    /// Reply to `F`: the status flags byte.
    Status(u8),
    /// `z` / `Z`: a transmitted frame was accepted.
    TxAck,
    /// Reply to `V`, `v` or `N` (version, serial number).
    Info,
}

/// What is wrong with one slcan line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("unknown message type {0:?}")]
    UnknownKind(char),
    #[error("`{kind}` message of {got} characters is too short (at least {need})")]
    Truncated { kind: char, need: usize, got: usize },
    #[error("character {at} is not a hex digit")]
    BadHex { at: usize },
    #[error("character {at} is not a valid length code: {found:?}")]
    BadDlc { at: usize, found: char },
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error(
        "`{kind}` message with length code {dlc:?} needs {data} data characters (+4 for a timestamp), found {got}"
    )]
    LengthMismatch {
        kind: char,
        dlc: char,
        data: usize,
        got: usize,
    },
    #[error("timestamp {0} ms is beyond the 59999 ms the adapter counts to")]
    TimestampRange(u16),
    #[error("error message: {0:?} is not a known error code")]
    ErrorCode(char),
    #[error("state message: {0:?} is not a known bus state")]
    BusState(char),
    #[error("state message: error counters are not 3 decimal digits each")]
    Counters,
    #[error("status reply: expected `F` and 2 hex digits")]
    Status,
}

/// An slcan problem: a bad line, a refused command, an adapter that does not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlcanError {
    #[error("bad slcan line {line:?}: {error}")]
    Line { line: String, error: LineError },
    #[error("slcan line longer than {max} characters ({len} so far) dropped")]
    Overlong { len: usize, max: usize },
    #[error("adapter refused command `{0}` (BEL)")]
    Refused(String),
    #[error("adapter did not answer command `{command}` within {timeout:?}")]
    NoReply { command: String, timeout: Duration },
    #[error("adapter signalled an error (BEL)")]
    Bell,
}

/// Why a frame cannot be written as an slcan line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("error frames have no slcan line")]
    ErrorFrame,
    #[error("slcan cannot carry the CAN FD error state indicator (ESI)")]
    Esi,
    #[error("slcan cannot carry a raw DLC above 8 on a classic frame")]
    Len8Dlc,
    #[error("{0} bytes is not a valid frame length")]
    Length(u8),
    #[error("timestamp {0} ms is beyond 59999")]
    Timestamp(u16),
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `frame` as an slcan line (upper-case hex, `\r`-terminated), with the adapter's
/// millisecond timestamp when given.
pub fn encode_frame(
    frame: &CanFrame,
    timestamp_ms: Option<u16>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if frame.is_error() {
        return Err(EncodeError::ErrorFrame);
    }
    if frame.flags & flags::ESI != 0 {
        return Err(EncodeError::Esi);
    }
    if frame.len8_dlc != 0 {
        return Err(EncodeError::Len8Dlc);
    }
    let ext = frame.is_extended();
    let (kind, dlc) = if frame.is_fd() {
        let code = FD_LENS
            .iter()
            .position(|&l| l == frame.len)
            .ok_or(EncodeError::Length(frame.len))?;
        let brs = frame.flags & flags::BRS != 0;
        let k = match (brs, ext) {
            (false, false) => b'd',
            (false, true) => b'D',
            (true, false) => b'b',
            (true, true) => b'B',
        };
        (k, HEX[code])
    } else {
        if usize::from(frame.len) > MAX_CLASSIC_LEN {
            return Err(EncodeError::Length(frame.len));
        }
        let k = match (frame.is_remote(), ext) {
            (false, false) => b't',
            (false, true) => b'T',
            (true, false) => b'r',
            (true, true) => b'R',
        };
        (k, b'0' + frame.len)
    };
    out.push(kind);
    let digits = if ext { 8 } else { 3 };
    push_hex(out, frame.id, digits);
    out.push(dlc);
    for b in frame.payload() {
        push_hex(out, u32::from(*b), 2);
    }
    if let Some(ts) = timestamp_ms {
        if ts >= TIMESTAMP_WRAP_MS {
            return Err(EncodeError::Timestamp(ts));
        }
        push_hex(out, u32::from(ts), 4);
    }
    out.push(b'\r');
    Ok(())
}

fn push_hex(out: &mut Vec<u8>, v: u32, digits: u32) {
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize]);
    }
}

fn hex(line: &[u8], at: usize, n: usize) -> Result<u32, LineError> {
    let mut v = 0u32;
    for i in at..at + n {
        let d = line
            .get(i)
            .and_then(|&c| (c as char).to_digit(16))
            .ok_or(LineError::BadHex { at: i })?;
        v = (v << 4) | d;
    }
    Ok(v)
}

/// Decodes one line from an adapter (without its `\r`; must not be empty).
pub fn decode_line(line: &[u8]) -> Result<Message, LineError> {
    let Some(&kind) = line.first() else {
        return Err(LineError::Truncated {
            kind: ' ',
            need: 1,
            got: 0,
        });
    };
    match kind {
        b't' | b'T' | b'r' | b'R' | b'd' | b'D' | b'b' | b'B' => decode_frame(line, kind),
        b'e' => decode_error(line).map(Message::Error),
        b's' => decode_state(line).map(Message::Error),
        b'F' => {
            if line.len() != 3 {
                return Err(LineError::Status);
            }
            let v = hex(line, 1, 2).map_err(|_| LineError::Status)?;
            Ok(Message::Status(v as u8))
        }
        b'z' | b'Z' if line.len() == 1 => Ok(Message::TxAck),
        b'V' | b'v' | b'N' => Ok(Message::Info),
        other => Err(LineError::UnknownKind(other as char)),
    }
}

fn decode_frame(line: &[u8], kind: u8) -> Result<Message, LineError> {
    let ext = kind.is_ascii_uppercase();
    let id_len = if ext { 8 } else { 3 };
    let need = 1 + id_len + 1;
    if line.len() < need {
        return Err(LineError::Truncated {
            kind: kind as char,
            need,
            got: line.len(),
        });
    }
    let id = hex(line, 1, id_len)?;
    let dlc_at = 1 + id_len;
    let dlc = line[dlc_at];
    let bad_dlc = LineError::BadDlc {
        at: dlc_at,
        found: dlc as char,
    };
    let lower = kind.to_ascii_lowercase();
    let len = match lower {
        b'd' | b'b' => {
            let code = (dlc as char).to_digit(16).ok_or(bad_dlc)?;
            FD_LENS[code as usize]
        }
        _ => match dlc {
            b'0'..=b'8' => dlc - b'0',
            _ => return Err(bad_dlc),
        },
    };
    let data_chars = if lower == b'r' {
        0
    } else {
        2 * usize::from(len)
    };
    let rest = line.len() - need;
    let timestamp_ms = if rest == data_chars {
        None
    } else if rest == data_chars + 4 {
        let ts = hex(line, need + data_chars, 4)? as u16;
        if ts >= TIMESTAMP_WRAP_MS {
            return Err(LineError::TimestampRange(ts));
        }
        Some(ts)
    } else {
        return Err(LineError::LengthMismatch {
            kind: kind as char,
            dlc: dlc as char,
            data: data_chars,
            got: rest,
        });
    };
    let mut data = [0u8; 64];
    for (i, b) in data.iter_mut().take(data_chars / 2).enumerate() {
        *b = hex(line, need + 2 * i, 2)? as u8;
    }
    let payload = &data[..data_chars / 2];
    let frame = match lower {
        b't' => CanFrame::classic(id, ext, payload)?,
        b'r' => CanFrame::remote(id, ext, len)?,
        b'd' => CanFrame::fd(id, ext, 0, payload)?,
        _ => CanFrame::fd(id, ext, flags::BRS, payload)?,
    };
    Ok(Message::Frame {
        frame,
        timestamp_ms,
    })
}

// Linux `can/error.h` bits used by the error messages below.
const ERR_LOSTARB: u32 = 0x02;
const ERR_CRTL: u32 = 0x04;
const ERR_PROT: u32 = 0x08;
const ERR_ACK: u32 = 0x20;
const ERR_BUSOFF: u32 = 0x40;
const ERR_BUSERROR: u32 = 0x80;
const ERR_CNT: u32 = 0x200;
const CRTL_RX_OVERFLOW: u8 = 0x01;
const CRTL_TX_OVERFLOW: u8 = 0x02;
const CRTL_RX_WARNING: u8 = 0x04;
const CRTL_TX_WARNING: u8 = 0x08;
const CRTL_RX_PASSIVE: u8 = 0x10;
const CRTL_TX_PASSIVE: u8 = 0x20;
const CRTL_ACTIVE: u8 = 0x40;
const PROT_BIT: u8 = 0x01;
const PROT_FORM: u8 = 0x02;
const PROT_STUFF: u8 = 0x04;
const PROT_BIT0: u8 = 0x08;
const PROT_BIT1: u8 = 0x10;
const PROT_LOC_CRC_SEQ: u8 = 0x08;
const PROT_LOC_ACK: u8 = 0x19;

/// `e<n><codes>`: `n` (0-8) error codes, each one letter (as the Linux slcan driver reads them):
/// `a` ACK, `b` bit0, `B` bit1, `c` CRC, `f` form, `o` receive overrun, `O` transmit overrun,
/// `s` stuff error.
fn decode_error(line: &[u8]) -> Result<CanFrame, LineError> {
    let n = match line.get(1) {
        Some(&d @ b'0'..=b'8') => usize::from(d - b'0'),
        Some(&d) => {
            return Err(LineError::BadDlc {
                at: 1,
                found: d as char,
            });
        }
        None => {
            return Err(LineError::Truncated {
                kind: 'e',
                need: 2,
                got: line.len(),
            });
        }
    };
    if line.len() != 2 + n {
        return Err(LineError::LengthMismatch {
            kind: 'e',
            dlc: line[1] as char,
            data: n,
            got: line.len() - 2,
        });
    }
    let mut id = ERR_PROT | ERR_BUSERROR;
    let mut d = [0u8; 8];
    for &c in &line[2..] {
        match c {
            b'a' => {
                id |= ERR_ACK;
                d[3] = PROT_LOC_ACK;
            }
            b'b' => d[2] |= PROT_BIT0,
            b'B' => d[2] |= PROT_BIT1,
            b'c' => {
                d[2] |= PROT_BIT;
                d[3] = PROT_LOC_CRC_SEQ;
            }
            b'f' => d[2] |= PROT_FORM,
            b'o' => {
                id |= ERR_CRTL;
                d[1] |= CRTL_RX_OVERFLOW;
            }
            b'O' => {
                id |= ERR_CRTL;
                d[1] |= CRTL_TX_OVERFLOW;
            }
            b's' => d[2] |= PROT_STUFF,
            other => return Err(LineError::ErrorCode(other as char)),
        }
    }
    Ok(CanFrame::error(id, &d)?)
}

/// `s<state><rx><tx>`: bus state `a` active, `w` warning, `p` passive, `b` bus-off, then the
/// receive and transmit error counters as 3 decimal digits each.
fn decode_state(line: &[u8]) -> Result<CanFrame, LineError> {
    if line.len() != 8 {
        return Err(LineError::Counters);
    }
    let state = line[1];
    let counter = |s: &[u8]| -> Result<u32, LineError> {
        std::str::from_utf8(s)
            .ok()
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or(LineError::Counters)
    };
    let rx = counter(&line[2..5])?;
    let tx = counter(&line[5..8])?;
    let mut d = [0u8; 8];
    d[6] = tx.min(255) as u8;
    d[7] = rx.min(255) as u8;
    let (tx_side, rx_side) = (tx >= rx, rx >= tx);
    let id = match state {
        b'a' => {
            d[1] = CRTL_ACTIVE;
            ERR_CRTL | ERR_CNT
        }
        b'w' => {
            d[1] = side(tx_side, CRTL_TX_WARNING) | side(rx_side, CRTL_RX_WARNING);
            ERR_CRTL | ERR_CNT
        }
        b'p' => {
            d[1] = side(tx_side, CRTL_TX_PASSIVE) | side(rx_side, CRTL_RX_PASSIVE);
            ERR_CRTL | ERR_CNT
        }
        b'b' => ERR_BUSOFF | ERR_CNT,
        other => return Err(LineError::BusState(other as char)),
    };
    Ok(CanFrame::error(id, &d)?)
}

fn side(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}

/// The error frame for a Lawicell `F` status flags byte (none when no flag is set), and whether
/// it reports lost frames (receive FIFO full or data overrun).
///
/// Flags: bit 0 receive FIFO full, 1 transmit FIFO full, 2 error warning, 3 data overrun,
/// 5 error passive, 6 arbitration lost, 7 bus error.
pub fn status_error_frame(status: u8) -> (Option<CanFrame>, bool) {
    let bit = |n: u8| status & (1 << n) != 0;
    let mut id = 0;
    let mut d = [0u8; 8];
    let lost = bit(0) || bit(3);
    if lost {
        d[1] |= CRTL_RX_OVERFLOW;
    }
    if bit(1) {
        d[1] |= CRTL_TX_OVERFLOW;
    }
    if bit(2) {
        d[1] |= CRTL_RX_WARNING | CRTL_TX_WARNING;
    }
    if bit(5) {
        d[1] |= CRTL_RX_PASSIVE | CRTL_TX_PASSIVE;
    }
    if d[1] != 0 {
        id |= ERR_CRTL;
    }
    if bit(6) {
        id |= ERR_LOSTARB;
    }
    if bit(7) {
        id |= ERR_BUSERROR;
    }
    if id == 0 {
        return (None, lost);
    }
    (CanFrame::error(id, &d).ok(), lost)
}

/// Unwraps the adapter's 60-second millisecond counter into a monotonic millisecond count.
///
/// Between two frames the counter advanced by `(new − old) mod 60000` plus some whole number of
/// wraps; the host time elapsed between their arrivals says how many wraps (rounded to the
/// nearest), so a silence longer than a minute is measured right as long as the host's receive
/// delays vary by less than 30 s.
#[derive(Debug, Clone, Default)]
pub struct TimestampUnwrap {
    last: Option<(u16, u64, u64)>,
}

impl TimestampUnwrap {
    /// Forgets the history (the adapter was reopened).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The unwrapped milliseconds of a frame stamped `ts` (0..60000) that arrived at `host_us`.
    pub fn unwrap(&mut self, ts: u16, host_us: u64) -> u64 {
        let wrap = i64::from(TIMESTAMP_WRAP_MS);
        let ts = ts % TIMESTAMP_WRAP_MS;
        let total = match self.last {
            None => u64::from(ts),
            Some((last_ts, last_host, last_total)) => {
                let delta = (i64::from(ts) - i64::from(last_ts)).rem_euclid(wrap);
                let elapsed_ms =
                    i64::try_from(host_us.saturating_sub(last_host) / 1000).unwrap_or(i64::MAX / 2);
                let wraps = (elapsed_ms - delta + wrap / 2).div_euclid(wrap).max(0);
                last_total
                    .saturating_add(delta as u64)
                    .saturating_add((wraps as u64).saturating_mul(wrap as u64))
            }
        };
        self.last = Some((ts, host_us, total));
        total
    }
}

/// Settings of an slcan source.
#[derive(Debug, Clone, PartialEq)]
pub struct SlcanConfig {
    pub port: PortSpec,
    /// Classic (arbitration) bit rate.
    pub bitrate: Bitrate,
    /// CAN FD data bit rate code for `Y<n>`, for FD adapters; `None` sends no `Y`.
    pub data_bitrate: Option<u8>,
    /// Open with `L` (listen-only: never ACKs, never disturbs the bus) instead of `O`.
    pub listen_only: bool,
    /// Ask for adapter timestamps (`Z1`).
    pub timestamps: bool,
    /// How long a command may wait for its reply.
    pub reply_timeout: Duration,
    /// Poll the status flags (`F`) this often while open; a missing reply reopens the adapter.
    /// Off by default: not every firmware answers `F`.
    pub status_poll: Option<Duration>,
}

impl SlcanConfig {
    /// Defaults: listen-only, no adapter timestamps, 1 s reply timeout, no status polling.
    pub fn new(port: PortSpec, bitrate: Bitrate) -> Self {
        SlcanConfig {
            port,
            bitrate,
            data_bitrate: None,
            listen_only: true,
            timestamps: false,
            reply_timeout: Duration::from_secs(1),
            status_poll: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the reply to `plan[step]`, sent (or about to be) since `since_us`.
    Handshake {
        step: usize,
        since_us: u64,
    },
    Open,
}

/// The sans-IO slcan core: handshake, line decoding, timestamp unwrapping.
#[derive(Debug)]
pub struct Slcan {
    plan: Vec<Command>,
    reply_timeout_us: u64,
    status_poll_us: Option<u64>,
    splitter: LineSplitter,
    state: State,
    send_pending: bool,
    fresh: bool,
    unwrap: TimestampUnwrap,
    clock: DeviceClock,
    next_poll_us: Option<u64>,
    poll_sent_us: Option<u64>,
}

impl Slcan {
    /// A core that sets the adapter up as `cfg` says on every open.
    pub fn new(cfg: &SlcanConfig) -> Self {
        let mut plan = vec![Command::Close, Command::Bitrate(cfg.bitrate)];
        if let Some(y) = cfg.data_bitrate {
            plan.push(Command::DataBitrate(y));
        }
        if cfg.timestamps {
            plan.push(Command::Timestamps(true));
        }
        plan.push(if cfg.listen_only {
            Command::ListenOnly
        } else {
            Command::Open
        });
        Slcan {
            plan,
            reply_timeout_us: micros(cfg.reply_timeout),
            status_poll_us: cfg.status_poll.map(micros).filter(|&p| p > 0),
            splitter: LineSplitter::new(MAX_LINE, b"\r\x07"),
            state: State::Open,
            send_pending: false,
            fresh: true,
            unwrap: TimestampUnwrap::default(),
            clock: DeviceClock::new(Duration::from_secs(1)),
            next_poll_us: None,
            poll_sent_us: None,
        }
    }

    /// The commands sent on every open, in order.
    pub fn plan(&self) -> &[Command] {
        &self.plan
    }

    fn advance(&mut self, step: usize, now_us: u64) {
        if step + 1 < self.plan.len() {
            self.state = State::Handshake {
                step: step + 1,
                since_us: now_us,
            };
            self.send_pending = true;
        } else {
            self.state = State::Open;
            self.next_poll_us = self.status_poll_us.map(|p| now_us.saturating_add(p));
        }
    }

    fn on_ack(&mut self, now_us: u64, out: &mut Output<SlcanError>) {
        match self.state {
            State::Handshake { step, .. } => self.advance(step, now_us),
            State::Open => out.ignored += 1,
        }
    }

    fn on_bell(&mut self, now_us: u64, out: &mut Output<SlcanError>) {
        match self.state {
            State::Handshake { step, .. } => {
                match self.plan[step] {
                    Command::Close => {}
                    Command::Timestamps(_) => {
                        out.errors.push(SlcanError::Refused(self.plan[step].text()));
                    }
                    other => {
                        out.fatal = Some(SlcanError::Refused(other.text()));
                        return;
                    }
                }
                self.advance(step, now_us);
            }
            State::Open if self.poll_sent_us.is_some() => {
                self.poll_sent_us = None;
                self.next_poll_us = None;
                self.status_poll_us = None;
                out.errors.push(SlcanError::Refused(Command::Status.text()));
            }
            State::Open => out.errors.push(SlcanError::Bell),
        }
    }

    fn on_line(&mut self, text: &[u8], now_us: u64, out: &mut Output<SlcanError>) {
        match decode_line(text) {
            Ok(Message::Frame {
                frame,
                timestamp_ms,
            }) => {
                let t_us = match timestamp_ms {
                    Some(ts) => {
                        let ms = self.unwrap.unwrap(ts, now_us);
                        self.clock.stamp(ms.saturating_mul(1000), now_us)
                    }
                    None => now_us,
                };
                out.readings
                    .push(Reading::Frame(TimedFrame { t_us, frame }));
            }
            Ok(Message::Error(frame)) => {
                if frame.data[1] & CRTL_RX_OVERFLOW != 0 {
                    out.overruns += 1;
                }
                out.readings.push(Reading::Frame(TimedFrame {
                    t_us: now_us,
                    frame,
                }));
            }
            Ok(Message::Status(flags)) => {
                self.poll_sent_us = None;
                let (frame, lost) = status_error_frame(flags);
                if lost {
                    out.overruns += 1;
                }
                if let Some(frame) = frame {
                    out.readings.push(Reading::Frame(TimedFrame {
                        t_us: now_us,
                        frame,
                    }));
                }
            }
            Ok(Message::TxAck | Message::Info) => out.ignored += 1,
            Err(_) if self.fresh => out.ignored += 1,
            Err(error) => out.errors.push(SlcanError::Line {
                line: String::from_utf8_lossy(&text[..text.len().min(48)]).into_owned(),
                error,
            }),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Protocol for Slcan {
    type Error = SlcanError;

    fn opened(&mut self, now_us: u64) {
        self.splitter.reset();
        self.unwrap.reset();
        self.clock.reset();
        self.fresh = true;
        self.state = State::Handshake {
            step: 0,
            since_us: now_us,
        };
        self.send_pending = true;
        self.next_poll_us = None;
        self.poll_sent_us = None;
    }

    fn transmit(&mut self, out: &mut Vec<u8>) {
        if !self.send_pending {
            return;
        }
        self.send_pending = false;
        match self.state {
            State::Handshake { step, .. } => self.plan[step].encode(out),
            State::Open => Command::Status.encode(out),
        }
    }

    fn feed(&mut self, bytes: &[u8], now_us: u64, out: &mut Output<SlcanError>) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0, b""));
        splitter.push(bytes, |piece| {
            if out.fatal.is_some() {
                return;
            }
            match piece {
                Piece::Overlong { len } => {
                    self.fresh = false;
                    out.errors.push(SlcanError::Overlong { len, max: MAX_LINE });
                }
                Piece::Line { text, end } => {
                    if !text.is_empty() {
                        self.on_line(text, now_us, out);
                    } else if end == b'\r' {
                        self.on_ack(now_us, out);
                    }
                    if end == BEL {
                        self.on_bell(now_us, out);
                    }
                    self.fresh = false;
                }
            }
        });
        self.splitter = splitter;
    }

    fn deadline(&self) -> Option<u64> {
        match self.state {
            State::Handshake { since_us, .. } => {
                Some(since_us.saturating_add(self.reply_timeout_us))
            }
            State::Open => match (self.poll_sent_us, self.next_poll_us) {
                (Some(sent), Some(next)) => {
                    Some(sent.saturating_add(self.reply_timeout_us).min(next))
                }
                (Some(sent), None) => Some(sent.saturating_add(self.reply_timeout_us)),
                (None, next) => next,
            },
        }
    }

    fn timeout(&mut self, now_us: u64, out: &mut Output<SlcanError>) {
        match self.state {
            State::Handshake { step, since_us } => {
                if now_us >= since_us.saturating_add(self.reply_timeout_us) {
                    out.fatal = Some(SlcanError::NoReply {
                        command: self.plan[step].text(),
                        timeout: Duration::from_micros(self.reply_timeout_us),
                    });
                }
            }
            State::Open => {
                if let Some(sent) = self.poll_sent_us
                    && now_us >= sent.saturating_add(self.reply_timeout_us)
                {
                    out.fatal = Some(SlcanError::NoReply {
                        command: Command::Status.text(),
                        timeout: Duration::from_micros(self.reply_timeout_us),
                    });
                    return;
                }
                if let (Some(next), Some(period)) = (self.next_poll_us, self.status_poll_us)
                    && now_us >= next
                {
                    self.next_poll_us = Some(now_us.saturating_add(period));
                    if self.poll_sent_us.is_none() {
                        self.poll_sent_us = Some(now_us);
                        self.send_pending = true;
                    }
                }
            }
        }
    }

    fn ready(&self) -> bool {
        self.state == State::Open
    }
}

/// Runs an slcan source on `cfg.port` until `cancel` fires; see [`crate::serial::drive`].
pub async fn run(cfg: SlcanConfig, outlet: Outlet, backoff: Backoff, cancel: CancellationToken) {
    let mut core = Slcan::new(&cfg);
    crate::serial::drive(&cfg.port, &mut core, &outlet, backoff, &cancel).await;
}

#[cfg(test)]
mod tests;

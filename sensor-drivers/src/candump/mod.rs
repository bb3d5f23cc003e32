//! candump logs (`candump -l` files, `candump -L` output): parsing, writing and replay.
//!
//! A log line is a frame, `(1700000000.123456) can0 123#DEADBEEF [T|R]`, a `DROPCOUNT:` line
//! (frames the kernel dropped while recording), or a blank/comment line. The parser
//! ([`parse_line`]) is tolerant of what real logs contain: 6- or 9-digit (or any) fractions,
//! padded interface names, `_len8_dlc` suffixes, remote frames (`123#R`, `123#R5`), CAN FD
//! (`123##<flags><data>`), error frames (`20000080#…`), `.` between data bytes, CRLF, and a
//! trailing direction flag. It borrows from the line and does not allocate; [`format_line`]
//! writes what it reads.
//!
//! Replay: [`ReplayCore`] (sans-IO) decides which frames are replayed, their reading timestamps
//! and when each is due; [`run_replay`] is its tokio shell. Readings keep the recorded spacing,
//! shifted so the first frame of the run falls on the wall clock at replay start; looping
//! adds the log's span plus one median gap per loop.
//!
//! Interfaces: a replay emits the frames of the interfaces named in
//! [`ReplayOptions::interfaces`] (all when empty) through its one outlet; a reading carries no
//! interface. [`ReplayCore`] numbers interfaces in order of appearance ([`Step::Frame`]'s
//! `iface`, [`ReplayCore::iface_name`]) for callers that drive the core themselves; an agent
//! that must keep buses apart runs one replay source per interface.

mod parse;
mod replay;
mod shell;

pub use parse::{
    CAN_ERR_FLAG, CandumpError, Direction, DropCount, LogLine, LoggedFrame, Timestamp, format_line,
    parse_frame, parse_line, parse_timestamp, write_frame,
};
pub use replay::{CACHE_FRAMES, Pacer, PassEnd, ReplayCore, Speed, SpeedError, Step};
pub use shell::{CHUNK_READINGS, CHUNK_WINDOW_US, MAX_LINE, ReplayOptions, run_replay};

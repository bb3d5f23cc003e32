//! `pitlink decode`: a candump log decoded with a DBC, one JSON object (or text line) per
//! decoded frame on stdout, problems and a summary on stderr.

use anyhow::{Context, Result};
use sensor_drivers::candump::{LogLine, MAX_LINE, parse_line};
use sensor_drivers::dbc::{Dbc, DecodeBuf, Message, Raw, SignalDef, SignalValue};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `pitlink decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// DBC file describing the messages (UTF-8 or cp1252).
    #[arg(long, value_name = "FILE")]
    pub dbc: PathBuf,
    /// candump log (`candump -l` file or `candump -L` output); '-' reads stdin.
    #[arg(long, value_name = "LOG")]
    pub candump: PathBuf,
    /// One JSON object per decoded frame: {"t", "iface", "id", "message", "signals"}.
    #[arg(long)]
    pub json: bool,
    /// Decode only frames of this interface (repeat for several; default: all).
    #[arg(long = "iface", value_name = "NAME")]
    pub interfaces: Vec<String>,
}

/// Malformed lines reported one by one on stderr; later ones are only counted.
const SHOWN_ERRORS: u64 = 20;

/// What a decode run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames decoded and written.
    pub decoded: u64,
    /// Frames whose identifier the DBC does not define, and how many identifiers those were.
    pub unknown_frames: u64,
    pub unknown_ids: u64,
    /// Lines that are neither frames, comments nor `DROPCOUNT` lines.
    pub malformed_lines: u64,
    /// Remote and error frames (nothing to decode).
    pub not_data: u64,
    /// Frames of interfaces not asked for.
    pub other_iface: u64,
    /// Decoded frames too short for some of their message's signals.
    pub short: u64,
    /// `DROPCOUNT` lines: frames lost while recording.
    pub dropped_in_log: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "decoded {} frames; skipped {} frames of {} unknown IDs; {} malformed lines",
            self.decoded, self.unknown_frames, self.unknown_ids, self.malformed_lines
        )?;
        if self.short > 0 {
            write!(
                f,
                "; {} frames shorter than their message (signals missing)",
                self.short
            )?;
        }
        if self.not_data > 0 {
            write!(f, "; {} remote/error frames not decoded", self.not_data)?;
        }
        if self.other_iface > 0 {
            write!(
                f,
                "; {} frames of other interfaces skipped",
                self.other_iface
            )?;
        }
        if self.dropped_in_log > 0 {
            write!(
                f,
                "; the log reports {} frames dropped while recording",
                self.dropped_in_log
            )?;
        }
        Ok(())
    }
}

/// Runs `pitlink decode`.
pub fn run(args: &DecodeArgs) -> Result<ExitCode> {
    let dbc = Dbc::load(&args.dbc)?;
    for w in dbc.warnings() {
        eprintln!("pitlink: {}: {w}", args.dbc.display());
    }
    let name = args.candump.display().to_string();
    let input: Box<dyn BufRead> = if args.candump.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.candump)
            .with_context(|| format!("cannot open candump log {name}"))?;
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut shown = 0u64;
    let result = decode_log(
        &dbc,
        input,
        &mut out,
        &Options {
            json: args.json,
            interfaces: args.interfaces.clone(),
        },
        |line_no, why| {
            shown += 1;
            if shown <= SHOWN_ERRORS {
                eprintln!("pitlink: {name}:{line_no}: {why}");
            } else if shown == SHOWN_ERRORS + 1 {
                eprintln!("pitlink: {name}: further malformed lines are counted, not shown");
            }
        },
    )
    .and_then(|s| out.flush().map(|()| s));
    match result {
        Ok(summary) => {
            eprintln!("pitlink: {name}: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        // The reader of stdout went away (`| head`): not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).with_context(|| format!("decoding {name}")),
    }
}

/// How [`decode_log`] writes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// JSON objects instead of text lines.
    pub json: bool,
    /// Interfaces to decode (empty: all).
    pub interfaces: Vec<String>,
}

/// Decodes every frame line of `input` with `dbc` into `out`; each malformed line goes to
/// `malformed(line_no, why)`.
pub fn decode_log(
    dbc: &Dbc,
    mut input: impl BufRead,
    out: &mut impl Write,
    opts: &Options,
    mut malformed: impl FnMut(u64, &str),
) -> std::io::Result<Summary> {
    let mut s = Summary::default();
    let mut unknown: BTreeSet<(u32, bool)> = BTreeSet::new();
    let mut buf = DecodeBuf::default();
    let mut bytes = Vec::with_capacity(256);
    let mut text = String::with_capacity(512);
    let mut line_no = 0u64;
    loop {
        bytes.clear();
        let overlong = match read_line(&mut input, &mut bytes)? {
            None => break,
            Some(o) => o,
        };
        line_no += 1;
        if overlong {
            s.malformed_lines += 1;
            malformed(line_no, &format!("longer than {MAX_LINE} bytes"));
            continue;
        }
        let Ok(line) = std::str::from_utf8(&bytes) else {
            s.malformed_lines += 1;
            malformed(line_no, "not valid UTF-8");
            continue;
        };
        let f = match parse_line(line) {
            Ok(LogLine::Frame(f)) => f,
            Ok(LogLine::Comment) => continue,
            Ok(LogLine::DropCount(d)) => {
                s.dropped_in_log += d.dropped;
                continue;
            }
            Err(e) => {
                s.malformed_lines += 1;
                malformed(line_no, &e.to_string());
                continue;
            }
        };
        if !opts.interfaces.is_empty() && !opts.interfaces.iter().any(|i| i == f.iface) {
            s.other_iface += 1;
            continue;
        }
        if f.frame.is_remote() || f.frame.is_error() {
            s.not_data += 1;
            continue;
        }
        let Some(msg) = dbc.decode_into(&f.frame, &mut buf) else {
            s.unknown_frames += 1;
            unknown.insert((f.frame.id, f.frame.is_extended()));
            continue;
        };
        s.decoded += 1;
        if !buf.missing.is_empty() {
            s.short += 1;
        }
        text.clear();
        if opts.json {
            write_json(&mut text, f.timestamp_text, f.iface, f.frame.id, msg, &buf);
        } else {
            write_text(&mut text, f.timestamp_text, f.iface, &f.frame, msg, &buf);
        }
        text.push('\n');
        out.write_all(text.as_bytes())?;
    }
    s.unknown_ids = unknown.len() as u64;
    Ok(s)
}

/// Reads one line (without its line break) into `buf`; Some(true) when it was longer than
/// [`MAX_LINE`] (its bytes are skipped, not kept), None at the end of the input.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    let mut any = false;
    let mut overlong = false;
    loop {
        let avail = match input.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(overlong));
        }
        any = true;
        let (part, used, done) = match avail.iter().position(|&c| c == b'\n') {
            Some(p) => (&avail[..p], p + 1, true),
            None => (avail, avail.len(), false),
        };
        if !overlong {
            if buf.len() + part.len() > MAX_LINE {
                overlong = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        input.consume(used);
        if done {
            return Ok(Some(overlong));
        }
    }
}

/// The timestamp text as a valid JSON number: as written, except for the leading zeros of
/// zero-padded seconds (`0000000166.000000` → `166.000000`), which JSON does not allow.
pub fn json_number(text: &str) -> Cow<'_, str> {
    let t = text.trim_start_matches('0');
    if t.len() == text.len() {
        Cow::Borrowed(text)
    } else if t.is_empty() || t.starts_with('.') {
        Cow::Owned(format!("0{t}"))
    } else {
        Cow::Borrowed(t)
    }
}

fn write_json(out: &mut String, t: &str, iface: &str, id: u32, msg: &Message, buf: &DecodeBuf) {
    let _ = write!(out, "{{\"t\":{},\"iface\":", json_number(t));
    push_json_str(out, iface);
    let _ = write!(out, ",\"id\":{id},\"message\":");
    push_json_str(out, &msg.name);
    out.push_str(",\"signals\":{");
    for (k, v) in buf.values.iter().enumerate() {
        let Some(s) = msg.signals.get(usize::from(v.signal)) else {
            continue;
        };
        if k > 0 {
            out.push(',');
        }
        push_json_str(out, &s.name);
        out.push(':');
        push_phys(out, s, v);
    }
    out.push_str("}}");
}

fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

/// The physical value as a JSON number: an exact integer when raw, factor and offset are
/// integers (as cantools prints it), else the shortest f64 that round-trips; null for NaN or
/// infinity, which JSON cannot hold.
fn push_phys(out: &mut String, s: &SignalDef, v: &SignalValue) {
    if let Some(i) = exact_integer(s, v.raw) {
        let _ = write!(out, "{i}");
    } else if v.phys.is_finite() {
        match serde_json::to_string(&v.phys) {
            Ok(n) => out.push_str(&n),
            Err(_) => out.push_str("null"),
        }
    } else {
        out.push_str("null");
    }
}

fn exact_integer(s: &SignalDef, raw: Raw) -> Option<i128> {
    let int = |x: f64| (x.fract() == 0.0 && x.abs() < 9.0e18).then_some(x as i128);
    let r = match raw {
        Raw::Unsigned(u) => i128::from(u),
        Raw::Signed(i) => i128::from(i),
        Raw::Float(_) => return None,
    };
    r.checked_mul(int(s.factor)?)?.checked_add(int(s.offset)?)
}

fn write_text(
    out: &mut String,
    t: &str,
    iface: &str,
    frame: &sensor_drivers::CanFrame,
    msg: &Message,
    buf: &DecodeBuf,
) {
    let id = if frame.is_extended() {
        format!("{:08X}", frame.id)
    } else {
        format!("{:03X}", frame.id)
    };
    let _ = write!(out, "({t}) {iface} {id} {}:", msg.name);
    for (k, v) in buf.values.iter().enumerate() {
        let Some(s) = msg.signals.get(usize::from(v.signal)) else {
            continue;
        };
        out.push_str(if k > 0 { ", " } else { " " });
        let _ = write!(out, "{}=", s.name);
        push_phys(out, s, v);
        if !s.unit.is_empty() {
            let _ = write!(out, " {}", s.unit);
        }
        if let Some(l) = s.label(v.raw) {
            let _ = write!(out, " \"{l}\"");
        }
    }
    if !buf.missing.is_empty() {
        out.push_str(" (beyond the frame's payload:");
        for &i in &buf.missing {
            if let Some(s) = msg.signals.get(usize::from(i)) {
                let _ = write!(out, " {}", s.name);
            }
        }
        out.push(')');
    }
}

#[cfg(test)]
mod tests;

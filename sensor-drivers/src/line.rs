//! Line-oriented numeric sensors on a serial port: one line per reading, fields separated by a
//! delimiter, mapped to channels by position (e.g. `t_ms,oil_temp,oil_pressure`).
//!
//! A [`LineSpec`] names every field: a name makes it a value channel (channel index = its
//! position among the value channels), `-` or an empty name skips it, and `t_ms` / `t_us` marks
//! the device's own clock (milliseconds / microseconds, any origin, a non-negative integer).
//! With a clock field, timestamps follow the device clock through a [`DeviceClock`] (anchored to
//! the host clock at the first line, re-anchored when the device clock goes backwards or drifts
//! more than 1 s from the host); without one, a line is stamped with the host time it was read.
//!
//! **A line is all or nothing.** A line with the wrong number of fields, or with any field that
//! is not a finite number, is one counted parse error and yields no samples at all. A short or
//! garbled line usually means bytes were lost, and its surviving fields may sit in the wrong
//! positions, so keeping "the good ones" could put values on the wrong channels. Empty lines
//! are skipped; the first line after (re)opening is dropped as ignored when it does not parse
//! (a fragment cut by the open, or a header printed by a sensor that resets when opened).
//! Fields are trimmed of spaces; with the delimiter `' '`, any run of spaces or tabs separates
//! fields. Lines end in `\n`, `\r\n` or `\r`.

use crate::sample::{Reading, Sample};
use crate::serial::{DeviceClock, LineSplitter, Output, Piece, PortSpec, Protocol};
use crate::source::{Backoff, Outlet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default longest line, terminator excluded.
pub const DEFAULT_MAX_LINE: usize = 1024;

/// What one field of a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Not used.
    Skip,
    /// Device clock in milliseconds.
    ClockMs,
    /// Device clock in microseconds.
    ClockUs,
    /// A value channel (its index among the value channels).
    Value(u16),
}

/// Why a channel map is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the channel map names no value channel")]
    NoChannels,
    #[error(
        "delimiter {0:?} cannot separate fields (it must be one ASCII character, not a line end, digit, sign, '.' or 'e')"
    )]
    Delimiter(char),
    #[error("channel map has more than one clock field (t_ms / t_us)")]
    TwoClocks,
    #[error("channel {0:?} appears twice in the channel map")]
    Duplicate(String),
    #[error("channel map has {0} value channels, at most 65536 are possible")]
    TooMany(usize),
}

/// How to read a line: its delimiter and what each field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSpec {
    delimiter: u8,
    fields: Vec<Field>,
    channels: Vec<String>,
}

impl LineSpec {
    /// A spec from a comma-separated channel map such as `t_ms,oil_temp,-,oil_pressure`
    /// (the map is always comma-separated, whatever the device's delimiter).
    pub fn parse(map: &str, delimiter: char) -> Result<LineSpec, SpecError> {
        let names: Vec<&str> = map.split(',').collect();
        LineSpec::new(&names, delimiter)
    }

    /// A spec from one name per field.
    pub fn new(names: &[impl AsRef<str>], delimiter: char) -> Result<LineSpec, SpecError> {
        let bad = |c: char| {
            !c.is_ascii()
                || matches!(c, '\r' | '\n' | '+' | '-' | '.' | 'e' | 'E')
                || c.is_ascii_digit()
        };
        if bad(delimiter) {
            return Err(SpecError::Delimiter(delimiter));
        }
        let mut fields = Vec::with_capacity(names.len());
        let mut channels: Vec<String> = Vec::new();
        let mut clock = false;
        for name in names {
            let name = name.as_ref().trim();
            let field = match name {
                "" | "-" => Field::Skip,
                "t_ms" | "t_us" => {
                    if std::mem::replace(&mut clock, true) {
                        return Err(SpecError::TwoClocks);
                    }
                    if name == "t_ms" {
                        Field::ClockMs
                    } else {
                        Field::ClockUs
                    }
                }
                _ => {
                    if channels.iter().any(|c| c == name) {
                        return Err(SpecError::Duplicate(name.to_string()));
                    }
                    let i = u16::try_from(channels.len())
                        .map_err(|_| SpecError::TooMany(channels.len() + 1))?;
                    channels.push(name.to_string());
                    Field::Value(i)
                }
            };
            fields.push(field);
        }
        if channels.is_empty() {
            return Err(SpecError::NoChannels);
        }
        Ok(LineSpec {
            delimiter: delimiter as u8,
            fields,
            channels,
        })
    }

    /// Names of the value channels; a sample's `channel` indexes this list.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// What each field of a line is.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The field delimiter (`' '` means any run of spaces and tabs).
    pub fn delimiter(&self) -> char {
        self.delimiter as char
    }

    /// Decodes one line (without its end) into the device clock in µs, if the spec has one,
    /// and the values of the value channels in channel order (written to `values`).
    pub fn decode(&self, line: &[u8], values: &mut Vec<f64>) -> Result<Option<u64>, LineError> {
        values.clear();
        let mut clock = None;
        let mut n = 0;
        let mut check = |i: usize, raw: &[u8]| -> Result<(), LineError> {
            let Some(field) = self.fields.get(i) else {
                return Ok(());
            };
            let text = std::str::from_utf8(raw)
                .map_err(|_| LineError::NotANumber { field: i + 1 })?
                .trim();
            match *field {
                Field::Skip => {}
                Field::ClockMs | Field::ClockUs => {
                    let v: u64 = text
                        .parse()
                        .map_err(|_| LineError::Clock { field: i + 1 })?;
                    let us = if *field == Field::ClockMs {
                        v.checked_mul(1000)
                            .ok_or(LineError::Clock { field: i + 1 })?
                    } else {
                        v
                    };
                    clock = Some(us);
                }
                Field::Value(_) => {
                    let v: f64 = text
                        .parse()
                        .map_err(|_| LineError::NotANumber { field: i + 1 })?;
                    if !v.is_finite() {
                        return Err(LineError::NotFinite { field: i + 1 });
                    }
                    values.push(v);
                }
            }
            Ok(())
        };
        if self.delimiter == b' ' {
            for part in line
                .split(|b| *b == b' ' || *b == b'\t')
                .filter(|p| !p.is_empty())
            {
                check(n, part)?;
                n += 1;
            }
        } else {
            for part in line.split(|b| *b == self.delimiter) {
                check(n, part)?;
                n += 1;
            }
        }
        if n != self.fields.len() {
            return Err(LineError::FieldCount {
                expected: self.fields.len(),
                found: n,
            });
        }
        Ok(clock)
    }
}

/// What is wrong with one line (fields are numbered from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("{found} fields, the channel map has {expected}")]
    FieldCount { expected: usize, found: usize },
    #[error("field {field} is not a number")]
    NotANumber { field: usize },
    #[error("field {field} is not finite (NaN or infinity)")]
    NotFinite { field: usize },
    #[error("field {field} (device clock) is not a whole number of ms/µs that fits 64 bits")]
    Clock { field: usize },
}

/// A line sensor problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineSensorError {
    #[error("line {line:?} rejected: {error}")]
    Line { line: String, error: LineError },
    #[error("line longer than {max} characters ({len} so far) dropped")]
    Overlong { len: usize, max: usize },
}

/// Settings of a line sensor source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConfig {
    pub port: PortSpec,
    pub spec: LineSpec,
    /// Longest line, terminator excluded ([`DEFAULT_MAX_LINE`]).
    pub max_line: usize,
}

/// The sans-IO line sensor core.
#[derive(Debug)]
pub struct LineSensor {
    spec: LineSpec,
    max_line: usize,
    splitter: LineSplitter,
    clock: DeviceClock,
    fresh: bool,
    values: Vec<f64>,
}

impl LineSensor {
    /// A core reading lines of at most `max_line` bytes as `spec` says.
    pub fn new(spec: LineSpec, max_line: usize) -> Self {
        LineSensor {
            spec,
            max_line,
            splitter: LineSplitter::new(max_line, b"\r\n"),
            clock: DeviceClock::new(Duration::from_secs(1)),
            fresh: true,
            values: Vec::new(),
        }
    }

    /// How lines are read.
    pub fn spec(&self) -> &LineSpec {
        &self.spec
    }

    /// How many times the device clock was re-anchored to the host clock.
    pub fn clock_reanchors(&self) -> u64 {
        self.clock.reanchors()
    }

    fn line(&mut self, text: &[u8], now_us: u64, out: &mut Output<LineSensorError>) {
        let fresh = std::mem::replace(&mut self.fresh, false);
        match self.spec.decode(text, &mut self.values) {
            Ok(device) => {
                let t_us = device.map_or(now_us, |d| self.clock.stamp(d, now_us));
                let fields = self.spec.fields.iter().filter_map(|f| match f {
                    Field::Value(i) => Some(*i),
                    _ => None,
                });
                out.readings
                    .extend(fields.zip(&self.values).map(|(channel, &value)| {
                        Reading::Value(Sample {
                            t_us,
                            channel,
                            value,
                        })
                    }));
            }
            Err(_) if fresh => out.ignored += 1,
            Err(error) => out.errors.push(LineSensorError::Line {
                line: String::from_utf8_lossy(&text[..text.len().min(96)]).into_owned(),
                error,
            }),
        }
    }
}

impl Protocol for LineSensor {
    type Error = LineSensorError;

    fn opened(&mut self, _now_us: u64) {
        self.splitter.reset();
        self.clock.reset();
        self.fresh = true;
    }

    fn feed(&mut self, bytes: &[u8], now_us: u64, out: &mut Output<LineSensorError>) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0, b""));
        splitter.push(bytes, |piece| match piece {
            Piece::Overlong { len } => {
                self.fresh = false;
                out.errors.push(LineSensorError::Overlong {
                    len,
                    max: self.max_line,
                });
            }
            Piece::Line { text: [], .. } => {}
            Piece::Line { text, .. } => self.line(text, now_us, out),
        });
        self.splitter = splitter;
    }
}

/// Runs a line sensor source on `cfg.port` until `cancel` fires; see [`crate::serial::drive`].
pub async fn run(cfg: LineConfig, outlet: Outlet, backoff: Backoff, cancel: CancellationToken) {
    let mut core = LineSensor::new(cfg.spec, cfg.max_line);
    crate::serial::drive(&cfg.port, &mut core, &outlet, backoff, &cancel).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sensor(map: &str, delim: char) -> LineSensor {
        LineSensor::new(LineSpec::parse(map, delim).unwrap(), 64)
    }

    fn values(out: &Output<LineSensorError>) -> Vec<(u64, u16, f64)> {
        out.readings
            .iter()
            .map(|r| match r {
                Reading::Value(s) => (s.t_us, s.channel, s.value),
                Reading::Frame(_) => panic!("frame"),
            })
            .collect()
    }

    #[test]
    fn spec_maps_fields_to_channels() {
        let s = LineSpec::parse("t_ms, oil_temp,-,,oil_pressure", ',').unwrap();
        assert_eq!(s.channels(), ["oil_temp", "oil_pressure"]);
        assert_eq!(
            s.fields(),
            [
                Field::ClockMs,
                Field::Value(0),
                Field::Skip,
                Field::Skip,
                Field::Value(1)
            ]
        );
        assert_eq!(LineSpec::parse("t_ms,-", ','), Err(SpecError::NoChannels));
        assert_eq!(
            LineSpec::parse("t_ms,t_us,a", ','),
            Err(SpecError::TwoClocks)
        );
        assert_eq!(
            LineSpec::parse("a,b,a", ','),
            Err(SpecError::Duplicate("a".into()))
        );
        assert_eq!(LineSpec::parse("a", '.'), Err(SpecError::Delimiter('.')));
        assert_eq!(LineSpec::parse("a", '\n'), Err(SpecError::Delimiter('\n')));
        assert!(LineSpec::parse("a", ';').is_ok());
    }

    #[test]
    fn device_clock_timestamps_follow_the_device() {
        let mut s = sensor("t_ms,oil_temp,oil_pressure", ',');
        let mut out = Output::default();
        let h = 1_700_000_000_000_000;
        s.opened(h);
        s.feed(b"1000,95.5,3.25\r\n1001,95.6,", h + 700, &mut out);
        s.feed(b"3.5\n", h + 2_500, &mut out);
        assert_eq!(
            values(&out),
            vec![
                (h + 700, 0, 95.5),
                (h + 700, 1, 3.25),
                (h + 1_700, 0, 95.6),
                (h + 1_700, 1, 3.5)
            ]
        );
        assert!(out.errors.is_empty() && out.ignored == 0);
        // The device restarted: its clock went back; re-anchored on the host clock.
        s.feed(b"5,1,2\n", h + 9_000, &mut out);
        assert_eq!(values(&out)[4].0, h + 9_000);
        assert_eq!(s.clock_reanchors(), 1);
    }

    #[test]
    fn without_a_clock_field_lines_get_the_host_time() {
        let mut s = sensor("-,a, b", ';');
        let mut out = Output::default();
        s.opened(0);
        s.feed(b"x; 1e3 ;-2\r", 77, &mut out);
        assert_eq!(values(&out), vec![(77, 0, 1000.0), (77, 1, -2.0)]);
    }

    #[test]
    fn whitespace_delimiter_takes_runs_of_blanks() {
        let mut s = sensor("t_us,a,b", ' ');
        let mut out = Output::default();
        s.opened(0);
        s.feed(b"  10 \t 1.5    2\n", 5, &mut out);
        assert_eq!(values(&out), vec![(5, 0, 1.5), (5, 1, 2.0)]);
    }

    #[test]
    fn a_bad_line_is_rejected_whole_and_counted() {
        let mut s = sensor("t_ms,a,b", ',');
        let mut out = Output::default();
        s.opened(0);
        s.feed(b"t_ms,a,b\n", 1, &mut out);
        assert_eq!((out.ignored, out.errors.len()), (1, 0), "header after open");
        s.feed(
            b"1,2\n1,2,x\n1,2,nan\n-1,2,3\n1,2,3,4\n1,2,3\n\n",
            1,
            &mut out,
        );
        let errs: Vec<LineError> = out
            .errors
            .iter()
            .map(|e| match e {
                LineSensorError::Line { error, .. } => *error,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            errs,
            vec![
                LineError::FieldCount {
                    expected: 3,
                    found: 2
                },
                LineError::NotANumber { field: 3 },
                LineError::NotFinite { field: 3 },
                LineError::Clock { field: 1 },
                LineError::FieldCount {
                    expected: 3,
                    found: 4
                },
            ]
        );
        assert_eq!(values(&out).len(), 2, "only the good line");
        assert_eq!(
            out.errors[1].to_string(),
            "line \"1,2,x\" rejected: field 3 is not a number"
        );
        s.feed(&[b'1'; 100], 1, &mut out);
        s.feed(b"\n1,2,3\n", 1, &mut out);
        assert_eq!(
            out.errors.last(),
            Some(&LineSensorError::Overlong { len: 100, max: 64 })
        );
        assert_eq!(values(&out).len(), 4);
    }

    proptest! {
        /// Values printed by a device come back exactly, on the right channels.
        #[test]
        fn printed_values_round_trip(
            rows in proptest::collection::vec((any::<u32>(), any::<f64>(), -1e6f64..1e6), 1..40),
            cut in 1usize..40,
        ) {
            let spec = LineSpec::parse("t_ms,x,-,y", ',').unwrap();
            let mut s = LineSensor::new(spec, DEFAULT_MAX_LINE);
            let mut text = String::new();
            let mut want = Vec::new();
            for (t, x, y) in &rows {
                let x = if x.is_finite() { *x } else { 0.0 };
                text.push_str(&format!("{t},{x},junk,{y:e}\r\n"));
                want.push((0, x));
                want.push((1, *y));
            }
            let mut out = Output::default();
            s.opened(0);
            for c in text.as_bytes().chunks(cut) {
                s.feed(c, 1_000_000_000, &mut out);
            }
            prop_assert!(out.errors.is_empty(), "{:?}", out.errors);
            let got: Vec<(u16, f64)> = values(&out).into_iter().map(|(_, c, v)| (c, v)).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut s = sensor("t_us,a,b", ',');
            let mut out = Output::default();
            s.opened(0);
            s.feed(&data, 0, &mut out);
            prop_assert!(out.readings.len() % 2 == 0);
        }
    }
}

//! NMEA 0183 GPS receivers on a serial port: RMC and GGA merged per epoch into one fix.
//!
//! [`NmeaDecoder`] (sans-IO) cuts the byte stream into sentences, checks each one and parses
//! RMC and GGA with the `nmea` crate. Rules:
//!
//! - **Checksum.** A sentence must end in `*hh` and the XOR of the characters between `$` and `*`
//!   must equal `hh`; otherwise it is a counted error. A sentence **without** a checksum is also
//!   a counted error: NMEA 0183 makes the checksum mandatory for RMC and GGA, and on a noisy
//!   serial line an unchecked position could be silently wrong.
//! - **Talkers.** RMC and GGA from the talkers GP (GPS), GN (multi-system), GL (GLONASS),
//!   GA (Galileo) and GB (BeiDou) are used. Proprietary sentences (`$P…`), other talkers, other
//!   sentence types (GSV, GSA, VTG, TXT, …) and AIS (`!…`) are skipped and counted as *ignored*,
//!   never as errors. So is the first line after (re)opening when it is a fragment.
//! - **Epochs.** RMC and GGA with the same UTC time of day form one epoch and one [`Fix`]. A fix
//!   is emitted as soon as both arrived, or when a sentence of another epoch arrives, or one
//!   second (host time) after the epoch's first sentence. A repeated sentence of an epoch already
//!   seen (e.g. GPGGA after GNGGA) is ignored. Up to 25 Hz works: only the time of day matters.
//! - **Values.** Position, altitude, speed and course are given only when the fix is valid (GGA
//!   quality > 0, or RMC status `A`/`D` without GGA); an invalid fix carries only its quality,
//!   satellites, HDOP and time. GGA's position wins over RMC's (they are the same numbers).
//! - **Time.** The date comes from RMC; a GGA-only epoch borrows the last RMC date (rolled over
//!   when the time of day falls back by 12 h or more: midnight). A fix with a date is stamped with its UTC time; without one (no RMC yet, or
//!   no time in the sentence) with the host time its first sentence arrived.
//!
//! Each fix becomes numeric [`Sample`]s on the fixed channels of [`CHANNELS`].

use crate::sample::{Reading, Sample};
use crate::serial::{LineSplitter, Output, Piece, PortSpec, Protocol};
use crate::source::{Backoff, Outlet};
use ::nmea::ParseResult;
use ::nmea::sentences::rmc::RmcStatusOfFix;
use ::nmea::sentences::{FixType, GgaData, RmcData};
use chrono::{NaiveDate, NaiveTime};
use tokio_util::sync::CancellationToken;

/// Channel names of an NMEA source; a [`Sample`]'s `channel` is the index in this table.
pub const CHANNELS: [&str; 9] = [
    "latitude_deg",
    "longitude_deg",
    "altitude_m",
    "speed_mps",
    "course_deg",
    "fix_quality",
    "satellites",
    "hdop",
    "utc_time_s",
];

/// Channel indexes of [`CHANNELS`].
pub mod channel {
    /// Latitude, degrees, north positive (WGS 84).
    pub const LATITUDE: u16 = 0;
    /// Longitude, degrees, east positive.
    pub const LONGITUDE: u16 = 1;
    /// Altitude above mean sea level, metres (GGA).
    pub const ALTITUDE: u16 = 2;
    /// Speed over ground, m/s (RMC knots × 1852/3600).
    pub const SPEED: u16 = 3;
    /// Course over ground, degrees true (RMC).
    pub const COURSE: u16 = 4;
    /// GGA quality (0 none, 1 GPS, 2 DGPS, 3 PPS, 4 RTK, 5 float RTK, 6 estimated, 7 manual,
    /// 8 simulation); from RMC alone: 1 for `A`, 2 for `D`, 0 for `V`.
    pub const FIX_QUALITY: u16 = 5;
    /// Satellites used (GGA).
    pub const SATELLITES: u16 = 6;
    /// Horizontal dilution of precision (GGA).
    pub const HDOP: u16 = 7;
    /// UTC time of the fix, seconds since the Unix epoch (only when the date is known).
    pub const UTC_TIME: u16 = 8;
}

/// Longest line accepted; the `nmea` crate itself refuses sentences over 102 characters.
pub const MAX_LINE: usize = 256;
/// Metres per second in one knot.
pub const KNOT_MPS: f64 = 1852.0 / 3600.0;
/// Talkers whose RMC and GGA are used.
pub const TALKERS: [&str; 5] = ["GP", "GN", "GL", "GA", "GB"];

/// One GNSS fix: the RMC and GGA of one epoch merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    /// UTC time of the fix, µs since the Unix epoch, when the date is known.
    pub utc_us: Option<u64>,
    /// Host time (µs since the epoch) when the epoch's first sentence arrived.
    pub host_us: u64,
    pub latitude_deg: Option<f64>,
    pub longitude_deg: Option<f64>,
    pub altitude_m: Option<f64>,
    pub speed_mps: Option<f64>,
    pub course_deg: Option<f64>,
    /// See [`channel::FIX_QUALITY`].
    pub quality: u8,
    pub satellites: Option<u32>,
    pub hdop: Option<f64>,
}

impl Fix {
    /// The fix's timestamp: its UTC time when known, else the host receive time.
    pub fn t_us(&self) -> u64 {
        self.utc_us.unwrap_or(self.host_us)
    }

    /// Appends one sample per known value, stamped [`Fix::t_us`].
    pub fn samples(&self, out: &mut Vec<Sample>) {
        let t_us = self.t_us();
        let utc_s = self.utc_us.map(|u| u as f64 / 1e6);
        let values = [
            (channel::LATITUDE, self.latitude_deg),
            (channel::LONGITUDE, self.longitude_deg),
            (channel::ALTITUDE, self.altitude_m),
            (channel::SPEED, self.speed_mps),
            (channel::COURSE, self.course_deg),
            (channel::FIX_QUALITY, Some(f64::from(self.quality))),
            (channel::SATELLITES, self.satellites.map(f64::from)),
            (channel::HDOP, self.hdop),
            (channel::UTC_TIME, utc_s),
        ];
        for (channel, value) in values {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                out.push(Sample {
                    t_us,
                    channel,
                    value,
                });
            }
        }
    }
}

/// What is wrong with one NMEA line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    #[error("NMEA line longer than {max} characters ({len} so far) dropped")]
    Overlong { len: usize, max: usize },
    #[error("NMEA line {line:?} does not start with `$`")]
    NoStart { line: String },
    #[error("NMEA sentence {sentence:?} has no `*hh` checksum")]
    MissingChecksum { sentence: String },
    #[error(
        "NMEA sentence {sentence:?}: checksum is {found:#04x}, the characters give {computed:#04x}"
    )]
    Checksum {
        sentence: String,
        computed: u8,
        found: u8,
    },
    #[error("NMEA sentence {sentence:?}: {message}")]
    Parse { sentence: String, message: String },
}

/// What one step of an [`NmeaDecoder`] produced.
#[derive(Debug, Default)]
pub struct NmeaOutput {
    pub fixes: Vec<Fix>,
    pub errors: Vec<NmeaError>,
    /// Sentences skipped on purpose (see the module docs).
    pub ignored: u64,
}

/// Which sentences an epoch holds.
struct Epoch {
    time: Option<NaiveTime>,
    rmc: Option<RmcData>,
    gga: Option<GgaData>,
    host_us: u64,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("time", &self.time)
            .field("rmc", &self.rmc.is_some())
            .field("gga", &self.gga.is_some())
            .field("host_us", &self.host_us)
            .finish()
    }
}

/// The sans-IO NMEA core: bytes in, fixes out.
#[derive(Debug)]
pub struct NmeaDecoder {
    splitter: LineSplitter,
    fresh: bool,
    epoch: Option<Epoch>,
    last_emitted: Option<NaiveTime>,
    last_date: Option<(NaiveDate, NaiveTime)>,
    epoch_timeout_us: u64,
}

impl Default for NmeaDecoder {
    fn default() -> Self {
        NmeaDecoder::new()
    }
}

fn clip(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(96)]).into_owned()
}

impl NmeaDecoder {
    /// A decoder expecting a fresh stream (its first line may be a fragment).
    pub fn new() -> Self {
        NmeaDecoder {
            splitter: LineSplitter::new(MAX_LINE, b"\r\n"),
            fresh: true,
            epoch: None,
            last_emitted: None,
            last_date: None,
            epoch_timeout_us: 1_000_000,
        }
    }

    /// The device was reopened: forget partial input and the pending epoch (emitted first).
    pub fn reset(&mut self, out: &mut NmeaOutput) {
        self.flush(out);
        self.splitter.reset();
        self.fresh = true;
    }

    /// Feeds bytes read at `now_us`.
    pub fn push(&mut self, bytes: &[u8], now_us: u64, out: &mut NmeaOutput) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0, b""));
        splitter.push(bytes, |piece| match piece {
            Piece::Overlong { len } => {
                self.fresh = false;
                out.errors.push(NmeaError::Overlong { len, max: MAX_LINE });
            }
            Piece::Line { text: [], .. } => {}
            Piece::Line { text, .. } => {
                let fresh = std::mem::replace(&mut self.fresh, false);
                match self.sentence(text, now_us, out) {
                    Ok(()) => {}
                    Err(NmeaError::NoStart { .. }) if fresh => out.ignored += 1,
                    Err(e) => out.errors.push(e),
                }
            }
        });
        self.splitter = splitter;
    }

    /// Feeds one sentence (without line end) received at `now_us`.
    pub fn sentence(
        &mut self,
        line: &[u8],
        now_us: u64,
        out: &mut NmeaOutput,
    ) -> Result<(), NmeaError> {
        let Some(body) = line.strip_prefix(b"$") else {
            if line.first() == Some(&b'!') {
                out.ignored += 1;
                return Ok(());
            }
            return Err(NmeaError::NoStart { line: clip(line) });
        };
        let Some(star) = body.iter().rposition(|&b| b == b'*') else {
            return Err(NmeaError::MissingChecksum {
                sentence: clip(line),
            });
        };
        let computed = body[..star].iter().fold(0u8, |c, b| c ^ b);
        let found = std::str::from_utf8(&body[star + 1..])
            .ok()
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| NmeaError::MissingChecksum {
                sentence: clip(line),
            })?;
        if found != computed {
            return Err(NmeaError::Checksum {
                sentence: clip(line),
                computed,
                found,
            });
        }
        let address = &body[..star];
        let address = &address[..address
            .iter()
            .position(|&b| b == b',')
            .unwrap_or(address.len())];
        let wanted = address.len() == 5
            && TALKERS.iter().any(|t| address.starts_with(t.as_bytes()))
            && matches!(&address[2..], b"RMC" | b"GGA");
        if !wanted {
            out.ignored += 1;
            return Ok(());
        }
        let text = std::str::from_utf8(line).map_err(|_| NmeaError::Parse {
            sentence: clip(line),
            message: "not ASCII".into(),
        })?;
        let parsed = ::nmea::parse_str(text).map_err(|e| NmeaError::Parse {
            sentence: clip(line),
            message: e.to_string(),
        })?;
        let bad = |message: String| NmeaError::Parse {
            sentence: clip(line),
            message,
        };
        match parsed {
            ParseResult::RMC(rmc) => {
                check_position(rmc.lat, rmc.lon).map_err(bad)?;
                self.merge(rmc.fix_time, Some(rmc), None, now_us, out);
            }
            ParseResult::GGA(gga) => {
                check_position(gga.latitude, gga.longitude).map_err(bad)?;
                self.merge(gga.fix_time, None, Some(gga), now_us, out);
            }
            _ => out.ignored += 1,
        }
        Ok(())
    }

    fn merge(
        &mut self,
        time: Option<NaiveTime>,
        rmc: Option<RmcData>,
        gga: Option<GgaData>,
        now_us: u64,
        out: &mut NmeaOutput,
    ) {
        if let Some(ep) = &self.epoch {
            let repeat = (rmc.is_some() && ep.rmc.is_some()) || (gga.is_some() && ep.gga.is_some());
            if ep.time != time {
                self.flush(out);
            } else if repeat {
                if time.is_some() {
                    out.ignored += 1;
                    return;
                }
                self.flush(out);
            }
        }
        if time.is_some() && self.epoch.is_none() && time == self.last_emitted {
            out.ignored += 1;
            return;
        }
        let ep = self.epoch.get_or_insert(Epoch {
            time,
            rmc: None,
            gga: None,
            host_us: now_us,
        });
        if rmc.is_some() {
            ep.rmc = rmc;
        }
        if gga.is_some() {
            ep.gga = gga;
        }
        if ep.rmc.is_some() && ep.gga.is_some() {
            self.flush(out);
        }
    }

    /// Emits the pending epoch, if any.
    pub fn flush(&mut self, out: &mut NmeaOutput) {
        let Some(ep) = self.epoch.take() else {
            return;
        };
        self.last_emitted = ep.time;
        if let (Some(rmc), Some(time)) = (&ep.rmc, ep.time)
            && let Some(date) = rmc.fix_date
        {
            self.last_date = Some((date, time));
        }
        out.fixes.push(self.fix(&ep));
    }

    fn utc_us(&self, ep: &Epoch) -> Option<u64> {
        let time = ep.time?;
        let date = match ep.rmc.as_ref().and_then(|r| r.fix_date) {
            Some(d) => d,
            None => {
                let (date, last) = self.last_date?;
                // Earlier by half a day or more: the day rolled over at midnight. A smaller step
                // back (a receiver restart, a spliced log) stays on the same day.
                if time < last && last.signed_duration_since(time).num_hours() >= 12 {
                    date.succ_opt()?
                } else {
                    date
                }
            }
        };
        u64::try_from(date.and_time(time).and_utc().timestamp_micros()).ok()
    }

    fn fix(&self, ep: &Epoch) -> Fix {
        let quality = match (&ep.gga, &ep.rmc) {
            (Some(g), _) => g.fix_type.map_or(0, quality_number),
            (None, Some(r)) => match r.status_of_fix {
                RmcStatusOfFix::Autonomous => 1,
                RmcStatusOfFix::Differential => 2,
                RmcStatusOfFix::Invalid => 0,
            },
            (None, None) => 0,
        };
        let valid = quality > 0;
        let gga = ep.gga.as_ref();
        let rmc = ep.rmc.as_ref().filter(|_| valid);
        let pos = |g: Option<f64>, r: Option<f64>| if valid { g.or(r) } else { None };
        Fix {
            utc_us: self.utc_us(ep),
            host_us: ep.host_us,
            latitude_deg: pos(gga.and_then(|g| g.latitude), rmc.and_then(|r| r.lat)),
            longitude_deg: pos(gga.and_then(|g| g.longitude), rmc.and_then(|r| r.lon)),
            altitude_m: gga.filter(|_| valid).and_then(|g| g.altitude).map(widen),
            speed_mps: rmc
                .and_then(|r| r.speed_over_ground)
                .map(|kn| widen(kn) * KNOT_MPS),
            course_deg: rmc.and_then(|r| r.true_course).map(widen),
            quality,
            satellites: gga.and_then(|g| g.fix_satellites),
            hdop: gga.and_then(|g| g.hdop).map(widen),
        }
    }

    /// When [`NmeaDecoder::timeout`] must next be called: one second after the pending epoch
    /// began.
    pub fn deadline(&self) -> Option<u64> {
        self.epoch
            .as_ref()
            .map(|e| e.host_us.saturating_add(self.epoch_timeout_us))
    }

    /// Emits the pending epoch if it is older than its timeout.
    pub fn timeout(&mut self, now_us: u64, out: &mut NmeaOutput) {
        if self.deadline().is_some_and(|d| now_us >= d) {
            self.flush(out);
        }
    }
}

/// The `nmea` crate accepts any number of minutes (and `nan`), so `ddmm.mm` can exceed a valid
/// coordinate; such a sentence is rejected rather than stored as a position.
fn check_position(lat: Option<f64>, lon: Option<f64>) -> Result<(), String> {
    if let Some(lat) = lat
        && !(-90.0..=90.0).contains(&lat)
    {
        return Err(format!("latitude {lat} is not within ±90°"));
    }
    if let Some(lon) = lon
        && !(-180.0..=180.0).contains(&lon)
    {
        return Err(format!("longitude {lon} is not within ±180°"));
    }
    Ok(())
}

/// The `nmea` crate gives some fields as `f32`; its shortest decimal form is what the receiver
/// sent (`0.9`, `278.161`), so go through it instead of the binary value (0.8999999761…).
fn widen(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

fn quality_number(f: FixType) -> u8 {
    match f {
        FixType::Invalid => 0,
        FixType::Gps => 1,
        FixType::DGps => 2,
        FixType::Pps => 3,
        FixType::Rtk => 4,
        FixType::FloatRtk => 5,
        FixType::Estimated => 6,
        FixType::Manual => 7,
        FixType::Simulation => 8,
    }
}

/// Settings of an NMEA source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmeaConfig {
    pub port: PortSpec,
}

/// [`NmeaDecoder`] as a serial [`Protocol`]: fixes become samples.
#[derive(Debug, Default)]
pub struct Nmea {
    decoder: NmeaDecoder,
    scratch: NmeaOutput,
    samples: Vec<Sample>,
}

impl Nmea {
    /// A new NMEA protocol core.
    pub fn new() -> Self {
        Nmea::default()
    }

    fn drain(&mut self, out: &mut Output<NmeaError>) {
        for fix in self.scratch.fixes.drain(..) {
            fix.samples(&mut self.samples);
            out.readings
                .extend(self.samples.drain(..).map(Reading::Value));
        }
        out.errors.append(&mut self.scratch.errors);
        out.ignored += std::mem::take(&mut self.scratch.ignored);
    }
}

impl Protocol for Nmea {
    type Error = NmeaError;

    fn opened(&mut self, _now_us: u64) {
        self.decoder.reset(&mut self.scratch);
        // A fix pending from before the reopen is emitted with the next output.
    }

    fn feed(&mut self, bytes: &[u8], now_us: u64, out: &mut Output<NmeaError>) {
        self.decoder.push(bytes, now_us, &mut self.scratch);
        self.drain(out);
    }

    fn deadline(&self) -> Option<u64> {
        self.decoder.deadline()
    }

    fn timeout(&mut self, now_us: u64, out: &mut Output<NmeaError>) {
        self.decoder.timeout(now_us, &mut self.scratch);
        self.drain(out);
    }
}

/// Runs an NMEA source on `cfg.port` until `cancel` fires; see [`crate::serial::drive`].
pub async fn run(cfg: NmeaConfig, outlet: Outlet, backoff: Backoff, cancel: CancellationToken) {
    let mut core = Nmea::new();
    crate::serial::drive(&cfg.port, &mut core, &outlet, backoff, &cancel).await;
}

#[cfg(test)]
mod tests;

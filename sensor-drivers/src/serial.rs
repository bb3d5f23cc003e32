//! Serial ports: opening a tty by path, and the driver loop every serial source shares.
//!
//! [`open`] opens a tty (a USB adapter such as `/dev/ttyACM0`, a udev symlink, or a PTY slave
//! such as `/dev/pts/3`) with tokio-serial: exclusive access, raw mode (no echo, no line editing,
//! no CR/LF translation), 8N1, no flow control, the given baud rate.
//!
//! [`drive`] runs one source on one port until it is cancelled: open → feed every chunk of bytes
//! to a sans-IO [`Protocol`] with the time it was read → hand the readings to the [`Outlet`] →
//! on end of file, read error or a vanished device mark the source disconnected, wait
//! [`Backoff::failed`], reopen, count the reconnect. A device error never ends the task.
//!
//! The sans-IO helpers every line-oriented protocol needs live here too: [`LineSplitter`] (bounded
//! line buffer) and [`DeviceClock`] (turns a device's own clock into epoch time).

use crate::sample::Reading;
use crate::source::{Backoff, Outlet, wall_clock_us};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

pub use tokio_serial::SerialStream;

/// Why a serial port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("serial port path {0:?} is not valid UTF-8")]
    PathNotUtf8(PathBuf),
    #[error("cannot open serial port {path} at {baud} baud: {source}")]
    Open {
        path: PathBuf,
        baud: u32,
        #[source]
        source: tokio_serial::Error,
    },
}

/// Opens the tty at `path` (symlinks are followed) at `baud` baud, 8N1, no flow control, in raw
/// mode and with exclusive access (a second opener, e.g. a modem manager probing ports, is
/// refused). Must be called inside a tokio runtime.
///
/// A PTY slave works like a real port: tokio-serial (serialport) applies `cfmakeraw` to it, so
/// the line discipline neither echoes nor translates CR/LF, and a PTY accepts any baud rate.
pub fn open(path: &Path, baud: u32) -> Result<SerialStream, OpenError> {
    let name = path
        .to_str()
        .ok_or_else(|| OpenError::PathNotUtf8(path.to_path_buf()))?;
    let builder = tokio_serial::new(name, baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None);
    SerialStream::open(&builder).map_err(|source| OpenError::Open {
        path: path.to_path_buf(),
        baud,
        source,
    })
}

/// Where a serial source's device is and how fast it talks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub path: PathBuf,
    pub baud: u32,
}

/// What a sans-IO protocol core produced from one step: readings and counted problems.
#[derive(Debug)]
pub struct Output<E> {
    /// Readings ready to hand over, in order.
    pub readings: Vec<Reading>,
    /// Input that could not be parsed (each counted as one parse error).
    pub errors: Vec<E>,
    /// Input deliberately skipped (sentence types not used, a fragment right after opening, …).
    pub ignored: u64,
    /// Readings the device reported lost before they reached us.
    pub overruns: u64,
    /// Set when the device must be closed and reopened (e.g. it refused its configuration).
    pub fatal: Option<E>,
}

impl<E> Default for Output<E> {
    fn default() -> Self {
        Output {
            readings: Vec::new(),
            errors: Vec::new(),
            ignored: 0,
            overruns: 0,
            fatal: None,
        }
    }
}

impl<E> Output<E> {
    /// True when nothing at all was produced.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.errors.is_empty()
            && self.ignored == 0
            && self.overruns == 0
            && self.fatal.is_none()
    }
}

/// A sans-IO serial protocol: fed bytes and the time they were read, it produces readings; it
/// may also want to send commands (bytes to write) and be woken at a deadline. It never reads a
/// clock and never touches the device.
pub trait Protocol: Send {
    /// Error type of parse problems and fatal device conditions.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The device was (re)opened at `now_us`: forget partial input, start any handshake.
    fn opened(&mut self, now_us: u64);

    /// Appends bytes that must be written to the device now.
    fn transmit(&mut self, _out: &mut Vec<u8>) {}

    /// Feeds bytes read from the device at `now_us`.
    fn feed(&mut self, bytes: &[u8], now_us: u64, out: &mut Output<Self::Error>);

    /// When [`Protocol::timeout`] must next be called (µs since the epoch), if ever.
    fn deadline(&self) -> Option<u64> {
        None
    }

    /// Called at or after [`Protocol::deadline`].
    fn timeout(&mut self, _now_us: u64, _out: &mut Output<Self::Error>) {}

    /// Whether the device is set up and delivering (false while a handshake is in progress).
    fn ready(&self) -> bool {
        true
    }
}

/// Why a session with an open device ended.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device closed (end of file)")]
    Eof,
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("write failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("write did not complete within {0:?}")]
    WriteTimeout(Duration),
    #[error("{0}")]
    Protocol(String),
}

/// How long a write of commands may take before the device counts as stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer size: several hundred lines at once when the reader falls behind.
const READ_CHUNK: usize = 4096;

/// Runs `proto` on the port `spec` until `cancel` fires, reopening the device with `backoff`
/// whenever it fails or vanishes. Readings go to `outlet`; parse errors, overruns, ignored input,
/// reconnects, the connected flag and the last error go to the outlet's stats.
pub async fn drive<P: Protocol>(
    spec: &PortSpec,
    proto: &mut P,
    outlet: &Outlet,
    mut backoff: Backoff,
    cancel: &CancellationToken,
) {
    let span = info_span!("serial", path = %spec.path.display(), baud = spec.baud);
    async {
        let stats = outlet.stats();
        let mut ever_ready = false;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let failure = match open(&spec.path, spec.baud) {
                Err(e) => e.to_string(),
                Ok(mut port) => {
                    debug!("device opened");
                    let mut session = Session {
                        proto: &mut *proto,
                        outlet,
                        ever_ready: &mut ever_ready,
                        backoff: &mut backoff,
                        was_ready: false,
                    };
                    match session.run(&mut port, cancel).await {
                        Ok(()) => break,
                        Err(e) => e.to_string(),
                    }
                }
            };
            stats.set_connected(false);
            stats.set_error(&failure);
            let wait = backoff.failed(wall_clock_us());
            warn!(error = %failure, retry_in = ?wait, "device unavailable");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        stats.set_connected(false);
    }
    .instrument(span)
    .await
}

struct Session<'a, P> {
    proto: &'a mut P,
    outlet: &'a Outlet,
    ever_ready: &'a mut bool,
    backoff: &'a mut Backoff,
    was_ready: bool,
}

impl<P: Protocol> Session<'_, P> {
    /// Returns `Ok` when cancelled, `Err` when the device must be reopened.
    async fn run(
        &mut self,
        port: &mut SerialStream,
        cancel: &CancellationToken,
    ) -> Result<(), DeviceError> {
        let mut out = Output::default();
        let mut tx = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK];
        self.proto.opened(wall_clock_us());
        loop {
            self.check_ready();
            self.proto.transmit(&mut tx);
            if !tx.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = tokio::time::timeout(WRITE_TIMEOUT, port.write_all(&tx)) => match r {
                        Err(_) => return Err(DeviceError::WriteTimeout(WRITE_TIMEOUT)),
                        Ok(Err(e)) => return Err(DeviceError::Write(e)),
                        Ok(Ok(())) => tx.clear(),
                    },
                }
                continue;
            }
            let wait = self
                .proto
                .deadline()
                .map(|d| Duration::from_micros(d.saturating_sub(wall_clock_us())));
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = port.read(&mut buf) => {
                    let now = wall_clock_us();
                    match r {
                        Ok(0) => return Err(DeviceError::Eof),
                        Ok(n) => self.proto.feed(&buf[..n], now, &mut out),
                        Err(e) => return Err(DeviceError::Read(e)),
                    }
                }
                _ = sleep_opt(wait) => self.proto.timeout(wall_clock_us(), &mut out),
            }
            self.deliver(&mut out)?;
        }
    }

    fn check_ready(&mut self) {
        if self.was_ready || !self.proto.ready() {
            return;
        }
        self.was_ready = true;
        let stats = self.outlet.stats();
        stats.set_connected(true);
        self.backoff.connected(wall_clock_us());
        if *self.ever_ready {
            stats.reconnected();
            info!("device reconnected");
        } else {
            info!("device ready");
        }
        *self.ever_ready = true;
    }

    fn deliver(&mut self, out: &mut Output<P::Error>) -> Result<(), DeviceError> {
        let stats = self.outlet.stats();
        if let Some(last) = out.errors.last() {
            debug!(error = %last, count = out.errors.len(), "input rejected");
            stats.parse_error(out.errors.len() as u64, last);
            out.errors.clear();
        }
        if out.overruns > 0 {
            stats.overrun(out.overruns);
            out.overruns = 0;
        }
        if out.ignored > 0 {
            stats.ignore(out.ignored);
            out.ignored = 0;
        }
        // Counted before the readings go out, so whoever sees a reading sees its counts.
        if !out.readings.is_empty() {
            let readings = std::mem::take(&mut out.readings);
            self.outlet.emit(wall_clock_us(), readings);
        }
        match out.fatal.take() {
            Some(e) => Err(DeviceError::Protocol(e.to_string())),
            None => Ok(()),
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// One piece of input cut by a [`LineSplitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line without its terminator, and the terminator byte that ended it.
    Line { text: &'a [u8], end: u8 },
    /// A line grew past the limit without a terminator: its `len` bytes so far were dropped, and
    /// everything up to the next terminator will be dropped too.
    Overlong { len: usize },
}

/// Cuts a byte stream into lines at any of a set of terminator bytes, with a bounded buffer.
///
/// A line longer than `max_len` is reported once as [`Piece::Overlong`] and skipped up to the
/// next terminator, so an endless line without terminator costs at most `max_len` bytes.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_len: usize,
    terminators: &'static [u8],
    discarding: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max_len` bytes (terminator excluded).
    pub fn new(max_len: usize, terminators: &'static [u8]) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max_len,
            terminators,
            discarding: false,
        }
    }

    /// Forgets any partial line (the device was reopened).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// Bytes of the current unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes; calls `each` for every complete line or overlong line, in order.
    pub fn push(&mut self, mut bytes: &[u8], mut each: impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| self.terminators.contains(b));
            let (part, rest) = match end {
                Some(i) => (&bytes[..i], Some((bytes[i], &bytes[i + 1..]))),
                None => (bytes, None),
            };
            if !self.discarding {
                if self.buf.len() + part.len() > self.max_len {
                    each(Piece::Overlong {
                        len: self.buf.len() + part.len(),
                    });
                    self.buf.clear();
                    self.discarding = true;
                } else if let Some((term, _)) = rest {
                    if self.buf.is_empty() {
                        each(Piece::Line {
                            text: part,
                            end: term,
                        });
                    } else {
                        self.buf.extend_from_slice(part);
                        each(Piece::Line {
                            text: &self.buf,
                            end: term,
                        });
                        self.buf.clear();
                    }
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            match rest {
                Some((_, r)) => {
                    self.discarding = false;
                    bytes = r;
                }
                None => break,
            }
        }
    }
}

/// Maps a device's own clock (µs, any origin) onto epoch time.
///
/// The first reading anchors the device clock to the host clock (its receive time). Later
/// readings are stamped `anchor_host + (device − anchor_device)`, which keeps the device's exact
/// spacing between readings. Stamps never go backwards while the device clock advances. A stamp
/// may lie a little after its reading's receipt (`max_drift / 4`: a USB adapter's burst, clocks
/// that run at slightly different rates); further ahead, the anchor reading had waited in a
/// buffer (a backlog read after the port was opened), so the reading is stamped at its receive
/// time instead and the anchor moves there (a slew, not a step back onto stamps already given:
/// the anchor settles on the reading that waited least). The anchor is set again (a re-anchor, counted) when the device clock goes
/// backwards (the device restarted or its counter wrapped) or when a stamp falls more than
/// `max_drift` behind the host's receive time (clock drift, a stalled device, a long pause).
#[derive(Debug, Clone)]
pub struct DeviceClock {
    anchor: Option<(u64, u64)>,
    last_device_us: u64,
    last_stamp: u64,
    max_drift_us: u64,
    reanchors: u64,
}

impl DeviceClock {
    /// A clock that re-anchors when it drifts more than `max_drift` from the host clock.
    pub fn new(max_drift: Duration) -> Self {
        DeviceClock {
            anchor: None,
            last_device_us: 0,
            last_stamp: 0,
            max_drift_us: u64::try_from(max_drift.as_micros()).unwrap_or(u64::MAX),
            reanchors: 0,
        }
    }

    /// Forgets the anchor (the device was reopened and may have restarted).
    pub fn reset(&mut self) {
        self.anchor = None;
    }

    /// How many times the anchor was moved after the first reading.
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }

    /// The epoch time (µs) of a reading taken at `device_us` by the device clock and received at
    /// `host_us` by the host clock.
    pub fn stamp(&mut self, device_us: u64, host_us: u64) -> u64 {
        let t = match self.anchor {
            Some((anchor_host, anchor_dev)) if device_us >= self.last_device_us => {
                match anchor_host.checked_add(device_us - anchor_dev) {
                    // On time: the device's spacing.
                    Some(t)
                        if t <= host_us + self.max_drift_us / 4
                            && host_us.saturating_sub(t) <= self.max_drift_us =>
                    {
                        t
                    }
                    // Well ahead of its own receipt: slew to the receive time, never backwards.
                    Some(t) if t > host_us => {
                        let t = if device_us > self.last_device_us {
                            host_us.max(self.last_stamp + 1)
                        } else {
                            self.last_stamp
                        };
                        self.anchor = Some((t, device_us));
                        t
                    }
                    // Far behind, or beyond any time: re-anchor forward.
                    _ => self.reanchor(device_us, host_us.max(self.last_stamp)),
                }
            }
            // The device clock went back (a restart, a wrap): re-anchor, after the last stamp.
            Some(_) => self.reanchor(device_us, host_us.max(self.last_stamp + 1)),
            None => {
                let t = if self.last_stamp == 0 {
                    host_us
                } else {
                    host_us.max(self.last_stamp + 1)
                };
                self.anchor = Some((t, device_us));
                t
            }
        };
        self.last_device_us = device_us;
        self.last_stamp = t;
        t
    }

    fn reanchor(&mut self, device_us: u64, host_us: u64) -> u64 {
        self.reanchors += 1;
        self.anchor = Some((host_us, device_us));
        host_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(s: &mut LineSplitter, input: &[u8]) -> Vec<Result<(Vec<u8>, u8), usize>> {
        let mut got = Vec::new();
        s.push(input, |p| match p {
            Piece::Line { text, end } => got.push(Ok((text.to_vec(), end))),
            Piece::Overlong { len } => got.push(Err(len)),
        });
        got
    }

    #[test]
    fn splitter_cuts_at_every_terminator_and_keeps_partial_lines() {
        let mut s = LineSplitter::new(16, b"\r\x07");
        assert_eq!(
            lines(&mut s, b"t1230\r\x07t12"),
            vec![Ok((b"t1230".to_vec(), b'\r')), Ok((vec![], 0x07))]
        );
        assert_eq!(s.pending(), 3);
        assert_eq!(
            lines(&mut s, b"31AB\r"),
            vec![Ok((b"t1231AB".to_vec(), b'\r'))]
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn splitter_drops_an_overlong_line_up_to_the_next_terminator() {
        let mut s = LineSplitter::new(4, b"\n");
        assert_eq!(lines(&mut s, b"abc"), vec![]);
        assert_eq!(lines(&mut s, b"defgh"), vec![Err(8)]);
        assert_eq!(s.pending(), 0, "buffer reset, nothing kept");
        assert_eq!(lines(&mut s, b"ijklmnop"), vec![], "still discarding");
        assert_eq!(lines(&mut s, b"q\nok\n"), vec![Ok((b"ok".to_vec(), b'\n'))]);
        assert_eq!(lines(&mut s, b"12345\n"), vec![Err(5)]);
        assert_eq!(
            lines(&mut s, b"1234\n"),
            vec![Ok((b"1234".to_vec(), b'\n'))]
        );
    }

    #[test]
    fn device_clock_keeps_device_spacing_and_reanchors() {
        let mut c = DeviceClock::new(Duration::from_secs(1));
        let h = 1_700_000_000_000_000;
        assert_eq!(c.stamp(5_000, h), h, "first reading anchors");
        assert_eq!(c.stamp(6_000, h + 1_700), h + 1_000, "device spacing kept");
        assert_eq!(c.stamp(1_000_000, h + 1_500_000), h + 995_000, "within 1 s");
        assert_eq!(c.reanchors(), 0);
        assert_eq!(
            c.stamp(500, h + 1_600_000),
            h + 1_600_000,
            "backwards: re-anchor"
        );
        assert_eq!(c.reanchors(), 1);
        assert_eq!(
            c.stamp(1_500, h + 5_000_000),
            h + 5_000_000,
            "drifted: re-anchor"
        );
        assert_eq!(c.reanchors(), 2);
        assert_eq!(
            c.stamp(u64::MAX, h + 5_000_000),
            h + 5_000_000,
            "no overflow"
        );
    }

    #[test]
    fn a_backlog_read_at_open_is_stamped_increasing_and_the_clock_settles() {
        // 100 readings that waited 1 s in the port's buffer arrive at once, then live ones.
        let mut c = DeviceClock::new(Duration::from_secs(1));
        let h = 1_700_000_000_000_000;
        let dev0 = 50_000_000;
        let mut stamps = Vec::new();
        for k in 0..100 {
            stamps.push((c.stamp(dev0 + k * 10_000, h), h));
        }
        for k in 0..300 {
            let host = h + 10_000 + k * 10_000 + 300;
            stamps.push((c.stamp(dev0 + 1_000_000 + k * 10_000, host), host));
        }
        for w in stamps.windows(2) {
            assert!(w[1].0 > w[0].0, "stamps increase: {w:?}");
        }
        for (t, host) in &stamps {
            // At most max_drift / 4 after receipt, plus 1 µs per reading received at one instant.
            assert!(*t <= host + 250_100, "{t} well after {host}");
        }
        assert_eq!(c.reanchors(), 0, "slews, not re-anchors");
        // Settled: the live readings keep the device's 10 ms spacing.
        let tail: Vec<u64> = stamps[300..].iter().map(|s| s.0).collect();
        assert!(tail.windows(2).all(|w| w[1] - w[0] == 10_000), "{tail:?}");
    }

    proptest! {
        /// However the input is chunked, the splitter cuts the same lines.
        #[test]
        fn splitting_does_not_depend_on_chunking(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..10),
        ) {
            let mut whole = LineSplitter::new(32, b"\r\n");
            let want = lines(&mut whole, &data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut parts = LineSplitter::new(32, b"\r\n");
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                got.extend(lines(&mut parts, &data[at..c]));
                at = c;
            }
            prop_assert_eq!(got, want);
            prop_assert!(parts.pending() <= 32);
        }

        /// Stamps never go backwards while the device clock advances steadily.
        #[test]
        fn stamps_are_monotonic_for_a_steady_device(steps in proptest::collection::vec((0u64..2_000, 0u64..3_000), 1..200)) {
            let mut c = DeviceClock::new(Duration::from_secs(1));
            let (mut dev, mut host) = (0u64, 1_000_000u64);
            let mut last = 0;
            for (dd, dh) in steps {
                dev += dd;
                host += dh;
                let t = c.stamp(dev, host);
                prop_assert!(t.abs_diff(host) <= 1_000_000);
                // Never after its receipt (ties at one host instant advance by 1 µs each).
                prop_assert!(t <= host + 250_000 + 200, "{t} well after {host}");
                prop_assert!(t >= last, "stamps never go back while the device advances");
                last = t;
            }
        }
    }
}

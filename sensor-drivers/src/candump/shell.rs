//! The async shell of the candump replay: reads the log file in blocks, feeds its lines to
//! [`ReplayCore`], sleeps until frames are due and hands them to the [`Outlet`] in chunks.

use super::replay::{PassEnd, ReplayCore, Speed, Step};
use crate::sample::Reading;
use crate::source::{Backoff, Outlet, wall_clock_us};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Settings of one candump replay source.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// The `candump -l` / `-L` log file.
    pub path: PathBuf,
    /// Recorded pace, a multiple of it, or flat out.
    pub speed: Speed,
    /// Start over at the end of the log (timestamps keep increasing).
    pub looping: bool,
    /// Interfaces whose frames are replayed; empty: every interface in the log.
    pub interfaces: Vec<String>,
}

/// Readings per chunk at most.
pub const CHUNK_READINGS: usize = 1024;
/// A paced replay hands over what it has before sleeping past this window (µs after the first
/// pending frame was due), so readings wait at most about this long.
pub const CHUNK_WINDOW_US: u64 = 5_000;
/// Longer lines are counted as malformed and skipped (a candump line is under 300 bytes).
pub const MAX_LINE: usize = 4096;
const READ_BLOCK: usize = 64 * 1024;

enum Flow {
    Go,
    Cancelled,
}

/// Readings waiting to be handed over.
struct Pending<'a> {
    outlet: &'a Outlet,
    flat_out: bool,
    readings: Vec<Reading>,
    first_due_us: u64,
    /// The agent has gone: a flat-out replay stops working and waits to be cancelled.
    closed: bool,
}

impl Pending<'_> {
    async fn flush(&mut self) {
        if self.readings.is_empty() {
            return;
        }
        let r = std::mem::replace(&mut self.readings, Vec::with_capacity(CHUNK_READINGS));
        if self.flat_out {
            if !self.outlet.send(wall_clock_us(), r).await {
                // The agent has gone: nothing will take readings any more.
                self.closed = true;
            }
        } else {
            self.outlet.emit(wall_clock_us(), r);
        }
    }
}

/// Everything one replay run shares between passes.
struct Run<'a> {
    core: ReplayCore,
    pending: Pending<'a>,
    start: Instant,
    cancel: &'a CancellationToken,
}

impl Run<'_> {
    async fn step(&mut self, step: Step) -> Flow {
        match step {
            Step::Frame { due_us, frame, .. } => {
                if !self.pending.flat_out {
                    let due = self.start + Duration::from_micros(due_us);
                    if due > Instant::now() {
                        if !self.pending.readings.is_empty()
                            && due_us > self.pending.first_due_us.saturating_add(CHUNK_WINDOW_US)
                        {
                            self.pending.flush().await;
                        }
                        tokio::select! {
                            _ = self.cancel.cancelled() => return Flow::Cancelled,
                            _ = tokio::time::sleep_until(due) => {}
                        }
                    }
                }
                if self.pending.readings.is_empty() {
                    self.pending.first_due_us = due_us;
                }
                self.pending.readings.push(Reading::Frame(frame));
                if self.pending.readings.len() >= CHUNK_READINGS {
                    self.pending.flush().await;
                    if self.cancel.is_cancelled() || self.pending.closed {
                        return Flow::Cancelled;
                    }
                }
            }
            Step::Skip => {}
            Step::Overrun(n) => self.pending.outlet.stats().overrun(n),
            Step::Malformed(why) => {
                tracing::debug!("{why}");
                self.pending.outlet.stats().parse_error(1, why);
            }
        }
        Flow::Go
    }

    fn malformed(&self, line_no: u64, why: &str) {
        if self.core.pass() == 0 {
            let msg = format!("line {line_no}: {why}");
            tracing::debug!("{msg}");
            self.pending.outlet.stats().parse_error(1, msg);
        }
    }

    async fn line(&mut self, line_no: u64, bytes: &[u8]) -> Flow {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                let step = self.core.line(line_no, text);
                self.step(step).await
            }
            Err(_) => {
                self.malformed(line_no, "not valid UTF-8");
                Flow::Go
            }
        }
    }

    /// One pass through the file; `done` counts the lines of this pass already handled (a pass
    /// resumed after a read error skips them).
    async fn read_pass(
        &mut self,
        file: &mut tokio::fs::File,
        done: &mut u64,
    ) -> std::io::Result<Flow> {
        let skip = *done;
        let mut buf = vec![0u8; READ_BLOCK];
        let (mut start, mut end) = (0usize, 0usize);
        let mut line_no = 0u64;
        let mut overlong = false;
        loop {
            while let Some(p) = buf[start..end].iter().position(|&c| c == b'\n') {
                let line = start..start + p;
                start += p + 1;
                line_no += 1;
                if std::mem::take(&mut overlong) {
                    if line_no > skip {
                        self.malformed(line_no, &format!("longer than {MAX_LINE} bytes"));
                        *done = line_no;
                    }
                    continue;
                }
                if line_no <= skip {
                    continue;
                }
                if line.len() > MAX_LINE {
                    self.malformed(line_no, &format!("longer than {MAX_LINE} bytes"));
                    *done = line_no;
                    continue;
                }
                if let Flow::Cancelled = self.line(line_no, &buf[line]).await {
                    return Ok(Flow::Cancelled);
                }
                *done = line_no;
            }
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end >= MAX_LINE {
                // No line break within MAX_LINE bytes: drop what we have and skip to the next one.
                overlong = true;
                end = 0;
            }
            let n = file.read(&mut buf[end..]).await?;
            if n == 0 {
                if end > 0 || overlong {
                    line_no += 1;
                    if line_no > skip {
                        if overlong {
                            self.malformed(line_no, &format!("longer than {MAX_LINE} bytes"));
                        } else if let Flow::Cancelled = self.line(line_no, &buf[..end]).await {
                            return Ok(Flow::Cancelled);
                        }
                        *done = line_no;
                    }
                }
                return Ok(Flow::Go);
            }
            end += n;
        }
    }

    async fn cached_pass(&mut self) -> Flow {
        let mut k = 0;
        while let Some(step) = self.core.cached(k) {
            if let Flow::Cancelled = self.step(step).await {
                return Flow::Cancelled;
            }
            k += 1;
        }
        Flow::Go
    }

    /// Waits `backoff`'s next delay; false when cancelled meanwhile.
    async fn back_off(&self, backoff: &mut Backoff) -> bool {
        let d = backoff.failed(wall_clock_us());
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Replays a candump log into `outlet` until the log ends (not looping) or `cancel` fires.
///
/// Malformed lines count as parse errors (the message names the line), `DROPCOUNT` lines as
/// overruns, both in the first pass only. A missing or unreadable file sets the source's error
/// and is retried with [`Backoff`]; a read error mid-file resumes after the last line handled.
/// A paced replay hands readings over without waiting ([`Outlet::emit`]); a flat-out replay
/// waits for the agent ([`Outlet::send`]), so it loses nothing.
pub async fn run_replay(opts: ReplayOptions, outlet: Outlet, cancel: CancellationToken) {
    let span =
        tracing::info_span!("candump_replay", path = %opts.path.display(), speed = %opts.speed);
    replay(opts, &outlet, &cancel).instrument(span).await;
}

async fn replay(opts: ReplayOptions, outlet: &Outlet, cancel: &CancellationToken) {
    let stats = outlet.stats();
    let mut run = Run {
        core: ReplayCore::new(
            opts.speed,
            opts.looping,
            opts.interfaces.clone(),
            wall_clock_us(),
        ),
        pending: Pending {
            outlet,
            flat_out: opts.speed.is_flat_out(),
            readings: Vec::with_capacity(CHUNK_READINGS),
            first_due_us: 0,
            closed: false,
        },
        start: Instant::now(),
        cancel,
    };
    let mut backoff = Backoff::default();
    let mut failed = false;
    let mut done = 0u64;
    let mut from_cache = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if from_cache {
            if let Flow::Cancelled = run.cached_pass().await {
                break;
            }
        } else {
            let mut file = match tokio::fs::File::open(&opts.path).await {
                Ok(f) => f,
                Err(e) => {
                    stats.set_connected(false);
                    stats.set_error(format!("cannot open {}: {e}", opts.path.display()));
                    tracing::warn!("cannot open {}: {e}", opts.path.display());
                    failed = true;
                    if !run.back_off(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            stats.set_connected(true);
            backoff.connected(wall_clock_us());
            if std::mem::take(&mut failed) {
                stats.reconnected();
            }
            match run.read_pass(&mut file, &mut done).await {
                Ok(Flow::Go) => {}
                Ok(Flow::Cancelled) => break,
                Err(e) => {
                    stats.set_connected(false);
                    stats.set_error(format!(
                        "reading {} after line {done}: {e}",
                        opts.path.display()
                    ));
                    tracing::warn!("reading {} after line {done}: {e}", opts.path.display());
                    failed = true;
                    run.pending.flush().await;
                    if !run.back_off(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        run.pending.flush().await;
        if run.pending.closed {
            break;
        }
        done = 0;
        match run.core.end_pass() {
            PassEnd::Finished => {
                stats.set_connected(false);
                tracing::info!("replay finished");
                return;
            }
            PassEnd::Again { cached } => from_cache = cached,
            PassEnd::Empty => {
                let which = if opts.interfaces.is_empty() {
                    String::new()
                } else {
                    format!(" of {}", opts.interfaces.join(", "))
                };
                stats.set_error(format!(
                    "{} has no frames{which} to loop over",
                    opts.path.display()
                ));
                failed = true;
                if !run.back_off(&mut backoff).await {
                    return;
                }
            }
        }
    }
    // Cancelled (or the agent has gone): hand over what is pending, then wait for the cancel.
    run.pending.flush().await;
    stats.set_connected(false);
    cancel.cancelled().await;
}

//! `pitlink bench crash`: a crash loop against the queue.
//!
//! Each cycle, a writer child (`pitlink bench crash-writer`, hidden) opens the queue, announces
//! its run, appends one batch per millisecond with a group commit every `flush` and reports each
//! append and each commit on stdout ([`WriterLine`]). The bench SIGKILLs it after a random delay,
//! then acts as the receiver: it opens the queue itself, reads and verifies every undelivered
//! batch, "delivers" it, acknowledges it and syncs. The [`Ledger`] (sans-IO: fed with the child's
//! lines, the deliveries and the [`Recovery`] figures) then checks the killed run against what
//! the child had reported.
//!
//! Every open starts a run, so runs alternate: child, bench, child, … and run numbers advance by
//! two per cycle. The bench's runs append nothing.

use crate::codec::BatchId;
use crate::queue::{BatchMeta, Queue, QueueOptions, Recovery};
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Segment size of the crash-loop queue: small, so runs cross segment boundaries (the segment
/// roll fsyncs the old segment and the directory) now and then.
pub const SEGMENT_BYTES: u64 = 1 << 20;
/// Disk cap of the crash-loop queue: far above what a cycle writes, so nothing is evicted.
pub const CAP_BYTES: u64 = 1 << 30;

fn queue_options(dir: &Path) -> QueueOptions {
    QueueOptions {
        cap_bytes: CAP_BYTES,
        segment_bytes: SEGMENT_BYTES,
        ..QueueOptions::new(dir.to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads: globally unique, verifiable content.

/// `counter u64 | run u32 | seq u64 | len u32` before the filler, `crc32c u32` after it.
const PAYLOAD_HEAD: usize = 24;
pub const PAYLOAD_OVERHEAD: usize = PAYLOAD_HEAD + 4;

/// Filler bytes derived from the counter: a payload whose body does not match its counter was
/// mixed up, not only damaged.
fn filler(counter: u64) -> impl Iterator<Item = u8> {
    XorShift::new(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03).bytes()
}

/// The payload of the batch `id` carrying content `counter`, `len` bytes long (at least
/// [`PAYLOAD_OVERHEAD`]).
pub fn encode_payload(id: BatchId, counter: u64, len: usize) -> Vec<u8> {
    let len = len.max(PAYLOAD_OVERHEAD);
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&counter.to_le_bytes());
    p.extend_from_slice(&id.run.to_le_bytes());
    p.extend_from_slice(&id.seq.to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    p.extend(filler(counter).take(len - PAYLOAD_OVERHEAD));
    let crc = crc32c::crc32c(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    Short,
    Checksum,
    Length,
    /// Intact, but written for another batch.
    WrongId(BatchId),
    /// Intact checksum, but the filler does not belong to the counter.
    Content,
    /// The queue listed the batch as undelivered but had nothing to read.
    Missing,
    /// The queue could not read it (its own record checksum failed, or an I/O error).
    Unreadable,
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Checks a payload read back as batch `id`; returns its content counter.
pub fn verify_payload(id: BatchId, p: &[u8]) -> Result<u64, PayloadError> {
    if p.len() < PAYLOAD_OVERHEAD {
        return Err(PayloadError::Short);
    }
    let (body, crc) = p.split_at(p.len() - 4);
    if crc32c::crc32c(body) != le_u32(crc) {
        return Err(PayloadError::Checksum);
    }
    let counter = le_u64(&body[0..]);
    let found = BatchId {
        run: le_u32(&body[8..]),
        seq: le_u64(&body[12..]),
    };
    if le_u32(&body[20..]) as usize != p.len() {
        return Err(PayloadError::Length);
    }
    if found != id {
        return Err(PayloadError::WrongId(found));
    }
    if !body[PAYLOAD_HEAD..]
        .iter()
        .copied()
        .eq(filler(counter).take(body.len() - PAYLOAD_HEAD))
    {
        return Err(PayloadError::Content);
    }
    Ok(counter)
}

// ---------------------------------------------------------------------------------------------
// The writer's report, one line each.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterLine {
    /// The queue is open: this run, and where recovery found the previous run's durable end.
    Run {
        run: u32,
        previous_durable: Option<u64>,
    },
    /// `append` returned for `seq`, carrying content `counter`, `t_us` after the announcement.
    Appended { seq: u64, counter: u64, t_us: u64 },
    /// A group commit returned: every seq up to `seq` is durable.
    Durable { seq: u64, t_us: u64 },
}

impl fmt::Display for WriterLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterLine::Run {
                run,
                previous_durable: Some(d),
            } => write!(f, "run {run} previous_durable {d}"),
            WriterLine::Run {
                run,
                previous_durable: None,
            } => write!(f, "run {run} previous_durable none"),
            WriterLine::Appended { seq, counter, t_us } => {
                write!(f, "appended {seq} counter {counter} t_us {t_us}")
            }
            WriterLine::Durable { seq, t_us } => write!(f, "durable {seq} t_us {t_us}"),
        }
    }
}

impl WriterLine {
    pub fn parse(line: &str) -> Option<WriterLine> {
        let w: Vec<&str> = line.split_ascii_whitespace().collect();
        match w.as_slice() {
            ["run", run, "previous_durable", d] => Some(WriterLine::Run {
                run: run.parse().ok()?,
                previous_durable: match *d {
                    "none" => None,
                    d => Some(d.parse().ok()?),
                },
            }),
            ["appended", seq, "counter", counter, "t_us", t] => Some(WriterLine::Appended {
                seq: seq.parse().ok()?,
                counter: counter.parse().ok()?,
                t_us: t.parse().ok()?,
            }),
            ["durable", seq, "t_us", t] => Some(WriterLine::Durable {
                seq: seq.parse().ok()?,
                t_us: t.parse().ok()?,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub counter: u64,
    pub t_us: u64,
}

/// Everything one killed writer reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleLog {
    pub run: Option<u32>,
    /// In the order printed (ascending seq).
    pub appended: Vec<Appended>,
    pub last_durable: Option<u64>,
    /// Lines that did not parse (a line cut by the kill would be one).
    pub unparsed: u64,
}

impl CycleLog {
    pub fn feed(&mut self, line: &str) {
        match WriterLine::parse(line) {
            Some(WriterLine::Run { run, .. }) => self.run = Some(run),
            Some(WriterLine::Appended { seq, counter, t_us }) => {
                self.appended.push(Appended { seq, counter, t_us })
            }
            Some(WriterLine::Durable { seq, .. }) => {
                self.last_durable = Some(self.last_durable.map_or(seq, |d| d.max(seq)))
            }
            None => self.unparsed += 1,
        }
    }

    fn append_time(&self, seq: u64) -> Option<u64> {
        let i = self.appended.binary_search_by_key(&seq, |a| a.seq).ok()?;
        Some(self.appended[i].t_us)
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting (sans-IO).

/// Counters over the whole crash loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CrashTotals {
    pub kills: u64,
    /// Batches the writer had reported durable that were neither recovered nor delivered.
    pub lost_durable: u64,
    /// A content counter delivered under two different batch identities.
    pub duplicates_after_dedup: u64,
    /// Batches reported appended, above the durable end that recovery found: lost in the crash
    /// before their fsync (allowed, bounded by the flush interval).
    pub lost_before_fsync: u64,
    /// Batches reported appended, not delivered, yet at or below the recovered durable end:
    /// neither durable-lost nor explained by the fsync window.
    pub lost_unaccounted: u64,
    /// Longest span, at a kill, between the append of the last durable batch (or the run's
    /// start) and the last append: the window a power loss could have cost.
    pub max_exposure_us: u64,
    pub batches_appended: u64,
    /// Distinct batch identities delivered.
    pub batches_recovered: u64,
    /// Deliveries of an identity already delivered, dropped (the receiver's dedup).
    pub redelivered: u64,
    /// Payloads that failed verification (not delivered; acknowledged so they are not re-read).
    pub corrupt_payloads: u64,
    /// Delivered batches whose content counter is not the one the writer reported for that seq.
    pub content_mismatches: u64,
    /// Cycles where `Recovery::previous_durable_last_seq` was below the writer's last durable.
    pub durable_end_short: u64,
    /// Cycles where recovery's previous run was not the run the writer announced.
    pub run_mismatches: u64,
    /// Kills that landed before the writer announced its run (during its start or open).
    pub kills_before_announce: u64,
    /// Delivered batches the writer had not reported (killed between the write and the line).
    pub unreported_deliveries: u64,
    pub unparsed_lines: u64,
    pub recovery_corrupt_records: u64,
    pub recovery_truncated_bytes: u64,
}

/// What the receiver did with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    New,
    /// Same identity as an earlier delivery: dropped.
    DuplicateId,
    /// New identity, but content already delivered under another one.
    DuplicateContent,
    Corrupt(PayloadError),
}

/// The receiver's state across the loop: delivered identities (dedup) and content counters.
#[derive(Debug, Default)]
pub struct Ledger {
    delivered: HashMap<BatchId, u64>,
    by_counter: HashMap<u64, BatchId>,
    totals: CrashTotals,
}

impl Ledger {
    pub fn totals(&self) -> &CrashTotals {
        &self.totals
    }

    /// One batch read back from the queue, with the outcome of its verification.
    pub fn deliver(&mut self, id: BatchId, verified: Result<u64, PayloadError>) -> Delivery {
        let counter = match verified {
            Ok(c) => c,
            Err(e) => {
                self.totals.corrupt_payloads += 1;
                return Delivery::Corrupt(e);
            }
        };
        if self.delivered.contains_key(&id) {
            self.totals.redelivered += 1;
            return Delivery::DuplicateId;
        }
        self.delivered.insert(id, counter);
        self.totals.batches_recovered += 1;
        match self.by_counter.get(&counter) {
            Some(other) if *other != id => {
                self.totals.duplicates_after_dedup += 1;
                Delivery::DuplicateContent
            }
            _ => {
                self.by_counter.insert(counter, id);
                Delivery::New
            }
        }
    }

    /// Closes a cycle: checks the killed writer's report against the deliveries so far and the
    /// recovery figures of the open that followed the kill.
    pub fn close_cycle(&mut self, log: &CycleLog, rec: &Recovery) {
        let t = &mut self.totals;
        t.kills += 1;
        t.batches_appended += log.appended.len() as u64;
        t.unparsed_lines += log.unparsed;
        t.recovery_corrupt_records += rec.corrupt_records;
        t.recovery_truncated_bytes += rec.truncated_bytes;
        let Some(run) = log.run else {
            t.kills_before_announce += 1;
            return;
        };
        let recovered_end = if rec.previous_run == Some(run) {
            rec.previous_durable_last_seq
        } else {
            t.run_mismatches += 1;
            None
        };
        let id = |seq| BatchId { run, seq };
        if let Some(d) = log.last_durable {
            if recovered_end.is_none_or(|e| e < d) {
                t.durable_end_short += 1;
            }
            // Seqs are handed out from 0 without holes: a commit covers every one up to d.
            t.lost_durable += (0..=d)
                .filter(|&s| !self.delivered.contains_key(&id(s)))
                .count() as u64;
        }
        for a in &log.appended {
            match self.delivered.get(&id(a.seq)) {
                Some(&c) => {
                    if c != a.counter {
                        t.content_mismatches += 1;
                    }
                }
                None if log.last_durable.is_some_and(|d| a.seq <= d) => {} // counted above
                None if recovered_end.is_none_or(|e| a.seq > e) => t.lost_before_fsync += 1,
                None => t.lost_unaccounted += 1,
            }
        }
        let reported_max = log.appended.last().map(|a| a.seq);
        t.unreported_deliveries += self
            .delivered
            .keys()
            .filter(|k| k.run == run && reported_max.is_none_or(|m| k.seq > m))
            .count() as u64;
        if let Some(last) = log.appended.last() {
            let since = log
                .last_durable
                .and_then(|d| log.append_time(d))
                .unwrap_or(0);
            t.max_exposure_us = t.max_exposure_us.max(last.t_us.saturating_sub(since));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness for the kill moments.

/// xorshift64*: enough to spread kill moments and fill payloads; reproducible from its seed.
/// The one small generator of the benchmarks and system tests.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x2545_F491_4F6C_DD1D
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// An endless stream of its bytes (payload filler).
    pub fn bytes(mut self) -> impl Iterator<Item = u8> {
        std::iter::repeat_with(move || self.next_u64() as u8)
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant at these ranges).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }
}

/// A seed from the clock, for runs that do not pass one.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------------------------
// The writer child.

#[derive(Debug, Clone)]
pub struct CrashWriterOptions {
    pub dir: PathBuf,
    /// First content counter; the bench gives each cycle its own range.
    pub counter_base: u64,
    pub batch_bytes: usize,
    pub flush: Duration,
    /// One batch per this interval.
    pub every: Duration,
    /// The writer stops by itself after this long (a safety net: the bench kills it long before).
    pub max_time: Duration,
}

fn say(out: &mut impl Write, line: WriterLine) -> Result<()> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Opens the queue, announces the run, then appends and commits at a steady rate, reporting
/// every append and every commit on `out` (flushed per line). Appends at least one batch and
/// ends with a commit after `max_time`.
pub fn crash_writer(opts: &CrashWriterOptions, out: &mut impl Write) -> Result<()> {
    let (mut q, rec) = Queue::open(queue_options(&opts.dir))?;
    say(
        out,
        WriterLine::Run {
            run: q.run(),
            previous_durable: rec.previous_durable_last_seq,
        },
    )?;
    let start = Instant::now();
    let us = |t: Instant| t.duration_since(start).as_micros() as u64;
    let mut next = start;
    let mut last_sync = start;
    let mut counter = opts.counter_base;
    let meta = BatchMeta {
        samples: 1,
        t_first_us: 0,
        t_last_us: 0,
    };
    loop {
        next += opts.every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let (res, _gaps) = q.append(meta, |id| encode_payload(id, counter, opts.batch_bytes));
        let (id, _) = res.context("queue append failed")?;
        say(
            out,
            WriterLine::Appended {
                seq: id.seq,
                counter,
                t_us: us(Instant::now()),
            },
        )?;
        counter += 1;
        let stop = start.elapsed() >= opts.max_time;
        if stop || last_sync.elapsed() >= opts.flush {
            q.sync()?;
            last_sync = Instant::now();
            if let Some(seq) = q.stats().durable_seq {
                say(
                    out,
                    WriterLine::Durable {
                        seq,
                        t_us: us(last_sync),
                    },
                )?;
            }
        }
        if stop {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The loop.

#[derive(Debug, Clone)]
pub struct CrashBenchOptions {
    /// The `pitlink` executable to run `bench crash-writer` with (the CLI passes its own).
    pub exe: PathBuf,
    pub kills: u64,
    /// Where to make the scratch directory (default: the system temp directory).
    pub dir: Option<PathBuf>,
    pub flush: Duration,
    pub batch_bytes: usize,
    pub seed: u64,
    /// Kill delay after the spawn, uniform in this range (ms).
    pub kill_after_ms: (u64, u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct CrashBench {
    pub crash_kills: u64,
    pub crash_lost_durable: u64,
    pub crash_duplicates_after_dedup: u64,
    pub crash_lost_before_fsync: u64,
    /// The longest window, at a kill, between the last durable batch and the last appended
    /// one: the bound of `crash_lost_before_fsync` (about `flush_ms` plus one fsync).
    pub crash_lost_before_fsync_max_ms: f64,
    pub flush_ms: u64,
    pub batches_appended: u64,
    pub batches_recovered: u64,
    pub seed: u64,
    pub elapsed_s: f64,
    pub batch_bytes: usize,
    pub kill_after_ms: [u64; 2],
    pub crash_lost_unaccounted: u64,
    pub crash_redelivered_dropped: u64,
    pub crash_corrupt_payloads: u64,
    pub crash_content_mismatches: u64,
    pub crash_durable_end_short: u64,
    pub crash_run_mismatches: u64,
    pub crash_kills_before_announce: u64,
    pub crash_unreported_deliveries: u64,
    pub recovery_corrupt_records: u64,
    pub recovery_truncated_bytes: u64,
}

impl CrashBench {
    fn from_totals(t: &CrashTotals, opts: &CrashBenchOptions, elapsed: Duration) -> CrashBench {
        CrashBench {
            crash_kills: t.kills,
            crash_lost_durable: t.lost_durable,
            crash_duplicates_after_dedup: t.duplicates_after_dedup,
            crash_lost_before_fsync: t.lost_before_fsync,
            crash_lost_before_fsync_max_ms: t.max_exposure_us as f64 / 1000.0,
            flush_ms: opts.flush.as_millis() as u64,
            batches_appended: t.batches_appended,
            batches_recovered: t.batches_recovered,
            seed: opts.seed,
            elapsed_s: elapsed.as_secs_f64(),
            batch_bytes: opts.batch_bytes,
            kill_after_ms: [opts.kill_after_ms.0, opts.kill_after_ms.1],
            crash_lost_unaccounted: t.lost_unaccounted,
            crash_redelivered_dropped: t.redelivered,
            crash_corrupt_payloads: t.corrupt_payloads,
            crash_content_mismatches: t.content_mismatches,
            crash_durable_end_short: t.durable_end_short,
            crash_run_mismatches: t.run_mismatches,
            crash_kills_before_announce: t.kills_before_announce,
            crash_unreported_deliveries: t.unreported_deliveries,
            recovery_corrupt_records: t.recovery_corrupt_records,
            recovery_truncated_bytes: t.recovery_truncated_bytes,
        }
    }

    /// True if the loop found nothing the queue promises against.
    pub fn clean(&self) -> bool {
        self.crash_lost_durable == 0
            && self.crash_duplicates_after_dedup == 0
            && self.crash_lost_unaccounted == 0
            && self.crash_corrupt_payloads == 0
            && self.crash_content_mismatches == 0
            && self.crash_durable_end_short == 0
            && self.crash_run_mismatches == 0
    }
}

/// The human summary (stderr without `--json`).
pub fn render(r: &CrashBench) -> String {
    format!(
        "pitlink bench crash: {} kills in {:.1} s (seed {}, kill after {}-{} ms, flush every {} ms)\n\
         \x20 batches appended          {}\n\
         \x20 batches recovered         {}  (redelivered and dropped: {})\n\
         \x20 lost though durable       {}\n\
         \x20 duplicates after dedup    {}\n\
         \x20 lost before fsync         {}  (window at a kill: at most {:.1} ms)\n\
         \x20 corrupt payloads          {}  (recovery skipped {} records, cut {} bytes)\n\
         \x20 other discrepancies       {}  (unaccounted losses, content mismatches, short durable ends, run mismatches)\n\
         \x20 verdict                   {}\n",
        r.crash_kills,
        r.elapsed_s,
        r.seed,
        r.kill_after_ms[0],
        r.kill_after_ms[1],
        r.flush_ms,
        r.batches_appended,
        r.batches_recovered,
        r.crash_redelivered_dropped,
        r.crash_lost_durable,
        r.crash_duplicates_after_dedup,
        r.crash_lost_before_fsync,
        r.crash_lost_before_fsync_max_ms,
        r.crash_corrupt_payloads,
        r.recovery_corrupt_records,
        r.recovery_truncated_bytes,
        r.crash_lost_unaccounted
            + r.crash_content_mismatches
            + r.crash_durable_end_short
            + r.crash_run_mismatches,
        if r.clean() {
            "clean"
        } else {
            "DISCREPANCIES FOUND"
        },
    )
}

/// The bench, acting as the receiver after a kill: delivers (verifies, dedups, acks) every
/// undelivered batch, syncs the acknowledgements and closes the queue.
fn receive(dir: &Path, ledger: &mut Ledger) -> Result<Recovery> {
    let (mut q, rec) = Queue::open(queue_options(dir))?;
    for (id, _) in q.undelivered() {
        let verified = match q.read(id) {
            Ok(Some(p)) => verify_payload(id, &p),
            Ok(None) => Err(PayloadError::Missing),
            Err(_) => Err(PayloadError::Unreadable),
        };
        ledger.deliver(id, verified);
        q.ack(id);
    }
    q.sync()?;
    Ok(rec)
}

pub fn crash(opts: &CrashBenchOptions) -> Result<CrashBench> {
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix("pitlink-crash-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
    let qdir = tmp.path().join("queue");
    let mut rng = XorShift::new(opts.seed);
    let mut ledger = Ledger::default();
    let start = Instant::now();
    for cycle in 0..opts.kills {
        // Each cycle's content counters live in their own range: unique across the loop.
        let counter_base = (cycle + 1) << 32;
        let mut child = Command::new(&opts.exe)
            .args(["bench", "crash-writer", "--dir"])
            .arg(&qdir)
            .args([
                "--counter-base",
                &counter_base.to_string(),
                "--batch-kib",
                &(opts.batch_bytes >> 10).max(1).to_string(),
                "--flush-ms",
                &opts.flush.as_millis().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {} bench crash-writer", opts.exe.display()))?;
        let stdout = child.stdout.take().context("writer stdout")?;
        let reader = std::thread::spawn(move || {
            let mut log = CycleLog::default();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => log.feed(&l),
                    Err(_) => {
                        log.unparsed += 1;
                        break;
                    }
                }
            }
            log
        });
        let delay = rng.range(opts.kill_after_ms.0, opts.kill_after_ms.1);
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.try_wait()? {
            let _ = reader.join();
            bail!("bench crash-writer ended by itself ({status}) in cycle {cycle}");
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
        child.wait()?;
        let log = reader
            .join()
            .map_err(|_| anyhow!("the writer's stdout reader panicked"))?;
        let rec = receive(&qdir, &mut ledger)?;
        ledger.close_cycle(&log, &rec);
    }
    Ok(CrashBench::from_totals(
        ledger.totals(),
        opts,
        start.elapsed(),
    ))
}

#[cfg(test)]
mod tests;

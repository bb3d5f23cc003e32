//! `pitlink bench ingest`: CAN frames from a candump replay through the daemon's ingest path —
//! source task → outlet → batcher → codec → queue with group commit on its own thread — flat
//! out, and paced at a fixed frame rate for the CPU and memory figures.

use super::Committer;
use crate::batch::Batcher;
use crate::codec::{self, BatchId};
use crate::queue::{BatchMeta, Queue, QueueOptions};
use anyhow::{Context, Result};
use sensor_drivers::candump::{LogLine, ReplayOptions, Speed, parse_line, run_replay};
use sensor_drivers::{Outlet, Reading, SourceStats};
use serde::Serialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The candump log replayed (looped).
    pub input: PathBuf,
    /// Directory for the queue (default: the system temp directory).
    pub dir: Option<PathBuf>,
    /// Length of the flat-out phase.
    pub flat_out: Duration,
    /// Frame rate of the paced phase (frames per second, all buses together).
    pub paced_rate: u64,
    /// Length of the paced phase.
    pub paced: Duration,
    /// Batch window, as the daemon's `[batch] window_ms`.
    pub window: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    pub input: String,
    /// Frames in one pass over the log.
    pub log_frames: u64,
    /// Baseline, same run: the candump line parser alone over the log's text, frames per second.
    pub parse_frames_per_s: f64,
    /// Frames per second through the whole ingest path, flat out, until durable in the queue.
    pub max_frames_per_s: f64,
    pub ratio_to_parse: f64,
    /// CPU seconds (user + system, all threads) per wall second while ingesting `paced_rate`
    /// frames per second; 1.0 is one core.
    pub cpu_fraction_at_160k: f64,
    /// Peak resident memory of the process during the paced phase, MiB.
    pub rss_mib_at_160k: f64,
    /// Frames the source had to drop in the paced phase because the pipeline fell behind.
    pub dropped_frames: u64,
    pub paced_rate: u64,
    /// Frames per second the paced phase actually delivered into the queue.
    pub paced_achieved_frames_per_s: f64,
    /// Queue bytes on disk per frame (plain codec; the wire codec is another stage's work).
    pub queue_bytes_per_frame: f64,
    pub flat_out_s: f64,
    pub paced_s: f64,
    /// Frames the flat-out phase queued, and the frames its source handed over: equal unless
    /// the pipeline lost some.
    pub flat_out_frames: u64,
    pub flat_out_source_frames: u64,
    /// The same for the paced phase (handed over; dropped ones are not).
    pub paced_frames: u64,
    pub paced_source_frames: u64,
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    frames: u64,
    readings: u64,
    secs: f64,
    cpu_secs: f64,
    peak_rss_bytes: u64,
    drops: u64,
    queue_bytes: u64,
}

/// The RAV4 capture of the shared test data, looked up beside the repository of this build
/// and beside the current directory.
pub fn default_input() -> Result<PathBuf> {
    const REL: &str = "shared/data/candump/comma2k19_rav4_2017_can0_10s.log";
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(REL),
        PathBuf::from("..").join(REL),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .with_context(|| {
            format!(
                "the default input ../{REL} is not there (looked in {} and {}); pass a candump log with --input FILE",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

pub fn ingest(opts: &IngestOptions) -> Result<IngestBench> {
    let text = std::fs::read_to_string(&opts.input)
        .with_context(|| format!("cannot read {}", opts.input.display()))?;
    let (log_frames, log_rate, parse_frames_per_s) = parse_baseline(&text);
    anyhow::ensure!(
        log_frames > 0,
        "{} holds no CAN frames to replay",
        opts.input.display()
    );
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);

    let replay = |speed| ReplayOptions {
        path: opts.input.clone(),
        speed,
        looping: true,
        interfaces: Vec::new(),
    };
    let flat = phase(&base, opts, opts.flat_out, |out, stop| {
        run_replay(replay(Speed::FlatOut), out, stop)
    })?;
    // The replay factor that turns the log's own frame rate into `paced_rate`.
    let factor = opts.paced_rate as f64 / log_rate.max(1e-9);
    let paced = phase(&base, opts, opts.paced, |out, stop| {
        run_replay(replay(Speed::Factor(factor)), out, stop)
    })?;
    let max_frames_per_s = flat.frames as f64 / flat.secs.max(1e-9);
    Ok(IngestBench {
        input: opts.input.display().to_string(),
        log_frames,
        parse_frames_per_s,
        max_frames_per_s,
        ratio_to_parse: max_frames_per_s / parse_frames_per_s.max(1e-9),
        cpu_fraction_at_160k: paced.cpu_secs / paced.secs.max(1e-9),
        rss_mib_at_160k: paced.peak_rss_bytes as f64 / (1 << 20) as f64,
        dropped_frames: paced.drops,
        paced_rate: opts.paced_rate,
        paced_achieved_frames_per_s: paced.frames as f64 / paced.secs.max(1e-9),
        queue_bytes_per_frame: flat.queue_bytes as f64 / flat.frames.max(1) as f64,
        flat_out_s: flat.secs,
        paced_s: paced.secs,
        flat_out_frames: flat.frames,
        flat_out_source_frames: flat.readings,
        paced_frames: paced.frames,
        paced_source_frames: paced.readings,
    })
}

/// The parser alone over the log's lines for about a second: (frames per pass, the log's own
/// frame rate, parsed frames per second).
fn parse_baseline(text: &str) -> (u64, f64, f64) {
    let times: Vec<u64> = text
        .lines()
        .filter_map(|l| match parse_line(l) {
            Ok(LogLine::Frame(f)) => Some(f.timestamp.as_micros()),
            _ => None,
        })
        .collect();
    let per_pass = times.len() as u64;
    let span_us = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64,
        _ => 1e6,
    };
    let start = Instant::now();
    let mut frames = 0u64;
    while per_pass > 0 && start.elapsed() < Duration::from_secs(1) {
        for l in text.lines() {
            if let Ok(LogLine::Frame(_)) = parse_line(std::hint::black_box(l)) {
                frames += 1;
            }
        }
    }
    (
        per_pass,
        per_pass as f64 / (span_us / 1e6),
        frames as f64 / start.elapsed().as_secs_f64(),
    )
}

/// Runs one source for `length` through batcher → codec → queue with group commit, the way the
/// daemon's core does, and measures it.
fn phase<F, Fut>(base: &Path, opts: &IngestOptions, length: Duration, source: F) -> Result<Phase>
where
    F: FnOnce(Outlet, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tmp = tempfile::Builder::new()
        .prefix("pitlink-bench-ingest-")
        .tempdir_in(base)
        .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
    let (mut q, _) = Queue::open(QueueOptions {
        cap_bytes: 8 << 30,
        segment_bytes: 64 << 20,
        ..QueueOptions::new(tmp.path().join("queue"))
    })?;
    let mut committer = Committer::start()?;
    // Sources run on the async runtime, as in the daemon; this thread plays the core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, mut rx) = mpsc::channel(4096);
    let stats = Arc::new(SourceStats::default());
    let stop = CancellationToken::new();
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let task = rt.spawn(source(Outlet::new(0, tx, stats.clone()), stop.clone()));

    let window_us = opts.window.as_micros() as u64;
    let mut batcher: Batcher<Reading> =
        Batcher::new(window_us, crate::config::BatchConfig::default().max_samples);
    let mut frames = 0u64;
    let mut peak_rss = rss_bytes();
    let mut last_rss = Instant::now();
    rt.block_on(async {
        let end = tokio::time::Instant::now() + length;
        loop {
            let deadline = batcher
                .deadline_us()
                .map(|d| d.saturating_sub(crate::now_us()))
                .map(Duration::from_micros)
                .unwrap_or(Duration::from_millis(50));
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => {
                        for b in batcher.push(&c.readings, crate::now_us()) {
                            frames += append(&mut q, b);
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(deadline) => {}
                _ = tokio::time::sleep_until(end), if !stop.is_cancelled() => stop.cancel(),
            }
            if let Some(b) = batcher.poll(crate::now_us()) {
                frames += append(&mut q, b);
            }
            if q.wants_sync() {
                committer.commit(&mut q, false)?;
            }
            if last_rss.elapsed() >= Duration::from_millis(100) {
                peak_rss = peak_rss.max(rss_bytes());
                last_rss = Instant::now();
            }
        }
        anyhow::Ok(())
    })?;
    if let Some(b) = batcher.flush() {
        frames += append(&mut q, b);
    }
    committer.commit(&mut q, true)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let _ = rt.block_on(task);
    Ok(Phase {
        frames,
        readings: stats.readings(),
        secs,
        cpu_secs: cpu,
        peak_rss_bytes: peak_rss.max(rss_bytes()),
        drops: stats.drops(),
        queue_bytes: q.stats().bytes_on_disk,
    })
}

/// Encodes and queues one batch as the daemon's core does; returns the frames queued.
fn append(q: &mut Queue, batch: Vec<Reading>) -> u64 {
    let meta = BatchMeta::of_readings(&batch);
    let (res, _) = q.append(meta, |id: BatchId| {
        codec::encode(&codec::data_envelope("bench", id, "can0", &batch))
    });
    if res.is_some() { batch.len() as u64 } else { 0 }
}

/// User + system CPU seconds of the whole process so far.
fn cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// Resident set size now (`VmRSS` of /proc/self/status), bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb << 10)
}

pub fn render(r: &IngestBench) -> String {
    format!(
        "ingest of {} ({} frames per pass)\n  flat out: {:.0} frames/s through source → batcher → codec → queue (parser alone: {:.0} frames/s, ratio {:.2})\n  paced at {} frames/s for {:.0} s: {:.3} of one core, peak RSS {:.1} MiB, {} frames dropped, {:.0} frames/s achieved\n  queue: {:.1} bytes per frame on disk\n",
        r.input,
        r.log_frames,
        r.max_frames_per_s,
        r.parse_frames_per_s,
        r.ratio_to_parse,
        r.paced_rate,
        r.paced_s,
        r.cpu_fraction_at_160k,
        r.rss_mib_at_160k,
        r.dropped_frames,
        r.paced_achieved_frames_per_s,
        r.queue_bytes_per_frame
    )
}

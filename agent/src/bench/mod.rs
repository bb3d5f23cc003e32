//! `pitlink bench <name> --json`: measured figures, each timing beside a baseline taken in the
//! same run on the same machine (these machines are noisy; ratios are what compare).

use crate::queue::{BatchMeta, Queue, QueueOptions};
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct QueueBenchOptions {
    /// Payload volume to write in each phase, in MiB.
    pub mib: u64,
    /// Stop a phase after this long even if `mib` is not reached.
    pub max_time: Duration,
    /// Directory to write in (a real disk: tmpfs would flatter every figure).
    pub dir: Option<PathBuf>,
    pub record_bytes: usize,
    pub flush: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueBench {
    pub record_bytes: usize,
    pub payload_mib: f64,
    /// Queue appends of `record_bytes` payloads with one fdatasync per flush interval.
    pub append_mib_s: f64,
    /// Plain sequential write of the same volume in the same directory, same fdatasync cadence.
    pub disk_baseline_mib_s: f64,
    pub ratio_to_disk: f64,
    /// Bytes the process caused to reach the storage layer (/proc/self/io write_bytes) per
    /// payload byte, during the queue phase.
    pub write_amplification: Option<f64>,
    pub baseline_write_amplification: Option<f64>,
    /// Time to open (recover) the queue left by the append phase, all of it undelivered.
    pub recovery_ms: f64,
    pub recovered_batches: u64,
}

fn proc_write_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn payload(len: usize, i: u64) -> Vec<u8> {
    // Incompressible-looking bytes, different per record.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn queue(opts: &QueueBenchOptions) -> Result<QueueBench> {
    let base = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("pitlink-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a scratch directory in {}", base.display()))?;
    let target = opts.mib << 20;
    let records: Vec<Vec<u8>> = (0..64).map(|i| payload(opts.record_bytes, i)).collect();

    // Baseline first: plain sequential writes + fdatasync per interval.
    let (base_bytes, base_secs, base_wa) = baseline(tmp.path(), &records, target, opts)?;

    let qdir = tmp.path().join("queue");
    let qopts = QueueOptions {
        cap_bytes: target * 2 + (64 << 20),
        segment_bytes: 64 << 20,
        ..QueueOptions::new(qdir)
    };
    let (mut q, _) = Queue::open(qopts.clone())?;
    let meta = BatchMeta {
        samples: 0,
        t_first_us: 0,
        t_last_us: 0,
    };
    let cell = std::cell::RefCell::new(&mut q);
    let (written, secs, wa) = timed_phase(
        &records,
        target,
        opts,
        |rec| {
            let (res, _) = cell.borrow_mut().append(meta, |_| rec.to_vec());
            res.map(|_| ()).context("queue append failed")
        },
        || Ok(cell.borrow_mut().sync()?),
    )?;
    drop(q);

    let t = Instant::now();
    let (_q, rec) = Queue::open(qopts)?;
    let recovery_ms = t.elapsed().as_secs_f64() * 1000.0;

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let append_mib_s = mib(written) / secs;
    let disk_baseline_mib_s = mib(base_bytes) / base_secs;
    Ok(QueueBench {
        record_bytes: opts.record_bytes,
        payload_mib: mib(written),
        append_mib_s,
        disk_baseline_mib_s,
        ratio_to_disk: append_mib_s / disk_baseline_mib_s,
        write_amplification: wa,
        baseline_write_amplification: base_wa,
        recovery_ms,
        recovered_batches: rec.undelivered,
    })
}

/// Plain sequential writes of the same records, same fdatasync cadence.
fn baseline(
    dir: &Path,
    records: &[Vec<u8>],
    target: u64,
    opts: &QueueBenchOptions,
) -> Result<(u64, f64, Option<f64>)> {
    let path = dir.join("baseline.bin");
    let f = std::cell::RefCell::new(std::fs::File::create(&path)?);
    let r = timed_phase(
        records,
        target,
        opts,
        |rec| Ok(f.borrow_mut().write_all(rec)?),
        || Ok(f.borrow().sync_data()?),
    )?;
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(r)
}

/// Writes `records` round-robin until `target` bytes or the time limit, calling `sync` once per
/// flush interval and at the end. Returns (bytes, seconds, write amplification).
fn timed_phase(
    records: &[Vec<u8>],
    target: u64,
    opts: &QueueBenchOptions,
    mut write: impl FnMut(&[u8]) -> Result<()>,
    mut sync: impl FnMut() -> Result<()>,
) -> Result<(u64, f64, Option<f64>)> {
    let w0 = proc_write_bytes();
    let start = Instant::now();
    let mut last_sync = start;
    let mut written = 0u64;
    for rec in records.iter().cycle() {
        if written >= target || start.elapsed() >= opts.max_time {
            break;
        }
        write(rec)?;
        written += rec.len() as u64;
        if last_sync.elapsed() >= opts.flush {
            sync()?;
            last_sync = Instant::now();
        }
    }
    sync()?;
    let secs = start.elapsed().as_secs_f64();
    let wa = proc_write_bytes()
        .zip(w0)
        .map(|(b, a)| b.saturating_sub(a) as f64 / written.max(1) as f64);
    Ok((written, secs, wa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_bench_measures_both_phases() {
        let d = tempfile::tempdir().expect("tmp");
        let r = queue(&QueueBenchOptions {
            mib: 4,
            max_time: Duration::from_secs(20),
            dir: Some(d.path().to_owned()),
            record_bytes: 16 << 10,
            flush: Duration::from_millis(100),
        })
        .expect("bench runs");
        assert!((r.payload_mib - 4.0).abs() < 0.02, "{r:?}");
        assert!(r.append_mib_s > 0.0 && r.disk_baseline_mib_s > 0.0);
        assert!((r.ratio_to_disk - r.append_mib_s / r.disk_baseline_mib_s).abs() < 1e-9);
        assert_eq!(
            r.recovered_batches, 256,
            "4 MiB of 16 KiB records, all undelivered"
        );
    }
}

//! `pitlink bench <name> --json`: measured figures, each timing beside a baseline taken in the
//! same run on the same machine (these machines are noisy; ratios are what compare).

use crate::queue::{
    BatchMeta, DiskFile, DiskStore, Queue, QueueOptions, Recovery, SyncDone, SyncJob,
};
use anyhow::{Context, Result, bail};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod chaos;
pub mod codec;
pub mod crash;
pub mod footprint;
pub mod ingest;
#[cfg(feature = "sled-peer")]
mod sled_peer;
pub mod track;
pub mod uplink;

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
    /// The recovery phase; `None` skips it (its fields are then `null`).
    pub recovery: Option<RecoveryOptions>,
}

/// Recovery after a SIGKILL: a child process writes the queue, the bench kills it and times the
/// next [`Queue::open`].
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// The `pitlink` executable to run `bench queue-writer` with (the CLI passes its own).
    pub exe: PathBuf,
    /// Queue volume the writer reaches before it is killed, in MiB.
    pub mib: u64,
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
    /// payload byte, during the queue phase. `null` where the kernel does not count them, or
    /// counted none (tmpfs).
    pub write_amplification: Option<f64>,
    pub baseline_write_amplification: Option<f64>,
    /// sled used as a FIFO (big-endian u64 keys, one insert per record, `flush()` at the same
    /// cadence), same records and volume. `null` unless built with the `sled-peer` feature.
    pub sled_append_mib_s: Option<f64>,
    /// Payload the sled phase wrote (less than `payload_mib` if it hit the time limit).
    pub sled_payload_mib: Option<f64>,
    pub sled_write_amplification: Option<f64>,
    pub sled_ratio_to_disk: Option<f64>,
    /// How the sled phase was configured, or how to enable it.
    pub sled_note: String,
    /// Queue volume written by the child that was SIGKILLed, in MiB.
    pub recovery_mib: Option<f64>,
    /// `Queue::open` on the queue a SIGKILLed writer left (its files still in the page cache,
    /// as after a process crash).
    pub recovery_ms: Option<f64>,
    /// The same open again after evicting the queue's files from the page cache
    /// (posix_fadvise DONTNEED): what a restart after a power loss reads from the device.
    pub recovery_cold_ms: Option<f64>,
    /// Undelivered batches the open found (every batch the writer appended before the kill).
    pub recovered_batches: Option<u64>,
    pub recovery_truncated_bytes: Option<u64>,
    pub recovery_corrupt_records: Option<u64>,
}

fn proc_write_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn payload(len: usize, i: u64) -> Vec<u8> {
    // Incompressible-looking bytes, different per record.
    crash::XorShift::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        .bytes()
        .take(len)
        .collect()
}

fn records(record_bytes: usize) -> Vec<Vec<u8>> {
    (0..64).map(|i| payload(record_bytes, i)).collect()
}

const NO_META: BatchMeta = BatchMeta {
    samples: 0,
    t_first_us: 0,
    t_last_us: 0,
};

/// Segment size of the benchmark queues (the daemon's default is of the same order).
const BENCH_SEGMENT_BYTES: u64 = 64 << 20;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
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
    let records = records(opts.record_bytes);

    // Baseline first: plain sequential writes + fdatasync per interval.
    let (base_bytes, base_secs, base_wa) = baseline(tmp.path(), &records, target, opts)?;

    let qdir = tmp.path().join("queue");
    let qopts = QueueOptions {
        cap_bytes: target * 2 + (64 << 20),
        segment_bytes: BENCH_SEGMENT_BYTES,
        ..QueueOptions::new(qdir.clone())
    };
    let (mut q, _) = Queue::open(qopts)?;
    // Group commit as the daemon does it: on its own thread, appends go on meanwhile.
    let mut committer = Committer::start()?;
    let cell = std::cell::RefCell::new(&mut q);
    let (written, secs, wa) = timed_phase(
        &records,
        target,
        opts,
        |rec| {
            let (res, _) = cell.borrow_mut().append(NO_META, |_| rec.to_vec());
            res.map(|_| ()).context("queue append failed")
        },
        |last| committer.commit(&mut cell.borrow_mut(), last),
    )?;
    drop(committer);
    drop(q);
    // Keep the scratch directory's footprint to one phase at a time.
    std::fs::remove_dir_all(&qdir)?;

    let disk_baseline_mib_s = mib(base_bytes) / base_secs;

    #[cfg(feature = "sled-peer")]
    let (sled_append_mib_s, sled_payload_mib, sled_write_amplification, sled_note) = {
        let (bytes, secs, wa) = sled_peer::phase(&tmp.path().join("sled"), &records, target, opts)?;
        (
            Some(mib(bytes) / secs),
            Some(mib(bytes)),
            wa,
            sled_peer::NOTE.to_string(),
        )
    };
    #[cfg(not(feature = "sled-peer"))]
    let (sled_append_mib_s, sled_payload_mib, sled_write_amplification, sled_note) = (
        None,
        None,
        None,
        "sled phase not built; enable it with: cargo build --release -p pitlink --features sled-peer"
            .to_string(),
    );

    let rec = match &opts.recovery {
        Some(r) => Some(recovery_after_kill(
            &r.exe,
            &tmp.path().join("recovery"),
            r.mib,
            opts.record_bytes,
            opts.flush,
        )?),
        None => None,
    };

    let append_mib_s = mib(written) / secs;
    Ok(QueueBench {
        record_bytes: opts.record_bytes,
        payload_mib: mib(written),
        append_mib_s,
        disk_baseline_mib_s,
        ratio_to_disk: append_mib_s / disk_baseline_mib_s,
        write_amplification: wa,
        baseline_write_amplification: base_wa,
        sled_append_mib_s,
        sled_payload_mib,
        sled_write_amplification,
        sled_ratio_to_disk: sled_append_mib_s.map(|s| s / disk_baseline_mib_s),
        sled_note,
        recovery_mib: rec.as_ref().map(|r| r.queue_mib),
        recovery_ms: rec.as_ref().map(|r| r.warm_ms),
        recovery_cold_ms: rec.as_ref().and_then(|r| r.cold_ms),
        recovered_batches: rec.as_ref().map(|r| r.recovery.undelivered),
        recovery_truncated_bytes: rec.as_ref().map(|r| r.recovery.truncated_bytes),
        recovery_corrupt_records: rec.as_ref().map(|r| r.recovery.corrupt_records),
    })
}

/// What the recovery phase measured.
#[derive(Debug, Clone)]
pub struct KillRecovery {
    pub queue_mib: f64,
    pub warm_ms: f64,
    pub cold_ms: Option<f64>,
    pub recovery: Recovery,
}

/// Starts `exe bench queue-writer` on `dir`, SIGKILLs it as soon as it reports `mib` MiB written
/// and synced (it is still appending then), and times `Queue::open` on what it left.
pub fn recovery_after_kill(
    exe: &Path,
    dir: &Path,
    mib_target: u64,
    record_bytes: usize,
    flush: Duration,
) -> Result<KillRecovery> {
    let mut child = Command::new(exe)
        .args(["bench", "queue-writer", "--dir"])
        .arg(dir)
        .args([
            "--mib",
            &mib_target.to_string(),
            "--record-kib",
            &(record_bytes >> 10).max(1).to_string(),
            "--flush-ms",
            &flush.as_millis().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {} bench queue-writer", exe.display()))?;
    let stdout = child.stdout.take().context("writer stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut reached = false;
    for line in lines.by_ref() {
        if line?.starts_with(WRITTEN) {
            reached = true;
            break;
        }
    }
    // Killed mid-append: the queue ends wherever the writer was.
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let status = child.wait()?;
    if !reached {
        bail!("bench queue-writer ended ({status}) before writing {mib_target} MiB");
    }
    drop(lines);

    let qopts = QueueOptions {
        cap_bytes: u64::MAX,
        segment_bytes: BENCH_SEGMENT_BYTES,
        ..QueueOptions::new(dir.to_owned())
    };
    let t = Instant::now();
    let (q, recovery) = Queue::open(qopts.clone())?;
    let warm_ms = t.elapsed().as_secs_f64() * 1000.0;
    let queue_mib = mib(q.stats().bytes_on_disk);
    drop(q);

    let cold_ms = if evict_from_page_cache(dir).is_ok() {
        let t = Instant::now();
        let (_q, _) = Queue::open(qopts)?;
        Some(t.elapsed().as_secs_f64() * 1000.0)
    } else {
        None
    };
    std::fs::remove_dir_all(dir)?;
    Ok(KillRecovery {
        queue_mib,
        warm_ms,
        cold_ms,
        recovery,
    })
}

/// Writes back and drops every file of `dir` from the page cache, so the next read comes from
/// the device.
fn evict_from_page_cache(dir: &Path) -> Result<()> {
    for ent in std::fs::read_dir(dir)? {
        let path = ent?.path();
        if !path.is_file() {
            continue;
        }
        let f = std::fs::File::open(&path)?;
        // Dirty pages cannot be dropped: write them first.
        f.sync_data()?;
        posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    }
    Ok(())
}

/// The line `bench queue-writer` prints once its volume is written and synced.
const WRITTEN: &str = "written";

#[derive(Debug, Clone)]
pub struct QueueWriterOptions {
    pub dir: PathBuf,
    pub mib: u64,
    pub record_bytes: usize,
    pub flush: Duration,
    /// How long the writer goes on appending after its announcement before it stops by itself
    /// (a safety net: the bench kills it long before).
    pub linger: Duration,
}

/// The child of the recovery phase: appends `record_bytes` records with a group commit per
/// `flush` until `mib` MiB are written, syncs, prints `written BYTES`, then goes on appending
/// the same way (so the kill lands mid-write) for `linger` (at least one more record).
pub fn queue_writer(opts: &QueueWriterOptions, out: &mut impl Write) -> Result<()> {
    let (mut q, _) = Queue::open(QueueOptions {
        cap_bytes: u64::MAX,
        segment_bytes: BENCH_SEGMENT_BYTES,
        ..QueueOptions::new(opts.dir.clone())
    })?;
    let records = records(opts.record_bytes);
    let target = opts.mib << 20;
    let mut last_sync = Instant::now();
    let mut written = 0u64;
    let mut announced: Option<Instant> = None;
    for rec in records.iter().cycle() {
        let (res, _) = q.append(NO_META, |_| rec.clone());
        res.context("queue append failed")?;
        written += rec.len() as u64;
        if let Some(t) = announced {
            if t.elapsed() >= opts.linger {
                break;
            }
        } else if written >= target {
            q.sync()?;
            last_sync = Instant::now();
            writeln!(out, "{WRITTEN} {written}")?;
            out.flush()?;
            announced = Some(last_sync);
            continue;
        }
        if last_sync.elapsed() >= opts.flush {
            q.sync()?;
            last_sync = Instant::now();
        }
    }
    q.sync()?;
    Ok(())
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
        |_| Ok(f.borrow().sync_data()?),
    )?;
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(r)
}

/// The daemon's group commit for a bench phase: sync jobs run on a thread of their own while
/// appends go on; the last commit waits.
struct Committer {
    jobs: Option<std::sync::mpsc::Sender<SyncJob<DiskStore>>>,
    done: std::sync::mpsc::Receiver<SyncDone<DiskFile>>,
    pending: bool,
}

impl Committer {
    fn start() -> Result<Committer> {
        let (done_tx, done) = std::sync::mpsc::channel();
        let jobs = crate::queue::spawn_committer::<DiskStore>(move |d| done_tx.send(d).is_ok())?;
        Ok(Committer {
            jobs: Some(jobs),
            done,
            pending: false,
        })
    }

    /// Takes a finished commit back and starts the next one; `last` waits for everything.
    fn commit(&mut self, q: &mut Queue, last: bool) -> Result<()> {
        if self.pending {
            let done = if last {
                self.done.recv()?
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => return Ok(()),
                }
            };
            self.pending = false;
            q.finish_sync(done)?;
        }
        if let (Some(job), Some(tx)) = (q.begin_sync(), &self.jobs) {
            tx.send(job)
                .map_err(|_| anyhow::anyhow!("the group-commit thread is gone"))?;
            self.pending = true;
            if last {
                let done = self.done.recv()?;
                self.pending = false;
                q.finish_sync(done)?;
            }
        }
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs = None;
    }
}

/// Writes `records` round-robin until `target` bytes or the time limit, calling `sync` once per
/// flush interval and at the end. Returns (bytes, seconds, write amplification).
fn timed_phase(
    records: &[Vec<u8>],
    target: u64,
    opts: &QueueBenchOptions,
    mut write: impl FnMut(&[u8]) -> Result<()>,
    mut sync: impl FnMut(bool) -> Result<()>,
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
            sync(false)?;
            last_sync = Instant::now();
        }
    }
    sync(true)?;
    let secs = start.elapsed().as_secs_f64();
    // Zero bytes for a non-zero payload means the directory is not on a block device (tmpfs):
    // there is no amplification to report.
    let wa = proc_write_bytes()
        .zip(w0)
        .map(|(b, a)| b.saturating_sub(a))
        .filter(|&d| d > 0)
        .map(|d| d as f64 / written.max(1) as f64);
    Ok((written, secs, wa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_bench_measures_every_phase() {
        let d = tempfile::tempdir().expect("tmp");
        let r = queue(&QueueBenchOptions {
            mib: 4,
            max_time: Duration::from_secs(20),
            dir: Some(d.path().to_owned()),
            record_bytes: 16 << 10,
            flush: Duration::from_millis(100),
            recovery: None,
        })
        .expect("bench runs");
        assert!((r.payload_mib - 4.0).abs() < 0.02, "{r:?}");
        assert!(r.append_mib_s > 0.0 && r.disk_baseline_mib_s > 0.0);
        assert!((r.ratio_to_disk - r.append_mib_s / r.disk_baseline_mib_s).abs() < 1e-9);
        assert_eq!(r.recovery_ms, None, "no recovery phase was asked for");
        if cfg!(feature = "sled-peer") {
            assert!(r.sled_append_mib_s.is_some_and(|s| s > 0.0), "{r:?}");
            assert!(
                r.sled_payload_mib.is_some_and(|m| (m - 4.0).abs() < 0.02),
                "{r:?}"
            );
        } else {
            assert_eq!((r.sled_append_mib_s, r.sled_payload_mib), (None, None));
            assert!(
                r.sled_note.contains("--features sled-peer"),
                "{}",
                r.sled_note
            );
        }
        // Every phase cleans up after itself; the scratch directory is gone at the end.
        let left: Vec<_> = std::fs::read_dir(d.path()).expect("ls").collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn queue_writer_announces_the_volume_then_keeps_appending() {
        let d = tempfile::tempdir().expect("tmp");
        let mut out = Vec::new();
        queue_writer(
            &QueueWriterOptions {
                dir: d.path().to_owned(),
                mib: 1,
                record_bytes: 16 << 10,
                flush: Duration::from_millis(10),
                linger: Duration::from_millis(20),
            },
            &mut out,
        )
        .expect("writer runs");
        let out = String::from_utf8(out).expect("utf-8");
        assert_eq!(out, format!("written {}\n", 1 << 20), "one line, once");
        let (_q, rec) = Queue::open(QueueOptions {
            cap_bytes: u64::MAX,
            segment_bytes: BENCH_SEGMENT_BYTES,
            ..QueueOptions::new(d.path().to_owned())
        })
        .expect("open");
        assert!(
            rec.undelivered > 64,
            "appends went on after the announcement: {rec:?}"
        );
        assert_eq!((rec.corrupt_records, rec.truncated_bytes), (0, 0));
    }
}

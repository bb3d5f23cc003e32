//! sled as the benchmark peer of the queue (feature `sled-peer`; never in the agent's data path).
//!
//! sled is used as a FIFO the way the queue is: one insert per record under a big-endian u64 key
//! (so keys sort in append order), and `flush()` (sled's fsync) at the queue's group-commit
//! cadence. sled's own background flusher stays at its default (every 500 ms), as does its mode.
//!
//! Memory: sled's default page cache is 1 GiB. The bench sets `cache_capacity` to
//! [`CACHE_BYTES`] (128 MiB) explicitly, so the phase stays within the machine's budget beside
//! the other builds; the cache bounds what sled keeps in memory, not what it writes.

use super::{QueueBenchOptions, timed_phase};
use anyhow::{Context, Result};
use std::cell::Cell;
use std::path::Path;

pub const CACHE_BYTES: u64 = 128 << 20;

pub const NOTE: &str = "sled 0.34 as a FIFO: big-endian u64 keys, insert per record, flush() per \
                        flush interval; cache_capacity 128 MiB (sled's default is 1 GiB), default \
                        mode and background flusher";

/// Inserts `records` round-robin into a fresh sled database in `dir` until `target` bytes (or
/// the time limit). Returns (bytes, seconds, write amplification), like the other phases.
pub fn phase(
    dir: &Path,
    records: &[Vec<u8>],
    target: u64,
    opts: &QueueBenchOptions,
) -> Result<(u64, f64, Option<f64>)> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .open()
        .with_context(|| format!("cannot open sled in {}", dir.display()))?;
    let key = Cell::new(0u64);
    let r = timed_phase(
        records,
        target,
        opts,
        |rec| {
            let k = key.get();
            db.insert(k.to_be_bytes(), rec)?;
            key.set(k + 1);
            Ok(())
        },
        |_| {
            db.flush()?;
            Ok(())
        },
    )?;
    drop(db);
    std::fs::remove_dir_all(dir)?;
    Ok(r)
}

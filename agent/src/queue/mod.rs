//! The durable queue: a segmented append-only log on disk (see docs/queue.md).
//!
//! Every batch is written here before it is sent, and leaves only when the broker acknowledged
//! it (delivered) or the disk cap pushed it out (evicted, reported to the receiver as a gap).
//!
//! Files in `dir`:
//! - `run`: the current run number. Incremented and fsynced at every start before the first batch
//!   is created, so a batch identity `(run, seq)` is never reused, even for sequence numbers that
//!   were handed out but lost in a crash before their fsync.
//! - `RRRRRRRRRR-SSSSSSSSSSSSSSSSSSSS.seg`: segments, named by run and first sequence number.
//!   Record = `len u32 | crc32c u32 | run u32 | seq u64 | payload` (little endian; the CRC covers
//!   run, seq and payload).
//! - `acks`: delivered sequence numbers per run (ranges), replaced atomically at each flush.
//!
//! Group commit: appends go to the page cache; [`Queue::sync`] (called once per flush interval by
//! the daemon) issues one fdatasync. Sources never wait on it: the queue runs on its own thread.

mod segment;

use crate::codec::{BatchId, GapBody, gap_from};
use crate::ranges::RangeSet;
use segment::{Entry, HEADER_LEN, Segment};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub dir: PathBuf,
    pub cap_bytes: u64,
    pub segment_bytes: u64,
}

/// What the caller knows about a batch, kept in the index so eviction can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub samples: u32,
    pub t_first_us: u64,
    pub t_last_us: u64,
}

/// What recovery found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub previous_run: Option<u32>,
    /// Highest sequence number of the previous run found durable (on disk or in the ack file).
    pub previous_durable_last_seq: Option<u64>,
    pub segments: usize,
    pub records: u64,
    pub undelivered: u64,
    /// Records skipped because their CRC did not match.
    pub corrupt_records: u64,
    /// Bytes cut off torn segment tails.
    pub truncated_bytes: u64,
}

/// Counters, shown by `pitlink status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub run: u32,
    pub next_seq: u64,
    /// Highest sequence number of this run known to be on disk after an fdatasync.
    pub durable_seq: Option<u64>,
    pub segments: usize,
    pub bytes_on_disk: u64,
    pub cap_bytes: u64,
    pub undelivered: u64,
    pub appended_batches: u64,
    pub appended_bytes: u64,
    pub delivered_batches: u64,
    pub evicted_batches: u64,
    pub evicted_samples: u64,
    /// Batches that could not be written at all (disk full, I/O error): counted, never silent.
    pub dropped_batches: u64,
    pub dropped_samples: u64,
    pub write_errors: u64,
    pub syncs: u64,
    pub oldest_undelivered_us: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AckFile {
    runs: Vec<(u32, Vec<(u64, u64)>)>,
}

#[derive(Debug)]
pub struct Queue {
    opts: QueueOptions,
    run: u32,
    next_seq: u64,
    /// Oldest first; the last one is the segment being appended to (if it belongs to this run).
    segments: VecDeque<Segment>,
    active: Option<File>,
    /// Delivered sequence numbers per run (only runs that still have segments).
    delivered: BTreeMap<u32, RangeSet>,
    acks_dirty: bool,
    unsynced: bool,
    stats: QueueStats,
    /// True while a write error episode lasts (logged once per episode).
    failing: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::File {
        path: path.to_owned(),
        source,
    }
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl Queue {
    /// Opens (or creates) the queue, recovers what is on disk and starts a new run.
    pub fn open(opts: QueueOptions) -> Result<(Queue, Recovery), QueueError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|source| QueueError::Dir {
            dir: dir.clone(),
            source,
        })?;
        let run_path = dir.join("run");
        let previous_run = match fs::read_to_string(&run_path) {
            Ok(s) => s.trim().parse::<u32>().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&run_path)(e)),
        };
        // Unreadable run file but segments present: continue above the highest run on disk.
        let mut found = segment::list(&dir).map_err(io_err(&dir))?;
        found.sort_by_key(|(run, first, _)| (*run, *first));
        let disk_max_run = found.iter().map(|(r, _, _)| *r).max();
        let last_run = previous_run.max(disk_max_run);
        let run = last_run.map_or(1, |r| r.wrapping_add(1).max(1));
        write_atomic(&dir, "run", format!("{run}\n").as_bytes()).map_err(io_err(&run_path))?;

        let mut delivered: BTreeMap<u32, RangeSet> = BTreeMap::new();
        let ack_path = dir.join("acks");
        if let Ok(bytes) = fs::read(&ack_path)
            && let Ok(a) = postcard::from_bytes::<AckFile>(&bytes)
        {
            for (r, ranges) in a.runs {
                let set = delivered.entry(r).or_default();
                for (s, e) in ranges {
                    set.insert_range(s, e);
                }
            }
        }

        let mut rec = Recovery {
            previous_run: last_run,
            ..Recovery::default()
        };
        let mut segments = VecDeque::new();
        for (seg_run, first, path) in found {
            let (seg, scan) = Segment::recover(&path, seg_run, first).map_err(io_err(&path))?;
            rec.corrupt_records += scan.corrupt_records;
            rec.truncated_bytes += scan.truncated_bytes;
            rec.records += seg.entries.len() as u64;
            if Some(seg_run) == last_run
                && let Some(last) = seg.entries.last()
            {
                rec.previous_durable_last_seq = Some(
                    rec.previous_durable_last_seq
                        .map_or(last.seq, |m: u64| m.max(last.seq)),
                );
            }
            segments.push_back(seg);
        }
        if let Some(r) = last_run
            && let Some(max) = delivered.get(&r).and_then(RangeSet::max)
        {
            rec.previous_durable_last_seq =
                Some(rec.previous_durable_last_seq.map_or(max, |m| m.max(max)));
        }

        let mut q = Queue {
            stats: QueueStats {
                run,
                cap_bytes: opts.cap_bytes,
                ..QueueStats::default()
            },
            opts,
            run,
            next_seq: 0,
            segments,
            active: None,
            delivered,
            acks_dirty: false,
            unsynced: false,
            failing: false,
        };
        // Count what is still to deliver; drop segments that are fully delivered.
        for seg in q.segments.iter_mut() {
            let set = q.delivered.get(&seg.run);
            seg.live = seg
                .entries
                .iter()
                .filter(|e| !set.is_some_and(|s| s.contains(e.seq)))
                .count();
        }
        q.drop_finished_segments();
        q.prune_acks();
        rec.segments = q.segments.len();
        rec.undelivered = q.segments.iter().map(|s| s.live as u64).sum();
        Ok((q, rec))
    }

    pub fn run(&self) -> u32 {
        self.run
    }

    /// Counters plus the figures derived from the index (segments, bytes, undelivered, oldest
    /// undelivered). Derived on demand: appends and acks stay free of bookkeeping.
    pub fn stats(&self) -> QueueStats {
        let mut s = self.stats.clone();
        s.next_seq = self.next_seq;
        s.segments = self.segments.len();
        s.bytes_on_disk = self.bytes_on_disk();
        s.undelivered = self.segments.iter().map(|seg| seg.live as u64).sum();
        s.oldest_undelivered_us = self.segments.iter().find_map(|seg| {
            let set = self.delivered.get(&seg.run);
            seg.entries
                .iter()
                .find(|e| !set.is_some_and(|d| d.contains(e.seq)))
                .map(|e| e.meta.t_first_us)
        });
        s
    }

    /// Every undelivered batch on disk, oldest first, with its metadata.
    pub fn undelivered(&self) -> Vec<(BatchId, BatchMeta)> {
        let mut out = Vec::new();
        for seg in &self.segments {
            let set = self.delivered.get(&seg.run);
            for e in &seg.entries {
                if !set.is_some_and(|s| s.contains(e.seq)) {
                    out.push((
                        BatchId {
                            run: seg.run,
                            seq: e.seq,
                        },
                        e.meta,
                    ));
                }
            }
        }
        out
    }

    /// Appends one batch. `encode` receives the batch's identity and returns the payload.
    ///
    /// Returns the identity and the payload (for sending it live without reading it back), plus
    /// the gaps created by evicting old segments to stay under the cap; the caller must queue a
    /// gap notice for each. On a write error the batch is dropped and counted, and `None` is
    /// returned: the daemon stays up.
    pub fn append(
        &mut self,
        meta: BatchMeta,
        encode: impl FnOnce(BatchId) -> Vec<u8>,
    ) -> (Option<(BatchId, Vec<u8>)>, Vec<GapBody>) {
        let id = BatchId {
            run: self.run,
            seq: self.next_seq,
        };
        let payload = encode(id);
        let rec_len = HEADER_LEN as u64 + payload.len() as u64;
        let mut gaps = Vec::new();
        // Make room first, so the cap holds after the write (cap + one segment at worst).
        gaps.extend(self.evict_to(self.opts.cap_bytes.saturating_sub(rec_len)));
        match self.write_record(id, meta, &payload) {
            Ok(()) => {
                self.next_seq += 1;
                self.stats.appended_batches += 1;
                self.stats.appended_bytes += payload.len() as u64;
                if self.failing {
                    self.failing = false;
                    tracing::warn!("queue writes work again in {}", self.opts.dir.display());
                }
                (Some((id, payload)), gaps)
            }
            Err(e) => {
                self.stats.write_errors += 1;
                self.stats.dropped_batches += 1;
                self.stats.dropped_samples += u64::from(meta.samples);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(
                        "queue write failed in {} ({e}); dropping batches and counting them until writes work again",
                        self.opts.dir.display()
                    );
                }
                // Free space for the next attempt: the oldest segment goes (reported as a gap).
                if self.segments.len() > 1 {
                    gaps.extend(self.evict_oldest());
                }
                (None, gaps)
            }
        }
    }

    fn write_record(&mut self, id: BatchId, meta: BatchMeta, payload: &[u8]) -> io::Result<()> {
        let rec_len = HEADER_LEN as u64 + payload.len() as u64;
        let need_new = match self.segments.back() {
            Some(s) => {
                s.run != self.run
                    || (s.bytes > 0 && s.bytes + rec_len > self.opts.segment_bytes)
                    || self.active.is_none()
            }
            None => true,
        };
        if need_new {
            if let Some(f) = self.active.take() {
                // The segment is complete; make it durable before starting the next one.
                f.sync_data()?;
            }
            let seg = Segment::create(&self.opts.dir, self.run, id.seq)?;
            self.active = Some(seg.append_handle()?);
            self.segments.push_back(seg);
        }
        let (Some(f), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no active segment"));
        };
        let offset = seg.bytes;
        let rec = segment::encode_record(id, payload);
        if let Err(e) = f.write_all(&rec) {
            // Cut off whatever part of the record made it, so the segment stays well formed.
            let _ = f.set_len(offset);
            return Err(e);
        }
        seg.bytes += rec.len() as u64;
        seg.entries.push(Entry {
            seq: id.seq,
            offset,
            len: payload.len() as u32,
            meta,
        });
        seg.live += 1;
        self.unsynced = true;
        Ok(())
    }

    /// One group commit: fdatasync of the active segment and, if acks changed, the ack file.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some(f) = &self.active {
                f.sync_data()?;
            }
            self.unsynced = false;
            self.stats.syncs += 1;
            self.stats.durable_seq = self.next_seq.checked_sub(1);
        }
        if self.acks_dirty {
            self.persist_acks()?;
        }
        Ok(())
    }

    fn persist_acks(&mut self) -> io::Result<()> {
        let file = AckFile {
            runs: self
                .delivered
                .iter()
                .map(|(r, s)| (*r, s.iter_ranges().collect()))
                .collect(),
        };
        let bytes = postcard::to_stdvec(&file).map_err(io::Error::other)?;
        write_atomic(&self.opts.dir, "acks", &bytes)?;
        self.acks_dirty = false;
        Ok(())
    }

    /// Reads a batch's payload back (backfill, re-send after a link failure). `None` if the batch
    /// is no longer in the queue (delivered or evicted meanwhile).
    pub fn read(&self, id: BatchId) -> io::Result<Option<Vec<u8>>> {
        let Some(seg) = self.segment_of(id) else {
            return Ok(None);
        };
        let Ok(i) = seg.entries.binary_search_by_key(&id.seq, |e| e.seq) else {
            return Ok(None);
        };
        seg.read(&seg.entries[i]).map(Some)
    }

    fn segment_of(&self, id: BatchId) -> Option<&Segment> {
        let i = self
            .segments
            .partition_point(|s| (s.run, s.first_seq) <= (id.run, id.seq));
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (seg.run == id.run).then_some(seg)
    }

    /// Marks a batch delivered. Returns true the first time.
    pub fn ack(&mut self, id: BatchId) -> bool {
        let i = self
            .segments
            .partition_point(|s| (s.run, s.first_seq) <= (id.run, id.seq));
        let Some(seg) = i.checked_sub(1).and_then(|i| self.segments.get_mut(i)) else {
            return false;
        };
        if seg.run != id.run
            || seg
                .entries
                .binary_search_by_key(&id.seq, |e| e.seq)
                .is_err()
        {
            return false;
        }
        if !self.delivered.entry(id.run).or_default().insert(id.seq) {
            return false;
        }
        seg.live = seg.live.saturating_sub(1);
        self.acks_dirty = true;
        self.stats.delivered_batches += 1;
        self.drop_finished_segments();
        true
    }

    /// Deletes segments (other than the one being written) whose records are all delivered.
    fn drop_finished_segments(&mut self) {
        let active_idx = self
            .active
            .as_ref()
            .map(|_| self.segments.len().saturating_sub(1));
        let mut i = 0;
        while i < self.segments.len() {
            if self.segments[i].live == 0 && Some(i) != active_idx {
                if let Some(seg) = self.segments.remove(i)
                    && let Err(e) = fs::remove_file(&seg.path)
                {
                    tracing::warn!(
                        "cannot delete delivered segment {}: {e}",
                        seg.path.display()
                    );
                }
                continue;
            }
            i += 1;
        }
    }

    /// Forgets ack ranges of runs that have no segment left (and are not the current run).
    fn prune_acks(&mut self) {
        let keep: std::collections::BTreeSet<u32> = self
            .segments
            .iter()
            .map(|s| s.run)
            .chain([self.run])
            .collect();
        let before = self.delivered.len();
        self.delivered.retain(|r, _| keep.contains(r));
        if self.delivered.len() != before {
            self.acks_dirty = true;
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Evicts oldest segments until the queue holds at most `limit` bytes (never the active one).
    fn evict_to(&mut self, limit: u64) -> Vec<GapBody> {
        let mut gaps = Vec::new();
        while self.bytes_on_disk() > limit && self.segments.len() > 1 {
            gaps.extend(self.evict_oldest());
        }
        gaps
    }

    fn evict_oldest(&mut self) -> Option<GapBody> {
        let seg = self.segments.pop_front()?;
        let set = self.delivered.get(&seg.run);
        let mut lost = RangeSet::new();
        let (mut samples, mut t0, mut t1) = (0u64, u64::MAX, 0u64);
        for e in &seg.entries {
            if !set.is_some_and(|s| s.contains(e.seq)) {
                lost.insert(e.seq);
                samples += u64::from(e.meta.samples);
                t0 = t0.min(e.meta.t_first_us);
                t1 = t1.max(e.meta.t_last_us);
            }
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            tracing::warn!("cannot delete evicted segment {}: {e}", seg.path.display());
        }
        self.prune_acks();
        if lost.is_empty() {
            return None;
        }
        self.stats.evicted_batches += lost.len();
        self.stats.evicted_samples += samples;
        tracing::warn!(
            "disk cap reached: evicted {} undelivered batches ({} samples) of run {}",
            lost.len(),
            samples,
            seg.run
        );
        Some(gap_from(seg.run, &lost, samples, t0, t1))
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }
}

#[cfg(test)]
mod tests;

//! The durable queue: a segmented append-only log on disk (see docs/queue.md).
//!
//! Every batch is written here before it is sent, and leaves only when the broker acknowledged
//! it (delivered), the disk cap pushed it out (evicted) or it was found damaged; the last two
//! are reported to the receiver by gap notices that the queue writes itself.
//!
//! Files in the queue directory:
//! - `run`: the current run number. Incremented and made durable at every start before the first
//!   batch is created, so a batch identity `(run, seq)` is never reused, even for sequence numbers
//!   handed out but lost in a crash before their fsync.
//! - `*.seg` segments and `*.idx` indexes of sealed segments (see [`segment`]).
//! - `acks`: per run, the sequence numbers delivered and those given up on (evicted, damaged),
//!   as ranges, replaced atomically at each group commit.
//!
//! Memory does not grow with the backlog: the queue keeps a small summary per segment (ranges of
//! sequence numbers, bytes, counts); record offsets are kept for the segment being written and
//! loaded on demand, from the index file, for the few segments being read.
//!
//! Group commit: appends go to the page cache; [`Queue::begin_sync`] hands out a [`SyncJob`] (the
//! fdatasyncs, the index and ack files) that can run on another thread, and
//! [`Queue::finish_sync`] takes its outcome back. [`Queue::sync`] does both in place.

mod segment;
mod store;

#[cfg(test)]
mod model;
#[cfg(test)]
mod sim;

use crate::codec::{self, BatchId, GapBody, GapCause, Kind, gap_from};
use crate::ranges::RangeSet;
use segment::{Entry, HEADER_LEN};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
pub use store::{DiskFile, DiskStore, Store, StoreFile, SyncFn};

#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub dir: PathBuf,
    /// Bytes on disk the queue stays under (plus at most one segment).
    pub cap_bytes: u64,
    pub segment_bytes: u64,
    /// A group commit is due early once this many bytes are waiting for one.
    pub sync_bytes: u64,
    /// Written into the gap notices the queue creates.
    pub vehicle: String,
    /// Wire format version of those notices.
    pub format_version: u8,
}

impl QueueOptions {
    /// Defaults for everything but the directory: 1 GiB cap, 16 MiB segments, early commit past
    /// 4 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> QueueOptions {
        QueueOptions {
            dir: dir.into(),
            cap_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            sync_bytes: 4 << 20,
            vehicle: String::new(),
            format_version: codec::FORMAT_VERSION,
        }
    }
}

/// What the caller knows about a batch, kept in the index so eviction can be reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub samples: u32,
    pub t_first_us: u64,
    pub t_last_us: u64,
}

impl BatchMeta {
    /// The meta of a data batch: its reading count and time range.
    pub fn of_readings(readings: &[sensor_drivers::Reading]) -> BatchMeta {
        let (lo, hi) = readings
            .iter()
            .map(sensor_drivers::Reading::t_us)
            .fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        BatchMeta {
            samples: readings.len() as u32,
            t_first_us: if readings.is_empty() { 0 } else { lo },
            t_last_us: hi,
        }
    }
}

/// What recovery found at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub previous_run: Option<u32>,
    /// Highest sequence number of the previous run found durable (on disk or in the ack file).
    pub previous_durable_last_seq: Option<u64>,
    pub segments: usize,
    /// Segments read through their index file, without a scan.
    pub indexed_segments: usize,
    /// Segments scanned record by record (no intact index: the tail of a run that crashed).
    pub scanned_segments: usize,
    pub records: u64,
    pub undelivered: u64,
    /// Records skipped because their CRC did not match.
    pub corrupt_records: u64,
    /// Bytes cut off torn segment tails.
    pub truncated_bytes: u64,
    /// Sequence numbers of earlier runs found neither on disk nor delivered nor given up on
    /// (corrupt records, a missing segment): announced to the receiver as damaged.
    pub damaged_batches: u64,
    /// The ack file was unreadable: everything on disk is sent again.
    pub acks_unreadable: bool,
    /// Segments deleted at start-up because the disk was too full to record the new run.
    pub removed_for_room: usize,
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
    /// Bytes appended that no group commit covers yet (none has started since).
    pub unsynced_bytes: u64,
    pub undelivered: u64,
    pub appended_batches: u64,
    pub appended_bytes: u64,
    pub delivered_batches: u64,
    pub evicted_batches: u64,
    pub evicted_samples: u64,
    /// Batches that could not be written at all (disk full, I/O error): counted, never silent,
    /// and announced to the receiver by a gap notice once writing works again.
    pub dropped_batches: u64,
    pub dropped_samples: u64,
    /// Batches found damaged (recovery, or a read that failed its checksum).
    pub damaged_batches: u64,
    pub write_errors: u64,
    pub sync_errors: u64,
    pub syncs: u64,
    /// Gap notices waiting to be written (while the disk refuses writes).
    pub pending_notices: u64,
    /// Gap notices written (each a batch of its own, with a sequence number).
    pub notices_written: u64,
    /// Time of the first batch of the oldest segment that still holds an undelivered batch
    /// (segment granularity: the backlog is at least this old, at most one segment younger).
    pub oldest_undelivered_us: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
}

/// The `acks` file: postcard, then its CRC32C.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AckFile {
    runs: Vec<RunAcks>,
    /// Gap notices not written yet (the disk refused them): announced after a restart too.
    pending: Vec<Pending>,
}

/// (run, delivered ranges, given-up ranges)
type RunAcks = (u32, Vec<(u64, u64)>, Vec<(u64, u64)>);

/// In-memory summary of one segment.
#[derive(Debug)]
struct Segment {
    run: u32,
    first_seq: u64,
    bytes: u64,
    /// Sequence numbers stored (intact) in the segment.
    present: RangeSet,
    /// Present and not delivered.
    live: u64,
    first_t_us: u64,
}

impl Segment {
    fn key(&self) -> (u32, u64) {
        (self.run, self.first_seq)
    }
}

/// The segment being appended to (always the last one).
#[derive(Debug)]
struct Active<F> {
    file: F,
    entries: Vec<Entry>,
}

/// A full segment waiting for its fsync, after which its index file is written.
#[derive(Debug)]
struct Sealed<F> {
    key: (u32, u64),
    file: F,
    bytes: u64,
    entries: Arc<Vec<Entry>>,
}

/// Record offsets of a sealed segment, loaded on demand.
#[derive(Debug)]
struct Loaded<F> {
    key: (u32, u64),
    file: F,
    entries: Arc<Vec<Entry>>,
}

/// How many sealed segments keep their offsets loaded (backfill reads one segment at a time).
const LOADED: usize = 4;

/// A gap notice to write. `fresh` ones may be merged with each other; the others repeat a
/// notice that was evicted before delivery and must stay word for word the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    gap: GapBody,
    fresh: bool,
}

/// Losses from write errors, announced by one `Dropped` notice once writing works again.
#[derive(Debug, Default)]
struct Dropped {
    batches: u64,
    samples: u64,
    t_first_us: u64,
    t_last_us: u64,
}

#[derive(Debug)]
pub struct Queue<S: Store = DiskStore> {
    store: S,
    opts: QueueOptions,
    run: u32,
    next_seq: u64,
    /// Oldest first.
    segments: VecDeque<Segment>,
    active: Option<Active<S::File>>,
    sealed: Vec<Sealed<S::File>>,
    loaded: VecDeque<Loaded<S::File>>,
    delivered: BTreeMap<u32, RangeSet>,
    given_up: BTreeMap<u32, RangeSet>,
    acks_dirty: bool,
    syncing: bool,
    /// Gap notices to write, oldest first.
    notices: VecDeque<Pending>,
    /// Gap notices written since the last [`Queue::take_notices`].
    written_notices: Vec<(BatchId, Vec<u8>)>,
    dropped: Option<Dropped>,
    /// Evicted segments whose files are deleted once their gap notice is written.
    doomed: Vec<(u32, u64)>,
    stats: QueueStats,
    /// True while a write error episode lasts (logged once per episode).
    failing: bool,
    /// The same for group commits.
    sync_failing: bool,
    /// Bytes appended and not covered by a group commit yet (started or finished).
    unsynced_bytes: u64,
}

/// One group commit's work, detached from the queue so it can run on another thread.
pub struct SyncJob<S: Store> {
    store: S,
    syncs: Vec<SyncFn>,
    sealed: Vec<Sealed<S::File>>,
    acks: Option<Vec<u8>>,
    upto: Option<u64>,
    delete: Vec<(u32, u64)>,
    /// Appended bytes this commit covers (unsynced again if it fails).
    bytes: u64,
}

impl<S: Store> std::fmt::Debug for SyncJob<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("files", &self.syncs.len())
            .field("sealed", &self.sealed.len())
            .field("acks", &self.acks.is_some())
            .field("upto", &self.upto)
            .finish()
    }
}

/// The outcome of a [`SyncJob`], for [`Queue::finish_sync`].
#[derive(Debug)]
pub struct SyncDone<F> {
    result: io::Result<()>,
    acks_failed: bool,
    sealed: Vec<Sealed<F>>,
    upto: Option<u64>,
    delete: Vec<(u32, u64)>,
    bytes: u64,
}

impl<S: Store> SyncJob<S> {
    /// fdatasync of every file with unsynced appends; then, once the data is durable, the index
    /// files of sealed segments and the ack file.
    pub fn run(self) -> SyncDone<S::File> {
        let SyncJob {
            store,
            syncs,
            sealed,
            acks,
            upto,
            delete,
            bytes,
        } = self;
        let mut done = SyncDone {
            result: Ok(()),
            acks_failed: false,
            sealed: Vec::new(),
            upto,
            delete,
            bytes,
        };
        for s in syncs {
            if let Err(e) = s() {
                done.result = Err(e);
                done.sealed = sealed;
                done.acks_failed = acks.is_some();
                return done;
            }
        }
        for s in &sealed {
            let idx = segment::encode_index(s.bytes, &s.entries);
            // Optional: without it, recovery scans the segment instead.
            if let Err(e) = store.write_atomic(&segment::idx_name(s.key.0, s.key.1), &idx) {
                tracing::debug!("cannot write the index of segment {:?}: {e}", s.key);
            }
        }
        if let Some(bytes) = acks
            && let Err(e) = store.write_atomic("acks", &bytes)
        {
            done.acks_failed = true;
            done.result = Err(e);
        }
        done
    }
}

/// Runs group commits on a thread of their own (named `pitlink-sync`): jobs sent to the returned
/// sender run in order, and each outcome goes to `done`, which returns false to stop. The thread
/// ends when the sender is dropped.
pub fn spawn_committer<S: Store>(
    mut done: impl FnMut(SyncDone<S::File>) -> bool + Send + 'static,
) -> io::Result<std::sync::mpsc::Sender<SyncJob<S>>> {
    let (tx, rx) = std::sync::mpsc::channel::<SyncJob<S>>();
    std::thread::Builder::new()
        .name("pitlink-sync".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                if !done(job.run()) {
                    break;
                }
            }
        })?;
    Ok(tx)
}

fn io_err(path: PathBuf) -> impl FnOnce(io::Error) -> QueueError {
    move |source| QueueError::File { path, source }
}

fn encode_acks(
    delivered: &BTreeMap<u32, RangeSet>,
    given_up: &BTreeMap<u32, RangeSet>,
    pending: &VecDeque<Pending>,
) -> Vec<u8> {
    let runs: std::collections::BTreeSet<u32> =
        delivered.keys().chain(given_up.keys()).copied().collect();
    let ranges = |m: &BTreeMap<u32, RangeSet>, r: u32| {
        m.get(&r)
            .map(|s| s.iter_ranges().collect())
            .unwrap_or_default()
    };
    let file = AckFile {
        runs: runs
            .into_iter()
            .map(|r| (r, ranges(delivered, r), ranges(given_up, r)))
            .collect(),
        pending: pending.iter().cloned().collect(),
    };
    let mut out = postcard::to_stdvec(&file).unwrap_or_default();
    let c = crc32c::crc32c(&out);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

fn decode_acks(bytes: &[u8]) -> Option<AckFile> {
    let split = bytes.len().checked_sub(4)?;
    let (body, tail) = bytes.split_at(split);
    if crc32c::crc32c(body) != u32::from_le_bytes(tail.try_into().ok()?) {
        return None;
    }
    postcard::from_bytes(body).ok()
}

fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl Queue<DiskStore> {
    /// Opens (or creates) the queue in `opts.dir`, recovers what is on disk and starts a new run.
    pub fn open(opts: QueueOptions) -> Result<(Queue, Recovery), QueueError> {
        let store = DiskStore::new(&opts.dir).map_err(|source| QueueError::Dir {
            dir: opts.dir.clone(),
            source,
        })?;
        Queue::open_in(store, opts)
    }
}

impl<S: Store> Queue<S> {
    /// Opens the queue kept in `store` (see [`Queue::open`]).
    pub fn open_in(store: S, opts: QueueOptions) -> Result<(Queue<S>, Recovery), QueueError> {
        let names = store.list().map_err(|source| QueueError::Dir {
            dir: opts.dir.clone(),
            source,
        })?;
        let mut segs = Vec::new();
        let mut idxs = std::collections::BTreeSet::new();
        for name in &names {
            match segment::parse_name(name) {
                Some((r, s, false)) => segs.push((r, s)),
                Some((r, s, true)) => {
                    idxs.insert((r, s));
                }
                None if name.starts_with('.') && name.ends_with(".tmp") => {
                    // Left by a crash in the middle of an atomic replace.
                    let _ = store.remove(name);
                }
                None => {}
            }
        }
        segs.sort_unstable();
        for &(r, s) in &idxs {
            if segs.binary_search(&(r, s)).is_err() {
                let _ = store.remove(&segment::idx_name(r, s));
            }
        }

        let previous_run = match store.read("run") {
            Ok(Some(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok()),
            Ok(None) => None,
            Err(e) => return Err(io_err(store.path("run"))(e)),
        };
        // Unreadable run file but segments present: continue above the highest run on disk.
        let disk_max = segs.iter().map(|(r, _)| *r).max();
        let last_run = previous_run.max(disk_max);
        // A run file at u32::MAX (damaged) must not wrap around onto runs still on disk.
        let run = match last_run.map_or(Some(1), |r| r.checked_add(1)) {
            Some(r) => r,
            None => disk_max.map_or(1, |d| d.saturating_add(1)),
        };
        // Without a durable run number there is no start. On a full disk the oldest segment
        // makes room (its batches are then announced as damaged, see `find_holes`).
        let mut removed_for_room = 0;
        loop {
            match store.write_atomic("run", format!("{run}\n").as_bytes()) {
                Ok(()) => break,
                Err(e) if is_storage_full(&e) && !segs.is_empty() => {
                    let (r, f) = segs.remove(0);
                    tracing::error!(
                        "{}: {e}; deleting the oldest segment {} to make room",
                        store.path("run").display(),
                        segment::seg_name(r, f)
                    );
                    let _ = store.remove(&segment::seg_name(r, f));
                    let _ = store.remove(&segment::idx_name(r, f));
                    removed_for_room += 1;
                }
                Err(e) => return Err(io_err(store.path("run"))(e)),
            }
        }

        let mut rec = Recovery {
            previous_run: last_run,
            removed_for_room,
            ..Recovery::default()
        };
        let mut delivered: BTreeMap<u32, RangeSet> = BTreeMap::new();
        let mut given_up: BTreeMap<u32, RangeSet> = BTreeMap::new();
        let mut pending = Vec::new();
        match store.read("acks") {
            Ok(Some(bytes)) => match decode_acks(&bytes) {
                Some(a) => {
                    pending = a.pending;
                    for (r, d, g) in a.runs {
                        let set = delivered.entry(r).or_default();
                        for (s, e) in d {
                            set.insert_range(s, e);
                        }
                        let set = given_up.entry(r).or_default();
                        for (s, e) in g {
                            set.insert_range(s, e);
                        }
                    }
                }
                None => {
                    rec.acks_unreadable = true;
                    tracing::warn!(
                        "{}: unreadable; every batch on disk will be sent again",
                        store.path("acks").display()
                    );
                }
            },
            Ok(None) => {}
            Err(e) => {
                rec.acks_unreadable = true;
                tracing::warn!(
                    "{}: {e}; every batch on disk will be sent again",
                    store.path("acks").display()
                );
            }
        }

        let mut segments = VecDeque::new();
        for (seg_run, first) in segs {
            let seg_path = store.path(&segment::seg_name(seg_run, first));
            let mut file = store
                .open(&segment::seg_name(seg_run, first))
                .map_err(io_err(seg_path.clone()))?;
            let size = file.size().map_err(io_err(seg_path.clone()))?;
            let indexed = match idxs.contains(&(seg_run, first)) {
                true => store
                    .read(&segment::idx_name(seg_run, first))
                    .ok()
                    .flatten()
                    .and_then(|b| segment::decode_index(&b, size)),
                false => None,
            };
            let (entries, bytes) = match indexed {
                Some(entries) => {
                    rec.indexed_segments += 1;
                    (entries, size)
                }
                None => {
                    rec.scanned_segments += 1;
                    let (entries, bytes, scan) = segment::scan(&mut file, seg_run, first)
                        .map_err(io_err(seg_path.clone()))?;
                    if scan.truncated_bytes > 0 {
                        tracing::warn!(
                            "{}: cut {} bytes of torn tail at offset {bytes}",
                            seg_path.display(),
                            scan.truncated_bytes
                        );
                    }
                    if scan.corrupt_records > 0 {
                        tracing::warn!(
                            "{}: skipped {} records with a bad checksum",
                            seg_path.display(),
                            scan.corrupt_records
                        );
                    }
                    rec.corrupt_records += scan.corrupt_records;
                    rec.truncated_bytes += scan.truncated_bytes;
                    // What was scanned is what is on disk from now on: make it durable, then
                    // index it so the next start does not scan it again.
                    file.sync().map_err(io_err(seg_path.clone()))?;
                    if !entries.is_empty() {
                        let idx = segment::encode_index(bytes, &entries);
                        if let Err(e) = store.write_atomic(&segment::idx_name(seg_run, first), &idx)
                        {
                            tracing::warn!("cannot index {}: {e}", seg_path.display());
                        }
                    }
                    (entries, bytes)
                }
            };
            if entries.is_empty() {
                // Nothing intact in it: it only takes a name.
                let _ = store.remove(&segment::seg_name(seg_run, first));
                let _ = store.remove(&segment::idx_name(seg_run, first));
                continue;
            }
            rec.records += entries.len() as u64;
            let mut present = RangeSet::new();
            for e in &entries {
                present.insert(e.seq);
            }
            let done = delivered.get(&seg_run);
            let live = entries
                .iter()
                .filter(|e| !done.is_some_and(|d| d.contains(e.seq)))
                .count() as u64;
            segments.push_back(Segment {
                run: seg_run,
                first_seq: first,
                bytes,
                present,
                live,
                first_t_us: entries.first().map_or(0, |e| e.meta.t_first_us),
            });
        }

        // Where the previous run ended durably: its highest sequence number on disk, delivered
        // or given up on.
        if let Some(r) = last_run {
            rec.previous_durable_last_seq = segments
                .iter()
                .filter(|s| s.run == r)
                .filter_map(|s| s.present.max())
                .chain(delivered.get(&r).and_then(RangeSet::max))
                .chain(given_up.get(&r).and_then(RangeSet::max))
                .max();
        }

        let mut q = Queue {
            stats: QueueStats {
                run,
                cap_bytes: opts.cap_bytes,
                ..QueueStats::default()
            },
            store,
            opts,
            run,
            next_seq: 0,
            segments,
            active: None,
            sealed: Vec::new(),
            loaded: VecDeque::new(),
            delivered,
            given_up,
            acks_dirty: false,
            syncing: false,
            notices: VecDeque::new(),
            written_notices: Vec::new(),
            dropped: None,
            doomed: Vec::new(),
            failing: false,
            sync_failing: false,
            unsynced_bytes: 0,
        };
        q.notices.extend(pending);
        rec.damaged_batches = q.find_holes();
        q.stats.damaged_batches = rec.damaged_batches;
        // Fully delivered segments go now: their deliveries are durable (they come from `acks`).
        let finished: Vec<(u32, u64)> = q
            .segments
            .iter()
            .filter(|s| s.live == 0)
            .map(Segment::key)
            .collect();
        for key in finished {
            q.remove_segment(key);
        }
        q.prune_acks();
        rec.segments = q.segments.len();
        rec.undelivered = q.segments.iter().map(|s| s.live).sum();
        Ok((q, rec))
    }

    /// Sequence numbers of runs on disk that are below the run's highest one and neither on
    /// disk, delivered, nor given up on: corrupt records and missing segments. They are given
    /// up on now and announced as damaged. Returns how many.
    fn find_holes(&mut self) -> u64 {
        let mut known: BTreeMap<u32, RangeSet> = BTreeMap::new();
        for s in &self.segments {
            let k = known.entry(s.run).or_default();
            for (a, b) in s.present.iter_ranges() {
                k.insert_range(a, b);
            }
        }
        let mut total = 0;
        for (run, mut k) in known {
            let Some(top) = k.max() else { continue };
            for m in [self.delivered.get(&run), self.given_up.get(&run)]
                .into_iter()
                .flatten()
            {
                for (a, b) in m.iter_ranges() {
                    k.insert_range(a, b);
                }
            }
            let mut holes = RangeSet::new();
            for (a, b) in k.holes(0, top + 1) {
                holes.insert_range(a, b);
            }
            if holes.is_empty() {
                continue;
            }
            total += holes.len();
            tracing::warn!(
                "queue: run {run} lacks {} batches on disk (damaged or missing segment); announcing them as damaged",
                holes.len()
            );
            let g = self.given_up.entry(run).or_default();
            for (a, b) in holes.iter_ranges() {
                g.insert_range(a, b);
            }
            self.acks_dirty = true;
            self.push_notice(gap_from(GapCause::Damaged, run, &holes, 0, 0, 0));
        }
        total
    }

    pub fn run(&self) -> u32 {
        self.run
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.opts.dir
    }

    /// Counters plus the figures derived from the segment summaries.
    pub fn stats(&self) -> QueueStats {
        let mut s = self.stats.clone();
        s.next_seq = self.next_seq;
        s.segments = self.segments.len();
        s.bytes_on_disk = self.bytes_on_disk();
        s.undelivered = self.undelivered_count();
        s.pending_notices = self.notices.len() as u64;
        s.unsynced_bytes = self.unsynced_bytes;
        s.oldest_undelivered_us = self
            .segments
            .iter()
            .find(|seg| seg.live > 0)
            .map(|seg| seg.first_t_us);
        s
    }

    /// Batches on disk not delivered yet.
    pub fn undelivered_count(&self) -> u64 {
        self.segments.iter().map(|s| s.live).sum()
    }

    fn bytes_on_disk(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Gap notices the queue wrote (as batches of its own) since the last call: the caller
    /// sends them like any other batch.
    pub fn take_notices(&mut self) -> Vec<(BatchId, Vec<u8>)> {
        std::mem::take(&mut self.written_notices)
    }

    /// Appends one batch. `encode` receives the batch's identity and returns the payload.
    ///
    /// Returns the identity and the payload (for sending it live without reading it back), plus
    /// the batches given up on to stay under the cap (the caller forgets them; the queue writes
    /// their gap notice itself, see [`Queue::take_notices`]). On a write error the batch is
    /// dropped, counted and later announced, and `None` is returned: the daemon stays up.
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
        let mut gone = self.make_room(HEADER_LEN as u64 + payload.len() as u64);
        let written = self.write_record(id, meta, &payload, false);
        let out = match written {
            Ok(()) => {
                self.next_seq += 1;
                self.stats.appended_batches += 1;
                self.stats.appended_bytes += payload.len() as u64;
                if self.failing {
                    self.failing = false;
                    tracing::warn!("queue writes work again in {}", self.opts.dir.display());
                }
                self.announce_dropped();
                self.write_notices(&mut gone);
                (Some((id, payload)), gone)
            }
            Err(e) => {
                self.stats.write_errors += 1;
                self.stats.dropped_batches += 1;
                self.stats.dropped_samples += u64::from(meta.samples);
                let d = self.dropped.get_or_insert(Dropped {
                    t_first_us: meta.t_first_us,
                    ..Dropped::default()
                });
                d.batches += 1;
                d.samples += u64::from(meta.samples);
                d.t_first_us = d.t_first_us.min(meta.t_first_us);
                d.t_last_us = d.t_last_us.max(meta.t_last_us);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(
                        "queue write failed in {} ({e}); dropping batches and counting them until writes work again",
                        self.opts.dir.display()
                    );
                }
                // Out of space: the oldest segment goes (reported as a gap) to make room for
                // the next attempt. Other errors would not be helped by deleting data.
                if is_storage_full(&e) && self.segments.len() > 1 {
                    gone.extend(self.evict_oldest());
                    // The room just made is first for the notices that tell what was lost.
                    self.delete_doomed();
                    self.announce_dropped();
                    self.write_notices(&mut gone);
                } else {
                    // Remembered (in the ack file too) until it can be written.
                    self.announce_dropped();
                    self.acks_dirty = true;
                }
                (None, gone)
            }
        };
        self.delete_doomed();
        out
    }

    /// Turns the batches dropped so far into a pending `Dropped` notice.
    fn announce_dropped(&mut self) {
        if let Some(d) = self.dropped.take() {
            self.push_notice(GapBody {
                cause: GapCause::Dropped,
                run: self.run,
                seqs: Vec::new(),
                batches: d.batches,
                samples: d.samples,
                t_first_us: d.t_first_us,
                t_last_us: d.t_last_us,
            });
        }
    }

    /// Queues a gap notice, merged with a pending one of the same run and cause (so the number
    /// of pending notices stays small whatever happens).
    fn push_notice(&mut self, g: GapBody) {
        if let Some(p) = self
            .notices
            .iter_mut()
            .filter(|p| p.fresh)
            .map(|p| &mut p.gap)
            .find(|p| p.run == g.run && p.cause == g.cause)
        {
            let mut seqs = RangeSet::new();
            for &(a, b) in p.seqs.iter().chain(&g.seqs) {
                seqs.insert_range(a, b);
            }
            p.seqs = seqs.iter_ranges().collect();
            p.batches += g.batches;
            p.samples += g.samples;
            if g.batches > 0 {
                p.t_first_us = if p.batches == g.batches {
                    g.t_first_us
                } else {
                    p.t_first_us.min(g.t_first_us)
                };
                p.t_last_us = p.t_last_us.max(g.t_last_us);
            }
            return;
        }
        self.notices.push_back(Pending {
            gap: g,
            fresh: true,
        });
    }

    /// Writes pending gap notices and makes them durable at once (they are rare, and the
    /// segments they describe are deleted right after); stops at the first failure (they stay
    /// pending).
    fn write_notices(&mut self, gone: &mut Vec<GapBody>) {
        let mut wrote = false;
        // Room for a notice may evict a segment holding notices, which are then due again:
        // bounded, in case the segments are tiny.
        let mut budget = 64;
        while let Some(pending) = self.notices.pop_front() {
            let g = &pending.gap;
            let id = BatchId {
                run: self.run,
                seq: self.next_seq,
            };
            let t = crate::now_us();
            let payload = codec::encode_version(
                &codec::control_envelope(&self.opts.vehicle, id, Kind::Gap, t, &g),
                self.opts.format_version,
            );
            let meta = BatchMeta {
                samples: 0,
                t_first_us: t,
                t_last_us: t,
            };
            if budget > 0 {
                budget -= 1;
                gone.extend(self.make_room(HEADER_LEN as u64 + payload.len() as u64));
            }
            match self.write_record(id, meta, &payload, true) {
                Ok(()) => {
                    self.next_seq += 1;
                    self.stats.notices_written += 1;
                    self.written_notices.push((id, payload));
                    wrote = true;
                    // The ack file's list of pending notices is stale now.
                    self.acks_dirty = true;
                }
                Err(e) => {
                    self.stats.write_errors += 1;
                    self.notices.push_front(pending);
                    // The disk is full: the notice that tells what was lost outranks the oldest
                    // data. Without a segment to spare, it stays pending (and in the ack file).
                    if is_storage_full(&e) && budget > 0 && self.segments.len() > 1 {
                        budget -= 1;
                        gone.extend(self.evict_oldest());
                        self.delete_doomed();
                        continue;
                    }
                    break;
                }
            }
        }
        if wrote {
            // The notices may have filled a segment and started the next one: both count.
            let files = self.sealed.iter().map(|s| &s.file);
            let synced: io::Result<()> = files
                .chain(self.active.as_ref().map(|a| &a.file))
                .try_for_each(|f| f.sync());
            if let Err(e) = synced {
                self.stats.sync_errors += 1;
                tracing::error!("queue fsync of a gap notice failed: {e}");
            }
        }
    }

    /// Evicts oldest segments until a record of `rec_len` bytes fits under the cap.
    fn make_room(&mut self, rec_len: u64) -> Vec<GapBody> {
        let limit = self.opts.cap_bytes.saturating_sub(rec_len);
        let mut gone = Vec::new();
        while self.bytes_on_disk() > limit && self.segments.len() > 1 {
            gone.extend(self.evict_oldest());
        }
        gone
    }

    fn write_record(
        &mut self,
        id: BatchId,
        meta: BatchMeta,
        payload: &[u8],
        notice: bool,
    ) -> io::Result<()> {
        let rec_len = HEADER_LEN as u64 + payload.len() as u64;
        let need_new = match (self.segments.back(), &self.active) {
            (Some(s), Some(_)) => {
                s.run != self.run || (s.bytes > 0 && s.bytes + rec_len > self.opts.segment_bytes)
            }
            _ => true,
        };
        if need_new {
            self.seal_active();
            let name = segment::seg_name(self.run, id.seq);
            let file = self.store.create(&name)?;
            self.active = Some(Active {
                file,
                entries: Vec::new(),
            });
            self.segments.push_back(Segment {
                run: self.run,
                first_seq: id.seq,
                bytes: 0,
                present: RangeSet::new(),
                live: 0,
                first_t_us: meta.t_first_us,
            });
        }
        let (Some(active), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no active segment"));
        };
        let offset = seg.bytes;
        let head = segment::record_header(id, payload);
        if let Err(e) = active.file.append2(&head, payload) {
            // Cut off whatever part of the record made it, so the segment stays well formed.
            let _ = active.file.set_len(offset);
            return Err(e);
        }
        if seg.present.is_empty() {
            seg.first_t_us = meta.t_first_us;
        }
        let rec_len = (HEADER_LEN + payload.len()) as u64;
        seg.bytes += rec_len;
        seg.present.insert(id.seq);
        seg.live += 1;
        active.entries.push(segment::Entry {
            seq: id.seq,
            offset,
            len: payload.len() as u32,
            meta,
            notice,
        });
        self.unsynced_bytes += rec_len;
        Ok(())
    }

    /// The active segment is full: it waits for the next group commit, which also indexes it.
    fn seal_active(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let Some(seg) = self.segments.back() else {
            return;
        };
        let entries = Arc::new(active.entries);
        self.sealed.push(Sealed {
            key: seg.key(),
            file: active.file,
            bytes: seg.bytes,
            entries: entries.clone(),
        });
        // Backfill may read it soon: keep its offsets without a reload.
        if let Ok(file) = self.store.open(&segment::seg_name(seg.run, seg.first_seq)) {
            self.remember(seg.key(), file, entries);
        }
    }

    fn remember(&mut self, key: (u32, u64), file: S::File, entries: Arc<Vec<Entry>>) {
        self.loaded.retain(|l| l.key != key);
        self.loaded.push_back(Loaded { key, file, entries });
        while self.loaded.len() > LOADED {
            self.loaded.pop_front();
        }
    }

    /// Whether a group commit is due before the next flush tick (past the byte threshold).
    pub fn wants_sync(&self) -> bool {
        !self.syncing && self.unsynced_bytes >= self.opts.sync_bytes
    }

    /// Starts a group commit: returns the work to do (on any thread), or `None` if one is
    /// already running or there is nothing to make durable.
    pub fn begin_sync(&mut self) -> Option<SyncJob<S>> {
        if self.syncing || (self.unsynced_bytes == 0 && self.sealed.is_empty() && !self.acks_dirty)
        {
            return None;
        }
        let mut syncs = Vec::new();
        let sealed = std::mem::take(&mut self.sealed);
        for s in &sealed {
            match s.file.syncer() {
                Ok(f) => syncs.push(f),
                Err(e) => syncs.push(Box::new(move || Err(e))),
            }
        }
        if self.unsynced_bytes > 0
            && let Some(a) = &self.active
        {
            match a.file.syncer() {
                Ok(f) => syncs.push(f),
                Err(e) => syncs.push(Box::new(move || Err(e))),
            }
        }
        let acks = self
            .acks_dirty
            .then(|| encode_acks(&self.delivered, &self.given_up, &self.notices));
        if acks.is_some() {
            // Saved as they are: from now on they may be announced twice (after a restart),
            // so they must stay word for word the same.
            for p in &mut self.notices {
                p.fresh = false;
            }
        }
        self.acks_dirty = false;
        // Segments delivered in full; their deliveries are durable once `acks` is.
        let active_key = self
            .active
            .as_ref()
            .and_then(|_| self.segments.back().map(Segment::key));
        let delete = self
            .segments
            .iter()
            .filter(|s| s.live == 0 && Some(s.key()) != active_key)
            .map(Segment::key)
            .collect();
        self.syncing = true;
        let bytes = std::mem::take(&mut self.unsynced_bytes);
        Some(SyncJob {
            store: self.store.clone(),
            syncs,
            sealed,
            acks,
            upto: self.next_seq.checked_sub(1),
            delete,
            bytes,
        })
    }

    /// Takes a finished group commit back.
    pub fn finish_sync(&mut self, done: SyncDone<S::File>) -> io::Result<()> {
        self.syncing = false;
        if done.acks_failed {
            self.acks_dirty = true;
        }
        if let Err(e) = done.result {
            // Try again at the next commit: the files stay unsynced.
            if !self.sync_failing {
                self.sync_failing = true;
                tracing::error!(
                    "queue group commit failed in {} ({e}); retrying at every flush until it works",
                    self.opts.dir.display()
                );
            }
            self.stats.sync_errors += 1;
            self.sealed.extend(done.sealed);
            self.unsynced_bytes += done.bytes;
            return Err(e);
        }
        self.stats.syncs += 1;
        if self.sync_failing {
            self.sync_failing = false;
            tracing::warn!(
                "queue group commits work again in {}",
                self.opts.dir.display()
            );
        }
        if done.upto.is_some() {
            self.stats.durable_seq = done.upto.max(self.stats.durable_seq);
        }
        for key in done.delete {
            if self.segments.iter().any(|s| s.key() == key && s.live == 0) {
                self.remove_segment(key);
            }
        }
        self.prune_acks();
        Ok(())
    }

    /// One group commit, in place: fdatasync, then index and ack files.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.begin_sync() {
            Some(job) => self.finish_sync(job.run()),
            None => Ok(()),
        }
    }

    fn segment_index(&self, id: BatchId) -> Option<usize> {
        let i = self
            .segments
            .partition_point(|s| (s.run, s.first_seq) <= (id.run, id.seq));
        let i = i.checked_sub(1)?;
        let s = &self.segments[i];
        (s.run == id.run && s.present.contains(id.seq)).then_some(i)
    }

    fn is_delivered(&self, id: BatchId) -> bool {
        self.delivered
            .get(&id.run)
            .is_some_and(|d| d.contains(id.seq))
    }

    /// Marks a batch delivered. Returns true the first time.
    pub fn ack(&mut self, id: BatchId) -> bool {
        let Some(i) = self.segment_index(id) else {
            return false;
        };
        if !self.delivered.entry(id.run).or_default().insert(id.seq) {
            return false;
        }
        let seg = &mut self.segments[i];
        seg.live = seg.live.saturating_sub(1);
        self.acks_dirty = true;
        self.stats.delivered_batches += 1;
        true
    }

    /// The active segment's writer and offsets, if segment `i` is the active one.
    fn active_at(&self, i: usize) -> Option<&Active<S::File>> {
        self.active
            .as_ref()
            .filter(|_| i + 1 == self.segments.len())
    }

    /// Record offsets of sealed segment `i` (loaded already, or loaded now from its index file,
    /// or by a scan if the index is missing or damaged).
    fn entries_of(&mut self, i: usize) -> io::Result<Arc<Vec<Entry>>> {
        let key = self.segments[i].key();
        if let Some(l) = self.loaded.iter().find(|l| l.key == key) {
            return Ok(l.entries.clone());
        }
        let seg_bytes = self.segments[i].bytes;
        let mut file = self.store.open(&segment::seg_name(key.0, key.1))?;
        let entries = match self
            .store
            .read(&segment::idx_name(key.0, key.1))?
            .and_then(|b| segment::decode_index(&b, seg_bytes))
        {
            Some(e) => e,
            None => segment::scan(&mut file, key.0, key.1)?.0,
        };
        let entries = Arc::new(entries);
        self.remember(key, file, entries.clone());
        Ok(entries)
    }

    /// Reads a batch's payload back (backfill, re-send after a link failure). `None` if the batch
    /// is no longer waiting (delivered, evicted, or found damaged now: then it is given up on and
    /// announced like an eviction).
    pub fn read(&mut self, id: BatchId) -> io::Result<Option<Vec<u8>>> {
        let Some(i) = self.segment_index(id) else {
            return Ok(None);
        };
        if self.is_delivered(id) {
            return Ok(None);
        }
        let find = |v: &[Entry]| {
            v.binary_search_by_key(&id.seq, |e| e.seq)
                .ok()
                .map(|j| v[j])
        };
        let (entry, result) = if let Some(a) = self.active_at(i) {
            let e = find(&a.entries);
            (e, e.map(|e| segment::read_record(&a.file, id.run, &e)))
        } else {
            let entries = self.entries_of(i)?;
            let e = find(&entries);
            let key = self.segments[i].key();
            let file = self.loaded.iter().find(|l| l.key == key).map(|l| &l.file);
            let r = match (e, file) {
                (Some(e), Some(f)) => Some(segment::read_record(f, id.run, &e)),
                (Some(_), None) => Some(Err(io::Error::other("segment not open"))),
                (None, _) => None,
            };
            (e, r)
        };
        match result {
            Some(Ok(p)) => Ok(Some(p)),
            Some(Err(e)) if e.kind() != io::ErrorKind::InvalidData => Err(e),
            other => {
                let why = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "its index does not list it".to_string(),
                };
                tracing::warn!("queue: batch {id} is damaged on disk ({why}); announcing it");
                self.give_up_damaged(i, id, entry.map(|e| e.meta).unwrap_or_default());
                Ok(None)
            }
        }
    }

    fn give_up_damaged(&mut self, i: usize, id: BatchId, meta: BatchMeta) {
        let seg = &mut self.segments[i];
        if seg.present.remove(id.seq) {
            seg.live = seg.live.saturating_sub(1);
        }
        self.given_up.entry(id.run).or_default().insert(id.seq);
        self.acks_dirty = true;
        self.stats.damaged_batches += 1;
        let mut one = RangeSet::new();
        one.insert(id.seq);
        self.push_notice(gap_from(
            GapCause::Damaged,
            id.run,
            &one,
            u64::from(meta.samples),
            meta.t_first_us,
            meta.t_last_us,
        ));
    }

    /// The oldest undelivered batch for which `skip` is false (backfill: `skip` says what is in
    /// flight or already waiting to be sent). Cost: segments plus skipped batches.
    pub fn oldest_undelivered(&self, skip: impl Fn(BatchId) -> bool) -> Option<BatchId> {
        for seg in &self.segments {
            if seg.live == 0 {
                continue;
            }
            let done = self.delivered.get(&seg.run);
            for (a, b) in seg.present.iter_ranges() {
                let open = match done {
                    Some(d) => d.holes(a, b),
                    None => vec![(a, b)],
                };
                for (x, y) in open {
                    for seq in x..y {
                        let id = BatchId { run: seg.run, seq };
                        if !skip(id) {
                            return Some(id);
                        }
                    }
                }
            }
        }
        None
    }

    /// Every undelivered batch with its metadata, oldest first. Loads every index: for tests
    /// and tools, not for the daemon's hot path.
    pub fn undelivered(&mut self) -> Vec<(BatchId, BatchMeta)> {
        let mut out = Vec::new();
        for i in 0..self.segments.len() {
            if self.segments[i].live == 0 {
                continue;
            }
            let entries = match self.active_at(i) {
                Some(a) => Arc::new(a.entries.clone()),
                None => match self.entries_of(i) {
                    Ok(e) => e,
                    Err(_) => continue,
                },
            };
            let run = self.segments[i].run;
            for e in entries.iter() {
                let id = BatchId { run, seq: e.seq };
                if self.segments[i].present.contains(e.seq) && !self.is_delivered(id) {
                    out.push((id, e.meta));
                }
            }
        }
        out
    }

    /// Deletes a segment's files and forgets it.
    fn remove_segment(&mut self, key: (u32, u64)) {
        self.forget_segment(key);
        self.delete_files(key);
    }

    fn forget_segment(&mut self, key: (u32, u64)) {
        self.segments.retain(|s| s.key() != key);
        self.loaded.retain(|l| l.key != key);
        self.sealed.retain(|s| s.key != key);
    }

    /// Deletes the files of evicted segments, once the notices about them are durable.
    fn delete_doomed(&mut self) {
        for key in std::mem::take(&mut self.doomed) {
            self.delete_files(key);
        }
    }

    fn delete_files(&mut self, key: (u32, u64)) {
        let (r, s) = key;
        for name in [segment::seg_name(r, s), segment::idx_name(r, s)] {
            if let Err(e) = self.store.remove(&name) {
                tracing::warn!("cannot delete {}: {e}", self.store.path(&name).display());
            }
        }
    }

    /// Forgets the ack state of runs that have no segment left (and are not the current run).
    fn prune_acks(&mut self) {
        let keep: std::collections::BTreeSet<u32> = self
            .segments
            .iter()
            .map(|s| s.run)
            .chain([self.run])
            .collect();
        let before = self.delivered.len() + self.given_up.len();
        self.delivered.retain(|r, _| keep.contains(r));
        self.given_up.retain(|r, _| keep.contains(r));
        if self.delivered.len() + self.given_up.len() != before {
            self.acks_dirty = true;
        }
    }

    /// Evicts the oldest segment (never the active one); its undelivered batches are given up
    /// on, counted, and announced by a gap notice; undelivered gap notices in it are announced
    /// again. Its files are deleted by [`Queue::delete_doomed`]. Returns the gap.
    fn evict_oldest(&mut self) -> Option<GapBody> {
        if self.segments.len() <= 1 && self.active.is_some() {
            return None;
        }
        let key = self.segments.front()?.key();
        let entries = self.entries_of(0).ok();
        let seg = self.segments.front()?;
        let done = self.delivered.get(&seg.run);
        let mut lost = RangeSet::new();
        for (a, b) in seg.present.iter_ranges() {
            for (x, y) in done.map_or_else(|| vec![(a, b)], |d| d.holes(a, b)) {
                lost.insert_range(x, y);
            }
        }
        let (mut samples, mut t0, mut t1) = (0u64, u64::MAX, 0u64);
        let mut again = Vec::new();
        let file = self.loaded.iter().find(|l| l.key == key).map(|l| &l.file);
        for e in entries.iter().flat_map(|v| v.iter()) {
            if !lost.contains(e.seq) {
                continue;
            }
            samples += u64::from(e.meta.samples);
            t0 = t0.min(e.meta.t_first_us);
            t1 = t1.max(e.meta.t_last_us);
            if e.notice
                && let Some(f) = file
                && let Ok(p) = segment::read_record(f, key.0, e)
                && let Ok(env) = codec::decode(&p)
                && let Ok(g) = codec::gap_body(&env)
            {
                again.push(g);
            }
        }
        self.forget_segment(key);
        self.doomed.push(key);
        // Announced again word for word (after this eviction's own notice), so a receiver that
        // did get the first copy (it was in flight) recognises the repeat.
        let again = again.into_iter().map(|gap| Pending { gap, fresh: false });
        if lost.is_empty() {
            self.notices.extend(again);
            self.prune_acks();
            return None;
        }
        let g = self.given_up.entry(key.0).or_default();
        for (a, b) in lost.iter_ranges() {
            g.insert_range(a, b);
        }
        self.acks_dirty = true;
        self.prune_acks();
        self.stats.evicted_batches += lost.len();
        self.stats.evicted_samples += samples;
        tracing::warn!(
            "disk cap reached: evicted {} undelivered batches ({} samples) of run {}",
            lost.len(),
            samples,
            key.0
        );
        let gap = gap_from(GapCause::Evicted, key.0, &lost, samples, t0.min(t1), t1);
        self.push_notice(gap.clone());
        self.notices.extend(again);
        Some(gap)
    }
}

#[cfg(test)]
mod tests;

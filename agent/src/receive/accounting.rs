//! Per-vehicle accounting of what arrived, what was re-sent, and what is missing and why (sans-IO).
//!
//! Invariant 1 says every batch ends up delivered, evicted or lost in a crash before its fsync,
//! and that the receiver can tell these apart from the stream alone:
//! - delivered: the batch arrived;
//! - evicted: a `Gap` notice named its sequence number;
//! - lost in a crash: a later run's `Run` announcement said the previous run was durable only up
//!   to sequence D, so its sequence numbers above D that never arrived never will.
//!
//! Everything else below the highest known sequence number of a run is "missing": not arrived
//! yet (backlog still queued in the car, or in flight).
//!
//! `Run` and `Gap` batches occupy sequence numbers of their run like data batches do (seq 0 of
//! every run is its `Run` announcement), so they count as arrived.
//!
//! The arrived sets are also the receiver's dedup (batch ids are never reused, so "arrived
//! before" is exactly "duplicate").
//!
//! # Bounded memory
//!
//! Everything here is kept as range sets, whose size grows with holes and with runs, so both are
//! capped ([`Limits`]), and nothing is dropped silently:
//! - a run whose three sets (arrived, evicted, damaged) hold more than `max_ranges` ranges gets a
//!   low-water mark: the lower half of its ranges is folded into counters, and the holes below
//!   the mark are counted as `untracked_batches` (missing when they stopped being tracked);
//! - beyond `max_runs` runs, the oldest (lowest-numbered) run is folded into per-vehicle totals
//!   (its still-missing batches also become `untracked_batches`) and the vehicle's run low-water
//!   mark moves to it;
//! - a batch below a low-water mark is judged already seen without proof: dropped, and counted
//!   as `low_water_batches` (and samples), apart from proven duplicates;
//! - gap notices naming sequence numbers below a mark count as `late_notice_batches`.

use super::latency::LatencyHistogram;
use crate::codec::{BatchId, GapBody, GapCause, HeartbeatBody, RunBody};
use crate::ranges::RangeSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many missing ranges a [`RunSummary`] lists (the count is always exact).
pub const MAX_LISTED_RANGES: usize = 16;
/// `Dropped` notices remembered per vehicle to recognise a repeated one (they name no sequence
/// numbers). A repeat older than that many notices would be counted twice.
pub const RECENT_DROPPED_NOTICES: usize = 64;

/// Memory bounds of the accounting (and so of the dedup and of the state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Runs per vehicle kept with full detail.
    pub max_runs: usize,
    /// Ranges per run (arrived + evicted + damaged) before its low-water mark moves up.
    pub max_ranges: usize,
}

impl Default for Limits {
    /// 16 runs × 1024 ranges: at most about 0.8 MB of ranges per vehicle in memory.
    fn default() -> Self {
        Limits {
            max_runs: 16,
            max_ranges: 1024,
        }
    }
}

/// What a run's low-water mark folded away.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Retired {
    arrived: u64,
    evicted: u64,
    damaged: u64,
    /// Holes below the mark: missing when they stopped being tracked.
    untracked: u64,
}

/// Totals of the runs folded away.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Forgotten {
    runs: u64,
    evicted: u64,
    damaged: u64,
    lost_in_crash: u64,
    untracked: u64,
}

/// Whether a batch was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    No,
    Yes,
    /// Below a low-water mark: taken as seen without proof.
    BelowLowWater,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunLedger {
    arrived: RangeSet,
    evicted: RangeSet,
    damaged: RangeSet,
    /// From this run's own `Run` batch.
    announced: bool,
    previous_run: Option<u32>,
    previous_durable_last_seq: Option<u64>,
    /// Set when a later run announced this one as its predecessor.
    ended_by_run: Option<u32>,
    durable_last_seq: Option<u64>,
    /// Low-water mark: sequence numbers below it are no longer tracked one by one.
    floor: u64,
    /// From the latest heartbeat: the run has assigned every sequence number below this.
    #[serde(default)]
    heartbeat_next_seq: u64,
    retired: Retired,
}

impl RunLedger {
    fn range_count(&self) -> usize {
        self.arrived.range_count() + self.evicted.range_count() + self.damaged.range_count()
    }

    /// Folds the lower half of the ranges below a new low-water mark.
    fn retire_half(&mut self) {
        let mut starts: Vec<u64> = self
            .arrived
            .iter_ranges()
            .chain(self.evicted.iter_ranges())
            .chain(self.damaged.iter_ranges())
            .map(|(s, _)| s)
            .collect();
        if starts.len() < 2 {
            return;
        }
        starts.sort_unstable();
        let floor = starts[starts.len() / 2];
        if floor <= self.floor {
            return;
        }
        let (from, to) = (self.floor, floor);
        let arrived = self.arrived.count_in(from, to);
        let mut explained = self.arrived.clone();
        let mut evicted = 0;
        for (s, e) in self.evicted.iter_ranges() {
            let (s, e) = (s.max(from), e.min(to));
            if s < e {
                evicted += (e - s) - explained.count_in(s, e);
                explained.insert_range(s, e);
            }
        }
        let mut damaged = 0;
        for (s, e) in self.damaged.iter_ranges() {
            let (s, e) = (s.max(from), e.min(to));
            if s < e {
                damaged += (e - s) - explained.count_in(s, e);
                explained.insert_range(s, e);
            }
        }
        let holes: u64 = explained.holes(from, to).iter().map(|(s, e)| e - s).sum();
        self.retired.arrived += arrived;
        self.retired.evicted += evicted;
        self.retired.damaged += damaged;
        self.retired.untracked += holes;
        self.arrived.remove_below(floor);
        self.evicted.remove_below(floor);
        self.damaged.remove_below(floor);
        self.floor = floor;
    }
}

/// Counters and per-run sequence ledgers of one vehicle.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Accounting {
    batches: u64,
    duplicate_batches: u64,
    samples: u64,
    duplicate_samples: u64,
    gap_notices: u64,
    evicted_samples: u64,
    dropped_batches: u64,
    dropped_samples: u64,
    /// The last `Dropped` notices, so a repeated one is not counted twice (the other causes are
    /// recognised by their sequence numbers).
    recent_dropped: std::collections::VecDeque<GapBody>,
    run_announcements: u64,
    #[serde(default)]
    heartbeats: u64,
    #[serde(default)]
    backlog_batches: Option<u64>,
    runs: BTreeMap<u32, RunLedger>,
    latency: LatencyHistogram,
    /// Runs up to this one were folded into `forgotten`.
    run_floor: Option<u32>,
    forgotten: Forgotten,
    low_water_batches: u64,
    low_water_samples: u64,
    late_notice_batches: u64,
}

/// What is known about one run of one vehicle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub run: u32,
    /// Highest sequence number known to exist (arrived or reported evicted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seq: Option<u64>,
    /// Distinct batches that arrived (data, gap and run batches).
    pub batches: u64,
    /// Distinct sequence numbers reported evicted by the car's disk cap (and not arrived).
    pub evicted_batches: u64,
    /// Distinct sequence numbers the car's queue reported damaged or missing on disk (and not
    /// arrived, nor evicted).
    pub damaged_batches: u64,
    /// Not arrived yet and not explained (may still arrive).
    pub missing_batches: u64,
    /// Above the durable end this run's successor announced, never arrived: lost for good.
    pub lost_in_crash_batches: u64,
    /// The first missing ranges (half-open), at most [`MAX_LISTED_RANGES`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<(u64, u64)>,
    /// Whether this run's `Run` announcement (seq 0) arrived.
    pub announced: bool,
    /// As announced by this run: the run before it and where that one durably ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_run: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_durable_last_seq: Option<u64>,
    /// The later run whose announcement ended this one. When set, every sequence number above
    /// `lost_in_crash_after_seq` (every one, when that is absent: nothing was durable) that has
    /// not arrived was lost in a crash before its fsync; how many there were beyond `max_seq`
    /// cannot be known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by_run: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_in_crash_after_seq: Option<u64>,
    /// Low-water mark: sequence numbers below it are no longer tracked one by one (absent: 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub low_water_seq: u64,
    /// Missing below the low-water mark when it moved up: no longer tracked.
    #[serde(skip_serializing_if = "is_zero")]
    pub untracked_batches: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Everything known about one vehicle.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VehicleSummary {
    /// Distinct batches accepted (all kinds).
    pub batches: u64,
    pub duplicate_batches: u64,
    /// Samples written.
    pub samples: u64,
    /// Samples of dropped duplicate batches.
    pub duplicate_samples: u64,
    pub gap_notices: u64,
    pub evicted_batches: u64,
    pub evicted_samples: u64,
    pub damaged_batches: u64,
    /// Batches the car could not write at all (disk full or failing): they never had a sequence
    /// number, so only their count, samples and time range are known.
    pub dropped_batches: u64,
    pub dropped_samples: u64,
    pub run_announcements: u64,
    /// Heartbeats received, and the car's backlog (batches queued, not yet acknowledged) in
    /// the latest one.
    pub heartbeats: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_batches: Option<u64>,
    pub missing_batches: u64,
    pub lost_in_crash_batches: u64,
    /// Batches dropped because they were below a low-water mark (taken as already seen without
    /// proof, see the memory bounds), and their samples.
    pub low_water_batches: u64,
    pub low_water_samples: u64,
    /// Runs folded into these totals (memory bound); they are no longer listed in `runs`.
    pub forgotten_runs: u64,
    /// Missing batches that stopped being tracked (below a low-water mark, or in a forgotten
    /// run): they may still arrive (then counted in `low_water_batches`), or were lost.
    pub untracked_batches: u64,
    /// Batches named by gap notices below a low-water mark (not in `evicted_batches`).
    pub late_notice_batches: u64,
    /// End-to-end latency of data batches: receive wall time minus the batch's last sample time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms_max: Option<f64>,
    pub runs: Vec<RunSummary>,
}

impl Accounting {
    pub fn new() -> Self {
        Self::default()
    }

    /// The run's ledger, created on first use; `None` for a run folded away.
    fn run_mut(&mut self, run: u32) -> Option<&mut RunLedger> {
        if self.run_floor.is_some_and(|f| run <= f) && !self.runs.contains_key(&run) {
            return None;
        }
        Some(self.runs.entry(run).or_default())
    }

    /// A heartbeat of `run`: every sequence number below `next_seq` exists.
    pub fn on_heartbeat(&mut self, run: u32, h: &HeartbeatBody) {
        self.heartbeats += 1;
        self.backlog_batches = Some(h.backlog_batches);
        if let Some(r) = self.run_mut(run) {
            r.heartbeat_next_seq = r.heartbeat_next_seq.max(h.next_seq);
        }
    }

    /// Whether batch `id` was accepted before.
    pub fn seen(&self, id: BatchId) -> Seen {
        match self.runs.get(&id.run) {
            Some(r) if id.seq < r.floor => Seen::BelowLowWater,
            Some(r) if r.arrived.contains(id.seq) => Seen::Yes,
            Some(_) => Seen::No,
            None if self.run_floor.is_some_and(|f| id.run <= f) => Seen::BelowLowWater,
            None => Seen::No,
        }
    }

    /// A batch accepted for the first time; `samples` is its sample count (0 for control kinds).
    /// False (and nothing counted) if it was already accepted, or is below a low-water mark.
    pub fn on_batch(&mut self, id: BatchId, samples: u64) -> bool {
        if self.seen(id) != Seen::No {
            return false;
        }
        let Some(run) = self.run_mut(id.run) else {
            return false;
        };
        if !run.arrived.insert(id.seq) {
            return false;
        }
        self.batches += 1;
        self.samples += samples;
        true
    }

    /// A batch dropped because it was below a low-water mark.
    pub fn on_low_water(&mut self, samples: u64) {
        self.low_water_batches += 1;
        self.low_water_samples += samples;
    }

    /// Applies `limits` after a change to `run`.
    pub fn enforce(&mut self, limits: &Limits, run: u32) {
        if let Some(r) = self.runs.get_mut(&run) {
            while r.range_count() > limits.max_ranges.max(2) {
                let before = r.floor;
                r.retire_half();
                if r.floor == before {
                    break;
                }
            }
        }
        while self.runs.len() > limits.max_runs.max(1) {
            let Some((run, r)) = self.runs.pop_first() else {
                break;
            };
            let s = run_summary(run, &r);
            self.forgotten.runs += 1;
            self.forgotten.evicted += s.evicted_batches;
            self.forgotten.damaged += s.damaged_batches;
            self.forgotten.lost_in_crash += s.lost_in_crash_batches;
            self.forgotten.untracked += s.missing_batches + s.untracked_batches;
            self.run_floor = Some(self.run_floor.map_or(run, |f| f.max(run)));
        }
    }

    /// A re-sent batch that was dropped.
    pub fn on_duplicate(&mut self, samples: u64) {
        self.duplicate_batches += 1;
        self.duplicate_samples += samples;
    }

    /// A gap notice (its own batch is counted by [`Accounting::on_batch`]).
    ///
    /// A repeated notice (the car re-sends one under a new id when the first copy was evicted
    /// before its ack) counts once: for `Evicted` and `Damaged`, a notice whose sequence numbers
    /// are all already reported adds nothing; `Dropped` notices are compared with the last
    /// [`RECENT_DROPPED_NOTICES`].
    pub fn on_gap(&mut self, gap: &GapBody) {
        if gap.cause == GapCause::Dropped {
            if self.recent_dropped.contains(gap) {
                return;
            }
            if self.recent_dropped.len() >= RECENT_DROPPED_NOTICES {
                self.recent_dropped.pop_front();
            }
            self.recent_dropped.push_back(gap.clone());
            self.gap_notices += 1;
            self.dropped_batches += gap.batches;
            self.dropped_samples += gap.samples;
            return;
        }
        let evicted = gap.cause == GapCause::Evicted;
        let Some(run) = self.run_mut(gap.run) else {
            // A forgotten run: its missing batches were counted as untracked.
            self.gap_notices += 1;
            self.late_notice_batches += gap.batches;
            if evicted {
                self.evicted_samples += gap.samples;
            }
            return;
        };
        let floor = run.floor;
        let set = if evicted {
            &mut run.evicted
        } else {
            &mut run.damaged
        };
        let mut late = 0;
        let mut fresh = false;
        for &(start, end) in &gap.seqs {
            if start >= end {
                continue;
            }
            late += floor.clamp(start, end) - start;
            let start = start.max(floor);
            if start < end {
                fresh |= set.count_in(start, end) < end - start;
            }
        }
        if !fresh && late == 0 {
            return;
        }
        for &(start, end) in &gap.seqs {
            set.insert_range(start.max(floor), end);
        }
        self.gap_notices += 1;
        self.late_notice_batches += late;
        if evicted {
            self.evicted_samples += gap.samples;
        }
    }

    /// A run announcement `id` (its own batch is counted by [`Accounting::on_batch`]).
    pub fn on_run(&mut self, id: BatchId, body: &RunBody) {
        self.run_announcements += 1;
        if let Some(this) = self.run_mut(id.run) {
            this.announced = true;
            this.previous_run = body.previous_run;
            this.previous_durable_last_seq = body.previous_durable_last_seq;
        }
        // A run cannot end itself; such an announcement is malformed and only recorded above.
        // A forgotten predecessor's missing batches were already counted as untracked.
        if let Some(prev) = body.previous_run.filter(|&p| p != id.run)
            && let Some(p) = self.run_mut(prev)
        {
            p.ended_by_run = Some(id.run);
            p.durable_last_seq = body.previous_durable_last_seq;
        }
    }

    /// End-to-end latency of one data batch, in µs.
    pub fn on_latency(&mut self, us: u64) {
        self.latency.record(us);
    }

    pub fn summary(&self) -> VehicleSummary {
        let runs: Vec<RunSummary> = self
            .runs
            .iter()
            .map(|(&run, r)| run_summary(run, r))
            .collect();
        let ms = |us: f64| us / 1000.0;
        VehicleSummary {
            batches: self.batches,
            duplicate_batches: self.duplicate_batches,
            samples: self.samples,
            duplicate_samples: self.duplicate_samples,
            gap_notices: self.gap_notices,
            // Counted from the union of reported ranges, so a notice repeated under a new id
            // does not count the same batches twice.
            evicted_batches: runs.iter().map(|r| r.evicted_batches).sum::<u64>()
                + self.forgotten.evicted,
            evicted_samples: self.evicted_samples,
            damaged_batches: runs.iter().map(|r| r.damaged_batches).sum::<u64>()
                + self.forgotten.damaged,
            dropped_batches: self.dropped_batches,
            dropped_samples: self.dropped_samples,
            run_announcements: self.run_announcements,
            heartbeats: self.heartbeats,
            backlog_batches: self.backlog_batches,
            missing_batches: runs.iter().map(|r| r.missing_batches).sum(),
            lost_in_crash_batches: runs.iter().map(|r| r.lost_in_crash_batches).sum::<u64>()
                + self.forgotten.lost_in_crash,
            low_water_batches: self.low_water_batches,
            low_water_samples: self.low_water_samples,
            forgotten_runs: self.forgotten.runs,
            untracked_batches: runs.iter().map(|r| r.untracked_batches).sum::<u64>()
                + self.forgotten.untracked,
            late_notice_batches: self.late_notice_batches,
            latency_ms_p50: self.latency.quantile_us(0.5).map(ms),
            latency_ms_p99: self.latency.quantile_us(0.99).map(ms),
            latency_ms_max: self.latency.max_us().map(|us| ms(us as f64)),
            runs,
        }
    }
}

fn run_summary(run: u32, r: &RunLedger) -> RunSummary {
    let below = r.floor.checked_sub(1);
    let max_seq = r
        .arrived
        .max()
        .max(r.evicted.max())
        .max(r.damaged.max())
        .max(below);
    // Sequence numbers up to the announced durable end exist even if none of them arrived yet.
    let durable = r.ended_by_run.and(r.durable_last_seq);
    let known_end = max_seq
        .max(durable)
        .map_or(0, |m| m.saturating_add(1))
        .max(r.heartbeat_next_seq);
    let mut explained = r.arrived.clone();
    let mut evicted_batches = r.retired.evicted;
    for (s, e) in r.evicted.iter_ranges() {
        evicted_batches += (e - s) - explained.count_in(s, e);
        explained.insert_range(s, e);
    }
    let mut damaged_batches = r.retired.damaged;
    for (s, e) in r.damaged.iter_ranges() {
        damaged_batches += (e - s) - explained.count_in(s, e);
        explained.insert_range(s, e);
    }
    // First sequence number that, if absent, was lost in the crash that ended this run.
    let lost_from = r
        .ended_by_run
        .map(|_| durable.map_or(0, |d| d.saturating_add(1)));
    let mut missing_batches = 0;
    let mut lost_in_crash_batches = 0;
    let mut missing = Vec::new();
    for (s, e) in explained.holes(r.floor, known_end) {
        let split = lost_from.map_or(e, |l| l.clamp(s, e));
        if split > s {
            missing_batches += split - s;
            if missing.len() < MAX_LISTED_RANGES {
                missing.push((s, split));
            }
        }
        lost_in_crash_batches += e - split;
    }
    RunSummary {
        run,
        max_seq,
        batches: r.arrived.len() + r.retired.arrived,
        evicted_batches,
        damaged_batches,
        missing_batches,
        lost_in_crash_batches,
        missing,
        announced: r.announced,
        previous_run: r.previous_run,
        previous_durable_last_seq: r.previous_durable_last_seq,
        ended_by_run: r.ended_by_run,
        lost_in_crash_after_seq: durable,
        low_water_seq: r.floor,
        untracked_batches: r.retired.untracked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn id(run: u32, seq: u64) -> BatchId {
        BatchId { run, seq }
    }

    fn gap(run: u32, seqs: Vec<(u64, u64)>, samples: u64) -> GapBody {
        GapBody {
            cause: GapCause::Evicted,
            run,
            batches: seqs.iter().map(|(s, e)| e - s).sum(),
            seqs,
            samples,
            t_first_us: 0,
            t_last_us: 0,
        }
    }

    #[test]
    fn missing_evicted_and_lost_are_told_apart() {
        let mut a = Accounting::new();
        // Run 1: seq 0..=2 and 6 arrived, 3..5 evicted, 5 not arrived.
        for seq in [0, 1, 2, 6] {
            a.on_batch(id(1, seq), 10);
        }
        a.on_batch(id(1, 7), 0); // the gap notice itself
        a.on_gap(&gap(1, vec![(3, 5)], 40));
        // The same notice again (the car re-announces a notice evicted before its ack).
        a.on_batch(id(1, 8), 0);
        a.on_gap(&gap(1, vec![(3, 5)], 40));
        a.on_duplicate(10);
        let s = a.summary();
        assert_eq!(s.batches, 6);
        assert_eq!(s.samples, 40);
        assert_eq!((s.duplicate_batches, s.duplicate_samples), (1, 10));
        assert_eq!(
            (s.evicted_batches, s.evicted_samples, s.gap_notices),
            (2, 40, 1),
            "a repeated notice counts once"
        );
        assert_eq!(s.missing_batches, 1);
        assert_eq!(s.runs[0].missing, vec![(5, 6)]);
        assert_eq!(s.runs[0].max_seq, Some(8));
        assert_eq!(s.lost_in_crash_batches, 0);

        // Run 2 says run 1 was durable up to seq 4: seq 5 was lost in the crash.
        a.on_batch(id(2, 0), 0);
        a.on_run(
            id(2, 0),
            &RunBody {
                previous_run: Some(1),
                previous_durable_last_seq: Some(4),
            },
        );
        let s = a.summary();
        assert_eq!((s.missing_batches, s.lost_in_crash_batches), (0, 1));
        assert_eq!(s.run_announcements, 1);
        let r1 = &s.runs[0];
        assert_eq!(
            (r1.ended_by_run, r1.lost_in_crash_after_seq),
            (Some(2), Some(4))
        );
        assert!(r1.missing.is_empty());
        let r2 = &s.runs[1];
        assert!(r2.announced);
        assert_eq!(
            (r2.previous_run, r2.previous_durable_last_seq),
            (Some(1), Some(4))
        );
        assert_eq!(s.latency_ms_p50, None);
    }

    #[test]
    fn durable_end_beyond_what_arrived_is_missing_not_lost() {
        let mut a = Accounting::new();
        a.on_batch(id(3, 0), 0);
        a.on_run(
            id(3, 0),
            &RunBody {
                previous_run: Some(2),
                previous_durable_last_seq: Some(9),
            },
        );
        a.on_batch(id(2, 4), 5);
        let s = a.summary();
        let r2 = &s.runs[0];
        assert_eq!(r2.run, 2);
        // 0..=9 exist durably, only 4 arrived: 9 still to come, nothing provably lost.
        assert_eq!((r2.missing_batches, r2.lost_in_crash_batches), (9, 0));
        assert_eq!(r2.missing, vec![(0, 4), (5, 10)]);
    }

    #[test]
    fn latency_percentiles_in_ms() {
        let mut a = Accounting::new();
        for us in [1000, 2000, 3000, 4000] {
            a.on_latency(us);
        }
        let s = a.summary();
        let p50 = s.latency_ms_p50.expect("p50");
        assert!((p50 - 2.0).abs() < 0.1, "{p50}");
        assert_eq!(s.latency_ms_max, Some(4.0));
    }

    /// One event of the accounting model test.
    #[derive(Debug, Clone)]
    enum Ev {
        Arrive(u32, u64),
        Evict(u32, u64, u64),
        Announce(u32, Option<u32>, Option<u64>),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (0u32..3, 0u64..40).prop_map(|(r, s)| Ev::Arrive(r, s)),
            1 => (0u32..3, 0u64..40, 0u64..6).prop_map(|(r, s, n)| Ev::Evict(r, s, s + n)),
            1 => (0u32..3, proptest::option::of(0u32..3), proptest::option::of(0u64..45))
                .prop_map(|(r, p, d)| Ev::Announce(r, p, d)),
        ]
    }

    proptest! {
        /// Missing and lost-in-crash counts match a brute-force model over plain sets.
        #[test]
        fn matches_a_model(events in proptest::collection::vec(ev(), 0..80)) {
            let mut a = Accounting::new();
            let mut arrived: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
            let mut evicted: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
            let mut ended: BTreeMap<u32, Option<u64>> = BTreeMap::new();
            for e in &events {
                match *e {
                    Ev::Arrive(r, s) => {
                        if arrived.entry(r).or_default().insert(s) {
                            prop_assert!(a.on_batch(id(r, s), 1));
                        } else {
                            a.on_duplicate(1);
                        }
                    }
                    Ev::Evict(r, s, e) => {
                        a.on_gap(&gap(r, vec![(s, e)], 0));
                        evicted.entry(r).or_default().extend(s..e);
                    }
                    Ev::Announce(r, p, d) => {
                        a.on_run(id(r, 0), &RunBody { previous_run: p, previous_durable_last_seq: d });
                        if let Some(p) = p.filter(|&p| p != r) {
                            ended.insert(p, d);
                        }
                    }
                }
            }
            let s = a.summary();
            let (mut missing, mut lost) = (0u64, 0u64);
            for run in 0..3u32 {
                let arr = arrived.get(&run).cloned().unwrap_or_default();
                let ev = evicted.get(&run).cloned().unwrap_or_default();
                let max = arr.iter().chain(ev.iter()).max().copied();
                let durable = ended.get(&run).copied().flatten();
                let top = max.max(durable);
                let (mut m, mut l) = (0, 0);
                if let Some(top) = top {
                    for seq in 0..=top {
                        if arr.contains(&seq) || ev.contains(&seq) {
                            continue;
                        }
                        let crashed = ended.contains_key(&run) && durable.is_none_or(|d| seq > d);
                        if crashed { l += 1 } else { m += 1 }
                    }
                }
                if let Some(rs) = s.runs.iter().find(|x| x.run == run) {
                    prop_assert_eq!(rs.missing_batches, m, "run {}", run);
                    prop_assert_eq!(rs.lost_in_crash_batches, l, "run {}", run);
                    prop_assert_eq!(rs.max_seq, max);
                    prop_assert_eq!(rs.batches, arr.len() as u64);
                    prop_assert_eq!(rs.evicted_batches, ev.iter().filter(|x| !arr.contains(x)).count() as u64);
                } else {
                    prop_assert_eq!((m, l), (0, 0));
                }
                missing += m;
                lost += l;
            }
            prop_assert_eq!(s.missing_batches, missing);
            prop_assert_eq!(s.lost_in_crash_batches, lost);
            prop_assert_eq!(s.batches, arrived.values().map(|x| x.len() as u64).sum::<u64>());
        }
    }
}

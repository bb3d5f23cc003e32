//! The chaos oracle: what the receiver wrote against what the agent promised.
//!
//! Two levels, both from the receiver's side:
//! - **Batches**: every batch a run made durable has arrived, or the receiver itself reports it
//!   evicted (a gap notice) or lost in a crash (above the durable end the next run announced).
//!   Batches that are none of these are `lost_unaccounted`. For every run that ended gracefully
//!   (a reload, the final stop) the agent's own count of sequence numbers must equal what the
//!   receiver accounts for.
//! - **Samples** (the CSV files the receiver wrote, one per channel): no timestamp twice in a
//!   file (`duplicates_after_dedup`), every synthetic value equal to its waveform, and every
//!   synthetic channel a gapless 1 kHz grid except where a reported event explains the hole: a
//!   kill or an unexpected exit (the hole starts within the crash window before it), a reload,
//!   a disk-full episode, or a gap notice's time range. Holes nothing explains are lost samples
//!   nobody reported, and count into `lost_unaccounted` too.
//!
//! [`check_channel`] and [`check_runs`] are sans-IO; [`read_csv_dir`] reads the files.

use crate::receive::{RunSummary, VehicleSummary};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Events that explain a hole in a synthetic channel (all times in µs since the epoch).
#[derive(Debug, Clone, Default)]
pub struct Excuses {
    /// SIGKILLs and unexpected exits of the agent.
    pub crashes: Vec<u64>,
    /// SIGHUP reloads (the pipeline stops, drains and starts again).
    pub reloads: Vec<u64>,
    /// Disk-full episodes (start, end).
    pub disk_full: Vec<(u64, u64)>,
    /// Gap notices' sample time ranges (first, last).
    pub gaps: Vec<(u64, u64)>,
    /// How long before a crash the samples lost in it may start: the batch window, the group
    /// commit interval and the time the last commit took, with a wide margin.
    pub crash_window_us: u64,
}

impl Excuses {
    /// Whether the hole between samples `a` and `b` (exclusive) is explained.
    pub fn explains(&self, a: u64, b: u64, period: u64) -> bool {
        let w = self.crash_window_us;
        self.crashes.iter().any(|&k| a + w >= k && a <= k + 200_000)
            || self.reloads.iter().any(|&h| a + w >= h && a <= h + w)
            || self
                .disk_full
                .iter()
                .any(|&(s, e)| b + 1_000_000 >= s && a <= e + w)
            || self
                .gaps
                .iter()
                .any(|&(f, l)| b + period >= f && a <= l + period)
    }
}

/// What one channel file showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelCheck {
    pub rows: u64,
    /// Rows whose timestamp an earlier row of the file already had.
    pub duplicates: u64,
    /// Samples missing from the grid where an event explains it.
    pub explained_missing: u64,
    /// Samples missing from the grid that nothing explains.
    pub unexplained_missing: u64,
    /// The first unexplained holes (after, before).
    pub unexplained_holes: Vec<(u64, u64)>,
}

/// Checks one channel's timestamps (any order): duplicates, and with `period` (a grid
/// channel) the holes against `excuses`.
pub fn check_channel(ts: &mut [u64], period: Option<u64>, excuses: &Excuses) -> ChannelCheck {
    ts.sort_unstable();
    let mut c = ChannelCheck {
        rows: ts.len() as u64,
        ..ChannelCheck::default()
    };
    for w in ts.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a == b {
            c.duplicates += 1;
            continue;
        }
        let Some(p) = period else { continue };
        if b - a <= p {
            continue;
        }
        let missing = (b - a) / p - u64::from((b - a) % p == 0);
        if excuses.explains(a, b, p) {
            c.explained_missing += missing;
        } else {
            c.unexplained_missing += missing;
            if c.unexplained_holes.len() < 4 {
                c.unexplained_holes.push((a, b));
            }
        }
    }
    c
}

/// A pipeline the agent stopped gracefully: its run and how many sequence numbers it used
/// (the `seqs` of its "core stopped" log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Graceful {
    pub run: u32,
    pub seqs: u64,
}

/// The batch-level verdict over the receiver's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunsVerdict {
    pub runs: u64,
    /// Durable batches neither arrived nor reported (missing, damaged, no longer tracked).
    pub lost_unaccounted_batches: u64,
    pub lost_in_crash_batches: u64,
    pub evicted_batches: u64,
    /// Runs whose start the receiver never saw announced.
    pub unannounced_runs: u64,
    /// Gracefully ended runs whose sequence count the receiver does not account for exactly.
    pub disagreements: Vec<String>,
}

/// Checks the receiver's runs against the gracefully ended pipelines.
pub fn check_runs(v: &VehicleSummary, graceful: &[Graceful]) -> RunsVerdict {
    let mut out = RunsVerdict {
        runs: v.runs.len() as u64,
        ..RunsVerdict::default()
    };
    for r in &v.runs {
        out.lost_unaccounted_batches += r.missing_batches + r.damaged_batches + r.untracked_batches;
        out.lost_in_crash_batches += r.lost_in_crash_batches;
        out.evicted_batches += r.evicted_batches;
        if !r.announced {
            out.unannounced_runs += 1;
        }
    }
    let by_run: BTreeMap<u32, &RunSummary> = v.runs.iter().map(|r| (r.run, r)).collect();
    for g in graceful {
        match by_run.get(&g.run) {
            None => out.disagreements.push(format!(
                "run {}: the agent used {} seqs, the receiver saw nothing",
                g.run, g.seqs
            )),
            Some(r) => {
                let accounted = r.batches + r.evicted_batches;
                if accounted != g.seqs || r.lost_in_crash_batches != 0 || r.missing_batches != 0 {
                    out.disagreements.push(format!(
                        "run {}: the agent used {} seqs and stopped gracefully; the receiver has {} arrived + {} evicted, {} missing, {} lost in a crash",
                        g.run,
                        g.seqs,
                        r.batches,
                        r.evicted_batches,
                        r.missing_batches,
                        r.lost_in_crash_batches
                    ));
                }
            }
        }
    }
    out
}

/// The sample-level verdict over the CSV output.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplesVerdict {
    pub rows: u64,
    pub files: u64,
    pub duplicates: u64,
    /// Synthetic values that differ from their waveform.
    pub wrong_values: u64,
    pub explained_missing: u64,
    pub unexplained_missing: u64,
    /// Rows per source.
    pub by_source: BTreeMap<String, u64>,
    /// The first files with unexplained holes and where.
    pub holes: Vec<String>,
}

/// How a source's files are checked.
#[derive(Debug, Clone, Copy)]
pub struct GridSource {
    pub period_us: u64,
    pub waveform: sensor_drivers::synthetic::Waveform,
}

/// Reads `<dir>/<vehicle>/<source>/*.csv` (first column `t_us`) and checks every file; sources
/// in `grids` are synthetic (`ch<N>.csv`, values checked, holes checked).
pub fn read_csv_dir(
    vehicle_dir: &Path,
    grids: &BTreeMap<String, GridSource>,
    excuses: &Excuses,
) -> Result<SamplesVerdict> {
    let mut v = SamplesVerdict::default();
    let Ok(sources) = std::fs::read_dir(vehicle_dir) else {
        return Ok(v);
    };
    let mut sources: Vec<_> = sources.flatten().filter(|e| e.path().is_dir()).collect();
    sources.sort_by_key(|e| e.file_name());
    for s in sources {
        let source = s.file_name().to_string_lossy().into_owned();
        let grid = grids.get(&source).copied();
        let mut files: Vec<_> = std::fs::read_dir(s.path())?.flatten().collect();
        files.sort_by_key(|e| e.file_name());
        for f in files {
            let path = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".csv") else {
                continue;
            };
            let ch: Option<u16> = stem.strip_prefix("ch").and_then(|n| n.parse().ok());
            let mut ts = Vec::new();
            let file = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
            for (n, line) in std::io::BufReader::with_capacity(1 << 20, file)
                .lines()
                .enumerate()
            {
                let line = line.with_context(|| path.display().to_string())?;
                if n == 0 {
                    continue; // header
                }
                let mut cols = line.split(',');
                let t: u64 = cols
                    .next()
                    .and_then(|t| t.parse().ok())
                    .with_context(|| format!("{}:{}: no t_us: {line}", path.display(), n + 1))?;
                if let (Some(g), Some(ch)) = (grid, ch) {
                    let val: Option<f64> = cols.next().and_then(|x| x.parse().ok());
                    if val.map(f64::to_bits) != Some(g.waveform.value(ch, t).to_bits()) {
                        v.wrong_values += 1;
                    }
                }
                ts.push(t);
            }
            let c = check_channel(&mut ts, grid.map(|g| g.period_us), excuses);
            v.files += 1;
            v.rows += c.rows;
            v.duplicates += c.duplicates;
            v.explained_missing += c.explained_missing;
            v.unexplained_missing += c.unexplained_missing;
            *v.by_source.entry(source.clone()).or_default() += c.rows;
            if c.unexplained_missing > 0 && v.holes.len() < 8 {
                v.holes.push(format!(
                    "{source}/{name}: {} samples missing, holes {:?}",
                    c.unexplained_missing, c.unexplained_holes
                ));
            }
        }
    }
    Ok(v)
}

/// The gap notices' time ranges from the receiver's `events.csv`.
pub fn read_gaps(events_csv: &Path) -> Result<Vec<(u64, u64)>> {
    let Ok(f) = std::fs::File::open(events_csv) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines().skip(1) {
        let line = line?;
        let cols: Vec<&str> = line.split(',').collect();
        // t_us,event,run,seq,cause,gap_run,seqs,batches,samples,t_first_us,t_last_us,...
        if cols.get(1) == Some(&"gap")
            && let (Some(Ok(a)), Some(Ok(b))) = (
                cols.get(9).map(|x| x.parse::<u64>()),
                cols.get(10).map(|x| x.parse::<u64>()),
            )
        {
            out.push((a, b));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(from: u64, to: u64) -> Vec<u64> {
        (from..=to).step_by(1000).collect()
    }

    #[test]
    fn a_gapless_grid_passes_and_a_duplicate_is_counted() {
        let e = Excuses::default();
        let mut ts = grid(1_000_000, 2_000_000);
        let c = check_channel(&mut ts, Some(1000), &e);
        assert_eq!((c.rows, c.duplicates, c.unexplained_missing), (1001, 0, 0));
        ts.push(1_500_000);
        let c = check_channel(&mut ts, Some(1000), &e);
        assert_eq!(c.duplicates, 1);
    }

    #[test]
    fn holes_are_explained_only_by_a_nearby_event() {
        let mut ts = grid(1_000_000, 2_000_000);
        ts.extend(grid(3_000_000, 4_000_000)); // 999 samples missing after 2 s
        let none = Excuses {
            crash_window_us: 2_000_000,
            ..Excuses::default()
        };
        let c = check_channel(&mut ts.clone(), Some(1000), &none);
        assert_eq!(c.unexplained_missing, 999);
        assert_eq!(c.unexplained_holes, vec![(2_000_000, 3_000_000)]);

        let crash = Excuses {
            crashes: vec![2_500_000],
            ..none.clone()
        };
        let c = check_channel(&mut ts.clone(), Some(1000), &crash);
        assert_eq!((c.unexplained_missing, c.explained_missing), (0, 999));
        // A crash long after the hole started does not explain it.
        let late = Excuses {
            crashes: vec![9_000_000],
            ..none.clone()
        };
        assert_eq!(
            check_channel(&mut ts.clone(), Some(1000), &late).unexplained_missing,
            999
        );
        let gap = Excuses {
            gaps: vec![(2_001_000, 2_999_000)],
            ..none.clone()
        };
        assert_eq!(
            check_channel(&mut ts.clone(), Some(1000), &gap).unexplained_missing,
            0
        );
        let full = Excuses {
            disk_full: vec![(2_200_000, 2_600_000)],
            ..none
        };
        assert_eq!(
            check_channel(&mut ts, Some(1000), &full).unexplained_missing,
            0
        );
    }

    #[test]
    fn channels_without_a_grid_only_count_duplicates() {
        let mut ts = vec![5, 1, 9_000_000, 5];
        let c = check_channel(&mut ts, None, &Excuses::default());
        assert_eq!((c.rows, c.duplicates, c.unexplained_missing), (4, 1, 0));
    }

    fn run(run: u32, batches: u64) -> RunSummary {
        RunSummary {
            run,
            batches,
            announced: true,
            ..RunSummary::default()
        }
    }

    #[test]
    fn runs_missing_batches_and_sender_disagreements_are_reported() {
        let mut v = VehicleSummary {
            runs: vec![run(1, 10), run(2, 20)],
            ..VehicleSummary::default()
        };
        let g = [Graceful { run: 2, seqs: 20 }];
        let ok = check_runs(&v, &g);
        assert_eq!(ok.lost_unaccounted_batches, 0);
        assert!(ok.disagreements.is_empty(), "{:?}", ok.disagreements);

        v.runs[0].missing_batches = 2;
        v.runs[1].batches = 19;
        let bad = check_runs(&v, &g);
        assert_eq!(bad.lost_unaccounted_batches, 2);
        assert_eq!(bad.disagreements.len(), 1, "{:?}", bad.disagreements);
        let unknown = check_runs(&v, &[Graceful { run: 3, seqs: 1 }]);
        assert_eq!(unknown.disagreements.len(), 1);
    }

    #[test]
    fn gap_ranges_come_from_events_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("events.csv");
        std::fs::write(
            &p,
            "t_us,event,run,seq,cause,gap_run,seqs,batches,samples,t_first_us,t_last_us,previous_run,previous_durable_last_seq\n\
             10,run,2,0,,,,,,,,1,41\n\
             20,gap,2,5,dropped,2,3-4 7-7,3,300,1000,2000,,\n",
        )
        .expect("write");
        assert_eq!(read_gaps(&p).expect("read"), vec![(1000, 2000)]);
        assert!(
            read_gaps(&dir.path().join("none.csv"))
                .expect("absent")
                .is_empty()
        );
    }
}

//! CSV output (`--csv DIR`): one file per channel, ready for `pandas.read_csv`.
//!
//! ```text
//! DIR/<vehicle>/<source>/ch<N>.csv        t_us,value                   (value channels)
//! DIR/<vehicle>/<source>/<ID>.csv         t_us,flags,len,data          (raw CAN frames; ID in hex,
//!                                                                       3 digits standard, 8 extended)
//! DIR/<vehicle>/<source>/<MESSAGE>.csv    t_us,<signal>,<signal>,...   (frames a --dbc decodes)
//! DIR/<vehicle>/events.csv                t_us,event,run,seq,cause,gap_run,seqs,batches,samples,
//!                                         t_first_us,t_last_us,previous_run,previous_durable_last_seq
//! ```
//!
//! Each file gets its header once, when it is created. Rows are in arrival order (a backlog
//! arrives after newer data): sort by `t_us` after loading. Values are written with the shortest
//! text that reads back as the same f64 (`NaN`, `inf` and `-inf` as pandas reads them); a signal
//! absent from a frame (multiplexed and not selected, or beyond a short frame) is an empty cell.
//! Vehicle and source names become path components with every character other than ASCII
//! letters, digits, `-`, `_` and `.` replaced by `_` (and a leading `.` too).
//!
//! Every file's length is part of the receiver's state, so CSV output is exactly once like JSONL:
//! at start-up each file is cut back to its recorded length, and a file the state does not know
//! (created after the last snapshot) is emptied.

use super::ledger::{Batch, Content};
use super::output::{Dbcs, Output, SizedFile};
use crate::codec::GapCause;
use anyhow::Context;
use sensor_drivers::Reading;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use tracing::info;

/// Files kept open at once; beyond that, the least recently opened ones are synced and closed.
const MAX_OPEN: usize = 256;
const FILE_BUFFER: usize = 16 << 10;
const EVENTS_HEADER: &str = "t_us,event,run,seq,cause,gap_run,seqs,batches,samples,t_first_us,t_last_us,previous_run,previous_durable_last_seq\n";

/// Writes batches as CSV files under one directory.
#[derive(Debug)]
pub struct CsvOutput {
    root: PathBuf,
    dbcs: Dbcs,
    open: HashMap<String, SizedFile>,
    /// Open order, to close the oldest first.
    opened: Vec<String>,
    /// Every file's length as of the last write (relative path → bytes).
    lengths: BTreeMap<String, u64>,
    /// Written since the last sync.
    dirty: BTreeSet<String>,
    /// Created since the last sync: their directory entries need an fsync too.
    created: BTreeSet<String>,
    row: String,
}

/// A path component from a name that came from outside.
pub fn safe_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(100)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

fn csv_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            csv_files(root, &p, out)?;
        } else if p.extension().is_some_and(|x| x == "csv")
            && let Ok(rel) = p.strip_prefix(root)
        {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

impl CsvOutput {
    /// Opens `root` (created if needed) and cuts every file back to its length in `lengths`
    /// (the saved state); without a saved state, existing files are appended to.
    pub fn open(
        root: &Path,
        lengths: Option<&BTreeMap<String, u64>>,
        dbcs: Dbcs,
    ) -> anyhow::Result<CsvOutput> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("{}: cannot create the CSV directory", root.display()))?;
        let mut found = Vec::new();
        csv_files(root, root, &mut found)
            .with_context(|| format!("{}: cannot list the CSV directory", root.display()))?;
        let mut known = BTreeMap::new();
        for rel in &found {
            let keep = lengths.map(|l| l.get(rel).copied().unwrap_or(0));
            let f = SizedFile::open(&root.join(rel), keep, 0)?;
            known.insert(rel.clone(), f.len());
        }
        if let Some(l) = lengths {
            for (rel, &len) in l {
                if len > 0 && !known.contains_key(rel) {
                    anyhow::bail!(
                        "{}: missing, but the receiver state records {len} bytes of it: restore it, or move the CSV directory and its state file away to start afresh",
                        root.join(rel).display()
                    );
                }
            }
        }
        if !found.is_empty() {
            info!(dir = %root.display(), files = found.len(), "appending to the existing CSV files");
        }
        Ok(CsvOutput {
            root: root.to_owned(),
            dbcs,
            open: HashMap::new(),
            opened: Vec::new(),
            lengths: known,
            dirty: BTreeSet::new(),
            created: BTreeSet::new(),
            row: String::new(),
        })
    }

    /// Appends `self.row` to `rel`, writing `header` first if the file is empty.
    fn put(&mut self, rel: &str, header: impl FnOnce() -> String) -> io::Result<()> {
        if !self.open.contains_key(rel) {
            if self.open.len() >= MAX_OPEN {
                self.close_oldest()?;
            }
            let path = self.root.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let known = self.lengths.get(rel).copied();
            // Its length is known (found at start-up, or written and closed since).
            let f = SizedFile::open(&path, Some(known.unwrap_or(0)), FILE_BUFFER)
                .map_err(io::Error::other)?;
            if known.is_none() {
                self.created.insert(rel.to_string());
            }
            self.open.insert(rel.to_string(), f);
            self.opened.push(rel.to_string());
        }
        let Some(f) = self.open.get_mut(rel) else {
            return Err(io::Error::other("CSV file vanished from the open set"));
        };
        if f.is_empty() {
            f.write_all(header().as_bytes())?;
        }
        f.write_all(self.row.as_bytes())?;
        self.lengths.insert(rel.to_string(), f.len());
        self.dirty.insert(rel.to_string());
        Ok(())
    }

    fn close_oldest(&mut self) -> io::Result<()> {
        let n = self.opened.len() / 2;
        for rel in self.opened.drain(..n).collect::<Vec<_>>() {
            if let Some(mut f) = self.open.remove(&rel) {
                // Synced before closing: the next state snapshot may record its length.
                f.sync()?;
                self.dirty.remove(&rel);
            }
        }
        Ok(())
    }
}

fn push_f64(row: &mut String, v: f64) {
    if v.is_nan() {
        row.push_str("NaN");
    } else if v.is_infinite() {
        row.push_str(if v > 0.0 { "inf" } else { "-inf" });
    } else {
        let _ = write!(row, "{v:?}");
    }
}

impl Output for CsvOutput {
    fn write_batch(&mut self, b: &Batch) -> io::Result<()> {
        let vehicle = safe_component(&b.vehicle);
        match &b.content {
            Content::Data { source, readings } => {
                let dir = format!("{vehicle}/{}", safe_component(source));
                for r in readings {
                    self.row.clear();
                    match r {
                        Reading::Value(s) => {
                            let _ = write!(self.row, "{},", s.t_us);
                            push_f64(&mut self.row, s.value);
                            self.row.push('\n');
                            self.put(&format!("{dir}/ch{}.csv", s.channel), || {
                                "t_us,value\n".into()
                            })?;
                        }
                        Reading::Frame(f) => {
                            let decoded = self.dbcs.decode(source, &f.frame).map(|(m, vals)| {
                                let mut cells = vec![None; m.signals.len()];
                                for v in vals {
                                    if let Some(c) = cells.get_mut(usize::from(v.signal)) {
                                        *c = Some(v.phys);
                                    }
                                }
                                let header =
                                    m.signals.iter().fold(String::from("t_us"), |mut h, s| {
                                        h.push(',');
                                        h.push_str(&s.name);
                                        h
                                    });
                                (safe_component(&m.name), header + "\n", cells)
                            });
                            let _ = write!(self.row, "{}", f.t_us);
                            match decoded {
                                Some((name, header, cells)) => {
                                    for c in cells {
                                        self.row.push(',');
                                        if let Some(v) = c {
                                            push_f64(&mut self.row, v);
                                        }
                                    }
                                    self.row.push('\n');
                                    self.put(&format!("{dir}/{name}.csv"), || header)?;
                                }
                                None => {
                                    let _ = write!(self.row, ",{},{},", f.frame.flags, f.frame.len);
                                    for byte in f.frame.payload() {
                                        let _ = write!(self.row, "{byte:02x}");
                                    }
                                    self.row.push('\n');
                                    let id = if f.frame.is_extended() {
                                        format!("{:08X}", f.frame.id)
                                    } else {
                                        format!("{:03X}", f.frame.id)
                                    };
                                    self.put(&format!("{dir}/{id}.csv"), || {
                                        "t_us,flags,len,data\n".into()
                                    })?;
                                }
                            }
                        }
                    }
                }
            }
            Content::Gap(g) => {
                self.row.clear();
                let cause = match g.cause {
                    GapCause::Evicted => "evicted",
                    GapCause::Dropped => "dropped",
                    GapCause::Damaged => "damaged",
                };
                let seqs: Vec<String> = g
                    .seqs
                    .iter()
                    .map(|(a, e)| format!("{a}-{}", e.saturating_sub(1)))
                    .collect();
                let _ = writeln!(
                    self.row,
                    "{},gap,{},{},{cause},{},{},{},{},{},{},,",
                    b.t_last_us,
                    b.id.run,
                    b.id.seq,
                    g.run,
                    seqs.join(" "),
                    g.batches,
                    g.samples,
                    g.t_first_us,
                    g.t_last_us
                );
                self.put(&format!("{vehicle}/events.csv"), || EVENTS_HEADER.into())?;
            }
            Content::Run(r) => {
                self.row.clear();
                let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
                let _ = writeln!(
                    self.row,
                    "{},run,{},{},,,,,,,,{},{}",
                    b.t_last_us,
                    b.id.run,
                    b.id.seq,
                    opt(r.previous_run.map(u64::from)),
                    opt(r.previous_durable_last_seq)
                );
                self.put(&format!("{vehicle}/events.csv"), || EVENTS_HEADER.into())?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        for f in self.open.values_mut() {
            f.flush()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<BTreeMap<String, u64>> {
        for rel in std::mem::take(&mut self.dirty) {
            if let Some(f) = self.open.get_mut(&rel) {
                f.sync()?;
            }
        }
        for rel in std::mem::take(&mut self.created) {
            // The new file's entry, and the new directories' entries up to the root.
            let mut p = self.root.join(&rel);
            while let Some(dir) = p.parent().map(Path::to_path_buf) {
                super::state::sync_dir(&p)?;
                if dir == self.root {
                    break;
                }
                p = dir;
            }
        }
        Ok(self.lengths.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchId, GapBody, RunBody};
    use sensor_drivers::{CanFrame, Sample, TimedFrame};

    fn batch(seq: u64, content: Content) -> Batch {
        Batch {
            vehicle: "car/1".into(),
            id: BatchId { run: 2, seq },
            t_first_us: 5,
            t_last_us: 6,
            content,
        }
    }

    fn values(t0: u64) -> Content {
        Content::Data {
            source: "synth".into(),
            readings: vec![
                Reading::Value(Sample {
                    t_us: t0,
                    channel: 0,
                    value: 1.5,
                }),
                Reading::Value(Sample {
                    t_us: t0 + 1,
                    channel: 3,
                    value: f64::NAN,
                }),
                Reading::Frame(TimedFrame {
                    t_us: t0 + 2,
                    frame: CanFrame::classic(0x12, false, &[0xab, 1]).expect("valid"),
                }),
            ],
        }
    }

    fn read(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join(rel)).expect(rel)
    }

    #[test]
    fn files_per_channel_with_one_header_and_exactly_once_after_a_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("csv");
        let mut o = CsvOutput::open(&root, None, Dbcs::default()).expect("open");
        o.write_batch(&batch(1, values(100))).expect("write");
        let snap = o.sync().expect("sync");
        o.write_batch(&batch(2, values(200))).expect("write");
        o.write_batch(&batch(
            3,
            Content::Gap(GapBody {
                cause: GapCause::Evicted,
                run: 1,
                seqs: vec![(4, 6), (9, 10)],
                batches: 3,
                samples: 30,
                t_first_us: 1,
                t_last_us: 2,
            }),
        ))
        .expect("write");
        o.write_batch(&batch(
            0,
            Content::Run(RunBody {
                previous_run: Some(1),
                previous_durable_last_seq: None,
            }),
        ))
        .expect("write");
        o.sync().expect("sync");
        assert_eq!(
            read(&root, "car_1/synth/ch0.csv"),
            "t_us,value\n100,1.5\n200,1.5\n"
        );
        assert_eq!(
            read(&root, "car_1/synth/ch3.csv"),
            "t_us,value\n101,NaN\n201,NaN\n"
        );
        assert_eq!(
            read(&root, "car_1/synth/012.csv"),
            "t_us,flags,len,data\n102,0,2,ab01\n202,0,2,ab01\n"
        );
        assert_eq!(
            read(&root, "car_1/events.csv"),
            format!("{EVENTS_HEADER}6,gap,2,3,evicted,1,4-5 9-9,3,30,1,2,,\n6,run,2,0,,,,,,,,1,\n")
        );
        drop(o);
        // A restart from the first snapshot: the second batch and the events file are undone.
        let mut o = CsvOutput::open(&root, Some(&snap), Dbcs::default()).expect("reopen");
        assert_eq!(read(&root, "car_1/synth/ch0.csv"), "t_us,value\n100,1.5\n");
        assert_eq!(read(&root, "car_1/events.csv"), "");
        o.write_batch(&batch(2, values(200))).expect("write");
        o.sync().expect("sync");
        assert_eq!(
            read(&root, "car_1/synth/ch0.csv"),
            "t_us,value\n100,1.5\n200,1.5\n"
        );
        drop(o);
        // The state knows a file that is gone: refused.
        let mut bad = snap.clone();
        bad.insert("car_1/synth/ch9.csv".into(), 20);
        let e = CsvOutput::open(&root, Some(&bad), Dbcs::default()).expect_err("missing file");
        assert!(e.to_string().contains("ch9.csv: missing"), "{e}");
    }

    #[test]
    fn decoded_frames_go_to_one_file_per_message_with_a_column_per_signal() {
        let dbc = sensor_drivers::dbc::Dbc::parse(
            "VERSION \"\"\n\nNS_ :\n\nBS_:\n\nBU_: ECU\n\n\
BO_ 100 MUXED: 2 ECU\n SG_ SEL M : 0|8@1+ (1,0) [0|255] \"\" ECU\n SG_ A m1 : 8|8@1+ (1,0) [0|255] \"\" ECU\n SG_ B m2 : 8|8@1+ (0.5,0) [0|255] \"\" ECU\n",
        )
        .expect("test DBC parses");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("csv");
        let dbcs = Dbcs::new(BTreeMap::from([("can0".to_string(), dbc)]));
        let mut o = CsvOutput::open(&root, None, dbcs).expect("open");
        let frame = |t_us, id, data: &[u8]| {
            Reading::Frame(TimedFrame {
                t_us,
                frame: CanFrame::classic(id, false, data).expect("valid"),
            })
        };
        o.write_batch(&batch(
            1,
            Content::Data {
                source: "can0".into(),
                readings: vec![
                    frame(10, 100, &[1, 7]),
                    frame(11, 100, &[2, 7]),
                    frame(12, 0x7ff, &[]),
                ],
            },
        ))
        .expect("write");
        o.sync().expect("sync");
        assert_eq!(
            read(&root, "car_1/can0/MUXED.csv"),
            "t_us,SEL,A,B\n10,1.0,7.0,\n11,2.0,,3.5\n"
        );
        assert_eq!(
            read(&root, "car_1/can0/7FF.csv"),
            "t_us,flags,len,data\n12,0,0,\n"
        );
    }

    #[test]
    fn names_from_outside_stay_inside_the_directory() {
        assert_eq!(safe_component("../etc"), "_.._etc");
        assert_eq!(safe_component(""), "_");
        assert_eq!(safe_component("car-1.a_b"), "car-1.a_b");
        assert_eq!(safe_component("ü/x"), "__x");
    }
}

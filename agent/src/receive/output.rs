//! JSON Lines output: one line per sample, one line per gap or run event.
//!
//! ```text
//! {"vehicle":"car-1","run":3,"seq":17,"source":"synth","ch":12,"t_us":1700000000001000,"v":12.5}
//! {"vehicle":"car-1","run":3,"seq":18,"source":"can0","t_us":1700000000001250,"id":291,"flags":0,"len":3,"data":"0a0b0c"}
//! {"event":"gap","vehicle":"car-1","run":3,"seq":40,"t_us":..,"cause":"evicted","gap_run":2,"seqs":[[10,20]],"batches":10,"samples":50000,"t_first_us":..,"t_last_us":..}
//! {"event":"run","vehicle":"car-1","run":3,"seq":0,"t_us":..,"previous_run":2,"previous_durable_last_seq":41}
//! ```
//!
//! Frame lines carry the CAN identifier without flag bits, the flag bits of `CanFrame::flags`
//! (1 extended, 2 remote, 4 error, 8 FD, 16 BRS, 32 ESI), the payload length and the payload in
//! hex (empty for a remote frame), plus `len8_dlc` when a classic frame had a DLC above 8.
//! With `--dbc BUS=FILE`, frame lines of source `BUS` whose identifier the DBC knows also get
//! `"msg":"NAME","signals":{"SIGNAL":value,...}` (physical values; multiplexed signals only when
//! selected; signals beyond a short frame's payload left out).
//! Sample and frame lines have no `event` key. Values are written with the shortest representation that
//! reads back as the same f64; JSON has no NaN or infinity, so those become `null`.

use super::ledger::{Batch, Content};
use crate::codec::GapCause;
use sensor_drivers::Reading;
use sensor_drivers::dbc::{Dbc, DecodeBuf, Message, SignalValue};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use tracing::{info, warn};

/// Where the receiver writes: JSON Lines to a file or stdout, or CSV files.
pub trait Output: Send {
    /// Writes every line of `b` (buffered).
    fn write_batch(&mut self, b: &Batch) -> io::Result<()>;
    /// Hands buffered lines to the OS (not durable yet).
    fn flush(&mut self) -> io::Result<()>;
    /// Flushes and fsyncs; returns every output file's length (path relative to the output
    /// root, `""` for a single file). Empty for stdout, which cannot be made durable.
    fn sync(&mut self) -> io::Result<BTreeMap<String, u64>>;
}

/// A file opened for appending that knows its length (written bytes included).
#[derive(Debug)]
pub struct SizedFile {
    w: io::BufWriter<File>,
    len: u64,
}

impl SizedFile {
    /// Opens (creates) `path` for appending, first cutting it back to `keep` bytes if it is
    /// longer (the lines past `keep` were written after the last state snapshot: their batches
    /// were not acknowledged and will be re-delivered). A file shorter than `keep` is an error:
    /// acknowledged lines are gone and only the operator can say why.
    pub fn open(path: &Path, keep: Option<u64>, buffer: usize) -> anyhow::Result<SizedFile> {
        use anyhow::Context;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open the output file", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("{}: cannot stat the output file", path.display()))?
            .len();
        let len = match keep {
            Some(keep) if len > keep => {
                f.set_len(keep)
                    .and_then(|()| f.sync_all())
                    .with_context(|| {
                        format!("{}: cannot truncate the output file", path.display())
                    })?;
                info!(
                    file = %path.display(),
                    "cut {} bytes written after the last state snapshot ({len} -> {keep} bytes); their batches were not acknowledged and will be re-delivered",
                    len - keep
                );
                keep
            }
            Some(keep) if len < keep => anyhow::bail!(
                "{}: the output file has {len} bytes but the receiver state records {keep}: it was truncated or replaced since. Restore it, or move it and its state file away to start afresh",
                path.display()
            ),
            Some(_) => len,
            None => {
                if len > 0 {
                    warn!(
                        file = %path.display(),
                        bytes = len,
                        "appending to an output that no state file describes: batches re-delivered now may already be in it"
                    );
                }
                len
            }
        };
        Ok(SizedFile {
            w: io::BufWriter::with_capacity(buffer, f),
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and fsyncs (data only: the length is in the state file, and a grown file's size
    /// is data for `fdatasync`).
    pub fn sync(&mut self) -> io::Result<u64> {
        self.w.flush()?;
        self.w.get_ref().sync_data()?;
        Ok(self.len)
    }
}

impl Write for SizedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// The JSON Lines destination.
#[derive(Debug)]
pub enum JsonlSink {
    Stdout(io::BufWriter<io::Stdout>),
    File(SizedFile),
}

impl Write for JsonlSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            JsonlSink::Stdout(w) => w.write(buf),
            JsonlSink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            JsonlSink::Stdout(w) => w.flush(),
            JsonlSink::File(f) => f.flush(),
        }
    }
}

fn line<W: Write, T: Serialize>(out: &mut W, v: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, v)?;
    out.write_all(b"\n")
}

impl Output for JsonlWriter<JsonlSink> {
    fn write_batch(&mut self, b: &Batch) -> io::Result<()> {
        JsonlWriter::write_batch(self, b)
    }

    fn flush(&mut self) -> io::Result<()> {
        JsonlWriter::flush(self)
    }

    fn sync(&mut self) -> io::Result<BTreeMap<String, u64>> {
        match &mut self.out {
            JsonlSink::Stdout(w) => {
                w.flush()?;
                Ok(BTreeMap::new())
            }
            JsonlSink::File(f) => Ok(BTreeMap::from([(String::new(), f.sync()?)])),
        }
    }
}

/// Borrowed fields: serialising a line allocates nothing.
#[derive(Serialize)]
struct SampleLine<'a> {
    vehicle: &'a str,
    run: u32,
    seq: u64,
    source: &'a str,
    ch: u16,
    t_us: u64,
    v: f64,
}

#[derive(Serialize)]
struct FrameLine<'a> {
    vehicle: &'a str,
    run: u32,
    seq: u64,
    source: &'a str,
    t_us: u64,
    id: u32,
    flags: u8,
    len: u8,
    #[serde(skip_serializing_if = "is_zero")]
    len8_dlc: u8,
    data: Hex<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signals: Option<Signals<'a>>,
}

/// A decoded frame's signals as a JSON object, name → physical value (`null` when not finite).
pub(super) struct Signals<'a> {
    pub msg: &'a Message,
    pub values: &'a [SignalValue],
}

impl Serialize for Signals<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.values.len()))?;
        for v in self.values {
            if let Some(def) = self.msg.signals.get(usize::from(v.signal)) {
                m.serialize_entry(&def.name, &v.phys)?;
            }
        }
        m.end()
    }
}

/// DBC databases by source name (the `--dbc BUS=FILE` options), with a reusable decode buffer.
#[derive(Debug, Default)]
pub struct Dbcs {
    by_source: BTreeMap<String, Dbc>,
    buf: DecodeBuf,
}

impl Dbcs {
    pub fn new(by_source: BTreeMap<String, Dbc>) -> Self {
        Dbcs {
            by_source,
            buf: DecodeBuf::default(),
        }
    }

    /// Loads every `(source, file)`; an error names the file, the line and the fix.
    pub fn load(specs: &[(String, std::path::PathBuf)]) -> anyhow::Result<Dbcs> {
        let mut by_source = BTreeMap::new();
        for (bus, path) in specs {
            let dbc = Dbc::load(path).map_err(|e| {
                anyhow::anyhow!(
                    "--dbc {bus}={}: {e} (fix the file, or leave out this --dbc)",
                    path.display()
                )
            })?;
            for w in dbc.warnings() {
                warn!(dbc = %path.display(), "{w}");
            }
            if by_source.insert(bus.clone(), dbc).is_some() {
                anyhow::bail!(
                    "--dbc {bus}=...: given twice for source '{bus}' (one DBC per source)"
                );
            }
        }
        Ok(Dbcs::new(by_source))
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// Decodes `frame` of `source`: its message and the signals in `self.buf`.
    pub(super) fn decode(
        &mut self,
        source: &str,
        frame: &sensor_drivers::CanFrame,
    ) -> Option<(&Message, &[SignalValue])> {
        let dbc = self.by_source.get(source)?;
        let msg = dbc.decode_into(frame, &mut self.buf)?;
        Some((msg, &self.buf.values))
    }
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// Lower-case hex without allocating.
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 128];
        for (i, b) in self.0.iter().take(64).enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        let n = 2 * self.0.len().min(64);
        // Only ASCII hex digits were written.
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

#[derive(Serialize)]
struct GapLine<'a> {
    event: &'static str,
    vehicle: &'a str,
    run: u32,
    seq: u64,
    /// When the car wrote the notice.
    t_us: u64,
    cause: &'static str,
    /// The run the evicted sequence numbers belong to (may be older than `run`).
    gap_run: u32,
    seqs: &'a [(u64, u64)],
    batches: u64,
    samples: u64,
    /// Time span of the evicted samples.
    t_first_us: u64,
    t_last_us: u64,
}

#[derive(Serialize)]
struct RunLine<'a> {
    event: &'static str,
    vehicle: &'a str,
    run: u32,
    seq: u64,
    t_us: u64,
    previous_run: Option<u32>,
    previous_durable_last_seq: Option<u64>,
}

#[derive(Debug)]
pub struct JsonlWriter<W: Write> {
    out: W,
    dbcs: Dbcs,
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        JsonlWriter {
            out,
            dbcs: Dbcs::default(),
        }
    }

    /// Frame lines of the sources in `dbcs` get their decoded signals.
    pub fn with_dbcs(mut self, dbcs: Dbcs) -> Self {
        self.dbcs = dbcs;
        self
    }

    /// Writes every line of `batch` (buffered; call [`JsonlWriter::flush`] before acknowledging).
    pub fn write_batch(&mut self, b: &Batch) -> io::Result<()> {
        match &b.content {
            Content::Data { source, readings } => {
                for r in readings {
                    match r {
                        Reading::Value(s) => line(
                            &mut self.out,
                            &SampleLine {
                                vehicle: &b.vehicle,
                                run: b.id.run,
                                seq: b.id.seq,
                                source,
                                ch: s.channel,
                                t_us: s.t_us,
                                v: s.value,
                            },
                        )?,
                        Reading::Frame(f) => {
                            let decoded = self.dbcs.decode(source, &f.frame);
                            line(
                                &mut self.out,
                                &FrameLine {
                                    vehicle: &b.vehicle,
                                    run: b.id.run,
                                    seq: b.id.seq,
                                    source,
                                    t_us: f.t_us,
                                    id: f.frame.id,
                                    flags: f.frame.flags,
                                    len: f.frame.len,
                                    len8_dlc: f.frame.len8_dlc,
                                    data: Hex(f.frame.payload()),
                                    msg: decoded.map(|(m, _)| m.name.as_str()),
                                    signals: decoded.map(|(msg, values)| Signals { msg, values }),
                                },
                            )?
                        }
                    }
                }
                Ok(())
            }
            Content::Gap(g) => line(
                &mut self.out,
                &GapLine {
                    event: "gap",
                    vehicle: &b.vehicle,
                    run: b.id.run,
                    seq: b.id.seq,
                    t_us: b.t_last_us,
                    cause: match g.cause {
                        GapCause::Evicted => "evicted",
                        GapCause::Dropped => "dropped",
                        GapCause::Damaged => "damaged",
                    },
                    gap_run: g.run,
                    seqs: &g.seqs,
                    batches: g.batches,
                    samples: g.samples,
                    t_first_us: g.t_first_us,
                    t_last_us: g.t_last_us,
                },
            ),
            Content::Run(r) => line(
                &mut self.out,
                &RunLine {
                    event: "run",
                    vehicle: &b.vehicle,
                    run: b.id.run,
                    seq: b.id.seq,
                    t_us: b.t_last_us,
                    previous_run: r.previous_run,
                    previous_durable_last_seq: r.previous_durable_last_seq,
                },
            ),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BatchId, GapBody, RunBody};
    use sensor_drivers::can::flags;
    use sensor_drivers::{CanFrame, Sample, TimedFrame};

    fn batch(content: Content) -> Batch {
        Batch {
            vehicle: "car-1".into(),
            id: BatchId { run: 3, seq: 17 },
            t_first_us: 5,
            t_last_us: 6,
            content,
        }
    }

    fn written(b: &Batch) -> String {
        let mut w = JsonlWriter::new(Vec::new());
        w.write_batch(b).expect("write to Vec");
        String::from_utf8(w.get_ref().clone()).expect("utf-8")
    }

    #[test]
    fn sample_lines_have_the_documented_shape() {
        let b = batch(Content::Data {
            source: "synth".into(),
            readings: vec![
                Reading::Value(Sample {
                    t_us: 1_700_000_000_001_000,
                    channel: 12,
                    value: 12.5,
                }),
                Reading::Value(Sample {
                    t_us: 1_700_000_000_002_000,
                    channel: 1,
                    value: f64::NAN,
                }),
            ],
        });
        assert_eq!(
            written(&b),
            "{\"vehicle\":\"car-1\",\"run\":3,\"seq\":17,\"source\":\"synth\",\"ch\":12,\"t_us\":1700000000001000,\"v\":12.5}\n\
             {\"vehicle\":\"car-1\",\"run\":3,\"seq\":17,\"source\":\"synth\",\"ch\":1,\"t_us\":1700000000002000,\"v\":null}\n"
        );
    }

    #[test]
    fn frame_lines_have_the_documented_shape() {
        let f = |frame| {
            Reading::Frame(TimedFrame {
                t_us: 1_700_000_000_001_250,
                frame,
            })
        };
        let b = batch(Content::Data {
            source: "can0".into(),
            readings: vec![
                f(CanFrame::classic(0x123, false, &[10, 11, 12]).expect("valid")),
                f(CanFrame::classic(0x1abc_def0, true, &[0xff; 8])
                    .and_then(|c| c.with_len8_dlc(15))
                    .expect("valid")),
                f(CanFrame::remote(0x10, false, 4).expect("valid")),
                f(CanFrame::fd(0x20, false, flags::BRS, &[1; 12]).expect("valid")),
            ],
        });
        let out = written(&b);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "{\"vehicle\":\"car-1\",\"run\":3,\"seq\":17,\"source\":\"can0\",\"t_us\":1700000000001250,\"id\":291,\"flags\":0,\"len\":3,\"data\":\"0a0b0c\"}"
        );
        assert!(lines[1].contains("\"id\":448585456,\"flags\":1,\"len\":8,\"len8_dlc\":15,\"data\":\"ffffffffffffffff\""), "{}", lines[1]);
        assert!(
            lines[2].contains("\"flags\":2,\"len\":4,\"data\":\"\""),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("\"flags\":24,\"len\":12,\"data\":\"010101010101010101010101\""),
            "{}",
            lines[3]
        );
    }

    const DBC: &str = "VERSION \"\"\n\nNS_ :\n\nBS_:\n\nBU_: ECU\n\n\
BO_ 37 STEER_ANGLE: 8 ECU\n SG_ ANGLE : 7|12@0- (1.5,0) [-1500|1500] \"deg\" ECU\n SG_ RATE : 39|8@0+ (1,0) [0|255] \"deg/s\" ECU\n\n\
BO_ 100 MUXED: 2 ECU\n SG_ SEL M : 0|8@1+ (1,0) [0|255] \"\" ECU\n SG_ A m1 : 8|8@1+ (1,0) [0|255] \"\" ECU\n SG_ B m2 : 8|8@1+ (0.5,0) [0|255] \"\" ECU\n";

    #[test]
    fn frames_of_a_dbc_source_get_their_signals() {
        let dbc = Dbc::parse(DBC).expect("test DBC parses");
        let mut w = JsonlWriter::new(Vec::new())
            .with_dbcs(Dbcs::new(BTreeMap::from([("can0".to_string(), dbc)])));
        let f = |id, data: &[u8]| {
            Reading::Frame(TimedFrame {
                t_us: 7,
                frame: CanFrame::classic(id, false, data).expect("valid"),
            })
        };
        let readings = vec![
            // ANGLE: big-endian 12 bits from bit 7 = 0x123 (signed: 291) × 1.5; RATE = byte 4.
            f(37, &[0x12, 0x30, 0, 0, 9, 0, 0, 0]),
            f(100, &[2, 8]),
            f(99, &[1]),
        ];
        let mut b = batch(Content::Data {
            source: "can0".into(),
            readings: readings.clone(),
        });
        w.write_batch(&b).expect("write");
        b.content = Content::Data {
            source: "can1".into(),
            readings,
        };
        w.write_batch(&b).expect("write");
        let out = String::from_utf8(w.get_ref().clone()).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with(",\"data\":\"1230000009000000\",\"msg\":\"STEER_ANGLE\",\"signals\":{\"ANGLE\":436.5,\"RATE\":9.0}}"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("\"msg\":\"MUXED\",\"signals\":{\"SEL\":2.0,\"B\":4.0}}"),
            "only the selected multiplexed signal: {}",
            lines[1]
        );
        assert!(!lines[2].contains("signals"), "unknown id: {}", lines[2]);
        assert!(
            lines[3..].iter().all(|l| !l.contains("signals")),
            "other source"
        );
    }

    #[test]
    fn a_bad_dbc_is_an_error_naming_the_file_line_and_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.dbc");
        std::fs::write(&p, "VERSION \"\"\n\nBO_ 12 X: 8 ECU\n SG_ broken\n").expect("write");
        let e = Dbcs::load(&[("can0".into(), p.clone())])
            .expect_err("bad DBC")
            .to_string();
        assert!(e.contains(&format!("--dbc can0={}", p.display())), "{e}");
        assert!(e.contains("bad.dbc:"), "{e}");
        assert!(e.contains("leave out this --dbc"), "{e}");
    }

    #[test]
    fn event_lines() {
        let g = batch(Content::Gap(GapBody {
            cause: GapCause::Evicted,
            run: 2,
            seqs: vec![(10, 20)],
            batches: 10,
            samples: 500,
            t_first_us: 1,
            t_last_us: 2,
        }));
        assert_eq!(
            written(&g),
            "{\"event\":\"gap\",\"vehicle\":\"car-1\",\"run\":3,\"seq\":17,\"t_us\":6,\"cause\":\"evicted\",\"gap_run\":2,\"seqs\":[[10,20]],\"batches\":10,\"samples\":500,\"t_first_us\":1,\"t_last_us\":2}\n"
        );
        let r = batch(Content::Run(RunBody {
            previous_run: None,
            previous_durable_last_seq: None,
        }));
        assert_eq!(
            written(&r),
            "{\"event\":\"run\",\"vehicle\":\"car-1\",\"run\":3,\"seq\":17,\"t_us\":6,\"previous_run\":null,\"previous_durable_last_seq\":null}\n"
        );
    }

    #[test]
    fn sized_file_cuts_back_to_the_snapshot_and_refuses_a_shorter_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("o.jsonl");
        let mut f = SizedFile::open(&p, None, 16).expect("open");
        f.write_all(b"line 1\nline 2\n").expect("write");
        assert_eq!(f.sync().expect("sync"), 14);
        drop(f);
        // A snapshot recorded 7 bytes: the second line is cut.
        let mut f = SizedFile::open(&p, Some(7), 16).expect("reopen");
        assert_eq!(f.len(), 7);
        f.write_all(b"line 3\n").expect("write");
        f.sync().expect("sync");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "line 1\nline 3\n"
        );
        drop(f);
        let e = SizedFile::open(&p, Some(100), 16).expect_err("shorter than recorded");
        assert!(e.to_string().contains("records 100"), "{e}");
    }

    proptest::proptest! {
        /// Every finite value reads back bit for bit.
        #[test]
        fn values_round_trip(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let b = batch(Content::Data { source: "s".into(), readings: vec![Reading::Value(Sample { t_us: 1, channel: 0, value: v })] });
            let line = written(&b);
            // Parsed with Rust's exact parser: serde_json's default float parser may be 1 ulp off.
            let text = line.split("\"v\":").nth(1).and_then(|t| t.strip_suffix("}\n")).expect("a v field");
            let back: f64 = text.parse().expect("a number");
            proptest::prop_assert_eq!(back.to_bits(), v.to_bits());
        }
    }
}

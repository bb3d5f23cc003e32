//! The real RAV4 capture through the whole flow with DBC decoding: the agent replays the
//! comma2k19 candump log (columnar + zstd batches) through a real Mosquitto to two receivers
//! decoding bus `can0` with opendbc's Toyota DBC, one writing JSON Lines and one CSV. Every frame
//! must arrive once and unchanged, and every decoded signal of the first 2 s must equal what
//! cantools, an independent decoder, made of the same frames.
//!
//! The test reads the DBC text itself (message identifiers and names, signal order, factor,
//! offset, value tables) rather than through pitlink, so both sides of each comparison come from
//! outside the code under test.

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use system_tests::*;

const LOG: &str = "candump/comma2k19_rav4_2017_can0_10s.log";
const DBC: &str = "dbc/opendbc/_toyota_2017.dbc";
const ORACLE: &str = "expected/comma2k19_rav4_2017_can0_10s._toyota_2017.first2s.cantools.jsonl";
const VEHICLE: &str = "rav4";
const BUS: &str = "can0";
/// The oracle covers the frames stamped less than this after the first one.
const ORACLE_SPAN_US: u64 = 2_000_000;
/// Relative tolerance for physical values (raw × factor + offset in f64 on both sides; the
/// scale is the largest of the terms, so a sum that cancels to about zero is not held to
/// a relative error of its tiny result).
const REL_TOL: f64 = 1e-9;

/// One frame line of the capture.
#[derive(Debug, Clone)]
struct LogFrame {
    /// 1-based line number in the log.
    line: usize,
    /// Timestamp text as written (`46408.584930`).
    ts: String,
    /// µs after the log's first frame.
    t_rel: u64,
    id: u32,
    extended: bool,
    data: Vec<u8>,
}

/// A frame as the test compares it: (µs after the first frame, id, flags, len, payload).
type FrameKey = (u64, u32, u8, u8, Vec<u8>);

impl LogFrame {
    fn key(&self) -> FrameKey {
        (
            self.t_rel,
            self.id,
            u8::from(self.extended),
            self.data.len() as u8,
            self.data.clone(),
        )
    }
}

fn hex_bytes(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len().is_multiple_of(2), "odd hex length: {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .with_context(|| format!("not hex: {s:?}"))
        })
        .collect()
}

/// The test's own reading of the plain `candump -l` capture (`(secs.micros) iface ID#HEX`).
fn read_log(path: &Path) -> Result<Vec<LogFrame>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    let mut t0 = None;
    for (i, line) in text.lines().enumerate() {
        let bad = || format!("{}:{}: {line:?}", path.display(), i + 1);
        let mut it = line.split_whitespace();
        let ts = it
            .next()
            .and_then(|t| t.strip_prefix('('))
            .and_then(|t| t.strip_suffix(')'))
            .with_context(bad)?;
        let (s, f) = ts.split_once('.').with_context(bad)?;
        ensure!(f.len() == 6, "6-digit fractions only: {}", bad());
        let t = s.parse::<u64>()? * 1_000_000 + f.parse::<u64>()?;
        let t0 = *t0.get_or_insert(t);
        ensure!(it.next() == Some(BUS), "interface {BUS} only: {}", bad());
        let (id, data) = it
            .next()
            .and_then(|f| f.split_once('#'))
            .with_context(bad)?;
        ensure!(
            matches!(id.len(), 3 | 8) && !data.starts_with(['#', 'R']),
            "classic data frames only: {}",
            bad()
        );
        out.push(LogFrame {
            line: i + 1,
            ts: ts.to_string(),
            t_rel: t.checked_sub(t0).with_context(bad)?,
            id: u32::from_str_radix(id, 16).with_context(bad)?,
            extended: id.len() == 8,
            data: hex_bytes(data).with_context(bad)?,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct SigDef {
    name: String,
    factor: f64,
    offset: f64,
}

#[derive(Debug, Clone)]
struct MsgDef {
    name: String,
    /// In DBC order.
    signals: Vec<SigDef>,
}

impl MsgDef {
    fn signal(&self, name: &str) -> Option<&SigDef> {
        self.signals.iter().find(|s| s.name == name)
    }
}

/// What the test needs of the DBC: messages by (standard) identifier, and value tables by
/// (identifier, signal).
#[derive(Debug, Default)]
struct DbcText {
    msgs: BTreeMap<u32, MsgDef>,
    tables: BTreeMap<(u32, String), BTreeMap<i64, String>>,
}

/// `VAL_ <id> <signal> <n> "<label>" ... ;`
fn parse_val(line: &str) -> Option<(u32, String, BTreeMap<i64, String>)> {
    let rest = line.strip_prefix("VAL_ ")?;
    let mut it = rest.splitn(3, ' ');
    let id = it.next()?.parse().ok()?;
    let sig = it.next()?.to_string();
    let mut rest = it.next()?.trim();
    let mut table = BTreeMap::new();
    while let Some((n, after)) = rest.split_once(" \"") {
        let (label, after) = after.split_once('"')?;
        table.insert(n.trim().parse().ok()?, label.to_string());
        rest = after.trim();
    }
    (rest == ";").then_some((id, sig, table))
}

fn read_dbc(path: &Path) -> Result<DbcText> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut dbc = DbcText::default();
    let mut current: Option<u32> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = || format!("{}:{}: {raw:?}", path.display(), i + 1);
        if let Some(rest) = line.strip_prefix("BO_ ") {
            // `BO_ <id> <name>: <dlc> <node>`, sometimes with a space before the colon.
            let (head, _) = rest.split_once(':').with_context(bad)?;
            let mut it = head.split_whitespace();
            let id: u32 = it.next().and_then(|t| t.parse().ok()).with_context(bad)?;
            let name = it.next().with_context(bad)?;
            ensure!(it.next().is_none(), "{}", bad());
            ensure!(
                id & 0x8000_0000 == 0,
                "standard identifiers only: {}",
                bad()
            );
            dbc.msgs.insert(
                id,
                MsgDef {
                    name: name.to_string(),
                    signals: Vec::new(),
                },
            );
            current = Some(id);
        } else if let Some(rest) = line.strip_prefix("SG_ ") {
            let id = current.with_context(bad)?;
            let (head, _) = rest.split_once(" : ").with_context(bad)?;
            let mut head = head.split_whitespace();
            let name = head.next().with_context(bad)?.to_string();
            ensure!(head.next().is_none(), "no multiplexing expected: {}", bad());
            let (_, scale) = rest.split_once('(').with_context(bad)?;
            let (scale, _) = scale.split_once(')').with_context(bad)?;
            let (factor, offset) = scale.split_once(',').with_context(bad)?;
            let sig = SigDef {
                name,
                factor: factor.parse().with_context(bad)?,
                offset: offset.parse().with_context(bad)?,
            };
            dbc.msgs.get_mut(&id).with_context(bad)?.signals.push(sig);
        } else {
            if line.is_empty() {
                current = None;
            }
            if line.starts_with("VAL_ ") {
                let (id, sig, table) = parse_val(line).with_context(bad)?;
                dbc.tables.insert((id, sig), table);
            }
        }
    }
    Ok(dbc)
}

/// One decoded frame of the cantools oracle (format in the data's SOURCES.md).
#[derive(Debug, Clone, Deserialize)]
struct OracleFrame {
    line: usize,
    t: String,
    iface: String,
    id: u32,
    extended: bool,
    message: String,
    raw: BTreeMap<String, f64>,
    phys: BTreeMap<String, f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn read_oracle(path: &Path) -> Result<Vec<OracleFrame>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if i == 0 {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            ensure!(v.get("_meta").is_some(), "oracle line 1 is its _meta");
            continue;
        }
        out.push(
            serde_json::from_str(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Everything read from the shared data, cross-checked so that the comparisons below stand on
/// a consistent footing.
struct Inputs {
    log_path: PathBuf,
    dbc_path: PathBuf,
    log: Vec<LogFrame>,
    dbc: DbcText,
    /// The oracle by (µs after the first frame, id); unique in this capture (checked).
    oracle: BTreeMap<(u64, u32), OracleFrame>,
}

fn inputs() -> Result<Inputs> {
    let data = shared_data();
    let (log_path, dbc_path) = (data.join(LOG), data.join(DBC));
    let log = read_log(&log_path)?;
    assert_eq!(log.len(), 8977, "the capture's documented frame count");
    let dbc = read_dbc(&dbc_path)?;
    assert_eq!(dbc.msgs.len(), 50, "the DBC's documented message count");
    let oracle_frames = read_oracle(&data.join(ORACLE))?;
    assert_eq!(
        oracle_frames.len(),
        1039,
        "the oracle's documented frame count"
    );

    // The oracle is exactly the frames of the first 2 s whose identifier the DBC defines.
    let want_lines: BTreeSet<usize> = log
        .iter()
        .filter(|f| f.t_rel < ORACLE_SPAN_US && dbc.msgs.contains_key(&f.id))
        .map(|f| f.line)
        .collect();
    let got_lines: BTreeSet<usize> = oracle_frames.iter().map(|o| o.line).collect();
    assert_eq!(
        got_lines, want_lines,
        "oracle lines vs the DBC's frames of the first 2 s"
    );
    let mut oracle = BTreeMap::new();
    for o in oracle_frames {
        let f = &log[o.line - 1];
        assert_eq!(
            (o.t.as_str(), o.iface.as_str(), o.id, o.extended),
            (f.ts.as_str(), BUS, f.id, f.extended),
            "oracle line {} vs the log",
            o.line
        );
        let msg = &dbc.msgs[&o.id];
        assert_eq!(o.message, msg.name, "oracle line {}", o.line);
        let names: BTreeSet<&str> = msg.signals.iter().map(|s| s.name.as_str()).collect();
        assert!(
            o.phys.keys().map(String::as_str).eq(names.iter().copied())
                && o.raw.keys().map(String::as_str).eq(names.iter().copied()),
            "oracle line {}: every signal of {} (full-length frames, no multiplexing)",
            o.line,
            msg.name
        );
        let key = (f.t_rel, f.id);
        if let Some(prev) = oracle.insert(key, o) {
            bail!(
                "two frames of id {} at +{} µs (lines {} and {}): rows of a message file could not be told apart",
                key.1,
                key.0,
                prev.line,
                f.line
            );
        }
    }
    Ok(Inputs {
        log_path,
        dbc_path,
        log,
        dbc,
        oracle,
    })
}

/// The counts of one comparison against the oracle.
#[derive(Debug, Default)]
struct Tally {
    frames: usize,
    signals: usize,
    /// Signals whose value is the oracle's bit for bit.
    exact: usize,
    labels: usize,
    /// Frames compared, per message name.
    per_msg: BTreeMap<String, usize>,
}

/// Checks one decoded frame against the oracle's: the same signals, each value within
/// [`REL_TOL`], and every value-table label cantools gave found for the receiver's value in the
/// DBC's table. `got` is in the receiver's order.
fn compare_signals(
    what: &str,
    dbc: &DbcText,
    o: &OracleFrame,
    got: &[(String, Option<f64>)],
    tally: &mut Tally,
) -> Result<()> {
    let msg = &dbc.msgs[&o.id];
    let got_names: BTreeSet<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: BTreeSet<&str> = o.phys.keys().map(String::as_str).collect();
    ensure!(
        got_names == want_names && got_names.len() == got.len(),
        "{what}: signals {got_names:?}, cantools {want_names:?}"
    );
    for (name, value) in got {
        let v = value.with_context(|| format!("{what}: {name} is not a finite number"))?;
        let want = o.phys[name];
        let raw = o.raw[name];
        let def = msg.signal(name).context("signal in the DBC")?;
        let scale = v
            .abs()
            .max(want.abs())
            .max((raw * def.factor).abs())
            .max(def.offset.abs());
        ensure!(
            v == want || (v - want).abs() <= REL_TOL * scale,
            "{what}: {name} = {v:?}, cantools {want:?} (raw {raw}, factor {}, offset {})",
            def.factor,
            def.offset
        );
        tally.signals += 1;
        tally.exact += usize::from(v.to_bits() == want.to_bits());
        if let Some(label) = o.labels.get(name) {
            // cantools labels the raw value; the receiver writes the physical one. Map it back
            // through the DBC's scaling and look it up in the DBC's own table.
            let back = (v - def.offset) / def.factor;
            let r = back.round();
            ensure!(
                (back - r).abs() < 1e-6 && r == raw,
                "{what}: {name} = {v} is raw {back}, cantools raw {raw}"
            );
            let table = dbc
                .tables
                .get(&(o.id, name.clone()))
                .with_context(|| format!("{what}: cantools labels {name}, the DBC has no table"))?;
            ensure!(
                table.get(&(r as i64)) == Some(label),
                "{what}: {name} = {v}: DBC label {:?}, cantools {label:?}",
                table.get(&(r as i64))
            );
            tally.labels += 1;
        }
    }
    tally.frames += 1;
    *tally.per_msg.entry(msg.name.clone()).or_default() += 1;
    Ok(())
}

/// One CAN frame line of the receiver's JSON Lines output.
#[derive(Debug, Deserialize)]
struct RxFrame {
    vehicle: String,
    source: String,
    t_us: u64,
    id: u32,
    flags: u8,
    len: u8,
    data: String,
    #[serde(default)]
    len8_dlc: Option<u8>,
    #[serde(default)]
    msg: Option<String>,
    /// In the receiver's order (serde_json keeps it).
    #[serde(default)]
    signals: Option<serde_json::Map<String, serde_json::Value>>,
}

fn read_rx_frames(path: &Path) -> Result<Vec<RxFrame>> {
    // Every data line of this receiver is a frame (RxFrame requires `id`).
    read_data_lines(path)
}

/// Starts `pitlink receive --dbc can0=DBC` writing `output` (`--out FILE` or `--csv DIR`).
fn start_dbc_receiver(
    dir: &Path,
    name: &str,
    broker_socket: &Path,
    dbc: &Path,
    output: [&str; 2],
) -> Result<Proc> {
    let broker = format!("unix:{}", broker_socket.display());
    let dbc = format!("{BUS}={}", dbc.display());
    let mut p = Proc::spawn(
        &[
            "receive",
            "--broker",
            &broker,
            "--client-id",
            name,
            output[0],
            output[1],
            "--dbc",
            &dbc,
            "--idle-exit",
            "120s",
            "--json",
        ],
        &dir.join(format!("{name}.log")),
    )?;
    p.wait_log("subscribed", Duration::from_secs(10))?;
    Ok(p)
}

/// Total size of the files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// [`stop_receiver_when_quiet`] for a `--csv` receiver: quiet means no file under `dir` grew.
fn stop_csv_receiver_when_quiet(rx: &mut Proc, dir: &Path, quiet: Duration) -> Result<()> {
    stop_receiver_when_still(rx, quiet, || tree_size(dir))
}

/// Check 3: the receiver accounts for one vehicle with everything there once.
fn check_summary(rx: &Proc, frames: u64) -> Result<()> {
    let s = receiver_summary(rx)?;
    assert_eq!(s["bad_payloads"], 0, "bad payloads: {s}");
    let vehicles = s["vehicles"].as_object().context("vehicles")?;
    assert_eq!(
        vehicles.keys().collect::<Vec<_>>(),
        [VEHICLE],
        "one vehicle: {s}"
    );
    let v = &vehicles[VEHICLE];
    for k in [
        "duplicate_batches",
        "duplicate_samples",
        "missing_batches",
        "lost_in_crash_batches",
        "evicted_batches",
        "damaged_batches",
        "dropped_batches",
        "gap_notices",
        "low_water_batches",
        "untracked_batches",
    ] {
        assert_eq!(v[k], 0, "{k}: {s}");
    }
    assert_eq!(v["samples"], frames, "frames written: {s}");
    Ok(())
}

/// Check 1 on JSON Lines, then check 2 on every frame of the first 2 s: returns the tally.
fn check_jsonl(inp: &Inputs, out: &Path) -> Result<Tally> {
    let got = read_rx_frames(out)?;
    assert_eq!(got.len(), inp.log.len(), "every frame exactly once");
    let t0 = got.iter().map(|f| f.t_us).min().context("frames")?;
    let mut got_keys = Vec::with_capacity(got.len());
    let mut tally = Tally::default();
    for f in &got {
        let what = format!("frame id {} at +{} µs", f.id, f.t_us - t0);
        assert_eq!((f.vehicle.as_str(), f.source.as_str()), (VEHICLE, BUS));
        assert_eq!(f.len8_dlc, None, "{what}");
        let data = hex_bytes(&f.data)?;
        assert_eq!(usize::from(f.len), data.len(), "{what}");
        let t_rel = f.t_us - t0;
        got_keys.push((t_rel, f.id, f.flags, f.len, data));
        let Some(msg) = inp.dbc.msgs.get(&f.id).filter(|_| f.flags == 0) else {
            assert!(
                f.msg.is_none() && f.signals.is_none(),
                "{what}: decoded, but the DBC does not define it"
            );
            continue;
        };
        assert_eq!(f.msg.as_deref(), Some(msg.name.as_str()), "{what}");
        let signals: Vec<(String, Option<f64>)> = f
            .signals
            .as_ref()
            .with_context(|| format!("{what}: no signals"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64()))
            .collect();
        if t_rel < ORACLE_SPAN_US {
            let o = inp
                .oracle
                .get(&(t_rel, f.id))
                .with_context(|| format!("{what}: not in the oracle"))?;
            compare_signals(&what, &inp.dbc, o, &signals, &mut tally)?;
        } else {
            // Past the oracle: at least the whole message, in no other shape.
            let names: BTreeSet<&str> = signals.iter().map(|(n, _)| n.as_str()).collect();
            let want: BTreeSet<&str> = msg.signals.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, want, "{what}: signals");
            assert!(signals.iter().all(|(_, v)| v.is_some()), "{what}: finite");
        }
    }
    // Frames with equal timestamps may be batched in any order: compare as sorted multisets.
    let mut want_keys: Vec<FrameKey> = inp.log.iter().map(LogFrame::key).collect();
    got_keys.sort();
    want_keys.sort();
    for (i, (g, w)) in got_keys.iter().zip(&want_keys).enumerate() {
        assert_eq!(g, w, "frame {i} (sorted by time) differs");
    }
    assert_eq!(
        tally.frames,
        inp.oracle.len(),
        "every oracle frame compared"
    );
    Ok(tally)
}

/// A CSV file's header and rows, split at commas (no field of these files is quoted).
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut lines = text.lines();
    let split = |l: &str| l.split(',').map(str::to_string).collect::<Vec<_>>();
    let header = split(
        lines
            .next()
            .with_context(|| format!("{}: empty", path.display()))?,
    );
    let rows: Vec<Vec<String>> = lines.map(split).collect();
    for r in &rows {
        ensure!(r.len() == header.len(), "{}: row {r:?}", path.display());
    }
    Ok((header, rows))
}

/// A row of a message's CSV file: its time and its cells (empty: `None`), DBC order.
type CsvRow = (u64, Vec<Option<f64>>);

/// Check 1 and 2 on the CSV files: raw frames of identifiers the DBC does not define, one file
/// per message for the others, each checked against the log and (first 2 s) the oracle.
fn check_csv(inp: &Inputs, root: &Path) -> Result<Tally> {
    let dir = root.join(VEHICLE).join(BUS);
    let by_name: HashMap<&str, u32> = inp
        .dbc
        .msgs
        .iter()
        .map(|(id, m)| (m.name.as_str(), *id))
        .collect();
    let mut raw: Vec<FrameKey> = Vec::new();
    let mut decoded: BTreeMap<u32, Vec<CsvRow>> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = e?.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?;
        ensure!(
            path.extension().is_some_and(|x| x == "csv"),
            "{}",
            path.display()
        );
        let (header, rows) = read_csv(&path)?;
        if let Some(&id) = by_name.get(stem) {
            let mut want = vec!["t_us".to_string()];
            want.extend(inp.dbc.msgs[&id].signals.iter().map(|s| s.name.clone()));
            assert_eq!(header, want, "{}: header in DBC order", path.display());
            let rows_out = decoded.entry(id).or_default();
            for r in rows {
                let cells = r[1..]
                    .iter()
                    .map(|c| match c.as_str() {
                        "" => Ok(None),
                        c => c.parse::<f64>().map(Some),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{}: {r:?}", path.display()))?;
                rows_out.push((r[0].parse()?, cells));
            }
        } else {
            ensure!(
                stem.len() == 3 && stem.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: neither a DBC message nor a standard identifier",
                path.display()
            );
            let id = u32::from_str_radix(stem, 16)?;
            ensure!(!inp.dbc.msgs.contains_key(&id), "{}: raw", path.display());
            assert_eq!(
                header,
                ["t_us", "flags", "len", "data"],
                "{}",
                path.display()
            );
            for r in rows {
                raw.push((
                    r[0].parse()?,
                    id,
                    r[1].parse()?,
                    r[2].parse()?,
                    hex_bytes(&r[3])?,
                ));
            }
        }
    }
    let t0 = raw
        .iter()
        .map(|r| r.0)
        .chain(decoded.values().flatten().map(|r| r.0))
        .min()
        .context("no rows")?;

    // Raw files: exactly the frames the DBC does not define.
    let mut got_raw: Vec<FrameKey> = raw
        .into_iter()
        .map(|(t, id, flags, len, data)| (t - t0, id, flags, len, data))
        .collect();
    let mut want_raw: Vec<FrameKey> = inp
        .log
        .iter()
        .filter(|f| !inp.dbc.msgs.contains_key(&f.id))
        .map(LogFrame::key)
        .collect();
    got_raw.sort();
    want_raw.sort();
    assert_eq!(got_raw.len(), want_raw.len(), "raw CSV rows");
    for (g, w) in got_raw.iter().zip(&want_raw) {
        assert_eq!(g, w, "raw CSV frame");
    }

    // Message files: one row per frame, at the frame's time; values against the oracle.
    let mut tally = Tally::default();
    for (id, msg) in &inp.dbc.msgs {
        let mut want_t: Vec<u64> = inp
            .log
            .iter()
            .filter(|f| f.id == *id)
            .map(|f| f.t_rel)
            .collect();
        let rows = decoded.remove(id).unwrap_or_default();
        let mut got_t: Vec<u64> = rows.iter().map(|r| r.0 - t0).collect();
        want_t.sort_unstable();
        got_t.sort_unstable();
        assert_eq!(got_t, want_t, "{}: row times", msg.name);
        for (t, cells) in rows {
            let t_rel = t - t0;
            if t_rel >= ORACLE_SPAN_US {
                assert!(cells.iter().all(Option::is_some), "{}: +{t_rel}", msg.name);
                continue;
            }
            let o = &inp.oracle[&(t_rel, *id)];
            let got: Vec<(String, Option<f64>)> = msg
                .signals
                .iter()
                .map(|s| s.name.clone())
                .zip(cells)
                .collect();
            let what = format!("{}.csv +{t_rel} µs (log line {})", msg.name, o.line);
            compare_signals(&what, &inp.dbc, o, &got, &mut tally)?;
        }
    }
    assert_eq!(
        tally.frames,
        inp.oracle.len(),
        "every oracle frame compared"
    );
    for m in ["WHEEL_SPEEDS", "STEER_ANGLE_SENSOR"] {
        assert!(tally.per_msg.get(m).is_some_and(|&n| n > 0), "{m} rows");
    }

    // No gap was reported.
    let events = root.join(VEHICLE).join("events.csv");
    if events.exists() {
        let (_, rows) = read_csv(&events)?;
        assert!(rows.iter().all(|r| r[1] != "gap"), "gap rows: {rows:?}");
    }
    Ok(tally)
}

#[test]
fn rav4_capture_decodes_like_cantools_end_to_end() -> Result<()> {
    let started = Instant::now();
    let inp = inputs()?;
    let n = inp.log.len() as u64;

    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let broker = Mosquitto::start(&dir.join("broker"), BrokerOptions::default())?;
    let out = dir.join("received.jsonl");
    let csv = dir.join("csv");
    // Two receivers under their own client ids: each gets every batch.
    let mut rx_jsonl = start_dbc_receiver(
        dir,
        "rx-jsonl",
        broker.socket(),
        &inp.dbc_path,
        ["--out", out.to_str().context("utf-8 path")?],
    )?;
    let mut rx_csv = start_dbc_receiver(
        dir,
        "rx-csv",
        broker.socket(),
        &inp.dbc_path,
        ["--csv", csv.to_str().context("utf-8 path")?],
    )?;
    let knobs = ConfigKnobs {
        extra_sources: format!(
            "\n[[sources]]\nname = \"{BUS}\"\nkind = \"candump\"\npath = \"{}\"\nspeed = \"max\"\n",
            inp.log_path.display()
        ),
        ..ConfigKnobs::default()
    };
    let cfg = write_config_with(dir, VEHICLE, broker.socket(), &["wwan0"], &[], &knobs)?;
    let mut d = start_daemon(dir, &cfg)?;
    // The replay does not loop: once it ends, the daemon delivers its queue and exits.
    d.wait_log("core stopped", Duration::from_secs(60))?;
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!((end.generated, end.dropped, end.undelivered), (n, 0, 0));
    stop_receiver_when_quiet(&mut rx_jsonl, &out, Duration::from_secs(1))?;
    stop_csv_receiver_when_quiet(&mut rx_csv, &csv, Duration::from_secs(1))?;
    let flow = started.elapsed();

    check_summary(&rx_jsonl, n)?;
    check_summary(&rx_csv, n)?;
    let j = check_jsonl(&inp, &out)?;
    let c = check_csv(&inp, &csv)?;
    println!(
        "{n} frames compared with the log in JSONL and CSV; against cantools: JSONL {} frames / {} signals ({} bit-identical, {} labels), CSV {} frames / {} signals ({} bit-identical, {} labels) over {} messages; flow {:.1} s, total {:.1} s",
        j.frames,
        j.signals,
        j.exact,
        j.labels,
        c.frames,
        c.signals,
        c.exact,
        c.labels,
        c.per_msg.len(),
        flow.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

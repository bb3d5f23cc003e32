//! The wire format as `docs/wire-format.md` describes it, read by a decoder written from that
//! document alone (`scripts/wire_decode.py`): it must decode every golden message to its
//! record, agree with pitlink's own decoder on random batches of every kind of reading, and
//! refuse broken messages with an error line, never a traceback.
//!
//! Needs `/usr/bin/python3` with the `zstandard` module (`scripts/setup.sh` installs both); a
//! machine without them fails here rather than skipping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pitlink::codec::{
    self, BatchId, CODEC_COLUMNAR, CODEC_PLAIN, Encoder, Envelope, GapBody, GapCause,
    HeartbeatBody, Kind, RunBody,
};
use sensor_drivers::{CanFrame, ErrorClass, Reading, Sample, TimedFrame};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/wire_decode.py");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/tests/golden");

// ----- running the script -------------------------------------------------------------------

/// Fails (never skips) when the interpreter or its zstd module is missing.
fn require_python() {
    let setup = "run scripts/setup.sh (it installs python3 and python3-zstandard)";
    match Command::new(PYTHON)
        .args(["-c", "import zstandard"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{PYTHON} cannot import zstandard: {}\n{setup}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{PYTHON} does not run ({e}): {setup}"),
    }
}

#[derive(Debug)]
struct ScriptRun {
    status: ExitStatus,
    /// One JSON value per file, in the order given.
    lines: Vec<Value>,
}

/// Runs the script once over `files`: one JSON line each, no traceback, nothing on stderr.
fn run_script(files: &[PathBuf]) -> ScriptRun {
    require_python();
    let out = Command::new(PYTHON)
        .arg(SCRIPT)
        .args(files)
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "the script wrote to stderr:\n{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).expect("the script prints UTF-8");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), files.len(), "one line per file:\n{stdout}");
    ScriptRun {
        status: out.status,
        lines,
    }
}

fn write_all(dir: &Path, msgs: &[Vec<u8>]) -> Vec<PathBuf> {
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let p = dir.join(format!("msg-{i:04}.bin"));
            std::fs::write(&p, m).expect("write a message");
            p
        })
        .collect()
}

// ----- what pitlink's decoder says, in the golden records' JSON shape -----------------------

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn reading_json(r: &Reading) -> Value {
    match r {
        Reading::Value(s) => json!({
            "bits": format!("{:016x}", s.value.to_bits()),
            "ch": s.channel,
            "t_us": s.t_us,
        }),
        Reading::Frame(f) => json!({
            "data": hex(f.frame.payload()),
            "flags": f.frame.flags,
            "id": f.frame.id,
            "len": f.frame.len,
            "len8_dlc": f.frame.len8_dlc,
            "t_us": f.t_us,
        }),
    }
}

/// `pitlink::codec`'s decoding of a whole message, as the script must print it.
fn rust_json(msg: &[u8]) -> Result<Value, String> {
    let env = codec::decode(msg).map_err(|e| e.to_string())?;
    let content = match env.kind {
        Kind::Data => {
            let (source, readings) = codec::data_readings(&env).map_err(|e| e.to_string())?;
            let readings: Vec<Value> = readings.iter().map(reading_json).collect();
            json!({ "readings": readings, "source": source })
        }
        Kind::Gap => gap_json(&codec::gap_body(&env).map_err(|e| e.to_string())?),
        Kind::Run => {
            let r = codec::run_body(&env).map_err(|e| e.to_string())?;
            json!({
                "previous_durable_last_seq": r.previous_durable_last_seq,
                "previous_run": r.previous_run,
            })
        }
        Kind::Heartbeat => {
            let h = codec::heartbeat_body(&env).map_err(|e| e.to_string())?;
            json!({ "backlog_batches": h.backlog_batches, "next_seq": h.next_seq })
        }
    };
    Ok(json!({
        "codec": env.codec,
        "content": content,
        "kind": format!("{:?}", env.kind),
        "run": env.id.run,
        "samples": env.samples,
        "seq": env.id.seq,
        "t_first_us": env.t_first_us,
        "t_last_us": env.t_last_us,
        "vehicle": env.vehicle,
        "version": msg[0],
    }))
}

fn gap_json(g: &GapBody) -> Value {
    json!({
        "batches": g.batches,
        "cause": format!("{:?}", g.cause),
        "run": g.run,
        "samples": g.samples,
        "seqs": g.seqs.iter().map(|&(a, b)| json!([a, b])).collect::<Vec<_>>(),
        "t_first_us": g.t_first_us,
        "t_last_us": g.t_last_us,
    })
}

// ----- (1) golden messages ------------------------------------------------------------------

#[test]
fn every_golden_message_decodes_to_its_record() {
    let mut bins: Vec<PathBuf> = std::fs::read_dir(GOLDEN)
        .expect("golden directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    bins.sort();
    assert!(bins.len() >= 9, "golden messages found: {bins:?}");
    let run = run_script(&bins);
    for (bin, got) in bins.iter().zip(&run.lines) {
        let record = std::fs::read_to_string(bin.with_extension("json")).expect("golden record");
        let want: Value = serde_json::from_str(&record).expect("golden record is JSON");
        assert_eq!(got, &want, "{}", bin.display());
        // The JSON built here from pitlink's decoder (used below) has the same shape.
        let msg = std::fs::read(bin).expect("golden message");
        assert_eq!(rust_json(&msg).as_ref(), Ok(&want), "{}", bin.display());
    }
    assert!(run.status.success(), "{:?}", run.status);
}

// ----- (2) random batches from the real encoder ---------------------------------------------

/// SplitMix64: a seeded generator so a failure can be replayed (`WIRE_PY_SEED`). Written out
/// because the test package has no random-number dependency, and this one is five lines.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// One of `xs`, or a fresh value from `fresh`.
    fn pick_or<T: Copy>(&mut self, xs: &[T], fresh: impl FnOnce(&mut Rng) -> T) -> T {
        match self.below(xs.len() as u64 + 1) as usize {
            i if i < xs.len() => xs[i],
            _ => fresh(self),
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("WIRE_PY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F1CE)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Classic,
    Fd(u8),
    Remote,
    Error,
    Len8Dlc(u8),
}

/// One recurring frame of a batch: an ECU message with a counter and maybe a checksum.
#[derive(Debug, Clone)]
struct Key {
    id: u32,
    extended: bool,
    shape: Shape,
    len: usize,
    base: Vec<u8>,
    /// Byte that counts up from frame to frame.
    counter_at: Option<usize>,
    /// Last byte = (c + sum of the others) mod 256, what the sum predictor finds.
    checksum: Option<u8>,
    /// Bytes that take any value.
    noisy: Vec<usize>,
    sent: u8,
}

const FD_LENS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

fn random_key(rng: &mut Rng, ids: &[u32]) -> Key {
    let shape = match rng.below(10) {
        0..=3 => Shape::Classic,
        4..=5 => Shape::Fd(rng.pick(&[0, 0x10, 0x20, 0x30])),
        6 => Shape::Remote,
        7 => Shape::Error,
        8 => Shape::Len8Dlc(9 + rng.below(7) as u8),
        _ => Shape::Classic,
    };
    let extended = rng.chance(30);
    let id = match shape {
        Shape::Error => {
            if rng.chance(70) {
                // One or more CAN_ERR_* classes.
                ErrorClass::ALL
                    .iter()
                    .filter(|_| rng.chance(30))
                    .fold(0, |m, c| m | c.mask())
            } else {
                rng.below(1 << 29) as u32
            }
        }
        _ if rng.chance(40) => rng.pick(ids) & if extended { 0x1FFF_FFFF } else { 0x7FF },
        _ if extended => rng.pick_or(&[0, 0x1FFF_FFFF], |r| r.below(1 << 29) as u32),
        _ => rng.pick_or(&[0, 0x7FF], |r| r.below(1 << 11) as u32),
    };
    let len = match shape {
        Shape::Fd(_) => rng.pick(&FD_LENS),
        Shape::Len8Dlc(_) => 8,
        _ => rng.below(9) as usize,
    };
    let carries_payload = !matches!(shape, Shape::Remote);
    let counter_at =
        (carries_payload && len > 0 && rng.chance(60)).then(|| rng.below(len as u64) as usize);
    let checksum = (carries_payload && len >= 2 && rng.chance(50)).then(|| rng.next() as u8);
    let noisy = (0..len).filter(|_| rng.chance(10)).collect();
    let mut base = rng.bytes(len);
    if rng.chance(50) {
        // Mostly zeros, as real frames often are (and the plain codec trims them).
        base.iter_mut().for_each(|b| *b &= rng.pick(&[0, 0, 0xFF]));
    }
    Key {
        id,
        extended,
        shape,
        len,
        base,
        counter_at,
        checksum,
        noisy,
        sent: 0,
    }
}

fn next_frame(rng: &mut Rng, k: &mut Key) -> CanFrame {
    let mut p = k.base.clone();
    if let Some(at) = k.counter_at {
        p[at] = p[at].wrapping_add(k.sent);
    }
    for &at in &k.noisy {
        p[at] = rng.next() as u8;
    }
    if let Some(c) = k.checksum {
        let n = p.len();
        p[n - 1] = p[..n - 1].iter().fold(c, |s, &b| s.wrapping_add(b));
    }
    k.sent = k.sent.wrapping_add(1);
    let f = match k.shape {
        Shape::Classic => CanFrame::classic(k.id, k.extended, &p),
        Shape::Fd(fd_flags) => CanFrame::fd(k.id, k.extended, fd_flags, &p),
        Shape::Remote => CanFrame::remote(k.id, k.extended, k.len as u8),
        Shape::Error => CanFrame::error(k.id, &p),
        Shape::Len8Dlc(dlc) => {
            CanFrame::classic(k.id, k.extended, &p).and_then(|f| f.with_len8_dlc(dlc))
        }
    };
    f.unwrap_or_else(|e| panic!("{k:?}: {e}"))
}

const SPECIAL_VALUES: [u64; 14] = [
    0x0000_0000_0000_0000, // 0.0
    0x8000_0000_0000_0000, // -0.0
    0x7FF0_0000_0000_0000, // inf
    0xFFF0_0000_0000_0000, // -inf
    0x7FF8_0000_0000_0000, // NaN
    0xFFF8_0000_0000_0001, // negative NaN with a payload
    0x7FF0_0000_0000_0001, // signalling NaN
    0x0000_0000_0000_0001, // smallest subnormal
    0x000F_FFFF_FFFF_FFFF, // largest subnormal
    0x8000_0000_0000_0001, // negative subnormal
    0x0010_0000_0000_0000, // f64::MIN_POSITIVE
    0x7FEF_FFFF_FFFF_FFFF, // f64::MAX
    0xFFEF_FFFF_FFFF_FFFF, // f64::MIN
    0x3FF0_0000_0000_0000, // 1.0
];

/// Times of `n` readings: mostly rising in small steps, sometimes in any order, sometimes at
/// the ends of the u64 range.
fn random_times(rng: &mut Rng, n: usize) -> Vec<u64> {
    let base = 1_763_800_000_000_000 + rng.below(1 << 40);
    match rng.below(10) {
        0..=4 => {
            let mut t = base;
            (0..n)
                .map(|_| {
                    t += rng.pick_or(&[0, 1, 5, 1000], |r| r.below(1 << 20));
                    t
                })
                .collect()
        }
        5..=7 => (0..n).map(|_| base + rng.below(2_000_000)).collect(),
        8 => (0..n).map(|_| base - rng.below(5)).collect(),
        _ => (0..n)
            .map(|_| rng.pick_or(&[0, 1, u64::MAX, u64::MAX - 1, base], Rng::next))
            .collect(),
    }
}

#[derive(Debug, Default)]
struct Coverage {
    values: usize,
    specials: usize,
    frames: [usize; 5],
    checksummed: usize,
    mixed: usize,
    empty: usize,
    control: usize,
    plain: usize,
}

/// One random `Data` batch: values, frames, both or nothing.
fn random_readings(rng: &mut Rng, cov: &mut Coverage) -> Vec<Reading> {
    let n = match rng.below(10) {
        0 => rng.below(4) as usize,
        1..=7 => 1 + rng.below(120) as usize,
        _ => 200 + rng.below(600) as usize,
    };
    let (values, frames) = match rng.below(20) {
        0 => {
            cov.mixed += 1;
            (true, true)
        }
        1..=9 => (true, false),
        _ => (false, true),
    };
    let times = random_times(rng, n);
    let chans: Vec<u16> = (0..1 + rng.below(8))
        .map(|_| rng.pick_or(&[0, 1, 7, 255, 256, 65535], |r| r.next() as u16))
        .collect();
    let mut level: Vec<f64> = chans.iter().map(|_| rng.below(1000) as f64 / 7.0).collect();
    let ids: Vec<u32> = (0..3).map(|_| rng.below(1 << 11) as u32).collect();
    let mut keys: Vec<Key> = (0..1 + rng.below(6))
        .map(|_| random_key(rng, &ids))
        .collect();
    let mut out = Vec::with_capacity(n);
    for t_us in times {
        if values && (!frames || rng.chance(50)) {
            let c = rng.below(chans.len() as u64) as usize;
            let value = if rng.chance(8) {
                cov.specials += 1;
                f64::from_bits(rng.pick(&SPECIAL_VALUES))
            } else if rng.chance(5) {
                f64::from_bits(rng.next())
            } else {
                level[c] += (rng.below(200) as f64 - 100.0) / 64.0;
                level[c]
            };
            cov.values += 1;
            out.push(Reading::Value(Sample {
                t_us,
                channel: chans[c],
                value,
            }));
        } else {
            let k = rng.below(keys.len() as u64) as usize;
            let frame = next_frame(rng, &mut keys[k]);
            let shape = match keys[k].shape {
                Shape::Classic => 0,
                Shape::Fd(_) => 1,
                Shape::Remote => 2,
                Shape::Error => 3,
                Shape::Len8Dlc(_) => 4,
            };
            cov.frames[shape] += 1;
            cov.checksummed += usize::from(keys[k].checksum.is_some());
            out.push(Reading::Frame(TimedFrame { t_us, frame }));
        }
    }
    if out.is_empty() {
        cov.empty += 1;
    }
    out
}

fn random_control(rng: &mut Rng, vehicle: &str, id: BatchId) -> Vec<u8> {
    let now = rng.pick_or(&[0, u64::MAX], |r| 1_763_800_000_000_000 + r.below(1 << 30));
    let big = |rng: &mut Rng| rng.pick_or(&[0, 1, u64::MAX, 999], Rng::next);
    let env = match rng.below(3) {
        0 => {
            let body = GapBody {
                cause: rng.pick(&[GapCause::Evicted, GapCause::Dropped, GapCause::Damaged]),
                run: rng.next() as u32,
                seqs: (0..rng.below(4)).map(|_| (big(rng), big(rng))).collect(),
                batches: big(rng),
                samples: big(rng),
                t_first_us: big(rng),
                t_last_us: big(rng),
            };
            codec::control_envelope(vehicle, id, Kind::Gap, now, &body)
        }
        1 => {
            let body = RunBody {
                previous_run: rng.chance(70).then(|| rng.next() as u32),
                previous_durable_last_seq: rng.chance(70).then(|| big(rng)),
            };
            codec::control_envelope(vehicle, id, Kind::Run, now, &body)
        }
        _ => {
            let body = HeartbeatBody {
                next_seq: id.seq,
                backlog_batches: big(rng),
            };
            codec::control_envelope(vehicle, id, Kind::Heartbeat, now, &body)
        }
    };
    match (env.kind, rng.chance(30)) {
        (Kind::Heartbeat, _) | (_, false) => codec::encode(&env),
        (_, true) => codec::encode_version(&env, 1),
    }
}

fn random_source(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => "ö-bus/Ωmega ✓".into(),
        2 => "x".repeat(1024),
        _ => rng
            .pick(&["can0", "vcan1", "gps", "imu", "line-sensor"])
            .into(),
    }
}

#[test]
fn random_batches_decode_as_pitlink_decodes_them() {
    let mut rng = Rng(seed());
    let mut cov = Coverage::default();
    let mut msgs = Vec::new();
    for i in 0..400u64 {
        let vehicle = rng.pick(&["car-01", "", "véhicule 7"]);
        let id = BatchId {
            run: rng.pick_or(&[0, 1, u32::MAX], |r| r.next() as u32),
            seq: rng.pick_or(&[i, u64::MAX - 1], Rng::next),
        };
        if rng.chance(8) {
            cov.control += 1;
            msgs.push(random_control(&mut rng, vehicle, id));
            continue;
        }
        let source = random_source(&mut rng);
        let readings = random_readings(&mut rng, &mut cov);
        let msg = match rng.below(8) {
            0 => {
                cov.plain += 1;
                codec::encode_version(
                    &codec::data_envelope_plain(vehicle, id, &source, &readings),
                    1,
                )
            }
            1 => {
                cov.plain += 1;
                codec::encode(&codec::data_envelope_plain(vehicle, id, &source, &readings))
            }
            _ => codec::encode(&codec::data_envelope(vehicle, id, &source, &readings)),
        };
        // pitlink gives back what went in: values first, then frames, each in batch order.
        let want: Vec<Value> = readings
            .iter()
            .filter(|r| matches!(r, Reading::Value(_)))
            .chain(readings.iter().filter(|r| matches!(r, Reading::Frame(_))))
            .map(reading_json)
            .collect();
        let got = rust_json(&msg).unwrap_or_else(|e| panic!("pitlink refuses its own batch: {e}"));
        assert_eq!(got["content"]["readings"], Value::from(want), "batch {i}");
        msgs.push(msg);
    }
    assert!(
        cov.values > 1000
            && cov.specials > 50
            && cov.frames.iter().all(|&n| n > 100)
            && cov.checksummed > 100
            && cov.mixed > 3
            && cov.empty > 0
            && cov.control > 10
            && cov.plain > 30,
        "the generator misses cases: {cov:?}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let files = write_all(dir.path(), &msgs);
    let run = run_script(&files);
    for ((file, msg), got) in files.iter().zip(&msgs).zip(&run.lines) {
        let want = rust_json(msg).expect("decoded above");
        assert_eq!(
            got,
            &want,
            "{} differs (seed {}); kept in {}",
            file.display(),
            seed(),
            dir.keep().display()
        );
    }
    assert!(run.status.success(), "{:?}", run.status);
}

// ----- (3) broken messages ------------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A zstd frame (RFC 8878) holding `content` as one raw block, its content size stated in 4
/// bytes, or not at all.
fn zstd_raw(content: &[u8], stated: Option<u32>) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
    match stated {
        // Frame_Content_Size_flag 2 (4 bytes), Single_Segment_flag.
        Some(n) => {
            f.push(0b1010_0000);
            f.extend(n.to_le_bytes());
        }
        // No content size; window descriptor: 2^17 bytes.
        None => f.extend([0, 7 << 3]),
    }
    // Block header: last block, raw, its size.
    let h = 1 | (content.len() as u32) << 3;
    f.extend(&h.to_le_bytes()[..3]);
    f.extend(content);
    f
}

fn data_msg(version: u8, samples: u32, codec_id: u8, body: Vec<u8>) -> Vec<u8> {
    codec::encode_version(
        &Envelope {
            vehicle: "car-01".into(),
            id: BatchId { run: 1, seq: 2 },
            kind: Kind::Data,
            t_first_us: 1_000,
            t_last_us: 2_000,
            samples,
            codec: codec_id,
            body,
        },
        version,
    )
}

/// A columnar message around `layout`, stored raw in zstd with its true size.
fn columnar_msg(samples: u32, layout: &[u8]) -> Vec<u8> {
    data_msg(
        2,
        samples,
        CODEC_COLUMNAR,
        zstd_raw(layout, Some(layout.len() as u32)),
    )
}

/// Layout of one value of channel `ch`, from its parts (for corrupting one at a time).
fn values_layout(nv: u64, c: u64, ch: u64, index: u64) -> Vec<u8> {
    let mut l = vec![0, 3];
    l.extend(b"gps");
    varint(&mut l, nv);
    varint(&mut l, 0);
    varint(&mut l, c);
    varint(&mut l, ch);
    varint(&mut l, index);
    varint(&mut l, 2); // zigzag 1: the value is at t_first + 1
    l.extend(2.5f64.to_bits().to_le_bytes());
    l
}

/// Layout of two frames of one key.
fn frames_layout(key: (u32, u8, u8, u8, u8), payload: &[u8]) -> Vec<u8> {
    let (id, flags, len, len8_dlc, predictor) = key;
    let mut l = vec![0, 4];
    l.extend(b"can0");
    varint(&mut l, 0);
    varint(&mut l, 2);
    varint(&mut l, 1);
    varint(&mut l, u64::from(id));
    l.extend([flags, len, len8_dlc, predictor]);
    if predictor == 1 {
        l.push(0x11);
    }
    l.extend([0, 0, 0, 2]); // key indices, then time deltas 0 and +1
    for &b in payload {
        l.extend([b, 1]); // byte j of both frames: b, then b + 1
    }
    l
}

fn plain_frame_msg(id: u32, flags: u8, len: u8, len8_dlc: u8, data: &[u8]) -> Vec<u8> {
    let mut b = vec![4];
    b.extend(b"can0");
    b.extend([0, 1, 0]); // no values; one frame, at dt 0
    varint(&mut b, u64::from(id));
    b.extend([flags, len, len8_dlc, data.len() as u8]);
    b.extend(data);
    data_msg(1, 1, CODEC_PLAIN, b)
}

fn with(mut m: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut m);
    m
}

#[test]
fn hand_made_layouts_decode_as_pitlink_decodes_them() {
    // The valid bases the broken messages below are made from, and a zstd frame with a
    // checksum, which a decoder must accept (the agent writes none).
    let checksummed = {
        require_python();
        let layout = values_layout(1, 1, 9, 0);
        let out = Command::new(PYTHON)
            .args([
                "-c",
                "import sys, zstandard; sys.stdout.buffer.write(zstandard.ZstdCompressor(\
                 write_checksum=True).compress(bytes.fromhex(sys.argv[1])))",
                &hex(&layout),
            ])
            .output()
            .expect("compress with a checksum");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout[4] & 0x04, 0x04, "checksum flag set");
        data_msg(2, 1, CODEC_COLUMNAR, out.stdout)
    };
    let msgs = vec![
        columnar_msg(1, &values_layout(1, 1, 65535, 0)),
        columnar_msg(2, &frames_layout((0x123, 0, 3, 0, 1), &[7, 8])),
        columnar_msg(2, &frames_layout((0x1FFF_FFFF, 0x39, 12, 0, 0), &[1; 12])),
        columnar_msg(2, &frames_layout((0x7FF, 0x03, 8, 0, 0), &[])),
        columnar_msg(2, &frames_layout((0x3FF, 0x04, 8, 0, 0), &[2; 8])),
        columnar_msg(2, &frames_layout((5, 0, 8, 15, 1), &[3; 7])),
        plain_frame_msg(0x7FF, 0x02, 8, 0, &[]),
        plain_frame_msg(0x1FFF_FFFF, 0x04, 8, 0, &[1, 2]),
        checksummed,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let files = write_all(dir.path(), &msgs);
    let run = run_script(&files);
    for (i, (msg, got)) in msgs.iter().zip(&run.lines).enumerate() {
        let want = rust_json(msg).unwrap_or_else(|e| panic!("message {i}: pitlink says {e}"));
        assert_eq!(got, &want, "message {i}");
    }
    assert!(run.status.success(), "{:?}", run.status);
    // The sum predictor filled in the last byte: 0x11 + 7 + 8, then 0x11 + 8 + 9.
    let frames = &run.lines[1]["content"]["readings"];
    assert_eq!(frames[0]["data"], "070820");
    assert_eq!(frames[1]["data"], "080922");
}

#[test]
fn broken_messages_are_refused_by_both_decoders() {
    let good_values = values_layout(1, 1, 9, 0);
    let good_plain = plain_frame_msg(0x123, 0, 3, 0, &[1, 2, 3]);
    let good_columnar = columnar_msg(1, &good_values);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("version 0", with(good_plain.clone(), |m| m[0] = 0)),
        ("version 3", with(good_plain.clone(), |m| m[0] = 3)),
        (
            "truncated envelope",
            good_plain[..good_plain.len() - 1].to_vec(),
        ),
        (
            "byte after the envelope",
            with(good_plain.clone(), |m| m.push(0)),
        ),
        (
            "heartbeat in version 1",
            codec::encode_version(
                &codec::control_envelope(
                    "car-01",
                    BatchId { run: 1, seq: 5 },
                    Kind::Heartbeat,
                    0,
                    &HeartbeatBody {
                        next_seq: 5,
                        backlog_batches: 0,
                    },
                ),
                1,
            ),
        ),
        ("kind 4", with(good_plain.clone(), |m| m[10] = 4)),
        (
            "columnar codec in version 1",
            with(good_columnar.clone(), |m| m[0] = 1),
        ),
        (
            "columnar codec for a run body",
            codec::encode(&Envelope {
                codec: CODEC_COLUMNAR,
                ..codec::control_envelope(
                    "car-01",
                    BatchId { run: 1, seq: 0 },
                    Kind::Run,
                    0,
                    &RunBody {
                        previous_run: None,
                        previous_durable_last_seq: None,
                    },
                )
            }),
        ),
        (
            "codec 2",
            data_msg(
                2,
                1,
                2,
                zstd_raw(&good_values, Some(good_values.len() as u32)),
            ),
        ),
        (
            "zstd frame without its content size",
            data_msg(2, 1, CODEC_COLUMNAR, zstd_raw(&good_values, None)),
        ),
        (
            "zstd content size above 88 × samples + 4096",
            data_msg(2, 1, CODEC_COLUMNAR, zstd_raw(&[0; 4185], Some(4185))),
        ),
        (
            "bytes after the zstd frame",
            data_msg(
                2,
                1,
                CODEC_COLUMNAR,
                with(
                    zstd_raw(&good_values, Some(good_values.len() as u32)),
                    |b| b.push(0),
                ),
            ),
        ),
        (
            "layout 1",
            columnar_msg(1, &with(good_values.clone(), |l| l[0] = 1)),
        ),
        ("source of 1025 bytes", {
            let mut l = vec![0];
            varint(&mut l, 1025);
            l.extend([b'x'; 1025]);
            l.extend([0, 0]);
            columnar_msg(0, &l)
        }),
        (
            "source not UTF-8",
            columnar_msg(1, &with(good_values.clone(), |l| l[2] = 0xFF)),
        ),
        ("values + frames ≠ samples", columnar_msg(2, &good_values)),
        ("no channels", columnar_msg(1, &values_layout(1, 0, 9, 0))),
        ("more channels than values", {
            columnar_msg(1, &values_layout(1, 2, 9, 0))
        }),
        (
            "channel 65536",
            columnar_msg(1, &values_layout(1, 1, 65536, 0)),
        ),
        (
            "channel index 1 of 1",
            columnar_msg(1, &values_layout(1, 1, 9, 1)),
        ),
        (
            "missing plane byte",
            columnar_msg(1, &good_values[..good_values.len() - 1]),
        ),
        (
            "byte after the layout",
            columnar_msg(1, &with(good_values.clone(), |l| l.push(0))),
        ),
        ("remote and error", {
            columnar_msg(2, &frames_layout((1, 0x06, 0, 0, 0), &[]))
        }),
        ("error frame with the extended flag", {
            columnar_msg(2, &frames_layout((1, 0x05, 0, 0, 0), &[]))
        }),
        ("remote frame with BRS", {
            columnar_msg(2, &frames_layout((1, 0x12, 0, 0, 0), &[]))
        }),
        ("BRS without FD", {
            columnar_msg(2, &frames_layout((1, 0x10, 1, 0, 0), &[0]))
        }),
        ("unknown flag 0x40", {
            columnar_msg(2, &frames_layout((1, 0x40, 1, 0, 0), &[0]))
        }),
        ("standard id of 12 bits", {
            columnar_msg(2, &frames_layout((0x800, 0, 1, 0, 0), &[0]))
        }),
        ("extended id of 30 bits", {
            columnar_msg(2, &frames_layout((1 << 29, 0x01, 1, 0, 0), &[0]))
        }),
        ("error class above 29 bits", {
            columnar_msg(2, &frames_layout((1 << 29, 0x04, 1, 0, 0), &[0]))
        }),
        ("classic frame of 9 bytes", {
            columnar_msg(2, &frames_layout((1, 0, 9, 0, 0), &[0; 9]))
        }),
        ("remote frame of 9 bytes", {
            columnar_msg(2, &frames_layout((1, 0x02, 9, 0, 0), &[]))
        }),
        ("FD frame of 9 bytes", {
            columnar_msg(2, &frames_layout((1, 0x08, 9, 0, 0), &[0; 9]))
        }),
        ("len8_dlc 8", {
            columnar_msg(2, &frames_layout((1, 0, 8, 8, 0), &[0; 8]))
        }),
        ("len8_dlc on a 7-byte frame", {
            columnar_msg(2, &frames_layout((1, 0, 7, 9, 0), &[0; 7]))
        }),
        ("len8_dlc on an FD frame", {
            columnar_msg(2, &frames_layout((1, 0x08, 8, 9, 0), &[0; 8]))
        }),
        ("predictor 2", {
            columnar_msg(2, &frames_layout((1, 0, 3, 0, 2), &[0; 3]))
        }),
        ("sum predictor on 1 byte", {
            columnar_msg(2, &frames_layout((1, 0, 1, 0, 1), &[]))
        }),
        ("sum predictor on a remote frame", {
            columnar_msg(2, &frames_layout((1, 0x02, 8, 0, 1), &[]))
        }),
        ("no keys", {
            let l = with(frames_layout((1, 0, 1, 0, 0), &[0]), |l| l[8] = 0);
            columnar_msg(2, &l)
        }),
        ("key index 1 of 1", {
            // The key indices follow the 4 key bytes after `id`.
            let l = with(frames_layout((1, 0, 1, 0, 0), &[0]), |l| l[14] = 1);
            columnar_msg(2, &l)
        }),
        ("plain: payload longer than len", {
            plain_frame_msg(1, 0, 2, 0, &[1, 2, 3])
        }),
        ("plain: data on a remote frame", {
            plain_frame_msg(1, 0x02, 2, 0, &[1])
        }),
        ("plain: flags 0x06", plain_frame_msg(1, 0x06, 0, 0, &[])),
        (
            "two zstd frames",
            data_msg(2, 1, CODEC_COLUMNAR, {
                let mut f = zstd_raw(&good_values, Some(good_values.len() as u32));
                f.extend(zstd_raw(&[], Some(0)));
                f
            }),
        ),
        (
            "zstd skippable frame first",
            data_msg(2, 1, CODEC_COLUMNAR, {
                let mut f = vec![0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0];
                f.extend(zstd_raw(&good_values, Some(good_values.len() as u32)));
                f
            }),
        ),
        ("byte after a plain data body", {
            let mut b = vec![4];
            b.extend(b"can0");
            b.extend([0, 0, 0]);
            data_msg(1, 0, CODEC_PLAIN, b)
        }),
        ("plain: FD length 13", plain_frame_msg(1, 0x08, 13, 0, &[])),
        ("plain: samples ≠ frames", {
            with(good_plain.clone(), |m| m[15] = 2)
        }),
        ("plain: sample count past the end", {
            let mut b = vec![0, 0x80, 0x80, 0x80, 0x80, 0x0F];
            b.push(0);
            data_msg(1, 0, CODEC_PLAIN, b)
        }),
        (
            "gap cause 3",
            codec::encode(&Envelope {
                body: vec![3, 1, 0, 0, 0, 0, 0],
                ..codec::control_envelope("car-01", BatchId { run: 1, seq: 3 }, Kind::Gap, 0, &())
            }),
        ),
        (
            "run body option tag 2",
            codec::encode(&Envelope {
                body: vec![2, 0],
                ..codec::control_envelope("car-01", BatchId { run: 1, seq: 0 }, Kind::Run, 0, &())
            }),
        ),
        (
            "byte after a heartbeat body",
            codec::encode(&Envelope {
                body: vec![1, 0, 0],
                ..codec::control_envelope(
                    "car-01",
                    BatchId { run: 1, seq: 1 },
                    Kind::Heartbeat,
                    0,
                    &(),
                )
            }),
        ),
        (
            "vehicle not UTF-8",
            with(good_plain.clone(), |m| m[2] = 0xC3),
        ),
        ("run past u32", {
            let mut m = vec![2, 0];
            m.extend([0x80, 0x80, 0x80, 0x80, 0x10]);
            m.extend(&good_plain[9..]);
            m
        }),
        ("seq varint of 11 bytes", {
            let mut m = good_plain[..9].to_vec();
            m.extend([0x80; 10]);
            m.push(0);
            m.extend(&good_plain[10..]);
            m
        }),
    ];
    // The base messages are valid: each case breaks exactly what it names.
    for base in [&good_plain, &good_columnar] {
        rust_json(base).expect("a valid base message");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let msgs: Vec<Vec<u8>> = cases.iter().map(|(_, m)| m.clone()).collect();
    let files = write_all(dir.path(), &msgs);
    let run = run_script(&files);
    let mut pitlink_accepts = Vec::new();
    for ((what, msg), got) in cases.iter().zip(&run.lines) {
        let error = got["error"].as_str();
        assert!(
            error.is_some_and(|e| !e.is_empty()) && got.as_object().map(|o| o.len()) == Some(1),
            "{what}: the script says {got}"
        );
        if rust_json(msg).is_ok() {
            pitlink_accepts.push(*what);
        }
    }
    assert_eq!(run.status.code(), Some(1), "{:?}", run.status);
    // pitlink's own decoder lets these through although the document rules them out (or, for
    // the plain frames and trailing body bytes, does not say they are allowed). Listed exactly:
    // when pitlink or the document changes, this list must follow.
    assert!(
        pitlink_accepts.is_empty(),
        "broken messages pitlink decodes: {pitlink_accepts:?}"
    );
}

/// Points `docs/wire-format.md` does not settle, where both decoders happen to agree: overlong
/// varints, channel and key tables with repeats or out of first-appearance order, trailing zero
/// bytes kept in plain data, a time before `t_first_us`, a heartbeat whose `next_seq` is not
/// its `id.seq`, a control message with samples, `len8_dlc` on a remote frame; and a plain
/// reading's time past 2^64, which wraps in both.
#[test]
fn points_the_document_leaves_open() {
    let values = |chans: &[u64], idx: &[u64]| {
        let mut l = vec![0, 3];
        l.extend(b"gps");
        varint(&mut l, idx.len() as u64);
        varint(&mut l, 0);
        varint(&mut l, chans.len() as u64);
        chans.iter().for_each(|&c| varint(&mut l, c));
        idx.iter().for_each(|&i| varint(&mut l, i));
        idx.iter().for_each(|_| varint(&mut l, 2));
        for c in 0..chans.len() as u64 {
            let k = idx.iter().filter(|&&i| i == c).count();
            for p in 0..8 {
                l.extend(std::iter::repeat_n(2.5f64.to_bits().to_le_bytes()[p], k));
            }
        }
        l
    };
    let heartbeat = |seq: u64, next_seq: u64, samples: u32| {
        codec::encode(&Envelope {
            samples,
            ..codec::control_envelope(
                "car-01",
                BatchId { run: 1, seq },
                Kind::Heartbeat,
                5,
                &HeartbeatBody {
                    next_seq,
                    backlog_batches: 0,
                },
            )
        })
    };
    let plain = plain_frame_msg(0x123, 0, 3, 0, &[1, 2, 3]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("overlong seq varint", {
            let mut m = plain[..9].to_vec();
            m.extend([0x82, 0x00]);
            m.extend(&plain[10..]);
            m
        }),
        ("overlong value count", {
            let mut l = values(&[9], &[0]);
            l.splice(5..6, [0x81, 0x00]);
            columnar_msg(1, &l)
        }),
        (
            "repeated channel",
            columnar_msg(2, &values(&[9, 9], &[0, 1])),
        ),
        (
            "channels out of order",
            columnar_msg(2, &values(&[9, 5], &[1, 0])),
        ),
        ("repeated key", {
            let mut l = vec![0, 4];
            l.extend(b"can0");
            // NV 0, NF 2, K 2: twice (id 1, flags 0, len 1, len8_dlc 0, predictor 0).
            l.extend([0, 2, 2, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]);
            l.extend([0, 1, 0, 0, 7, 8]); // key indices, deltas, the two columns
            columnar_msg(2, &l)
        }),
        (
            "plain trailing zeros kept",
            plain_frame_msg(1, 0, 3, 0, &[1, 0, 0]),
        ),
        ("time before t_first_us", {
            let mut l = values(&[9], &[0]);
            let n = l.len();
            l[n - 9] = 3; // zigzag -2
            columnar_msg(1, &l)
        }),
        ("heartbeat next_seq ≠ seq", heartbeat(4, 9, 0)),
        (
            "plain: remote frame with len8_dlc",
            plain_frame_msg(1, 0x02, 8, 9, &[]),
        ),
        ("remote frame with len8_dlc", {
            columnar_msg(2, &frames_layout((1, 0x02, 8, 9, 0), &[]))
        }),
        ("heartbeat with samples", heartbeat(4, 4, 3)),
    ];
    let overflow = {
        let mut b = vec![4];
        b.extend(b"can0");
        b.extend([1, 0]);
        varint(&mut b, u64::MAX);
        b.extend(1f64.to_bits().to_le_bytes());
        b.push(0);
        data_msg(1, 1, CODEC_PLAIN, b)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut msgs: Vec<Vec<u8>> = cases.iter().map(|(_, m)| m.clone()).collect();
    msgs.push(overflow.clone());
    let files = write_all(dir.path(), &msgs);
    let run = run_script(&files);
    for ((what, msg), got) in cases.iter().zip(&run.lines) {
        let want = rust_json(msg).unwrap_or_else(|e| panic!("{what}: pitlink says {e}"));
        assert_eq!(got, &want, "{what}");
    }
    let t = |v: &Value| v["content"]["readings"][0]["t_us"].clone();
    let pitlink = rust_json(&overflow).expect("pitlink decodes it");
    assert_eq!(
        t(&run.lines[cases.len()]),
        json!(999u64),
        "1000 + (2^64 - 1) wraps"
    );
    assert_eq!(t(&pitlink), json!(999u64), "pitlink wraps too");
}

#[test]
fn unreadable_files_and_no_arguments_are_reported() {
    require_python();
    let dir = tempfile::tempdir().expect("temp dir");
    let run = run_script(&[dir.path().join("absent.bin"), dir.path().to_path_buf()]);
    for line in &run.lines {
        assert!(line["error"].is_string(), "{line}");
    }
    assert_eq!(run.status.code(), Some(1));
    let out = Command::new(PYTHON).arg(SCRIPT).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

// ----- (4) mutated messages: the same verdict from both decoders -----------------------------

/// Changes 1 to 3 random bytes of `m`: a new value, a cut, or an inserted byte.
fn mutate(rng: &mut Rng, m: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        if m.is_empty() {
            m.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(m.len() as u64) as usize;
        match rng.below(10) {
            0..=3 => m[at] ^= 1 << rng.below(8),
            4..=6 => m[at] = rng.pick_or(&[0, 1, 2, 0x7F, 0x80, 0xFF], |r| r.next() as u8),
            7 => m.truncate(at),
            8 => m.insert(at, rng.next() as u8),
            _ => {
                m.remove(at);
            }
        }
    }
}

#[test]
fn mutated_messages_get_the_same_verdict_from_both_decoders() {
    let mut rng = Rng(seed() ^ 0x0BAD_B17E);
    let mut enc = Encoder::new(1).expect("zstd encoder");
    let mut cov = Coverage::default();
    let mut msgs = Vec::new();
    for i in 0..200u64 {
        let id = BatchId { run: 3, seq: i };
        if rng.chance(15) {
            let mut m = random_control(&mut rng, "car-01", id);
            mutate(&mut rng, &mut m);
            msgs.push(m);
            continue;
        }
        let mut readings = random_readings(&mut rng, &mut cov);
        readings.truncate(1 + rng.below(40) as usize);
        let source = random_source(&mut rng);
        for _ in 0..5 {
            if rng.chance(25) {
                let env = codec::data_envelope_plain("car-01", id, &source, &readings);
                let mut m = codec::encode_version(&env, rng.pick(&[1, 2]));
                mutate(&mut rng, &mut m);
                msgs.push(m);
            } else {
                // The layout itself is mutated, then stored raw so that zstd passes it on.
                let (t_first, _) = codec::time_range(&readings);
                enc.encode(&source, t_first, &readings);
                let mut layout = enc.last_raw().to_vec();
                mutate(&mut rng, &mut layout);
                let samples = readings.len() as u32;
                let samples = rng.pick(&[samples, samples, samples, samples.saturating_sub(1)]);
                let mut m = data_msg(
                    2,
                    samples,
                    CODEC_COLUMNAR,
                    zstd_raw(&layout, Some(layout.len() as u32)),
                );
                // data_msg's fixed t_first_us (1000, 2 varint bytes) → the batch's own.
                let mut t = Vec::new();
                varint(&mut t, t_first);
                m.splice(11..13, t);
                msgs.push(m);
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let files = write_all(dir.path(), &msgs);
    let run = run_script(&files);
    let (mut accepted, mut refused) = (0, 0);
    let mut disagreements = Vec::new();
    for ((file, msg), got) in files.iter().zip(&msgs).zip(&run.lines) {
        let script = match got.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(got.clone()),
        };
        let pitlink = rust_json(msg);
        match (&script, &pitlink) {
            (Ok(a), Ok(b)) if a == b => accepted += 1,
            (Err(_), Err(_)) => refused += 1,
            _ => disagreements.push(format!(
                "{}:\n  script:  {}\n  pitlink: {}",
                file.display(),
                script.map_or_else(|e| format!("error {e}"), |v| v.to_string()),
                pitlink.map_or_else(|e| format!("error {e}"), |v| v.to_string()),
            )),
        }
    }
    if !disagreements.is_empty() {
        let kept = dir.keep();
        panic!(
            "{} of {} mutated messages decode differently (seed {}; files kept in {}):\n{}",
            disagreements.len(),
            msgs.len(),
            seed(),
            kept.display(),
            disagreements[..disagreements.len().min(15)].join("\n")
        );
    }
    eprintln!(
        "{} mutated messages: {accepted} decoded alike, {refused} refused by both",
        msgs.len()
    );
    // Both outcomes happen often enough for the comparison to mean something.
    assert!(
        accepted > 50 && refused > 300,
        "accepted {accepted}, refused {refused}"
    );
}

//! `pitlink bench codec`: bytes per CAN frame on the wire and codec speed, on a real capture.
//!
//! The capture is cut into batches the way the batcher cuts a live stream (a window from each
//! batch's first frame, one stream per interface), every batch is encoded into a whole wire
//! message, and the bytes are divided by the frames. The references are computed in the same
//! run: the candump text compressed whole with zstd -3 and with xz -9, and the plain (version 1)
//! body codec on the same batches. Speeds are in raw frame bytes (16 per classic frame, 72 per
//! FD frame: Linux's `struct can_frame` / `struct canfd_frame`) per second on one thread,
//! beside zstd -3 on the plain bodies of the same batches as the baseline.

use crate::codec::{self, BatchId, Encoder};
use anyhow::{Context, Result};
use sensor_drivers::TimedFrame;
use sensor_drivers::candump::{LogLine, parse_line};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CodecOptions {
    pub input: PathBuf,
    /// Minimum time spent on each speed measurement.
    pub min_time: Duration,
    /// zstd level of the columnar codec.
    pub level: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CodecBench {
    pub input: String,
    pub frames: u64,
    pub bytes_per_frame_100ms: f64,
    pub bytes_per_frame_1s: f64,
    pub zstd3_text_bytes_per_frame: f64,
    pub xz9_text_bytes_per_frame: f64,
    pub text_bytes_per_frame: f64,
    /// The plain body codec (format version 1) on the same 100 ms batches.
    pub plain_bytes_per_frame_100ms: f64,
    pub batches_100ms: u64,
    pub batches_1s: u64,
    /// Columnar encoding + zstd of 100 ms batches, raw frame MiB/s on one thread.
    pub encode_mib_s: f64,
    pub decode_mib_s: f64,
    /// The same on 1 s batches (zstd's fixed cost per batch weighs less).
    pub encode_mib_s_1s: f64,
    pub decode_mib_s_1s: f64,
    /// Baseline of the same run: zstd -3 alone over the plain bodies of the same batches.
    pub zstd3_plain_mib_s: f64,
    pub zstd_level: i32,
    /// Every batch (100 ms and 1 s) decoded and compared equal to what was encoded.
    pub lossless: bool,
}

/// Frames of each interface of a candump log, in log order.
fn load(text: &str) -> BTreeMap<String, Vec<TimedFrame>> {
    let mut by_iface: BTreeMap<String, Vec<TimedFrame>> = BTreeMap::new();
    for line in text.lines() {
        if let Ok(LogLine::Frame(f)) = parse_line(line) {
            let t = TimedFrame {
                t_us: f.timestamp.as_micros(),
                frame: f.frame,
            };
            match by_iface.get_mut(f.iface) {
                Some(v) => v.push(t),
                None => {
                    by_iface.insert(f.iface.to_string(), vec![t]);
                }
            }
        }
    }
    by_iface
}

/// Cuts a stream into batches like the batcher: each batch holds the frames less than
/// `window_us` after its first one (at most `max` frames).
fn cut(frames: &[TimedFrame], window_us: u64, max: usize) -> Vec<&[TimedFrame]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        let t0 = frames[start].t_us;
        let mut end = start + 1;
        while end < frames.len()
            && end - start < max
            && frames[end].t_us.saturating_sub(t0) < window_us
        {
            end += 1;
        }
        out.push(&frames[start..end]);
        start = end;
    }
    out
}

fn raw_bytes(batches: &[(&str, &[TimedFrame])]) -> u64 {
    batches
        .iter()
        .flat_map(|(_, b)| b.iter())
        .map(|f| if f.frame.is_fd() { 72 } else { 16 })
        .sum()
}

/// Runs `f` over all batches repeatedly for at least `min`; returns passes per second.
fn rate(min: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut passes = 0u64;
    while passes == 0 || start.elapsed() < min {
        f();
        passes += 1;
    }
    passes as f64 / start.elapsed().as_secs_f64()
}

pub fn codec(opts: &CodecOptions) -> Result<CodecBench> {
    let text = std::fs::read_to_string(&opts.input)
        .with_context(|| format!("cannot read {}", opts.input.display()))?;
    let streams = load(&text);
    let frames: u64 = streams.values().map(|v| v.len() as u64).sum();
    anyhow::ensure!(frames > 0, "{} holds no CAN frames", opts.input.display());
    let max = crate::config::BatchConfig::default().max_samples;
    let batches = |window_us: u64| -> Vec<(&str, &[TimedFrame])> {
        streams
            .iter()
            .flat_map(|(iface, v)| {
                cut(v, window_us, max)
                    .into_iter()
                    .map(move |b| (iface.as_str(), b))
            })
            .collect()
    };
    let b100 = batches(100_000);
    let b1s = batches(1_000_000);

    let mut enc = Encoder::new(opts.level)?;
    let message = |enc: &mut Encoder, i: usize, src: &str, b: &[TimedFrame]| {
        let (t0, t1) = codec::time_range(b);
        let env = codec::Envelope {
            vehicle: "car-01".into(),
            id: BatchId {
                run: 1,
                seq: i as u64,
            },
            kind: codec::Kind::Data,
            t_first_us: t0,
            t_last_us: t1,
            samples: b.len() as u32,
            codec: codec::CODEC_COLUMNAR,
            body: enc.encode(src, t0, b),
        };
        codec::encode(&env)
    };
    let mut lossless = true;
    let mut size = |enc: &mut Encoder, set: &[(&str, &[TimedFrame])]| -> u64 {
        let mut total = 0u64;
        for (i, &(src, b)) in set.iter().enumerate() {
            let msg = message(enc, i, src, b);
            total += msg.len() as u64;
            let back = codec::decode(&msg).and_then(|e| codec::data_readings(&e));
            let same = match back {
                Ok((s, r)) => {
                    s == src
                        && r.len() == b.len()
                        && r.iter().zip(b.iter()).all(|(x, &y)| *x == y.into())
                }
                Err(_) => false,
            };
            lossless &= same;
        }
        total
    };
    let bytes_100 = size(&mut enc, &b100);
    let bytes_1s = size(&mut enc, &b1s);
    let plain_100: u64 = b100
        .iter()
        .enumerate()
        .map(|(i, &(src, b))| {
            let id = BatchId {
                run: 1,
                seq: i as u64,
            };
            codec::encode(&codec::data_envelope_plain("car-01", id, src, b)).len() as u64
        })
        .sum();

    let zstd3 = zstd::bulk::compress(text.as_bytes(), 3)
        .context("zstd")?
        .len();
    let xz9 = {
        use std::io::Write;
        let mut w = liblzma::write::XzEncoder::new(Vec::new(), 9);
        w.write_all(text.as_bytes()).context("xz")?;
        w.finish().context("xz")?.len()
    };

    // Speeds on the 100 ms batches (the live case) and on the 1 s batches.
    let mut sink = 0usize;
    let mut speeds = |set: &[(&str, &[TimedFrame])]| -> (f64, f64) {
        let raw = raw_bytes(set) as f64 / (1 << 20) as f64;
        let enc_rate = rate(opts.min_time, || {
            for &(src, b) in set {
                let (t0, _) = codec::time_range(b);
                sink += std::hint::black_box(enc.encode(src, t0, b)).len();
            }
        });
        let bodies: Vec<(Vec<u8>, u64, u32)> = set
            .iter()
            .map(|&(src, b)| {
                let (t0, _) = codec::time_range(b);
                (enc.encode(src, t0, b), t0, b.len() as u32)
            })
            .collect();
        let dec_rate = rate(opts.min_time, || {
            for (body, t0, n) in &bodies {
                if let Ok((_, r)) = codec::columnar::decode(body, *t0, *n) {
                    sink += std::hint::black_box(r).len();
                }
            }
        });
        (enc_rate * raw, dec_rate * raw)
    };
    let (encode_100, decode_100) = speeds(&b100);
    let (encode_1s, decode_1s) = speeds(&b1s);
    let raw = raw_bytes(&b100) as f64 / (1 << 20) as f64;
    let plain_bodies: Vec<Vec<u8>> = b100
        .iter()
        .map(|&(src, b)| {
            codec::data_envelope_plain("car-01", BatchId { run: 1, seq: 0 }, src, b).body
        })
        .collect();
    let mut zc = zstd::bulk::Compressor::new(3).context("zstd")?;
    let base_rate = rate(opts.min_time, || {
        for b in &plain_bodies {
            if let Ok(c) = zc.compress(b) {
                sink += std::hint::black_box(c).len();
            }
        }
    });
    std::hint::black_box(sink);

    let per = |b: u64| b as f64 / frames as f64;
    Ok(CodecBench {
        input: opts.input.display().to_string(),
        frames,
        bytes_per_frame_100ms: per(bytes_100),
        bytes_per_frame_1s: per(bytes_1s),
        zstd3_text_bytes_per_frame: per(zstd3 as u64),
        xz9_text_bytes_per_frame: per(xz9 as u64),
        text_bytes_per_frame: per(text.len() as u64),
        plain_bytes_per_frame_100ms: per(plain_100),
        batches_100ms: b100.len() as u64,
        batches_1s: b1s.len() as u64,
        encode_mib_s: encode_100,
        decode_mib_s: decode_100,
        encode_mib_s_1s: encode_1s,
        decode_mib_s_1s: decode_1s,
        zstd3_plain_mib_s: base_rate * raw,
        zstd_level: opts.level,
        lossless,
    })
}

pub fn render(r: &CodecBench) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}: {} frames", r.input, r.frames);
    let _ = writeln!(
        o,
        "bytes/frame: 100 ms batches {:.2} ({} batches), 1 s batches {:.2} ({} batches)",
        r.bytes_per_frame_100ms, r.batches_100ms, r.bytes_per_frame_1s, r.batches_1s
    );
    let _ = writeln!(
        o,
        "references: text {:.1}, zstd -3 text {:.2}, xz -9 text {:.2}, plain codec at 100 ms {:.2}",
        r.text_bytes_per_frame,
        r.zstd3_text_bytes_per_frame,
        r.xz9_text_bytes_per_frame,
        r.plain_bytes_per_frame_100ms
    );
    let _ = writeln!(
        o,
        "speed (raw frame MiB/s, one thread): encode {:.0}, decode {:.0} (1 s batches: {:.0}, {:.0}); baseline zstd -3 of plain bodies {:.0}",
        r.encode_mib_s, r.decode_mib_s, r.encode_mib_s_1s, r.decode_mib_s_1s, r.zstd3_plain_mib_s
    );
    let _ = writeln!(o, "lossless: {}", r.lossless);
    o
}

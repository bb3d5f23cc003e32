//! Body codec 1: the readings of one batch laid out in columns, then zstd (sans-IO).
//!
//! Cellular bytes are the scarce resource, and CAN traffic is very regular: the same few dozen
//! identifiers repeat with the same length and flags, most payload bytes equal the previous
//! frame's of the same identifier, counters step by one and many ECUs end a frame with an
//! additive checksum. Laid out by identifier and byte position, each of these becomes a run of
//! equal bytes that zstd stores in almost nothing. The layout (exact, for other decoders, in
//! docs/wire-format.md):
//!
//! ```text
//! u8 layout (0) · str source · varint n_values · varint n_frames
//! values: varint C, C × varint channel                      (table, first-appearance order)
//!         n_values × varint channel index
//!         n_values × zigzag varint time delta                (first from t_first_us, then chained)
//!         per channel, its k values: 8 byte planes of XOR(bits, previous bits), LSB plane first
//! frames: varint K, K × varint id, K × u8 flags, K × u8 len, K × u8 len8_dlc, K × u8 predictor,
//!         one u8 c per key whose predictor is 1                (table, first-appearance order)
//!         n_frames × varint key index
//!         n_frames × zigzag varint time delta                (first from t_first_us, then chained)
//!         per key, its m frames: P byte columns, column j = byte j of the first frame, then
//!         (byte j − previous frame's byte j) mod 256 for the others
//! ```
//!
//! The whole is compressed as one zstd frame that states its content size. Every batch decodes
//! on its own: no state is shared between batches.

use super::varint::{ReadError, Reader, put_u64, unzigzag, zigzag};
use sensor_drivers::can::{FrameError, MAX_FD_LEN};
use sensor_drivers::{CanFrame, Reading, Sample, TimedFrame};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Per-key payload predictor: none.
pub const PREDICT_NONE: u8 = 0;
/// Per-key payload predictor: the last byte is `(c + sum of the other payload bytes) mod 256`
/// for every frame of the key in the batch (the additive checksum many ECUs append); the byte
/// is not stored.
pub const PREDICT_SUM: u8 = 1;

/// zstd level of the encoder. On the RAV4 capture levels 1 and 3 give the same size within
/// 0.5 % and level 1 encodes faster (`pitlink bench codec --level N`; docs/bench.md).
pub const DEFAULT_LEVEL: i32 = 1;

/// Longest source name a body may carry.
pub const MAX_SOURCE: usize = 1024;
/// At most this many decompressed bytes per reading (plus [`BODY_SLACK`]); a zstd frame that
/// claims more is refused before anything is allocated.
const MAX_BYTES_PER_READING: u64 = 5 + 10 + MAX_FD_LEN as u64 + 9;
const BODY_SLACK: u64 = 4096;
/// First bytes of a zstd frame (RFC 8878, 0xFD2FB528 little endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Hard cap on a decompressed body, whatever its header says.
pub const MAX_BODY: u64 = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ColumnarError {
    #[error("zstd: {0}")]
    Zstd(String),
    #[error(
        "zstd frame does not state its content size, or states {0} bytes, more than the batch can hold"
    )]
    Size(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("unknown layout {0}")]
    Layout(u8),
    #[error("sample count mismatch: header says {header}, body has {body}")]
    Count { header: u32, body: u64 },
    #[error("key {key}: {err}")]
    Frame { key: usize, err: FrameError },
    #[error("{0} bytes left over after the body")]
    Trailing(usize),
}

/// A multiplicative hasher for the small integer keys of the per-batch tables: SipHash costs
/// more than the rest of the per-frame work (measured with `pitlink bench codec`).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type KeyMap = HashMap<u64, u32, BuildHasherDefault<KeyHasher>>;

fn frame_key(f: &CanFrame) -> u64 {
    u64::from(f.id)
        | (u64::from(f.flags) << 32)
        | (u64::from(f.len) << 40)
        | (u64::from(f.len8_dlc) << 48)
}

/// Bytes of payload a frame of this key carries.
fn payload_len(flags: u8, len: u8) -> usize {
    if flags & sensor_drivers::can::flags::RTR != 0 {
        0
    } else {
        usize::from(len).min(MAX_FD_LEN)
    }
}

/// Encoder with reusable scratch space and zstd context (one per thread that encodes).
pub struct Encoder {
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
    map: KeyMap,
    keys: Vec<CanFrame>,
    key_of: Vec<u32>,
    count: Vec<u32>,
    order: Vec<u32>,
    chans: Vec<u16>,
    fchan: Vec<u32>,
    vals: Vec<(u16, u64, f64)>,
    frames: Vec<(u64, CanFrame)>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("level", &self.level)
            .finish()
    }
}

impl Encoder {
    pub fn new(level: i32) -> Result<Self, ColumnarError> {
        let mut zstd =
            zstd::bulk::Compressor::new(level).map_err(|e| ColumnarError::Zstd(e.to_string()))?;
        // The decoder needs the content size to bound its allocation; no checksum: the queue
        // already checks every record with CRC32C and MQTT runs over TCP/TLS.
        let _ = zstd.include_contentsize(true);
        let _ = zstd.include_checksum(false);
        Ok(Encoder {
            level,
            zstd,
            raw: Vec::new(),
            map: KeyMap::default(),
            keys: Vec::new(),
            key_of: Vec::new(),
            count: Vec::new(),
            order: Vec::new(),
            chans: Vec::new(),
            fchan: Vec::new(),
            vals: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// The uncompressed layout of the last [`Encoder::encode`] (for measurements and tests).
    pub fn last_raw(&self) -> &[u8] {
        &self.raw
    }

    /// Encodes `items` (times relative to `t_first_us`, which must not exceed any of them)
    /// into a compressed body.
    pub fn encode<R: Copy + Into<Reading>>(
        &mut self,
        source: &str,
        t_first_us: u64,
        items: &[R],
    ) -> Vec<u8> {
        self.vals.clear();
        self.frames.clear();
        for &r in items {
            match r.into() {
                Reading::Value(s) => self.vals.push((s.channel, s.t_us, s.value)),
                Reading::Frame(f) => self.frames.push((f.t_us, f.frame)),
            }
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        raw.push(0);
        // Longer names are cut at a character boundary (config names are far shorter).
        let mut cut = source.len().min(MAX_SOURCE);
        while !source.is_char_boundary(cut) {
            cut -= 1;
        }
        let src = &source.as_bytes()[..cut];
        put_u64(&mut raw, src.len() as u64);
        raw.extend_from_slice(src);
        put_u64(&mut raw, self.vals.len() as u64);
        put_u64(&mut raw, self.frames.len() as u64);
        if !self.vals.is_empty() {
            self.encode_values(&mut raw, t_first_us);
        }
        if !self.frames.is_empty() {
            self.encode_frames(&mut raw, t_first_us);
        }
        let out = self
            .zstd
            .compress(&raw)
            // Compressing into a growable Vec only fails on allocation failure.
            .expect("zstd compression into a Vec");
        self.raw = raw;
        out
    }

    fn encode_values(&mut self, raw: &mut Vec<u8>, t0: u64) {
        self.map.clear();
        self.chans.clear();
        self.fchan.clear();
        for &(ch, _, _) in &self.vals {
            let next = self.chans.len() as u32;
            let k = *self.map.entry(u64::from(ch)).or_insert_with(|| {
                self.chans.push(ch);
                next
            });
            self.fchan.push(k);
        }
        put_u64(raw, self.chans.len() as u64);
        for &c in &self.chans {
            put_u64(raw, u64::from(c));
        }
        for &k in &self.fchan {
            put_u64(raw, u64::from(k));
        }
        let mut prev = t0;
        for &(_, t, _) in &self.vals {
            put_u64(raw, zigzag(t.wrapping_sub(prev) as i64));
            prev = t;
        }
        group(
            &self.fchan,
            self.chans.len(),
            &mut self.count,
            &mut self.order,
        );
        let mut start = 0usize;
        for c in 0..self.chans.len() {
            let n = self.count[c] as usize;
            let idx = &self.order[start..start + n];
            start += n;
            for plane in 0..8 {
                let mut prev = 0u64;
                for &i in idx {
                    let bits = self.vals[i as usize].2.to_bits();
                    raw.push(((bits ^ prev) >> (plane * 8)) as u8);
                    prev = bits;
                }
            }
        }
    }

    fn encode_frames(&mut self, raw: &mut Vec<u8>, t0: u64) {
        self.map.clear();
        self.keys.clear();
        self.key_of.clear();
        for &(_, f) in &self.frames {
            let next = self.keys.len() as u32;
            let k = *self.map.entry(frame_key(&f)).or_insert_with(|| {
                self.keys.push(f);
                next
            });
            self.key_of.push(k);
        }
        group(
            &self.key_of,
            self.keys.len(),
            &mut self.count,
            &mut self.order,
        );

        // Key table, one column per field: flags, lengths and predictors are nearly constant
        // across keys, and a column of equal bytes costs zstd almost nothing.
        let mut start = 0usize;
        let mut preds = Vec::with_capacity(self.keys.len());
        for (k, key) in self.keys.iter().enumerate() {
            let n = self.count[k] as usize;
            preds.push(sum_predictor(
                key,
                &self.order[start..start + n],
                &self.frames,
            ));
            start += n;
        }
        put_u64(raw, self.keys.len() as u64);
        for key in &self.keys {
            put_u64(raw, u64::from(key.id));
        }
        raw.extend(self.keys.iter().map(|k| k.flags));
        raw.extend(self.keys.iter().map(|k| k.len));
        raw.extend(self.keys.iter().map(|k| k.len8_dlc));
        raw.extend(preds.iter().map(|p| {
            if p.is_some() {
                PREDICT_SUM
            } else {
                PREDICT_NONE
            }
        }));
        raw.extend(preds.iter().flatten());
        for &k in &self.key_of {
            put_u64(raw, u64::from(k));
        }
        let mut prev = t0;
        for &(t, _) in &self.frames {
            put_u64(raw, zigzag(t.wrapping_sub(prev) as i64));
            prev = t;
        }
        // Payload columns.
        let mut start = 0usize;
        for (k, key) in self.keys.iter().enumerate() {
            let n = self.count[k] as usize;
            let idx = &self.order[start..start + n];
            start += n;
            let stored = payload_len(key.flags, key.len) - usize::from(preds[k].is_some());
            // Frame by frame (each payload read once, in order), into the column-major slots.
            let base = raw.len();
            raw.resize(base + stored * n, 0);
            let out = &mut raw[base..];
            let mut prev = [0u8; MAX_FD_LEN];
            for (row, &i) in idx.iter().enumerate() {
                let d = &self.frames[i as usize].1.data;
                for j in 0..stored {
                    out[j * n + row] = d[j].wrapping_sub(prev[j]);
                }
                prev[..stored].copy_from_slice(&d[..stored]);
            }
        }
    }
}

/// Stable counting sort of reading indices by their table index: `order` lists the readings of
/// entry 0, then of entry 1..., `count` how many each entry has.
fn group(of: &[u32], entries: usize, count: &mut Vec<u32>, order: &mut Vec<u32>) {
    count.clear();
    count.resize(entries, 0);
    for &k in of {
        count[k as usize] += 1;
    }
    let mut at = Vec::with_capacity(entries);
    let mut sum = 0u32;
    for &c in count.iter() {
        at.push(sum);
        sum += c;
    }
    order.clear();
    order.resize(of.len(), 0);
    for (i, &k) in of.iter().enumerate() {
        order[at[k as usize] as usize] = i as u32;
        at[k as usize] += 1;
    }
}

/// `Some(c)` if every frame of the key ends with `(c + sum of its other bytes) mod 256` and the
/// key has at least two frames (with one, storing `c` costs what it saves).
fn sum_predictor(key: &CanFrame, idx: &[u32], frames: &[(u64, CanFrame)]) -> Option<u8> {
    let plen = payload_len(key.flags, key.len);
    if plen < 2 || idx.len() < 2 {
        return None;
    }
    let c_of = |f: &CanFrame| {
        let s = f.data[..plen - 1]
            .iter()
            .fold(0u8, |a, &b| a.wrapping_add(b));
        f.data[plen - 1].wrapping_sub(s)
    };
    let c = c_of(&frames[idx[0] as usize].1);
    idx[1..]
        .iter()
        .all(|&i| c_of(&frames[i as usize].1) == c)
        .then_some(c)
}

/// Decodes a body made by [`Encoder::encode`]: the source name and its readings (values first,
/// then frames, each in batch order). `samples` is the envelope's count, which bounds every
/// allocation.
pub fn decode(
    body: &[u8],
    t_first_us: u64,
    samples: u32,
) -> Result<(String, Vec<Reading>), ColumnarError> {
    let limit = (u64::from(samples) * MAX_BYTES_PER_READING + BODY_SLACK).min(MAX_BODY);
    // Exactly one zstd frame (not a skippable one), filling the body.
    if body.get(..4) != Some(&ZSTD_MAGIC) {
        return Err(ColumnarError::Zstd("the body is not a zstd frame".into()));
    }
    match zstd::zstd_safe::find_frame_compressed_size(body) {
        Ok(n) if n == body.len() => {}
        Ok(n) => {
            return Err(ColumnarError::Zstd(format!(
                "{} bytes follow the zstd frame",
                body.len() - n
            )));
        }
        Err(_) => {
            return Err(ColumnarError::Zstd(
                "truncated or corrupt zstd frame".into(),
            ));
        }
    }
    let size = zstd::zstd_safe::get_frame_content_size(body)
        .map_err(|_| ColumnarError::Zstd("not a zstd frame".into()))?
        .ok_or_else(|| ColumnarError::Size("no".into()))?;
    if size > limit {
        return Err(ColumnarError::Size(size.to_string()));
    }
    DECODER.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(
                zstd::bulk::Decompressor::new().map_err(|e| ColumnarError::Zstd(e.to_string()))?,
            );
        }
        let Some(dec) = d.as_mut() else {
            return Err(ColumnarError::Zstd("no decompression context".into()));
        };
        let raw = dec
            .decompress(body, size as usize)
            .map_err(|e| ColumnarError::Zstd(e.to_string()))?;
        decode_raw(&raw, t_first_us, samples)
    })
}

thread_local! {
    /// A zstd context per decoding thread: creating one costs more than decoding a batch.
    static DECODER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes the uncompressed layout.
pub fn decode_raw(
    raw: &[u8],
    t_first_us: u64,
    samples: u32,
) -> Result<(String, Vec<Reading>), ColumnarError> {
    let mut r = Reader::new(raw);
    let layout = r.u8("layout")?;
    if layout != 0 {
        return Err(ColumnarError::Layout(layout));
    }
    let source = r.str(MAX_SOURCE, "source")?.to_string();
    let n_values = r.u64("value count")?;
    let n_frames = r.u64("frame count")?;
    if n_values.checked_add(n_frames) != Some(u64::from(samples)) {
        return Err(ColumnarError::Count {
            header: samples,
            body: n_values.saturating_add(n_frames),
        });
    }
    let (n_values, n_frames) = (n_values as usize, n_frames as usize);
    let mut out = Vec::with_capacity(n_values + n_frames);
    if n_values > 0 {
        decode_values(&mut r, t_first_us, n_values, &mut out)?;
    }
    if n_frames > 0 {
        decode_frames(&mut r, t_first_us, n_frames, &mut out)?;
    }
    if r.remaining() != 0 {
        return Err(ColumnarError::Trailing(r.remaining()));
    }
    Ok((source, out))
}

fn read_times(
    r: &mut Reader<'_>,
    t0: u64,
    n: usize,
    what: &'static str,
) -> Result<Vec<u64>, ColumnarError> {
    let mut ts = Vec::with_capacity(n.min(r.remaining()));
    let mut t = t0;
    for _ in 0..n {
        t = t.wrapping_add(unzigzag(r.u64(what)?) as u64);
        ts.push(t);
    }
    Ok(ts)
}

fn read_indices(
    r: &mut Reader<'_>,
    n: usize,
    entries: usize,
    what: &'static str,
) -> Result<Vec<u32>, ColumnarError> {
    if entries == 0 {
        return Err(
            ReadError::Invalid(format!("{n} readings refer to an empty {what} table")).into(),
        );
    }
    let mut v = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        v.push(r.bounded(entries as u64 - 1, what)? as u32);
    }
    Ok(v)
}

fn decode_values(
    r: &mut Reader<'_>,
    t0: u64,
    n: usize,
    out: &mut Vec<Reading>,
) -> Result<(), ColumnarError> {
    let c = r.bounded(n as u64, "channel count")? as usize;
    let mut chans = Vec::with_capacity(c);
    for _ in 0..c {
        chans.push(r.bounded(u64::from(u16::MAX), "channel")? as u16);
    }
    let of = read_indices(r, n, c, "channel index")?;
    let ts = read_times(r, t0, n, "value time")?;
    let (mut count, mut order) = (Vec::new(), Vec::new());
    group(&of, c, &mut count, &mut order);
    let mut bits = vec![0u64; n];
    let mut start = 0usize;
    for &cnt in &count {
        let idx = &order[start..start + cnt as usize];
        start += cnt as usize;
        for plane in 0..8 {
            let col = r.bytes(idx.len(), "value bytes")?;
            for (&i, &b) in idx.iter().zip(col) {
                bits[i as usize] |= u64::from(b) << (plane * 8);
            }
        }
        let mut prev = 0u64;
        for &i in idx {
            bits[i as usize] ^= prev;
            prev = bits[i as usize];
        }
    }
    for i in 0..n {
        out.push(Reading::Value(Sample {
            t_us: ts[i],
            channel: chans[of[i] as usize],
            value: f64::from_bits(bits[i]),
        }));
    }
    Ok(())
}

fn decode_frames(
    r: &mut Reader<'_>,
    t0: u64,
    n: usize,
    out: &mut Vec<Reading>,
) -> Result<(), ColumnarError> {
    let k = r.bounded(n as u64, "key count")? as usize;
    let mut ids = Vec::with_capacity(k);
    for _ in 0..k {
        ids.push(r.bounded(u64::from(u32::MAX), "frame id")? as u32);
    }
    let flags = r.bytes(k, "key flags")?;
    let lens = r.bytes(k, "key lengths")?;
    let len8 = r.bytes(k, "key len8_dlc")?;
    let pred = r.bytes(k, "key predictors")?;
    let mut keys = Vec::with_capacity(k);
    let mut preds = Vec::with_capacity(k);
    for key in 0..k {
        let zeros = [0u8; MAX_FD_LEN];
        let payload = &zeros[..usize::from(lens[key]).min(MAX_FD_LEN)];
        let proto = CanFrame::from_parts(ids[key], flags[key], lens[key], len8[key], payload)
            .map_err(|err| ColumnarError::Frame { key, err })?;
        match pred[key] {
            PREDICT_NONE => preds.push(false),
            PREDICT_SUM if payload_len(proto.flags, proto.len) >= 2 => preds.push(true),
            p => {
                return Err(ReadError::Invalid(format!(
                    "key {key}: predictor {p} is unknown or needs a payload of 2 bytes or more"
                ))
                .into());
            }
        }
        keys.push(proto);
    }
    let with_sum = preds.iter().filter(|&&p| p).count();
    let mut offsets = r.bytes(with_sum, "checksum offsets")?.iter();
    let preds: Vec<Option<u8>> = preds
        .into_iter()
        .map(|p| if p { offsets.next().copied() } else { None })
        .collect();
    let of = read_indices(r, n, k, "key index")?;
    let ts = read_times(r, t0, n, "frame time")?;
    let (mut count, mut order) = (Vec::new(), Vec::new());
    group(&of, k, &mut count, &mut order);
    let mut frames: Vec<CanFrame> = of.iter().map(|&i| keys[i as usize]).collect();
    let mut start = 0usize;
    for (key, &cnt) in count.iter().enumerate() {
        let idx = &order[start..start + cnt as usize];
        start += cnt as usize;
        let plen = payload_len(keys[key].flags, keys[key].len);
        let stored = plen - usize::from(preds[key].is_some());
        for j in 0..stored {
            let col = r.bytes(idx.len(), "payload bytes")?;
            let mut prev = 0u8;
            for (&i, &d) in idx.iter().zip(col) {
                prev = prev.wrapping_add(d);
                frames[i as usize].data[j] = prev;
            }
        }
        if let Some(c) = preds[key] {
            for &i in idx {
                let f = &mut frames[i as usize];
                let s = f.data[..plen - 1].iter().fold(c, |a, &b| a.wrapping_add(b));
                f.data[plen - 1] = s;
            }
        }
    }
    out.extend(
        ts.into_iter()
            .zip(frames)
            .map(|(t_us, frame)| Reading::Frame(TimedFrame { t_us, frame })),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_overlong_source_name_is_cut_at_a_character_boundary() {
        let name = "é".repeat(600); // 1200 bytes, 2 per character
        let mut enc = Encoder::new(1).expect("zstd");
        let v = [Sample {
            t_us: 1,
            channel: 0,
            value: 1.0,
        }];
        let (src, _) = decode(&enc.encode(&name, 1, &v), 1, 1).expect("decodes");
        assert_eq!(src, "é".repeat(512));
    }

    #[test]
    fn indices_into_an_empty_table_are_refused() {
        // Found by the fuzzer: one frame, an empty key table, key index 0.
        let raw = [0, 0, 0, 1, 0, 0, 0];
        assert!(decode_raw(&raw, 0, 1).is_err());
        let raw = [0, 0, 1, 0, 0, 0, 0];
        assert!(decode_raw(&raw, 0, 1).is_err());
    }

    #[test]
    fn a_frame_claiming_more_than_the_batch_can_hold_is_refused_before_allocating() {
        let mut enc = Encoder::new(1).expect("zstd");
        let readings: Vec<Reading> = (0..100)
            .map(|i| {
                Reading::Value(Sample {
                    t_us: i,
                    channel: 0,
                    value: 0.0,
                })
            })
            .collect();
        let body = enc.encode("s", 0, &readings);
        assert!(decode(&body, 0, 100).is_ok());
        // 100 readings of raw body claimed by a header that says 1 reading: 4 KiB slack is
        // more than this body, so shrink the slack's share by claiming zero readings.
        let big = zstd::bulk::compress(&vec![0u8; 1 << 20], 1).expect("zstd");
        assert!(matches!(decode(&big, 0, 1), Err(ColumnarError::Size(_))));
        assert!(matches!(
            decode(b"not zstd", 0, 1),
            Err(ColumnarError::Zstd(_))
        ));
    }

    #[test]
    fn sum_checksums_are_not_stored_and_come_back() {
        let mk = |c: u8| {
            let mut d = [c, 2, 3, 0];
            d[3] = d[..3].iter().fold(0x11u8, |a, &b| a.wrapping_add(b));
            TimedFrame {
                t_us: u64::from(c),
                frame: CanFrame::classic(0x10, false, &d).expect("valid"),
            }
        };
        let frames: Vec<TimedFrame> = (0..50).map(mk).collect();
        let mut enc = Encoder::new(1).expect("zstd");
        let body = enc.encode("c", 0, &frames);
        let raw = enc.last_raw().to_vec();
        let (_, back) = decode(&body, 0, 50).expect("decodes");
        assert_eq!(
            back,
            frames.iter().map(|&f| f.into()).collect::<Vec<Reading>>()
        );
        let (_, raw_back) = decode_raw(&raw, 0, 50).expect("raw decodes");
        assert_eq!(raw_back, back);
        // Break the checksum of one frame: the fourth column (50 bytes) is stored again.
        let mut broken = frames.clone();
        broken[7].frame.data[3] ^= 1;
        enc.encode("c", 0, &broken);
        assert_eq!(
            enc.last_raw().len(),
            raw.len() + 50 - 1,
            "one offset byte less, 50 column bytes more"
        );
    }

    fn frame() -> impl Strategy<Value = CanFrame> {
        (
            any::<u32>(),
            0u8..5,
            proptest::collection::vec(any::<u8>(), 0..=64),
            9u8..16,
        )
            .prop_map(|(id, kind, data, dlc)| {
                use sensor_drivers::can::{FD_LENS, flags};
                match kind {
                    0 => CanFrame::classic(id & 0x7ff, false, &data[..data.len().min(8)]),
                    1 => {
                        let n = FD_LENS
                            .iter()
                            .rev()
                            .map(|&l| usize::from(l))
                            .find(|&l| l <= data.len())
                            .unwrap_or(0);
                        CanFrame::fd(id & 0x1fff_ffff, true, flags::BRS, &data[..n])
                    }
                    2 => CanFrame::remote(id & 0x7ff, false, (id % 9) as u8),
                    3 => CanFrame::error(id & 0x3ff, &data[..data.len().min(8)]),
                    _ => CanFrame::classic(
                        id & 0x1fff_ffff,
                        true,
                        &[data.first().copied().unwrap_or(0); 8],
                    )
                    .and_then(|f| f.with_len8_dlc(dlc)),
                }
                .expect("valid frame")
            })
    }

    proptest! {
        /// Any frames, repeated identifiers, times in any order: exact round trip.
        #[test]
        fn frames_round_trip(
            picks in proptest::collection::vec((0usize..8, any::<u64>(), any::<u8>()), 1..300),
            protos in proptest::collection::vec(frame(), 8),
            t0 in any::<u64>(),
        ) {
            let frames: Vec<TimedFrame> = picks.iter().map(|&(k, t, b)| {
                let mut f = protos[k];
                if !f.is_remote() && f.len > 0 {
                    f.data[usize::from(b) % usize::from(f.len)] = b;
                }
                TimedFrame { t_us: t, frame: f }
            }).collect();
            let mut enc = Encoder::new(1).expect("zstd");
            let body = enc.encode("bus", t0, &frames);
            let (src, back) = decode(&body, t0, frames.len() as u32).expect("decodes");
            prop_assert_eq!(src, "bus");
            prop_assert_eq!(back, frames.iter().map(|&f| f.into()).collect::<Vec<Reading>>());
        }

        /// Any bytes as a raw layout: an error or readings, never a panic.
        #[test]
        fn raw_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256), n in 0u32..20) {
            let _ = decode_raw(&raw, 0, n);
        }
    }
}

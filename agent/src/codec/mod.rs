//! The wire format: what a batch looks like on disk and on MQTT (see docs/wire-format.md).
//!
//! A message is one byte of format version followed by a postcard-encoded [`Envelope`]. The
//! envelope carries everything needed to deduplicate and account for a batch without decoding
//! its body: vehicle, identity, kind, time range, sample count, body codec. Every message decodes
//! on its own, whatever link or order it arrives in.

pub mod columnar;
pub mod varint;

pub use columnar::{ColumnarError, Encoder};

use crate::ranges::RangeSet;
use sensor_drivers::{CanFrame, Reading, Sample, TimedFrame};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// First byte of every message this build writes. Decoders reject versions they do not know.
pub const FORMAT_VERSION: u8 = 2;
/// Versions this build reads: 1 (no heartbeat kind, plain bodies only) and 2.
pub const READABLE_VERSIONS: [u8; 2] = [1, 2];

/// Body codec of a `Data` batch: postcard [`DataBody`] (readings with µs offsets from `t_first_us`).
/// Also the codec of every control body (gap, run, heartbeat).
pub const CODEC_PLAIN: u8 = 0;
/// Body codec of a `Data` batch: columns per channel and per CAN identifier, then zstd
/// (see [`columnar`]). What the agent writes since format version 2.
pub const CODEC_COLUMNAR: u8 = 1;

/// A batch's identity: never reused for different data, across restarts and crashes.
///
/// `run` is incremented durably every time the agent starts, before it creates any batch, so
/// sequence numbers lost in a crash (assigned but never fsynced) are never handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId {
    pub run: u32,
    pub seq: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.run, self.seq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Samples of one source.
    Data,
    /// Batches the agent gave up on (evicted by the disk cap), so the receiver can say why.
    Gap,
    /// First batch of every run: announces the run and where the previous run durably ended.
    Run,
    /// Liveness, sent outside the queue (its id is never used by a batch): says how far the
    /// run's sequence numbers go, so a receiver can tell the tail still in the car. Version 2.
    Heartbeat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub vehicle: String,
    pub id: BatchId,
    pub kind: Kind,
    /// Earliest and latest sample time in the batch (µs since the epoch); for other kinds the
    /// creation time twice.
    pub t_first_us: u64,
    pub t_last_us: u64,
    /// Readings (values and CAN frames) in the batch (0 for non-data kinds).
    pub samples: u32,
    pub codec: u8,
    pub body: Vec<u8>,
}

/// Body of a `Data` batch with codec [`CODEC_PLAIN`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataBody {
    pub source: String,
    /// (channel, µs after `t_first_us`, value).
    pub samples: Vec<(u16, u64, f64)>,
    /// (µs after `t_first_us`, frame).
    pub frames: Vec<(u64, CanFrame)>,
}

/// Body of a `Heartbeat`: `id.run` of the envelope is the running run, `id.seq` is
/// [`HeartbeatBody::next_seq`] (not a batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatBody {
    /// The next sequence number the run will assign: every lower one exists (queued, sent,
    /// evicted or lost), so a receiver missing them knows they are still due.
    pub next_seq: u64,
    /// Batches queued in the car, not yet acknowledged.
    pub backlog_batches: u64,
}

/// Why batches are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GapCause {
    /// Dropped by the queue's disk cap before they could be delivered.
    Evicted,
    /// Never written: the disk was full or failed. These batches never had a sequence number,
    /// so `seqs` is empty; `batches`, `samples` and the time range say what was lost.
    Dropped,
    /// Written, then found damaged (bad checksum) or missing (segment file gone) by the queue.
    Damaged,
}

/// Body of a `Gap` batch. The car's queue may send the same notice twice (word for word) under
/// two identities, when the first copy was evicted before it was acknowledged: receivers count
/// a body once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GapBody {
    pub cause: GapCause,
    pub run: u32,
    /// The sequence numbers given up on, as half-open ranges within `run`.
    pub seqs: Vec<(u64, u64)>,
    pub batches: u64,
    pub samples: u64,
    pub t_first_us: u64,
    pub t_last_us: u64,
}

/// Body of a `Run` batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunBody {
    /// The previous run, if the queue had one.
    pub previous_run: Option<u32>,
    /// The highest sequence number of the previous run found durable on disk at start-up
    /// (or known delivered). Later sequence numbers of that run that never arrived were lost in
    /// a crash before their fsync.
    pub previous_durable_last_seq: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown wire format version {0} (this build reads versions 1 and 2)")]
    Version(u8),
    #[error("malformed envelope: {0}")]
    Envelope(String),
    #[error("malformed {kind:?} body: {msg}")]
    Body { kind: Kind, msg: String },
    #[error("unknown body codec {0}")]
    Codec(u8),
    #[error("sample count mismatch: header says {header}, body has {body}")]
    Count { header: u32, body: usize },
    #[error("columnar body: {0}")]
    Columnar(#[from] ColumnarError),
    #[error("{0:?} batches do not exist in format version 1")]
    KindInVersion(Kind),
}

pub fn encode(env: &Envelope) -> Vec<u8> {
    encode_version(env, FORMAT_VERSION)
}

/// Encodes with an older version byte (golden files and compatibility tests). The envelope
/// layout is the same in versions 1 and 2.
pub fn encode_version(env: &Envelope, version: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(env.body.len() + 64);
    out.push(version);
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_io(env, &mut out).expect("postcard into Vec");
    out
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let (&v, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !READABLE_VERSIONS.contains(&v) {
        return Err(DecodeError::Version(v));
    }
    let (env, tail): (Envelope, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| DecodeError::Envelope(e.to_string()))?;
    if !tail.is_empty() {
        return Err(DecodeError::Envelope(format!(
            "{} trailing bytes after the envelope",
            tail.len()
        )));
    }
    if v == 1 && env.kind == Kind::Heartbeat {
        return Err(DecodeError::KindInVersion(env.kind));
    }
    Ok(env)
}

thread_local! {
    /// One encoder per thread that encodes: its zstd context and scratch buffers are reused.
    static ENCODER: RefCell<Option<Encoder>> = const { RefCell::new(None) };
}

/// The time range of a batch's readings (0, 0 when empty).
pub fn time_range<R: Copy + Into<Reading>>(items: &[R]) -> (u64, u64) {
    let (lo, hi) = items.iter().fold((u64::MAX, 0), |(lo, hi), &r| {
        let t = r.into().t_us();
        (lo.min(t), hi.max(t))
    });
    if lo == u64::MAX { (0, 0) } else { (lo, hi) }
}

/// Builds a `Data` envelope from one source's readings with the columnar codec.
pub fn data_envelope<R: Copy + Into<Reading>>(
    vehicle: &str,
    id: BatchId,
    source: &str,
    items: &[R],
) -> Envelope {
    let (t_first, t_last) = time_range(items);
    let body = ENCODER.with(|e| {
        let mut e = e.borrow_mut();
        let enc = e.get_or_insert_with(|| {
            Encoder::new(columnar::DEFAULT_LEVEL).expect("zstd accepts its default level")
        });
        enc.encode(source, t_first, items)
    });
    Envelope {
        vehicle: vehicle.to_string(),
        id,
        kind: Kind::Data,
        t_first_us: t_first,
        t_last_us: t_last,
        samples: items.len() as u32,
        codec: CODEC_COLUMNAR,
        body,
    }
}

/// Builds a `Data` envelope with the plain codec (format version 1's only codec).
pub fn data_envelope_plain<R: Copy + Into<Reading>>(
    vehicle: &str,
    id: BatchId,
    source: &str,
    items: &[R],
) -> Envelope {
    let (t_first, t_last) = time_range(items);
    let mut body = DataBody {
        source: source.to_string(),
        samples: Vec::new(),
        frames: Vec::new(),
    };
    for &r in items {
        match r.into() {
            Reading::Value(s) => body.samples.push((s.channel, s.t_us - t_first, s.value)),
            Reading::Frame(f) => body.frames.push((f.t_us - t_first, f.frame)),
        }
    }
    Envelope {
        vehicle: vehicle.to_string(),
        id,
        kind: Kind::Data,
        t_first_us: t_first,
        t_last_us: t_last,
        samples: items.len() as u32,
        codec: CODEC_PLAIN,
        body: postcard::to_stdvec(&body).expect("postcard into Vec"),
    }
}

/// Decodes a `Data` envelope's body into its source name and readings (values first, then
/// frames, each in the order they were batched).
pub fn data_readings(env: &Envelope) -> Result<(String, Vec<Reading>), DecodeError> {
    match env.codec {
        CODEC_PLAIN => {}
        CODEC_COLUMNAR => {
            return columnar::decode(&env.body, env.t_first_us, env.samples).map_err(|e| match e {
                ColumnarError::Count { header, body } => DecodeError::Count {
                    header,
                    body: body as usize,
                },
                e => e.into(),
            });
        }
        c => return Err(DecodeError::Codec(c)),
    }
    let body: DataBody = postcard::from_bytes(&env.body).map_err(|e| DecodeError::Body {
        kind: env.kind,
        msg: e.to_string(),
    })?;
    let n = body.samples.len() + body.frames.len();
    if n != env.samples as usize {
        return Err(DecodeError::Count {
            header: env.samples,
            body: n,
        });
    }
    let t0 = env.t_first_us;
    let mut out = Vec::with_capacity(n);
    out.extend(body.samples.into_iter().map(|(channel, dt, value)| {
        Reading::Value(Sample {
            t_us: t0.saturating_add(dt),
            channel,
            value,
        })
    }));
    out.extend(body.frames.into_iter().map(|(dt, frame)| {
        Reading::Frame(TimedFrame {
            t_us: t0.saturating_add(dt),
            frame,
        })
    }));
    Ok((body.source, out))
}

pub fn control_envelope<B: Serialize>(
    vehicle: &str,
    id: BatchId,
    kind: Kind,
    now_us: u64,
    body: &B,
) -> Envelope {
    Envelope {
        vehicle: vehicle.to_string(),
        id,
        kind,
        t_first_us: now_us,
        t_last_us: now_us,
        samples: 0,
        codec: CODEC_PLAIN,
        body: postcard::to_stdvec(body).expect("postcard into Vec"),
    }
}

pub fn gap_body(env: &Envelope) -> Result<GapBody, DecodeError> {
    postcard::from_bytes(&env.body).map_err(|e| DecodeError::Body {
        kind: env.kind,
        msg: e.to_string(),
    })
}

pub fn heartbeat_body(env: &Envelope) -> Result<HeartbeatBody, DecodeError> {
    postcard::from_bytes(&env.body).map_err(|e| DecodeError::Body {
        kind: env.kind,
        msg: e.to_string(),
    })
}

pub fn run_body(env: &Envelope) -> Result<RunBody, DecodeError> {
    postcard::from_bytes(&env.body).map_err(|e| DecodeError::Body {
        kind: env.kind,
        msg: e.to_string(),
    })
}

/// Builds a gap body from a set of sequence numbers given up on.
pub fn gap_from(
    cause: GapCause,
    run: u32,
    seqs: &RangeSet,
    samples: u64,
    t_first_us: u64,
    t_last_us: u64,
) -> GapBody {
    GapBody {
        cause,
        run,
        seqs: seqs.iter_ranges().collect(),
        batches: seqs.len(),
        samples,
        t_first_us,
        t_last_us,
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_us: 1_700_000_000_000_000 + (i as u64 / 3) * 1000,
                channel: (i % 3) as u16,
                value: i as f64 * 0.25 - 3.0,
            })
            .collect()
    }

    #[test]
    fn data_round_trips_exactly() {
        let s = samples(300);
        let env = data_envelope("car-1", BatchId { run: 2, seq: 9 }, "engine", &s);
        let bytes = encode(&env);
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back, env);
        let (src, got) = data_readings(&back).expect("body decodes");
        assert_eq!(src, "engine");
        assert_eq!(got, s.iter().map(|&x| Reading::from(x)).collect::<Vec<_>>());
        assert_eq!(back.t_first_us, s[0].t_us);
        assert_eq!(back.t_last_us, s[299].t_us);
    }

    #[test]
    fn rejects_unknown_version_and_trailing_bytes() {
        let env = data_envelope("v", BatchId { run: 1, seq: 0 }, "s", &samples(3));
        let mut bytes = encode(&env);
        bytes[0] = 9;
        assert_eq!(decode(&bytes), Err(DecodeError::Version(9)));
        bytes[0] = FORMAT_VERSION;
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(DecodeError::Envelope(_))));
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn header_count_must_match_body() {
        let mut env = data_envelope("v", BatchId { run: 1, seq: 0 }, "s", &samples(3));
        env.samples = 4;
        assert!(matches!(
            data_readings(&env),
            Err(DecodeError::Count { .. })
        ));
    }

    #[test]
    fn control_bodies_round_trip() {
        let mut seqs = RangeSet::new();
        seqs.insert_range(10, 20);
        let g = gap_from(GapCause::Evicted, 3, &seqs, 5000, 1, 2);
        let env = control_envelope("v", BatchId { run: 3, seq: 30 }, Kind::Gap, 7, &g);
        let back = decode(&encode(&env)).expect("decodes");
        assert_eq!(gap_body(&back), Ok(g));
        let r = RunBody {
            previous_run: Some(2),
            previous_durable_last_seq: Some(41),
        };
        let env = control_envelope("v", BatchId { run: 3, seq: 0 }, Kind::Run, 7, &r);
        assert_eq!(run_body(&decode(&encode(&env)).expect("decodes")), Ok(r));
    }

    proptest! {
        /// Any bytes: an error or an envelope, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(env) = decode(&bytes) {
                let _ = data_readings(&env);
                let _ = gap_body(&env);
                let _ = run_body(&env);
            }
        }

        /// Flipping any byte of a valid message never panics.
        #[test]
        fn corrupted_message_never_panics(pos in 0usize..400, val in any::<u8>()) {
            let env = data_envelope("car", BatchId { run: 1, seq: 2 }, "src", &samples(40));
            let mut bytes = encode(&env);
            let p = pos % bytes.len();
            bytes[p] = val;
            if let Ok(env) = decode(&bytes) {
                let _ = data_readings(&env);
            }
        }

        #[test]
        fn samples_round_trip(vals in proptest::collection::vec((any::<u16>(), 0u64..10_000_000, any::<f64>()), 1..200)) {
            let s: Vec<Sample> = vals.iter().map(|&(c, t, v)| Sample { t_us: 1_600_000_000_000_000 + t, channel: c, value: v }).collect();
            let env = data_envelope("v", BatchId { run: 1, seq: 1 }, "x", &s);
            let (_, got) = data_readings(&decode(&encode(&env)).expect("decodes")).expect("body");
            prop_assert_eq!(got.len(), s.len());
            for (a, b) in got.iter().zip(&s) {
                let Reading::Value(a) = a else { panic!("a frame came back for a value") };
                prop_assert_eq!(a.t_us, b.t_us);
                prop_assert_eq!(a.channel, b.channel);
                prop_assert_eq!(a.value.to_bits(), b.value.to_bits());
            }
        }

        /// CAN frames (classic, FD, remote, error) and values in one batch round-trip exactly.
        #[test]
        fn frames_round_trip(
            frames in proptest::collection::vec((0u64..10_000_000, any::<u32>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..=64)), 1..100),
            values in proptest::collection::vec((any::<u16>(), 0u64..10_000_000, any::<f64>()), 0..20),
        ) {
            let mut items: Vec<Reading> = values.iter().map(|&(c, t, v)| Reading::Value(Sample { t_us: 1_600_000_000_000_000 + t, channel: c, value: v })).collect();
            for (t, id, kind, data) in frames {
                let frame = match kind % 4 {
                    0 => CanFrame::classic(id & 0x7ff, false, &data[..data.len().min(8)]),
                    1 => CanFrame::fd(id & 0x1fff_ffff, true, kind, &data[..sensor_drivers::can::FD_LENS.iter().rev().map(|&l| usize::from(l)).find(|&l| l <= data.len()).unwrap_or(0)]),
                    2 => CanFrame::remote(id & 0x7ff, false, kind % 9),
                    _ => CanFrame::error(id & 0x3ff, &data[..data.len().min(8)]),
                }.expect("valid frame");
                items.push(Reading::Frame(TimedFrame { t_us: 1_600_000_000_000_000 + t, frame }));
            }
            let env = data_envelope("v", BatchId { run: 1, seq: 1 }, "can0", &items);
            let (_, got) = data_readings(&decode(&encode(&env)).expect("decodes")).expect("body");
            prop_assert_eq!(got.len(), items.len());
            for (a, b) in got.iter().zip(&items) {
                match (a, b) {
                    (Reading::Value(a), Reading::Value(b)) => {
                        prop_assert_eq!((a.t_us, a.channel, a.value.to_bits()), (b.t_us, b.channel, b.value.to_bits()));
                    }
                    (a, b) => prop_assert_eq!(a, b),
                }
            }
        }
    }
}

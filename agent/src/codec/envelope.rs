//! The envelope of every message and the decoding of its bodies (see docs/wire-format.md).
//!
//! Kept free of the rest of the agent (only serde, postcard, zstd and the columnar body), so the
//! fuzz build compiles it on its own.

use super::columnar::{self, ColumnarError};
use sensor_drivers::{CanFrame, Reading, Sample, TimedFrame};
use serde::{Deserialize, Serialize};

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
    #[error("codec {codec} is not allowed for a {kind:?} body in format version {version}")]
    CodecFor { codec: u8, kind: Kind, version: u8 },
}

impl DecodeError {
    /// A short class of the error, for counting bad payloads by cause.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Version(_) => "version",
            DecodeError::Envelope(_) => "envelope",
            DecodeError::Body { .. } => "body",
            DecodeError::Codec(_)
            | DecodeError::CodecFor { .. }
            | DecodeError::KindInVersion(_) => "codec",
            DecodeError::Count { .. } => "count",
            DecodeError::Columnar(_) => "columnar",
        }
    }
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
    // Control bodies are always plain; the columnar codec exists from version 2 on.
    let codec_ok = match env.kind {
        Kind::Data => env.codec == CODEC_PLAIN || (env.codec == CODEC_COLUMNAR && v >= 2),
        _ => env.codec == CODEC_PLAIN,
    };
    if !codec_ok {
        return Err(DecodeError::CodecFor {
            codec: env.codec,
            kind: env.kind,
            version: v,
        });
    }
    Ok(env)
}

/// A plain (postcard) body that must fill `env.body` exactly.
fn plain_body<'a, T: Deserialize<'a>>(env: &'a Envelope) -> Result<T, DecodeError> {
    let bad = |msg: String| DecodeError::Body {
        kind: env.kind,
        msg,
    };
    let (body, rest) = postcard::take_from_bytes(&env.body).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} trailing bytes after the body", rest.len())));
    }
    Ok(body)
}

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
    let body: DataBody = plain_body(env)?;
    let n = body.samples.len() + body.frames.len();
    if n != env.samples as usize {
        return Err(DecodeError::Count {
            header: env.samples,
            body: n,
        });
    }
    // postcard does not check a frame's fields: the same rules as the columnar keys apply.
    for (i, (_, f)) in body.frames.iter().enumerate() {
        let plen = if f.is_remote() {
            0
        } else {
            usize::from(f.len).min(f.data.len())
        };
        let rebuilt = CanFrame::from_parts(f.id, f.flags, f.len, f.len8_dlc, &f.data[..plen])
            .map_err(|e| DecodeError::Body {
                kind: env.kind,
                msg: format!("frame {i}: {e}"),
            })?;
        if rebuilt != *f {
            return Err(DecodeError::Body {
                kind: env.kind,
                msg: format!("frame {i}: payload bytes past its length"),
            });
        }
    }
    // Times are modulo 2^64, as in the columnar codec.
    let t0 = env.t_first_us;
    let mut out = Vec::with_capacity(n);
    out.extend(body.samples.into_iter().map(|(channel, dt, value)| {
        Reading::Value(Sample {
            t_us: t0.wrapping_add(dt),
            channel,
            value,
        })
    }));
    out.extend(body.frames.into_iter().map(|(dt, frame)| {
        Reading::Frame(TimedFrame {
            t_us: t0.wrapping_add(dt),
            frame,
        })
    }));
    Ok((body.source, out))
}

pub fn gap_body(env: &Envelope) -> Result<GapBody, DecodeError> {
    plain_body(env)
}

pub fn heartbeat_body(env: &Envelope) -> Result<HeartbeatBody, DecodeError> {
    plain_body(env)
}

pub fn run_body(env: &Envelope) -> Result<RunBody, DecodeError> {
    plain_body(env)
}

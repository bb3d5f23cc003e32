//! The wire format: what a batch looks like on disk and on MQTT (see docs/wire-format.md).
//!
//! A message is one byte of format version followed by a postcard-encoded [`Envelope`]. The
//! envelope carries everything needed to deduplicate and account for a batch without decoding
//! its body: vehicle, identity, kind, time range, sample count, body codec. Every message decodes
//! on its own, whatever link or order it arrives in.

pub mod columnar;
mod envelope;
pub mod varint;

pub use columnar::{ColumnarError, Encoder};
pub use envelope::*;

use crate::ranges::RangeSet;
use sensor_drivers::Reading;
use serde::Serialize;
use std::cell::RefCell;

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
    data(
        vehicle,
        id,
        (t_first, t_last),
        items.len(),
        CODEC_COLUMNAR,
        body,
    )
}

fn data(
    vehicle: &str,
    id: BatchId,
    (t_first_us, t_last_us): (u64, u64),
    samples: usize,
    codec: u8,
    body: Vec<u8>,
) -> Envelope {
    Envelope {
        vehicle: vehicle.to_string(),
        id,
        kind: Kind::Data,
        t_first_us,
        t_last_us,
        samples: samples as u32,
        codec,
        body,
    }
}

/// Builds a `Data` envelope for format `version`: columnar from version 2, plain in version 1.
pub fn data_envelope_for<R: Copy + Into<Reading>>(
    version: u8,
    vehicle: &str,
    id: BatchId,
    source: &str,
    items: &[R],
) -> Envelope {
    if version >= 2 {
        data_envelope(vehicle, id, source, items)
    } else {
        data_envelope_plain(vehicle, id, source, items)
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
    let body = postcard::to_stdvec(&body).expect("postcard into Vec");
    data(
        vehicle,
        id,
        (t_first, t_last),
        items.len(),
        CODEC_PLAIN,
        body,
    )
}

/// Decodes a `Data` envelope's body into its source name and readings (values first, then
/// frames, each in the order they were batched).
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
    use sensor_drivers::{CanFrame, Sample, TimedFrame};

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

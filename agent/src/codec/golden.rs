//! Golden messages of every wire format version (`agent/tests/golden/`): each `.bin` is a
//! message as a writer of that version produced it, each `.json` what it must decode to. A
//! change that stops an old message from decoding, or changes what it decodes to, fails here.
//!
//! `PITLINK_REGEN_GOLDEN=1 cargo test -p pitlink golden` writes the files of the current
//! version again (old versions' files are never rewritten: they are the record of what was sent).

use super::*;
use sensor_drivers::can::flags;
use sensor_drivers::{CanFrame, Sample, TimedFrame};
use serde_json::{Value, json};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Everything a message says, in a form that compares exactly (f64 as bits: JSON has no NaN).
fn view(bytes: &[u8]) -> Value {
    let env = decode(bytes).expect("golden message decodes");
    let content = match env.kind {
        Kind::Data => {
            let (source, readings) = data_readings(&env).expect("golden body decodes");
            let readings: Vec<Value> = readings
                .iter()
                .map(|r| match r {
                    Reading::Value(s) => json!({"t_us": s.t_us, "ch": s.channel,
                        "bits": format!("{:016x}", s.value.to_bits())}),
                    Reading::Frame(f) => json!({"t_us": f.t_us, "id": f.frame.id,
                        "flags": f.frame.flags, "len": f.frame.len, "len8_dlc": f.frame.len8_dlc,
                        "data": f.frame.payload().iter().map(|b| format!("{b:02x}")).collect::<String>()}),
                })
                .collect();
            json!({"source": source, "readings": readings})
        }
        Kind::Gap => {
            let g = gap_body(&env).expect("gap body");
            json!({"cause": format!("{:?}", g.cause), "run": g.run, "seqs": g.seqs,
                "batches": g.batches, "samples": g.samples,
                "t_first_us": g.t_first_us, "t_last_us": g.t_last_us})
        }
        Kind::Run => {
            let r = run_body(&env).expect("run body");
            json!({"previous_run": r.previous_run,
                "previous_durable_last_seq": r.previous_durable_last_seq})
        }
        Kind::Heartbeat => {
            let h = heartbeat_body(&env).expect("heartbeat body");
            json!({"next_seq": h.next_seq, "backlog_batches": h.backlog_batches})
        }
    };
    json!({"version": bytes[0], "vehicle": env.vehicle, "run": env.id.run, "seq": env.id.seq,
        "kind": format!("{:?}", env.kind), "t_first_us": env.t_first_us,
        "t_last_us": env.t_last_us, "samples": env.samples, "codec": env.codec,
        "content": content})
}

const T0: u64 = 1_763_800_000_000_000;

fn frames() -> Vec<TimedFrame> {
    let mut v = Vec::new();
    let mut t = T0 - 500_000;
    for i in 0u8..40 {
        t += [0, 5, 6, 230, 1000][usize::from(i % 5)];
        let f = match i % 8 {
            // A counter and an additive checksum in the last byte, as many ECUs send.
            0..=2 => {
                let mut d = [0x10, i / 3, 0x7f, 0, 0, 0, 0, 0];
                d[7] = d[..7]
                    .iter()
                    .fold(0x25u8, |a, &b| a.wrapping_add(b))
                    .wrapping_add(0);
                CanFrame::classic(0x260, false, &d)
            }
            3 => CanFrame::classic(0x1abc_def0, true, &[i, 0xff, 3]),
            4 => CanFrame::fd(0x123, false, flags::BRS, &[i; 12]),
            5 => CanFrame::remote(0x7df, false, 8),
            6 => CanFrame::error(0x04, &[0, 0x08, 0, 0, 0, 0, 0, 0]),
            _ => CanFrame::classic(0x0b4, false, &[0xaa; 8]).and_then(|f| f.with_len8_dlc(12)),
        };
        v.push(TimedFrame {
            t_us: t,
            frame: f.expect("valid frame"),
        });
    }
    v
}

fn values() -> Vec<Sample> {
    let special = [
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-310,
        12.5,
    ];
    (0..30)
        .map(|i| Sample {
            t_us: T0 + i as u64 * 1000,
            channel: [0u16, 7, 65535][i % 3],
            value: if i < special.len() {
                special[i]
            } else {
                i as f64 * 0.1
            },
        })
        .collect()
}

/// (file stem, message) of the current version.
fn current() -> Vec<(&'static str, Vec<u8>)> {
    let id = |seq| BatchId { run: 7, seq };
    let mut seqs = RangeSet::new();
    seqs.insert_range(3, 9);
    vec![
        (
            "v2-data-frames",
            encode(&data_envelope("car-01", id(4), "can0", &frames())),
        ),
        (
            "v2-data-values",
            encode(&data_envelope("car-01", id(5), "gps", &values())),
        ),
        (
            "v2-gap",
            encode(&control_envelope(
                "car-01",
                id(10),
                Kind::Gap,
                T0,
                &gap_from(GapCause::Evicted, 6, &seqs, 4200, T0 - 9_000_000, T0 - 1),
            )),
        ),
        (
            "v2-run",
            encode(&control_envelope(
                "car-01",
                id(0),
                Kind::Run,
                T0,
                &RunBody {
                    previous_run: Some(6),
                    previous_durable_last_seq: Some(41),
                },
            )),
        ),
        (
            "v2-heartbeat",
            encode(&control_envelope(
                "car-01",
                id(11),
                Kind::Heartbeat,
                T0,
                &HeartbeatBody {
                    next_seq: 11,
                    backlog_batches: 3,
                },
            )),
        ),
    ]
}

/// Version 1 as its writers produced it: plain bodies, the same envelope layout.
fn version1() -> Vec<(&'static str, Vec<u8>)> {
    let id = |seq| BatchId { run: 3, seq };
    let mut seqs = RangeSet::new();
    seqs.insert_range(1, 2);
    vec![
        (
            "v1-data-frames",
            encode_version(&data_envelope_plain("car-01", id(2), "can0", &frames()), 1),
        ),
        (
            "v1-data-values",
            encode_version(&data_envelope_plain("car-01", id(3), "gps", &values()), 1),
        ),
        (
            "v1-gap",
            encode_version(
                &control_envelope(
                    "car-01",
                    id(4),
                    Kind::Gap,
                    T0,
                    &gap_from(GapCause::Damaged, 3, &seqs, 10, T0 - 5, T0 - 1),
                ),
                1,
            ),
        ),
        (
            "v1-run",
            encode_version(
                &control_envelope(
                    "car-01",
                    id(0),
                    Kind::Run,
                    T0,
                    &RunBody {
                        previous_run: None,
                        previous_durable_last_seq: None,
                    },
                ),
                1,
            ),
        ),
    ]
}

#[test]
fn every_golden_message_still_decodes_to_its_record() {
    if std::env::var_os("PITLINK_REGEN_GOLDEN").is_some() {
        std::fs::create_dir_all(dir()).expect("golden dir");
        let old = version1()
            .into_iter()
            .filter(|(stem, _)| !dir().join(format!("{stem}.bin")).exists());
        for (stem, bytes) in current().into_iter().chain(old) {
            std::fs::write(dir().join(format!("{stem}.bin")), &bytes).expect("write bin");
            let pretty = serde_json::to_string_pretty(&view(&bytes)).expect("json");
            std::fs::write(dir().join(format!("{stem}.json")), pretty + "\n").expect("write json");
        }
    }
    let mut versions = std::collections::BTreeSet::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir()).expect("agent/tests/golden exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read golden");
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("json")).expect("its .json record"),
        )
        .expect("json record parses");
        assert_eq!(
            view(&bytes),
            expected,
            "{} decodes differently",
            path.display()
        );
        versions.insert(bytes[0]);
        checked += 1;
    }
    // Every version this build reads has golden messages.
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        READABLE_VERSIONS.to_vec()
    );
    assert!(checked >= 9, "only {checked} golden messages");
}

#[test]
fn current_encoder_reproduces_the_current_records() {
    // The bytes may differ with the zstd version; what they decode to may not.
    for (stem, bytes) in current() {
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir().join(format!("{stem}.json"))).expect("record"),
        )
        .expect("parses");
        assert_eq!(view(&bytes), expected, "{stem}");
    }
}

//! `pitlink decode`, the real binary: the RAV4 capture decoded with `_toyota_2017.dbc` against
//! the cantools oracle, and what it says about bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

fn pitlink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pitlink"))
        .args(args)
        .output()
        .expect("pitlink runs")
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn the_rav4_capture_decodes_as_cantools_does() {
    let log = format!("{DATA}/candump/comma2k19_rav4_2017_can0_10s.log");
    let dbc = format!("{DATA}/dbc/opendbc/_toyota_2017.dbc");
    let out = pitlink(&["decode", "--dbc", &dbc, "--candump", &log, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got: Vec<&str> = stdout.lines().collect();

    let oracle = std::fs::read_to_string(format!(
        "{DATA}/expected/comma2k19_rav4_2017_can0_10s._toyota_2017.first2s.cantools.jsonl"
    ))
    .unwrap();
    let want: Vec<Value> = oracle
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(want.len(), 1039);
    assert!(
        got.len() > want.len(),
        "the oracle covers the first 2 s only"
    );

    // The oracle lists, in log order, every frame of the first 2 s whose ID the DBC defines:
    // the decoder's first objects are exactly those frames.
    for (i, (line, exp)) in got.iter().zip(&want).enumerate() {
        let at = format!("object {i} (log line {})", exp["line"]);
        let obj: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        let keys: Vec<&str> = obj
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["id", "iface", "message", "signals", "t"],
            "{at} (sorted)"
        );
        // "t" is the log's timestamp text, written as a JSON number.
        let t = line
            .strip_prefix("{\"t\":")
            .and_then(|r| r.split_once(','))
            .map(|(t, _)| t)
            .unwrap();
        assert_eq!(t, exp["t"].as_str().unwrap(), "{at}");
        assert_eq!(obj["iface"], exp["iface"], "{at}");
        assert_eq!(obj["id"], exp["id"], "{at}");
        assert_eq!(obj["message"], exp["message"], "{at}");
        let sig = obj["signals"].as_object().unwrap();
        let phys = exp["phys"].as_object().unwrap();
        assert_eq!(
            sig.keys().collect::<std::collections::BTreeSet<_>>(),
            phys.keys().collect(),
            "{at}"
        );
        for (name, v) in phys {
            let (a, b) = (sig[name].as_f64().unwrap(), v.as_f64().unwrap());
            assert!(close(a, b), "{at}, {name}: {a}, cantools {b}");
        }
    }

    // The summary adds up: every one of the 8,977 frames is decoded or skipped as unknown.
    let summary = stderr.lines().last().unwrap();
    let nums: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // "…_10s.log: decoded N frames; skipped M frames of K unknown IDs; P malformed lines"
    let [.., decoded, skipped, ids, malformed] = nums[..] else {
        panic!("{summary}")
    };
    assert!(summary.contains("decoded"), "{summary}");
    assert_eq!(decoded, got.len() as u64, "{summary}");
    assert_eq!(decoded + skipped, 8977, "{summary}");
    assert!(ids > 0 && skipped >= ids, "{summary}");
    assert_eq!(malformed, 0, "{summary}");
}

#[test]
fn malformed_lines_are_reported_by_number_and_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bad.log");
    std::fs::write(
        &log,
        "(1700000000.001000) vcan0 1F0#0000000000000000\n\
         (1700000000.002000) vcan0 1F0#000\n\
         garbage\n\
         (1700000000.004000) vcan0 1F0#FFFFFFFFFFFFFFFF\n",
    )
    .unwrap();
    let dbc = format!("{DATA}/dbc/cantools/motohawk.dbc");
    let out = pitlink(&["decode", "--dbc", &dbc, "--candump", log.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let name = log.display();
    assert!(
        stderr.contains(&format!("{name}:2: data has an odd number of hex digits")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}:3: not a log line")),
        "{stderr}"
    );
    assert!(
        stderr.contains("decoded 2 frames; skipped 0 frames of 0 unknown IDs; 2 malformed lines"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        r#"(1700000000.001000) vcan0 1F0 ExampleMessage: Temperature=250.0 degK, AverageRadius=0.0 m, Enable=0 - "Disabled""#
    );
}

#[test]
fn a_missing_or_broken_dbc_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = format!("{DATA}/candump/synthetic/cantools_motohawk.log");
    let absent = dir.path().join("absent.dbc");
    let out = pitlink(&[
        "decode",
        "--dbc",
        absent.to_str().unwrap(),
        "--candump",
        &log,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot read DBC file {}", absent.display())),
        "{stderr}"
    );

    let broken = dir.path().join("broken.dbc");
    std::fs::write(&broken, "VERSION \"\"\n\nBO_ 1 M: 8 ECU\n SG_ T : x|8@1+\n").unwrap();
    let out = pitlink(&[
        "decode",
        "--dbc",
        broken.to_str().unwrap(),
        "--candump",
        &log,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:", broken.display())),
        "file:line:col: {stderr}"
    );
    assert!(Path::new(&log).exists());
}

//! The decoder against cantools: every file in shared/data/expected (synthetic frames for each
//! DBC, and the real RAV4 capture with `_toyota_2017.dbc`). Raw values must match exactly,
//! physical values within 1e-9 relative, with the same signals per frame and the same labels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sensor_drivers::candump::{LogLine, parse_line};
use sensor_drivers::dbc::{Dbc, Raw};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

fn expected_files() -> Vec<PathBuf> {
    let mut out = vec![];
    let mut dirs = vec![Path::new(DATA).join("expected")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("expected/ is readable") {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".jsonl") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn raw_matches(raw: Raw, want: &Value) -> bool {
    match raw {
        Raw::Unsigned(u) => want.as_u64() == Some(u),
        Raw::Signed(i) => want.as_i64() == Some(i),
        Raw::Float(x) => want.is_f64() && want.as_f64() == Some(x),
    }
}

/// Checks one oracle file; returns (frames, signal values) compared.
fn check(file: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let meta: Value = serde_json::from_str(lines.next().expect("meta line")).unwrap();
    let meta = &meta["_meta"];
    let dbc_path = Path::new(DATA).join(meta["dbc"].as_str().unwrap());
    let log_path = Path::new(DATA).join(meta["log"].as_str().unwrap());
    let dbc = Dbc::load(&dbc_path).unwrap_or_else(|e| panic!("{e}"));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let log: Vec<&str> = log.lines().collect();
    let name = file.file_name().unwrap().to_string_lossy().to_string();

    let (mut frames, mut values) = (0, 0);
    let mut covered = BTreeSet::new();
    for exp in lines {
        let exp: Value = serde_json::from_str(exp).unwrap();
        let n = exp["line"].as_u64().unwrap() as usize;
        covered.insert(n);
        let at = format!("{name}: log line {n}");
        let LogLine::Frame(f) = parse_line(log[n - 1]).unwrap() else {
            panic!("{at}: not a frame")
        };
        assert_eq!(f.timestamp_text, exp["t"].as_str().unwrap(), "{at}");
        assert_eq!(f.iface, exp["iface"].as_str().unwrap(), "{at}");
        assert_eq!(u64::from(f.frame.id), exp["id"].as_u64().unwrap(), "{at}");
        assert_eq!(
            f.frame.is_extended(),
            exp["extended"].as_bool().unwrap(),
            "{at}"
        );
        let d = dbc
            .decode(&f.frame)
            .unwrap_or_else(|| panic!("{at}: not decoded"));
        assert_eq!(d.message.name, exp["message"].as_str().unwrap(), "{at}");
        assert!(d.missing.is_empty(), "{at}: missing {:?}", d.missing);

        let raw = exp["raw"].as_object().unwrap();
        let phys = exp["phys"].as_object().unwrap();
        let labels = exp.get("labels").and_then(Value::as_object);
        let got: BTreeSet<&str> = d.signals().map(|(s, _)| s.name.as_str()).collect();
        let want: BTreeSet<&str> = raw.keys().map(String::as_str).collect();
        assert_eq!(got, want, "{at}: signal set");
        for (s, v) in d.signals() {
            let at = format!("{at}, {}", s.name);
            assert!(
                raw_matches(v.raw, &raw[&s.name]),
                "{at}: raw {:?}, cantools {}",
                v.raw,
                raw[&s.name]
            );
            let p = phys[&s.name].as_f64().unwrap();
            assert!(close(v.phys, p), "{at}: phys {}, cantools {p}", v.phys);
            let want_label = labels.and_then(|l| l.get(&s.name)).and_then(Value::as_str);
            assert_eq!(s.label(v.raw), want_label, "{at}: label");
            values += 1;
        }
        frames += 1;
    }

    // The oracle lists every frame of its range whose identifier the DBC defines: every other
    // frame in that range must be unknown to the decoder too.
    let last = covered.last().copied().unwrap_or(0);
    for (i, line) in log.iter().enumerate().take(last) {
        if covered.contains(&(i + 1)) {
            continue;
        }
        if let Ok(LogLine::Frame(f)) = parse_line(line) {
            assert!(
                dbc.decode(&f.frame).is_none(),
                "{name}: log line {} decoded but cantools did not",
                i + 1
            );
        }
    }
    (frames, values)
}

#[test]
fn every_oracle_file_is_reproduced() {
    let files = expected_files();
    assert_eq!(files.len(), 9, "{files:?}");
    let mut total = (0, 0);
    for f in &files {
        let (frames, values) = check(f);
        assert!(frames > 0, "{}", f.display());
        total.0 += frames;
        total.1 += values;
    }
    // 1,039 RAV4 frames + 386 synthetic ones.
    assert_eq!(total.0, 1039 + 386);
    println!(
        "{} frames, {} signal values match cantools",
        total.0, total.1
    );
}

#[test]
fn every_dbc_in_the_data_parses() {
    let mut n = 0;
    for sub in ["opendbc", "cantools"] {
        for e in std::fs::read_dir(Path::new(DATA).join("dbc").join(sub)).unwrap() {
            let p = e.unwrap().path();
            let dbc = Dbc::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!dbc.messages().is_empty(), "{}", p.display());
            assert!(
                dbc.warnings().is_empty(),
                "{}: {:?}",
                p.display(),
                dbc.warnings()
            );
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

//! `pitlink modem parse` on a captured vector: the JSON it prints, the summary, the exit status.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitlink"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pitlink");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
    )
}

fn vector(name: &str) -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../modem-hal/tests/vectors/");
    std::fs::read_to_string(format!("{p}{name}")).expect("read vector")
}

#[test]
fn nsa_vector_to_json() {
    // The `# source:` line is fed too: it is the one unparsed line.
    let (ok, out) = run(
        &["modem", "parse", "--json"],
        &vector("qeng_servingcell_nr5g_nsa.txt"),
    );
    assert!(ok);
    let j: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let s = &j["serving"];
    assert_eq!(s["rat"], "NR5G-NSA");
    assert_eq!(s["state"], "NOCONN");
    assert_eq!((s["mcc"].as_u64(), s["mnc"].as_u64()), (Some(515), Some(3)));
    assert_eq!(s["tac"].as_u64(), Some(0x4AA3));
    assert_eq!(s["cell_id"].as_u64(), Some(0x3359966));
    assert_eq!(
        (s["pci"].as_u64(), s["earfcn"].as_u64()),
        (Some(1), Some(150))
    );
    assert_eq!(s["rsrp_dbm"].as_f64(), Some(-89.0));
    assert_eq!(s["sinr_db"].as_f64(), Some(16.0));
    assert!(s.get("srxlev").is_none(), "`-` is absent");
    let nr = &s["nr"];
    assert_eq!(
        (
            nr["pci"].as_u64(),
            nr["arfcn"].as_u64(),
            nr["band"].as_u64()
        ),
        (Some(832), Some(528030), Some(41))
    );
    // SINR comes before RSRQ in the NR line.
    assert_eq!(
        (nr["sinr_db"].as_f64(), nr["rsrq_db"].as_f64()),
        (Some(21.0), Some(-11.0))
    );
    let unparsed = j["unparsed"].as_array().expect("unparsed list");
    assert_eq!(unparsed.len(), 1);
    assert_eq!(unparsed[0]["line"].as_u64(), Some(1));
}

#[test]
fn summary_and_garbage_exit_zero() {
    let (ok, out) = run(&["modem", "parse"], "+CSQ: 16,99\r\nOK\r\nnonsense\r\n");
    assert!(ok);
    assert!(out.contains("csq: 16 rssi -81 dBm"), "{out}");
    assert!(out.contains("unparsed: line 3: nonsense"), "{out}");
}

#![allow(clippy::unwrap_used)]

use super::*;

const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 291 Drive: 4 ECU
 SG_ Gear : 0|4@1+ (1,0) [0|15] "" ECU
 SG_ Speed : 15|16@0+ (0.01,-1) [0|600] "km/h" ECU
 SG_ Torque : 24|8@1- (2,10) [0|0] "Nm" ECU

BO_ 2147483905 Ext: 1 ECU
 SG_ Flag : 0|1@1+ (1,0) [0|1] "" ECU

VAL_ 291 Gear 3 "D" 0 "P" ;
"#;

fn run(log: &str, opts: &Options) -> (String, Summary, Vec<(u64, String)>) {
    let dbc = Dbc::parse(DBC).unwrap();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let s = decode_log(&dbc, log.as_bytes(), &mut out, opts, |n, why| {
        errors.push((n, why.to_string()))
    })
    .unwrap();
    (String::from_utf8(out).unwrap(), s, errors)
}

const LOG: &str = "\
(1700000000.001000) can0 123#0312C0FF
(1700000000.002000) can0 7FF#00
(0000000012.500000) can1 00000101#01
# a comment
(1700000000.003000) can0 123#0
DROPCOUNT: dropped 2 CAN frames on 'can0' socket (total drops 2)
(1700000000.004000) can0 123#R4
(1700000000.005000) can0 123#03
(1700000000.006000) can0 7FE#
";

#[test]
fn json_objects_as_specified() {
    let (out, s, errors) = run(
        LOG,
        &Options {
            json: true,
            ..Options::default()
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#"{"t":1700000000.001000,"iface":"can0","id":291,"message":"Drive","signals":{"Gear":3,"Speed":47.0,"Torque":8}}"#
    );
    assert_eq!(
        lines[1], r#"{"t":12.500000,"iface":"can1","id":257,"message":"Ext","signals":{"Flag":1}}"#,
        "zero-padded seconds lose their leading zeros, nothing else"
    );
    assert_eq!(
        lines[2],
        r#"{"t":1700000000.005000,"iface":"can0","id":291,"message":"Drive","signals":{"Gear":3}}"#,
        "a short frame gives the signals that fit"
    );
    for l in &lines {
        let _: serde_json::Value = serde_json::from_str(l).unwrap();
    }
    assert_eq!(
        errors,
        [(5, "data has an odd number of hex digits".to_string())]
    );
    assert_eq!(
        s,
        Summary {
            decoded: 3,
            unknown_frames: 2,
            unknown_ids: 2,
            malformed_lines: 1,
            not_data: 1,
            other_iface: 0,
            short: 1,
            dropped_in_log: 2,
        }
    );
    assert_eq!(
        s.to_string(),
        "decoded 3 frames; skipped 2 frames of 2 unknown IDs; 1 malformed lines; \
         1 frames shorter than their message (signals missing); 1 remote/error frames not \
         decoded; the log reports 2 frames dropped while recording"
    );
}

#[test]
fn readable_text_with_units_labels_and_missing_signals() {
    let (out, s, _) = run(
        LOG,
        &Options {
            json: false,
            interfaces: vec!["can0".into()],
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        r#"(1700000000.001000) can0 123 Drive: Gear=3 "D", Speed=47.0 km/h, Torque=8 Nm"#
    );
    assert_eq!(
        lines[1],
        r#"(1700000000.005000) can0 123 Drive: Gear=3 "D" (beyond the frame's payload: Speed Torque)"#
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(s.other_iface, 1);
}

#[test]
fn timestamps_become_valid_json_numbers() {
    assert_eq!(json_number("46408.584930"), "46408.584930");
    assert_eq!(json_number("0000000166.000000"), "166.000000");
    assert_eq!(json_number("0000000000.000100"), "0.000100");
    assert_eq!(json_number("000"), "0");
    assert_eq!(json_number("0.5"), "0.5");
}

#[test]
fn overlong_and_non_utf8_lines_are_malformed_not_fatal() {
    let dbc = Dbc::parse(DBC).unwrap();
    let mut log = format!("(1.0) can0 123#{}\n", "00".repeat(MAX_LINE)).into_bytes();
    log.extend_from_slice(b"(1.0) can0 \xFF23#00\n(1.0) can0 123#03");
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let s = decode_log(
        &dbc,
        std::io::BufReader::with_capacity(16, &log[..]),
        &mut out,
        &Options::default(),
        |n, why| errors.push((n, why.to_string())),
    )
    .unwrap();
    assert_eq!(
        errors,
        [
            (1, format!("longer than {MAX_LINE} bytes")),
            (2, "not valid UTF-8".to_string())
        ]
    );
    assert_eq!((s.decoded, s.malformed_lines), (1, 2));
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("(1.0) can0 123 Drive: Gear=3")
    );
}

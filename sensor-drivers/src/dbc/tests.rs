#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const HEADER: &str =
    "VERSION \"\"\n\nNS_ :\n\tVAL_\n\tSIG_VALTYPE_\n\tSG_MUL_VAL_\n\nBS_:\n\nBU_: ECU\n\n";

fn dbc(body: &str) -> Dbc {
    Dbc::parse(&format!("{HEADER}{body}")).unwrap_or_else(|e| panic!("{e}"))
}

fn names(d: &Dbc, id: u32, ext: bool, payload: &[u8]) -> (Vec<String>, Vec<String>) {
    let f = if payload.len() > 8 {
        CanFrame::fd(id, ext, 0, payload).unwrap()
    } else {
        CanFrame::classic(id, ext, payload).unwrap()
    };
    let dec = d.decode(&f).unwrap();
    let present = dec.signals().map(|(s, _)| s.name.clone()).collect();
    let missing = dec
        .missing
        .iter()
        .map(|&i| dec.message.signals[usize::from(i)].name.clone())
        .collect();
    (present, missing)
}

/// Extended multiplexing: S0 selects S1 (0) and S5 (1); S1, itself a multiplexer, selects S2
/// (0) and S3 (2-3, 5).
const MUX: &str = "BO_ 2147483748 Muxed: 8 ECU
 SG_ S0 M : 0|4@1+ (1,0) [0|0] \"\" ECU
 SG_ S1 m0M : 4|4@1+ (1,0) [0|0] \"\" ECU
 SG_ S2 m0 : 8|8@1+ (1,0) [0|0] \"\" ECU
 SG_ S3 m2 : 16|8@1- (1,0) [0|0] \"\" ECU
 SG_ S5 m1 : 8|8@1+ (1,0) [0|0] \"\" ECU
 SG_ Plain : 56|8@1+ (1,0) [0|0] \"\" ECU

SG_MUL_VAL_ 2147483748 S1 S0 0-0;
SG_MUL_VAL_ 2147483748 S2 S1 0-0;
SG_MUL_VAL_ 2147483748 S3 S1 2-3, 5-5;
SG_MUL_VAL_ 2147483748 S5 S0 1-1;
";

#[test]
fn cascaded_multiplexers_select_by_ranges() {
    let d = dbc(MUX);
    let m = d.message(100, true).unwrap();
    assert!(m.is_multiplexed());
    assert!(m.signal("S1").unwrap().is_multiplexer);
    let v = |p: &[u8]| names(&d, 100, true, p).0;
    assert_eq!(v(&[0x00, 0, 0, 0, 0, 0, 0, 9]), ["S0", "S1", "S2", "Plain"]);
    assert_eq!(v(&[0x20, 0, 0, 0, 0, 0, 0, 9]), ["S0", "S1", "S3", "Plain"]);
    assert_eq!(v(&[0x30, 0, 0, 0, 0, 0, 0, 9]), ["S0", "S1", "S3", "Plain"]);
    assert_eq!(
        v(&[0x40, 0, 0, 0, 0, 0, 0, 9]),
        ["S0", "S1", "Plain"],
        "4: nothing"
    );
    assert_eq!(v(&[0x50, 0, 0, 0, 0, 0, 0, 9]), ["S0", "S1", "S3", "Plain"]);
    assert_eq!(v(&[0x01, 0, 0, 0, 0, 0, 0, 9]), ["S0", "S5", "Plain"]);
    assert_eq!(
        v(&[0x07, 0, 0, 0, 0, 0, 0, 9]),
        ["S0", "Plain"],
        "7: nothing"
    );
    assert!(
        d.message(100, false).is_none(),
        "extended and standard differ"
    );
}

#[test]
fn short_frames_decode_what_fits_and_list_the_rest() {
    let d = dbc(MUX);
    let (present, missing) = names(&d, 100, true, &[0x20, 0xAA]);
    assert_eq!(present, ["S0", "S1"]);
    assert_eq!(missing, ["S3", "Plain"], "S3 is selected but beyond byte 2");
    let (present, missing) = names(&d, 100, true, &[]);
    assert!(present.is_empty());
    assert_eq!(
        missing,
        ["S0", "S1", "S2", "S3", "S5", "Plain"],
        "a missing multiplexer leaves what it selects unknown"
    );
}

#[test]
fn plain_multiplexing_values_scale_and_labels() {
    let d = dbc("BO_ 291 Plain: 8 ECU
 SG_ Mode M : 0|8@1+ (1,0) [0|0] \"\" ECU
 SG_ Temp m1 : 15|12@0- (0.1,-40) [0|0] \"degC\" ECU
 SG_ Gear m2 : 8|4@1+ (1,0) [0|0] \"\" ECU

VAL_ 291 Gear 0 \"P\" 3 \"D\" ;
");
    let m = d.message(0x123, false).unwrap();
    assert_eq!(m.signal("Temp").unwrap().unit, "degC");
    let f = CanFrame::classic(0x123, false, &[1, 0xFF, 0xF0, 0, 0, 0, 0, 0]).unwrap();
    let dec = d.decode(&f).unwrap();
    let vals: Vec<_> = dec
        .signals()
        .map(|(s, v)| (s.name.as_str(), v.raw))
        .collect();
    assert_eq!(
        vals,
        [("Mode", Raw::Unsigned(1)), ("Temp", Raw::Signed(-1))]
    );
    let (_, temp) = dec.signals().nth(1).unwrap();
    assert!((temp.phys - (-40.1)).abs() < 1e-12);
    let f = CanFrame::classic(0x123, false, &[2, 3, 0, 0, 0, 0, 0, 0]).unwrap();
    let dec = d.decode(&f).unwrap();
    let (gear, v) = dec.signals().nth(1).unwrap();
    assert_eq!((gear.name.as_str(), gear.label(v.raw)), ("Gear", Some("D")));
}

#[test]
fn floats_remote_error_and_unknown_frames() {
    let d = dbc("BO_ 1024 F: 12 ECU
 SG_ Single : 0|32@1- (1,0) [0|0] \"\" ECU
 SG_ Double : 32|64@1- (2,1) [0|0] \"\" ECU
 SG_ Odd : 0|16@1+ (1,0) [0|0] \"\" ECU

SIG_VALTYPE_ 1024 Single : 1;
SIG_VALTYPE_ 1024 Double : 2;
SIG_VALTYPE_ 1024 Odd : 1;
");
    assert_eq!(d.warnings().len(), 1, "{:?}", d.warnings());
    assert!(d.warnings()[0].contains("F.Odd"));
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&0.5f32.to_le_bytes());
    p[4..].copy_from_slice(&3.0f64.to_le_bytes());
    let f = CanFrame::fd(1024, false, 0, &p).unwrap();
    let dec = d.decode(&f).unwrap();
    let v: Vec<_> = dec.signals().map(|(_, v)| (v.raw, v.phys)).collect();
    assert_eq!(v[0], (Raw::Float(0.5), 0.5));
    assert_eq!(v[1], (Raw::Float(3.0), 7.0));
    assert!(
        matches!(v[2].0, Raw::Unsigned(_)),
        "a 16-bit 'float' stays an integer"
    );

    assert!(
        d.decode(&CanFrame::remote(1024, false, 8).unwrap())
            .is_none()
    );
    assert!(d.decode(&CanFrame::error(1024, &[0; 8]).unwrap()).is_none());
    assert!(
        d.decode(&CanFrame::classic(1025, false, &[]).unwrap())
            .is_none()
    );
}

#[test]
fn independent_signals_and_bad_multiplexers_are_left_out_with_warnings() {
    let d = dbc("BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX
 SG_ Loose : 0|8@1+ (1,0) [0|0] \"\" Vector__XXX

BO_ 1 NoMux: 8 ECU
 SG_ Orphan m1 : 0|8@1+ (1,0) [0|0] \"\" ECU
 SG_ Fine : 8|8@1+ (1,0) [0|0] \"\" ECU

BO_ 2 Cycle: 8 ECU
 SG_ A m1M : 0|8@1+ (1,0) [0|0] \"\" ECU
 SG_ B m1M : 8|8@1+ (1,0) [0|0] \"\" ECU

BO_ 1 Again: 8 ECU
 SG_ X : 0|8@1+ (1,0) [0|0] \"\" ECU

SG_MUL_VAL_ 2 A B 1-1;
SG_MUL_VAL_ 2 B A 1-1;
");
    let names: Vec<_> = d.messages().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["NoMux", "Cycle"]);
    let w = d.warnings().join("\n");
    assert!(
        w.contains("NoMux.Orphan: multiplexed but the message has no multiplexer"),
        "{w}"
    );
    assert!(
        w.contains("Cycle.A: its multiplexers select each other in a cycle"),
        "{w}"
    );
    assert!(
        w.contains("Again (0x1) has the identifier of an earlier message"),
        "{w}"
    );
    assert_eq!(self::names(&d, 1, false, &[1, 2]).0, ["Fine"]);
    assert!(self::names(&d, 2, false, &[1, 1]).0.is_empty());
}

#[test]
fn cp1252_files_and_byte_order_marks_decode() {
    let mut bytes = format!(
        "{HEADER}BO_ 0 Foo: 1 ECU\n SG_ Foo : 0|8@1- (1,0) [0|0] \"\" ECU\n\nVAL_ 0 Foo 1 \""
    )
    .into_bytes();
    bytes.extend_from_slice(b"#%=*\xE4'\" -5 \"neg\" ;\n");
    let d = Dbc::from_bytes(&bytes).unwrap();
    let s = d.message(0, false).unwrap().signal("Foo").unwrap();
    assert_eq!(s.label(Raw::Signed(1)), Some("#%=*ä'"));
    assert_eq!(s.label(Raw::Signed(-5)), Some("neg"));

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(format!("{HEADER}BO_ 5 B: 1 ECU\n").as_bytes());
    assert!(Dbc::from_bytes(&bom).unwrap().message(5, false).is_some());
}

#[test]
fn syntax_and_io_errors_say_where() {
    let e = Dbc::parse(&format!(
        "{HEADER}BO_ 1 M: 8 ECU\n SG_ S : 0|8@1+ (1,0) [0|0] \"\" ECU\n SG_ T : zero|8@1+\n"
    ))
    .unwrap_err();
    match &e {
        DbcError::Syntax { line, col, .. } => {
            assert_eq!(*line, Some(14), "{e}");
            assert!(col.is_some(), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.dbc");
    std::fs::write(&p, "BO_ nonsense").unwrap();
    let msg = Dbc::load(&p).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:1:", p.display())), "{msg}");
    assert!(msg.contains("not a valid DBC file"), "{msg}");
    let msg = Dbc::load(dir.path().join("absent.dbc"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("cannot read DBC file ") && msg.contains("absent.dbc"),
        "{msg}"
    );
}

#[test]
fn decode_into_reuses_its_buffers() {
    let d = dbc(MUX);
    let mut buf = DecodeBuf::default();
    let f = CanFrame::classic(100, true, &[0x01, 7, 0, 0, 0, 0, 0, 9]).unwrap();
    assert_eq!(
        d.decode_into(&f, &mut buf).map(|m| m.name.as_str()),
        Some("Muxed")
    );
    assert_eq!(buf.values.len(), 3);
    let short = CanFrame::classic(100, true, &[0x00]).unwrap();
    d.decode_into(&short, &mut buf);
    assert_eq!(buf.values.len(), 2, "S0 and S1 (both in byte 0)");
    assert_eq!(buf.missing.len(), 2, "S2 and Plain");
    assert!(
        d.decode_into(&CanFrame::classic(9, true, &[]).unwrap(), &mut buf)
            .is_none()
    );
    assert!(buf.values.is_empty() && buf.missing.is_empty());
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
        let _ = Dbc::parse(&s);
    }

    #[test]
    fn arbitrary_frames_never_panic(
        id in 0u32..0x800,
        ext in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=8),
    ) {
        let d = dbc(MUX);
        let f = CanFrame::classic(id, ext, &payload).unwrap();
        if let Some(dec) = d.decode(&f) {
            prop_assert!(dec.values.len() + dec.missing.len() <= dec.message.signals.len());
        }
    }
}

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn frame(line: &str) -> LoggedFrame<'_> {
    match parse_line(line) {
        Ok(LogLine::Frame(f)) => f,
        other => panic!("{line:?}: {other:?}"),
    }
}

fn err(line: &str) -> String {
    match parse_line(line) {
        Err(e) => e.to_string(),
        other => panic!("{line:?} parsed: {other:?}"),
    }
}

#[test]
fn classic_standard_and_extended() {
    let f = frame("(46408.584930) can0 260#08FFFB0000001884");
    assert_eq!(f.timestamp_text, "46408.584930");
    assert_eq!(f.timestamp.as_micros(), 46_408_584_930);
    assert_eq!(f.iface, "can0");
    assert_eq!(
        f.frame,
        CanFrame::classic(0x260, false, &[8, 0xFF, 0xFB, 0, 0, 0, 0x18, 0x84]).unwrap()
    );
    assert_eq!(f.direction, None);
    let f = frame("(1700000000.001000) vcan0 0C01FEFE#40803F4329D2F13E\n");
    assert!(f.frame.is_extended());
    assert_eq!(f.frame.id, 0x0C01_FEFE);
    let f = frame("(1.000000) vcan0 00000123#");
    assert!(f.frame.is_extended());
    assert_eq!((f.frame.id, f.frame.len), (0x123, 0));
    let f = frame("(1.000000) can0 7a1#de.ad.beef");
    assert_eq!(f.frame.payload(), &[0xDE, 0xAD, 0xBE, 0xEF]);
}

#[test]
fn timestamps_of_any_precision_convert_exactly() {
    let f = frame("(1700000000.123456789) can0 123#");
    assert_eq!(
        f.timestamp,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 123_456_789
        }
    );
    assert_eq!(f.timestamp.as_micros(), 1_700_000_000_123_456);
    assert_eq!(f.timestamp_text, "1700000000.123456789");
    assert_eq!(frame("(166) can0 123#").timestamp.as_micros(), 166_000_000);
    assert_eq!(
        frame("(0000000166.5) can0 123#").timestamp.as_micros(),
        166_500_000
    );
    assert_eq!(
        frame("(1.0000001239) can0 123#").timestamp,
        Timestamp {
            secs: 1,
            nanos: 123
        },
        "digits past nanoseconds are dropped"
    );
    assert!(err("(1.2e3) can0 123#").contains("not seconds[.fraction]"));
    assert!(err("(12.) can0 123#").contains("not seconds[.fraction]"));
    assert!(err("(99999999999999999999) can0 123#").contains("too large"));
    assert!(err("(1.0 can0 123#").contains("no closing ')'"));
}

#[test]
fn padded_interfaces_and_direction_flags() {
    let f = frame("(1.000001)  can0  123#11  R");
    assert_eq!((f.iface, f.direction), ("can0", Some(Direction::Rx)));
    let f = frame("(1.000001)\tvcan10 123#R T\r\n");
    assert_eq!(f.iface, "vcan10");
    assert_eq!(f.direction, Some(Direction::Tx));
    assert!(f.frame.is_remote());
    assert!(err("(1.000001) can0 123#11 X").contains("unexpected 'X' after the frame"));
    assert!(err("(1.000001) can0 123#11 RT").contains("unexpected 'RT'"));
}

#[test]
fn remote_fd_len8_and_error_frames() {
    let f = frame("(1.0) can0 123#R");
    assert_eq!(f.frame, CanFrame::remote(0x123, false, 0).unwrap());
    let f = frame("(1.0) can0 123#r5");
    assert_eq!(f.frame, CanFrame::remote(0x123, false, 5).unwrap());
    let f = frame("(1.0) can0 123#R8_B");
    assert_eq!(
        f.frame,
        CanFrame::remote(0x123, false, 8)
            .unwrap()
            .with_len8_dlc(11)
            .unwrap()
    );
    let f = frame("(1.0) can0 123#1122334455667788_C");
    assert_eq!(f.frame.len8_dlc, 12);
    assert_eq!(f.frame.len, 8);

    let f = frame("(1700000000.001000) vcan0 050##500000000000000000000000000000000");
    assert!(f.frame.is_fd());
    assert_eq!(f.frame.len, 16);
    assert_eq!(f.frame.flags & flags::BRS, flags::BRS, "5 = FDF|BRS");
    assert_eq!(f.frame.flags & flags::ESI, 0);
    let f = frame("(1.0) can0 123##3");
    assert_eq!(
        f.frame.flags & (flags::BRS | flags::ESI),
        flags::BRS | flags::ESI
    );
    assert_eq!(f.frame.len, 0);

    let f = frame("(1.0) can0 20000080#0000000000000000");
    assert!(f.frame.is_error());
    assert_eq!(f.frame.id, 0x80);
    assert_eq!(
        f.frame.error_classes().collect::<Vec<_>>(),
        vec![crate::can::ErrorClass::BusError]
    );
}

#[test]
fn malformed_frames_say_what_is_wrong() {
    assert_eq!(
        err("(1.0) can0 123#112"),
        "data has an odd number of hex digits"
    );
    assert_eq!(
        err("(1.0) can0 123##1112233445566778899AABBCCDD"),
        "FD length 13 is not a valid CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)"
    );
    assert_eq!(
        err("(1.0) can0 123#112233445566778899"),
        "classic frame with 9 data bytes (at most 8)"
    );
    assert!(err("(1.0) can0 123#11G2").contains("non-hex character 'G' at byte 6"));
    assert!(err("(1.0) can0 123#1\u{e9}").contains("non-hex character '\u{e9}' at byte 5"));
    assert!(err("(1.0) can0 123#1.1").contains("'.' separator inside a data byte"));
    assert!(err("(1.0) can0 1234#11").contains("4 hex digits"));
    assert!(err("(1.0) can0 800#11").contains("does not fit in 11 bits"));
    assert!(err("(1.0) can0 X23#11").contains("not hexadecimal"));
    assert!(err("(1.0) can0 40000123#11").contains("flag bits"));
    assert!(err("(1.0) can0 123-11").contains("no '#'"));
    assert!(err("(1.0) can0 123#R9").contains("remote frame length"));
    assert!(err("(1.0) can0 123#11_9").contains("len8_dlc"));
    assert!(err("(1.0) can0 123#1122334455667788_8").contains("len8_dlc"));
    assert!(err("(1.0) can0 123##").contains("no flags digit"));
    assert!(err("(1.0) can0 123##G").contains("not a hex digit"));
    assert!(err("(1.0) can0").contains("no frame after the interface name 'can0'"));
    assert!(err("(1.0)").contains("no interface name"));
    assert!(
        err(&format!("(1.0) can0 123##0{}", "00".repeat(65)))
            .contains("data has more than 64 bytes")
    );
    assert!(err("hello world").starts_with("not a log line"));
}

#[test]
fn comments_blank_lines_and_dropcount() {
    assert_eq!(parse_line(""), Ok(LogLine::Comment));
    assert_eq!(parse_line("   \r\n"), Ok(LogLine::Comment));
    assert_eq!(
        parse_line("# recorded on the test bench"),
        Ok(LogLine::Comment)
    );
    assert_eq!(parse_line("; vector style"), Ok(LogLine::Comment));
    assert_eq!(
        parse_line("DROPCOUNT: dropped 3 CAN frames on 'can0' socket (total drops 10)\n"),
        Ok(LogLine::DropCount(DropCount {
            dropped: 3,
            iface: Some("can0"),
            total: Some(10)
        }))
    );
    assert_eq!(
        parse_line("DROPCOUNT: dropped 1 CAN frame on 'any' socket (total drops -2)"),
        Ok(LogLine::DropCount(DropCount {
            dropped: 1,
            iface: Some("any"),
            total: Some((1 << 32) - 2)
        }))
    );
    assert!(
        parse_line("DROPCOUNT: something else")
            .unwrap_err()
            .to_string()
            .contains("without a frame count")
    );
}

#[test]
fn every_line_of_the_real_logs_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/candump");
    let mut files = 0;
    for name in [
        "comma2k19_rav4_2017_can0_10s.log",
        "comma2k19_rav4_2017_can0_can1_2s.log",
        "savvycan_example_candump_head2000.log",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        let mut frames = 0;
        for (n, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(LogLine::Frame(f)) => {
                    frames += 1;
                    // The writer reproduces what the parser read (these logs are canonical).
                    assert_eq!(
                        format_line(f.timestamp, f.iface, &f.frame, f.direction),
                        line,
                        "{name}:{}",
                        n + 1
                    );
                }
                other => panic!("{name}:{}: {other:?}", n + 1),
            }
        }
        assert!(frames > 1000, "{name}: {frames}");
        files += 1;
    }
    assert_eq!(files, 3);
}

fn arb_frame() -> impl Strategy<Value = CanFrame> {
    let classic = (
        any::<bool>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
    )
        .prop_map(|(ext, id, d)| {
            let id = if ext { id & ID_MASK } else { id & 0x7FF };
            CanFrame::classic(id, ext, &d).unwrap()
        });
    let len8 = (any::<u32>(), any::<[u8; 8]>(), 9u8..=15).prop_map(|(id, d, dlc)| {
        CanFrame::classic(id & 0x7FF, false, &d)
            .unwrap()
            .with_len8_dlc(dlc)
            .unwrap()
    });
    let remote = (any::<bool>(), any::<u32>(), 0u8..=8).prop_map(|(ext, id, len)| {
        let id = if ext { id & ID_MASK } else { id & 0x7FF };
        CanFrame::remote(id, ext, len).unwrap()
    });
    let fd = (
        any::<bool>(),
        any::<u32>(),
        0u8..4,
        proptest::sample::select(FD_LENS.to_vec()),
        any::<[u8; 64]>(),
    )
        .prop_map(|(ext, id, fl, len, d)| {
            let id = if ext { id & ID_MASK } else { id & 0x7FF };
            let f = (if fl & 1 != 0 { flags::BRS } else { 0 })
                | (if fl & 2 != 0 { flags::ESI } else { 0 });
            CanFrame::fd(id, ext, f, &d[..usize::from(len)]).unwrap()
        });
    let error = (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=8))
        .prop_map(|(class, d)| CanFrame::error(class & ID_MASK, &d).unwrap());
    prop_oneof![classic, len8, remote, fd, error]
}

proptest! {
    #[test]
    fn frame_text_frame_round_trip(
        f in arb_frame(),
        secs in 0u64..10_000_000_000,
        nanos in prop_oneof![(0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        iface in "[a-z][a-z0-9_.-]{0,14}",
        dir in proptest::option::of(prop_oneof![Just(Direction::Tx), Just(Direction::Rx)]),
    ) {
        let ts = Timestamp { secs, nanos };
        let line = format_line(ts, &iface, &f, dir);
        let back = frame(&line);
        prop_assert_eq!(back.frame, f);
        prop_assert_eq!(back.timestamp, ts);
        prop_assert_eq!(back.iface, iface.as_str());
        prop_assert_eq!(back.direction, dir);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,120}") {
        let _ = parse_line(&s);
    }

    #[test]
    fn near_miss_lines_never_panic(
        ts in "[0-9.]{0,12}",
        iface in "[ a-z0-9]{0,6}",
        id in "[0-9A-Fa-fxR#_.]{0,10}",
        data in "[0-9A-Fa-fR#_. ]{0,40}",
    ) {
        let _ = parse_line(&format!("({ts}) {iface} {id}#{data}"));
    }
}

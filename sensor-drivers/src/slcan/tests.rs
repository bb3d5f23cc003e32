#![allow(clippy::unwrap_used)]

use super::*;
use crate::can::ErrorClass;
use proptest::prelude::*;

fn frame(line: &str) -> (CanFrame, Option<u16>) {
    match decode_line(line.as_bytes()) {
        Ok(Message::Frame {
            frame,
            timestamp_ms,
        }) => (frame, timestamp_ms),
        other => panic!("{line}: {other:?}"),
    }
}

fn encode(f: &CanFrame, ts: Option<u16>) -> String {
    let mut v = Vec::new();
    encode_frame(f, ts, &mut v).unwrap();
    String::from_utf8(v).unwrap()
}

#[test]
fn decodes_every_frame_kind() {
    let (f, ts) = frame("t1232A0B1");
    assert_eq!(f, CanFrame::classic(0x123, false, &[0xa0, 0xb1]).unwrap());
    assert_eq!(ts, None);

    let (f, ts) = frame("T1ABCDEF08010203040506070812ab");
    assert_eq!(
        f,
        CanFrame::classic(0x1abc_def0, true, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap()
    );
    assert_eq!(ts, Some(0x12ab));

    assert_eq!(frame("r7FF4").0, CanFrame::remote(0x7ff, false, 4).unwrap());
    assert_eq!(
        frame("R000000018EA5F"),
        (CanFrame::remote(1, true, 8).unwrap(), Some(59_999))
    );

    let data12: Vec<u8> = (0..12).collect();
    let hex12: String = data12.iter().map(|b| format!("{b:02X}")).collect();
    let (f, _) = frame(&format!("d0109{hex12}"));
    assert_eq!(f, CanFrame::fd(0x010, false, 0, &data12).unwrap());
    let (f, ts) = frame(&format!("B1FFFFFFF9{hex12}0001"));
    assert_eq!(
        f,
        CanFrame::fd(0x1fff_ffff, true, flags::BRS, &data12).unwrap()
    );
    assert_eq!(ts, Some(1));
    let (f, _) = frame(&format!("D00000001F{}", "EE".repeat(64)));
    assert_eq!(f.len, 64);
    assert!(f.is_fd() && f.is_extended() && f.flags & flags::BRS == 0);
    assert_eq!(
        frame("b1230").0,
        CanFrame::fd(0x123, false, flags::BRS, &[]).unwrap()
    );
}

#[test]
fn encodes_what_it_decodes() {
    let f = CanFrame::classic(0x7e8, false, &[0x02, 0x41, 0x0d]).unwrap();
    assert_eq!(encode(&f, None), "t7E8302410D\r");
    assert_eq!(encode(&f, Some(0x1234)), "t7E8302410D1234\r");
    let r = CanFrame::remote(0x1234_5678, true, 2).unwrap();
    assert_eq!(encode(&r, None), "R123456782\r");
    let fd = CanFrame::fd(0x42, false, flags::BRS, &[0xff; 16]).unwrap();
    assert_eq!(encode(&fd, None), format!("b042A{}\r", "FF".repeat(16)));
    let mut v = Vec::new();
    assert_eq!(
        encode_frame(&CanFrame::error(0x40, &[]).unwrap(), None, &mut v),
        Err(EncodeError::ErrorFrame)
    );
    assert_eq!(
        encode_frame(&f, Some(60_000), &mut v),
        Err(EncodeError::Timestamp(60_000))
    );
}

#[test]
fn rejects_bad_lines_with_a_reason() {
    let cases: &[(&str, LineError)] = &[
        ("x", LineError::UnknownKind('x')),
        (
            "t12",
            LineError::Truncated {
                kind: 't',
                need: 5,
                got: 3,
            },
        ),
        ("t12G0", LineError::BadHex { at: 3 }),
        ("t1239", LineError::BadDlc { at: 4, found: '9' }),
        ("d123G", LineError::BadDlc { at: 4, found: 'G' }),
        (
            "t1232AA",
            LineError::LengthMismatch {
                kind: 't',
                dlc: '2',
                data: 4,
                got: 2,
            },
        ),
        ("t1230EA60", LineError::TimestampRange(60_000)),
        ("t1231ZZ", LineError::BadHex { at: 5 }),
        (
            "e2a",
            LineError::LengthMismatch {
                kind: 'e',
                dlc: '2',
                data: 2,
                got: 1,
            },
        ),
        ("e1x", LineError::ErrorCode('x')),
        ("sx001002", LineError::BusState('x')),
        ("sa00100x", LineError::Counters),
        ("F1", LineError::Status),
    ];
    for (line, want) in cases {
        assert_eq!(decode_line(line.as_bytes()), Err(want.clone()), "{line}");
    }
    assert!(matches!(
        decode_line(b"t8000"),
        Err(LineError::Frame(FrameError::IdRange {
            id: 0x800,
            bits: 11
        }))
    ));
    assert!(matches!(
        decode_line(b"T200000000"),
        Err(LineError::Frame(FrameError::IdRange { .. }))
    ));
}

#[test]
fn error_and_state_messages_become_error_frames() {
    let Ok(Message::Error(e)) = decode_line(b"e3acO") else {
        panic!("e3acO")
    };
    let classes: Vec<_> = e.error_classes().collect();
    assert_eq!(
        classes,
        vec![
            ErrorClass::Controller,
            ErrorClass::Protocol,
            ErrorClass::NoAck,
            ErrorClass::BusError
        ]
    );
    assert_eq!(e.data[1], CRTL_TX_OVERFLOW);
    let Ok(Message::Error(s)) = decode_line(b"sb256256") else {
        panic!("sb256256")
    };
    assert!(s.error_classes().any(|c| c == ErrorClass::BusOff));
    assert_eq!((s.data[6], s.data[7]), (255, 255));
    let Ok(Message::Error(p)) = decode_line(b"sp130007") else {
        panic!("sp130007")
    };
    assert_eq!(p.data[1], CRTL_RX_PASSIVE);
    assert_eq!((p.data[6], p.data[7]), (7, 130));
    assert_eq!(decode_line(b"F08"), Ok(Message::Status(0x08)));
    let (f, lost) = status_error_frame(0x08);
    assert!(lost);
    assert_eq!(f.unwrap().data[1], CRTL_RX_OVERFLOW);
    assert_eq!(status_error_frame(0), (None, false));
    let (f, lost) = status_error_frame(0x80);
    assert!(!lost);
    assert_eq!(f.unwrap().id, ERR_BUSERROR);
    assert_eq!(decode_line(b"z"), Ok(Message::TxAck));
    assert_eq!(decode_line(b"V1013"), Ok(Message::Info));
}

#[test]
fn commands_encode_and_parse() {
    for c in [
        Command::Close,
        Command::Bitrate(Bitrate::K500),
        Command::DataBitrate(2),
        Command::Open,
        Command::ListenOnly,
        Command::Timestamps(true),
        Command::Timestamps(false),
        Command::Status,
        Command::Version,
    ] {
        let mut v = Vec::new();
        c.encode(&mut v);
        assert_eq!(v.pop(), Some(b'\r'));
        assert_eq!(Command::parse(&v), Some(c), "{}", c.text());
    }
    assert_eq!(Command::Bitrate(Bitrate::M1).text(), "S8");
    assert_eq!(Bitrate::from_bps(125_000), Some(Bitrate::K125));
    assert_eq!(Bitrate::from_bps(123), None);
    assert_eq!(Command::parse(b"S9"), None);
}

#[test]
fn timestamps_unwrap_across_wraps_and_long_silences() {
    let mut u = TimestampUnwrap::default();
    let h = 1_000_000_000u64;
    assert_eq!(u.unwrap(59_990, h), 59_990);
    assert_eq!(u.unwrap(5, h + 15_000), 60_005, "wrapped once");
    assert_eq!(u.unwrap(5, h + 15_000), 60_005, "same tick");
    // 150.3 s of silence: 2 whole wraps plus 30.3 s on the counter.
    assert_eq!(u.unwrap(30_305, h + 15_000 + 150_300_000), 60_005 + 150_300);
    // A burst of buffered frames arriving together: the counter alone decides.
    let t = h + 200_000_000;
    let a = u.unwrap(40_000, t);
    let b = u.unwrap(41_000, t);
    assert_eq!(b - a, 1_000);
}

fn cfg() -> SlcanConfig {
    let mut c = SlcanConfig::new(
        PortSpec {
            path: "/dev/null".into(),
            baud: 115_200,
        },
        Bitrate::K500,
    );
    c.timestamps = true;
    c
}

fn sent(core: &mut Slcan) -> String {
    let mut v = Vec::new();
    core.transmit(&mut v);
    String::from_utf8(v).unwrap()
}

#[test]
fn handshake_sends_one_command_per_reply() {
    let mut c = cfg();
    c.listen_only = false;
    c.data_bitrate = Some(2);
    let mut core = Slcan::new(&c);
    let mut out = Output::default();
    core.opened(1_000);
    assert!(!core.ready());
    let mut got = Vec::new();
    for _ in 0..core.plan().len() {
        let s = sent(&mut core);
        assert_eq!(sent(&mut core), "", "one command at a time");
        got.push(s);
        core.feed(b"\r", 2_000, &mut out);
    }
    assert_eq!(got, ["C\r", "S6\r", "Y2\r", "Z1\r", "O\r"]);
    assert!(core.ready());
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(core.deadline(), None, "no polling by default");
}

#[test]
fn handshake_tolerates_bel_on_close_and_timestamps_but_not_on_bitrate() {
    let mut core = Slcan::new(&cfg());
    let mut out = Output::default();
    core.opened(0);
    assert_eq!(sent(&mut core), "C\r");
    core.feed(&[BEL], 1, &mut out);
    assert!(out.is_empty(), "BEL on C: already closed");
    assert_eq!(sent(&mut core), "S6\r");
    core.feed(b"\r", 2, &mut out);
    assert_eq!(sent(&mut core), "Z1\r");
    core.feed(&[BEL], 3, &mut out);
    assert_eq!(out.errors, vec![SlcanError::Refused("Z1".into())]);
    assert_eq!(sent(&mut core), "L\r");
    core.feed(b"\r", 4, &mut out);
    assert!(core.ready());

    let mut core = Slcan::new(&cfg());
    let mut out = Output::default();
    core.opened(0);
    sent(&mut core);
    core.feed(b"\r", 1, &mut out);
    assert_eq!(sent(&mut core), "S6\r");
    core.feed(&[BEL], 2, &mut out);
    assert_eq!(out.fatal, Some(SlcanError::Refused("S6".into())));
    assert!(!core.ready());
}

#[test]
fn silent_adapter_fails_the_handshake_at_the_deadline() {
    let mut core = Slcan::new(&cfg());
    let mut out = Output::default();
    core.opened(10);
    sent(&mut core);
    let d = core.deadline().unwrap();
    assert_eq!(d, 10 + 1_000_000);
    core.timeout(d - 1, &mut out);
    assert!(out.fatal.is_none());
    core.timeout(d, &mut out);
    assert!(matches!(out.fatal, Some(SlcanError::NoReply { ref command, .. }) if command == "C"));
}

fn open_core(c: &SlcanConfig, now: u64) -> Slcan {
    let mut core = Slcan::new(c);
    let mut out = Output::default();
    core.opened(now);
    while !core.ready() {
        assert_ne!(sent(&mut core), "");
        core.feed(b"\r", now, &mut out);
    }
    assert!(out.is_empty());
    core
}

#[test]
fn frames_are_stamped_from_the_unwrapped_adapter_clock() {
    let h = 1_700_000_000_000_000u64;
    let mut core = open_core(&cfg(), h);
    let mut out = Output::default();
    let f = CanFrame::classic(0x100, false, &[1]).unwrap();
    let line = |ts| {
        let mut b = Vec::new();
        encode_frame(&f, Some(ts), &mut b).unwrap();
        b
    };
    let first = line(59_000);
    core.feed(&first[..7], h, &mut out);
    core.feed(&first[7..], h + 300, &mut out);
    // 59 000 → 500: the counter wrapped; 1.5 s later by the adapter clock.
    core.feed(&line(500), h + 1_400_000, &mut out);
    // 150 s of silence: two and a half wraps, resolved by the host clock.
    core.feed(&line(30_500), h + 151_450_000, &mut out);
    // Received 2 s late (host stalled): more than 1 s off, the clock re-anchors.
    core.feed(&line(31_500), h + 154_500_000, &mut out);
    let ts: Vec<u64> = out.readings.iter().map(|r| r.t_us() - h).collect();
    assert_eq!(ts, vec![300, 1_500_300, 151_500_300, 154_500_000]);
    assert!(out.errors.is_empty());
}

#[test]
fn frames_keep_the_adapter_spacing() {
    let h = 1_700_000_000_000_000u64;
    let mut core = open_core(&cfg(), h);
    let mut out = Output::default();
    let f = CanFrame::classic(0x100, false, &[1]).unwrap();
    for (i, ts) in [59_990u16, 59_995, 0, 7].into_iter().enumerate() {
        let mut b = Vec::new();
        encode_frame(&f, Some(ts), &mut b).unwrap();
        core.feed(&b, h + 3_000 + i as u64 * 6_000, &mut out);
    }
    let ts: Vec<u64> = out
        .readings
        .iter()
        .map(|r| r.t_us() - (h + 3_000))
        .collect();
    assert_eq!(ts, vec![0, 5_000, 10_000, 17_000]);
}

#[test]
fn bad_lines_are_counted_and_the_first_fragment_is_ignored() {
    let mut core = open_core(&cfg(), 0);
    let mut out = Output::default();
    core.opened(0);
    // Fragment of a frame the adapter was sending when we opened: ignored, not an error.
    core.feed(b"A0B1\r", 1, &mut out);
    assert_eq!((out.ignored, out.errors.len()), (1, 0));
    while !core.ready() {
        sent(&mut core);
        core.feed(b"\r", 2, &mut out);
    }
    core.feed(b"t1232A\rt12300\rq\r", 3, &mut out);
    assert_eq!(out.errors.len(), 3, "{:?}", out.errors);
    assert_eq!(out.readings.len(), 0);
    assert!(out.errors[0].to_string().contains("t1232A"));
    core.feed(&[b'7'; 400], 4, &mut out);
    core.feed(b"\rt1230\r", 5, &mut out);
    assert_eq!(
        out.errors.last(),
        Some(&SlcanError::Overlong {
            len: 400,
            max: MAX_LINE
        })
    );
    assert_eq!(
        out.readings.len(),
        1,
        "decoding resumes after the long line"
    );
    core.feed(&[BEL], 6, &mut out);
    assert_eq!(out.errors.last(), Some(&SlcanError::Bell));
}

#[test]
fn status_polling_detects_a_silent_adapter_and_stops_when_refused() {
    let mut c = cfg();
    c.status_poll = Some(Duration::from_millis(100));
    let mut core = open_core(&c, 0);
    let mut out = Output::default();
    assert_eq!(core.deadline(), Some(100_000));
    core.timeout(100_000, &mut out);
    assert_eq!(sent(&mut core), "F\r");
    core.feed(b"F08\r", 100_500, &mut out);
    assert_eq!((out.readings.len(), out.overruns), (1, 1));
    assert_eq!(core.deadline(), Some(200_000));
    core.timeout(200_000, &mut out);
    assert_eq!(sent(&mut core), "F\r");
    core.feed(b"F00\r", 200_100, &mut out);
    assert_eq!(out.readings.len(), 1, "no flags, no frame");
    core.timeout(300_000, &mut out);
    assert_eq!(sent(&mut core), "F\r");
    core.timeout(1_300_000, &mut out);
    assert!(matches!(out.fatal, Some(SlcanError::NoReply { ref command, .. }) if command == "F"));

    let mut core = open_core(&c, 0);
    let mut out = Output::default();
    core.timeout(100_000, &mut out);
    sent(&mut core);
    core.feed(&[BEL], 100_100, &mut out);
    assert_eq!(out.errors, vec![SlcanError::Refused("F".into())]);
    assert_eq!(core.deadline(), None, "polling stopped");
}

fn arb_frame() -> impl Strategy<Value = CanFrame> {
    let id = (any::<bool>(), any::<u32>()).prop_map(|(ext, id)| {
        if ext {
            (true, id & 0x1fff_ffff)
        } else {
            (false, id & 0x7ff)
        }
    });
    (
        id,
        0u8..4,
        proptest::collection::vec(any::<u8>(), 0..=64),
        0usize..16,
    )
        .prop_map(|((ext, id), kind, data, fd_code)| match kind {
            0 => CanFrame::classic(id, ext, &data[..data.len().min(8)]).unwrap(),
            1 => CanFrame::remote(id, ext, (data.len() % 9) as u8).unwrap(),
            k => {
                let len = usize::from(FD_LENS[fd_code]).min(data.len());
                let len = FD_LENS
                    .iter()
                    .rev()
                    .find(|&&l| usize::from(l) <= len)
                    .copied()
                    .unwrap_or(0);
                let brs = if k == 3 { flags::BRS } else { 0 };
                CanFrame::fd(id, ext, brs, &data[..usize::from(len)]).unwrap()
            }
        })
}

proptest! {
    #[test]
    fn frames_round_trip(f in arb_frame(), ts in proptest::option::of(0u16..60_000)) {
        let mut v = Vec::new();
        encode_frame(&f, ts, &mut v).unwrap();
        prop_assert_eq!(v.pop(), Some(b'\r'));
        prop_assert_eq!(decode_line(&v), Ok(Message::Frame { frame: f, timestamp_ms: ts }));
    }

    #[test]
    fn decode_never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_line(&line);
    }

    /// Any byte stream, however chunked: no panic, and every frame line in it comes out once.
    #[test]
    fn feeding_garbage_and_frames_in_any_chunks(
        frames in proptest::collection::vec((arb_frame(), any::<bool>()), 0..20),
        noise in proptest::collection::vec(any::<u8>(), 0..300),
        cut in 1usize..50,
    ) {
        let mut core = open_core(&cfg(), 1);
        let mut bytes = noise.clone();
        bytes.push(b'\r');
        for (f, with_ts) in &frames {
            encode_frame(f, with_ts.then_some(1234), &mut bytes).unwrap();
        }
        let mut out = Output::default();
        for chunk in bytes.chunks(cut) {
            core.feed(chunk, 2, &mut out);
        }
        let got: Vec<CanFrame> = out
            .readings
            .iter()
            .filter_map(|r| match r { Reading::Frame(f) => Some(f.frame), Reading::Value(_) => None })
            .filter(|f| !f.is_error())
            .collect();
        let want: Vec<CanFrame> = frames.iter().map(|(f, _)| *f).collect();
        prop_assert!(got.ends_with(&want), "got {} want {}", got.len(), want.len());
    }
}

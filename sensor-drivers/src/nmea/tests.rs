#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/nmea");

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{DATA}/{rel}")).expect("test data (../shared/data/nmea)")
}

/// The sentences of a log, `#` comment lines skipped, each with its line end.
fn log_bytes(rel: &str) -> Vec<u8> {
    read(rel)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect()
}

fn decode_all(bytes: &[u8]) -> NmeaOutput {
    let mut d = NmeaDecoder::new();
    let mut out = NmeaOutput::default();
    d.push(bytes, 42, &mut out);
    d.flush(&mut out);
    out
}

fn with_checksum(body: &str) -> String {
    let c = body.bytes().fold(0u8, |c, b| c ^ b);
    format!("${body}*{c:02X}\r\n")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> u64 {
    let t = NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_micro_opt(h, mi, s, us)
        .unwrap();
    t.and_utc().timestamp_micros() as u64
}

/// gpsd's `time` field, e.g. `2020-03-18T13:28:19.600Z`.
fn parse_gpsd_time(s: &str) -> u64 {
    let n = |a: usize, b: usize| s[a..b].parse::<u32>().unwrap();
    let frac = &s[20..s.len() - 1];
    let us = format!("{frac:0<6}")[..6].parse::<u32>().unwrap();
    utc(
        n(0, 4) as i32,
        n(5, 7),
        n(8, 10),
        n(11, 13),
        n(14, 16),
        n(17, 19),
        us,
    )
}

fn close(a: Option<f64>, b: Option<f64>, tol: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= tol,
        (None, None) => true,
        _ => false,
    }
}

/// Compares our fixes with gpsd's TPV reports in a `.chk` oracle: every TPV with a time has
/// exactly one fix of that time, with the same position, altitude (MSL), speed and track.
fn check_against_gpsd(log: &str) -> usize {
    let out = decode_all(&log_bytes(log));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let ours: BTreeMap<u64, &Fix> = out
        .fixes
        .iter()
        .filter_map(|f| f.utc_us.map(|t| (t, f)))
        .collect();
    assert_eq!(
        ours.len(),
        out.fixes.iter().filter(|f| f.utc_us.is_some()).count(),
        "one fix per epoch"
    );
    let mut tpv: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    for line in read(&format!("{log}.chk")).lines() {
        if !line.starts_with('{') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["class"] == "TPV"
            && let Some(t) = v["time"].as_str()
        {
            tpv.insert(parse_gpsd_time(t), v);
        }
    }
    assert!(!tpv.is_empty());
    // gpsd reports an epoch when a sentence ends its cycle (here GLL or ZDA, which we do not
    // use); the last epoch of each section of a log has no such sentence after it, so gpsd never
    // reports it. Every other epoch must be the same.
    let last_of_section = section_final_epochs(log);
    for t in tpv.keys() {
        assert!(ours.contains_key(t), "gpsd reports {t}, we have no fix");
    }
    for t in ours.keys() {
        assert!(
            tpv.contains_key(t) || last_of_section.contains(t),
            "we have {t}, gpsd does not"
        );
    }
    for (t, v) in &tpv {
        let f = ours[t];
        let field = |k: &str| v[k].as_f64();
        assert!(
            close(f.latitude_deg, field("lat"), 1e-9),
            "{t}: lat {f:?} {v}"
        );
        assert!(
            close(f.longitude_deg, field("lon"), 1e-9),
            "{t}: lon {f:?} {v}"
        );
        assert!(
            close(f.altitude_m, field("altMSL"), 1e-6),
            "{t}: alt {f:?} {v}"
        );
        // gpsd prints speed with 3 decimals and track with 4.
        assert!(
            close(f.speed_mps, field("speed"), 5e-4 + 1e-9),
            "{t}: speed {f:?} {v}"
        );
        assert!(
            close(f.course_deg, field("track"), 5e-5 + 1e-9),
            "{t}: track {f:?} {v}"
        );
        let mode = v["mode"].as_u64().unwrap();
        assert_eq!(
            f.quality > 0,
            mode >= 2,
            "{t}: quality {} mode {mode}",
            f.quality
        );
    }
    tpv.len()
}

/// UTC times (µs) of the last RMC/GGA epoch before each `#` comment block and at the end.
fn section_final_epochs(log: &str) -> Vec<u64> {
    let mut finals = Vec::new();
    let mut d = NmeaDecoder::new();
    let mut last = None;
    for line in read(log).lines() {
        if line.starts_with('#') {
            finals.extend(last.take());
            continue;
        }
        let mut out = NmeaOutput::default();
        d.push(format!("{line}\r\n").as_bytes(), 0, &mut out);
        d.flush(&mut out);
        for f in &out.fixes {
            if f.utc_us.is_some() {
                last = f.utc_us;
            }
        }
    }
    finals.extend(last);
    finals
}

#[test]
fn trimble_rtk_log_matches_gpsd() {
    let n = check_against_gpsd("gpsd/nmea-rtk.log");
    assert_eq!(n, 122);
    let out = decode_all(&log_bytes("gpsd/nmea-rtk.log"));
    let rtk = out.fixes.iter().filter(|f| f.quality == 4).count();
    assert!(rtk > 0, "the log turns to RTK fixes (GGA quality 4)");
    assert!(out.fixes.iter().any(|f| f.quality == 2));
}

#[test]
fn ublox_log_matches_gpsd_and_reports_no_fix_while_indoors() {
    let n = check_against_gpsd("gpsd/bt451.log");
    assert_eq!(n, 12, "epochs gpsd reports with a time");
    let out = decode_all(&log_bytes("gpsd/bt451.log"));
    let no_fix: Vec<&Fix> = out.fixes.iter().filter(|f| f.quality == 0).collect();
    assert_eq!(no_fix.len(), 4, "4 epochs without fix, indoors");
    for f in no_fix {
        assert_eq!((f.utc_us, f.latitude_deg, f.speed_mps), (None, None, None));
        assert_eq!(f.t_us(), 42, "no time: host time");
        assert_eq!(f.hdop, Some(99.99));
    }
}

#[test]
fn quectel_log_with_proprietary_sentences() {
    let text = read("aerorust_nmea/nmea_with_sat_info.log");
    let out = decode_all(&log_bytes("aerorust_nmea/nmea_with_sat_info.log"));
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let rmc = text.lines().filter(|l| l.get(3..6) == Some("RMC")).count();
    let gga = text.lines().filter(|l| l.get(3..6) == Some("GGA")).count();
    assert_eq!((rmc, gga), (37, 37));
    assert_eq!(out.fixes.len(), 37, "one fix per RMC+GGA pair");
    assert_eq!(out.ignored as usize, text.lines().count() - rmc - gga);
    assert_eq!(out.fixes[0].quality, 0);
    let f = &out.fixes[1];
    // $GNRMC,052345.77,A,4210.472433,N,02445.362882,E,0.0,,130422,... / $GNGGA,...,1,12,0.7,171.9,M
    assert_eq!(f.utc_us, Some(utc(2022, 4, 13, 5, 23, 45, 770_000)));
    assert!((f.latitude_deg.unwrap() - (42.0 + 10.472433 / 60.0)).abs() < 1e-12);
    assert!((f.longitude_deg.unwrap() - (24.0 + 45.362882 / 60.0)).abs() < 1e-12);
    assert_eq!(
        (f.altitude_m, f.speed_mps, f.course_deg),
        (Some(171.9), Some(0.0), None)
    );
    assert_eq!((f.quality, f.satellites, f.hdop), (1, Some(12), Some(0.7)));
    let mut s = Vec::new();
    f.samples(&mut s);
    let chans: Vec<u16> = s.iter().map(|s| s.channel).collect();
    assert_eq!(chans, vec![0, 1, 2, 3, 5, 6, 7, 8]);
    assert!(s.iter().all(|s| s.t_us == f.utc_us.unwrap()));
    assert_eq!(s[7].value, 1_649_827_425.77);
}

const RMC: &str = "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W";
const GGA: &str = "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,";

#[test]
fn checksum_errors_are_counted_and_proprietary_sentences_ignored() {
    let mut bad = with_checksum(RMC);
    bad.replace_range(8..9, "3");
    let input = [
        bad.clone(),
        format!("${RMC}\r\n"),
        format!("${RMC}*zz\r\n"),
        with_checksum("PQGSV,1,1,0,0"),
        with_checksum("BDGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
        with_checksum("GPGSV,1,1,00"),
        "!AIVDM,1,1,,A,13aGmP0P00PD;88MD5MTDww@2<0L,0*23\r\n".into(),
        "garbage\r\n".into(),
        with_checksum("GPRMC,xx"),
    ]
    .concat();
    let mut d = NmeaDecoder::new();
    let mut out = NmeaOutput::default();
    d.push(b"23519.00,A,48*11\r\n", 0, &mut out);
    assert_eq!(
        (out.ignored, out.errors.len()),
        (1, 0),
        "fragment after open"
    );
    d.push(input.as_bytes(), 0, &mut out);
    d.flush(&mut out);
    assert!(out.fixes.is_empty());
    assert_eq!(out.ignored, 1 + 4);
    let kinds: Vec<String> = out
        .errors
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Checksum",
            "MissingChecksum",
            "MissingChecksum",
            "NoStart",
            "Parse"
        ]
    );
    assert!(
        out.errors[0].to_string().contains("checksum"),
        "{}",
        out.errors[0]
    );
    let mut long = vec![b'$'; 300];
    long.extend_from_slice(b"\r\n");
    d.push(&long, 0, &mut out);
    assert!(matches!(
        out.errors.last(),
        Some(NmeaError::Overlong { .. })
    ));
}

#[test]
fn coordinates_out_of_range_are_rejected() {
    let lat = GGA.replace("4807.038", "9507.038");
    let lon = RMC.replace("01131.000", "18131.000");
    let nan = GGA.replace("4807.038", "48nan");
    let input = [
        with_checksum(&lat),
        with_checksum(&lon),
        with_checksum(&nan),
    ]
    .concat();
    let out = decode_all(input.as_bytes());
    assert!(out.fixes.is_empty());
    let msgs: Vec<String> = out.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].contains("latitude 95.11"), "{}", msgs[0]);
    assert!(msgs[1].contains("longitude 181.51"), "{}", msgs[1]);
}

#[test]
fn rmc_and_gga_of_one_epoch_merge_in_either_order() {
    for order in [[RMC, GGA], [GGA, RMC]] {
        let input: String = order.iter().map(|s| with_checksum(s)).collect();
        let out = decode_all(input.as_bytes());
        assert_eq!(out.fixes.len(), 1);
        let f = &out.fixes[0];
        assert_eq!(f.utc_us, Some(utc(1994, 3, 23, 12, 35, 19, 0)));
        assert_eq!(f.altitude_m, Some(545.4));
        assert!((f.speed_mps.unwrap() - 22.4 * 1852.0 / 3600.0).abs() < 1e-12);
        assert_eq!((f.course_deg, f.quality), (Some(84.4), 1));
    }
}

#[test]
fn fixes_are_emitted_when_complete_at_the_next_epoch_or_at_the_deadline() {
    let mut d = NmeaDecoder::new();
    let mut out = NmeaOutput::default();
    d.push(with_checksum(RMC).as_bytes(), 1_000, &mut out);
    assert!(out.fixes.is_empty());
    assert_eq!(d.deadline(), Some(1_001_000));
    d.push(with_checksum(GGA).as_bytes(), 2_000, &mut out);
    assert_eq!(out.fixes.len(), 1, "complete: emitted at once");
    assert_eq!(d.deadline(), None);
    // A late duplicate of the same epoch (another talker) is ignored.
    d.push(
        with_checksum(&GGA.replace("GPGGA", "GNGGA")).as_bytes(),
        3_000,
        &mut out,
    );
    assert_eq!((out.fixes.len(), out.ignored), (1, 1));
    // GGA-only epochs: the next epoch's sentence or the deadline emits them; the date is borrowed.
    let gga2 = GGA.replace("123519.00", "123520.00");
    let gga3 = GGA.replace("123519.00", "123521.00");
    d.push(with_checksum(&gga2).as_bytes(), 4_000, &mut out);
    d.push(with_checksum(&gga3).as_bytes(), 5_000, &mut out);
    assert_eq!(out.fixes.len(), 2);
    assert_eq!(out.fixes[1].utc_us, Some(utc(1994, 3, 23, 12, 35, 20, 0)));
    assert_eq!(out.fixes[1].speed_mps, None);
    d.timeout(1_004_999, &mut out);
    assert_eq!(out.fixes.len(), 2);
    d.timeout(1_005_000, &mut out);
    assert_eq!(out.fixes.len(), 3);
    // After midnight the borrowed date rolls over.
    let gga4 = GGA.replace("123519.00", "000001.00");
    d.push(with_checksum(&gga4).as_bytes(), 6_000, &mut out);
    d.flush(&mut out);
    assert_eq!(out.fixes[3].utc_us, Some(utc(1994, 3, 24, 0, 0, 1, 0)));
    assert!(out.errors.is_empty());
}

#[test]
fn epochs_at_25_hz_stay_apart() {
    let mut input = String::new();
    for k in 0..50u32 {
        let cs = k * 4;
        let t = format!("1235{:02}.{:02}", 19 + cs / 100, cs % 100);
        input += &with_checksum(&GGA.replace("123519.00", &t));
        input += &with_checksum(&RMC.replace("123519.00", &t));
    }
    let out = decode_all(input.as_bytes());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let t: Vec<u64> = out.fixes.iter().map(|f| f.utc_us.unwrap()).collect();
    assert_eq!(t.len(), 50);
    assert!(t.windows(2).all(|w| w[1] - w[0] == 40_000), "{t:?}");
    assert_eq!(t[0], utc(1994, 3, 23, 12, 35, 19, 0));
}

#[test]
fn an_invalid_rmc_gives_no_position() {
    let v = "GPRMC,123519.00,V,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W";
    let out = decode_all(with_checksum(v).as_bytes());
    let f = &out.fixes[0];
    assert_eq!((f.quality, f.latitude_deg, f.speed_mps), (0, None, None));
    assert_eq!(f.utc_us, Some(utc(1994, 3, 23, 12, 35, 19, 0)));
    let mut s = Vec::new();
    f.samples(&mut s);
    let chans: Vec<u16> = s.iter().map(|s| s.channel).collect();
    assert_eq!(chans, vec![channel::FIX_QUALITY, channel::UTC_TIME]);
}

#[test]
fn the_protocol_emits_samples_and_counts() {
    let mut p = Nmea::new();
    let mut out = Output::default();
    p.opened(0);
    let input = format!(
        "{}{}{}",
        with_checksum(RMC),
        with_checksum("PUBX,00"),
        with_checksum(GGA)
    );
    p.feed(input.as_bytes(), 7, &mut out);
    assert_eq!(out.readings.len(), 9);
    assert_eq!(out.ignored, 1);
    let chans: Vec<u16> = out
        .readings
        .iter()
        .map(|r| match r {
            Reading::Value(s) => s.channel,
            Reading::Frame(_) => u16::MAX,
        })
        .collect();
    assert_eq!(chans, (0..9).collect::<Vec<u16>>());
    assert_eq!(CHANNELS.len(), 9);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 1usize..64) {
        let mut d = NmeaDecoder::new();
        let mut out = NmeaOutput::default();
        for c in data.chunks(cut) {
            d.push(c, 0, &mut out);
        }
        d.timeout(u64::MAX, &mut out);
    }

    /// The same fixes however the stream is cut into reads.
    #[test]
    fn chunking_does_not_change_fixes(cut in 1usize..300) {
        let bytes = log_bytes("gpsd/bt451.log");
        let want = decode_all(&bytes).fixes;
        let mut d = NmeaDecoder::new();
        let mut out = NmeaOutput::default();
        for c in bytes.chunks(cut) {
            d.push(c, 42, &mut out);
        }
        d.flush(&mut out);
        prop_assert_eq!(out.fixes, want);
    }

    /// One corrupted byte never produces a wrong value: the damaged sentence is rejected and the
    /// fix, if any, carries only values of the intact sentence.
    #[test]
    fn a_corrupted_byte_never_yields_a_wrong_value(which in 0usize..2, at in 0usize..80, byte in any::<u8>()) {
        let good = decode_all(format!("{}{}", with_checksum(RMC), with_checksum(GGA)).as_bytes()).fixes;
        let mut lines = [with_checksum(RMC).into_bytes(), with_checksum(GGA).into_bytes()];
        let line = &mut lines[which];
        let at = at % (line.len() - 2);
        prop_assume!(!line[at].eq_ignore_ascii_case(&byte));
        line[at] = byte;
        let out = decode_all(&lines.concat());
        let g = &good[0];
        for f in &out.fixes {
            prop_assert!(f.latitude_deg.is_none() || f.latitude_deg == g.latitude_deg);
            prop_assert!(f.longitude_deg.is_none() || f.longitude_deg == g.longitude_deg);
            prop_assert!(f.altitude_m.is_none() || f.altitude_m == g.altitude_m);
            prop_assert!(f.speed_mps.is_none() || f.speed_mps == g.speed_mps);
            prop_assert!(f.course_deg.is_none() || f.course_deg == g.course_deg);
            prop_assert!(f.satellites.is_none() || f.satellites == g.satellites);
            prop_assert!(f.hdop.is_none() || f.hdop == g.hdop);
            prop_assert!(f.utc_us.is_none() || f.utc_us == g.utc_us);
        }
    }
}

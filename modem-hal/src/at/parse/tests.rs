//! Parser behaviour beyond the captured vectors: variants, errors, merging, and properties.

use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Parsed {
    parse_text(text)
}

#[test]
fn rm5xx_lte_20_fields_with_cqi_and_tx_power() {
    let p = parse(
        "+QENG: \"servingcell\",\"CONNECT\",\"LTE\",\"TDD\",460,00,1A2B3C4,100,38950,41,5,5,2D1,-95,-10,-65,8,12,230,40\nOK\n",
    );
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    let s = p.report.serving.expect("serving");
    assert_eq!(s.state.as_deref(), Some("CONNECT"));
    assert_eq!(s.duplex.as_deref(), Some("TDD"));
    assert_eq!(
        (s.cqi, s.tx_power, s.srxlev),
        (Some(12), Some(230), Some(40))
    );
    assert_eq!(s.tac, Some(0x2D1));
    assert_eq!(s.band, Some(41));
}

#[test]
fn wrong_field_count_is_a_typed_error() {
    let p = parse("+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,4CAA71F\n");
    assert_eq!(p.unparsed.len(), 1);
    assert!(
        p.unparsed[0]
            .error
            .contains("expected 18 or 20 fields, got 7"),
        "{}",
        p.unparsed[0].error
    );
    assert_eq!(p.unparsed[0].line, 1);
    assert!(p.report.serving.is_none());
}

#[test]
fn bad_hex_names_the_field() {
    let p = parse(
        "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,XYZ,28,1500,3,3,3,77B8,-84,-9,-56,21,35\n",
    );
    assert_eq!(p.unparsed.len(), 1);
    assert!(
        p.unparsed[0].error.contains("cellID"),
        "{}",
        p.unparsed[0].error
    );
}

#[test]
fn placeholders_and_sentinels_become_absent() {
    let p = parse(
        "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,-,28,1500,3,3,9,-,-32768,-,-,-,-\n",
    );
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    let s = p.report.serving.expect("serving");
    assert_eq!(
        (s.cell_id, s.tac, s.rsrp_dbm, s.sinr_db, s.srxlev),
        (None, None, None, None, None)
    );
    assert_eq!(s.bandwidth_mhz, None, "DL bandwidth enum 9 is out of range");
    let j = serde_json::to_value(&s).expect("json");
    assert!(j.get("rsrp_dbm").is_none() && j.get("tac").is_none());
}

#[test]
fn search_state_only() {
    let p = parse("+QENG: \"servingcell\",\"SEARCH\"\nOK\n");
    let s = p.report.serving.expect("serving");
    assert_eq!(s.state.as_deref(), Some("SEARCH"));
    assert_eq!(s.rat, None);
}

#[test]
fn nsa_anchor_without_nr_line_is_lte() {
    let p = parse(
        "+QENG: \"servingcell\",\"NOCONN\"\n+QENG: \"LTE\",\"FDD\",515,03,3359966,1,150,1,5,5,4AA3,-89,-13,-58,16,15,20,-\n",
    );
    let s = p.report.serving.expect("serving");
    assert_eq!(s.rat.as_deref(), Some("LTE"));
    assert_eq!(s.state.as_deref(), Some("NOCONN"));
    assert!(s.nr.is_none());
}

#[test]
fn qeng_sinr_scale_option() {
    let text = "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,4CAA71F,28,1500,3,3,3,77B8,-84,-9,-56,150,35\n";
    let db = parse_text(text).report.serving.expect("serving");
    assert_eq!(db.sinr_db, None, "150 dB is out of range");
    assert_eq!(db.sinr_raw, Some(150.0));
    let opts = ParseOptions {
        qeng_lte_sinr: SinrScale::Fifths,
        ..ParseOptions::default()
    };
    let f = parse_text_with(text, opts).report.serving.expect("serving");
    assert_eq!(f.sinr_db, Some(10.0));
}

#[test]
fn qcsq_lte_sinr_as_db_on_firmware_that_prints_db() {
    let opts = ParseOptions {
        qcsq_lte_sinr: SinrScale::Db,
        ..ParseOptions::default()
    };
    let p = parse_text_with("+QCSQ: \"LTE\",-69,-102,-9,-12\n", opts);
    assert_eq!(p.report.signal.qcsq[0].sinr_db, Some(-9.0));
    // Default: raw 55 is −9 dB (the QDC507 capture of RADIO.md §2.4).
    let p = parse("+QCSQ: \"LTE\",-69,-102,55,-12\n");
    assert_eq!(p.report.signal.qcsq[0].sinr_db, Some(-9.0));
}

#[test]
fn qcsq_nsa_keeps_both_lines_and_a_new_response_replaces_them() {
    let p = parse("+QCSQ: \"LTE\",-69,-102,150,-12\n+QCSQ: \"NR5G\",-75,4,-11\nOK\n");
    assert_eq!(p.report.signal.qcsq.len(), 2);
    let p = parse(
        "+QCSQ: \"LTE\",-69,-102,150,-12\n+QCSQ: \"NR5G\",-75,4,-11\nOK\nAT+QCSQ\n+QCSQ: \"NOSERVICE\"\nOK\n",
    );
    assert_eq!(p.report.signal.qcsq.len(), 1);
}

#[test]
fn errors_and_echo_and_unknown_lines() {
    let p = parse(
        "AT+QENG=\"servingcell\"\n+CME ERROR: 30\nAT+FOO\n+FOO: 1\nhello\nAT+X\n+CME ERROR: no network service\n",
    );
    assert_eq!(p.report.errors.len(), 2);
    assert_eq!(p.report.errors[0].code, Some(30));
    assert_eq!(p.report.errors[0].message, "no network service");
    assert_eq!(
        p.report.errors[0].command.as_deref(),
        Some("AT+QENG=\"servingcell\"")
    );
    assert_eq!(p.report.errors[1].code, None);
    let lines: Vec<usize> = p.unparsed.iter().map(|u| u.line).collect();
    assert_eq!(lines, vec![4, 5]);
}

#[test]
fn urcs_interleaved() {
    let p = parse(
        "RDY\n+CPIN: READY\n+QUSIM: 1\n+QIND: SMS DONE\n+QIND: \"csq\",20,99\n+QIND: \"act\",\"LTE\"\n+CEREG: 5\nPOWERED DOWN\n",
    );
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    assert_eq!(
        p.report.signal.csq.as_ref().and_then(|c| c.rssi_dbm),
        Some(-73.0)
    );
    assert_eq!(p.report.registration.as_ref().map(|r| r.stat), Some(5));
}

#[test]
fn c5greg_and_crlf() {
    let p = parse("AT+C5GREG?\r\n+C5GREG: 2,1,\"870100\",\"187461035\",11\r\n\r\nOK\r\n");
    let r = p.report.registration.expect("reg");
    assert_eq!(r.source, "C5GREG");
    assert_eq!(
        (r.tac, r.cell_id, r.act),
        (Some(0x870100), Some(0x187461035), Some(11))
    );
}

#[test]
fn qnwlock_5g_locked_and_released() {
    let p = parse("+QNWLOCK: \"common/5g\",264,504990,30,41\n");
    let nr = p.report.lock.and_then(|l| l.nr).expect("nr lock");
    assert!(nr.locked);
    assert_eq!(
        (nr.pci, nr.arfcn, nr.scs_khz, nr.band),
        (Some(264), Some(504990), Some(30), Some(41))
    );
    let p = parse("+QNWLOCK: \"common/5g\",0\n");
    assert_eq!(
        p.report.lock.and_then(|l| l.nr).map(|n| n.locked),
        Some(false)
    );
    let p = parse("+QNWLOCK: \"common/4g\",2,1350,195\n");
    assert!(
        p.unparsed[0].error.contains("expected 6 fields"),
        "{}",
        p.unparsed[0].error
    );
    let p = parse("+QNWLOCK: \"common/4g\",11\n");
    assert!(p.unparsed[0].error.contains("num_cells"));
}

#[test]
fn gstatus_full_mc7455_layout() {
    let text = "!GSTATUS: \nCurrent Time:  5554\t\tTemperature: 38\nReset Counter: 1\t\tMode:        ONLINE         \nSystem mode:   LTE        \tPS state:    Attached     \nLTE band:      B3     \t\tLTE bw:      20 MHz  \nLTE Rx chan:   1300\t\tLTE Tx chan:   19300\nEMM state:     Registered     \tNormal Service \n\nPCC RxM RSSI:  -65\t\tPCC RxM RSRP:  -95\nTx Power:      --\t\tTAC:         4ba4 (19364)\nRSRQ (dB):     -12.6\t\tCell ID:     0129a815 (19507221)\nSINR (dB):      9.2\nOK\n";
    let p = parse(text);
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    let s = p.report.serving.expect("serving");
    assert_eq!(
        (s.band, s.earfcn, s.tac, s.cell_id),
        (Some(3), Some(1300), Some(19364), Some(19507221))
    );
    assert_eq!((s.rsrp_dbm, s.sinr_db), (Some(-95.0), Some(9.2)));
}

#[test]
fn lteinfo_neighbour_tables() {
    let text = "!LTEINFO: \nServing:   EARFCN MCC MNC   TAC      CID Bd D U SNR PCI  RSRQ   RSRP   RSSI RXLV\n             100 262  01 51207 01A2D001  1 5 5   5  43 -12.1  -96.3  -61.7 --\n\nIntraFreq:    PCI  RSRQ   RSRP   RSSI RXLV\n               43 -12.1  -96.3  -61.7 --\n               44 -15.0 -101.0  -70.0 10\nInterFreq:  EARFCN ThresholdLow ThresholdHi Priority PCI  RSRQ   RSRP   RSSI RXLV\n            1300            0           0        4 101 -11.0  -99.0  -70.0 12\nWCDMA:     UARFCN ThreshL ThreshH Prio PSC   RSCP  ECN0 RXLV\n  10762 0 0 2 100 -90 -10 20\nOK\n";
    let p = parse(text);
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    assert_eq!(
        p.report.neighbours.len(),
        2,
        "the serving PCI 43 is not a neighbour"
    );
    assert_eq!(
        (p.report.neighbours[0].earfcn, p.report.neighbours[0].pci),
        (Some(100), Some(44))
    );
    assert_eq!(
        (p.report.neighbours[1].earfcn, p.report.neighbours[1].pci),
        (Some(1300), Some(101))
    );
    let p = parse("!LTEINFO:\nServing: EARFCN PCI\n 1 2 3\n");
    assert!(p.unparsed[0].error.contains("expected 2 fields, got 3"));
}

#[test]
fn mmcli_single_line_and_error() {
    let p = parse("response: '+CSQ: 16,99'\n");
    assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
    assert!(p.report.signal.csq.is_some());
    let p = parse("response: ''\n");
    assert!(p.unparsed.is_empty() && p.report.is_empty());
}

#[test]
fn huge_line_is_cut_in_unparsed() {
    let line = "x".repeat(10_000);
    let p = parse(&line);
    assert_eq!(p.unparsed[0].text.len(), MAX_KEPT);
}

fn qeng_lte(c: &crate::radio::ServingCell, sinr: i64) -> String {
    let o = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x}"));
    format!(
        "+QENG: \"servingcell\",\"{}\",\"LTE\",\"FDD\",{},{:02},{:X},{},{},{},3,3,{:X},{},{},{},{},{}",
        c.state.as_deref().unwrap_or("NOCONN"),
        c.mcc.unwrap_or(0),
        c.mnc.unwrap_or(0),
        c.cell_id.unwrap_or(0),
        c.pci.unwrap_or(0),
        c.earfcn.unwrap_or(0),
        c.band.unwrap_or(0),
        c.tac.unwrap_or(0),
        o(c.rsrp_dbm),
        o(c.rsrq_db),
        o(c.rssi_dbm),
        sinr,
        c.srxlev.map_or("-".to_string(), |x| x.to_string()),
    )
}

proptest! {
    #[test]
    fn never_panics_on_any_text(s in "\\PC*") {
        let _ = parse_text(&s);
    }

    #[test]
    fn never_panics_on_at_like_text(lines in proptest::collection::vec(
        prop_oneof![
            "\\+(QENG|QCSQ|QNWLOCK|QCFG|QIND|CSQ|CESQ|COPS|CREG|CEREG|C5GREG|CFUN|CME ERROR): ?[\"a-zA-Z0-9,()<>/ -]{0,80}",
            "!(GSTATUS|LTEINFO):",
            "[A-Za-z ]{1,12}: {1,4}[-0-9a-f.]{0,10}( {2,4}[A-Za-z ]{1,12}: {1,3}[-0-9.]{0,8})?",
            "(Serving|IntraFreq|InterFreq): ?[A-Z ]{0,40}",
            "[ 0-9A-F.-]{0,60}",
            "(response: ')?[+A-Z:\" ,0-9]{0,40}'?",
            Just("OK".to_string()),
        ], 0..20)) {
        let text = lines.join("\n");
        let p = parse_text(&text);
        prop_assert!(p.unparsed.len() <= lines.len());
        // The report always serialises and reads back.
        let j = serde_json::to_string(&p).expect("serialise");
        let back: Parsed = serde_json::from_str(&j).expect("deserialise");
        prop_assert_eq!(serde_json::to_value(&back).expect("json"), serde_json::to_value(&p).expect("json"));
    }

    #[test]
    fn lte_servingcell_round_trip(
        mcc in 1u16..=999, mnc in 0u16..=999, cell_id in 0u64..(1 << 28), pci in 0u16..=503,
        earfcn in 0u32..=65535, band in 1u16..=255, tac in 0u32..=0xFFFF,
        rsrp in -140i32..=-44, rsrq in -20i32..=-3, rssi in -120i32..=-25, sinr in -20i64..=30,
        srxlev in proptest::option::of(-50i32..=80),
    ) {
        let c = crate::radio::ServingCell {
            state: Some("NOCONN".into()), mcc: Some(mcc), mnc: Some(mnc), cell_id: Some(cell_id),
            pci: Some(pci), earfcn: Some(earfcn), band: Some(band), tac: Some(tac),
            rsrp_dbm: Some(f64::from(rsrp)), rsrq_db: Some(f64::from(rsrq)),
            rssi_dbm: Some(f64::from(rssi)), srxlev, ..Default::default()
        };
        let p = parse_text(&qeng_lte(&c, sinr));
        prop_assert!(p.unparsed.is_empty(), "{:?}", p.unparsed);
        let s = p.report.serving.expect("serving");
        prop_assert_eq!(s.mcc, c.mcc);
        prop_assert_eq!(s.mnc, c.mnc);
        prop_assert_eq!(s.cell_id, c.cell_id);
        prop_assert_eq!(s.pci, c.pci);
        prop_assert_eq!(s.earfcn, c.earfcn);
        prop_assert_eq!(s.band, c.band);
        prop_assert_eq!(s.tac, c.tac);
        prop_assert_eq!(s.rsrp_dbm, c.rsrp_dbm);
        prop_assert_eq!(s.rsrq_db, c.rsrq_db);
        prop_assert_eq!(s.rssi_dbm, c.rssi_dbm);
        prop_assert_eq!(s.sinr_db, Some(sinr as f64));
        prop_assert_eq!(s.srxlev, c.srxlev);
    }

    #[test]
    fn csq_round_trip(idx in 0u8..=31, ber in 0u8..=7) {
        let p = parse_text(&format!("+CSQ: {idx},{ber}\n"));
        let c = p.report.signal.csq.expect("csq");
        prop_assert_eq!(c.rssi_dbm, Some(-113.0 + 2.0 * f64::from(idx)));
        prop_assert_eq!(c.ber, Some(ber));
    }

    #[test]
    fn cesq_round_trip(rsrq in 0u8..=34, rsrp in 0u8..=97) {
        let p = parse_text(&format!("+CESQ: 99,99,255,255,{rsrq},{rsrp}\n"));
        let c = p.report.signal.cesq.expect("cesq");
        prop_assert_eq!(c.rsrq_db, Some(-20.0 + f64::from(rsrq) / 2.0));
        prop_assert_eq!(c.rsrp_dbm, Some(-141.0 + f64::from(rsrp)));
    }

    #[test]
    fn cereg_round_trip(stat in 0u8..=5, tac in prop_oneof![0u32..=16, 0u32..=0xFFFF], ci in 0u64..(1 << 28), quoted: bool, urc: bool) {
        let (q, n) = (if quoted { "\"" } else { "" }, if urc { "" } else { "2," });
        let line = format!("+CEREG: {n}{stat},{q}{tac:04X}{q},{q}{ci:07X}{q},7\n");
        let r = parse_text(&line).report.registration.expect("reg");
        prop_assert_eq!((r.stat, r.tac, r.cell_id, r.act), (stat, Some(tac), Some(ci), Some(7)));
        prop_assert_eq!(r.n, if urc { None } else { Some(2) });
    }
}

#[test]
fn unsupported_rat_is_reported_not_guessed() {
    let p = parse(
        "+QENG: \"servingcell\",\"NOCONN\",\"WCDMA\",460,01,5A3C,1C7B,10663,94,-80,-4,-,-,-,-,-\n",
    );
    assert!(p.report.serving.is_none());
    assert!(
        p.unparsed[0]
            .error
            .contains("unsupported variant \"WCDMA\""),
        "{}",
        p.unparsed[0].error
    );
    let p = parse("+QCFG: \"band\",0,1\n");
    assert!(
        p.unparsed[0].error.contains("+QCFG"),
        "{}",
        p.unparsed[0].error
    );
}

#[test]
fn later_servingcell_replaces_earlier() {
    let p = parse(
        "+QENG: \"servingcell\",\"NOCONN\",\"LTE\",\"FDD\",222,88,4CAA71F,28,1500,3,3,3,77B8,-84,-9,-56,21,35\nOK\n+QENG: \"servingcell\",\"SEARCH\"\nOK\n",
    );
    let s = p.report.serving.expect("serving");
    assert_eq!((s.state.as_deref(), s.pci), (Some("SEARCH"), None));
}

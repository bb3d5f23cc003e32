//! Quectel dialect: `+QENG`, `+QCSQ`, `+QNWLOCK`, `+QCFG: "nwscanmode"`, `+QIND`.

use super::fields::{self, Fields, narrow};
use super::generic;
use super::{AtParseError, ParseOptions, SinrScale};
use crate::radio::{
    LockState, LockedLteCell, LteLock, NeighbourCell, NrLeg, NrLock, Qcsq, RadioReport, ServingCell,
};

fn scale(raw: Option<f64>, s: SinrScale) -> Option<f64> {
    fields::sinr(raw.map(|r| match s {
        SinrScale::Db => r,
        SinrScale::Fifths => fields::sinr_fifths(r),
    }))
}

/// Copies every present field of `src` into `dst`.
pub(crate) fn merge_serving(dst: &mut ServingCell, src: ServingCell) {
    macro_rules! take {
        ($($f:ident),*) => { $( if src.$f.is_some() { dst.$f = src.$f; } )* };
    }
    take!(
        rat,
        state,
        duplex,
        mcc,
        mnc,
        tac,
        cell_id,
        pci,
        earfcn,
        arfcn,
        band,
        bandwidth_mhz,
        ul_bandwidth_mhz,
        scs_khz,
        rsrp_dbm,
        rsrq_db,
        rssi_dbm,
        sinr_db,
        sinr_raw,
        cqi,
        tx_power,
        srxlev,
        nr
    );
}

/// Applies one `+QENG:` line.
pub(crate) fn apply_qeng(
    r: &mut RadioReport,
    rest: &str,
    opts: &ParseOptions,
) -> Result<(), AtParseError> {
    let f = Fields::new("+QENG", rest);
    let head = f.text(0).unwrap_or("");
    match head {
        "servingcell" => {
            f.expect_count(2, 40)?;
            let state = f.string(1);
            let cell = match f.text(2) {
                None => ServingCell::default(),
                Some("LTE") => lte_serving(&f, 3, opts)?,
                Some("NR5G-SA") => nr_sa_serving(&f)?,
                Some(other) => {
                    return Err(AtParseError::Unsupported {
                        what: "+QENG servingcell",
                        variant: other.chars().take(40).collect(),
                    });
                }
            };
            r.serving = Some(ServingCell { state, ..cell });
        }
        // NR5G-NSA anchor line: `+QENG: "LTE",<is_tdd>,<MCC>,...` (no "servingcell", no state).
        "LTE" => {
            let cell = lte_serving(&f, 1, opts)?;
            let s = r.serving.get_or_insert_with(ServingCell::default);
            let nsa = s.rat.as_deref() == Some("NR5G-NSA");
            merge_serving(s, cell);
            if nsa {
                s.rat = Some("NR5G-NSA".into());
            }
        }
        "NR5G-NSA" => {
            // <MCC>,<MNC>,<PCID>,<RSRP>,<SINR>,<RSRQ>[,<ARFCN>,<band>,<NR_DL_bandwidth>,<scs>]
            let f = Fields {
                what: "+QENG NR5G-NSA",
                f: f.f,
            };
            f.expect_count(7, 11)?;
            let leg = NrLeg {
                pci: fields::pci(f.int(3, "PCID")?),
                rsrp_dbm: fields::rsrp(f.num(4, "RSRP")?),
                sinr_db: fields::sinr(f.num(5, "SINR")?),
                rsrq_db: fields::rsrq(f.num(6, "RSRQ")?),
                arfcn: narrow(f.int(7, "ARFCN")?),
                band: narrow(f.int(8, "band")?),
                bandwidth_mhz: fields::nr_bandwidth_mhz(f.int(9, "NR_DL_bandwidth")?),
                scs_khz: fields::nr_scs_khz(f.int(10, "scs")?),
            };
            let mcc = fields::mcc_mnc(f.int(1, "MCC")?);
            let mnc = fields::mcc_mnc(f.int(2, "MNC")?);
            let s = r.serving.get_or_insert_with(ServingCell::default);
            s.rat = Some("NR5G-NSA".into());
            s.mcc = s.mcc.or(mcc);
            s.mnc = s.mnc.or(mnc);
            s.nr = Some(leg);
        }
        h if h.starts_with("neighbourcell") => {
            let n = neighbour(&f, h, opts)?;
            // Bounded: a real list has a few dozen cells at most.
            if r.neighbours.len() < 256 {
                r.neighbours.push(n);
            }
        }
        other => {
            return Err(AtParseError::Unsupported {
                what: "+QENG",
                variant: other.chars().take(40).collect(),
            });
        }
    }
    Ok(())
}

/// LTE serving cell fields from index `i` (`<is_tdd>`): 15 (EC25/EG25) or 17 (RM5xx: CQI and
/// tx_power before srxlev) fields.
fn lte_serving(f: &Fields<'_>, i: usize, opts: &ParseOptions) -> Result<ServingCell, AtParseError> {
    let n = f.len().saturating_sub(i);
    if n != 15 && n != 17 {
        return Err(AtParseError::FieldCount {
            what: "+QENG LTE",
            expected: format!("{} or {}", i + 15, i + 17),
            got: f.len(),
        });
    }
    let sinr_raw = f.num(i + 13, "SINR")?;
    let (cqi, tx_power, srxlev_at) = if n == 17 {
        (
            narrow(f.int(i + 14, "CQI")?),
            narrow(f.int(i + 15, "tx_power")?),
            i + 16,
        )
    } else {
        (None, None, i + 14)
    };
    Ok(ServingCell {
        rat: Some("LTE".into()),
        state: None,
        duplex: f.string(i),
        mcc: fields::mcc_mnc(f.int(i + 1, "MCC")?),
        mnc: fields::mcc_mnc(f.int(i + 2, "MNC")?),
        cell_id: f.hex(i + 3, "cellID")?,
        pci: fields::pci(f.int(i + 4, "PCID")?),
        earfcn: narrow(f.int(i + 5, "earfcn")?),
        band: narrow(f.int(i + 6, "freq_band_ind")?),
        ul_bandwidth_mhz: fields::lte_bandwidth_mhz(f.int(i + 7, "UL_bandwidth")?),
        bandwidth_mhz: fields::lte_bandwidth_mhz(f.int(i + 8, "DL_bandwidth")?),
        tac: f.hex(i + 9, "TAC")?.and_then(|v| u32::try_from(v).ok()),
        rsrp_dbm: fields::rsrp(f.num(i + 10, "RSRP")?),
        rsrq_db: fields::rsrq(f.num(i + 11, "RSRQ")?),
        rssi_dbm: fields::rssi(f.num(i + 12, "RSSI")?),
        sinr_db: scale(sinr_raw, opts.qeng_lte_sinr),
        sinr_raw,
        cqi,
        tx_power,
        srxlev: narrow(f.int(srxlev_at, "srxlev")?),
        ..ServingCell::default()
    })
}

/// `"servingcell",<state>,"NR5G-SA",<duplex>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,<band>,
/// <NR_DL_bandwidth>,<RSRP>,<RSRQ>,<SINR>,<scs>,<srxlev>`.
fn nr_sa_serving(f: &Fields<'_>) -> Result<ServingCell, AtParseError> {
    let f = Fields {
        what: "+QENG NR5G-SA",
        f: f.f.clone(),
    };
    f.expect_count(17, 17)?;
    let sinr_raw = f.num(14, "SINR")?;
    Ok(ServingCell {
        rat: Some("NR5G-SA".into()),
        duplex: f.string(3),
        mcc: fields::mcc_mnc(f.int(4, "MCC")?),
        mnc: fields::mcc_mnc(f.int(5, "MNC")?),
        cell_id: f.hex(6, "cellID")?,
        pci: fields::pci(f.int(7, "PCID")?),
        tac: f.hex(8, "TAC")?.and_then(|v| u32::try_from(v).ok()),
        arfcn: narrow(f.int(9, "ARFCN")?),
        band: narrow(f.int(10, "band")?),
        bandwidth_mhz: fields::nr_bandwidth_mhz(f.int(11, "NR_DL_bandwidth")?),
        rsrp_dbm: fields::rsrp(f.num(12, "RSRP")?),
        rsrq_db: fields::rsrq(f.num(13, "RSRQ")?),
        sinr_db: fields::sinr(sinr_raw),
        sinr_raw,
        scs_khz: fields::nr_scs_khz(f.int(15, "scs")?),
        srxlev: narrow(f.int(16, "srxlev")?),
        ..ServingCell::default()
    })
}

/// `"neighbourcell intra"|"neighbourcell inter","LTE",<earfcn>,<PCID>,<RSRQ>,<RSRP>,<RSSI>,
/// <SINR>,<srxlev>,...` (RSRQ before RSRP, unlike servingcell).
fn neighbour(
    f: &Fields<'_>,
    head: &str,
    opts: &ParseOptions,
) -> Result<NeighbourCell, AtParseError> {
    let kind = head.strip_prefix("neighbourcell").unwrap_or("").trim();
    let rat = f.text(1).unwrap_or("");
    let f = Fields {
        what: "+QENG neighbourcell",
        f: f.f.clone(),
    };
    match rat {
        "LTE" => {
            f.expect_count(9, 16)?;
            Ok(NeighbourCell {
                rat: "LTE".into(),
                kind: (!kind.is_empty()).then(|| kind.chars().take(20).collect()),
                earfcn: narrow(f.int(2, "earfcn")?),
                pci: fields::pci(f.int(3, "PCID")?),
                rsrq_db: fields::rsrq(f.num(4, "RSRQ")?),
                rsrp_dbm: fields::rsrp(f.num(5, "RSRP")?),
                rssi_dbm: fields::rssi(f.num(6, "RSSI")?),
                sinr_db: scale(f.num(7, "SINR")?, opts.qeng_lte_sinr),
                srxlev: narrow(f.int(8, "srxlev")?),
                ..NeighbourCell::default()
            })
        }
        // `"neighbourcell","WCDMA",<uarfcn>,<cell_resel_priority>,<thresh_Xhigh>,<thresh_Xlow>,
        // <PSC>,<RSCP>,<ecno>,<srxlev>`
        "WCDMA" => {
            f.expect_count(10, 10)?;
            Ok(NeighbourCell {
                rat: "WCDMA".into(),
                kind: (!kind.is_empty()).then(|| kind.chars().take(20).collect()),
                uarfcn: narrow(f.int(2, "uarfcn")?),
                psc: narrow::<u16>(f.int(6, "PSC")?).filter(|p| *p <= 511),
                rscp_dbm: fields::in_range(f.num(7, "RSCP")?, -125.0, -20.0),
                ecno_db: fields::in_range(f.num(8, "ecno")?, -25.0, 0.0),
                srxlev: narrow(f.int(9, "srxlev")?),
                ..NeighbourCell::default()
            })
        }
        other => Err(AtParseError::Unsupported {
            what: "+QENG neighbourcell",
            variant: other.chars().take(40).collect(),
        }),
    }
}

/// `+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>` | `"NR5G",<rsrp>,<sinr>,<rsrq>` |
/// `"WCDMA",<rssi>,<rscp>,<ecio>` | `"GSM",<rssi>` | `"NOSERVICE"`.
pub(crate) fn parse_qcsq(rest: &str, opts: &ParseOptions) -> Result<Qcsq, AtParseError> {
    let f = Fields::new("+QCSQ", rest);
    let mode = f.text(0).unwrap_or("");
    let mut q = Qcsq {
        sysmode: mode.to_owned(),
        ..Qcsq::default()
    };
    match mode {
        "NOSERVICE" => f.expect_count(1, 1)?,
        "GSM" => {
            f.expect_count(2, 2)?;
            q.rssi_dbm = fields::rssi(f.num(1, "rssi")?);
        }
        "WCDMA" => {
            f.expect_count(4, 4)?;
            q.rssi_dbm = fields::rssi(f.num(1, "rssi")?);
            q.rsrp_dbm = fields::rsrp(f.num(2, "rscp")?);
            q.rsrq_db = fields::rsrq(f.num(3, "ecio")?);
        }
        "LTE" => {
            f.expect_count(5, 5)?;
            q.rssi_dbm = fields::rssi(f.num(1, "rssi")?);
            q.rsrp_dbm = fields::rsrp(f.num(2, "rsrp")?);
            q.sinr_raw = f.num(3, "sinr")?;
            q.sinr_db = scale(q.sinr_raw, opts.qcsq_lte_sinr);
            q.rsrq_db = fields::rsrq(f.num(4, "rsrq")?);
        }
        "NR5G" => {
            f.expect_count(4, 4)?;
            q.rsrp_dbm = fields::rsrp(f.num(1, "rsrp")?);
            q.sinr_raw = f.num(2, "sinr")?;
            q.sinr_db = fields::sinr(q.sinr_raw);
            q.rsrq_db = fields::rsrq(f.num(3, "rsrq")?);
        }
        other => {
            return Err(AtParseError::Unsupported {
                what: "+QCSQ",
                variant: other.chars().take(40).collect(),
            });
        }
    }
    Ok(q)
}

/// `+QNWLOCK:` query replies (`"common/4g",<n>[,<earfcn>,<pci>]...`, `"common/5g",0` or
/// `"common/5g",<pci>,<arfcn>,<scs>,<band>`) and test-form lines (`"common/4g",(0-10),...`).
pub(crate) fn apply_qnwlock(r: &mut RadioReport, rest: &str) -> Result<(), AtParseError> {
    let f = Fields::new("+QNWLOCK", rest);
    let mode = f.text(0).unwrap_or("").to_owned();
    if mode.is_empty() || !f.quoted(0) {
        return Err(AtParseError::MissingField {
            what: "+QNWLOCK",
            field: "mode",
        });
    }
    // Test form: parameter lists like `(0-10)` or `<freq>`.
    if f.f[1..].iter().any(|x| x.text.starts_with(['(', '<'])) {
        let lock = r.lock.get_or_insert_with(LockState::default);
        if !lock.supported.contains(&mode) && lock.supported.len() < 32 {
            lock.supported.push(mode.chars().take(40).collect());
        }
        return Ok(());
    }
    match mode.as_str() {
        "common/4g" => {
            f.expect_count(2, 22)?;
            let n = f.req_int(1, "num_cells")?;
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= 10)
                .ok_or(AtParseError::BadField {
                    what: "+QNWLOCK common/4g",
                    field: "num_cells",
                    value: n.to_string(),
                })?;
            if f.len() != 2 + 2 * n {
                return Err(AtParseError::FieldCount {
                    what: "+QNWLOCK common/4g",
                    expected: format!("{}", 2 + 2 * n),
                    got: f.len(),
                });
            }
            let mut cells = Vec::with_capacity(n);
            for k in 0..n {
                let earfcn = f.req_int(2 + 2 * k, "earfcn")?;
                let pci = f.req_int(3 + 2 * k, "pci")?;
                let bad = |field, v: i64| AtParseError::BadField {
                    what: "+QNWLOCK common/4g",
                    field,
                    value: v.to_string(),
                };
                cells.push(LockedLteCell {
                    earfcn: u32::try_from(earfcn).map_err(|_| bad("earfcn", earfcn))?,
                    pci: fields::pci(Some(pci)).ok_or_else(|| bad("pci", pci))?,
                });
            }
            r.lock.get_or_insert_with(LockState::default).lte = Some(LteLock {
                locked: !cells.is_empty(),
                cells,
            });
        }
        "common/5g" => {
            let what = "+QNWLOCK common/5g";
            let nr = if f.len() == 2 && f.req_int(1, "pci")? == 0 {
                NrLock::default()
            } else {
                if f.len() != 5 {
                    return Err(AtParseError::FieldCount {
                        what,
                        expected: "2 or 5".into(),
                        got: f.len(),
                    });
                }
                NrLock {
                    locked: true,
                    pci: fields::pci(f.int(1, "pci")?),
                    arfcn: narrow(f.int(2, "arfcn")?),
                    scs_khz: narrow(f.int(3, "scs")?),
                    band: narrow(f.int(4, "band")?),
                }
            };
            r.lock.get_or_insert_with(LockState::default).nr = Some(nr);
        }
        // Other modes (save_ctrl, common/4g_ext, ...): recognised, not reported.
        _ => {}
    }
    Ok(())
}

/// `+QCFG: "nwscanmode",<mode>[,<effect>]` (and its test form). Other `+QCFG` settings are not
/// understood.
pub(crate) fn apply_qcfg(r: &mut RadioReport, rest: &str) -> Result<(), AtParseError> {
    let f = Fields::new("+QCFG", rest);
    match f.text(0) {
        Some("nwscanmode") => {
            f.expect_count(2, 3)?;
            if f.text(1).is_some_and(|t| t.starts_with('(')) {
                return Ok(());
            }
            let v = f.req_int(1, "scanmode")?;
            r.scan_mode = Some(u8::try_from(v).map_err(|_| AtParseError::BadField {
                what: "+QCFG nwscanmode",
                field: "scanmode",
                value: v.to_string(),
            })?);
            Ok(())
        }
        other => Err(AtParseError::Unsupported {
            what: "+QCFG",
            variant: other.unwrap_or("").chars().take(40).collect(),
        }),
    }
}

/// `+QIND:` URCs: `"csq",<rssi>,<ber>` is a CSQ reading; `"act",...`, `SMS DONE`, `PB DONE` are
/// recognised and carry nothing for the report.
pub(crate) fn apply_qind(r: &mut RadioReport, rest: &str) -> Result<(), AtParseError> {
    let f = Fields::new("+QIND", rest);
    match f.text(0) {
        Some("csq") => {
            let tail = rest.split_once(',').map(|x| x.1).unwrap_or("");
            r.signal.csq = Some(generic::parse_csq(tail)?);
            Ok(())
        }
        Some("act" | "SMS DONE" | "PB DONE") => Ok(()),
        other => Err(AtParseError::Unsupported {
            what: "+QIND",
            variant: other.unwrap_or("").chars().take(40).collect(),
        }),
    }
}

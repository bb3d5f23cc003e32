//! 3GPP TS 27.007 responses: `+CSQ`, `+CESQ`, `+COPS`, `+CREG`/`+CEREG`/`+C5GREG`, `+CFUN`,
//! `+CME ERROR`.

use super::AtParseError;
use super::fields::{Fields, narrow, split_fields};
use crate::radio::{AtError, Cesq, Csq, Network, Operator, RadioReport, Registration};

/// The 27.007 meaning of a `+CME ERROR` code, for the codes a modem driver meets.
pub fn cme_error_text(code: u16) -> &'static str {
    match code {
        0 => "phone failure",
        3 => "operation not allowed",
        4 => "operation not supported",
        10 => "SIM not inserted",
        13 => "SIM failure",
        14 => "SIM busy",
        30 => "no network service",
        31 => "network timeout",
        32 => "network not allowed - emergency calls only",
        50 => "incorrect parameters",
        100 => "unknown",
        _ => "unknown error code",
    }
}

/// `+CME ERROR: <n>` (numeric) or `+CME ERROR: <text>` (verbose).
pub(crate) fn cme_error(rest: &str, command: Option<String>) -> AtError {
    match rest.parse::<u16>() {
        Ok(code) => AtError {
            command,
            code: Some(code),
            message: cme_error_text(code).to_owned(),
        },
        Err(_) => AtError {
            command,
            code: None,
            message: rest.chars().take(200).collect(),
        },
    }
}

/// `+CSQ: <rssi>,<ber>`: dBm = −113 + 2·rssi (0..=31), 99 unknown.
pub(crate) fn parse_csq(rest: &str) -> Result<Csq, AtParseError> {
    let f = Fields::new("+CSQ", rest);
    f.expect_count(2, 2)?;
    let idx = f.req_int(0, "rssi")?;
    let rssi_index = u8::try_from(idx).map_err(|_| AtParseError::BadField {
        what: "+CSQ",
        field: "rssi",
        value: idx.to_string(),
    })?;
    Ok(Csq {
        rssi_index,
        rssi_dbm: (rssi_index <= 31).then(|| -113.0 + 2.0 * f64::from(rssi_index)),
        ber: narrow::<u8>(f.int(1, "ber")?).filter(|b| *b <= 7),
    })
}

/// `+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>`; 99/255 are unknown.
pub(crate) fn parse_cesq(rest: &str) -> Result<Cesq, AtParseError> {
    let f = Fields::new("+CESQ", rest);
    f.expect_count(6, 6)?;
    let idx = |i, name, max: i64| -> Result<Option<f64>, AtParseError> {
        Ok(f.int(i, name)?
            .filter(|v| (0..=max).contains(v))
            .map(|v| v as f64))
    };
    Ok(Cesq {
        rxlev_dbm: idx(0, "rxlev", 63)?.map(|n| -111.0 + n),
        ber: narrow::<u8>(f.int(1, "ber")?).filter(|b| *b <= 7),
        rscp_dbm: idx(2, "rscp", 96)?.map(|n| -121.0 + n),
        ecno_db: idx(3, "ecno", 49)?.map(|n| -24.5 + n / 2.0),
        rsrq_db: idx(4, "rsrq", 34)?.map(|n| -20.0 + n / 2.0),
        rsrp_dbm: idx(5, "rsrp", 97)?.map(|n| -141.0 + n),
    })
}

/// `+COPS: <mode>[,<format>,<oper>[,<AcT>]]` (query) or the `AT+COPS=?` list
/// `(<stat>,"long","short","numeric"[,<AcT>]),...,,(modes),(formats)`.
pub(crate) fn apply_cops(r: &mut RadioReport, rest: &str) -> Result<(), AtParseError> {
    if rest.starts_with('(') || rest.starts_with(',') {
        r.networks = parse_cops_list(rest)?;
        return Ok(());
    }
    let f = Fields::new("+COPS", rest);
    f.expect_count(1, 4)?;
    let bad = |field, v: i64| AtParseError::BadField {
        what: "+COPS",
        field,
        value: v.to_string(),
    };
    let mode = f.req_int(0, "mode")?;
    r.operator = Some(Operator {
        mode: u8::try_from(mode).map_err(|_| bad("mode", mode))?,
        format: match f.int(1, "format")? {
            Some(v) => Some(u8::try_from(v).map_err(|_| bad("format", v))?),
            None => None,
        },
        name: f.string(2).map(|s| s.chars().take(64).collect()),
        act: match f.int(3, "AcT")? {
            Some(v) => Some(u8::try_from(v).map_err(|_| bad("AcT", v))?),
            None => None,
        },
    });
    Ok(())
}

fn parse_cops_list(rest: &str) -> Result<Vec<Network>, AtParseError> {
    let mut out = Vec::new();
    for item in split_fields(rest) {
        let t = item.text;
        if t.is_empty() {
            // The empty field separates the networks from the supported modes and formats.
            break;
        }
        let inner = t
            .strip_prefix('(')
            .and_then(|x| x.strip_suffix(')'))
            .ok_or_else(|| AtParseError::BadField {
                what: "+COPS list",
                field: "network",
                value: t.chars().take(40).collect(),
            })?;
        let f = Fields::new("+COPS list", inner);
        f.expect_count(4, 5)?;
        let status = f.req_int(0, "stat")?;
        out.push(Network {
            status: u8::try_from(status).map_err(|_| AtParseError::BadField {
                what: "+COPS list",
                field: "stat",
                value: status.to_string(),
            })?,
            long_name: f.text(1).unwrap_or("").chars().take(64).collect(),
            short_name: f.text(2).unwrap_or("").chars().take(64).collect(),
            numeric: f.text(3).unwrap_or("").chars().take(8).collect(),
            act: narrow(f.int(4, "AcT")?),
        });
        if out.len() >= 64 {
            break;
        }
    }
    Ok(out)
}

/// Query reply `+CEREG: <n>,<stat>[,<tac>,<ci>[,<AcT>...]]` or URC `+CEREG: <stat>[,<tac>,<ci>
/// [,<AcT>...]]`, fields quoted or not, space-padded or not. The forms are told apart by the
/// second field: a query's `<stat>` is a small unquoted decimal (0..=11, no leading zero), a URC's
/// `<tac>` is quoted or hex (unquoted TACs are four hex digits).
pub(crate) fn parse_reg(source: &str, rest: &str) -> Result<Registration, AtParseError> {
    let f = Fields::new("+CxREG", rest);
    f.expect_count(1, 16)?;
    let second_is_stat = f.len() >= 2
        && !f.quoted(1)
        && f.text(1).is_some_and(|t| {
            // `0005` is an unquoted TAC, not a stat.
            (t.len() == 1 || (t.len() == 2 && !t.starts_with('0')))
                && t.parse::<u8>().is_ok_and(|v| v <= 11)
        });
    let query = f.len() == 2 || (f.len() >= 2 && second_is_stat);
    let (n, base) = if query {
        (Some(f.req_int(0, "n")?), 1)
    } else {
        (None, 0)
    };
    let stat = f.req_int(base, "stat")?;
    let bad = |field, v: i64| AtParseError::BadField {
        what: "+CxREG",
        field,
        value: v.to_string(),
    };
    Ok(Registration {
        source: source.to_owned(),
        n: match n {
            Some(v) => Some(u8::try_from(v).map_err(|_| bad("n", v))?),
            None => None,
        },
        stat: u8::try_from(stat).map_err(|_| bad("stat", stat))?,
        tac: f.hex(base + 1, "tac")?.and_then(|v| u32::try_from(v).ok()),
        cell_id: f.hex(base + 2, "ci")?,
        act: narrow(f.int(base + 3, "AcT")?),
    })
}

/// `+CFUN: <fun>`.
pub(crate) fn parse_cfun(rest: &str) -> Result<u8, AtParseError> {
    let f = Fields::new("+CFUN", rest);
    f.expect_count(1, 2)?;
    let v = f.req_int(0, "fun")?;
    u8::try_from(v).map_err(|_| AtParseError::BadField {
        what: "+CFUN",
        field: "fun",
        value: v.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csq() {
        let c = parse_csq("16,99").expect("valid");
        assert_eq!(c.rssi_dbm, Some(-81.0));
        assert_eq!(c.ber, None);
        let c = parse_csq("99,99").expect("valid");
        assert_eq!(c.rssi_dbm, None);
        assert!(parse_csq("16").is_err());
        assert!(parse_csq("300,0").is_err());
    }

    #[test]
    fn cesq() {
        let c = parse_cesq("99,99,255,255,20,80").expect("valid");
        assert_eq!(c.rsrq_db, Some(-10.0));
        assert_eq!(c.rsrp_dbm, Some(-61.0));
        assert_eq!(c.rxlev_dbm, None);
        assert_eq!(c.rscp_dbm, None);
    }

    #[test]
    fn registration_forms() {
        let q = parse_reg("CEREG", r#"2,1,"1F00","079D903",7"#).expect("query");
        assert_eq!(
            (q.n, q.stat, q.tac, q.cell_id, q.act),
            (Some(2), 1, Some(0x1F00), Some(0x79D903), Some(7))
        );
        let u = parse_reg("CEREG", r#"1,"1F00","079D903",7"#).expect("urc");
        assert_eq!(
            (u.n, u.stat, u.tac, u.act),
            (None, 1, Some(0x1F00), Some(7))
        );
        let p = parse_reg("CEREG", "2,1, 1F00, 79D903 ,7").expect("padded");
        assert_eq!(
            (p.n, p.tac, p.cell_id),
            (Some(2), Some(0x1F00), Some(0x79D903))
        );
        let c = parse_reg("CREG", r#"2,1,"8BE3","00002BAF""#).expect("creg");
        assert_eq!(
            (c.n, c.tac, c.cell_id, c.act),
            (Some(2), Some(0x8BE3), Some(0x2BAF), None)
        );
        let s = parse_reg("CEREG", "0,4").expect("n,stat");
        assert_eq!((s.n, s.stat), (Some(0), 4));
        let s = parse_reg("CEREG", "5").expect("urc stat");
        assert_eq!((s.n, s.stat), (None, 5));
        assert!(parse_reg("CEREG", "x").is_err());
    }

    #[test]
    fn cops() {
        let mut r = RadioReport::default();
        apply_cops(&mut r, r#"0,0,"T-Mobile Wholesale",7"#).expect("query");
        let o = r.operator.clone().expect("set");
        assert_eq!((o.mode, o.format, o.act), (0, Some(0), Some(7)));
        assert_eq!(o.name.as_deref(), Some("T-Mobile Wholesale"));
        apply_cops(&mut r, "0").expect("no operator");
        assert_eq!(r.operator.as_ref().map(|o| o.name.clone()), Some(None));
    }
}

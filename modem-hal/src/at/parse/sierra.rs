//! Sierra Wireless dialect: `AT!GSTATUS?` (key–value pairs) and `AT!LTEINFO?` (tables).

use super::AtParseError;
use super::fields::{self, is_placeholder};
use crate::radio::{NeighbourCell, NrLeg, RadioReport, ServingCell};

/// Splits a `!GSTATUS` line into (key, value) pairs. Pairs are separated by tabs or runs of two or
/// more spaces; a key ends with `:`. A chunk with no key continues the previous value
/// (`EMM state:  Registered  <TAB>Normal Service`).
fn gstatus_pairs(line: &str) -> Vec<(String, String)> {
    let mut chunks: Vec<&str> = Vec::new();
    for part in line.split('\t') {
        let mut rest = part;
        while let Some(i) = rest.find("  ") {
            chunks.push(&rest[..i]);
            rest = rest[i..].trim_start_matches(' ');
        }
        chunks.push(rest);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for c in chunks.into_iter().map(str::trim).filter(|c| !c.is_empty()) {
        if let Some(k) = c.strip_suffix(':') {
            out.push((k.trim().to_owned(), String::new()));
        } else if let Some((k, v)) = c.split_once(": ") {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        } else if let Some((_, v)) = out.last_mut() {
            if !v.is_empty() {
                v.push(' ');
            }
            v.push_str(c);
        } else {
            return Vec::new();
        }
    }
    out
}

fn num(key: &'static str, v: &str) -> Result<Option<f64>, AtParseError> {
    let t = v.split_whitespace().next().unwrap_or("");
    if is_placeholder(t) {
        return Ok(None);
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(AtParseError::BadField {
            what: "!GSTATUS",
            field: key,
            value: v.chars().take(40).collect(),
        }),
    }
}

/// First token as hex (`00a51b02 (10820354)`).
fn hex(key: &'static str, v: &str) -> Result<Option<u64>, AtParseError> {
    let t = v.split_whitespace().next().unwrap_or("");
    if is_placeholder(t) {
        return Ok(None);
    }
    if t.len() > 16 {
        return Err(AtParseError::BadField {
            what: "!GSTATUS",
            field: key,
            value: t.chars().take(40).collect(),
        });
    }
    u64::from_str_radix(t, 16)
        .map(Some)
        .map_err(|_| AtParseError::BadField {
            what: "!GSTATUS",
            field: key,
            value: t.chars().take(40).collect(),
        })
}

/// `B66` / `n78` / `66` to 66.
fn band(key: &'static str, v: &str) -> Result<Option<u16>, AtParseError> {
    let t = v.split_whitespace().next().unwrap_or("");
    if is_placeholder(t) {
        return Ok(None);
    }
    let digits = t.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    digits
        .parse::<u16>()
        .map(Some)
        .map_err(|_| AtParseError::BadField {
            what: "!GSTATUS",
            field: key,
            value: t.chars().take(40).collect(),
        })
}

/// Applies one line of a `!GSTATUS:` block to the serving cell. Unknown keys are ignored; a line
/// with no `key:` at all is not understood.
pub(crate) fn apply_gstatus_line(r: &mut RadioReport, line: &str) -> Result<(), AtParseError> {
    let pairs = gstatus_pairs(line);
    if pairs.is_empty() {
        return Err(AtParseError::Unknown);
    }
    // Decode every pair first, so that a bad line leaves the report unchanged.
    let mut s = r.serving.clone().unwrap_or_default();
    for (k, v) in &pairs {
        let key = k.as_str();
        match key {
            "System mode" => s.rat = (!is_placeholder(v)).then(|| v.chars().take(20).collect()),
            "PS state" => s.state = (!is_placeholder(v)).then(|| v.chars().take(20).collect()),
            "LTE band" => s.band = band("LTE band", v)?,
            "LTE bw" => s.bandwidth_mhz = num("LTE bw", v)?,
            "LTE Rx chan" => {
                s.earfcn = fields::narrow(num("LTE Rx chan", v)?.map(|x| x as i64));
            }
            "PCC RxM RSSI" => s.rssi_dbm = fields::rssi(num("PCC RxM RSSI", v)?),
            "PCC RxM RSRP" => s.rsrp_dbm = fields::rsrp(num("PCC RxM RSRP", v)?),
            "RSRQ (dB)" => s.rsrq_db = fields::rsrq(num("RSRQ (dB)", v)?),
            "SINR (dB)" => {
                s.sinr_raw = num("SINR (dB)", v)?;
                s.sinr_db = fields::sinr(s.sinr_raw);
            }
            "Cell ID" => s.cell_id = hex("Cell ID", v)?,
            "TAC" => s.tac = hex("TAC", v)?.and_then(|x| u32::try_from(x).ok()),
            "NR5G RSRP (dBm)" | "NR5G RSRQ (dB)" | "NR5G SINR (dB)" | "NR5G band" => {
                let nr = s.nr.get_or_insert_with(NrLeg::default);
                match key {
                    "NR5G RSRP (dBm)" => nr.rsrp_dbm = fields::rsrp(num("NR5G RSRP", v)?),
                    "NR5G RSRQ (dB)" => nr.rsrq_db = fields::rsrq(num("NR5G RSRQ", v)?),
                    "NR5G SINR (dB)" => nr.sinr_db = fields::sinr(num("NR5G SINR", v)?),
                    _ => nr.band = band("NR5G band", v)?,
                }
            }
            _ => {}
        }
    }
    r.serving = Some(s);
    Ok(())
}

/// The table of an `!LTEINFO:` block the next row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LteinfoSection {
    None,
    Serving,
    Intra,
    Inter,
    /// WCDMA, GSM, ... tables: rows recognised, not reported.
    Other,
}

/// Applies one line of an `!LTEINFO:` block: a section header (`Serving:`, `IntraFreq:`,
/// `InterFreq:` with column names) or a row of the current section, mapped by column name.
pub(crate) fn apply_lteinfo_line(
    r: &mut RadioReport,
    section: LteinfoSection,
    columns: &mut Vec<String>,
    line: &str,
) -> Result<LteinfoSection, AtParseError> {
    let mut tokens = line.split_whitespace();
    let first = tokens.next().unwrap_or("");
    if let Some(label) = first.strip_suffix(':') {
        columns.clear();
        columns.extend(tokens.take(32).map(str::to_owned));
        return Ok(match label {
            "Serving" => LteinfoSection::Serving,
            "IntraFreq" => LteinfoSection::Intra,
            "InterFreq" => LteinfoSection::Inter,
            _ => LteinfoSection::Other,
        });
    }
    let row: Vec<&str> = line.split_whitespace().take(33).collect();
    if section == LteinfoSection::None {
        return Err(AtParseError::Unknown);
    }
    if section == LteinfoSection::Other {
        return Ok(section);
    }
    if row.len() != columns.len() {
        return Err(AtParseError::FieldCount {
            what: "!LTEINFO row",
            expected: columns.len().to_string(),
            got: row.len(),
        });
    }
    let get = |name: &str| -> Option<&str> {
        columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i).copied())
            .filter(|t| !is_placeholder(t))
    };
    let bad = |field: &'static str, v: &str| AtParseError::BadField {
        what: "!LTEINFO",
        field,
        value: v.chars().take(40).collect(),
    };
    let int = |name: &'static str| -> Result<Option<i64>, AtParseError> {
        get(name)
            .map(|t| t.parse::<i64>().map_err(|_| bad(name, t)))
            .transpose()
    };
    let float = |name: &'static str| -> Result<Option<f64>, AtParseError> {
        get(name)
            .map(|t| {
                t.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(name, t))
            })
            .transpose()
    };
    match section {
        LteinfoSection::Serving => {
            let cid = get("CID")
                .map(|t| {
                    if t.len() > 16 {
                        Err(bad("CID", t))
                    } else {
                        u64::from_str_radix(t, 16).map_err(|_| bad("CID", t))
                    }
                })
                .transpose()?;
            let snr = float("SNR")?;
            let cell = ServingCell {
                rat: Some("LTE".into()),
                earfcn: fields::narrow(int("EARFCN")?),
                mcc: fields::mcc_mnc(int("MCC")?),
                mnc: fields::mcc_mnc(int("MNC")?),
                // LTEINFO prints the TAC in decimal.
                tac: fields::narrow(int("TAC")?),
                cell_id: cid,
                band: fields::narrow(int("Bd")?),
                bandwidth_mhz: fields::lte_bandwidth_mhz(int("D")?),
                ul_bandwidth_mhz: fields::lte_bandwidth_mhz(int("U")?),
                sinr_raw: snr,
                sinr_db: fields::sinr(snr),
                pci: fields::pci(int("PCI")?),
                rsrq_db: fields::rsrq(float("RSRQ")?),
                rsrp_dbm: fields::rsrp(float("RSRP")?),
                rssi_dbm: fields::rssi(float("RSSI")?),
                srxlev: fields::narrow(int("RXLV")?),
                ..ServingCell::default()
            };
            let s = r.serving.get_or_insert_with(ServingCell::default);
            super::quectel::merge_serving(s, cell);
        }
        LteinfoSection::Intra | LteinfoSection::Inter => {
            let serving = r.serving.as_ref();
            let pci = fields::pci(int("PCI")?);
            let earfcn = match section {
                LteinfoSection::Intra => serving.and_then(|s| s.earfcn),
                _ => fields::narrow(int("EARFCN")?),
            };
            // The intra-frequency table lists the serving cell too; it is not a neighbour.
            if section == LteinfoSection::Intra
                && pci.is_some()
                && serving.is_some_and(|s| s.pci == pci)
            {
                return Ok(section);
            }
            let n = NeighbourCell {
                rat: "LTE".into(),
                kind: Some(
                    if section == LteinfoSection::Intra {
                        "intra"
                    } else {
                        "inter"
                    }
                    .into(),
                ),
                earfcn,
                pci,
                rsrq_db: fields::rsrq(float("RSRQ")?),
                rsrp_dbm: fields::rsrp(float("RSRP")?),
                rssi_dbm: fields::rssi(float("RSSI")?),
                srxlev: fields::narrow(int("RXLV")?),
                ..NeighbourCell::default()
            };
            if r.neighbours.len() < 256 {
                r.neighbours.push(n);
            }
        }
        LteinfoSection::None | LteinfoSection::Other => {}
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let p = gstatus_pairs("EMM state:     Registered     \tNormal Service ");
        assert_eq!(
            p,
            vec![("EMM state".into(), "Registered Normal Service".into())]
        );
        let p = gstatus_pairs("RSRQ (dB):     -11.6          Cell ID:     00a51b02 (10820354)");
        assert_eq!(p[1], ("Cell ID".into(), "00a51b02 (10820354)".into()));
        let p = gstatus_pairs("Current Time:  5554\t\tTemperature: 38");
        assert_eq!(p[1], ("Temperature".into(), "38".into()));
        assert!(gstatus_pairs("no key here").is_empty());
    }
}

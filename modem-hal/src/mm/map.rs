//! Sans-IO mapping from ModemManager's D-Bus values to pitlink's radio types: enums to 3GPP
//! 27.007 codes, `GetCellInfo` dictionaries to cells, `Signal` dictionaries to readings and the
//! 3GPP location string to TAC/CI. No IO here; [`super::MmModem`] feeds these the values it read.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::radio::{NeighbourCell, NrLeg, ServingCell};

/// `MM_MODEM_POWER_STATE_LOW`: the modem is unusable, radio off.
pub const POWER_STATE_LOW: u32 = 2;
/// `MM_MODEM_POWER_STATE_ON`.
pub const POWER_STATE_ON: u32 = 3;
/// `MM_MODEM_LOCATION_SOURCE_3GPP_LAC_CI`.
pub const LOCATION_SOURCE_3GPP_LAC_CI: u32 = 1;

/// `MMModemAccessTechnology` bits pitlink distinguishes.
const ACCESS_TECH_LTE: u32 = 1 << 14;
const ACCESS_TECH_5GNR: u32 = 1 << 15;
const ACCESS_TECH_LTE_CAT_M: u32 = 1 << 16;
const ACCESS_TECH_LTE_NB_IOT: u32 = 1 << 17;

/// `MMCellType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellType {
    /// `MM_CELL_TYPE_UNKNOWN` (0) or a value this version does not know.
    Unknown,
    /// `MM_CELL_TYPE_CDMA` (1).
    Cdma,
    /// `MM_CELL_TYPE_GSM` (2).
    Gsm,
    /// `MM_CELL_TYPE_UMTS` (3).
    Umts,
    /// `MM_CELL_TYPE_TDSCDMA` (4).
    Tdscdma,
    /// `MM_CELL_TYPE_LTE` (5).
    Lte,
    /// `MM_CELL_TYPE_5GNR` (6).
    Nr5g,
}

impl CellType {
    /// From the `cell-type` value.
    pub fn from_mm(v: u32) -> Self {
        match v {
            1 => Self::Cdma,
            2 => Self::Gsm,
            3 => Self::Umts,
            4 => Self::Tdscdma,
            5 => Self::Lte,
            6 => Self::Nr5g,
            _ => Self::Unknown,
        }
    }

    /// The RAT name pitlink uses for a neighbour of this type.
    pub fn rat(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Cdma => "CDMA",
            Self::Gsm => "GSM",
            Self::Umts => "WCDMA",
            Self::Tdscdma => "TDSCDMA",
            Self::Lte => "LTE",
            Self::Nr5g => "NR5G",
        }
    }
}

/// `MMServingCellType` values (`serving-cell-type`, since 1.22).
pub mod serving_cell_type {
    /// `MM_SERVING_CELL_TYPE_UNKNOWN`.
    pub const UNKNOWN: u32 = 0;
    /// `MM_SERVING_CELL_TYPE_PCELL`: primary cell of the master cell group.
    pub const PCELL: u32 = 1;
    /// `MM_SERVING_CELL_TYPE_SCELL`: secondary cell (carrier aggregation).
    pub const SCELL: u32 = 2;
    /// `MM_SERVING_CELL_TYPE_PSCELL`: primary cell of the secondary cell group (EN-DC NR leg).
    pub const PSCELL: u32 = 3;
    /// `MM_SERVING_CELL_TYPE_SSCELL`: secondary cell of the secondary cell group.
    pub const SSCELL: u32 = 4;
}

/// Why a D-Bus value could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A dictionary key holds a value of another D-Bus type than documented.
    #[error("key {key:?}: expected {expected}, got signature {got}")]
    WrongType {
        /// The key.
        key: String,
        /// The documented type.
        expected: &'static str,
        /// The signature received.
        got: String,
    },
    /// A required key is absent.
    #[error("key {0:?} is missing")]
    MissingKey(&'static str),
    /// The 3GPP location string is not `MCC,MNC,LAC,CI[,TAC]` with hex LAC/CI/TAC.
    #[error("3GPP location {text:?}: {why}")]
    Location {
        /// The string (cut at 80 characters).
        text: String,
        /// What was wrong.
        why: &'static str,
    },
}

/// The 27.007 `<stat>` of an `MMModem3gppRegistrationState`. ModemManager numbers its states
/// after 27.007 (`IDLE` 0 = not searching, `HOME` 1, `SEARCHING` 2, `DENIED` 3, `UNKNOWN` 4,
/// `ROAMING` 5, the SMS-only, emergency-only, CSFB-not-preferred states 6–10 and
/// `ATTACHED_RLOS` 11); anything beyond is reported as 4 (unknown).
pub fn registration_stat(mm: u32) -> u8 {
    match u8::try_from(mm) {
        Ok(v) if v <= 11 => v,
        _ => 4,
    }
}

/// The 27.007 `<AcT>` of an `MMModemAccessTechnology` bitmask: 13 (EN-DC) for LTE and NR
/// together, 11 for NR alone, 7 for LTE (incl. Cat-M 8 and NB-IoT 9), `None` otherwise.
pub fn access_technology_act(mask: u32) -> Option<u8> {
    let lte = mask & ACCESS_TECH_LTE != 0;
    let nr = mask & ACCESS_TECH_5GNR != 0;
    match (lte, nr) {
        (true, true) => Some(13),
        (false, true) => Some(11),
        (true, false) => Some(7),
        (false, false) if mask & ACCESS_TECH_LTE_CAT_M != 0 => Some(8),
        (false, false) if mask & ACCESS_TECH_LTE_NB_IOT != 0 => Some(9),
        (false, false) => None,
    }
}

/// MCC and MNC of an `MCCMNC` operator id ("22288" → 222, 88; "310260" → 310, 260).
pub fn split_operator_id(id: &str) -> Option<(u16, u16)> {
    let id = id.trim();
    if !(5..=6).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mcc = id.get(..3)?.parse().ok()?;
    let mnc = id.get(3..)?.parse().ok()?;
    Some((mcc, mnc))
}

/// An upper- or lower-case hex id without prefix ("4CAA71F"); `None` when empty or not hex.
pub fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The 3GPP location of `GetLocation()` key 1: `"MCC,MNC,LAC,CI,TAC"`, LAC/CI/TAC in hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location3gpp {
    /// Mobile country code.
    pub mcc: u16,
    /// Mobile network code.
    pub mnc: u16,
    /// Location area code (0 when the network has none, e.g. LTE only).
    pub lac: Option<u32>,
    /// Cell identity.
    pub ci: Option<u64>,
    /// Tracking area code (absent from ModemManager before 1.10).
    pub tac: Option<u32>,
}

impl Location3gpp {
    /// The area code to report: TAC when set, else LAC; a zero code is absent.
    pub fn area(&self) -> Option<u32> {
        self.tac
            .filter(|t| *t != 0)
            .or(self.lac.filter(|l| *l != 0))
    }
}

/// Parses `"MCC,MNC,LAC,CI"` or `"MCC,MNC,LAC,CI,TAC"`. An empty hex field is absent.
pub fn parse_location_3gpp(text: &str) -> Result<Location3gpp, MapError> {
    let bad = |why| MapError::Location {
        text: text.chars().take(80).collect(),
        why,
    };
    let f: Vec<&str> = text.trim().split(',').map(str::trim).collect();
    if !(4..=5).contains(&f.len()) {
        return Err(bad("expected 4 or 5 comma-separated fields"));
    }
    let num = |s: &str| s.parse::<u16>().ok();
    let mcc = num(f[0]).ok_or_else(|| bad("MCC is not a number"))?;
    let mnc = num(f[1]).ok_or_else(|| bad("MNC is not a number"))?;
    let hex = |s: &str, why| -> Result<Option<u64>, MapError> {
        if s.is_empty() {
            Ok(None)
        } else {
            parse_hex(s).map(Some).ok_or_else(|| bad(why))
        }
    };
    let lac = hex(f[2], "LAC is not hex")?;
    let ci = hex(f[3], "CI is not hex")?;
    let tac = match f.get(4) {
        Some(t) => hex(t, "TAC is not hex")?,
        None => None,
    };
    let small = |v: Option<u64>, why| match v {
        Some(v) => u32::try_from(v).map(Some).map_err(|_| bad(why)),
        None => Ok(None),
    };
    Ok(Location3gpp {
        mcc,
        mnc,
        lac: small(lac, "LAC out of range")?,
        ci,
        tac: small(tac, "TAC out of range")?,
    })
}

/// The inner value of a variant, through any nesting (`v` holding `v`).
fn inner<'a>(v: &'a Variant<'a>) -> &'a Variant<'a> {
    match v {
        Variant::Variant(b) => inner(b),
        v => v,
    }
}

fn signature(v: &Variant<'_>) -> String {
    v.value_signature().to_string()
}

/// A finite double within ±1000 (dBm/dB values); ModemManager omits unknown values, but a
/// `-G_MAXDOUBLE` sentinel or a NaN is treated as absent too.
fn measurement(x: f64) -> Option<f64> {
    (x.is_finite() && x.abs() <= 1000.0).then_some(x)
}

type Dict = HashMap<String, OwnedVariant>;

fn get_f64(d: &Dict, key: &str) -> Result<Option<f64>, MapError> {
    match d.get(key).map(|v| inner(v)) {
        None => Ok(None),
        Some(Variant::F64(x)) => Ok(measurement(*x)),
        // Integer-typed readings are accepted as well.
        Some(Variant::I32(x)) => Ok(measurement(f64::from(*x))),
        Some(v) => Err(MapError::WrongType {
            key: key.into(),
            expected: "d (double)",
            got: signature(v),
        }),
    }
}

fn get_u32(d: &Dict, key: &str) -> Result<Option<u32>, MapError> {
    match d.get(key).map(|v| inner(v)) {
        None => Ok(None),
        // G_MAXUINT is ModemManager's "not available".
        Some(Variant::U32(x)) => Ok((*x != u32::MAX).then_some(*x)),
        Some(v) => Err(MapError::WrongType {
            key: key.into(),
            expected: "u (uint32)",
            got: signature(v),
        }),
    }
}

fn get_bool(d: &Dict, key: &str) -> Result<Option<bool>, MapError> {
    match d.get(key).map(|v| inner(v)) {
        None => Ok(None),
        Some(Variant::Bool(x)) => Ok(Some(*x)),
        Some(v) => Err(MapError::WrongType {
            key: key.into(),
            expected: "b (boolean)",
            got: signature(v),
        }),
    }
}

fn get_str<'a>(d: &'a Dict, key: &str) -> Result<Option<&'a str>, MapError> {
    match d.get(key).map(|v| inner(v)) {
        None => Ok(None),
        Some(Variant::Str(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(v) => Err(MapError::WrongType {
            key: key.into(),
            expected: "s (string)",
            got: signature(v),
        }),
    }
}

/// One entry of `GetCellInfo()`, decoded (hex strings to integers; absent values `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct CellInfo {
    /// `cell-type`.
    pub cell_type: CellType,
    /// `serving`: a serving cell (primary or secondary) rather than a neighbour.
    pub serving: bool,
    /// `serving-cell-type` (see [`serving_cell_type`]).
    pub serving_cell_type: Option<u32>,
    /// `operator-id` split into MCC and MNC.
    pub plmn: Option<(u16, u16)>,
    /// `tac` (hex string).
    pub tac: Option<u32>,
    /// `ci` (hex string).
    pub ci: Option<u64>,
    /// `physical-ci` (hex string).
    pub pci: Option<u16>,
    /// `earfcn` (LTE).
    pub earfcn: Option<u32>,
    /// `nrarfcn` (NR).
    pub nrarfcn: Option<u32>,
    /// `rsrp`, dBm.
    pub rsrp: Option<f64>,
    /// `rsrq`, dB.
    pub rsrq: Option<f64>,
    /// `sinr`, dB (NR).
    pub sinr: Option<f64>,
    /// `bandwidth` as reported (see [`bandwidth_mhz`]).
    pub bandwidth: Option<u32>,
}

impl CellInfo {
    /// Decodes one `a{sv}` entry. `cell-type` is required (as in libmm-glib); other keys are
    /// optional, but a key with a value of the wrong D-Bus type is an error.
    pub fn from_dict(d: &Dict) -> Result<Self, MapError> {
        let cell_type = get_u32(d, "cell-type")?
            .map(CellType::from_mm)
            .ok_or(MapError::MissingKey("cell-type"))?;
        let hex = |key: &str| -> Result<Option<u64>, MapError> {
            Ok(get_str(d, key)?.and_then(parse_hex))
        };
        Ok(Self {
            cell_type,
            serving: get_bool(d, "serving")?.unwrap_or(false),
            serving_cell_type: get_u32(d, "serving-cell-type")?,
            plmn: get_str(d, "operator-id")?.and_then(split_operator_id),
            tac: hex("tac")?.and_then(|v| u32::try_from(v).ok()),
            ci: hex("ci")?,
            pci: hex("physical-ci")?.and_then(|v| u16::try_from(v).ok()),
            earfcn: get_u32(d, "earfcn")?,
            nrarfcn: get_u32(d, "nrarfcn")?,
            rsrp: get_f64(d, "rsrp")?,
            rsrq: get_f64(d, "rsrq")?,
            sinr: get_f64(d, "sinr")?,
            bandwidth: get_u32(d, "bandwidth")?,
        })
    }

    /// The serving-cell type, unknown when absent.
    fn sct(&self) -> u32 {
        self.serving_cell_type.unwrap_or(serving_cell_type::UNKNOWN)
    }
}

/// The `bandwidth` of a cell entry in MHz. ModemManager documents no unit; its only source so
/// far (MBIM Intel RF info) gives Hz, so values from 100 kHz up are read as Hz, and anything
/// smaller as already in MHz.
pub fn bandwidth_mhz(raw: u32) -> f64 {
    if raw >= 100_000 {
        f64::from(raw) / 1e6
    } else {
        f64::from(raw)
    }
}

/// One reading of `Signal.Lte` or `Signal.Nr5g`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalReading {
    /// `rssi`, dBm (LTE only).
    pub rssi: Option<f64>,
    /// `rsrp`, dBm.
    pub rsrp: Option<f64>,
    /// `rsrq`, dB.
    pub rsrq: Option<f64>,
    /// `snr`, dB.
    pub snr: Option<f64>,
}

impl SignalReading {
    /// Decodes an `a{sv}` of doubles; absent keys stay `None`.
    pub fn from_dict(d: &Dict) -> Result<Self, MapError> {
        Ok(Self {
            rssi: get_f64(d, "rssi")?,
            rsrp: get_f64(d, "rsrp")?,
            rsrq: get_f64(d, "rsrq")?,
            snr: get_f64(d, "snr")?,
        })
    }

    /// True when no value is present (the technology is not in use, or polling is off).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The `Signal` readings of both technologies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalReadings {
    /// `Signal.Lte`.
    pub lte: SignalReading,
    /// `Signal.Nr5g`.
    pub nr: SignalReading,
}

/// The primary cell among the serving entries of `kind`: `PCELL`/`PSCELL` (or an untyped one)
/// before any secondary cell.
fn primary(cells: &[CellInfo], kind: CellType) -> Option<&CellInfo> {
    use serving_cell_type::{PCELL, PSCELL, UNKNOWN};
    let serving = || {
        cells
            .iter()
            .filter(move |c| c.serving && c.cell_type == kind)
    };
    serving()
        .find(|c| matches!(c.sct(), PCELL | PSCELL | UNKNOWN | u32::MAX))
        .or_else(|| serving().next())
}

/// The serving cell from the `GetCellInfo()` entries merged with the `Signal` readings.
///
/// An LTE primary cell makes the top-level fields; a serving NR cell next to it is the EN-DC leg
/// (`rat` "NR5G-NSA"). An NR primary cell alone is "NR5G-SA" with its values at the top level.
/// `Signal` values are ModemManager's polled measurements and win over those of the cell entry;
/// the cell entry fills what `Signal` lacks (SINR comes from `Signal` `snr`). `None` when no
/// entry is a serving LTE or NR cell.
pub fn serving_cell(cells: &[CellInfo], signal: &SignalReadings) -> Option<ServingCell> {
    let lte = primary(cells, CellType::Lte);
    let nr = primary(cells, CellType::Nr5g);
    match (lte, nr) {
        (Some(l), nr) => {
            let (mcc, mnc) = plmn(l);
            Some(ServingCell {
                rat: Some(if nr.is_some() { "NR5G-NSA" } else { "LTE" }.into()),
                mcc,
                mnc,
                tac: l.tac,
                cell_id: l.ci,
                pci: l.pci,
                earfcn: l.earfcn,
                bandwidth_mhz: l.bandwidth.map(bandwidth_mhz),
                rsrp_dbm: signal.lte.rsrp.or(l.rsrp),
                rsrq_db: signal.lte.rsrq.or(l.rsrq),
                rssi_dbm: signal.lte.rssi,
                sinr_db: signal.lte.snr.or(l.sinr),
                nr: nr.map(|n| NrLeg {
                    pci: n.pci,
                    arfcn: n.nrarfcn,
                    bandwidth_mhz: n.bandwidth.map(bandwidth_mhz),
                    rsrp_dbm: signal.nr.rsrp.or(n.rsrp),
                    rsrq_db: signal.nr.rsrq.or(n.rsrq),
                    sinr_db: signal.nr.snr.or(n.sinr),
                    ..NrLeg::default()
                }),
                ..ServingCell::default()
            })
        }
        (None, Some(n)) => {
            let (mcc, mnc) = plmn(n);
            Some(ServingCell {
                rat: Some("NR5G-SA".into()),
                mcc,
                mnc,
                tac: n.tac,
                cell_id: n.ci,
                pci: n.pci,
                arfcn: n.nrarfcn,
                bandwidth_mhz: n.bandwidth.map(bandwidth_mhz),
                rsrp_dbm: signal.nr.rsrp.or(n.rsrp),
                rsrq_db: signal.nr.rsrq.or(n.rsrq),
                sinr_db: signal.nr.snr.or(n.sinr),
                ..ServingCell::default()
            })
        }
        (None, None) => None,
    }
}

fn plmn(c: &CellInfo) -> (Option<u16>, Option<u16>) {
    match c.plmn {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    }
}

/// The neighbour cells: every entry that is not a serving cell, in the order reported. An LTE
/// neighbour on the serving EARFCN (or an NR one on the serving NR-ARFCN) is "intra", else
/// "inter"; without a serving cell of that RAT the kind is absent.
pub fn neighbours(cells: &[CellInfo]) -> Vec<NeighbourCell> {
    let lte_earfcn = primary(cells, CellType::Lte).and_then(|c| c.earfcn);
    let nr_arfcn = primary(cells, CellType::Nr5g).and_then(|c| c.nrarfcn);
    let kind = |serving: Option<u32>, own: Option<u32>| match (serving, own) {
        (Some(s), Some(o)) => Some(if s == o { "intra" } else { "inter" }.to_string()),
        _ => None,
    };
    cells
        .iter()
        .filter(|c| !c.serving)
        .map(|c| NeighbourCell {
            rat: c.cell_type.rat().into(),
            kind: match c.cell_type {
                CellType::Lte => kind(lte_earfcn, c.earfcn),
                CellType::Nr5g => kind(nr_arfcn, c.nrarfcn),
                _ => None,
            },
            earfcn: c.earfcn,
            arfcn: c.nrarfcn,
            pci: c.pci,
            rsrp_dbm: c.rsrp,
            rsrq_db: c.rsrq,
            sinr_db: c.sinr,
            ..NeighbourCell::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dict(entries: &[(&str, OwnedVariant)]) -> Dict {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.try_clone().unwrap()))
            .collect()
    }

    fn s(v: &str) -> OwnedVariant {
        OwnedVariant::from(zbus::Str::from(v.to_string()))
    }

    /// The LTE serving cell of the EC25 capture in RADIO.md §2.2 as ModemManager reports it.
    fn lte_serving() -> Dict {
        dict(&[
            ("cell-type", 5u32.into()),
            ("serving", true.into()),
            ("serving-cell-type", serving_cell_type::PCELL.into()),
            ("operator-id", s("22288")),
            ("tac", s("77B8")),
            ("ci", s("4CAA71F")),
            ("physical-ci", s("1C")),
            ("earfcn", 1500u32.into()),
            ("rsrp", (-84.0f64).into()),
            ("rsrq", (-9.0f64).into()),
            ("bandwidth", 20_000_000u32.into()),
        ])
    }

    #[test]
    fn registration_states_are_27007_stats() {
        assert_eq!(registration_stat(0), 0);
        assert_eq!(registration_stat(1), 1);
        assert_eq!(registration_stat(2), 2);
        assert_eq!(registration_stat(5), 5);
        assert_eq!(registration_stat(11), 11);
        assert_eq!(registration_stat(12), 4);
        assert_eq!(registration_stat(u32::MAX), 4);
    }

    #[test]
    fn access_technologies_map_to_act() {
        assert_eq!(access_technology_act(1 << 14), Some(7));
        assert_eq!(access_technology_act((1 << 14) | (1 << 15)), Some(13));
        assert_eq!(access_technology_act(1 << 15), Some(11));
        assert_eq!(access_technology_act(1 << 16), Some(8));
        assert_eq!(access_technology_act(1 << 5), None);
        assert_eq!(access_technology_act(0), None);
    }

    #[test]
    fn operator_ids_split_into_mcc_mnc() {
        assert_eq!(split_operator_id("22288"), Some((222, 88)));
        assert_eq!(split_operator_id("310260"), Some((310, 260)));
        assert_eq!(split_operator_id("51503"), Some((515, 3)));
        assert_eq!(split_operator_id("2228"), None);
        assert_eq!(split_operator_id("22A88"), None);
    }

    #[test]
    fn location_3gpp_parses_with_and_without_tac() {
        let l = parse_location_3gpp("310,260,8BE3,2BAF").unwrap();
        assert_eq!((l.mcc, l.mnc), (310, 260));
        assert_eq!(l.lac, Some(0x8BE3));
        assert_eq!(l.ci, Some(0x2BAF));
        assert_eq!(l.tac, None);
        assert_eq!(l.area(), Some(0x8BE3));
        let l = parse_location_3gpp("222,88,0,4CAA71F,77B8").unwrap();
        assert_eq!(l.ci, Some(0x4CAA71F));
        assert_eq!(l.area(), Some(0x77B8));
        let l = parse_location_3gpp("222,88,,4CAA71F,").unwrap();
        assert_eq!((l.lac, l.tac), (None, None));
    }

    #[test]
    fn location_3gpp_rejects_garbage() {
        for bad in [
            "",
            "310,260",
            "310,260,ZZ,1",
            "x,260,1,1",
            "1,2,3,4,5,6",
            "1,2,1FFFFFFFF,1",
        ] {
            assert!(
                matches!(parse_location_3gpp(bad), Err(MapError::Location { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cell_info_decodes_hex_ids_and_sentinels() {
        let mut d = lte_serving();
        d.insert("timing-advance".into(), u32::MAX.into());
        d.insert("rsrq".into(), (-f64::MAX).into());
        let c = CellInfo::from_dict(&d).unwrap();
        assert_eq!(c.cell_type, CellType::Lte);
        assert!(c.serving);
        assert_eq!(c.plmn, Some((222, 88)));
        assert_eq!(c.tac, Some(0x77B8));
        assert_eq!(c.ci, Some(0x4CAA71F));
        assert_eq!(c.pci, Some(28));
        assert_eq!(c.earfcn, Some(1500));
        assert_eq!(c.rsrp, Some(-84.0));
        assert_eq!(c.rsrq, None, "-G_MAXDOUBLE is not a measurement");
    }

    #[test]
    fn cell_info_needs_cell_type_and_right_types() {
        let mut d = lte_serving();
        d.remove("cell-type");
        assert_eq!(
            CellInfo::from_dict(&d),
            Err(MapError::MissingKey("cell-type"))
        );
        let mut d = lte_serving();
        d.insert("earfcn".into(), s("1500"));
        let e = CellInfo::from_dict(&d).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key \"earfcn\": expected u (uint32), got signature s"
        );
    }

    #[test]
    fn lte_serving_cell_merges_signal() {
        let cells = [CellInfo::from_dict(&lte_serving()).unwrap()];
        let signal = SignalReadings {
            lte: SignalReading {
                rssi: Some(-56.0),
                rsrp: Some(-85.0),
                rsrq: None,
                snr: Some(21.0),
            },
            nr: SignalReading::default(),
        };
        let s = serving_cell(&cells, &signal).unwrap();
        assert_eq!(s.rat.as_deref(), Some("LTE"));
        assert_eq!((s.mcc, s.mnc), (Some(222), Some(88)));
        assert_eq!(s.tac, Some(0x77B8));
        assert_eq!(s.cell_id, Some(0x4CAA71F));
        assert_eq!(s.pci, Some(28));
        assert_eq!(s.earfcn, Some(1500));
        assert_eq!(s.bandwidth_mhz, Some(20.0));
        assert_eq!(s.rsrp_dbm, Some(-85.0), "Signal wins");
        assert_eq!(s.rsrq_db, Some(-9.0), "cell info fills the gap");
        assert_eq!(s.rssi_dbm, Some(-56.0));
        assert_eq!(s.sinr_db, Some(21.0));
        assert!(s.nr.is_none());
        // Without Signal the cell info values stand alone.
        let s = serving_cell(&cells, &SignalReadings::default()).unwrap();
        assert_eq!((s.rsrp_dbm, s.sinr_db), (Some(-84.0), None));
    }

    #[test]
    fn en_dc_has_an_nr_leg_and_sa_is_top_level() {
        let nr = dict(&[
            ("cell-type", 6u32.into()),
            ("serving", true.into()),
            ("serving-cell-type", serving_cell_type::PSCELL.into()),
            ("physical-ci", s("340")),
            ("nrarfcn", 528_030u32.into()),
            ("rsrp", (-76.0f64).into()),
            ("rsrq", (-11.0f64).into()),
            ("sinr", (21.0f64).into()),
        ]);
        let nr_cell = CellInfo::from_dict(&nr).unwrap();
        let lte = CellInfo::from_dict(&lte_serving()).unwrap();
        let signal = SignalReadings {
            lte: SignalReading::default(),
            nr: SignalReading {
                snr: Some(20.5),
                ..SignalReading::default()
            },
        };
        let s = serving_cell(&[lte, nr_cell.clone()], &signal).unwrap();
        assert_eq!(s.rat.as_deref(), Some("NR5G-NSA"));
        let leg = s.nr.unwrap();
        assert_eq!(leg.pci, Some(832));
        assert_eq!(leg.arfcn, Some(528_030));
        assert_eq!(leg.rsrp_dbm, Some(-76.0));
        assert_eq!(leg.sinr_db, Some(20.5));
        let s = serving_cell(&[nr_cell], &signal).unwrap();
        assert_eq!(s.rat.as_deref(), Some("NR5G-SA"));
        assert_eq!(s.arfcn, Some(528_030));
        assert_eq!(s.pci, Some(832));
        assert_eq!(s.sinr_db, Some(20.5));
        assert!(s.nr.is_none());
    }

    #[test]
    fn secondary_cells_are_neither_primary_nor_neighbours() {
        let mut scell = lte_serving();
        scell.insert("serving-cell-type".into(), serving_cell_type::SCELL.into());
        scell.insert("earfcn".into(), 6300u32.into());
        let neighbour = dict(&[
            ("cell-type", 5u32.into()),
            ("serving", false.into()),
            ("physical-ci", s("1D")),
            ("earfcn", 1500u32.into()),
            ("rsrp", (-95.5f64).into()),
        ]);
        let other = dict(&[
            ("cell-type", 5u32.into()),
            ("physical-ci", s("7")),
            ("earfcn", 3350u32.into()),
        ]);
        let cells: Vec<_> = [scell, lte_serving(), neighbour, other]
            .iter()
            .map(|d| CellInfo::from_dict(d).unwrap())
            .collect();
        let s = serving_cell(&cells, &SignalReadings::default()).unwrap();
        assert_eq!(
            s.earfcn,
            Some(1500),
            "the PCELL, not the SCELL listed first"
        );
        let n = neighbours(&cells);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].rat, "LTE");
        assert_eq!(n[0].pci, Some(29));
        assert_eq!(n[0].kind.as_deref(), Some("intra"));
        assert_eq!(n[0].rsrp_dbm, Some(-95.5));
        assert_eq!(n[1].kind.as_deref(), Some("inter"));
        assert_eq!(n[1].earfcn, Some(3350));
    }

    #[test]
    fn no_serving_cell_is_none() {
        let umts = dict(&[("cell-type", 3u32.into()), ("serving", true.into())]);
        let cells = [CellInfo::from_dict(&umts).unwrap()];
        assert_eq!(serving_cell(&cells, &SignalReadings::default()), None);
        assert_eq!(serving_cell(&[], &SignalReadings::default()), None);
    }

    #[test]
    fn bandwidth_units() {
        assert_eq!(bandwidth_mhz(20_000_000), 20.0);
        assert_eq!(bandwidth_mhz(1_400_000), 1.4);
        assert_eq!(bandwidth_mhz(100), 100.0);
    }

    #[test]
    fn signal_reading_ignores_unknown_keys() {
        let d = dict(&[
            ("rssi", (-56.0f64).into()),
            ("snr", (16.0f64).into()),
            ("error-rate", (0.0f64).into()),
        ]);
        let r = SignalReading::from_dict(&d).unwrap();
        assert_eq!(r.rssi, Some(-56.0));
        assert_eq!(r.snr, Some(16.0));
        assert_eq!(r.rsrp, None);
        assert!(SignalReading::from_dict(&Dict::new()).unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn location_parser_never_panics(text in "[0-9A-Fa-z,]{0,40}") {
            let _ = parse_location_3gpp(&text);
        }

        #[test]
        fn hex_ids_roundtrip(v in 0u64..(1 << 36)) {
            proptest::prop_assert_eq!(parse_hex(&format!("{v:X}")), Some(v));
        }
    }
}

//! Radio metrics as the modem reports them: serving and neighbour cells, registration, signal
//! readings, cell lock and operator.
//!
//! Units are in the field names (`_dbm`, `_db`, `_mhz`, `_khz`); every value is already decoded
//! (hex ids to integers, enums to MHz/kHz, raw SINR to dB). A field the modem did not report, or
//! reported as a placeholder (`-`) or an out-of-range sentinel, is `None` and absent from JSON.

use serde::{Deserialize, Serialize};

/// Everything understood from one or more AT responses, merged (later responses win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RadioReport {
    /// Serving cell (`AT+QENG="servingcell"`, `AT!GSTATUS?`, `AT!LTEINFO?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingCell>,
    /// Neighbour cells, in the order reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<NeighbourCell>,
    /// Network registration (`+CREG`, `+CEREG`, `+C5GREG`), the last one reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Signal-only readings (`+CSQ`, `+CESQ`, `+QCSQ`).
    #[serde(default, skip_serializing_if = "Signal::is_empty")]
    pub signal: Signal,
    /// Cell lock state and lock capabilities (`AT+QNWLOCK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockState>,
    /// Current operator (`AT+COPS?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
    /// Networks found by a scan (`AT+COPS=?`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Quectel `AT+QCFG="nwscanmode"`: 0 auto, 1 GSM only, 2 WCDMA only, 3 LTE only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_mode: Option<u8>,
    /// `AT+CFUN?`: 0 minimum, 1 full, 4 RF off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfun: Option<u8>,
    /// Final results that were errors (`ERROR`, `+CME ERROR: n`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AtError>,
}

impl RadioReport {
    /// True if nothing at all was understood.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The serving cell. For NR5G-NSA the LTE anchor is in the top-level fields and the NR leg in `nr`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingCell {
    /// Radio access technology: "LTE", "NR5G-SA", "NR5G-NSA", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rat: Option<String>,
    /// Quectel state: "SEARCH", "LIMSRV", "NOCONN", "CONNECT"; Sierra: PS state ("Attached").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// "FDD" or "TDD".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex: Option<String>,
    /// Mobile country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<u16>,
    /// Mobile network code (as an integer: "03" is 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnc: Option<u16>,
    /// Tracking area code (decoded from hex where the command prints hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tac: Option<u32>,
    /// Cell identity: 28-bit ECI (LTE) or 36-bit NCI (NR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<u64>,
    /// Physical cell id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<u16>,
    /// LTE channel number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earfcn: Option<u32>,
    /// NR channel number (NR5G-SA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arfcn: Option<u32>,
    /// Band number (LTE band 3 is 3, NR n71 is 71).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<u16>,
    /// Downlink bandwidth in MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mhz: Option<f64>,
    /// Uplink bandwidth in MHz (LTE QENG only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ul_bandwidth_mhz: Option<f64>,
    /// NR subcarrier spacing in kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scs_khz: Option<u16>,
    /// Reference signal received power, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
    /// Reference signal received quality, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
    /// Received signal strength, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// Signal to interference and noise ratio, dB (scaled per command and firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_db: Option<f64>,
    /// SINR exactly as the modem printed it, before scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_raw: Option<f64>,
    /// Channel quality indicator (RM5xx LTE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cqi: Option<u16>,
    /// Transmit power as printed (RM5xx LTE; unit undocumented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_power: Option<i32>,
    /// Cell selection RX level (Srxlev), dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srxlev: Option<i32>,
    /// NR leg of an EN-DC (NR5G-NSA) connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr: Option<NrLeg>,
}

/// The NR secondary cell of an NR5G-NSA (EN-DC) connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NrLeg {
    /// Physical cell id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<u16>,
    /// NR-ARFCN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arfcn: Option<u32>,
    /// NR band number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<u16>,
    /// Downlink bandwidth in MHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mhz: Option<f64>,
    /// Subcarrier spacing in kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scs_khz: Option<u16>,
    /// SS-RSRP, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
    /// SS-RSRQ, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
    /// SS-SINR, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_db: Option<f64>,
}

/// One neighbour cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NeighbourCell {
    /// Radio access technology ("LTE", "WCDMA").
    pub rat: String,
    /// "intra" (same frequency as the serving cell) or "inter".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// LTE channel number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earfcn: Option<u32>,
    /// NR channel number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arfcn: Option<u32>,
    /// UMTS channel number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uarfcn: Option<u32>,
    /// Physical cell id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<u16>,
    /// UMTS primary scrambling code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psc: Option<u16>,
    /// UMTS RSCP, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rscp_dbm: Option<f64>,
    /// UMTS Ec/No, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecno_db: Option<f64>,
    /// RSRP, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
    /// RSRQ, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
    /// RSSI, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// SINR, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_db: Option<f64>,
    /// Srxlev, dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srxlev: Option<i32>,
}

/// Network registration from `+CREG`, `+CEREG` or `+C5GREG` (query reply or URC).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Which command reported it: "CREG", "CEREG" or "C5GREG".
    pub source: String,
    /// The `<n>` setting (query replies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u8>,
    /// 0 not searching, 1 home, 2 searching, 3 denied, 4 unknown, 5 roaming, ...
    pub stat: u8,
    /// Tracking/location area code (from hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tac: Option<u32>,
    /// Cell identity (from hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_id: Option<u64>,
    /// Access technology: 7 E-UTRAN, 11 NR on 5GC, 13 EN-DC, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<u8>,
}

impl Registration {
    /// Registered, home network or roaming.
    pub fn is_registered(&self) -> bool {
        matches!(self.stat, 1 | 5)
    }
}

/// Signal-only readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// `+CSQ` (or the `+QIND: "csq"` URC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csq: Option<Csq>,
    /// `+CESQ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesq: Option<Cesq>,
    /// `+QCSQ`: one entry per RAT line of the last response (two on NR5G-NSA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub qcsq: Vec<Qcsq>,
}

impl Signal {
    /// True if no reading is present.
    pub fn is_empty(&self) -> bool {
        self.csq.is_none() && self.cesq.is_none() && self.qcsq.is_empty()
    }
}

/// `+CSQ: <rssi>,<ber>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Csq {
    /// The index as printed (0..31, 99 unknown).
    pub rssi_index: u8,
    /// −113 + 2·index dBm; absent for 99 (unknown) or out of range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// Bit error rate class 0..7; absent for 99 (normal on LTE/NR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ber: Option<u8>,
}

/// `+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>` decoded to units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cesq {
    /// GSM RX level, dBm (−111 + index; lower bound at 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxlev_dbm: Option<f64>,
    /// GSM bit error rate class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ber: Option<u8>,
    /// UMTS RSCP, dBm (−121 + index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rscp_dbm: Option<f64>,
    /// UMTS Ec/No, dB (−24.5 + index/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecno_db: Option<f64>,
    /// LTE RSRQ, dB (−20 + index/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
    /// LTE RSRP, dBm (−141 + index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
}

/// One `+QCSQ` line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Qcsq {
    /// "LTE", "NR5G", "WCDMA", "GSM" or "NOSERVICE".
    pub sysmode: String,
    /// RSSI, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi_dbm: Option<f64>,
    /// RSRP (LTE, NR) or RSCP (WCDMA), dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrp_dbm: Option<f64>,
    /// SINR, dB (LTE: raw/5 − 20; NR: as printed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_db: Option<f64>,
    /// SINR exactly as printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinr_raw: Option<f64>,
    /// RSRQ (LTE, NR) or Ec/Io (WCDMA), dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsrq_db: Option<f64>,
}

/// Cell lock state (`AT+QNWLOCK` query) and the lock modes a modem offers (`AT+QNWLOCK=?`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockState {
    /// LTE lock (`"common/4g"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<LteLock>,
    /// NR lock (`"common/5g"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr: Option<NrLock>,
    /// Lock modes listed by the test form, e.g. "common/4g", "common/5g", "save_ctrl".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported: Vec<String>,
}

/// LTE cell lock: locked to these (EARFCN, PCI) cells; empty = not locked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LteLock {
    /// True if at least one cell is locked.
    pub locked: bool,
    /// The locked cells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<LockedLteCell>,
}

/// One locked LTE cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedLteCell {
    /// Channel number.
    pub earfcn: u32,
    /// Physical cell id.
    pub pci: u16,
}

/// NR cell lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NrLock {
    /// True if locked.
    pub locked: bool,
    /// Physical cell id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<u16>,
    /// NR-ARFCN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arfcn: Option<u32>,
    /// Subcarrier spacing, kHz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scs_khz: Option<u16>,
    /// NR band number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band: Option<u16>,
}

/// `+COPS: <mode>[,<format>,<oper>[,<AcT>]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// 0 automatic, 1 manual, 2 deregistered, 3 set format only, 4 manual then automatic.
    pub mode: u8,
    /// 0 long name, 1 short name, 2 numeric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u8>,
    /// The operator in that format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Access technology: 7 E-UTRAN, 11 NR on 5GC, 13 EN-DC, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<u8>,
}

/// One network of an `AT+COPS=?` scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 0 unknown, 1 available, 2 current, 3 forbidden.
    pub status: u8,
    /// Long alphanumeric name.
    pub long_name: String,
    /// Short alphanumeric name.
    pub short_name: String,
    /// Numeric MCC+MNC, e.g. "310260".
    pub numeric: String,
    /// Access technology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<u8>,
}

/// A final result that was an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtError {
    /// The command it answered, if the echo was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Numeric `+CME ERROR` code; absent for plain `ERROR` or verbose text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Text: the 27.007 meaning of the code, the verbose text, or "ERROR".
    pub message: String,
}

/// Appends ` name value unit` if the value is present.
fn put<T: std::fmt::Display>(out: &mut String, name: &str, v: Option<T>, unit: &str) {
    if let Some(v) = v {
        out.push_str(&format!(" {name} {v}{unit}"));
    }
}

/// A short human summary, one line per item.
impl std::fmt::Display for RadioReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.serving {
            let mut l = format!("serving: {}", s.rat.as_deref().unwrap_or("?"));
            put(&mut l, "state", s.state.as_deref(), "");
            if let (Some(mcc), Some(mnc)) = (s.mcc, s.mnc) {
                l.push_str(&format!(" plmn {mcc}-{mnc:02}"));
            }
            put(&mut l, "tac", s.tac, "");
            put(&mut l, "cell", s.cell_id, "");
            put(&mut l, "pci", s.pci, "");
            put(&mut l, "earfcn", s.earfcn, "");
            put(&mut l, "arfcn", s.arfcn, "");
            put(&mut l, "band", s.band, "");
            put(&mut l, "bw", s.bandwidth_mhz, " MHz");
            put(&mut l, "rsrp", s.rsrp_dbm, " dBm");
            put(&mut l, "rsrq", s.rsrq_db, " dB");
            put(&mut l, "rssi", s.rssi_dbm, " dBm");
            put(&mut l, "sinr", s.sinr_db, " dB");
            writeln!(f, "{l}")?;
            if let Some(nr) = &s.nr {
                let mut l = "  nr:".to_string();
                put(&mut l, "pci", nr.pci, "");
                put(&mut l, "arfcn", nr.arfcn, "");
                put(&mut l, "band", nr.band, "");
                put(&mut l, "rsrp", nr.rsrp_dbm, " dBm");
                put(&mut l, "rsrq", nr.rsrq_db, " dB");
                put(&mut l, "sinr", nr.sinr_db, " dB");
                writeln!(f, "{l}")?;
            }
        }
        for n in &self.neighbours {
            let mut l = format!("neighbour: {}", n.rat);
            put(&mut l, "", n.kind.as_deref(), "");
            put(&mut l, "earfcn", n.earfcn, "");
            put(&mut l, "uarfcn", n.uarfcn, "");
            put(&mut l, "pci", n.pci, "");
            put(&mut l, "psc", n.psc, "");
            put(&mut l, "rsrp", n.rsrp_dbm, " dBm");
            put(&mut l, "rsrq", n.rsrq_db, " dB");
            writeln!(f, "{l}")?;
        }
        if let Some(r) = &self.registration {
            let mut l = format!("registration: {} stat {}", r.source, r.stat);
            put(&mut l, "tac", r.tac, "");
            put(&mut l, "cell", r.cell_id, "");
            put(&mut l, "act", r.act, "");
            writeln!(f, "{l}")?;
        }
        if let Some(c) = &self.signal.csq {
            let mut l = format!("csq: {}", c.rssi_index);
            put(&mut l, "rssi", c.rssi_dbm, " dBm");
            writeln!(f, "{l}")?;
        }
        if let Some(c) = &self.signal.cesq {
            let mut l = "cesq:".to_string();
            put(&mut l, "rsrp", c.rsrp_dbm, " dBm");
            put(&mut l, "rsrq", c.rsrq_db, " dB");
            put(&mut l, "rscp", c.rscp_dbm, " dBm");
            put(&mut l, "rxlev", c.rxlev_dbm, " dBm");
            writeln!(f, "{l}")?;
        }
        for q in &self.signal.qcsq {
            let mut l = format!("qcsq: {}", q.sysmode);
            put(&mut l, "rssi", q.rssi_dbm, " dBm");
            put(&mut l, "rsrp", q.rsrp_dbm, " dBm");
            put(&mut l, "rsrq", q.rsrq_db, " dB");
            put(&mut l, "sinr", q.sinr_db, " dB");
            writeln!(f, "{l}")?;
        }
        if let Some(lock) = &self.lock {
            if let Some(l) = &lock.lte {
                let cells: Vec<String> = l
                    .cells
                    .iter()
                    .map(|c| format!("{}/{}", c.earfcn, c.pci))
                    .collect();
                writeln!(
                    f,
                    "lock lte: {}",
                    if l.locked {
                        cells.join(" ")
                    } else {
                        "none".into()
                    }
                )?;
            }
            if let Some(n) = &lock.nr {
                let mut l = format!("lock nr: {}", if n.locked { "" } else { "none" });
                put(&mut l, "pci", n.pci, "");
                put(&mut l, "arfcn", n.arfcn, "");
                put(&mut l, "scs", n.scs_khz, " kHz");
                put(&mut l, "band", n.band, "");
                writeln!(f, "{}", l.trim_end())?;
            }
            if !lock.supported.is_empty() {
                writeln!(f, "lock modes: {}", lock.supported.join(" "))?;
            }
        }
        if let Some(o) = &self.operator {
            let mut l = format!("operator: mode {}", o.mode);
            put(&mut l, "", o.name.as_deref(), "");
            put(&mut l, "act", o.act, "");
            writeln!(f, "{l}")?;
        }
        for n in &self.networks {
            writeln!(
                f,
                "network: {} {} status {}",
                n.numeric, n.long_name, n.status
            )?;
        }
        if let Some(m) = self.scan_mode {
            writeln!(f, "scan mode: {m}")?;
        }
        if let Some(m) = self.cfun {
            writeln!(f, "cfun: {m}")?;
        }
        for e in &self.errors {
            let mut l = "error:".to_string();
            put(&mut l, "", e.command.as_deref(), "");
            put(&mut l, "code", e.code, "");
            writeln!(f, "{l} {}", e.message)?;
        }
        Ok(())
    }
}

/// Link quality band of a cell's metrics (RADIO.md §1.4), worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Below every usable threshold: fail over pre-emptively.
    Unusable,
    /// Poor: duplicate critical data elsewhere.
    Poor,
    /// Fair.
    Fair,
    /// Good.
    Good,
    /// Excellent.
    Excellent,
}

impl Band {
    /// Lower bounds of Excellent, Good, Fair and Poor for one metric; below the last: Unusable.
    fn of(value: f64, bounds: [f64; 4]) -> Band {
        match bounds.iter().position(|b| value >= *b) {
            Some(0) => Band::Excellent,
            Some(1) => Band::Good,
            Some(2) => Band::Fair,
            Some(3) => Band::Poor,
            _ => Band::Unusable,
        }
    }

    /// The band of LTE metrics: the worst band among the known ones (SINR predicts throughput,
    /// RSRP guards coverage, RSRQ load and interference); missing or non-finite metrics are
    /// ignored, `None` when none is left.
    pub fn lte(rsrp_dbm: Option<f64>, rsrq_db: Option<f64>, sinr_db: Option<f64>) -> Option<Band> {
        [
            (rsrp_dbm, [-85.0, -95.0, -105.0, -115.0]),
            (rsrq_db, [-10.0, -13.0, -16.0, -19.0]),
            (sinr_db, [13.0, 5.0, 0.0, -3.0]),
        ]
        .into_iter()
        .filter_map(|(v, b)| v.filter(|v| v.is_finite()).map(|v| Band::of(v, b)))
        .min()
    }

    /// The band of NR metrics (SS-RSRP, SS-SINR), as [`Band::lte`].
    pub fn nr(rsrp_dbm: Option<f64>, sinr_db: Option<f64>) -> Option<Band> {
        [
            (rsrp_dbm, [-80.0, -90.0, -100.0, -110.0]),
            (sinr_db, [15.0, 5.0, 0.0, -5.0]),
        ]
        .into_iter()
        .filter_map(|(v, b)| v.filter(|v| v.is_finite()).map(|v| Band::of(v, b)))
        .min()
    }

    /// The band of a serving cell: NR metrics for NR5G-SA, LTE otherwise (the anchor of NSA).
    pub fn of_serving(cell: &ServingCell) -> Option<Band> {
        if cell.rat.as_deref() == Some("NR5G-SA") {
            Band::nr(cell.rsrp_dbm, cell.sinr_db)
        } else {
            Band::lte(cell.rsrp_dbm, cell.rsrq_db, cell.sinr_db)
        }
    }
}

#[cfg(test)]
mod band_tests {
    use super::Band;

    #[test]
    fn lte_bands_follow_the_radio_reference_table() {
        let rsrp = |v| Band::lte(Some(v), None, None);
        assert_eq!(rsrp(-80.0), Some(Band::Excellent));
        assert_eq!(rsrp(-85.0), Some(Band::Excellent));
        assert_eq!(rsrp(-90.0), Some(Band::Good));
        assert_eq!(rsrp(-100.0), Some(Band::Fair));
        assert_eq!(rsrp(-110.0), Some(Band::Poor));
        assert_eq!(rsrp(-115.1), Some(Band::Unusable));
        let sinr = |v| Band::lte(None, None, Some(v));
        assert_eq!(sinr(20.0), Some(Band::Excellent));
        assert_eq!(sinr(8.0), Some(Band::Good));
        assert_eq!(sinr(2.0), Some(Band::Fair));
        assert_eq!(sinr(-1.0), Some(Band::Poor));
        assert_eq!(sinr(-4.0), Some(Band::Unusable));
        assert_eq!(Band::lte(None, Some(-17.0), None), Some(Band::Poor));
        assert_eq!(Band::lte(None, None, None), None);
    }

    #[test]
    fn the_worst_metric_decides() {
        assert_eq!(
            Band::lte(Some(-80.0), Some(-9.0), Some(-2.0)),
            Some(Band::Poor)
        );
        assert_eq!(Band::nr(Some(-85.0), Some(30.0)), Some(Band::Good));
        assert_eq!(Band::nr(Some(-120.0), Some(30.0)), Some(Band::Unusable));
        assert!(Band::Unusable < Band::Poor && Band::Good < Band::Excellent);
    }
}

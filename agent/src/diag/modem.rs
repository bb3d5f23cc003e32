//! `pitlink modem <link> info|cells|lock|release|reselect`: one question or command to a link's
//! modem, through the backend its `[[links]]` table names, printed for a human or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use modem_hal::modem::{Capabilities, CommandOutcome, Identity, Modem, ModemError, Outage};
use modem_hal::radio::{NeighbourCell, Registration, ServingCell};
use serde::Serialize;

use crate::config::LinkConfig;

/// What to ask or tell the modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Identity, capabilities, registration.
    Info,
    /// Serving cell with metrics, neighbour cells.
    Cells,
    /// Lock to an LTE cell.
    LockLte {
        /// Downlink EARFCN.
        earfcn: u32,
        /// Physical cell id.
        pci: u16,
    },
    /// Lock to an NR cell.
    LockNr {
        /// Physical cell id.
        pci: u16,
        /// NR-ARFCN.
        arfcn: u32,
        /// Subcarrier spacing in kHz.
        scs_khz: u16,
        /// NR band.
        band: u16,
    },
    /// Release every cell lock.
    Release,
    /// Force a fresh cell selection.
    Reselect,
}

/// `info` as JSON.
#[derive(Debug, Serialize)]
pub struct Info {
    /// Link name.
    pub link: String,
    /// How the modem is reached.
    pub backend: String,
    /// Who the modem is.
    pub identity: Identity,
    /// What it can be commanded to do.
    pub capabilities: Capabilities,
    /// Network registration, when the modem answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Questions that failed, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `cells` as JSON.
#[derive(Debug, Serialize)]
pub struct Cells {
    /// Link name.
    pub link: String,
    /// The serving cell; absent without service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingCell>,
    /// Neighbour cells (empty when the modem cannot list them).
    pub neighbours: Vec<NeighbourCell>,
    /// Questions that failed, with why (e.g. no service).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A radio command's result as JSON.
#[derive(Debug, Serialize)]
pub struct Done {
    /// Link name.
    pub link: String,
    /// `lock`, `release` or `reselect`.
    pub action: &'static str,
    /// The AT command lines sent (empty for ModemManager).
    pub commands: Vec<String>,
    /// Expected outage of the link in seconds (absent: until the radio is switched on).
    pub outage_s: Option<f64>,
}

/// Runs `action` against `link`'s modem and returns what to print.
pub async fn run(link: &LinkConfig, action: &Action, json: bool) -> Result<String> {
    // The CLI asks once: fail fast instead of waiting for a port that keeps vanishing.
    let Some(modem) = crate::daemon::modems::open(link, Duration::from_secs(1)).await? else {
        bail!(
            "link '{}' has no modem: set modem = \"/dev/ttyUSB2\" (its AT port) or modemmanager = \"first\" in its [[links]] table",
            link.name
        );
    };
    let backend = crate::daemon::modems::describe(link).unwrap_or_default();
    ask(&modem, &link.name, &backend, action, json).await
}

/// Runs `action` on `modem` and renders the result.
pub async fn ask<M: Modem>(
    modem: &M,
    link: &str,
    backend: &str,
    action: &Action,
    json: bool,
) -> Result<String> {
    let context = |what: &str| format!("link '{link}': {what}");
    match action {
        Action::Info => {
            let identity = modem
                .identity()
                .await
                .with_context(|| context("identity"))?;
            let capabilities = modem
                .capabilities()
                .await
                .with_context(|| context("capabilities"))?;
            let mut errors = Vec::new();
            let registration = keep(modem.registration().await, "registration", &mut errors);
            let info = Info {
                link: link.into(),
                backend: backend.into(),
                identity,
                capabilities,
                registration,
                errors,
            };
            Ok(if json {
                serde_json::to_string(&info)? + "\n"
            } else {
                render_info(&info)
            })
        }
        Action::Cells => {
            let mut errors = Vec::new();
            let serving = keep(modem.serving_cell().await, "serving cell", &mut errors);
            let caps = modem
                .capabilities()
                .await
                .with_context(|| context("capabilities"))?;
            let neighbours = if caps.neighbours {
                keep(modem.neighbours().await, "neighbours", &mut errors).unwrap_or_default()
            } else {
                Vec::new()
            };
            let cells = Cells {
                link: link.into(),
                serving,
                neighbours,
                errors,
            };
            Ok(if json {
                serde_json::to_string(&cells)? + "\n"
            } else {
                render_cells(&cells)
            })
        }
        Action::LockLte { earfcn, pci } => {
            let out = modem
                .lock_lte(*earfcn, *pci)
                .await
                .with_context(|| context("LTE cell lock"))?;
            done(link, "lock", out, json)
        }
        Action::LockNr {
            pci,
            arfcn,
            scs_khz,
            band,
        } => {
            let out = modem
                .lock_nr(*pci, *arfcn, *scs_khz, *band)
                .await
                .with_context(|| context("NR cell lock"))?;
            done(link, "lock", out, json)
        }
        Action::Release => {
            let out = modem
                .release_lock()
                .await
                .with_context(|| context("lock release"))?;
            done(link, "release", out, json)
        }
        Action::Reselect => {
            let out = modem
                .reselect()
                .await
                .with_context(|| context("reselection"))?;
            done(link, "reselect", out, json)
        }
    }
}

fn keep<T>(r: Result<T, ModemError>, what: &str, errors: &mut Vec<String>) -> Option<T> {
    r.map_err(|e| errors.push(format!("{what}: {e}"))).ok()
}

fn done(link: &str, action: &'static str, out: CommandOutcome, json: bool) -> Result<String> {
    let outage_s = out.outage.expected().map(|d| d.as_secs_f64());
    let d = Done {
        link: link.into(),
        action,
        commands: out.commands,
        outage_s,
    };
    if json {
        return Ok(serde_json::to_string(&d)? + "\n");
    }
    let mut s = format!("{link}: {action} done");
    if !d.commands.is_empty() {
        let _ = write!(s, " ({})", d.commands.join("; "));
    }
    match out.outage {
        Outage::Reattach(t) => {
            let _ = write!(s, "; expect up to {:.0} s without service", t.as_secs_f64());
        }
        Outage::UntilRadioOn => s.push_str("; no service until the radio is switched on"),
    }
    s.push('\n');
    Ok(s)
}

fn opt<T: std::fmt::Display>(label: &str, v: Option<T>) -> String {
    v.map(|v| format!("  {label} {v}")).unwrap_or_default()
}

fn render_info(i: &Info) -> String {
    let id = &i.identity;
    let mut s = format!("link {} ({})\n", i.link, i.backend);
    let _ = writeln!(
        s,
        "  modem     {} {} ({:?} dialect){}{}",
        id.manufacturer.as_deref().unwrap_or("?"),
        id.model.as_deref().unwrap_or("?"),
        id.dialect,
        opt("firmware", id.firmware.as_deref()),
        opt("IMEI", id.imei.as_deref()),
    );
    let op = id.operator.as_ref().and_then(|o| o.name.as_deref());
    let _ = writeln!(
        s,
        "  network   SIM {}, operator {}",
        id.sim_operator.as_deref().unwrap_or("?"),
        op.unwrap_or("none (not registered)")
    );
    if let Some(r) = &i.registration {
        let stat = match r.stat {
            0 => "not searching",
            1 => "registered, home",
            2 => "searching",
            3 => "denied",
            5 => "registered, roaming",
            _ => "unknown",
        };
        let _ = writeln!(
            s,
            "  {:<9} {stat}{}{}",
            r.source,
            opt("TAC", r.tac.map(|t| format!("{t:#X}"))),
            opt("cell", r.cell_id.map(|c| format!("{c:#X}"))),
        );
    }
    let c = &i.capabilities;
    let can: Vec<&str> = [
        (c.lte_lock, "LTE cell lock"),
        (c.nr_lock, "NR cell lock"),
        (c.reselect, "reselection"),
        (c.radio, "radio off/on"),
        (c.neighbours, "neighbour cells"),
    ]
    .iter()
    .filter(|(y, _)| *y)
    .map(|(_, n)| *n)
    .collect();
    let _ = writeln!(
        s,
        "  can       {}",
        if can.is_empty() {
            "nothing but read metrics".to_string()
        } else {
            can.join(", ")
        }
    );
    for e in &i.errors {
        let _ = writeln!(s, "  error     {e}");
    }
    s
}

fn render_cells(c: &Cells) -> String {
    let mut s = String::new();
    match &c.serving {
        Some(v) if v.pci.is_none() && v.rat.is_none() => {
            let _ = writeln!(
                s,
                "serving    none ({})",
                v.state.as_deref().unwrap_or("no service")
            );
        }
        Some(v) => {
            let _ = writeln!(
                s,
                "serving    {} {}{}{}{}{}{}{}{}{}{}{}",
                v.rat.as_deref().unwrap_or("?"),
                v.state.as_deref().unwrap_or(""),
                opt("PLMN", v.mcc.zip(v.mnc).map(|(a, b)| format!("{a}-{b:02}"))),
                opt("TAC", v.tac.map(|t| format!("{t:#X}"))),
                opt("cell", v.cell_id.map(|c| format!("{c:#X}"))),
                opt("PCI", v.pci),
                opt("EARFCN", v.earfcn),
                opt("ARFCN", v.arfcn),
                opt("band", v.band),
                opt("RSRP", v.rsrp_dbm.map(|x| format!("{x} dBm"))),
                opt("RSRQ", v.rsrq_db.map(|x| format!("{x} dB"))),
                opt("SINR", v.sinr_db.map(|x| format!("{x} dB"))),
            );
            if let Some(nr) = &v.nr {
                let _ = writeln!(
                    s,
                    "  + NR{}{}{}{}{}",
                    opt("PCI", nr.pci),
                    opt("ARFCN", nr.arfcn),
                    opt("band", nr.band),
                    opt("RSRP", nr.rsrp_dbm.map(|x| format!("{x} dBm"))),
                    opt("SINR", nr.sinr_db.map(|x| format!("{x} dB"))),
                );
            }
        }
        None => s.push_str("serving    none\n"),
    }
    for n in &c.neighbours {
        let _ = writeln!(
            s,
            "neighbour  {} {}{}{}{}{}{}",
            n.rat,
            n.kind.as_deref().unwrap_or(""),
            opt("EARFCN", n.earfcn),
            opt("ARFCN", n.arfcn),
            opt("PCI", n.pci),
            opt("RSRP", n.rsrp_dbm.map(|x| format!("{x} dBm"))),
            opt("RSRQ", n.rsrq_db.map(|x| format!("{x} dB"))),
        );
    }
    for e in &c.errors {
        let _ = writeln!(s, "error      {e}");
    }
    s
}

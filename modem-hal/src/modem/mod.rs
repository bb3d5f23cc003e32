//! The [`Modem`] trait: what the bond scheduler and the tower policy may ask of a modem, and the
//! shared types of its answers. [`AtModem`] implements it over the AT transport; [`plan`] holds
//! its sans-IO decisions (dialect, capabilities, exact command lines, expected outages).

pub mod at_modem;
pub mod plan;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::at::transport::{AtError, ErrorCode};
use crate::radio::{NeighbourCell, Operator, Registration, ServingCell};

pub use self::at_modem::{AtChannel, AtModem};
pub use self::plan::Dialect;

/// Who the modem is: `ATI`/`AT+CGMM`, `AT+CGMR`, `AT+CGSN`, `AT+QSPN`, `AT+COPS?`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The command dialect chosen from the model and manufacturer.
    pub dialect: Dialect,
    /// Manufacturer, when `ATI` names it (e.g. "Quectel").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model (`AT+CGMM`), e.g. "EC25".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Firmware revision (`AT+CGMR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// IMEI (`AT+CGSN`), 15 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    /// The SIM's service provider (Quectel `AT+QSPN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_operator: Option<String>,
    /// Current network operator (`AT+COPS?`); absent when not registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
}

/// What the modem can be commanded to do, probed once (`AT+QNWLOCK=?`, `AT+CFUN=?`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Lock to an LTE cell by EARFCN and PCI (`AT+QNWLOCK="common/4g"`).
    pub lte_lock: bool,
    /// Lock to an NR cell by PCI, NR-ARFCN, SCS and band (`AT+QNWLOCK="common/5g"`).
    pub nr_lock: bool,
    /// Force a fresh cell selection (`AT+CFUN=4` then `AT+CFUN=1`).
    pub reselect: bool,
    /// Switch the radio off and on (`AT+CFUN=4` / `AT+CFUN=1`).
    pub radio: bool,
    /// List neighbour cells (Quectel `AT+QENG="neighbourcell"`, Sierra `AT!LTEINFO?`).
    pub neighbours: bool,
}

impl Capabilities {
    /// Whether `feature` is available.
    pub fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::LteLock => self.lte_lock,
            Feature::NrLock => self.nr_lock,
            Feature::ReleaseLock => self.lte_lock || self.nr_lock,
            Feature::Reselect => self.reselect,
            Feature::Radio => self.radio,
            Feature::Neighbours => self.neighbours,
        }
    }
}

/// A thing a modem may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// LTE cell lock.
    LteLock,
    /// NR cell lock.
    NrLock,
    /// Releasing a cell lock.
    ReleaseLock,
    /// Forced reselection.
    Reselect,
    /// Radio off/on.
    Radio,
    /// Listing neighbour cells.
    Neighbours,
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LteLock => "LTE cell lock",
            Self::NrLock => "NR cell lock",
            Self::ReleaseLock => "cell lock release",
            Self::Reselect => "forced reselection",
            Self::Radio => "radio off/on",
            Self::Neighbours => "neighbour cells",
        })
    }
}

/// How long the data link is expected to be down after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outage {
    /// The modem detaches and re-attaches: down for up to this long.
    Reattach(Duration),
    /// Down until the radio is switched on again.
    UntilRadioOn,
}

impl Outage {
    /// The bounded outage, `None` for [`Outage::UntilRadioOn`].
    pub fn expected(&self) -> Option<Duration> {
        match self {
            Self::Reattach(d) => Some(*d),
            Self::UntilRadioOn => None,
        }
    }
}

/// What a radio command did: the lines it sent, in order, and the outage to expect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The command lines sent, each answered `OK`.
    pub commands: Vec<String>,
    /// The expected outage of the data link.
    pub outage: Outage,
}

/// Why a modem request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModemError {
    /// The modem cannot do this (probed or known from its dialect); asking again will not help.
    #[error("{feature} is not supported by this modem ({dialect:?} dialect)")]
    Unsupported {
        /// What was asked.
        feature: Feature,
        /// The dialect of the modem.
        dialect: Dialect,
    },
    /// `+CME ERROR: 30`: the modem has no network service (no coverage).
    #[error("{command}: no network service (+CME ERROR: 30)")]
    NoService {
        /// The command.
        command: String,
    },
    /// The transport failed or the modem answered with an error.
    #[error(transparent)]
    At(AtError),
    /// A response line that does not parse.
    #[error("{command}: cannot parse {line:?}: {why}")]
    Parse {
        /// The command.
        command: String,
        /// The line (cut at 200 characters).
        line: String,
        /// What was wrong.
        why: String,
    },
    /// The response parsed but lacks what was asked for.
    #[error("{command}: the response has no {what}")]
    Missing {
        /// The command.
        command: String,
        /// What is missing.
        what: &'static str,
    },
    /// A D-Bus call failed (ModemManager backend): the error name as sent on the bus (or
    /// `(local)` for a failure before or without a reply) and its message.
    #[error("D-Bus {call}: {name}: {message}")]
    Dbus {
        /// The call, e.g. `Modem3gpp.Register`.
        call: String,
        /// The D-Bus error name, e.g. `org.freedesktop.ModemManager1.Error.Core.Unsupported`.
        name: String,
        /// The error message.
        message: String,
    },
    /// No modem matches the selection (ModemManager backend).
    #[error("no modem {wanted} (found: {found})")]
    NoModem {
        /// What was asked for, e.g. `index 3` or `IMEI 867...`.
        wanted: String,
        /// The modems present, e.g. `/org/freedesktop/ModemManager1/Modem/0`, or `none`.
        found: String,
    },
    /// An argument out of range; nothing was sent.
    #[error("invalid argument {name} = {value}: {why}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        why: &'static str,
    },
}

impl From<AtError> for ModemError {
    /// `+CME ERROR: 30` (numeric or verbose) becomes [`ModemError::NoService`].
    fn from(e: AtError) -> Self {
        match e {
            AtError::Cme { command, code } if is_no_service(&code) => Self::NoService { command },
            e => Self::At(e),
        }
    }
}

fn is_no_service(code: &ErrorCode) -> bool {
    code.code() == Some(30)
}

/// A modem as the rest of pitlink sees it. Every future is `Send`; implementations serialise
/// their commands themselves.
pub trait Modem: Send + Sync {
    /// Model, firmware, IMEI and operator.
    fn identity(&self) -> impl Future<Output = Result<Identity, ModemError>> + Send;
    /// Network registration (`AT+CEREG?`).
    fn registration(&self) -> impl Future<Output = Result<Registration, ModemError>> + Send;
    /// The serving cell with its metrics.
    fn serving_cell(&self) -> impl Future<Output = Result<ServingCell, ModemError>> + Send;
    /// The neighbour cells the modem measures.
    fn neighbours(&self) -> impl Future<Output = Result<Vec<NeighbourCell>, ModemError>> + Send;
    /// What the modem can be commanded to do, probed on first use and cached.
    fn capabilities(&self) -> impl Future<Output = Result<Capabilities, ModemError>> + Send;
    /// Locks to one LTE cell.
    fn lock_lte(
        &self,
        earfcn: u32,
        pci: u16,
    ) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send;
    /// Locks to one NR cell (`scs_khz` 15, 30, 60 or 120).
    fn lock_nr(
        &self,
        pci: u16,
        arfcn: u32,
        scs_khz: u16,
        band: u16,
    ) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send;
    /// Releases every cell lock the modem supports.
    fn release_lock(&self) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send;
    /// Forces a fresh cell selection.
    fn reselect(&self) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send;
    /// Switches the radio on or off (RF off keeps the SIM and the modem up).
    fn radio(&self, on: bool) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send;
}

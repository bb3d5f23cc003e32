//! The ModemManager backend: [`MmModem`] implements [`Modem`] over ModemManager's D-Bus API
//! (`org.freedesktop.ModemManager1`, RADIO.md §2.1) instead of AT commands.
//!
//! The modem is found through the ObjectManager at `/org/freedesktop/ModemManager1` (objects
//! `.../Modem/N`), chosen by index, by IMEI or as the first one ([`ModemSelector`]). Values are
//! read fresh on every call (no property cache); the mapping to pitlink's types is the sans-IO
//! [`map`] module. ModemManager has no cell-lock API: the lock calls answer
//! [`ModemError::Unsupported`] without touching the bus.

pub mod map;
pub mod proxies;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use tokio::sync::OnceCell;
use zbus::proxy::CacheProperties;
use zbus::{Connection, DBusError};

use self::map::{CellInfo, SignalReading, SignalReadings};
use self::proxies::{
    IFACE_3GPP, IFACE_LOCATION, IFACE_MODEM, IFACE_SIGNAL, LocationProxy, MANAGER_PATH,
    MODEM_PATH_PREFIX, Modem3gppProxy, ModemProxy, SERVICE, SignalProxy, SimProxy,
};
use crate::modem::plan::{self, Dialect, REATTACH_OUTAGE};
use crate::modem::{Capabilities, CommandOutcome, Feature, Identity, Modem, ModemError, Outage};
use crate::radio::{NeighbourCell, Operator, Registration, ServingCell};

/// Longest identity field kept (manufacturer, model, firmware, IMEI, names), in characters.
const MAX_ID_LEN: usize = 64;

/// Which of ModemManager's modems to drive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModemSelector {
    /// The modem with the lowest index.
    #[default]
    First,
    /// The modem at `/org/freedesktop/ModemManager1/Modem/N`.
    Index(u32),
    /// The modem whose `EquipmentIdentifier` (or `Modem3gpp.Imei`) is this IMEI.
    Imei(String),
}

impl std::fmt::Display for ModemSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::First => f.write_str("(any)"),
            Self::Index(i) => write!(f, "with index {i}"),
            Self::Imei(imei) => write!(f, "with IMEI {imei}"),
        }
    }
}

/// How [`MmModem`] picks and polls its modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmConfig {
    /// Which modem.
    pub select: ModemSelector,
    /// The `Signal.Setup` polling rate, whole seconds, at least 1 s (default 1 s).
    pub signal_rate: Duration,
}

impl Default for MmConfig {
    fn default() -> Self {
        Self {
            select: ModemSelector::First,
            signal_rate: Duration::from_secs(1),
        }
    }
}

/// A modem object found through the ObjectManager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemEntry {
    /// N of `/org/freedesktop/ModemManager1/Modem/N`.
    pub index: u32,
    /// The IMEI (`EquipmentIdentifier`, else `Modem3gpp.Imei`), when known.
    pub imei: Option<String>,
    /// The interfaces the object implements.
    pub interfaces: BTreeSet<String>,
}

impl ModemEntry {
    /// The object path.
    pub fn path(&self) -> String {
        format!("{MODEM_PATH_PREFIX}{}", self.index)
    }
}

/// Chooses the modem `select` names among `modems` (any order); the first is the lowest index.
pub fn select_modem<'a>(
    modems: &'a [ModemEntry],
    select: &ModemSelector,
) -> Result<&'a ModemEntry, ModemError> {
    let found = match select {
        ModemSelector::First => modems.iter().min_by_key(|m| m.index),
        ModemSelector::Index(i) => modems.iter().find(|m| m.index == *i),
        ModemSelector::Imei(imei) => modems
            .iter()
            .find(|m| m.imei.as_deref() == Some(imei.trim())),
    };
    found.ok_or_else(|| {
        let mut present: Vec<_> = modems.iter().collect();
        present.sort_by_key(|m| m.index);
        let found = if present.is_empty() {
            "none".to_string()
        } else {
            present
                .iter()
                .map(|m| match &m.imei {
                    Some(imei) => format!("{} (IMEI {imei})", m.path()),
                    None => m.path(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        ModemError::NoModem {
            wanted: select.to_string(),
            found,
        }
    })
}

/// A D-Bus failure of `call` as a [`ModemError::Dbus`], keeping the error name sent on the bus.
pub fn dbus_error(call: &str, e: zbus::Error) -> ModemError {
    let (name, message) = match &e {
        zbus::Error::MethodError(name, msg, _) => {
            (name.to_string(), msg.clone().unwrap_or_default())
        }
        zbus::Error::FDO(fdo) => (
            fdo.name().to_string(),
            fdo.description().unwrap_or_default().to_string(),
        ),
        _ => ("(local)".to_string(), e.to_string()),
    };
    ModemError::Dbus {
        call: call.to_string(),
        name,
        message: message.chars().take(200).collect(),
    }
}

fn id_field(s: String) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.chars().take(MAX_ID_LEN).collect())
}

/// A modem driven through ModemManager.
#[derive(Debug)]
pub struct MmModem {
    conn: Connection,
    entry: ModemEntry,
    signal_rate: u32,
    modem: ModemProxy<'static>,
    gpp: Option<Modem3gppProxy<'static>>,
    signal: Option<SignalProxy<'static>>,
    location: Option<LocationProxy<'static>>,
    /// Set once `Signal.Setup` succeeded.
    signal_setup: OnceCell<()>,
    /// Set once the 3GPP location source is enabled.
    location_setup: OnceCell<()>,
}

impl MmModem {
    /// Connects to the system bus and picks the modem.
    pub async fn connect_system(config: MmConfig) -> Result<Self, ModemError> {
        let conn = Connection::system()
            .await
            .map_err(|e| dbus_error("connect to the system bus", e))?;
        Self::connect(&conn, config).await
    }

    /// Picks the modem on `conn` (the system bus, or a private bus in tests).
    pub async fn connect(conn: &Connection, config: MmConfig) -> Result<Self, ModemError> {
        let modems = list_modems(conn).await?;
        let entry = select_modem(&modems, &config.select)?.clone();
        let path = entry.path();
        let has = |iface: &str| entry.interfaces.contains(iface);
        if !has(IFACE_MODEM) {
            return Err(ModemError::Missing {
                command: format!("ObjectManager {path}"),
                what: "org.freedesktop.ModemManager1.Modem interface",
            });
        }
        let modem = build(ModemProxy::builder(conn), &path, "Modem").await?;
        let gpp = match has(IFACE_3GPP) {
            true => Some(build(Modem3gppProxy::builder(conn), &path, "Modem3gpp").await?),
            false => None,
        };
        let signal = match has(IFACE_SIGNAL) {
            true => Some(build(SignalProxy::builder(conn), &path, "Signal").await?),
            false => None,
        };
        let location = match has(IFACE_LOCATION) {
            true => Some(build(LocationProxy::builder(conn), &path, "Location").await?),
            false => None,
        };
        let secs = config.signal_rate.as_secs().clamp(1, u64::from(u32::MAX));
        tracing::info!(
            path = %path,
            imei = entry.imei.as_deref().unwrap_or("?"),
            signal = signal.is_some(),
            location = location.is_some(),
            "ModemManager modem selected"
        );
        Ok(Self {
            conn: conn.clone(),
            signal_rate: u32::try_from(secs).unwrap_or(u32::MAX),
            entry,
            modem,
            gpp,
            signal,
            location,
            signal_setup: OnceCell::new(),
            location_setup: OnceCell::new(),
        })
    }

    /// The modem chosen.
    pub fn entry(&self) -> &ModemEntry {
        &self.entry
    }

    /// The `Signal.Setup` rate in seconds.
    pub fn signal_rate(&self) -> u32 {
        self.signal_rate
    }

    fn gpp(&self, call: &str) -> Result<&Modem3gppProxy<'static>, ModemError> {
        self.gpp.as_ref().ok_or_else(|| ModemError::Missing {
            command: call.to_string(),
            what: "org.freedesktop.ModemManager1.Modem.Modem3gpp interface",
        })
    }

    fn unsupported(feature: Feature) -> ModemError {
        ModemError::Unsupported {
            feature,
            dialect: Dialect::ModemManager,
        }
    }

    /// The `Signal` readings after a one-time `Signal.Setup(rate)`. Without the interface, or
    /// when setup or a read fails (logged), the readings are empty and the cell info stands alone.
    async fn signal_readings(&self) -> SignalReadings {
        let Some(signal) = &self.signal else {
            return SignalReadings::default();
        };
        let setup = self
            .signal_setup
            .get_or_try_init(|| async {
                signal
                    .setup(self.signal_rate)
                    .await
                    .map_err(|e| dbus_error("Signal.Setup", e))
            })
            .await;
        if let Err(e) = setup {
            tracing::warn!(error = %e, "signal polling not set up; cell info values only");
            return SignalReadings::default();
        }
        let read = |r: Result<_, zbus::Error>, call: &str| -> SignalReading {
            match r.map_err(|e| dbus_error(call, e)).and_then(|d| {
                SignalReading::from_dict(&d).map_err(|e| ModemError::Parse {
                    command: call.to_string(),
                    line: String::new(),
                    why: e.to_string(),
                })
            }) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "signal reading ignored");
                    SignalReading::default()
                }
            }
        };
        SignalReadings {
            lte: read(signal.lte().await, "Signal.Lte"),
            nr: read(signal.nr5g().await, "Signal.Nr5g"),
        }
    }

    /// The decoded `GetCellInfo()` entries; undecodable entries are skipped (logged) and the
    /// first decode error is returned with them.
    async fn cells(&self) -> Result<(Vec<CellInfo>, Option<ModemError>), ModemError> {
        const CALL: &str = "Modem.GetCellInfo";
        let raw = self
            .modem
            .get_cell_info()
            .await
            .map_err(|e| dbus_error(CALL, e))?;
        let mut cells = Vec::with_capacity(raw.len());
        let mut first_err = None;
        for (i, d) in raw.iter().enumerate() {
            match CellInfo::from_dict(d) {
                Ok(c) => cells.push(c),
                Err(e) => {
                    tracing::warn!(entry = i, error = %e, "cell info entry skipped");
                    first_err.get_or_insert(ModemError::Parse {
                        command: CALL.to_string(),
                        line: format!("entry {i}"),
                        why: e.to_string(),
                    });
                }
            }
        }
        Ok((cells, first_err))
    }

    /// TAC/LAC and CI from the 3GPP location source, enabling it once if needed. `None` (logged)
    /// when the modem has no Location interface or the location cannot be read.
    async fn location_3gpp(&self) -> Option<map::Location3gpp> {
        let loc = self.location.as_ref()?;
        let setup = self
            .location_setup
            .get_or_try_init(|| async {
                let enabled = loc
                    .enabled()
                    .await
                    .map_err(|e| dbus_error("Location.Enabled", e))?;
                if enabled & map::LOCATION_SOURCE_3GPP_LAC_CI == 0 {
                    // Keep the sources another client enabled; add 3GPP LAC/CI.
                    let signals = loc
                        .signals_location()
                        .await
                        .map_err(|e| dbus_error("Location.SignalsLocation", e))?;
                    loc.setup(enabled | map::LOCATION_SOURCE_3GPP_LAC_CI, signals)
                        .await
                        .map_err(|e| dbus_error("Location.Setup", e))?;
                }
                Ok::<_, ModemError>(())
            })
            .await;
        if let Err(e) = setup {
            tracing::warn!(error = %e, "3GPP location source not enabled");
            return None;
        }
        let all = match loc.get_location().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %dbus_error("Location.GetLocation", e), "no 3GPP location");
                return None;
            }
        };
        let text = all
            .get(&map::LOCATION_SOURCE_3GPP_LAC_CI)
            .and_then(|v| <&str>::try_from(v).ok())?;
        match map::parse_location_3gpp(text) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "3GPP location ignored");
                None
            }
        }
    }

    /// The connection the modem is reached on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

async fn build<'a, P>(
    b: zbus::proxy::Builder<'a, P>,
    path: &str,
    what: &str,
) -> Result<P, ModemError>
where
    P: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
{
    b.destination(SERVICE)
        .path(path.to_string())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| dbus_error(&format!("{what} proxy for {path}"), e))
}

/// The modems ModemManager exports, from its ObjectManager, in index order.
pub async fn list_modems(conn: &Connection) -> Result<Vec<ModemEntry>, ModemError> {
    const CALL: &str = "ObjectManager.GetManagedObjects";
    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(SERVICE)
        .path(MANAGER_PATH)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| dbus_error(CALL, e))?;
    let objects = om
        .get_managed_objects()
        .await
        .map_err(|e| dbus_error(CALL, zbus::Error::from(e)))?;
    let mut modems = Vec::new();
    for (path, ifaces) in objects {
        let Some(index) = path
            .as_str()
            .strip_prefix(MODEM_PATH_PREFIX)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let prop = |iface: &str, name: &str| {
            ifaces
                .iter()
                .find(|(i, _)| i.as_str() == iface)
                .and_then(|(_, props)| props.get(name))
                .and_then(|v| <&str>::try_from(v).ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let imei = prop(IFACE_MODEM, "EquipmentIdentifier").or_else(|| prop(IFACE_3GPP, "Imei"));
        modems.push(ModemEntry {
            index,
            imei,
            interfaces: ifaces.keys().map(|i| i.to_string()).collect(),
        });
    }
    modems.sort_by_key(|m| m.index);
    Ok(modems)
}

impl Modem for MmModem {
    async fn identity(&self) -> Result<Identity, ModemError> {
        let m = &self.modem;
        let manufacturer = m
            .manufacturer()
            .await
            .map_err(|e| dbus_error("Modem.Manufacturer", e))?;
        let model = m.model().await.map_err(|e| dbus_error("Modem.Model", e))?;
        let revision = m
            .revision()
            .await
            .map_err(|e| dbus_error("Modem.Revision", e))?;
        let equipment = m
            .equipment_identifier()
            .await
            .map_err(|e| dbus_error("Modem.EquipmentIdentifier", e))?;
        let act = m
            .access_technologies()
            .await
            .map_err(|e| dbus_error("Modem.AccessTechnologies", e))?;
        let (imei, operator) = match &self.gpp {
            Some(g) => {
                let imei = g
                    .imei()
                    .await
                    .map_err(|e| dbus_error("Modem3gpp.Imei", e))?;
                let name = g
                    .operator_name()
                    .await
                    .map_err(|e| dbus_error("Modem3gpp.OperatorName", e))?;
                let code = g
                    .operator_code()
                    .await
                    .map_err(|e| dbus_error("Modem3gpp.OperatorCode", e))?;
                // COPS-shaped: long name (format 0) when known, else numeric (format 2).
                let operator = match (id_field(name), id_field(code)) {
                    (Some(name), _) => Some((0, name)),
                    (None, Some(code)) => Some((2, code)),
                    (None, None) => None,
                }
                .map(|(format, name)| Operator {
                    mode: 0,
                    format: Some(format),
                    name: Some(name),
                    act: map::access_technology_act(act),
                });
                (id_field(imei), operator)
            }
            None => (None, None),
        };
        Ok(Identity {
            dialect: Dialect::ModemManager,
            manufacturer: id_field(manufacturer),
            model: id_field(model),
            firmware: id_field(revision),
            imei: imei.or_else(|| id_field(equipment)),
            sim_operator: self.sim_operator().await,
            operator,
        })
    }

    async fn registration(&self) -> Result<Registration, ModemError> {
        const CALL: &str = "Modem3gpp.RegistrationState";
        let state = self
            .gpp(CALL)?
            .registration_state()
            .await
            .map_err(|e| dbus_error(CALL, e))?;
        let act = self
            .modem
            .access_technologies()
            .await
            .map_err(|e| dbus_error("Modem.AccessTechnologies", e))?;
        let stat = map::registration_stat(state);
        let loc = if matches!(stat, 1 | 5) {
            self.location_3gpp().await
        } else {
            None
        };
        Ok(Registration {
            source: "ModemManager".into(),
            n: None,
            stat,
            tac: loc.as_ref().and_then(map::Location3gpp::area),
            cell_id: loc.as_ref().and_then(|l| l.ci),
            act: map::access_technology_act(act),
        })
    }

    async fn serving_cell(&self) -> Result<ServingCell, ModemError> {
        let signal = self.signal_readings().await;
        let (cells, decode_err) = self.cells().await?;
        match map::serving_cell(&cells, &signal) {
            Some(s) => Ok(s),
            None => Err(decode_err.unwrap_or(ModemError::Missing {
                command: "Modem.GetCellInfo".into(),
                what: "serving LTE or NR cell",
            })),
        }
    }

    async fn neighbours(&self) -> Result<Vec<NeighbourCell>, ModemError> {
        let (cells, _) = self.cells().await?;
        Ok(map::neighbours(&cells))
    }

    fn capabilities(&self) -> impl Future<Output = Result<Capabilities, ModemError>> + Send {
        // Known from the interfaces the object exports; ModemManager has no cell-lock API.
        let caps = Capabilities {
            lte_lock: false,
            nr_lock: false,
            reselect: self.gpp.is_some(),
            radio: true,
            neighbours: true,
        };
        std::future::ready(Ok(caps))
    }

    fn lock_lte(
        &self,
        _earfcn: u32,
        _pci: u16,
    ) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send {
        std::future::ready(Err(Self::unsupported(Feature::LteLock)))
    }

    fn lock_nr(
        &self,
        _pci: u16,
        _arfcn: u32,
        _scs_khz: u16,
        _band: u16,
    ) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send {
        std::future::ready(Err(Self::unsupported(Feature::NrLock)))
    }

    fn release_lock(&self) -> impl Future<Output = Result<CommandOutcome, ModemError>> + Send {
        std::future::ready(Err(Self::unsupported(Feature::ReleaseLock)))
    }

    async fn reselect(&self) -> Result<CommandOutcome, ModemError> {
        const CALL: &str = "Modem3gpp.Register";
        let Some(gpp) = &self.gpp else {
            return Err(Self::unsupported(Feature::Reselect));
        };
        // An empty operator id asks for automatic registration: a fresh network selection.
        gpp.register("").await.map_err(|e| dbus_error(CALL, e))?;
        Ok(CommandOutcome {
            commands: vec![r#"Modem3gpp.Register("")"#.into()],
            outage: Outage::Reattach(REATTACH_OUTAGE),
        })
    }

    async fn radio(&self, on: bool) -> Result<CommandOutcome, ModemError> {
        // RF off is `Enable(false)`: ModemManager documents a disabled modem as in its
        // low-power state with no network operations (the plugins send e.g. AT+CFUN=4),
        // and keeps the modem object and SIM. `SetPowerState(LOW)` is only allowed on an
        // already disabled modem, so it cannot switch an enabled radio off by itself.
        const CALL: &str = "Modem.Enable";
        self.modem
            .enable(on)
            .await
            .map_err(|e| dbus_error(CALL, e))?;
        Ok(CommandOutcome {
            commands: vec![format!("Modem.Enable({on})")],
            outage: plan::radio_outage(on),
        })
    }
}

impl MmModem {
    /// The SIM's service provider name; `None` without a SIM object or when it cannot be read.
    async fn sim_operator(&self) -> Option<String> {
        let path = match self.modem.sim().await {
            Ok(p) if p.as_str() != "/" => p,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %dbus_error("Modem.Sim", e), "no SIM path");
                return None;
            }
        };
        let sim = SimProxy::builder(&self.conn)
            .destination(SERVICE)
            .path(path.as_str().to_string())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .ok()?;
        match sim.operator_name().await {
            Ok(name) => id_field(name),
            Err(e) => {
                tracing::debug!(error = %dbus_error("Sim.OperatorName", e), "no SIM operator");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(index: u32, imei: Option<&str>) -> ModemEntry {
        ModemEntry {
            index,
            imei: imei.map(str::to_string),
            interfaces: BTreeSet::new(),
        }
    }

    #[test]
    fn selects_first_by_lowest_index() {
        let m = [entry(3, None), entry(1, Some("867")), entry(2, None)];
        assert_eq!(select_modem(&m, &ModemSelector::First).unwrap().index, 1);
    }

    #[test]
    fn selects_by_index_and_imei() {
        let m = [
            entry(0, Some("860000000000001")),
            entry(4, Some("867698040023068")),
        ];
        assert_eq!(select_modem(&m, &ModemSelector::Index(4)).unwrap().index, 4);
        let by_imei = ModemSelector::Imei(" 867698040023068".into());
        assert_eq!(select_modem(&m, &by_imei).unwrap().index, 4);
    }

    #[test]
    fn missing_modem_names_what_is_there() {
        let m = [entry(0, Some("860000000000001"))];
        let e = select_modem(&m, &ModemSelector::Index(7)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no modem with index 7 (found: /org/freedesktop/ModemManager1/Modem/0 \
             (IMEI 860000000000001))"
        );
        let e = select_modem(&[], &ModemSelector::First).unwrap_err();
        assert_eq!(e.to_string(), "no modem (any) (found: none)");
    }

    #[test]
    fn local_errors_are_named_local() {
        let e = dbus_error("Modem.Enable", zbus::Error::InvalidReply);
        match e {
            ModemError::Dbus { call, name, .. } => {
                assert_eq!(call, "Modem.Enable");
                assert_eq!(name, "(local)");
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn identity_fields_are_trimmed_and_cut() {
        assert_eq!(id_field("  ".into()), None);
        assert_eq!(id_field(" EC25 ".into()).as_deref(), Some("EC25"));
        assert_eq!(id_field("x".repeat(100)).map(|s| s.len()), Some(MAX_ID_LEN));
    }
}

//! Client proxies for the parts of `org.freedesktop.ModemManager1` pitlink uses, written from
//! ModemManager's introspection XML (`introspection/org.freedesktop.ModemManager1.Modem*.xml`,
//! `...Sim.xml`): names and signatures as there, only the members pitlink needs.
//!
//! Property values are read fresh on every call: the proxies are built without a property cache
//! ([`zbus::proxy::CacheProperties::No`]) by [`super::MmModem`].

use std::collections::HashMap;

use zbus::{OwnedObjectPath, OwnedVariant, proxy};

/// The well-known bus name of ModemManager.
pub const SERVICE: &str = "org.freedesktop.ModemManager1";
/// The object path of ModemManager's ObjectManager (the modems are below it).
pub const MANAGER_PATH: &str = "/org/freedesktop/ModemManager1";
/// The prefix of a modem object path; the modem index follows.
pub const MODEM_PATH_PREFIX: &str = "/org/freedesktop/ModemManager1/Modem/";

/// `org.freedesktop.ModemManager1.Modem`.
pub const IFACE_MODEM: &str = "org.freedesktop.ModemManager1.Modem";
/// `org.freedesktop.ModemManager1.Modem.Modem3gpp`.
pub const IFACE_3GPP: &str = "org.freedesktop.ModemManager1.Modem.Modem3gpp";
/// `org.freedesktop.ModemManager1.Modem.Signal`.
pub const IFACE_SIGNAL: &str = "org.freedesktop.ModemManager1.Modem.Signal";
/// `org.freedesktop.ModemManager1.Modem.Location`.
pub const IFACE_LOCATION: &str = "org.freedesktop.ModemManager1.Modem.Location";

/// `org.freedesktop.ModemManager1.Modem`: the generic modem object.
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Modem {
    /// `Enable(b enable)`: enable (radio on, network operations) or disable (low-power state).
    fn enable(&self, enable: bool) -> zbus::Result<()>;

    /// `SetPowerState(u state)`: an `MMModemPowerState`; only allowed while disabled.
    fn set_power_state(&self, state: u32) -> zbus::Result<()>;

    /// `GetCellInfo() -> aa{sv}` (since 1.20): serving and neighbouring cells.
    fn get_cell_info(&self) -> zbus::Result<Vec<HashMap<String, OwnedVariant>>>;

    /// `Sim` (o): the SIM object, `/` when there is none.
    #[zbus(property, name = "Sim")]
    fn sim(&self) -> zbus::Result<OwnedObjectPath>;

    /// `Manufacturer` (s).
    #[zbus(property, name = "Manufacturer")]
    fn manufacturer(&self) -> zbus::Result<String>;

    /// `Model` (s).
    #[zbus(property, name = "Model")]
    fn model(&self) -> zbus::Result<String>;

    /// `Revision` (s): the firmware revision.
    #[zbus(property, name = "Revision")]
    fn revision(&self) -> zbus::Result<String>;

    /// `EquipmentIdentifier` (s): the IMEI on 3GPP modems.
    #[zbus(property, name = "EquipmentIdentifier")]
    fn equipment_identifier(&self) -> zbus::Result<String>;

    /// `State` (i): an `MMModemState`.
    #[zbus(property, name = "State")]
    fn state(&self) -> zbus::Result<i32>;

    /// `PowerState` (u): an `MMModemPowerState`.
    #[zbus(property, name = "PowerState")]
    fn power_state(&self) -> zbus::Result<u32>;

    /// `AccessTechnologies` (u): an `MMModemAccessTechnology` bitmask.
    #[zbus(property, name = "AccessTechnologies")]
    fn access_technologies(&self) -> zbus::Result<u32>;
}

/// `org.freedesktop.ModemManager1.Modem.Modem3gpp`: 3GPP registration.
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem.Modem3gpp",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Modem3gpp {
    /// `Register(s operator_id)`: register with `operator_id` (MCCMNC), or automatically when
    /// it is empty.
    fn register(&self, operator_id: &str) -> zbus::Result<()>;

    /// `Imei` (s).
    #[zbus(property, name = "Imei")]
    fn imei(&self) -> zbus::Result<String>;

    /// `RegistrationState` (u): an `MMModem3gppRegistrationState`.
    #[zbus(property, name = "RegistrationState")]
    fn registration_state(&self) -> zbus::Result<u32>;

    /// `OperatorCode` (s): MCCMNC of the current operator, empty when unknown.
    #[zbus(property, name = "OperatorCode")]
    fn operator_code(&self) -> zbus::Result<String>;

    /// `OperatorName` (s): name of the current operator, empty when unknown.
    #[zbus(property, name = "OperatorName")]
    fn operator_name(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.ModemManager1.Modem.Signal`: extended signal readings, polled by ModemManager.
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem.Signal",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Signal {
    /// `Setup(u rate)`: poll every `rate` seconds; 0 disables polling.
    fn setup(&self, rate: u32) -> zbus::Result<()>;

    /// `Rate` (u): the polling rate in seconds.
    #[zbus(property, name = "Rate")]
    fn rate(&self) -> zbus::Result<u32>;

    /// `Lte` (a{sv}): `rssi`, `rsrq`, `rsrp`, `snr` (doubles), `error-rate`.
    #[zbus(property, name = "Lte")]
    fn lte(&self) -> zbus::Result<HashMap<String, OwnedVariant>>;

    /// `Nr5g` (a{sv}): `rsrq`, `rsrp`, `snr` (doubles), `error-rate` (since 1.16).
    #[zbus(property, name = "Nr5g")]
    fn nr5g(&self) -> zbus::Result<HashMap<String, OwnedVariant>>;
}

/// `org.freedesktop.ModemManager1.Modem.Location`: here only the 3GPP LAC/CI source.
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem.Location",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Location {
    /// `Setup(u sources, b signal_location)`: the `MMModemLocationSource` bitmask to enable.
    fn setup(&self, sources: u32, signal_location: bool) -> zbus::Result<()>;

    /// `GetLocation() -> a{uv}`: per source; key 1 (3GPP LAC/CI) is `"MCC,MNC,LAC,CI,TAC"`.
    fn get_location(&self) -> zbus::Result<HashMap<u32, OwnedVariant>>;

    /// `Enabled` (u): the sources enabled now.
    #[zbus(property, name = "Enabled")]
    fn enabled(&self) -> zbus::Result<u32>;

    /// `SignalsLocation` (b): whether the `Location` property is kept up to date.
    #[zbus(property, name = "SignalsLocation")]
    fn signals_location(&self) -> zbus::Result<bool>;
}

/// `org.freedesktop.ModemManager1.Sim`: the SIM card.
#[proxy(
    interface = "org.freedesktop.ModemManager1.Sim",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Sim {
    /// `OperatorIdentifier` (s): MCCMNC of the SIM's home network.
    #[zbus(property, name = "OperatorIdentifier")]
    fn operator_identifier(&self) -> zbus::Result<String>;

    /// `OperatorName` (s): the service provider name on the SIM.
    #[zbus(property, name = "OperatorName")]
    fn operator_name(&self) -> zbus::Result<String>;
}

//! `MmModem` against a fake ModemManager on a private `dbus-daemon`: every `Modem` method goes
//! through real D-Bus. The fake serves the ModemManager interfaces with zbus `#[interface]`s
//! under an ObjectManager at `/org/freedesktop/ModemManager1` and records what it is asked.
//! Values are shaped after the captures in RADIO.md (EC25 LTE cell 222/88, TAC 77B8, CI 4CAA71F;
//! EN-DC NR leg PCI 832, NR-ARFCN 528030).

#![cfg(feature = "modemmanager")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use modem_hal::mm::{MmConfig, MmModem, ModemSelector};
use modem_hal::modem::{Dialect, Feature, Modem, ModemError, Outage};
use zbus::{Connection, OwnedObjectPath, OwnedVariant, interface};

const SERVICE: &str = "org.freedesktop.ModemManager1";
const MANAGER: &str = "/org/freedesktop/ModemManager1";
const SIM_PATH: &str = "/org/freedesktop/ModemManager1/SIM/0";

// ---------------------------------------------------------------------------------------------
// A private dbus-daemon, killed on drop (also when a test panics).

struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dbus-daemon (Debian package dbus)");
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        let mut line = String::new();
        // The daemon prints its address once it listens; EOF means it died.
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed no address: {line:?}"
        );
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    async fn connect(&self) -> Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to the private bus")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The fake ModemManager.

/// What the fake answers and what it was asked.
#[derive(Debug)]
struct State {
    manufacturer: String,
    model: String,
    revision: String,
    imei: String,
    access_technologies: u32,
    registration_state: u32,
    operator_code: String,
    operator_name: String,
    sim_operator: String,
    cells: Vec<HashMap<String, OwnedVariant>>,
    signal_lte: HashMap<String, OwnedVariant>,
    signal_nr: HashMap<String, OwnedVariant>,
    signal_rate: u32,
    location_enabled: u32,
    location_3gpp: String,
    fail_register: bool,
    fail_cell_info: bool,
    fail_signal_setup: bool,
    /// Every method call and property read, in order ("Modem.Enable(false)", "get Modem.Model").
    calls: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().expect("fake state lock")
}

fn record(s: &Shared, call: impl Into<String>) {
    lock(s).calls.push(call.into());
}

fn sv(v: &str) -> OwnedVariant {
    OwnedVariant::from(zbus::Str::from(v.to_string()))
}

fn dict(entries: Vec<(&str, OwnedVariant)>) -> HashMap<String, OwnedVariant> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The EC25 LTE serving cell of RADIO.md §2.2 (`222,88,4CAA71F,28,1500,...,77B8,-84,-9,-56,21`).
fn lte_serving() -> HashMap<String, OwnedVariant> {
    dict(vec![
        ("cell-type", 5u32.into()),
        ("serving", true.into()),
        ("serving-cell-type", 1u32.into()),
        ("operator-id", sv("22288")),
        ("tac", sv("77B8")),
        ("ci", sv("4CAA71F")),
        ("physical-ci", sv("1C")),
        ("earfcn", 1500u32.into()),
        ("rsrp", (-84.0f64).into()),
        ("rsrq", (-9.0f64).into()),
        ("bandwidth", 20_000_000u32.into()),
    ])
}

fn lte_neighbour(pci: &str, earfcn: u32, rsrp: f64) -> HashMap<String, OwnedVariant> {
    dict(vec![
        ("cell-type", 5u32.into()),
        ("serving", false.into()),
        ("physical-ci", sv(pci)),
        ("earfcn", earfcn.into()),
        ("rsrp", rsrp.into()),
        ("rsrq", (-13.0f64).into()),
    ])
}

/// The NR leg of the EN-DC capture (`"NR5G-NSA",515,03,832,-76,21,-11,528030,41,...`).
fn nr_pscell() -> HashMap<String, OwnedVariant> {
    dict(vec![
        ("cell-type", 6u32.into()),
        ("serving", true.into()),
        ("serving-cell-type", 3u32.into()),
        ("physical-ci", sv("340")),
        ("nrarfcn", 528_030u32.into()),
        ("rsrp", (-76.0f64).into()),
        ("rsrq", (-11.0f64).into()),
    ])
}

impl State {
    fn ec25() -> Self {
        Self {
            manufacturer: "QUALCOMM INCORPORATED".into(),
            model: "EC25".into(),
            revision: "EC25EFAR06A06M4G".into(),
            imei: "867698040023068".into(),
            access_technologies: 1 << 14,
            registration_state: 1,
            operator_code: "22288".into(),
            operator_name: "WINDTRE".into(),
            sim_operator: "iliad".into(),
            cells: vec![
                lte_serving(),
                lte_neighbour("1D", 1500, -95.5),
                lte_neighbour("7", 3350, -101.0),
            ],
            signal_lte: dict(vec![
                ("rssi", (-56.0f64).into()),
                ("rsrp", (-84.0f64).into()),
                ("rsrq", (-9.0f64).into()),
                ("snr", (21.0f64).into()),
                ("error-rate", (0.0f64).into()),
            ]),
            signal_nr: HashMap::new(),
            signal_rate: 0,
            location_enabled: 0,
            location_3gpp: "222,88,0,4CAA71F,77B8".into(),
            fail_register: false,
            fail_cell_info: false,
            fail_signal_setup: false,
            calls: Vec::new(),
        }
    }
}

/// ModemManager's core errors (`org.freedesktop.ModemManager1.Error.Core.*`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.ModemManager1.Error.Core")]
enum CoreError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `Unsupported`.
    Unsupported(String),
    /// `WrongState`.
    WrongState(String),
}

struct FakeModem(Shared, String);

#[interface(name = "org.freedesktop.ModemManager1.Modem")]
impl FakeModem {
    fn enable(&self, enable: bool) {
        record(&self.0, format!("Modem.Enable({enable})"));
    }

    fn set_power_state(&self, state: u32) {
        record(&self.0, format!("Modem.SetPowerState({state})"));
    }

    fn get_cell_info(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, CoreError> {
        record(&self.0, "Modem.GetCellInfo");
        let s = lock(&self.0);
        if s.fail_cell_info {
            return Err(CoreError::WrongState("modem not enabled".into()));
        }
        Ok(s.cells
            .iter()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .collect())
    }

    #[zbus(property, name = "Sim")]
    fn sim(&self) -> OwnedObjectPath {
        record(&self.0, "get Modem.Sim");
        OwnedObjectPath::try_from(self.1.clone()).expect("SIM path")
    }

    #[zbus(property, name = "Manufacturer")]
    fn manufacturer(&self) -> String {
        record(&self.0, "get Modem.Manufacturer");
        lock(&self.0).manufacturer.clone()
    }

    #[zbus(property, name = "Model")]
    fn model(&self) -> String {
        record(&self.0, "get Modem.Model");
        lock(&self.0).model.clone()
    }

    #[zbus(property, name = "Revision")]
    fn revision(&self) -> String {
        record(&self.0, "get Modem.Revision");
        lock(&self.0).revision.clone()
    }

    #[zbus(property, name = "EquipmentIdentifier")]
    fn equipment_identifier(&self) -> String {
        record(&self.0, "get Modem.EquipmentIdentifier");
        lock(&self.0).imei.clone()
    }

    #[zbus(property, name = "State")]
    fn state(&self) -> i32 {
        8
    }

    #[zbus(property, name = "PowerState")]
    fn power_state(&self) -> u32 {
        3
    }

    #[zbus(property, name = "AccessTechnologies")]
    fn access_technologies(&self) -> u32 {
        record(&self.0, "get Modem.AccessTechnologies");
        lock(&self.0).access_technologies
    }
}

struct Fake3gpp(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem.Modem3gpp")]
impl Fake3gpp {
    fn register(&self, operator_id: &str) -> Result<(), CoreError> {
        record(&self.0, format!("Modem3gpp.Register({operator_id:?})"));
        if lock(&self.0).fail_register {
            return Err(CoreError::Unsupported(
                "Cannot register: operation not supported".into(),
            ));
        }
        Ok(())
    }

    #[zbus(property, name = "Imei")]
    fn imei(&self) -> String {
        record(&self.0, "get Modem3gpp.Imei");
        lock(&self.0).imei.clone()
    }

    #[zbus(property, name = "RegistrationState")]
    fn registration_state(&self) -> u32 {
        record(&self.0, "get Modem3gpp.RegistrationState");
        lock(&self.0).registration_state
    }

    #[zbus(property, name = "OperatorCode")]
    fn operator_code(&self) -> String {
        record(&self.0, "get Modem3gpp.OperatorCode");
        lock(&self.0).operator_code.clone()
    }

    #[zbus(property, name = "OperatorName")]
    fn operator_name(&self) -> String {
        record(&self.0, "get Modem3gpp.OperatorName");
        lock(&self.0).operator_name.clone()
    }
}

struct FakeSignal(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem.Signal")]
impl FakeSignal {
    fn setup(&self, rate: u32) -> Result<(), CoreError> {
        record(&self.0, format!("Signal.Setup({rate})"));
        let mut s = lock(&self.0);
        if s.fail_signal_setup {
            return Err(CoreError::WrongState("modem not enabled".into()));
        }
        s.signal_rate = rate;
        Ok(())
    }

    #[zbus(property, name = "Rate")]
    fn rate(&self) -> u32 {
        lock(&self.0).signal_rate
    }

    #[zbus(property, name = "Lte")]
    fn lte(&self) -> HashMap<String, OwnedVariant> {
        record(&self.0, "get Signal.Lte");
        let s = lock(&self.0);
        // Like ModemManager: no readings until polling is set up.
        if s.signal_rate == 0 {
            return HashMap::new();
        }
        s.signal_lte
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[zbus(property, name = "Nr5g")]
    fn nr5g(&self) -> HashMap<String, OwnedVariant> {
        record(&self.0, "get Signal.Nr5g");
        let s = lock(&self.0);
        if s.signal_rate == 0 {
            return HashMap::new();
        }
        s.signal_nr
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

struct FakeLocation(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Modem.Location")]
impl FakeLocation {
    fn setup(&self, sources: u32, signal_location: bool) {
        record(
            &self.0,
            format!("Location.Setup({sources}, {signal_location})"),
        );
        lock(&self.0).location_enabled = sources;
    }

    fn get_location(&self) -> HashMap<u32, OwnedVariant> {
        record(&self.0, "Location.GetLocation");
        let s = lock(&self.0);
        let mut out = HashMap::new();
        if s.location_enabled & 1 != 0 {
            out.insert(1u32, sv(&s.location_3gpp));
        }
        out
    }

    #[zbus(property, name = "Enabled")]
    fn enabled(&self) -> u32 {
        lock(&self.0).location_enabled
    }

    #[zbus(property, name = "SignalsLocation")]
    fn signals_location(&self) -> bool {
        false
    }
}

struct FakeSim(Shared);

#[interface(name = "org.freedesktop.ModemManager1.Sim")]
impl FakeSim {
    #[zbus(property, name = "OperatorIdentifier")]
    fn operator_identifier(&self) -> String {
        "22250".into()
    }

    #[zbus(property, name = "OperatorName")]
    fn operator_name(&self) -> String {
        record(&self.0, "get Sim.OperatorName");
        lock(&self.0).sim_operator.clone()
    }
}

/// Which interfaces a fake modem object exports.
#[derive(Clone, Copy)]
struct Shape {
    signal: bool,
}

/// The fake service on its own connection; dropping it leaves the bus.
struct FakeMm {
    _conn: Connection,
}

impl FakeMm {
    /// Serves one modem per `(index, state, shape)` and takes the ModemManager name.
    async fn start(bus: &Bus, modems: &[(u32, Shared, Shape)]) -> Self {
        let conn = bus.connect().await;
        let server = conn.object_server();
        server
            .at(MANAGER, zbus::fdo::ObjectManager)
            .await
            .expect("serve ObjectManager");
        for (index, state, shape) in modems {
            let path = format!("{MANAGER}/Modem/{index}");
            let sim = if *index == 0 {
                SIM_PATH.to_string()
            } else {
                format!("{MANAGER}/SIM/{index}")
            };
            server
                .at(sim.as_str(), FakeSim(state.clone()))
                .await
                .expect("serve Sim");
            server
                .at(path.as_str(), FakeModem(state.clone(), sim))
                .await
                .expect("serve Modem");
            server
                .at(path.as_str(), Fake3gpp(state.clone()))
                .await
                .expect("serve Modem3gpp");
            server
                .at(path.as_str(), FakeLocation(state.clone()))
                .await
                .expect("serve Location");
            if shape.signal {
                server
                    .at(path.as_str(), FakeSignal(state.clone()))
                    .await
                    .expect("serve Signal");
            }
        }
        conn.request_name(SERVICE)
            .await
            .expect("own org.freedesktop.ModemManager1");
        Self { _conn: conn }
    }
}

struct Setup {
    _fake: FakeMm,
    state: Shared,
    modem: MmModem,
    _bus: Bus,
}

async fn setup_with(state: State, shape: Shape, config: MmConfig) -> Setup {
    let bus = Bus::start();
    let state = Arc::new(Mutex::new(state));
    let fake = FakeMm::start(&bus, &[(0, state.clone(), shape)]).await;
    let client = bus.connect().await;
    let modem = MmModem::connect(&client, config)
        .await
        .expect("MmModem::connect");
    // Forget the property reads of the ObjectManager enumeration: the tests look at what the
    // `Modem` methods ask.
    lock(&state).calls.clear();
    Setup {
        _fake: fake,
        state,
        modem,
        _bus: bus,
    }
}

async fn setup() -> Setup {
    setup_with(State::ec25(), Shape { signal: true }, MmConfig::default()).await
}

fn calls(s: &Shared) -> Vec<String> {
    lock(s).calls.clone()
}

fn count(s: &Shared, call: &str) -> usize {
    lock(s).calls.iter().filter(|c| c.as_str() == call).count()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn identity_from_modem_3gpp_and_sim() {
    let t = setup().await;
    let id = t.modem.identity().await.expect("identity");
    assert_eq!(id.dialect, Dialect::ModemManager);
    assert_eq!(id.manufacturer.as_deref(), Some("QUALCOMM INCORPORATED"));
    assert_eq!(id.model.as_deref(), Some("EC25"));
    assert_eq!(id.firmware.as_deref(), Some("EC25EFAR06A06M4G"));
    assert_eq!(id.imei.as_deref(), Some("867698040023068"));
    assert_eq!(id.sim_operator.as_deref(), Some("iliad"));
    let op = id.operator.expect("operator");
    assert_eq!(op.name.as_deref(), Some("WINDTRE"));
    assert_eq!(op.format, Some(0));
    assert_eq!(op.act, Some(7));
    assert_eq!(t.modem.entry().index, 0);
    assert!(calls(&t.state).contains(&"get Sim.OperatorName".to_string()));

    // Without an operator name the numeric code is reported (COPS format 2).
    lock(&t.state).operator_name.clear();
    let id = t.modem.identity().await.expect("identity");
    let op = id.operator.expect("operator");
    assert_eq!((op.format, op.name.as_deref()), (Some(2), Some("22288")));
}

#[tokio::test]
async fn registration_home_roaming_searching() {
    let t = setup().await;
    // Another client enabled a GPS source (raw = 4): it stays enabled.
    lock(&t.state).location_enabled = 4;

    let r = t.modem.registration().await.expect("registration");
    assert_eq!(r.stat, 1);
    assert!(r.is_registered());
    assert_eq!(r.tac, Some(0x77B8));
    assert_eq!(r.cell_id, Some(0x4CAA71F));
    assert_eq!(r.act, Some(7));
    assert_eq!(count(&t.state, "Location.Setup(5, false)"), 1);

    {
        let mut s = lock(&t.state);
        s.registration_state = 5;
        s.access_technologies = (1 << 14) | (1 << 15);
        s.location_3gpp = "310,260,8BE3,2BAF".into();
    }
    let r = t.modem.registration().await.expect("registration");
    assert_eq!(r.stat, 5);
    assert_eq!(r.tac, Some(0x8BE3), "LAC when there is no TAC");
    assert_eq!(r.cell_id, Some(0x2BAF));
    assert_eq!(r.act, Some(13));

    lock(&t.state).registration_state = 2;
    let r = t.modem.registration().await.expect("registration");
    assert_eq!(r.stat, 2);
    assert!(!r.is_registered());
    assert_eq!((r.tac, r.cell_id), (None, None));

    // The location source was set up once, not per call.
    let setups = calls(&t.state)
        .iter()
        .filter(|c| c.starts_with("Location.Setup"))
        .count();
    assert_eq!(setups, 1);
}

#[tokio::test]
async fn lte_serving_cell_with_signal_and_configured_rate() {
    let config = MmConfig {
        select: ModemSelector::First,
        signal_rate: Duration::from_secs(5),
    };
    let t = setup_with(State::ec25(), Shape { signal: true }, config).await;
    lock(&t.state)
        .signal_lte
        .insert("rsrp".into(), (-85.5f64).into());

    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.rat.as_deref(), Some("LTE"));
    assert_eq!((s.mcc, s.mnc), (Some(222), Some(88)));
    assert_eq!(s.tac, Some(0x77B8));
    assert_eq!(s.cell_id, Some(0x4CAA71F));
    assert_eq!(s.pci, Some(28));
    assert_eq!(s.earfcn, Some(1500));
    assert_eq!(s.bandwidth_mhz, Some(20.0));
    assert_eq!(
        s.rsrp_dbm,
        Some(-85.5),
        "Signal.Lte wins over the cell info"
    );
    assert_eq!(s.rsrq_db, Some(-9.0));
    assert_eq!(s.rssi_dbm, Some(-56.0));
    assert_eq!(s.sinr_db, Some(21.0), "SINR from Signal snr");
    assert!(s.nr.is_none());

    let _ = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(count(&t.state, "Signal.Setup(5)"), 1, "set up once");
    let c = calls(&t.state);
    let setup_at = c
        .iter()
        .position(|c| c == "Signal.Setup(5)")
        .expect("setup");
    let read_at = c.iter().position(|c| c == "get Signal.Lte").expect("read");
    assert!(setup_at < read_at, "Setup before the first read: {c:?}");
    assert_eq!(lock(&t.state).signal_rate, 5);
}

#[tokio::test]
async fn nr_nsa_serving_cell_with_nr5g_signal() {
    let mut state = State::ec25();
    state.cells.push(nr_pscell());
    state.access_technologies = (1 << 14) | (1 << 15);
    state.signal_nr = dict(vec![
        ("rsrp", (-76.0f64).into()),
        ("rsrq", (-11.0f64).into()),
        ("snr", (21.0f64).into()),
    ]);
    state.signal_lte.insert("snr".into(), (16.0f64).into());
    let t = setup_with(state, Shape { signal: true }, MmConfig::default()).await;

    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.rat.as_deref(), Some("NR5G-NSA"));
    assert_eq!(s.sinr_db, Some(16.0));
    let nr = s.nr.expect("NR leg");
    assert_eq!(nr.pci, Some(832));
    assert_eq!(nr.arfcn, Some(528_030));
    assert_eq!(nr.rsrp_dbm, Some(-76.0));
    assert_eq!(nr.rsrq_db, Some(-11.0));
    assert_eq!(nr.sinr_db, Some(21.0));
    assert_eq!(count(&t.state, "Signal.Setup(1)"), 1, "default rate 1 s");

    // NR standalone: only the NR cell serves.
    {
        let mut s = lock(&t.state);
        s.cells = vec![nr_pscell()];
        s.access_technologies = 1 << 15;
    }
    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.rat.as_deref(), Some("NR5G-SA"));
    assert_eq!(s.arfcn, Some(528_030));
    assert_eq!(s.sinr_db, Some(21.0));
}

#[tokio::test]
async fn neighbours_are_the_non_serving_entries() {
    let t = setup().await;
    let n = t.modem.neighbours().await.expect("neighbours");
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].rat, "LTE");
    assert_eq!(n[0].pci, Some(29));
    assert_eq!(n[0].earfcn, Some(1500));
    assert_eq!(n[0].kind.as_deref(), Some("intra"));
    assert_eq!(n[0].rsrp_dbm, Some(-95.5));
    assert_eq!(n[1].pci, Some(7));
    assert_eq!(n[1].kind.as_deref(), Some("inter"));
    assert_eq!(n[1].rsrp_dbm, Some(-101.0));
}

#[tokio::test]
async fn reselect_and_radio_reach_modemmanager() {
    let t = setup().await;
    let caps = t.modem.capabilities().await.expect("capabilities");
    assert!(caps.reselect && caps.radio && caps.neighbours);
    assert!(!caps.lte_lock && !caps.nr_lock);
    assert!(!caps.has(Feature::ReleaseLock));

    let out = t.modem.reselect().await.expect("reselect");
    assert_eq!(out.commands, vec![r#"Modem3gpp.Register("")"#.to_string()]);
    assert!(matches!(out.outage, Outage::Reattach(_)));
    assert_eq!(count(&t.state, r#"Modem3gpp.Register("")"#), 1);

    let off = t.modem.radio(false).await.expect("radio off");
    assert_eq!(off.outage, Outage::UntilRadioOn);
    let on = t.modem.radio(true).await.expect("radio on");
    assert!(on.outage.expected().is_some());
    let c = calls(&t.state);
    let enables: Vec<_> = c.iter().filter(|c| c.starts_with("Modem.Enable")).collect();
    assert_eq!(enables, ["Modem.Enable(false)", "Modem.Enable(true)"]);
}

#[tokio::test]
async fn cell_locks_are_unsupported_without_a_dbus_call() {
    let t = setup().await;
    let before = calls(&t.state).len();
    for r in [
        t.modem.lock_lte(1500, 28).await,
        t.modem.lock_nr(832, 528_030, 30, 41).await,
        t.modem.release_lock().await,
    ] {
        match r {
            Err(ModemError::Unsupported { dialect, .. }) => {
                assert_eq!(dialect, Dialect::ModemManager)
            }
            r => panic!("expected Unsupported, got {r:?}"),
        }
    }
    let _ = t.modem.capabilities().await.expect("capabilities");
    assert_eq!(calls(&t.state).len(), before, "no call reached the fake");
}

#[tokio::test]
async fn without_signal_the_cell_info_values_stand_alone() {
    let t = setup_with(State::ec25(), Shape { signal: false }, MmConfig::default()).await;
    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.rsrp_dbm, Some(-84.0));
    assert_eq!(s.rsrq_db, Some(-9.0));
    assert_eq!(s.rssi_dbm, None);
    assert_eq!(s.sinr_db, None);
    assert!(
        calls(&t.state).iter().all(|c| !c.contains("Signal")),
        "no Signal call on a modem without the interface"
    );
}

#[tokio::test]
async fn failed_signal_setup_degrades_and_is_retried() {
    let mut state = State::ec25();
    state.fail_signal_setup = true;
    let t = setup_with(state, Shape { signal: true }, MmConfig::default()).await;
    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.rsrp_dbm, Some(-84.0), "cell info values");
    assert_eq!(s.sinr_db, None);
    assert!(!calls(&t.state).iter().any(|c| c == "get Signal.Lte"));

    lock(&t.state).fail_signal_setup = false;
    let s = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(s.sinr_db, Some(21.0), "Signal read once setup succeeded");
    assert_eq!(count(&t.state, "Signal.Setup(1)"), 2);
    let _ = t.modem.serving_cell().await.expect("serving cell");
    assert_eq!(
        count(&t.state, "Signal.Setup(1)"),
        2,
        "not repeated after success"
    );
}

#[tokio::test]
async fn modem_selection_by_index_imei_and_missing() {
    let bus = Bus::start();
    let a = Arc::new(Mutex::new(State::ec25()));
    let mut b = State::ec25();
    b.imei = "860000000000001".into();
    b.model = "RM500Q-GL".into();
    let b = Arc::new(Mutex::new(b));
    let shape = Shape { signal: true };
    let _fake = FakeMm::start(&bus, &[(0, a, shape), (3, b, shape)]).await;
    let client = bus.connect().await;

    let by_imei = MmConfig {
        select: ModemSelector::Imei("860000000000001".into()),
        ..MmConfig::default()
    };
    let m = MmModem::connect(&client, by_imei).await.expect("by IMEI");
    assert_eq!(m.entry().index, 3);
    let id = m.identity().await.expect("identity");
    assert_eq!(id.model.as_deref(), Some("RM500Q-GL"));

    let by_index = MmConfig {
        select: ModemSelector::Index(0),
        ..MmConfig::default()
    };
    let m = MmModem::connect(&client, by_index).await.expect("by index");
    assert_eq!(m.entry().imei.as_deref(), Some("867698040023068"));

    let missing = MmConfig {
        select: ModemSelector::Index(7),
        ..MmConfig::default()
    };
    match MmModem::connect(&client, missing).await {
        Err(ModemError::NoModem { wanted, found }) => {
            assert_eq!(wanted, "with index 7");
            assert!(
                found.contains("/Modem/0") && found.contains("/Modem/3"),
                "{found}"
            );
        }
        r => panic!("expected NoModem, got {r:?}"),
    }
}

#[tokio::test]
async fn dbus_errors_keep_their_name_and_message() {
    let t = setup().await;
    {
        let mut s = lock(&t.state);
        s.fail_register = true;
        s.fail_cell_info = true;
    }
    match t.modem.reselect().await {
        Err(ModemError::Dbus {
            call,
            name,
            message,
        }) => {
            assert_eq!(call, "Modem3gpp.Register");
            assert_eq!(name, "org.freedesktop.ModemManager1.Error.Core.Unsupported");
            assert_eq!(message, "Cannot register: operation not supported");
        }
        r => panic!("expected a D-Bus error, got {r:?}"),
    }
    match t.modem.neighbours().await {
        Err(ModemError::Dbus { call, name, .. }) => {
            assert_eq!(call, "Modem.GetCellInfo");
            assert_eq!(name, "org.freedesktop.ModemManager1.Error.Core.WrongState");
        }
        r => panic!("expected a D-Bus error, got {r:?}"),
    }
    // A malformed cell entry is a parse error naming the entry, not a panic.
    {
        let mut s = lock(&t.state);
        s.fail_cell_info = false;
        s.cells = vec![dict(vec![("cell-type", sv("LTE"))])];
    }
    match t.modem.serving_cell().await {
        Err(ModemError::Parse { command, line, why }) => {
            assert_eq!(command, "Modem.GetCellInfo");
            assert_eq!(line, "entry 0");
            assert!(why.contains("cell-type"), "{why}");
        }
        r => panic!("expected a parse error, got {r:?}"),
    }
}

#[tokio::test]
async fn no_modemmanager_on_the_bus() {
    let bus = Bus::start();
    let client = bus.connect().await;
    match MmModem::connect(&client, MmConfig::default()).await {
        Err(ModemError::Dbus { name, .. }) => {
            assert_eq!(name, "org.freedesktop.DBus.Error.ServiceUnknown");
        }
        r => panic!("expected ServiceUnknown, got {r:?}"),
    }
}

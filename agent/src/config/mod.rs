//! Configuration: one TOML file (`/etc/pitlink/pitlink.toml` by default).
//!
//! Every table is parsed with `deny_unknown_fields`; every error names the file, the line and
//! column, the key and what is allowed there (see [`ConfigError`]). Semantic checks (ranges,
//! cross-field rules) run after parsing and point at the offending key the same way.

mod error;

pub use error::ConfigError;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/pitlink/pitlink.toml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity of this vehicle on the wire (`[A-Za-z0-9_-]`, 1..=64 chars).
    pub vehicle: String,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub broker: BrokerConfig,
    #[serde(default)]
    pub diag: DiagConfig,
    /// Uplinks, one per modem. At least one.
    pub links: Vec<LinkConfig>,
    /// Sensor sources. At least one.
    pub sources: Vec<SourceConfig>,
    /// Radio polling of the links' modems and the tower policy.
    #[serde(default)]
    pub towers: TowersConfig,
    /// Prometheus metrics endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: a Prometheus `/metrics` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `http://ADDR/metrics` on, e.g. `127.0.0.1:9187`; unset: off.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[towers]`: how the links' modems are polled and whether the tower policy may lock cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TowersConfig {
    /// Let the policy lock and release cells (false: modems are only read).
    pub policy: bool,
    /// How often each modem's serving and neighbour cells are read.
    pub poll_ms: u64,
    /// The learned cell map's state file.
    pub map: PathBuf,
    /// Most (location, cell) entries the map keeps.
    pub map_max_entries: usize,
    /// Thresholds of the policy.
    pub rules: crate::towers::policy::PolicyConfig,
}

impl Default for TowersConfig {
    fn default() -> Self {
        TowersConfig {
            policy: true,
            poll_ms: 1000,
            map: PathBuf::from("/var/lib/pitlink/cells.map"),
            map_max_entries: 50_000,
            rules: crate::towers::policy::PolicyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Directory of the on-disk queue (created if missing).
    pub dir: PathBuf,
    /// Disk cap in MiB; the oldest segment is evicted (and reported) past it.
    pub max_mb: u64,
    /// Size of one segment file in MiB.
    pub segment_mb: u64,
    /// Group-commit interval: one fdatasync per interval.
    pub flush_ms: u64,
    /// Group commit earlier once this many KiB wait for it.
    pub flush_kb: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dir: PathBuf::from("/var/lib/pitlink/queue"),
            max_mb: 1024,
            segment_mb: 16,
            flush_ms: 100,
            flush_kb: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch closes this long after its first sample.
    pub window_ms: u64,
    /// ... or when it holds this many samples, whichever comes first.
    pub max_samples: usize,
    /// Wire format version the agent writes: 2 (columnar + zstd data bodies) or 1 (plain
    /// bodies), for receivers that only read version 1 while a fleet is upgraded.
    pub format_version: u8,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            window_ms: 100,
            max_samples: 20_000,
            format_version: crate::codec::FORMAT_VERSION,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Broker host name or address (with `port`). Exclusive with `socket`.
    pub host: Option<String>,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Unix socket path of a local broker. Exclusive with `host`.
    pub socket: Option<PathBuf>,
    /// Topics are `<topic_prefix>/<vehicle>/<kind>`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsConfig>,
}

fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "pitlink".into()
}
fn default_keep_alive() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    pub ca: PathBuf,
    /// PEM client certificate chain, for mutual TLS (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagConfig {
    /// Unix socket on which the daemon serves its status snapshot.
    pub socket: PathBuf,
}

impl Default for DiagConfig {
    fn default() -> Self {
        DiagConfig {
            socket: PathBuf::from("/run/pitlink/pitlink.sock"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Short name, used in the MQTT client id `<vehicle>-<name>` and in status output.
    pub name: String,
    /// Network interface the link's socket is bound to (SO_BINDTODEVICE). Unset: default route.
    pub interface: Option<String>,
    /// Broker address (IP:port) this link connects to instead of resolving `[broker] host`:
    /// keeps DNS off the default route, or points the link at a relay.
    pub address: Option<std::net::SocketAddr>,
    /// Serial AT control port of the link's modem (AT backend).
    pub modem: Option<PathBuf>,
    /// The link's modem is owned by ModemManager: `"first"`, the index N of
    /// `/org/freedesktop/ModemManager1/Modem/N`, or the modem's IMEI.
    pub modemmanager: Option<String>,
    /// How the modem's firmware reports LTE SINR in `AT+QENG="servingcell"` (AT backend).
    #[serde(default)]
    pub modem_sinr: SinrUnit,
}

/// Unit of the LTE SINR field of `AT+QENG="servingcell"` (it differs between firmwares).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinrUnit {
    /// Already dB.
    #[default]
    Db,
    /// Raw 1/5 dB steps: dB = raw / 5 − 20.
    Fifths,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Generated waveforms (demo, benchmarks).
    Synthetic,
    /// Replay of a `candump -l`/`-L` log file.
    Candump,
    /// A SocketCAN interface (`can0`, `vcan0`).
    Socketcan,
    /// A Lawicell/slcan CAN adapter on a serial port (CANable, USBtin).
    Slcan,
    /// An NMEA 0183 GPS receiver on a serial port.
    Nmea,
    /// A sensor writing delimited numeric lines on a serial port.
    Line,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "synthetic",
            SourceKind::Candump => "candump",
            SourceKind::Socketcan => "socketcan",
            SourceKind::Slcan => "slcan",
            SourceKind::Nmea => "nmea",
            SourceKind::Line => "line",
        }
    }
}

/// Replay speed of a candump source: `"recorded"`, a multiple of it (`4.0`), or `"max"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplaySpeed {
    Factor(f64),
    Word(ReplayWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayWord {
    Recorded,
    Max,
}

/// One `[[sources]]` table. Which keys apply depends on `kind` (see docs/configuration.md);
/// a key that does not apply to the kind is an error, not silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name of the source, unique; appears in every reading's record on the receiver.
    pub name: String,
    pub kind: SourceKind,
    /// Its batches are critical: while the best link's radio is poor (or the link is suspect),
    /// each is sent on the two best links (the receiver removes the duplicate).
    #[serde(default)]
    pub critical: bool,
    /// synthetic: number of channels (1..=4096).
    pub channels: Option<u16>,
    /// synthetic: samples per second per channel (1..=10000).
    pub rate_hz: Option<u32>,
    /// synthetic: sine | saw | square | noise.
    pub waveform: Option<sensor_drivers::synthetic::Waveform>,
    /// candump: the log file to replay.
    pub path: Option<PathBuf>,
    /// candump: "recorded" (default), a multiple such as 4.0, or "max" (flat out).
    pub speed: Option<ReplaySpeed>,
    /// candump: start over at the end of the log (default false).
    #[serde(rename = "loop")]
    pub looped: Option<bool>,
    /// candump: replay only frames of these interfaces of the log (default: all).
    pub interfaces: Option<Vec<String>>,
    /// socketcan: the interface (`can0`).
    pub interface: Option<String>,
    /// socketcan: open a CAN FD socket so FD frames arrive too (default true).
    pub fd: Option<bool>,
    /// socketcan: receive filters (default: everything).
    pub filters: Option<Vec<sensor_drivers::socketcan::IdFilter>>,
    /// socketcan: socket receive buffer in KiB (default: the kernel's).
    pub rcvbuf_kb: Option<u32>,
    /// slcan, nmea, line: the serial device (`/dev/ttyACM0`, `/dev/serial/by-id/...`).
    pub device: Option<PathBuf>,
    /// slcan, nmea, line: serial speed in baud (defaults: slcan 115200, nmea 9600, line 115200).
    pub baud: Option<u32>,
    /// slcan: CAN bit rate in kbit/s (10, 20, 50, 100, 125, 250, 500, 800, 1000; default 500).
    pub bitrate: Option<u32>,
    /// slcan: open the bus listen-only (`L`) instead of normal (`O`) (default true: a telemetry
    /// agent never acknowledges frames on the car's bus).
    pub listen_only: Option<bool>,
    /// slcan: ask the adapter for its own timestamps (`Z1`) (default false).
    pub timestamps: Option<bool>,
    /// line: field names in order, comma separated (`"t_ms,oil_temp,oil_pressure"`); `t_ms` or
    /// `t_us` names the device clock, `-` skips a field.
    pub fields: Option<String>,
    /// line: field delimiter, one character (default ",").
    pub delimiter: Option<String>,
}

/// Which optional keys each kind accepts (for "does not apply" errors).
const KIND_KEYS: &[(SourceKind, &[&str])] = &[
    (SourceKind::Synthetic, &["channels", "rate_hz", "waveform"]),
    (
        SourceKind::Candump,
        &["path", "speed", "loop", "interfaces"],
    ),
    (
        SourceKind::Socketcan,
        &["interface", "fd", "filters", "rcvbuf_kb"],
    ),
    (
        SourceKind::Slcan,
        &["device", "baud", "bitrate", "listen_only", "timestamps"],
    ),
    (SourceKind::Nmea, &["device", "baud"]),
    (SourceKind::Line, &["device", "baud", "fields", "delimiter"]),
];

impl SourceConfig {
    /// A source of `kind` with no optional key set.
    pub fn new(name: &str, kind: SourceKind) -> Self {
        SourceConfig {
            name: name.to_string(),
            kind,
            critical: false,
            channels: None,
            rate_hz: None,
            waveform: None,
            path: None,
            speed: None,
            looped: None,
            interfaces: None,
            interface: None,
            fd: None,
            filters: None,
            rcvbuf_kb: None,
            device: None,
            baud: None,
            bitrate: None,
            listen_only: None,
            timestamps: None,
            fields: None,
            delimiter: None,
        }
    }

    /// The synthetic generator's settings (after [`Config::validate`] all fields are present).
    pub fn synthetic_spec(&self) -> sensor_drivers::synthetic::SyntheticSpec {
        sensor_drivers::synthetic::SyntheticSpec {
            channels: self.channels.unwrap_or(1),
            rate_hz: self.rate_hz.unwrap_or(1),
            waveform: self.waveform.unwrap_or_default(),
        }
    }

    /// The optional keys that are set, by name.
    fn keys_set(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        let mut add = |set: bool, name| {
            if set {
                k.push(name)
            }
        };
        add(self.channels.is_some(), "channels");
        add(self.rate_hz.is_some(), "rate_hz");
        add(self.waveform.is_some(), "waveform");
        add(self.path.is_some(), "path");
        add(self.speed.is_some(), "speed");
        add(self.looped.is_some(), "loop");
        add(self.interfaces.is_some(), "interfaces");
        add(self.interface.is_some(), "interface");
        add(self.fd.is_some(), "fd");
        add(self.filters.is_some(), "filters");
        add(self.rcvbuf_kb.is_some(), "rcvbuf_kb");
        add(self.device.is_some(), "device");
        add(self.baud.is_some(), "baud");
        add(self.bitrate.is_some(), "bitrate");
        add(self.listen_only.is_some(), "listen_only");
        add(self.timestamps.is_some(), "timestamps");
        add(self.fields.is_some(), "fields");
        add(self.delimiter.is_some(), "delimiter");
        k
    }

    /// Field names of a line source (after validation: present and well formed).
    pub fn line_fields(&self) -> Vec<String> {
        self.fields
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|f| f.trim().to_string())
            .collect()
    }

    /// The line sensor's channel map and delimiter.
    pub fn line_spec(
        &self,
    ) -> Result<sensor_drivers::line::LineSpec, sensor_drivers::line::SpecError> {
        let delimiter = self
            .delimiter
            .as_deref()
            .and_then(|d| d.chars().next())
            .unwrap_or(',');
        sensor_drivers::line::LineSpec::new(&self.line_fields(), delimiter)
    }

    /// A short description of what the source reads, for status output.
    pub fn describe(&self) -> String {
        match self.kind {
            SourceKind::Synthetic => format!(
                "{} channels at {} Hz",
                self.channels.unwrap_or(0),
                self.rate_hz.unwrap_or(0)
            ),
            SourceKind::Candump => self
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            SourceKind::Socketcan => self.interface.clone().unwrap_or_default(),
            SourceKind::Slcan | SourceKind::Nmea | SourceKind::Line => self
                .device
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// Checks the keys of this source against its kind. On failure: key path and message.
    fn validate(&self, i: usize) -> Result<(), (Vec<KeyPart>, String)> {
        use KeyPart::{Index as I, Key as K};
        let kind = self.kind.name();
        let allowed = KIND_KEYS
            .iter()
            .find(|(k, _)| *k == self.kind)
            .map_or(&[][..], |(_, v)| v);
        for key in self.keys_set() {
            if !allowed.contains(&key) {
                let owners: Vec<&str> = KIND_KEYS
                    .iter()
                    .filter(|(_, v)| v.contains(&key))
                    .map(|(k, _)| k.name())
                    .collect();
                return Err((
                    vec![K("sources"), I(i), K(key)],
                    format!(
                        "'{key}' does not apply to a {kind} source (it is a key of: {}); keys of a {kind} source: {}",
                        owners.join(", "),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let need = |set: bool, key: &str, what: &str| {
            if set {
                Ok(())
            } else {
                Err((
                    vec![K("sources"), I(i)],
                    format!("a {kind} source needs '{key}' ({what})"),
                ))
            }
        };
        let range = |v: Option<u64>, key: &'static str, lo: u64, hi: u64| match v {
            Some(v) if !(lo..=hi).contains(&v) => Err((
                vec![K("sources"), I(i), K(key)],
                format!("{key} = {v} is out of range; allowed: {lo} to {hi}"),
            )),
            _ => Ok(()),
        };
        match self.kind {
            SourceKind::Synthetic => {
                need(self.channels.is_some(), "channels", "1 to 4096")?;
                range(self.channels.map(u64::from), "channels", 1, 4096)?;
                need(self.rate_hz.is_some(), "rate_hz", "1 to 10000")?;
                range(self.rate_hz.map(u64::from), "rate_hz", 1, 10_000)?;
            }
            SourceKind::Candump => {
                need(
                    self.path.is_some(),
                    "path",
                    "the candump log file to replay",
                )?;
                if let Some(ReplaySpeed::Factor(f)) = self.speed
                    && !(f.is_finite() && f > 0.0 && f <= 1e6)
                {
                    return Err((
                        vec![K("sources"), I(i), K("speed")],
                        format!(
                            "speed = {f} is not allowed; use \"recorded\", \"max\" or a multiple above 0 (e.g. 2.0)"
                        ),
                    ));
                }
            }
            SourceKind::Socketcan => {
                need(self.interface.is_some(), "interface", "e.g. \"can0\"")?;
                let name = self.interface.as_deref().unwrap_or_default();
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                    return Err((
                        vec![K("sources"), I(i), K("interface")],
                        format!(
                            "interface '{name}' is not a valid network interface name (1 to 15 characters, no '/' or spaces)"
                        ),
                    ));
                }
                for (j, f) in self.filters.iter().flatten().enumerate() {
                    if let Err(e) = f.to_kernel() {
                        return Err((vec![K("sources"), I(i), K("filters"), I(j)], e.to_string()));
                    }
                }
                range(self.rcvbuf_kb.map(u64::from), "rcvbuf_kb", 1, 1 << 20)?;
            }
            SourceKind::Slcan | SourceKind::Nmea | SourceKind::Line => {
                need(self.device.is_some(), "device", "e.g. \"/dev/ttyACM0\"")?;
                range(self.baud.map(u64::from), "baud", 50, 4_000_000)?;
                if self.kind == SourceKind::Slcan
                    && let Some(b) = self.bitrate
                    && !slcan_bitrates_kbit().contains(&b)
                {
                    return Err((
                        vec![K("sources"), I(i), K("bitrate")],
                        format!(
                            "bitrate = {b} kbit/s is not an slcan rate; allowed: {:?}",
                            slcan_bitrates_kbit()
                        ),
                    ));
                }
                if self.kind == SourceKind::Line {
                    need(
                        self.fields.is_some(),
                        "fields",
                        "field names in order, e.g. \"t_ms,oil_temp,oil_pressure\"",
                    )?;
                    if self.line_fields().iter().any(|f| f.is_empty()) {
                        return Err((
                            vec![K("sources"), I(i), K("fields")],
                            "fields has an empty name; use '-' to skip a field".into(),
                        ));
                    }
                    if let Some(d) = &self.delimiter
                        && d.chars().count() != 1
                    {
                        return Err((
                            vec![K("sources"), I(i), K("delimiter")],
                            format!("delimiter = {d:?} must be exactly one character"),
                        ));
                    }
                    if let Err(e) = self.line_spec() {
                        let key = match e {
                            sensor_drivers::line::SpecError::Delimiter(_) => "delimiter",
                            _ => "fields",
                        };
                        return Err((vec![K("sources"), I(i), K(key)], e.to_string()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The bit rates of the slcan `S0`..`S8` commands, in kbit/s.
pub fn slcan_bitrates_kbit() -> Vec<u32> {
    sensor_drivers::slcan::Bitrate::ALL
        .iter()
        .map(|b| b.bps() / 1000)
        .collect()
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| error::from_toml(&e, text, path))?;
        cfg.validate()
            .map_err(|(key_path, msg)| error::semantic(text, path, &key_path, msg))?;
        Ok(cfg)
    }

    /// Cross-field and range checks. On failure: the path of the offending key and the message.
    fn validate(&self) -> Result<(), (Vec<KeyPart>, String)> {
        use KeyPart::{Index as I, Key as K};
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !(100..=60_000).contains(&self.towers.poll_ms) {
            return Err((
                vec![K("towers"), K("poll_ms")],
                format!(
                    "poll_ms = {} is out of range; allowed: 100 to 60000",
                    self.towers.poll_ms
                ),
            ));
        }
        if self.towers.map_max_entries == 0 {
            return Err((
                vec![K("towers"), K("map_max_entries")],
                "map_max_entries must be at least 1".into(),
            ));
        }
        if !valid_name(&self.vehicle) {
            return Err((
                vec![K("vehicle")],
                format!(
                    "vehicle id '{}' must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
                    self.vehicle
                ),
            ));
        }
        let q = &self.queue;
        if q.segment_mb == 0 || q.segment_mb > 1024 {
            return Err((
                vec![K("queue"), K("segment_mb")],
                format!(
                    "segment_mb = {} is out of range; allowed: 1 to 1024",
                    q.segment_mb
                ),
            ));
        }
        if q.max_mb < 2 * q.segment_mb {
            return Err((
                vec![K("queue"), K("max_mb")],
                format!(
                    "max_mb = {} must be at least two segments (2 × segment_mb = {})",
                    q.max_mb,
                    2 * q.segment_mb
                ),
            ));
        }
        if !(1..=10_000).contains(&q.flush_ms) {
            return Err((
                vec![K("queue"), K("flush_ms")],
                format!(
                    "flush_ms = {} is out of range; allowed: 1 to 10000",
                    q.flush_ms
                ),
            ));
        }
        if !(64..=1 << 20).contains(&q.flush_kb) {
            return Err((
                vec![K("queue"), K("flush_kb")],
                format!(
                    "flush_kb = {} is out of range; allowed: 64 to 1048576",
                    q.flush_kb
                ),
            ));
        }
        if !(1..=60_000).contains(&self.batch.window_ms) {
            return Err((
                vec![K("batch"), K("window_ms")],
                format!(
                    "window_ms = {} is out of range; allowed: 1 to 60000",
                    self.batch.window_ms
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.batch.max_samples) {
            return Err((
                vec![K("batch"), K("max_samples")],
                format!(
                    "max_samples = {} is out of range; allowed: 1 to 1000000",
                    self.batch.max_samples
                ),
            ));
        }
        if !crate::codec::READABLE_VERSIONS.contains(&self.batch.format_version) {
            return Err((
                vec![K("batch"), K("format_version")],
                format!(
                    "format_version = {} is not a wire format version; allowed: 1 (plain bodies, for receivers older than version 2) or 2 (columnar, the default)",
                    self.batch.format_version
                ),
            ));
        }
        let b = &self.broker;
        match (&b.host, &b.socket) {
            (Some(_), Some(_)) => {
                return Err((
                    vec![K("broker"), K("socket")],
                    "set either 'host' (with 'port') or 'socket' in [broker], not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    vec![K("broker")],
                    "[broker] needs 'host' (with 'port') or 'socket'".into(),
                ));
            }
            _ => {}
        }
        if b.socket.is_some() && b.tls.is_some() {
            return Err((
                vec![K("broker"), K("tls")],
                "[broker.tls] applies to 'host' connections; a unix 'socket' is local".into(),
            ));
        }
        if let Some(tls) = &b.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return Err((
                vec![K("broker"), K("tls")],
                "mutual TLS needs both 'cert' and 'key' in [broker.tls]".into(),
            ));
        }
        if b.keep_alive_s < 1 || b.keep_alive_s > 3600 {
            return Err((
                vec![K("broker"), K("keep_alive_s")],
                format!(
                    "keep_alive_s = {} is out of range; allowed: 1 to 3600",
                    b.keep_alive_s
                ),
            ));
        }
        if b.topic_prefix.is_empty() || b.topic_prefix.contains(['+', '#']) {
            return Err((
                vec![K("broker"), K("topic_prefix")],
                "topic_prefix must be non-empty and contain no MQTT wildcard ('+', '#')".into(),
            ));
        }
        if self.links.is_empty() {
            return Err((vec![], "at least one [[links]] table is required".into()));
        }
        for (i, l) in self.links.iter().enumerate() {
            if !valid_name(&l.name) {
                return Err((
                    vec![K("links"), I(i), K("name")],
                    format!(
                        "link name '{}' must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
                        l.name
                    ),
                ));
            }
            if self.links[..i].iter().any(|o| o.name == l.name) {
                return Err((
                    vec![K("links"), I(i), K("name")],
                    format!("link name '{}' is used twice; names must be unique", l.name),
                ));
            }
            if l.modem.is_some() && l.modemmanager.is_some() {
                return Err((
                    vec![K("links"), I(i), K("modemmanager")],
                    format!(
                        "link '{}' sets both modem (AT port) and modemmanager; a modem is driven by one backend, remove one",
                        l.name
                    ),
                ));
            }
            if let Some(mm) = &l.modemmanager
                && (mm.is_empty() || !(mm == "first" || mm.bytes().all(|b| b.is_ascii_digit())))
            {
                return Err((
                    vec![K("links"), I(i), K("modemmanager")],
                    format!(
                        "modemmanager = '{mm}' must be \"first\", a modem index (0, 1, ...) or an IMEI (digits)"
                    ),
                ));
            }
        }
        if self.sources.is_empty() {
            return Err((vec![], "at least one [[sources]] table is required".into()));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !valid_name(&s.name) {
                return Err((
                    vec![K("sources"), I(i), K("name")],
                    format!(
                        "source name '{}' must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
                        s.name
                    ),
                ));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err((
                    vec![K("sources"), I(i), K("name")],
                    format!(
                        "source name '{}' is used twice; names must be unique",
                        s.name
                    ),
                ));
            }
            s.validate(i)?;
        }
        Ok(())
    }

    /// Topic on which this vehicle's batches are published.
    pub fn data_topic(&self) -> String {
        format!("{}/{}/batch", self.broker.topic_prefix, self.vehicle)
    }
}

/// One step of a path to a key in the document (`sources[1].rate_hz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    Key(&'static str),
    Index(usize),
}

#[cfg(test)]
mod tests;

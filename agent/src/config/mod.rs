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
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            window_ms: 100,
            max_samples: 20_000,
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
    /// Serial AT control port of the link's modem (read by modem-hal; not used by the uplink yet).
    pub modem: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name of the source, unique; appears in every sample's record on the receiver.
    pub name: String,
    pub kind: SourceKind,
    /// synthetic: number of channels (1..=4096).
    pub channels: Option<u16>,
    /// synthetic: samples per second per channel (1..=10000).
    pub rate_hz: Option<u32>,
    /// synthetic: sine | saw | square | noise.
    pub waveform: Option<sensor_drivers::synthetic::Waveform>,
}

impl SourceConfig {
    /// The synthetic generator's settings (after [`Config::validate`] all fields are present).
    pub fn synthetic_spec(&self) -> sensor_drivers::synthetic::SyntheticSpec {
        sensor_drivers::synthetic::SyntheticSpec {
            channels: self.channels.unwrap_or(1),
            rate_hz: self.rate_hz.unwrap_or(1),
            waveform: self.waveform.unwrap_or_default(),
        }
    }
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
            match s.kind {
                SourceKind::Synthetic => {
                    match s.channels {
                        None => {
                            return Err((
                                vec![K("sources"), I(i)],
                                "a synthetic source needs 'channels' (1 to 4096)".into(),
                            ));
                        }
                        Some(c) if !(1..=4096).contains(&c) => {
                            return Err((
                                vec![K("sources"), I(i), K("channels")],
                                format!("channels = {c} is out of range; allowed: 1 to 4096"),
                            ));
                        }
                        _ => {}
                    }
                    match s.rate_hz {
                        None => {
                            return Err((
                                vec![K("sources"), I(i)],
                                "a synthetic source needs 'rate_hz' (1 to 10000)".into(),
                            ));
                        }
                        Some(r) if !(1..=10_000).contains(&r) => {
                            return Err((
                                vec![K("sources"), I(i), K("rate_hz")],
                                format!("rate_hz = {r} is out of range; allowed: 1 to 10000"),
                            ));
                        }
                        _ => {}
                    }
                }
            }
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

//! Diagnostics: the status snapshot the daemon serves on its unix socket, and its rendering.
//!
//! Protocol: connect to the socket, read one JSON document (the [`Status`]) until EOF. The same
//! document is what `pitlink status --json` prints, so scripts and humans see the same data.

use crate::bond::scheduler::{LinkCounters, LinkState, RadioBand, Scheduler};
use crate::queue::{QueueStats, Recovery};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub mod links;
pub mod metrics;
pub mod modem;
mod render;
pub mod tail;
pub mod towers;
pub use render::{render, render_queue, render_sources};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub vehicle: String,
    pub pid: u32,
    pub version: String,
    pub started_us: u64,
    pub now_us: u64,
    pub sources: Vec<SourceStatus>,
    pub queue: QueueStatus,
    pub links: Vec<LinkStatus>,
    /// Modem polling and the tower policy.
    #[serde(default)]
    pub towers: TowersStatus,
}

/// What a link's modem reports, as last polled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkRadio {
    /// How the modem is reached (`AT /dev/...`, `ModemManager first`).
    pub modem: String,
    /// Radio access technology of the serving cell.
    pub rat: Option<String>,
    /// Serving cell state (`CONNECT`, `NOCONN`, `SEARCH`...).
    pub state: Option<String>,
    pub pci: Option<u16>,
    pub earfcn: Option<u32>,
    pub cell_id: Option<u64>,
    pub tac: Option<u32>,
    /// E-UTRA / NR band number.
    pub band: Option<u16>,
    pub rsrp_dbm: Option<f64>,
    pub rsrq_db: Option<f64>,
    pub sinr_db: Option<f64>,
    /// Quality band of the metrics (RADIO.md §1.4).
    pub quality: Option<RadioBand>,
    /// Neighbour cells heard.
    pub neighbours: usize,
    /// The cell the tower policy locked the modem to.
    pub locked: Option<crate::towers::policy::CellRef>,
    /// The last poll's error (no service, modem gone...).
    pub error: Option<String>,
    /// When the modem was last read (µs since the epoch).
    pub updated_us: u64,
}

/// The tower policy's view, for `pitlink towers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TowersStatus {
    /// Whether the policy may lock and release cells (`[towers] policy`).
    pub policy: bool,
    /// Links with a modem, by link index.
    pub modems: Vec<TowerModem>,
    /// The last decisions, oldest first, with their reasons.
    pub decisions: Vec<crate::towers::policy::Decision>,
    /// Locks and releases so far.
    pub switches: u64,
    /// Commands the modems refused or that failed.
    pub failures: u64,
    /// The car's last GPS fix.
    pub position: Option<crate::towers::map::Fix>,
    /// The learned map: (location, cell) entries and 50 m squares covered.
    pub map_entries: usize,
    pub map_squares: usize,
    /// The map's state file.
    pub map_file: Option<PathBuf>,
}

/// One modem in [`TowersStatus`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TowerModem {
    pub link: String,
    /// Serving cell (EARFCN/PCI).
    pub serving: Option<crate::towers::policy::CellRef>,
    pub locked: Option<crate::towers::policy::CellRef>,
    /// Whether the modem can be locked to a cell (probed).
    pub lockable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    /// synthetic, candump, socketcan, slcan, nmea or line.
    pub kind: String,
    /// What it reads: interface, device path, log file, or the generator's shape.
    pub device: String,
    /// Readings, parse errors, drops, overruns, reconnects, error frames by class, connected,
    /// last error.
    #[serde(flatten)]
    pub counters: sensor_drivers::SourceCounters,
    /// Readings per second over the last second.
    pub readings_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub dir: PathBuf,
    #[serde(flatten)]
    pub stats: QueueStats,
    /// Live batches waiting for a link, and batches taken back from a link for a re-send (the
    /// backlog stays in the queue: `undelivered` counts it).
    pub unsent: u64,
    pub recovery: Recovery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub interface: Option<String>,
    pub state: String,
    pub in_flight: u64,
    #[serde(flatten)]
    pub counters: LinkCounters,
    pub last_error: Option<String>,
    /// The broker address the link connects to (HOST:PORT, or the broker's socket path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The scheduler's estimates for the link.
    #[serde(flatten, default)]
    pub metrics: LinkMetrics,
    /// The link's modem, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radio: Option<LinkRadio>,
}

/// The scheduler's view of a link's path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkMetrics {
    /// Smoothed RTT from acks (ms), once measured.
    pub srtt_ms: Option<f64>,
    /// RTT variance (ms), once measured.
    pub rttvar_ms: Option<f64>,
    /// Retransmission timeout (ms): an ack later than this moves the batch.
    pub rto_ms: f64,
    /// Goodput estimate (bytes acknowledged per second), once measured.
    pub goodput_bytes_s: Option<f64>,
    pub in_flight_bytes: u64,
    /// Bytes-in-flight limit.
    pub window_bytes: u64,
    /// Radio band the scheduler uses for the link.
    pub band: Option<RadioBand>,
}

impl LinkMetrics {
    /// The estimates `sched` holds for `link`.
    pub fn of(sched: &Scheduler, link: usize) -> LinkMetrics {
        let ms = |us: u64| us as f64 / 1000.0;
        LinkMetrics {
            srtt_ms: sched.srtt_us(link).map(ms),
            rttvar_ms: sched.rttvar_us(link).map(ms),
            rto_ms: ms(sched.rto_us(link)),
            goodput_bytes_s: sched.goodput(link),
            in_flight_bytes: sched.bytes_in_flight(link),
            window_bytes: sched.window_bytes(link),
            band: Some(sched.band(link)),
        }
    }
}

impl LinkStatus {
    pub fn new(
        name: &str,
        interface: Option<&str>,
        state: LinkState,
        in_flight: usize,
        counters: LinkCounters,
        last_error: Option<String>,
    ) -> Self {
        LinkStatus {
            name: name.to_string(),
            interface: interface.map(str::to_string),
            state: match state {
                LinkState::Up => "up".into(),
                LinkState::Down => "down".into(),
                LinkState::Suspect => "suspect".into(),
            },
            in_flight: in_flight as u64,
            counters,
            last_error,
            address: None,
            metrics: LinkMetrics::default(),
            radio: None,
        }
    }

    /// With the link's modem radio.
    pub fn with_radio(mut self, radio: Option<LinkRadio>) -> Self {
        self.radio = radio;
        self
    }

    /// With the broker address the link connects to.
    pub fn with_address(mut self, address: Option<String>) -> Self {
        self.address = address;
        self
    }

    /// With the scheduler's estimates.
    pub fn with_metrics(mut self, metrics: LinkMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// Serves `status` on the unix socket at `path` until `stop` is cancelled; removes the socket.
pub async fn serve(
    path: PathBuf,
    status: watch::Receiver<Status>,
    tail: broadcast::Sender<TailChunk>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the diagnostics socket directory {}",
                dir.display()
            )
        })?;
    }
    // A socket left by a killed daemon would make bind fail.
    if path.exists() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on the diagnostics socket {}", path.display()))?;
    set_mode(&path, 0o660);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            acc = listener.accept() => {
                let Ok((conn, _)) = acc else { continue };
                let (status, tail, stop) = (status.clone(), tail.clone(), stop.clone());
                tokio::spawn(async move {
                    let _ = answer(conn, status, tail, stop).await;
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Live readings of one source for `pitlink tail`: the core sends each chunk a source hands
/// over while someone listens.
#[derive(Debug, Clone)]
pub struct TailChunk {
    /// Index of the source in the configuration.
    pub source: usize,
    /// Its readings.
    pub readings: std::sync::Arc<Vec<sensor_drivers::Reading>>,
}

/// One line of a `tail` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TailLine {
    /// A value of channel `ch`.
    Value { t_us: u64, ch: u16, v: f64 },
    /// A CAN frame: identifier, flags (`sensor_drivers::can::flags`), length, payload in hex.
    Frame {
        t_us: u64,
        id: u32,
        flags: u8,
        len: u8,
        data: String,
    },
    /// This many chunks were skipped because the reader was too slow.
    Lagged { lagged: u64 },
    /// The request cannot be served.
    Error { error: String },
}

/// One connection: a request line (`status`, or `tail <source>`) within 200 ms, else the
/// status (so `socat - UNIX-CONNECT:...` shows it too).
async fn answer(
    conn: tokio::net::UnixStream,
    mut status: watch::Receiver<Status>,
    tail: broadcast::Sender<TailChunk>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let (r, mut w) = conn.into_split();
    let mut reader = tokio::io::BufReader::new(r.take(512));
    let mut line = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        reader.read_line(&mut line),
    )
    .await;
    // The socket is up before the core's first snapshot: wait for it (briefly) rather than
    // answer with an empty status.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        status.wait_for(|s| s.pid != 0),
    )
    .await;
    let Some(source) = line.trim().strip_prefix("tail ").map(str::trim) else {
        let doc = serde_json::to_vec(&*status.borrow()).unwrap_or_default();
        w.write_all(&doc).await?;
        return w.shutdown().await;
    };
    let names: Vec<String> = status
        .borrow()
        .sources
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let Some(index) = names.iter().position(|n| n == source) else {
        let e = TailLine::Error {
            error: format!(
                "no source '{source}'; the sources are: {}",
                names.join(", ")
            ),
        };
        w.write_all(&serde_json::to_vec(&e).unwrap_or_default())
            .await?;
        w.write_all(b"\n").await?;
        return w.shutdown().await;
    };
    let mut rx = tail.subscribe();
    let mut out = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return w.shutdown().await,
            c = rx.recv() => c,
        };
        out.clear();
        match chunk {
            Ok(c) if c.source == index => {
                for r in c.readings.iter() {
                    let l = match r {
                        sensor_drivers::Reading::Value(s) => TailLine::Value {
                            t_us: s.t_us,
                            ch: s.channel,
                            v: s.value,
                        },
                        sensor_drivers::Reading::Frame(f) => TailLine::Frame {
                            t_us: f.t_us,
                            id: f.frame.id,
                            flags: f.frame.flags,
                            len: f.frame.len,
                            data: f
                                .frame
                                .payload()
                                .iter()
                                .map(|b| format!("{b:02X}"))
                                .collect(),
                        },
                    };
                    let _ = serde_json::to_writer(&mut out, &l);
                    out.push(b'\n');
                }
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = serde_json::to_writer(&mut out, &TailLine::Lagged { lagged: n });
                out.push(b'\n');
            }
            Err(broadcast::error::RecvError::Closed) => return w.shutdown().await,
        }
        w.write_all(&out).await?;
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// Reads one status snapshot from the daemon's socket.
pub fn fetch(path: &Path) -> anyhow::Result<Status> {
    use std::io::Read;
    let mut conn = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the pitlink daemon at {}: {e}\n  is `pitlink run` running? the socket is [diag] socket in the config (or pass --socket)",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    {
        use std::io::Write;
        // Old daemons ignore the request line and send the status anyway.
        let _ = conn.write_all(b"status\n");
    }
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| {
        anyhow::anyhow!(
            "{}: the daemon sent an unreadable status ({e})",
            path.display()
        )
    })
}

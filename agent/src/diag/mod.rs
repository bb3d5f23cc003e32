//! Diagnostics: the status snapshot the daemon serves on its unix socket, and its rendering.
//!
//! Protocol: connect to the socket, read one JSON document (the [`Status`]) until EOF. The same
//! document is what `pitlink status --json` prints, so scripts and humans see the same data.

use crate::bond::scheduler::{LinkCounters, LinkState, RadioBand, Scheduler};
use crate::queue::{QueueStats, Recovery};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod links;
pub mod modem;
mod render;
pub use render::render;

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
        }
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
                let Ok((mut conn, _)) = acc else { continue };
                let doc = serde_json::to_vec(&*status.borrow()).unwrap_or_default();
                tokio::spawn(async move {
                    let _ = conn.write_all(&doc).await;
                    let _ = conn.shutdown().await;
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
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
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| {
        anyhow::anyhow!(
            "{}: the daemon sent an unreadable status ({e})",
            path.display()
        )
    })
}

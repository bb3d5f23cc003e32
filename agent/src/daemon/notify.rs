//! systemd service notifications (`sd_notify`): READY, STATUS, STOPPING and a progress watchdog.
//!
//! The protocol is one datagram per message on the unix socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for an abstract address). It is a few lines over std's `UnixDatagram`, so it is
//! written here rather than pulled in as a crate; abstract addresses go through std's
//! `SocketAddrExt`.
//!
//! The watchdog is fed only while the pipeline makes progress, as judged by [`Progress`] from the
//! status the core publishes (see there); a stuck core stops the pings and systemd restarts the
//! service after `WatchdogSec`.

use crate::diag::Status;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET`, if set (not running under systemd otherwise).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => Notifier::new(&s.to_string_lossy()).map(Some),
        }
    }

    /// A notifier for `socket`: a filesystem path, or `@name` for an abstract address.
    pub fn new(socket: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {socket:?} is neither an absolute path nor @abstract"),
            ));
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Sends one message (`READY=1`, `STATUS=...`; several `KEY=VALUE` lines are allowed).
    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock.send_to_addr(msg.as_bytes(), &self.addr).map(drop)
    }
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set), or `None` when the watchdog is off.
pub fn watchdog_from_env() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Why the pipeline is judged stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The core has not published a new status for this long (it publishes every 100 ms).
    NoStatus(Duration),
    /// Sources produced readings this long ago and no batch has been stored since.
    NoBatches(Duration),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::NoStatus(d) => write!(f, "the core has published no status for {d:?}"),
            Stall::NoBatches(d) => write!(f, "readings arrived {d:?} ago but no batch was stored"),
        }
    }
}

/// Judges pipeline progress from successive status snapshots (sans-IO: `now` is passed in).
///
/// Progress means both:
/// - the core keeps publishing its status: the snapshot's `now_us` changes at least every
///   `status_within`;
/// - while sources produce, batches are stored: once the readings counted by the sources grow,
///   the queue's appended + dropped + evicted batch count must grow within `batch_within`
///   (dropped batches count: a full or failing disk is reported, not cured by a restart).
///
/// Idle sources (no new readings) do not count against progress.
#[derive(Debug, Clone)]
pub struct Progress {
    status_within: Duration,
    batch_within: Duration,
    last_status_us: Option<u64>,
    status_seen_at: Duration,
    readings: u64,
    batches: u64,
    /// When readings first grew after the last stored batch.
    pending_since: Option<Duration>,
}

impl Progress {
    /// A judge starting at `now`; see the type's doc for the two limits.
    pub fn new(now: Duration, status_within: Duration, batch_within: Duration) -> Progress {
        Progress {
            status_within,
            batch_within,
            last_status_us: None,
            status_seen_at: now,
            readings: 0,
            batches: 0,
            pending_since: None,
        }
    }

    /// Feeds the current snapshot; `Ok(())` while the pipeline progresses.
    pub fn observe(&mut self, now: Duration, s: &Status) -> Result<(), Stall> {
        if self.last_status_us != Some(s.now_us) {
            let first = self.last_status_us.is_none();
            self.last_status_us = Some(s.now_us);
            self.status_seen_at = now;
            let readings: u64 = s.sources.iter().map(|x| x.counters.readings).sum();
            let q = &s.queue.stats;
            let batches = q.appended_batches + q.dropped_batches + q.evicted_batches;
            if first {
                // The first snapshot is the baseline.
                self.readings = readings;
                self.batches = batches;
            } else if batches != self.batches {
                self.batches = batches;
                self.pending_since = None;
            }
            if readings != self.readings {
                self.readings = readings;
                self.pending_since.get_or_insert(now);
            }
        }
        let quiet = now.saturating_sub(self.status_seen_at);
        if quiet > self.status_within {
            return Err(Stall::NoStatus(quiet));
        }
        if let Some(since) = self.pending_since {
            let waited = now.saturating_sub(since);
            if waited > self.batch_within {
                return Err(Stall::NoBatches(waited));
            }
        }
        Ok(())
    }
}

/// One line for `systemctl status`: readings rate, queue depth, links up.
pub fn status_line(s: &Status) -> String {
    let rate: f64 = s.sources.iter().map(|x| x.readings_per_s).sum();
    let up = s.links.iter().filter(|l| l.state == "up").count();
    let q = &s.queue.stats;
    format!(
        "{} sources {:.0} readings/s; queue {} undelivered batches, {:.1} MiB; links {}/{} up",
        s.sources.len(),
        rate,
        q.undelivered,
        q.bytes_on_disk as f64 / (1u64 << 20) as f64,
        up,
        s.links.len()
    )
}

/// How often STATUS= is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Sends READY=1 now, then keeps STATUS= current and feeds the watchdog (when `watchdog` is set)
/// at half its interval while [`Progress`] holds, until `stop` is cancelled. Returns the task.
pub fn spawn(
    notifier: Notifier,
    mut status: watch::Receiver<Status>,
    watchdog: Option<Duration>,
    batch_window: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Notifier> {
    if let Err(e) = notifier.send("READY=1") {
        tracing::warn!("sd_notify READY=1 failed: {e}");
    }
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let every = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
        let status_within = watchdog.map_or(Duration::from_secs(5), |w| (w / 2).max(every));
        let batch_within = status_within.max(batch_window * 2 + Duration::from_secs(2));
        let mut progress = Progress::new(Duration::ZERO, status_within, batch_within);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled = false;
        let mut last_status: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let snap = status.borrow_and_update().clone();
            let verdict = progress.observe(now - start, &snap);
            match verdict {
                Ok(()) => {
                    if stalled {
                        tracing::info!("pipeline progressing again");
                        stalled = false;
                    }
                    if watchdog.is_some() {
                        let _ = notifier.send("WATCHDOG=1");
                    }
                }
                Err(stall) if !stalled => {
                    tracing::error!("pipeline stuck: {stall}; watchdog pings stopped");
                    stalled = true;
                    let _ = notifier.send(&format!("STATUS=stuck: {stall}"));
                }
                Err(_) => {}
            }
            // The snapshot before the core's first publish is empty (no pid): nothing to say.
            if !stalled && snap.pid != 0 && last_status.is_none_or(|t| now - t >= STATUS_EVERY) {
                last_status = Some(now);
                let _ = notifier.send(&format!("STATUS={}", status_line(&snap)));
            }
        }
        notifier
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::diag::SourceStatus;

    fn snap(now_us: u64, readings: u64, appended: u64) -> Status {
        let mut s = Status {
            now_us,
            sources: vec![SourceStatus::default()],
            ..Status::default()
        };
        s.sources[0].counters.readings = readings;
        s.queue.stats.appended_batches = appended;
        s
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn status_must_keep_changing() {
        let mut p = Progress::new(S(0), S(5), S(10));
        assert_eq!(p.observe(S(1), &snap(1, 0, 0)), Ok(()));
        assert_eq!(p.observe(S(5), &snap(1, 0, 0)), Ok(()));
        assert_eq!(p.observe(S(7), &snap(1, 0, 0)), Err(Stall::NoStatus(S(6))));
        assert_eq!(p.observe(S(8), &snap(2, 0, 0)), Ok(()));
    }

    #[test]
    fn readings_without_batches_stall_after_the_limit() {
        let mut p = Progress::new(S(0), S(5), S(10));
        // The first snapshot is the baseline; readings from t = 4 s wait for a batch.
        assert_eq!(p.observe(S(1), &snap(1, 100, 0)), Ok(()));
        assert_eq!(p.observe(S(4), &snap(2, 200, 0)), Ok(()));
        assert_eq!(p.observe(S(11), &snap(3, 300, 0)), Ok(()));
        assert_eq!(
            p.observe(S(15), &snap(4, 400, 0)),
            Err(Stall::NoBatches(S(11)))
        );
        // A stored batch clears it; readings after it start a new wait.
        assert_eq!(p.observe(S(16), &snap(5, 400, 1)), Ok(()));
        assert_eq!(p.observe(S(20), &snap(6, 500, 1)), Ok(()));
        assert_eq!(p.observe(S(29), &snap(7, 500, 1)), Ok(()));
        assert_eq!(
            p.observe(S(31), &snap(8, 500, 1)),
            Err(Stall::NoBatches(S(11)))
        );
    }

    #[test]
    fn idle_sources_are_progress() {
        let mut p = Progress::new(S(0), S(5), S(10));
        for t in 1..100 {
            assert_eq!(p.observe(S(t), &snap(t, 7, 3)), Ok(()));
        }
    }

    #[test]
    fn datagrams_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pitlink-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(Notifier::new("relative").is_err());
    }
}

//! What every source task shares: the outlet it delivers through, its live counters, and the
//! reconnect backoff.
//!
//! A source task (an async shell around a sans-IO parser) reads its device, stamps readings and
//! hands them to an [`Outlet`] in chunks. The outlet never blocks: when the agent cannot keep up it
//! counts the chunk as dropped. A device that fails or vanishes is reopened with [`Backoff`]; the
//! task never ends on a device error, only when it is cancelled.

use crate::can::{CanFrame, ErrorClass};
use crate::sample::{Reading, SourceCounters};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Readings of one source, handed over together.
#[derive(Debug)]
pub struct Chunk {
    /// Index of the source in the agent's configuration.
    pub source: usize,
    /// When the source handed the chunk over (µs since the epoch).
    pub at_us: u64,
    pub readings: Vec<Reading>,
}

/// Live counters of one source, updated by its task and read by the agent's status.
#[derive(Debug, Default)]
pub struct SourceStats {
    readings: AtomicU64,
    parse_errors: AtomicU64,
    ignored: AtomicU64,
    drops: AtomicU64,
    overruns: AtomicU64,
    reconnects: AtomicU64,
    error_frames: AtomicU64,
    error_classes: [AtomicU64; ErrorClass::ALL.len()],
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl SourceStats {
    pub fn readings(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
    pub fn parse_errors(&self) -> u64 {
        self.parse_errors.load(Ordering::Relaxed)
    }
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    pub fn error_frames(&self) -> u64 {
        self.error_frames.load(Ordering::Relaxed)
    }

    /// Counts `n` inputs that could not be parsed and remembers why.
    pub fn parse_error(&self, n: u64, why: impl std::fmt::Display) {
        self.parse_errors.fetch_add(n, Ordering::Relaxed);
        self.set_error(why);
    }
    /// Counts `n` inputs skipped on purpose (unused sentence types, a fragment after opening).
    pub fn ignore(&self, n: u64) {
        self.ignored.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts readings lost before the source saw them (kernel or adapter overrun).
    pub fn overrun(&self, n: u64) {
        self.overruns.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts a successful reopen of the device after a failure.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    /// Marks the device open or closed.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Remembers the last error (device or input) for status.
    pub fn set_error(&self, why: impl std::fmt::Display) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why.to_string());
        }
    }
    /// Counts an error frame under each of its classes.
    pub fn error_frame(&self, f: &CanFrame) {
        self.error_frames.fetch_add(1, Ordering::Relaxed);
        for c in f.error_classes() {
            self.error_classes[c as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy for status output.
    pub fn snapshot(&self) -> SourceCounters {
        SourceCounters {
            readings: self.readings(),
            parse_errors: self.parse_errors(),
            ignored: self.ignored(),
            drops: self.drops(),
            overruns: self.overruns(),
            reconnects: self.reconnects(),
            error_frames: self.error_frames(),
            error_classes: ErrorClass::ALL
                .iter()
                .zip(&self.error_classes)
                .map(|(c, n)| (c.name().to_string(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            connected: self.is_connected(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// Where a source task delivers its readings.
#[derive(Debug, Clone)]
pub struct Outlet {
    source: usize,
    tx: mpsc::Sender<Chunk>,
    stats: std::sync::Arc<SourceStats>,
}

impl Outlet {
    pub fn new(source: usize, tx: mpsc::Sender<Chunk>, stats: std::sync::Arc<SourceStats>) -> Self {
        Outlet { source, tx, stats }
    }

    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// Hands `readings` over, waiting for room: for sources that can wait without losing
    /// anything (a log file replayed flat out). Live devices use [`Outlet::emit`]. Returns false
    /// (and counts the readings as dropped) only when the agent has gone.
    pub async fn send(&self, at_us: u64, readings: Vec<Reading>) -> bool {
        if readings.is_empty() {
            return true;
        }
        self.count_error_frames(&readings);
        let n = readings.len() as u64;
        let chunk = Chunk {
            source: self.source,
            at_us,
            readings,
        };
        match self.tx.send(chunk).await {
            Ok(()) => {
                self.stats.readings.fetch_add(n, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.drops.fetch_add(n, Ordering::Relaxed);
                false
            }
        }
    }

    fn count_error_frames(&self, readings: &[Reading]) {
        for r in readings {
            if let Reading::Frame(f) = r
                && f.frame.is_error()
            {
                self.stats.error_frame(&f.frame);
            }
        }
    }

    /// Hands `readings` over without blocking. Error frames are counted by class. Returns false
    /// (and counts every reading as dropped) when the agent is not keeping up or has gone.
    pub fn emit(&self, at_us: u64, readings: Vec<Reading>) -> bool {
        if readings.is_empty() {
            return true;
        }
        self.count_error_frames(&readings);
        let n = readings.len() as u64;
        match self.tx.try_send(Chunk {
            source: self.source,
            at_us,
            readings,
        }) {
            Ok(()) => {
                self.stats.readings.fetch_add(n, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.drops.fetch_add(n, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Reconnect delays: doubling from `min` up to `max`, reset once a connection has lasted `stable`.
/// Sans-IO: the caller says when it connected and when it failed.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable: Duration,
    next: Duration,
    connected_at_us: Option<u64>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, stable: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            stable,
            next: min,
            connected_at_us: None,
        }
    }

    /// The device opened at `now_us`.
    pub fn connected(&mut self, now_us: u64) {
        self.connected_at_us = Some(now_us);
    }

    /// The device failed (or could not be opened) at `now_us`: how long to wait before retrying.
    pub fn failed(&mut self, now_us: u64) -> Duration {
        if let Some(t) = self.connected_at_us.take()
            && now_us.saturating_sub(t) >= self.stable.as_micros() as u64
        {
            self.next = self.min;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Microseconds since the Unix epoch by the system clock (for async shells only; sans-IO cores
/// take `now` as an argument).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sample::{Sample, TimedFrame};
    use std::sync::Arc;

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_stable_connection() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), Duration::from_secs(10));
        let got: Vec<_> = (0..6).map(|i| b.failed(i)).collect();
        assert_eq!(
            got,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        b.connected(0);
        assert_eq!(b.failed(1_000_000), ms(1000), "short connection: no reset");
        b.connected(0);
        assert_eq!(b.failed(10_000_000), ms(100), "stable connection: reset");
    }

    #[test]
    fn outlet_counts_readings_drops_and_error_classes() {
        let (tx, mut rx) = mpsc::channel(1);
        let stats = Arc::new(SourceStats::default());
        let out = Outlet::new(3, tx, stats.clone());
        let v = Reading::Value(Sample {
            t_us: 1,
            channel: 0,
            value: 1.0,
        });
        let e = Reading::Frame(TimedFrame {
            t_us: 2,
            frame: CanFrame::error(0x40 | 0x20, &[0; 8]).unwrap(),
        });
        assert!(out.emit(5, vec![v, e]));
        assert!(!out.emit(6, vec![v]), "channel full: dropped");
        let c = rx.try_recv().unwrap();
        assert_eq!((c.source, c.at_us, c.readings.len()), (3, 5, 2));
        let s = stats.snapshot();
        assert_eq!((s.readings, s.drops, s.error_frames), (2, 1, 1));
        assert_eq!(s.error_classes.get("bus_off"), Some(&1));
        assert_eq!(s.error_classes.get("no_ack"), Some(&1));
    }

    #[tokio::test]
    async fn send_waits_for_room_instead_of_dropping() {
        let (tx, mut rx) = mpsc::channel(1);
        let stats = Arc::new(SourceStats::default());
        let out = Outlet::new(0, tx, stats.clone());
        let v = Reading::Value(Sample {
            t_us: 1,
            channel: 0,
            value: 1.0,
        });
        assert!(out.send(1, vec![v]).await);
        let waiting = tokio::spawn({
            let out = out.clone();
            async move { out.send(2, vec![v, v]).await }
        });
        assert_eq!(rx.recv().await.map(|c| c.at_us), Some(1));
        assert_eq!(rx.recv().await.map(|c| c.readings.len()), Some(2));
        assert!(waiting.await.expect("task"));
        assert_eq!((stats.readings(), stats.drops()), (3, 0));
        drop(rx);
        assert!(!out.send(3, vec![v]).await, "receiver gone");
        assert_eq!(stats.drops(), 1);
    }
}

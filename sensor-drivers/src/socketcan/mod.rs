//! SocketCAN source: frames from a Linux CAN interface (`can0`, `vcan0`, …).
//!
//! [`run_socketcan`] opens a CAN_RAW socket on the interface and hands every frame it receives to
//! the [`Outlet`] in chunks: classic, CAN FD (with BRS/ESI), remote and error frames. Each frame is
//! stamped with the kernel's software receive timestamp (`SO_TIMESTAMPING`), or with the time it
//! was read when the kernel gave none. Frames the kernel dropped because the socket's receive
//! queue was full are counted as overruns from the socket's drop counter (`SO_RXQ_OVFL`), not
//! guessed. Error frames (selected by the error mask) are counted by class through the outlet.
//! When the interface goes down or vanishes the task marks itself disconnected, waits with
//! [`Backoff`] and reopens it; it ends only when cancelled.
//!
//! The sans-IO parts are [`codec`] (kernel frame layout, drop counter, error-frame text) and
//! [`filter`] (identifier filters); [`socket`] does the system calls.

pub mod codec;
pub mod filter;
pub mod socket;

pub use codec::{DecodeError, DropCounter, decode_frame, describe_error, encode_frame};
pub use filter::{FilterError, IdFilter};
pub use socket::SocketCanError;

use crate::can::ErrorClass;
use crate::sample::{Reading, TimedFrame};
use crate::source::{Backoff, Outlet, wall_clock_us};
use socket::RxSocket;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Every error class (`CAN_ERR_MASK`): the default error mask.
pub const ERR_MASK_ALL: u32 = nix::libc::CAN_ERR_MASK;

/// Settings of one SocketCAN source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketCanOptions {
    /// Interface name, e.g. `can0`.
    pub interface: String,
    /// Open a CAN FD socket, which receives both classic and FD frames (default). Off: classic
    /// frames only.
    pub fd: bool,
    /// Error classes to receive as error frames (`CAN_ERR_*` bits; default all, 0 for none).
    pub error_mask: u32,
    /// Identifier filters; empty (default) lets every frame through.
    pub filters: Vec<IdFilter>,
    /// Receive buffer size to ask for (`SO_RCVBUF`; the kernel doubles it and caps it at
    /// `net.core.rmem_max`). Default: the system default.
    pub rcvbuf: Option<usize>,
    /// Stamp frames with the kernel's receive time (default); off: with the time they were read.
    pub timestamps: bool,
    /// Most frames handed over in one chunk (default 256).
    pub max_chunk: usize,
}

/// Default of [`SocketCanOptions::max_chunk`].
pub const DEFAULT_CHUNK: usize = 256;

impl SocketCanOptions {
    /// Defaults for `interface`: FD socket, all error classes, no filters, kernel timestamps.
    pub fn new(interface: impl Into<String>) -> Self {
        SocketCanOptions {
            interface: interface.into(),
            fd: true,
            error_mask: ERR_MASK_ALL,
            filters: Vec::new(),
            rcvbuf: None,
            timestamps: true,
            max_chunk: DEFAULT_CHUNK,
        }
    }

    /// Checks what can be checked without the interface: the filters and the error mask.
    pub fn validate(&self) -> Result<(), SocketCanError> {
        for f in &self.filters {
            f.to_kernel().map_err(SocketCanError::Filter)?;
        }
        if self.error_mask & !ERR_MASK_ALL != 0 {
            return Err(SocketCanError::ErrorMask(self.error_mask));
        }
        Ok(())
    }
}

/// Runs the SocketCAN source until `cancel` fires. Never returns early on a device error: the
/// interface is reopened with backoff. Invalid options are reported through the outlet's stats
/// and the task then idles until cancelled.
pub async fn run_socketcan(opts: SocketCanOptions, outlet: Outlet, cancel: CancellationToken) {
    let span = tracing::info_span!("socketcan", iface = %opts.interface);
    run(opts, outlet, cancel).instrument(span).await
}

async fn run(opts: SocketCanOptions, outlet: Outlet, cancel: CancellationToken) {
    let stats = outlet.stats();
    stats.set_connected(false);
    if let Err(e) = opts.validate() {
        tracing::error!(error = %e, "invalid SocketCAN options; source idle");
        stats.set_error(&e);
        cancel.cancelled().await;
        return;
    }
    let mut backoff = Backoff::default();
    let mut sessions = 0u64;
    loop {
        match RxSocket::open(&opts) {
            Ok(mut sock) => {
                if sessions > 0 {
                    stats.reconnected();
                }
                sessions += 1;
                stats.set_connected(true);
                backoff.connected(wall_clock_us());
                tracing::info!(
                    session = sessions,
                    rcvbuf = sock.rcvbuf().ok(),
                    "interface open"
                );
                let end = receive(&mut sock, &opts, &outlet, &cancel).await;
                stats.set_connected(false);
                match end {
                    None => return,
                    Some(e) => {
                        tracing::warn!(error = %e, "interface lost; reopening");
                        stats.set_error(&e);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open interface");
                stats.set_error(&e);
            }
        }
        let delay = backoff.failed(wall_clock_us());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Reads until the socket fails (returns the error) or `cancel` fires (returns `None`).
async fn receive(
    sock: &mut RxSocket,
    opts: &SocketCanOptions,
    outlet: &Outlet,
    cancel: &CancellationToken,
) -> Option<SocketCanError> {
    let stats = outlet.stats();
    let mut drops = DropCounter::default();
    let mut last_error_class = None;
    // Overruns are logged at most once a second (a saturated bus overflows every chunk).
    let (mut unlogged_overruns, mut overrun_logged_us) = (0u64, 0u64);
    let max_chunk = opts.max_chunk.max(1);
    loop {
        let batch = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            b = sock.read_batch(max_chunk) => b,
        };
        let read_us = wall_clock_us();
        let mut readings = Vec::with_capacity(batch.frames.len());
        let mut lost = 0;
        for rx in &batch.frames {
            if let Some(total) = rx.drops {
                lost += drops.observe(total);
            }
            match rx.decode() {
                Ok(frame) => {
                    if frame.is_error() {
                        let what = describe_error(&frame);
                        if last_error_class != Some(frame.id) {
                            last_error_class = Some(frame.id);
                            if frame.id & ErrorClass::BusOff.mask() != 0 {
                                tracing::warn!("{what}");
                            } else {
                                tracing::debug!("{what}");
                            }
                        }
                        stats.set_error(what);
                    }
                    readings.push(Reading::Frame(TimedFrame {
                        t_us: rx.kernel_us.unwrap_or(read_us),
                        frame,
                    }));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "undecodable frame");
                    stats.parse_error(1, e);
                }
            }
        }
        if lost > 0 {
            stats.overrun(lost);
            unlogged_overruns += lost;
            if read_us.saturating_sub(overrun_logged_us) >= 1_000_000 {
                tracing::warn!(
                    lost = unlogged_overruns,
                    "kernel receive queue overflowed: frames lost"
                );
                (unlogged_overruns, overrun_logged_us) = (0, read_us);
            }
        }
        if batch.control_truncated {
            stats.set_error("control data of a received frame was truncated (timestamp lost)");
        }
        outlet.emit(read_us, readings);
        if let Some(e) = batch.error {
            return Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::SourceStats;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::sync::mpsc;

    #[test]
    fn validate_names_what_is_wrong() {
        let mut o = SocketCanOptions::new("can0");
        assert!(o.validate().is_ok());
        o.filters.push(IdFilter::standard(0x900, 0x7ff));
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "filter id 0x900 does not fit in 11 bits (standard identifiers)"
        );
        let o = SocketCanOptions {
            error_mask: 0x2000_0000,
            ..SocketCanOptions::new("can0")
        };
        assert!(o.validate().unwrap_err().to_string().contains("0x20000000"));
    }

    async fn until(what: &str, stats: &SourceStats, cond: impl Fn(&SourceStats) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(stats) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A missing interface is retried, reported and never ends the task; cancelling does.
    #[tokio::test]
    async fn a_missing_interface_is_retried_until_cancelled() {
        let (tx, _rx) = mpsc::channel(4);
        let stats = Arc::new(SourceStats::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_socketcan(
            SocketCanOptions::new("pitlink-nocan0"),
            Outlet::new(0, tx, stats.clone()),
            cancel.clone(),
        ));
        until("the open error", &stats, |s| {
            s.snapshot().last_error.is_some()
        })
        .await;
        let s = stats.snapshot();
        let err = s.last_error.unwrap();
        assert!(
            err.starts_with("CAN interface pitlink-nocan0 not found"),
            "{err}"
        );
        assert!(!s.connected && s.reconnects == 0);
        assert!(!task.is_finished(), "the source gave up");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends when cancelled")
            .unwrap();
    }

    #[tokio::test]
    async fn invalid_options_idle_with_the_reason_until_cancelled() {
        let (tx, _rx) = mpsc::channel(4);
        let stats = Arc::new(SourceStats::default());
        let cancel = CancellationToken::new();
        let opts = SocketCanOptions {
            filters: vec![IdFilter::extended(0x2000_0000, 0)],
            ..SocketCanOptions::new("can0")
        };
        let task = tokio::spawn(run_socketcan(
            opts,
            Outlet::new(0, tx, stats.clone()),
            cancel.clone(),
        ));
        until("the error", &stats, |s| s.snapshot().last_error.is_some()).await;
        assert!(!task.is_finished());
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends when cancelled")
            .unwrap();
        let err = stats.snapshot().last_error.unwrap();
        assert!(err.contains("does not fit in 29 bits"), "{err}");
    }
}

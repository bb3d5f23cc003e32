//! Test tooling for the serial sources: real PTY pairs (`openpty`), an async master side, an
//! outlet whose chunks are collected, and a simulated slcan adapter. Not production code.
#![allow(dead_code, clippy::unwrap_used)]

pub mod line_device;
pub mod nmea_replay;
pub mod slcan_sim;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use sensor_drivers::source::{Chunk, Outlet, SourceStats};
use sensor_drivers::{Backoff, Reading};
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");

/// A PTY pair: the device side (master) in the test, the slave's path for the source.
#[derive(Debug)]
pub struct Pty {
    pub master: Master,
    /// The slave as opened by `openpty`; held so the master never sees "no slave" (EIO) while
    /// the source is between opens. Dropping it (with the master) unplugs the device.
    pub slave: OwnedFd,
    pub path: PathBuf,
}

impl Pty {
    /// A new PTY pair. With `raw`, the slave is put in raw mode at once, so bytes the device
    /// writes before the source opens the port are not cooked by the line discipline.
    pub fn open(raw: bool) -> Pty {
        let p = nix::pty::openpty(None, None).expect("openpty");
        let path = nix::unistd::ttyname(&p.slave).expect("ttyname of the pty slave");
        if raw {
            let mut t = tcgetattr(&p.slave).expect("tcgetattr");
            cfmakeraw(&mut t);
            tcsetattr(&p.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        }
        Pty {
            master: Master::new(p.master),
            slave: p.slave,
            path,
        }
    }
}

/// The master side of a PTY, non-blocking, driven by tokio.
#[derive(Debug)]
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    fn new(fd: OwnedFd) -> Master {
        let flags = fcntl(&fd, FcntlArg::F_GETFL).expect("F_GETFL");
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).expect("F_SETFL O_NONBLOCK");
        // `AsyncFd::new` is deprecated because a registered raw fd could be closed behind the
        // reactor's back; an `OwnedFd` moved into the `AsyncFd` cannot be, so this use is sound
        // (tokio-serial registers its ports the same way). `register` would need `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd).expect("register the pty master with tokio");
        Master { fd }
    }

    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`, waiting while the PTY buffer is full (a slow reader slows the
    /// device down; nothing is lost).
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// An outlet for source `index` and the receiving end of its channel.
pub fn outlet(index: usize, capacity: usize) -> (Outlet, Arc<SourceStats>, mpsc::Receiver<Chunk>) {
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(SourceStats::default());
    (Outlet::new(index, tx, stats.clone()), stats, rx)
}

/// Short reconnect delays for tests.
pub fn quick_backoff() -> Backoff {
    Backoff::new(
        Duration::from_millis(20),
        Duration::from_millis(200),
        Duration::from_secs(10),
    )
}

/// Generous upper bound for a condition to become true; reaching it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every few milliseconds until it holds; panics with `what` after [`DEADLINE`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives chunks into `into` until it holds at least `n` readings; panics after [`DEADLINE`].
pub async fn collect(rx: &mut mpsc::Receiver<Chunk>, into: &mut Vec<Reading>, n: usize) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while into.len() < n {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(c)) => into.extend(c.readings),
            Ok(None) => panic!("outlet closed after {} of {n} readings", into.len()),
            Err(_) => panic!("timed out after {} of {n} readings", into.len()),
        }
    }
}

/// Points the symlink `link` at `target`, replacing it atomically.
pub fn repoint(link: &std::path::Path, target: &std::path::Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

//! The tokio shell of the simulated modem: a PTY whose slave is published at a stable symlink
//! (like a udev by-id link), a task that reads command lines from the master, answers them
//! through [`SimCore`] after their latency, and writes URCs between responses.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::core::{LineSplitter, SimConfig, SimCore, SimCounters, SimStatus};
use crate::sim::env::RadioEnv;

/// How often URCs and cell selection are advanced while idle (real time).
const TICK: Duration = Duration::from_millis(20);
/// How long a write may wait for a reader before its bytes are dropped.
const WRITE_STALL: Duration = Duration::from_secs(1);

/// The world clock of a simulation: a start instant and a speed factor (1.0 = real time).
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    start: Instant,
    speed: f64,
}

impl SimClock {
    /// A clock starting now at `speed` (clamped to 0.001..=1000).
    pub fn new(speed: f64) -> Self {
        Self::starting_at(Instant::now(), speed)
    }

    /// A clock started at `start` at `speed` (clamped to 0.001..=1000).
    pub fn starting_at(start: Instant, speed: f64) -> Self {
        let speed = if speed.is_finite() {
            speed.clamp(0.001, 1000.0)
        } else {
            1.0
        };
        Self { start, speed }
    }

    /// The world time now.
    pub fn now(&self) -> Duration {
        self.start.elapsed().mul_f64(self.speed)
    }

    /// The real duration of `world` world time.
    pub fn real(&self, world: Duration) -> Duration {
        world.div_f64(self.speed)
    }
}

/// Starts simulated modems.
#[derive(Debug)]
pub struct SimModem;

#[derive(Debug)]
enum Control {
    Vanish(Duration),
    Shutdown,
}

#[derive(Debug)]
struct Shared {
    core: SimCore,
    /// The slave path now (`None` while vanished).
    tty: Option<PathBuf>,
}

/// A handle to a running simulated modem.
#[derive(Debug, Clone)]
pub struct SimHandle {
    link: PathBuf,
    shared: Arc<Mutex<Shared>>,
    env: Arc<dyn RadioEnv>,
    clock: SimClock,
    control: mpsc::UnboundedSender<Control>,
}

impl SimModem {
    /// Opens a PTY for modem `modem_index` of `env`, publishes its slave as
    /// `<link_dir>/modem<modem_index>` and serves AT commands on it from a task on the current
    /// tokio runtime.
    pub fn spawn(
        cfg: SimConfig,
        env: Arc<dyn RadioEnv>,
        modem_index: usize,
        clock: SimClock,
        link_dir: &Path,
    ) -> io::Result<SimHandle> {
        let link = link_dir.join(format!("modem{modem_index}"));
        let port = Port::open(&link)?;
        let shared = Arc::new(Mutex::new(Shared {
            core: SimCore::new(cfg, modem_index),
            tty: Some(port.tty.clone()),
        }));
        let (control, rx) = mpsc::unbounded_channel();
        let task = Task {
            link: link.clone(),
            shared: shared.clone(),
            env: env.clone(),
            clock,
            control: rx,
        };
        let span = tracing::info_span!("sim_modem", modem = modem_index);
        tokio::spawn(task.run(port).instrument(span));
        Ok(SimHandle {
            link,
            shared,
            env,
            clock,
            control,
        })
    }
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stable path (the symlink) to open.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The PTY slave the link points at now (`None` while vanished).
    pub fn tty(&self) -> Option<PathBuf> {
        self.lock().tty.clone()
    }

    /// The world clock.
    pub fn clock(&self) -> SimClock {
        self.clock
    }

    /// What the modem is doing now.
    pub fn status(&self) -> SimStatus {
        let now = self.clock.now();
        self.lock().core.status(now, self.env.as_ref())
    }

    /// What the modem has been asked so far.
    pub fn counters(&self) -> SimCounters {
        self.lock().core.counters()
    }

    /// Writes `bytes` (then CRLF) on the line between responses.
    pub fn inject_garbage(&self, bytes: &[u8]) {
        self.lock().core.inject_garbage(bytes);
    }

    /// Puts the URC `line` inside the next response.
    pub fn inject_urc_in_response(&self, line: &str) {
        self.lock().core.inject_urc_in_response(line);
    }

    /// The next command is echoed but never answered.
    pub fn swallow_next(&self) {
        self.lock().core.swallow_next();
    }

    /// The next command is answered `+CME ERROR: code`.
    pub fn fail_next(&self, code: u16) {
        self.lock().core.fail_next(code);
    }

    /// USB re-enumeration: closes the PTY (the reader gets EIO / hang-up), removes the link,
    /// and after `gone` (real time) opens a fresh PTY and points the link at it.
    pub fn vanish(&self, gone: Duration) {
        let _ = self.control.send(Control::Vanish(gone));
    }

    /// Stops the modem, closes the PTY and removes the link.
    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }
}

/// One PTY: the master (non-blocking, registered with tokio as a reader and, duplicated, as a
/// writer) and the slave kept open so the master never reads EIO while no client has the port
/// open. Dropping it closes every master descriptor: the client sees a hang-up.
pub(crate) struct Port {
    rx: pipe::Receiver,
    tx: pipe::Sender,
    _slave: OwnedFd,
    tty: PathBuf,
}

impl Port {
    pub(crate) fn open(link: &Path) -> io::Result<Self> {
        let p = openpty(None, None).map_err(io::Error::from)?;
        let mut t = tcgetattr(&p.slave).map_err(io::Error::from)?;
        cfmakeraw(&mut t);
        tcsetattr(&p.slave, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        let tty = nix::unistd::ttyname(&p.slave).map_err(io::Error::from)?;
        let flags = fcntl(&p.master, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&p.master, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        // The pipe types of tokio work on any pollable non-blocking descriptor.
        let writer = p.master.try_clone()?;
        let rx = pipe::Receiver::from_owned_fd_unchecked(p.master)?;
        let tx = pipe::Sender::from_owned_fd_unchecked(writer)?;
        point(link, &tty)?;
        tracing::debug!(link = %link.display(), tty = %tty.display(), "simulated modem port");
        Ok(Self {
            rx,
            tx,
            _slave: p.slave,
            tty,
        })
    }

    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.rx.readable().await?;
            match self.rx.try_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes `bytes`; when nobody reads the port for [`WRITE_STALL`] the rest is dropped
    /// (a full PTY buffer must not stall the modem).
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(WRITE_STALL, self.write_inner(bytes)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(
                    len = bytes.len(),
                    "nobody reads the simulated modem: output dropped"
                );
                Ok(())
            }
        }
    }

    async fn write_inner(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.tx.writable().await?;
            match self.tx.try_write(bytes) {
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes what `next` returns every `period` to `port` (nothing when it returns `None`), and
/// between two of those the bytes sent on the returned channel (fault injection). Ends when the
/// port fails.
pub(crate) fn spawn_ticker(
    port: Port,
    period: Duration,
    mut next: impl FnMut() -> Option<Vec<u8>> + Send + 'static,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedSender<Vec<u8>>) {
    let (inject, mut injected) = mpsc::unbounded_channel::<Vec<u8>>();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let bytes = tokio::select! {
                _ = tick.tick() => match next() {
                    Some(b) => b,
                    None => continue,
                },
                Some(b) = injected.recv() => b,
            };
            if port.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    (task, inject)
}

/// Points `link` at `target`, replacing it atomically.
fn point(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

enum End {
    Vanish(Duration),
    Stop,
}

struct Task {
    link: PathBuf,
    shared: Arc<Mutex<Shared>>,
    env: Arc<dyn RadioEnv>,
    clock: SimClock,
    control: mpsc::UnboundedReceiver<Control>,
}

impl Task {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self, first: Port) {
        let mut port = Some(first);
        loop {
            let Some(p) = port.take() else { return };
            let end = self.serve(&p).await;
            drop(p);
            let _ = std::fs::remove_file(&self.link);
            self.lock().tty = None;
            let gone = match end {
                End::Stop => return,
                End::Vanish(gone) => gone,
            };
            tracing::info!(link = %self.link.display(), ?gone, "simulated modem port vanished");
            tokio::select! {
                _ = tokio::time::sleep(gone) => {}
                c = self.control.recv() => match c {
                    None | Some(Control::Shutdown) => return,
                    Some(Control::Vanish(_)) => {}
                },
            }
            match Port::open(&self.link) {
                Ok(p) => {
                    self.lock().tty = Some(p.tty.clone());
                    port = Some(p);
                }
                Err(e) => {
                    tracing::error!(error = %e, "simulated modem cannot open a new PTY");
                    return;
                }
            }
        }
    }

    async fn serve(&mut self, port: &Port) -> End {
        let mut split = LineSplitter::default();
        let mut buf = [0u8; 1024];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = self.control.recv() => match c {
                    Some(Control::Vanish(d)) => return End::Vanish(d),
                    None | Some(Control::Shutdown) => return End::Stop,
                },
                _ = tick.tick() => {
                    let now = self.clock.now();
                    let out = self.lock().core.tick(now, self.env.as_ref());
                    if !out.is_empty() && port.write_all(&out).await.is_err() {
                        return End::Stop;
                    }
                }
                r = port.read(&mut buf) => match r {
                    Ok(n) => {
                        for line in split.feed(buf.get(..n).unwrap_or_default()) {
                            if let Some(end) = self.answer(port, &line).await {
                                return end;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EIO while no client holds the slave cannot happen (we hold it);
                        // anything else ends the modem.
                        tracing::warn!(error = %e, "simulated modem read failed");
                        return End::Stop;
                    }
                },
            }
        }
    }

    /// Echoes `line`, waits its latency (still obeying control messages), writes the reply.
    async fn answer(&mut self, port: &Port, line: &str) -> Option<End> {
        let now = self.clock.now();
        let reply = self.lock().core.command(line, now, self.env.as_ref());
        tracing::trace!(%line, delay = ?reply.delay, "simulated modem command");
        if port.write_all(&reply.echo).await.is_err() {
            return Some(End::Stop);
        }
        if reply.bytes.is_empty() {
            return None;
        }
        let sleep = tokio::time::sleep(self.clock.real(reply.delay));
        tokio::pin!(sleep);
        tokio::select! {
            _ = &mut sleep => {}
            c = self.control.recv() => return Some(match c {
                Some(Control::Vanish(d)) => End::Vanish(d),
                None | Some(Control::Shutdown) => End::Stop,
            }),
        }
        if port.write_all(&reply.bytes).await.is_err() {
            return Some(End::Stop);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_at_its_speed() {
        let c = SimClock::new(10.0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.now(), Duration::from_secs(20));
        assert_eq!(c.real(Duration::from_secs(5)), Duration::from_millis(500));
        let odd = SimClock::new(f64::NAN);
        assert_eq!(odd.real(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(
            SimClock::new(0.0).real(Duration::from_millis(1)),
            Duration::from_secs(1)
        );
    }
}

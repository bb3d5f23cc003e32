//! The tokio shell: a task owning the serial port, driving an [`AtCore`], reopening the port
//! when it disappears.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tracing::Instrument;

use super::core::{
    Action, AtCore, AtError, CommandId, CoreConfig, CoreCounters, Request, Response,
};
use super::urc::Urc;

/// Where the modem is and how the shell behaves.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Device path, e.g. `/dev/ttyUSB2` or a stable `/dev/serial/by-id/...` link.
    pub path: PathBuf,
    /// Baud rate (ignored by USB CDC ports, needed by real UARTs).
    pub baud: u32,
    /// Limits of the core.
    pub core: CoreConfig,
    /// First delay before reopening a lost port.
    pub reopen_min: Duration,
    /// Longest delay between reopen attempts.
    pub reopen_max: Duration,
    /// URCs buffered per subscriber before the oldest are lost.
    pub urc_capacity: usize,
}

impl PortConfig {
    /// Defaults for `path`: 115200 baud, reopen after 100 ms doubling up to 5 s.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            baud: 115_200,
            core: CoreConfig::default(),
            reopen_min: Duration::from_millis(100),
            reopen_max: Duration::from_secs(5),
            urc_capacity: 64,
        }
    }
}

/// Counters of one port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Counters of the core: commands, outcomes, URCs, garbage bytes, ...
    pub core: CoreCounters,
    /// Times the port was opened again after being lost.
    pub reconnects: u64,
    /// Failed attempts to open the port.
    pub open_failures: u64,
    /// Commands failed at once because the port was closed when they arrived.
    pub offline_failures: u64,
    /// Whether the port is open now.
    pub connected: bool,
    /// The last reason the port was lost or could not be opened.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Job {
    req: Request,
    reply: oneshot::Sender<Result<Response, AtError>>,
}

/// A cloneable handle to a port's task; the task stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct AtHandle {
    jobs: mpsc::Sender<Job>,
    urcs: broadcast::Sender<Urc>,
    counters: Arc<Mutex<PortCounters>>,
}

impl AtHandle {
    /// Runs `cmd` (e.g. `AT+CSQ`) with `timeout` or its default, waiting behind earlier ones.
    pub async fn command(&self, cmd: &str, timeout: Option<Duration>) -> Result<Response, AtError> {
        let mut req = Request::new(cmd);
        req.timeout = timeout;
        self.request(req).await
    }

    /// Runs a request (use [`Request::allow_disruptive`] for a network scan).
    pub async fn request(&self, req: Request) -> Result<Response, AtError> {
        let command = req.line.clone();
        let (reply, rx) = oneshot::channel();
        if self.jobs.send(Job { req, reply }).await.is_err() {
            return Err(AtError::Closed { command });
        }
        rx.await.unwrap_or(Err(AtError::Closed { command }))
    }

    /// A receiver of the URCs from now on.
    pub fn urcs(&self) -> broadcast::Receiver<Urc> {
        self.urcs.subscribe()
    }

    /// The counters now.
    pub fn counters(&self) -> PortCounters {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Starts port tasks.
#[derive(Debug)]
pub struct AtPort;

impl AtPort {
    /// Spawns the task owning the port at `cfg.path` on the current tokio runtime. The port
    /// is opened (and reopened) by the task; commands submitted while it is closed fail with
    /// [`AtError::Disconnected`].
    pub fn spawn(cfg: PortConfig) -> AtHandle {
        let (jobs, rx) = mpsc::channel(cfg.core.max_pending.max(1));
        let (urcs, _) = broadcast::channel(cfg.urc_capacity.max(1));
        let counters = Arc::new(Mutex::new(PortCounters::default()));
        let span = tracing::info_span!("at_port", path = %cfg.path.display());
        let task = Task {
            core: AtCore::new(cfg.core.clone()),
            cfg,
            jobs: rx,
            urcs: urcs.clone(),
            counters: counters.clone(),
            waiters: HashMap::new(),
            clock: Instant::now(),
        };
        tokio::spawn(task.run().instrument(span));
        AtHandle {
            jobs,
            urcs,
            counters,
        }
    }
}

enum End {
    /// Every handle is gone.
    Stop,
    /// The port failed; why.
    Lost(String),
}

struct Task {
    cfg: PortConfig,
    core: AtCore,
    jobs: mpsc::Receiver<Job>,
    urcs: broadcast::Sender<Urc>,
    counters: Arc<Mutex<PortCounters>>,
    waiters: HashMap<CommandId, oneshot::Sender<Result<Response, AtError>>>,
    /// Monotonic base of the core's microsecond clock (timeouts need a monotonic clock, not
    /// wall time).
    clock: Instant,
}

impl Task {
    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, PortCounters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self) {
        let path = self.cfg.path.display().to_string();
        let mut delay = self.cfg.reopen_min;
        let mut was_open = false;
        loop {
            let why = match tokio_serial::new(path.as_str(), self.cfg.baud).open_native_async() {
                Ok(port) => {
                    if was_open {
                        tracing::info!(%path, "AT port reopened");
                        self.stats().reconnects += 1;
                    }
                    was_open = true;
                    self.stats().connected = true;
                    let opened = Instant::now();
                    match self.serve(port).await {
                        End::Stop => return,
                        End::Lost(why) => {
                            if opened.elapsed() > self.cfg.reopen_max {
                                delay = self.cfg.reopen_min;
                            }
                            tracing::warn!(%path, %why, "AT port lost");
                            why
                        }
                    }
                }
                Err(e) => {
                    self.stats().open_failures += 1;
                    format!("cannot open {path}: {e}")
                }
            };
            self.core.disconnected(&why);
            {
                let mut s = self.stats();
                s.connected = false;
                s.last_error = Some(why.clone());
                s.core = self.core.counters();
            }
            self.drain_offline();
            // Wait before reopening; commands arriving meanwhile fail at once.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    job = self.jobs.recv() => match job {
                        None => return,
                        Some(job) => {
                            self.stats().offline_failures += 1;
                            let command = job.req.line;
                            let _ = job.reply.send(Err(AtError::Disconnected { command, why: why.clone() }));
                        }
                    },
                }
            }
            delay = (delay * 2).min(self.cfg.reopen_max);
        }
    }

    /// Completes and publishes the core's actions while the port is closed (writes dropped).
    fn drain_offline(&mut self) {
        while let Some(action) = self.core.poll_action() {
            self.deliver(action);
        }
    }

    fn deliver(&mut self, action: Action) {
        match action {
            Action::Write(_) => {}
            Action::Complete { id, result } => {
                if let Some(w) = self.waiters.remove(&id) {
                    let _ = w.send(result);
                }
            }
            Action::Urc(urc) => {
                let _ = self.urcs.send(urc);
            }
        }
    }

    async fn serve(&mut self, mut port: SerialStream) -> End {
        let mut buf = [0u8; 1024];
        loop {
            // Counters first, so that whoever gets a completion or URC sees them counted.
            self.stats().core = self.core.counters();
            while let Some(action) = self.core.poll_action() {
                if let Action::Write(bytes) = &action {
                    if let Err(e) = port.write_all(bytes).await {
                        return End::Lost(format!("write failed: {e}"));
                    }
                    tracing::trace!(command = %String::from_utf8_lossy(bytes).trim_end(), "AT write");
                } else {
                    self.deliver(action);
                }
            }
            let deadline = self
                .core
                .next_deadline()
                .map(|us| self.clock + Duration::from_micros(us));
            tokio::select! {
                job = self.jobs.recv() => {
                    let Some(job) = job else { return End::Stop };
                    let now = self.now_us();
                    match self.core.submit(job.req, now) {
                        Ok(id) => { self.waiters.insert(id, job.reply); }
                        Err(e) => { let _ = job.reply.send(Err(e)); }
                    }
                }
                read = port.read(&mut buf) => match read {
                    Ok(0) => return End::Lost("end of file".into()),
                    Ok(n) => {
                        let now = self.now_us();
                        self.core.feed(&buf[..n], now);
                    }
                    Err(e) => return End::Lost(format!("read failed: {e}")),
                },
                _ = sleep_until_opt(deadline) => {
                    let now = self.now_us();
                    self.core.tick(now);
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

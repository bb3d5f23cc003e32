//! The sans-IO AT core: fed bytes, commands and the time, it returns actions.

use std::collections::VecDeque;
use std::time::Duration;

use super::command::{CommandError, CommandLine};
use super::lines::LineSplitter;
use super::urc::{ErrorCode, Final, Urc, classify, final_code};

/// Identifies a submitted command; its [`Action::Complete`] carries the same id.
pub type CommandId = u64;

/// A command to run: the line and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command line without terminator, e.g. `AT+CSQ`.
    pub line: String,
    /// Timeout from the moment it is written; `None` uses the command's default
    /// ([`CommandLine::default_timeout`]).
    pub timeout: Option<Duration>,
    /// Allows a disruptive command such as `AT+COPS=?` (never on a live link).
    pub allow_disruptive: bool,
}

impl Request {
    /// A request with the default timeout.
    pub fn new(line: impl Into<String>) -> Self {
        Self {
            line: line.into(),
            timeout: None,
            allow_disruptive: false,
        }
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Allows a disruptive command (a network scan).
    pub fn allow_disruptive(mut self) -> Self {
        self.allow_disruptive = true;
        self
    }
}

/// A successful response: the information lines before `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The command line this answers.
    pub command: String,
    /// Information lines in order, URCs and echo removed.
    pub lines: Vec<String>,
}

/// Why a command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    /// The command line was refused before being sent.
    #[error("refused: {0}")]
    Refused(#[from] CommandError),
    /// Too many commands waiting.
    #[error("{command}: {depth} commands already waiting")]
    QueueFull {
        /// The command.
        command: String,
        /// Commands waiting.
        depth: usize,
    },
    /// Plain `ERROR` (usually a syntax error).
    #[error("{command}: ERROR")]
    Error {
        /// The command.
        command: String,
    },
    /// `+CME ERROR: <err>`.
    #[error("{command}: +CME ERROR: {code}")]
    Cme {
        /// The command.
        command: String,
        /// The error.
        code: ErrorCode,
    },
    /// `+CMS ERROR: <err>`.
    #[error("{command}: +CMS ERROR: {code}")]
    Cms {
        /// The command.
        command: String,
        /// The error.
        code: ErrorCode,
    },
    /// Another final result code (`NO CARRIER`, `BUSY`, ...).
    #[error("{command}: {code}")]
    Final {
        /// The command.
        command: String,
        /// The result code.
        code: String,
    },
    /// No final result code within the timeout.
    #[error("{command}: no final result code within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The port went away while the command was waiting or in flight.
    #[error("{command}: port lost ({why})")]
    Disconnected {
        /// The command.
        command: String,
        /// What happened to the port.
        why: String,
    },
    /// The transport task has stopped.
    #[error("{command}: AT transport stopped")]
    Closed {
        /// The command.
        command: String,
    },
}

/// What the IO shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the port.
    Write(Vec<u8>),
    /// A command completed (exactly once per accepted command).
    Complete {
        /// The id [`AtCore::submit`] returned.
        id: CommandId,
        /// The response or why there is none.
        result: Result<Response, AtError>,
    },
    /// An unsolicited result code.
    Urc(Urc),
}

/// Limits of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Longest line kept; longer ones are dropped as garbage.
    pub max_line_len: usize,
    /// Most commands waiting behind the one in flight.
    pub max_pending: usize,
    /// Most information lines kept per response; more are dropped and counted.
    pub max_response_lines: usize,
    /// After a timeout, how long to wait for the late final result code of the timed-out
    /// command before the next command is written.
    pub resync_window: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_line_len: 4096,
            max_pending: 32,
            max_response_lines: 512,
            resync_window: Duration::from_secs(2),
        }
    }
}

/// Counters of the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Commands accepted.
    pub commands: u64,
    /// Commands answered `OK`.
    pub ok: u64,
    /// Commands answered with an error result code.
    pub errors: u64,
    /// Commands timed out.
    pub timeouts: u64,
    /// Commands failed because the port went away.
    pub disconnected: u64,
    /// Commands refused at submission (bad line, disruptive, queue full).
    pub refused: u64,
    /// URCs delivered.
    pub urcs: u64,
    /// Lines dropped as belonging to a timed-out command (late echo, information, final).
    pub stale_lines: u64,
    /// Information lines dropped over [`CoreConfig::max_response_lines`].
    pub dropped_lines: u64,
    /// Bytes discarded by line framing (not UTF-8, control bytes, overlong lines).
    pub garbage_bytes: u64,
    /// Lines discarded as overlong.
    pub overlong_lines: u64,
}

#[derive(Debug)]
struct InFlight {
    id: CommandId,
    cmd: CommandLine,
    timeout: Duration,
    deadline_us: u64,
    echo_seen: bool,
    lines: Vec<String>,
}

/// The sans-IO AT core.
///
/// One command is in flight at a time; others wait in a FIFO. Feed it what the port reads
/// ([`feed`](Self::feed)), submit commands ([`submit`](Self::submit)), call
/// [`tick`](Self::tick) at [`next_deadline`](Self::next_deadline), and carry out the actions
/// from [`poll_action`](Self::poll_action). Times are microseconds of any monotonic clock.
///
/// Resynchronisation after a timeout: the timed-out command becomes *stale*; for
/// [`CoreConfig::resync_window`] no command is written and lines other than URCs are dropped,
/// and a final result code in that window ends it early (it is the late answer). When the
/// modem echoes commands, a final result code or information line that arrives for the next
/// command before its echo still belongs to the stale command and is dropped too.
#[derive(Debug)]
pub struct AtCore {
    cfg: CoreConfig,
    splitter: LineSplitter,
    pending: VecDeque<(CommandId, CommandLine, Duration)>,
    in_flight: Option<InFlight>,
    stale: Option<CommandLine>,
    resync_until_us: Option<u64>,
    /// Whether the modem echoes, learnt from the last completed command.
    echo_on: Option<bool>,
    next_id: CommandId,
    actions: VecDeque<Action>,
    counters: CoreCounters,
}

impl AtCore {
    /// A core with these limits.
    pub fn new(cfg: CoreConfig) -> Self {
        Self {
            splitter: LineSplitter::new(cfg.max_line_len),
            cfg,
            pending: VecDeque::new(),
            in_flight: None,
            stale: None,
            resync_until_us: None,
            echo_on: None,
            next_id: 0,
            actions: VecDeque::new(),
            counters: CoreCounters::default(),
        }
    }

    /// Queues a command; the id returned will complete exactly once. Refused requests complete
    /// at once with the error and no id.
    pub fn submit(&mut self, req: Request, now_us: u64) -> Result<CommandId, AtError> {
        let cmd = match CommandLine::parse(&req.line) {
            Ok(cmd) => cmd,
            Err(e) => {
                self.counters.refused += 1;
                return Err(e.into());
            }
        };
        if cmd.is_disruptive() && !req.allow_disruptive {
            self.counters.refused += 1;
            return Err(CommandError::Disruptive(cmd.text).into());
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.counters.refused += 1;
            return Err(AtError::QueueFull {
                command: cmd.text,
                depth: self.pending.len(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.counters.commands += 1;
        let timeout = req.timeout.unwrap_or_else(|| cmd.default_timeout());
        self.pending.push_back((id, cmd, timeout));
        self.tick(now_us);
        Ok(id)
    }

    /// Feeds bytes read from the port at time `now_us`.
    pub fn feed(&mut self, bytes: &[u8], now_us: u64) {
        let mut lines = Vec::new();
        self.splitter.feed(bytes, |l| lines.push(l));
        for line in lines {
            self.on_line(line, now_us);
        }
        self.tick(now_us);
    }

    /// Handles expired timers and writes the next command when possible.
    pub fn tick(&mut self, now_us: u64) {
        if let Some(f) = &self.in_flight
            && f.deadline_us <= now_us
            && let Some(f) = self.in_flight.take()
        {
            self.counters.timeouts += 1;
            tracing::debug!(command = %f.cmd.text, timeout = ?f.timeout, "AT command timed out");
            self.actions.push_back(Action::Complete {
                id: f.id,
                result: Err(AtError::Timeout {
                    command: f.cmd.text.clone(),
                    after: f.timeout,
                }),
            });
            self.stale = Some(f.cmd);
            self.resync_until_us = Some(now_us.saturating_add(micros(self.cfg.resync_window)));
        }
        if self.resync_until_us.is_some_and(|t| t <= now_us) {
            self.resync_until_us = None;
        }
        if self.in_flight.is_none()
            && self.resync_until_us.is_none()
            && let Some((id, cmd, timeout)) = self.pending.pop_front()
        {
            let mut bytes = Vec::with_capacity(cmd.text.len() + 1);
            bytes.extend_from_slice(cmd.text.as_bytes());
            bytes.push(b'\r');
            self.actions.push_back(Action::Write(bytes));
            self.in_flight = Some(InFlight {
                id,
                deadline_us: now_us.saturating_add(micros(timeout)),
                cmd,
                timeout,
                echo_seen: false,
                lines: Vec::new(),
            });
        }
    }

    /// When [`tick`](Self::tick) must next be called, if a timer runs.
    pub fn next_deadline(&self) -> Option<u64> {
        self.in_flight
            .as_ref()
            .map(|f| f.deadline_us)
            .or(self.resync_until_us)
    }

    /// The port went away: the command in flight and all waiting ones complete with
    /// [`AtError::Disconnected`]; the partial line and what was learnt about echo are dropped.
    pub fn disconnected(&mut self, why: &str) {
        let in_flight = self.in_flight.take().map(|f| (f.id, f.cmd));
        let waiting = self.pending.drain(..).map(|(id, cmd, _)| (id, cmd));
        for (id, cmd) in in_flight.into_iter().chain(waiting).collect::<Vec<_>>() {
            self.counters.disconnected += 1;
            self.actions.push_back(Action::Complete {
                id,
                result: Err(AtError::Disconnected {
                    command: cmd.text,
                    why: why.to_string(),
                }),
            });
        }
        self.splitter.reset();
        self.stale = None;
        self.resync_until_us = None;
        self.echo_on = None;
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether a command is in flight or waiting.
    pub fn is_busy(&self) -> bool {
        self.in_flight.is_some() || !self.pending.is_empty()
    }

    /// The counters so far.
    pub fn counters(&self) -> CoreCounters {
        CoreCounters {
            garbage_bytes: self.splitter.garbage_bytes(),
            overlong_lines: self.splitter.overlong_lines(),
            ..self.counters
        }
    }

    fn on_line(&mut self, line: String, now_us: u64) {
        let stale_echo = self.stale.as_ref().is_some_and(|s| s.is_echo(&line));
        let Some(f) = self.in_flight.as_mut() else {
            return self.on_idle_line(line, stale_echo);
        };
        if !f.echo_seen && f.lines.is_empty() && f.cmd.is_echo(&line) {
            f.echo_seen = true;
            return;
        }
        if stale_echo && !f.echo_seen {
            self.counters.stale_lines += 1;
            return;
        }
        // With echo on, anything but a URC before the echo of the command in flight
        // belongs to the stale command.
        let before_echo = self.stale.is_some() && self.echo_on == Some(true) && !f.echo_seen;
        if let Some(fin) = final_code(&line) {
            if before_echo {
                self.counters.stale_lines += 1;
                self.stale = None;
                return;
            }
            return self.complete(fin, now_us);
        }
        if let Some(kind) = classify(&line, Some(&f.cmd)) {
            return self.urc(kind, line);
        }
        if before_echo {
            self.counters.stale_lines += 1;
        } else if f.lines.len() >= self.cfg.max_response_lines {
            self.counters.dropped_lines += 1;
        } else {
            f.lines.push(line);
        }
    }

    fn on_idle_line(&mut self, line: String, stale_echo: bool) {
        let resyncing = self.resync_until_us.is_some();
        if final_code(&line).is_some() {
            // Nothing in flight: the late answer of a timed-out command. It ends the resync
            // window; the next `tick` writes the next command.
            self.counters.stale_lines += 1;
            self.stale = None;
            if resyncing {
                self.resync_until_us = Some(0);
            }
            return;
        }
        if stale_echo {
            self.counters.stale_lines += 1;
            return;
        }
        // While resyncing, lines the stale command asked for are its late information lines.
        let asked_by = if resyncing { self.stale.as_ref() } else { None };
        match classify(&line, asked_by) {
            Some(kind) => self.urc(kind, line),
            None => self.counters.stale_lines += 1,
        }
    }

    fn urc(&mut self, kind: super::urc::UrcKind, line: String) {
        self.counters.urcs += 1;
        tracing::trace!(?kind, %line, "URC");
        self.actions.push_back(Action::Urc(Urc { kind, line }));
    }

    fn complete(&mut self, fin: Final, now_us: u64) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        self.echo_on = Some(f.echo_seen);
        self.stale = None;
        let command = f.cmd.text;
        let result = match fin {
            Final::Ok => {
                self.counters.ok += 1;
                Ok(Response {
                    command,
                    lines: f.lines,
                })
            }
            Final::Error => Err(AtError::Error { command }),
            Final::Cme(code) => Err(AtError::Cme { command, code }),
            Final::Cms(code) => Err(AtError::Cms { command, code }),
            Final::Other(code) => Err(AtError::Final { command, code }),
        };
        if result.is_err() {
            self.counters.errors += 1;
        }
        self.actions
            .push_back(Action::Complete { id: f.id, result });
        self.tick(now_us);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

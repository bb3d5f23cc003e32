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
/// command before its echo still belongs to the stale command and is dropped too. Whether the
/// modem echoes is learnt from each completed command (and from `ATE0`/`ATE1`). With echo off
/// a late final result code arriving after the window cannot be told apart and completes the
/// next command: choose the window longer than the modem's worst lateness.
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
            if !f.echo_seen {
                // No echo this time: whether the modem echoes is unknown again (otherwise a
                // wrong belief would drop every later answer as stale).
                self.echo_on = None;
            }
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
        if !f.echo_seen && f.cmd.is_echo(&line) {
            // Nothing of a response precedes its echo: lines before it were noise.
            self.counters.stale_lines += f.lines.len() as u64;
            f.lines.clear();
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
        self.echo_on = match (&fin, echo_setting(&f.cmd.name)) {
            (Final::Ok, Some(on)) => Some(on),
            _ => Some(f.echo_seen),
        };
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

/// `ATE0` / `ATE1` (possibly followed by other basic commands, `ATE0V1`): the echo setting.
fn echo_setting(name: &str) -> Option<bool> {
    match name.as_bytes() {
        [b'E', b'0', ..] | [b'E'] => Some(false),
        [b'E', b'1', ..] => Some(true),
        _ => None,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::at::transport::urc::UrcKind;
    use proptest::prelude::*;

    const S: u64 = 1_000_000;

    fn drain(core: &mut AtCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn completions(actions: &[Action]) -> Vec<(CommandId, Result<Response, AtError>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Complete { id, result } => Some((*id, result.clone())),
                _ => None,
            })
            .collect()
    }

    fn urcs(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Urc(u) => Some(u.line.clone()),
                _ => None,
            })
            .collect()
    }

    fn writes(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn ok(lines: &[&str], command: &str) -> Result<Response, AtError> {
        Ok(Response {
            command: command.into(),
            lines: lines.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn echo_multiline_and_urc_in_the_middle() {
        let mut core = AtCore::new(CoreConfig::default());
        let cmd = "AT+QENG=\"neighbourcell\"";
        let id = core.submit(Request::new(cmd), 0).unwrap();
        assert_eq!(writes(&drain(&mut core)), [format!("{cmd}\r")]);
        core.feed(
            b"AT+QENG=\"neighbourcell\"\r\r\n+QENG: \"neighbourcell intra\",\"LTE\",6300,188\r\n",
            S,
        );
        core.feed(
            b"+QIND: \"csq\",20,99\r\n+QENG: \"neighbourcell inter\",\"LTE\",1501,-\r\n\r\nOK\r\n",
            S,
        );
        let actions = drain(&mut core);
        assert_eq!(urcs(&actions), ["+QIND: \"csq\",20,99"]);
        let lines = [
            "+QENG: \"neighbourcell intra\",\"LTE\",6300,188",
            "+QENG: \"neighbourcell inter\",\"LTE\",1501,-",
        ];
        assert_eq!(completions(&actions), [(id, ok(&lines, cmd))]);
        assert!(!core.is_busy());
    }

    #[test]
    fn echo_off_and_fifo() {
        let mut core = AtCore::new(CoreConfig::default());
        let a = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        let b = core.submit(Request::new("AT+CEREG?"), 0).unwrap();
        assert_eq!(writes(&drain(&mut core)), ["AT+CSQ\r"]);
        core.feed(b"\r\n+CSQ: 16,99\r\n\r\nOK\r\n", S);
        let actions = drain(&mut core);
        assert_eq!(completions(&actions), [(a, ok(&["+CSQ: 16,99"], "AT+CSQ"))]);
        assert_eq!(writes(&actions), ["AT+CEREG?\r"]);
        core.feed(
            b"\r\n+CEREG: 1,\"1F00\",\"079D903\",7\r\n+CEREG: 2,1,\"1F00\",\"079D903\",7\r\nOK\r\n",
            S,
        );
        let actions = drain(&mut core);
        assert_eq!(urcs(&actions), ["+CEREG: 1,\"1F00\",\"079D903\",7"]);
        let want = ok(&["+CEREG: 2,1,\"1F00\",\"079D903\",7"], "AT+CEREG?");
        assert_eq!(completions(&actions), [(b, want)]);
    }

    #[test]
    fn error_result_codes() {
        let mut core = AtCore::new(CoreConfig::default());
        for (reply, check) in [
            (
                "ERROR",
                (|e: &AtError| matches!(e, AtError::Error { .. })) as fn(&AtError) -> bool,
            ),
            (
                "+CME ERROR: 30",
                |e| matches!(e, AtError::Cme { code, .. } if code.code() == Some(30)),
            ),
            (
                "+CME ERROR: no network service",
                |e| matches!(e, AtError::Cme { code: ErrorCode::Text(t), .. } if t == "no network service"),
            ),
            ("+CMS ERROR: 500", |e| {
                matches!(
                    e,
                    AtError::Cms {
                        code: ErrorCode::Numeric(500),
                        ..
                    }
                )
            }),
            ("NO CARRIER", |e| matches!(e, AtError::Final { .. })),
        ] {
            let id = core.submit(Request::new("AT+CFUN=1"), 0).unwrap();
            core.feed(format!("\r\n{reply}\r\n").as_bytes(), 1);
            let c = completions(&drain(&mut core));
            assert_eq!(c.len(), 1, "{reply}");
            assert_eq!(c[0].0, id);
            let err = c[0].1.clone().expect_err(reply);
            assert!(check(&err), "{reply}: {err}");
        }
        assert_eq!(core.counters().errors, 5);
    }

    #[test]
    fn network_scan_is_refused_unless_allowed() {
        let mut core = AtCore::new(CoreConfig::default());
        let err = core.submit(Request::new("AT+COPS=?"), 0).unwrap_err();
        assert!(
            matches!(err, AtError::Refused(CommandError::Disruptive(_))),
            "{err}"
        );
        assert!(drain(&mut core).is_empty());
        core.submit(Request::new("AT+COPS=?").allow_disruptive(), 0)
            .unwrap();
        assert_eq!(core.next_deadline(), Some(315 * S));
        assert_eq!(core.counters().refused, 1);
    }

    #[test]
    fn timeout_then_late_final_within_window_is_dropped() {
        let mut core = AtCore::new(CoreConfig::default());
        let a = core
            .submit(Request::new("AT+CFUN=0").timeout(Duration::from_secs(1)), 0)
            .unwrap();
        let b = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        drain(&mut core);
        core.tick(S);
        let actions = drain(&mut core);
        let c = completions(&actions);
        assert!(matches!(&c[..], [(id, Err(AtError::Timeout { .. }))] if *id == a));
        assert!(
            writes(&actions).is_empty(),
            "next command waits for the resync window"
        );
        core.feed(b"\r\nOK\r\n", S + 10);
        assert_eq!(writes(&drain(&mut core)), ["AT+CSQ\r"]);
        core.feed(b"\r\n+CSQ: 3,99\r\n\r\nOK\r\n", S + 20);
        assert_eq!(
            completions(&drain(&mut core)),
            [(b, ok(&["+CSQ: 3,99"], "AT+CSQ"))]
        );
        assert_eq!(core.counters().stale_lines, 1);
    }

    #[test]
    fn late_final_after_window_is_dropped_when_echo_is_on() {
        let mut core = AtCore::new(CoreConfig::default());
        core.submit(Request::new("AT"), 0).unwrap();
        core.feed(b"AT\r\r\nOK\r\n", 1);
        let a = core
            .submit(Request::new("AT+CFUN=0").timeout(Duration::from_secs(1)), 2)
            .unwrap();
        let b = core.submit(Request::new("AT+CSQ"), 2).unwrap();
        core.feed(b"AT+CFUN=0\r", 3);
        drain(&mut core);
        core.tick(S + 2);
        core.tick(4 * S); // the resync window passes without an answer
        let actions = drain(&mut core);
        assert!(
            matches!(&completions(&actions)[..], [(id, Err(AtError::Timeout { .. }))] if *id == a)
        );
        assert_eq!(writes(&actions), ["AT+CSQ\r"]);
        core.feed(
            b"\r\n+CME ERROR: 3\r\nAT+CSQ\r\r\n+CSQ: 3,99\r\n\r\nOK\r\n",
            4 * S + 1,
        );
        assert_eq!(
            completions(&drain(&mut core)),
            [(b, ok(&["+CSQ: 3,99"], "AT+CSQ"))]
        );
    }

    #[test]
    fn echo_off_after_ate0_does_not_make_answers_stale() {
        let mut core = AtCore::new(CoreConfig::default());
        core.submit(Request::new("ATE0"), 0).unwrap();
        core.feed(b"ATE0\r\r\nOK\r\n", 1);
        drain(&mut core);
        let a = core
            .submit(Request::new("AT+CFUN=0").timeout(Duration::from_secs(1)), 2)
            .unwrap();
        let b = core.submit(Request::new("AT+CSQ"), 2).unwrap();
        core.tick(S + 2);
        core.tick(4 * S); // the resync window passes without an answer
        core.feed(b"\r\n+CSQ: 3,99\r\n\r\nOK\r\n", 4 * S + 1);
        let c = completions(&drain(&mut core));
        assert!(matches!(&c[0], (id, Err(AtError::Timeout { .. })) if *id == a));
        assert_eq!(c[1], (b, ok(&["+CSQ: 3,99"], "AT+CSQ")));
    }

    #[test]
    fn noise_before_the_echo_is_dropped() {
        let mut core = AtCore::new(CoreConfig::default());
        let id = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        core.feed(b"\r\n#~x\r\nAT+CSQ\r\r\n+CSQ: 3,99\r\nOK\r\n", 1);
        assert_eq!(
            completions(&drain(&mut core)),
            [(id, ok(&["+CSQ: 3,99"], "AT+CSQ"))]
        );
        assert_eq!(core.counters().stale_lines, 1);
    }

    #[test]
    fn garbage_and_overlong_lines_are_recovered_from() {
        let cfg = CoreConfig {
            max_line_len: 64,
            ..CoreConfig::default()
        };
        let mut core = AtCore::new(cfg);
        let id = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        let mut junk = vec![0xff, 0xfe, 0x00, b'\r'];
        junk.extend(std::iter::repeat_n(b'x', 200));
        junk.extend_from_slice(b"\n+CSQ: 1,2\r\nOK\r\n");
        core.feed(&junk, 1);
        assert_eq!(
            completions(&drain(&mut core)),
            [(id, ok(&["+CSQ: 1,2"], "AT+CSQ"))]
        );
        assert_eq!(core.counters().garbage_bytes, 203);
        assert_eq!(core.counters().overlong_lines, 1);
    }

    #[test]
    fn disconnect_fails_in_flight_and_waiting() {
        let mut core = AtCore::new(CoreConfig::default());
        let a = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        let b = core.submit(Request::new("AT+CSQ"), 0).unwrap();
        core.feed(b"+CS", 1);
        core.disconnected("read failed: EIO");
        let c = completions(&drain(&mut core));
        assert_eq!(c.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a, b]);
        assert!(
            c.iter()
                .all(|(_, r)| matches!(r, Err(AtError::Disconnected { .. })))
        );
        assert!(!core.is_busy());
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn queue_is_bounded() {
        let cfg = CoreConfig {
            max_pending: 2,
            ..CoreConfig::default()
        };
        let mut core = AtCore::new(cfg);
        for _ in 0..3 {
            core.submit(Request::new("AT"), 0).unwrap();
        }
        let err = core.submit(Request::new("AT"), 0).unwrap_err();
        assert!(matches!(err, AtError::QueueFull { depth: 2, .. }));
    }

    #[test]
    fn idle_lines_are_urcs() {
        let mut core = AtCore::new(CoreConfig::default());
        core.feed(
            b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\nOK\r\nhello\r\n",
            0,
        );
        let actions = drain(&mut core);
        let kinds: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Urc(u) => Some(u.kind),
                _ => None,
            })
            .collect();
        use UrcKind::*;
        assert_eq!(kinds, [Ready, Cfun, Cpin, Qusim, Other]);
        assert_eq!(core.counters().stale_lines, 1);
    }

    // ---- properties ----

    /// One command of a scripted session: its line, information lines, final result code.
    #[derive(Debug, Clone)]
    struct Exchange {
        cmd: String,
        lines: Vec<String>,
        fin: &'static str,
    }

    const COMMANDS: &[&str] = &[
        "AT+CSQ",
        "AT+CEREG?",
        "AT+QENG=\"servingcell\"",
        "AT+CPIN?",
        "AT!GSTATUS?",
        "AT+CFUN=1",
    ];
    const FINALS: &[&str] = &[
        "OK",
        "ERROR",
        "+CME ERROR: 30",
        "+CME ERROR: SIM busy",
        "+CMS ERROR: 500",
    ];
    const URCS: &[&str] = &[
        "+QIND: \"csq\",20,99",
        "+QIND:\"act\",\"LTE\"",
        "+CEREG: 1,\"1F00\",\"079D903\",7",
        "+CEREG: 5",
        "+CREG: 1, 8BE3, 2BAF ,7",
        "RDY",
        "POWERED DOWN",
        "+QIND: SMS DONE",
    ];
    const TERMINATORS: &[&str] = &["\r\n", "\r", "\n", "\r\n\r\n"];

    fn exchange() -> impl Strategy<Value = Exchange> {
        (
            prop::sample::select(COMMANDS),
            prop::collection::vec("[A-Za-z0-9+:,\" -]{1,40}", 0..4),
            prop::sample::select(FINALS),
        )
            .prop_map(|(cmd, lines, fin)| {
                let c = CommandLine::parse(cmd).unwrap();
                let lines = lines
                    .into_iter()
                    .map(|l| l.trim().to_string())
                    .filter(|l| {
                        !l.is_empty()
                            && final_code(l).is_none()
                            && classify(l, Some(&c)).is_none()
                            && !c.is_echo(l)
                    })
                    .collect();
                Exchange {
                    cmd: cmd.to_string(),
                    lines,
                    fin,
                }
            })
    }

    type Session = (Vec<Exchange>, Vec<(usize, usize)>, bool, Vec<usize>);
    type Done = Vec<(CommandId, Result<Response, AtError>)>;

    /// The transcript of a session and where URCs go: (exchanges, urc slots, echo, terminators).
    fn session() -> impl Strategy<Value = Session> {
        (
            prop::collection::vec(exchange(), 1..6),
            prop::collection::vec((any::<usize>(), 0..URCS.len()), 0..6),
            any::<bool>(),
            prop::collection::vec(0..TERMINATORS.len(), 64),
        )
    }

    /// Builds the modem's byte stream; URCs are placed between lines (slot modulo line count).
    fn transcript(
        ex: &[Exchange],
        urc_slots: &[(usize, usize)],
        echo: bool,
        terms: &[usize],
    ) -> (Vec<u8>, Vec<String>) {
        let mut lines: Vec<String> = Vec::new();
        for e in ex {
            if echo {
                lines.push(e.cmd.clone());
            }
            lines.extend(e.lines.iter().cloned());
            lines.push(e.fin.to_string());
        }
        // A URC may not split an echo from its command start, nor come first when echo is on
        // (then it would precede the echo, which is fine) -- any position between lines works.
        let mut placed: Vec<(usize, &str)> = urc_slots
            .iter()
            .map(|&(slot, u)| (slot % (lines.len() + 1), URCS[u]))
            .collect();
        placed.sort_by_key(|p| p.0);
        let mut out = Vec::new();
        let mut urcs = Vec::new();
        let mut k = 0;
        let mut t = 0;
        let mut term = |out: &mut Vec<u8>| {
            out.extend_from_slice(TERMINATORS[terms[t % terms.len()]].as_bytes());
            t += 1;
        };
        for (i, line) in lines.iter().enumerate() {
            while k < placed.len() && placed[k].0 == i {
                out.extend_from_slice(placed[k].1.as_bytes());
                term(&mut out);
                urcs.push(placed[k].1.to_string());
                k += 1;
            }
            out.extend_from_slice(line.as_bytes());
            term(&mut out);
        }
        for p in &placed[k..] {
            out.extend_from_slice(p.1.as_bytes());
            term(&mut out);
            urcs.push(p.1.to_string());
        }
        (out, urcs)
    }

    fn expected(e: &Exchange) -> Result<Response, AtError> {
        let command = e.cmd.clone();
        match final_code(e.fin) {
            Some(Final::Ok) => Ok(Response {
                command,
                lines: e.lines.clone(),
            }),
            Some(Final::Error) => Err(AtError::Error { command }),
            Some(Final::Cme(code)) => Err(AtError::Cme { command, code }),
            Some(Final::Cms(code)) => Err(AtError::Cms { command, code }),
            _ => Err(AtError::Final {
                command,
                code: e.fin.to_string(),
            }),
        }
    }

    fn run_chunked(ex: &[Exchange], bytes: &[u8], cuts: &[usize]) -> (Done, Vec<String>) {
        let mut core = AtCore::new(CoreConfig::default());
        for e in ex {
            core.submit(Request::new(e.cmd.clone()), 0).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut actions = Vec::new();
        for w in cuts.windows(2) {
            core.feed(&bytes[w[0]..w[1]], 1);
            actions.extend(drain(&mut core));
        }
        (completions(&actions), urcs(&actions))
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_scripted_responses_and_urcs(
            (ex, slots, echo, terms) in session(),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let (bytes, want_urcs) = transcript(&ex, &slots, echo, &terms);
            let (done, got_urcs) = run_chunked(&ex, &bytes, &cuts);
            let want: Vec<_> = ex.iter().enumerate().map(|(i, e)| (i as CommandId, expected(e))).collect();
            prop_assert_eq!(done, want);
            prop_assert_eq!(got_urcs, want_urcs);
        }

        #[test]
        fn every_command_completes_exactly_once_on_arbitrary_input(
            ops in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..64).prop_map(Op::Feed),
                    prop::sample::select(FEED_LINES).prop_map(|l| Op::Feed(l.as_bytes().to_vec())),
                    (0..COMMANDS.len() + 2).prop_map(Op::Submit),
                    (0u64..20_000_000).prop_map(Op::Advance),
                    Just(Op::Disconnect),
                ],
                0..80,
            )
        ) {
            let mut core = AtCore::new(CoreConfig { max_pending: 8, ..CoreConfig::default() });
            let mut now = 0u64;
            let mut accepted = Vec::new();
            let mut done: Vec<CommandId> = Vec::new();
            let collect = |core: &mut AtCore, done: &mut Vec<CommandId>| {
                for a in drain(core) {
                    if let Action::Complete { id, .. } = a { done.push(id); }
                }
            };
            for op in ops {
                match op {
                    Op::Feed(b) => core.feed(&b, now),
                    Op::Submit(i) => {
                        let line = COMMANDS.get(i).copied().unwrap_or(if i == COMMANDS.len() { "AT+COPS=?" } else { "bad\r" });
                        if let Ok(id) = core.submit(Request::new(line).timeout(Duration::from_secs(5)), now) {
                            accepted.push(id);
                        }
                    }
                    Op::Advance(us) => { now += us; core.tick(now); }
                    Op::Disconnect => core.disconnected("gone"),
                }
                collect(&mut core, &mut done);
                if let Some(d) = core.next_deadline() { prop_assert!(d >= now || core.is_busy()); }
            }
            // Simulated time runs on: everything left times out.
            for _ in 0..100 {
                if !core.is_busy() { break; }
                now += 10_000_000;
                core.tick(now);
                collect(&mut core, &mut done);
            }
            prop_assert!(!core.is_busy());
            done.sort_unstable();
            prop_assert_eq!(done, accepted);
        }
    }

    const FEED_LINES: &[&str] = &[
        "OK\r\n",
        "\r\nERROR\r\n",
        "AT+CSQ\r",
        "+CEREG: 2,1\r\n",
        "+QIND: \"csq\",1,2\n",
        "+CME ERROR: 10\r\n",
        "RDY\r",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Feed(Vec<u8>),
        Submit(usize),
        Advance(u64),
        Disconnect,
    }
}

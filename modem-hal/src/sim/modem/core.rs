//! [`SimCore`]: the sans-IO simulated Quectel modem. It is fed command lines and the world
//! time, reads the cells it hears from a [`RadioEnv`], and returns the bytes a real module
//! would write and after how long.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sim::env::{HeardCell, RadioEnv};

/// Which module is simulated: decides the identity and the `+QENG` servingcell layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Quectel EC25-E: LTE servingcell with 18 fields, numeric srxlev.
    Ec25,
    /// Quectel RM520N-GL on LTE: 20 fields (CQI and tx_power before srxlev), srxlev `-`.
    Rm520n,
}

impl Profile {
    /// `AT+CGMM`.
    pub fn model(self) -> &'static str {
        match self {
            Self::Ec25 => "EC25",
            Self::Rm520n => "RM520N-GL",
        }
    }

    /// `AT+CGMR`.
    pub fn revision(self) -> &'static str {
        match self {
            Self::Ec25 => "EC25EFAR06A06M4G",
            Self::Rm520n => "RM520NGLAAR03A03M4G",
        }
    }
}

/// Knobs of a simulated modem. Durations are world time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The module simulated.
    pub profile: Profile,
    /// Whether `AT+QNWLOCK` exists (RG650V-NA test form); `false` answers `ERROR` like an EC25.
    pub lock_support: bool,
    /// Factor on every command latency (tests use small values).
    pub latency_scale: f64,
    /// How long `AT+COPS=?` scans before answering (then scaled by `latency_scale`).
    pub scan_time: Duration,
    /// Serving RSRP below which the serving cell counts as degraded (dBm).
    pub sticky_rsrp_dbm: f64,
    /// Serving SINR below which the serving cell counts as degraded (dB).
    pub sticky_sinr_db: f64,
    /// How long the serving cell must stay degraded (with a better neighbour) before reselection.
    pub reselect_after: Duration,
    /// How much stronger (RSRP, dB) a neighbour must be to trigger reselection.
    pub reselect_hysteresis_db: f64,
    /// No service between leaving a cell and camping on the next one.
    pub reselect_gap: Duration,
    /// No service after a lock, a release or a forced reselection (CFUN 4→1 / 0→1).
    pub reattach_outage: Duration,
    /// From `AT+CFUN=1,1` to `RDY`.
    pub boot_time: Duration,
    /// Registration refused: camped but `LIMSRV` / `+CEREG` stat 3.
    pub registration_denied: bool,
    /// A data call is up: servingcell state `CONNECT` instead of `NOCONN`.
    pub data_connected: bool,
}

impl SimConfig {
    /// Defaults for `profile`: lock support only on the RM520N, latency scale 1, 180 s scans,
    /// sticky thresholds −115 dBm / −3 dB for 2 s with 3 dB hysteresis, 1 s reselection gap,
    /// 4 s re-attach outage, 8 s boot, registered with a data call up.
    pub fn new(profile: Profile) -> Self {
        Self {
            profile,
            lock_support: profile == Profile::Rm520n,
            latency_scale: 1.0,
            scan_time: Duration::from_secs(180),
            sticky_rsrp_dbm: -115.0,
            sticky_sinr_db: -3.0,
            reselect_after: Duration::from_secs(2),
            reselect_hysteresis_db: 3.0,
            reselect_gap: Duration::from_secs(1),
            reattach_outage: Duration::from_secs(4),
            boot_time: Duration::from_secs(8),
            registration_denied: false,
            data_connected: true,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::new(Profile::Rm520n)
    }
}

/// The answer to one command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// The echo, written at once (empty with `ATE0`).
    pub echo: Vec<u8>,
    /// How long (world time) the modem takes before `bytes`.
    pub delay: Duration,
    /// The response, final result code included; empty when the modem never answers.
    pub bytes: Vec<u8>,
}

/// What the modem is doing, for tests and the demo.
#[derive(Debug, Clone, PartialEq)]
pub struct SimStatus {
    /// Registered on a cell.
    pub attached: bool,
    /// The serving cell as heard now.
    pub serving: Option<HeardCell>,
    /// The first locked (EARFCN, PCI), if locked.
    pub lock: Option<(u32, u16)>,
    /// `AT+CFUN` level.
    pub cfun: u8,
    /// End of a re-attach outage, reselection gap or boot still running.
    pub outage_until: Option<Duration>,
}

/// What the modem has been asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCounters {
    /// Command lines answered or swallowed.
    pub commands: u64,
    /// `AT+COPS=?` network scans.
    pub scans: u64,
    /// Commands answered `ERROR` or `+CME ERROR`.
    pub errors: u64,
    /// Lines that did not start with `AT` (ignored like a real module does).
    pub ignored: u64,
    /// Cell changes (reselections, re-attaches).
    pub cell_changes: u64,
    /// Lock commands that took effect (lock and release).
    pub locks: u64,
}

/// Longest command line kept; the rest of a longer line is dropped.
const MAX_LINE: usize = 512;
/// Most URCs queued between two ticks; older ones are dropped.
const MAX_URCS: usize = 64;

/// Splits the bytes from the host into command lines (ended by CR or LF), bounded.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// The complete lines in `bytes` (empty lines dropped). An overlong line comes out as
    /// its first [`MAX_LINE`] bytes followed by `…`, which no command matches.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if !self.buf.is_empty() || self.overlong {
                    let mut line = String::from_utf8_lossy(&self.buf).into_owned();
                    if self.overlong {
                        line.push('…');
                    }
                    out.push(line);
                }
                self.buf.clear();
                self.overlong = false;
            } else if self.buf.len() < MAX_LINE {
                self.buf.push(b);
            } else {
                self.overlong = true;
            }
        }
        out
    }
}

/// Identity of a cell across samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CellKey {
    earfcn: u32,
    pci: u16,
    cell_id: u64,
}

impl CellKey {
    fn of(c: &HeardCell) -> Self {
        Self {
            earfcn: c.earfcn,
            pci: c.pci,
            cell_id: c.cell_id,
        }
    }

    fn matches(&self, c: &HeardCell) -> bool {
        *self == Self::of(c)
    }
}

/// Registration as reported by `+CEREG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reg {
    stat: u8,
    cell: Option<(u32, u64)>,
}

/// The command-line-level fault to apply to the next command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NextFault {
    /// Echo, then never answer.
    Swallow,
    /// Answer `+CME ERROR: n`.
    Cme(u16),
}

/// The simulated modem, sans IO. `now` is the world time (the clock of [`RadioEnv::heard`]).
#[derive(Debug)]
pub struct SimCore {
    cfg: SimConfig,
    modem: usize,
    echo: bool,
    cmee: u8,
    cereg_n: u8,
    creg_n: u8,
    cfun: u8,
    nwscanmode: u8,
    ind_csq: bool,
    ind_act: bool,
    lock: Vec<(u32, u16)>,
    camped: Option<CellKey>,
    degraded_since: Option<Duration>,
    /// No service until then (outage, gap).
    outage_until: Option<Duration>,
    /// Booting until then (`AT+CFUN=1,1`).
    boot_until: Option<Duration>,
    last_reg: Option<Reg>,
    last_csq: Option<(u8, Duration)>,
    served: bool,
    urcs: Vec<String>,
    garbage: Vec<u8>,
    urc_in_response: Option<String>,
    next_fault: Option<NextFault>,
    counters: SimCounters,
}

impl SimCore {
    /// A powered-up modem (`CFUN=1`, echo on, `+CMEE=1` like Quectel's default) that is
    /// modem `modem` of the world.
    pub fn new(cfg: SimConfig, modem: usize) -> Self {
        Self {
            cfg,
            modem,
            echo: true,
            cmee: 1,
            cereg_n: 0,
            creg_n: 0,
            cfun: 1,
            nwscanmode: 0,
            ind_csq: false,
            ind_act: false,
            lock: Vec::new(),
            camped: None,
            degraded_since: None,
            outage_until: None,
            boot_until: None,
            last_reg: None,
            last_csq: None,
            served: false,
            urcs: Vec::new(),
            garbage: Vec::new(),
            urc_in_response: None,
            next_fault: None,
            counters: SimCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// What has been asked so far.
    pub fn counters(&self) -> SimCounters {
        self.counters.clone()
    }

    /// The IMEI of this modem: a fixed TAC and serial plus the modem index, Luhn check digit.
    pub fn imei(&self) -> String {
        let body = format!("8676980412{:04}", self.modem % 10_000);
        let sum: u32 = body
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 0 {
                    let d2 = d * 2;
                    if d2 > 9 { d2 - 9 } else { d2 }
                } else {
                    d
                }
            })
            .sum();
        format!("{body}{}", (10 - sum % 10) % 10)
    }

    // ---- fault injection ----

    /// Writes `bytes` (then CRLF) on the line at the next tick.
    pub fn inject_garbage(&mut self, bytes: &[u8]) {
        self.garbage.extend_from_slice(bytes);
        self.garbage.extend_from_slice(b"\r\n");
    }

    /// Puts the URC `line` inside the next response: after its first information line, or
    /// before its final result code when it has none.
    pub fn inject_urc_in_response(&mut self, line: &str) {
        self.urc_in_response = Some(line.to_owned());
    }

    /// The next command is echoed but never answered (one shot).
    pub fn swallow_next(&mut self) {
        self.next_fault = Some(NextFault::Swallow);
    }

    /// The next command is answered `+CME ERROR: code` (formatted per `AT+CMEE`).
    pub fn fail_next(&mut self, code: u16) {
        self.next_fault = Some(NextFault::Cme(code));
    }

    // ---- state ----

    fn in_outage(&self, now: Duration) -> bool {
        self.outage_until.is_some_and(|t| now < t) || self.boot_until.is_some_and(|t| now < t)
    }

    fn radio_on(&self) -> bool {
        self.cfun == 1 && !matches!(self.nwscanmode, 1 | 2 | 4)
    }

    /// Starts an outage of `d` from `now`, leaving the current cell.
    fn outage(&mut self, now: Duration, d: Duration) {
        self.camped = None;
        self.degraded_since = None;
        let until = now + d;
        self.outage_until = Some(self.outage_until.map_or(until, |t| t.max(until)));
    }

    /// Advances cell selection to `now`.
    fn update(&mut self, now: Duration, env: &dyn RadioEnv) {
        if let Some(t) = self.boot_until
            && now >= t
        {
            self.boot_until = None;
            for u in ["RDY", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE"] {
                self.push_urc(u.to_owned());
            }
        }
        if self.outage_until.is_some_and(|t| now >= t) {
            self.outage_until = None;
        }
        if !self.radio_on() || self.in_outage(now) {
            self.camped = None;
        } else {
            let heard = env.heard(self.modem, now);
            self.select(now, &heard);
        }
        self.report(now, env);
    }

    fn select(&mut self, now: Duration, heard: &[HeardCell]) {
        if !self.lock.is_empty() {
            // Pinned: the strongest heard locked cell, nothing else.
            let pick = heard
                .iter()
                .find(|c| self.lock.contains(&(c.earfcn, c.pci)))
                .map(CellKey::of);
            if pick.is_some() && pick != self.camped {
                self.counters.cell_changes += 1;
            }
            self.camped = pick;
            return;
        }
        match self.camped {
            Some(key) => match heard.iter().find(|c| key.matches(c)) {
                None => {
                    tracing::debug!(modem = self.modem, "serving cell lost, reselecting");
                    self.outage(now, self.cfg.reselect_gap);
                }
                Some(s) => {
                    let degraded = s.rsrp_dbm < self.cfg.sticky_rsrp_dbm
                        || s.sinr_db < self.cfg.sticky_sinr_db;
                    let better = heard.iter().any(|c| {
                        !key.matches(c)
                            && c.rsrp_dbm >= s.rsrp_dbm + self.cfg.reselect_hysteresis_db
                    });
                    if degraded && better {
                        let since = *self.degraded_since.get_or_insert(now);
                        if now.saturating_sub(since) >= self.cfg.reselect_after {
                            tracing::debug!(
                                modem = self.modem,
                                "serving cell degraded, reselecting"
                            );
                            self.outage(now, self.cfg.reselect_gap);
                        }
                    } else {
                        self.degraded_since = None;
                    }
                }
            },
            None => {
                if let Some(best) = heard.first() {
                    self.camped = Some(CellKey::of(best));
                    self.degraded_since = None;
                    self.counters.cell_changes += 1;
                }
            }
        }
    }

    /// The serving cell as heard at `now` (`None` without service).
    fn serving(&self, now: Duration, env: &dyn RadioEnv) -> Option<HeardCell> {
        let key = self.camped?;
        if !self.radio_on() || self.in_outage(now) {
            return None;
        }
        env.heard(self.modem, now)
            .into_iter()
            .find(|c| key.matches(c))
    }

    fn reg(&self, serving: Option<&HeardCell>) -> Reg {
        match serving {
            Some(c) if self.cfg.registration_denied => Reg {
                stat: 3,
                cell: Some((c.tac, c.cell_id)),
            },
            Some(c) => Reg {
                stat: 1,
                cell: Some((c.tac, c.cell_id)),
            },
            None if self.cfun != 1 || self.boot_until.is_some() => Reg {
                stat: 0,
                cell: None,
            },
            None => Reg {
                stat: 2,
                cell: None,
            },
        }
    }

    /// Queues the URCs due after a change.
    fn report(&mut self, now: Duration, env: &dyn RadioEnv) {
        let serving = self.serving(now, env);
        let reg = self.reg(serving.as_ref());
        if self.last_reg != Some(reg) {
            if self.last_reg.is_some() {
                if self.cereg_n >= 1 {
                    self.push_urc(format!("+CEREG: {}", reg_fields(reg, self.cereg_n)));
                }
                if self.creg_n >= 1 {
                    self.push_urc(format!("+CREG: {}", reg_fields(reg, self.creg_n)));
                }
            }
            self.last_reg = Some(reg);
        }
        let served = serving.is_some();
        if served && !self.served && self.ind_act {
            self.push_urc("+QIND: \"act\",\"LTE\"".into());
        }
        self.served = served;
        if self.ind_csq {
            let csq = serving.as_ref().map_or(99, |c| csq_index(c.rssi_dbm));
            let due = match self.last_csq {
                None => true,
                Some((v, at)) => v != csq && now.saturating_sub(at) >= Duration::from_secs(1),
            };
            if due {
                self.last_csq = Some((csq, now));
                self.push_urc(format!("+QIND: \"csq\",{csq},99"));
            }
        }
    }

    fn push_urc(&mut self, line: String) {
        if self.urcs.len() >= MAX_URCS {
            self.urcs.remove(0);
        }
        self.urcs.push(line);
    }

    /// Advances to `now` and returns the bytes to write between responses: queued URCs and
    /// injected garbage.
    pub fn tick(&mut self, now: Duration, env: &dyn RadioEnv) -> Vec<u8> {
        self.update(now, env);
        let mut out = std::mem::take(&mut self.garbage);
        for u in self.urcs.drain(..) {
            out.extend_from_slice(format!("\r\n{u}\r\n").as_bytes());
        }
        out
    }

    /// What the modem is doing at `now` (as of the last command or tick).
    pub fn status(&self, now: Duration, env: &dyn RadioEnv) -> SimStatus {
        let serving = self.serving(now, env);
        SimStatus {
            attached: serving.is_some() && !self.cfg.registration_denied,
            serving,
            lock: self.lock.first().copied(),
            cfun: self.cfun,
            outage_until: [self.outage_until, self.boot_until]
                .into_iter()
                .flatten()
                .filter(|t| now < *t)
                .max(),
        }
    }

    // ---- commands ----

    /// Answers one command line received at `now`.
    pub fn command(&mut self, line: &str, now: Duration, env: &dyn RadioEnv) -> Reply {
        let echo = if self.echo {
            format!("{line}\r").into_bytes()
        } else {
            Vec::new()
        };
        let cmd = line.trim();
        if cmd.len() < 2 || !cmd.is_char_boundary(2) || !cmd[..2].eq_ignore_ascii_case("AT") {
            self.counters.ignored += 1;
            return Reply {
                echo,
                ..Reply::default()
            };
        }
        self.counters.commands += 1;
        self.update(now, env);
        if self.boot_until.is_some() {
            // Booting: nothing reads the line yet, not even for an echo.
            return Reply::default();
        }
        let (answer, latency) = match self.next_fault.take() {
            Some(NextFault::Swallow) => {
                return Reply {
                    echo,
                    ..Reply::default()
                };
            }
            Some(NextFault::Cme(code)) => (Answer::Cme(code), ms(10)),
            None => self.answer(&cmd[2..], now, env),
        };
        let mut lines = match answer {
            Answer::Ok(lines) => {
                let mut l = lines;
                l.push("OK".into());
                l
            }
            Answer::Error => {
                self.counters.errors += 1;
                vec!["ERROR".into()]
            }
            Answer::Cme(code) => {
                self.counters.errors += 1;
                vec![self.cme(code)]
            }
        };
        if let Some(urc) = self.urc_in_response.take() {
            let at = if lines.len() > 1 { 1 } else { 0 };
            lines.insert(at, urc);
        }
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
        }
        Reply {
            echo,
            delay: latency.mul_f64(self.cfg.latency_scale.clamp(0.0, 1.0e6)),
            bytes,
        }
    }

    fn cme(&self, code: u16) -> String {
        match self.cmee {
            0 => "ERROR".into(),
            1 => format!("+CME ERROR: {code}"),
            _ => format!("+CME ERROR: {}", crate::at::parse::cme_error_text(code)),
        }
    }

    /// `rest` is the command after `AT`.
    fn answer(&mut self, rest: &str, now: Duration, env: &dyn RadioEnv) -> (Answer, Duration) {
        let upper = rest.to_ascii_uppercase();
        let profile = self.cfg.profile;
        let serving = self.serving(now, env);
        let sim = env.sim(self.modem);
        let ok = |lines: Vec<String>, t| (Answer::Ok(lines), t);
        match upper.as_str() {
            "" => ok(vec![], ms(5)),
            "Z" | "Z0" | "&F" | "&F0" => ok(vec![], ms(10)),
            "E0" | "E1" | "E" => {
                self.echo = upper == "E1";
                ok(vec![], ms(5))
            }
            "I" | "I0" => ok(
                vec![
                    "Quectel".into(),
                    profile.model().into(),
                    format!("Revision: {}", profile.revision()),
                ],
                ms(10),
            ),
            "+CGMM" => ok(vec![profile.model().into()], ms(10)),
            "+CGMR" => ok(vec![profile.revision().into()], ms(10)),
            "+CGSN" | "+GSN" => ok(vec![self.imei()], ms(10)),
            "+CMEE?" => ok(vec![format!("+CMEE: {}", self.cmee)], ms(5)),
            "+QSPN" => {
                let plmn = plmn(&sim);
                ok(
                    vec![format!(
                        "+QSPN: \"{op}\",\"{op}\",\"\",0,\"{plmn}\"",
                        op = sim.operator
                    )],
                    ms(50),
                )
            }
            "+COPS?" => {
                let line = match &serving {
                    Some(_) if !self.cfg.registration_denied => {
                        format!("+COPS: 0,0,\"{}\",7", sim.operator)
                    }
                    _ => "+COPS: 0".into(),
                };
                ok(vec![line], ms(50))
            }
            "+COPS=?" => {
                self.counters.scans += 1;
                let heard = self.radio_on() && !env.heard(self.modem, now).is_empty();
                let list = if heard {
                    let stat = if serving.is_some() { 2 } else { 1 };
                    format!(
                        "({stat},\"{op}\",\"{op}\",\"{}\",7),",
                        plmn(&sim),
                        op = sim.operator
                    )
                } else {
                    String::new()
                };
                ok(
                    vec![format!("+COPS: {list},(0,1,2,3,4),(0,1,2)")],
                    self.cfg.scan_time,
                )
            }
            "+CSQ" => {
                let line = match &serving {
                    Some(c) => format!("+CSQ: {},99", csq_index(c.rssi_dbm)),
                    None => "+CSQ: 99,99".into(),
                };
                ok(vec![line], ms(30))
            }
            "+CESQ" => {
                let line = match &serving {
                    Some(c) => format!(
                        "+CESQ: 99,99,255,255,{},{}",
                        clamp_index((c.rsrq_db + 20.0) * 2.0, 34),
                        clamp_index(c.rsrp_dbm + 141.0, 97)
                    ),
                    None => "+CESQ: 99,99,255,255,255,255".into(),
                };
                ok(vec![line], ms(40))
            }
            "+QCSQ" => {
                let line = match &serving {
                    Some(c) => format!(
                        "+QCSQ: \"LTE\",{},{},{},{}",
                        round(c.rssi_dbm),
                        round(c.rsrp_dbm),
                        round((c.sinr_db.clamp(-20.0, 30.0) + 20.0) * 5.0),
                        round(c.rsrq_db)
                    ),
                    None => "+QCSQ: \"NOSERVICE\"".into(),
                };
                ok(vec![line], ms(60))
            }
            "+CEREG?" => {
                let reg = self.reg(serving.as_ref());
                ok(
                    vec![format!(
                        "+CEREG: {},{}",
                        self.cereg_n,
                        reg_fields(reg, self.cereg_n)
                    )],
                    ms(20),
                )
            }
            "+CREG?" => {
                let reg = self.reg(serving.as_ref());
                ok(
                    vec![format!(
                        "+CREG: {},{}",
                        self.creg_n,
                        reg_fields(reg, self.creg_n)
                    )],
                    ms(20),
                )
            }
            "+CFUN?" => ok(vec![format!("+CFUN: {}", self.cfun)], ms(20)),
            "+CFUN=?" => ok(vec!["+CFUN: (0,1,4),(0,1)".into()], ms(20)),
            "+QENG=\"SERVINGCELL\"" => self.qeng_serving(serving.as_ref(), &sim, now, env),
            "+QENG=\"NEIGHBOURCELL\"" => match &serving {
                Some(s) => {
                    let heard = env.heard(self.modem, now);
                    let lines = heard
                        .iter()
                        .filter(|c| !CellKey::of(s).matches(c))
                        .take(32)
                        .map(|c| neighbour_line(c, c.earfcn == s.earfcn))
                        .collect();
                    ok(lines, ms(120))
                }
                None => (Answer::Cme(30), ms(100)),
            },
            "+QNWLOCK=?" if self.cfg.lock_support => ok(
                vec![
                    "+QNWLOCK: \"common/4g\",(0-10),<freq>,<pci>".into(),
                    "+QNWLOCK: \"common/5g\",<pci>,<freq>,<scs>,<band>".into(),
                    "+QNWLOCK: \"save_ctrl\",(0,1),(0,1)".into(),
                    "+QNWLOCK: \"common/4g_ext\",<num_of_cells>,<cell_list>".into(),
                ],
                ms(50),
            ),
            u if u.starts_with("+QNWLOCK") && self.cfg.lock_support => {
                self.qnwlock(&u["+QNWLOCK".len()..], now)
            }
            u if u.starts_with("+CFUN=") => self.cfun_set(&u["+CFUN=".len()..], now),
            u if u.starts_with("+CMEE=") => match small(&u["+CMEE=".len()..], 2) {
                Some(n) => {
                    self.cmee = n;
                    ok(vec![], ms(5))
                }
                None => (Answer::Error, ms(5)),
            },
            u if u.starts_with("+CEREG=") => match small(&u["+CEREG=".len()..], 5) {
                Some(n) => {
                    self.cereg_n = n;
                    ok(vec![], ms(10))
                }
                None => (Answer::Error, ms(5)),
            },
            u if u.starts_with("+CREG=") => match small(&u["+CREG=".len()..], 3) {
                Some(n) => {
                    self.creg_n = n;
                    ok(vec![], ms(10))
                }
                None => (Answer::Error, ms(5)),
            },
            u if u.starts_with("+QCFG=\"NWSCANMODE\"") => {
                let args: Vec<&str> = u["+QCFG=\"NWSCANMODE\"".len()..]
                    .split(',')
                    .skip(1)
                    .collect();
                match args.as_slice() {
                    [] => ok(
                        vec![format!("+QCFG: \"nwscanmode\",{}", self.nwscanmode)],
                        ms(30),
                    ),
                    [m] | [m, _] => match small(m, 8) {
                        Some(m) => {
                            self.nwscanmode = m;
                            ok(vec![], ms(50))
                        }
                        None => (Answer::Error, ms(5)),
                    },
                    _ => (Answer::Error, ms(5)),
                }
            }
            u if u.starts_with("+QINDCFG=") => self.qindcfg(&u["+QINDCFG=".len()..]),
            _ => (Answer::Error, ms(5)),
        }
    }

    fn qeng_serving(
        &self,
        serving: Option<&HeardCell>,
        sim: &crate::sim::env::SimCard,
        now: Duration,
        env: &dyn RadioEnv,
    ) -> (Answer, Duration) {
        let t = ms(100);
        let Some(c) = serving else {
            // Coverage loss answers CME 30 (RADIO.md §4); an outage, a gap, RF off or a lock on
            // an unheard cell leaves the module searching.
            if self.radio_on() && !self.in_outage(now) && env.heard(self.modem, now).is_empty() {
                return (Answer::Cme(30), t);
            }
            return (
                Answer::Ok(vec!["+QENG: \"servingcell\",\"SEARCH\"".into()]),
                t,
            );
        };
        let state = if self.cfg.registration_denied {
            "LIMSRV"
        } else if self.cfg.data_connected {
            "CONNECT"
        } else {
            "NOCONN"
        };
        let duplex = if (33..=53).contains(&c.band) {
            "TDD"
        } else {
            "FDD"
        };
        let bw = bandwidth_index(c.bandwidth_mhz);
        let mnc = if sim.mnc_3_digits {
            format!("{:03}", sim.mnc)
        } else {
            format!("{:02}", sim.mnc)
        };
        let head = format!(
            "+QENG: \"servingcell\",\"{state}\",\"LTE\",\"{duplex}\",{},{mnc},{:X},{},{},{},{bw},{bw},{:X},{},{},{},{}",
            sim.mcc,
            c.cell_id,
            c.pci,
            c.earfcn,
            c.band,
            c.tac,
            round(c.rsrp_dbm),
            round(c.rsrq_db),
            round(c.rssi_dbm),
            round(c.sinr_db),
        );
        let line = match self.cfg.profile {
            Profile::Ec25 => format!("{head},{}", srxlev(c.rsrp_dbm)),
            Profile::Rm520n => {
                let cqi = ((c.sinr_db + 6.0) / 2.0).round().clamp(1.0, 15.0) as i64;
                let tx = (-c.rsrp_dbm - 80.0).round().clamp(-40.0, 23.0) as i64;
                format!("{head},{cqi},{tx},-")
            }
        };
        (Answer::Ok(vec![line]), t)
    }

    fn qnwlock(&mut self, args: &str, now: Duration) -> (Answer, Duration) {
        let Some(args) = args.strip_prefix('=') else {
            return (Answer::Error, ms(5));
        };
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        let ok = |lines: Vec<String>, t| (Answer::Ok(lines), t);
        match parts.as_slice() {
            ["\"COMMON/4G\""] => {
                let mut line = format!("+QNWLOCK: \"common/4g\",{}", self.lock.len());
                for (e, p) in &self.lock {
                    line.push_str(&format!(",{e},{p}"));
                }
                ok(vec![line], ms(50))
            }
            ["\"COMMON/4G\"", "0"] => {
                if !self.lock.is_empty() {
                    self.lock.clear();
                    self.counters.locks += 1;
                    self.outage(now, self.cfg.reattach_outage);
                }
                ok(vec![], ms(300))
            }
            ["\"COMMON/4G\"", n, pairs @ ..] => {
                let Some(n) = small(n, 10).filter(|n| *n >= 1) else {
                    return (Answer::Cme(50), ms(5));
                };
                if pairs.len() != usize::from(n) * 2 {
                    return (Answer::Cme(50), ms(5));
                }
                let mut cells = Vec::new();
                for pair in pairs.chunks(2) {
                    let (Some(e), Some(p)) = (
                        pair.first().and_then(|s| s.parse::<u32>().ok()),
                        pair.get(1).and_then(|s| s.parse::<u16>().ok()),
                    ) else {
                        return (Answer::Cme(50), ms(5));
                    };
                    if p > 503 {
                        return (Answer::Cme(50), ms(5));
                    }
                    cells.push((e, p));
                }
                self.lock = cells;
                self.counters.locks += 1;
                self.outage(now, self.cfg.reattach_outage);
                ok(vec![], ms(300))
            }
            ["\"COMMON/5G\""] => ok(vec!["+QNWLOCK: \"common/5g\",0".into()], ms(50)),
            ["\"COMMON/5G\"", "0"] => ok(vec![], ms(100)),
            // No NR cell in this world and the module is on LTE: refused like an NSA-mode
            // RM5xx (RADIO.md §2.2), so the caller does not believe in a lock that never holds.
            ["\"COMMON/5G\"", ..] => (Answer::Cme(902), ms(100)),
            ["\"SAVE_CTRL\""] => ok(vec!["+QNWLOCK: \"save_ctrl\",0,0".into()], ms(20)),
            ["\"SAVE_CTRL\"", a, b] if small(a, 1).is_some() && small(b, 1).is_some() => {
                ok(vec![], ms(20))
            }
            _ => (Answer::Error, ms(5)),
        }
    }

    fn cfun_set(&mut self, args: &str, now: Duration) -> (Answer, Duration) {
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        let (level, reset) = match parts.as_slice() {
            [l] => (small(l, 4), false),
            [l, r] => match small(r, 1) {
                Some(r) => (small(l, 4), r == 1),
                None => return (Answer::Error, ms(5)),
            },
            _ => return (Answer::Error, ms(5)),
        };
        let Some(level) = level.filter(|l| matches!(l, 0 | 1 | 4)) else {
            return (Answer::Error, ms(5));
        };
        if reset {
            // Reset: comes back with the power-on defaults and boot URCs.
            self.cfun = 1;
            self.echo = true;
            self.cmee = 1;
            self.cereg_n = 0;
            self.creg_n = 0;
            self.ind_csq = false;
            self.ind_act = false;
            self.camped = None;
            self.boot_until = Some(now + self.cfg.boot_time);
            self.urcs.clear();
            return (Answer::Ok(vec![]), ms(300));
        }
        let was = self.cfun;
        self.cfun = level;
        if level != 1 {
            self.camped = None;
            self.degraded_since = None;
        } else if was != 1 {
            // RF back on: a fresh cell selection after a re-attach.
            self.outage(now, self.cfg.reattach_outage);
        }
        (Answer::Ok(vec![]), ms(1000))
    }

    fn qindcfg(&mut self, args: &str) -> (Answer, Duration) {
        let parts: Vec<&str> = args.split(',').map(str::trim).collect();
        let slot = match parts.first().copied() {
            Some("\"CSQ\"") => &mut self.ind_csq,
            Some("\"ACT\"") => &mut self.ind_act,
            _ => return (Answer::Error, ms(5)),
        };
        match parts.get(1..).unwrap_or_default() {
            [] => {
                let name = parts.first().map_or("", |s| s.trim_matches('"'));
                let line = format!(
                    "+QINDCFG: \"{}\",{}",
                    name.to_ascii_lowercase(),
                    u8::from(*slot)
                );
                (Answer::Ok(vec![line]), ms(10))
            }
            [v] | [v, _] => match small(v, 1) {
                Some(v) => {
                    *slot = v == 1;
                    if parts.first() == Some(&"\"ACT\"") && v == 1 && self.served {
                        self.push_urc("+QIND: \"act\",\"LTE\"".into());
                    }
                    if parts.first() == Some(&"\"CSQ\"") {
                        self.last_csq = None;
                    }
                    (Answer::Ok(vec![]), ms(10))
                }
                None => (Answer::Error, ms(5)),
            },
            _ => (Answer::Error, ms(5)),
        }
    }
}

/// How a command ended.
#[derive(Debug)]
enum Answer {
    Ok(Vec<String>),
    Error,
    Cme(u16),
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn round(v: f64) -> i64 {
    v.round() as i64
}

/// A small decimal argument `0..=max`.
fn small(s: &str, max: u8) -> Option<u8> {
    s.trim().parse::<u8>().ok().filter(|v| *v <= max)
}

fn clamp_index(v: f64, max: u8) -> u8 {
    v.round().clamp(0.0, f64::from(max)) as u8
}

/// `+CSQ` RSSI index: −113 dBm → 0, 2 dB steps, 31 ≥ −51 dBm.
fn csq_index(rssi_dbm: f64) -> u8 {
    clamp_index((rssi_dbm + 113.0) / 2.0, 31)
}

/// QENG bandwidth enum 0–5 = 1.4/3/5/10/15/20 MHz (nearest).
fn bandwidth_index(mhz: f64) -> usize {
    const T: [f64; 6] = [1.4, 3.0, 5.0, 10.0, 15.0, 20.0];
    T.iter()
        .enumerate()
        .min_by(|a, b| (a.1 - mhz).abs().total_cmp(&(b.1 - mhz).abs()))
        .map_or(5, |(i, _)| i)
}

/// Cell selection level with a −119 dBm minimum (the EC25 capture: −84 dBm → 35).
fn srxlev(rsrp_dbm: f64) -> i64 {
    round(rsrp_dbm + 119.0).max(0)
}

fn plmn(sim: &crate::sim::env::SimCard) -> String {
    if sim.mnc_3_digits {
        format!("{:03}{:03}", sim.mcc, sim.mnc)
    } else {
        format!("{:03}{:02}", sim.mcc, sim.mnc)
    }
}

/// `<stat>[,"<tac>","<ci>",7]` (cell fields with `n` ≥ 2 when registered).
fn reg_fields(reg: Reg, n: u8) -> String {
    match reg.cell {
        Some((tac, ci)) if n >= 2 => format!("{},\"{tac:04X}\",\"{ci:07X}\",7", reg.stat),
        _ => reg.stat.to_string(),
    }
}

/// `+QENG: "neighbourcell intra|inter","LTE",...` with RSRQ before RSRP; inter-frequency cells
/// too weak to measure (below −125 dBm) print `-` placeholders like the EG25-G capture.
fn neighbour_line(c: &HeardCell, intra: bool) -> String {
    let lvl = srxlev(c.rsrp_dbm);
    if intra {
        format!(
            "+QENG: \"neighbourcell intra\",\"LTE\",{},{},{},{},{},{},{lvl},4,12,10,62",
            c.earfcn,
            c.pci,
            round(c.rsrq_db),
            round(c.rsrp_dbm),
            round(c.rssi_dbm),
            round(c.sinr_db)
        )
    } else if c.rsrp_dbm < -125.0 {
        format!(
            "+QENG: \"neighbourcell inter\",\"LTE\",{},-,-,-,-,-,-,0,10,7",
            c.earfcn
        )
    } else {
        format!(
            "+QENG: \"neighbourcell inter\",\"LTE\",{},{},{},{},{},{},{lvl},0,10,7",
            c.earfcn,
            c.pci,
            round(c.rsrq_db),
            round(c.rsrp_dbm),
            round(c.rssi_dbm),
            round(c.sinr_db)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::parse::{ParseOptions, Parser};
    use crate::sim::env::{ScriptedEnv, SimCard};
    use proptest::prelude::*;

    fn cell(pci: u16, earfcn: u32, rsrp: f64, sinr: f64) -> HeardCell {
        HeardCell {
            tower: usize::from(pci),
            tac: 0x77b8,
            cell_id: 0x4caa700 + u64::from(pci),
            pci,
            earfcn,
            band: 3,
            bandwidth_mhz: 20.0,
            rsrp_dbm: rsrp,
            rsrq_db: -9.0,
            rssi_dbm: rsrp + 27.0,
            sinr_db: sinr,
        }
    }

    fn env(steps: Vec<(u64, Vec<HeardCell>)>) -> ScriptedEnv {
        ScriptedEnv {
            sim: SimCard {
                operator: "Pit Mobile".into(),
                mcc: 222,
                mnc: 88,
                mnc_3_digits: false,
            },
            steps: steps
                .into_iter()
                .map(|(ms, c)| (Duration::from_millis(ms), c))
                .collect(),
        }
    }

    fn fast(profile: Profile) -> SimConfig {
        SimConfig {
            reattach_outage: ms(200),
            reselect_gap: ms(100),
            reselect_after: ms(500),
            ..SimConfig::new(profile)
        }
    }

    /// The response lines of `cmd` at `t` ms (without echo and blanks).
    fn ask(core: &mut SimCore, env: &ScriptedEnv, cmd: &str, t: u64) -> Vec<String> {
        let r = core.command(cmd, ms(t), env);
        String::from_utf8_lossy(&r.bytes)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn parse(cmd: &str, lines: &[String]) -> crate::radio::RadioReport {
        let mut p = Parser::new(ParseOptions::default());
        p.feed_line(cmd);
        for l in lines {
            p.feed_line(l);
        }
        let parsed = p.finish();
        assert!(parsed.unparsed.is_empty(), "{cmd}: {:?}", parsed.unparsed);
        parsed.report
    }

    /// Ticks every 50 ms up to `t` ms and returns the URC text.
    fn run_to(core: &mut SimCore, env: &ScriptedEnv, from: u64, t: u64) -> String {
        let mut out = Vec::new();
        let mut now = from;
        while now <= t {
            out.extend(core.tick(ms(now), env));
            now += 50;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn identity_and_echo_per_profile() {
        let e = env(vec![(0, vec![cell(28, 1500, -84.0, 21.0)])]);
        let mut m = SimCore::new(fast(Profile::Ec25), 3);
        let r = m.command("ATI", ms(0), &e);
        assert_eq!(r.echo, b"ATI\r");
        assert!(String::from_utf8_lossy(&r.bytes).contains("Revision: EC25EFAR06A06M4G"));
        assert_eq!(ask(&mut m, &e, "ATE0", 0), ["OK"]);
        assert!(m.command("AT", ms(0), &e).echo.is_empty());
        let imei = ask(&mut m, &e, "AT+CGSN", 0);
        assert!(crate::modem::plan::valid_imei(&imei[0]), "{imei:?}");
        assert_ne!(imei[0], SimCore::new(fast(Profile::Ec25), 4).imei());
        assert_eq!(
            ask(&mut m, &e, "AT+QSPN", 0)[0],
            "+QSPN: \"Pit Mobile\",\"Pit Mobile\",\"\",0,\"22288\""
        );
        m.tick(ms(0), &e);
        assert_eq!(
            ask(&mut m, &e, "AT+COPS?", 0)[0],
            "+COPS: 0,0,\"Pit Mobile\",7"
        );
        let r = SimCore::new(fast(Profile::Rm520n), 0).command("AT+CGMM", ms(0), &e);
        assert!(String::from_utf8_lossy(&r.bytes).contains("RM520N-GL"));
        assert_eq!(ask(&mut m, &e, "AT+FOO", 0), ["ERROR"]);
        assert_eq!(
            ask(&mut m, &e, "AT+QNWLOCK=?", 0),
            ["ERROR"],
            "EC25: no lock"
        );
    }

    #[test]
    fn servingcell_layouts_parse_per_profile() {
        let e = env(vec![(0, vec![cell(28, 1500, -84.0, 21.0)])]);
        for (profile, fields) in [(Profile::Ec25, 18), (Profile::Rm520n, 20)] {
            let mut m = SimCore::new(fast(profile), 0);
            m.tick(ms(0), &e);
            let l = ask(&mut m, &e, "AT+QENG=\"servingcell\"", 0);
            // RADIO.md counts the tag: 18 (EC25) or 20 (RM5xx) comma-separated fields.
            assert_eq!(l[0].split(',').count(), fields, "{l:?}");
            let s = parse("AT+QENG=\"servingcell\"", &l)
                .serving
                .expect("serving");
            assert_eq!(s.pci, Some(28));
            assert_eq!(s.cell_id, Some(0x4caa71c));
            assert_eq!(s.tac, Some(0x77b8));
            assert_eq!(s.rsrp_dbm, Some(-84.0));
            assert_eq!(s.sinr_db, Some(21.0));
            assert_eq!(s.bandwidth_mhz, Some(20.0));
            assert_eq!(s.state.as_deref(), Some("CONNECT"));
            let q = ask(&mut m, &e, "AT+QCSQ", 0);
            assert_eq!(q[0], "+QCSQ: \"LTE\",-57,-84,205,-9");
            let r = parse("AT+QCSQ", &q);
            assert_eq!(r.signal.qcsq.first().and_then(|q| q.sinr_db), Some(21.0));
        }
    }

    #[test]
    fn signal_and_registration_forms() {
        let e = env(vec![(0, vec![cell(28, 1500, -84.0, 21.0)]), (1000, vec![])]);
        let mut m = SimCore::new(fast(Profile::Rm520n), 0);
        m.tick(ms(0), &e);
        assert_eq!(ask(&mut m, &e, "AT+CSQ", 0)[0], "+CSQ: 28,99");
        assert_eq!(
            ask(&mut m, &e, "AT+CESQ", 0)[0],
            "+CESQ: 99,99,255,255,22,57"
        );
        assert_eq!(ask(&mut m, &e, "AT+CEREG?", 0)[0], "+CEREG: 0,1");
        assert_eq!(ask(&mut m, &e, "AT+CEREG=2", 0), ["OK"]);
        let l = ask(&mut m, &e, "AT+CEREG?", 0);
        assert_eq!(l[0], "+CEREG: 2,1,\"77B8\",\"4CAA71C\",7");
        let reg = parse("AT+CEREG?", &l).registration.expect("registration");
        assert_eq!(reg.cell_id, Some(0x4caa71c));
        // Coverage lost.
        let urcs = run_to(&mut m, &e, 1000, 1200);
        // After the reselection gap: no cell at all.
        assert!(urcs.contains("+CEREG: 2\r\n"), "{urcs:?}");
        assert_eq!(ask(&mut m, &e, "AT+CSQ", 1200)[0], "+CSQ: 99,99");
        assert_eq!(
            ask(&mut m, &e, "AT+CESQ", 1200)[0],
            "+CESQ: 99,99,255,255,255,255"
        );
        assert_eq!(ask(&mut m, &e, "AT+QCSQ", 1200)[0], "+QCSQ: \"NOSERVICE\"");
        assert_eq!(
            ask(&mut m, &e, "AT+QENG=\"servingcell\"", 1200),
            ["+CME ERROR: 30"]
        );
        assert_eq!(
            ask(&mut m, &e, "AT+QENG=\"neighbourcell\"", 1200),
            ["+CME ERROR: 30"]
        );
        assert_eq!(ask(&mut m, &e, "AT+COPS?", 1200)[0], "+COPS: 0");
        assert_eq!(ask(&mut m, &e, "AT+CMEE=2", 1200), ["OK"]);
        assert_eq!(
            ask(&mut m, &e, "AT+QENG=\"servingcell\"", 1200),
            ["+CME ERROR: no network service"]
        );
        assert_eq!(ask(&mut m, &e, "AT+CMEE=0", 1200), ["OK"]);
        assert_eq!(ask(&mut m, &e, "AT+QENG=\"servingcell\"", 1200), ["ERROR"]);
    }

    #[test]
    fn neighbours_intra_and_inter_with_rsrq_first() {
        let e = env(vec![(
            0,
            vec![
                cell(28, 1500, -84.0, 21.0),
                cell(29, 1500, -95.0, 5.0),
                cell(188, 6300, -105.0, -2.0),
                cell(7, 1501, -130.0, -10.0),
            ],
        )]);
        let mut m = SimCore::new(fast(Profile::Ec25), 0);
        m.tick(ms(0), &e);
        let l = ask(&mut m, &e, "AT+QENG=\"neighbourcell\"", 0);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(
            l[0],
            "+QENG: \"neighbourcell intra\",\"LTE\",1500,29,-9,-95,-68,5,24,4,12,10,62"
        );
        assert!(l[1].starts_with("+QENG: \"neighbourcell inter\",\"LTE\",6300,188,-9,-105,"));
        assert_eq!(
            l[2],
            "+QENG: \"neighbourcell inter\",\"LTE\",1501,-,-,-,-,-,-,0,10,7"
        );
        let n = parse("AT+QENG=\"neighbourcell\"", &l).neighbours;
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].rsrp_dbm, Some(-95.0));
        assert_eq!(n[0].rsrq_db, Some(-9.0));
        assert_eq!(n[2].pci, None);
    }

    #[test]
    fn selection_is_sticky_until_degraded_with_a_better_neighbour() {
        let a = |rsrp, sinr| cell(1, 1500, rsrp, sinr);
        let b = |rsrp| cell(2, 1500, rsrp, 10.0);
        let e = env(vec![
            (0, vec![a(-90.0, 10.0), b(-100.0)]),
            // B stronger, A still fine: stay.
            (1000, vec![a(-100.0, 5.0), b(-90.0)]),
            // A degraded (RSRP < -115) with B 3 dB+ stronger: move after 500 ms + 100 ms gap.
            (2000, vec![a(-117.0, 0.0), b(-95.0)]),
        ]);
        let mut m = SimCore::new(fast(Profile::Rm520n), 0);
        let pci = |m: &SimCore, t| m.status(ms(t), &e).serving.map(|c| c.pci);
        run_to(&mut m, &e, 0, 1900);
        assert_eq!(pci(&m, 1900), Some(1), "sticky while not degraded");
        run_to(&mut m, &e, 2000, 2450);
        assert_eq!(
            pci(&m, 2450),
            Some(1),
            "degraded for less than reselect_after"
        );
        run_to(&mut m, &e, 2500, 2550);
        assert_eq!(pci(&m, 2550), None, "reselection gap");
        run_to(&mut m, &e, 2600, 2700);
        assert_eq!(pci(&m, 2700), Some(2));
        assert_eq!(m.counters().cell_changes, 2);
    }

    #[test]
    fn a_lost_cell_is_left_and_a_short_dip_is_not() {
        let a = cell(1, 1500, -80.0, 10.0);
        let b = cell(2, 1500, -90.0, 10.0);
        let e = env(vec![
            (0, vec![a.clone(), b.clone()]),
            (
                500,
                vec![cell(1, 1500, -120.0, -5.0), cell(2, 1500, -90.0, 10.0)],
            ),
            (700, vec![a.clone(), b.clone()]),
            (1000, vec![b.clone()]),
        ]);
        let mut m = SimCore::new(fast(Profile::Ec25), 0);
        run_to(&mut m, &e, 0, 950);
        assert_eq!(m.status(ms(950), &e).serving.map(|c| c.pci), Some(1));
        run_to(&mut m, &e, 1000, 1050);
        assert!(m.status(ms(1050), &e).serving.is_none());
        run_to(&mut m, &e, 1100, 1150);
        assert_eq!(m.status(ms(1150), &e).serving.map(|c| c.pci), Some(2));
    }

    #[test]
    fn lock_outage_release_and_nr_refusal() {
        let e = env(vec![(
            0,
            vec![cell(1, 1500, -80.0, 20.0), cell(2, 1350, -95.0, 8.0)],
        )]);
        let mut m = SimCore::new(fast(Profile::Rm520n), 0);
        ask(&mut m, &e, "AT+CEREG=2", 0);
        ask(&mut m, &e, "AT+CREG=1", 0);
        run_to(&mut m, &e, 0, 100);
        let caps = parse("AT+QNWLOCK=?", &ask(&mut m, &e, "AT+QNWLOCK=?", 100));
        assert!(
            caps.lock
                .expect("lock")
                .supported
                .contains(&"common/4g".to_owned())
        );
        assert_eq!(
            ask(&mut m, &e, "AT+QNWLOCK=\"common/4g\",1,1350,2", 100),
            ["OK"]
        );
        let s = m.status(ms(150), &e);
        assert_eq!(s.lock, Some((1350, 2)));
        assert!(!s.attached && s.outage_until == Some(ms(300)));
        assert_eq!(
            ask(&mut m, &e, "AT+QENG=\"servingcell\"", 150),
            ["+QENG: \"servingcell\",\"SEARCH\"", "OK"]
        );
        assert_eq!(ask(&mut m, &e, "AT+CEREG?", 150)[0], "+CEREG: 2,2");
        let urcs = run_to(&mut m, &e, 150, 400);
        assert!(urcs.contains("+CEREG: 2\r\n"), "{urcs:?}");
        assert!(urcs.contains("\r\n+CREG: 2\r\n"), "{urcs:?}");
        assert!(urcs.contains("\r\n+CREG: 1\r\n"), "{urcs:?}");
        assert!(
            urcs.contains("+CEREG: 1,\"77B8\",\"4CAA702\",7"),
            "{urcs:?}"
        );
        assert_eq!(m.status(ms(400), &e).serving.map(|c| c.pci), Some(2));
        assert_eq!(
            ask(&mut m, &e, "AT+QNWLOCK=\"common/4g\"", 400)[0],
            "+QNWLOCK: \"common/4g\",1,1350,2"
        );
        assert_eq!(
            ask(&mut m, &e, "AT+QNWLOCK=\"common/5g\",264,504990,30,41", 400),
            ["+CME ERROR: 902"]
        );
        assert_eq!(ask(&mut m, &e, "AT+QNWLOCK=\"common/4g\",0", 400), ["OK"]);
        run_to(&mut m, &e, 400, 700);
        let s = m.status(ms(700), &e);
        assert_eq!((s.lock, s.serving.map(|c| c.pci)), (None, Some(1)));
        assert_eq!(
            ask(&mut m, &e, "AT+QNWLOCK=\"common/4g\",1,1350,504", 700),
            ["+CME ERROR: 50"]
        );
        assert_eq!(m.counters().locks, 2);
    }

    #[test]
    fn cfun_rf_off_reselect_and_reset() {
        let e = env(vec![(0, vec![cell(1, 1500, -80.0, 20.0)])]);
        let mut m = SimCore::new(fast(Profile::Rm520n), 0);
        run_to(&mut m, &e, 0, 100);
        assert_eq!(ask(&mut m, &e, "AT+CFUN=?", 100)[0], "+CFUN: (0,1,4),(0,1)");
        let r = m.command("AT+CFUN=4", ms(100), &e);
        assert_eq!(r.delay, ms(1000));
        assert_eq!(ask(&mut m, &e, "AT+CFUN?", 100)[0], "+CFUN: 4");
        run_to(&mut m, &e, 100, 1000);
        assert!(m.status(ms(1000), &e).serving.is_none());
        assert_eq!(ask(&mut m, &e, "AT+CEREG?", 1000)[0], "+CEREG: 0,0");
        ask(&mut m, &e, "AT+CFUN=1", 1000);
        assert_eq!(m.status(ms(1100), &e).outage_until, Some(ms(1200)));
        run_to(&mut m, &e, 1000, 1300);
        assert!(m.status(ms(1300), &e).attached);
        // Reset: silent until RDY.
        assert_eq!(ask(&mut m, &e, "AT+CFUN=1,1", 1300), ["OK"]);
        assert_eq!(m.command("AT", ms(2000), &e), Reply::default());
        let urcs = run_to(&mut m, &e, 2000, 9400);
        assert!(urcs.contains("\r\nRDY\r\n\r\n+CPIN: READY\r\n"), "{urcs:?}");
        assert_eq!(ask(&mut m, &e, "AT", 9400), ["OK"]);
        // nwscanmode: GSM only means no LTE service.
        assert_eq!(
            ask(&mut m, &e, "AT+QCFG=\"nwscanmode\"", 9400)[0],
            "+QCFG: \"nwscanmode\",0"
        );
        assert_eq!(ask(&mut m, &e, "AT+QCFG=\"nwscanmode\",1,1", 9400), ["OK"]);
        run_to(&mut m, &e, 9400, 9500);
        assert!(m.status(ms(9500), &e).serving.is_none());
    }

    #[test]
    fn indications_and_faults() {
        let e = env(vec![
            (0, vec![cell(1, 1500, -80.0, 20.0)]),
            (2000, vec![cell(1, 1500, -100.0, 5.0)]),
        ]);
        let mut m = SimCore::new(fast(Profile::Ec25), 0);
        run_to(&mut m, &e, 0, 100);
        ask(&mut m, &e, "AT+QINDCFG=\"act\",1", 100);
        ask(&mut m, &e, "AT+QINDCFG=\"csq\",1,0", 100);
        let urcs = run_to(&mut m, &e, 100, 200);
        assert!(urcs.contains("+QIND: \"act\",\"LTE\""), "{urcs:?}");
        assert!(urcs.contains("+QIND: \"csq\",30,99"), "{urcs:?}");
        let urcs = run_to(&mut m, &e, 2000, 2100);
        assert!(urcs.contains("+QIND: \"csq\",20,99"), "{urcs:?}");
        m.fail_next(3);
        assert_eq!(ask(&mut m, &e, "AT+CSQ", 2100), ["+CME ERROR: 3"]);
        m.swallow_next();
        let r = m.command("AT+CSQ", ms(2100), &e);
        assert!(r.bytes.is_empty() && !r.echo.is_empty());
        m.inject_urc_in_response("+QIND: \"csq\",5,99");
        assert_eq!(
            ask(&mut m, &e, "AT+CSQ", 2100),
            ["+CSQ: 20,99", "+QIND: \"csq\",5,99", "OK"]
        );
        m.inject_garbage(b"\xff\x00noise");
        assert!(m.tick(ms(2100), &e).starts_with(b"\xff\x00noise\r\n"));
        assert_eq!(m.command("hello", ms(2100), &e).bytes, b"");
        assert_eq!(m.counters().ignored, 1);
    }

    #[test]
    fn scan_answers_after_scan_time() {
        let e = env(vec![(0, vec![cell(1, 1500, -80.0, 20.0)])]);
        let mut m = SimCore::new(SimConfig::new(Profile::Ec25), 0);
        m.tick(ms(0), &e);
        let r = m.command("AT+COPS=?", ms(0), &e);
        assert_eq!(r.delay, Duration::from_secs(180));
        assert!(
            String::from_utf8_lossy(&r.bytes).contains(
                "+COPS: (2,\"Pit Mobile\",\"Pit Mobile\",\"22288\",7),,(0,1,2,3,4),(0,1,2)"
            )
        );
        assert_eq!(m.counters().scans, 1);
        let mut split = LineSplitter::default();
        assert_eq!(split.feed(b"AT\r\nAT+C"), ["AT"]);
        assert_eq!(split.feed(b"SQ\r"), ["AT+CSQ"]);
        let long = vec![b'A'; 2000];
        let l = split.feed(&[long.as_slice(), b"\r"].concat());
        assert_eq!(l.len(), 1);
        assert!(l[0].ends_with('…'));
    }

    proptest! {
        #[test]
        fn splitter_is_bounded_and_loses_no_line(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..700), 0..8)) {
            let mut split = LineSplitter::default();
            let mut lines = 0;
            for c in &chunks {
                for l in split.feed(c) {
                    // Lossy UTF-8 may triple a byte; the cut adds one character.
                    prop_assert!(l.len() <= MAX_LINE * 3 + '…'.len_utf8());
                    prop_assert!(!l.is_empty());
                    lines += 1;
                }
                prop_assert!(split.buf.len() <= MAX_LINE);
            }
            let ends = chunks.concat().iter().filter(|b| **b == b'\r' || **b == b'\n').count();
            prop_assert!(lines <= ends);
        }

        #[test]
        fn no_line_panics(lines in proptest::collection::vec(
            prop_oneof![
                ".{0,80}",
                "AT\\+[A-Z]{1,8}[=?]?[\"a-z0-9/,]{0,30}",
                "AT\\+(QNWLOCK|CFUN|CEREG|CMEE|QCFG|QINDCFG|QENG)=[\"a-zA-Z0-9/,-]{0,30}",
            ],
            1..20,
        ), steps in proptest::collection::vec(0u64..500, 1..20)) {
            let e = env(vec![(0, vec![cell(1, 1500, -80.0, 20.0), cell(2, 1350, -99.0, 1.0)]), (3000, vec![])]);
            let mut m = SimCore::new(fast(Profile::Rm520n), 0);
            let mut now = 0;
            for (l, dt) in lines.iter().zip(steps.iter().cycle()) {
                now += dt;
                let r = m.command(l, ms(now), &e);
                prop_assert!(r.bytes.len() < 8192);
                let _ = m.tick(ms(now), &e);
                let _ = m.status(ms(now), &e);
            }
        }
    }
}

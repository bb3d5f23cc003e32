//! The tower policy (sans-IO): from each modem's serving and neighbour cells, each link's
//! transport figures and the car's position, decide which modem to lock to which cell, which
//! to release, or nothing. Every decision carries its reason.
//!
//! Rules (defaults from RADIO.md §1.4, all in [`PolicyConfig`]):
//! - **Hysteresis and time-to-trigger**: switch only when a neighbour beats the serving cell by
//!   ≥ 6 dB RSRP and ≥ 3 dB SINR, continuously for ≥ 5 s.
//! - **One at a time**: while one modem is re-attaching, no other is touched.
//! - **Dwell**: a modem that switched is left alone for 30 s.
//! - **Auto-release**: a locked modem with poor service (band Poor or worse) for 60 s, or
//!   unusable or no service for 5 s after its re-attach window, is released to its own cell
//!   selection.
//! - **Diversity**: a modem whose cell also serves a lower-numbered modem moves (after the
//!   time-to-trigger) to a free cell that is at least Fair and within 6 dB of its SINR.
//! - **Never the best link**: the modem carrying the best link (goodput) is not touched while
//!   every other link is worse.
//! - **Diversity**: a candidate cell already serving another of the car's modems pays
//!   `diversity_penalty_db` on its margins, so modems spread over towers.
//! - **Predictive**: when the learned map says the serving cell turns poor a few seconds ahead
//!   on the current heading, and a cell heard now is known to be good there, switch without
//!   waiting for the time-to-trigger.

use std::collections::VecDeque;
use std::time::Duration;

use modem_hal::radio::{Band, NeighbourCell, ServingCell};
use serde::{Deserialize, Serialize};

use super::map::{CellMap, Fix};

/// A cell as a lock addresses it (LTE: EARFCN + PCI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CellRef {
    /// Downlink EARFCN.
    pub earfcn: u32,
    /// Physical cell id.
    pub pci: u16,
}

impl std::fmt::Display for CellRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.earfcn, self.pci)
    }
}

/// One measured cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellObs {
    /// Which cell.
    pub cell: CellRef,
    /// RSRP in dBm.
    pub rsrp_dbm: f64,
    /// RSRQ in dB, when reported.
    pub rsrq_db: Option<f64>,
    /// SINR in dB, when reported.
    pub sinr_db: Option<f64>,
}

impl CellObs {
    /// The LTE band of these metrics.
    pub fn band(&self) -> Band {
        Band::lte(Some(self.rsrp_dbm), self.rsrq_db, self.sinr_db).unwrap_or(Band::Unusable)
    }

    /// An LTE serving cell as the modem reported it (`None` without EARFCN, PCI or RSRP).
    pub fn from_serving(s: &ServingCell) -> Option<Self> {
        Some(Self {
            cell: CellRef {
                earfcn: s.earfcn?,
                pci: s.pci?,
            },
            rsrp_dbm: s.rsrp_dbm?,
            rsrq_db: s.rsrq_db,
            sinr_db: s.sinr_db,
        })
    }

    /// An LTE neighbour as the modem reported it (`None` for other RATs or unmeasured lines).
    pub fn from_neighbour(n: &NeighbourCell) -> Option<Self> {
        if n.rat != "LTE" {
            return None;
        }
        Some(Self {
            cell: CellRef {
                earfcn: n.earfcn?,
                pci: n.pci?,
            },
            rsrp_dbm: n.rsrp_dbm?,
            rsrq_db: n.rsrq_db,
            sinr_db: n.sinr_db,
        })
    }
}

/// What one modem reports at one poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModemObs {
    /// The serving cell; `None` without service.
    pub serving: Option<CellObs>,
    /// Measured neighbours of the same carrier.
    pub neighbours: Vec<CellObs>,
}

/// What the policy asks of a modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Lock modem to cell.
    Lock {
        /// Modem index.
        modem: usize,
        /// The cell.
        cell: CellRef,
    },
    /// Release the modem's lock.
    Release {
        /// Modem index.
        modem: usize,
    },
}

impl Command {
    /// The modem it addresses.
    pub fn modem(&self) -> usize {
        match self {
            Self::Lock { modem, .. } | Self::Release { modem } => *modem,
        }
    }
}

/// A decision with its reason, as logged and shown by `pitlink towers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When (µs on the caller's clock).
    pub at_us: u64,
    /// What.
    #[serde(flatten)]
    pub command: Command,
    /// Why, in words.
    pub reason: String,
}

impl Decision {
    /// One line: when (s on the caller's clock), which modem, what and why.
    pub fn summary(&self) -> String {
        format!(
            "t={:.1}s modem {}: {:?}: {}",
            self.at_us as f64 / 1e6,
            self.command.modem(),
            self.command,
            self.reason
        )
    }
}

/// The policy's thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A neighbour must beat the serving RSRP by this much (dB).
    pub rsrp_margin_db: f64,
    /// ... and the serving SINR by this much (dB).
    pub sinr_margin_db: f64,
    /// ... continuously for this long.
    #[serde(rename = "time_to_trigger_ms", with = "humantime_serde_ms")]
    pub time_to_trigger: Duration,
    /// A modem is left alone this long after it switched.
    #[serde(rename = "min_dwell_ms", with = "humantime_serde_ms")]
    pub min_dwell: Duration,
    /// Release a locked modem after this long in band Poor or worse.
    #[serde(rename = "release_after_poor_ms", with = "humantime_serde_ms")]
    pub release_after_poor: Duration,
    /// How long a lock or release keeps the modem re-attaching (one modem at a time).
    #[serde(rename = "reattach_ms", with = "humantime_serde_ms")]
    pub reattach: Duration,
    /// Margin penalty of a cell that already serves another of the car's modems (dB).
    pub diversity_penalty_db: f64,
    /// A modem sharing its cell moves to a free Fair-or-better cell at most this much worse in
    /// SINR (dB).
    pub diversity_sinr_slack_db: f64,
    /// Release a locked modem after this long in band Unusable or without service (counted
    /// after the re-attach window of the lock).
    #[serde(rename = "release_after_unusable_ms", with = "humantime_serde_ms")]
    pub release_after_unusable: Duration,
    /// Use the learned map to switch ahead of a known bad stretch.
    pub predictive: bool,
    /// How far ahead (in time at the current speed) the map is consulted.
    #[serde(rename = "lookahead_ms", with = "humantime_serde_ms")]
    pub lookahead: Duration,
    /// A cell is locked only if heard at least this strongly now (dBm).
    pub min_lock_rsrp_dbm: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            rsrp_margin_db: 6.0,
            sinr_margin_db: 3.0,
            time_to_trigger: Duration::from_secs(5),
            min_dwell: Duration::from_secs(30),
            release_after_poor: Duration::from_secs(60),
            reattach: Duration::from_secs(10),
            diversity_penalty_db: 3.0,
            diversity_sinr_slack_db: 6.0,
            release_after_unusable: Duration::from_secs(5),
            predictive: true,
            lookahead: Duration::from_secs(4),
            min_lock_rsrp_dbm: -112.0,
        }
    }
}

/// Durations as integer milliseconds in config files and JSON.
mod humantime_serde_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What the policy knows of one modem.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModemView {
    /// Last report.
    pub obs: ModemObs,
    /// The cell this modem is locked to, if the policy locked it.
    pub locked: Option<CellRef>,
    /// Link goodput in bit/s (from the bond).
    pub goodput_bps: f64,
    /// Whether the link is up.
    pub link_up: bool,
    /// Whether the modem can be locked to a cell (false: never chosen for a lock).
    pub lockable: bool,
    /// The current best candidate, whether it is a diversity move (the timers of the two
    /// kinds are separate), and since when.
    #[serde(skip)]
    candidate: Option<(CellRef, bool, u64)>,
    /// Last switch (lock or release).
    #[serde(skip)]
    last_switch_us: Option<u64>,
    /// Since when service has been poor / absent.
    #[serde(skip)]
    poor_since_us: Option<u64>,
    #[serde(skip)]
    none_since_us: Option<u64>,
    #[serde(skip)]
    unusable_since_us: Option<u64>,
}

/// The policy.
#[derive(Debug)]
pub struct Policy {
    cfg: PolicyConfig,
    modems: Vec<ModemView>,
    busy_until_us: u64,
    fix: Option<Fix>,
    log: VecDeque<Decision>,
    log_cap: usize,
    switches: u64,
}

/// How far another candidate beats the serving cell.
#[derive(Debug, Clone, Copy)]
struct Beat {
    cell: CellRef,
    rsrp_gain: f64,
    sinr_gain: f64,
    /// Chosen to leave a cell shared with `Some(other modem)`, not by the margins.
    diversity: Option<usize>,
}

impl Policy {
    /// A policy for `modems` modems.
    pub fn new(cfg: PolicyConfig, modems: usize) -> Self {
        Self {
            cfg,
            modems: vec![
                ModemView {
                    lockable: true,
                    ..ModemView::default()
                };
                modems
            ],
            busy_until_us: 0,
            fix: None,
            log: VecDeque::new(),
            log_cap: 64,
            switches: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// A modem's latest report.
    pub fn observe(&mut self, now_us: u64, modem: usize, obs: ModemObs) {
        let Some(m) = self.modems.get_mut(modem) else {
            return;
        };
        let band = obs.serving.as_ref().map(CellObs::band);
        let since = |cond: bool, t: &mut Option<u64>| {
            if cond {
                t.get_or_insert(now_us);
            } else {
                *t = None;
            }
        };
        since(band.is_none(), &mut m.none_since_us);
        since(band.is_none_or(|b| b <= Band::Poor), &mut m.poor_since_us);
        since(
            band.is_none_or(|b| b == Band::Unusable),
            &mut m.unusable_since_us,
        );
        m.obs = obs;
    }

    /// A link's transport figures.
    pub fn link(&mut self, modem: usize, up: bool, goodput_bps: f64) {
        if let Some(m) = self.modems.get_mut(modem) {
            m.link_up = up;
            m.goodput_bps = goodput_bps;
        }
    }

    /// Whether `modem` can be locked to a cell at all (probed capability).
    pub fn lockable(&mut self, modem: usize, lockable: bool) {
        if let Some(m) = self.modems.get_mut(modem) {
            m.lockable = lockable;
        }
    }

    /// The car's position.
    pub fn position(&mut self, fix: Fix) {
        self.fix = Some(fix);
    }

    /// A command failed (e.g. unsupported): the modem is left as it was.
    pub fn failed(&mut self, command: &Command) {
        if let Some(m) = self.modems.get_mut(command.modem())
            && let Command::Lock { .. } = command
        {
            m.locked = None;
        }
    }

    /// The modems as the policy sees them.
    pub fn modems(&self) -> &[ModemView] {
        &self.modems
    }

    /// The last decisions, oldest first.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.log.iter()
    }

    /// Locks and releases decided so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// What to do now: at most one command (one modem re-attaching at a time).
    pub fn decide(&mut self, now_us: u64, map: &CellMap) -> Option<Decision> {
        if now_us < self.busy_until_us {
            return None;
        }
        let d = self.release(now_us).or_else(|| self.switch(now_us, map))?;
        let m = &mut self.modems[d.command.modem()];
        m.last_switch_us = Some(now_us);
        m.candidate = None;
        m.poor_since_us = None;
        m.none_since_us = None;
        m.unusable_since_us = None;
        match d.command {
            Command::Lock { cell, .. } => m.locked = Some(cell),
            Command::Release { .. } => m.locked = None,
        }
        self.busy_until_us = now_us + self.cfg.reattach.as_micros() as u64;
        self.switches += 1;
        if self.log.len() == self.log_cap {
            self.log.pop_front();
        }
        self.log.push_back(d.clone());
        tracing::info!(
            modem = d.command.modem(),
            "tower policy: {:?}: {}",
            d.command,
            d.reason
        );
        Some(d)
    }

    fn dwelling(&self, m: &ModemView, now_us: u64) -> bool {
        m.last_switch_us
            .is_some_and(|t| now_us.saturating_sub(t) < self.cfg.min_dwell.as_micros() as u64)
    }

    fn release(&self, now_us: u64) -> Option<Decision> {
        let us = |d: Duration| d.as_micros() as u64;
        self.modems.iter().enumerate().find_map(|(i, m)| {
            let cell = m.locked?;
            let reason = if let Some(t) = m.none_since_us
                && now_us.saturating_sub(t) >= us(self.cfg.release_after_unusable)
            {
                format!(
                    "locked to {cell} but without service for {:.0} s",
                    (now_us - t) as f64 / 1e6
                )
            } else if let Some(t) = m.unusable_since_us
                && now_us.saturating_sub(t) >= us(self.cfg.release_after_unusable)
            {
                format!(
                    "locked to {cell} with unusable service for {:.0} s",
                    (now_us - t) as f64 / 1e6
                )
            } else if let Some(t) = m.poor_since_us
                && now_us.saturating_sub(t) >= us(self.cfg.release_after_poor)
            {
                format!(
                    "locked to {cell} with poor service for {:.0} s",
                    (now_us - t) as f64 / 1e6
                )
            } else {
                return None;
            };
            Some(Decision {
                at_us: now_us,
                command: Command::Release { modem: i },
                reason,
            })
        })
    }

    /// The index of the modem carrying the best link, if every other link is worse.
    fn best_link(&self) -> Option<usize> {
        let (best, g) = self
            .modems
            .iter()
            .enumerate()
            .filter(|(_, m)| m.link_up)
            .max_by(|a, b| a.1.goodput_bps.total_cmp(&b.1.goodput_bps))?;
        let others_worse = self
            .modems
            .iter()
            .enumerate()
            .all(|(i, m)| i == best || !m.link_up || m.goodput_bps < g.goodput_bps);
        others_worse.then_some(best)
    }

    /// Whether `cell` serves another of the car's modems.
    fn shared(&self, modem: usize, cell: CellRef) -> bool {
        self.modems
            .iter()
            .enumerate()
            .any(|(i, m)| i != modem && m.obs.serving.is_some_and(|s| s.cell == cell))
    }

    /// The neighbour that beats the serving cell by the margins (diversity-adjusted), best
    /// first; else, when the serving cell is shared with a lower-numbered modem, a neighbour
    /// nobody uses that is within `diversity_sinr_slack_db` of the serving SINR and at least Fair
    /// (two modems on one cell split its capacity; one of them moves).
    fn best_beat(&self, modem: usize) -> Option<Beat> {
        let m = &self.modems[modem];
        let s = m.obs.serving?;
        let s_sinr = s.sinr_db?;
        let usable = |n: &&CellObs| {
            n.cell != s.cell && Some(n.cell) != m.locked && n.rsrp_dbm >= self.cfg.min_lock_rsrp_dbm
        };
        let by_margin = m
            .obs
            .neighbours
            .iter()
            .filter(usable)
            .filter_map(|n| {
                let penalty = if self.shared(modem, n.cell) {
                    self.cfg.diversity_penalty_db
                } else {
                    0.0
                };
                let rsrp_gain = n.rsrp_dbm - s.rsrp_dbm - penalty;
                let sinr_gain = n.sinr_db? - s_sinr - penalty;
                (rsrp_gain >= self.cfg.rsrp_margin_db && sinr_gain >= self.cfg.sinr_margin_db)
                    .then_some(Beat {
                        cell: n.cell,
                        rsrp_gain,
                        sinr_gain,
                        diversity: None,
                    })
            })
            .max_by(|a, b| a.sinr_gain.total_cmp(&b.sinr_gain));
        if by_margin.is_some() {
            return by_margin;
        }
        let sharer = self.modems[..modem]
            .iter()
            .position(|o| o.obs.serving.is_some_and(|x| x.cell == s.cell))?;
        m.obs
            .neighbours
            .iter()
            .filter(usable)
            .filter(|n| !self.shared(modem, n.cell) && n.band() >= Band::Fair)
            .filter_map(|n| {
                let sinr_gain = n.sinr_db? - s_sinr;
                (sinr_gain >= -self.cfg.diversity_sinr_slack_db).then_some(Beat {
                    cell: n.cell,
                    rsrp_gain: n.rsrp_dbm - s.rsrp_dbm,
                    sinr_gain,
                    diversity: Some(sharer),
                })
            })
            .max_by(|a, b| a.sinr_gain.total_cmp(&b.sinr_gain))
    }

    /// A cell heard now that the map says will be good ahead while the serving cell will not.
    fn predicted(&self, modem: usize, map: &CellMap) -> Option<(CellRef, String)> {
        if !self.cfg.predictive {
            return None;
        }
        let fix = self.fix?;
        let ahead = fix.ahead(self.cfg.lookahead);
        let m = &self.modems[modem];
        let s = m.obs.serving?;
        let serving_ahead = map.at(&ahead, s.cell)?;
        if serving_ahead.band() > Band::Poor {
            return None;
        }
        m.obs
            .neighbours
            .iter()
            .filter(|n| n.cell != s.cell && n.rsrp_dbm >= self.cfg.min_lock_rsrp_dbm)
            .filter(|n| !self.shared(modem, n.cell))
            .filter_map(|n| {
                let there = map.at(&ahead, n.cell)?;
                (there.band() >= Band::Fair
                    && there.rsrp_dbm - serving_ahead.rsrp_dbm >= self.cfg.rsrp_margin_db
                    && there.sinr_db - serving_ahead.sinr_db >= self.cfg.sinr_margin_db)
                    .then_some((n.cell, there))
            })
            .max_by(|a, b| a.1.sinr_db.total_cmp(&b.1.sinr_db))
            .map(|(cell, there)| {
                (
                    cell,
                    format!(
                        "predictive: {} ahead the map has serving {} at {:.0} dBm / {:.0} dB and {cell} at {:.0} dBm / {:.0} dB",
                        humanize(self.cfg.lookahead),
                        s.cell,
                        serving_ahead.rsrp_dbm,
                        serving_ahead.sinr_db,
                        there.rsrp_dbm,
                        there.sinr_db
                    ),
                )
            })
    }

    fn switch(&mut self, now_us: u64, map: &CellMap) -> Option<Decision> {
        let best = self.best_link();
        let ttt = self.cfg.time_to_trigger.as_micros() as u64;
        let mut chosen: Option<(usize, CellRef, String, f64)> = None;
        for i in 0..self.modems.len() {
            // Keep the time-to-trigger timers running for every modem.
            let beat = self.best_beat(i);
            let m = &mut self.modems[i];
            m.candidate = match (beat, m.candidate) {
                (Some(b), Some((c, div, since))) if c == b.cell && div == b.diversity.is_some() => {
                    Some((c, div, since))
                }
                (Some(b), _) => Some((b.cell, b.diversity.is_some(), now_us)),
                (None, _) => None,
            };
            let m = &self.modems[i];
            if !m.lockable || self.dwelling(m, now_us) || Some(i) == best {
                continue;
            }
            let pick = match (beat, m.candidate) {
                (Some(b), Some((_, _, since)))
                    if now_us.saturating_sub(since) >= ttt && b.diversity.is_some() =>
                {
                    Some((
                        b.cell,
                        format!(
                            "diversity: serving {} is shared with modem {}; {} is {} ({:+.1} dB SINR) for {:.1} s",
                            m.obs.serving.map_or("?".into(), |s| s.cell.to_string()),
                            b.diversity.unwrap_or_default(),
                            b.cell,
                            format!(
                                "{:?}",
                                m.obs
                                    .neighbours
                                    .iter()
                                    .find(|n| n.cell == b.cell)
                                    .map_or(Band::Fair, CellObs::band)
                            )
                            .to_lowercase(),
                            b.sinr_gain,
                            (now_us - since) as f64 / 1e6
                        ),
                        // Below any margin switch of another modem.
                        b.sinr_gain.min(0.0) - 100.0,
                    ))
                }
                (Some(b), Some((_, _, since))) if now_us.saturating_sub(since) >= ttt => Some((
                    b.cell,
                    format!(
                        "{} beats serving {} by {:.1} dB RSRP and {:.1} dB SINR for {:.1} s",
                        b.cell,
                        m.obs.serving.map_or("?".into(), |s| s.cell.to_string()),
                        b.rsrp_gain,
                        b.sinr_gain,
                        (now_us - since) as f64 / 1e6
                    ),
                    b.sinr_gain,
                )),
                _ => self
                    .predicted(i, map)
                    .map(|(cell, why)| (cell, why, f64::INFINITY)),
            };
            if let Some((cell, why, gain)) = pick
                && chosen.as_ref().is_none_or(|c| gain > c.3)
            {
                chosen = Some((i, cell, why, gain));
            }
        }
        let (modem, cell, reason, _) = chosen?;
        Some(Decision {
            at_us: now_us,
            command: Command::Lock { modem, cell },
            reason,
        })
    }
}

fn humanize(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn cell(earfcn: u32, pci: u16, rsrp: f64, sinr: f64) -> CellObs {
        CellObs {
            cell: CellRef { earfcn, pci },
            rsrp_dbm: rsrp,
            rsrq_db: Some(-10.0),
            sinr_db: Some(sinr),
        }
    }

    fn obs(serving: Option<CellObs>, neighbours: &[CellObs]) -> ModemObs {
        ModemObs {
            serving,
            neighbours: neighbours.to_vec(),
        }
    }

    /// Three modems; modem 0 carries the best link unless said otherwise.
    fn policy() -> Policy {
        let mut p = Policy::new(PolicyConfig::default(), 3);
        for (i, g) in [(0, 30e6), (1, 10e6), (2, 10e6)] {
            p.link(i, true, g);
        }
        p
    }

    /// Feeds `o` to modem 1 every second from `from` to `to` (s) and returns the decisions.
    fn run(p: &mut Policy, modem: usize, o: &ModemObs, from: u64, to: u64) -> Vec<(u64, Decision)> {
        let map = CellMap::new(1000);
        let mut out = Vec::new();
        for t in from..=to {
            p.observe(t * S, modem, o.clone());
            if let Some(d) = p.decide(t * S, &map) {
                out.push((t, d));
            }
        }
        out
    }

    #[test]
    fn hysteresis_a_neighbour_must_beat_both_margins() {
        let mut p = policy();
        let serving = cell(1300, 1, -100.0, 5.0);
        // 5 dB RSRP only: not enough.
        let o = obs(Some(serving), &[cell(1300, 2, -95.0, 12.0)]);
        assert!(run(&mut p, 1, &o, 0, 20).is_empty());
        // 8 dB RSRP but 2 dB SINR: not enough.
        let o = obs(Some(serving), &[cell(1300, 2, -92.0, 7.0)]);
        assert!(run(&mut p, 1, &o, 21, 40).is_empty());
        // Both margins.
        let o = obs(Some(serving), &[cell(1300, 2, -92.0, 9.0)]);
        let d = run(&mut p, 1, &o, 41, 60);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].1.command,
            Command::Lock {
                modem: 1,
                cell: CellRef {
                    earfcn: 1300,
                    pci: 2
                }
            }
        );
        assert!(d[0].1.reason.contains("beats serving"), "{}", d[0].1.reason);
    }

    #[test]
    fn time_to_trigger_needs_the_margin_continuously() {
        let mut p = policy();
        let serving = cell(1300, 1, -100.0, 5.0);
        let better = obs(Some(serving), &[cell(1300, 2, -90.0, 12.0)]);
        let plain = obs(Some(serving), &[cell(1300, 2, -99.0, 5.0)]);
        // 4 s better, 1 s not, 4 s better: never 5 s in a row.
        assert!(run(&mut p, 1, &better, 0, 3).is_empty());
        assert!(run(&mut p, 1, &plain, 4, 4).is_empty());
        assert!(run(&mut p, 1, &better, 5, 8).is_empty());
        let d = run(&mut p, 1, &better, 9, 20);
        assert_eq!(d[0].0, 10, "5 s after the margin held from t = 5");
    }

    #[test]
    fn dwell_and_one_modem_at_a_time() {
        let mut p = policy();
        let o1 = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        let o2 = obs(
            Some(cell(1300, 5, -100.0, 5.0)),
            &[cell(1300, 6, -90.0, 12.0)],
        );
        let map = CellMap::new(10);
        let mut decisions = Vec::new();
        for t in 0..=40 {
            p.observe(t * S, 1, o1.clone());
            p.observe(t * S, 2, o2.clone());
            if let Some(d) = p.decide(t * S, &map) {
                decisions.push((t, d.command.modem()));
            }
        }
        // Both qualify at t = 5; one goes, the other waits for the re-attach window.
        assert_eq!(decisions[0].0, 5);
        assert_eq!(decisions[1].0, 15, "{decisions:?}");
        assert_ne!(decisions[0].1, decisions[1].1);
        // The first modem still reports its old cell with the locked one beating it: the lock
        // is in place, nothing more is asked.
        let first = decisions[0].1;
        assert_eq!(
            decisions.iter().filter(|d| d.1 == first).count(),
            1,
            "{decisions:?}"
        );
        // Now camped on the locked cell, a third cell beats it: not before the 30 s dwell.
        let o3 = obs(
            Some(cell(1300, 2, -100.0, 5.0)),
            &[cell(1300, 3, -90.0, 12.0)],
        );
        let mut later = Vec::new();
        for t in 41..=80 {
            p.observe(t * S, first, o3.clone());
            if let Some(d) = p.decide(t * S, &map) {
                later.push((t, d.command.modem()));
            }
        }
        assert_eq!(
            later,
            vec![(46, first)],
            "5 s time-to-trigger after t = 41, dwell over at 35"
        );
    }

    #[test]
    fn dwell_holds_a_modem_that_just_switched() {
        let mut p = policy();
        let o = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        assert_eq!(run(&mut p, 1, &o, 0, 5).len(), 1);
        let o3 = obs(
            Some(cell(1300, 2, -100.0, 5.0)),
            &[cell(1300, 3, -90.0, 12.0)],
        );
        let d = run(&mut p, 1, &o3, 6, 60);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 35, "dwell of 30 s after the switch at t = 5");
    }

    #[test]
    fn never_the_modem_carrying_the_best_link() {
        let mut p = policy();
        let o = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        assert!(
            run(&mut p, 0, &o, 0, 30).is_empty(),
            "modem 0 has the best link"
        );
        // Once another link is at least as good, modem 0 may switch.
        p.link(1, true, 40e6);
        assert_eq!(run(&mut p, 0, &o, 31, 40).len(), 1);
    }

    #[test]
    fn auto_release_after_poor_or_no_service() {
        let mut p = policy();
        let o = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        let d = run(&mut p, 1, &o, 0, 5);
        assert_eq!(d.len(), 1);
        assert_eq!(p.modems()[1].locked.map(|c| c.pci), Some(2));
        // The locked cell turns poor: released 60 s later.
        let poor = obs(Some(cell(1300, 2, -112.0, -1.0)), &[]);
        let d = run(&mut p, 1, &poor, 6, 80);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, 66);
        assert_eq!(d[0].1.command, Command::Release { modem: 1 });
        assert!(d[0].1.reason.contains("poor service"), "{}", d[0].1.reason);
        assert_eq!(p.modems()[1].locked, None);
        // Locked again (t = 115), then no service at all: released 5 s after the re-attach
        // window of the lock (t = 125) at the earliest, counted from the first report.
        let d = run(&mut p, 1, &o, 110, 120);
        assert_eq!(d.len(), 1);
        let d = run(&mut p, 1, &obs(None, &[]), 121, 140);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 126);
        assert!(d[0].1.reason.contains("without service"));
    }

    #[test]
    fn unusable_service_releases_sooner_than_poor() {
        let mut p = policy();
        let o = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        assert_eq!(run(&mut p, 1, &o, 0, 5).len(), 1);
        let unusable = obs(Some(cell(1300, 2, -118.0, -5.0)), &[]);
        let d = run(&mut p, 1, &unusable, 6, 40);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].0, 15,
            "re-attach window to t = 15, unusable since t = 6"
        );
        assert!(d[0].1.reason.contains("unusable"), "{}", d[0].1.reason);
    }

    #[test]
    fn a_modem_sharing_a_cell_moves_to_a_free_fair_cell() {
        let mut p = policy();
        let shared = cell(1300, 1, -90.0, 12.0);
        // Modem 1 shares pci 1 with modem 0 (lower number: it stays).
        p.observe(0, 0, obs(Some(shared), &[]));
        // pci 3 is free, Good, 4 dB worse in SINR: worth it to stop splitting the cell.
        let o = obs(Some(shared), &[cell(1300, 3, -93.0, 8.0)]);
        let d = run(&mut p, 1, &o, 0, 10);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 5);
        assert_eq!(
            d[0].1.command,
            Command::Lock {
                modem: 1,
                cell: CellRef {
                    earfcn: 1300,
                    pci: 3
                }
            }
        );
        assert!(d[0].1.reason.starts_with("diversity"), "{}", d[0].1.reason);
        // Modem 0 (the lower number) never moves for diversity; a poor free cell is no reason.
        let mut q = policy();
        q.link(1, true, 50e6);
        q.observe(0, 1, obs(Some(shared), &[]));
        let poor = obs(Some(shared), &[cell(1300, 3, -112.0, -1.0)]);
        assert!(
            run(
                &mut q,
                2,
                &obs(Some(shared), &[cell(1300, 4, -112.0, -1.0)]),
                0,
                10
            )
            .is_empty()
        );
        assert!(run(&mut q, 0, &poor, 0, 10).is_empty());
    }

    #[test]
    fn a_modem_that_cannot_lock_is_never_chosen() {
        let mut p = policy();
        p.lockable(1, false);
        let o = obs(
            Some(cell(1300, 1, -100.0, 5.0)),
            &[cell(1300, 2, -90.0, 12.0)],
        );
        assert!(run(&mut p, 1, &o, 0, 60).is_empty());
    }

    #[test]
    fn an_unlocked_modem_is_never_released() {
        let mut p = policy();
        assert!(run(&mut p, 1, &obs(None, &[]), 0, 200).is_empty());
    }

    #[test]
    fn diversity_prefers_a_cell_no_other_modem_uses() {
        let mut p = policy();
        let shared = cell(1300, 7, -90.0, 12.0);
        let other = cell(1300, 8, -92.0, 11.0);
        // Modem 2 is served by pci 7.
        p.observe(0, 2, obs(Some(shared), &[]));
        let o = obs(Some(cell(1300, 1, -100.0, 5.0)), &[shared, other]);
        let d = run(&mut p, 1, &o, 0, 10);
        assert_eq!(
            d[0].1.command,
            Command::Lock {
                modem: 1,
                cell: other.cell
            },
            "pci 7 loses its 2 dB lead to the 3 dB diversity penalty"
        );
    }

    #[test]
    fn predictive_switches_before_a_known_bad_stretch() {
        let mut p = policy();
        let mut map = CellMap::new(1000);
        let here = Fix {
            lat: 47.3,
            lon: 8.5,
            speed_mps: 50.0,
            heading_deg: 90.0,
        };
        let ahead = here.ahead(p.config().lookahead);
        let s = CellRef {
            earfcn: 1300,
            pci: 1,
        };
        let n = CellRef {
            earfcn: 1850,
            pci: 9,
        };
        for _ in 0..5 {
            map.record(&ahead, s, -113.0, -2.0, None);
            map.record(&ahead, n, -95.0, 12.0, None);
        }
        p.position(here);
        // Now the serving cell is still fine and the neighbour is not better by the margins.
        let o = obs(
            Some(cell(1300, 1, -98.0, 8.0)),
            &[cell(1850, 9, -100.0, 6.0)],
        );
        p.observe(0, 1, o.clone());
        let d = p.decide(0, &map).expect("switch ahead of the bad stretch");
        assert_eq!(d.command, Command::Lock { modem: 1, cell: n });
        assert!(d.reason.starts_with("predictive"), "{}", d.reason);
        // Without the map's knowledge, nothing happens.
        let mut q = policy();
        q.position(here);
        q.observe(0, 1, o);
        assert!(q.decide(0, &CellMap::new(10)).is_none());
    }

    #[test]
    fn the_decision_log_is_bounded() {
        let mut p = policy();
        p.log_cap = 3;
        let map = CellMap::new(10);
        for k in 0..10u64 {
            let t0 = k * 100;
            let pci = (k % 2) as u16;
            let o = obs(
                Some(cell(1300, pci, -100.0, 5.0)),
                &[cell(1300, 1 - pci, -90.0, 12.0)],
            );
            for t in t0..t0 + 10 {
                p.observe(t * S, 1, o.clone());
                let _ = p.decide(t * S, &map);
            }
        }
        assert_eq!(p.decisions().count(), 3);
        assert_eq!(p.switches(), 10);
    }
}

//! Tower intelligence: radio-driven cell switching per modem ([`policy`]) with a learned,
//! per-location cell map ([`map`]). Both are sans-IO. [`Towers`] ties them together behind one
//! input type, [`Input`], so the daemon, the track benchmark and the replay test drive exactly
//! the same decisions; a run's inputs can be recorded as JSON lines and replayed.

pub mod map;
pub mod policy;
#[cfg(test)]
mod replay_tests;

use serde::{Deserialize, Serialize};

use self::map::{CellMap, Fix};
use self::policy::{Command, Decision, ModemObs, Policy, PolicyConfig};

/// One input of the tower logic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum Input {
    /// A GPS fix.
    Fix {
        /// The fix.
        fix: Fix,
    },
    /// A link's transport figures.
    Link {
        /// Modem index.
        modem: usize,
        /// Link up.
        up: bool,
        /// Goodput, bit/s.
        goodput_bps: f64,
    },
    /// A modem's cells.
    Report {
        /// When, µs.
        at_us: u64,
        /// Modem index.
        modem: usize,
        /// Serving and neighbour cells.
        obs: ModemObs,
    },
    /// Whether a modem can be locked to a cell (its probed capabilities).
    Lockable {
        /// Modem index.
        modem: usize,
        /// It can.
        lockable: bool,
    },
    /// A command the modem refused.
    Failed {
        /// The command.
        command: Command,
    },
    /// Time to decide.
    Decide {
        /// When, µs.
        at_us: u64,
    },
}

/// The policy and its map, fed by [`Input`]s.
#[derive(Debug)]
pub struct Towers {
    policy: Policy,
    map: CellMap,
    fix: Option<Fix>,
    goodput: Vec<f64>,
}

impl Towers {
    /// Tower logic for `modems` modems with `map` (possibly loaded from its state file).
    pub fn new(cfg: PolicyConfig, modems: usize, map: CellMap) -> Self {
        Self {
            policy: Policy::new(cfg, modems),
            map,
            fix: None,
            goodput: vec![0.0; modems],
        }
    }

    /// Applies one input; a `Decide` may return a decision to carry out.
    pub fn apply(&mut self, input: &Input) -> Option<Decision> {
        match input {
            Input::Fix { fix } => {
                self.fix = Some(*fix);
                self.policy.position(*fix);
            }
            Input::Link {
                modem,
                up,
                goodput_bps,
            } => {
                if let Some(g) = self.goodput.get_mut(*modem) {
                    *g = *goodput_bps;
                }
                self.policy.link(*modem, *up, *goodput_bps);
            }
            Input::Report { at_us, modem, obs } => {
                if let Some(fix) = self.fix {
                    if let Some(s) = obs.serving
                        && let Some(sinr) = s.sinr_db
                    {
                        let g = self.goodput.get(*modem).copied();
                        self.map.record(&fix, s.cell, s.rsrp_dbm, sinr, g);
                    }
                    for n in &obs.neighbours {
                        if let Some(sinr) = n.sinr_db {
                            self.map.record(&fix, n.cell, n.rsrp_dbm, sinr, None);
                        }
                    }
                }
                self.policy.observe(*at_us, *modem, obs.clone());
            }
            Input::Lockable { modem, lockable } => self.policy.lockable(*modem, *lockable),
            Input::Failed { command } => self.policy.failed(command),
            Input::Decide { at_us } => return self.policy.decide(*at_us, &self.map),
        }
        None
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The learned map.
    pub fn map(&self) -> &CellMap {
        &self.map
    }

    /// The learned map, to save it.
    pub fn into_map(self) -> CellMap {
        self.map
    }
}

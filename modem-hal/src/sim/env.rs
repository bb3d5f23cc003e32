//! The radio environment a simulated modem reads: which cells of its carrier it hears at an
//! instant, and how strongly. The track world implements it from the car's position; tests use
//! [`ScriptedEnv`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The SIM in a simulated modem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCard {
    /// Carrier name (`AT+QSPN`, `AT+COPS?`).
    pub operator: String,
    /// Mobile country code.
    pub mcc: u16,
    /// Mobile network code.
    pub mnc: u16,
    /// Whether the MNC is written with three digits.
    pub mnc_3_digits: bool,
}

/// One LTE cell as one modem hears it at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeardCell {
    /// Index of the tower in the world (the link emulator looks capacity up by it).
    pub tower: usize,
    /// Tracking area code.
    pub tac: u32,
    /// E-UTRAN cell identity (28 bits).
    pub cell_id: u64,
    /// Physical cell id (0..=503).
    pub pci: u16,
    /// Downlink EARFCN.
    pub earfcn: u32,
    /// E-UTRA band.
    pub band: u16,
    /// Downlink bandwidth in MHz (1.4, 3, 5, 10, 15 or 20).
    pub bandwidth_mhz: f64,
    /// RSRP in dBm.
    pub rsrp_dbm: f64,
    /// RSRQ in dB.
    pub rsrq_db: f64,
    /// RSSI in dBm.
    pub rssi_dbm: f64,
    /// SINR in dB.
    pub sinr_db: f64,
}

/// What modems hear. `t` is the time since the world started.
pub trait RadioEnv: Send + Sync + std::fmt::Debug {
    /// The SIM of modem `modem`.
    fn sim(&self, modem: usize) -> SimCard;
    /// The cells of modem `modem`'s carrier it hears at `t`, strongest RSRP first; empty
    /// means no coverage.
    fn heard(&self, modem: usize, t: Duration) -> Vec<HeardCell>;
}

impl<T: RadioEnv + ?Sized> RadioEnv for Arc<T> {
    fn sim(&self, modem: usize) -> SimCard {
        (**self).sim(modem)
    }
    fn heard(&self, modem: usize, t: Duration) -> Vec<HeardCell> {
        (**self).heard(modem, t)
    }
}

/// A scripted environment for tests: one SIM for every modem, and a list of `(from, cells)`
/// steps; the cells of the last step whose `from` is ≤ `t` are heard.
#[derive(Debug, Clone)]
pub struct ScriptedEnv {
    /// The SIM of every modem.
    pub sim: SimCard,
    /// Steps in time order.
    pub steps: Vec<(Duration, Vec<HeardCell>)>,
}

impl RadioEnv for ScriptedEnv {
    fn sim(&self, _modem: usize) -> SimCard {
        self.sim.clone()
    }

    fn heard(&self, _modem: usize, t: Duration) -> Vec<HeardCell> {
        let mut cells = self
            .steps
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        cells.sort_by(|a, b| b.rsrp_dbm.total_cmp(&a.rsrp_dbm));
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(tower: usize, rsrp: f64) -> HeardCell {
        HeardCell {
            tower,
            tac: 0x77b8,
            cell_id: 0x4caa71f,
            pci: 28,
            earfcn: 1500,
            band: 3,
            bandwidth_mhz: 20.0,
            rsrp_dbm: rsrp,
            rsrq_db: -9.0,
            rssi_dbm: -56.0,
            sinr_db: 21.0,
        }
    }

    #[test]
    fn scripted_env_follows_its_steps_and_sorts_by_rsrp() {
        let env = ScriptedEnv {
            sim: SimCard {
                operator: "Test".into(),
                mcc: 222,
                mnc: 88,
                mnc_3_digits: false,
            },
            steps: vec![
                (Duration::ZERO, vec![cell(0, -100.0), cell(1, -80.0)]),
                (Duration::from_secs(10), vec![]),
            ],
        };
        let at = |s| env.heard(0, Duration::from_secs(s));
        assert_eq!(at(0).iter().map(|c| c.tower).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(at(9).len(), 2);
        assert!(at(10).is_empty());
    }
}

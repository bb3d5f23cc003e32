//! Synthetic generator: `channels` channels at `rate_hz`, each following a waveform.
//!
//! Deterministic: the value of a channel is a pure function of its index and the sample's
//! timestamp ([`Waveform::value`]), so a receiver can check every delivered value exactly.
//! Timestamps sit on an exact grid (`start_us + k * period_us`); the generator catches up on every
//! grid point that is due at `now`, so a late poll produces a burst, never a gap.

use crate::sample::Sample;
use serde::{Deserialize, Serialize};

/// Shape of a synthetic channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Waveform {
    /// `10·ch + 5·sin(2π·t / 1 s + ch)`.
    #[default]
    Sine,
    /// Rises from `10·ch` to `10·ch + 5` over one second, then restarts.
    Saw,
    /// `10·ch` or `10·ch + 5`, switching every half second.
    Square,
    /// Pseudo-random in `[10·ch, 10·ch + 5)`, a hash of channel and timestamp.
    Noise,
}

impl Waveform {
    /// All waveforms, for help texts and error messages.
    pub const ALL: [Waveform; 4] = [
        Waveform::Sine,
        Waveform::Saw,
        Waveform::Square,
        Waveform::Noise,
    ];

    /// The value of channel `channel` at time `t_us` (µs since the epoch).
    pub fn value(self, channel: u16, t_us: u64) -> f64 {
        let base = 10.0 * f64::from(channel);
        let phase_us = t_us % 1_000_000;
        match self {
            Waveform::Sine => {
                let x = phase_us as f64 / 1_000_000.0;
                base + 5.0 * (std::f64::consts::TAU * x + f64::from(channel)).sin()
            }
            Waveform::Saw => base + 5.0 * (phase_us as f64 / 1_000_000.0),
            Waveform::Square => {
                if phase_us < 500_000 {
                    base
                } else {
                    base + 5.0
                }
            }
            Waveform::Noise => {
                let h = splitmix64(t_us ^ (u64::from(channel) << 48));
                base + 5.0 * ((h >> 11) as f64 / (1u64 << 53) as f64)
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Waveform::Sine => "sine",
            Waveform::Saw => "saw",
            Waveform::Square => "square",
            Waveform::Noise => "noise",
        }
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Settings of one synthetic source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    pub channels: u16,
    pub rate_hz: u32,
    pub waveform: Waveform,
}

/// The generator's state machine. Feed it `now`; it returns the samples that are due.
#[derive(Debug)]
pub struct Synthetic {
    spec: SyntheticSpec,
    period_us: u64,
    start_us: u64,
    /// Index of the next grid point to emit.
    next_k: u64,
    emitted: u64,
}

impl Synthetic {
    /// A generator whose first sample is stamped `start_us`.
    ///
    /// `start_us` is rounded up to the sampling grid so that timestamps of all channels and all
    /// runs line up (`t % period == 0`). Rates that do not divide 1 s exactly are rounded to the
    /// nearest whole-microsecond period.
    pub fn new(spec: SyntheticSpec, start_us: u64) -> Self {
        let rate = u64::from(spec.rate_hz.max(1));
        let period_us = (1_000_000 + rate / 2) / rate;
        let period_us = period_us.max(1);
        let start_us = start_us.div_ceil(period_us) * period_us;
        Synthetic {
            spec,
            period_us,
            start_us,
            next_k: 0,
            emitted: 0,
        }
    }

    pub fn spec(&self) -> SyntheticSpec {
        self.spec
    }

    pub fn period_us(&self) -> u64 {
        self.period_us
    }

    /// Samples emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Time of the next grid point not yet emitted.
    pub fn next_due_us(&self) -> u64 {
        self.start_us + self.next_k * self.period_us
    }

    /// Appends to `out` every sample due at or before `now_us` (all channels of each grid point,
    /// in time order), at most `max_points` grid points. Returns how many samples were added.
    pub fn poll(&mut self, now_us: u64, max_points: u64, out: &mut Vec<Sample>) -> usize {
        let before = out.len();
        let mut points = 0;
        while points < max_points {
            let t_us = self.next_due_us();
            if t_us > now_us {
                break;
            }
            for ch in 0..self.spec.channels {
                out.push(Sample {
                    t_us,
                    channel: ch,
                    value: self.spec.waveform.value(ch, t_us),
                });
            }
            self.next_k += 1;
            points += 1;
        }
        let added = out.len() - before;
        self.emitted += added as u64;
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(channels: u16, rate_hz: u32) -> SyntheticSpec {
        SyntheticSpec {
            channels,
            rate_hz,
            waveform: Waveform::Sine,
        }
    }

    #[test]
    fn emits_every_grid_point_once_in_order() {
        let mut g = Synthetic::new(spec(3, 1000), 1_000_000_500);
        assert_eq!(
            g.next_due_us(),
            1_000_001_000,
            "start rounds up to the grid"
        );
        let mut out = Vec::new();
        assert_eq!(g.poll(1_000_000_999, u64::MAX, &mut out), 0);
        assert_eq!(g.poll(1_000_010_000, u64::MAX, &mut out), 30);
        let ts: Vec<u64> = out.iter().step_by(3).map(|s| s.t_us).collect();
        let want: Vec<u64> = (1..=10).map(|k| 1_000_000_000 + k * 1000).collect();
        assert_eq!(ts, want);
        assert_eq!(g.emitted(), 30);
    }

    #[test]
    fn max_points_bounds_a_burst() {
        let mut g = Synthetic::new(spec(2, 1000), 0);
        let mut out = Vec::new();
        assert_eq!(g.poll(1_000_000, 5, &mut out), 10);
        assert_eq!(g.next_due_us(), 5000);
    }

    #[test]
    fn waveforms_stay_in_their_band() {
        for w in Waveform::ALL {
            for ch in [0u16, 1, 7, 49] {
                for t in (0..2_000_000u64).step_by(37_003) {
                    let v = w.value(ch, t);
                    let base = 10.0 * f64::from(ch);
                    assert!(v >= base - 5.0 && v <= base + 5.0, "{w:?} ch{ch} t{t}: {v}");
                }
            }
        }
    }

    proptest! {
        /// However the polls are spaced, the union of their output is the exact grid.
        #[test]
        fn polling_pattern_does_not_change_output(steps in proptest::collection::vec(0u64..5000, 1..50)) {
            let mut a = Synthetic::new(spec(2, 1000), 7);
            let mut b = Synthetic::new(spec(2, 1000), 7);
            let mut out_a = Vec::new();
            let mut out_b = Vec::new();
            let mut now = 7;
            for s in &steps {
                now += s;
                a.poll(now, u64::MAX, &mut out_a);
            }
            b.poll(now, u64::MAX, &mut out_b);
            prop_assert_eq!(out_a, out_b);
        }
    }
}

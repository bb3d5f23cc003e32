//! The world of a [`Scenario`]: where the car is at time `t`, what each modem hears there
//! ([`RadioEnv`]) and what its link can carry ([`World::links`]). Pure functions of the scenario,
//! its seed and `t`: two worlds of one scenario agree to the bit.
//!
//! Model, per tower and position: RSRP = RS power − path loss (log-distance, floored by the
//! antenna height) + shadowing (value noise on a grid, correlated over
//! `shadowing_decorrelation_m`) + slow fading (interpolated per `fading_period_ms`) − dead-zone
//! attenuation. SINR counts every other cell on the same EARFCN as interference weighted by its
//! activity (reference signals plus its load) and the noise per resource element. RSRQ and RSSI
//! follow from the same powers. Capacity = min(cell cap, attenuated Shannon over the bandwidth)
//! × the share left by the cell's load, split between the car's modems on the same cell.

use std::f64::consts::PI;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::env::{HeardCell, RadioEnv, SimCard};
use super::scenario::{Scenario, bandwidth_rbs};

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.0;
/// Longest step of the precomputed lap table, in metres.
const STEP_M: f64 = 5.0;

/// Where the car is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Speed in m/s.
    pub speed_mps: f64,
    /// Heading in degrees clockwise from north.
    pub heading_deg: f64,
    /// Completed laps.
    pub lap: u64,
    /// Distance along the current lap in metres.
    pub lap_distance_m: f64,
}

/// What one modem's data link can do at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkQuality {
    /// Whether packets get through at all.
    pub up: bool,
    /// Throughput available to this link, in bit/s (0 when down).
    pub capacity_bps: f64,
    /// One-way latency including this instant's jitter.
    pub one_way_latency: Duration,
    /// SINR of the serving cell in dB (None without one).
    pub sinr_db: Option<f64>,
}

/// One sample of the lap table: time and distance at a point.
#[derive(Debug, Clone, Copy)]
struct LapSample {
    t: f64,
    s: f64,
    x: f64,
    y: f64,
    v: f64,
}

/// A scenario made ready to answer questions about any instant.
#[derive(Debug, Clone)]
pub struct World {
    scenario: Arc<Scenario>,
    origin: (f64, f64),
    kx: f64,
    lap: Vec<LapSample>,
    lap_time: f64,
    lap_length: f64,
    towers: Vec<TowerAt>,
    zones: Vec<(f64, f64, f64, f64)>,
    modem_carrier: Vec<usize>,
}

#[derive(Debug, Clone)]
struct TowerAt {
    x: f64,
    y: f64,
    carrier: usize,
    tac: u32,
    cell_id: u64,
    rbs: u32,
}

impl World {
    /// The world of `scenario` (already checked by [`Scenario::from_toml`]).
    pub fn new(scenario: Scenario) -> Self {
        let origin = (scenario.track.points[0].lat, scenario.track.points[0].lon);
        let kx = M_PER_DEG * origin.0.to_radians().cos();
        let xy = |lat: f64, lon: f64| ((lon - origin.1) * kx, (lat - origin.0) * M_PER_DEG);
        let carrier_index = |name: &str| {
            scenario
                .carriers
                .iter()
                .position(|c| c.name == name)
                .unwrap_or(0)
        };
        // The lap table: constant speed within each ≤ 5 m step.
        let pts = &scenario.track.points;
        let mut lap = Vec::new();
        let (mut t, mut s) = (0.0, 0.0);
        for i in 0..pts.len() {
            let a = pts[i];
            let b = pts[(i + 1) % pts.len()];
            let (ax, ay) = xy(a.lat, a.lon);
            let (bx, by) = xy(b.lat, b.lon);
            let len = (bx - ax).hypot(by - ay);
            let steps = (len / STEP_M).ceil().max(1.0) as usize;
            for k in 0..steps {
                let f0 = k as f64 / steps as f64;
                let f1 = (k + 1) as f64 / steps as f64;
                let v0 = (a.speed_kmh + (b.speed_kmh - a.speed_kmh) * f0) / 3.6;
                let v1 = (a.speed_kmh + (b.speed_kmh - a.speed_kmh) * f1) / 3.6;
                let v = (v0 + v1) / 2.0;
                lap.push(LapSample {
                    t,
                    s,
                    x: ax + (bx - ax) * f0,
                    y: ay + (by - ay) * f0,
                    v,
                });
                let d = len / steps as f64;
                s += d;
                t += d / v;
            }
        }
        let (x0, y0) = xy(pts[0].lat, pts[0].lon);
        lap.push(LapSample {
            t,
            s,
            x: x0,
            y: y0,
            v: pts[0].speed_kmh / 3.6,
        });
        let towers = scenario
            .towers
            .iter()
            .enumerate()
            .map(|(i, tw)| {
                let (x, y) = xy(tw.lat, tw.lon);
                let carrier = carrier_index(tw.carrier.get_ref());
                TowerAt {
                    x,
                    y,
                    carrier,
                    tac: tw
                        .tac
                        .unwrap_or(0x1000 + 0x100 * carrier as u32 + i as u32 / 4),
                    cell_id: tw
                        .cell_id
                        .unwrap_or(0x0100_0000 * (carrier as u64 + 1) + 0x100 * i as u64 + 1),
                    rbs: bandwidth_rbs(tw.bandwidth_mhz).unwrap_or(100),
                }
            })
            .collect();
        let zones = scenario
            .dead_zones
            .iter()
            .map(|z| {
                let (x, y) = xy(z.lat, z.lon);
                (x, y, z.radius_m, z.attenuation_db)
            })
            .collect();
        let modem_carrier = scenario
            .modems
            .iter()
            .map(|m| carrier_index(m.carrier.get_ref()))
            .collect();
        Self {
            origin,
            kx,
            lap_time: t,
            lap_length: s,
            lap,
            towers,
            zones,
            modem_carrier,
            scenario: Arc::new(scenario),
        }
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Time of one lap.
    pub fn lap_time(&self) -> Duration {
        Duration::from_secs_f64(self.lap_time)
    }

    /// Length of one lap in metres.
    pub fn lap_length_m(&self) -> f64 {
        self.lap_length
    }

    /// Number of modems.
    pub fn modems(&self) -> usize {
        self.modem_carrier.len()
    }

    /// Car position at `t` (x east, y north in metres from the first track point).
    fn xy_at(&self, t: Duration) -> (f64, f64, f64, f64, u64, f64) {
        let secs = t.as_secs_f64();
        let lap_no = (secs / self.lap_time).floor();
        let within = secs - lap_no * self.lap_time;
        let i = self
            .lap
            .partition_point(|p| p.t <= within)
            .saturating_sub(1)
            .min(self.lap.len() - 2);
        let (a, b) = (self.lap[i], self.lap[i + 1]);
        let f = ((within - a.t) / (b.t - a.t)).clamp(0.0, 1.0);
        let x = a.x + (b.x - a.x) * f;
        let y = a.y + (b.y - a.y) * f;
        let heading = (b.x - a.x).atan2(b.y - a.y).to_degrees().rem_euclid(360.0);
        let s = a.s + (b.s - a.s) * f;
        (x, y, a.v, heading, lap_no as u64, s)
    }

    /// Where the car is at `t`.
    pub fn position(&self, t: Duration) -> Position {
        let (x, y, v, heading, lap, s) = self.xy_at(t);
        Position {
            lat: self.origin.0 + y / M_PER_DEG,
            lon: self.origin.1 + x / self.kx,
            speed_mps: v,
            heading_deg: heading,
            lap,
            lap_distance_m: s,
        }
    }

    /// RSRP of tower `k` at (x, y) and time `t`, in dBm, before the detection threshold.
    fn rsrp(&self, k: usize, x: f64, y: f64, t: Duration) -> f64 {
        let r = &self.scenario.radio;
        let tw = &self.towers[k];
        let d = (tw.x - x)
            .hypot(tw.y - y)
            .hypot(r.antenna_height_m)
            .max(1.0);
        let pl = r.path_loss_1km_db + 10.0 * r.path_loss_exponent * (d / 1000.0).log10();
        let seed = self.scenario.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let shadow = r.shadowing_sigma_db
            * value_noise_2d(
                seed,
                x / r.shadowing_decorrelation_m,
                y / r.shadowing_decorrelation_m,
            );
        let fading = r.fading_sigma_db
            * value_noise_1d(
                seed ^ 0xF00D,
                t.as_secs_f64() * 1000.0 / r.fading_period_ms as f64,
            );
        let zone: f64 = self
            .zones
            .iter()
            .map(|&(zx, zy, radius, att)| {
                let dz = (zx - x).hypot(zy - y);
                let edge = 0.8 * radius;
                if dz <= edge {
                    att
                } else if dz < radius {
                    att * 0.5 * (1.0 + (PI * (dz - edge) / (radius - edge)).cos())
                } else {
                    0.0
                }
            })
            .sum();
        self.scenario.towers[k].rs_power_dbm - pl + shadow + fading - zone
    }

    /// Every tower's cell as heard at (x, y, t), with SINR/RSRQ/RSSI from the interference of
    /// the other cells on its EARFCN.
    fn cells(&self, x: f64, y: f64, t: Duration) -> Vec<HeardCell> {
        let r = &self.scenario.radio;
        let rsrp: Vec<f64> = (0..self.towers.len())
            .map(|k| self.rsrp(k, x, y, t))
            .collect();
        let noise = db_to_mw(r.noise_per_re_dbm);
        (0..self.towers.len())
            .map(|k| {
                let tw = &self.scenario.towers[k];
                let act = |j: usize| 0.25 + 0.75 * self.scenario.towers[j].load;
                let mut interference = 0.0;
                for (j, p) in rsrp.iter().enumerate() {
                    if j != k && self.scenario.towers[j].earfcn == tw.earfcn {
                        interference += db_to_mw(*p) * act(j);
                    }
                }
                let s = db_to_mw(rsrp[k]);
                let sinr = mw_to_db(s / (interference + noise));
                let rbs = f64::from(self.towers[k].rbs);
                let rssi_mw = 12.0 * rbs * (s * act(k) + interference + noise);
                let rsrq = mw_to_db(rbs * s / rssi_mw);
                HeardCell {
                    tower: k,
                    tac: self.towers[k].tac,
                    cell_id: self.towers[k].cell_id,
                    pci: tw.pci,
                    earfcn: tw.earfcn,
                    band: tw.band,
                    bandwidth_mhz: tw.bandwidth_mhz,
                    rsrp_dbm: round1(rsrp[k].clamp(-140.0, -44.0)),
                    rsrq_db: round1(rsrq.clamp(-19.5, -3.0)),
                    rssi_dbm: round1(mw_to_db(rssi_mw).clamp(-120.0, -25.0)),
                    sinr_db: round1(sinr.clamp(-20.0, 30.0)),
                }
            })
            .collect()
    }

    /// Every cell (of every carrier) at the car's position at `t`, detectable or not, in tower
    /// order. For tools and reports; modems hear [`RadioEnv::heard`].
    pub fn all_cells(&self, t: Duration) -> Vec<HeardCell> {
        let (x, y, ..) = self.xy_at(t);
        self.cells(x, y, t)
    }

    /// What each modem's link can do at `t` when modem `i` is served by tower `serving[i]`
    /// (`None`: no service). The car's modems on one tower share what its load leaves.
    pub fn links(&self, t: Duration, serving: &[Option<usize>]) -> Vec<LinkQuality> {
        let cells = self.all_cells(t);
        let l = &self.scenario.link;
        serving
            .iter()
            .enumerate()
            .map(|(i, srv)| {
                let Some(cell) = srv.and_then(|k| cells.get(k)) else {
                    return down();
                };
                if cell.sinr_db < l.min_sinr_db
                    || cell.rsrp_dbm < self.scenario.radio.detect_rsrp_dbm
                {
                    return down();
                }
                let tw = &self.scenario.towers[cell.tower];
                let sinr = db_to_mw(cell.sinr_db);
                let se =
                    (l.shannon_efficiency * (1.0 + sinr).log2()).min(l.max_spectral_efficiency);
                let phy = se * tw.bandwidth_mhz * 1e6;
                let sharing = serving.iter().filter(|s| **s == Some(cell.tower)).count() as f64;
                let capacity =
                    phy.min(tw.capacity_mbit_s * 1e6) * (1.0 - tw.load) / sharing.max(1.0);
                // Latency rises towards the lowest usable SINR (retransmissions, low MCS).
                let poorness = ((10.0 - cell.sinr_db) / (10.0 - l.min_sinr_db)).clamp(0.0, 1.0);
                let jitter = l.jitter_ms
                    * value_noise_1d(
                        self.scenario.seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                        t.as_secs_f64() * 20.0,
                    );
                let one_way = (l.base_latency_ms + l.poor_latency_ms * poorness + jitter).max(1.0);
                LinkQuality {
                    up: true,
                    capacity_bps: capacity,
                    one_way_latency: Duration::from_secs_f64(one_way / 1000.0),
                    sinr_db: Some(cell.sinr_db),
                }
            })
            .collect()
    }
}

fn down() -> LinkQuality {
    LinkQuality {
        up: false,
        capacity_bps: 0.0,
        one_way_latency: Duration::ZERO,
        sinr_db: None,
    }
}

impl RadioEnv for World {
    fn sim(&self, modem: usize) -> SimCard {
        let c = &self.scenario.carriers[self.modem_carrier.get(modem).copied().unwrap_or(0)];
        SimCard {
            operator: c.name.clone(),
            mcc: c.mcc,
            mnc: c.mnc,
            mnc_3_digits: c.mnc_3_digits,
        }
    }

    fn heard(&self, modem: usize, t: Duration) -> Vec<HeardCell> {
        let carrier = self.modem_carrier.get(modem).copied().unwrap_or(0);
        let detect = self.scenario.radio.detect_rsrp_dbm;
        let mut cells: Vec<HeardCell> = self
            .all_cells(t)
            .into_iter()
            .filter(|c| self.towers[c.tower].carrier == carrier && c.rsrp_dbm >= detect)
            .collect();
        cells.sort_by(|a, b| b.rsrp_dbm.total_cmp(&a.rsrp_dbm));
        cells
    }
}

fn db_to_mw(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

fn mw_to_db(mw: f64) -> f64 {
    10.0 * mw.max(1e-30).log10()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// splitmix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An approximately standard normal value for a lattice point (sum of four uniforms).
fn lattice(seed: u64, i: i64, j: i64) -> f64 {
    let mut h = mix(seed ^ mix(i as u64 ^ mix(j as u64)));
    let mut sum = 0.0;
    for _ in 0..4 {
        h = mix(h);
        sum += (h >> 11) as f64 / (1u64 << 53) as f64;
    }
    // Sum of 4 U(0,1): mean 2, variance 1/3.
    (sum - 2.0) * 3f64.sqrt()
}

fn smooth(f: f64) -> f64 {
    f * f * (3.0 - 2.0 * f)
}

/// Smooth value noise in two dimensions (unit lattice spacing).
fn value_noise_2d(seed: u64, x: f64, y: f64) -> f64 {
    let (i, j) = (x.floor(), y.floor());
    let (fx, fy) = (smooth(x - i), smooth(y - j));
    let (i, j) = (i as i64, j as i64);
    let a = lattice(seed, i, j) * (1.0 - fx) + lattice(seed, i + 1, j) * fx;
    let b = lattice(seed, i, j + 1) * (1.0 - fx) + lattice(seed, i + 1, j + 1) * fx;
    a * (1.0 - fy) + b * fy
}

/// Smooth value noise in one dimension (unit lattice spacing).
fn value_noise_1d(seed: u64, x: f64) -> f64 {
    let i = x.floor();
    let f = smooth(x - i);
    let i = i as i64;
    lattice(seed, i, 0) * (1.0 - f) + lattice(seed, i + 1, 0) * f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Scenario;

    fn world() -> World {
        World::new(Scenario::builtin())
    }

    #[test]
    fn the_car_goes_round_the_lap_at_the_profiled_speed() {
        let w = world();
        let lap = w.lap_time().as_secs_f64();
        let len = w.lap_length_m();
        assert!((4000.0..5000.0).contains(&len), "lap {len} m");
        // Between the slowest and the fastest point's speed.
        let avg = len / lap * 3.6;
        assert!((90.0..280.0).contains(&avg), "average {avg} km/h");
        let p0 = w.position(Duration::ZERO);
        let p1 = w.position(w.lap_time() + Duration::from_micros(1));
        assert_eq!(p1.lap, 1);
        assert!((p0.lat - p1.lat).abs() < 1e-5 && (p0.lon - p1.lon).abs() < 1e-5);
        // Distance covered in one second matches the speed there.
        let a = w.position(Duration::from_secs(3));
        let b = w.position(Duration::from_secs(4));
        let moved = b.lap_distance_m - a.lap_distance_m;
        assert!(
            (moved - a.speed_mps).abs() < 0.1 * a.speed_mps,
            "{moved} vs {}",
            a.speed_mps
        );
        // First segment runs due east.
        assert!((a.heading_deg - 90.0).abs() < 1.0, "{}", a.heading_deg);
    }

    #[test]
    fn the_world_is_deterministic_from_its_seed() {
        let (a, b) = (world(), world());
        let mut other = Scenario::builtin();
        other.seed += 1;
        let c = World::new(other);
        let mut differs = false;
        for s in (0..300).step_by(7) {
            let t = Duration::from_millis(s * 1000 + 123);
            assert_eq!(a.heard(0, t), b.heard(0, t));
            assert_eq!(
                a.links(t, &[Some(0), Some(4), Some(0)]),
                b.links(t, &[Some(0), Some(4), Some(0)])
            );
            differs |= a.heard(0, t) != c.heard(0, t);
        }
        assert!(differs, "another seed gives another world");
    }

    #[test]
    fn metrics_stay_in_their_reporting_ranges_and_modems_hear_only_their_carrier() {
        let w = world();
        for s in 0..(w.lap_time().as_secs() * 2) {
            let t = Duration::from_millis(s * 1000 + 250);
            for m in 0..w.modems() {
                let carrier = w.sim(m).operator;
                let heard = w.heard(m, t);
                for pair in heard.windows(2) {
                    assert!(pair[0].rsrp_dbm >= pair[1].rsrp_dbm);
                }
                for c in heard {
                    assert_eq!(w.scenario().towers[c.tower].carrier.get_ref(), &carrier);
                    assert!((-140.0..=-44.0).contains(&c.rsrp_dbm), "{c:?}");
                    assert!((-19.5..=-3.0).contains(&c.rsrq_db), "{c:?}");
                    assert!((-20.0..=30.0).contains(&c.sinr_db), "{c:?}");
                    assert!(c.rssi_dbm > c.rsrp_dbm, "{c:?}");
                }
            }
        }
    }

    #[test]
    fn signal_falls_with_distance_and_in_the_dead_zone() {
        let w = world();
        let s = w.scenario();
        // Find the lap instants nearest and farthest from tower 0, and inside the tunnel.
        let lap_ms = w.lap_time().as_millis() as u64;
        let dist = |t: Duration, k: usize| {
            let (x, y, ..) = w.xy_at(t);
            (w.towers[k].x - x).hypot(w.towers[k].y - y)
        };
        let ts: Vec<Duration> = (0..lap_ms)
            .step_by(200)
            .map(Duration::from_millis)
            .collect();
        let near = *ts
            .iter()
            .min_by(|a, b| dist(**a, 0).total_cmp(&dist(**b, 0)))
            .expect("t");
        let far = *ts
            .iter()
            .max_by(|a, b| dist(**a, 0).total_cmp(&dist(**b, 0)))
            .expect("t");
        let all = |t| w.all_cells(t);
        assert!(all(near)[0].rsrp_dbm > all(far)[0].rsrp_dbm + 10.0);
        let z = &s.dead_zones[0];
        let in_zone = *ts
            .iter()
            .min_by(|a, b| {
                let d = |t: Duration| {
                    let p = w.position(t);
                    ((p.lat - z.lat) * M_PER_DEG).hypot((p.lon - z.lon) * w.kx)
                };
                d(**a).total_cmp(&d(**b))
            })
            .expect("t");
        let best_in_zone = all(in_zone)
            .iter()
            .map(|c| c.rsrp_dbm)
            .fold(f64::MIN, f64::max);
        assert!(
            best_in_zone < -120.0,
            "in the tunnel the best cell is {best_in_zone} dBm"
        );
        // Elsewhere the lap is covered: the best cell is usable almost everywhere.
        let covered = ts
            .iter()
            .filter(|t| all(**t).iter().any(|c| c.rsrp_dbm > -110.0))
            .count();
        assert!(covered * 10 >= ts.len() * 9, "{covered} of {}", ts.len());
    }

    #[test]
    fn capacity_follows_the_serving_cell_and_is_shared_on_one_tower() {
        let w = world();
        let t = Duration::from_secs(5);
        let heard = w.heard(0, t);
        let (best, worst) = (heard[0].tower, heard[heard.len() - 1].tower);
        let alone = w.links(t, &[Some(best), None, None]);
        let weak = w.links(t, &[Some(worst), None, None]);
        assert!(alone[0].up);
        assert!(!alone[1].up && alone[1].capacity_bps == 0.0);
        if weak[0].up {
            assert!(weak[0].capacity_bps < alone[0].capacity_bps);
            assert!(
                weak[0].one_way_latency
                    >= alone[0]
                        .one_way_latency
                        .saturating_sub(Duration::from_millis(20))
            );
        }
        let shared = w.links(t, &[Some(best), None, Some(best)]);
        assert!((shared[0].capacity_bps * 2.0 - alone[0].capacity_bps).abs() < 1.0);
        assert_eq!(shared[0].capacity_bps, shared[2].capacity_bps);
    }

    #[test]
    fn noise_is_smooth_and_roughly_standard() {
        let n: Vec<f64> = (0..20_000)
            .map(|i| value_noise_2d(7, i as f64 * 0.37, 0.5))
            .collect();
        let mean = n.iter().sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!(mean.abs() < 0.1, "{mean}");
        assert!((0.2..1.2).contains(&var), "{var}");
        assert!((value_noise_1d(1, 3.0) - value_noise_1d(1, 3.001)).abs() < 0.05);
    }
}

//! Track scenario files: a lap, the towers of several carriers around it, dead zones, the
//! modems' SIMs and the models that turn a position into radio metrics and link capacity.
//! The format is documented in `docs/scenario.md`; [`Scenario::builtin`] is the default
//! world of `pitlink demo` and `pitlink bench track`.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// The scenario shipped with pitlink (`modem-hal/scenarios/ring.toml`).
pub const BUILTIN_TEXT: &str = include_str!("../../scenarios/ring.toml");

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The file (or `builtin`).
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    pub name: String,
    /// Seed of every random choice of the world (shadowing, fading, jitter).
    #[serde(default)]
    pub seed: u64,
    /// The lap.
    pub track: Track,
    /// Propagation model.
    #[serde(default)]
    pub radio: RadioModel,
    /// Capacity and latency model.
    #[serde(default)]
    pub link: LinkModel,
    /// The carriers (PLMNs).
    #[serde(rename = "carrier")]
    pub carriers: Vec<Carrier>,
    /// Cell towers, one LTE cell each.
    #[serde(rename = "tower")]
    pub towers: Vec<Tower>,
    /// Places where every signal is attenuated (tunnels, bridges, grandstands).
    #[serde(rename = "dead_zone", default)]
    pub dead_zones: Vec<DeadZone>,
    /// The car's modems, in link order.
    #[serde(rename = "modem")]
    pub modems: Vec<ModemSpec>,
}

/// The lap: a closed path of points driven in order, back to the first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Path points; speed is interpolated linearly between them.
    pub points: Vec<TrackPoint>,
}

/// One point of the lap.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackPoint {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Speed at this point in km/h.
    pub speed_kmh: f64,
}

/// Propagation: log-distance path loss, spatially correlated shadowing, slow fading.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadioModel {
    /// Path loss at 1 km in dB.
    pub path_loss_1km_db: f64,
    /// Path loss exponent (10·n dB per decade of distance).
    pub path_loss_exponent: f64,
    /// Antenna height above the car in metres (distance floor).
    pub antenna_height_m: f64,
    /// Standard deviation of the shadowing in dB.
    pub shadowing_sigma_db: f64,
    /// Distance over which the shadowing decorrelates, in metres.
    pub shadowing_decorrelation_m: f64,
    /// Standard deviation of the slow fading over time, in dB.
    pub fading_sigma_db: f64,
    /// Period of the fading in milliseconds.
    pub fading_period_ms: u64,
    /// Noise power per resource element in dBm (thermal + noise figure).
    pub noise_per_re_dbm: f64,
    /// Cells weaker than this RSRP are not heard.
    pub detect_rsrp_dbm: f64,
}

impl Default for RadioModel {
    fn default() -> Self {
        Self {
            path_loss_1km_db: 120.0,
            path_loss_exponent: 3.5,
            antenna_height_m: 30.0,
            shadowing_sigma_db: 5.0,
            shadowing_decorrelation_m: 60.0,
            fading_sigma_db: 1.5,
            fading_period_ms: 500,
            noise_per_re_dbm: -125.2,
            detect_rsrp_dbm: -128.0,
        }
    }
}

/// Link capacity and latency derived from the serving cell.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkModel {
    /// Efficiency applied to Shannon capacity (0..1).
    pub shannon_efficiency: f64,
    /// Highest spectral efficiency in bit/s/Hz (64-QAM, no MIMO: about 4.4).
    pub max_spectral_efficiency: f64,
    /// The link is down below this SINR in dB.
    pub min_sinr_db: f64,
    /// One-way latency at good SINR, in milliseconds.
    pub base_latency_ms: f64,
    /// Extra one-way latency at the lowest usable SINR, in milliseconds (retransmissions).
    pub poor_latency_ms: f64,
    /// One-way latency jitter (standard deviation), in milliseconds.
    pub jitter_ms: f64,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            shannon_efficiency: 0.6,
            max_spectral_efficiency: 4.4,
            min_sinr_db: -6.0,
            base_latency_ms: 20.0,
            poor_latency_ms: 60.0,
            jitter_ms: 3.0,
        }
    }
}

/// A carrier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    /// Name, as `AT+QSPN` and `AT+COPS?` report it.
    pub name: String,
    /// Mobile country code.
    pub mcc: u16,
    /// Mobile network code.
    pub mnc: u16,
    /// Whether the MNC has three digits.
    #[serde(default)]
    pub mnc_3_digits: bool,
}

/// A tower: one LTE cell.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tower {
    /// Name, for reports.
    pub name: String,
    /// The carrier's `name`.
    pub carrier: Spanned<String>,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Physical cell id (0..=503).
    pub pci: u16,
    /// Downlink EARFCN.
    pub earfcn: u32,
    /// E-UTRA band.
    pub band: u16,
    /// Bandwidth in MHz: 1.4, 3, 5, 10, 15 or 20.
    #[serde(default = "default_bandwidth")]
    pub bandwidth_mhz: f64,
    /// Reference signal power per resource element, in dBm.
    #[serde(default = "default_rs_power")]
    pub rs_power_dbm: f64,
    /// Most the cell gives one user, in Mbit/s (backhaul and scheduler cap).
    pub capacity_mbit_s: f64,
    /// Share of the cell used by others (0..1): less capacity, more interference.
    #[serde(default = "default_load")]
    pub load: f64,
    /// Tracking area code; derived from the carrier and the tower index when absent.
    pub tac: Option<u32>,
    /// 28-bit E-UTRAN cell id; derived when absent.
    pub cell_id: Option<u64>,
}

fn default_bandwidth() -> f64 {
    20.0
}
fn default_rs_power() -> f64 {
    15.0
}
fn default_load() -> f64 {
    0.3
}

/// A dead zone: a disc where every signal loses `attenuation_db`, fading in over the outer
/// fifth of the radius.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadZone {
    /// Name, for reports.
    pub name: String,
    /// Centre latitude.
    pub lat: f64,
    /// Centre longitude.
    pub lon: f64,
    /// Radius in metres.
    pub radius_m: f64,
    /// Attenuation at the centre, in dB.
    pub attenuation_db: f64,
}

/// A modem of the car.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemSpec {
    /// Link name.
    pub name: String,
    /// The SIM's carrier (`name` of a carrier).
    pub carrier: Spanned<String>,
}

impl Scenario {
    /// The scenario shipped with pitlink.
    pub fn builtin() -> Self {
        #[allow(clippy::expect_used)]
        Self::from_toml(BUILTIN_TEXT, "builtin").expect("the builtin scenario is valid (tested)")
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the scenario: {e}"),
        })?;
        Self::from_toml(&text, &origin)
    }

    /// Parses and checks a scenario; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let at = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ScenarioError {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let s: Scenario =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_string()))?;
        let top = |message: String| at(None, message);
        if s.track.points.len() < 3 {
            return Err(top(format!(
                "the track has {} point(s); a lap needs at least 3 [[track.points]]",
                s.track.points.len()
            )));
        }
        for (i, p) in s.track.points.iter().enumerate() {
            if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
                return Err(top(format!(
                    "track point {i}: lat {} / lon {} is not a position in degrees",
                    p.lat, p.lon
                )));
            }
            if !(p.speed_kmh.is_finite() && p.speed_kmh >= 1.0 && p.speed_kmh <= 500.0) {
                return Err(top(format!(
                    "track point {i}: speed_kmh {} must be between 1 and 500",
                    p.speed_kmh
                )));
            }
        }
        if s.carriers.is_empty() || s.towers.is_empty() || s.modems.is_empty() {
            return Err(top(
                "a scenario needs at least one [[carrier]], one [[tower]] and one [[modem]]".into(),
            ));
        }
        for (i, c) in s.carriers.iter().enumerate() {
            if s.carriers[..i].iter().any(|o| o.name == c.name) {
                return Err(top(format!("carrier '{}' is defined twice", c.name)));
            }
        }
        let names: Vec<&str> = s.carriers.iter().map(|c| c.name.as_str()).collect();
        let check_carrier = |c: &Spanned<String>, who: &str| {
            if names.contains(&c.get_ref().as_str()) {
                Ok(())
            } else {
                Err(at(
                    Some(c.span()),
                    format!(
                        "{who}: unknown carrier '{}'; expected one of: {}",
                        c.get_ref(),
                        names.join(", ")
                    ),
                ))
            }
        };
        for t in &s.towers {
            let who = format!("tower '{}'", t.name);
            check_carrier(&t.carrier, &who)?;
            if t.pci > 503 {
                return Err(top(format!("{who}: pci {} is above 503", t.pci)));
            }
            if bandwidth_rbs(t.bandwidth_mhz).is_none() {
                return Err(top(format!(
                    "{who}: bandwidth_mhz {} is not an LTE bandwidth (1.4, 3, 5, 10, 15, 20)",
                    t.bandwidth_mhz
                )));
            }
            if !(0.0..1.0).contains(&t.load) {
                return Err(top(format!("{who}: load {} must be in 0..1", t.load)));
            }
            if !(t.capacity_mbit_s.is_finite() && t.capacity_mbit_s > 0.0) {
                return Err(top(format!("{who}: capacity_mbit_s must be positive")));
            }
            if t.cell_id.is_some_and(|c| c >= 1 << 28) {
                return Err(top(format!("{who}: cell_id must fit in 28 bits")));
            }
        }
        for m in &s.modems {
            check_carrier(&m.carrier, &format!("modem '{}'", m.name))?;
        }
        for z in &s.dead_zones {
            if !(z.radius_m > 0.0 && z.attenuation_db >= 0.0) {
                return Err(top(format!(
                    "dead zone '{}': radius_m must be positive and attenuation_db not negative",
                    z.name
                )));
            }
        }
        let r = &s.radio;
        if !(r.path_loss_exponent > 0.0
            && r.shadowing_decorrelation_m > 0.0
            && r.fading_period_ms > 0
            && r.shadowing_sigma_db >= 0.0
            && r.fading_sigma_db >= 0.0)
        {
            return Err(top(
                "[radio]: path_loss_exponent, shadowing_decorrelation_m and fading_period_ms must be positive, the sigmas not negative".into(),
            ));
        }
        let l = &s.link;
        if !(l.shannon_efficiency > 0.0
            && l.shannon_efficiency <= 1.0
            && l.max_spectral_efficiency > 0.0
            && l.base_latency_ms >= 0.0
            && l.poor_latency_ms >= 0.0
            && l.jitter_ms >= 0.0)
        {
            return Err(top(
                "[link]: shannon_efficiency must be in (0, 1], max_spectral_efficiency positive, latencies and jitter not negative".into(),
            ));
        }
        Ok(s)
    }

    /// The carrier named `name`.
    pub fn carrier(&self, name: &str) -> Option<&Carrier> {
        self.carriers.iter().find(|c| c.name == name)
    }
}

/// Resource blocks of an LTE bandwidth in MHz.
pub fn bandwidth_rbs(mhz: f64) -> Option<u32> {
    [
        (1.4, 6),
        (3.0, 15),
        (5.0, 25),
        (10.0, 50),
        (15.0, 75),
        (20.0, 100),
    ]
    .iter()
    .find(|(m, _)| (m - mhz).abs() < 1e-9)
    .map(|&(_, rb)| rb)
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_scenario_parses_and_has_what_the_track_bench_needs() {
        let s = Scenario::from_toml(BUILTIN_TEXT, "builtin").expect("valid");
        assert_eq!(s.modems.len(), 3);
        assert!(s.carriers.len() >= 2);
        assert!(s.towers.len() >= 6);
        assert!(!s.dead_zones.is_empty());
        let carriers: std::collections::HashSet<_> = s
            .modems
            .iter()
            .map(|m| m.carrier.get_ref().clone())
            .collect();
        assert!(carriers.len() >= 2, "the modems use two carriers");
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(BUILTIN_TEXT.contains(from), "{from}");
        BUILTIN_TEXT.replacen(from, to, 1)
    }

    #[test]
    fn an_unknown_carrier_is_named_with_its_line() {
        let first = BUILTIN_TEXT
            .lines()
            .position(|l| l.starts_with("[[tower]]"))
            .expect("a tower");
        let text = BUILTIN_TEXT
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i > first && l.starts_with("carrier =") && !l.contains("Nobody") {
                    "carrier = \"Nobody\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let e = Scenario::from_toml(&text, "x.toml").expect_err("unknown carrier");
        assert!(e.message.contains("unknown carrier 'Nobody'"), "{e}");
        let line = text.lines().nth(e.line - 1).expect("line exists");
        assert!(line.contains("Nobody"), "{e} points at {line:?}");
        assert!(e.to_string().starts_with("x.toml:"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_a_reason() {
        let e = Scenario::from_toml(&replace("[radio]", "[radio]\nfoo = 1"), "x.toml")
            .expect_err("unknown key");
        assert!(e.message.contains("foo"), "{e}");
        assert!(e.line > 1, "{e}");
        let e = Scenario::from_toml(&replace("bandwidth_mhz = 20", "bandwidth_mhz = 7"), "x")
            .expect_err("bandwidth");
        assert!(e.message.contains("not an LTE bandwidth"), "{e}");
        let e = Scenario::from_toml("name = 1", "x").expect_err("type");
        assert_eq!(e.line, 1);
        assert!(Scenario::from_toml("", "x").is_err());
    }

    #[test]
    fn bandwidths_map_to_resource_blocks() {
        assert_eq!(bandwidth_rbs(1.4), Some(6));
        assert_eq!(bandwidth_rbs(20.0), Some(100));
        assert_eq!(bandwidth_rbs(7.0), None);
    }
}

//! The learned cell map: per location (a ≈ 50 m grid square) and per cell, running statistics
//! of RSRP, SINR and achieved goodput. Bounded in entries (the least recently updated go
//! first); saved as a postcard state file written atomically (see docs/towers.md for why a
//! state file and not a key-value store).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::CellRef;

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.0;
/// Side of a grid square in metres.
pub const GRID_M: f64 = 50.0;
/// Weight of a new sample in the running means.
const ALPHA: f64 = 0.2;
/// State file format version.
const VERSION: u32 = 1;

/// A GPS fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Speed over ground, m/s.
    pub speed_mps: f64,
    /// Course over ground, degrees clockwise from north.
    pub heading_deg: f64,
}

impl Fix {
    /// Where the car will be after `dt` at its current speed and heading.
    pub fn ahead(&self, dt: Duration) -> Fix {
        let d = self.speed_mps * dt.as_secs_f64();
        let h = self.heading_deg.to_radians();
        let (dn, de) = (d * h.cos(), d * h.sin());
        Fix {
            lat: self.lat + dn / M_PER_DEG,
            lon: self.lon + de / (M_PER_DEG * self.lat.to_radians().cos().max(1e-6)),
            ..*self
        }
    }

    /// The grid square of this position.
    pub fn square(&self) -> (i32, i32) {
        let y = (self.lat * M_PER_DEG / GRID_M).floor();
        // Longitude squares are scaled to metres at this latitude band (stable per 50 m row).
        let x = (self.lon * M_PER_DEG * self.lat.to_radians().cos() / GRID_M).floor();
        (y as i32, x as i32)
    }
}

/// Running statistics of one cell in one square.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellStats {
    /// Mean RSRP, dBm.
    pub rsrp_dbm: f64,
    /// Mean SINR, dB.
    pub sinr_db: f64,
    /// Mean goodput while serving, bit/s (absent until the cell has served here).
    pub goodput_bps: Option<f64>,
    /// Samples seen.
    pub samples: u32,
    /// Update counter value at the last update (for eviction).
    touched: u64,
}

impl CellStats {
    /// The LTE band of the mean RSRP and SINR.
    pub fn band(&self) -> modem_hal::radio::Band {
        modem_hal::radio::Band::lte(Some(self.rsrp_dbm), None, Some(self.sinr_db))
            .unwrap_or(modem_hal::radio::Band::Unusable)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    entries: Vec<((i32, i32), CellRef, CellStats)>,
}

/// The map.
#[derive(Debug, Clone)]
pub struct CellMap {
    entries: HashMap<((i32, i32), CellRef), CellStats>,
    max_entries: usize,
    clock: u64,
}

/// A state file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// IO.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a cell map of this version.
    #[error(
        "{path}: not a pitlink cell map (version {VERSION}): {why}; delete it to start a new map"
    )]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

impl CellMap {
    /// An empty map of at most `max_entries` (square, cell) entries.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
            clock: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct squares covered.
    pub fn squares(&self) -> usize {
        let mut s: Vec<_> = self.entries.keys().map(|(sq, _)| *sq).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    }

    /// Adds a measurement of `cell` at `fix` (goodput when it was serving).
    pub fn record(
        &mut self,
        fix: &Fix,
        cell: CellRef,
        rsrp_dbm: f64,
        sinr_db: f64,
        goodput_bps: Option<f64>,
    ) {
        if !(rsrp_dbm.is_finite() && sinr_db.is_finite()) {
            return;
        }
        self.clock += 1;
        let key = (fix.square(), cell);
        let clock = self.clock;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            self.evict();
        }
        let e = self.entries.entry(key).or_insert(CellStats {
            rsrp_dbm,
            sinr_db,
            goodput_bps: None,
            samples: 0,
            touched: clock,
        });
        let a = if e.samples == 0 { 1.0 } else { ALPHA };
        e.rsrp_dbm += a * (rsrp_dbm - e.rsrp_dbm);
        e.sinr_db += a * (sinr_db - e.sinr_db);
        if let Some(g) = goodput_bps.filter(|g| g.is_finite() && *g >= 0.0) {
            e.goodput_bps = Some(e.goodput_bps.map_or(g, |m| m + ALPHA * (g - m)));
        }
        e.samples = e.samples.saturating_add(1);
        e.touched = clock;
    }

    /// Drops the least recently updated eighth of the entries (amortised eviction).
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.entries.values().map(|e| e.touched).collect();
        let k = (ages.len() / 8).max(1);
        let (_, cut, _) = ages.select_nth_unstable(k - 1);
        let cut = *cut;
        self.entries.retain(|_, e| e.touched > cut);
    }

    /// What the map knows of `cell` at `fix` (at least two samples).
    pub fn at(&self, fix: &Fix, cell: CellRef) -> Option<CellStats> {
        self.entries
            .get(&(fix.square(), cell))
            .filter(|e| e.samples >= 2)
            .copied()
    }

    /// Loads a state file; a missing file is an empty map.
    pub fn load(path: &Path, max_entries: usize) -> Result<Self, MapError> {
        let label = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::new(max_entries));
            }
            Err(source) => {
                return Err(MapError::Io {
                    path: label,
                    source,
                });
            }
        };
        let f: File = postcard::from_bytes(&bytes).map_err(|e| MapError::Format {
            path: label.clone(),
            why: e.to_string(),
        })?;
        if f.version != VERSION {
            return Err(MapError::Format {
                path: label,
                why: format!("version {}", f.version),
            });
        }
        let mut m = Self::new(max_entries);
        let mut entries = f.entries;
        // Keep the most recently updated when the bound shrank.
        entries.sort_by_key(|e| std::cmp::Reverse(e.2.touched));
        entries.truncate(m.max_entries);
        m.clock = entries.iter().map(|e| e.2.touched).max().unwrap_or(0);
        m.entries = entries.into_iter().map(|(s, c, st)| ((s, c), st)).collect();
        Ok(m)
    }

    /// Writes the map atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), MapError> {
        let io = |source| MapError::Io {
            path: path.display().to_string(),
            source,
        };
        let f = File {
            version: VERSION,
            entries: self
                .entries
                .iter()
                .map(|((s, c), st)| (*s, *c, *st))
                .collect(),
        };
        let bytes = postcard::to_allocvec(&f).map_err(|e| MapError::Format {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(lat: f64, lon: f64) -> Fix {
        Fix {
            lat,
            lon,
            speed_mps: 0.0,
            heading_deg: 0.0,
        }
    }

    const C: CellRef = CellRef {
        earfcn: 1300,
        pci: 1,
    };

    #[test]
    fn ahead_moves_along_the_heading() {
        let f = Fix {
            lat: 47.0,
            lon: 8.0,
            speed_mps: 50.0,
            heading_deg: 90.0,
        };
        let a = f.ahead(Duration::from_secs(2));
        assert!((a.lat - 47.0).abs() < 1e-9);
        let east_m = (a.lon - 8.0) * M_PER_DEG * 47f64.to_radians().cos();
        assert!((east_m - 100.0).abs() < 0.01, "{east_m}");
        let n = Fix {
            heading_deg: 0.0,
            ..f
        }
        .ahead(Duration::from_secs(1));
        assert!(((n.lat - 47.0) * M_PER_DEG - 50.0).abs() < 0.01);
    }

    #[test]
    fn squares_are_about_50_m() {
        let a = fix(47.0, 8.0);
        let b = Fix {
            lat: 47.0 + 60.0 / M_PER_DEG,
            ..a
        };
        assert_ne!(a.square(), b.square());
        let c = Fix {
            lat: 47.0 + 10.0 / M_PER_DEG,
            ..a
        };
        let near = [a.square(), c.square()];
        assert!(near[0].0.abs_diff(near[1].0) <= 1);
    }

    #[test]
    fn running_means_and_the_two_sample_rule() {
        let mut m = CellMap::new(100);
        let f = fix(47.0, 8.0);
        m.record(&f, C, -100.0, 0.0, None);
        assert_eq!(m.at(&f, C), None, "one sample is not knowledge");
        m.record(&f, C, -90.0, 10.0, Some(1e6));
        let s = m.at(&f, C).expect("two samples");
        assert!((s.rsrp_dbm - (-98.0)).abs() < 1e-9, "{s:?}");
        assert!((s.sinr_db - 2.0).abs() < 1e-9);
        assert_eq!(s.goodput_bps, Some(1e6));
        m.record(&f, C, f64::NAN, 0.0, None);
        assert_eq!(m.at(&f, C).expect("known").samples, 2, "NaN is ignored");
    }

    #[test]
    fn the_map_is_bounded_and_keeps_recent_entries() {
        let mut m = CellMap::new(80);
        for i in 0..1000 {
            let f = fix(47.0 + i as f64 * 100.0 / M_PER_DEG, 8.0);
            m.record(&f, C, -90.0, 10.0, None);
            m.record(&f, C, -90.0, 10.0, None);
            assert!(m.len() <= 80);
        }
        let last = fix(47.0 + 999.0 * 100.0 / M_PER_DEG, 8.0);
        assert!(m.at(&last, C).is_some());
        assert!(m.at(&fix(47.0, 8.0), C).is_none(), "the oldest went first");
    }

    #[test]
    fn save_and_load_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cells.map");
        assert!(
            CellMap::load(&path, 10)
                .expect("missing is empty")
                .is_empty()
        );
        let mut m = CellMap::new(100);
        for i in 0..30 {
            let f = fix(47.0 + i as f64 * 60.0 / M_PER_DEG, 8.0);
            m.record(&f, C, -90.0 - i as f64, 10.0, Some(2e6));
            m.record(&f, C, -90.0 - i as f64, 10.0, Some(2e6));
        }
        m.save(&path).expect("save");
        let back = CellMap::load(&path, 100).expect("load");
        assert_eq!(back.len(), 30);
        let f = fix(47.0 + 7.0 * 60.0 / M_PER_DEG, 8.0);
        assert_eq!(back.at(&f, C), m.at(&f, C));
        // A smaller bound keeps the most recent entries.
        let small = CellMap::load(&path, 10).expect("load");
        assert_eq!(small.len(), 10);
        assert!(
            small
                .at(&fix(47.0 + 29.0 * 60.0 / M_PER_DEG, 8.0), C)
                .is_some()
        );
        std::fs::write(&path, b"\xff\xff\xff garbage").expect("write");
        let e = CellMap::load(&path, 10).expect_err("garbage");
        assert!(e.to_string().contains("cells.map"), "{e}");
        assert!(e.to_string().contains("delete it"), "{e}");
    }
}

//! A simulated GPS receiver: the car's position on the track as NMEA 0183 `$GPRMC` and
//! `$GPGGA` sentences on a PTY, so an agent's `kind = "nmea"` source reads the track like a
//! real receiver. [`sentences`] builds them (sans-IO); [`SimGps::spawn`] writes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::modem::{Port, SimClock, spawn_ticker};
use super::world::{Position, World};

/// Knots per m/s.
const KNOTS_PER_MPS: f64 = 3600.0 / 1852.0;

/// `*hh` checksum of the text between `$` and `*`.
fn checksum(body: &str) -> u8 {
    body.bytes().fold(0, |a, b| a ^ b)
}

fn degrees(v: f64, int_digits: usize, pos: char, neg: char) -> (String, char) {
    let a = v.abs();
    let deg = a.trunc();
    let min = (a - deg) * 60.0;
    (
        format!("{:0w$}{:07.4}", deg as u32, min, w = int_digits),
        if v >= 0.0 { pos } else { neg },
    )
}

/// The RMC and GGA sentences (with CR LF) of `pos` at `unix` time.
pub fn sentences(pos: &Position, unix: Duration) -> String {
    let secs = unix.as_secs();
    let (days, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let hms = format!(
        "{:02}{:02}{:02}.{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        unix.subsec_millis() / 10
    );
    let date = format!("{d:02}{m:02}{:02}", y % 100);
    let (lat, ns) = degrees(pos.lat, 2, 'N', 'S');
    let (lon, ew) = degrees(pos.lon, 3, 'E', 'W');
    let rmc = format!(
        "GPRMC,{hms},A,{lat},{ns},{lon},{ew},{:.2},{:.1},{date},,,A",
        pos.speed_mps * KNOTS_PER_MPS,
        pos.heading_deg
    );
    let gga = format!("GPGGA,{hms},{lat},{ns},{lon},{ew},1,09,0.9,420.0,M,47.0,M,,");
    let mut out = String::new();
    for s in [rmc, gga] {
        out.push_str(&format!("${s}*{:02X}\r\n", checksum(&s)));
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A running simulated GPS receiver.
#[derive(Debug)]
pub struct SimGps {
    link: PathBuf,
    task: tokio::task::JoinHandle<()>,
    inject: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl SimGps {
    /// Publishes a PTY at `<dir>/gps0` and writes a fix `rate_hz` times a second.
    pub fn spawn(
        world: Arc<World>,
        clock: SimClock,
        dir: &Path,
        rate_hz: f64,
    ) -> std::io::Result<Self> {
        let link = dir.join("gps0");
        let port = Port::open(&link)?;
        let period = Duration::from_secs_f64(1.0 / rate_hz.clamp(0.1, 50.0));
        let (task, inject) = spawn_ticker(port, period, move || {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Some(sentences(&world.position(clock.now()), unix).into_bytes())
        });
        Ok(Self { link, task, inject })
    }

    /// Writes `bytes` between two fixes (fault injection: garbage, a broken sentence).
    pub fn inject(&self, bytes: &[u8]) {
        let _ = self.inject.send(bytes.to_vec());
    }

    /// The stable path to open.
    pub fn path(&self) -> &Path {
        &self.link
    }
}

impl Drop for SimGps {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_have_valid_checksums_and_the_position() {
        let pos = Position {
            lat: 47.297302,
            lon: -8.5,
            speed_mps: 50.0,
            heading_deg: 90.0,
            lap: 0,
            lap_distance_m: 0.0,
        };
        // 2026-11-22 17:34:12.25 UTC
        let t = Duration::from_millis(1_795_368_852_250);
        let s = sentences(&pos, t);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in &lines {
            let (body, sum) = l[1..].split_once('*').expect("checksum");
            assert_eq!(u8::from_str_radix(sum, 16).expect("hex"), checksum(body));
        }
        assert!(
            lines[0].starts_with("$GPRMC,173412.25,A,4717.8381,N,00830.0000,W,97.19,90.0,221126,"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("$GPGGA,173412.25,4717.8381,N,00830.0000,W,1,"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

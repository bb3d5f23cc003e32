//! A simulated serial sensor writing delimited numeric lines on a PTY (`t_ms,oil_temp,oil_pressure`
//! at a fixed rate), for an agent's `kind = "line"` source. [`line`] builds one line (sans-IO);
//! [`SimLineSensor::spawn`] writes them and lets a test inject garbage between two lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::modem::{Port, spawn_ticker};

/// The field list an agent's source configuration names for these lines.
pub const FIELDS: &str = "t_ms,oil_temp,oil_pressure";

/// The line (with LF) the sensor writes at `t_ms` on its own clock: two values that are exact
/// functions of the time, so a receiver can check every one.
pub fn line(t_ms: u64) -> String {
    let (temp, pressure) = values(t_ms);
    format!("{t_ms},{temp},{pressure}\n")
}

/// `(oil_temp, oil_pressure)` at `t_ms`: multiples of 1/8 and 1/16, exact in text and in f64.
pub fn values(t_ms: u64) -> (f64, f64) {
    let temp = 90.0 + ((t_ms / 10) % 160) as f64 / 8.0;
    let pressure = 3.0 + ((t_ms / 7) % 64) as f64 / 16.0;
    (temp, pressure)
}

/// A running simulated line sensor.
#[derive(Debug)]
pub struct SimLineSensor {
    link: PathBuf,
    task: tokio::task::JoinHandle<()>,
    inject: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

impl SimLineSensor {
    /// Publishes a PTY at `path` and writes a line `rate_hz` times a second, stamped with the
    /// wall clock in milliseconds.
    pub fn spawn(path: &Path, rate_hz: f64) -> std::io::Result<Self> {
        let port = Port::open(path)?;
        let period = Duration::from_secs_f64(1.0 / rate_hz.clamp(0.1, 1000.0));
        let mut last = 0;
        let (task, inject) = spawn_ticker(port, period, move || {
            let t_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            // One line per millisecond at most: the device clock never repeats.
            if t_ms <= last {
                return None;
            }
            last = t_ms;
            Some(line(t_ms).into_bytes())
        });
        Ok(Self {
            link: path.to_owned(),
            task,
            inject,
        })
    }

    /// Writes `bytes` between two lines (fault injection).
    pub fn inject(&self, bytes: &[u8]) {
        let _ = self.inject.send(bytes.to_vec());
    }

    /// The stable path to open.
    pub fn path(&self) -> &Path {
        &self.link
    }
}

impl Drop for SimLineSensor {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_exact_values_of_their_time() {
        assert_eq!(line(1_000), "1000,102.5,3.875\n");
        let (t, p) = values(123_456_789);
        assert_eq!(line(123_456_789), format!("123456789,{t},{p}\n"));
        assert!((90.0..110.0).contains(&t) && (3.0..7.0).contains(&p));
    }

    #[tokio::test]
    async fn a_reader_gets_lines_and_injected_bytes() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SimLineSensor::spawn(&dir.path().join("oil0"), 200.0).expect("spawn");
        let mut f = tokio::fs::File::open(s.path()).await.expect("open the PTY");
        s.inject(b"#garbage#\n");
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (text.lines().count() < 5 || !text.contains("#garbage#"))
            && tokio::time::Instant::now() < deadline
        {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_millis(500), f.read(&mut buf))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(text.contains("#garbage#"), "{text}");
        let good: Vec<&str> = text.lines().filter(|l| !l.contains('#')).collect();
        assert!(good.len() >= 3, "{text}");
        for l in good.iter().skip(1).take(good.len().saturating_sub(2)) {
            let t: u64 = l.split(',').next().and_then(|t| t.parse().ok()).expect(l);
            assert_eq!(format!("{l}\n"), line(t));
        }
    }
}

//! A simulated line sensor: `t_ms,seq,oil_temp,status` lines at a fixed rate.

use super::Master;
use sensor_drivers::Reading;
use std::fmt::Write as _;
use std::time::Duration;

/// The value the device reports on channel 1 for line `seq`.
pub fn oil_temp(seq: u64) -> f64 {
    80.0 + (seq % 400) as f64 * 0.25
}

/// Writes lines `first..first + n` at `rate_hz` (device clock `t_ms` = 1 000 000 + seq × period),
/// catching up in bursts when the writer falls behind, as a sensor with a FIFO does.
pub async fn run_line_device(master: &Master, first: u64, n: u64, rate_hz: u64) {
    let start = tokio::time::Instant::now();
    let mut k = 0;
    let mut text = String::new();
    while k < n {
        let elapsed = start.elapsed().as_micros() as u64;
        let due = (elapsed * rate_hz / 1_000_000 + 1).min(n);
        text.clear();
        for i in k..due {
            let seq = first + i;
            let t_ms = 1_000_000 + seq * 1000 / rate_hz;
            writeln!(text, "{t_ms},{seq},{},OK", oil_temp(seq)).expect("format a line");
        }
        master
            .write_all(text.as_bytes())
            .await
            .expect("write to the pty");
        k = due;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Asserts `readings` are exactly the samples of lines `first..first + n`, in order.
pub fn check_sequence(readings: &[Reading], first: u64, n: u64) {
    assert_eq!(readings.len() as u64, 2 * n);
    for (i, pair) in readings.chunks(2).enumerate() {
        let seq = first + i as u64;
        let (Reading::Value(a), Reading::Value(b)) = (pair[0], pair[1]) else {
            panic!("frame from a line sensor");
        };
        assert_eq!((a.channel, a.value), (0, seq as f64), "line {seq}");
        assert_eq!((b.channel, b.value), (1, oil_temp(seq)), "line {seq}");
        assert_eq!(a.t_us, b.t_us);
    }
}

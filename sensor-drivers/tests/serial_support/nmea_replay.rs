//! Replaying recorded NMEA logs on a PTY at their recorded rate.

use super::{DATA, Master};
use sensor_drivers::nmea::{NmeaDecoder, NmeaOutput};
use sensor_drivers::{Reading, Sample};
use std::time::Duration;

/// The sentences of a gpsd log (comments skipped) with the time of day of each, in ms; a
/// sentence without a time gets the previous one's.
pub fn timed_sentences(rel: &str) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(format!("{DATA}/{rel}")).expect("test data");
    let mut last = 0;
    text.lines()
        .filter(|l| l.starts_with('$'))
        .map(|l| {
            let field = l.split(',').nth(1).unwrap_or("");
            if field.len() >= 6 && field.is_ascii() {
                let n = |a: usize, b: usize| field[a..b].parse::<u64>().unwrap_or(0);
                let frac: f64 = field[6..].parse().unwrap_or(0.0);
                last = (n(0, 2) * 3600 + n(2, 4) * 60 + n(4, 6)) * 1000 + (frac * 1000.0) as u64;
            }
            (last, format!("{l}\r\n"))
        })
        .collect()
}

/// What the decoder makes of `sentences`: the samples a source must deliver.
pub fn expected_samples(sentences: &[(u64, String)]) -> Vec<Sample> {
    let mut d = NmeaDecoder::new();
    let mut out = NmeaOutput::default();
    for (_, s) in sentences {
        d.push(s.as_bytes(), 0, &mut out);
    }
    d.flush(&mut out);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let mut samples = Vec::new();
    for f in &out.fixes {
        assert!(f.utc_us.is_some(), "every fix of the replay has a date");
        f.samples(&mut samples);
    }
    samples
}

/// Writes `sentences` to `master` at the pace of their times (a 10 Hz log plays at 10 Hz).
pub async fn replay(master: &Master, sentences: &[(u64, String)]) {
    let start = tokio::time::Instant::now();
    let t0 = sentences.first().map_or(0, |s| s.0);
    for (t, s) in sentences {
        tokio::time::sleep_until(start + Duration::from_millis(t - t0)).await;
        master.write_all(s.as_bytes()).await.unwrap();
    }
}

pub fn samples_of(readings: &[Reading]) -> Vec<Sample> {
    readings
        .iter()
        .map(|r| match r {
            Reading::Value(s) => *s,
            Reading::Frame(f) => panic!("frame from NMEA: {f:?}"),
        })
        .collect()
}

//! NMEA over a real PTY: a recorded GPS log replayed at its recorded rate.
#![allow(clippy::unwrap_used)]

mod serial_support;

use sensor_drivers::nmea::{self, NmeaConfig};
use sensor_drivers::serial::PortSpec;
use serial_support::nmea_replay::{expected_samples, replay, samples_of, timed_sentences};
use serial_support::{Pty, collect, outlet, quick_backoff, wait_for};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_hz_log_replayed_at_its_rate_delivers_every_fix() {
    // The first 3 s of the Trimble RTK log: 30 epochs of GGA + RMC at 10 Hz.
    let all = timed_sentences("nmea/gpsd/nmea-rtk.log");
    let t0 = all[0].0;
    let sentences: Vec<_> = all.into_iter().filter(|s| s.0 < t0 + 3_000).collect();
    let want = expected_samples(&sentences);
    assert_eq!(want.len(), 30 * 9, "30 fixes of 9 channels");

    let pty = Pty::open(true);
    let (out, stats, mut rx) = outlet(0, 256);
    let cancel = CancellationToken::new();
    let cfg = NmeaConfig {
        port: PortSpec {
            path: pty.path.clone(),
            baud: 9_600,
        },
    };
    let task = tokio::spawn(nmea::run(cfg, out, quick_backoff(), cancel.clone()));
    wait_for("the port to be open", || stats.is_connected()).await;
    replay(&pty.master, &sentences).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, want.len()).await;
    assert_eq!(samples_of(&got), want);
    let s = stats.snapshot();
    assert_eq!((s.parse_errors, s.drops, s.ignored), (0, 0, 0));
    cancel.cancel();
    task.await.unwrap();
}

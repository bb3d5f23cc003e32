//! Unplug and replug a serial device: the source notices, retries with backoff, reopens the
//! same path when the device is back, and counts the reconnect.
//!
//! A PTY cannot come back under the same `/dev/pts/N` name, so the source is given a symlink,
//! as udev gives a USB adapter a stable `/dev/serial/by-id/…` link: unplugging removes the link
//! (and closes the PTY), replugging creates it again pointing at a new PTY.
#![allow(clippy::unwrap_used)]

mod serial_support;

use sensor_drivers::line::{self, DEFAULT_MAX_LINE, LineConfig, LineSpec};
use sensor_drivers::serial::PortSpec;
use sensor_drivers::slcan::{self, Bitrate, SlcanConfig};
use sensor_drivers::{CanFrame, Reading};
use serial_support::line_device::{check_sequence, run_line_device};
use serial_support::slcan_sim::{Sim, SimAdapter};
use serial_support::{Pty, collect, outlet, quick_backoff, repoint, wait_for};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_sensor_comes_back_after_unplug_and_replug() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("oil-sensor");
    let first = Pty::open(true);
    repoint(&link, &first.path);
    let (out, stats, mut rx) = outlet(0, 1024);
    let cancel = CancellationToken::new();
    let cfg = LineConfig {
        port: PortSpec {
            path: link.clone(),
            baud: 115_200,
        },
        spec: LineSpec::parse("t_ms,seq,oil_temp,-", ',').unwrap(),
        max_line: DEFAULT_MAX_LINE,
    };
    let task = tokio::spawn(line::run(cfg, out, quick_backoff(), cancel.clone()));
    wait_for("the first device to be open", || stats.is_connected()).await;
    run_line_device(&first.master, 0, 100, 1000).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 200).await;
    check_sequence(&got, 0, 100);

    // Unplug: the PTY closes and the link disappears.
    std::fs::remove_file(&link).unwrap();
    drop(first);
    wait_for("the source to notice", || !stats.is_connected()).await;
    let err = stats.snapshot().last_error.unwrap();
    assert!(!err.is_empty());
    assert_eq!(stats.reconnects(), 0);

    // Replug: a new device behind the same path.
    let second = Pty::open(true);
    repoint(&link, &second.path);
    wait_for("the source to reconnect", || stats.is_connected()).await;
    assert_eq!(stats.reconnects(), 1);
    run_line_device(&second.master, 100, 100, 1000).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 200).await;
    check_sequence(&got, 100, 100);
    assert_eq!(stats.parse_errors(), 0);
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_slcan_adapter_is_set_up_again_after_replug() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("canable");
    let first = Pty::open(true);
    repoint(&link, &first.path);
    let sim = Sim::spawn(first.master, SimAdapter::default());
    let (out, stats, mut rx) = outlet(0, 64);
    let cancel = CancellationToken::new();
    let mut cfg = SlcanConfig::new(
        PortSpec {
            path: link.clone(),
            baud: 115_200,
        },
        Bitrate::M1,
    );
    cfg.timestamps = true;
    let task = tokio::spawn(slcan::run(cfg, out, quick_backoff(), cancel.clone()));
    wait_for("the first adapter to be open", || stats.is_connected()).await;
    let frame = CanFrame::classic(0x7e8, false, &[1, 2, 3]).unwrap();
    sim.send_frames(&[(frame, 100)]).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 1).await;

    std::fs::remove_file(&link).unwrap();
    sim.unplug().await;
    drop(first.slave);
    wait_for("the source to notice", || !stats.is_connected()).await;

    let second = Pty::open(true);
    let sim = Sim::spawn(second.master, SimAdapter::default());
    repoint(&link, &second.path);
    wait_for("the source to reconnect", || stats.is_connected()).await;
    assert_eq!(stats.reconnects(), 1);
    assert_eq!(
        sim.log(),
        ["C", "S8", "Z1", "L"],
        "the new adapter is set up"
    );
    sim.send_frames(&[(frame, 200)]).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 1).await;
    assert!(matches!(got[0], Reading::Frame(f) if f.frame == frame));
    cancel.cancel();
    task.await.unwrap();
    sim.unplug().await;
}

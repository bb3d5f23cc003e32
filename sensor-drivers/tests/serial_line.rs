//! A line sensor at 1 kHz over a real PTY: every line arrives.
#![allow(clippy::unwrap_used)]

mod serial_support;

use sensor_drivers::line::{self, DEFAULT_MAX_LINE, LineConfig, LineSpec};
use sensor_drivers::serial::PortSpec;
use serial_support::line_device::{check_sequence, run_line_device};
use serial_support::{Pty, collect, outlet, quick_backoff, wait_for};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_khz_sensor_loses_no_line() {
    let pty = Pty::open(true);
    let (out, stats, mut rx) = outlet(0, 4096);
    let cancel = CancellationToken::new();
    let cfg = LineConfig {
        port: PortSpec {
            path: pty.path.clone(),
            baud: 921_600,
        },
        spec: LineSpec::parse("t_ms,seq,oil_temp,-", ',').unwrap(),
        max_line: DEFAULT_MAX_LINE,
    };
    let task = tokio::spawn(line::run(cfg, out, quick_backoff(), cancel.clone()));
    wait_for("the port to be open", || stats.is_connected()).await;
    // 3 s at 1 kHz.
    let lines = 3_000;
    run_line_device(&pty.master, 0, lines, 1_000).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 2 * lines as usize).await;
    check_sequence(&got, 0, lines);
    let s = stats.snapshot();
    assert_eq!((s.parse_errors, s.drops, s.ignored), (0, 0, 0));
    cancel.cancel();
    task.await.unwrap();
}

//! slcan over a real PTY, through the same `serial::open` the daemon uses, against a simulated
//! adapter on the master side.
#![allow(clippy::unwrap_used)]

mod serial_support;

use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags, tcgetattr};
use sensor_drivers::can::flags;
use sensor_drivers::serial::{self, PortSpec};
use sensor_drivers::slcan::{self, Bitrate, Command, SlcanConfig};
use sensor_drivers::{CanFrame, Reading};
use serial_support::slcan_sim::{Sim, SimAdapter};
use serial_support::{Pty, collect, outlet, quick_backoff, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn open_puts_a_pty_slave_in_raw_mode() {
    let pty = Pty::open(false);
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(
        before.local_flags.contains(LocalFlags::ECHO),
        "a new pty echoes"
    );
    let mut port = serial::open(&pty.path, 115_200).expect("tokio-serial opens a pty slave");
    let t = tcgetattr(&pty.slave).unwrap();
    assert!(
        !t.local_flags
            .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG)
    );
    assert!(
        !t.input_flags
            .intersects(InputFlags::ICRNL | InputFlags::IXON)
    );
    assert!(!t.output_flags.contains(OutputFlags::OPOST));
    // Bytes pass untouched both ways: no CR/LF translation, no echo.
    pty.master.write_all(b"t1230\r\n\x07").await.unwrap();
    let mut buf = [0u8; 8];
    port.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"t1230\r\n\x07");
    port.write_all(b"O\r").await.unwrap();
    let mut buf = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        got += pty.master.read(&mut buf[got..]).await.unwrap();
    }
    assert_eq!(&buf, b"O\r", "nothing echoed, nothing translated");
    // Exclusive: a second opener is refused while the source holds the port.
    assert!(serial::open(&pty.path, 115_200).is_err());
}

fn config(path: &std::path::Path) -> SlcanConfig {
    let mut c = SlcanConfig::new(
        PortSpec {
            path: path.to_path_buf(),
            baud: 115_200,
        },
        Bitrate::K500,
    );
    c.timestamps = true;
    c
}

fn frames(n: usize, first_ts: u16, step_ms: u16) -> Vec<(CanFrame, u16)> {
    (0..n)
        .map(|i| {
            let b = (i % 251) as u8;
            let f = match i % 5 {
                0 => CanFrame::classic(0x100 + (i as u32 % 0x600), false, &[b, 1, 2]).unwrap(),
                1 => CanFrame::classic(0x1234_5678, true, &[b; 8]).unwrap(),
                2 => CanFrame::remote(0x7df, false, 8).unwrap(),
                3 => CanFrame::fd(0x42, false, flags::BRS, &[b; 64]).unwrap(),
                _ => CanFrame::fd(0x1abc_de00 + i as u32 % 256, true, 0, &[b; 12]).unwrap(),
            };
            let ts = ((u32::from(first_ts) + i as u32 * u32::from(step_ms)) % 60_000) as u16;
            (f, ts)
        })
        .collect()
}

fn frames_of(readings: &[Reading]) -> Vec<(u64, CanFrame)> {
    readings
        .iter()
        .map(|r| match r {
            Reading::Frame(f) => (f.t_us, f.frame),
            Reading::Value(v) => panic!("value from slcan: {v:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_round_trip_and_timestamps_unwrap_across_the_wrap() {
    let pty = Pty::open(true);
    let sim = Sim::spawn(pty.master, SimAdapter::default());
    let (out, stats, mut rx) = outlet(0, 1024);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(slcan::run(
        config(&pty.path),
        out,
        quick_backoff(),
        cancel.clone(),
    ));
    wait_for("the adapter to be opened", || stats.is_connected()).await;
    assert!(sim.is_open());
    assert_eq!(sim.log(), ["C", "S6", "Z1", "L"]);

    // 300 frames, 10 ms apart by the adapter clock, crossing the 60 s wrap after 10 frames,
    // sent at the pace of the adapter clock (in bursts of 10 frames, as a USB adapter does).
    let sent = frames(300, 59_900, 10);
    let start = tokio::time::Instant::now();
    for (i, chunk) in sent.chunks(10).enumerate() {
        tokio::time::sleep_until(start + std::time::Duration::from_millis(100 * i as u64)).await;
        sim.send_frames(chunk).await;
    }
    let mut got = Vec::new();
    collect(&mut rx, &mut got, sent.len()).await;
    let got = frames_of(&got);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        sent.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    // Stamps follow the adapter clock: 10 ms apart, also across the wrap, unless the clock had
    // to re-anchor on the host clock (only if the host fell more than 1 s behind).
    let steps: Vec<u64> = got
        .windows(2)
        .map(|w| w[1].0.wrapping_sub(w[0].0))
        .collect();
    let exact = steps.iter().filter(|&&d| d == 10_000).count();
    assert!(exact >= steps.len() - 2, "{steps:?}");
    assert_eq!(steps[9], 10_000, "59 990 ms → 0 ms is 10 ms later");

    // The outlet counts a chunk just after handing it over: wait for the count.
    wait_for("300 readings counted", || stats.readings() == 300).await;
    let s = stats.snapshot();
    assert_eq!((s.parse_errors, s.drops, s.reconnects), (0, 0, 0));

    // A BEL from the open adapter is an error, counted; frames keep flowing.
    sim.send(vec![0x07]).await;
    sim.send_frames(&frames(1, 0, 0)).await;
    let mut more = Vec::new();
    collect(&mut rx, &mut more, 1).await;
    assert_eq!(stats.parse_errors(), 1);
    assert!(stats.snapshot().last_error.unwrap().contains("BEL"));

    cancel.cancel();
    task.await.unwrap();
    assert!(!stats.is_connected());
    sim.unplug().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_refusing_its_bitrate_is_retried_until_it_accepts() {
    let pty = Pty::open(true);
    let adapter = SimAdapter::refusing(vec![Command::Bitrate(Bitrate::K250)]);
    let sim = Sim::spawn(pty.master, adapter);
    let (out, stats, mut rx) = outlet(0, 64);
    let cancel = CancellationToken::new();
    let mut cfg = config(&pty.path);
    cfg.bitrate = Bitrate::K250;
    cfg.listen_only = false;
    cfg.timestamps = false;
    let task = tokio::spawn(slcan::run(cfg, out, quick_backoff(), cancel.clone()));
    wait_for("two refused attempts", || {
        sim.log().iter().filter(|c| *c == "S5").count() >= 2
    })
    .await;
    assert!(!stats.is_connected());
    let err = stats.snapshot().last_error.unwrap();
    assert!(err.contains("refused command `S5`"), "{err}");
    sim.adapter.lock().unwrap().refuse.clear();
    wait_for("the adapter to be opened", || stats.is_connected()).await;
    let log = sim.log();
    assert_eq!(&log[log.len() - 3..], ["C", "S5", "O"]);
    assert!(!sim.adapter.lock().unwrap().listen_only);
    sim.send_frames(&frames(3, 0, 1)).await;
    let mut got = Vec::new();
    collect(&mut rx, &mut got, 3).await;
    assert_eq!(
        stats.parse_errors(),
        0,
        "a refused bitrate is a device failure"
    );
    cancel.cancel();
    task.await.unwrap();
    sim.unplug().await;
}

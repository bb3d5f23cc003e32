//! Ten serial devices at once on real PTYs, all sources feeding one channel as in the agent:
//! four 1 kHz line sensors, three slcan adapters at 1000 frames/s, three 10 Hz GPS receivers.
//! Every line, frame and fix must arrive, exactly once and in order.
// The loop index is the source index, used for outlets, stats and expectations alike.
#![allow(clippy::unwrap_used, clippy::needless_range_loop)]

mod serial_support;

use sensor_drivers::can::flags;
use sensor_drivers::line::{self, DEFAULT_MAX_LINE, LineConfig, LineSpec};
use sensor_drivers::nmea::{self, NmeaConfig};
use sensor_drivers::serial::PortSpec;
use sensor_drivers::slcan::{self, Bitrate, SlcanConfig};
use sensor_drivers::source::{Chunk, Outlet, SourceStats};
use sensor_drivers::{CanFrame, Reading};
use serial_support::line_device::{check_sequence, run_line_device};
use serial_support::nmea_replay::{expected_samples, replay, samples_of, timed_sentences};
use serial_support::slcan_sim::{Sim, SimAdapter};
use serial_support::{DEADLINE, Pty, quick_backoff, wait_for};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const LINES: usize = 4;
const ADAPTERS: usize = 3;
const GPS: usize = 3;
const N: usize = LINES + ADAPTERS + GPS;
const SECONDS: u64 = 2;

fn port(p: &Pty) -> PortSpec {
    PortSpec {
        path: p.path.clone(),
        baud: 115_200,
    }
}

fn can_frames(source: usize) -> Vec<(CanFrame, u16)> {
    (0..1000 * SECONDS as usize)
        .map(|i| {
            let b = (i as u32).to_le_bytes();
            let f = if i % 4 == 3 {
                CanFrame::fd(0x200 + source as u32, false, flags::BRS, &[b[0]; 16]).unwrap()
            } else {
                CanFrame::classic(0x100 + source as u32, false, &[b[0], b[1], b[2], b[3]]).unwrap()
            };
            (f, (i % 60_000) as u16)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_at_once_lose_nothing() {
    let (tx, mut rx) = mpsc::channel::<Chunk>(4096);
    let stats: Vec<Arc<SourceStats>> = (0..N).map(|_| Arc::default()).collect();
    let outlet = |i: usize| Outlet::new(i, tx.clone(), stats[i].clone());
    let cancel = CancellationToken::new();
    let mut sources = JoinSet::new();
    let mut devices = JoinSet::new();

    let gps_log: Vec<_> = {
        let all = timed_sentences("nmea/gpsd/nmea-rtk.log");
        let t0 = all[0].0;
        all.into_iter()
            .filter(|s| s.0 < t0 + SECONDS * 1000)
            .collect()
    };
    let gps_want = expected_samples(&gps_log);
    let want_len: [usize; N] = std::array::from_fn(|i| match i {
        _ if i < LINES => 2 * 1000 * SECONDS as usize,
        _ if i < LINES + ADAPTERS => can_frames(i).len(),
        _ => gps_want.len(),
    });

    for i in 0..LINES {
        let pty = Pty::open(true);
        let cfg = LineConfig {
            port: port(&pty),
            spec: LineSpec::parse("t_ms,seq,oil_temp,-", ',').unwrap(),
            max_line: DEFAULT_MAX_LINE,
        };
        sources.spawn(line::run(cfg, outlet(i), quick_backoff(), cancel.clone()));
        let st = stats[i].clone();
        devices.spawn(async move {
            wait_for("line sensor port open", || st.is_connected()).await;
            run_line_device(&pty.master, 1_000_000 * i as u64, 1000 * SECONDS, 1000).await;
            Box::new(pty) as Box<dyn std::any::Any + Send>
        });
    }
    for i in LINES..LINES + ADAPTERS {
        let pty = Pty::open(true);
        let mut cfg = SlcanConfig::new(port(&pty), Bitrate::K500);
        cfg.timestamps = i % 2 == 0;
        sources.spawn(slcan::run(cfg, outlet(i), quick_backoff(), cancel.clone()));
        let sim = Sim::spawn(pty.master, SimAdapter::default());
        let slave = pty.slave;
        devices.spawn(async move {
            wait_for("adapter open", || sim.is_open()).await;
            let start = tokio::time::Instant::now();
            for (k, chunk) in can_frames(i).chunks(10).enumerate() {
                tokio::time::sleep_until(start + Duration::from_millis(10 * k as u64)).await;
                sim.send_frames(chunk).await;
            }
            Box::new((sim, slave)) as Box<dyn std::any::Any + Send>
        });
    }
    for i in LINES + ADAPTERS..N {
        let pty = Pty::open(true);
        let cfg = NmeaConfig { port: port(&pty) };
        sources.spawn(nmea::run(cfg, outlet(i), quick_backoff(), cancel.clone()));
        let st = stats[i].clone();
        let log = gps_log.clone();
        devices.spawn(async move {
            wait_for("GPS port open", || st.is_connected()).await;
            replay(&pty.master, &log).await;
            Box::new(pty) as Box<dyn std::any::Any + Send>
        });
    }
    drop(tx);

    // One consumer for all ten, like the agent's batcher.
    let mut got: Vec<Vec<Reading>> = vec![Vec::new(); N];
    let end = tokio::time::Instant::now() + DEADLINE;
    while (0..N).any(|i| got[i].len() < want_len[i]) {
        let c = tokio::time::timeout_at(end, rx.recv())
            .await
            .expect("all readings within the deadline")
            .expect("sources running");
        got[c.source].extend(c.readings);
    }
    // Keep every device plugged in until everything arrived.
    let mut plugged = Vec::new();
    while let Some(d) = devices.join_next().await {
        plugged.push(d.unwrap());
    }

    for (i, readings) in got.iter().enumerate() {
        assert_eq!(readings.len(), want_len[i], "source {i}");
        if i < LINES {
            check_sequence(readings, 1_000_000 * i as u64, 1000 * SECONDS);
        } else if i < LINES + ADAPTERS {
            let frames: Vec<CanFrame> = readings
                .iter()
                .map(|r| match r {
                    Reading::Frame(f) => f.frame,
                    Reading::Value(_) => panic!("value from slcan"),
                })
                .collect();
            let want: Vec<CanFrame> = can_frames(i).into_iter().map(|f| f.0).collect();
            assert!(frames == want, "source {i}: frames differ");
        } else {
            assert_eq!(samples_of(readings), gps_want, "source {i}");
        }
        let s = stats[i].snapshot();
        assert_eq!(
            (s.parse_errors, s.drops, s.reconnects, s.overruns),
            (0, 0, 0, 0),
            "source {i}: {s:?}"
        );
    }
    cancel.cancel();
    while let Some(r) = sources.join_next().await {
        r.unwrap();
    }
    drop(plugged);
}

//! The candump replay shell on real files: what arrives, in which order, with which timestamps,
//! what is counted, and how it paces (in tokio's paused time, so pacing is checked exactly).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sensor_drivers::can::CanFrame;
use sensor_drivers::candump::{
    CHUNK_READINGS, ReplayOptions, Speed, Timestamp, format_line, run_replay,
};
use sensor_drivers::source::{Chunk, Outlet, SourceStats, wall_clock_us};
use sensor_drivers::{Reading, TimedFrame};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const RAV4: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/candump/comma2k19_rav4_2017_can0_10s.log"
);

fn opts(path: &Path, speed: Speed, looping: bool, interfaces: &[&str]) -> ReplayOptions {
    ReplayOptions {
        path: path.to_path_buf(),
        speed,
        looping,
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn outlet(cap: usize) -> (Outlet, mpsc::Receiver<Chunk>, Arc<SourceStats>) {
    let (tx, rx) = mpsc::channel(cap);
    let stats = Arc::new(SourceStats::default());
    (Outlet::new(0, tx, stats.clone()), rx, stats)
}

/// Receives until the replay has gone (its outlet dropped).
async fn collect(mut rx: mpsc::Receiver<Chunk>) -> Vec<Chunk> {
    let mut out = vec![];
    while let Some(c) = rx.recv().await {
        out.push(c);
    }
    out
}

fn frames(chunks: &[Chunk]) -> Vec<TimedFrame> {
    chunks
        .iter()
        .flat_map(|c| &c.readings)
        .map(|r| match r {
            Reading::Frame(f) => *f,
            Reading::Value(v) => panic!("a value from a candump replay: {v:?}"),
        })
        .collect()
}

fn frame_line(t_us: u64, iface: &str, id: u32, data: &[u8]) -> String {
    format_line(
        Timestamp::from_micros(t_us),
        iface,
        &CanFrame::classic(id, false, data).unwrap(),
        None,
    )
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
async fn until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn flat_out_replay_delivers_the_chosen_interface_and_counts_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.log");
    let lines = [
        "# bench log".to_string(),
        frame_line(5_000_000, "can0", 0x100, &[1]),
        "(5.000001) can0 123#1".to_string(),
        frame_line(5_000_010, "can1", 0x200, &[2]),
        "DROPCOUNT: dropped 5 CAN frames on 'can0' socket (total drops 5)".to_string(),
        format!("{}\r", frame_line(5_000_030, "can0", 0x101, &[3, 4])),
        String::new(),
        "(5.000040) can0 101#\u{00e9}".to_string(),
        format!("(5.000050) can0 7FF#{}", "00".repeat(40_000)), // past the read block
        format!("(5.000060) can0 7FF#{}", "00".repeat(3_000)),  // within it
        frame_line(5_000_070, "can0", 0x102, &[]),
    ];
    // The last line has no line break.
    std::fs::write(&path, lines.join("\n")).unwrap();

    let (out, rx, stats) = outlet(1);
    let sink = tokio::spawn(collect(rx));
    let before = wall_clock_us();
    let cancel = CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        run_replay(opts(&path, Speed::FlatOut, false, &["can0"]), out, cancel),
    )
    .await
    .expect("a non-looping replay returns at the end of the log");
    let after = wall_clock_us();
    let got = frames(&sink.await.unwrap());

    let ids: Vec<u32> = got.iter().map(|f| f.frame.id).collect();
    assert_eq!(ids, [0x100, 0x101, 0x102]);
    assert_eq!(got[1].frame.payload(), &[3, 4]);
    assert!(
        (before..=after).contains(&got[0].t_us),
        "first frame at the start"
    );
    assert_eq!(got[1].t_us - got[0].t_us, 30, "recorded spacing");
    assert_eq!(got[2].t_us - got[0].t_us, 70);

    let s = stats.snapshot();
    assert_eq!((s.readings, s.drops, s.overruns), (3, 0, 5));
    assert_eq!(
        s.parse_errors, 4,
        "odd hex digits, non-hex byte, two overlong lines"
    );
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .starts_with("line 10: longer than"),
        "{s:?}"
    );
    assert!(!s.connected, "finished");
}

#[tokio::test]
async fn the_rav4_capture_replays_frame_for_frame() {
    let text = std::fs::read_to_string(RAV4).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(first, "(46408.584930) can0 260#08FFFB0000001884");
    let last = text.lines().last().unwrap();

    let (out, rx, stats) = outlet(4);
    let sink = tokio::spawn(collect(rx));
    let cancel = CancellationToken::new();
    run_replay(
        opts(Path::new(RAV4), Speed::FlatOut, false, &[]),
        out,
        cancel,
    )
    .await;
    let chunks = sink.await.unwrap();
    assert!(chunks.iter().all(|c| c.readings.len() <= CHUNK_READINGS));
    let got = frames(&chunks);
    assert_eq!(got.len(), 8977, "the capture's frame count");
    assert_eq!(stats.readings(), 8977);
    assert_eq!(stats.parse_errors(), 0);

    let f0 = &got[0];
    assert_eq!(f0.frame.id, 0x260);
    assert_eq!(f0.frame.payload(), &[0x08, 0xFF, 0xFB, 0, 0, 0, 0x18, 0x84]);
    // The last line's time, relative to the first, survives exactly.
    let (ts, rest) = last[1..].split_once(") can0 ").unwrap();
    let (secs, frac) = ts.split_once('.').unwrap();
    let t_last = secs.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap();
    assert_eq!(got[8976].t_us - f0.t_us, t_last - 46_408_584_930);
    assert_eq!(
        format!("{:03X}", got[8976].frame.id),
        rest.split_once('#').unwrap().0
    );
    assert!(got.windows(2).all(|w| w[1].t_us >= w[0].t_us));
}

#[tokio::test(start_paused = true)]
async fn recorded_and_faster_speeds_pace_by_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.log");
    let lines: Vec<String> = [0u64, 1_500_000, 1_502_000, 3_000_000]
        .iter()
        .map(|&dt| frame_line(1_000_000_000 + dt, "can0", 0x10, &[0]))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    for (speed, span_us) in [(Speed::Recorded, 3_000_000), (Speed::Factor(4.0), 750_000)] {
        let (out, rx, _) = outlet(16);
        let sink = tokio::spawn(collect(rx));
        let start = tokio::time::Instant::now();
        run_replay(
            opts(&path, speed, false, &[]),
            out,
            CancellationToken::new(),
        )
        .await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_micros(span_us)
                && took < Duration::from_micros(span_us) + Duration::from_millis(50),
            "{speed}: {took:?}"
        );
        let chunks = sink.await.unwrap();
        // Frames 2 and 3 are 2 ms apart (within one chunk window); the others are alone.
        let sizes: Vec<usize> = chunks.iter().map(|c| c.readings.len()).collect();
        assert_eq!(sizes, [1, 2, 1], "{speed}");
        let got = frames(&chunks);
        assert_eq!(
            got[3].t_us - got[0].t_us,
            3_000_000,
            "{speed}: recorded spacing kept"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_a_replay_waiting_for_its_next_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.log");
    let lines = [
        frame_line(1_000_000, "can0", 1, &[]),
        frame_line(3_601_000_000, "can0", 2, &[]),
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let (out, rx, stats) = outlet(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_replay(
        opts(&path, Speed::Recorded, false, &[]),
        out,
        cancel.clone(),
    ));
    let sink = tokio::spawn(collect(rx));
    until(5, "the first frame", || stats.readings() == 1).await;
    cancel.cancel();
    task.await.unwrap();
    let got = frames(&sink.await.unwrap());
    assert_eq!(got.len(), 1, "the hour-later frame never came");
}

#[tokio::test]
async fn a_missing_file_is_retried_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("later.log");
    let (out, rx, stats) = outlet(16);
    let task = tokio::spawn(run_replay(
        opts(&path, Speed::FlatOut, false, &[]),
        out,
        CancellationToken::new(),
    ));
    let sink = tokio::spawn(collect(rx));
    until(10, "the open error", || {
        stats
            .snapshot()
            .last_error
            .is_some_and(|e| e.starts_with("cannot open") && e.contains("later.log"))
    })
    .await;
    assert!(!stats.is_connected());

    let tmp = dir.path().join("later.tmp");
    std::fs::write(&tmp, frame_line(7, "can0", 3, &[9]) + "\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("replayed once the file is there")
        .unwrap();
    assert_eq!(frames(&sink.await.unwrap()).len(), 1);
    assert_eq!(stats.reconnects(), 1);
}

#[tokio::test]
async fn looping_keeps_timestamps_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loop.log");
    // Gaps 100, 100, 700 µs: span 900, median gap 100, so each loop starts 1000 µs later.
    let lines: Vec<String> = [0u64, 100, 200, 900]
        .iter()
        .map(|&t| frame_line(50_000_000 + t, "can0", 0x42, &[t as u8]))
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();

    let (out, mut rx, stats) = outlet(2);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_replay(
        opts(&path, Speed::FlatOut, true, &[]),
        out,
        cancel.clone(),
    ));
    let mut got = vec![];
    while got.len() < 4 * 50 {
        let c = rx.recv().await.expect("a looping replay keeps going");
        got.extend(frames(&[c]));
    }
    cancel.cancel();
    while rx.recv().await.is_some() {}
    task.await.unwrap();

    let t0 = got[0].t_us;
    for (k, f) in got.iter().take(200).enumerate() {
        let loop_no = (k / 4) as u64;
        let offset = [0u64, 100, 200, 900][k % 4];
        assert_eq!(f.t_us - t0, loop_no * 1000 + offset, "frame {k}");
        assert_eq!(f.frame.payload(), &[offset as u8]);
    }
    assert_eq!(stats.parse_errors(), 0);
    assert_eq!(stats.drops(), 0, "flat out waits instead of dropping");
}

//! The receiver SIGKILLed in the middle of a stream and started again: its output still holds
//! every generated sample exactly once (the state file and the output cut-back at start-up).

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;
use system_tests::*;

/// Starts `pitlink receive` with extra arguments; returns once it is subscribed.
fn receiver(dir: &Path, broker: &Path, log: &str, extra: &[&str]) -> Result<Proc> {
    let broker = format!("unix:{}", broker.display());
    let mut args = vec![
        "receive",
        "--broker",
        &broker,
        "--client-id",
        "restart-receiver",
        "--idle-exit",
        "60s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&args, &dir.join(log))?;
    p.wait_log("subscribed", Duration::from_secs(10))?;
    Ok(p)
}

/// Every channel's timestamps form the exact grid, each exactly once; returns the sample count.
fn assert_exactly_once(lines: &[SampleLine], channels: u16, period_us: u64) -> u64 {
    let per = by_channel(lines);
    assert_eq!(per.len(), usize::from(channels), "every channel arrived");
    for ((src, ch), ts) in &per {
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            n,
            "{src}/{ch}: {} duplicates",
            n - sorted.len()
        );
        for w in sorted.windows(2) {
            assert_eq!(w[1] - w[0], period_us, "{src}/{ch}: gap after {}", w[0]);
        }
    }
    lines.len() as u64
}

#[test]
fn sigkilled_receiver_restarts_and_writes_every_sample_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let out_s = out.to_str().context("utf-8")?;
    let mut rx = receiver(dir.path(), broker.socket(), "rx1.log", &["--out", out_s])?;
    let cfg = write_config(
        dir.path(),
        "car-kill",
        broker.socket(),
        &["wwan0"],
        &[Synth {
            name: "engine",
            channels: 20,
            rate_hz: 1000,
            waveform: "sine",
        }],
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    let state = dir.path().join("received.jsonl.state");
    // Mid-stream: the state has been saved at least once and the output keeps growing.
    rx.poll_until("a saved state", Duration::from_secs(10), |_| {
        match state.exists() && std::fs::metadata(&out).map_or(0, |m| m.len()) > 100_000 {
            true => Ok(()),
            false => Err(String::new()),
        }
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    rx.signal(Signal::SIGKILL);
    rx.wait_exit(Duration::from_secs(5))?;
    let saved = pitlink::receive::state::load(&state)?.context("a state")?;
    eprintln!(
        "killed: output {} bytes, state records {:?}",
        std::fs::metadata(&out)?.len(),
        saved.outputs
    );
    // The daemon keeps publishing while the receiver is away: the broker holds the batches.
    std::thread::sleep(Duration::from_millis(1000));
    let mut rx = receiver(dir.path(), broker.socket(), "rx2.log", &["--out", out_s])?;
    assert!(
        rx.log_text().contains("resuming from the saved state"),
        "{}",
        rx.log_text()
    );
    // Whether lines were past the snapshot at the kill depends on its moment; either way the
    // output must come out exactly once.
    if let Some(cut) = rx
        .log_text()
        .lines()
        .find(|l| l.contains("written after the last"))
    {
        eprintln!("restart: {cut}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let end = stop_daemon(&mut d, Duration::from_secs(15))?;
    assert_eq!((end.undelivered, end.dropped), (0, 0), "{end:?}");
    stop_receiver_when_quiet(&mut rx, &out, Duration::from_secs(2))?;

    let lines = read_samples(&out)?;
    let got = assert_exactly_once(&lines, 20, 1000);
    assert_eq!(got, end.generated, "every generated sample exactly once");
    let summary = receiver_summary(&rx)?;
    // The summary spans both receiver processes (it is part of the state).
    assert_eq!(summary["vehicles"]["car-kill"]["samples"], end.generated);
    Ok(())
}

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

/// Total size of a file or of every file under a directory.
fn size(p: &Path) -> u64 {
    match std::fs::read_dir(p) {
        Ok(rd) => rd.flatten().map(|e| size(&e.path())).sum(),
        Err(_) => std::fs::metadata(p).map_or(0, |m| m.len()),
    }
}

/// The samples of a `--csv` directory as sample lines (vehicle and source from the path).
fn read_csv_samples(root: &Path) -> Result<Vec<SampleLine>> {
    let mut out = Vec::new();
    for v in std::fs::read_dir(root)? {
        let v = v?.path();
        for src in std::fs::read_dir(&v)?
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            for f in std::fs::read_dir(src.path())? {
                let f = f?.path();
                let name = f.file_stem().and_then(|x| x.to_str()).context("name")?;
                let ch: u16 = name.strip_prefix("ch").context("channel file")?.parse()?;
                let text = std::fs::read_to_string(&f)?;
                let mut lines = text.lines();
                assert_eq!(
                    lines.next(),
                    Some("t_us,value"),
                    "{}: one header",
                    f.display()
                );
                for l in lines {
                    let (t, val) = l.split_once(',').context("two columns")?;
                    out.push(SampleLine {
                        vehicle: v.file_name().context("v")?.to_string_lossy().into(),
                        run: 0,
                        seq: 0,
                        source: src.file_name().to_string_lossy().into(),
                        ch,
                        t_us: t.parse()?,
                        v: val.parse()?,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[test]
fn sigkilled_receiver_restarts_and_writes_every_sample_exactly_once() -> Result<()> {
    kill_and_restart(false)
}

#[test]
fn sigkilled_csv_receiver_restarts_and_writes_every_sample_exactly_once() -> Result<()> {
    kill_and_restart(true)
}

fn kill_and_restart(csv: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let (out, flag) = match csv {
        false => (dir.path().join("received.jsonl"), "--out"),
        true => (dir.path().join("received"), "--csv"),
    };
    let out_s = out.to_str().context("utf-8")?;
    let mut rx = receiver(dir.path(), broker.socket(), "rx1.log", &[flag, out_s])?;
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
    let state = pitlink::receive::state::default_path(&out);
    // Mid-stream: the state has been saved at least once and the output keeps growing.
    rx.poll_until("a saved state", Duration::from_secs(10), |_| {
        match state.exists() && size(&out) > 100_000 {
            true => Ok(()),
            false => Err(String::new()),
        }
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    rx.signal(Signal::SIGKILL);
    rx.wait_exit(Duration::from_secs(5))?;
    let saved = pitlink::receive::state::load(&state)?.context("a state")?;
    eprintln!(
        "killed: output {} bytes, state records {} in {} files",
        size(&out),
        saved.outputs.values().sum::<u64>(),
        saved.outputs.len()
    );
    // The daemon keeps publishing while the receiver is away: the broker holds the batches.
    std::thread::sleep(Duration::from_millis(1000));
    let mut rx = receiver(dir.path(), broker.socket(), "rx2.log", &[flag, out_s])?;
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
    // For CSV, one channel's file: it grows with every batch.
    let watched = match csv {
        false => out.clone(),
        true => out.join("car-kill/engine/ch0.csv"),
    };
    stop_receiver_when_quiet(&mut rx, &watched, Duration::from_secs(2))?;

    let lines = match csv {
        false => read_samples(&out)?,
        true => read_csv_samples(&out)?,
    };
    let got = assert_grid_exactly_once(&lines, 20, 1000);
    assert_eq!(got, end.generated, "every generated sample exactly once");
    let summary = receiver_summary(&rx)?;
    // The summary spans both receiver processes (it is part of the state).
    assert_eq!(summary["vehicles"]["car-kill"]["samples"], end.generated);
    Ok(())
}

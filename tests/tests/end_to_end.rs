//! End to end: the real daemon and receiver binaries against a real Mosquitto.

use anyhow::Result;
use nix::sys::signal::Signal;
use sensor_drivers::synthetic::Waveform;
use std::time::Duration;
use system_tests::*;

const STOP_MARKER: &str = "core stopped";

/// Every channel's timestamps must be the exact grid from the first sample to the last, each
/// exactly once, and every value must be the waveform's value at that time.
fn assert_exactly_once(
    lines: &[SampleLine],
    channels: u16,
    period_us: u64,
    waveform: Waveform,
) -> u64 {
    let per = by_channel(lines);
    assert_eq!(per.len(), usize::from(channels), "every channel arrived");
    let mut first_last = None;
    for ((src, ch), ts) in &per {
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            n,
            "{src}/{ch}: {} duplicate samples",
            n - sorted.len()
        );
        for w in sorted.windows(2) {
            assert_eq!(
                w[1] - w[0],
                period_us,
                "{src}/{ch}: gap between {} and {}",
                w[0],
                w[1]
            );
        }
        let fl = (sorted[0], sorted[n - 1]);
        match first_last {
            None => first_last = Some(fl),
            Some(x) => assert_eq!(x, fl, "{src}/{ch}: channels start and end together"),
        }
    }
    for l in lines {
        let want = waveform.value(l.ch, l.t_us);
        assert_eq!(
            l.v.to_bits(),
            want.to_bits(),
            "value of {}/{} at {}",
            l.source,
            l.ch,
            l.t_us
        );
    }
    lines.len() as u64
}

#[test]
fn synthetic_1khz_50_channels_10s_arrive_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "3s")?;
    let cfg = write_config(
        dir.path(),
        "car-e2e",
        broker.socket(),
        &["wwan0"],
        &[Synth {
            name: "engine",
            channels: 50,
            rate_hz: 1000,
            waveform: "sine",
        }],
    )?;
    let mut d = Proc::spawn(
        &["--config", cfg.to_str().expect("utf-8"), "run"],
        &dir.path().join("daemon.log"),
    )?;
    d.wait_log("link up", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(10));
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(10))?;
    assert!(st.success(), "daemon exit: {st}\n{}", d.log_text());
    let log = d.log_text();
    let generated = log_field(&log, STOP_MARKER, "generated").expect("final counters logged");
    assert_eq!(
        log_field(&log, STOP_MARKER, "undelivered"),
        Some(0),
        "{log}"
    );
    assert_eq!(log_field(&log, STOP_MARKER, "dropped"), Some(0), "{log}");
    assert!(generated >= 9 * 1000 * 50, "10 s at 50 kHz: {generated}");

    let st = rx.wait_exit(Duration::from_secs(20))?;
    assert!(st.success(), "receiver exit: {st}\n{}", rx.log_text());
    let lines = read_samples(&out)?;
    let got = assert_exactly_once(&lines, 50, 1000, Waveform::Sine);
    assert_eq!(
        got, generated,
        "every generated sample written exactly once"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.vehicle == "car-e2e" && l.source == "engine")
    );
    Ok(())
}

#[test]
fn broker_restart_mid_stream_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start(
        &dir.path().join("broker"),
        BrokerOptions {
            tcp: false,
            persistence: true,
        },
    )?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "4s")?;
    let cfg = write_config(
        dir.path(),
        "car-restart",
        broker.socket(),
        &["wwan0", "wwan1"],
        &[Synth {
            name: "chassis",
            channels: 10,
            rate_hz: 1000,
            waveform: "noise",
        }],
    )?;
    let mut d = Proc::spawn(
        &["--config", cfg.to_str().expect("utf-8"), "run"],
        &dir.path().join("daemon.log"),
    )?;
    d.wait_log("link up", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(3));
    broker.restart()?;
    std::thread::sleep(Duration::from_secs(4));
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(15))?;
    assert!(st.success(), "daemon exit: {st}\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("link down"),
        "the restart was seen by the links:\n{log}"
    );
    let generated = log_field(&log, STOP_MARKER, "generated").expect("final counters logged");
    assert_eq!(
        log_field(&log, STOP_MARKER, "undelivered"),
        Some(0),
        "{log}"
    );

    let st = rx.wait_exit(Duration::from_secs(20))?;
    assert!(st.success(), "receiver exit: {st}\n{}", rx.log_text());
    let lines = read_samples(&out)?;
    let got = assert_exactly_once(&lines, 10, 1000, Waveform::Noise);
    assert_eq!(got, generated, "nothing lost across the broker restart");
    Ok(())
}

#[test]
fn status_command_shows_the_running_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let cfg = write_config(
        dir.path(),
        "car-status",
        broker.socket(),
        &["wwan0"],
        &[Synth {
            name: "s1",
            channels: 4,
            rate_hz: 100,
            waveform: "saw",
        }],
    )?;
    let cfg = cfg.to_str().expect("utf-8").to_string();
    let mut d = Proc::spawn(&["--config", &cfg, "run"], &dir.path().join("daemon.log"))?;
    d.wait_log("link up", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(1500));
    let out = std::process::Command::new(pitlink_bin())
        .args(["--config", &cfg, "status", "--json"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["vehicle"], "car-status");
    assert_eq!(v["sources"][0]["name"], "s1");
    assert!(v["sources"][0]["samples"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["links"][0]["state"], "up", "{v}");
    assert!(
        v["queue"]["delivered_batches"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );

    let text = std::process::Command::new(pitlink_bin())
        .args(["--config", &cfg, "status"])
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("vehicle car-status") && text.contains("SOURCES") && text.contains("wwan0"),
        "{text}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10))?.success());

    // With the daemon gone, status says what to check.
    let out = std::process::Command::new(pitlink_bin())
        .args(["--config", &cfg, "status"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `pitlink run` running?"));
    Ok(())
}

#[test]
fn invalid_config_is_rejected_with_file_line_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = write_config(
        dir.path(),
        "car-bad",
        &dir.path().join("nosock"),
        &["wwan0"],
        &[Synth {
            name: "s",
            channels: 1,
            rate_hz: 10,
            waveform: "sine",
        }],
    )?;
    let text = std::fs::read_to_string(&cfg)?.replace("max_mb = 512", "queue_sise_mb = 512");
    std::fs::write(&cfg, &text)?;
    let line = text
        .lines()
        .position(|l| l.starts_with("queue_sise_mb"))
        .expect("line")
        + 1;
    let want = format!(
        "{}:{line}:1: unknown key 'queue_sise_mb' in [queue]; expected one of: dir, max_mb, segment_mb, flush_ms",
        cfg.display()
    );
    for cmd in ["run", "check-config"] {
        let out = std::process::Command::new(pitlink_bin())
            .args(["--config", cfg.to_str().expect("utf-8"), cmd])
            .output()?;
        assert_eq!(out.status.code(), Some(2), "{cmd} exits 2 on a bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&want), "{cmd}: {err}");
    }
    // The shipped default config passes.
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/pitlink.toml");
    let out = std::process::Command::new(pitlink_bin())
        .args(["--config", shipped.to_str().expect("utf-8"), "check-config"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

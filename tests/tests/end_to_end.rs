//! End to end: the real daemon and receiver binaries against a real Mosquitto.

use anyhow::Result;
use sensor_drivers::synthetic::Waveform;
use std::time::Duration;
use system_tests::*;

/// Every channel's timestamps must be the exact grid from the first sample to the last, each
/// exactly once, and every value must be the waveform's value at that time.
fn assert_exactly_once(
    lines: &[SampleLine],
    channels: u16,
    period_us: u64,
    waveform: Waveform,
) -> u64 {
    assert_grid_exactly_once(lines, channels, period_us);
    let per = by_channel(lines);
    let ends: std::collections::BTreeSet<(u64, u64)> = per
        .values()
        .map(|ts| {
            (
                *ts.iter().min().unwrap_or(&0),
                *ts.iter().max().unwrap_or(&0),
            )
        })
        .collect();
    assert_eq!(ends.len(), 1, "channels start and end together: {ends:?}");
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
    let engine = Synth {
        name: "engine",
        channels: 50,
        rate_hz: 1000,
        waveform: "sine",
    };
    let cfg = write_config(
        dir.path(),
        "car-e2e",
        broker.socket(),
        &["wwan0"],
        &[engine],
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    std::thread::sleep(Duration::from_secs(10));
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!((end.undelivered, end.dropped), (0, 0), "{end:?}");
    assert!(end.generated >= 9 * 1000 * 50, "10 s at 50 kHz: {end:?}");

    let lines = finish_receiver(&mut rx, &out)?;
    let got = assert_exactly_once(&lines, 50, 1000, Waveform::Sine);
    assert_eq!(
        got, end.generated,
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
    let persistent = BrokerOptions {
        persistence: true,
        ..BrokerOptions::default()
    };
    let mut broker = Mosquitto::start(&dir.path().join("broker"), persistent)?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "4s")?;
    let chassis = Synth {
        name: "chassis",
        channels: 10,
        rate_hz: 1000,
        waveform: "noise",
    };
    let cfg = write_config(
        dir.path(),
        "car-restart",
        broker.socket(),
        &["wwan0", "wwan1"],
        &[chassis],
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    std::thread::sleep(Duration::from_secs(3));
    broker.restart()?;
    std::thread::sleep(Duration::from_secs(4));
    let end = stop_daemon(&mut d, Duration::from_secs(15))?;
    assert!(
        d.log_text().contains("link down"),
        "the links saw the restart:\n{}",
        d.log_text()
    );
    assert_eq!(end.undelivered, 0, "{end:?}");

    let lines = finish_receiver(&mut rx, &out)?;
    let got = assert_exactly_once(&lines, 10, 1000, Waveform::Noise);
    assert_eq!(got, end.generated, "nothing lost across the broker restart");
    Ok(())
}

#[test]
fn status_command_shows_the_running_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let s1 = Synth {
        name: "s1",
        channels: 4,
        rate_hz: 100,
        waveform: "saw",
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = write_config_with(
        dir.path(),
        "car-status",
        broker.socket(),
        &["wwan0"],
        &[s1],
        &ConfigKnobs {
            extra_sources: format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..ConfigKnobs::default()
        },
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    let cfg = cfg.to_str().expect("utf-8").to_string();
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
    assert!(v["sources"][0]["readings"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["links"][0]["state"], "up", "{v}");
    assert!(v["links"][0]["acked"].as_u64().unwrap_or(0) > 0, "{v}");
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
    // The sections on their own, as JSON and text.
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(pitlink_bin())
            .args(["--config", &cfg])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sources: serde_json::Value = serde_json::from_str(&run(&["sources", "--json"])?)?;
    assert_eq!(sources[0]["name"], "s1", "{sources}");
    assert!(
        sources[0]["readings_per_s"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{sources}"
    );
    let queue: serde_json::Value = serde_json::from_str(&run(&["queue", "--json"])?)?;
    assert!(
        queue["delivered_batches"].as_u64().unwrap_or(0) > 0,
        "{queue}"
    );
    assert!(
        queue["dir"].as_str().is_some_and(|d| d.ends_with("queue")),
        "{queue}"
    );
    let t = run(&["sources"])?;
    assert!(
        t.starts_with("SOURCES") && t.contains("s1") && !t.contains("QUEUE"),
        "{t}"
    );
    let t = run(&["queue"])?;
    assert!(
        t.starts_with("QUEUE") && t.contains("undelivered") && !t.contains("SOURCES"),
        "{t}"
    );
    let t = run(&["top", "--interval", "100ms", "--count", "2"])?;
    assert_eq!(t.matches("vehicle car-status").count(), 2, "{t}");
    // Prometheus metrics.
    let scrape = |path: &str| -> Result<String> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut r = String::new();
        c.read_to_string(&mut r)?;
        Ok(r)
    };
    let m = scrape("/metrics")?;
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    let readings = |m: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with("pitlink_source_readings_total{source=\"s1\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let first = readings(&m);
    assert!(first > 0.0, "{m}");
    assert!(m.contains("pitlink_link_up{link=\"wwan0\"} 1"), "{m}");
    assert!(
        m.contains("# TYPE pitlink_queue_delivered_batches_total counter"),
        "{m}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(readings(&scrape("/metrics")?) > first, "the counter moves");
    assert!(scrape("/")?.starts_with("HTTP/1.1 404"));
    stop_daemon(&mut d, Duration::from_secs(10))?;

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

/// `[batch] format_version = 1`: every message on the wire is version 1 (plain bodies), for
/// receivers older than version 2, and every sample still arrives exactly once.
#[test]
fn format_version_1_for_older_receivers_arrives_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let out = dir.path().join("received.jsonl");
    let mut rx = start_receiver(dir.path(), broker.socket(), &out, "3s")?;
    // A second, raw subscriber: the first bytes of the messages as the broker delivers them.
    let raw = std::process::Command::new("mosquitto_sub")
        .arg("--unix")
        .arg(broker.socket())
        .args(["-t", "pitlink/+/batch", "-F", "%x", "-C", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let src = Synth {
        name: "engine",
        channels: 10,
        rate_hz: 1000,
        waveform: "saw",
    };
    let cfg = write_config(dir.path(), "car-v1", broker.socket(), &["wwan0"], &[src])?;
    let text = std::fs::read_to_string(&cfg)?;
    std::fs::write(
        &cfg,
        text.replace("[batch]\n", "[batch]\nformat_version = 1\n"),
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    std::thread::sleep(Duration::from_secs(3));
    let end = stop_daemon(&mut d, Duration::from_secs(10))?;
    assert_eq!((end.undelivered, end.dropped), (0, 0), "{end:?}");
    let lines = finish_receiver(&mut rx, &out)?;
    let got = assert_exactly_once(&lines, 10, 1000, Waveform::Saw);
    assert_eq!(got, end.generated);
    let captured = raw.wait_with_output()?;
    let hex = String::from_utf8_lossy(&captured.stdout);
    let messages: Vec<&str> = hex.lines().collect();
    assert_eq!(messages.len(), 20, "mosquitto_sub saw {hex}");
    for m in messages {
        assert!(m.starts_with("01"), "a message of another version: {m}");
    }
    Ok(())
}

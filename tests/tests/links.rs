//! `pitlink links` against a running daemon: one line per link, or one JSON object.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use system_tests::*;

#[test]
fn links_shows_every_link_as_text_and_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let engine = Synth {
        name: "engine",
        channels: 4,
        rate_hz: 100,
        waveform: "sine",
    };
    let cfg = write_config(
        dir.path(),
        "car-links",
        broker.socket(),
        &["a", "b"],
        &[engine],
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    let socket = dir.path().join("pitlink.sock");
    wait_status(
        &mut d,
        &socket,
        Duration::from_secs(20),
        "acks on a link",
        |s| s.links.iter().all(|l| l.state == "up") && s.links.iter().any(|l| l.counters.acked > 0),
    )?;

    let out = Command::new(pitlink_bin())
        .args(["links", "--json", "--socket"])
        .arg(&socket)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("one JSON object")?;
    assert_eq!(v["vehicle"], "car-links", "{v}");
    let links = v["links"].as_array().context("links")?;
    assert_eq!(links.len(), 2, "{v}");
    assert_eq!(links[0]["name"], "a");
    let acked: u64 = links
        .iter()
        .map(|l| l["batches"]["acked"].as_u64().unwrap_or(0))
        .sum();
    assert!(acked > 0, "{v}");
    for l in links {
        assert_eq!(l["state"], "up", "{v}");
        assert!(l["address"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
        assert!(l["rtt"]["rto_ms"].as_f64().is_some(), "{v}");
        assert!(l["in_flight"]["window_bytes"].as_u64().is_some(), "{v}");
        assert!(l["heartbeats"]["sent"].as_u64().is_some(), "{v}");
    }

    let out = Command::new(pitlink_bin())
        .args(["links", "--socket"])
        .arg(&socket)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().count(),
        3,
        "a header and one line per link: {text}"
    );
    assert!(
        text.lines().nth(1).is_some_and(|l| l.starts_with("a ")),
        "{text}"
    );

    stop_daemon(&mut d, Duration::from_secs(20))?;
    // No daemon: a clear error naming the socket.
    let out = Command::new(pitlink_bin())
        .args(["links", "--socket"])
        .arg(&socket)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("pitlink.sock"),
        "{err}"
    );
    broker.stop();
    Ok(())
}

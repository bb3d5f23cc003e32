//! `pitlink tail`: live readings of the running daemon, a value channel checked against its
//! waveform, and CAN frames of the replayed RAV4 capture decoded with its DBC.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use sensor_drivers::synthetic::Waveform;
use serde_json::Value;
use system_tests::*;

fn tail(cfg: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(pitlink_bin())
        .arg("--config")
        .arg(cfg)
        .arg("tail")
        .args(args)
        .output()?)
}

#[test]
fn tail_shows_live_values_and_decoded_frames() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let data = shared_data();
    let log = data.join("candump/comma2k19_rav4_2017_can0_10s.log");
    let dbc = data.join("dbc/opendbc/_toyota_2017.dbc");
    let engine = Synth {
        name: "engine",
        channels: 4,
        rate_hz: 1000,
        waveform: "sine",
    };
    let cfg = write_config_with(
        dir.path(),
        "car-tail",
        broker.socket(),
        &["a"],
        &[engine],
        &ConfigKnobs {
            extra_sources: format!(
                "\n[[sources]]\nname = \"rav4\"\nkind = \"candump\"\npath = \"{}\"\nloop = true\n",
                log.display()
            ),
            ..ConfigKnobs::default()
        },
    )?;
    let mut d = start_daemon(dir.path(), &cfg)?;
    std::thread::sleep(Duration::from_millis(500));

    // One value channel: every line is channel 2 with the waveform's exact value.
    let out = tail(&cfg, &["engine/2", "--json", "--count", "50"])?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 50);
    for l in &lines {
        assert_eq!(l["ch"], 2, "{l}");
        let t = l["t_us"].as_u64().context("t_us")?;
        let v = l["v"].as_f64().context("v")?;
        assert_eq!(v.to_bits(), Waveform::Sine.value(2, t).to_bits(), "{l}");
    }

    // CAN frames decoded with the DBC.
    let out = tail(
        &cfg,
        &[
            "rav4",
            "--dbc",
            dbc.to_str().context("utf-8")?,
            "--json",
            "--count",
            "200",
        ],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(frames.len(), 200);
    let decoded: Vec<&Value> = frames.iter().filter(|f| f["msg"].is_string()).collect();
    assert!(!decoded.is_empty(), "some frames are DBC messages");
    assert!(decoded.iter().all(|f| f["signals"].is_object()));
    // One identifier only, as text.
    let id = frames[0]["id"].as_u64().context("id")?;
    let spec = format!("rav4/0x{id:X}");
    let out = tail(&cfg, &[&spec, "--count", "5"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.lines().all(|l| l.contains(&format!("{id:X}"))),
        "{text}"
    );

    // An unknown source names the ones there are.
    let out = tail(&cfg, &["nope"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("engine, rav4"),
        "{err}"
    );
    stop_daemon(&mut d, Duration::from_secs(10))?;
    Ok(())
}

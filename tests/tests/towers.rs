//! The tower policy end to end: the real daemon reads three simulated modems over PTYs and a
//! simulated GPS receiver (`pitlink modem sim` on the shipped track), locks cells through the
//! same AT commands as on a real modem, and shows it all in `pitlink towers` and the status.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use system_tests::*;

/// The track's modems and GPS, the world running four times faster than real time.
fn start_sim(dir: &Path) -> Result<SimModems> {
    start_sim_modems(
        dir,
        &[
            "--speed",
            "4",
            "--latency-scale",
            "0.1",
            "--reattach",
            "1s",
            "--duration",
            "600s",
        ],
    )
}

fn towers_json(cfg: &Path) -> Result<Value> {
    let out = Command::new(pitlink_bin())
        .arg("--config")
        .arg(cfg)
        .args(["towers", "--json"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn the_policy_reads_simulated_modems_and_gps_and_locks_cells() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sim = start_sim(&dir.path().join("modems"))?;
    let modems: Vec<PathBuf> = sim.started["modems"]
        .as_array()
        .context("modems")?
        .iter()
        .map(|m| PathBuf::from(m["path"].as_str().unwrap_or_default()))
        .collect();
    let gps = sim.started["gps"].as_str().context("gps")?.to_string();
    let broker = Mosquitto::start(&dir.path().join("broker"), BrokerOptions::default())?;
    let map = dir.path().join("cells.map");
    let extra = format!(
        "\n[[sources]]\nname = \"gps\"\nkind = \"nmea\"\ndevice = \"{gps}\"\n\n[towers]\npoll_ms = 500\nmap = \"{}\"\n\n[towers.rules]\ntime_to_trigger_ms = 1500\nmin_dwell_ms = 5000\nreattach_ms = 3000\n",
        map.display()
    );
    let engine = Synth {
        name: "engine",
        channels: 4,
        rate_hz: 100,
        waveform: "sine",
    };
    let cfg = write_config_with(
        dir.path(),
        "car-towers",
        broker.socket(),
        &["a", "b", "c"],
        &[engine],
        &ConfigKnobs {
            link_modems: modems.clone(),
            extra_sources: extra,
            ..ConfigKnobs::default()
        },
    )?;
    let socket = dir.path().join("pitlink.sock");
    let mut d = start_daemon(dir.path(), &cfg)?;
    // Every modem read, the car's position known from the NMEA source.
    let st = wait_status(
        &mut d,
        &socket,
        Duration::from_secs(30),
        "radio and position",
        |s| {
            s.links
                .iter()
                .all(|l| l.radio.as_ref().is_some_and(|r| r.pci.is_some()))
                && s.towers.position.is_some()
        },
    )?;
    for l in &st.links {
        let r = l.radio.as_ref().context("radio")?;
        let rsrp = r.rsrp_dbm.context("rsrp")?;
        assert!((-140.0..=-44.0).contains(&rsrp), "{r:?}");
        assert!(r.modem.starts_with("AT "), "{r:?}");
        assert!(r.quality.is_some(), "{r:?}");
    }
    let pos = st.towers.position.context("position")?;
    assert!(
        (47.2..47.4).contains(&pos.lat) && (8.4..8.6).contains(&pos.lon),
        "{pos:?}"
    );
    assert_eq!(st.towers.modems.len(), 3);
    assert!(
        st.towers.modems.iter().all(|m| m.lockable),
        "{:?}",
        st.towers.modems
    );

    // The policy locks a cell, and the modem then serves it.
    let st = wait_status(&mut d, &socket, Duration::from_secs(120), "a lock", |s| {
        s.towers.switches >= 1
    })?;
    let first = st.towers.decisions.first().context("a decision")?.clone();
    assert!(!first.reason.is_empty());
    if let pitlink::towers::policy::Command::Lock { modem, cell } = first.command {
        wait_status(
            &mut d,
            &socket,
            Duration::from_secs(60),
            "served by the locked cell",
            |s| {
                s.links[modem]
                    .radio
                    .as_ref()
                    .is_some_and(|r| r.pci == Some(cell.pci) && r.earfcn == Some(cell.earfcn))
                    || s.towers.decisions.len() > 1
            },
        )?;
    }
    let t = towers_json(&cfg)?;
    assert_eq!(t["policy"], true);
    assert!(t["switches"].as_u64().is_some_and(|n| n >= 1), "{t}");
    assert!(t["modems"][0]["radio"]["rsrp_dbm"].is_number(), "{t}");
    assert!(t["decisions"][0]["reason"].is_string(), "{t}");
    let links = Command::new(pitlink_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["links", "--json"])
        .output()?;
    let links: Value = serde_json::from_slice(&links.stdout)?;
    assert!(
        links["links"][1]["radio"]["rsrp_dbm"].is_number(),
        "{links}"
    );
    let human = Command::new(pitlink_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("towers")
        .output()?;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("tower policy on") && text.contains("last decisions"),
        "{text}"
    );

    // The map survives a restart.
    stop_daemon(&mut d, Duration::from_secs(15))?;
    assert!(
        std::fs::metadata(&map).map(|m| m.len()).unwrap_or(0) > 0,
        "map saved"
    );
    let mut d = start_daemon(dir.path(), &cfg)?;
    let st = wait_status(
        &mut d,
        &socket,
        Duration::from_secs(20),
        "the map loaded",
        |s| s.towers.map_entries > 0,
    )?;
    assert!(st.towers.map_squares > 0);
    stop_daemon(&mut d, Duration::from_secs(15))?;
    Ok(())
}

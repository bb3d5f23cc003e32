//! `pitlink modem sim` and `pitlink modem <link> info|cells|lock|release` end to end: real
//! processes, simulated modems on real PTYs, the shipped track scenario.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use system_tests::{SimModems, pitlink_bin, start_sim_modems};

fn start_sim(dir: &Path, profile: &str) -> Result<SimModems> {
    start_sim_modems(
        dir,
        &[
            "--latency-scale",
            "0.1",
            "--reattach",
            "1s",
            "--profile",
            profile,
            "--duration",
            "120s",
        ],
    )
}

fn config(dir: &Path, sim: &SimModems) -> Result<std::path::PathBuf> {
    let mut text = String::from(
        "vehicle = \"car\"\n[broker]\nhost = \"127.0.0.1\"\n[[sources]]\nname = \"s\"\nkind = \"synthetic\"\nchannels = 1\nrate_hz = 10\n",
    );
    for m in sim.started["modems"].as_array().context("modems")? {
        text += &format!("[[links]]\nname = {}\nmodem = {}\n", m["name"], m["path"]);
    }
    text += "[[links]]\nname = \"bare\"\n";
    let path = dir.join("pitlink.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn pitlink(config: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(pitlink_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()?)
}

fn json(config: &Path, args: &[&str]) -> Result<Value> {
    let out = pitlink(config, args)?;
    if !out.status.success() {
        bail!(
            "pitlink {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn info_cells_lock_and_release_against_simulated_modems() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sim = start_sim(&dir.path().join("modems"), "rm520n")?;
    let modems = sim.started["modems"].as_array().context("modems")?;
    assert_eq!(modems.len(), 3, "{}", sim.started);
    let cfg = config(dir.path(), &sim)?;

    let info = json(&cfg, &["modem", "b", "info", "--json"])?;
    assert_eq!(info["identity"]["model"], "RM520N-GL", "{info}");
    assert_eq!(
        info["identity"]["sim_operator"], modems[1]["carrier"],
        "{info}"
    );
    assert_eq!(info["capabilities"]["lte_lock"], true);
    assert_eq!(info["registration"]["stat"], 1, "{info}");

    let cells = json(&cfg, &["modem", "a", "cells", "--json"])?;
    let serving = &cells["serving"];
    let rsrp = serving["rsrp_dbm"].as_f64().context("rsrp")?;
    assert!((-140.0..=-44.0).contains(&rsrp), "{cells}");
    assert!(serving["earfcn"].as_u64().is_some() && serving["pci"].as_u64().is_some());
    // Lock to a neighbour (LTE: EARFCN + PCI), and the modem serves it after the re-attach.
    let n = cells["neighbours"]
        .as_array()
        .and_then(|v| {
            v.iter()
                .find(|n| n["rsrp_dbm"].as_f64().is_some_and(|r| r > -120.0))
        })
        .context("a heard neighbour")?
        .clone();
    let (earfcn, pci) = (n["earfcn"].to_string(), n["pci"].to_string());
    let lock = json(
        &cfg,
        &[
            "modem", "a", "lock", "--earfcn", &earfcn, "--pci", &pci, "--json",
        ],
    )?;
    assert_eq!(lock["action"], "lock");
    assert_eq!(
        lock["commands"][0],
        format!("AT+QNWLOCK=\"common/4g\",1,{earfcn},{pci}")
    );
    assert!(lock["outage_s"].as_f64().is_some_and(|s| s > 0.0), "{lock}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = json(&cfg, &["modem", "a", "cells", "--json"])?;
        if c["serving"]["pci"] == n["pci"] && c["serving"]["earfcn"] == n["earfcn"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served by the locked cell: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let release = json(&cfg, &["modem", "a", "release", "--json"])?;
    assert_eq!(release["action"], "release");
    assert!(
        release["commands"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == "AT+QNWLOCK=\"common/4g\",0")),
        "{release}"
    );

    // Human output names the modem and the serving cell.
    let out = pitlink(&cfg, &["modem", "c", "info"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("RM520N-GL"), "{text}");

    // Errors name the link and the fix.
    let out = pitlink(&cfg, &["modem", "bare", "cells"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no modem"),
        "{err}"
    );
    let out = pitlink(&cfg, &["modem", "nope", "cells"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no link 'nope'"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_modem_without_cell_lock_says_so() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sim = start_sim(&dir.path().join("modems"), "ec25")?;
    let cfg = config(dir.path(), &sim)?;
    let info = json(&cfg, &["modem", "a", "info", "--json"])?;
    assert_eq!(info["identity"]["model"], "EC25");
    assert_eq!(info["capabilities"]["lte_lock"], false, "{info}");
    let out = pitlink(
        &cfg,
        &["modem", "a", "lock", "--earfcn", "1300", "--pci", "1"],
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("not supported"), "{err}");
    Ok(())
}
